//! The throttles of the HTTP API against hostile clients: login attempts
//! per account name and per client address, registrations per address,
//! writes per user and WebSocket connections per user. Each is a
//! [`RateLimiter`] (token bucket) built from [`AbuseConfig`]; a refusal is
//! the usual 429 `rate_limited` error with `Retry-After`, counted in
//! `/metrics`.

use std::net::IpAddr;
use std::sync::Arc;

use actors::Metrics;
use storage::chat::UserId;

use crate::config::AbuseConfig;
use crate::{Error, RateLimiter};

/// Every HTTP throttle of one node.
#[derive(Debug)]
pub struct Throttles {
    /// Failed logins per account name (lowercased; unknown names too, so a
    /// 429 says nothing about whether the name exists).
    login_failures: RateLimiter<String>,
    /// Login attempts per client address.
    logins_by_address: RateLimiter<IpAddr>,
    /// Registrations per client address.
    registrations: RateLimiter<IpAddr>,
    /// Group, member, direct-chat, push-subscription and block writes per user.
    writes: RateLimiter<UserId>,
    /// WebSocket connections per user.
    connects: RateLimiter<UserId>,
    metrics: Arc<Metrics>,
}

impl Throttles {
    /// The throttles `config` describes, counting refusals in `metrics`.
    pub fn new(config: &AbuseConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            login_failures: RateLimiter::per_minute(
                config.login_failures_per_minute,
                config.login_failure_burst,
            ),
            logins_by_address: RateLimiter::per_minute(
                config.logins_per_address_per_minute,
                config.login_address_burst,
            ),
            registrations: RateLimiter::per_minute(
                config.registrations_per_address_per_minute,
                config.registration_burst,
            ),
            writes: RateLimiter::per_minute(config.writes_per_minute, config.write_burst),
            connects: RateLimiter::per_minute(
                config.connects_per_user_per_minute,
                config.connect_burst,
            ),
            metrics,
        }
    }

    fn counted(&self, r: Result<(), Error>) -> Result<(), Error> {
        if r.is_err() {
            self.metrics.throttled_requests.inc();
        }
        r
    }

    /// Before a login is checked: the address's attempt budget (charged
    /// now) and the account's failure budget (charged by
    /// [`login_failed`](Self::login_failed)).
    pub fn login_attempt(&self, address: IpAddr, name: &str) -> Result<(), Error> {
        self.counted(self.login_failures.peek(&account_key(name)))?;
        self.counted(self.logins_by_address.check(address))
    }

    /// After a wrong password (or an unknown name): charges the account.
    pub fn login_failed(&self, name: &str) {
        // Refused or not, the failure is charged; the next attempt's peek
        // says when to come back.
        let _ = self.login_failures.check(account_key(name));
    }

    /// Before a registration.
    pub fn registration(&self, address: IpAddr) -> Result<(), Error> {
        self.counted(self.registrations.check(address))
    }

    /// Before an HTTP write by `user_id`.
    pub fn write(&self, user_id: UserId) -> Result<(), Error> {
        self.counted(self.writes.check(user_id))
    }

    /// Before a WebSocket session of `user_id` starts (once its token is
    /// known good).
    pub fn connect(&self, user_id: UserId) -> Result<(), Error> {
        self.counted(self.connects.check(user_id))
    }
}

/// Account names are case-insensitive; so is their budget.
fn account_key(name: &str) -> String {
    name.to_lowercase()
}

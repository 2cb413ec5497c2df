//! Gateway limits and timeouts, explicit and configurable.

use serde::{Deserialize, Serialize};

/// Limits and timeouts of the HTTP API and the WebSocket protocol. The
/// node's configuration embeds it; every field documents its default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GatewayConfig {
    /// How long a login token stays valid, in seconds. Default 30 days.
    pub token_ttl_secs: u64,
    /// Largest HTTP request body, in bytes. Default 64 KiB.
    pub max_body_bytes: usize,
    /// Largest WebSocket frame a client may send, in bytes. Default 16 KiB.
    pub max_frame_bytes: usize,
    /// Messages a user may send per second (HTTP and WebSocket together),
    /// sustained. Default 20.
    pub sends_per_second: u32,
    /// Messages a user may send in a burst above the sustained rate. Default 40.
    pub send_burst: u32,
    /// Typing indicators a session may send per second; extra ones are
    /// dropped silently (they are advisory). Default 2.
    pub typing_per_second: u32,
    /// How often the server pings an idle WebSocket, in seconds. Default 20.
    pub heartbeat_secs: u64,
    /// A WebSocket that sends nothing (not even a pong) for this long is
    /// closed, in seconds. Default 60.
    pub idle_timeout_secs: u64,
    /// Frames queued for one slow client before it is disconnected.
    /// Default 1024.
    pub outbound_queue: usize,
    /// Bytes queued for one client before it is disconnected (live
    /// traffic) or paced (a sync waits for it to read). Bounds what a
    /// client that does not read can make the node hold. Default 1 MiB.
    pub outbound_queue_bytes: usize,
    /// How long a sync waits for a client to read before cutting it off as
    /// too slow, in seconds. Default 10.
    pub sync_patience_secs: u64,
    /// How long a client has to send its `auth` frame when it did not put
    /// its token in the URL, in seconds. Default 10.
    pub auth_timeout_secs: u64,
    /// How long a send (WebSocket or HTTP) waits for its conversation's
    /// answer, in seconds. Past it the client gets `unavailable` ("no
    /// answer in time: resend with the same client_msg_id") instead of
    /// waiting on a hung or cut-off node for ever. Default 10.
    pub answer_timeout_secs: u64,
    /// Names of the users with the admin role: the admin API (the
    /// cluster as this node sees it, its event stream). Default none.
    pub admin_users: Vec<String>,
    /// A bearer token with the admin role without being a user (the lab's
    /// own, or an operator's monitoring): at least 16 characters. Env
    /// `PARLEY_ADMIN_TOKEN`. Default unset (no such token).
    #[serde(skip_serializing)]
    pub admin_token: Option<String>,
    /// Reverse proxies whose `Forwarded` / `X-Forwarded-For` headers are
    /// believed, as CIDRs (`10.0.0.0/8`, `::1/128`; a bare address is one
    /// host). Behind a TLS proxy every connection comes from the proxy, so
    /// without this the per-address throttles put all its users in one
    /// bucket; with it, a request from a listed proxy counts against the
    /// client address the proxy names (`client_addr`). List only proxies
    /// that write those headers themselves: a client's own are believed
    /// from a listed address. An invalid entry refuses the start. Default
    /// none (the headers are ignored; the socket's address counts).
    pub trusted_proxies: Vec<String>,
    /// Abuse resistance: throttles, password hashing and connection limits.
    #[serde(flatten)]
    pub abuse: AbuseConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            token_ttl_secs: 30 * 24 * 3600,
            max_body_bytes: 64 * 1024,
            max_frame_bytes: 16 * 1024,
            sends_per_second: 20,
            send_burst: 40,
            typing_per_second: 2,
            heartbeat_secs: 20,
            idle_timeout_secs: 60,
            outbound_queue: 1024,
            outbound_queue_bytes: 1024 * 1024,
            sync_patience_secs: 10,
            auth_timeout_secs: 10,
            answer_timeout_secs: 10,
            admin_users: Vec::new(),
            admin_token: None,
            trusted_proxies: Vec::new(),
            abuse: AbuseConfig::default(),
        }
    }
}

/// Limits against hostile clients (issue #10). Rates are per minute with a
/// burst allowance (a token bucket); a rate of 0 disables that limit. Flat
/// in the `[gateway]` table of the configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AbuseConfig {
    /// Failed logins per account name per minute, sustained. Default 5.
    pub login_failures_per_minute: u32,
    /// Failed logins per account name in a burst. Default 10.
    pub login_failure_burst: u32,
    /// Login attempts per client address per minute. Default 60.
    pub logins_per_address_per_minute: u32,
    /// Login attempts per client address in a burst. Default 30.
    pub login_address_burst: u32,
    /// Registrations per client address per minute. Default 10.
    pub registrations_per_address_per_minute: u32,
    /// Registrations per client address in a burst. Default 30.
    pub registration_burst: u32,
    /// HTTP writes (group creation and edits, member changes, direct chats,
    /// push subscriptions, blocks) per user per minute. Default 60.
    pub writes_per_minute: u32,
    /// HTTP writes per user in a burst. Default 30.
    pub write_burst: u32,
    /// Password hashes computed at once; 0 means one per CPU core.
    /// Default 0.
    pub hash_concurrency: usize,
    /// Logins and registrations waiting for a hashing slot; beyond it they
    /// get 503 with `Retry-After`. Default 64.
    pub hash_queue: usize,
    /// Time a client has to send a request's headers, in seconds (slowloris).
    /// Default 10.
    pub header_timeout_secs: u64,
    /// Time a client has to send a request's body, in seconds. Default 30.
    pub body_timeout_secs: u64,
    /// Open HTTP/WebSocket connections; 0 means the open-file limit minus
    /// `fd_headroom`. Default 0.
    pub max_connections: usize,
    /// WebSocket sessions one user may hold open on this node (1 or more).
    /// A connection beyond it closes the user's oldest one on this node
    /// (close code 4001), as XMPP servers do: a client whose old sockets
    /// are half-open (a phone that changed networks) is not locked out,
    /// and one account cannot hold a socket, a session actor and a copy of
    /// every fan-out per connection it cares to open. Default 32.
    pub max_sessions_per_user: usize,
    /// WebSocket connections one user may open per minute on this node,
    /// sustained (each reads the device's positions in every conversation
    /// and writes the device's row). Beyond: HTTP 429 before the upgrade,
    /// or an `error` frame and close 1013 after an `auth` frame; 0 means
    /// unlimited. Default 120.
    pub connects_per_user_per_minute: u32,
    /// WebSocket connections one user may open in a burst above that rate
    /// (a node restart brings all of a user's devices back at once).
    /// Default 30.
    pub connect_burst: u32,
    /// File descriptors kept free for the store, the cluster transport and
    /// overflow connections (a quarter of them, which only get `/healthz`,
    /// others a 503, the oldest evicted by newer ones; another quarter for
    /// those being closed). Default 256.
    pub fd_headroom: usize,
}

impl Default for AbuseConfig {
    fn default() -> Self {
        Self {
            login_failures_per_minute: 5,
            login_failure_burst: 10,
            logins_per_address_per_minute: 60,
            login_address_burst: 30,
            registrations_per_address_per_minute: 10,
            registration_burst: 30,
            writes_per_minute: 60,
            write_burst: 30,
            hash_concurrency: 0,
            hash_queue: 64,
            header_timeout_secs: 10,
            body_timeout_secs: 30,
            max_connections: 0,
            max_sessions_per_user: 32,
            connects_per_user_per_minute: 120,
            connect_burst: 30,
            fd_headroom: 256,
        }
    }
}

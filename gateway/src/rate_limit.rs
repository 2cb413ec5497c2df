//! Token buckets per key (a user, an account name, a client address): a
//! sustained rate with a burst allowance.
//!
//! Each key has a bucket holding up to `burst` tokens that refills at
//! `per_second`; an action takes one token or is refused with the time until
//! one is back. The bucket is kept in its GCRA form (the "theoretical arrival
//! time" of the next action), which is one `Instant` per user and exact
//! integer arithmetic. A bucket that has refilled completely is the same as
//! no bucket, so idle buckets are evicted: memory is bounded by the users who
//! acted within the last `burst / per_second` seconds, not by all users ever
//! seen.
//!
//! Buckets are per node: a user connected to two nodes gets each node's
//! budget. That bounds what one connection can do, which is the point.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use storage::chat::UserId;

use crate::Error;

/// Buckets kept before the first sweep of idle ones.
const MIN_SWEEP_AT: usize = 1024;

/// A token bucket limiter per key (users by default). Cheap to share behind
/// an `Arc`.
#[derive(Debug)]
pub struct RateLimiter<K = UserId> {
    /// Time to regain one token; `None` disables the limiter.
    interval: Option<Duration>,
    /// How far ahead of now a user's next arrival time may run: `burst - 1`
    /// intervals, which is what lets `burst` actions through back to back.
    tolerance: Duration,
    state: Mutex<Buckets<K>>,
}

#[derive(Debug)]
struct Buckets<K> {
    /// Per key: when its bucket will be full again.
    full_at: HashMap<K, Instant>,
    /// Sweep idle buckets when the map reaches this size.
    sweep_at: usize,
}

impl<K: Hash + Eq> RateLimiter<K> {
    /// A limiter allowing `per_second` actions per key sustained, and up to
    /// `burst` back to back (at least one). `per_second == 0` means
    /// unlimited.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self::per(Duration::from_secs(1), per_second, burst)
    }

    /// A limiter allowing `per_minute` actions per key sustained, and up to
    /// `burst` back to back (at least one). `per_minute == 0` means
    /// unlimited.
    pub fn per_minute(per_minute: u32, burst: u32) -> Self {
        Self::per(Duration::from_secs(60), per_minute, burst)
    }

    /// `count` actions per `period`, `burst` back to back; `count == 0`
    /// means unlimited.
    fn per(period: Duration, count: u32, burst: u32) -> Self {
        let interval = (count > 0).then(|| period / count);
        Self {
            interval,
            tolerance: interval.unwrap_or_default() * burst.max(1).saturating_sub(1),
            state: Mutex::new(Buckets {
                full_at: HashMap::new(),
                sweep_at: MIN_SWEEP_AT,
            }),
        }
    }

    /// Takes one token from the key's bucket, or fails with
    /// [`Error::RateLimited`] saying when one will be available.
    pub fn check(&self, key: K) -> Result<(), Error> {
        self.check_at(key, Instant::now())
    }

    /// Fails like [`check`](Self::check) when the key's bucket is empty,
    /// without taking a token: for limits on failures, checked before the
    /// attempt and charged (with `check`) only when it fails.
    pub fn peek(&self, key: &K) -> Result<(), Error> {
        let Some(_) = self.interval else {
            return Ok(());
        };
        let now = Instant::now();
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(full_at) = state.full_at.get(key) else {
            return Ok(());
        };
        let ahead = (*full_at).max(now) - now;
        match self.wait(ahead) {
            Some(retry_after_ms) => Err(Error::RateLimited { retry_after_ms }),
            None => Ok(()),
        }
    }

    /// How long until the next token when the bucket runs `ahead` of now
    /// (`None`: one is available).
    fn wait(&self, ahead: Duration) -> Option<u64> {
        (ahead > self.tolerance).then(|| {
            // Round up: a client that waits exactly this long succeeds.
            (ahead - self.tolerance).as_nanos().div_ceil(1_000_000) as u64
        })
    }

    /// [`check`](Self::check) at a given instant (tests drive the clock).
    pub fn check_at(&self, key: K, now: Instant) -> Result<(), Error> {
        let Some(interval) = self.interval else {
            return Ok(());
        };
        // A poisoned lock only means another thread panicked between two
        // plain stores; the map is still consistent.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.full_at.len() >= state.sweep_at {
            Self::sweep(&mut state, now);
        }
        let full_at = state.full_at.entry(key).or_insert(now);
        let from = (*full_at).max(now);
        let ahead = from - now;
        if let Some(retry_after_ms) = self.wait(ahead) {
            return Err(Error::RateLimited { retry_after_ms });
        }
        *full_at = from + interval;
        Ok(())
    }

    /// Drops every bucket that is full again, then sets the next sweep at
    /// twice the remaining size so sweeping stays amortized O(1) per check.
    fn sweep(state: &mut Buckets<K>, now: Instant) {
        state.full_at.retain(|_, full_at| *full_at > now);
        state.sweep_at = (state.full_at.len() * 2).max(MIN_SWEEP_AT);
    }

    /// How many keys currently have a bucket (tests of eviction).
    pub fn tracked_users(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .full_at
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry_after(r: Result<(), Error>) -> u64 {
        match r {
            Err(Error::RateLimited { retry_after_ms }) => retry_after_ms,
            other => panic!("expected RateLimited, got {other:?}"),
        }
    }

    #[test]
    fn burst_then_sustained_rate() {
        let limiter = RateLimiter::new(10, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.check_at(1, t0).expect("within burst");
        }
        // Empty bucket: the next token is 100 ms away at 10/s.
        assert_eq!(retry_after(limiter.check_at(1, t0)), 100);
        let t1 = t0 + Duration::from_millis(40);
        assert_eq!(retry_after(limiter.check_at(1, t1)), 60);
        // After 100 ms exactly one token is back.
        let t2 = t0 + Duration::from_millis(100);
        limiter.check_at(1, t2).expect("refilled one");
        assert!(limiter.check_at(1, t2).is_err());
    }

    #[test]
    fn refill_is_capped_at_the_burst() {
        let limiter = RateLimiter::new(10, 3);
        let t0 = Instant::now();
        limiter.check_at(1, t0).expect("first");
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            limiter.check_at(1, later).expect("full bucket");
        }
        assert!(limiter.check_at(1, later).is_err());
    }

    #[test]
    fn users_have_separate_buckets() {
        let limiter = RateLimiter::new(1, 1);
        let t0 = Instant::now();
        limiter.check_at(1, t0).expect("user 1");
        assert!(limiter.check_at(1, t0).is_err());
        limiter.check_at(2, t0).expect("user 2 unaffected");
    }

    #[test]
    fn peek_does_not_take_a_token() {
        let limiter = RateLimiter::<&str>::per_minute(1, 2);
        limiter.peek(&"alice").expect("no bucket yet");
        limiter.check("alice").expect("first");
        limiter.peek(&"alice").expect("one left");
        limiter.peek(&"alice").expect("still one left");
        limiter.check("alice").expect("second");
        assert!(limiter.peek(&"alice").is_err());
        limiter.peek(&"bob").expect("other key");
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let limiter = RateLimiter::new(0, 0);
        let t0 = Instant::now();
        for _ in 0..1000 {
            limiter.check_at(1, t0).expect("unlimited");
        }
        assert_eq!(limiter.tracked_users(), 0);
    }

    #[test]
    fn idle_buckets_are_evicted() {
        let limiter = RateLimiter::new(10, 2);
        let t0 = Instant::now();
        for user in 0..MIN_SWEEP_AT as u64 {
            limiter.check_at(user, t0).expect("first send");
        }
        assert_eq!(limiter.tracked_users(), MIN_SWEEP_AT);
        // One second later every bucket is full again: the next check sweeps
        // them all and tracks only the newcomer.
        let t1 = t0 + Duration::from_secs(1);
        limiter.check_at(u64::MAX, t1).expect("newcomer");
        assert_eq!(limiter.tracked_users(), 1);
    }

    #[test]
    fn busy_buckets_survive_a_sweep() {
        let limiter = RateLimiter::new(1, 5);
        let t0 = Instant::now();
        for user in 0..MIN_SWEEP_AT as u64 {
            limiter.check_at(user, t0).expect("first send");
        }
        // Half a second later none has refilled: all are kept, and the next
        // sweep waits until the map doubles.
        let t1 = t0 + Duration::from_millis(500);
        limiter.check_at(u64::MAX, t1).expect("newcomer");
        assert_eq!(limiter.tracked_users(), MIN_SWEEP_AT + 1);
    }
}

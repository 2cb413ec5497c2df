//! Waiting on a condition with a deadline, never a fixed sleep.

use std::future::Future;
use std::time::Duration;

/// Polls `check` every 20 ms until it returns `Some`, or panics with `what`
/// after `timeout`.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `attempt` until it succeeds, at most `times` times, half a second
/// apart: for set-up steps that can fail for reasons outside the test under
/// load (a browser that does not start). Panics with `what` and the last
/// error.
pub async fn retry<T, E, F, Fut>(what: &str, times: usize, mut attempt: F) -> T
where
    E: std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Ok(v) => return v,
            Err(e) if tries >= times => panic!("{what}: failed {tries} times, the last: {e:?}"),
            Err(e) => eprintln!("{what}: attempt {tries} failed ({e:?}); trying again"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn retry_returns_the_first_success() {
        let mut calls = 0;
        let got = retry("a flaky step", 3, || {
            calls += 1;
            let outcome = if calls < 3 { Err(calls) } else { Ok(calls) };
            async move { outcome }
        })
        .await;
        assert_eq!(got, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "a broken step: failed 2 times")]
    async fn retry_gives_up_after_its_attempts() {
        retry("a broken step", 2, || async { Err::<(), _>("no") }).await;
    }
}

//! Send times kept to the kernel's precision, not the runtime timer's.
//!
//! tokio's timer ticks in whole milliseconds and fires a sleep at the first
//! tick after its deadline, so senders paced by it wrote up to 2 ms late
//! (`client_send_lag_p99_ms` ≈ 1.95 at any rate). Latency is measured from
//! the intended send time, so that lateness was counted as the server's.
//! One OS thread instead holds every sender's schedule, sleeps until the
//! earliest due time with `nanosleep` (tens of microseconds late) and
//! wakes that sender's task through a channel.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

/// Longest single sleep, so that a stop is noticed promptly.
const MAX_NAP: Duration = Duration::from_millis(20);

/// One sender's schedule: `first`, then every `interval` before `until`.
pub struct Schedule {
    /// The first send time.
    pub first: Instant,
    /// Time between sends.
    pub interval: Duration,
    /// No send time at or after this.
    pub until: Instant,
}

/// The pacing thread; stops when dropped.
pub struct Pacer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pacer {
    /// Starts pacing; each returned receiver gets one token per send time of
    /// its schedule, in order.
    pub fn start(
        schedules: Vec<Schedule>,
    ) -> std::io::Result<(Self, Vec<mpsc::UnboundedReceiver<Instant>>)> {
        let mut wakers = Vec::with_capacity(schedules.len());
        let mut receivers = Vec::with_capacity(schedules.len());
        for _ in &schedules {
            let (tx, rx) = mpsc::unbounded_channel();
            wakers.push(tx);
            receivers.push(rx);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("bench-pacer".into())
                .spawn(move || pace(&schedules, &wakers, &stop))?
        };
        Ok((
            Self {
                stop,
                thread: Some(thread),
            },
            receivers,
        ))
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn pace(schedules: &[Schedule], wakers: &[mpsc::UnboundedSender<Instant>], stop: &AtomicBool) {
    let mut due: BinaryHeap<Reverse<(Instant, usize)>> = schedules
        .iter()
        .enumerate()
        .filter(|(_, s)| s.first < s.until && !s.interval.is_zero())
        .map(|(i, s)| Reverse((s.first, i)))
        .collect();
    while let Some(&Reverse((at, i))) = due.peek() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        if at > now {
            std::thread::sleep((at - now).min(MAX_NAP));
            continue;
        }
        due.pop();
        // A sender whose task ended has no more send times.
        if wakers[i].send(at).is_ok() {
            let next = at + schedules[i].interval;
            if next < schedules[i].until {
                due.push(Reverse((next, i)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_send_time_is_delivered_in_order_and_not_early() {
        let start = Instant::now() + Duration::from_millis(5);
        let schedules = (0..3u32)
            .map(|i| Schedule {
                first: start + Duration::from_micros(300 * u64::from(i)),
                interval: Duration::from_millis(2),
                until: start + Duration::from_millis(41),
            })
            .collect();
        let (pacer, mut receivers) = Pacer::start(schedules).expect("starting the pacer");
        for rx in &mut receivers {
            let mut times = Vec::new();
            while let Some(at) = rx.blocking_recv() {
                assert!(Instant::now() >= at, "woken before its time");
                times.push(at);
            }
            assert_eq!(times.len(), 21);
            assert!(times
                .windows(2)
                .all(|w| w[1] - w[0] == Duration::from_millis(2)));
        }
        drop(pacer);
    }
}

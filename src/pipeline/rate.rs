//! The exact rate limiter: a GCRA with a burst of one, on tokio's clock.
//!
//! Each permit gets a slot `max(previous slot + period, now)`; the caller
//! sleeps until its slot. Slots are at least one period apart and `period`
//! is `60 s / rpm` rounded up to the nanosecond, so any 60-second window
//! (half-open) holds at most `rpm` permits — a token bucket with a burst of
//! `rpm` would let nearly twice that through in its first minute. Lateness
//! never accumulates into a burst: a slot never precedes its predecessor's
//! slot plus a period. Under continuous demand permits are exactly one period
//! apart, i.e. the configured rate. It runs on `tokio::time`, so tests drive
//! it with paused virtual time instead of sleeping for minutes.
//! (`governor` was the candidate; its clock is not tokio's, which would have
//! made the 60-second-window tests real-time.)

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::destination::Rpm;

/// Shared by every request to one destination in one execution.
#[derive(Debug)]
pub struct RateLimiter {
    period: Duration,
    next: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// A limiter at `rpm` requests per minute.
    pub fn new(rpm: Rpm) -> RateLimiter {
        RateLimiter {
            period: rpm.period(),
            next: Mutex::new(None),
        }
    }

    /// Waits for the next permit; returns its slot.
    pub async fn acquire(&self) -> Instant {
        let slot = {
            let mut next = self
                .next
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            let slot = match *next {
                Some(n) if n > now => n,
                _ => now,
            };
            *next = Some(slot + self.period);
            slot
        };
        tokio::time::sleep_until(slot).await;
        slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Max permits in any half-open window of `w` starting at a permit.
    fn max_in_window(slots: &[Instant], w: Duration) -> usize {
        let mut best = 0;
        let mut j = 0;
        for i in 0..slots.len() {
            while j < slots.len() && slots[j] < slots[i] + w {
                j += 1;
            }
            best = best.max(j - i);
        }
        best
    }

    #[tokio::test(start_paused = true)]
    async fn never_above_rpm_in_any_minute_and_within_one_percent_on_average() {
        for rpm in [300u32, 1000, 25_000] {
            let lim = Arc::new(RateLimiter::new(Rpm::new(rpm).unwrap()));
            let start = Instant::now();
            // Many concurrent callers, 3.5 minutes' worth of demand.
            let total = rpm as usize * 7 / 2;
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..total {
                let l = lim.clone();
                tasks.spawn(async move { l.acquire().await });
            }
            let mut slots = Vec::with_capacity(total);
            while let Some(s) = tasks.join_next().await {
                slots.push(s.unwrap());
            }
            slots.sort();
            assert!(
                max_in_window(&slots, Duration::from_secs(60)) <= rpm as usize,
                "rpm {rpm}"
            );
            let span = (*slots.last().unwrap() - start).as_secs_f64();
            let mean_per_min = (total - 1) as f64 / span * 60.0;
            assert!(
                mean_per_min <= rpm as f64 * (1.0 + 1e-9) && mean_per_min >= rpm as f64 * 0.99,
                "rpm {rpm}: {mean_per_min}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_does_not_turn_into_a_burst() {
        let lim = RateLimiter::new(Rpm::new(60).unwrap());
        let a = lim.acquire().await;
        tokio::time::sleep(Duration::from_secs(600)).await;
        let b = lim.acquire().await;
        let c = lim.acquire().await;
        assert!(b - a >= Duration::from_secs(600));
        assert_eq!(c - b, Duration::from_secs(1));
    }
}

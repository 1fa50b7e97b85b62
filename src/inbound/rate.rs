//! An exact per-key request-rate window for inbound requests: a key may
//! make at most `limit` accepted requests in any 60-second window. Each key
//! keeps the times of its last `limit` requests (a sliding log), so the
//! check is exact rather than a token bucket's approximation, and the
//! `Retry-After` it gives is when the oldest of them leaves the window.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);

/// Sliding-log rate limiter keyed by workspace.
#[derive(Debug)]
pub struct WindowLimiter {
    limit: usize,
    log: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl WindowLimiter {
    /// At most `per_minute` requests per key in any 60 s window.
    pub fn new(per_minute: u32) -> WindowLimiter {
        WindowLimiter {
            limit: per_minute.max(1) as usize,
            log: Mutex::new(HashMap::new()),
        }
    }

    /// Admits a request of `key` at `now`, or says how long to wait.
    pub fn admit(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let times = log.entry(key.to_string()).or_default();
        while times
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= WINDOW)
        {
            times.pop_front();
        }
        if times.len() >= self.limit {
            let oldest = times.front().copied().unwrap_or(now);
            return Err(WINDOW.saturating_sub(now.saturating_duration_since(oldest)));
        }
        times.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_more_than_the_limit_in_any_window() {
        let l = WindowLimiter::new(300);
        let t0 = Instant::now();
        let mut accepted = Vec::new();
        // Offer a request every 50 ms for 3 minutes: 4x the rate.
        for i in 0..3600u64 {
            let t = t0 + Duration::from_millis(50 * i);
            if l.admit("ws", t).is_ok() {
                accepted.push(t);
            }
        }
        for (i, &t) in accepted.iter().enumerate() {
            let in_window = accepted[i..]
                .iter()
                .take_while(|&&u| u.duration_since(t) < WINDOW)
                .count();
            assert!(
                in_window <= 300,
                "{in_window} in the window from request {i}"
            );
        }
        // And the limit is used: 300 per minute over 3 minutes.
        assert_eq!(accepted.len(), 900);
        // Other keys are independent.
        assert!(l.admit("other", t0).is_ok());
    }

    #[test]
    fn retry_after_is_when_the_oldest_leaves() {
        let l = WindowLimiter::new(2);
        let t0 = Instant::now();
        l.admit("w", t0).unwrap();
        l.admit("w", t0 + Duration::from_secs(10)).unwrap();
        let wait = l.admit("w", t0 + Duration::from_secs(20)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(40));
        assert!(l.admit("w", t0 + Duration::from_secs(60)).is_ok());
    }
}

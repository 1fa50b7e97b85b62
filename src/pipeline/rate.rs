//! The rate limiter of one destination: exact under the configured ceiling,
//! and adaptive below it, on tokio's clock.
//!
//! **The ceiling is exact.** Each permit gets a slot `max(previous slot +
//! period, now)`; the caller sleeps until its slot. The period is never
//! shorter than `60 s / rpm` (rounded up to the nanosecond), so any 60-second
//! window (half-open) holds at most `rpm` permits — a token bucket with a
//! burst of `rpm` would let nearly twice that through in its first minute.
//! Lateness never accumulates into a burst. It runs on `tokio::time`, so
//! tests drive it in paused virtual time instead of sleeping for minutes.
//! (`governor` was the candidate; its clock is not tokio's.)
//!
//! **Below the ceiling it adapts (AIMD).** The configured rpm is a ceiling,
//! not a target to hammer. When the destination says it is overloaded, the
//! whole destination slows down — once per round: answers to requests sent
//! before the last decrease do not decrease again — to at most 90 % of the
//! current rate and at least half of it, aiming at 90 % of the requests it
//! accepted in the last minute (its demonstrated capacity). Every request
//! to the destination also pauses for an exponential backoff (from the
//! retry delay, doubling per round without a success, up to 60 s). While
//! answers are healthy the rate recovers additively (5 % every 5 s, never
//! above the ceiling).
//!
//! **What counts as overloaded.** A 429 at once: it is the destination's
//! own word that it is over its limit. A 503, a 504 or a timeout only once
//! they are a fifth of the answers to requests sent this round (within the
//! last minute), and at least [`FAULTS_TO_SLOW_DOWN`] of them: a fault now
//! and then is not overload, and slowing the destination on each one made
//! a steady 10 % of faults pull a 6000-rpm sync down to about 20 rpm (the
//! failed page still waits out its own retry delay). A `Retry-After` on any
//! of them pauses every request until then, whatever the share.
//!
//! One limiter is shared by every execution sending to the same destination
//! ([`for_destination`]), so two syncs to one destination together stay
//! under its rpm.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::time::Instant;

use crate::destination::Rpm;

/// Healthy time between two additive increases.
const INCREASE_EVERY: Duration = Duration::from_secs(5);
/// Additive increase, as a share of the current rate.
const INCREASE_SHARE: f64 = 0.05;
/// Longest pause of the backoff without `Retry-After`.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The slowest the limiter goes: one request a minute.
const FLOOR_RPM: f64 = 1.0;
/// Window of the accepted-requests count (the capacity estimate) and of
/// the share of faults.
const WINDOW: Duration = Duration::from_secs(60);
/// Share of a round's answers that must be faults (503, 504, timeouts)
/// before they slow the destination down.
const FAULT_SHARE_TO_SLOW_DOWN: f64 = 0.2;
/// Fewest faults of a round that slow the destination down: with a handful
/// of answers, one fault would be a share of a fifth.
pub const FAULTS_TO_SLOW_DOWN: usize = 5;

/// What an answer says about the destination's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Accepted (2xx).
    Accepted,
    /// Asked to slow down (429), maybe saying when to come back.
    Throttled(Option<Duration>),
    /// Overloaded (503, 504, a timeout), maybe saying when to come back.
    Overloaded(Option<Duration>),
    /// Anything else (a refusal, a 500, a connection error): no change.
    Neutral,
}

#[derive(Debug)]
struct State {
    /// The latest slot handed out: slots never go back in time, and each
    /// is at least one (current) period after it, which is what keeps every
    /// 60 s window under the ceiling whatever the rate does.
    last: Option<Instant>,
    /// Current rate (requests per minute), ≤ the ceiling.
    rpm: f64,
    /// No request goes out before this.
    paused_until: Option<Instant>,
    /// When the rate was last decreased: answers to requests sent before
    /// it belong to the previous round.
    round_start: Option<Instant>,
    /// Last change of the rate (for the additive increase's pacing).
    last_change: Option<Instant>,
    /// Next backoff pause; reset by a success.
    backoff: Duration,
    /// Rounds of slow-down since the last accepted request.
    stalled_rounds: u32,
    /// When requests were accepted, over the last [`WINDOW`].
    accepted: VecDeque<Instant>,
    /// The answers to requests sent this round (since the last decrease),
    /// over the last [`WINDOW`]: when, and whether it was a fault.
    round_answers: VecDeque<(Instant, bool)>,
    /// How many of `round_answers` are faults.
    round_faults: usize,
}

impl State {
    /// Holds every request until `until` at least (pauses only lengthen).
    fn pause_until(&mut self, until: Instant) {
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
    }
}

/// Shared by every request to one destination.
#[derive(Debug)]
pub struct RateLimiter {
    ceiling: f64,
    min_period: Duration,
    base_backoff: Duration,
    state: Mutex<State>,
}

fn period_of(rpm: f64, min_period: Duration) -> Duration {
    Duration::from_secs_f64(60.0 / rpm).max(min_period)
}

impl RateLimiter {
    /// A limiter at `rpm` requests per minute at most; `base_backoff` is the
    /// first pause after an overload without `Retry-After` (the
    /// destination's retry delay).
    pub fn new(rpm: Rpm, base_backoff: Duration) -> RateLimiter {
        Self::with_grace(rpm, base_backoff, Duration::ZERO)
    }

    /// A limiter whose permits of any (60 s + `grace`) window are at most
    /// `rpm`: for permits used up to `grace` after their slot (a worker's,
    /// granted over the network), so that the requests of any 60 s window
    /// still are.
    pub fn with_grace(rpm: Rpm, base_backoff: Duration, grace: Duration) -> RateLimiter {
        let window = WINDOW + grace;
        let min_period =
            Duration::from_nanos((window.as_nanos() as u64).div_ceil(u64::from(rpm.get())));
        let ceiling = f64::from(rpm.get()) * WINDOW.as_secs_f64() / window.as_secs_f64();
        RateLimiter {
            ceiling,
            min_period,
            base_backoff: base_backoff.max(Duration::from_millis(1)),
            state: Mutex::new(State {
                last: None,
                rpm: ceiling,
                paused_until: None,
                round_start: None,
                last_change: None,
                backoff: Duration::ZERO,
                stalled_rounds: 0,
                accepted: VecDeque::new(),
                round_answers: VecDeque::new(),
                round_faults: 0,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for the next permit; returns its slot (pass it back to
    /// [`RateLimiter::report`]). A pause that begins while a caller waits
    /// holds that caller too.
    pub async fn acquire(&self) -> Instant {
        loop {
            let slot = self.reserve();
            tokio::time::sleep_until(slot).await;
            if self.state().paused_until.is_none_or(|p| p <= slot) {
                return slot;
            }
        }
    }

    /// Takes the next slot without waiting for it: the caller must not
    /// send before it (a worker's permit, waited for on the worker). A
    /// pause that begins after this does not hold it.
    pub fn reserve(&self) -> Instant {
        let mut st = self.state();
        let now = Instant::now();
        let period = period_of(st.rpm, self.min_period);
        let mut slot = st.last.map_or(now, |l| (l + period).max(now));
        if let Some(p) = st.paused_until.filter(|p| *p > slot) {
            slot = p;
        }
        st.last = Some(slot);
        slot
    }

    /// Reports the answer to the request sent at `sent`.
    pub fn report(&self, sent: Instant, signal: Signal) {
        let now = Instant::now();
        let mut st = self.state();
        while st.accepted.front().is_some_and(|t| now - *t > WINDOW) {
            st.accepted.pop_front();
        }
        while let Some(&(t, fault)) = st.round_answers.front() {
            if now - t <= WINDOW {
                break;
            }
            st.round_answers.pop_front();
            st.round_faults -= usize::from(fault);
        }
        // Sent under the previous rate: already counted in its round.
        let this_round = st.round_start.is_none_or(|r| sent >= r);
        match signal {
            Signal::Accepted => {
                st.accepted.push_back(now);
                if this_round {
                    st.round_answers.push_back((now, false));
                }
                st.backoff = Duration::ZERO;
                st.stalled_rounds = 0;
                let due = st.last_change.is_none_or(|t| now - t >= INCREASE_EVERY);
                if due && st.rpm < self.ceiling {
                    let step = (st.rpm * INCREASE_SHARE).max(1.0);
                    st.rpm = (st.rpm + step).min(self.ceiling);
                    st.last_change = Some(now);
                }
            }
            Signal::Throttled(after) | Signal::Overloaded(after) => {
                if let Some(after) = after {
                    st.pause_until(now + after);
                }
                if !this_round {
                    return;
                }
                let overloaded = if let Signal::Overloaded(_) = signal {
                    st.round_answers.push_back((now, true));
                    st.round_faults += 1;
                    let share = st.round_faults as f64 / st.round_answers.len() as f64;
                    st.round_faults >= FAULTS_TO_SLOW_DOWN && share >= FAULT_SHARE_TO_SLOW_DOWN
                } else {
                    true // a 429: the destination's own word
                };
                if overloaded {
                    self.slow_down(&mut st, now, after.is_none());
                }
            }
            Signal::Neutral => {}
        }
    }

    /// One round of slow-down: the rate decreases, a new round starts, and
    /// without a `Retry-After` every request backs off.
    fn slow_down(&self, st: &mut State, now: Instant, back_off: bool) {
        let capacity = 0.9 * st.accepted.len() as f64;
        st.rpm = capacity
            .min(st.rpm * 0.9)
            .max(st.rpm * 0.5)
            .clamp(FLOOR_RPM, self.ceiling);
        st.round_start = Some(now);
        st.round_answers.clear();
        st.round_faults = 0;
        st.last_change = Some(now);
        st.stalled_rounds += 1;
        if back_off {
            st.backoff = if st.backoff.is_zero() {
                self.base_backoff
            } else {
                (st.backoff * 2).min(MAX_BACKOFF)
            };
            let until = now + st.backoff;
            st.pause_until(until);
        }
    }

    /// The current rate, requests per minute.
    pub fn rpm(&self) -> f64 {
        self.state().rpm
    }

    /// Rounds of slow-down in a row without an accepted request: how long
    /// the destination has refused everyone.
    pub fn stalled_rounds(&self) -> u32 {
        self.state().stalled_rounds
    }
}

type Registry = HashMap<(String, String, u32, u64), Weak<RateLimiter>>;

static LIMITERS: Mutex<Option<Registry>> = Mutex::new(None);

/// The limiter shared by everything sending to the destination `name` at
/// `url` with ceiling `rpm` (a changed rpm or URL starts a new one).
pub fn for_destination(
    name: &str,
    url: &str,
    rpm: Rpm,
    base_backoff: Duration,
) -> Arc<RateLimiter> {
    for_destination_with_grace(name, url, rpm, base_backoff, Duration::ZERO)
}

/// [`for_destination`] for permits used up to `grace` after their slot
/// ([`RateLimiter::with_grace`]): the coordinator's limiter of workers.
pub fn for_destination_with_grace(
    name: &str,
    url: &str,
    rpm: Rpm,
    base_backoff: Duration,
    grace: Duration,
) -> Arc<RateLimiter> {
    let mut reg = LIMITERS.lock().unwrap_or_else(PoisonError::into_inner);
    let reg = reg.get_or_insert_with(HashMap::new);
    reg.retain(|_, w| w.strong_count() > 0);
    let key = (
        name.to_string(),
        url.to_string(),
        rpm.get(),
        grace.as_nanos() as u64,
    );
    if let Some(l) = reg.get(&key).and_then(Weak::upgrade) {
        return l;
    }
    let l = Arc::new(RateLimiter::with_grace(rpm, base_backoff, grace));
    reg.insert(key, Arc::downgrade(&l));
    l
}

/// The current rate (requests per minute) and ceiling of the limiter of
/// destination `name`, while anything is sending to it.
pub fn current(name: &str) -> Option<(f64, u32)> {
    let reg = LIMITERS.lock().unwrap_or_else(PoisonError::into_inner);
    reg.as_ref()?
        .iter()
        .filter(|((n, _, _, _), _)| n == name)
        .find_map(|((_, _, rpm, _), w)| w.upgrade().map(|l| (l.rpm(), *rpm)))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Max permits in any half-open window of `w` starting at a permit.
    pub(crate) fn max_in_window(slots: &[Instant], w: Duration) -> usize {
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

    fn limiter(rpm: u32) -> Arc<RateLimiter> {
        Arc::new(RateLimiter::new(
            Rpm::new(rpm).unwrap(),
            Duration::from_secs(3),
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn never_above_rpm_in_any_minute_and_within_one_percent_on_average() {
        for rpm in [300u32, 1000, 25_000] {
            let lim = limiter(rpm);
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

    /// The coordinator's limiter of workers: permits used up to `grace`
    /// late still make at most rpm requests in any 60 s window, because the
    /// slots of any (60 s + grace) window are at most rpm.
    #[tokio::test(start_paused = true)]
    async fn with_grace_every_stretched_window_holds_at_most_rpm() {
        let grace = Duration::from_millis(500);
        for rpm in [600u32, 25_000] {
            let lim =
                RateLimiter::with_grace(Rpm::new(rpm).unwrap(), Duration::from_secs(3), grace);
            let start = Instant::now();
            let total = rpm as usize * 3;
            let mut slots = Vec::with_capacity(total);
            for i in 0..total {
                slots.push(lim.reserve());
                if i % 97 == 0 {
                    // Callers arrive over time, not all at once.
                    tokio::time::advance(Duration::from_millis(3)).await;
                }
            }
            let most = max_in_window(&slots, Duration::from_secs(60) + grace);
            assert!(most <= rpm as usize, "rpm {rpm}: {most}");
            // Worst case for the requests: each slot's request goes out
            // anywhere in [slot, slot + grace]; the latest of a window's
            // first and the earliest of the rest still fit.
            let late: Vec<Instant> = slots
                .iter()
                .enumerate()
                .map(|(i, s)| if i % 2 == 0 { *s + grace } else { *s })
                .collect();
            let mut sorted = late.clone();
            sorted.sort();
            assert!(max_in_window(&sorted, Duration::from_secs(60)) <= rpm as usize);
            let span = (*slots.last().unwrap() - start).as_secs_f64();
            let per_min = (total - 1) as f64 / span * 60.0;
            let ceiling = rpm as f64 * 60.0 / 60.5;
            assert!(
                per_min <= ceiling * (1.0 + 1e-9) && per_min >= ceiling * 0.99,
                "rpm {rpm}: {per_min}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_does_not_turn_into_a_burst() {
        let lim = limiter(60);
        let a = lim.acquire().await;
        tokio::time::sleep(Duration::from_secs(600)).await;
        let b = lim.acquire().await;
        let c = lim.acquire().await;
        assert!(b - a >= Duration::from_secs(600));
        assert_eq!(c - b, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_pauses_every_caller_and_one_round_decreases_once() {
        let lim = limiter(600);
        let first = lim.acquire().await;
        let second = lim.acquire().await;
        // Both in flight; both come back 429 with Retry-After: 10.
        tokio::time::sleep(Duration::from_millis(50)).await;
        lim.report(first, Signal::Throttled(Some(Duration::from_secs(10))));
        let after_one = lim.rpm();
        lim.report(second, Signal::Throttled(Some(Duration::from_secs(10))));
        assert!((300.0..600.0).contains(&after_one), "{after_one}");
        assert_eq!(lim.rpm(), after_one, "the same round decreases once");
        let next = lim.acquire().await;
        assert!(next - second >= Duration::from_secs(10), "paused");
    }

    #[tokio::test(start_paused = true)]
    async fn healthy_answers_recover_additively_up_to_the_ceiling() {
        let lim = limiter(1000);
        let s = lim.acquire().await;
        lim.report(s, Signal::Throttled(None));
        let low = lim.rpm();
        assert!(low <= 900.0);
        for _ in 0..200 {
            let s = lim.acquire().await;
            lim.report(s, Signal::Accepted);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        assert_eq!(lim.rpm(), 1000.0, "back to the ceiling, never above");
    }

    /// Sends `minutes` of requests through the limiter, one at a time, and
    /// answers each with a fault when `fault(i)` says so. Returns the
    /// requests sent per minute.
    async fn run_with_faults(lim: &RateLimiter, minutes: u64, fault: impl Fn(u64) -> bool) -> f64 {
        let start = Instant::now();
        let end = start + Duration::from_secs(60 * minutes);
        let mut n = 0u64;
        while Instant::now() < end {
            let slot = lim.acquire().await;
            let signal = if fault(n) {
                Signal::Overloaded(None)
            } else {
                Signal::Accepted
            };
            n += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
            lim.report(slot, signal);
        }
        n as f64 / (Instant::now() - start).as_secs_f64() * 60.0
    }

    /// The soak's case: a steady 10 % of 503s and timeouts, spread evenly,
    /// is not overload. Slowing down at each one settled a 6000-rpm
    /// destination near 20 rpm.
    #[tokio::test(start_paused = true)]
    async fn sporadic_faults_do_not_slow_the_destination() {
        let lim = limiter(6000);
        let per_min = run_with_faults(&lim, 10, |n| n % 10 == 9).await;
        assert!(per_min >= 5900.0, "{per_min:.0} requests a minute");
        assert_eq!(lim.rpm(), 6000.0);
        assert_eq!(lim.stalled_rounds(), 0);
    }

    /// A destination that fails every request is slowed down at once (after
    /// the few faults that make a share), and one failing every other
    /// request keeps being slowed down.
    #[tokio::test(start_paused = true)]
    async fn faults_past_a_fifth_of_the_answers_slow_the_destination() {
        let lim = limiter(6000);
        let mut slots = Vec::new();
        for _ in 0..FAULTS_TO_SLOW_DOWN {
            slots.push(lim.acquire().await);
        }
        for (i, s) in slots.into_iter().enumerate() {
            assert_eq!(lim.rpm(), 6000.0, "not yet, at fault {i}");
            lim.report(s, Signal::Overloaded(None));
        }
        assert!(lim.rpm() <= 5400.0, "{}", lim.rpm());
        assert_eq!(lim.stalled_rounds(), 1);
        // Every request then backs off for the retry delay.
        let decreased = Instant::now();
        let next = lim.acquire().await;
        assert!(next - decreased >= Duration::from_secs(3), "paused");

        let lim = limiter(6000);
        let per_min = run_with_faults(&lim, 10, |n| n % 2 == 1).await;
        assert!(per_min < 600.0, "{per_min:.0} requests a minute");
        assert!(lim.rpm() < 600.0, "{}", lim.rpm());
    }

    #[test]
    fn one_limiter_per_destination() {
        let rpm = Rpm::new(100).unwrap();
        let a = for_destination("d", "http://x/", rpm, Duration::from_secs(1));
        let b = for_destination("d", "http://x/", rpm, Duration::from_secs(1));
        let c = for_destination("e", "http://x/", rpm, Duration::from_secs(1));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
    }
}

//! The sender stage: one HTTP POST per page on a keep-alive pool, under the
//! destination's adaptive rate limit and a bounded in-flight window, with
//! the seed's retry rules. Every attempt (retries included) takes a rate
//! permit and carries the same `Idempotency-Key: {sync}-{execution}-{page}`,
//! which a resumed run reproduces exactly.
//!
//! A 429 is the destination's flow control, not a failure of the page: it
//! slows and pauses the whole destination (see `rate.rs`) and the page
//! waits its turn without spending one of the seed's 3 retries. Only when
//! the destination has accepted nothing for [`THROTTLE_PATIENCE`] rounds of
//! slow-down in a row does the page give up, with the seed's message.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;

use super::rate::{self, RateLimiter, Signal};
use crate::destination::Destination;

/// The seed's message when a page never got through.
pub const EXHAUSTED: &str = "Exhausted max retries for the segment";

/// Rounds of destination-wide slow-down, in a row and without one accepted
/// request, after which a page answered 429 gives up (with backoff pauses
/// from the 3 s retry delay doubling to 60 s, about four minutes).
pub const THROTTLE_PATIENCE: u32 = 8;

/// Longest `Retry-After` honoured; a destination asking for longer fails the
/// page after its retries rather than stalling the run for hours.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// A request's place among the `in_flight` a destination allows.
pub type RequestSlot = tokio::sync::OwnedSemaphorePermit;

/// Pages a sender holds per request it may have in flight: pages waiting
/// out a retry delay then leave room for others to go out (at 6000 rpm, a
/// tenth of the pages failing once with a 3 s delay keeps 30 pages waiting;
/// 32 in flight by default). Not more, since each is a rendered body in
/// memory.
pub(crate) const PAGES_HELD_PER_REQUEST: usize = 4;

/// What to do after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Acknowledged.
    Delivered,
    /// Try again, after the server's `Retry-After` if it gave one.
    Retry {
        /// Server-requested delay.
        after: Option<Duration>,
        /// What went wrong, for the error message if retries run out.
        reason: String,
    },
    /// Do not retry: the destination refused the page.
    Fail {
        /// The status it answered.
        status: u16,
        /// What it said.
        reason: String,
    },
}

/// The seed's rules: 2xx is delivered; 408, 429 and 5xx are retried; any
/// other status fails at once (redirects are not followed: a POST body must
/// not be silently turned into a GET).
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &str) -> Verdict {
    let reason = || {
        let text: String = body.chars().take(300).collect();
        format!(
            "HTTP {status}{}{text}",
            if text.is_empty() { "" } else { ": " }
        )
    };
    if status.is_success() {
        Verdict::Delivered
    } else if status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
    {
        Verdict::Retry {
            after: headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after),
            reason: reason(),
        }
    } else {
        Verdict::Fail {
            status: status.as_u16(),
            reason: reason(),
        }
    }
}

/// `Retry-After` as seconds or an HTTP date, capped.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
        let ms = (when.timestamp_millis() - chrono::Utc::now().timestamp_millis()).max(0);
        Duration::from_millis(ms as u64)
    };
    Some(d.min(MAX_RETRY_AFTER))
}

/// Outcome of one page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageStats {
    /// Attempts made.
    pub requests: u32,
    /// Of which answered 429.
    pub throttled: u32,
}

/// Why a page failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageError {
    /// The message for the execution's history.
    pub message: String,
    /// Attempts made.
    pub requests: u32,
    /// Of which answered 429.
    pub throttled: u32,
    /// The status of a refusal (a non-retryable answer): the run goes on
    /// with the other pages. `None`: retries ran out (the seed's rule: the
    /// run stops).
    pub refused: Option<u16>,
    /// The last attempt's error, bounded.
    pub last_error: String,
    /// No attempt got an answer from the destination (every one failed to
    /// connect, or no permit could be had): a worker hands such a page
    /// back for another worker instead of reporting it failed.
    pub unreachable: bool,
}

/// How the reason of an attempt that reached nothing begins (a connection
/// refused, reset, or not resolved).
const UNREACHABLE: &str = "request failed: ";

/// `Idempotency-Key: {sync}-{execution seq}-{page_count}`: the prefix.
fn key_prefix(sync_id: u32, seq: u32) -> String {
    format!("{sync_id}-{seq}-")
}

/// Rate permits from elsewhere: a worker's permits come from the
/// coordinator's limiter of the destination, over NATS.
pub trait RemotePermits: Send + Sync {
    /// Waits for a permit; returns its slot, to hand back with the answer,
    /// or why none can be had (the coordinator gone, the run over).
    fn acquire(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, String>> + Send + '_>>;
    /// What the destination answered to the request of permit `slot`.
    fn report(&self, slot: u64, signal: Signal);
    /// Rounds of slow-down in a row without an accepted request, as of the
    /// last permit.
    fn stalled_rounds(&self) -> u32;
    /// The destination's current rate, as of the last permit.
    fn rpm(&self) -> f64;
}

/// Where a sender's permits come from.
#[derive(Clone)]
enum Limiter {
    /// This process's limiter of the destination.
    Local(std::sync::Arc<RateLimiter>),
    /// The coordinator's.
    Remote(std::sync::Arc<dyn RemotePermits>),
}

/// A permit's slot, to report the answer against.
#[derive(Clone, Copy)]
enum Slot {
    Local(tokio::time::Instant),
    Remote(u64),
}

impl Limiter {
    async fn acquire(&self) -> Result<Slot, String> {
        match self {
            Limiter::Local(l) => Ok(Slot::Local(l.acquire().await)),
            Limiter::Remote(r) => r.acquire().await.map(Slot::Remote),
        }
    }

    fn report(&self, slot: Slot, signal: Signal) {
        match (self, slot) {
            (Limiter::Local(l), Slot::Local(s)) => l.report(s, signal),
            (Limiter::Remote(r), Slot::Remote(s)) => r.report(s, signal),
            _ => {}
        }
    }

    fn stalled_rounds(&self) -> u32 {
        match self {
            Limiter::Local(l) => l.stalled_rounds(),
            Limiter::Remote(r) => r.stalled_rounds(),
        }
    }

    fn rpm(&self) -> f64 {
        match self {
            Limiter::Local(l) => l.rpm(),
            Limiter::Remote(r) => r.rpm(),
        }
    }
}

/// Sends the pages of one execution.
pub struct PageSender {
    client: reqwest::Client,
    dest: Destination,
    rate: Limiter,
    key_prefix: String,
    /// Requests in flight at once (the destination's `in_flight`). Taken
    /// per attempt, not per page: a page waiting out its retry delay holds
    /// no connection, so a few failing pages do not starve the rest.
    requests: std::sync::Arc<tokio::sync::Semaphore>,
    /// First and last permit, and permits taken: this sender's own rate.
    sent: std::sync::Mutex<(
        Option<tokio::time::Instant>,
        Option<tokio::time::Instant>,
        u64,
    )>,
}

impl PageSender {
    /// A sender for `dest`, for execution `seq` of sync `sync_id`.
    pub fn new(dest: Destination, sync_id: u32, seq: u32) -> Result<PageSender, reqwest::Error> {
        let rate = rate::for_destination(&dest.name, dest.url.as_str(), dest.rpm, dest.retry.delay);
        Self::with_limiter(dest, sync_id, seq, Limiter::Local(rate))
    }

    /// A sender whose permits come from `permits` (a worker's, from the
    /// coordinator).
    pub fn with_remote_permits(
        dest: Destination,
        sync_id: u32,
        seq: u32,
        permits: std::sync::Arc<dyn RemotePermits>,
    ) -> Result<PageSender, reqwest::Error> {
        Self::with_limiter(dest, sync_id, seq, Limiter::Remote(permits))
    }

    fn with_limiter(
        dest: Destination,
        sync_id: u32,
        seq: u32,
        rate: Limiter,
    ) -> Result<PageSender, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(dest.in_flight)
            .tcp_nodelay(true)
            .build()?;
        Ok(PageSender {
            rate,
            client,
            requests: std::sync::Arc::new(tokio::sync::Semaphore::new(dest.in_flight)),
            dest,
            key_prefix: key_prefix(sync_id, seq),
            sent: std::sync::Mutex::new((None, None, 0)),
        })
    }

    /// Waits for a permit of the destination's limiter and counts it.
    async fn permit(&self) -> Result<Slot, String> {
        let slot = self.rate.acquire().await?;
        let now = tokio::time::Instant::now();
        let mut s = self
            .sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.0.get_or_insert(now);
        s.1 = Some(now);
        s.2 += 1;
        Ok(slot)
    }

    /// Requests per minute this sender achieved between its first and last
    /// request (its request count when it sent fewer than two).
    pub fn effective_rpm(&self) -> u32 {
        let s = self
            .sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match (s.0, s.1) {
            (Some(a), Some(b)) if b > a => {
                ((s.2 - 1) as f64 * 60.0 / (b - a).as_secs_f64()).round() as u32
            }
            _ => s.2 as u32,
        }
    }

    /// The destination's current (adaptive) rate, requests per minute.
    pub fn current_rpm(&self) -> f64 {
        self.rate.rpm()
    }

    /// The pause between two retries of a page.
    pub fn retry_delay(&self) -> Duration {
        self.dest.retry.delay
    }

    /// The destination's name (for metrics).
    pub fn destination_name(&self) -> &str {
        &self.dest.name
    }

    /// The idempotency key of page `index` (0-based; the key uses `page_count`).
    pub fn idempotency_key(&self, index: u32) -> String {
        format!("{}{}", self.key_prefix, index + 1)
    }

    /// The idempotency key of page `index` of execution `seq` of sync
    /// `sync_id`, without a sender (a plan's shown requests).
    pub(crate) fn key_of(sync_id: u32, seq: u32, index: u32) -> String {
        format!("{}{}", key_prefix(sync_id, seq), index + 1)
    }

    /// The request for one attempt: the destination's URL, headers and
    /// auth, JSON, and the page's idempotency key.
    fn request(&self, key: &str, body: Bytes) -> reqwest::RequestBuilder {
        let d = &self.dest;
        let mut req = self
            .client
            .post(d.url.clone())
            .timeout(d.timeout)
            .header(CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", key);
        for (k, v) in &d.headers {
            req = req.header(k, v);
        }
        if let Some(b) = &d.basic {
            req = req.basic_auth(&b.user, Some(&b.password));
        }
        req.body(body)
    }

    /// One request exactly as a page's attempt goes out (after a rate
    /// permit), with the raw answer: for the connection test.
    pub(crate) async fn probe(
        &self,
        key: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Option<String>, String), reqwest::Error> {
        // A connection test runs in-process, where permits always come.
        let slot = self.permit().await.ok();
        let resp = self.request(key, body).send().await;
        let signal = match &resp {
            Ok(r) => signal_of(r.status(), r.headers()),
            Err(e) if e.is_timeout() => Signal::Overloaded(None),
            Err(_) => Signal::Neutral,
        };
        if let Some(slot) = slot {
            self.rate.report(slot, signal);
        }
        let resp = resp?;
        let status = resp.status();
        let ct = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.text().await.unwrap_or_default();
        Ok((status, ct, text))
    }

    async fn attempt(&self, key: &str, body: Bytes) -> (Verdict, Signal) {
        let d = &self.dest;
        match self.request(key, body).send().await {
            Ok(resp) => {
                let status = resp.status();
                let headers = resp.headers().clone();
                // Reading the body (bounded by the same timeout) returns the
                // connection to the pool and gives failures their message.
                let text = resp.text().await.unwrap_or_default();
                (
                    classify(status, &headers, &text),
                    signal_of(status, &headers),
                )
            }
            Err(e) if e.is_timeout() => (
                Verdict::Retry {
                    after: None,
                    reason: format!("timed out after {} ms", d.timeout.as_millis()),
                },
                Signal::Overloaded(None),
            ),
            Err(e) => (
                Verdict::Retry {
                    after: None,
                    reason: format!("{UNREACHABLE}{}", error_chain(&e)),
                },
                Signal::Neutral,
            ),
        }
    }

    /// Sends page `index` until delivered, failed, or out of retries.
    pub async fn send(&self, index: u32, body: Bytes) -> Result<PageStats, PageError> {
        self.send_with(index, body, None).await
    }

    /// Waits until a request may go out (fewer than `in_flight` are): the
    /// caller holds the slot until it hands it to [`PageSender::send_with`],
    /// so it can decide not to send after all once it has one.
    pub async fn request_slot(&self) -> Option<RequestSlot> {
        // Never closed, so it always gives a permit.
        self.requests.clone().acquire_owned().await.ok()
    }

    /// [`PageSender::send`] whose first attempt takes `slot`.
    pub async fn send_with(
        &self,
        index: u32,
        body: Bytes,
        slot: Option<RequestSlot>,
    ) -> Result<PageStats, PageError> {
        let key = self.idempotency_key(index);
        self.deliver(index, slot, || self.attempt(&key, body.clone()))
            .await
    }

    /// The retry loop of one page around `attempt` (one request and its
    /// verdict): rate permits, the seed's retries, throttling.
    async fn deliver<F, Fut>(
        &self,
        index: u32,
        mut first: Option<RequestSlot>,
        mut attempt: F,
    ) -> Result<PageStats, PageError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = (Verdict, Signal)>,
    {
        let (mut requests, mut throttled, mut retries) = (0u32, 0u32, 0u32);
        let mut answered = false;
        let last = loop {
            let in_flight = match first.take() {
                Some(slot) => Some(slot),
                None => self.request_slot().await,
            };
            let slot = match self.permit().await {
                Ok(s) => s,
                Err(why) => {
                    return Err(PageError {
                        message: format!("page {}: no rate permit: {why}", index + 1),
                        requests,
                        throttled,
                        refused: None,
                        last_error: why,
                        unreachable: !answered,
                    })
                }
            };
            requests += 1;
            let (verdict, signal) = attempt().await;
            drop(in_flight);
            self.rate.report(slot, signal);
            match verdict {
                Verdict::Delivered => {
                    return Ok(PageStats {
                        requests,
                        throttled,
                    })
                }
                Verdict::Fail { status, reason } => {
                    return Err(PageError {
                        message: format!(
                            "page {} of the execution was refused: {reason}",
                            index + 1
                        ),
                        requests,
                        throttled,
                        refused: Some(status),
                        last_error: reason,
                        unreachable: false,
                    })
                }
                Verdict::Retry { after, reason } => {
                    answered |= !reason.starts_with(UNREACHABLE);
                    tracing::warn!(page = index + 1, attempt = requests, %reason, "page attempt failed");
                    if let Signal::Throttled(_) = signal {
                        // The limiter's pause is the wait.
                        throttled += 1;
                        if self.rate.stalled_rounds() < THROTTLE_PATIENCE {
                            continue;
                        }
                        break reason;
                    }
                    if retries == self.dest.retry.max_retries {
                        break reason;
                    }
                    retries += 1;
                    tokio::time::sleep(after.unwrap_or(self.dest.retry.delay)).await;
                }
            }
        };
        Err(PageError {
            message: format!("{EXHAUSTED} (page {}: {last})", index + 1),
            requests,
            throttled,
            refused: None,
            last_error: last,
            unreachable: !answered,
        })
    }
}

/// What an answer says about the destination's load.
fn signal_of(status: StatusCode, headers: &HeaderMap) -> Signal {
    let after = || {
        headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after)
    };
    match status {
        s if s.is_success() => Signal::Accepted,
        StatusCode::TOO_MANY_REQUESTS => Signal::Throttled(after()),
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => {
            Signal::Overloaded(after())
        }
        _ => Signal::Neutral,
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// What became of one page, as a sender reports it (a task here, or a
/// worker through the coordinator).
#[derive(Debug)]
pub(super) struct PageOutcome {
    /// 0-based page number.
    pub(super) index: u32,
    /// Users of the page that could not be sent (no value).
    pub(super) skipped: u32,
    /// Users sent.
    pub(super) users: u32,
    /// Delivered, or why not.
    pub(super) result: Result<PageStats, PageError>,
}

impl PageOutcome {
    /// Counts the page in the metrics of `dest`, hands it to the
    /// checkpoint, and applies the seed's rule: a refused page does not
    /// stop the others; retries that ran out do (`fail`).
    pub(super) fn record(
        self,
        dest: &str,
        events: &crossbeam::channel::Sender<super::checkpoint::Event>,
        fail: &(dyn Fn(String) + Sync),
    ) {
        use super::checkpoint::Event;
        match self.result {
            Ok(stats) => {
                crate::metrics::page_acked(dest, u64::from(self.users), stats.requests);
                crate::metrics::throttled_by(dest, stats.throttled);
                let _ = events.send(Event::Ack {
                    index: self.index,
                    requests: stats.requests,
                    throttled: stats.throttled,
                    skipped: self.skipped,
                });
            }
            Err(e) => {
                crate::metrics::requests_to(dest, e.requests);
                crate::metrics::throttled_by(dest, e.throttled);
                let _ = events.send(Event::Failed {
                    index: self.index,
                    requests: e.requests,
                    throttled: e.throttled,
                    status: e.refused,
                    error: e
                        .last_error
                        .chars()
                        .take(super::checkpoint::ERROR_EXCERPT)
                        .collect(),
                });
                if e.refused.is_none() {
                    fail(e.message);
                }
            }
        }
    }
}

/// The sender loop of one execution: takes rendered pages, sends up to
/// `in_flight` requests at once under the destination's rate limit, and
/// reports each outcome to the checkpoint. It holds
/// [`PAGES_HELD_PER_REQUEST`] times that many pages (the others wait out a
/// retry delay), and starts a page only once a request slot is free. Stops
/// taking pages once `stopped()` (shutdown or a failed page); the pages in
/// flight always finish and are reported. Returns the rate it achieved,
/// requests per minute.
pub(crate) async fn drive(
    sender: PageSender,
    in_flight: usize,
    mut pages: tokio::sync::mpsc::Receiver<super::render::Rendered>,
    events: crossbeam::channel::Sender<super::checkpoint::Event>,
    stopped: impl Fn() -> bool,
    fail: &(dyn Fn(String) + Sync),
) -> u32 {
    let sender = std::sync::Arc::new(sender);
    let dest_name = sender.destination_name().to_string();
    let mut tasks = tokio::task::JoinSet::new();
    let handle = |res: Result<PageOutcome, tokio::task::JoinError>| match res {
        Ok(outcome) => outcome.record(&dest_name, &events, fail),
        Err(e) => fail(format!("sender task failed: {e}")),
    };
    while !stopped() {
        let Some(page) = pages.recv().await else {
            break;
        };
        while tasks.len() >= in_flight * PAGES_HELD_PER_REQUEST {
            if let Some(r) = tasks.join_next().await {
                handle(r);
            }
        }
        if stopped() {
            break;
        }
        if page.body.is_empty() {
            // Every user of the page was skipped: nothing to send.
            handle(Ok(PageOutcome {
                index: page.index,
                skipped: page.skipped,
                users: 0,
                result: Ok(PageStats::default()),
            }));
            continue;
        }
        // A page goes out only with a request slot, and only if the run
        // still goes on once it has one: a failed checkpoint stops every
        // page that has not been sent yet, however many are held.
        let slot = loop {
            tokio::select! {
                slot = sender.request_slot() => break slot,
                Some(r) = tasks.join_next(), if !tasks.is_empty() => handle(r),
            }
        };
        while let Some(r) = tasks.try_join_next() {
            handle(r);
        }
        if stopped() {
            break;
        }
        let sender = sender.clone();
        tasks.spawn(async move {
            let body = Bytes::from(page.body);
            let result = sender.send_with(page.index, body, slot).await;
            crate::metrics::destination_rate(sender.destination_name(), sender.current_rpm());
            PageOutcome {
                index: page.index,
                skipped: page.skipped,
                users: page.adds + page.removes,
                result,
            }
        });
        while let Some(r) = tasks.try_join_next() {
            handle(r);
        }
    }
    // Stop the renderers (if we broke out early), finish what is in flight.
    pages.close();
    while pages.recv().await.is_some() {}
    while let Some(r) = tasks.join_next().await {
        handle(r);
    }
    sender.effective_rpm()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table_follows_the_seed() {
        let h = HeaderMap::new();
        let retry = |c: u16| {
            matches!(
                classify(StatusCode::from_u16(c).unwrap(), &h, ""),
                Verdict::Retry { .. }
            )
        };
        let ok = |c: u16| classify(StatusCode::from_u16(c).unwrap(), &h, "") == Verdict::Delivered;
        for c in [200, 201, 202, 204] {
            assert!(ok(c), "{c}");
        }
        for c in [408, 429, 500, 502, 503, 504] {
            assert!(retry(c), "{c}");
        }
        for c in [301, 400, 401, 403, 404, 409, 422] {
            assert!(!retry(c) && !ok(c), "{c}");
        }
    }

    /// The case, simulated in paused time: a destination whose
    /// hidden capacity is 600 requests in any 60 s (above that it answers
    /// 429, with or without `Retry-After`), a sync configured at 25000 rpm,
    /// 8 pages in flight, 40 ms per answer. Through the real retry loop and
    /// limiter. Returns (accepted per minute, share answered 429).
    /// Delivers pages `0..pages` through `sender`'s real retry loop, at
    /// most `held` at a time, answering every attempt at page `i` with
    /// `answer(i)`; no page may give up. Returns the (virtual) seconds it
    /// took.
    async fn deliver_all<F, Fut>(
        sender: &std::sync::Arc<PageSender>,
        pages: u32,
        held: usize,
        answer: F,
    ) -> f64
    where
        F: Fn(u32) -> Fut + Clone + Send + Sync + 'static,
        Fut: std::future::Future<Output = (Verdict, Signal)> + Send,
    {
        let start = tokio::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        let (mut next, mut delivered) = (0u32, 0u32);
        while delivered < pages {
            while tasks.len() < held && next < pages {
                let (s, answer, index) = (sender.clone(), answer.clone(), next);
                tasks.spawn(async move { s.deliver(index, None, || answer(index)).await });
                next += 1;
            }
            let r = tasks.join_next().await.unwrap().unwrap();
            assert!(r.is_ok(), "no page gives up: {r:?}");
            delivered += 1;
        }
        (tokio::time::Instant::now() - start).as_secs_f64()
    }

    async fn against_capacity_600(retry_after: bool) -> (f64, f64) {
        use std::collections::VecDeque;
        use std::sync::{Arc, Mutex};
        use tokio::time::Instant;

        const CAPACITY: usize = 600;
        const PAGES: u32 = 6000;
        type Log = (VecDeque<Instant>, Vec<(Instant, u16)>);
        let mut config = crate::destination::DestinationConfig::new(
            format!("capacity-600-{retry_after}"),
            "http://127.0.0.1:9/never-called",
        );
        config.rpm = Some(25_000);
        let dest = config.validate(1).unwrap();
        let sender = Arc::new(PageSender::new(dest, 1, 1).unwrap());
        let receiver: Arc<Mutex<Log>> = Arc::default();
        let answer = move |rx: Arc<Mutex<Log>>| async move {
            tokio::time::sleep(Duration::from_millis(40)).await;
            let now = Instant::now();
            let mut g = rx.lock().unwrap();
            let minute = Duration::from_secs(60);
            while g.0.front().is_some_and(|t| now - *t >= minute) {
                g.0.pop_front();
            }
            if g.0.len() < CAPACITY {
                g.0.push_back(now);
                g.1.push((now, 200));
                (Verdict::Delivered, Signal::Accepted)
            } else {
                g.1.push((now, 429));
                // When the oldest accepted request leaves the window.
                let after = retry_after.then(|| {
                    let free = g.0[0] + minute - now;
                    Duration::from_secs(free.as_secs() + 1)
                });
                (
                    Verdict::Retry {
                        after,
                        reason: "HTTP 429".into(),
                    },
                    Signal::Throttled(after),
                )
            }
        };

        let rx = receiver.clone();
        let elapsed = deliver_all(&sender, PAGES, 8, move |_| answer(rx.clone())).await;
        let g = receiver.lock().unwrap();
        let attempts = g.1.len();
        let throttled = g.1.iter().filter(|(_, s)| *s == 429).count();
        let rate = f64::from(PAGES) / elapsed * 60.0;
        let share = throttled as f64 / attempts as f64;
        eprintln!(
            "capacity 600/min, Retry-After {retry_after}: {PAGES} pages in {elapsed:.0} s \
             (virtual), {rate:.0} accepted/min ({:.0} % of capacity), {attempts} requests, \
             {throttled} answered 429 ({:.2} %), sender's effective rate {} rpm",
            rate / 6.0,
            share * 100.0,
            sender.effective_rpm()
        );
        // The ceiling: never more than 25000 requests in any 60 s.
        let times: Vec<Instant> = g.1.iter().map(|(t, _)| *t).collect();
        let most = crate::pipeline::rate::tests::max_in_window(&times, Duration::from_secs(60));
        assert!(most <= 25_000, "{most} requests in one minute");
        (rate, share)
    }

    #[tokio::test(start_paused = true)]
    async fn a_destination_that_can_take_600_a_minute_is_not_hammered() {
        for retry_after in [false, true] {
            let (rate, share) = against_capacity_600(retry_after).await;
            assert!(share < 0.05, "{:.2} % answered 429", share * 100.0);
            assert!(rate >= 480.0, "{rate:.0} accepted per minute");
        }
    }

    /// The soak's case through the real retry loop and limiter, in paused
    /// time: a 6000-rpm destination that answers the first attempt of
    /// every tenth page 503, 16 requests in flight and pages held as
    /// `drive` holds them, 40 ms per answer. Each failed page waits out its
    /// own retry delay; the others keep the destination's rate.
    #[tokio::test(start_paused = true)]
    async fn sporadic_503s_retry_the_page_without_slowing_the_destination() {
        use std::collections::HashSet;
        use std::sync::{Arc, Mutex};

        const PAGES: u32 = 3000;
        let mut config = crate::destination::DestinationConfig::new(
            "sporadic-503",
            "http://127.0.0.1:9/never-called",
        );
        config.rpm = Some(6000);
        config.in_flight = Some(16);
        let dest = config.validate(1).unwrap();
        let sender = Arc::new(PageSender::new(dest, 1, 1).unwrap());
        // Every tenth page's first attempt fails: 1 answer in 11.
        let failed_once: Arc<Mutex<HashSet<u32>>> = Arc::default();
        let answer = move |index: u32| {
            let failed_once = failed_once.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(40)).await;
                if index % 10 == 9 && failed_once.lock().unwrap().insert(index) {
                    let reason = "HTTP 503".to_string();
                    (
                        Verdict::Retry {
                            after: None,
                            reason,
                        },
                        Signal::Overloaded(None),
                    )
                } else {
                    (Verdict::Delivered, Signal::Accepted)
                }
            }
        };
        let held = 16 * PAGES_HELD_PER_REQUEST;
        let per_min = f64::from(PAGES) / deliver_all(&sender, PAGES, held, answer).await * 60.0;
        eprintln!("sporadic 503s: {per_min:.0} pages a minute of 6000");
        // 3000 pages in 30 s at the ceiling, plus the last retries' 3 s.
        assert!(per_min >= 5000.0, "{per_min:.0} pages a minute");
        assert_eq!(sender.current_rpm(), 6000.0);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, &h, "slow down"),
            Verdict::Retry {
                after: Some(Duration::from_secs(7)),
                reason: "HTTP 429 Too Many Requests: slow down".into()
            }
        );
        assert_eq!(parse_retry_after("100000"), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}

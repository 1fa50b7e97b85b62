//! The sender stage: one HTTP POST per page on a keep-alive pool, under the
//! destination's rate limit and a bounded in-flight window, with the seed's
//! retry rules. Every attempt (retries included) takes a rate permit and
//! carries the same `Idempotency-Key: {sync}-{execution}-{page}`, which a
//! resumed run reproduces exactly.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;

use super::rate::RateLimiter;
use crate::destination::Destination;

/// The seed's message when a page never got through.
pub const EXHAUSTED: &str = "Exhausted max retries for the segment";

/// Longest `Retry-After` honoured; a destination asking for longer fails the
/// page after its retries rather than stalling the run for hours.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

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
}

/// Why a page failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageError {
    /// The message for the execution's history.
    pub message: String,
    /// Attempts made.
    pub requests: u32,
    /// The status of a refusal (a non-retryable answer): the run goes on
    /// with the other pages. `None`: retries ran out (the seed's rule: the
    /// run stops).
    pub refused: Option<u16>,
    /// The last attempt's error, bounded.
    pub last_error: String,
}

/// `Idempotency-Key: {sync}-{execution seq}-{page_count}`: the prefix.
fn key_prefix(sync_id: u32, seq: u32) -> String {
    format!("{sync_id}-{seq}-")
}

/// Sends the pages of one execution.
pub struct PageSender {
    client: reqwest::Client,
    dest: Destination,
    rate: RateLimiter,
    key_prefix: String,
}

impl PageSender {
    /// A sender for `dest`, for execution `seq` of sync `sync_id`.
    pub fn new(dest: Destination, sync_id: u32, seq: u32) -> Result<PageSender, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(dest.in_flight)
            .tcp_nodelay(true)
            .build()?;
        Ok(PageSender {
            rate: RateLimiter::new(dest.rpm),
            client,
            dest,
            key_prefix: key_prefix(sync_id, seq),
        })
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
        self.rate.acquire().await;
        let resp = self.request(key, body).send().await?;
        let status = resp.status();
        let ct = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.text().await.unwrap_or_default();
        Ok((status, ct, text))
    }

    async fn attempt(&self, key: &str, body: Bytes) -> Verdict {
        let d = &self.dest;
        match self.request(key, body).send().await {
            Ok(resp) => {
                let status = resp.status();
                let headers = resp.headers().clone();
                // Reading the body (bounded by the same timeout) returns the
                // connection to the pool and gives failures their message.
                let text = resp.text().await.unwrap_or_default();
                classify(status, &headers, &text)
            }
            Err(e) if e.is_timeout() => Verdict::Retry {
                after: None,
                reason: format!("timed out after {} ms", d.timeout.as_millis()),
            },
            Err(e) => Verdict::Retry {
                after: None,
                reason: format!("request failed: {}", error_chain(&e)),
            },
        }
    }

    /// Sends page `index` until delivered, failed, or out of retries.
    pub async fn send(&self, index: u32, body: Bytes) -> Result<PageStats, PageError> {
        let key = self.idempotency_key(index);
        let mut requests = 0u32;
        let mut last = String::new();
        for attempt in 0..=self.dest.retry.max_retries {
            self.rate.acquire().await;
            requests += 1;
            match self.attempt(&key, body.clone()).await {
                Verdict::Delivered => return Ok(PageStats { requests }),
                Verdict::Fail { status, reason } => {
                    return Err(PageError {
                        message: format!(
                            "page {} of the execution was refused: {reason}",
                            index + 1
                        ),
                        requests,
                        refused: Some(status),
                        last_error: reason,
                    })
                }
                Verdict::Retry { after, reason } => {
                    tracing::warn!(page = index + 1, attempt = attempt + 1, %reason, "page attempt failed");
                    last = reason;
                    if attempt < self.dest.retry.max_retries {
                        tokio::time::sleep(after.unwrap_or(self.dest.retry.delay)).await;
                    }
                }
            }
        }
        Err(PageError {
            message: format!("{EXHAUSTED} (page {}: {last})", index + 1),
            requests,
            refused: None,
            last_error: last,
        })
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

/// What became of one page, as a sender task reports it.
#[derive(Debug)]
struct PageOutcome {
    /// 0-based page number.
    index: u32,
    /// Users of the page that could not be sent (no value).
    skipped: u32,
    /// Users sent.
    users: u32,
    /// Delivered, or why not.
    result: Result<PageStats, PageError>,
}

/// The sender loop of one execution: takes rendered pages, sends up to
/// `in_flight` at once under the destination's rate limit, and reports each
/// outcome to the checkpoint. Stops taking pages once `stopped()` (shutdown
/// or a failed page); the pages in flight always finish and are reported.
pub(crate) async fn drive(
    sender: PageSender,
    in_flight: usize,
    mut pages: tokio::sync::mpsc::Receiver<super::render::Rendered>,
    events: crossbeam::channel::Sender<super::checkpoint::Event>,
    stopped: impl Fn() -> bool,
    fail: &(dyn Fn(String) + Sync),
) {
    use super::checkpoint::Event;
    let sender = std::sync::Arc::new(sender);
    let dest_name = sender.destination_name().to_string();
    let mut tasks = tokio::task::JoinSet::new();
    let handle = |res: Result<PageOutcome, tokio::task::JoinError>| match res {
        Ok(PageOutcome {
            index,
            skipped,
            users,
            result: Ok(stats),
        }) => {
            crate::metrics::page_acked(&dest_name, u64::from(users), stats.requests);
            let _ = events.send(Event::Ack {
                index,
                requests: stats.requests,
                skipped,
            });
        }
        Ok(PageOutcome {
            index,
            result: Err(e),
            ..
        }) => {
            crate::metrics::requests_to(&dest_name, e.requests);
            let _ = events.send(Event::Failed {
                index,
                requests: e.requests,
                status: e.refused,
                error: e
                    .last_error
                    .chars()
                    .take(super::checkpoint::ERROR_EXCERPT)
                    .collect(),
            });
            // A refused page does not stop the others; retries that ran out
            // do (the seed's rule).
            if e.refused.is_none() {
                fail(e.message);
            }
        }
        Err(e) => fail(format!("sender task failed: {e}")),
    };
    while !stopped() {
        let Some(page) = pages.recv().await else {
            break;
        };
        while tasks.len() >= in_flight {
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
        let sender = sender.clone();
        tasks.spawn(async move {
            let result = sender.send(page.index, Bytes::from(page.body)).await;
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

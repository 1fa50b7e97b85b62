//! The connection test: one sample user in the destination's real format,
//! sent once through the same [`PageSender`] as real pages, with the
//! seed's success rule (a 2xx answer with `application/json`). A Cohort
//! Sync test goes to its own cohort, never the configured one.

use bytes::Bytes;
use serde::Serialize;

use super::send::PageSender;
use crate::destination::{sample_body, Destination};

/// What a connection test found.
#[derive(Debug, Clone, Serialize)]
pub struct TestReport {
    /// The seed's success rule: a 2xx answer with `application/json`.
    pub ok: bool,
    /// The answer's status, if one came.
    pub status: Option<u16>,
    /// The answer's content type.
    pub content_type: Option<String>,
    /// The answer's body (at most 2000 characters).
    pub body: String,
    /// What it means, in a sentence.
    pub message: String,
}

/// Sends one sample user, in the destination's real format, through the
/// same sender as real pages (its URL, headers, auth, rate limit), once,
/// and reports the answer. Blocking.
pub fn test_connection(d: &Destination, attribute: &str) -> Result<TestReport, super::Error> {
    let body = sample_body(d, attribute, 1, 0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| super::Error::Start(e.to_string()))?;
    let sender =
        PageSender::new(d.clone(), 0, 0).map_err(|e| super::Error::Start(e.to_string()))?;
    // Unique, so a receiver that remembers keys answers this test afresh.
    let key = format!("test-connection-{}", chrono::Utc::now().timestamp_millis());
    let res = rt.block_on(sender.probe(&key, Bytes::from(body)));
    Ok(match res {
        Err(e) => TestReport {
            ok: false,
            status: None,
            content_type: None,
            body: String::new(),
            message: format!("request failed: {e}"),
        },
        Ok((status, ct, text)) => {
            let json = ct.as_deref().is_some_and(|c| {
                c.split(';')
                    .next()
                    .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
            });
            let ok = status.is_success() && json;
            let message = if ok {
                "connection ok".to_string()
            } else if !status.is_success() {
                format!("destination answered HTTP {status}")
            } else {
                format!("destination answered {status} but with content-type {:?}, expected application/json", ct.as_deref().unwrap_or(""))
            };
            TestReport {
                ok,
                status: Some(status.as_u16()),
                content_type: ct,
                body: text.chars().take(2000).collect(),
                message,
            }
        }
    })
}

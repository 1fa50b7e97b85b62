//! What crosses NATS between the coordinator and the workers: subjects,
//! page headers, and the small JSON messages (outcomes, permits, reports,
//! heartbeats). Both sides use only these functions, so the two cannot
//! drift apart.
//!
//! Subjects, for execution `seq` of sync `sync`:
//!
//! | subject | what |
//! |---|---|
//! | `segsync.pages.{sync}.{seq}` | a rendered page (stream `SEGSYNC_PAGES`, work queue) |
//! | `segsync.outcomes.{sync}.{seq}` | what became of a page (stream `SEGSYNC_OUTCOMES`, work queue) |
//! | `segsync.run.{sync}.{seq}.dest` | request: the destination's settings |
//! | `segsync.run.{sync}.{seq}.permit` | request: a rate permit, granted when its slot comes |
//! | `segsync.run.{sync}.{seq}.report` | what the destination answered to a permit's request |
//! | `segsync.workers.heartbeat` | a worker's status, every [`super::HEARTBEAT_EVERY`] |

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::destination::DestinationConfig;

/// Every subject of the page stream.
pub const PAGES_SUBJECTS: &str = "segsync.pages.>";
/// Every subject of the outcome stream.
pub const OUTCOMES_SUBJECTS: &str = "segsync.outcomes.>";
/// Workers' heartbeats.
pub const HEARTBEAT: &str = "segsync.workers.heartbeat";

/// Header: the page's 0-based index.
pub const H_PAGE: &str = "Segsync-Page";
/// Header: users of the page that had no value (not sent).
pub const H_SKIPPED: &str = "Segsync-Skipped";
/// Header: users sent in the page.
pub const H_USERS: &str = "Segsync-Users";
/// Header: the page's idempotency key (what the destination sees).
pub const H_KEY: &str = "Idempotency-Key";

/// Pages of execution `seq` of `sync`.
pub fn pages_subject(sync: u32, seq: u32) -> String {
    format!("segsync.pages.{sync}.{seq}")
}

/// Outcomes of execution `seq` of `sync`.
pub fn outcomes_subject(sync: u32, seq: u32) -> String {
    format!("segsync.outcomes.{sync}.{seq}")
}

/// The coordinator's services for one execution (`dest`, `permit`, `report`).
pub fn run_subject(sync: u32, seq: u32, what: &str) -> String {
    format!("segsync.run.{sync}.{seq}.{what}")
}

/// (sync, seq) of a page or outcome subject.
pub fn run_of(subject: &str) -> Option<(u32, u32)> {
    let mut parts = subject.rsplitn(3, '.');
    let seq = parts.next()?.parse().ok()?;
    let sync = parts.next()?.parse().ok()?;
    Some((sync, seq))
}

/// The destination a run sends to, as a worker asks for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DestinationReply {
    /// The destination's id (the integration id).
    pub id: u32,
    /// Its settings as stored (the worker validates them again).
    pub config: DestinationConfig,
    /// Longest a permit may take from its grant to its request going out:
    /// the coordinator's limiter is stricter by that much, so every 60 s
    /// window of requests stays under the rpm (see [`PermitGrant`]).
    pub grace_ms: u64,
}

/// A rate permit, answered at once: send after `wait_ns`.
///
/// The slot is in the coordinator's clock, only ever handed back in a
/// [`Report`]. The worker, which knows when it asked, bounds how late after
/// the slot its request goes out on its own clock: the reply left the
/// coordinator after the worker asked and `wait_ns` before the slot, so
/// `send − slot ≤ (send − asked) − wait`. A permit whose bound exceeds the
/// grace is thrown away unused. So every request goes out within the grace
/// of its slot, and the slots of any (60 s + grace) window are at most the
/// rpm: the requests of any 60 s window are too, across every worker.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct PermitGrant {
    /// The slot, nanoseconds since the coordinator's limiter epoch.
    pub slot_ns: u64,
    /// Nanoseconds from the reply to the slot: wait that long, then send.
    pub wait_ns: u64,
    /// Rounds of slow-down in a row without an accepted request.
    pub stalled_rounds: u32,
    /// The destination's current rate, requests per minute.
    pub rpm: f64,
}

/// The load signal of an answer (see `pipeline::rate::Signal`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum WireSignal {
    /// 2xx.
    Accepted,
    /// 429, with `Retry-After` in ms.
    Throttled(Option<u64>),
    /// 503/504/timeout, with `Retry-After` in ms.
    Overloaded(Option<u64>),
    /// Anything else.
    Neutral,
}

impl WireSignal {
    /// `Retry-After` as a duration.
    pub fn after(ms: Option<u64>) -> Option<Duration> {
        ms.map(Duration::from_millis)
    }
}

/// What the destination answered to the request of a permit.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Report {
    /// The permit's slot ([`PermitGrant::slot_ns`]).
    pub slot_ns: u64,
    /// What the answer says about the destination's load.
    pub signal: WireSignal,
}

/// What became of one page, published by the worker that handled it
/// before it acknowledges the page message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PageOutcome {
    /// 0-based page index.
    pub index: u32,
    /// Users of the page without a value.
    pub skipped: u32,
    /// Users sent.
    pub users: u32,
    /// Attempts made.
    pub requests: u32,
    /// Of which answered 429.
    pub throttled: u32,
    /// `None`: delivered. Otherwise why not.
    pub failure: Option<PageFailure>,
    /// The worker that sent it.
    pub worker: String,
}

/// Why a page was not delivered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PageFailure {
    /// The message for the execution's history.
    pub message: String,
    /// The status of a refusal (the run goes on); `None`: retries ran out
    /// (the run stops).
    pub refused: Option<u16>,
    /// The last attempt's error, bounded.
    pub last_error: String,
}

/// A worker's status, published every heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Heartbeat {
    /// The worker's name (unique per process).
    pub name: String,
    /// Its host name.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// When it started (RFC 3339).
    pub started: String,
    /// Pages it holds now.
    pub in_flight: u32,
    /// Pages it delivered since it started.
    pub delivered: u64,
    /// Pages it failed or handed back since it started.
    pub failed: u64,
    /// Its last error, if any.
    pub last_error: Option<String>,
    /// Where its `/metrics` is served.
    pub metrics: Option<String>,
    /// Draining: finishing what it holds, taking nothing new.
    pub draining: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip_to_their_run() {
        assert_eq!(run_of(&pages_subject(12, 345)), Some((12, 345)));
        assert_eq!(run_of(&outcomes_subject(1, 2)), Some((1, 2)));
        assert_eq!(run_of("segsync.pages.x.2"), None);
        assert!(pages_subject(1, 2).starts_with(PAGES_SUBJECTS.trim_end_matches('>')));
        assert!(outcomes_subject(1, 2).starts_with(OUTCOMES_SUBJECTS.trim_end_matches('>')));
    }
}

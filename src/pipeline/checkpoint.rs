//! The checkpoint stage: records each acknowledged page in the store as it
//! arrives, so a run killed at any point resumes with only the pages not yet
//! acknowledged (at most the pages in flight are sent twice, with the same
//! idempotency keys). Acks that arrive together share one write.
//!
//! These writes go to RocksDB's WAL without fsync: a process crash (`kill
//! -9`) cannot lose them; a power cut can lose the last few, which are then
//! re-sent — still at-least-once. The final status write is synced: an
//! interrupted run writes it here ([`finish`]); a finished one is committed
//! by the lifecycle together with the sync record ([`final_writes`]).

use crossbeam::channel::Receiver;
use roaring::RoaringBitmap;

use crate::progress::Progress;
use crate::store::{self, BitmapKind, ExecStatus, ExecutionRecord, PageOutcome, Store, Write};

/// Pages the destination refused during a run.
#[derive(Debug, Clone, Default)]
pub(crate) struct Refusals {
    /// How many.
    pub(crate) count: u32,
    /// The first one, as `page N: HTTP status: body`.
    pub(crate) first: Option<String>,
}

/// Longest excerpt of an error body kept with a page's outcome.
pub(crate) const ERROR_EXCERPT: usize = 512;

/// What the sender reports for a page.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    /// Page acknowledged.
    Ack {
        index: u32,
        requests: u32,
        /// Of which answered 429 (not retries: see `send.rs`).
        throttled: u32,
        skipped: u32,
    },
    /// Page failed for good: refused (`status`), or out of retries.
    Failed {
        index: u32,
        requests: u32,
        throttled: u32,
        status: Option<u16>,
        error: String,
    },
}

/// Applies events until the channel closes, updating `exec`'s counts and
/// `done` in place and writing both (unsynced) after each batch of events.
pub(crate) fn run(
    store: &Store,
    exec: &mut ExecutionRecord,
    done: &mut RoaringBitmap,
    events: &Receiver<Event>,
    progress: &Progress,
) -> store::Result<Refusals> {
    let mut refused = Refusals::default();
    while let Ok(first) = events.recv() {
        let mut acked = 0u64;
        let mut outcomes = Vec::new();
        for ev in std::iter::once(first).chain(events.try_iter()) {
            match ev {
                Event::Ack {
                    index,
                    requests,
                    throttled,
                    skipped,
                } => {
                    outcomes.push(exec.page_outcome_write(&PageOutcome {
                        page: index + 1,
                        attempts: requests,
                        delivered: true,
                        status: None,
                        error: None,
                        at_ms: chrono::Utc::now().timestamp_millis(),
                    }));
                    if done.insert(index) {
                        exec.pages_done += 1;
                        acked += 1;
                    }
                    count(exec, requests, throttled);
                    exec.skipped += u64::from(skipped);
                }
                Event::Failed {
                    index,
                    requests,
                    throttled,
                    status,
                    error,
                } => {
                    count(exec, requests, throttled);
                    if status.is_some() {
                        refused.count += 1;
                        refused
                            .first
                            .get_or_insert_with(|| format!("page {}: {error}", index + 1));
                    }
                    outcomes.push(exec.page_outcome_write(&PageOutcome {
                        page: index + 1,
                        attempts: requests,
                        delivered: false,
                        status,
                        error: Some(error),
                        at_ms: chrono::Utc::now().timestamp_millis(),
                    }));
                }
            }
        }
        outcomes.push(exec.write());
        outcomes.push(exec.bitmap_write(BitmapKind::DonePages, done));
        store.write_records(outcomes, false)?;
        progress.inc(acked);
    }
    Ok(refused)
}

/// Counts a page's attempts: the first, retries, and answers of 429.
fn count(exec: &mut ExecutionRecord, requests: u32, throttled: u32) {
    exec.requests += u64::from(requests);
    exec.throttled += u64::from(throttled);
    exec.retries += u64::from(requests.saturating_sub(1).saturating_sub(throttled));
}

/// How an execution ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every page acknowledged.
    Complete,
    /// Stopped by an error (the message is the execution's error too).
    Failed(String),
    /// Stopped by shutdown: checkpointed, still processing; the next run
    /// resumes it.
    Interrupted,
}

/// Settles the execution record once no page is in flight: on shutdown the
/// checkpoint is written (synced) and the execution stays processing;
/// otherwise its status, end time and error are set, to be committed with
/// [`final_writes`].
pub(crate) fn finish(
    store: &Store,
    exec: &mut ExecutionRecord,
    done: &RoaringBitmap,
    failure: Option<String>,
    refused: Refusals,
    cancelled: bool,
) -> store::Result<Outcome> {
    if cancelled && failure.is_none() && exec.pages_done < exec.total_pages {
        store.write_records(final_writes(exec, done), true)?;
        tracing::info!(
            sync = exec.sync_id,
            execution = exec.seq,
            pages_done = exec.pages_done,
            "execution interrupted by shutdown; it resumes at the next start"
        );
        return Ok(Outcome::Interrupted);
    }
    exec.finished_ms = Some(chrono::Utc::now().timestamp_millis());
    Ok(match failure {
        None if refused.count > 0 => {
            // The other pages went on; the refused ones wait for `sync replay`.
            let msg = format!(
                "{} page{} refused by the destination ({}; see `segsync sync execution {} --pages failed`; `segsync sync replay {}` sends them again)",
                refused.count,
                if refused.count == 1 { "" } else { "s" },
                refused.first.as_deref().unwrap_or("no detail"),
                exec.execution_id(),
                exec.execution_id()
            );
            exec.status = ExecStatus::Failed;
            exec.error = Some(msg.clone());
            Outcome::Failed(msg)
        }
        None if exec.pages_done >= exec.total_pages => {
            exec.status = ExecStatus::Complete;
            Outcome::Complete
        }
        other => {
            let msg = other.unwrap_or_else(|| "the run ended with pages not delivered".into());
            exec.status = ExecStatus::Failed;
            exec.error = Some(msg.clone());
            Outcome::Failed(msg)
        }
    })
}

/// The execution record and its acknowledged pages, as last written.
pub(crate) fn final_writes(exec: &ExecutionRecord, done: &RoaringBitmap) -> Vec<Write> {
    vec![exec.write(), exec.bitmap_write(BitmapKind::DonePages, done)]
}

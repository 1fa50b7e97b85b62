//! The checkpoint stage: records each acknowledged page in the store as it
//! arrives, so a run killed at any point resumes with only the pages not yet
//! acknowledged (at most the pages in flight are sent twice, with the same
//! idempotency keys). Acks that arrive together share one write.
//!
//! These writes go to RocksDB's WAL without fsync: a process crash (`kill
//! -9`) cannot lose them; a power cut can lose the last few, which are then
//! re-sent — still at-least-once. The final status write is synced.

use crossbeam::channel::Receiver;
use roaring::RoaringBitmap;

use crate::lifecycle::{BitmapKind, ExecutionRecord};
use crate::progress::Progress;
use crate::store::{self, Store};

/// What the sender reports for a page.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Event {
    /// Page acknowledged.
    Ack {
        index: u32,
        requests: u32,
        skipped: u32,
    },
    /// Page failed for good.
    Failed { requests: u32 },
}

/// Applies events until the channel closes; returns the final counts.
pub(crate) fn run(
    store: &Store,
    exec: &mut ExecutionRecord,
    done: &mut RoaringBitmap,
    events: &Receiver<Event>,
    progress: &Progress,
) -> store::Result<()> {
    while let Ok(first) = events.recv() {
        let mut acked = 0u64;
        for ev in std::iter::once(first).chain(events.try_iter()) {
            match ev {
                Event::Ack {
                    index,
                    requests,
                    skipped,
                } => {
                    if done.insert(index) {
                        exec.pages_done += 1;
                        acked += 1;
                    }
                    exec.requests += u64::from(requests);
                    exec.retries += u64::from(requests.saturating_sub(1));
                    exec.skipped += u64::from(skipped);
                }
                Event::Failed { requests } => {
                    exec.requests += u64::from(requests);
                    exec.retries += u64::from(requests.saturating_sub(1));
                }
            }
        }
        store.write_records(
            vec![exec.write(), exec.bitmap_write(BitmapKind::DonePages, done)],
            false,
        )?;
        progress.inc(acked);
    }
    Ok(())
}

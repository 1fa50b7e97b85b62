//! Sync and execution records as stored, keyed big-endian so one sync's
//! executions scan in order, and the bitmaps an execution plans and
//! checkpoints. The rules about them (statuses, actions, schedules) are the
//! lifecycle's; the planner and the pipeline read and write these records
//! directly, so they live here, below both.

use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

use super::{cf, keys, Result, Store, Write};

/// How often a periodic sync runs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Frequency {
    /// Every hour.
    Hourly,
    /// Every day.
    Daily,
    /// Every week.
    Weekly,
    /// Every month.
    Monthly,
}

/// One-time or periodic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Runs once.
    Once,
    /// Runs at a frequency; after the first run only the difference is sent.
    Every(Frequency),
}

/// The seed's five statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SyncStatus {
    /// Last execution succeeded (or none yet), end date not reached.
    Active,
    /// Paused by hand.
    Paused,
    /// Last execution failed; scheduled runs are paused.
    Failed,
    /// End date reached.
    Inactive,
    /// Archived; final.
    Archived,
}

/// A segment + destination + attribute + schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRecord {
    /// Store id.
    pub id: u32,
    /// Segment name (also the sync name, as in the seed).
    pub segment: String,
    /// Destination name.
    pub destination: String,
    /// The synced attribute.
    pub attribute: String,
    /// Schedule.
    pub schedule: Schedule,
    /// Status.
    pub status: SyncStatus,
    /// Creation time, Unix ms.
    pub created_ms: i64,
    /// Sequence number of the last complete execution.
    pub last_complete: Option<u32>,
    /// Sequence number of the newest execution.
    pub last_execution: Option<u32>,
    /// First run, Unix ms.
    pub start_ms: i64,
    /// No run at or after this, Unix ms.
    pub end_ms: Option<i64>,
    /// IANA time zone whose wall clock the schedule follows.
    pub timezone: String,
    /// Who is told about configuration changes, successes and failures.
    pub notify: Vec<String>,
    /// The schedule slot the scheduler last ran, Unix ms.
    pub last_slot_ms: Option<i64>,
    /// When the sync became inactive, Unix ms.
    pub inactive_since_ms: Option<i64>,
    /// Last configuration change, Unix ms.
    pub updated_ms: i64,
}

/// What started an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// The schedule (or the demo and benchmarks).
    Scheduled,
    /// `sync run`: counts towards the daily resync limit.
    AdHoc,
    /// `sync resync-all`: the whole membership again.
    ResyncAll,
    /// `sync resync-last`: the last execution's difference again.
    ResyncLast,
}

/// What an execution sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExecKind {
    /// The whole current membership as `add_users`.
    Full,
    /// The difference from the last complete execution.
    Diff,
    /// The whole current membership, because the sync's destination changed
    /// since the last run (the new one has never received anyone).
    FullNewDestination,
}

/// The seed's execution statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecStatus {
    /// Sending (or interrupted; resumed by the next run).
    Processing,
    /// Every page acknowledged.
    Complete,
    /// Stopped by an error.
    Failed,
    /// Stopped because the sync was archived while it ran (its
    /// acknowledged pages are recorded; it is never resumed).
    Cancelled,
}

/// One run of a sync: its plan, progress and outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    /// Sync id.
    pub sync_id: u32,
    /// Sequence number within the sync, from 1.
    pub seq: u32,
    /// Kind.
    pub kind: ExecKind,
    /// What started it.
    pub trigger: Trigger,
    /// Status.
    pub status: ExecStatus,
    /// Start, Unix ms.
    pub started_ms: i64,
    /// End, Unix ms.
    pub finished_ms: Option<i64>,
    /// Snapshot of the segment the plan was made from.
    pub snapshot_seq: u32,
    /// Store write sequence the plan read at (attribute values as of it).
    pub write_seq: u32,
    /// Users per page when planned (kept so a resume cuts the same pages).
    pub page_size: u32,
    /// Pages in all.
    pub total_pages: u32,
    /// Pages acknowledged.
    pub pages_done: u32,
    /// Users to add.
    pub added: u64,
    /// Users to remove.
    pub removed: u64,
    /// Members with the attribute after this execution.
    pub total: u64,
    /// Members skipped for lacking the attribute.
    pub skipped: u64,
    /// Requests sent, retries included.
    pub requests: u64,
    /// Retries.
    pub retries: u64,
    /// Continuing members whose identifier value changed since the last
    /// delivery: each is sent as a removal of the value the destination has
    /// and an addition of the new one (in `added`/`removed` bitmaps, not in
    /// these counts).
    pub updated: u64,
    /// Answers that asked the sender to slow down (429), retried without
    /// counting against the retries.
    pub throttled: u64,
    /// Requests per minute achieved over the time spent sending (0 until
    /// the execution ends).
    pub effective_rpm: u32,
    /// Write sequences of the removal groups (see [`BitmapKind::RemovedAsOf`]).
    pub removed_as_of: Vec<u32>,
    /// Error, when failed.
    pub error: Option<String>,
}

impl ExecutionRecord {
    /// The execution id sent as `moengage_execution_id`.
    pub fn execution_id(&self) -> String {
        format!("{}-{}", self.sync_id, self.seq)
    }

    /// Duration in seconds, when finished.
    pub fn seconds(&self) -> Option<f64> {
        self.finished_ms
            .map(|f| (f - self.started_ms) as f64 / 1000.0)
    }
}

/// What became of one page of an execution (kept for every page sent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageOutcome {
    /// 1-based page number (`page_count` on the wire; the key's last part).
    pub page: u32,
    /// Requests made for it, retries included.
    pub attempts: u32,
    /// Acknowledged with a 2xx.
    pub delivered: bool,
    /// The status of a refusal (a non-retryable answer), if refused.
    pub status: Option<u16>,
    /// The last error (body excerpt or connection error), bounded.
    pub error: Option<String>,
    /// When, Unix ms.
    pub at_ms: i64,
}

/// The bitmaps stored under an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitmapKind {
    /// Membership this execution establishes at the destination.
    Synced,
    /// Users it adds.
    Added,
    /// Users it removes.
    Removed,
    /// Pages acknowledged (0-based page numbers).
    DonePages,
    /// Removed users last sent as of `removed_as_of[i]`.
    RemovedAsOf(u8),
    /// Ranks where pages start, for formats cut by size (Cohort Sync).
    PageStarts,
    /// Continuing members sent a removal of their old identifier and an
    /// addition of the new one (they are in `Added` and `Removed` too).
    Updated,
}

impl BitmapKind {
    /// The byte that ends this bitmap's key.
    pub(crate) fn code(self) -> u8 {
        match self {
            BitmapKind::Synced => 1,
            BitmapKind::Added => 2,
            BitmapKind::Removed => 3,
            BitmapKind::DonePages => 4,
            BitmapKind::PageStarts => 5,
            BitmapKind::Updated => 6,
            BitmapKind::RemovedAsOf(i) => 16u8.saturating_add(i),
        }
    }
}

impl SyncRecord {
    /// Loads a sync.
    pub fn load(store: &Store, id: u32) -> Result<Option<SyncRecord>> {
        store.get_record(cf::SYNCS, &keys::sync(id), "sync record")
    }

    /// All syncs, by id.
    pub fn all(store: &Store) -> Result<Vec<SyncRecord>> {
        store.scan_records(cf::SYNCS, &[], "sync record")
    }

    /// The write that stores this record.
    pub(crate) fn write(&self) -> Write {
        Write::record(cf::SYNCS, keys::sync(self.id), self)
    }

    /// Stores this record. (Changes to an existing sync go through
    /// [`SyncRecord::update`], so that concurrent changes do not overwrite
    /// each other.)
    pub fn save(&self, store: &Store) -> Result<()> {
        store.write_records(vec![self.write()], true)
    }

    /// Reads sync `id`, lets `change` modify it (and add writes of its own
    /// to the same batch), and writes it back, synced, while no other
    /// update of a sync record can interleave. `change` sees the record as
    /// stored now, so it decides on current values. `None` when there is no
    /// such sync.
    pub(crate) fn update<R, E: From<super::Error>>(
        store: &Store,
        id: u32,
        change: impl FnOnce(&mut SyncRecord, &mut Vec<Write>) -> std::result::Result<R, E>,
    ) -> std::result::Result<Option<R>, E> {
        let _g = store.lock_syncs();
        let Some(mut rec) = SyncRecord::load(store, id)? else {
            return Ok(None);
        };
        let before = rec.clone();
        let mut writes = Vec::new();
        let r = change(&mut rec, &mut writes)?;
        if rec != before || !writes.is_empty() {
            writes.push(rec.write());
            store.write_records(writes, true)?;
        }
        Ok(Some(r))
    }
}

impl ExecutionRecord {
    /// Loads an execution.
    pub fn load(store: &Store, sync: u32, seq: u32) -> Result<Option<ExecutionRecord>> {
        store.get_record(
            cf::EXECUTIONS,
            &keys::execution(sync, seq),
            "execution record",
        )
    }

    /// A sync's executions, oldest first.
    pub fn all(store: &Store, sync: u32) -> Result<Vec<ExecutionRecord>> {
        store.scan_records(cf::EXECUTIONS, &keys::sync(sync), "execution record")
    }

    /// The write that stores this record.
    pub(crate) fn write(&self) -> Write {
        Write::record(
            cf::EXECUTIONS,
            keys::execution(self.sync_id, self.seq),
            self,
        )
    }

    /// The write that stores one of this execution's bitmaps.
    pub(crate) fn bitmap_write(&self, kind: BitmapKind, b: &RoaringBitmap) -> Write {
        Write::bitmap(
            cf::EXEC_BITMAPS,
            keys::exec_bitmap(self.sync_id, self.seq, kind.code()),
            b,
        )
    }

    /// One of this execution's bitmaps (empty if never written).
    pub fn bitmap(&self, store: &Store, kind: BitmapKind) -> Result<RoaringBitmap> {
        Ok(self.bitmap_if_any(store, kind)?.unwrap_or_default())
    }

    /// Every bitmap this execution may have.
    pub(crate) fn bitmap_kinds(&self) -> Vec<BitmapKind> {
        let mut kinds = vec![
            BitmapKind::Synced,
            BitmapKind::Added,
            BitmapKind::Removed,
            BitmapKind::DonePages,
            BitmapKind::PageStarts,
            BitmapKind::Updated,
        ];
        kinds.extend((0..self.removed_as_of.len()).map(|i| BitmapKind::RemovedAsOf(i as u8)));
        kinds
    }

    /// The writes that delete this execution and its bitmaps (a plan that
    /// was discarded before any page was sent).
    pub(crate) fn delete_writes(&self) -> Vec<Write> {
        let mut w = vec![Write::Delete(
            cf::EXECUTIONS,
            keys::execution(self.sync_id, self.seq).to_vec(),
        )];
        for k in self.bitmap_kinds() {
            w.push(Write::Delete(
                cf::EXEC_BITMAPS,
                keys::exec_bitmap(self.sync_id, self.seq, k.code()).to_vec(),
            ));
        }
        w
    }

    /// The write that records one page's outcome.
    pub(crate) fn page_outcome_write(&self, o: &PageOutcome) -> Write {
        Write::record(
            cf::EVENTS,
            keys::page_outcome(self.sync_id, self.seq, o.page),
            o,
        )
    }

    /// Every page outcome recorded for this execution, by page.
    pub fn page_outcomes(&self, store: &Store) -> Result<Vec<PageOutcome>> {
        store.scan_records(
            cf::EVENTS,
            &keys::page_outcomes_of(self.sync_id, self.seq),
            "page outcome",
        )
    }

    /// The pages that failed for good and were not delivered since.
    pub fn failed_pages(&self, store: &Store) -> Result<Vec<PageOutcome>> {
        Ok(self
            .page_outcomes(store)?
            .into_iter()
            .filter(|o| !o.delivered)
            .collect())
    }

    /// One of this execution's bitmaps, `None` if never written.
    pub fn bitmap_if_any(&self, store: &Store, kind: BitmapKind) -> Result<Option<RoaringBitmap>> {
        store.get_bitmap(
            cf::EXEC_BITMAPS,
            &keys::exec_bitmap(self.sync_id, self.seq, kind.code()),
            "execution bitmap",
        )
    }
}

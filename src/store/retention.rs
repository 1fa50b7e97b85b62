//! Retention: what the store may forget, and forgetting it. Without it the
//! execution bitmaps, page outcomes, snapshots, attribute history and the
//! change index grow with every run and every import.
//!
//! What is still needed, and why nothing else is:
//! - **Executions.** A plan reads the last complete execution's `synced`
//!   bitmap and the executions after it (failed ones: what they may have
//!   delivered). A member of a complete execution's synced set was last
//!   sent the value it had at that execution's plan — a changed value would
//!   have gone out then (as an update) — so removals never need an older
//!   execution. Resync-last needs the last execution; replay a failed one;
//!   a running one its own. Per sync, the last `keep_executions`, the last
//!   complete one and every one after it keep their bitmaps and page
//!   outcomes; older ones keep their record (the history table) and lose
//!   their details (`pruned_below/<sync>` in `meta` says from where).
//! - **Attribute history** answers "the value as of write S" for the write
//!   sequences those kept executions were planned at (and their removal
//!   groups). Entries that only an older S could need go; `history_horizon`
//!   records how far back history still answers, and a run refuses to
//!   render an execution planned before it.
//! - **The change index** answers "who changed since the last complete
//!   execution's plan"; entries older than every periodic sync's last
//!   complete plan go.
//! - **Snapshots**: the last `keep_snapshots` of each segment and those a
//!   kept execution was planned from.
//!
//! Archived syncs never plan or send again, so they hold nothing back.
//! Retention runs under the writer lock (no import or plan meanwhile);
//! each step is idempotent, and the floors are written before what they
//! allow is deleted, so a crash in the middle leaves a consistent store
//! that the next run finishes tidying.

use std::collections::{BTreeSet, HashMap};

use rocksdb::WriteBatch;
use serde::Serialize;

use super::keys::{ChangeKey, CHANGE_BUCKET};
use super::{
    cf, db_err, keys, Error, ExecStatus, ExecutionRecord, Result, Schedule, Store, SyncRecord,
    SyncStatus, Write,
};

/// Deletes per write batch while sweeping a family.
const SWEEP_BATCH: usize = 50_000;

/// How much history to keep (`[retention]` in `segsync.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Executions per sync that keep their bitmaps and page outcomes (at
    /// least 1; what planning, resync-last and replay need is kept anyway).
    pub keep_executions: u32,
    /// Snapshots per segment (at least 1; those a kept execution was
    /// planned from are kept anyway).
    pub keep_snapshots: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            keep_executions: 10,
            keep_snapshots: 10,
        }
    }
}

/// What one application of the policy removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    /// Executions whose bitmaps and page outcomes were removed.
    pub executions: u64,
    /// Execution bitmaps removed.
    pub execution_bitmaps: u64,
    /// Page outcomes removed.
    pub page_outcomes: u64,
    /// Snapshots removed.
    pub snapshots: u64,
    /// Attribute history entries removed.
    pub history_entries: u64,
    /// Change index entries removed.
    pub change_entries: u64,
    /// Reads of a value as of an older write sequence are refused now.
    pub history_horizon: u32,
}

impl Store {
    /// The oldest execution of `sync` that still has its bitmaps (1 when
    /// retention never pruned it).
    pub fn pruned_below(&self, sync: u32) -> Result<u32> {
        Ok(self
            .get_u32(cf::META, &keys::pruned_below(sync))?
            .unwrap_or(1))
    }

    /// The oldest write sequence attribute history still answers for.
    pub fn history_horizon(&self) -> Result<u32> {
        Ok(self.get_u32(cf::META, keys::HISTORY_HORIZON)?.unwrap_or(0))
    }

    /// Refuses to read details of an execution retention has pruned.
    pub fn ensure_details(&self, e: &ExecutionRecord) -> Result<()> {
        let floor = self.pruned_below(e.sync_id)?;
        if e.seq < floor {
            return Err(Error::Pruned(format!(
                "execution {} of sync {}: its bitmaps and page outcomes were removed by retention (kept from execution {floor}; `[retention] keep_executions` in segsync.toml)",
                e.seq, e.sync_id
            )));
        }
        Ok(())
    }

    /// Removes what no sync can need any more (see the module docs).
    pub fn apply_retention(&self, policy: Policy) -> Result<Pruned> {
        let _writer = self.lock_writer();
        let mut pruned = Pruned::default();
        let now = self.counters().write_seq;
        let mut history_floor = now;
        let mut change_floor = now;
        let mut snapshots_used: HashMap<String, BTreeSet<u32>> = HashMap::new();
        for s in SyncRecord::all(self)? {
            let execs = ExecutionRecord::all(self, s.id)?;
            let floor = kept_from(&s, &execs, policy.keep_executions);
            let old = self.pruned_below(s.id)?;
            let mut writes = Vec::new();
            for e in execs.iter().filter(|e| e.seq >= old && e.seq < floor) {
                pruned.executions += 1;
                for kind in e.bitmap_kinds() {
                    let key = keys::exec_bitmap(e.sync_id, e.seq, kind.code());
                    if self.has_key(cf::EXEC_BITMAPS, &key)? {
                        pruned.execution_bitmaps += 1;
                        writes.push(Write::Delete(cf::EXEC_BITMAPS, key.to_vec()));
                    }
                }
                for k in self.scan_keys(cf::EVENTS, &keys::page_outcomes_of(e.sync_id, e.seq))? {
                    pruned.page_outcomes += 1;
                    writes.push(Write::Delete(cf::EVENTS, k));
                }
            }
            if floor > old {
                // The floor first: a crash after it leaves details nobody
                // reads, never a reader of details that are gone.
                self.write_records(
                    vec![Write::Put(
                        cf::META,
                        keys::pruned_below(s.id),
                        floor.to_be_bytes().to_vec(),
                    )],
                    true,
                )?;
                self.write_records(writes, false)?;
            }
            if s.status == SyncStatus::Archived {
                continue;
            }
            let used = snapshots_used.entry(s.segment.clone()).or_default();
            for e in execs.iter().filter(|e| e.seq >= floor) {
                history_floor = history_floor.min(e.write_seq);
                for &q in &e.removed_as_of {
                    history_floor = history_floor.min(q);
                }
                used.insert(e.snapshot_seq);
            }
            let last = s
                .last_complete
                .and_then(|q| execs.iter().find(|e| e.seq == q));
            if let (Some(last), Schedule::Every(_)) = (last, s.schedule) {
                change_floor = change_floor.min(last.write_seq);
            }
        }
        pruned.snapshots = self.prune_snapshots(policy.keep_snapshots, &snapshots_used)?;
        pruned.history_entries = self.prune_history(history_floor)?;
        pruned.change_entries = self.prune_changes(change_floor)?;
        pruned.history_horizon = self.history_horizon()?;
        Ok(pruned)
    }

    fn prune_snapshots(&self, keep: u32, used: &HashMap<String, BTreeSet<u32>>) -> Result<u64> {
        let keep = keep.max(1) as usize;
        let mut removed = 0;
        for seg in self.segments()? {
            let n = seg.snapshots.len();
            let in_use = used.get(&seg.name);
            let (kept, gone): (Vec<_>, Vec<_>) =
                seg.snapshots.iter().enumerate().partition(|(i, m)| {
                    i + keep >= n || in_use.is_some_and(|u| u.contains(&m.seq))
                });
            if gone.is_empty() {
                continue;
            }
            let mut rec = seg.clone();
            rec.snapshots = kept.into_iter().map(|(_, m)| m.clone()).collect();
            let mut writes = vec![Write::record(
                cf::SEGMENTS,
                rec.name.as_bytes().to_vec(),
                &rec,
            )];
            for (_, m) in gone {
                writes.push(Write::Delete(
                    cf::SNAPSHOTS,
                    keys::snapshot(seg.id, m.seq).to_vec(),
                ));
                removed += 1;
            }
            self.write_records(writes, true)?;
        }
        Ok(removed)
    }

    /// Deletes the history entries of writes at or before `floor`: a read
    /// as of `floor` or later seeks past them.
    fn prune_history(&self, floor: u32) -> Result<u64> {
        if floor <= self.history_horizon()? {
            return Ok(0);
        }
        self.write_records(
            vec![Write::Put(
                cf::META,
                keys::HISTORY_HORIZON.to_vec(),
                floor.to_be_bytes().to_vec(),
            )],
            true,
        )?;
        self.sweep(cf::ATTR_HISTORY, |k| {
            k.len() == 12 && keys::read_u32(&k[8..]).is_some_and(|q| q <= floor)
        })
    }

    /// Deletes the change entries every periodic sync has delivered past.
    fn prune_changes(&self, floor: u32) -> Result<u64> {
        let exact = ChangeKey::Exact as u8;
        self.sweep(cf::ATTR_CHANGES, |k| {
            let (Some(&kind), Some(seq)) = (k.get(4), k.get(5..).and_then(keys::read_u32)) else {
                return false;
            };
            if kind == exact {
                seq <= floor
            } else {
                // A bucket answers for its whole range of writes.
                u64::from(seq) + u64::from(CHANGE_BUCKET) <= u64::from(floor) + 1
            }
        })
    }

    /// Deletes every key of family `name` that `gone` selects, in batches.
    fn sweep(&self, name: &'static str, gone: impl Fn(&[u8]) -> bool) -> Result<u64> {
        let mut batch = WriteBatch::default();
        let mut removed = 0;
        let mut it = self.db().raw_iterator_cf(self.cf(name));
        it.seek_to_first();
        while let Some(k) = it.key() {
            if gone(k) {
                batch.delete_cf(self.cf(name), k);
                removed += 1;
                if batch.len() >= SWEEP_BATCH {
                    self.db()
                        .write(std::mem::take(&mut batch))
                        .map_err(db_err("write", name))?;
                }
            }
            it.next();
        }
        it.status().map_err(db_err("scan", name))?;
        self.db().write(batch).map_err(db_err("write", name))?;
        Ok(removed)
    }
}

/// The oldest execution of `s` that keeps its details: the last
/// `keep` ones, the last complete one and everything after it, anything
/// still processing.
fn kept_from(s: &SyncRecord, execs: &[ExecutionRecord], keep: u32) -> u32 {
    let newest = execs.last().map_or(1, |e| e.seq);
    let mut floor = newest.saturating_sub(keep.max(1) - 1).max(1);
    if let Some(q) = s.last_complete {
        floor = floor.min(q);
    }
    if let Some(p) = execs.iter().find(|e| e.status == ExecStatus::Processing) {
        floor = floor.min(p.seq);
    }
    floor
}

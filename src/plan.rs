//! The differ: what a sync must send, by bitmap algebra.
//!
//! `current = snapshot ∧ attr_present(attribute)`: users lacking the synced
//! attribute are never sent (the destination could not identify them).
//! Against the membership a destination already has (`previous`),
//! `x = current ⊕ previous`, `added = x ∧ current`, `removed = x ∧ previous`.
//! For 10M-user segments with 1% churn this is a few milliseconds, so no
//! incremental bookkeeping is needed anywhere else.

use roaring::RoaringBitmap;
use serde::Serialize;

use crate::error::{Classify, Fault};
use crate::store::{
    self, BitmapKind, ExecKind, ExecStatus, ExecutionRecord, Schedule, SegmentRecord, Store,
    SyncRecord, Trigger,
};

/// Errors of planning.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No segment of that name.
    #[error("segment '{0}' not found (see `segsync segment list`)")]
    NoSegment(String),
    /// The segment has no snapshot with that number.
    #[error("segment '{segment}' has no snapshot {seq} (it has {count})")]
    NoSnapshot {
        /// The segment.
        segment: String,
        /// The requested snapshot.
        seq: u32,
        /// How many snapshots it has.
        count: usize,
    },
    /// The segment has no snapshot at all.
    #[error("segment '{0}' has no snapshot yet")]
    Empty(String),
    /// There is no last execution to send again.
    #[error("sync {0} never ran: there is no last difference to send again (use `segsync sync run {0}`)")]
    NeverRan(u32),
    /// No user has the attribute, in the seed's wording (`{attr_name} Type
    /// {datatype} attribute not found`; an attribute that is nowhere has no
    /// type of its own, and identifiers are synced as strings).
    #[error("{0} Type string attribute not found")]
    UnknownAttribute(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl Classify for Error {
    fn fault(&self) -> Fault {
        match self {
            Error::NoSegment(_)
            | Error::NoSnapshot { .. }
            | Error::Empty(_)
            | Error::UnknownAttribute(_) => Fault::NotFound,
            Error::NeverRan(_) => Fault::Conflict,
            Error::Store(e) => e.fault(),
        }
    }
}

/// The change between two memberships.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Diff {
    /// In `current`, not in `previous`.
    pub added: RoaringBitmap,
    /// In `previous`, not in `current`.
    pub removed: RoaringBitmap,
}

/// The membership a sync of `attribute` establishes: members that have it.
pub fn current(snapshot: &RoaringBitmap, present: Option<&RoaringBitmap>) -> RoaringBitmap {
    match present {
        Some(p) => snapshot & p,
        None => snapshot.clone(),
    }
}

/// Pages of `size` users needed for `added + removed` users: the pager cuts
/// count-capped pages deterministically, so the plan knows this before the
/// first request. (Size-capped formats re-count when they measure.)
pub fn total_pages(added: u64, removed: u64, size: u32) -> u32 {
    let n = (added + removed).div_ceil(u64::from(size.max(1)));
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// What turns `previous` into `current`.
pub fn diff(previous: &RoaringBitmap, current: &RoaringBitmap) -> Diff {
    let x = previous ^ current;
    Diff {
        added: &x & current,
        removed: &x & previous,
    }
}

/// The write that makes the next plan of sync `sync_id` a full send (its
/// destination changed); the plan consumes it.
pub(crate) fn full_resend_marker(sync_id: u32) -> store::Write {
    store::Write::Put(
        store::cf::META,
        store::keys::full_resend(sync_id),
        Vec::new(),
    )
}

/// A diff between two snapshots of a segment, as `segment diff` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentDiff {
    /// Segment name.
    pub segment: String,
    /// Older snapshot (`None`: compared against nothing, everything is added).
    pub from: Option<u32>,
    /// Newer snapshot.
    pub to: u32,
    /// Attribute members must have, if any.
    pub attribute: Option<String>,
    /// Users added.
    pub added: u64,
    /// Users removed.
    pub removed: u64,
    /// Members (with the attribute) in the newer snapshot.
    pub total: u64,
    /// Members (with the attribute) in the older snapshot.
    pub previous_total: u64,
    /// Time to load the bitmaps and compute, in milliseconds.
    pub millis: f64,
    /// The bitmaps themselves, for `--ids`.
    #[serde(skip)]
    pub diff: Diff,
}

impl SegmentDiff {
    /// The distinct ids added and removed (for `--ids` and the API's
    /// `?ids=true`).
    pub fn ids(&self, store: &Store) -> Result<(Vec<String>, Vec<String>), Error> {
        let list = |bm: &RoaringBitmap| -> Result<Vec<String>, Error> {
            bm.iter()
                .map(|u| {
                    store.distinct_id(u)?.ok_or_else(|| {
                        Error::Store(store::Error::Corrupt {
                            what: "user",
                            reason: format!("user {u} has no distinct id"),
                        })
                    })
                })
                .collect()
        };
        Ok((list(&self.diff.added)?, list(&self.diff.removed)?))
    }
}

fn snapshot_of(store: &Store, seg: &SegmentRecord, seq: u32) -> Result<RoaringBitmap, Error> {
    if seg.snapshot(seq).is_none() {
        return Err(Error::NoSnapshot {
            segment: seg.name.clone(),
            seq,
            count: seg.snapshots.len(),
        });
    }
    Ok(store.snapshot_members(seg.id, seq)?)
}

/// Diffs two snapshots of a segment; by default the last two (or, with a
/// single snapshot, that snapshot against nothing).
pub fn segment_diff(
    store: &Store,
    name: &str,
    from: Option<u32>,
    to: Option<u32>,
    attribute: Option<&str>,
) -> Result<SegmentDiff, Error> {
    let started = std::time::Instant::now();
    let seg = store
        .segment(name)?
        .ok_or_else(|| Error::NoSegment(name.to_string()))?;
    let latest = seg
        .latest()
        .ok_or_else(|| Error::Empty(name.to_string()))?
        .seq;
    let to = to.unwrap_or(latest);
    let from = match from {
        Some(f) => Some(f),
        None => seg.snapshots.iter().rev().map(|s| s.seq).find(|&s| s < to),
    };
    let present = attribute
        .map(|a| {
            store
                .attr_present_by_name(a)?
                .ok_or_else(|| Error::UnknownAttribute(a.to_string()))
        })
        .transpose()?;
    let cur = current(&snapshot_of(store, &seg, to)?, present.as_ref());
    let prev = match from {
        Some(f) => current(&snapshot_of(store, &seg, f)?, present.as_ref()),
        None => RoaringBitmap::new(),
    };
    let d = diff(&prev, &cur);
    Ok(SegmentDiff {
        segment: name.to_string(),
        from,
        to,
        attribute: attribute.map(str::to_string),
        added: d.added.len(),
        removed: d.removed.len(),
        total: cur.len(),
        previous_total: prev.len(),
        millis: started.elapsed().as_secs_f64() * 1e3,
        diff: d,
    })
}

/// What one snapshot changed against the one before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotChange {
    /// The snapshot.
    pub seq: u32,
    /// Members it added (all of them for the first snapshot).
    pub added: u64,
    /// Members it removed.
    pub removed: u64,
}

/// The changes of a segment's last `limit` snapshots, oldest first, each
/// against its predecessor (the console's segment page). Every snapshot
/// is read once.
pub fn snapshot_changes(
    store: &Store,
    seg: &SegmentRecord,
    limit: usize,
) -> Result<Vec<SnapshotChange>, Error> {
    let first = seg.snapshots.len().saturating_sub(limit);
    let mut prev = match first.checked_sub(1) {
        Some(i) => snapshot_of(store, seg, seg.snapshots[i].seq)?,
        None => RoaringBitmap::new(),
    };
    let mut out = Vec::with_capacity(seg.snapshots.len() - first);
    for meta in &seg.snapshots[first..] {
        let cur = snapshot_of(store, seg, meta.seq)?;
        out.push(SnapshotChange {
            seq: meta.seq,
            added: cur.difference_len(&prev),
            removed: prev.difference_len(&cur),
        });
        prev = cur;
    }
    Ok(out)
}

/// Plans a new execution of `sync` and persists it, with its bitmaps and
/// the sync's pointer to it, in one synced write **before** any request is
/// sent: a crash at any later point resumes this exact plan.
///
/// The first run of a sync, and every run of a one-time sync, sends the
/// whole current membership; later runs send the difference from the last
/// complete execution. Removed users are grouped by the execution that last
/// added them, whose attribute values they are sent with.
///
/// `trigger` decides the plan: a resync of all users sends the whole
/// current membership whatever the schedule; a resync of the last difference
/// plans the last execution's difference again, with the same values.
pub fn plan_execution(
    store: &Store,
    sync: &mut SyncRecord,
    page_size: u32,
    trigger: Trigger,
) -> Result<ExecutionRecord, Error> {
    if trigger == Trigger::ResyncLast {
        return plan_resync_last(store, sync, page_size);
    }
    // Imports hold the writer lock while they run, so the snapshot, the
    // presence bitmap and the write sequence are read at one point in time.
    let _consistent = store.lock_writer();
    let seg = store
        .segment(&sync.segment)?
        .ok_or_else(|| Error::NoSegment(sync.segment.clone()))?;
    let snap_meta = seg
        .latest()
        .ok_or_else(|| Error::Empty(sync.segment.clone()))?
        .clone();
    let snapshot = store.snapshot_members(seg.id, snap_meta.seq)?;
    let attr = store
        .attr_id(&sync.attribute)
        .ok_or_else(|| Error::UnknownAttribute(sync.attribute.clone()))?;
    let present = store.attr_present(attr)?;
    let cur = current(&snapshot, Some(&present));
    let last = sync
        .last_complete
        .map(|seq| ExecutionRecord::load(store, sync.id, seq))
        .transpose()?
        .flatten();
    // Read once: the failed-execution set and the removal groups both need it.
    let history = ExecutionRecord::all(store, sync.id)?;
    let resend_key = store::keys::full_resend(sync.id);
    let new_destination = store.has_key(store::cf::META, &resend_key)?;
    // A periodic sync's destination holds what earlier runs sent: later
    // runs send the difference, and the changed identifiers of members who
    // stay (a resync of all users too, or the old values would linger).
    let delivered = match (&last, sync.schedule) {
        (Some(prev), Schedule::Every(_)) if !new_destination => Some(prev),
        _ => None,
    };
    let prev_synced = delivered
        .map(|prev| prev.bitmap(store, BitmapKind::Synced))
        .transpose()?;
    let mut d = match &prev_synced {
        Some(previous) if trigger != Trigger::ResyncAll => diff(previous, &cur),
        _ => Diff {
            added: cur.clone(),
            removed: RoaringBitmap::new(),
        },
    };
    let kind = match (delivered, trigger) {
        _ if new_destination => ExecKind::FullNewDestination,
        (Some(_), t) if t != Trigger::ResyncAll => ExecKind::Diff,
        _ => ExecKind::Full,
    };
    let mut updated = RoaringBitmap::new();
    let mut groups: Vec<(u32, RoaringBitmap)> = Vec::new();
    if let (Some(prev), Some(previous)) = (delivered, &prev_synced) {
        // Executions that failed since then may have delivered any part of
        // their plan: send those users' current state explicitly (adds and
        // removes are idempotent at the destination).
        let mut uncertain = RoaringBitmap::new();
        for e in history.iter().filter(|e| {
            e.seq > prev.seq && matches!(e.status, ExecStatus::Failed | ExecStatus::Cancelled)
        }) {
            for k in [BitmapKind::Added, BitmapKind::Removed, BitmapKind::Updated] {
                uncertain |= e.bitmap(store, k)?;
            }
        }
        if kind == ExecKind::Diff {
            d.added |= &uncertain & &cur;
            d.removed |= &uncertain - &cur;
        }
        let held = previous | &uncertain;
        let candidates = &(&store.attr_changed_since(attr, prev.write_seq)? & &cur) & &held;
        let targets = &d.removed | &candidates;
        groups = last_sent(store, &history, &targets)?;
        updated = changed_values(store, attr, &candidates, &groups, prev.write_seq)?;
        d.added |= &updated;
        d.removed |= &updated;
        for (_, part) in &mut groups {
            *part &= &d.removed;
        }
        groups.retain(|(_, part)| !part.is_empty());
    }

    let seq = sync.last_execution.map_or(1, |s| s + 1);
    let exec = ExecutionRecord {
        sync_id: sync.id,
        seq,
        kind,
        trigger,
        status: ExecStatus::Processing,
        started_ms: chrono::Utc::now().timestamp_millis(),
        finished_ms: None,
        snapshot_seq: snap_meta.seq,
        write_seq: store.counters().write_seq,
        page_size,
        total_pages: total_pages(d.added.len(), d.removed.len(), page_size),
        pages_done: 0,
        added: d.added.len() - updated.len(),
        removed: d.removed.len() - updated.len(),
        total: cur.len(),
        skipped: snapshot.len() - cur.len(),
        requests: 0,
        retries: 0,
        updated: updated.len(),
        throttled: 0,
        effective_rpm: 0,
        removed_as_of: groups.iter().map(|(s, _)| *s).collect(),
        error: None,
    };
    sync.last_execution = Some(seq);
    let mut writes = vec![
        exec.write(),
        exec.bitmap_write(BitmapKind::Synced, &cur),
        exec.bitmap_write(BitmapKind::Added, &d.added),
        exec.bitmap_write(BitmapKind::Removed, &d.removed),
        exec.bitmap_write(BitmapKind::Updated, &updated),
        sync.write(),
    ];
    if new_destination {
        writes.push(store::Write::Delete(store::cf::META, resend_key));
    }
    // Real-time changes after this point start a new snapshot.
    writes.extend(store.seal_live(&seg));
    for (i, (_, b)) in groups.iter().enumerate() {
        writes.push(exec.bitmap_write(BitmapKind::RemovedAsOf(i as u8), b));
    }
    store.write_records(writes, true)?;
    Ok(exec)
}

/// For each of `targets`, the write sequence of the value the destination
/// was last sent: walking back through the executions that failed since
/// the last complete one, the one that last added it; then the last
/// complete one's plan for every member it left the destination with — a
/// member whose value had changed since it was sent was sent the new value
/// (as an update) by that execution or an earlier complete one, so the
/// value as of its plan is the one the destination holds. Older executions
/// are never read, which is what lets retention drop them. Groups of users
/// by that sequence (at most 200; users left over are sent as of the plan).
fn last_sent(
    store: &Store,
    history: &[ExecutionRecord],
    targets: &RoaringBitmap,
) -> Result<Vec<(u32, RoaringBitmap)>, Error> {
    let mut groups: Vec<(u32, RoaringBitmap)> = Vec::new();
    let mut left = targets.clone();
    for e in history.iter().rev() {
        if left.is_empty() || groups.len() == 200 {
            break;
        }
        if e.status == ExecStatus::Processing {
            continue;
        }
        if e.status == ExecStatus::Complete {
            let part = &left & &e.bitmap(store, BitmapKind::Synced)?;
            if !part.is_empty() {
                groups.push((e.write_seq, part));
            }
            break;
        }
        // A failed execution's changed identifiers may not have arrived, so
        // the value before them stays the one to remove; its additions
        // count (removing a value never sent is harmless).
        let part = &left & &e.bitmap(store, BitmapKind::Added)?;
        if !part.is_empty() {
            left -= &part;
            groups.push((e.write_seq, part));
        }
    }
    Ok(groups)
}

/// The `candidates` (members the destination has, whose value may have
/// changed) whose value now differs from the one the destination was last
/// sent (as of their group's sequence in `groups`, else `fallback`). Reads
/// a value or two per candidate, in user order, never one per member.
fn changed_values(
    store: &Store,
    attr: u32,
    candidates: &RoaringBitmap,
    groups: &[(u32, RoaringBitmap)],
    fallback: u32,
) -> Result<RoaringBitmap, Error> {
    let sent_as_of = |u: u32| {
        groups
            .iter()
            .find(|(_, b)| b.contains(u))
            .map_or(fallback, |(s, _)| *s)
    };
    Ok(store.values_changed_since(attr, candidates.iter().map(|u| (u, sent_as_of(u))))?)
}

/// A new execution with the last execution's plan (its bitmaps, removal
/// groups and write sequence), for `sync resync-last`.
fn plan_resync_last(
    store: &Store,
    sync: &mut SyncRecord,
    page_size: u32,
) -> Result<ExecutionRecord, Error> {
    let last = sync
        .last_execution
        .map(|seq| ExecutionRecord::load(store, sync.id, seq))
        .transpose()?
        .flatten()
        .ok_or(Error::NeverRan(sync.id))?;
    let seq = last.seq + 1;
    let exec = ExecutionRecord {
        seq,
        trigger: Trigger::ResyncLast,
        status: ExecStatus::Processing,
        started_ms: chrono::Utc::now().timestamp_millis(),
        finished_ms: None,
        page_size,
        total_pages: total_pages(
            last.added + last.updated,
            last.removed + last.updated,
            page_size,
        ),
        pages_done: 0,
        requests: 0,
        retries: 0,
        throttled: 0,
        effective_rpm: 0,
        error: None,
        ..last.clone()
    };
    let mut writes = Vec::new();
    for kind in [
        BitmapKind::Synced,
        BitmapKind::Added,
        BitmapKind::Removed,
        BitmapKind::Updated,
    ] {
        writes.push(exec.bitmap_write(kind, &last.bitmap(store, kind)?));
    }
    for i in 0..last.removed_as_of.len() {
        let kind = BitmapKind::RemovedAsOf(i as u8);
        writes.push(exec.bitmap_write(kind, &last.bitmap(store, kind)?));
    }
    sync.last_execution = Some(seq);
    writes.push(exec.write());
    writes.push(sync.write());
    store.write_records(writes, true)?;
    Ok(exec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bitmap() -> impl Strategy<Value = RoaringBitmap> {
        prop::collection::vec(0u32..5000, 0..400).prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #[test]
        fn diff_invariants(prev in bitmap(), cur in bitmap()) {
            let d = diff(&prev, &cur);
            prop_assert!(d.added.is_disjoint(&d.removed));
            prop_assert_eq!(&(&(&prev | &d.added) - &d.removed), &cur);
            prop_assert!(d.added.is_subset(&cur));
            prop_assert!(d.removed.is_subset(&prev));
            prop_assert!(d.added.is_disjoint(&prev));
            prop_assert!(d.removed.is_disjoint(&cur));
        }

        #[test]
        fn current_keeps_only_members_with_the_attribute(snap in bitmap(), present in bitmap()) {
            let c = current(&snap, Some(&present));
            for u in &c {
                prop_assert!(snap.contains(u) && present.contains(u));
            }
            prop_assert_eq!(c.len(), snap.iter().filter(|u| present.contains(*u)).count() as u64);
        }
    }

    #[test]
    fn diff_against_nothing_adds_everything() {
        let cur: RoaringBitmap = (0..10).collect();
        let d = diff(&RoaringBitmap::new(), &cur);
        assert_eq!(d.added, cur);
        assert!(d.removed.is_empty());
    }
}

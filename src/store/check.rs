//! `segsync check`: the store's invariants, verified read-only. Every
//! bitmap must decode and name only users that exist; every execution's
//! counts must agree with its bitmaps and its status; the fingerprint table
//! must cover every user. A violation is reported with the column family
//! and the record it is about, never as a panic.

use roaring::RoaringBitmap;
use serde::Serialize;

use super::syncs::{BitmapKind, ExecStatus, ExecutionRecord, SyncRecord};
use super::{cf, db_err, user_ids, Result, Store};

/// One broken invariant.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Violation {
    /// The column family.
    pub family: &'static str,
    /// The record, as a person would name it.
    pub record: String,
    /// What is wrong.
    pub problem: String,
}

/// What `check` looked at and found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// Users in the store.
    pub users: u32,
    /// Snapshots checked.
    pub snapshots: u64,
    /// Attributes checked.
    pub attributes: u64,
    /// Executions checked.
    pub executions: u64,
    /// Every broken invariant.
    pub violations: Vec<Violation>,
}

impl CheckReport {
    fn violation(&mut self, family: &'static str, record: String, problem: String) {
        self.violations.push(Violation {
            family,
            record,
            problem,
        });
    }

    /// A bitmap that must decode and hold only existing users.
    fn users_bitmap(
        &mut self,
        family: &'static str,
        record: String,
        read: Result<RoaringBitmap>,
    ) -> Option<RoaringBitmap> {
        match read {
            Ok(b) => {
                if let Some(max) = b.max().filter(|m| *m >= self.users) {
                    self.violation(
                        family,
                        record,
                        format!("names user {max}, but the store has {} users", self.users),
                    );
                }
                Some(b)
            }
            Err(e) => {
                self.violation(family, record, e.to_string());
                None
            }
        }
    }
}

impl Store {
    /// Verifies the store's invariants (see the module docs).
    pub fn check(&self) -> Result<CheckReport> {
        let users = self.counters().user_count;
        let mut r = CheckReport {
            users,
            ..CheckReport::default()
        };
        let mut it = self.db().raw_iterator_cf(self.cf(cf::USER_IDS));
        it.seek_to_last();
        if let Some(block) = it.value() {
            let mut last = None;
            user_ids::for_each(block, |idx, _| last = Some(idx))?;
            if let Some(last) = last.filter(|&l| l >= users) {
                r.violation(
                    cf::USER_IDS,
                    format!("user {last}"),
                    format!("exists, but the counters say {users} users"),
                );
            }
        }
        it.status().map_err(db_err("scan", cf::USER_IDS))?;
        match self.refresh_fingerprints() {
            Ok(covers) if covers == users => {}
            Ok(covers) => r.violation(
                "fingerprints.bin",
                "fingerprint table".into(),
                format!("covers {covers} users of {users}"),
            ),
            Err(e) => r.violation(
                "fingerprints.bin",
                "fingerprint table".into(),
                e.to_string(),
            ),
        }
        for (name, id) in self.attributes() {
            r.attributes += 1;
            r.users_bitmap(
                cf::ATTR_PRESENT,
                format!("presence of attribute '{name}'"),
                self.attr_present(id),
            );
        }
        // An unreadable family is a violation of its own; the others are
        // still checked.
        let segments = self.segments().unwrap_or_else(|e| {
            r.violation(cf::SEGMENTS, "every segment".into(), e.to_string());
            Vec::new()
        });
        for seg in segments {
            for snap in &seg.snapshots {
                r.snapshots += 1;
                let record = format!("segment '{}' snapshot {}", seg.name, snap.seq);
                let members = self.snapshot_members(seg.id, snap.seq);
                if let Some(b) = r.users_bitmap(cf::SNAPSHOTS, record.clone(), members) {
                    if !snap.live && b.len() != snap.members {
                        r.violation(
                            cf::SNAPSHOTS,
                            record,
                            format!("has {} members, its record says {}", b.len(), snap.members),
                        );
                    }
                }
            }
        }
        let syncs = SyncRecord::all(self).unwrap_or_else(|e| {
            r.violation(cf::SYNCS, "every sync".into(), e.to_string());
            Vec::new()
        });
        for sync in syncs {
            // Executions below the retention floor keep only their record.
            let floor = self.pruned_below(sync.id)?;
            let executions = ExecutionRecord::all(self, sync.id).unwrap_or_else(|e| {
                r.violation(cf::EXECUTIONS, format!("sync {}", sync.id), e.to_string());
                Vec::new()
            });
            for e in executions {
                r.executions += 1;
                if e.seq >= floor {
                    check_execution(self, &e, &mut r);
                }
            }
        }
        Ok(r)
    }
}

fn check_execution(store: &Store, e: &ExecutionRecord, r: &mut CheckReport) {
    let record = format!("execution {}", e.execution_id());
    let bitmap = |kind: BitmapKind, r: &mut CheckReport| {
        r.users_bitmap(
            cf::EXEC_BITMAPS,
            format!("{record} {kind:?}"),
            e.bitmap(store, kind),
        )
    };
    let (Some(synced), Some(added), Some(removed), Some(updated)) = (
        bitmap(BitmapKind::Synced, r),
        bitmap(BitmapKind::Added, r),
        bitmap(BitmapKind::Removed, r),
        bitmap(BitmapKind::Updated, r),
    ) else {
        return;
    };
    let done = match e.bitmap(store, BitmapKind::DonePages) {
        Ok(d) => d,
        Err(err) => {
            r.violation(
                cf::EXEC_BITMAPS,
                format!("{record} DonePages"),
                err.to_string(),
            );
            return;
        }
    };
    let mut wrong = |problem: String| r.violation(cf::EXECUTIONS, record.clone(), problem);
    let counts = [
        ("added", e.added + e.updated, added.len()),
        ("removed", e.removed + e.updated, removed.len()),
        ("updated", e.updated, updated.len()),
        ("total", e.total, synced.len()),
        ("pages_done", u64::from(e.pages_done), done.len()),
    ];
    for (what, recorded, actual) in counts {
        if recorded != actual {
            wrong(format!(
                "{what} is {recorded} in the record, {actual} in its bitmap"
            ));
        }
    }
    if e.pages_done > e.total_pages {
        wrong(format!("{} pages done of {}", e.pages_done, e.total_pages));
    }
    if e.status == ExecStatus::Complete && e.pages_done != e.total_pages {
        wrong(format!(
            "complete with {} of {} pages done",
            e.pages_done, e.total_pages
        ));
    }
    if !added.is_subset(&(&synced | &updated)) {
        wrong("adds users that are not in its membership".into());
    }
}

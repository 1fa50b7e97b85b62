//! Segments and their snapshots. A segment record (by name) lists snapshot
//! metadata; each snapshot's member bitmap lives under (segment id, seq) so
//! that a diff loads exactly the two bitmaps it compares.
//!
//! Real-time changes (received cohorts, Personas audiences) go to a *live*
//! snapshot: the first change after a file import or a sync plan appends a
//! new snapshot marked live, later changes amend it in place, and the next
//! sync plan seals it (so a segment keeps one snapshot per delivered state,
//! not one per request).

use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

use super::{cf, codec, db_err, keys, Error, ImportTxn, Result, Store};

/// Metadata of one snapshot of a segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// 1-based sequence number within the segment.
    pub seq: u32,
    /// Import time, Unix milliseconds.
    pub at_ms: i64,
    /// Distinct members.
    pub members: u64,
    /// Data lines read from the file.
    pub lines: u64,
    /// Users this import created.
    pub new_users: u64,
    /// The store write sequence this snapshot was committed with.
    pub write_seq: u32,
    /// Where it came from (file name, or the live source).
    pub source: String,
    /// Still amended by real-time changes (sealed by the next sync plan).
    pub live: bool,
}

/// A named custom segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRecord {
    /// Store-wide id.
    pub id: u32,
    /// Name (unique).
    pub name: String,
    /// Creation time, Unix milliseconds.
    pub created_ms: i64,
    /// Snapshots, oldest first.
    pub snapshots: Vec<SnapshotMeta>,
}

impl SegmentRecord {
    /// The newest snapshot.
    pub fn latest(&self) -> Option<&SnapshotMeta> {
        self.snapshots.last()
    }

    /// The snapshot with sequence number `seq`.
    pub fn snapshot(&self, seq: u32) -> Option<&SnapshotMeta> {
        self.snapshots.iter().find(|s| s.seq == seq)
    }
}

impl Store {
    /// The segment called `name`.
    pub fn segment(&self, name: &str) -> Result<Option<SegmentRecord>> {
        self.db()
            .get_pinned_cf(self.cf(cf::SEGMENTS), name.as_bytes())
            .map_err(db_err("get", cf::SEGMENTS))?
            .map(|b| codec::decode_record("segment record", &b))
            .transpose()
    }

    /// All segments, by name.
    pub fn segments(&self) -> Result<Vec<SegmentRecord>> {
        let mut out = Vec::new();
        for item in self
            .db()
            .iterator_cf(self.cf(cf::SEGMENTS), rocksdb::IteratorMode::Start)
        {
            let (_, v) = item.map_err(db_err("scan", cf::SEGMENTS))?;
            out.push(codec::decode_record("segment record", &v)?);
        }
        Ok(out)
    }

    /// The member bitmap of snapshot `seq` of segment `segment_id`.
    pub fn snapshot_members(&self, segment_id: u32, seq: u32) -> Result<RoaringBitmap> {
        let bytes = self
            .db()
            .get_pinned_cf(self.cf(cf::SNAPSHOTS), keys::snapshot(segment_id, seq))
            .map_err(db_err("get", cf::SNAPSHOTS))?
            .ok_or(Error::Corrupt {
                what: "snapshot",
                reason: format!("segment {segment_id} has no bitmap for snapshot {seq}"),
            })?;
        codec::decode_bitmap("snapshot bitmap", &bytes)
    }
}

/// Membership changes of one segment staged by a transaction.
#[derive(Debug, Default)]
pub(crate) struct LiveChange {
    name: String,
    source: String,
    add: RoaringBitmap,
    remove: RoaringBitmap,
    requests: u64,
}

impl Store {
    /// The write that seals segment `seg`'s live snapshot, if it has one
    /// (done by a sync plan, under the writer lock).
    pub(crate) fn seal_live(&self, seg: &SegmentRecord) -> Option<super::Write> {
        let mut rec = seg.clone();
        let last = rec.snapshots.last_mut()?;
        if !last.live {
            return None;
        }
        last.live = false;
        Some(super::Write::record(
            cf::SEGMENTS,
            rec.name.as_bytes().to_vec(),
            &rec,
        ))
    }
}

impl ImportTxn<'_> {
    /// Stages adding (`add` true) or removing users of segment `name` as
    /// one real-time change from `source`; later calls win over earlier ones
    /// for the same user. Published at commit (see the module docs).
    pub fn change_live(&mut self, name: &str, source: &str, users: &[u32], add: bool) {
        let live = self.live_mut();
        let i = match live.iter().position(|c| c.name == name) {
            Some(i) => i,
            None => {
                live.push(LiveChange {
                    name: name.to_string(),
                    source: source.to_string(),
                    ..LiveChange::default()
                });
                live.len() - 1
            }
        };
        let c = &mut live[i];
        c.requests += 1;
        for &u in users {
            if add {
                c.add.insert(u);
                c.remove.remove(u);
            } else {
                c.remove.insert(u);
                c.add.remove(u);
            }
        }
    }

    /// Writes the staged live changes into the commit batch.
    pub(crate) fn publish_live(&mut self, changes: Vec<LiveChange>) -> Result<()> {
        let now = chrono::Utc::now().timestamp_millis();
        for c in changes {
            let mut record = self.segment_or_new(&c.name, now)?;
            let mut members = match record.latest() {
                Some(l) => self.store().snapshot_members(record.id, l.seq)?,
                None => RoaringBitmap::new(),
            };
            members -= &c.remove;
            members |= &c.add;
            let seq = self.seq();
            match record.snapshots.last_mut() {
                Some(l) if l.live => {
                    l.at_ms = now;
                    l.members = members.len();
                    l.lines += c.requests;
                    l.write_seq = seq;
                }
                _ => {
                    let next = record.latest().map_or(1, |s| s.seq + 1);
                    record.snapshots.push(SnapshotMeta {
                        seq: next,
                        at_ms: now,
                        members: members.len(),
                        lines: c.requests,
                        new_users: 0,
                        write_seq: seq,
                        source: c.source.clone(),
                        live: true,
                    });
                }
            }
            self.stage_latest(&record, &members);
        }
        Ok(())
    }

    /// Adds a snapshot of segment `name` (creating the segment) to what this
    /// import publishes at commit. Returns the updated record.
    pub fn put_snapshot(
        &mut self,
        name: &str,
        members: &RoaringBitmap,
        lines: u64,
        source: &str,
    ) -> Result<SegmentRecord> {
        let now = chrono::Utc::now().timestamp_millis();
        let mut record = self.segment_or_new(name, now)?;
        record.snapshots.push(SnapshotMeta {
            seq: record.latest().map_or(1, |s| s.seq + 1),
            at_ms: now,
            members: members.len(),
            lines,
            new_users: u64::from(self.new_users()),
            write_seq: self.seq(),
            source: source.to_string(),
            live: false,
        });
        self.stage_latest(&record, members);
        Ok(record)
    }

    /// Segment `name`, or a new one (its id taken only if this commits).
    fn segment_or_new(&mut self, name: &str, now: i64) -> Result<SegmentRecord> {
        Ok(match self.store().segment(name)? {
            Some(r) => r,
            None => SegmentRecord {
                id: self.alloc_segment_id(),
                name: name.to_string(),
                created_ms: now,
                snapshots: Vec::new(),
            },
        })
    }

    /// Stages `record` and the bitmap of its latest snapshot for the commit.
    fn stage_latest(&mut self, record: &SegmentRecord, members: &RoaringBitmap) {
        let seq = record.latest().map_or(1, |s| s.seq);
        let store = self.store();
        let (seg_cf, snap_cf) = (store.cf(cf::SEGMENTS), store.cf(cf::SNAPSHOTS));
        let batch = self.commit_batch();
        batch.put_cf(
            snap_cf,
            keys::snapshot(record.id, seq),
            codec::encode_bitmap(members),
        );
        batch.put_cf(seg_cf, record.name.as_bytes(), codec::encode_record(record));
    }
}

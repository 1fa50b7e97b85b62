//! Segments and their snapshots. A segment record (by name) lists snapshot
//! metadata; each snapshot's member bitmap lives under (segment id, seq) so
//! that a diff loads exactly the two bitmaps it compares.

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
    /// Where it came from (file name).
    pub source: String,
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

impl ImportTxn<'_> {
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
        let mut record = match self.store().segment(name)? {
            Some(r) => r,
            None => SegmentRecord {
                id: self.alloc_segment_id(),
                name: name.to_string(),
                created_ms: now,
                snapshots: Vec::new(),
            },
        };
        let seq = record.latest().map_or(1, |s| s.seq + 1);
        record.snapshots.push(SnapshotMeta {
            seq,
            at_ms: now,
            members: members.len(),
            lines,
            new_users: u64::from(self.new_users()),
            write_seq: self.seq(),
            source: source.to_string(),
        });
        let store = self.store();
        let (seg_cf, snap_cf) = (store.cf(cf::SEGMENTS), store.cf(cf::SNAPSHOTS));
        let batch = self.commit_batch();
        batch.put_cf(
            snap_cf,
            keys::snapshot(record.id, seq),
            codec::encode_bitmap(members),
        );
        batch.put_cf(seg_cf, name.as_bytes(), codec::encode_record(&record));
        Ok(record)
    }
}

//! Upgrades of a data dir written by an earlier schema, run at open before
//! anything reads it, in one synced batch with the new version number (a
//! crash mid-upgrade leaves the old version, and the next open upgrades
//! again from the start).
//!
//! 2 → 3: execution records gain `updated`, `throttled` and
//! `effective_rpm`; the change index (`attr_changes`) is built from
//! `attr_history`, which already holds every replaced or deleted value
//! under the write that replaced it, so syncs see the changes made before
//! the upgrade too.
//!
//! 3 → 4 and 4 → 5 rewrite nothing: from then on real-time writes leave
//! merge operands (presence deltas; change buckets' users) on top of the
//! bitmaps older schemas wrote whole, which the merge operators take as
//! their base. Only the version moves, so an older build refuses the store.
//!
//! 5 → 6: distinct ids move from `users` (one key a user) to `user_ids`
//! (blocks of 256 users): whole blocks put in batches of their own first
//! (so memory does not grow with the store, and a rerun writes the same
//! values), `users` emptied in the version's batch.

use std::collections::BTreeMap;

use roaring::RoaringBitmap;
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use super::keys::{self, ChangeKey};
use super::syncs::{ExecKind, ExecStatus, ExecutionRecord, Trigger};
use super::{cf, codec, db_err, user_ids, Result, Store, SCHEMA_VERSION};

/// The oldest schema this build upgrades.
pub(super) const OLDEST: u32 = 2;

/// An execution record as schema 2 wrote it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ExecutionRecordV2 {
    pub(super) sync_id: u32,
    pub(super) seq: u32,
    pub(super) kind: ExecKind,
    pub(super) trigger: Trigger,
    pub(super) status: ExecStatus,
    pub(super) started_ms: i64,
    pub(super) finished_ms: Option<i64>,
    pub(super) snapshot_seq: u32,
    pub(super) write_seq: u32,
    pub(super) page_size: u32,
    pub(super) total_pages: u32,
    pub(super) pages_done: u32,
    pub(super) added: u64,
    pub(super) removed: u64,
    pub(super) total: u64,
    pub(super) skipped: u64,
    pub(super) requests: u64,
    pub(super) retries: u64,
    pub(super) removed_as_of: Vec<u32>,
    pub(super) error: Option<String>,
}

impl From<ExecutionRecordV2> for ExecutionRecord {
    fn from(o: ExecutionRecordV2) -> ExecutionRecord {
        ExecutionRecord {
            sync_id: o.sync_id,
            seq: o.seq,
            kind: o.kind,
            trigger: o.trigger,
            status: o.status,
            started_ms: o.started_ms,
            finished_ms: o.finished_ms,
            snapshot_seq: o.snapshot_seq,
            write_seq: o.write_seq,
            page_size: o.page_size,
            total_pages: o.total_pages,
            pages_done: o.pages_done,
            added: o.added,
            removed: o.removed,
            total: o.total,
            skipped: o.skipped,
            requests: o.requests,
            retries: o.retries,
            updated: 0,
            throttled: 0,
            effective_rpm: 0,
            removed_as_of: o.removed_as_of,
            error: o.error,
        }
    }
}

/// Upgrades the store from schema `found` to [`SCHEMA_VERSION`].
pub(super) fn upgrade(store: &Store, found: u32) -> Result<()> {
    tracing::info!(
        from = found,
        to = SCHEMA_VERSION,
        "upgrading the data dir's schema"
    );
    let mut batch = WriteBatch::default();
    if found < 3 {
        upgrade_2_to_3(store, &mut batch)?;
    }
    if found < 6 {
        upgrade_5_to_6(store, &mut batch)?;
    }
    batch.put_cf(
        store.cf(cf::META),
        keys::SCHEMA_VERSION,
        SCHEMA_VERSION.to_be_bytes(),
    );
    store.write_sync(batch, cf::META)?;
    if found < 6 {
        // Moving the ids wrote them all through the WAL (150 MB at 10M
        // users). Every family of the batch flushed now, the WAL goes and
        // the next open does not replay it (1.7 s and 570 MB for a
        // command that otherwise takes 0.04 s).
        let families: Vec<_> = cf::ALL.iter().map(|name| store.cf(name)).collect();
        store
            .db()
            .flush_cfs_opt(&families, &rocksdb::FlushOptions::default())
            .map_err(db_err("flush", "*"))?;
    }
    Ok(())
}

/// 5 → 6: distinct ids move from one key a user (`users`) to blocks of
/// 256 users (`user_ids`, see `user_ids.rs`), and `users` is emptied in
/// the version's batch. The blocks go out in batches of their own
/// ([`MOVE_BATCH_BYTES`]), so the upgrade's memory does not grow with the
/// store (one batch held 150 MB at 10M users); they are puts of whole
/// blocks, so an upgrade cut short and run again writes the same values.
fn upgrade_5_to_6(store: &Store, batch: &mut WriteBatch) -> Result<()> {
    let db = store.db();
    let (old, new) = (store.cf(cf::USERS), store.cf(cf::USER_IDS));
    let mut blocks = user_ids::Blocks::default();
    let mut moved = WriteBatch::default();
    // A block ends: put whole (a gap inside it, none expected, makes a
    // second run of its value), and the batch written past its size.
    let put = |blocks: &mut user_ids::Blocks, moved: &mut WriteBatch| -> Result<()> {
        if let Some((b, value, _)) = blocks.finish() {
            moved.put_cf(new, user_ids::key(b), value);
        }
        if moved.size_in_bytes() >= MOVE_BATCH_BYTES {
            db.write(std::mem::take(moved))
                .map_err(db_err("write", cf::USER_IDS))?;
        }
        Ok(())
    };
    let mut it = db.raw_iterator_cf(old);
    it.seek_to_first();
    while let (Some(k), Some(id)) = (it.key(), it.value()) {
        let idx = keys::read_u32(k).ok_or(super::Error::Corrupt {
            what: "user key (schema 5)",
            reason: "shorter than 4 bytes".into(),
        })?;
        if blocks.ends_block(idx) {
            put(&mut blocks, &mut moved)?;
        }
        blocks.push(idx, id);
        it.next();
    }
    it.status().map_err(db_err("scan", cf::USERS))?;
    put(&mut blocks, &mut moved)?;
    db.write(moved).map_err(db_err("write", cf::USER_IDS))?;
    batch.delete_range_cf(old, vec![0u8; 4], vec![0xff; 5]);
    Ok(())
}

/// Bytes of moved ids written at a time by the 5 → 6 upgrade.
const MOVE_BATCH_BYTES: usize = 16 << 20;

fn upgrade_2_to_3(store: &Store, batch: &mut WriteBatch) -> Result<()> {
    let db = store.db();
    let executions = store.cf(cf::EXECUTIONS);
    let mut it = db.raw_iterator_cf(executions);
    it.seek_to_first();
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        let old: ExecutionRecordV2 = codec::decode_record("execution record (schema 2)", v)?;
        batch.put_cf(
            executions,
            k,
            codec::encode_record(&ExecutionRecord::from(old)),
        );
        it.next();
    }
    it.status().map_err(db_err("scan", cf::EXECUTIONS))?;

    // History keys are (attr, user, seq): regroup them by (attr, seq).
    let mut changes: BTreeMap<(u32, u32), RoaringBitmap> = BTreeMap::new();
    let mut it = db.raw_iterator_cf(store.cf(cf::ATTR_HISTORY));
    it.seek_to_first();
    while let Some(k) = it.key() {
        let part = |i: usize| keys::read_u32(k.get(i..i + 4).unwrap_or(&[]));
        if let (Some(attr), Some(user), Some(seq)) = (part(0), part(4), part(8)) {
            changes.entry((attr, seq)).or_default().insert(user);
        }
        it.next();
    }
    it.status().map_err(db_err("scan", cf::ATTR_HISTORY))?;
    let family = store.cf(cf::ATTR_CHANGES);
    for ((attr, seq), users) in &changes {
        batch.put_cf(
            family,
            keys::attr_change(*attr, ChangeKey::Exact, *seq),
            codec::encode_bitmap(users),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema_of(store: &Store) -> Option<u32> {
        let v = store
            .db()
            .get_cf(store.cf(cf::META), keys::SCHEMA_VERSION)
            .unwrap()?;
        keys::read_u32(&v)
    }

    #[test]
    fn a_schema_3_store_is_upgraded_at_open_and_keeps_its_presence() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let mut batch = WriteBatch::default();
            batch.put_cf(store.cf(cf::META), keys::SCHEMA_VERSION, 3u32.to_be_bytes());
            let present: RoaringBitmap = [1u32, 5].into_iter().collect();
            batch.put_cf(
                store.cf(cf::ATTR_PRESENT),
                keys::attr(2),
                codec::encode_bitmap(&present),
            );
            store.write_sync(batch, cf::META).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(schema_of(&store), Some(SCHEMA_VERSION));
        // A delta merges into the bitmap the old schema wrote.
        store
            .db()
            .merge_cf(
                store.cf(cf::ATTR_PRESENT),
                keys::attr(2),
                codec::encode_presence_delta(
                    &[7u32].into_iter().collect(),
                    &[1u32].into_iter().collect(),
                ),
            )
            .unwrap();
        assert_eq!(
            store.attr_present(2).unwrap().iter().collect::<Vec<_>>(),
            [5, 7]
        );
    }

    #[test]
    fn a_schema_4_change_bucket_takes_merges_after_the_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = keys::attr_change(3, ChangeKey::Bucket, 1024);
        {
            let store = Store::open(dir.path()).unwrap();
            let mut batch = WriteBatch::default();
            batch.put_cf(store.cf(cf::META), keys::SCHEMA_VERSION, 4u32.to_be_bytes());
            // Schema 4 rewrote the whole bucket at each real-time commit.
            let old: RoaringBitmap = [10u32, 11].into_iter().collect();
            batch.put_cf(
                store.cf(cf::ATTR_CHANGES),
                bucket,
                codec::encode_bitmap(&old),
            );
            store.write_sync(batch, cf::META).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(schema_of(&store), Some(SCHEMA_VERSION));
        let mut batch = WriteBatch::default();
        let changed = std::collections::HashMap::from([(3, [12u32].into_iter().collect())]);
        store.record_changes(&mut batch, 1030, &changed, true);
        store.write_sync(batch, cf::META).unwrap();
        let since = store.attr_changed_since(3, 1024).unwrap();
        assert_eq!(since.iter().collect::<Vec<_>>(), [10, 11, 12]);
    }

    #[test]
    fn a_schema_5_stores_ids_move_into_blocks() {
        let dir = tempfile::tempdir().unwrap();
        // 600 users over three blocks, as schema 5 kept them: one key each
        // (user 300 missing: a gap inside a block).
        let id = |i: u32| format!("user-{i}");
        let users = || (0..600u32).filter(|&i| i != 300);
        {
            let store = Store::open(dir.path()).unwrap();
            let mut batch = WriteBatch::default();
            batch.put_cf(store.cf(cf::META), keys::SCHEMA_VERSION, 5u32.to_be_bytes());
            for i in users() {
                batch.put_cf(store.cf(cf::USERS), i.to_be_bytes(), id(i));
            }
            let mut counters = store.counters();
            counters.user_count = 600;
            batch.put_cf(
                store.cf(cf::META),
                keys::COUNTERS,
                codec::encode_record(&counters),
            );
            store.write_sync(batch, cf::META).unwrap();
            // An upgrade cut short after moving the blocks, before the
            // version's batch: the next open runs it again.
            upgrade_5_to_6(&store, &mut WriteBatch::default()).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(schema_of(&store), Some(SCHEMA_VERSION));
        for i in [0u32, 255, 256, 299, 301, 599] {
            assert_eq!(store.distinct_id(i).unwrap(), Some(id(i)), "user {i}");
        }
        assert_eq!(store.distinct_id(300).unwrap(), None);
        assert_eq!(store.distinct_id(600).unwrap(), None);
        let mut all = Vec::new();
        store
            .for_each_user(|i, v| all.push((i, String::from_utf8_lossy(v).into_owned())))
            .unwrap();
        assert_eq!(all, users().map(|i| (i, id(i))).collect::<Vec<_>>());
        let mut old = store.db().raw_iterator_cf(store.cf(cf::USERS));
        old.seek_to_first();
        assert!(old.key().is_none(), "the old family is emptied");
        assert!(store.check().unwrap().violations.is_empty());
    }

    #[test]
    fn a_schema_2_store_is_upgraded_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let old = ExecutionRecordV2 {
            sync_id: 7,
            seq: 1,
            kind: ExecKind::Full,
            trigger: Trigger::Scheduled,
            status: ExecStatus::Complete,
            started_ms: 1,
            finished_ms: Some(2),
            snapshot_seq: 1,
            write_seq: 3,
            page_size: 100,
            total_pages: 1,
            pages_done: 1,
            added: 5,
            removed: 0,
            total: 5,
            skipped: 0,
            requests: 1,
            retries: 0,
            removed_as_of: vec![],
            error: None,
        };
        {
            let store = Store::open(dir.path()).unwrap();
            let mut batch = WriteBatch::default();
            batch.put_cf(store.cf(cf::META), keys::SCHEMA_VERSION, 2u32.to_be_bytes());
            batch.put_cf(
                store.cf(cf::EXECUTIONS),
                keys::execution(7, 1),
                codec::encode_record(&old),
            );
            // User 4's value of attribute 1 was replaced by write 6.
            batch.put_cf(
                store.cf(cf::ATTR_HISTORY),
                keys::attr_user_seq(1, 4, 6),
                b"x",
            );
            store.write_sync(batch, cf::META).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let exec = ExecutionRecord::load(&store, 7, 1).unwrap().unwrap();
        assert_eq!((exec.added, exec.write_seq, exec.updated), (5, 3, 0));
        let changed = store.attr_changed_since(1, 5).unwrap();
        assert_eq!(changed.iter().collect::<Vec<_>>(), [4]);
        assert!(store.attr_changed_since(1, 6).unwrap().is_empty());
        drop(store);
        // Upgraded once: the version is the current one now.
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(schema_of(&store), Some(SCHEMA_VERSION));
    }
}

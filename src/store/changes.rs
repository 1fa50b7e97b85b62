//! The change index of attribute values: for each attribute, which users'
//! values were replaced or deleted, by write sequence. A periodic sync asks
//! it "who changed since my last delivery?" so that a member who stays in
//! the segment while the identifier the destination knows them by changes
//! is sent a removal of the old value and an addition of the new one,
//! without reading every member's value.
//!
//! An import records its changes under its own write sequence, in its
//! commit batch (so a rolled-back import leaves nothing). Real-time writes
//! (one small transaction per group of requests) fold theirs into a bucket
//! of [`keys::CHANGE_BUCKET`] write sequences as a RocksDB merge operand
//! (the union, `codec::union_bitmaps`), so a stream of single-user writes
//! does not leave one key per request, and no commit reads or rewrites the
//! bucket (which grows to ~100 KB of random users: rewritten by every
//! commit, it was 64 MB of memtable a second under load). A bucket
//! answers for all of its writes, so a query may return
//! users changed slightly before `since`: callers compare the values and
//! drop those that did not change — the index only has to be a superset.

use std::collections::HashMap;

use roaring::RoaringBitmap;
use rocksdb::WriteBatch;

use super::keys::{self, ChangeKey, CHANGE_BUCKET};
use super::{cf, codec, db_err, Result, Store, ValueRef};

impl Store {
    /// Users whose value of `attr` a write after `since` replaced or
    /// deleted (a superset: see the module docs).
    pub fn attr_changed_since(&self, attr: u32, since: u32) -> Result<RoaringBitmap> {
        let mut out = RoaringBitmap::new();
        let first = since.saturating_add(1);
        for (kind, from) in [
            (ChangeKey::Exact, first),
            (ChangeKey::Bucket, bucket_of(first)),
        ] {
            let prefix = keys::attr_changes_of(attr, kind);
            let mut it = self.db().raw_iterator_cf(self.cf(cf::ATTR_CHANGES));
            it.seek(keys::attr_change(attr, kind, from));
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                if !k.starts_with(&prefix) {
                    break;
                }
                out |= codec::decode_bitmap("attribute change bitmap", v)?;
                it.next();
            }
            it.status().map_err(db_err("scan", cf::ATTR_CHANGES))?;
        }
        Ok(out)
    }

    /// Of `users` (ascending, each with the write sequence `as_of` of the
    /// value a destination was sent), those whose value of `attr` now
    /// differs from the value as of `as_of`. A value changed and changed
    /// back is not a change; a user without a value then or now is left out.
    /// Current values come in one batched read (bloom filters, sorted keys);
    /// only users written after `as_of` cost a seek in the history.
    pub fn values_changed_since(
        &self,
        attr: u32,
        users: impl IntoIterator<Item = (u32, u32)>,
    ) -> Result<RoaringBitmap> {
        let users: Vec<(u32, u32)> = users.into_iter().collect();
        let keys: Vec<[u8; 8]> = users
            .iter()
            .map(|(u, _)| keys::attr_user(attr, *u))
            .collect();
        let mut out = RoaringBitmap::new();
        let mut history = self.db().raw_iterator_cf(self.cf(cf::ATTR_HISTORY));
        self.each_value(&keys, |i, value| {
            let Some(now) = value else {
                return Ok(());
            };
            let (user, as_of) = users[i];
            let now = ValueRef::decode(now)?;
            if now.seq <= as_of {
                return Ok(()); // untouched since
            }
            let then = super::replaced_after(&mut history, attr, user, as_of)?;
            if then.is_some_and(|then| !then.same_value(&now)) {
                out.insert(user);
            }
            Ok(())
        })?;
        history.status().map_err(db_err("scan", cf::ATTR_HISTORY))?;
        Ok(out)
    }

    /// Adds to `batch` the change records of write `seq`: `changed` maps
    /// attributes to the users whose value it replaced or deleted. A
    /// real-time write (`bucketed`) merges them into its bucket, unread.
    pub(crate) fn record_changes(
        &self,
        batch: &mut WriteBatch,
        seq: u32,
        changed: &HashMap<u32, RoaringBitmap>,
        bucketed: bool,
    ) {
        let family = self.cf(cf::ATTR_CHANGES);
        for (&attr, users) in changed.iter().filter(|(_, u)| !u.is_empty()) {
            if bucketed {
                let key = keys::attr_change(attr, ChangeKey::Bucket, bucket_of(seq));
                batch.merge_cf(family, key, codec::encode_bitmap(users));
            } else {
                let key = keys::attr_change(attr, ChangeKey::Exact, seq);
                batch.put_cf(family, key, codec::encode_bitmap(users));
            }
        }
    }
}

/// The first write sequence of the bucket holding `seq`.
fn bucket_of(seq: u32) -> u32 {
    seq - seq % CHANGE_BUCKET
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(store: &Store, seq: u32, attr: u32, users: &[u32], bucketed: bool) {
        let mut batch = WriteBatch::default();
        let changed = HashMap::from([(attr, users.iter().copied().collect())]);
        store.record_changes(&mut batch, seq, &changed, bucketed);
        store.write_sync(batch, cf::ATTR_CHANGES).unwrap();
    }

    #[test]
    fn exact_writes_answer_exactly_and_buckets_as_a_superset() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        record(&store, 5, 1, &[10, 11], false);
        record(&store, 9, 1, &[12], false);
        record(&store, 9, 2, &[99], false);
        let since = |s| store.attr_changed_since(1, s).unwrap();
        assert_eq!(since(4).iter().collect::<Vec<_>>(), [10, 11, 12]);
        assert_eq!(since(5).iter().collect::<Vec<_>>(), [12]);
        assert!(since(9).is_empty());

        // Real-time writes 2000 and 2001 share a bucket (and merge).
        record(&store, 2000, 1, &[20], true);
        record(&store, 2001, 1, &[21], true);
        assert_eq!(since(2000).iter().collect::<Vec<_>>(), [20, 21]);
        assert_eq!(since(1999).iter().collect::<Vec<_>>(), [20, 21]);
        assert!(since(bucket_of(2000) + CHANGE_BUCKET).is_empty());
        // Operands a flush and a compaction compose, then one more: the
        // bucket is still the union of all of them, after a reopen too.
        record(&store, 2002, 1, &[5_000_000], true);
        let family = store.cf(cf::ATTR_CHANGES);
        store.db().flush_cf(family).unwrap();
        record(&store, 2003, 1, &[20, 7], true);
        store.db().flush_cf(family).unwrap();
        store
            .db()
            .compact_range_cf(family, None::<&[u8]>, None::<&[u8]>);
        record(&store, 2004, 1, &[8], true);
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store
                .attr_changed_since(1, 1999)
                .unwrap()
                .iter()
                .collect::<Vec<_>>(),
            [7, 8, 20, 21, 5_000_000]
        );
        assert_eq!(
            store
                .attr_changed_since(2, 0)
                .unwrap()
                .iter()
                .collect::<Vec<_>>(),
            [99]
        );
    }
}

//! Atomic imports over a store that is written in many batches.
//!
//! A 10M-user import cannot be one RocksDB `WriteBatch` (gigabytes in
//! memory), so an import writes as it goes and makes its writes invisible
//! until commit by construction:
//!
//! - new users take indexes at and above the committed `user_count`, which
//!   only the commit advances; a rollback deletes that range, and every
//!   value of those users, per attribute, by range;
//! - every attribute write that replaces a value from before this import
//!   first logs the old value in the `undo` family (in the same batch), so a
//!   rollback can restore it; a first value of an older user is logged
//!   once per batch and attribute, as a bitmap of the users; the commit
//!   drops the log with one range delete;
//! - staged writes (batches, SST files of new users and of first values)
//!   go through `stage.rs`, on a writer thread for bulk imports;
//! - presence bitmaps, the attribute catalogue, segment snapshots and the
//!   counters are written only by the commit batch (synced).
//!
//! A marker in `meta` names the import in progress. If the process dies
//! mid-import, the next open finds the marker and rolls the import back
//! before anything can read it, so an import is all or nothing.
//!
//! A *small* transaction ([`Store::begin_small`], for real-time requests)
//! keeps every write in memory and commits them as one synced `WriteBatch`:
//! atomic by RocksDB's own guarantee, so it needs no marker, undo log, SST
//! file or flush.

use std::collections::HashMap;

use roaring::RoaringBitmap;
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use super::stage::{self, Job, NewIds, NewValues, Stager};
use super::{
    cf, codec, db_err, keys, read_ahead, user_ids, Counters, Error, KnownUsers, NewUsers,
    PresenceCache, ReadAhead, RecentWrites, Result, Store, Value, ValueRef,
};

/// Writes per intermediate batch: large enough to amortise the write path,
/// small enough to keep the batch a few MiB.
const BATCH_OPS: usize = 50_000;

/// Bytes of new users' ids that make the import hand them to the stager
/// (an id-list import of new ids writes no attribute batches).
const NEW_IDS_BYTES: usize = 4 << 20;

/// Undo records numbered from here on are bitmaps of users who had no value
/// of an attribute (`[attr u32 BE] ++ bitmap`); below, one replaced value
/// each (`key ++ old value`).
const UNDO_BITMAPS: u64 = 1 << 63;

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    seq: u32,
    first_new_user: u32,
}

/// One attribute change requested by an import row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrChange {
    /// Attribute id (from [`ImportTxn::attr`]).
    pub attr: u32,
    /// User index.
    pub user: u32,
    /// New value; `None` deletes the attribute.
    pub value: Option<Value>,
}

/// One attribute change of a bulk import, its value in an arena as
/// `[tag][bytes]` ([`Value::encode_body`]): no allocation per value, and
/// 16 bytes to sort instead of a whole [`AttrChange`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodedChange {
    /// Attribute id.
    pub attr: u32,
    /// User index.
    pub user: u32,
    /// Where the value starts in the arena.
    pub start: u32,
    /// Its length, or [`EncodedChange::DELETE`].
    pub len: u32,
}

impl EncodedChange {
    /// The length that deletes the attribute.
    pub const DELETE: u32 = u32::MAX;

    /// A change of `attr` of `user` to the value `encode` appends to
    /// `arena` as `[tag][bytes]`; `None` deletes the attribute.
    pub fn encode(
        arena: &mut Vec<u8>,
        attr: u32,
        user: u32,
        encode: Option<impl FnOnce(&mut Vec<u8>)>,
    ) -> EncodedChange {
        let Some(encode) = encode else {
            return EncodedChange {
                attr,
                user,
                start: 0,
                len: Self::DELETE,
            };
        };
        let start = arena.len();
        encode(arena);
        EncodedChange {
            attr,
            user,
            start: start as u32,
            len: (arena.len() - start) as u32,
        }
    }

    fn value<'a>(&self, arena: &'a [u8]) -> Result<Option<&'a [u8]>> {
        if self.len == Self::DELETE {
            return Ok(None);
        }
        let range = self.start as usize..self.start as usize + self.len as usize;
        match arena.get(range) {
            Some(v) if !v.is_empty() => Ok(Some(v)),
            _ => Err(Error::Corrupt {
                what: "import batch",
                reason: format!("a value ({}+{}) outside its arena", self.start, self.len),
            }),
        }
    }
}

/// Counts of attribute writes an import made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AttrStats {
    /// Values set (new or changed).
    pub set: u64,
    /// Values deleted.
    pub deleted: u64,
    /// Requested changes that left the value as it was.
    pub unchanged: u64,
}

/// An import in progress; see the module docs. Dropping it without
/// [`ImportTxn::commit`] rolls it back.
pub struct ImportTxn<'s> {
    store: &'s Store,
    _writer: super::WriterGuard<'s>,
    /// Whether [`ImportTxn::lower_memory`] lowered RocksDB's budgets (put
    /// back when the transaction ends).
    memory_lowered: bool,
    /// Writer sessions ended before this one began (this one ends as the
    /// next).
    epoch: u64,
    seq: u32,
    counters: Counters,
    first_new_user: u32,
    batch: WriteBatch,
    batch_ops: usize,
    /// Records only the commit may write (snapshots): never flushed early.
    publish: WriteBatch,
    /// Writes staged batches, new users' ids and first values (see
    /// `stage.rs`).
    stager: Stager<'s>,
    /// Ids of users created since the last hand-off to the stager.
    new_ids: NewIds,
    /// A small transaction's new users, gathered into one run per block
    /// and merged into their blocks at commit (see `user_ids.rs`).
    small_ids: user_ids::Blocks,
    /// First values since the last hand-off, by attribute, bound for the
    /// stager's SST files.
    new_values: Vec<(u32, NewValues)>,
    /// Per attribute, the users whose first value went to a pending (not
    /// yet ingested) SST file or the stager's sort (see `stage.rs`): they
    /// must not be read before the files are ingested.
    in_files: HashMap<u32, RoaringBitmap>,
    undo_n: u64,
    undo_bitmap_n: u64,
    /// Users per attribute this batch gave a first value (see `UNDO_BITMAPS`).
    undo_new: HashMap<u32, RoaringBitmap>,
    new_attrs: Vec<(String, u32)>,
    presence: HashMap<u32, RoaringBitmap>,
    /// Attributes whose presence bitmap changed (only those are rewritten:
    /// a real-time update of users who have the attribute already writes
    /// no bitmap at all).
    presence_dirty: Vec<u32>,
    /// A small transaction's presence changes per attribute (gained, lost):
    /// it never loads a presence bitmap, it merges these into them.
    presence_delta: HashMap<u32, (RoaringBitmap, RoaringBitmap)>,
    /// Committed presence bitmaps a small transaction borrowed from the
    /// real-time writer's cache ([`ImportTxn::borrow_presence`]), exact at
    /// its start.
    known: PresenceCache,
    /// Committed values another thread read ahead and [`ImportTxn::offer`]
    /// found current, by [`read_ahead::pair_key`]: `None` for no value.
    offered: HashMap<u64, Option<Vec<u8>>>,
    stats: AttrStats,
    /// Values written to SST files rather than the batch.
    filed: u64,
    keybuf: Vec<[u8; 8]>,
    valbuf: Vec<u8>,
    /// [`sort_changes`]' second buffer, reused across calls.
    sort_scratch: Vec<EncodedChange>,
    /// Attributes with an identity index to maintain.
    indexed: Vec<u32>,
    /// Segment memberships changed live, published at commit.
    live: Vec<super::segments::LiveChange>,
    /// Users whose value from before this transaction it replaced or
    /// deleted, per attribute (the change index, see `changes.rs`).
    changed: HashMap<u32, RoaringBitmap>,
    small: bool,
    done: bool,
}

impl<'s> ImportTxn<'s> {
    pub(crate) fn begin(store: &'s Store, small: bool) -> Result<Self> {
        let writer = store.lock_writer();
        let counters = store.counters();
        let seq = counters.write_seq.checked_add(1).ok_or(Error::Full)?;
        if !small {
            let marker = Marker {
                seq,
                first_new_user: counters.user_count,
            };
            store
                .db()
                .put_cf(
                    store.cf(cf::META),
                    keys::IMPORT_MARKER,
                    codec::encode_record(&marker),
                )
                .map_err(db_err("put", cf::META))?;
        }
        let indexed = store
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .indexed
            .clone();
        Ok(ImportTxn {
            store,
            _writer: writer,
            epoch: store.writer_epoch(),
            seq,
            counters,
            first_new_user: counters.user_count,
            batch: WriteBatch::default(),
            batch_ops: 0,
            publish: WriteBatch::default(),
            stager: Stager::inline(store, sst_prefix(store, seq), counters.user_count),
            new_ids: NewIds::default(),
            small_ids: user_ids::Blocks::default(),
            new_values: Vec::new(),
            in_files: HashMap::new(),
            undo_n: 0,
            undo_bitmap_n: UNDO_BITMAPS,
            undo_new: HashMap::new(),
            new_attrs: Vec::new(),
            presence: HashMap::new(),
            presence_dirty: Vec::new(),
            presence_delta: HashMap::new(),
            known: PresenceCache::default(),
            offered: HashMap::new(),
            stats: AttrStats::default(),
            filed: 0,
            keybuf: Vec::new(),
            valbuf: Vec::new(),
            sort_scratch: Vec::new(),
            indexed,
            live: Vec::new(),
            changed: HashMap::new(),
            small,
            done: false,
            memory_lowered: false,
        })
    }

    /// Lowers the memtables' budget and the block cache (to
    /// [`IMPORT_WRITE_BUFFERS_BYTES`] and [`IMPORT_BLOCK_CACHE_BYTES`])
    /// until this transaction ends; for a bulk import. Its first values go
    /// to files; what goes through the memtables are its updates of users
    /// in place, and its reads of their old values are spread over the
    /// store (or in key order), so a full cache only held blocks it would
    /// not read again. Updating 1M random users of a 10M store, the full
    /// budgets cost 80 MB more and a quarter more time (the cache's
    /// inserts and evictions). Nothing else writes while an import holds
    /// the writer lock; readers meanwhile (renders skip the cache) find
    /// it refilling afterwards.
    ///
    /// [`IMPORT_WRITE_BUFFERS_BYTES`]: super::IMPORT_WRITE_BUFFERS_BYTES
    /// [`IMPORT_BLOCK_CACHE_BYTES`]: super::IMPORT_BLOCK_CACHE_BYTES
    pub fn lower_memory(&mut self) {
        if !self.small {
            self.store.set_import_memory(true);
            self.memory_lowered = true;
        }
    }

    /// From now on, writes staged batches and new users on a thread of
    /// `scope` while the caller prepares the next batch (see `stage.rs`).
    /// Call it before the first write; a small transaction ignores it.
    pub fn write_on<'scope>(&mut self, scope: &'scope std::thread::Scope<'scope, '_>)
    where
        's: 'scope,
    {
        if !self.small {
            self.stager.spawn_on(scope);
        }
    }

    /// See `Stager::set_spill_bytes`; call it before `write_on`.
    #[cfg(test)]
    pub(crate) fn set_spill_bytes(&mut self, bytes: usize) {
        self.stager.set_spill_bytes(bytes);
    }

    /// The write sequence this import commits as.
    pub fn seq(&self) -> u32 {
        self.seq
    }

    /// The store this import writes to.
    pub fn store(&self) -> &'s Store {
        self.store
    }

    /// The index the next user this import creates will get.
    pub fn next_user_index(&self) -> u32 {
        self.counters.user_count
    }

    /// Users created so far by this import.
    pub fn new_users(&self) -> u32 {
        self.counters.user_count - self.first_new_user
    }

    /// Attribute write counts so far.
    pub fn attr_stats(&self) -> AttrStats {
        self.stats
    }

    /// Interns a distinct id the caller found to be new (its fingerprint is
    /// in neither the table nor this import's new users).
    ///
    /// New users get ascending indexes, so they stream into one SST file
    /// that the commit ingests: no memtable, no sorting, no WAL.
    pub fn new_user(&mut self, id: &[u8]) -> Result<u32> {
        let idx = self.counters.user_count;
        self.counters.user_count = idx.checked_add(1).ok_or(Error::Full)?;
        if self.small {
            // Appended to its block at commit, with the transaction's other
            // new users there: one merge operand a block, not one a user
            // (a group of Personas batches creates thousands, and every
            // read of a block folds its operands until a compaction).
            if self.small_ids.ends_block(idx) {
                self.merge_small_ids();
            }
            self.small_ids.push(idx, id);
            return Ok(idx);
        }
        self.new_ids.push(idx, id);
        if self.new_ids.bytes() >= NEW_IDS_BYTES {
            self.flush()?;
        }
        Ok(idx)
    }

    /// Appends the new users gathered in [`ImportTxn::small_ids`] to their
    /// block, as one run.
    fn merge_small_ids(&mut self) {
        if let Some((block, run, _)) = self.small_ids.finish() {
            let cf = self.store.cf(cf::USER_IDS);
            self.batch.merge_cf(cf, user_ids::key(block), run);
        }
    }

    /// Id of attribute `name`, allocating one (visible at commit) if new.
    pub fn attr(&mut self, name: &str) -> u32 {
        if let Some(id) = self.store.attr_id(name) {
            return id;
        }
        if let Some((_, id)) = self.new_attrs.iter().find(|(n, _)| n == name) {
            return *id;
        }
        let id = self.counters.next_attr_id;
        self.counters.next_attr_id += 1;
        self.new_attrs.push((name.to_string(), id));
        id
    }

    /// Allocates a segment id (taken for good only if the import commits).
    pub fn alloc_segment_id(&mut self) -> u32 {
        let id = self.counters.next_segment_id;
        self.counters.next_segment_id += 1;
        id
    }

    /// The batch the commit will write; for records only a commit may publish.
    pub(crate) fn commit_batch(&mut self) -> &mut WriteBatch {
        if self.small {
            &mut self.batch
        } else {
            &mut self.publish
        }
    }

    /// Live membership changes staged so far (see `segments.rs`).
    pub(crate) fn live_mut(&mut self) -> &mut Vec<super::segments::LiveChange> {
        &mut self.live
    }

    /// Whether `user` has a value of `attr` (committed, or set by this
    /// transaction's earlier `set_attrs` calls).
    pub fn has_value(&mut self, attr: u32, user: u32) -> Result<bool> {
        if !self.small {
            return Ok(self.presence(attr)?.contains(user));
        }
        if let Some(present) = self.delta_presence(attr, user) {
            return Ok(present);
        }
        if user >= self.first_new_user {
            // Created by this transaction: nothing committed to look up.
            return Ok(false);
        }
        if let Some(v) = self.offered.get(&read_ahead::pair_key(attr, user)) {
            return Ok(v.is_some());
        }
        if let Some(known) = self.known.get(attr) {
            return Ok(known.contains(user));
        }
        Ok(self
            .store
            .db()
            .get_pinned_cf(self.store.cf(cf::ATTR_VALUES), keys::attr_user(attr, user))
            .map_err(db_err("get", cf::ATTR_VALUES))?
            .is_some())
    }

    /// Borrows `cache`'s presence bitmaps of `attrs` for this small
    /// transaction, loading them first unless the cache is exact at its
    /// start (see `presence_cache.rs`): [`ImportTxn::has_value`] then
    /// answers from them, and old values are read only for users who have
    /// one. [`ImportTxn::commit_keeping`] hands them back; until then the
    /// cache is empty, so a transaction that fails leaves it to be loaded
    /// again. A bulk import keeps presence its own way and borrows nothing.
    pub fn borrow_presence(&mut self, cache: &mut PresenceCache, attrs: &[u32]) -> Result<()> {
        if !self.small {
            return Ok(());
        }
        let mut bitmaps = std::mem::take(&mut cache.bitmaps);
        if cache.at.take() != Some(self.epoch) {
            bitmaps.clear();
        }
        bitmaps.retain(|(a, _)| attrs.contains(a));
        self.known.bitmaps = bitmaps;
        for &attr in attrs {
            if self.known.get(attr).is_none() {
                let present = self.store.attr_present(attr)?;
                self.known.bitmaps.push((attr, present));
            }
        }
        Ok(())
    }

    /// [`ImportTxn::commit`] for a small transaction that borrowed `cache`'s
    /// bitmaps: once the write succeeds they go back with this
    /// transaction's presence changes, exact at the epoch it ends.
    pub fn commit_keeping(mut self, cache: &mut PresenceCache) -> Result<Counters> {
        let mut known = std::mem::take(&mut self.known.bitmaps);
        for (attr, bm) in &mut known {
            if let Some((added, removed)) = self.presence_delta.get(attr) {
                *bm |= added;
                *bm -= removed;
            }
        }
        let ends = self.ends_at();
        let counters = self.commit(None)?;
        if !known.is_empty() {
            cache.bitmaps = known;
            cache.at = Some(ends);
        }
        Ok(counters)
    }

    /// Takes the values of `ahead` that are still current — read after
    /// every session that wrote them, per `recent`, the record of this
    /// writer's own earlier transactions — in place of reading them again
    /// (see `read_ahead.rs`). Returns how many it took.
    pub fn offer(&mut self, ahead: ReadAhead, recent: &RecentWrites) -> usize {
        let read = ahead.epoch();
        if !self.small || !recent.current(read, self.epoch) {
            return 0;
        }
        let before = self.offered.len();
        for (pair, value) in ahead.into_values() {
            if recent.untouched(pair, read) {
                self.offered.entry(pair).or_insert(value);
            }
        }
        self.offered.len() - before
    }

    /// The writer epoch at which this transaction ends, committed or not
    /// ([`Store::writer_epoch`]), for [`RecentWrites::record`].
    pub fn ends_at(&self) -> u64 {
        self.epoch + 1
    }

    /// Whether a small transaction gave (`Some(true)`) or took
    /// (`Some(false)`) `attr` of `user`; `None` if it did neither.
    fn delta_presence(&self, attr: u32, user: u32) -> Option<bool> {
        let (added, removed) = self.presence_delta.get(&attr)?;
        if added.contains(user) {
            Some(true)
        } else if removed.contains(user) {
            Some(false)
        } else {
            None
        }
    }

    /// Records in a small transaction that `user` has `attr` or not now.
    fn set_delta_presence(&mut self, attr: u32, user: u32, present: bool, was: bool) {
        let was = self.delta_presence(attr, user).unwrap_or(was);
        if was == present {
            return;
        }
        let (added, removed) = self.presence_delta.entry(attr).or_default();
        if present {
            removed.remove(user);
            added.insert(user);
        } else {
            added.remove(user);
            removed.insert(user);
        }
    }

    fn presence(&mut self, attr: u32) -> Result<&mut RoaringBitmap> {
        if !self.presence.contains_key(&attr) {
            let bm = self.store.attr_present(attr)?;
            self.presence.insert(attr, bm);
        }
        Ok(self.presence.entry(attr).or_default())
    }

    /// Applies attribute changes. Within one call the last change of an
    /// (attribute, user) pair wins.
    pub fn set_attrs(&mut self, changes: &[AttrChange]) -> Result<()> {
        let mut arena = Vec::new();
        let mut encoded: Vec<EncodedChange> = changes
            .iter()
            .map(|c| {
                let encode = c
                    .value
                    .as_ref()
                    .map(|v| |out: &mut Vec<u8>| v.encode_body(out));
                EncodedChange::encode(&mut arena, c.attr, c.user, encode)
            })
            .collect();
        self.set_encoded(&mut encoded, &arena)
    }

    /// [`ImportTxn::set_attrs`] for bulk imports: values already encoded in
    /// `arena`, no allocation per value. Within one call the last change of
    /// an (attribute, user) pair wins.
    pub fn set_encoded(&mut self, changes: &mut Vec<EncodedChange>, arena: &[u8]) -> Result<()> {
        // This call reads old values, which an earlier call may have left in
        // the batch: hand it off, so the reads (after the stager settles)
        // see it. Within one call no read meets a write of the same call
        // (one change per attribute and user).
        if !self.small && !self.batch.is_empty() {
            self.flush()?;
        }
        // File order kept among duplicates, so dedup keeps the last.
        sort_changes(changes, &mut self.sort_scratch);
        dedup_keep_last(changes, |c| (c.attr, c.user));
        let mut start = 0;
        while start < changes.len() {
            let attr = changes[start].attr;
            let n = changes[start..].partition_point(|c| c.attr == attr);
            self.apply_run(attr, &changes[start..start + n], arena)?;
            start += n;
        }
        self.maybe_flush()
    }

    /// Applies the changes of one attribute, sorted by user: that
    /// attribute's bitmaps are looked up once for the run, not per change.
    fn apply_run(&mut self, attr: u32, run: &[EncodedChange], arena: &[u8]) -> Result<()> {
        let st = self.store;
        // A bulk import keeps the presence bitmap (taken out of the map for
        // the run); a small transaction never loads it (see `has_value`).
        let mut presence = if self.small {
            None
        } else {
            self.presence(attr)?;
            self.presence.remove(&attr)
        };
        // Old values are read only for users the presence bitmap says have
        // one: a first load of an attribute costs no reads at all. A small
        // transaction reads those of every user it did not create.
        let mut need_read = Vec::new();
        // Old values read ahead (and found current) stand in for reads, in
        // `need_read`'s order; the rest are read below.
        let mut from_offer: Vec<Option<Option<Vec<u8>>>> = Vec::new();
        self.keybuf.clear();
        for (i, c) in run.iter().enumerate() {
            let read = match (&presence, self.known.get(attr)) {
                (Some(p), _) => p.contains(c.user),
                (None, Some(known)) => known.contains(c.user),
                (None, None) => c.user < self.first_new_user,
            };
            if read {
                need_read.push(i);
                if self.offered.is_empty() {
                    self.keybuf.push(keys::attr_user(attr, c.user));
                    continue;
                }
                let offered = self.offered.remove(&read_ahead::pair_key(attr, c.user));
                if offered.is_none() {
                    self.keybuf.push(keys::attr_user(attr, c.user));
                }
                from_offer.push(offered);
            }
        }
        let values_cf = st.cf(cf::ATTR_VALUES);
        let old_values: Vec<Option<Vec<u8>>> = if self.keybuf.is_empty() {
            Vec::new()
        } else {
            // An old value may be in a pending SST file (a user this import
            // created, given this attribute by an earlier batch: a repeated
            // row), so those are ingested first; or in the batch still being
            // written.
            if let Some(filed) = self.in_files.get(&attr) {
                if need_read.iter().any(|&i| filed.contains(run[i].user)) {
                    self.flush_for_ingest()?;
                    self.stager.ingest_values()?;
                    self.in_files.clear();
                }
            }
            self.stager.settle()?;
            let mut read = Vec::with_capacity(self.keybuf.len());
            st.each_value(&self.keybuf, |_, v| {
                read.push(v.map(<[u8]>::to_vec));
                Ok(())
            })?;
            read
        };
        let old_values = if from_offer.is_empty() {
            old_values
        } else {
            let mut read = old_values.into_iter();
            from_offer
                .into_iter()
                .map(|o| o.unwrap_or_else(|| read.next().flatten()))
                .collect()
        };
        let indexed = self.indexed.contains(&attr);
        // First values go to SST files (directly while a lane's users
        // ascend, else through the stager's sort, see `stage.rs`); not those
        // of an indexed attribute, whose index entries go with them in the
        // batch.
        let to_files = !self.small && !indexed;
        let mut in_files = self.in_files.remove(&attr).unwrap_or_default();
        let mut new_values = match self.new_values.iter().position(|(a, _)| *a == attr) {
            Some(i) => self.new_values.swap_remove(i).1,
            None => NewValues::default(),
        };
        let mut undo_new = self.undo_new.remove(&attr).unwrap_or_default();
        let mut changed = self.changed.remove(&attr).unwrap_or_default();
        let mut dirty = false;
        // Users this run gives a value to (for the presence bitmap) and of
        // those, whose value goes to files: ascending, so each bitmap takes
        // them in one append or union after the loop instead of an insert
        // per value (a tenth of a 5-attribute first load).
        let mut gained: Vec<u32> = Vec::new();
        let mut filed: Vec<u32> = Vec::new();
        let mut olds = need_read.iter().zip(old_values).peekable();
        for (i, c) in run.iter().enumerate() {
            let old = match olds.peek() {
                Some((&j, _)) if j == i => olds.next().and_then(|(_, v)| v),
                _ => None,
            };
            let old = old.as_deref();
            let value = c.value(arena)?;
            let key = keys::attr_user(attr, c.user);
            let old_ref = old.map(ValueRef::decode).transpose()?;
            let unchanged = match (&old_ref, value) {
                (Some(o), Some(v)) => o.same_body(v),
                (None, None) => true,
                _ => false,
            };
            if unchanged {
                self.stats.unchanged += 1;
                continue;
            }
            let new_user = c.user >= self.first_new_user;
            if let (true, None, Some(v)) = (to_files, old, value) {
                // Logged for rollback only when its file is ingested
                // (`flush_for_ingest`): until then nothing reads it.
                new_values.push(c.user, self.seq, v);
                filed.push(c.user);
                gained.push(c.user);
                self.stats.set += 1;
                self.filed += 1;
                self.batch_ops += 1;
                continue;
            }
            // A value from before this import is logged for rollback and
            // kept as history (removals are sent with the value last
            // delivered). A value this import wrote itself is covered by the
            // first write's records.
            match (old, &old_ref) {
                (Some(old_bytes), Some(o)) if o.seq != self.seq => {
                    changed.insert(c.user);
                    self.batch.put_cf(
                        st.cf(cf::ATTR_HISTORY),
                        keys::attr_user_seq(attr, c.user, self.seq),
                        old_bytes,
                    );
                    // A small transaction is one atomic batch: no undo.
                    if !self.small {
                        let mut undo = Vec::with_capacity(8 + old_bytes.len());
                        undo.extend_from_slice(&key);
                        undo.extend_from_slice(old_bytes);
                        self.push_undo(&undo);
                    }
                }
                // A rollback deletes every value of the users this import
                // created, wherever it was written: only older users'
                // first values need logging.
                (None, _) if !self.small && !new_user => {
                    undo_new.insert(c.user);
                }
                _ => {}
            }
            match value {
                Some(v) => {
                    self.valbuf.clear();
                    self.valbuf.extend_from_slice(&self.seq.to_be_bytes());
                    self.valbuf.extend_from_slice(v);
                    self.batch.put_cf(values_cf, key, &self.valbuf);
                    if indexed {
                        if let Some(text) = ValueRef::decode(&self.valbuf)?.identity_text() {
                            self.batch.put_cf(
                                st.cf(cf::ATTR_INDEX),
                                super::index::entry_key(attr, text, c.user),
                                [],
                            );
                        }
                    }
                    match &presence {
                        Some(_) => gained.push(c.user),
                        None => self.set_delta_presence(attr, c.user, true, old.is_some()),
                    }
                    self.stats.set += 1;
                }
                None => {
                    self.batch.delete_cf(values_cf, key);
                    match &mut presence {
                        Some(p) => dirty |= p.remove(c.user),
                        None => self.set_delta_presence(attr, c.user, false, old.is_some()),
                    }
                    self.stats.deleted += 1;
                }
            }
            self.batch_ops += 3;
        }
        add_ascending(&mut in_files, &filed);
        if let Some(p) = &mut presence {
            dirty |= add_ascending(p, &gained);
        }
        if let Some(p) = presence {
            self.presence.insert(attr, p);
            if dirty && !self.presence_dirty.contains(&attr) {
                self.presence_dirty.push(attr);
            }
        }
        if !undo_new.is_empty() {
            self.undo_new.insert(attr, undo_new);
        }
        if !in_files.is_empty() {
            self.in_files.insert(attr, in_files);
        }
        if !new_values.is_empty() {
            self.new_values.push((attr, new_values));
        }
        if !changed.is_empty() {
            self.changed.insert(attr, changed);
        }
        Ok(())
    }

    fn push_undo(&mut self, record: &[u8]) {
        self.batch.put_cf(
            self.store.cf(cf::UNDO),
            keys::undo(self.seq, self.undo_n),
            record,
        );
        self.undo_n += 1;
    }

    fn maybe_flush(&mut self) -> Result<()> {
        if self.batch_ops >= BATCH_OPS && !self.small {
            self.flush()?;
        }
        Ok(())
    }

    /// Staged writes skip the WAL: a crash before commit rolls them back
    /// anyway, and the commit flushes them to SST files first (atomically
    /// across column families, see `Store::open`), so what a commit
    /// publishes is on disk before the counters say it exists.
    fn flush(&mut self) -> Result<()> {
        for (attr, users) in std::mem::take(&mut self.undo_new) {
            self.push_undo_bitmap(attr, &users);
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_ops = 0;
        let ids = std::mem::take(&mut self.new_ids);
        let values = std::mem::take(&mut self.new_values);
        self.stager.submit(Job { batch, ids, values })
    }

    /// Flushes before the pending value files are ingested, logging for
    /// rollback the older users whose first values they hold (the users
    /// this import created need no log: a rollback deletes all their
    /// values). Logged here rather than batch by batch: one bitmap per
    /// attribute instead of one per batch, which for a users file in an
    /// order of its own were bitmaps of random users, ~100 MB of memtable
    /// for 10M rows × 5 attributes. The log is on disk before the files
    /// are in: both ingestions (the commit's, and the stager's when a row
    /// repeats a filed user) flush staged writes first.
    fn flush_for_ingest(&mut self) -> Result<()> {
        let mut filed: Vec<(u32, RoaringBitmap)> = self
            .in_files
            .iter()
            .map(|(&attr, users)| {
                let mut older = users.clone();
                older.remove_range(self.first_new_user..);
                (attr, older)
            })
            .filter(|(_, older)| !older.is_empty())
            .collect();
        filed.sort_unstable_by_key(|(attr, _)| *attr);
        for (attr, older) in &filed {
            self.push_undo_bitmap(*attr, older);
        }
        self.flush()
    }

    /// Logs that `users` had no value of `attr` before this import.
    fn push_undo_bitmap(&mut self, attr: u32, users: &RoaringBitmap) {
        let mut record = Vec::with_capacity(5 + users.serialized_size());
        record.extend_from_slice(&attr.to_be_bytes());
        record.extend_from_slice(&codec::encode_bitmap(users));
        self.batch.put_cf(
            self.store.cf(cf::UNDO),
            keys::undo(self.seq, self.undo_bitmap_n),
            record,
        );
        self.undo_bitmap_n += 1;
    }

    /// Makes everything this import wrote visible at once. When `table` is
    /// given, it is saved together with the new users' fingerprints (every
    /// user [`ImportTxn::new_user`] created, as the caller's interner
    /// collected them).
    pub fn commit(mut self, table: Option<(&KnownUsers, NewUsers)>) -> Result<Counters> {
        let live = std::mem::take(&mut self.live);
        self.publish_live(live)?;
        if self.small {
            self.merge_small_ids();
            self.publish = std::mem::take(&mut self.batch);
        } else {
            // Staged writes (new users, logged attribute values) may land
            // first: a crash before the final batch rolls them back.
            self.flush_for_ingest()?;
            let files = self.stager.finish()?;
            self.store.flush_staged()?;
            stage::ingest(self.store, cf::USER_IDS, &files.users)?;
            stage::ingest_values(self.store, &files.values, &files.spilled)?;
        }
        let st = self.store;
        let mut batch = std::mem::take(&mut self.publish);
        let meta = st.cf(cf::META);
        for (attr, bm) in self
            .presence
            .iter()
            .filter(|(a, _)| self.presence_dirty.contains(a))
        {
            batch.put_cf(
                st.cf(cf::ATTR_PRESENT),
                keys::attr(*attr),
                codec::encode_bitmap(bm),
            );
        }
        for (attr, (added, removed)) in &self.presence_delta {
            if !added.is_empty() || !removed.is_empty() {
                batch.merge_cf(
                    st.cf(cf::ATTR_PRESENT),
                    keys::attr(*attr),
                    codec::encode_presence_delta(added, removed),
                );
            }
        }
        for (name, id) in &self.new_attrs {
            batch.put_cf(meta, keys::attr_name(name), keys::attr(*id));
        }
        st.record_changes(&mut batch, self.seq, &self.changed, self.small);
        self.counters.write_seq = self.seq;
        batch.put_cf(meta, keys::COUNTERS, codec::encode_record(&self.counters));
        if !self.small {
            batch.delete_cf(meta, keys::IMPORT_MARKER);
            batch.delete_range_cf(
                st.cf(cf::UNDO),
                keys::undo(self.seq, 0),
                keys::undo(self.seq + 1, 0),
            );
        }
        st.write_sync(batch, cf::META)?;
        self.done = true;
        st.set_state(self.counters, &self.new_attrs);
        if let Some((known, new)) = table {
            known.save(st, &new.0, self.counters.user_count)?;
        }
        Ok(self.counters)
    }

    /// Undoes everything this import wrote.
    pub fn rollback(mut self) -> Result<()> {
        self.done = true;
        self.batch = WriteBatch::default();
        if self.small {
            return Ok(());
        }
        self.stager.abandon();
        rollback(self.store, self.seq, self.first_new_user)
    }
}

impl Drop for ImportTxn<'_> {
    fn drop(&mut self) {
        // Before the writer lock goes with the fields.
        if self.memory_lowered {
            self.store.set_import_memory(false);
        }
        if !self.done && !self.small {
            self.batch = WriteBatch::default();
            self.stager.abandon();
            if let Err(e) = rollback(self.store, self.seq, self.first_new_user) {
                tracing::error!(error = %e, "rolling back an abandoned import failed; it will be retried at next open");
            }
        }
    }
}

/// Adds `users` (strictly ascending) to `bitmap`: appended when they all
/// lie above it, as a first load's do, else by a union. Whether it grew.
fn add_ascending(bitmap: &mut RoaringBitmap, users: &[u32]) -> bool {
    let Some(&first) = users.first() else {
        return false;
    };
    let before = bitmap.len();
    if bitmap.max().is_none_or(|m| first > m) && bitmap.append(users.iter().copied()).is_ok() {
        return true;
    }
    // Strictly ascending by contract, so this cannot fail; if it did, the
    // values go in one by one.
    match RoaringBitmap::from_sorted_iter(users.iter().copied()) {
        Ok(more) => *bitmap |= more,
        Err(_) => bitmap.extend(users.iter().copied()),
    }
    bitmap.len() != before
}

/// Attribute ids [`sort_changes`] buckets by (a store has far fewer).
const BUCKETED_ATTRS: u32 = 1 << 16;

/// Sorts `changes` by (attribute, user), keeping file order among equal
/// pairs: a counting pass by attribute (an import has few) into `scratch`,
/// which then trades places with `changes`, and a sort of an attribute's
/// run only where its users do not ascend already (in a first load they
/// do: users are numbered in row order). A comparison sort of each batch
/// was 14 % of a 5-attribute first load's time.
fn sort_changes(changes: &mut Vec<EncodedChange>, scratch: &mut Vec<EncodedChange>) {
    let max = changes.iter().map(|c| c.attr).max().unwrap_or(0);
    if max >= BUCKETED_ATTRS {
        changes.sort_by_key(|c| (c.attr, c.user));
        return;
    }
    let buckets = max as usize + 1;
    let mut starts = vec![0usize; buckets + 1];
    for c in changes.iter() {
        starts[c.attr as usize + 1] += 1;
    }
    for a in 0..buckets {
        starts[a + 1] += starts[a];
    }
    let mut next = starts.clone();
    scratch.clear();
    scratch.resize(
        changes.len(),
        EncodedChange {
            attr: 0,
            user: 0,
            start: 0,
            len: 0,
        },
    );
    for c in changes.iter() {
        let at = &mut next[c.attr as usize];
        scratch[*at] = *c;
        *at += 1;
    }
    std::mem::swap(changes, scratch);
    for w in starts.windows(2) {
        let run = &mut changes[w[0]..w[1]];
        if !run.is_sorted_by_key(|c| c.user) {
            run.sort_by_key(|c| c.user);
        }
    }
}

/// Keeps the last of each run of equal keys (the input is sorted by key).
fn dedup_keep_last<T>(changes: &mut Vec<T>, key: impl Fn(&T) -> (u32, u32)) {
    let mut w = 0;
    for r in 0..changes.len() {
        let last_of_run = r + 1 == changes.len() || key(&changes[r + 1]) != key(&changes[r]);
        if last_of_run {
            changes.swap(w, r);
            w += 1;
        }
    }
    changes.truncate(w);
}

/// Undoes import `seq`: restores logged values newest first (so the oldest,
/// pre-import value is the one that stays), drops its history entries and the
/// users it created. Idempotent, so a crash during rollback is harmless.
fn rollback(store: &Store, seq: u32, first_new_user: u32) -> Result<()> {
    let db = store.db();
    let undo_cf = store.cf(cf::UNDO);
    let mut batch = WriteBatch::default();
    let mut it = db.raw_iterator_cf(undo_cf);
    it.seek_for_prev(keys::undo(seq, u64::MAX));
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        if keys::read_u32(k) != Some(seq) {
            break;
        }
        let n = k
            .get(4..12)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes);
        if n.is_some_and(|n| n >= UNDO_BITMAPS) {
            let (attr, users) = v.split_at(4.min(v.len()));
            let attr = keys::read_u32(attr).ok_or(Error::Corrupt {
                what: "undo record",
                reason: "no attribute id".into(),
            })?;
            for user in codec::decode_bitmap("undo bitmap", users)? {
                batch.delete_cf(store.cf(cf::ATTR_VALUES), keys::attr_user(attr, user));
                if batch.len() >= BATCH_OPS {
                    db.write(std::mem::take(&mut batch))
                        .map_err(db_err("write", cf::ATTR_VALUES))?;
                }
            }
            it.prev();
            continue;
        }
        let (key, old) = v.split_at(8.min(v.len()));
        if old.is_empty() {
            batch.delete_cf(store.cf(cf::ATTR_VALUES), key);
        } else {
            batch.put_cf(store.cf(cf::ATTR_VALUES), key, old);
            batch.delete_cf(store.cf(cf::ATTR_HISTORY), keys::history_of(key, seq));
        }
        if batch.len() >= BATCH_OPS {
            db.write(std::mem::take(&mut batch))
                .map_err(db_err("write", cf::ATTR_VALUES))?;
        }
        it.prev();
    }
    it.status().map_err(db_err("scan", cf::UNDO))?;

    // Values of the users it created, wherever they were written (batches,
    // ingested SST files): a range per attribute that has any.
    let values_cf = store.cf(cf::ATTR_VALUES);
    let mut it = db.raw_iterator_cf(values_cf);
    let mut attr = 0u32;
    loop {
        it.seek(keys::attr_user(attr, first_new_user));
        let Some(found) = it.key().and_then(keys::read_u32) else {
            break;
        };
        if found != attr {
            attr = found;
            continue;
        }
        let next = attr.checked_add(1);
        let end = next.map_or(vec![0xff; 9], |n| keys::attr_user(n, 0).to_vec());
        batch.delete_range_cf(
            values_cf,
            keys::attr_user(attr, first_new_user).to_vec(),
            end,
        );
        match next {
            Some(n) => attr = n,
            None => break,
        }
    }
    it.status().map_err(db_err("scan", cf::ATTR_VALUES))?;
    drop(it);

    // Their ids: the block it started in keeps its older users, the
    // blocks after it go by range.
    let ids_cf = store.cf(cf::USER_IDS);
    let first_block = user_ids::block(first_new_user);
    let mut cut_from = Some(first_block);
    if user_ids::first_of(first_block) != first_new_user {
        let key = user_ids::key(first_block);
        let old = db
            .get_pinned_cf(ids_cf, key)
            .map_err(db_err("get", cf::USER_IDS))?;
        if let Some(old) = old {
            let kept = user_ids::truncate(&old, first_new_user)?;
            batch.put_cf(ids_cf, key, kept);
        }
        cut_from = first_block.checked_add(1);
    }
    if let Some(from) = cut_from {
        batch.delete_range_cf(ids_cf, user_ids::key(from).to_vec(), vec![0xff; 5]);
    }
    batch.delete_range_cf(undo_cf, keys::undo(seq, 0), keys::undo(seq + 1, 0));
    batch.delete_cf(store.cf(cf::META), keys::IMPORT_MARKER);
    store.write_sync(batch, cf::UNDO)?;
    remove_sst_files(store, seq);
    Ok(())
}

/// Removes import `seq`'s SST files that were not ingested:
/// `import-<seq>-<n>.sst` (and the sort's `.run` files), and
/// `import-<seq>.sst` of earlier versions.
fn remove_sst_files(store: &Store, seq: u32) {
    let users = format!("import-{seq}.sst");
    let numbered = format!("import-{seq}-");
    super::remove_files(store.dir(), |name| {
        name == users
            || (name.starts_with(&numbered) && (name.ends_with(".sst") || name.ends_with(".run")))
    });
}

/// How import `seq`'s SST files begin (`import-<seq>-<n>.sst`).
fn sst_prefix(store: &Store, seq: u32) -> std::path::PathBuf {
    store.dir().join(format!("import-{seq}"))
}

/// Rolls back an import a previous process left unfinished.
pub(crate) fn recover(store: &Store) -> Result<()> {
    let Some(bytes) = store
        .db()
        .get_cf(store.cf(cf::META), keys::IMPORT_MARKER)
        .map_err(db_err("get", cf::META))?
    else {
        return Ok(());
    };
    let marker: Marker = codec::decode_record("import marker", &bytes)?;
    tracing::warn!(
        seq = marker.seq,
        "an import was interrupted; rolling it back so none of it is visible"
    );
    rollback(store, marker.seq, marker.first_new_user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowered_budgets_are_put_back_when_the_import_ends() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let full = store.memory_budget();
        let lowered = crate::store::MemoryBudget {
            write_buffers: super::super::IMPORT_WRITE_BUFFERS_BYTES,
            block_cache: super::super::IMPORT_BLOCK_CACHE_BYTES,
        };
        assert!(full.write_buffers > lowered.write_buffers);
        assert!(full.block_cache > lowered.block_cache);
        let mut txn = store.begin_import().unwrap();
        txn.lower_memory();
        assert_eq!(store.memory_budget(), lowered);
        txn.new_user(b"a").unwrap();
        txn.commit(None).unwrap();
        assert_eq!(store.memory_budget(), full, "after a commit");
        let mut txn = store.begin_import().unwrap();
        txn.lower_memory();
        drop(txn);
        assert_eq!(store.memory_budget(), full, "after a rollback");
        // A small (real-time) transaction never lowers them.
        let mut txn = store.begin_small().unwrap();
        txn.lower_memory();
        assert_eq!(store.memory_budget(), full);
    }

    fn change(attr: u32, user: u32, v: &str) -> AttrChange {
        AttrChange {
            attr,
            user,
            value: Some(Value::Str(v.into())),
        }
    }

    #[test]
    fn values_read_ahead_are_taken_only_while_nothing_wrote_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut txn = store.begin_import().unwrap();
        let (plan, score) = (txn.attr("plan"), txn.attr("score"));
        for u in 0..4u32 {
            txn.new_user(format!("u{u}").as_bytes()).unwrap();
        }
        txn.set_attrs(&[change(plan, 0, "a"), change(score, 0, "1")])
            .unwrap();
        txn.commit(None).unwrap();
        let read = |pairs: &[(u32, u32)]| store.read_ahead(&mut pairs.to_vec()).unwrap();
        let mut recent = RecentWrites::default();

        // Read before a commit of ours that writes plan (not score).
        let stale = read(&[(plan, 0), (score, 0)]);
        let mut t1 = store.begin_small().unwrap();
        assert_eq!(t1.offer(read(&[(plan, 0)]), &recent), 1, "nothing since");
        t1.set_attrs(&[change(plan, 0, "b")]).unwrap();
        let (ends, seq_b) = (t1.ends_at(), t1.seq);
        t1.commit(None).unwrap();
        recent.record(ends, [(plan, 0)]);
        assert_eq!(store.writer_epoch(), ends);

        // plan moved on since `stale` was read: only score is taken, and
        // the value plan replaces is the one committed since ("b").
        let mut t2 = store.begin_small().unwrap();
        assert_eq!(t2.offer(stale, &recent), 1);
        t2.set_attrs(&[change(plan, 0, "c"), change(score, 0, "2")])
            .unwrap();
        let ends = t2.ends_at();
        t2.commit(None).unwrap();
        recent.record(ends, [(plan, 0), (score, 0)]);
        assert_eq!(
            store.attr_value_as_of(plan, 0, seq_b).unwrap(),
            Some(Value::Str("b".into()))
        );
        assert_eq!(
            store.attr_value(plan, 0).unwrap(),
            Some(Value::Str("c".into()))
        );

        // Any other writer's session in between voids a read-ahead whole.
        let before_import = read(&[(score, 0), (plan, 1)]);
        let mut import = store.begin_import().unwrap();
        import.set_attrs(&[change(plan, 1, "x")]).unwrap();
        import.commit(None).unwrap();
        let mut t3 = store.begin_small().unwrap();
        assert_eq!(t3.offer(before_import, &recent), 0);
        drop(t3);
        // Only a small transaction takes a read-ahead.
        let mut big = store.begin_import().unwrap();
        let ahead = read(&[(score, 0)]);
        assert_eq!(big.offer(ahead, &recent), 0);
        big.rollback().unwrap();
    }

    #[test]
    fn values_offered_stand_in_for_reads() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut txn = store.begin_import().unwrap();
        let (plan, uid) = (txn.attr("plan"), txn.attr("uid"));
        txn.new_user(b"u0").unwrap();
        txn.set_attrs(&[change(plan, 0, "a"), change(uid, 0, "u0")])
            .unwrap();
        txn.commit(None).unwrap();
        // An offer that disagrees with the store (as none current can):
        // what the transaction does shows which of the two it used.
        let mut body = Vec::new();
        Value::Str("z".into()).encode_body(&mut body);
        let mut z = 0u32.to_be_bytes().to_vec();
        z.extend_from_slice(&body);
        let fake = ReadAhead::for_test(
            store.writer_epoch(),
            vec![
                (read_ahead::pair_key(plan, 0), Some(z)),
                (read_ahead::pair_key(uid, 0), None),
            ],
        );
        let mut txn = store.begin_small().unwrap();
        assert_eq!(txn.offer(fake, &RecentWrites::default()), 2);
        assert!(!txn.has_value(uid, 0).unwrap(), "answered from the offer");
        txn.set_attrs(&[change(plan, 0, "z")]).unwrap();
        assert_eq!(txn.stats.unchanged, 1, "compared with the offered value");
        txn.rollback().unwrap();
    }

    #[test]
    fn borrowed_presence_answers_as_reads_do_until_another_writer_comes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut txn = store.begin_import().unwrap();
        let (a, b) = (txn.attr("a"), txn.attr("b"));
        for u in 0..50u32 {
            txn.new_user(format!("p{u}").as_bytes()).unwrap();
        }
        let set: Vec<AttrChange> = (0..50)
            .filter(|u: &u32| u.is_multiple_of(3))
            .map(|u| change(a, u, "x"))
            .chain(
                (0..50)
                    .filter(|u: &u32| u.is_multiple_of(5))
                    .map(|u| change(b, u, "y")),
            )
            .collect();
        txn.set_attrs(&set).unwrap();
        txn.commit(None).unwrap();
        let unset = |attr, user| AttrChange {
            attr,
            user,
            value: None,
        };
        // Answers of the store itself, without a cache.
        let read = |attr: u32, u: u32| store.attr_value(attr, u).unwrap().is_some();

        let mut cache = PresenceCache::default();
        let mut txn = store.begin_small().unwrap();
        txn.borrow_presence(&mut cache, &[a]).unwrap();
        assert!(!cache.is_loaded(), "lent out while the transaction runs");
        let fresh = txn.new_user(b"p-new").unwrap();
        // This transaction's changes win over what it borrowed.
        txn.set_attrs(&[change(a, 1, "now"), unset(a, 0), change(a, fresh, "f")])
            .unwrap();
        for u in 0..50u32 {
            let want = match u {
                1 => true,
                0 => false,
                _ => u.is_multiple_of(3),
            };
            assert_eq!(txn.has_value(a, u).unwrap(), want, "user {u}");
            // Not borrowed: read.
            assert_eq!(txn.has_value(b, u).unwrap(), u.is_multiple_of(5));
        }
        assert!(txn.has_value(a, fresh).unwrap());
        txn.commit_keeping(&mut cache).unwrap();
        // Handed back with the commit's changes, exact for the next one.
        let kept = cache.get(a).unwrap().clone();
        assert_eq!(kept, store.attr_present(a).unwrap());
        assert!(kept.contains(1) && !kept.contains(0) && kept.contains(fresh));

        let mut txn = store.begin_small().unwrap();
        txn.borrow_presence(&mut cache, &[a]).unwrap();
        txn.set_attrs(&[unset(a, 3)]).unwrap();
        txn.commit_keeping(&mut cache).unwrap();
        assert_eq!(cache.get(a), Some(&store.attr_present(a).unwrap()));

        // Another writer in between (an import): the next borrow reads the
        // bitmaps again rather than answer from the older ones.
        let mut import = store.begin_import().unwrap();
        import.set_attrs(&[change(a, 4, "i"), unset(a, 6)]).unwrap();
        import.commit(None).unwrap();
        let mut txn = store.begin_small().unwrap();
        txn.borrow_presence(&mut cache, &[a]).unwrap();
        for u in [3, 4, 6, 9] {
            assert_eq!(txn.has_value(a, u).unwrap(), read(a, u), "user {u}");
        }
        // A transaction that fails hands nothing back.
        drop(txn);
        assert!(!cache.is_loaded());
        let mut txn = store.begin_small().unwrap();
        txn.borrow_presence(&mut cache, &[a]).unwrap();
        assert!(txn.has_value(a, 4).unwrap() && !txn.has_value(a, 6).unwrap());
        // Old values are read for users who have one: a change of a user
        // the bitmap lacks would find no value to keep in the history.
        txn.set_attrs(&[change(a, 9, "again")]).unwrap();
        assert_eq!(txn.stats.set, 1);
        assert_eq!(txn.changed.get(&a).map(|c| c.contains(9)), Some(true));
    }

    /// Each change's value is what the store holds.
    fn assert_stored(store: &Store, attr: u32, changes: &[AttrChange]) {
        for c in changes {
            let got = store.attr_value(attr, c.user).unwrap();
            assert_eq!(got, c.value, "user {}", c.user);
        }
    }

    /// A users file for the members a snapshot created, with sign-ups
    /// among them: the older users' first values still go to files, as
    /// the new users' do, call after call.
    #[test]
    fn first_values_of_older_and_new_users_both_go_to_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut txn = store.begin_import().unwrap();
        for u in 0..100u32 {
            txn.new_user(format!("old-{u}").as_bytes()).unwrap();
        }
        txn.commit(None).unwrap();
        let mut txn = store.begin_import().unwrap();
        let a = txn.attr("a");
        let mut want = Vec::new();
        for call in 0..10u32 {
            let mut changes = Vec::new();
            for u in call * 10..call * 10 + 10 {
                changes.push(change(a, u, &format!("o{u}")));
                if u % 5 == 0 {
                    let new = txn.new_user(format!("new-{u}").as_bytes()).unwrap();
                    changes.push(change(a, new, &format!("n{u}")));
                }
            }
            txn.set_attrs(&changes).unwrap();
            txn.flush().unwrap();
            want.extend(changes);
        }
        assert_eq!(txn.filed, want.len() as u64, "every first value filed");
        txn.stager.settle().unwrap();
        assert_eq!(txn.stager.sorted(), 0, "each lane ascends: nothing to sort");
        txn.commit(None).unwrap();
        assert_stored(&store, a, &want);
        let report = store.check().unwrap();
        assert!(report.violations.is_empty(), "{:?}", report.violations);
    }

    /// A users file in an order of its own: older users' first values come
    /// below their lane's last user, call after call. They are sorted
    /// (through run files when there are many) and still go to files, and
    /// an abandoned import leaves neither values nor runs behind.
    #[test]
    fn first_values_out_of_order_are_sorted_into_files() {
        for commit in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            let mut txn = store.begin_import().unwrap();
            let a = txn.attr("a");
            for u in 0..3000u32 {
                txn.new_user(format!("old-{u}").as_bytes()).unwrap();
            }
            // Every tenth user has a value already: it is replaced.
            let first: Vec<AttrChange> = (0..3000)
                .step_by(10)
                .map(|u| change(a, u, "before"))
                .collect();
            txn.set_attrs(&first).unwrap();
            txn.commit(None).unwrap();
            let mut txn = store.begin_import().unwrap();
            txn.set_spill_bytes(4096);
            let mut want = Vec::new();
            // Descending blocks of 100: each call after the first is below
            // the last user filed.
            for call in (0..30u32).rev() {
                let changes: Vec<AttrChange> = (call * 100..call * 100 + 100)
                    .map(|u| change(a, u, &format!("v{u}")))
                    .collect();
                txn.set_attrs(&changes).unwrap();
                txn.flush().unwrap();
                want.extend(changes);
            }
            assert_eq!(txn.filed, 2700, "every first value filed");
            assert_eq!(
                txn.stager.sorted(),
                2700,
                "the first call's too, once out of order"
            );
            let runs = |dir: &std::path::Path| {
                std::fs::read_dir(dir)
                    .unwrap()
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".run"))
                    .count()
            };
            txn.stager.settle().unwrap();
            assert!(runs(store.dir()) > 1, "the values spilled to several runs");
            if commit {
                txn.commit(None).unwrap();
                assert_stored(&store, a, &want);
            } else {
                drop(txn);
                for u in 0..3000u32 {
                    let want = (u % 10 == 0).then(|| Value::Str("before".into()));
                    assert_eq!(store.attr_value(a, u).unwrap(), want, "user {u}");
                }
            }
            assert_eq!(runs(store.dir()), 0, "no run left");
            let report = store.check().unwrap();
            assert!(report.violations.is_empty(), "{:?}", report.violations);
        }
    }

    #[test]
    fn rollback_restores_replaced_and_first_values_across_flushes() {
        // 3 writes a change: several flushes of BATCH_OPS.
        let n = 40_000u32;
        // A repeated row reads back a filed first value: the files are
        // ingested mid-import, and only then are their users logged. A
        // crash leaves the writer's lock held: a store each.
        for (crash, repeat) in [(false, false), (true, false), (false, true), (true, true)] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            let mut txn = store.begin_import().unwrap();
            let a = txn.attr("a");
            for u in 0..n {
                let id = format!("u{u}");
                txn.new_user(id.as_bytes()).unwrap();
            }
            let old: Vec<AttrChange> = (0..n).step_by(2).map(|u| change(a, u, "old")).collect();
            txn.set_attrs(&old).unwrap();
            txn.commit(None).unwrap();

            let mut txn = store.begin_import().unwrap();
            let b = txn.attr("b");
            for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
                let all: Vec<AttrChange> = chunk
                    .iter()
                    .flat_map(|&u| [change(a, u, "new"), change(b, u, "b")])
                    .collect();
                txn.set_attrs(&all).unwrap();
            }
            assert_eq!(
                txn.undo_bitmap_n, UNDO_BITMAPS,
                "first values in files are logged when ingested, not before"
            );
            if repeat {
                txn.set_attrs(&[change(b, 0, "again")]).unwrap();
                assert!(
                    txn.undo_bitmap_n > UNDO_BITMAPS,
                    "no filed first value was logged at ingestion"
                );
                assert_eq!(
                    store.attr_value(b, n - 1).unwrap(),
                    Some(Value::Str("b".into())),
                    "the files are in before the rollback"
                );
            }
            if crash {
                // Flushed, never committed: what the next open finds.
                txn.flush().unwrap();
                std::mem::forget(txn);
                recover(&store).unwrap();
            } else {
                txn.rollback().unwrap();
            }
            for u in (0..n).step_by(997) {
                let want = (u % 2 == 0).then(|| Value::Str("old".into()));
                assert_eq!(
                    store.attr_value(a, u).unwrap(),
                    want,
                    "user {u} crash {crash} repeat {repeat}"
                );
            }
            let b_left = store
                .db()
                .iterator_cf(store.cf(cf::ATTR_VALUES), rocksdb::IteratorMode::Start)
                .filter(|kv| kv.as_ref().is_ok_and(|(k, _)| keys::read_u32(k) == Some(b)))
                .count();
            assert_eq!(b_left, 0, "values of the rolled-back attribute remain");
        }
    }

    #[test]
    fn ids_created_one_by_one_and_in_bulk_share_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let id = |u: u32| format!("id-{u}");
        let small = |store: &Store, users: std::ops::Range<u32>| {
            let mut txn = store.begin_small().unwrap();
            for u in users {
                assert_eq!(txn.new_user(id(u).as_bytes()).unwrap(), u);
            }
            txn.commit(None).unwrap();
        };
        {
            let store = Store::open(dir.path()).unwrap();
            // Real-time users into block 0, then an import that starts
            // inside it (a merge operand in its SST file) and ends inside
            // block 3, then real-time users after it, across a flush.
            small(&store, 0..10);
            let mut txn = store.begin_import().unwrap();
            for u in 10..900 {
                txn.new_user(id(u).as_bytes()).unwrap();
            }
            txn.commit(None).unwrap();
            store.db().flush_cf(store.cf(cf::USER_IDS)).unwrap();
            small(&store, 900..903);
            let mut txn = store.begin_small().unwrap();
            txn.new_user(b"gone").unwrap();
            txn.rollback().unwrap();
        }
        for compact in [false, true] {
            let store = Store::open(dir.path()).unwrap();
            if compact {
                store.compact();
            }
            for u in [0, 9, 10, 255, 256, 767, 768, 899, 900, 902] {
                assert_eq!(store.distinct_id(u).unwrap(), Some(id(u)), "user {u}");
            }
            assert_eq!(store.distinct_id(903).unwrap(), None);
            let mut all = Vec::new();
            store
                .for_each_user(|u, v| all.push((u, v.to_vec())))
                .unwrap();
            let want: Vec<(u32, Vec<u8>)> = (0..903).map(|u| (u, id(u).into_bytes())).collect();
            assert_eq!(all, want, "compacted: {compact}");
            let users: Vec<u32> = vec![3, 9, 10, 11, 300, 899, 902, 903, 5000];
            let mut got = Vec::new();
            store
                .ids_of(&users, |v| got.push(v.map(<[u8]>::to_vec)))
                .unwrap();
            let want: Vec<Option<Vec<u8>>> = users
                .iter()
                .map(|&u| (u < 903).then(|| id(u).into_bytes()))
                .collect();
            assert_eq!(got, want);
            assert!(store.check().unwrap().violations.is_empty());
        }
    }

    /// A small transaction appends the users it created to each block as
    /// one run (one merge operand), not one run a user.
    #[test]
    fn a_small_transaction_appends_one_run_a_block() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = |u: u32| format!("id-{u}");
        for range in [0..250, 250..600] {
            let mut txn = store.begin_small().unwrap();
            for u in range {
                assert_eq!(txn.new_user(id(u).as_bytes()).unwrap(), u);
            }
            txn.commit(None).unwrap();
        }
        // Block 0: the first transaction's run, then the second's.
        for (block, runs) in [(0, 2), (1, 1), (2, 1)] {
            let value = store
                .db()
                .get_cf(store.cf(cf::USER_IDS), user_ids::key(block))
                .unwrap()
                .unwrap();
            assert_eq!(user_ids::run_count(&value).unwrap(), runs, "block {block}");
        }
        let mut all = Vec::new();
        store
            .for_each_user(|u, v| all.push((u, v.to_vec())))
            .unwrap();
        let want: Vec<(u32, Vec<u8>)> = (0..600).map(|u| (u, id(u).into_bytes())).collect();
        assert_eq!(all, want);
    }

    #[test]
    fn a_writer_thread_keeps_reads_consistent_and_rollback_complete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Past NEW_IDS_BYTES of ids and several BATCH_OPS of writes, so
        // jobs are in flight while the next batch reads old values.
        let n = 300_000u32;
        let ids: Vec<String> = (0..n).map(|u| format!("user-{u:08}")).collect();
        let all = |v: &str| -> Vec<AttrChange> { (0..n).map(|u| change(0, u, v)).collect() };
        std::thread::scope(|scope| {
            let mut txn = store.begin_import().unwrap();
            txn.write_on(scope);
            let a = txn.attr("a");
            assert_eq!(a, 0);
            for id in &ids {
                txn.new_user(id.as_bytes()).unwrap();
            }
            // Each chunk is handed off as it is set (over BATCH_OPS), then
            // set again at once: the reads of its old values must see the
            // batch still being written, so every second write is unchanged.
            for chunk in all("x").chunks(20_000) {
                txn.set_attrs(chunk).unwrap();
                txn.set_attrs(chunk).unwrap();
            }
            assert_eq!(txn.attr_stats().unchanged, u64::from(n));
            txn.commit(None).unwrap();
        });
        assert_eq!(store.counters().user_count, n);
        for u in (0..n).step_by(9973) {
            assert_eq!(
                store.distinct_id(u).unwrap().as_deref(),
                Some(&*ids[u as usize])
            );
            assert_eq!(
                store.attr_value(0, u).unwrap(),
                Some(Value::Str("x".into()))
            );
        }

        // An import that is rolled back, or killed after some of its value
        // files were ingested, leaves nothing behind: not the values it
        // changed, nor its new users, their values (in files ingested or
        // not) or its files.
        let values_of_new_users = |store: &Store| {
            store
                .db()
                .iterator_cf(store.cf(cf::ATTR_VALUES), rocksdb::IteratorMode::Start)
                .filter(|kv| {
                    kv.as_ref()
                        .is_ok_and(|(k, _)| keys::read_u32(&k[4..]).is_some_and(|u| u >= n))
                })
                .count()
        };
        let more: Vec<AttrChange> = (n..2 * n).map(|u| change(0, u, "z")).collect();
        let import_more = |txn: &mut ImportTxn<'_>| {
            for u in 0..n {
                txn.new_user(format!("more-{u}").as_bytes()).unwrap();
            }
            for chunk in all("y").chunks(20_000) {
                txn.set_attrs(chunk).unwrap();
            }
            // First values of older users go to files too.
            let b = txn.attr("b");
            let firsts: Vec<AttrChange> = (0..n).map(|u| change(b, u, "b")).collect();
            for chunk in firsts.chunks(20_000) {
                txn.set_attrs(chunk).unwrap();
            }
            for (i, chunk) in more.chunks(20_000).enumerate() {
                txn.set_attrs(chunk).unwrap();
                if i == 3 {
                    // A repeated row: its old value is read back, which
                    // ingests the value files written so far.
                    txn.set_attrs(chunk).unwrap();
                }
            }
            assert_eq!(
                values_of_new_users(&store),
                4 * 20_000,
                "no file was ingested"
            );
        };
        for crash in [false, true] {
            if crash {
                let mut txn = store.begin_import().unwrap();
                import_more(&mut txn);
                txn.flush().unwrap();
                std::mem::forget(txn);
                recover(&store).unwrap();
            } else {
                std::thread::scope(|scope| {
                    let mut txn = store.begin_import().unwrap();
                    txn.write_on(scope);
                    import_more(&mut txn);
                    txn.rollback().unwrap();
                });
            }
            assert_eq!(store.counters().user_count, n);
            assert_eq!(store.distinct_id(n).unwrap(), None);
            // The block it started in (n is not a multiple of 256) keeps
            // the users before it.
            assert_eq!(
                store.distinct_id(n - 1).unwrap().as_deref(),
                Some(&*ids[n as usize - 1])
            );
            assert_eq!(values_of_new_users(&store), 0, "crash {crash}");
            let of_b = store
                .db()
                .iterator_cf(store.cf(cf::ATTR_VALUES), rocksdb::IteratorMode::Start)
                .filter(|kv| kv.as_ref().is_ok_and(|(k, _)| keys::read_u32(k) == Some(1)))
                .count();
            assert_eq!(of_b, 0, "first values of older users remain, crash {crash}");
            for u in (0..n).step_by(9973) {
                assert_eq!(
                    store.attr_value(0, u).unwrap(),
                    Some(Value::Str("x".into()))
                );
            }
            let left: Vec<_> = std::fs::read_dir(store.dir())
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("import-"))
                .collect();
            assert!(left.is_empty(), "files left: {left:?}");
        }
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        /// The staged paths (first values of new users in SST files, read
        /// back after an ingest; everything else in batches), inline or on
        /// a writer thread, end with the same values as applying the calls
        /// one by one to a map, and pass `check`.
        #[test]
        fn staged_writes_match_a_model(
            calls in proptest::collection::vec(
                proptest::collection::vec((0u32..3, 0u32..40, proptest::option::of(0u8..3)), 1..30),
                1..10,
            ),
            threaded: bool,
            tiny_spill: bool,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path()).unwrap();
            let value = |v: u8| Value::Str(format!("v{v}"));
            let mut model: HashMap<(u32, u32), Value> = HashMap::new();
            // Users 0..20 exist before, half with a value of attribute 0.
            let mut txn = store.begin_import().unwrap();
            // Three attributes: a job's values of several attributes and
            // its ids are shared between the writer's two threads.
            let attrs = (txn.attr("a"), txn.attr("b"), txn.attr("c"));
            prop_assert_eq!(attrs, (0, 1, 2));
            for u in 0..20u32 {
                txn.new_user(format!("old-{u}").as_bytes()).unwrap();
            }
            let first: Vec<AttrChange> = (0..20).step_by(2).map(|u| AttrChange {
                attr: 0, user: u, value: Some(value(9)),
            }).collect();
            txn.set_attrs(&first).unwrap();
            txn.commit(None).unwrap();
            for c in &first {
                model.insert((0, c.user), value(9));
            }
            let run = |txn: &mut ImportTxn<'_>| {
                for u in 20..40u32 {
                    txn.new_user(format!("new-{u}").as_bytes()).unwrap();
                }
                for call in &calls {
                    let changes: Vec<AttrChange> = call.iter().map(|&(attr, user, v)| AttrChange {
                        attr, user, value: v.map(value),
                    }).collect();
                    txn.set_attrs(&changes).unwrap();
                    // Some calls hand their batch off, as full batches do.
                    if call.len() % 3 == 0 {
                        txn.flush().unwrap();
                    }
                }
            };
            if threaded {
                std::thread::scope(|scope| {
                    let mut txn = store.begin_import().unwrap();
                    if tiny_spill {
                        txn.set_spill_bytes(64);
                    }
                    txn.write_on(scope);
                    run(&mut txn);
                    txn.commit(None).unwrap();
                });
            } else {
                let mut txn = store.begin_import().unwrap();
                if tiny_spill {
                    txn.set_spill_bytes(64);
                }
                run(&mut txn);
                txn.commit(None).unwrap();
            }
            for call in &calls {
                for &(attr, user, v) in call {
                    match v {
                        Some(v) => model.insert((attr, user), value(v)),
                        None => model.remove(&(attr, user)),
                    };
                }
            }
            for attr in 0..3 {
                for user in 0..40 {
                    prop_assert_eq!(
                        store.attr_value(attr, user).unwrap(),
                        model.get(&(attr, user)).cloned(),
                        "attr {} user {}", attr, user
                    );
                }
            }
            let report = store.check().unwrap();
            prop_assert!(report.violations.is_empty(), "{:?}", report.violations);
        }
    }

    proptest::proptest! {
        /// The bucketed sort orders as a stable sort by (attribute, user)
        /// does: duplicates (deletions among them) stay in file order.
        #[test]
        fn sort_changes_is_a_stable_sort(
            raw in proptest::collection::vec((0u32..6, 0u32..40, proptest::bool::ANY), 0..300),
            wide in proptest::bool::ANY,
        ) {
            let changes: Vec<EncodedChange> = raw
                .iter()
                .enumerate()
                .map(|(i, &(a, u, del))| EncodedChange {
                    // Past the bucketed range too, for the fallback.
                    attr: if wide && a == 5 { BUCKETED_ATTRS + 3 } else { a },
                    user: u,
                    start: i as u32,
                    len: if del { EncodedChange::DELETE } else { 1 },
                })
                .collect();
            let mut want = changes.clone();
            want.sort_by_key(|c| (c.attr, c.user));
            let mut got = changes;
            let mut scratch = vec![EncodedChange { attr: 9, user: 9, start: 9, len: 9 }; 3];
            sort_changes(&mut got, &mut scratch);
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn ascending_users_are_appended_or_united() {
        let mut b: RoaringBitmap = [5u32, 100].into_iter().collect();
        assert!(!add_ascending(&mut b, &[]));
        // Above the bitmap: appended.
        assert!(add_ascending(&mut b, &[200, 70_000, 70_001]));
        // Among its values: a union, which may add nothing.
        assert!(add_ascending(&mut b, &[1, 100, 150]));
        assert!(!add_ascending(&mut b, &[1, 5, 70_001]));
        let want = [1u32, 5, 100, 150, 200, 70_000, 70_001];
        assert_eq!(b.iter().collect::<Vec<_>>(), want);
        // Into an empty bitmap.
        let mut e = RoaringBitmap::new();
        assert!(add_ascending(&mut e, &[3, 4]));
        assert_eq!(e.len(), 2);
    }

    #[test]
    fn dedup_keeps_the_last_change_of_each_pair() {
        let mut v = vec![
            change(1, 1, "a"),
            change(1, 1, "b"),
            change(1, 2, "c"),
            change(2, 1, "d"),
            change(2, 1, "e"),
        ];
        dedup_keep_last(&mut v, |c| (c.attr, c.user));
        let vals: Vec<_> = v.iter().map(|c| c.value.clone()).collect();
        assert_eq!(
            vals,
            ["b", "c", "e"].map(|s| Some(Value::Str(s.into()))).to_vec()
        );
    }
}

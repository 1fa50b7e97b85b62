//! The embedded store: one RocksDB with the column families of the design,
//! opened once per process (RocksDB's own `LOCK` file refuses a second
//! opener), versioned, and recovered at open: an import that was interrupted
//! (crash, `kill -9`) is rolled back before anyone can read its half.
//!
//! Layout of a data dir: `db/` (RocksDB), `fingerprints.bin` and
//! `fingerprints.tail.bin` (the interner's table and the users created
//! since it was written whole: a cache, completed from `user_ids` when stale).

mod backup;
pub(crate) mod cf;
mod changes;
mod check;
pub mod codec;
mod fingerprints;
mod index;
pub(crate) mod keys;
mod migrate;
mod presence_cache;
mod read_ahead;
mod records;
mod retention;
mod segments;
mod stage;
mod syncs;
mod txn;
mod user_ids;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};

use roaring::RoaringBitmap;
use rocksdb::{BlockBasedOptions, ColumnFamily, ColumnFamilyDescriptor, Options, DB};
use serde::{Deserialize, Serialize};

use crate::error::{Classify, Fault};

pub use backup::{bytes_under, BackupInfo};
pub use check::{CheckReport, Violation};
pub use codec::{Value, ValueRef};
pub(crate) use fingerprints::Run;
pub use fingerprints::{Fingerprint, FingerprintTable, KnownUsers, NewUsers, TableReader};
pub use presence_cache::PresenceCache;
pub use read_ahead::{ReadAhead, RecentWrites};
pub(crate) use records::Write;
pub use retention::{Policy as RetentionPolicy, Pruned};
pub use segments::{SegmentRecord, SnapshotMeta};
pub use syncs::{
    BitmapKind, ExecKind, ExecStatus, ExecutionRecord, Frequency, PageOutcome, Schedule,
    SyncRecord, SyncStatus, Trigger,
};
pub use txn::{AttrChange, AttrStats, EncodedChange, ImportTxn};
pub use user_ids::{decode_block as decode_user_ids_block, find as find_in_user_ids_block};

/// The schema this build reads and writes. Bump on any incompatible change of
/// keys or record layout; a store with another version is refused at open.
/// Version 2: destination formats (Cohort Sync), live snapshots, the
/// identity index and inbound state. Version 3: the change index of
/// attribute values, and execution records with `updated`, `throttled` and
/// `effective_rpm`; a version-2 store is upgraded at open (`migrate.rs`).
/// Version 4: presence bitmaps take merge deltas from real-time writes.
/// Version 5: real-time writes merge into the change index's buckets
/// (nothing is rewritten: an older build must not read operands it cannot
/// merge).
pub const SCHEMA_VERSION: u32 = 6;

/// Errors of the store layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another process holds the data dir.
    #[error("data dir {path} is locked by another process (is a `segsync serve` or another segsync command running on it?)")]
    Locked {
        /// The data dir.
        path: PathBuf,
    },
    /// This process holds the data dir already: a store handle of its own
    /// is still alive (a bug of the caller, not another command running).
    #[error("data dir {path} is already open in this process (an earlier handle to it has not been released yet)")]
    OpenHere {
        /// The data dir.
        path: PathBuf,
    },
    /// The directory exists but is not a segsync store.
    #[error("{path} is not a segsync data dir: {reason}")]
    NotAStore {
        /// The data dir.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The store was written by an incompatible version.
    #[error(
        "data dir {path} has schema version {found}; this segsync reads schema version {expected}"
    )]
    SchemaMismatch {
        /// The data dir.
        path: PathBuf,
        /// Version found in the store.
        found: u32,
        /// Version this build supports.
        expected: u32,
    },
    /// A RocksDB operation failed.
    #[error("{}", db_message(op, cf, cause))]
    Db {
        /// What was being done.
        op: &'static str,
        /// The column family.
        cf: &'static str,
        /// RocksDB's error (not a `source`: the message already says it).
        cause: rocksdb::Error,
    },
    /// A stored record could not be decoded.
    #[error("corrupt {what} in the store: {reason}")]
    Corrupt {
        /// What record.
        what: &'static str,
        /// Why it does not decode.
        reason: String,
    },
    /// A file of the data dir could not be read or written.
    #[error("{}", io_message(path, source))]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The store ran out of user indexes (more than 2^32 - 1 users).
    #[error("the store is full: at most {} users", u32::MAX)]
    Full,
    /// Retention removed what was asked for.
    #[error("{0}")]
    Pruned(String),
}

impl Classify for Error {
    /// Every store error is ours or the machine's, a locked data dir too
    /// (exit code 1, as a failure to run rather than a wrong request),
    /// but for details that retention removed (not found).
    fn fault(&self) -> Fault {
        match self {
            Error::Pruned(_) => Fault::NotFound,
            _ => Fault::Internal,
        }
    }
}

/// Shorthand for store results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a failed RocksDB operation means to the person reading it: a
/// corrupt store and a full disk each say what to do.
fn db_message(op: &str, cf: &str, cause: &rocksdb::Error) -> String {
    let text = cause.to_string();
    if cause.kind() == rocksdb::ErrorKind::Corruption {
        format!(
            "the store is corrupt (column family {cf}, during {op}): {text}; restore the data dir from a backup (`segsync restore`); `segsync check` lists what can still be read"
        )
    } else if text.contains("No space left") {
        format!(
            "no space left on the disk of the data dir (column family {cf}, during {op}): nothing of the interrupted work is stored; free space and run it again ({text})"
        )
    } else {
        format!("store {op} in column family {cf} failed: {text}")
    }
}

/// A failed file operation of the data dir; a full disk says, as RocksDB's
/// does, that nothing of the work is stored and what to do (an import's
/// sort runs and SST files are the files it writes besides RocksDB's).
fn io_message(path: &Path, source: &std::io::Error) -> String {
    if source.kind() == std::io::ErrorKind::StorageFull {
        format!(
            "no space left on the disk of the data dir (writing {}): nothing of the interrupted work is stored; free space and run it again ({source})",
            path.display()
        )
    } else {
        format!("{}: {source}", path.display())
    }
}

pub(crate) fn db_err(op: &'static str, cf: &'static str) -> impl FnOnce(rocksdb::Error) -> Error {
    move |cause| Error::Db { op, cf, cause }
}

/// Monotonic counters, persisted in `meta` and advanced only by a commit.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counters {
    /// Users interned so far; user indexes are `0..user_count`.
    pub user_count: u32,
    /// The last committed write sequence (one per import).
    pub write_seq: u32,
    /// Next segment id.
    pub next_segment_id: u32,
    /// Next attribute id.
    pub next_attr_id: u32,
}

#[derive(Debug, Default)]
struct State {
    counters: Counters,
    attrs: HashMap<String, u32>,
    /// Attributes whose identity index is built (see `index.rs`).
    indexed: Vec<u32>,
}

/// An open segsync store.
pub struct Store {
    db: DB,
    /// Options of the SST files imports write new users into.
    sst_opts: Options,
    /// Options of the SST files imports write first values into
    /// (compressed like the family's own files: syncs read them).
    values_sst_opts: Options,
    dir: PathBuf,
    state: RwLock<State>,
    /// Serialises writers (imports); readers never take it.
    writer: Mutex<()>,
    /// Writer sessions ended so far (see [`WriterGuard`]).
    writer_epoch: std::sync::atomic::AtomicU64,
    /// Serialises read-modify-write of sync records (actions, the end of a
    /// run, the scheduler), so none overwrites another's change.
    syncs: Mutex<()>,
    /// Serialises id allocation (`next_id`), apart from imports so that an
    /// action never waits for one.
    ids: Mutex<()>,
    /// Writes to `inbound` (keys, workspaces, tokens) so far, for caches of
    /// those records to know when to read them again.
    inbound_writes: std::sync::atomic::AtomicU64,
    /// The memtables' budget ([`WRITE_BUFFERS_BYTES`]) and the block
    /// cache ([`BLOCK_CACHE_BYTES`], its capacity now beside it): a bulk
    /// import lowers both while it runs ([`ImportTxn::lower_memory`]).
    write_buffers: rocksdb::WriteBufferManager,
    cache: rocksdb::Cache,
    cache_capacity: std::sync::atomic::AtomicUsize,
}

/// The writer lock, held: counts the session as ended
/// ([`Store::writer_epoch`]) when released, after everything it wrote or
/// rolled back is visible and before another writer can start.
pub(crate) struct WriterGuard<'s> {
    epoch: &'s std::sync::atomic::AtomicU64,
    _lock: MutexGuard<'s, ()>,
}

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        // Fields drop after this: the count moves while the lock is held.
        self.epoch
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

/// Removes the files of `dir` whose names `unwanted` picks (what a killed
/// import or table save left behind).
pub(crate) fn remove_files(dir: &Path, unwanted: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if unwanted(&e.file_name().to_string_lossy()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// What RocksDB may hold in memtables and cached blocks, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryBudget {
    /// The cap on all memtables together.
    pub write_buffers: usize,
    /// The block cache's capacity.
    pub block_cache: usize,
}

/// One block cache for every column family (otherwise each family's table
/// options get a default cache of their own, and memory grows with their
/// number).
const BLOCK_CACHE_BYTES: usize = 64 << 20;
/// Size of the files compactions write (see [`cf_options_with`]).
const TARGET_FILE_BYTES: u64 = 16 << 20;
/// Keys one `MultiGet` of current values takes (see [`Store::each_value`]):
/// at most this many data blocks pinned at once (4 MB of 4 KB blocks).
const MULTI_GET_CHUNK: usize = 1024;
/// Cap on all memtables together.
const WRITE_BUFFERS_BYTES: usize = 128 << 20;
/// The memtables' cap and the block cache's capacity while a bulk import
/// runs (see [`ImportTxn::lower_memory`]).
pub(crate) const IMPORT_WRITE_BUFFERS_BYTES: usize = 16 << 20;
pub(crate) const IMPORT_BLOCK_CACHE_BYTES: usize = 8 << 20;

fn cf_options(name: &str, cache: &rocksdb::Cache) -> Options {
    cf_options_with(name, cache, true)
}

/// Options of the SST files an import writes into family `name` and
/// ingests at commit: as the family's own, but without a Bloom filter.
///
/// A filter only answers "absent" cheaply, and the reads of these files
/// are hits (a user's id; the values a sync renders, which it scans) or
/// misses RocksDB rules out without one (a new attribute's keys lie
/// outside every file's key range: keys start with the attribute). Kept,
/// the filters were the largest thing RocksDB held after a first load —
/// 79 MB of table readers for 10M users with 5 attributes, outside the
/// block cache's bound — and the SST writers' largest buffers while
/// building them (33 MB).
fn import_sst_options(name: &str, cache: &rocksdb::Cache) -> Options {
    cf_options_with(name, cache, false)
}

fn cf_options_with(name: &str, cache: &rocksdb::Cache, bloom: bool) -> Options {
    let mut o = Options::default();
    let mut table = BlockBasedOptions::default();
    if bloom {
        table.set_bloom_filter(10.0, false);
    }
    table.set_block_cache(cache);
    o.set_block_based_table_factory(&table);
    // A compaction's output file holds every key's hash until its Bloom
    // filter is built: at RocksDB's 64 MB default, files of small values
    // hold ~5M keys, 40 MB of hashes (the largest thing a 6M-row update
    // of a 10M store held). A quarter of that, for about 1 % of its time.
    o.set_target_file_size_base(TARGET_FILE_BYTES);
    if name == cf::ATTR_VALUES || name == cf::USER_IDS {
        // Point reads of random users (old values, identifiers) mostly
        // miss the memtable: a whole-key Bloom filter over it answers
        // those without a skiplist search (1.3 MB a 64 MB memtable).
        o.set_memtable_whole_key_filtering(true);
        o.set_memtable_prefix_bloom_ratio(0.02);
    }
    match name {
        // Bitmaps are compressed already; LZ4 on top only costs time.
        cf::SNAPSHOTS | cf::ATTR_PRESENT | cf::EXEC_BITMAPS | cf::ATTR_CHANGES => {
            o.set_compression_type(rocksdb::DBCompressionType::None)
        }
        _ => o.set_compression_type(rocksdb::DBCompressionType::Lz4),
    }
    if name == cf::ATTR_PRESENT {
        // Real-time writes merge small deltas into the presence bitmaps
        // (see `txn.rs`); RocksDB folds them in on read and compaction.
        // No `max_successive_merges` (it was 64): its fold in the write
        // path walked ever more deltas of the memtable — Personas calls on
        // a 1M-user store fell from 21K to 6K a second within half a
        // minute, 83 % of the commit thread in RocksDB's `SaveValue`
        // under `MergeCF`, with `strict_max_successive_merges` too.
        // Without it they hold 29–33K. A read folds the deltas not yet
        // compacted (planning a sync, `check`), never the write path; flushes
        // and compactions compose runs of deltas even without the base.
        o.set_merge_operator(
            "segsync.presence.v1",
            |_key: &[u8], existing: Option<&[u8]>, ops: &rocksdb::MergeOperands| {
                codec::merge_presence(existing, ops)
            },
            // Without the base, runs of deltas compose into one delta.
            |_key: &[u8], _existing: Option<&[u8]>, ops: &rocksdb::MergeOperands| {
                codec::compose_presence_deltas(ops)
            },
        );
        o.set_max_successive_merges(0);
    }
    if name == cf::USER_IDS {
        // Users created into a block that has some already append a run
        // to it (see `user_ids.rs`).
        o.set_merge_operator(
            "segsync.user_ids.v1",
            |_key: &[u8], existing: Option<&[u8]>, ops: &rocksdb::MergeOperands| {
                Some(user_ids::concat(existing, ops))
            },
            |_key: &[u8], _existing: Option<&[u8]>, ops: &rocksdb::MergeOperands| {
                Some(user_ids::concat(None, ops))
            },
        );
    }
    if name == cf::ATTR_CHANGES {
        // Real-time writes add their changed users to a bucket as merge
        // operands (see `changes.rs`). Read and rewritten whole by every
        // commit, a bucket of random users grew to ~100 KB: 64 MB of
        // memtable a second, which flushed every family every second and
        // kept compactions rewriting `attr_values`.
        o.set_merge_operator(
            "segsync.changes.v1",
            |_key: &[u8], existing: Option<&[u8]>, ops: &rocksdb::MergeOperands| {
                codec::union_bitmaps(existing, ops)
            },
            |_key: &[u8], _existing: Option<&[u8]>, ops: &rocksdb::MergeOperands| {
                codec::union_bitmaps(None, ops)
            },
        );
    }
    o
}

impl Store {
    /// Opens (creating if absent or empty) the store in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Store> {
        let dir = dir.as_ref().to_path_buf();
        let db_dir = dir.join("db");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        let fresh = if db_dir.join("CURRENT").exists() {
            false
        } else {
            if dir.exists() {
                if !dir.is_dir() {
                    return Err(Error::NotAStore {
                        path: dir,
                        reason: "not a directory".into(),
                    });
                }
                // A new data dir may already hold its own config file.
                let mut foreign = std::fs::read_dir(&dir)
                    .map_err(io(&dir))?
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_name() != "segsync.toml");
                if foreign.next().is_some() {
                    return Err(Error::NotAStore {
                        path: dir,
                        reason: "the directory is not empty and has no db/ inside".into(),
                    });
                }
            }
            std::fs::create_dir_all(&db_dir).map_err(io(&db_dir))?;
            true
        };

        if !fresh {
            let existing = DB::list_cf(&Options::default(), &db_dir).map_err(|e| {
                if let Some(lock) = lock_error(&e, &dir) {
                    lock
                } else {
                    Error::NotAStore {
                        path: dir.clone(),
                        reason: e.to_string(),
                    }
                }
            })?;
            if !existing.iter().any(|c| c == cf::META) {
                return Err(Error::NotAStore {
                    path: dir,
                    reason: "the database has no `meta` column family".into(),
                });
            }
        }

        let mut opts = Options::default();
        opts.create_if_missing(fresh);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        // Bounded growth of RocksDB's own files: the info log starts a new
        // file at every open (and every CLI command opens the store), and
        // the manifest gains an edit at every flush and compaction; both
        // would otherwise grow without end. At most 3 × 1 MB of log, and a
        // manifest rewritten from the current state past 8 MB.
        opts.set_keep_log_file_num(3);
        opts.set_max_log_file_size(1 << 20);
        opts.set_max_manifest_file_size(8 << 20);
        // Imports stage their writes without the WAL and flush before they
        // commit; atomic flush keeps the column families of one batch
        // together on disk, so a crash never leaves half a batch.
        opts.set_atomic_flush(true);
        // As `db_write_buffer_size` would, but resizable while open.
        let write_buffers =
            rocksdb::WriteBufferManager::new_write_buffer_manager(WRITE_BUFFERS_BYTES, false);
        opts.set_write_buffer_manager(&write_buffers);
        let cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        opts.increase_parallelism(2);
        let descriptors = cf::ALL
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, cf_options(name, &cache)));
        let db = DB::open_cf_descriptors(&opts, &db_dir, descriptors).map_err(|e| {
            if let Some(lock) = lock_error(&e, &dir) {
                lock
            } else {
                Error::Db {
                    op: "open",
                    cf: "*",
                    cause: e,
                }
            }
        })?;

        let mut sst_opts = import_sst_options(cf::USER_IDS, &cache);
        sst_opts.set_compression_type(rocksdb::DBCompressionType::None);
        let values_sst_opts = import_sst_options(cf::ATTR_VALUES, &cache);
        let store = Store {
            db,
            sst_opts,
            values_sst_opts,
            write_buffers,
            cache: cache.clone(),
            cache_capacity: std::sync::atomic::AtomicUsize::new(BLOCK_CACHE_BYTES),
            dir,
            state: RwLock::new(State::default()),
            writer: Mutex::new(()),
            writer_epoch: std::sync::atomic::AtomicU64::new(0),
            syncs: Mutex::new(()),
            ids: Mutex::new(()),
            inbound_writes: std::sync::atomic::AtomicU64::new(0),
        };
        store.check_schema(fresh)?;
        store.load_state()?;
        txn::recover(&store)?;
        fingerprints::remove_unfinished_saves(&store.dir);
        Ok(store)
    }

    fn check_schema(&self, fresh: bool) -> Result<()> {
        let meta = self.cf(cf::META);
        let found = self
            .db
            .get_cf(meta, keys::SCHEMA_VERSION)
            .map_err(db_err("get", cf::META))?;
        match found {
            None if fresh => {
                let mut batch = rocksdb::WriteBatch::default();
                batch.put_cf(meta, keys::SCHEMA_VERSION, SCHEMA_VERSION.to_be_bytes());
                batch.put_cf(
                    meta,
                    keys::COUNTERS,
                    codec::encode_record(&Counters::default()),
                );
                self.write_sync(batch, cf::META)
            }
            None => Err(Error::NotAStore {
                path: self.dir.clone(),
                reason: "no schema version recorded".into(),
            }),
            Some(v) => match keys::read_u32(&v) {
                Some(SCHEMA_VERSION) => Ok(()),
                Some(found) if (migrate::OLDEST..SCHEMA_VERSION).contains(&found) => {
                    migrate::upgrade(self, found)
                }
                Some(found) => Err(Error::SchemaMismatch {
                    path: self.dir.clone(),
                    found,
                    expected: SCHEMA_VERSION,
                }),
                None => Err(Error::NotAStore {
                    path: self.dir.clone(),
                    reason: "unreadable schema version".into(),
                }),
            },
        }
    }

    fn load_state(&self) -> Result<()> {
        let meta = self.cf(cf::META);
        let counters = match self
            .db
            .get_cf(meta, keys::COUNTERS)
            .map_err(db_err("get", cf::META))?
        {
            Some(bytes) => codec::decode_record("counters", &bytes)?,
            None => Counters::default(),
        };
        let mut attrs = HashMap::new();
        for item in self.db.prefix_iterator_cf(meta, keys::ATTR_PREFIX) {
            let (k, v) = item.map_err(db_err("scan", cf::META))?;
            let Some(name) = k.strip_prefix(keys::ATTR_PREFIX) else {
                break;
            };
            let id = keys::read_u32(&v).ok_or(Error::Corrupt {
                what: "attribute catalogue",
                reason: "short id".into(),
            })?;
            attrs.insert(String::from_utf8_lossy(name).into_owned(), id);
        }
        let indexed = index::load_built(self)?;
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = State {
            counters,
            attrs,
            indexed,
        };
        Ok(())
    }

    pub(crate) fn cf(&self, name: &'static str) -> &ColumnFamily {
        // Every name in cf::ALL is created at open, so a miss is a bug here.
        self.db
            .cf_handle(name)
            .unwrap_or_else(|| panic!("column family {name} missing after open"))
    }

    pub(crate) fn db(&self) -> &DB {
        &self.db
    }

    pub(crate) fn write_sync(&self, batch: rocksdb::WriteBatch, cf: &'static str) -> Result<()> {
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo).map_err(db_err("write", cf))
    }

    /// Persists WAL-less staged writes (every family an import writes).
    pub(crate) fn flush_staged(&self) -> Result<()> {
        let cfs: Vec<&ColumnFamily> = [cf::USER_IDS, cf::ATTR_VALUES, cf::ATTR_HISTORY, cf::UNDO]
            .iter()
            .map(|c| self.cf(c))
            .collect();
        self.db
            .flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default())
            .map_err(db_err("flush", "*"))
    }

    pub(crate) fn sst_options(&self) -> &Options {
        &self.sst_opts
    }

    pub(crate) fn values_sst_options(&self) -> &Options {
        &self.values_sst_opts
    }

    /// Held while a sync record is read, changed and written back.
    pub(crate) fn lock_syncs(&self) -> MutexGuard<'_, ()> {
        self.syncs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn lock_ids(&self) -> MutexGuard<'_, ()> {
        self.ids.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn lock_writer(&self) -> WriterGuard<'_> {
        WriterGuard {
            epoch: &self.writer_epoch,
            _lock: self.writer.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }

    /// Writer sessions (imports, small transactions, anything under the
    /// writer lock) that have ended: whatever a session wrote is visible
    /// to a read that follows a load of this count, and a read that
    /// preceded the session's end is only known good once the count has
    /// passed it (see `read_ahead.rs`).
    pub fn writer_epoch(&self) -> u64 {
        self.writer_epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn set_state(&self, counters: Counters, new_attrs: &[(String, u32)]) {
        let mut st = self.state.write().unwrap_or_else(PoisonError::into_inner);
        st.counters = counters;
        for (name, id) in new_attrs {
            st.attrs.insert(name.clone(), *id);
        }
    }

    /// The data dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The committed counters.
    pub fn counters(&self) -> Counters {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .counters
    }

    /// Id of an attribute, if any import has set it.
    pub fn attr_id(&self, name: &str) -> Option<u32> {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .attrs
            .get(name)
            .copied()
    }

    /// All attributes, sorted by name.
    pub fn attributes(&self) -> Vec<(String, u32)> {
        let st = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let mut v: Vec<_> = st.attrs.iter().map(|(k, v)| (k.clone(), *v)).collect();
        v.sort();
        v
    }

    /// Users that currently have attribute `attr`.
    pub fn attr_present(&self, attr: u32) -> Result<RoaringBitmap> {
        match self
            .db
            .get_pinned_cf(self.cf(cf::ATTR_PRESENT), keys::attr(attr))
            .map_err(db_err("get", cf::ATTR_PRESENT))?
        {
            Some(bytes) => codec::decode_bitmap("attribute presence bitmap", &bytes),
            None => Ok(RoaringBitmap::new()),
        }
    }

    /// Users that have the attribute named `name` (empty if unknown).
    pub fn attr_present_by_name(&self, name: &str) -> Result<Option<RoaringBitmap>> {
        self.attr_id(name)
            .map(|id| self.attr_present(id))
            .transpose()
    }

    /// The distinct id of user `idx`.
    pub fn distinct_id(&self, idx: u32) -> Result<Option<String>> {
        self.with_distinct_id(idx, |id| {
            id.map(|b| String::from_utf8_lossy(b).into_owned())
        })
    }

    /// `f` of user `idx`'s distinct id as stored, read in place from its
    /// block (no copy: a fingerprint match is checked on every call).
    fn with_distinct_id<T>(&self, idx: u32, f: impl FnOnce(Option<&[u8]>) -> T) -> Result<T> {
        let block = self
            .db
            .get_pinned_cf(self.cf(cf::USER_IDS), user_ids::key(user_ids::block(idx)))
            .map_err(db_err("get", cf::USER_IDS))?;
        let id = match &block {
            Some(b) => user_ids::find(b, idx)?,
            None => None,
        };
        Ok(f(id))
    }

    /// Compacts every column family now (maintenance, and for benchmarks
    /// that must not measure the background work of a previous bulk load).
    pub fn compact(&self) {
        for name in cf::ALL {
            self.db
                .compact_range_cf(self.cf(name), None::<&[u8]>, None::<&[u8]>);
        }
    }

    /// Calls `f(index, distinct id)` for every user, in index order.
    pub fn for_each_user(&self, f: impl FnMut(u32, &[u8])) -> Result<()> {
        self.for_each_user_from(0, f)
    }

    /// Calls `f` with the id of each of `users` (ascending) in turn, `None`
    /// for one the store does not have: one iterator over their blocks,
    /// stepping through them and seeking past gaps (a sync's page).
    pub(crate) fn ids_of(&self, users: &[u32], mut f: impl FnMut(Option<&[u8]>)) -> Result<()> {
        /// Beyond this many blocks a seek beats stepping.
        const MAX_STEP: u32 = 8;
        let (Some(&first), Some(&last)) = (users.first(), users.last()) else {
            return Ok(());
        };
        let mut opts = rocksdb::ReadOptions::default();
        // A sync reads each block once (see `render::scan`).
        opts.fill_cache(false);
        if let Some(end) = user_ids::block(last).checked_add(1) {
            opts.set_iterate_upper_bound(user_ids::key(end).to_vec());
        }
        let mut it = self.db.raw_iterator_cf_opt(self.cf(cf::USER_IDS), opts);
        it.seek(user_ids::key(user_ids::block(first)));
        for &u in users {
            let want = user_ids::block(u);
            while let Some(k) = it.key() {
                let at = user_ids::block_of_key(k)?;
                if at >= want {
                    break;
                }
                if want - at > MAX_STEP {
                    it.seek(user_ids::key(want));
                } else {
                    it.next();
                }
            }
            let id = match (it.key(), it.value()) {
                (Some(k), Some(v)) if user_ids::block_of_key(k)? == want => user_ids::find(v, u)?,
                _ => None,
            };
            f(id);
        }
        it.status().map_err(db_err("scan", cf::USER_IDS))
    }

    /// [`Store::for_each_user`] from user `from` on.
    pub(crate) fn for_each_user_from(
        &self,
        from: u32,
        mut f: impl FnMut(u32, &[u8]),
    ) -> Result<()> {
        let mut opts = rocksdb::ReadOptions::default();
        opts.fill_cache(false);
        let mut it = self.db.raw_iterator_cf_opt(self.cf(cf::USER_IDS), opts);
        it.seek(user_ids::key(user_ids::block(from)));
        while let Some(v) = it.value() {
            user_ids::for_each(v, |idx, id| {
                if idx >= from {
                    f(idx, id);
                }
            })?;
            it.next();
        }
        it.status().map_err(db_err("scan", cf::USER_IDS))
    }

    /// Calls `f(user, value)` for every user holding a current value of
    /// `attr`, in index order, stopping at `f`'s first error (building an
    /// identity index; a checking receiver's expected membership).
    pub fn for_each_value(
        &self,
        attr: u32,
        mut f: impl FnMut(u32, ValueRef<'_>) -> Result<()>,
    ) -> Result<()> {
        let prefix = keys::attr(attr);
        let mut it = self.db.raw_iterator_cf(self.cf(cf::ATTR_VALUES));
        it.seek(prefix);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(&prefix) {
                break;
            }
            if let Some(user) = keys::read_u32(&k[prefix.len()..]) {
                f(user, ValueRef::decode(v)?)?;
            }
            it.next();
        }
        it.status().map_err(db_err("scan", cf::ATTR_VALUES))
    }

    /// The user index of a distinct id: a binary search in the persisted
    /// fingerprint table (rebuilt first if stale), verified against `users`.
    pub fn user_index(&self, distinct_id: &str) -> Result<Option<u32>> {
        let fp = Fingerprint::of(distinct_id.as_bytes());
        let users = self.counters().user_count;
        let found = match fingerprints::find_in_file(&fingerprints::table_path(self), fp, users) {
            Some(found) => found,
            None => self.fingerprints()?.lookup(fp),
        };
        self.verified(found, distinct_id)
    }

    /// Brings the persisted fingerprint table up to date (rebuilding its
    /// tail from `user_ids` if imports left it behind) and returns how many
    /// users it covers. A current file is only read for its header.
    pub fn refresh_fingerprints(&self) -> Result<u32> {
        fingerprints::refresh(self)
    }

    /// What RocksDB holds in memory now, by part, summed over the column
    /// families (they share one block cache). For `/metrics`: a resident
    /// set that grows while these stay flat is the allocator's, not the
    /// store's.
    pub fn memory(&self) -> [(&'static str, u64); 4] {
        let of = |cf_name: &'static str, prop: &str| {
            self.db
                .property_int_value_cf(self.cf(cf_name), prop)
                .ok()
                .flatten()
                .unwrap_or(0)
        };
        let sum = |prop: &str| cf::ALL.iter().map(|n| of(n, prop)).sum::<u64>();
        [
            // Index and filter blocks of open files, outside the cache.
            ("table_readers", sum("rocksdb.estimate-table-readers-mem")),
            ("memtables", sum("rocksdb.size-all-mem-tables")),
            ("block_cache", of(cf::META, "rocksdb.block-cache-usage")),
            (
                "block_cache_pinned",
                of(cf::META, "rocksdb.block-cache-pinned-usage"),
            ),
        ]
    }

    /// Waits (at most `max`) until RocksDB runs no flush or compaction, and
    /// returns how long that took: benchmarks measure the steady state
    /// rather than the minutes after a bulk load.
    pub fn wait_for_background_work(&self, max: std::time::Duration) -> std::time::Duration {
        let started = std::time::Instant::now();
        let busy = |name: &str| {
            self.db
                .property_int_value(name)
                .ok()
                .flatten()
                .is_some_and(|n| n > 0)
        };
        let mut quiet = 0;
        while started.elapsed() < max && quiet < 3 {
            if busy("rocksdb.num-running-compactions") || busy("rocksdb.num-running-flushes") {
                quiet = 0;
            } else {
                quiet += 1;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        started.elapsed()
    }

    /// The persisted fingerprint table, brought up to date and opened for
    /// many lookups with [`Store::find_user_with`].
    pub fn fingerprint_reader(&self) -> Result<fingerprints::TableReader> {
        let path = fingerprints::table_path(self);
        let covers = self.refresh_fingerprints()?;
        if let Some(reader) = fingerprints::TableReader::open(&path, covers) {
            return Ok(reader);
        }
        // Its header was fine but its body is not (damaged on disk): a load
        // rebuilds a file it cannot read from `user_ids`.
        tracing::warn!(path = %path.display(), "the fingerprint table file is damaged; rebuilding it");
        let covers = self.fingerprints()?.covers();
        fingerprints::TableReader::open(&path, covers).ok_or(Error::Corrupt {
            what: "fingerprint table",
            reason: format!("the table file does not cover {covers} users"),
        })
    }

    /// The user index of a distinct id among the users `reader` covers,
    /// verified against `users`.
    pub fn find_user_with(
        &self,
        reader: &fingerprints::TableReader,
        distinct_id: &str,
    ) -> Result<Option<u32>> {
        if reader.covers() == 0 {
            return Ok(None);
        }
        let found = reader
            .find(Fingerprint::of(distinct_id.as_bytes()))
            .ok_or(Error::Corrupt {
                what: "fingerprint table",
                reason: "a block of the table file cannot be read".into(),
            })?;
        self.verified(found, distinct_id)
    }

    /// `found` if that user's distinct id really is `distinct_id` (a
    /// fingerprint match is checked against `users`).
    fn verified(&self, found: Option<u32>, distinct_id: &str) -> Result<Option<u32>> {
        let Some(idx) = found else {
            return Ok(None);
        };
        let same = self.with_distinct_id(idx, |id| id == Some(distinct_id.as_bytes()))?;
        Ok(same.then_some(idx))
    }

    /// Calls `f(i, value)` with the current value of each of `keys`
    /// (`attr_values` keys, sorted), in order. Read in batches of
    /// [`MULTI_GET_CHUNK`]: every value a `MultiGet` returns pins its data
    /// block until dropped, outside the block cache's bound, and one batch
    /// of a run's users held ~100 MB of blocks at once (a 1M-row update of
    /// random users of a 10M-user store, heaptrack).
    pub(crate) fn each_value<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        mut f: impl FnMut(usize, Option<&[u8]>) -> Result<()>,
    ) -> Result<()> {
        let cf = self.cf(cf::ATTR_VALUES);
        for (c, chunk) in keys.chunks(MULTI_GET_CHUNK).enumerate() {
            let got = self.db.batched_multi_get_cf(cf, chunk.iter(), true);
            for (j, value) in got.into_iter().enumerate() {
                let value = value.map_err(db_err("multi_get", cf::ATTR_VALUES))?;
                f(c * MULTI_GET_CHUNK + j, value.as_deref())?;
            }
        }
        Ok(())
    }

    /// The current value of an attribute for a user.
    pub fn attr_value(&self, attr: u32, user: u32) -> Result<Option<Value>> {
        let raw = self
            .db
            .get_pinned_cf(self.cf(cf::ATTR_VALUES), keys::attr_user(attr, user))
            .map_err(db_err("get", cf::ATTR_VALUES))?;
        raw.map(|b| ValueRef::decode(&b).map(|v| v.to_value()))
            .transpose()
    }

    /// The value an attribute had for a user once write `seq` was committed:
    /// the current value when no later write touched it, else what the first
    /// later write replaced (kept in `attr_history`).
    pub fn attr_value_as_of(&self, attr: u32, user: u32, seq: u32) -> Result<Option<Value>> {
        if let Some(cur) = self.attr_value_raw(attr, user)? {
            let v = ValueRef::decode(&cur)?;
            if v.seq <= seq {
                return Ok(Some(v.to_value()));
            }
        }
        let mut it = self.db.raw_iterator_cf(self.cf(cf::ATTR_HISTORY));
        let old = replaced_after(&mut it, attr, user, seq)?.map(|r| r.to_value());
        it.status().map_err(db_err("seek", cf::ATTR_HISTORY))?;
        Ok(old)
    }

    fn attr_value_raw(&self, attr: u32, user: u32) -> Result<Option<Vec<u8>>> {
        self.db
            .get_cf(self.cf(cf::ATTR_VALUES), keys::attr_user(attr, user))
            .map_err(db_err("get", cf::ATTR_VALUES))
    }

    /// Starts an import; see [`ImportTxn`].
    pub fn begin_import(&self) -> Result<ImportTxn<'_>> {
        ImportTxn::begin(self, false)
    }

    /// Starts a small transaction: every write held in memory and committed
    /// as one atomic batch (real-time requests; see [`ImportTxn`]).
    pub fn begin_small(&self) -> Result<ImportTxn<'_>> {
        ImportTxn::begin(self, true)
    }

    /// Lowers the memtables' budget and the block cache to a bulk
    /// import's ([`IMPORT_WRITE_BUFFERS_BYTES`], [`IMPORT_BLOCK_CACHE_BYTES`]),
    /// or puts both back.
    pub(crate) fn set_import_memory(&self, importing: bool) {
        let (buffers, cache) = if importing {
            (IMPORT_WRITE_BUFFERS_BYTES, IMPORT_BLOCK_CACHE_BYTES)
        } else {
            (WRITE_BUFFERS_BYTES, BLOCK_CACHE_BYTES)
        };
        self.write_buffers.set_buffer_size(buffers);
        // A clone shares the cache: `set_capacity` takes `&mut` only as the
        // binding's habit, the C call resizes the one cache.
        self.cache.clone().set_capacity(cache);
        self.cache_capacity
            .store(cache, std::sync::atomic::Ordering::Relaxed);
    }

    /// The memtables' budget and the block cache's capacity now.
    pub fn memory_budget(&self) -> MemoryBudget {
        MemoryBudget {
            write_buffers: self.write_buffers.get_buffer_size(),
            block_cache: self
                .cache_capacity
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Loads the interner's fingerprint table, rebuilding what is stale.
    pub fn fingerprints(&self) -> Result<FingerprintTable> {
        fingerprints::load(self)
    }
}

/// With `it` on `attr_history`: the value user `user` had for `attr` once
/// write `seq` was committed, given that a later write replaced it — what
/// the first write after `seq` logged. `None` when nothing existed at
/// `seq` (that value was itself written after `seq`: a first write) or no
/// later write is logged. The caller checks the iterator's status.
pub(crate) fn replaced_after<'i>(
    it: &'i mut rocksdb::DBRawIterator<'_>,
    attr: u32,
    user: u32,
    seq: u32,
) -> Result<Option<ValueRef<'i>>> {
    it.seek(keys::attr_user_seq(attr, user, seq.saturating_add(1)));
    match (it.key(), it.value()) {
        (Some(k), Some(v)) if k.starts_with(&keys::attr_user(attr, user)) => {
            Ok(Some(ValueRef::decode(v)?).filter(|r| r.seq <= seq))
        }
        _ => Ok(None),
    }
}

/// The store's error for RocksDB's failure to take the `LOCK` file, if
/// that is what `e` is. RocksDB remembers the files this process locked
/// and says so ("lock hold by current process") before it asks the kernel,
/// whose refusal means another process.
fn lock_error(e: &rocksdb::Error, dir: &Path) -> Option<Error> {
    let s = e.to_string();
    if !s.contains("LOCK") {
        return None;
    }
    let path = dir.to_path_buf();
    if s.contains("by current process") {
        Some(Error::OpenHere { path })
    } else if s.contains("lock") || s.contains("Resource temporarily unavailable") {
        Some(Error::Locked { path })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fingerprint match names a user only if the id stored for that
    /// user is the very one asked for (a collision answers "absent").
    #[test]
    fn a_fingerprint_match_is_checked_against_the_stored_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut txn = store.begin_import().unwrap();
        let a = txn.new_user(b"alice").unwrap();
        let b = txn.new_user(b"bob").unwrap();
        txn.commit(None).unwrap();
        assert_eq!(store.verified(Some(a), "alice").unwrap(), Some(a));
        assert_eq!(store.verified(Some(b), "bob").unwrap(), Some(b));
        assert_eq!(store.verified(Some(a), "bob").unwrap(), None);
        assert_eq!(store.verified(Some(b), "bobby").unwrap(), None);
        assert_eq!(store.verified(Some(b), "bo").unwrap(), None);
        assert_eq!(store.verified(Some(a + 1_000_000), "alice").unwrap(), None);
        assert_eq!(store.verified(None, "alice").unwrap(), None);
        assert_eq!(store.distinct_id(b).unwrap().as_deref(), Some("bob"));
    }

    /// Values read in several `MultiGet` chunks come back in key order,
    /// each with its own index, absent ones as `None`.
    #[test]
    fn values_are_read_in_chunks_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut txn = store.begin_import().unwrap();
        let plan = txn.attr("plan");
        let n = 2 * MULTI_GET_CHUNK as u32 + 100;
        let mut changes = Vec::new();
        for u in 0..n {
            txn.new_user(format!("u{u}").as_bytes()).unwrap();
            if u % 3 != 0 {
                changes.push(AttrChange {
                    attr: plan,
                    user: u,
                    value: Some(Value::Str(format!("p{u}"))),
                });
            }
        }
        txn.set_attrs(&changes).unwrap();
        txn.commit(None).unwrap();
        let keys: Vec<[u8; 8]> = (0..n).map(|u| keys::attr_user(plan, u)).collect();
        let mut seen = Vec::new();
        store
            .each_value(&keys, |i, v| {
                let v = v
                    .map(|b| ValueRef::decode(b).map(|r| r.to_value()))
                    .transpose()?;
                seen.push((i, v));
                Ok(())
            })
            .unwrap();
        assert_eq!(seen.len(), n as usize);
        for (i, v) in seen {
            let want = (i % 3 != 0).then(|| Value::Str(format!("p{i}")));
            assert_eq!(v, want, "user {i}");
        }
    }
}

//! Where an import's staged writes go, and on which thread.
//!
//! An import stages three kinds of writes before its commit: batches of
//! attribute writes (RocksDB without the WAL), the ids of the users it
//! creates (SST files, ingested at commit), and first values (SST files per
//! attribute, ingested at commit or when the import needs to read one
//! back). Writing them took half of a first load's
//! import thread (the memtable inserts of a batch and the SST writer's
//! blocks), while the other core idled; so a bulk import hands them to a
//! writer thread and goes on resolving and encoding the next batch. One job
//! is in flight at most: the next waits for it, and so does anything that
//! reads what it writes (an old value, the undo log, the commit). Without a
//! thread (small transactions, tests) the same writer runs inline. Within
//! a job the files are written on two threads: the ids and some
//! attributes' lanes on the writer's, the other attributes' on a scoped
//! helper ([`share_out`]); RocksDB's SST writer, at about 150 ns a key,
//! made the writer the stage the parser and the importing thread waited
//! for (10M rows × 5 attributes, ten alternating pairs: mean 9.37 →
//! 8.49 s, faster in nine).
//!
//! Values written as SST files skip the memtable, its flush and the
//! compaction that follows (a first load's files are ingested straight into
//! the last level). They are only ever first values. Each attribute has two
//! lanes, the users from before the import and the users it creates, whose
//! keys never meet: a lane writes its file directly while its users ascend
//! (a first load, or a `users.csv` in the order a snapshot created its
//! members, sign-ups among them: one lane for both sent every row after
//! the first sign-up to the memtable, 0.23M rows/s instead of 0.81M in
//! `segsync bench`). A lane whose users stop ascending hands its values to
//! an external sort ([`Spill`]: sorted runs, merged into SST files of their
//! own at ingestion) — a users file in an order of its own, which used to
//! go through the memtable (10M rows, 5 attributes, over a snapshot's
//! members: 53.7 s and 476 MB, now 35.6 s and 330 MB). A later change of
//! such a value reads it back, which ingests the files first
//! (`Stager::ingest_values`), so a key is never in a pending file and the
//! memtable at once. A rollback deletes them like any first value: by the
//! undo log for users from before the import, by range for the users it
//! created; its files, runs included, by name.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use crossbeam::channel::{Receiver, Sender};
use rocksdb::{SstFileWriter, WriteBatch};

use super::{cf, db_err, keys, user_ids, Error, Result, Store};

/// Ids of users an import created, in index order from `first`.
#[derive(Default)]
pub(crate) struct NewIds {
    first: u32,
    bytes: Vec<u8>,
    ends: Vec<u32>,
}

impl NewIds {
    /// Appends the id of user `idx` (the next index after the last one).
    pub(crate) fn push(&mut self, idx: u32, id: &[u8]) {
        if self.ends.is_empty() {
            self.first = idx;
        }
        self.bytes.extend_from_slice(id);
        self.ends.push(self.bytes.len() as u32);
    }

    /// Bytes held (the import hands them off past a few MB).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.len()
    }
}

/// First values of one attribute, users ascending (each after every user
/// of that attribute's pending file): stored values (`seq ++ body`) laid
/// end to end.
#[derive(Default)]
pub(crate) struct NewValues {
    users: Vec<u32>,
    ends: Vec<u32>,
    bytes: Vec<u8>,
}

impl NewValues {
    /// Appends the stored value of `user`, `seq ++ body`.
    pub(crate) fn push(&mut self, user: u32, seq: u32, body: &[u8]) {
        self.users.push(user);
        self.bytes.extend_from_slice(&seq.to_be_bytes());
        self.bytes.extend_from_slice(body);
        self.ends.push(self.bytes.len() as u32);
    }

    /// Each user with its stored value, in the order pushed.
    fn iter(&self) -> impl Iterator<Item = (u32, &[u8])> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().map(|&e| e as usize));
        self.users
            .iter()
            .zip(starts.zip(&self.ends))
            .map(|(&u, (start, &end))| (u, &self.bytes[start..end as usize]))
    }

    /// Appends a stored value as it is.
    fn push_stored(&mut self, user: u32, value: &[u8]) {
        self.users.push(user);
        self.bytes.extend_from_slice(value);
        self.ends.push(self.bytes.len() as u32);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// One hand-off: a batch of attribute writes, the ids created meanwhile and
/// first values per attribute.
pub(crate) struct Job {
    pub(crate) batch: WriteBatch,
    pub(crate) ids: NewIds,
    pub(crate) values: Vec<(u32, NewValues)>,
}

/// What [`Stager::finish`] leaves to ingest.
#[derive(Default)]
pub(crate) struct Finished {
    /// SST files of new users, for `users`.
    pub(crate) users: Vec<PathBuf>,
    /// SST files of first values, for `attr_values`.
    pub(crate) values: Vec<PathBuf>,
    /// SST files of the sorted out-of-order first values, for
    /// `attr_values` too, but ingested after `values`: they interleave with
    /// those files' ranges (never with their keys), so together they would
    /// all land in level 0.
    pub(crate) spilled: Vec<PathBuf>,
}

/// Bytes of out-of-order first values held in memory before they are
/// sorted and written to a run file.
const SPILL_BYTES: usize = 32 << 20;

/// First values of lanes whose users stopped ascending (a users file in an
/// order of its own, not the order the users were created in; see
/// [`Lane`]), which the memtable used to take at a quarter of the files'
/// speed and with twice the memory. They are held, sorted and written to
/// run files (`<prefix>-<n>.run`) past [`SPILL_BYTES`], and merged into
/// SST files of ascending keys when the values are ingested: an external
/// sort. A key is here at most once per ingest (a later change of the
/// value reads it back, which ingests first).
#[derive(Default)]
struct Spill {
    /// Key (as a big-endian number: the same order), and the value's span
    /// in `bytes`.
    entries: Vec<(u64, u32, u32)>,
    bytes: Vec<u8>,
    /// Sorted runs written so far.
    runs: Vec<Run>,
    /// The largest key of the runs, and whether each run's keys all lie
    /// above the run before it's (a file already in user order): then the
    /// merge only concatenates them.
    last_key: Option<u64>,
    runs_ascend: bool,
}

impl Spill {
    fn push(&mut self, key: [u8; 8], value: &[u8]) {
        let start = self.bytes.len() as u32;
        self.bytes.extend_from_slice(value);
        self.entries
            .push((u64::from_be_bytes(key), start, self.bytes.len() as u32));
    }

    /// Takes over what `other` holds (it has written no run).
    fn absorb(&mut self, other: Spill) {
        if other.entries.is_empty() {
            return;
        }
        let shift = self.bytes.len() as u32;
        self.bytes.extend_from_slice(&other.bytes);
        self.entries.extend(
            other
                .entries
                .iter()
                .map(|&(key, start, end)| (key, start + shift, end + shift)),
        );
    }

    fn held(&self) -> usize {
        self.bytes.len() + self.entries.len() * std::mem::size_of::<(u64, u32, u32)>()
    }

    /// Sorts what is held, noting whether it lies above every run.
    fn sort(&mut self) {
        self.entries.sort_unstable_by_key(|e| e.0);
        if let (Some(first), Some(last)) = (self.entries.first(), self.entries.last()) {
            if self.runs.is_empty() {
                self.runs_ascend = true;
            }
            self.runs_ascend &= self.last_key.is_none_or(|k| first.0 > k);
            self.last_key = Some(last.0);
        }
    }

    fn value(&self, i: usize) -> &[u8] {
        let (_, start, end) = self.entries[i];
        &self.bytes[start as usize..end as usize]
    }

    /// A key near the middle of everything spilled (from the runs' indexes
    /// and every [`RUN_INDEX_EVERY`]th key held), to merge the two halves
    /// apart; `None` when there is nothing to split.
    fn median_key(&self) -> Option<u64> {
        let mut keys: Vec<u64> = self
            .runs
            .iter()
            .flat_map(|r| r.index.iter().map(|e| e.0))
            .chain(self.entries.iter().step_by(RUN_INDEX_EVERY).map(|e| e.0))
            .collect();
        if keys.len() < 2 {
            return None;
        }
        let mid = keys.len() / 2;
        let (_, &mut median, _) = keys.select_nth_unstable(mid);
        // Keys from 0 up: a split at the smallest one leaves a half empty.
        (median > 0).then_some(median)
    }

    /// Merges the spilled keys in `lo..hi` (`hi` `None`: to the end) into
    /// SST files of ascending keys, named by `paths`.
    fn merge_range<'o>(
        &self,
        lo: u64,
        hi: Option<u64>,
        opts: &'o rocksdb::Options,
        paths: &Paths,
    ) -> Result<Vec<PathBuf>> {
        use std::cmp::Reverse;
        let below_hi = |key: u64| hi.is_none_or(|hi| key < hi);
        let mut runs = Vec::with_capacity(self.runs.len());
        for run in &self.runs {
            let at = run.index.partition_point(|e| e.0 < lo).saturating_sub(1);
            let offset = run.index.get(at).map_or(0, |e| e.1);
            runs.push(RunReader::open(&run.path, offset)?);
        }
        let first_held = self.entries.partition_point(|e| e.0 < lo);
        let end_held = match hi {
            Some(hi) => self.entries.partition_point(|e| e.0 < hi),
            None => self.entries.len(),
        };
        let held_key = |i: usize| self.entries[..end_held].get(i).map(|e| e.0);
        // Sources: each run, then what is held (index `runs.len()`). When
        // they ascend one after the other, the heap holds one at a time.
        let held = runs.len();
        let ascend = self.runs_ascend;
        let mut heap = std::collections::BinaryHeap::with_capacity(held + 1);
        let mut next_source = 0usize;
        let mut next_held = first_held;
        let mut out: Option<OpenFile<'o>> = None;
        let mut files = Vec::new();
        loop {
            // Start the next sources: all of them at once, or one by one
            // once the one before has ended.
            while next_source <= held && (!ascend || heap.is_empty()) {
                let src = next_source;
                next_source += 1;
                let first = if src == held {
                    held_key(next_held)
                } else {
                    // From the index entry before `lo`, skip to `lo`.
                    let mut key = runs[src].next()?;
                    while key.is_some_and(|k| k < lo) {
                        key = runs[src].next()?;
                    }
                    key
                };
                if let Some(key) = first.filter(|&k| below_hi(k)) {
                    heap.push(Reverse((key, src)));
                }
            }
            // The smallest key's source is advanced in place: one sift
            // down per value instead of a pop and a push.
            let Some(mut top) = heap.peek_mut() else {
                break;
            };
            let Reverse((key, src)) = *top;
            let mut file = match OpenFile::keep_if_room(out.take(), &mut files)? {
                Some(f) => f,
                None => paths.create(opts, cf::ATTR_VALUES)?,
            };
            let value = if src == held {
                self.value(next_held)
            } else {
                &runs[src].value
            };
            file.put(&key.to_be_bytes(), value, cf::ATTR_VALUES)?;
            out = Some(file);
            let next = if src == held {
                next_held += 1;
                held_key(next_held)
            } else {
                runs[src].next()?
            };
            match next.filter(|&k| below_hi(k)) {
                Some(key) => *top = Reverse((key, src)),
                None => {
                    std::collections::binary_heap::PeekMut::pop(top);
                }
            }
        }
        if let Some(f) = out {
            files.push(f.finish(cf::ATTR_VALUES)?);
        }
        Ok(files)
    }

    /// Sorts what is held and writes it to run file `path`.
    fn write_run(&mut self, path: PathBuf) -> Result<()> {
        use std::io::Write;
        self.sort();
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path).map_err(io)?);
        let mut index = Vec::with_capacity(self.entries.len() / RUN_INDEX_EVERY + 1);
        let mut offset = 0u64;
        for i in 0..self.entries.len() {
            let value = self.value(i);
            let key = self.entries[i].0;
            if i % RUN_INDEX_EVERY == 0 {
                index.push((key, offset));
            }
            out.write_all(&key.to_be_bytes()).map_err(io)?;
            out.write_all(&(value.len() as u32).to_le_bytes())
                .map_err(io)?;
            out.write_all(value).map_err(io)?;
            offset += 12 + value.len() as u64;
        }
        out.flush().map_err(io)?;
        self.entries.clear();
        self.bytes.clear();
        self.runs.push(Run { path, index });
        Ok(())
    }
}

/// Records of a run between two entries of its index (a handful in unit
/// tests, so that their merges start part-way into runs).
#[cfg(not(test))]
const RUN_INDEX_EVERY: usize = 4096;
#[cfg(test)]
const RUN_INDEX_EVERY: usize = 3;

/// A sorted run file, with the key and byte offset of every
/// [`RUN_INDEX_EVERY`]th record: the merge starts a key range part-way in.
struct Run {
    path: PathBuf,
    index: Vec<(u64, u64)>,
}

/// A run file read back in order.
struct RunReader {
    path: PathBuf,
    input: std::io::BufReader<std::fs::File>,
    /// The current record's value.
    value: Vec<u8>,
}

impl RunReader {
    /// Opens `path` at byte `offset` (the start of a record).
    fn open(path: &std::path::Path, offset: u64) -> Result<RunReader> {
        use std::io::Seek;
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        file.seek(std::io::SeekFrom::Start(offset)).map_err(io)?;
        Ok(RunReader {
            path: path.to_path_buf(),
            input: std::io::BufReader::with_capacity(1 << 16, file),
            value: Vec::new(),
        })
    }

    /// The next record's key (its value in `self.value`); `None` at the end.
    fn next(&mut self) -> Result<Option<u64>> {
        use std::io::Read;
        let io = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        let mut key = [0u8; 8];
        match self.input.read_exact(&mut key) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(io(e)),
        }
        let mut len = [0u8; 4];
        self.input.read_exact(&mut len).map_err(io)?;
        self.value.resize(u32::from_le_bytes(len) as usize, 0);
        self.input.read_exact(&mut self.value).map_err(io)?;
        Ok(Some(u64::from_be_bytes(key)))
    }
}

/// Keys an SST file takes before the writer starts another. RocksDB's
/// writer keeps 8 bytes per key for the file's filter until it finishes
/// the file: one file per family of a 10M-user first load held 160 MB of
/// them.
const FILE_KEYS: usize = 1 << 20;

/// An SST file being written.
struct OpenFile<'s> {
    writer: SstFileWriter<'s>,
    path: PathBuf,
    keys: usize,
}

impl<'s> OpenFile<'s> {
    fn create(opts: &'s rocksdb::Options, path: PathBuf, family: &'static str) -> Result<Self> {
        let writer = SstFileWriter::create(opts);
        writer.open(&path).map_err(db_err("sst open", family))?;
        Ok(OpenFile {
            writer,
            path,
            keys: 0,
        })
    }

    /// Whether the file takes another key ([`FILE_KEYS`]).
    fn has_room(&self) -> bool {
        self.keys < FILE_KEYS
    }

    /// `file` while it has room for another key; a full one is finished
    /// into `done`, and `None` says to open the next.
    fn keep_if_room(file: Option<Self>, done: &mut Vec<PathBuf>) -> Result<Option<Self>> {
        match file {
            Some(f) if f.has_room() => Ok(Some(f)),
            Some(f) => {
                done.push(f.finish(cf::ATTR_VALUES)?);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// A merge operand (`user_ids` only: a run appended to a block).
    fn merge(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.keys += 1;
        self.writer
            .merge(key, value)
            .map_err(db_err("sst merge", cf::USER_IDS))
    }

    fn put(&mut self, key: &[u8], value: &[u8], family: &'static str) -> Result<()> {
        self.keys += 1;
        self.writer
            .put(key, value)
            .map_err(db_err("sst put", family))
    }

    fn finish(mut self, family: &'static str) -> Result<PathBuf> {
        self.writer.finish().map_err(db_err("sst finish", family))?;
        Ok(self.path)
    }
}

/// Values a lane keeps a copy of, so that it can still hand them to the
/// sort when its users turn out of order (far below [`FILE_KEYS`]: the copy
/// covers the lane's one open file).
const LANE_COPY_VALUES: usize = 1 << 16;

/// One attribute's first values for one lane: written to its open file
/// while users ascend; once they do not, sorted through the [`Spill`].
#[derive(Default)]
struct Lane<'s> {
    file: Option<OpenFile<'s>>,
    last: Option<u32>,
    /// The values written so far, while there are few (a users file out of
    /// order shows it within its first batches): handed to the sort, and
    /// the file dropped, when the users stop ascending. Past
    /// [`LANE_COPY_VALUES`] the lane keeps its files, and what comes out of
    /// order after goes to the sort alone (its files then overlap the
    /// lane's, which RocksDB compacts later).
    copy: Option<NewValues>,
    /// Everything of this lane goes to the sort.
    sorting: bool,
}

/// Writes jobs: the batch without the WAL, ids and first values into SST
/// files (`<prefix>-<n>.sst`) of at most [`FILE_KEYS`] keys.
pub(crate) struct Writer<'s> {
    store: &'s Store,
    /// Names of the files it writes.
    paths: Paths,
    /// The first user the import created: the lanes' boundary.
    first_new_user: u32,
    /// The new users' ids, in blocks.
    ids: IdFiles<'s>,
    /// First values being written, by attribute and lane (whether the
    /// users are ones the import created).
    values: Vec<((u32, bool), Lane<'s>)>,
    /// Closed files not yet ingested.
    done: Finished,
    /// Out-of-order first values being sorted.
    spill: Spill,
    /// Bytes held before a run is written ([`SPILL_BYTES`]; less in tests).
    spill_bytes: usize,
    /// Values that went through the sort.
    sorted: u64,
}

impl<'s> Writer<'s> {
    fn new(store: &'s Store, prefix: PathBuf, first_new_user: u32) -> Writer<'s> {
        Writer {
            store,
            paths: Paths {
                prefix,
                next: AtomicU32::new(0),
            },
            first_new_user,
            ids: IdFiles::default(),
            values: Vec::new(),
            done: Finished::default(),
            spill: Spill::default(),
            spill_bytes: SPILL_BYTES,
            sorted: 0,
        }
    }

    fn write(&mut self, job: Job) -> Result<()> {
        let Job { batch, ids, values } = job;
        // Both lanes of every attribute in the job exist before the work
        // is shared out (a lane never used holds no file).
        for (attr, _) in &values {
            self.lane((*attr, false));
            self.lane((*attr, true));
        }
        let helper_attrs = share_out(ids.ends.len(), &values);
        let Writer {
            store,
            paths,
            first_new_user,
            ids: id_files,
            values: lanes,
            done,
            spill,
            spill_bytes,
            sorted,
        } = self;
        let store: &'s Store = store;
        let (theirs, mine): (Vec<_>, Vec<_>) = lanes
            .iter_mut()
            .partition(|((attr, _), _)| helper_attrs.contains(attr));
        let (their_runs, my_runs): (Vec<_>, Vec<_>) = values
            .iter()
            .partition(|(attr, _)| helper_attrs.contains(attr));
        let paths = &*paths;
        let share = |lanes, runs| Share {
            lanes,
            runs,
            first_new_user: *first_new_user,
            paths,
            opts: store.values_sst_options(),
            out: Spill::default(),
            done: Vec::new(),
            sorted: 0,
        };
        let (mine, theirs) = (share(mine, my_runs), share(theirs, their_runs));
        // A job's first values are most of a bulk load's SST writes (about
        // 150 ns a key in RocksDB's writer), and the writer was the stage
        // the other two waited for: with ids and values, or values of
        // several attributes, in a job, part of them go to a second thread.
        let (mine, theirs) = std::thread::scope(|scope| -> Result<_> {
            let helper = (!theirs.runs.is_empty()).then(|| scope.spawn(move || theirs.write()));
            let ids_written = id_files.write(store, paths, &mut done.users, &ids);
            let mine = mine.write();
            let theirs = helper.map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            });
            ids_written?;
            Ok((mine?, theirs.transpose()?))
        })?;
        for share in std::iter::once(mine).chain(theirs) {
            done.values.extend(share.done);
            *sorted += share.sorted;
            spill.absorb(share.out);
        }
        if spill.held() >= *spill_bytes {
            spill.write_run(paths.next("run"))?;
        }
        if !batch.is_empty() {
            let mut wo = rocksdb::WriteOptions::default();
            wo.disable_wal(true);
            store
                .db()
                .write_opt(batch, &wo)
                .map_err(db_err("write", "*"))?;
        }
        Ok(())
    }

    /// Adds `lane` (attribute, whether its users are new) to `values`
    /// unless it is there.
    fn lane(&mut self, lane: (u32, bool)) {
        if self.values.iter().any(|(l, _)| *l == lane) {
            return;
        }
        let fresh = Lane {
            copy: Some(NewValues::default()),
            ..Lane::default()
        };
        self.values.push((lane, fresh));
    }

    /// Closes the open value files (the lanes start again after).
    fn close_values(&mut self) -> Result<()> {
        for (_, lane) in std::mem::take(&mut self.values) {
            if let Some(file) = lane.file {
                self.done.values.push(file.finish(cf::ATTR_VALUES)?);
            }
        }
        Ok(())
    }

    /// Merges the spilled values (the runs and what is held) into SST
    /// files of ascending keys, and removes the runs. The keys are split at
    /// a median taken from the runs' indexes and the two halves merged on
    /// two threads: the merge runs after the parsing ended, with a core
    /// otherwise idle (10M shuffled rows × 5 attributes: a 10.5 s tail on
    /// one core).
    fn merge_spill(&mut self) -> Result<()> {
        if self.spill.entries.is_empty() && self.spill.runs.is_empty() {
            return Ok(());
        }
        self.spill.sort();
        let split = self.spill.median_key();
        let opts = self.store.values_sst_options();
        let (spill, paths) = (&self.spill, &self.paths);
        let (lower, upper) = match split {
            Some(split) => std::thread::scope(|scope| {
                let upper = scope.spawn(move || spill.merge_range(split, None, opts, paths));
                let lower = spill.merge_range(0, Some(split), opts, paths);
                let upper = upper
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                (lower, upper)
            }),
            None => (spill.merge_range(0, None, opts, paths), Ok(Vec::new())),
        };
        self.done.spilled.extend(lower?);
        self.done.spilled.extend(upper?);
        for run in std::mem::take(&mut self.spill.runs) {
            let _ = std::fs::remove_file(run.path);
        }
        self.spill = Spill::default();
        Ok(())
    }

    /// Ingests every value file written so far into `attr_values`.
    fn ingest_values(&mut self) -> Result<()> {
        self.close_values()?;
        self.merge_spill()?;
        // The files may hold first values of users from before the import,
        // logged for rollback in batches written without the WAL: those
        // logs must be on disk before the values are.
        self.store.flush_staged()?;
        let files = std::mem::take(&mut self.done.values);
        let spilled = std::mem::take(&mut self.done.spilled);
        ingest_values(self.store, &files, &spilled)
    }

    /// Closes every file; what there is to ingest.
    fn finish(&mut self) -> Result<Finished> {
        self.close_values()?;
        self.merge_spill()?;
        self.ids
            .write_block(self.store, &self.paths, &mut self.done.users)?;
        if let Some(file) = self.ids.file.take() {
            self.done.users.push(file.finish(cf::USER_IDS)?);
        }
        Ok(std::mem::take(&mut self.done))
    }

    /// Drops the open files unfinished (a rollback removes them).
    fn abandon(&mut self) {
        self.ids.file = None;
        self.ids.blocks.clear();
        self.values.clear();
        self.spill = Spill::default();
    }

    /// Carries out `msg`, inline or on the writer thread alike.
    fn handle(&mut self, msg: Msg) -> Result<Finished> {
        match msg {
            Msg::Write(job) => self.write(job).map(|()| Finished::default()),
            Msg::IngestValues => self.ingest_values().map(|()| Finished::default()),
            Msg::Finish => self.finish(),
        }
    }
}

/// Names an import's files `<prefix>-<n>.<ext>`, numbered from either of
/// the writer's threads.
struct Paths {
    /// `<data dir>/import-<seq>`.
    prefix: PathBuf,
    next: AtomicU32,
}

impl Paths {
    fn next(&self, ext: &str) -> PathBuf {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut name = self.prefix.file_name().unwrap_or_default().to_os_string();
        name.push(format!("-{n}.{ext}"));
        self.prefix.with_file_name(name)
    }

    fn create<'o>(&self, opts: &'o rocksdb::Options, family: &'static str) -> Result<OpenFile<'o>> {
        OpenFile::create(opts, self.next("sst"), family)
    }
    /// Whether any file was named yet (a writer that has written nothing).
    fn none_named(&self) -> bool {
        self.next.load(Ordering::Relaxed) == 0
    }
}

/// Which attributes of a job go to the second thread: with the job's ids
/// counted as one more share (they stay on the writer's own thread), the
/// attributes are dealt largest first to the lighter side. Empty when there
/// is nothing to share (one attribute and no ids).
fn share_out(ids: usize, values: &[(u32, NewValues)]) -> Vec<u32> {
    let mut by_size: Vec<(usize, u32)> = values
        .iter()
        .map(|(attr, run)| (run.users.len(), *attr))
        .collect();
    by_size.sort_unstable_by(|a, b| b.cmp(a));
    let (mut mine, mut theirs) = (ids, 0usize);
    let mut helper = Vec::new();
    for (n, attr) in by_size {
        if theirs < mine {
            theirs += n;
            helper.push(attr);
        } else {
            mine += n;
        }
    }
    helper
}

/// One thread's share of a job's first values: its lanes and their runs.
struct Share<'a, 's> {
    lanes: Vec<&'a mut ((u32, bool), Lane<'s>)>,
    runs: Vec<&'a (u32, NewValues)>,
    first_new_user: u32,
    paths: &'a Paths,
    opts: &'s rocksdb::Options,
    /// Values out of order, for the writer's sort.
    out: Spill,
    /// Files finished.
    done: Vec<PathBuf>,
    /// Values that went to the sort.
    sorted: u64,
}

impl<'a, 's: 'a> Share<'a, 's> {
    /// Writes each run into its lanes' files (see [`Lane`]).
    fn write(mut self) -> Result<Self> {
        let runs = std::mem::take(&mut self.runs);
        for &(attr, ref run) in runs {
            // The run's two lanes, found once.
            let find = |lanes: &[&mut ((u32, bool), Lane<'s>)], new: bool| {
                lanes.iter().position(|l| l.0 == (attr, new))
            };
            let lanes = [find(&self.lanes, false), find(&self.lanes, true)];
            for (user, value) in run.iter() {
                let new = user >= self.first_new_user;
                let Some(i) = lanes[usize::from(new)] else {
                    return Err(Error::Corrupt {
                        what: "import",
                        reason: format!("no lane for attribute {attr}"),
                    });
                };
                let l = &mut self.lanes[i].1;
                let key = keys::attr_user(attr, user);
                let out_of_order = l.last.is_some_and(|last| user <= last);
                if out_of_order && !l.sorting {
                    // The sort takes over the lane, with what it wrote if
                    // it still has it all.
                    if let Some(copy) = l.copy.take() {
                        if let Some(file) = l.file.take() {
                            let path = file.path.clone();
                            drop(file);
                            let _ = std::fs::remove_file(path);
                        }
                        l.sorting = true;
                        self.sorted += copy.users.len() as u64;
                        for (u, v) in copy.iter() {
                            self.out.push(keys::attr_user(attr, u), v);
                        }
                    }
                }
                if l.sorting || out_of_order {
                    self.sorted += 1;
                    self.out.push(key, value);
                    continue;
                }
                l.last = Some(user);
                if let Some(copy) = &mut l.copy {
                    if copy.users.len() < LANE_COPY_VALUES {
                        copy.push_stored(user, value);
                    } else {
                        l.copy = None;
                    }
                }
                // The open file stays in place while it has room, rather
                // than moving out and back per value (this loop's own
                // samples in a 5-attribute first load: 9.5 → 3.3 % with the
                // key built whole; the thread's total fell only 3 %, the
                // value's first read moving into the SST writer's copy).
                if !l.file.as_ref().is_some_and(OpenFile::has_room) {
                    let kept = OpenFile::keep_if_room(l.file.take(), &mut self.done)?;
                    l.file = Some(match kept {
                        Some(f) => f,
                        None => self.paths.create(self.opts, cf::ATTR_VALUES)?,
                    });
                }
                if let Some(file) = &mut l.file {
                    file.put(&key, value, cf::ATTR_VALUES)?;
                }
            }
        }
        Ok(self)
    }
}

/// The ids of the users an import creates, gathered into blocks and
/// written to SST files for `user_ids`.
#[derive(Default)]
struct IdFiles<'s> {
    /// The ids of one block's users not yet written (a job may end inside
    /// a block).
    blocks: user_ids::Blocks,
    file: Option<OpenFile<'s>>,
}

impl<'s> IdFiles<'s> {
    /// Gathers a job's new ids, writing each block as it ends; full files
    /// go to `done`.
    fn write(
        &mut self,
        store: &'s Store,
        paths: &Paths,
        done: &mut Vec<PathBuf>,
        ids: &NewIds,
    ) -> Result<()> {
        let mut start = 0usize;
        for (i, &end) in ids.ends.iter().enumerate() {
            let idx = ids.first + i as u32;
            if self.blocks.ends_block(idx) {
                self.write_block(store, paths, done)?;
            }
            self.blocks.push(idx, &ids.bytes[start..end as usize]);
            start = end as usize;
        }
        Ok(())
    }

    /// Writes the ids gathered for one block: a put when they start it,
    /// else a merge operand appending them to the users it has.
    fn write_block(
        &mut self,
        store: &'s Store,
        paths: &Paths,
        done: &mut Vec<PathBuf>,
    ) -> Result<()> {
        if self.blocks.is_empty() {
            return Ok(());
        }
        if self.file.is_none() {
            self.file = Some(paths.create(store.sst_options(), cf::USER_IDS)?);
        }
        let (Some(f), Some((block, value, starts))) = (self.file.as_mut(), self.blocks.finish())
        else {
            return Ok(());
        };
        let key = user_ids::key(block);
        if starts {
            f.put(&key, value, cf::USER_IDS)?;
        } else {
            f.merge(&key, value)?;
        }
        if !f.has_room() {
            if let Some(full) = self.file.take() {
                done.push(full.finish(cf::USER_IDS)?);
            }
        }
        Ok(())
    }
}

/// Moves first values into `attr_values`: the lanes' files, then the
/// sort's (see [`Finished::spilled`] for why apart).
pub(crate) fn ingest_values(store: &Store, files: &[PathBuf], spilled: &[PathBuf]) -> Result<()> {
    ingest(store, cf::ATTR_VALUES, files)?;
    ingest(store, cf::ATTR_VALUES, spilled)
}

/// Moves SST files into family `name` (and removes them).
pub(crate) fn ingest(store: &Store, name: &'static str, files: &[PathBuf]) -> Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    let mut io = rocksdb::IngestExternalFileOptions::default();
    io.set_move_files(true);
    store
        .db()
        .ingest_external_file_cf_opts(store.cf(name), &io, files.to_vec())
        .map_err(db_err("ingest", name))?;
    for f in files {
        let _ = std::fs::remove_file(f);
    }
    Ok(())
}

pub(crate) enum Msg {
    Write(Job),
    IngestValues,
    Finish,
}

/// An import's writer, inline or on a thread; see the module docs.
pub(crate) enum Stager<'s> {
    Inline(Box<Writer<'s>>),
    Thread {
        jobs: Option<Sender<Msg>>,
        done: Receiver<Result<Finished>>,
        in_flight: bool,
    },
}

fn thread_gone() -> Error {
    Error::Corrupt {
        what: "import",
        reason: "its writer thread ended early".into(),
    }
}

impl<'s> Stager<'s> {
    /// A writer that runs on the caller's thread; its SST files are named
    /// `<prefix>-<n>.sst`.
    pub(crate) fn inline(store: &'s Store, prefix: PathBuf, first_new_user: u32) -> Stager<'s> {
        Stager::Inline(Box::new(Writer::new(store, prefix, first_new_user)))
    }

    /// Moves an inline writer that has written nothing yet onto a thread of
    /// `scope`; any other stager stays as it is.
    pub(crate) fn spawn_on<'scope>(&mut self, scope: &'scope std::thread::Scope<'scope, '_>)
    where
        's: 'scope,
    {
        let Stager::Inline(w) = self else { return };
        if !w.paths.none_named() {
            return;
        }
        let mut writer = Writer::new(w.store, w.paths.prefix.clone(), w.first_new_user);
        writer.spill_bytes = w.spill_bytes;
        let (jobs, rx) = crossbeam::channel::bounded::<Msg>(1);
        let (done_tx, done) = crossbeam::channel::bounded(1);
        scope.spawn(move || {
            for msg in rx {
                if done_tx.send(writer.handle(msg)).is_err() {
                    break;
                }
            }
        });
        *self = Stager::Thread {
            jobs: Some(jobs),
            done,
            in_flight: false,
        };
    }

    /// Hands `msg` over once the message before it is done: inline, it is
    /// done at once, with its result; on the thread, it is in flight, and
    /// [`Stager::settle`] gives its result.
    fn send(&mut self, msg: Msg) -> Result<Finished> {
        self.settle()?;
        match self {
            Stager::Inline(w) => w.handle(msg),
            Stager::Thread {
                jobs, in_flight, ..
            } => {
                let jobs = jobs.as_ref().ok_or_else(thread_gone)?;
                jobs.send(msg).map_err(|_| thread_gone())?;
                *in_flight = true;
                Ok(Finished::default())
            }
        }
    }

    /// Makes the writer (not yet on its thread) write a sorted run past
    /// `bytes` held, so that tests reach the merge of several runs.
    #[cfg(test)]
    pub(crate) fn set_spill_bytes(&mut self, bytes: usize) {
        if let Stager::Inline(w) = self {
            w.spill_bytes = bytes;
        }
    }

    /// Values the inline writer sent through the sort.
    #[cfg(test)]
    pub(crate) fn sorted(&self) -> u64 {
        match self {
            Stager::Inline(w) => w.sorted,
            Stager::Thread { .. } => 0,
        }
    }

    /// Writes `job` (on the thread: once the job before it is written).
    pub(crate) fn submit(&mut self, job: Job) -> Result<()> {
        self.send(Msg::Write(job)).map(drop)
    }

    /// Waits until every submitted job is written (failing as it failed).
    pub(crate) fn settle(&mut self) -> Result<()> {
        self.wait().map(drop)
    }

    fn wait(&mut self) -> Result<Finished> {
        match self {
            Stager::Thread {
                done, in_flight, ..
            } if *in_flight => {
                *in_flight = false;
                done.recv().map_err(|_| thread_gone())?
            }
            _ => Ok(Finished::default()),
        }
    }

    /// Hands `msg` over and waits for its result.
    fn call(&mut self, msg: Msg) -> Result<Finished> {
        let inline = self.send(msg)?;
        match self {
            Stager::Inline(_) => Ok(inline),
            Stager::Thread { .. } => self.wait(),
        }
    }

    /// Writes what was submitted, then ingests every file of first values
    /// written so far (before the import reads one of them back).
    pub(crate) fn ingest_values(&mut self) -> Result<()> {
        self.call(Msg::IngestValues).map(drop)
    }

    /// Writes what was submitted and closes every file; what there is to
    /// ingest.
    pub(crate) fn finish(&mut self) -> Result<Finished> {
        self.call(Msg::Finish)
    }

    /// Stops writing: waits for the job in flight (whatever its result) and
    /// lets the thread end, so a rollback that follows sees every write and
    /// no write lands after it.
    pub(crate) fn abandon(&mut self) {
        let _ = self.settle();
        match self {
            Stager::Inline(w) => w.abandon(),
            Stager::Thread { jobs, .. } => *jobs = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(attr: u32, n: u32) -> (u32, NewValues) {
        let mut v = NewValues::default();
        for user in 0..n {
            v.push(user, 1, b"x");
        }
        (attr, v)
    }

    /// The second thread gets work only when there are two shares, and the
    /// shares come out about even (ids staying on the writer's thread).
    #[test]
    fn a_job_is_shared_out_evenly() {
        assert!(
            share_out(0, &[run(0, 100)]).is_empty(),
            "one attribute, no ids"
        );
        assert!(share_out(0, &[]).is_empty());
        assert_eq!(
            share_out(100, &[run(3, 90)]),
            vec![3],
            "ids beside one attribute"
        );
        let five: Vec<_> = (0..5).map(|a| run(a, 50)).collect();
        let helper = share_out(50, &five);
        assert_eq!(helper.len(), 3, "6 equal shares, 3 each: {helper:?}");
        // Largest first to the lighter side.
        let uneven = [run(0, 10), run(1, 400), run(2, 300), run(3, 90)];
        let helper = share_out(0, &uneven);
        let theirs: usize = uneven
            .iter()
            .filter(|(a, _)| helper.contains(a))
            .map(|(_, r)| r.users.len())
            .sum();
        assert_eq!(theirs, 400, "{helper:?}");
    }

    /// A run that cannot be written for a full disk says so as the store's
    /// other errors do, and keeps its values for nothing: the import fails
    /// and rolls back.
    #[test]
    fn a_run_on_a_full_disk_says_no_space_left() {
        let full = PathBuf::from("/dev/full");
        if !full.exists() {
            eprintln!("SKIPPED: no /dev/full here");
            return;
        }
        let mut spill = Spill::default();
        for user in (0..1000u64).rev() {
            spill.push(user.to_be_bytes(), b"some value");
        }
        let err = spill.write_run(full).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("no space left on the disk of the data dir (writing /dev/full)"),
            "{text}"
        );
        assert!(text.contains("free space and run it again"), "{text}");
        assert!(spill.runs.is_empty(), "no run recorded");
    }
}

//! The interner's fingerprint table: distinct id → user index without
//! touching RocksDB for ids the store already knows.
//!
//! Each id is hashed once with xxh3-128 and 80 bits are kept: 64 as the sort
//! key plus 16 as a check. Two ids are taken to be the same user when all 80
//! bits agree: for 10M users the chance that any two distinct ids collide is
//! about 4·10⁻¹¹ (4·10⁻⁹ at 100M), and it saves a RocksDB read per known id
//! (the design measured those at ~0.5M ids/s, ten times too slow).
//!
//! Entries are sorted and bucketed by the key's top bits, so the 16 top bits
//! need not be stored: an entry is the other 64 bits and the user index, 12
//! bytes, where a whole fingerprint and index took 16 (the table is an
//! import's largest allocation: 40 MB less at 10M users). A directory on the
//! top bits makes a lookup touch one or two cache lines; lookups of a sorted
//! batch walk memory in order. [`Run`] is that layout, used both by the
//! table and by the users an import creates before it commits.
//!
//! The table is persisted in `fingerprints.bin` next to the database as a
//! cache: a header records how many users it covers and a checksum guards
//! the body. When the store has more users (a crash after a commit but
//! before the file was rewritten) the tail is rebuilt from the `user_ids`
//! family; when the file is missing, corrupt, ahead of the store or of an
//! older version, the whole table is rebuilt.
//!
//! An import that creates few users next to the table's (a daily snapshot
//! with 1 % new ids) does not rewrite it: their entries go to a second,
//! small file, `fingerprints.tail.bin`, for the users after those the main
//! file covers, until the tail holds more than an eighth of the main file's
//! entries and the two are merged into a new main file. Rewriting 140 MB
//! at 10M users, and syncing it, was a fifth of such an import.
//!
//! The checksum is taken over
//! chunks of [`CHUNK_ENTRIES`] entries (version 3), so a load reads and
//! checks the file on every core; version 2's single checksum is still read.

use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::{xxh3_128, Xxh3};

use super::{Error, Result, Store};

const MAGIC: &[u8; 4] = b"SSFP";
/// 3: the checksum covers chunks (see [`BodyDigest`]); 2: one checksum of
/// the whole body, still read (the entries are the same); version 1 kept
/// 96 bits a fingerprint: its files are rebuilt.
const FILE_VERSION: u32 = 3;
/// The oldest version read.
const OLDEST_READ: u32 = 2;
/// Entries a version-3 checksum chunk holds (896 KB of the file).
const CHUNK_ENTRIES: u64 = 1 << 16;
/// Key, check and index, little-endian.
const ENTRY_BYTES: usize = 14;

/// Top bits of the key a [`Run`] leaves to its directory.
const PREFIX_BITS: u32 = 16;

/// A distinct id's 80-bit fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint {
    /// High 64 bits: the sort key.
    pub key: u64,
    /// 16 more bits, compared on a key match.
    pub check: u16,
}

impl Fingerprint {
    /// Fingerprints a distinct id.
    #[inline]
    pub fn of(id: &[u8]) -> Fingerprint {
        let h = xxh3_128(id);
        Fingerprint {
            key: (h >> 64) as u64,
            check: h as u16,
        }
    }

    /// The top bits a [`Run`] keeps in its directory.
    #[inline]
    fn prefix(self) -> usize {
        (self.key >> (64 - PREFIX_BITS)) as usize
    }

    /// The bits a [`Run`] stores: the key below the prefix, then the check
    /// (so entries of one prefix sort as their fingerprints do).
    #[inline]
    fn rest(self) -> u64 {
        (self.key << PREFIX_BITS) | u64::from(self.check)
    }

    #[inline]
    fn from_parts(prefix: usize, rest: u64) -> Fingerprint {
        Fingerprint {
            key: ((prefix as u64) << (64 - PREFIX_BITS)) | (rest >> PREFIX_BITS),
            check: rest as u16,
        }
    }
}

/// One stored entry: a fingerprint without its prefix, and the user index.
/// Packed to 4-byte alignment: 12 bytes, where natural alignment made 16.
/// All zeros is a valid slot: a load allocates the table zeroed (the pages
/// come from the kernel as they are first written, on each loading thread)
/// and fills its parts in parallel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, zerocopy::FromZeros)]
#[repr(C, packed(4))]
struct Slot {
    rest: u64,
    idx: u32,
}

/// Sorted `(fingerprint, user index)` entries stored as [`Slot`]s, with a
/// directory of `2^bits` buckets on the key's top bits (`bits` ≥
/// [`PREFIX_BITS`], so a bucket's entries share their prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Run {
    slots: Vec<Slot>,
    /// `dir[b]..dir[b + 1]`: bucket `b`'s slots.
    dir: Vec<u32>,
    bits: u32,
}

impl Default for Run {
    fn default() -> Run {
        RunBuilder::with_capacity(0, PREFIX_BITS).finish()
    }
}

impl Run {
    /// A run of `pairs`, which must be sorted by fingerprint.
    pub(crate) fn from_sorted(pairs: impl IntoIterator<Item = (Fingerprint, u32)>) -> Run {
        let pairs = pairs.into_iter();
        let mut b = RunBuilder::with_capacity(pairs.size_hint().0, PREFIX_BITS);
        for (fp, idx) in pairs {
            b.push(fp, idx);
        }
        b.finish()
    }

    /// A run of `pairs` in any order.
    pub(crate) fn from_unsorted(mut pairs: Vec<(Fingerprint, u32)>) -> Run {
        pairs.sort_unstable_by_key(|&(fp, _)| fp);
        Run::from_sorted(pairs)
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// The start of every prefix's slots, and the end.
    fn starts(&self) -> Vec<u32> {
        let sub = self.bits - PREFIX_BITS;
        (0..=1usize << PREFIX_BITS)
            .map(|p| self.dir[p << sub])
            .collect()
    }

    fn rebuild_dir(&mut self, starts: &[u32], bits: u32) {
        let sub = bits - PREFIX_BITS;
        self.bits = bits;
        self.dir.clear();
        self.dir.reserve((1 << bits) + 1);
        for p in 0..1usize << PREFIX_BITS {
            let (mut pos, end) = (starts[p] as usize, starts[p + 1] as usize);
            for s in 0..1u64 << sub {
                // Slots of sub-bucket `s` have `s` as the top bits of `rest`.
                while sub > 0 && pos < end && (self.slots[pos].rest >> (64 - sub)) < s {
                    pos += 1;
                }
                self.dir.push(pos as u32);
            }
        }
        self.dir.push(self.slots.len() as u32);
    }

    /// The user index of `fp`, if the run holds it.
    #[inline]
    pub(crate) fn find(&self, fp: Fingerprint) -> Option<u32> {
        let b = (fp.key >> (64 - self.bits)) as usize;
        let bucket = &self.slots[self.dir[b] as usize..self.dir[b + 1] as usize];
        let rest = fp.rest();
        let at = bucket.partition_point(|s| { s.rest } < rest);
        bucket.get(at).filter(|s| { s.rest } == rest).map(|s| s.idx)
    }

    /// The entries in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Fingerprint, u32)> + '_ {
        let sub = self.bits - PREFIX_BITS;
        self.dir.windows(2).enumerate().flat_map(move |(b, w)| {
            self.slots[w[0] as usize..w[1] as usize]
                .iter()
                .map(move |s| (Fingerprint::from_parts(b >> sub, s.rest), s.idx))
        })
    }

    /// Merges `other` in (the run keeps its directory's size).
    pub(crate) fn merge(&mut self, other: Run) {
        self.merge_with_dir(other, self.bits);
    }

    /// Merges `other` in, then gives the run a directory of `bits` bits.
    /// From the back, one prefix at a time, into the grown vector: no second
    /// copy of the run, which may be the largest allocation an import makes
    /// (a large allocation is remapped, not copied, as it grows).
    fn merge_with_dir(&mut self, mut other: Run, bits: u32) {
        let (mine, theirs) = (self.starts(), other.starts());
        other.dir = Vec::new();
        let total = self.slots.len() + other.slots.len();
        self.slots.reserve_exact(other.slots.len());
        self.slots.resize(total, Slot { rest: 0, idx: 0 });
        let mut w = total;
        for p in (0..1usize << PREFIX_BITS).rev() {
            let (a_lo, mut i) = (mine[p] as usize, mine[p + 1] as usize);
            let (b_lo, mut j) = (theirs[p] as usize, theirs[p + 1] as usize);
            while j > b_lo {
                w -= 1;
                if i > a_lo && self.slots[i - 1].rest > other.slots[j - 1].rest {
                    self.slots[w] = self.slots[i - 1];
                    i -= 1;
                } else {
                    self.slots[w] = other.slots[j - 1];
                    j -= 1;
                }
            }
            // What is left of this prefix in `self` moves as a block.
            self.slots.copy_within(a_lo..i, w - (i - a_lo));
            w -= i - a_lo;
            // `other`'s merged tail goes back to the system as the merge
            // goes (shrinking a large allocation unmaps its end, no copy):
            // merging two halves of 10M users otherwise held 60 MB more
            // than the result at its end.
            if other.slots.len() - b_lo >= GIVE_BACK {
                other.slots.truncate(b_lo);
                other.slots.shrink_to_fit();
            }
        }
        let starts: Vec<u32> = mine.iter().zip(&theirs).map(|(a, b)| a + b).collect();
        self.rebuild_dir(&starts, bits);
    }
}

/// Slots of a merge's second run given back at a time (12 MB).
const GIVE_BACK: usize = 1 << 20;

/// A [`Run`] filled in fingerprint order, its directory built as entries
/// arrive. (Built after, in a second pass over the slots, it was a third of
/// loading a 10M-entry table, which every import waits for.)
struct RunBuilder {
    slots: Vec<Slot>,
    dir: Vec<u32>,
    bits: u32,
}

impl RunBuilder {
    /// For `n` entries and a directory of `bits` bits (≥ [`PREFIX_BITS`]).
    fn with_capacity(n: usize, bits: u32) -> RunBuilder {
        RunBuilder {
            slots: Vec::with_capacity(n),
            dir: Vec::with_capacity((1 << bits) + 1),
            bits,
        }
    }

    /// Appends an entry; fingerprints must come in order.
    #[inline]
    fn push(&mut self, fp: Fingerprint, idx: u32) {
        // Every bucket up to this entry's starts at or after it.
        let bucket = (fp.key >> (64 - self.bits)) as usize;
        while self.dir.len() <= bucket {
            self.dir.push(self.slots.len() as u32);
        }
        self.slots.push(Slot {
            rest: fp.rest(),
            idx,
        });
    }

    fn finish(mut self) -> Run {
        // The buckets past the last entry, and the end.
        self.dir
            .resize((1 << self.bits) + 1, self.slots.len() as u32);
        Run {
            slots: self.slots,
            dir: self.dir,
            bits: self.bits,
        }
    }
}

/// Turns entries per prefix (at `p + 1`, 0 at 0) into where each prefix
/// starts, in place (the last element then ends the last prefix).
fn counts_to_starts(starts: &mut [u32]) {
    for p in 0..starts.len().saturating_sub(1) {
        starts[p + 1] += starts[p];
    }
}

/// Directory bits for a table of `n` entries: about four entries a bucket
/// (48 bytes, within a cache line or two), at least [`PREFIX_BITS`], at most
/// 24 (64 MiB of directory): 16 MB at 10M users, where two a bucket took
/// 32 MB for no measurable lookup speed.
fn table_bits(n: usize) -> u32 {
    (usize::BITS - n.max(1).leading_zeros())
        .saturating_sub(2)
        .clamp(PREFIX_BITS, 24)
}

/// The users an import created, for [`crate::store::ImportTxn::commit`] to
/// merge into the table (collected by the import's interner, which has them
/// anyway: the transaction keeps no second list).
#[derive(Debug, Default)]
pub struct NewUsers(pub(crate) Run);

impl NewUsers {
    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }
}

/// Sorted fingerprint → user index table; see the module docs.
#[derive(Debug, Default)]
pub struct FingerprintTable {
    /// Users `0..run.len()`, as the main file holds them.
    run: Run,
    /// Whether the main file holds exactly `run` (it was read from it, or
    /// written from it): only then may a save write the tail alone.
    run_saved: bool,
    /// Users `run.len()..covers`, as the tail file holds them.
    tail: Run,
    covers: u32,
}

/// The users an import looks its ids up in: the table loaded whole, or its
/// files read through a [`TableReader`] (fences and a filter in memory,
/// 15 MB at 10M users where the table is 136 MB), for an import that names
/// few users next to the store's (see `ingest`'s `Lookups`).
#[derive(Debug)]
pub enum KnownUsers {
    /// The table in memory.
    Loaded(FingerprintTable),
    /// The table files, read as lookups need them.
    Paged(TableReader),
}

impl KnownUsers {
    /// How many users (`0..covers`) it reflects.
    pub fn covers(&self) -> u32 {
        match self {
            KnownUsers::Loaded(t) => t.covers(),
            KnownUsers::Paged(r) => r.covers(),
        }
    }

    /// Saves the table with `new` (users `self.covers()..covers`) at `path`.
    /// An import of known ids only leaves the files as they were (a loaded
    /// table was saved by its load, if it had to be brought up to date):
    /// rewriting them (140 MB at 10M users) would be pure cost.
    pub(crate) fn save(&self, store: &Store, new: &Run, covers: u32) -> Result<()> {
        if new.len() == 0 && self.covers() == covers {
            return Ok(());
        }
        let path = table_path(store);
        match self {
            KnownUsers::Loaded(t) => {
                t.save_merged(new, covers, &path)?;
            }
            KnownUsers::Paged(r) => {
                if !r.save_merged(new, covers, &path)? {
                    tracing::info!("the fingerprint table file changed during the import; bringing it up to date from the store");
                    refresh(store)?;
                }
            }
        }
        Ok(())
    }
}

/// The tail may hold up to 1/`TAIL_SHARE` of the main file's entries.
const TAIL_SHARE: usize = 8;

/// Whether `tail` entries may go to the tail file beside a main file of
/// `main` entries (else the two are merged into a new main file).
fn tail_fits(tail: usize, main: u64) -> bool {
    main > 0 && (tail as u64).saturating_mul(TAIL_SHARE as u64) <= main
}

impl FingerprintTable {
    #[cfg(test)]
    fn clone_for_test(&self) -> FingerprintTable {
        FingerprintTable {
            run: self.run.clone(),
            run_saved: self.run_saved,
            tail: self.tail.clone(),
            covers: self.covers,
        }
    }

    /// Number of users in the table.
    pub fn len(&self) -> usize {
        self.run.len() + self.tail.len()
    }

    /// True when no user is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many users (`0..covers`) the table reflects.
    pub fn covers(&self) -> u32 {
        self.covers
    }

    /// The user index of a fingerprint, if known. The tail is searched only
    /// when the main run has no such entry (on a tie, as in a merge, the
    /// older user wins).
    #[inline]
    pub fn lookup(&self, fp: Fingerprint) -> Option<u32> {
        match self.run.find(fp) {
            None if self.tail.len() > 0 => self.tail.find(fp),
            found => found,
        }
    }

    /// Adds the entries of users `self.covers..covers` (to the tail, unless
    /// the table is empty).
    pub(crate) fn merge(&mut self, new: Run, covers: u32) {
        if self.is_empty() {
            // A first load: the new entries are the table, no copy.
            let bits = table_bits(new.len());
            self.run = new;
            self.run_saved = false;
            let starts = self.run.starts();
            self.run.rebuild_dir(&starts, bits);
        } else {
            let bits = table_bits(self.tail.len() + new.len());
            self.tail.merge_with_dir(new, bits);
        }
        self.covers = covers;
    }

    /// Saves the table as [`FingerprintTable::save_merged`] does, and
    /// remembers what the main file holds.
    pub(crate) fn save(&mut self, path: &Path) -> Result<()> {
        let whole = self.save_merged(&Run::default(), self.covers, path)?;
        if whole {
            let tail = std::mem::take(&mut self.tail);
            if tail.len() > 0 {
                let bits = table_bits(self.run.len() + tail.len());
                self.run.merge_with_dir(tail, bits);
            }
            self.run_saved = true;
        }
        Ok(())
    }

    /// Saves this table merged with `new` (covering `covers` users) at
    /// `path`, the main file, without merging them in memory (an import
    /// drops its table after the commit). While the tail and `new` are
    /// small next to the main file, only they are written, to the tail file;
    /// otherwise the main file is written whole, and the tail file removed.
    /// On a tie the older entry goes first, as [`Run::merge`] keeps it.
    /// True when the main file was written.
    pub(crate) fn save_merged(&self, new: &Run, covers: u32, path: &Path) -> Result<bool> {
        let tail = self.tail.len() + new.len();
        let tail_path = tail_path(path);
        if self.run_saved && tail_fits(tail, self.run.len() as u64) {
            if tail == 0 {
                remove_file_if_any(&tail_path)?;
            } else {
                write_merged(&[&self.tail, new], covers, &tail_path)?;
            }
            return Ok(false);
        }
        write_merged(&[&self.run, &self.tail, new], covers, path)?;
        // A crash before this leaves a tail that no longer follows the
        // main file: it is ignored, as if absent.
        remove_file_if_any(&tail_path)?;
        Ok(true)
    }
}

/// The tail file next to the main file `path`.
fn tail_path(path: &Path) -> PathBuf {
    path.with_extension("tail.bin")
}

fn remove_file_if_any(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Writes the entries of `runs` (disjoint users; on a tie the earlier
/// run's entry first) as a file covering `covers` users, prefix by prefix:
/// within one, slots sort as their fingerprints. (Walking the directory's
/// 4M buckets instead was 40 % of a save.)
fn write_merged(runs: &[&Run], covers: u32, path: &Path) -> Result<()> {
    let count: usize = runs.iter().map(|r| r.len()).sum();
    let mut w = TableWriter::create(path, covers, count as u64, false)?;
    let starts: Vec<Vec<u32>> = runs.iter().map(|r| r.starts()).collect();
    let mut heads: Vec<&[Slot]> = Vec::with_capacity(runs.len());
    for p in 0..1usize << PREFIX_BITS {
        heads.clear();
        heads.extend(
            runs.iter()
                .zip(&starts)
                .map(|(r, st)| &r.slots[st[p] as usize..st[p + 1] as usize])
                .filter(|s| !s.is_empty()),
        );
        loop {
            // The smallest head; the first run's on a tie.
            let mut best: Option<usize> = None;
            for (k, h) in heads.iter().enumerate() {
                let Some(s) = h.first() else { continue };
                if best.is_none_or(|b| { s.rest } < { heads[b][0].rest }) {
                    best = Some(k);
                }
            }
            let Some(b) = best else { break };
            let s = heads[b][0];
            heads[b] = &heads[b][1..];
            w.push(Fingerprint::from_parts(p, s.rest), s.idx)?;
        }
    }
    w.finish()
}

/// Writes a table file: to a file of its own, renamed into place once
/// whole and synced. Two writers may save at once (an import's commit,
/// Personas' refresh thread): each rename puts a whole table in place (one
/// covering fewer users than the store has is completed at the next load).
/// Dropped unfinished, it removes its file.
///
/// The caller encodes entries; a thread of the writer's own checksums and
/// writes them. A commit's save of 10M entries otherwise ran on one core
/// while the other was idle, the checksum and the `write` calls two fifths
/// of it.
struct TableWriter {
    path: PathBuf,
    tmp: PathBuf,
    /// Full buffers to the disk thread; `None` once finished.
    full: Option<crossbeam::channel::Sender<Vec<u8>>>,
    /// Buffers the disk thread is done with, to fill again.
    spare: crossbeam::channel::Receiver<Vec<u8>>,
    disk: Option<std::thread::JoinHandle<Result<Written>>>,
    buf: Vec<u8>,
    /// Entries the header promised, and those written.
    count: u64,
    written: u64,
}

/// What the disk thread hands back: the file, and its body's checksum.
struct Written {
    file: std::fs::File,
    digest: u64,
}

/// Bytes a chunked [`TableWriter`] writes between syncs. A refresh of a
/// 16M-user table writes 230 MB; synced once at the end, all of it went to
/// the disk at once while the server's commits were syncing the WAL.
/// Chunked, the dirty data stays small. (Commits' WAL syncs still take
/// 50–460 ms at times under load, with or without: flushes and
/// compactions share the disk too; see the group-commit docs, step 10.)
const SYNC_EVERY: usize = 16 << 20;

/// Entries per buffer handed to the disk thread (224 KB: one `write`).
const ENTRIES_PER_WRITE: usize = 16 << 10;
/// Buffers a [`TableWriter`] cycles through.
const BUFFERS: usize = 3;

impl TableWriter {
    fn create(path: &Path, covers: u32, count: u64, chunked: bool) -> Result<TableWriter> {
        static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("bin.tmp{n}"));
        let file = std::fs::File::create(&tmp).map_err(|source| Error::Io {
            path: tmp.clone(),
            source,
        })?;
        TableWriter::start(path, tmp, file, covers, count, chunked)
    }

    /// Writes to `file`, opened at `tmp`, then renamed to `path`.
    fn start(
        path: &Path,
        tmp: PathBuf,
        file: std::fs::File,
        covers: u32,
        count: u64,
        chunked: bool,
    ) -> Result<TableWriter> {
        let mut header = Vec::with_capacity(20);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&FILE_VERSION.to_le_bytes());
        header.extend_from_slice(&covers.to_le_bytes());
        header.extend_from_slice(&count.to_le_bytes());
        // Three buffers, reused: one filled here, one written, one waiting
        // between.
        let (full_tx, full_rx) = crossbeam::channel::bounded::<Vec<u8>>(BUFFERS);
        let (spare_tx, spare_rx) = crossbeam::channel::bounded::<Vec<u8>>(BUFFERS);
        for _ in 1..BUFFERS {
            let _ = spare_tx.send(Vec::with_capacity(ENTRY_BYTES * ENTRIES_PER_WRITE));
        }
        let io_path = tmp.clone();
        let disk = std::thread::Builder::new()
            .name("fingerprint-save".into())
            .spawn(move || write_entries(&io_path, file, &header, chunked, &full_rx, &spare_tx))
            .map_err(|source| Error::Io {
                path: tmp.clone(),
                source,
            })?;
        Ok(TableWriter {
            path: path.to_path_buf(),
            tmp,
            full: Some(full_tx),
            spare: spare_rx,
            disk: Some(disk),
            buf: Vec::with_capacity(ENTRY_BYTES * ENTRIES_PER_WRITE),
            count,
            written: 0,
        })
    }

    #[inline]
    fn push(&mut self, fp: Fingerprint, idx: u32) -> Result<()> {
        // Check and index as the low 6 bytes of one word: built in a
        // 14-byte array instead, each entry was read back across three
        // narrower stores (a store-forwarding stall), two thirds of a save.
        let tail = u64::from(fp.check) | u64::from(idx) << 16;
        self.buf.extend_from_slice(&fp.key.to_le_bytes());
        self.buf
            .extend_from_slice(&tail.to_le_bytes()[..ENTRY_BYTES - 8]);
        self.written += 1;
        if self.buf.len() >= ENTRY_BYTES * ENTRIES_PER_WRITE {
            self.drain()?;
        }
        Ok(())
    }

    /// Hands the buffered entries to the disk thread.
    fn drain(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Some(tx) = &self.full {
            if let Ok(mut next) = self.spare.recv() {
                next.clear();
                let full = std::mem::replace(&mut self.buf, next);
                if tx.send(full).is_ok() {
                    return Ok(());
                }
            }
        }
        // The disk thread stopped early: it says why.
        Err(self.join().err().unwrap_or_else(disk_thread_stopped))
    }

    /// Stops the disk thread once it has written what it was given, and
    /// takes the file back.
    fn join(&mut self) -> Result<Written> {
        self.full = None;
        let disk = self.disk.take().ok_or_else(disk_thread_stopped)?;
        disk.join().map_err(|_| disk_thread_stopped())?
    }

    fn finish(mut self) -> Result<()> {
        self.drain()?;
        if self.written != self.count {
            return Err(Error::Corrupt {
                what: "fingerprint table",
                reason: format!(
                    "{} entries written where the header says {}",
                    self.written, self.count
                ),
            });
        }
        let Written { mut file, digest } = self.join()?;
        let io = |source| Error::Io {
            path: self.tmp.clone(),
            source,
        };
        file.write_all(&digest.to_le_bytes()).map_err(io)?;
        file.sync_data().map_err(io)?;
        drop(file);
        // The file replaced is freed when its last handle closes: in the
        // rename, unless something holds it (50 ms for 140 MB of page
        // cache). Held here, it is closed on a thread of its own.
        let replaced = std::fs::File::open(&self.path).ok();
        std::fs::rename(&self.tmp, &self.path).map_err(|source| Error::Io {
            path: self.path.clone(),
            source,
        })?;
        // Renamed: nothing for `drop` to remove.
        self.tmp = PathBuf::new();
        if let Some(old) = replaced {
            // Should the thread not start, the handle closes here.
            let _ = std::thread::Builder::new()
                .name("fingerprint-free".into())
                .spawn(move || drop(old));
        }
        Ok(())
    }
}

fn disk_thread_stopped() -> Error {
    Error::Corrupt {
        what: "fingerprint table",
        reason: "the thread writing the table file stopped".into(),
    }
}

/// The disk thread: the header, then each buffer of entries checksummed
/// and written, synced every [`SYNC_EVERY`] bytes when `chunked`.
fn write_entries(
    path: &Path,
    mut file: std::fs::File,
    header: &[u8],
    chunked: bool,
    full: &crossbeam::channel::Receiver<Vec<u8>>,
    spare: &crossbeam::channel::Sender<Vec<u8>>,
) -> Result<Written> {
    let mut hasher = BodyDigest::new(FILE_VERSION);
    let mut unsynced = 0usize;
    let mut step = |file: &mut std::fs::File, bytes: &[u8]| -> std::io::Result<()> {
        file.write_all(bytes)?;
        unsynced += bytes.len();
        if chunked && unsynced >= SYNC_EVERY {
            unsynced = 0;
            file.sync_data()?;
        }
        Ok(())
    };
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    step(&mut file, header).map_err(io)?;
    for buf in full.iter() {
        hasher.update(&buf);
        step(&mut file, &buf).map_err(io)?;
        // The writer may be done with them (finishing): not an error.
        let _ = spare.send(buf);
    }
    Ok(Written {
        file,
        digest: hasher.digest(),
    })
}

impl Drop for TableWriter {
    fn drop(&mut self) {
        if self.disk.is_some() {
            let _ = self.join();
        }
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Removes table files a killed process left half-written (nothing else
/// holds the data dir while it opens).
pub(crate) fn remove_unfinished_saves(dir: &Path) {
    super::remove_files(dir, |name| {
        name.starts_with("fingerprints.bin.tmp") || name.starts_with("fingerprints.tail.bin.tmp")
    });
}

/// `(covers, count, version)` from a file header, if it is ours and of a
/// version read.
fn parse_header(header: &[u8; 20]) -> Option<(u32, u64, u32)> {
    let version = u32::from_le_bytes(header[4..8].try_into().ok()?);
    if &header[..4] != MAGIC || !(OLDEST_READ..=FILE_VERSION).contains(&version) {
        return None;
    }
    let covers = u32::from_le_bytes(header[8..12].try_into().ok()?);
    let count = u64::from_le_bytes(header[12..20].try_into().ok()?);
    Some((covers, count, version))
}

/// A file body's checksum. Version 2: xxh3 of the whole body. Version 3:
/// xxh3 of the xxh3 digests of its chunks of [`CHUNK_ENTRIES`] entries (the
/// last one shorter; none for an empty table), so parts of the file can be
/// checked on threads of their own and the digests combined in order.
struct BodyDigest {
    outer: Xxh3,
    /// The chunk being hashed, and its bytes so far (version 3).
    chunk: Option<(Xxh3, usize)>,
}

impl BodyDigest {
    const CHUNK_BYTES: usize = CHUNK_ENTRIES as usize * ENTRY_BYTES;

    fn new(version: u32) -> BodyDigest {
        BodyDigest {
            outer: Xxh3::new(),
            chunk: (version >= 3).then(|| (Xxh3::new(), 0)),
        }
    }

    fn update(&mut self, mut bytes: &[u8]) {
        let Some((chunk, len)) = &mut self.chunk else {
            self.outer.update(bytes);
            return;
        };
        while !bytes.is_empty() {
            let take = (Self::CHUNK_BYTES - *len).min(bytes.len());
            chunk.update(&bytes[..take]);
            *len += take;
            bytes = &bytes[take..];
            if *len == Self::CHUNK_BYTES {
                self.outer.update(&chunk.digest().to_le_bytes());
                chunk.reset();
                *len = 0;
            }
        }
    }

    /// Adds the digest of a whole chunk hashed elsewhere (version 3, on a
    /// chunk boundary).
    fn add_chunk(&mut self, digest: u64) {
        self.outer.update(&digest.to_le_bytes());
    }

    fn digest(mut self) -> u64 {
        if let Some((chunk, len)) = &self.chunk {
            if *len > 0 {
                self.outer.update(&chunk.digest().to_le_bytes());
            }
        }
        self.outer.digest()
    }
}

/// One entry as written by [`FingerprintTable::save`].
fn decode_entry(e: &[u8]) -> Option<(Fingerprint, u32)> {
    let fp = Fingerprint {
        key: u64::from_le_bytes(e.get(..8)?.try_into().ok()?),
        check: u16::from_le_bytes(e.get(8..10)?.try_into().ok()?),
    };
    Some((fp, u32::from_le_bytes(e.get(10..14)?.try_into().ok()?)))
}

pub(crate) fn table_path(store: &Store) -> PathBuf {
    store.dir().join("fingerprints.bin")
}

/// Reads the table file; `None` when it is missing, corrupt or of another
/// version. A version-3 file is read in parts on every core.
fn read_file(path: &Path) -> Option<FingerprintTable> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    read_file_with(path, threads)
}

fn read_file_with(path: &Path, threads: usize) -> Option<FingerprintTable> {
    let file = std::fs::File::open(path).ok()?;
    let (mut r, covers, count, version) = open_entries(&file)?;
    let chunks = count.div_ceil(CHUNK_ENTRIES);
    if version >= 3 && threads > 1 && chunks > 1 {
        drop(r);
        let run = read_parts(&file, count, threads.min(chunks as usize))?;
        return Some(FingerprintTable {
            run,
            run_saved: true,
            tail: Run::default(),
            covers,
        });
    }
    Some(FingerprintTable {
        run: decode_run(&mut r, count, version)?,
        run_saved: true,
        tail: Run::default(),
        covers,
    })
}

/// The `count` entries `r` holds, decoded straight into a run's slots (no
/// second copy); `None` when short, out of order or damaged.
fn decode_run(r: &mut impl Read, count: u64, version: u32) -> Option<Run> {
    let n = usize::try_from(count).ok()?;
    let mut run = RunBuilder::with_capacity(n, table_bits(n));
    let whole = for_each_entry(r, count, version, |_, fp, idx| {
        run.push(fp, idx);
        Ok(())
    });
    matches!(whole, Ok(true)).then(|| run.finish())
}

/// Reads the tail file next to the main file `path`, if it follows a main
/// file covering `after` users: its entries, and the users both cover.
fn read_tail(path: &Path, after: u32) -> Option<(Run, u32)> {
    let (mut r, covers, count, version) = open_body(std::fs::File::open(tail_path(path)).ok()?)?;
    if !follows(covers, count, after) {
        return None;
    }
    Some((decode_run(&mut r, count, version)?, covers))
}

/// Whether a tail file's header (`covers`, `count`) says it holds the
/// users right after a main file's `after`.
fn follows(covers: u32, count: u64, after: u32) -> bool {
    count > 0 && u64::from(covers).checked_sub(count) == Some(u64::from(after))
}

/// What one part of a table read on a thread of its own hands back: its
/// first and last entries, and its chunks' checksums in order.
struct Part {
    first: Option<Fingerprint>,
    last: Option<Fingerprint>,
    digests: Vec<u64>,
}

/// Reads the `count` entries of a version-3 `file` in `threads` parts of
/// whole chunks, each decoded and checked on a thread of its own into its
/// part of one zeroed allocation of slots and its part of the directory;
/// then checks the order across parts and the file's checksum. Loading a
/// 10M-user table on one thread took 0.25 s, while the import waiting for
/// it had nothing else to do.
///
/// A part owns the directory's buckets after the one of the entry before
/// it, up to its last entry's: the first entry of each of those buckets is
/// its own. The entries on the boundaries are read first to split the
/// directory; a part whose entries stray out of its buckets is corrupt.
fn read_parts(file: &std::fs::File, count: u64, threads: usize) -> Option<Run> {
    use std::os::unix::fs::FileExt;
    use zerocopy::FromZeros;
    let n = usize::try_from(count).ok()?;
    let bits = table_bits(n);
    let bucket = |fp: Fingerprint| (fp.key >> (64 - bits)) as usize;
    let chunks = count.div_ceil(CHUNK_ENTRIES);
    let per_part = (chunks.div_ceil(threads as u64) * CHUNK_ENTRIES) as usize;
    // Where each part starts, in entries and in directory buckets.
    let mut starts: Vec<(usize, usize)> = vec![(0, 0)];
    for start in (per_part..n).step_by(per_part) {
        let owned_from = bucket(read_entry(file, start as u64 - 1)?.0) + 1;
        if owned_from < starts.last()?.1 {
            return None;
        }
        starts.push((start, owned_from));
    }
    let mut slots = Slot::new_vec_zeroed(n).ok()?;
    let mut dir = u32::new_vec_zeroed((1 << bits) + 1).ok()?;
    let parts = std::thread::scope(|s| {
        let (mut slots_left, mut dir_left): (&mut [Slot], &mut [u32]) = (&mut slots, &mut dir);
        let mut handles = Vec::with_capacity(starts.len());
        for (k, &(start, owned_from)) in starts.iter().enumerate() {
            let (end, owned_to) = starts.get(k + 1).copied().unwrap_or((n, (1 << bits) + 1));
            let (mine, rest) = std::mem::take(&mut slots_left).split_at_mut(end - start);
            slots_left = rest;
            let (my_dir, rest) = std::mem::take(&mut dir_left).split_at_mut(owned_to - owned_from);
            dir_left = rest;
            let last = k + 1 == starts.len();
            handles.push(
                s.spawn(move || read_part(file, start, mine, owned_from, my_dir, bits, last)),
            );
        }
        handles
            .into_iter()
            .map(|h| h.join().ok().flatten())
            .collect::<Option<Vec<Part>>>()
    })?;
    let mut digest = BodyDigest::new(FILE_VERSION);
    let mut last: Option<Fingerprint> = None;
    for part in parts {
        if let (Some(l), Some(f)) = (last, part.first) {
            if l >= f {
                return None;
            }
        }
        last = part.last.or(last);
        for d in part.digests {
            digest.add_chunk(d);
        }
    }
    let mut sum = [0u8; 8];
    file.read_exact_at(&mut sum, 20 + count * ENTRY_BYTES as u64)
        .ok()?;
    (u64::from_le_bytes(sum) == digest.digest()).then_some(Run { slots, dir, bits })
}

/// Reads entries `start..start + out.len()` (whole chunks, but for the
/// file's last) into `out`, and the start of buckets `owned_from..` into
/// `dir` (the last part also ends the buckets past its last entry); `None`
/// when short, out of order or out of its buckets.
fn read_part(
    file: &std::fs::File,
    start: usize,
    out: &mut [Slot],
    owned_from: usize,
    dir: &mut [u32],
    bits: u32,
    last_part: bool,
) -> Option<Part> {
    use std::os::unix::fs::FileExt;
    let mut part = Part {
        first: None,
        last: None,
        digests: Vec::with_capacity(out.len().div_ceil(CHUNK_ENTRIES as usize)),
    };
    // Buckets of the directory filled so far (from `owned_from`).
    let mut filled = 0usize;
    let mut buf = vec![0u8; CHUNK_ENTRIES as usize * ENTRY_BYTES];
    for (c, slots) in out.chunks_mut(CHUNK_ENTRIES as usize).enumerate() {
        let at = start + c * CHUNK_ENTRIES as usize;
        let bytes = &mut buf[..slots.len() * ENTRY_BYTES];
        file.read_exact_at(bytes, 20 + (at * ENTRY_BYTES) as u64)
            .ok()?;
        part.digests.push(xxhash_rust::xxh3::xxh3_64(bytes));
        for (i, (e, slot)) in bytes.chunks_exact(ENTRY_BYTES).zip(slots).enumerate() {
            let (fp, idx) = decode_entry(e)?;
            if part.last.is_some_and(|l| l >= fp) {
                return None;
            }
            part.first.get_or_insert(fp);
            part.last = Some(fp);
            // Every bucket up to this entry's starts at or after it. The
            // first entries may share the bucket the part before began.
            let bucket = (fp.key >> (64 - bits)) as usize;
            if bucket + 1 < owned_from || bucket >= owned_from + dir.len() {
                return None;
            }
            while owned_from + filled <= bucket {
                dir[filled] = (at + i) as u32;
                filled += 1;
            }
            *slot = Slot {
                rest: fp.rest(),
                idx,
            };
        }
    }
    if last_part {
        // The buckets past the last entry, and the end.
        let end = (start + out.len()) as u32;
        dir[filled..].fill(end);
    } else if filled != dir.len() {
        // The next part's first bucket is past this part's last entry's.
        return None;
    }
    Some(part)
}

/// `file` opened for one pass over its entries, past its header: with the
/// users it covers, its entry count and its version, if it is ours, of a
/// version read, and holds an entry for every user it covers.
fn open_entries<R: Read>(file: R) -> Option<(BufReader<R>, u32, u64, u32)> {
    open_body(file).filter(|&(_, covers, count, _)| count == u64::from(covers))
}

/// `file` opened for one pass over its entries, past its header: with the
/// users it covers, its entry count and its version, if it is ours and of
/// a version read.
fn open_body<R: Read>(file: R) -> Option<(BufReader<R>, u32, u64, u32)> {
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut header = [0u8; 20];
    r.read_exact(&mut header).ok()?;
    let (covers, count, version) = parse_header(&header)?;
    Some((r, covers, count, version))
}

/// Hands each of the `count` entries `r` holds (after its header) to
/// `each` in order, with its position, checking that they ascend and, at
/// the end, the file's checksum. `Ok(false)` when the file is short, out of
/// order or damaged: what `each` made of the entries is then void. An
/// error of `each` is returned as it is.
fn for_each_entry(
    r: &mut impl Read,
    count: u64,
    version: u32,
    mut each: impl FnMut(u64, Fingerprint, u32) -> Result<()>,
) -> Result<bool> {
    let mut hasher = BodyDigest::new(version);
    let mut buf = vec![0u8; ENTRY_BYTES * 4096];
    let mut last: Option<Fingerprint> = None;
    let mut at = 0u64;
    while at < count {
        let n = (count - at).min(4096) as usize;
        let bytes = &mut buf[..n * ENTRY_BYTES];
        if r.read_exact(bytes).is_err() {
            return Ok(false);
        }
        hasher.update(bytes);
        for e in bytes.chunks_exact(ENTRY_BYTES) {
            let Some((fp, idx)) = decode_entry(e) else {
                return Ok(false);
            };
            if last.is_some_and(|l| l >= fp) {
                return Ok(false);
            }
            last = Some(fp);
            each(at, fp, idx)?;
            at += 1;
        }
    }
    let mut sum = [0u8; 8];
    Ok(r.read_exact(&mut sum).is_ok() && u64::from_le_bytes(sum) == hasher.digest())
}

/// How many users the table file covers, from its header alone (`None`
/// when the file is missing or of another version).
pub(crate) fn file_covers(path: &Path) -> Option<u32> {
    let (covers, count, _) = read_header(&std::fs::File::open(path).ok()?)?;
    (count == u64::from(covers)).then_some(covers)
}

/// Looks one fingerprint up in the table file without loading it (binary
/// search with positioned reads). `None` when the file is missing, of
/// another version, or does not cover exactly `users` users.
pub(crate) fn find_in_file(path: &Path, fp: Fingerprint, users: u32) -> Option<Option<u32>> {
    let main = std::fs::File::open(path).ok()?;
    let (after, main_count, _) = read_header(&main)?;
    if main_count != u64::from(after) || after > users {
        return None;
    }
    let found = search(main_count, fp, |i| read_entry(&main, i))?;
    if after == users {
        return Some(found);
    }
    // The main file and a tail that follows it, covering `users` together.
    let tail = std::fs::File::open(tail_path(path)).ok()?;
    let (covers, count, _) = read_header(&tail)?;
    if covers != users || !follows(covers, count, after) {
        return None;
    }
    match found {
        Some(found) => Some(Some(found)),
        None => search(count, fp, |i| read_entry(&tail, i)),
    }
}

/// `(covers, count, version)` from the header of an open table file.
fn read_header(file: &std::fs::File) -> Option<(u32, u64, u32)> {
    use std::os::unix::fs::FileExt;
    let mut header = [0u8; 20];
    file.read_exact_at(&mut header, 0).ok()?;
    parse_header(&header)
}

/// Entry `i` of an open table file (positioned read).
fn read_entry(file: &std::fs::File, i: u64) -> Option<(Fingerprint, u32)> {
    use std::os::unix::fs::FileExt;
    let mut e = [0u8; ENTRY_BYTES];
    file.read_exact_at(&mut e, 20 + i * ENTRY_BYTES as u64)
        .ok()?;
    decode_entry(&e)
}

/// Binary search of `fp` among `n` sorted entries read by `entry_at`:
/// `None` when an entry cannot be read.
fn search(
    n: u64,
    fp: Fingerprint,
    entry_at: impl Fn(u64) -> Option<(Fingerprint, u32)>,
) -> Option<Option<u32>> {
    let (mut lo, mut hi) = (0u64, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let (at, idx) = entry_at(mid)?;
        match at.cmp(&fp) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return Some(Some(idx)),
        }
    }
    Some(None)
}

/// Entries per block of a [`TableReader`]: one fence fingerprint in memory
/// per block, one read of a block per lookup. 64 (896 bytes a read): with
/// 256, copying 3.5 KB out of the page cache per lookup was a tenth of the
/// time of the threads that parse real-time calls.
const BLOCK_ENTRIES: u64 = 64;

/// Blocks [`TableReader::find_sorted`] reads at once when a batch's
/// fingerprints are dense enough to share them (56 KB).
const WINDOW_BLOCKS: u64 = 64;

/// The persisted table opened for many lookups (the real-time path): the
/// first fingerprint of every block of 64 entries is kept in memory (250 KB
/// per million users), so a lookup is a search in memory and one read of
/// under 1 KB, where [`find_in_file`] opens the file and reads log2(n) times.
#[derive(Debug)]
pub struct TableReader {
    /// `None` for an empty store (no file is written for it).
    file: Option<std::fs::File>,
    covers: u32,
    count: u64,
    /// The first fingerprint of every block.
    fences: Vec<Fingerprint>,
    /// Per key prefix, the first fence of that prefix or above (2^16 + 1
    /// entries, 256 KB): a lookup searches the two or three fences of its
    /// prefix instead of binary-searching all of them (2.5 MB at 10M
    /// users, a cache miss a step; 5 % of a Personas batch load).
    fence_starts: Vec<u32>,
    /// Which fingerprints may be in the file: most ids it does not hold
    /// (every new user's) are answered without reading a block.
    filter: Filter,
    /// The tail file's entries (users past the main file's), in memory:
    /// an eighth of the main file's at most.
    tail: Run,
}

/// A blocked Bloom filter over a table's fingerprints: 10 bits an entry,
/// the 3 bits of an entry in one 64-byte line (one cache miss a lookup),
/// about 2 % false positives. The fingerprints are hashes already: the
/// line comes from the key's high bits, the bits within it from its low
/// ones. A false positive costs only the block read every lookup made
/// before; there are no false negatives.
///
/// Looking each new user's id up in the table file was 45 % of the parsing
/// threads' samples under batches of new users on the 10M store (a fence
/// search and an 896-byte read for an id that is not there).
#[derive(Debug, Default)]
struct Filter {
    lines: Vec<[u64; 8]>,
}

impl Filter {
    const BITS_PER_ENTRY: u64 = 10;

    fn with_entries(n: u64) -> Filter {
        let lines = (n * Self::BITS_PER_ENTRY).div_ceil(512).max(1);
        Filter {
            lines: vec![[0; 8]; lines as usize],
        }
    }

    fn line(&self, fp: Fingerprint) -> usize {
        ((u128::from(fp.key) * self.lines.len() as u128) >> 64) as usize
    }

    fn bits(fp: Fingerprint) -> [u64; 3] {
        [fp.key & 511, (fp.key >> 9) & 511, (fp.key >> 18) & 511]
    }

    fn insert(&mut self, fp: Fingerprint) {
        let at = self.line(fp);
        let line = &mut self.lines[at];
        for b in Self::bits(fp) {
            line[(b >> 6) as usize] |= 1 << (b & 63);
        }
    }

    fn may_contain(&self, fp: Fingerprint) -> bool {
        let Some(line) = self.lines.get(self.line(fp)) else {
            return false;
        };
        Self::bits(fp)
            .iter()
            .all(|&b| line[(b >> 6) as usize] & (1 << (b & 63)) != 0)
    }
}

/// [`TableReader::fence_starts`] of `fences` (sorted).
fn fence_starts(fences: &[Fingerprint]) -> Vec<u32> {
    let mut starts = vec![0u32; (1 << PREFIX_BITS) + 1];
    for f in fences {
        starts[f.prefix() + 1] += 1;
    }
    counts_to_starts(&mut starts);
    starts
}

impl TableReader {
    /// Opens the table at `path` if it covers exactly `users` users.
    pub(crate) fn open(path: &Path, users: u32) -> Option<TableReader> {
        if users == 0 {
            return Some(TableReader {
                file: None,
                covers: 0,
                count: 0,
                fences: Vec::new(),
                fence_starts: fence_starts(&[]),
                filter: Filter::default(),
                tail: Run::default(),
            });
        }
        // One pass over the file (from the page cache, after a refresh
        // wrote it): every block's first entry, every entry into the
        // filter, and the checksum and order checked, as a load checks
        // them. A body damaged after it was written would otherwise give
        // wrong misses, and a miss creates the user again.
        let file = std::fs::File::open(path).ok()?;
        let (mut r, covers, count, version) = open_entries(&file)?;
        // The main file and a tail that follows it may cover the users
        // together: an import that created few wrote only the tail.
        let tail = if covers == users {
            Run::default()
        } else {
            match read_tail(path, covers) {
                Some((tail, c)) if c == users => tail,
                _ => return None,
            }
        };
        let mut fences = Vec::with_capacity(count.div_ceil(BLOCK_ENTRIES) as usize);
        let mut filter = Filter::with_entries(count);
        let whole = for_each_entry(&mut r, count, version, |at, fp, _| {
            if at.is_multiple_of(BLOCK_ENTRIES) {
                fences.push(fp);
            }
            filter.insert(fp);
            Ok(())
        });
        if !matches!(whole, Ok(true)) {
            return None;
        }
        drop(r);
        Some(TableReader {
            file: Some(file),
            covers: users,
            count,
            fence_starts: fence_starts(&fences),
            fences,
            filter,
            tail,
        })
    }

    /// How many fences are ≤ `fp` (the block `fp` would be in, plus one):
    /// those of lower prefixes, and a search among its own prefix's.
    fn fences_up_to(&self, fp: Fingerprint) -> usize {
        let p = fp.prefix();
        let (lo, hi) = (
            self.fence_starts[p] as usize,
            self.fence_starts[p + 1] as usize,
        );
        lo + self.fences[lo..hi].partition_point(|f| *f <= fp)
    }

    /// Users the table covers.
    pub fn covers(&self) -> u32 {
        self.covers
    }

    /// The user index of fingerprint `fp` (unverified: a match must be
    /// checked against `users`); `None` when absent or unreadable.
    /// Shared between threads: positioned reads into a buffer of its own.
    pub(crate) fn find(&self, fp: Fingerprint) -> Option<Option<u32>> {
        Some(self.or_in_tail(self.find_in_main(fp)?, fp))
    }

    /// `in_main`, or where the main file has no entry, the tail's.
    fn or_in_tail(&self, in_main: Option<u32>, fp: Fingerprint) -> Option<u32> {
        match in_main {
            None if self.tail.len() > 0 => self.tail.find(fp),
            found => found,
        }
    }

    /// The block of the main file `fp` would be in, unless the file (or
    /// its filter) rules it out.
    fn block_of(&self, fp: Fingerprint) -> Option<u64> {
        if self.file.is_none() || !self.filter.may_contain(fp) {
            return None;
        }
        (self.fences_up_to(fp) as u64).checked_sub(1)
    }

    /// Entries in block `b` (the last one may be short).
    fn block_len(&self, b: u64) -> usize {
        BLOCK_ENTRIES.min(self.count - b * BLOCK_ENTRIES) as usize
    }

    /// Looks up `n` fingerprints given in ascending order (`fp_at(i)`),
    /// handing each answer to `found(i, …)` (unverified, as
    /// [`TableReader::find`]); `None` when the file cannot be read. A
    /// batch with a fingerprint every few blocks of the file reads it in
    /// windows of [`WINDOW_BLOCKS`] blocks, one read shared by the probes
    /// that fall in it; a sparser batch reads a block a probe. `buf` holds
    /// the window (reused across batches).
    pub(crate) fn find_sorted(
        &self,
        n: usize,
        fp_at: impl Fn(usize) -> Fingerprint,
        mut found: impl FnMut(usize, Option<u32>),
        buf: &mut Vec<u8>,
    ) -> Option<()> {
        use std::os::unix::fs::FileExt;
        let blocks = self.fences.len() as u64;
        // One read costs about as much as copying ten blocks: a window
        // pays when probes are under a few blocks apart.
        let window = if n as u64 * 4 >= blocks {
            WINDOW_BLOCKS
        } else {
            1
        };
        // Blocks `held.0..held.1` are in `buf`.
        let mut held = (0u64, 0u64);
        for i in 0..n {
            let fp = fp_at(i);
            let mut in_main = None;
            if let (Some(file), Some(b)) = (&self.file, self.block_of(fp)) {
                if !(held.0..held.1).contains(&b) {
                    let end = (b + window).min(blocks);
                    let first = b * BLOCK_ENTRIES;
                    let entries = (end * BLOCK_ENTRIES).min(self.count) - first;
                    buf.resize(entries as usize * ENTRY_BYTES, 0);
                    file.read_exact_at(buf, 20 + first * ENTRY_BYTES as u64)
                        .ok()?;
                    held = (b, end);
                }
                let from = ((b - held.0) * BLOCK_ENTRIES) as usize * ENTRY_BYTES;
                let bytes = buf.get(from..from + self.block_len(b) * ENTRY_BYTES)?;
                in_main = search_block(bytes, fp)?;
            }
            found(i, self.or_in_tail(in_main, fp));
        }
        Some(())
    }

    /// Saves `new`, the entries of users `self.covers()..covers` an import
    /// created while it looked its ids up through this reader, as
    /// [`FingerprintTable::save_merged`] does for a loaded table, without
    /// loading the main file: to the tail file while the tail stays small
    /// next to the main file, else merged with the main file into a new
    /// one as it is read. `false` when the main file is no longer the one
    /// this reader read (another writer replaced it) or cannot be read: the
    /// caller brings the files up to date from the store instead.
    pub(crate) fn save_merged(&self, new: &Run, covers: u32, path: &Path) -> Result<bool> {
        let tail = self.tail.len() + new.len();
        let tail_path = tail_path(path);
        if tail == 0 {
            remove_file_if_any(&tail_path)?;
            return Ok(true);
        }
        if self.file.is_none() {
            write_merged(&[&self.tail, new], covers, path)?;
            remove_file_if_any(&tail_path)?;
            return Ok(true);
        }
        if tail_fits(tail, self.count) {
            if file_covers(path) != Some(self.count as u32) {
                return Ok(false);
            }
            write_merged(&[&self.tail, new], covers, &tail_path)?;
            return Ok(true);
        }
        // Both runs iterate in order: merged as the file is written, not
        // collected (3M new users made a 138 MB vector at the commit).
        // On a tie the older user (the tail's) goes first.
        let entries = merge_sorted(self.tail.iter(), new.iter());
        if !merge_into_file(path, self.count as u32, covers, tail, entries)? {
            return Ok(false);
        }
        remove_file_if_any(&tail_path)?;
        Ok(true)
    }

    fn find_in_main(&self, fp: Fingerprint) -> Option<Option<u32>> {
        use std::os::unix::fs::FileExt;
        let (Some(file), Some(b)) = (&self.file, self.block_of(fp)) else {
            return Some(None);
        };
        let mut buf = [0u8; BLOCK_ENTRIES as usize * ENTRY_BYTES];
        let bytes = &mut buf[..self.block_len(b) * ENTRY_BYTES];
        file.read_exact_at(bytes, 20 + b * BLOCK_ENTRIES * ENTRY_BYTES as u64)
            .ok()?;
        search_block(bytes, fp)
    }
}

/// `fp` among the sorted entries of one block read from a table file.
fn search_block(bytes: &[u8], fp: Fingerprint) -> Option<Option<u32>> {
    search((bytes.len() / ENTRY_BYTES) as u64, fp, |i| {
        let at = i as usize * ENTRY_BYTES;
        decode_entry(&bytes[at..at + ENTRY_BYTES])
    })
}

/// Fingerprints of users `from..` read back from the `user_ids` family.
fn scan_users(store: &Store, from: u32) -> Result<Vec<(Fingerprint, u32)>> {
    let mut out = Vec::new();
    store.for_each_user_from(from, |idx, id| out.push((Fingerprint::of(id), idx)))?;
    Ok(out)
}

/// Brings the table file up to the store's users without loading it, and
/// returns the users it covers: the file's entries are read in order and
/// merged with the new users' into a new file, so memory is the new users'
/// entries and two buffers. (Loading a 16M-user table to merge and save it
/// took a server 300 MB more at every Personas refresh.) The new file is
/// synced as it goes (see `SYNC_EVERY`). A file it cannot merge into
/// (missing, corrupt, of another version, ahead of the store) is rebuilt
/// whole by [`load`]. A tail file that follows the main file and covers
/// every user needs nothing: [`TableReader`] reads both.
pub(crate) fn refresh(store: &Store) -> Result<u32> {
    let users = store.counters().user_count;
    let path = table_path(store);
    let covers = match file_covers(&path) {
        Some(c) if c == users => return Ok(users),
        Some(c) if c < users => c,
        _ => return Ok(load(store)?.covers()),
    };
    // A tail that follows the main file and covers every user: the files
    // are up to date (the reader reads both).
    if read_tail(&path, covers).is_some_and(|(_, c)| c == users) {
        return Ok(users);
    }
    let mut tail = scan_users(store, covers)?;
    tail.retain(|&(_, idx)| idx < users);
    tail.sort_unstable();
    tracing::info!(
        from = covers,
        to = users,
        "bringing the fingerprint table file up to date"
    );
    if merge_into_file(&path, covers, users, tail.len(), tail.iter().copied())? {
        // The tail file's users are in the main file now.
        remove_file_if_any(&tail_path(&path))?;
        Ok(users)
    } else {
        Ok(load(store)?.covers())
    }
}

/// Writes the table at `path` (covering `covers` users) merged with the
/// `len` entries of `tail` (sorted) as a table covering `users`. `false`, writing nothing,
/// when the file turns out unreadable or corrupt.
fn merge_into_file(
    path: &Path,
    covers: u32,
    users: u32,
    len: usize,
    tail: impl IntoIterator<Item = (Fingerprint, u32)>,
) -> Result<bool> {
    let opened = std::fs::File::open(path).ok().and_then(open_entries);
    let Some((mut r, _, count, version)) = opened.filter(|&(_, c, _, _)| c == covers) else {
        return Ok(false);
    };
    let mut out = TableWriter::create(path, users, count + len as u64, true)?;
    let mut new = tail.into_iter().peekable();
    let whole = for_each_entry(&mut r, count, version, |_, fp, idx| {
        // On a tie the file's entry goes first, as `Run::merge` keeps it.
        while let Some(&(nfp, nidx)) = new.peek() {
            if nfp >= fp {
                break;
            }
            out.push(nfp, nidx)?;
            new.next();
        }
        out.push(fp, idx)
    })?;
    if !whole {
        return Ok(false);
    }
    for (fp, idx) in new {
        out.push(fp, idx)?;
    }
    out.finish()?;
    Ok(true)
}

/// The entries of two sorted iterators in order; on a tie `a`'s first.
fn merge_sorted(
    a: impl Iterator<Item = (Fingerprint, u32)>,
    b: impl Iterator<Item = (Fingerprint, u32)>,
) -> impl Iterator<Item = (Fingerprint, u32)> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) if y.0 < x.0 => b.next(),
        (Some(_), _) => a.next(),
        _ => b.next(),
    })
}

pub(crate) fn load(store: &Store) -> Result<FingerprintTable> {
    let users = store.counters().user_count;
    let path = table_path(store);
    let mut table = match read_file(&path) {
        Some(t) if t.covers <= users => t,
        _ => FingerprintTable::default(),
    };
    if table.run_saved {
        if let Some((tail, covers)) = read_tail(&path, table.covers).filter(|&(_, c)| c <= users) {
            table.tail = tail;
            table.covers = covers;
        }
    }
    // A main file of an older version is written again in this one (once:
    // an import that creates few users would otherwise only ever write
    // tails beside it, and every load would read it on one thread).
    let older = table.run_saved && file_version(&path).is_some_and(|v| v < FILE_VERSION);
    if older {
        tracing::info!(path = %path.display(), "writing the fingerprint table in the current version");
        table.run_saved = false;
    }
    if table.covers < users {
        let from = table.covers;
        tracing::info!(
            from,
            to = users,
            "rebuilding fingerprint table from the store"
        );
        let mut tail = scan_users(store, from)?;
        tail.retain(|&(_, idx)| idx < users);
        table.merge(Run::from_unsorted(tail), users);
        table.save(&path)?;
    } else if older {
        table.save(&path)?;
    }
    Ok(table)
}

/// The version in a table file's header, if it is ours and read.
fn file_version(path: &Path) -> Option<u32> {
    Some(read_header(&std::fs::File::open(path).ok()?)?.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_of(ids: &[String]) -> FingerprintTable {
        let mut t = FingerprintTable::default();
        let entries = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (Fingerprint::of(id.as_bytes()), i as u32))
            .collect();
        t.merge(Run::from_unsorted(entries), ids.len() as u32);
        t
    }

    #[test]
    fn an_entry_is_twelve_bytes() {
        // The table is the largest allocation of an import: each byte here
        // is 10 MB at 10M users.
        assert_eq!(std::mem::size_of::<Slot>(), 12);
    }

    /// Fingerprints crowded into few prefixes and sub-buckets, with shared
    /// keys, so merges and directories meet ties and empty buckets.
    fn crowded(k: u64, c: u16) -> Fingerprint {
        Fingerprint {
            key: (k % 7) << 60 | (k % 5) << 44 | k,
            check: c,
        }
    }

    proptest::proptest! {
        /// Runs built, merged (into directories of any size) and iterated
        /// hold exactly the entries a sorted map of them holds.
        #[test]
        fn runs_merge_like_a_sorted_map(
            parts in proptest::collection::vec(
                proptest::collection::btree_map((0u64..3000, 0u16..3), 0u32..1000, 0..200),
                1..6,
            ),
            bits in 16u32..20,
        ) {
            use std::collections::BTreeMap;
            let mut model: BTreeMap<Fingerprint, u32> = BTreeMap::new();
            let mut run = Run::default();
            for part in parts {
                let pairs: Vec<(Fingerprint, u32)> = part
                    .iter()
                    .map(|(&(k, c), &i)| (crowded(k, c), i))
                    .filter(|(fp, _)| !model.contains_key(fp))
                    .collect();
                model.extend(pairs.iter().copied());
                run.merge_with_dir(Run::from_unsorted(pairs), bits);
            }
            let got: Vec<(Fingerprint, u32)> = run.iter().collect();
            let want: Vec<(Fingerprint, u32)> = model.iter().map(|(&f, &i)| (f, i)).collect();
            proptest::prop_assert_eq!(&got, &want);
            for (&fp, &idx) in &model {
                proptest::prop_assert_eq!(run.find(fp), Some(idx));
                let other = Fingerprint { key: fp.key, check: fp.check.wrapping_add(7) };
                proptest::prop_assert_eq!(run.find(other), model.get(&other).copied());
            }
        }
    }

    #[test]
    fn lookup_finds_every_id_and_no_other() {
        let ids: Vec<String> = (0..50_000).map(|i| format!("user-{i}")).collect();
        let t = table_of(&ids);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(t.lookup(Fingerprint::of(id.as_bytes())), Some(i as u32));
        }
        for i in 50_000..60_000 {
            assert_eq!(
                t.lookup(Fingerprint::of(format!("user-{i}").as_bytes())),
                None
            );
        }
    }

    #[test]
    fn reader_finds_every_id_of_the_file_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fp.bin");
        // Not a multiple of the block size: the last block is short.
        let ids: Vec<String> = (0..10_301).map(|i| format!("r{i}")).collect();
        table_of(&ids).save(&path).unwrap();
        assert!(
            TableReader::open(&path, 10_300).is_none(),
            "wrong cover accepted"
        );
        let r = TableReader::open(&path, 10_301).unwrap();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(r.find(Fingerprint::of(id.as_bytes())), Some(Some(i as u32)));
        }
        for i in 10_301..12_000 {
            assert_eq!(
                r.find(Fingerprint::of(format!("r{i}").as_bytes())),
                Some(None)
            );
        }
        let empty = TableReader::open(&dir.path().join("none.bin"), 0).unwrap();
        assert_eq!(empty.find(Fingerprint::of(b"r1")), Some(None));
    }

    #[test]
    fn sorted_lookups_answer_as_single_ones_dense_or_sparse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fp.bin");
        // A short last block; a main file and a tail that follows it.
        let ids: Vec<String> = (0..20_011).map(|i| format!("s{i}")).collect();
        table_of(&ids[..18_000]).save(&path).unwrap();
        let tail: Vec<(Fingerprint, u32)> = (18_000..20_011)
            .map(|i| (Fingerprint::of(ids[i].as_bytes()), i as u32))
            .collect();
        write_merged(&[&Run::from_unsorted(tail)], 20_011, &tail_path(&path)).unwrap();
        let r = TableReader::open(&path, 20_011).unwrap();
        assert_eq!(r.tail.len(), 2011);
        let mut buf = Vec::new();
        // Every id and as many absent ones (dense: windows), then every
        // 97th (sparse: a block a probe), then the very first and last.
        let mut all: Vec<Fingerprint> = (0..40_000)
            .map(|i| Fingerprint::of(format!("s{i}").as_bytes()))
            .collect();
        all.sort_unstable();
        let sparse: Vec<Fingerprint> = all.iter().copied().step_by(97).collect();
        let ends = vec![all[0], all[all.len() - 1]];
        for probes in [&all, &sparse, &ends] {
            let mut got = vec![None; probes.len()];
            r.find_sorted(
                probes.len(),
                |i| probes[i],
                |i, f| got[i] = Some(f),
                &mut buf,
            )
            .unwrap();
            for (i, fp) in probes.iter().enumerate() {
                assert_eq!(got[i], r.find(*fp), "probe {i} of {}", probes.len());
            }
        }
        let mut found = |probes: &[Fingerprint]| {
            let mut n = 0;
            r.find_sorted(
                probes.len(),
                |i| probes[i],
                |_, f| n += usize::from(f.is_some()),
                &mut buf,
            )
            .unwrap();
            n
        };
        assert_eq!(found(&all), 20_011);
    }

    #[test]
    fn a_reader_saves_new_users_as_a_loaded_table_does() {
        let ids: Vec<String> = (0..6000).map(|i| format!("n{i}")).collect();
        let new_run = |from: usize, to: usize| {
            Run::from_unsorted(
                (from..to)
                    .map(|i| (Fingerprint::of(ids[i].as_bytes()), i as u32))
                    .collect(),
            )
        };
        // (main, tail, new): a tail alone (new ≤ an eighth of main), the
        // tail and new merged into the main file, into an empty store.
        for (main, tail, new) in [
            (4000, 4100, 4300),
            (4000, 4100, 6000),
            (0, 0, 900),
            (4000, 4000, 4000),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("fp.bin");
            if main > 0 {
                table_of(&ids[..main]).save(&path).unwrap();
            }
            if tail > main {
                write_merged(&[&new_run(main, tail)], tail as u32, &tail_path(&path)).unwrap();
            }
            let r = TableReader::open(&path, tail as u32).unwrap();
            assert!(r
                .save_merged(&new_run(tail, new), new as u32, &path)
                .unwrap());
            let after = TableReader::open(&path, new as u32).unwrap();
            for (i, id) in ids.iter().enumerate() {
                let want = (i < new).then_some(i as u32);
                assert_eq!(
                    after.find(Fingerprint::of(id.as_bytes())),
                    Some(want),
                    "{id} ({main}, {tail}, {new})"
                );
            }
            let tail_written = tail_path(&path).exists();
            let expect_tail = main > 0 && (new - main) * TAIL_SHARE <= main && new > main;
            assert_eq!(tail_written, expect_tail, "({main}, {tail}, {new})");
        }
        // A main file replaced since the reader read it: nothing written.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fp.bin");
        table_of(&ids[..4000]).save(&path).unwrap();
        let r = TableReader::open(&path, 4000).unwrap();
        table_of(&ids[..4500]).save(&path).unwrap();
        assert!(!r.save_merged(&new_run(4000, 4100), 4100, &path).unwrap());
        assert!(!tail_path(&path).exists());
    }

    /// A store of `n` users `{prefix}0..`, committed without a table save.
    fn store_with_users(dir: &Path, prefix: &str, n: u32) -> Store {
        let store = Store::open(dir).unwrap();
        let mut txn = store.begin_import().unwrap();
        for u in 0..n {
            txn.new_user(format!("{prefix}{u}").as_bytes()).unwrap();
        }
        txn.commit(None).unwrap();
        store
    }

    #[test]
    fn a_damaged_table_file_is_rebuilt_for_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_users(dir.path(), "d", 3000);
        store.fingerprint_reader().unwrap();
        let path = table_path(&store);
        let mut bytes = std::fs::read(&path).unwrap();
        // One entry's user index changed; the header still covers everyone.
        bytes[20 + ENTRY_BYTES * 1000 + 10] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        assert!(TableReader::open(&path, 3000).is_none(), "damage not seen");
        let r = store.fingerprint_reader().unwrap();
        for u in 0..3000u32 {
            let id = format!("d{u}");
            assert_eq!(store.find_user_with(&r, &id).unwrap(), Some(u), "{id}");
        }
    }

    #[test]
    fn a_table_saved_with_new_users_is_the_merged_table_saved() {
        // Crowded fingerprints (ties of key, shared prefixes and
        // sub-buckets, empty ones between) and spread ones; a table large
        // enough for a directory past the prefix bits.
        let entries = |range: std::ops::Range<u64>, c: u16| -> Vec<(Fingerprint, u32)> {
            range
                .map(|k| (crowded(k, c), k as u32))
                .chain((0..300u64).map(|k| {
                    (
                        Fingerprint::of(&(k + (u64::from(c) << 20)).to_le_bytes()),
                        k as u32,
                    )
                }))
                .collect()
        };
        let dir = tempfile::tempdir().unwrap();
        for (old, new) in [
            (0..4000u64, 4000..4500),
            (0..0, 0..500),
            (0..4000, 0..0),
            (0..300_000, 3..9),
        ] {
            let mut table = FingerprintTable::default();
            let before = entries(old.clone(), 1);
            let covers = before.len() as u32;
            table.merge(Run::from_unsorted(before), covers);
            let added = Run::from_unsorted(entries(new, 2));
            // A table file covers as many users as it has entries.
            let covers = covers + added.len() as u32;
            let streamed = dir.path().join("streamed.bin");
            table.save_merged(&added, covers, &streamed).unwrap();
            let mut merged = table.clone_for_test();
            merged.merge(added, covers);
            let whole = dir.path().join("whole.bin");
            merged.save(&whole).unwrap();
            assert_eq!(
                std::fs::read(&streamed).unwrap(),
                std::fs::read(&whole).unwrap(),
                "{old:?}"
            );
            // Read back, the table is the merged one, directory and all.
            let read = read_file(&streamed).unwrap();
            assert!(read.run == merged.run, "{old:?}");
            assert_eq!(read.covers, covers);
        }
    }

    #[test]
    fn a_table_file_that_cannot_be_written_is_an_error_not_a_hang() {
        // Writes to /dev/full fail with "no space left": the disk thread
        // stops, and the next hand-off or the finish says why.
        let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            eprintln!("SKIPPED: no /dev/full here");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let (path, tmp) = (dir.path().join("t.bin"), dir.path().join("t.bin.tmp"));
        let n = 3 * ENTRIES_PER_WRITE as u64;
        let mut w = TableWriter::start(&path, tmp, full, n as u32, n, false).unwrap();
        let mut err = None;
        for k in 0..n {
            if let Err(e) = w.push(Fingerprint::of(&k.to_le_bytes()), k as u32) {
                err = Some(e);
                break;
            }
        }
        // Whether a push saw it or not, it is the disk thread's error.
        let err = err.unwrap_or_else(|| w.join().err().expect("the failed write is reported"));
        match err {
            Error::Io { source, .. } => {
                assert_eq!(source.kind(), std::io::ErrorKind::StorageFull, "{source}")
            }
            other => panic!("{other}"),
        }
        assert!(!path.exists());
    }

    #[test]
    fn the_filter_holds_every_entry_and_few_others() {
        let present: Vec<Fingerprint> = (0..50_000)
            .map(|i| Fingerprint::of(format!("p{i}").as_bytes()))
            .collect();
        let mut f = Filter::with_entries(present.len() as u64);
        for &fp in &present {
            f.insert(fp);
        }
        assert!(present.iter().all(|&fp| f.may_contain(fp)));
        let absent = (0..100_000)
            .filter(|i| f.may_contain(Fingerprint::of(format!("a{i}").as_bytes())))
            .count();
        // About 2 % expected.
        assert!(absent < 4_000, "{absent} false positives in 100000");
        assert!(absent > 0, "a filter that says no to everything");
        assert!(!Filter::default().may_contain(present[0]));
    }

    #[test]
    fn fences_are_searched_within_their_prefix_as_in_all_of_them() {
        // Fences crowded into a few prefixes (ties included) and spread.
        let mut fences: Vec<Fingerprint> = (0..3000u64)
            .map(|k| crowded(k, (k % 3) as u16))
            .chain((0..500u64).map(|k| Fingerprint::of(&k.to_le_bytes())))
            .collect();
        fences.sort();
        let r = TableReader {
            file: None,
            covers: 0,
            count: fences.len() as u64,
            fence_starts: fence_starts(&fences),
            fences: fences.clone(),
            filter: Filter::default(),
            tail: Run::default(),
        };
        let probes = fences
            .iter()
            .copied()
            .chain((0..4000u64).map(|k| crowded(k * 7 + 1, 1)))
            .chain((500..2500u64).map(|k| Fingerprint::of(&k.to_le_bytes())))
            .chain([
                Fingerprint { key: 0, check: 0 },
                Fingerprint {
                    key: u64::MAX,
                    check: u16::MAX,
                },
            ]);
        for fp in probes {
            assert_eq!(
                r.fences_up_to(fp),
                fences.partition_point(|f| *f <= fp),
                "{fp:?}"
            );
        }
    }

    #[test]
    fn merge_keeps_order_and_old_entries() {
        let ids: Vec<String> = (0..1000).map(|i| format!("a{i}")).collect();
        let mut t = table_of(&ids[..600]);
        let more = ids[600..]
            .iter()
            .enumerate()
            .map(|(i, id)| (Fingerprint::of(id.as_bytes()), 600 + i as u32))
            .collect();
        t.merge(Run::from_unsorted(more), 1000);
        let all: Vec<Fingerprint> = t.run.iter().map(|(fp, _)| fp).collect();
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(t.lookup(Fingerprint::of(id.as_bytes())), Some(i as u32));
        }
    }

    #[test]
    fn same_key_different_check_is_not_a_match() {
        let mut t = FingerprintTable::default();
        let fp = Fingerprint { key: 5, check: 1 };
        t.merge(Run::from_sorted([(fp, 9)]), 1);
        assert_eq!(t.lookup(fp), Some(9));
        assert_eq!(t.lookup(Fingerprint { key: 5, check: 2 }), None);
    }

    #[test]
    fn file_round_trip_and_corruption_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fp.bin");
        let ids: Vec<String> = (0..10_000).map(|i| format!("x{i}")).collect();
        let mut t = table_of(&ids);
        t.save(&path).unwrap();
        let back = read_file(&path).unwrap();
        assert_eq!(back.run, t.run);
        assert_eq!(back.covers, 10_000);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[100] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert!(read_file(&path).is_none());
    }

    /// A table crowded into few buckets, so that parts begin and end
    /// inside one bucket and across empty ones.
    fn crowded_table(n: u64) -> FingerprintTable {
        let entries = (0..n)
            .map(|k| (crowded(k * 7919, (k % 3) as u16), k as u32))
            .collect::<std::collections::BTreeMap<_, _>>()
            .into_iter()
            .collect();
        let mut t = FingerprintTable::default();
        let run = Run::from_unsorted(entries);
        let covers = run.len() as u32;
        t.merge(run, covers);
        t
    }

    #[test]
    fn a_table_read_in_parts_is_the_table_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fp.bin");
        // Past three chunks, the last one short; spread and crowded keys.
        let ids: Vec<String> = (0..3 * CHUNK_ENTRIES as usize + 777)
            .map(|i| format!("p{i}"))
            .collect();
        for mut t in [table_of(&ids), crowded_table(3 * CHUNK_ENTRIES + 5)] {
            t.save(&path).unwrap();
            let whole = read_file_with(&path, 1).unwrap();
            assert_eq!(whole.run, t.run);
            for threads in [2, 3, 4, 7] {
                let parts = read_file_with(&path, threads).unwrap();
                assert_eq!(parts.run, t.run, "{threads} threads");
                assert_eq!(parts.covers, t.covers);
            }
        }
        // A damaged byte in any part, or in the checksum, is seen.
        let good = std::fs::read(&path).unwrap();
        for at in [
            30,
            20 + 14 * (2 * CHUNK_ENTRIES as usize + 3),
            good.len() - 3,
        ] {
            let mut bytes = good.clone();
            bytes[at] ^= 0x10;
            std::fs::write(&path, &bytes).unwrap();
            for threads in [1, 2, 4] {
                assert!(
                    read_file_with(&path, threads).is_none(),
                    "byte {at}, {threads} threads"
                );
            }
        }
        // Two chunks swapped: each part is in order, and the checksums of
        // the chunks are all there, but not in their order.
        let mut bytes = good.clone();
        let chunk = CHUNK_ENTRIES as usize * ENTRY_BYTES;
        let (a, b) = (20, 20 + chunk);
        let first: Vec<u8> = bytes[a..a + chunk].to_vec();
        bytes.copy_within(b..b + chunk, a);
        bytes[b..b + chunk].copy_from_slice(&first);
        std::fs::write(&path, &bytes).unwrap();
        for threads in [1, 2, 4] {
            assert!(
                read_file_with(&path, threads).is_none(),
                "{threads} threads"
            );
        }
    }

    /// Rewrites the table file at `path` as version 2 wrote it (the same
    /// entries, one checksum of the whole body) and returns its bytes.
    fn rewrite_as_version_2(path: &Path) -> Vec<u8> {
        let mut bytes = std::fs::read(path).unwrap();
        bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
        let body = bytes.len() - 8;
        let sum = xxhash_rust::xxh3::xxh3_64(&bytes[20..body]);
        bytes[body..].copy_from_slice(&sum.to_le_bytes());
        std::fs::write(path, &bytes).unwrap();
        bytes
    }

    #[test]
    fn a_main_file_of_version_2_is_written_again_in_this_version_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_users(dir.path(), "u", 3000);
        // The first load writes the main file (none was).
        store.fingerprints().unwrap();
        let path = table_path(&store);
        assert_eq!(file_version(&path), Some(FILE_VERSION));
        rewrite_as_version_2(&path);
        assert_eq!(file_version(&path), Some(2));
        let t = store.fingerprints().unwrap();
        assert_eq!(file_version(&path), Some(FILE_VERSION));
        for u in 0..3000u32 {
            let fp = Fingerprint::of(format!("u{u}").as_bytes());
            assert_eq!(t.lookup(fp), Some(u), "u{u}");
        }
        assert_eq!(read_file(&path).unwrap().run, t.run);
    }

    #[test]
    fn a_file_of_version_2_is_still_read() {
        // Version 2: the same entries, one checksum of the whole body.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fp.bin");
        let ids: Vec<String> = (0..2 * CHUNK_ENTRIES as usize + 10)
            .map(|i| format!("v2-{i}"))
            .collect();
        let mut t = table_of(&ids);
        t.save(&path).unwrap();
        let mut bytes = rewrite_as_version_2(&path);
        for threads in [1, 2] {
            assert_eq!(read_file_with(&path, threads).unwrap().run, t.run);
        }
        assert_eq!(file_covers(&path), Some(ids.len() as u32));
        let fp = Fingerprint::of(b"v2-4242");
        assert_eq!(find_in_file(&path, fp, ids.len() as u32), Some(Some(4242)));
        assert!(TableReader::open(&path, ids.len() as u32).is_some());
        // Its checksum is checked as version 2's.
        bytes[40] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(read_file_with(&path, 2).is_none());
        assert!(TableReader::open(&path, ids.len() as u32).is_none());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        #[test]
        fn a_file_merged_in_place_is_the_table_saved_whole(
            old in 0usize..20_000,
            new in 0usize..3_000,
            seed in 0u32..1000,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("fingerprints.bin");
            let ids: Vec<String> = (0..old + new).map(|i| format!("s{seed}-{i}")).collect();
            table_of(&ids[..old]).save(&path).unwrap();
            let mut tail: Vec<(Fingerprint, u32)> = ids[old..]
                .iter()
                .enumerate()
                .map(|(i, id)| (Fingerprint::of(id.as_bytes()), (old + i) as u32))
                .collect();
            tail.sort_unstable();
            let merged = merge_into_file(&path, old as u32, (old + new) as u32, tail.len(), tail.iter().copied()).unwrap();
            proptest::prop_assert!(merged);
            let whole = dir.path().join("whole.bin");
            table_of(&ids).save(&whole).unwrap();
            proptest::prop_assert!(std::fs::read(&path).unwrap() == std::fs::read(&whole).unwrap());
            let back = read_file(&path).unwrap();
            proptest::prop_assert_eq!(back.covers(), (old + new) as u32);
        }
    }

    #[test]
    fn two_sorted_runs_merge_in_order_with_the_first_ones_entry_first_on_a_tie() {
        let fp = |k: u64| Fingerprint { key: k, check: 0 };
        let a = [(fp(1), 10), (fp(3), 30), (fp(3), 31), (fp(7), 70)];
        let b = [(fp(0), 0), (fp(3), 99), (fp(4), 40), (fp(9), 90)];
        let merged: Vec<_> = merge_sorted(a.into_iter(), b.into_iter()).collect();
        let idx: Vec<u32> = merged.iter().map(|&(_, i)| i).collect();
        assert_eq!(idx, [0, 10, 30, 31, 99, 40, 70, 90]);
        assert_eq!(merge_sorted(a.into_iter(), std::iter::empty()).count(), 4);
        assert_eq!(merge_sorted(std::iter::empty(), b.into_iter()).count(), 4);
    }

    #[test]
    fn a_corrupt_file_is_not_merged_into_and_nothing_is_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fingerprints.bin");
        let ids: Vec<String> = (0..5_000).map(|i| format!("c{i}")).collect();
        table_of(&ids).save(&path).unwrap();
        let tail = [(Fingerprint::of(b"new"), 5_000)];
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20 + 14 * 2_000] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        assert!(!merge_into_file(&path, 5_000, 5_001, 1, tail.iter().copied()).unwrap());
        // The wrong count in the header, too.
        assert!(!merge_into_file(&path, 4_999, 5_001, 1, tail.iter().copied()).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "the old file changed");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "left behind: {names:?}");
    }

    #[test]
    fn a_file_of_the_96_bit_version_is_not_read() {
        // Its checks were 32 bits: read as 16, no id would match. The store
        // rebuilds a table it cannot read.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fp.bin");
        let ids: Vec<String> = (0..100).map(|i| format!("v{i}")).collect();
        table_of(&ids).save(&path).unwrap();
        assert!(read_file(&path).is_some());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[4..8].copy_from_slice(&1u32.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        assert!(read_file(&path).is_none());
        assert_eq!(file_covers(&path), None);
    }
}

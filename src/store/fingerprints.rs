//! The interner's fingerprint table: distinct id → user index without
//! touching RocksDB for ids the store already knows.
//!
//! Each id is hashed once with xxh3-128; the table keeps 64 bits as the sort
//! key plus 32 more as a check (16 bytes an entry with the index). Two ids
//! are taken to be the same user when all 96 bits agree: for 10M users the
//! chance that any two distinct ids collide is about 6·10⁻¹⁶, far below the
//! disk's own error rate, and it saves a RocksDB read per known id (the
//! design measured those at ~0.5M ids/s, ten times too slow). Entries are
//! sorted, with a directory on the top bits so a lookup touches one or two
//! cache lines; lookups of a sorted batch walk memory in order.
//!
//! The table is persisted in `fingerprints.bin` next to the database as a
//! cache: a header records how many users it covers and a checksum guards
//! the body. When the store has more users (a crash after a commit but
//! before the file was rewritten) the tail is rebuilt from the `users`
//! family; when the file is missing, corrupt or ahead of the store, the whole
//! table is rebuilt.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::{xxh3_128, Xxh3};

use super::{cf, db_err, keys, Error, Result, Store};

const MAGIC: &[u8; 4] = b"SSFP";
const FILE_VERSION: u32 = 1;
const ENTRY_BYTES: usize = 16;

/// A distinct id's 96-bit fingerprint.
///
/// Packed to 4-byte alignment: 12 bytes, so a table [`Entry`] with its index
/// is 16 bytes where natural alignment made it 24 (80 MB of every 10M-user
/// table load was padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(C, packed(4))]
pub struct Fingerprint {
    /// High 64 bits: the sort key.
    pub key: u64,
    /// 32 more bits, compared on a key match.
    pub check: u32,
}

impl Fingerprint {
    /// Fingerprints a distinct id.
    #[inline]
    pub fn of(id: &[u8]) -> Fingerprint {
        let h = xxh3_128(id);
        Fingerprint {
            key: (h >> 64) as u64,
            check: h as u32,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) fp: Fingerprint,
    pub(crate) idx: u32,
}

/// The users an import created, for [`crate::store::ImportTxn::commit`] to
/// merge into the table (collected by the import's interner, which has them
/// anyway: the transaction keeps no second list).
#[derive(Debug, Default)]
pub struct NewUsers(pub(crate) Vec<Entry>);

impl NewUsers {
    /// Collects `(fingerprint, user index)` pairs.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (Fingerprint, u32)>) -> NewUsers {
        NewUsers(
            pairs
                .into_iter()
                .map(|(fp, idx)| Entry { fp, idx })
                .collect(),
        )
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Sorted fingerprint → user index table; see the module docs.
#[derive(Debug, Default)]
pub struct FingerprintTable {
    entries: Vec<Entry>,
    dir: Vec<u32>,
    shift: u32,
    covers: u32,
}

impl FingerprintTable {
    /// Number of users in the table.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no user is known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many users (`0..covers`) the table reflects.
    pub fn covers(&self) -> u32 {
        self.covers
    }

    /// The user index of a fingerprint, if known.
    #[inline]
    pub fn lookup(&self, fp: Fingerprint) -> Option<u32> {
        if self.entries.is_empty() {
            return None;
        }
        let b = (fp.key >> self.shift) as usize;
        let (lo, hi) = (self.dir[b] as usize, self.dir[b + 1] as usize);
        for e in &self.entries[lo..hi] {
            if e.fp.key == fp.key {
                if e.fp.check == fp.check {
                    return Some(e.idx);
                }
            } else if e.fp.key > fp.key {
                break;
            }
        }
        None
    }

    /// Adds entries for users `self.covers..covers` (sorted in place).
    pub(crate) fn merge(&mut self, mut new: Vec<Entry>, covers: u32) {
        new.sort_unstable_by_key(|e| e.fp);
        if self.entries.is_empty() {
            // A first load: the new entries are the table, no copy.
            self.entries = new;
            self.covers = covers;
            self.rebuild_dir();
            return;
        }
        // Merge from the back into the grown vector: no second copy of the
        // table, which is the largest allocation an import makes.
        let old_len = self.entries.len();
        self.entries.resize(
            old_len + new.len(),
            Entry {
                fp: Fingerprint { key: 0, check: 0 },
                idx: 0,
            },
        );
        let (mut i, mut j, mut w) = (old_len, new.len(), old_len + new.len());
        while j > 0 {
            w -= 1;
            if i > 0 && self.entries[i - 1].fp > new[j - 1].fp {
                self.entries[w] = self.entries[i - 1];
                i -= 1;
            } else {
                self.entries[w] = new[j - 1];
                j -= 1;
            }
        }
        self.covers = covers;
        self.rebuild_dir();
    }

    fn rebuild_dir(&mut self) {
        let n = self.entries.len().max(1);
        // About four entries a bucket (one 64-byte cache line of 16-byte
        // entries), at most 2^24 buckets (64 MiB): 16 MB at 10M users,
        // where two a bucket took 32 MB for no measurable lookup speed.
        let bits = (usize::BITS - n.leading_zeros())
            .saturating_sub(2)
            .clamp(1, 24);
        self.shift = 64 - bits;
        let buckets = 1usize << bits;
        self.dir.clear();
        self.dir.reserve(buckets + 1);
        let mut pos = 0usize;
        for b in 0..buckets {
            while pos < self.entries.len()
                && ((self.entries[pos].fp.key >> self.shift) as usize) < b
            {
                pos += 1;
            }
            self.dir.push(pos as u32);
        }
        self.dir.push(self.entries.len() as u32);
    }

    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        // Two writers may save at once (an import's commit, Personas'
        // refresh thread): each writes a file of its own, and each rename
        // puts a whole table in place (one covering fewer users than the
        // store has is completed at the next load).
        static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("bin.tmp{n}"));
        let io = |source| Error::Io {
            path: tmp.clone(),
            source,
        };
        let file = std::fs::File::create(&tmp).map_err(io)?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        let mut hasher = Xxh3::new();
        w.write_all(MAGIC).map_err(io)?;
        w.write_all(&FILE_VERSION.to_le_bytes()).map_err(io)?;
        w.write_all(&self.covers.to_le_bytes()).map_err(io)?;
        w.write_all(&(self.entries.len() as u64).to_le_bytes())
            .map_err(io)?;
        let mut buf = Vec::with_capacity(ENTRY_BYTES * 4096);
        for chunk in self.entries.chunks(4096) {
            buf.clear();
            for e in chunk {
                buf.extend_from_slice(&e.fp.key.to_le_bytes());
                buf.extend_from_slice(&e.fp.check.to_le_bytes());
                buf.extend_from_slice(&e.idx.to_le_bytes());
            }
            hasher.update(&buf);
            w.write_all(&buf).map_err(io)?;
        }
        w.write_all(&hasher.digest().to_le_bytes()).map_err(io)?;
        w.into_inner()
            .map_err(|e| io(e.into_error()))?
            .sync_data()
            .map_err(io)?;
        std::fs::rename(&tmp, path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Removes table files a killed process left half-written (nothing else
/// holds the data dir while it opens).
pub(crate) fn remove_unfinished_saves(dir: &Path) {
    super::remove_files(dir, |name| name.starts_with("fingerprints.bin.tmp"));
}

/// `(covers, count)` from a file header, if it is ours and of this version.
fn parse_header(header: &[u8; 20]) -> Option<(u32, u64)> {
    if &header[..4] != MAGIC || header[4..8] != FILE_VERSION.to_le_bytes() {
        return None;
    }
    let covers = u32::from_le_bytes(header[8..12].try_into().ok()?);
    let count = u64::from_le_bytes(header[12..20].try_into().ok()?);
    Some((covers, count))
}

/// One entry as written by [`FingerprintTable::save`].
fn decode_entry(e: &[u8]) -> Option<Entry> {
    Some(Entry {
        fp: Fingerprint {
            key: u64::from_le_bytes(e.get(..8)?.try_into().ok()?),
            check: u32::from_le_bytes(e.get(8..12)?.try_into().ok()?),
        },
        idx: u32::from_le_bytes(e.get(12..16)?.try_into().ok()?),
    })
}

pub(crate) fn table_path(store: &Store) -> PathBuf {
    store.dir().join("fingerprints.bin")
}

/// Reads the table file; `None` when it is missing, corrupt or of another version.
fn read_file(path: &Path) -> Option<FingerprintTable> {
    let file = std::fs::File::open(path).ok()?;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut header = [0u8; 20];
    r.read_exact(&mut header).ok()?;
    let (covers, count) = parse_header(&header)?;
    let count = usize::try_from(count).ok()?;
    let mut entries = Vec::with_capacity(count);
    let mut hasher = Xxh3::new();
    let mut buf = vec![0u8; ENTRY_BYTES * 4096];
    let mut left = count;
    while left > 0 {
        let n = left.min(4096);
        let bytes = &mut buf[..n * ENTRY_BYTES];
        r.read_exact(bytes).ok()?;
        hasher.update(bytes);
        for e in bytes.chunks_exact(ENTRY_BYTES) {
            entries.push(decode_entry(e)?);
        }
        left -= n;
    }
    let mut sum = [0u8; 8];
    r.read_exact(&mut sum).ok()?;
    if u64::from_le_bytes(sum) != hasher.digest() || entries.len() != covers as usize {
        return None;
    }
    let mut t = FingerprintTable {
        entries,
        dir: Vec::new(),
        shift: 63,
        covers,
    };
    t.rebuild_dir();
    Some(t)
}

/// How many users the table file covers, from its header alone (`None`
/// when the file is missing or of another version).
pub(crate) fn file_covers(path: &Path) -> Option<u32> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path).ok()?;
    let mut header = [0u8; 20];
    file.read_exact_at(&mut header, 0).ok()?;
    let (covers, count) = parse_header(&header)?;
    (count == u64::from(covers)).then_some(covers)
}

/// The table file and its entry count, if it covers exactly `users` users.
fn open_covering(path: &Path, users: u32) -> Option<(std::fs::File, u64)> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path).ok()?;
    let mut header = [0u8; 20];
    file.read_exact_at(&mut header, 0).ok()?;
    let (covers, count) = parse_header(&header)?;
    (covers == users && count == u64::from(users)).then_some((file, count))
}

/// Looks one fingerprint up in the table file without loading it (binary
/// search with positioned reads). `None` when the file is missing, of
/// another version, or does not cover exactly `users` users.
pub(crate) fn find_in_file(path: &Path, fp: Fingerprint, users: u32) -> Option<Option<u32>> {
    use std::os::unix::fs::FileExt;
    let (file, count) = open_covering(path, users)?;
    let read = |i: u64| -> Option<Entry> {
        let mut e = [0u8; ENTRY_BYTES];
        file.read_exact_at(&mut e, 20 + i * ENTRY_BYTES as u64)
            .ok()?;
        decode_entry(&e)
    };
    search(count, fp, read)
}

/// Binary search of `fp` among `n` sorted entries read by `entry_at`:
/// `None` when an entry cannot be read.
fn search(n: u64, fp: Fingerprint, entry_at: impl Fn(u64) -> Option<Entry>) -> Option<Option<u32>> {
    let (mut lo, mut hi) = (0u64, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let e = entry_at(mid)?;
        match e.fp.cmp(&fp) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => return Some(Some(e.idx)),
        }
    }
    Some(None)
}

/// Entries per block of a [`TableReader`]: one fence fingerprint in memory
/// per block, one read of a block per lookup.
const BLOCK_ENTRIES: u64 = 256;

/// The persisted table opened for many lookups (the real-time path): the
/// first fingerprint of every block of 256 entries is kept in memory (64 KB
/// per million users), so a lookup is a search in memory and one read of
/// 4 KB, where [`find_in_file`] opens the file and reads log2(n) times.
#[derive(Debug)]
pub struct TableReader {
    /// `None` for an empty store (no file is written for it).
    file: Option<std::fs::File>,
    covers: u32,
    count: u64,
    fences: Vec<Fingerprint>,
}

impl TableReader {
    /// Opens the table at `path` if it covers exactly `users` users.
    pub(crate) fn open(path: &Path, users: u32) -> Option<TableReader> {
        use std::os::unix::fs::FileExt;
        if users == 0 {
            return Some(TableReader {
                file: None,
                covers: 0,
                count: 0,
                fences: Vec::new(),
            });
        }
        let (file, count) = open_covering(path, users)?;
        let mut fences = Vec::with_capacity(count.div_ceil(BLOCK_ENTRIES) as usize);
        let mut e = [0u8; ENTRY_BYTES];
        for b in 0..count.div_ceil(BLOCK_ENTRIES) {
            file.read_exact_at(&mut e, 20 + b * BLOCK_ENTRIES * ENTRY_BYTES as u64)
                .ok()?;
            fences.push(decode_entry(&e)?.fp);
        }
        Some(TableReader {
            file: Some(file),
            covers: users,
            count,
            fences,
        })
    }

    /// Users the table covers.
    pub fn covers(&self) -> u32 {
        self.covers
    }

    /// The user index of fingerprint `fp` (unverified: a match must be
    /// checked against `users`); `None` when absent or unreadable.
    /// Shared between threads: positioned reads into a buffer of its own.
    pub(crate) fn find(&self, fp: Fingerprint) -> Option<Option<u32>> {
        use std::os::unix::fs::FileExt;
        let block = self.fences.partition_point(|f| *f <= fp);
        let Some(file) = &self.file else {
            return Some(None);
        };
        if block == 0 {
            return Some(None);
        }
        let first = (block as u64 - 1) * BLOCK_ENTRIES;
        let n = BLOCK_ENTRIES.min(self.count - first) as usize;
        let mut buf = [0u8; BLOCK_ENTRIES as usize * ENTRY_BYTES];
        let bytes = &mut buf[..n * ENTRY_BYTES];
        file.read_exact_at(bytes, 20 + first * ENTRY_BYTES as u64)
            .ok()?;
        search(n as u64, fp, |i| {
            let at = i as usize * ENTRY_BYTES;
            decode_entry(&bytes[at..at + ENTRY_BYTES])
        })
    }
}

/// Fingerprints of users `from..` read back from the `users` family.
fn scan_users(store: &Store, from: u32) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mode = rocksdb::IteratorMode::From(&keys::user(from)[..], rocksdb::Direction::Forward);
    for item in store.db().iterator_cf(store.cf(cf::USERS), mode) {
        let (k, v) = item.map_err(db_err("scan", cf::USERS))?;
        let idx = keys::read_u32(&k).ok_or(Error::Corrupt {
            what: "user key",
            reason: "shorter than 4 bytes".into(),
        })?;
        out.push(Entry {
            fp: Fingerprint::of(&v),
            idx,
        });
    }
    Ok(out)
}

pub(crate) fn load(store: &Store) -> Result<FingerprintTable> {
    let users = store.counters().user_count;
    let path = table_path(store);
    let mut table = match read_file(&path) {
        Some(t) if t.covers <= users => t,
        _ => FingerprintTable::default(),
    };
    if table.covers < users {
        let from = table.covers;
        tracing::info!(
            from,
            to = users,
            "rebuilding fingerprint table from the store"
        );
        let tail: Vec<Entry> = scan_users(store, from)?
            .into_iter()
            .filter(|e| e.idx < users)
            .collect();
        table.merge(tail, users);
        table.save(&path)?;
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_of(ids: &[String]) -> FingerprintTable {
        let mut t = FingerprintTable::default();
        let entries = ids
            .iter()
            .enumerate()
            .map(|(i, id)| Entry {
                fp: Fingerprint::of(id.as_bytes()),
                idx: i as u32,
            })
            .collect();
        t.merge(entries, ids.len() as u32);
        t
    }

    #[test]
    fn an_entry_is_sixteen_bytes() {
        // The table is the largest allocation of an import: padding here
        // costs 8 MB per million users.
        assert_eq!(std::mem::size_of::<Entry>(), 16);
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
    fn merge_keeps_order_and_old_entries() {
        let ids: Vec<String> = (0..1000).map(|i| format!("a{i}")).collect();
        let mut t = table_of(&ids[..600]);
        let more = ids[600..]
            .iter()
            .enumerate()
            .map(|(i, id)| Entry {
                fp: Fingerprint::of(id.as_bytes()),
                idx: 600 + i as u32,
            })
            .collect();
        t.merge(more, 1000);
        assert!(t.entries.windows(2).all(|w| w[0].fp <= w[1].fp));
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(t.lookup(Fingerprint::of(id.as_bytes())), Some(i as u32));
        }
    }

    #[test]
    fn same_key_different_check_is_not_a_match() {
        let mut t = FingerprintTable::default();
        let fp = Fingerprint { key: 5, check: 1 };
        t.merge(vec![Entry { fp, idx: 9 }], 1);
        assert_eq!(t.lookup(fp), Some(9));
        assert_eq!(t.lookup(Fingerprint { key: 5, check: 2 }), None);
    }

    #[test]
    fn file_round_trip_and_corruption_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fp.bin");
        let ids: Vec<String> = (0..10_000).map(|i| format!("x{i}")).collect();
        let t = table_of(&ids);
        t.save(&path).unwrap();
        let back = read_file(&path).unwrap();
        assert_eq!(back.entries, t.entries);
        assert_eq!(back.covers, 10_000);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[100] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert!(read_file(&path).is_none());
    }
}

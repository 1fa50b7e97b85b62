//! Distinct id → user index for a batch of ids, the hot spot of ingestion.
//!
//! A batch is fingerprinted, sorted by fingerprint and looked up in the
//! [`FingerprintTable`] in that order, so the table is walked front to back
//! instead of probed at random — or, for a users file in a large store or
//! an id list small next to it, in the table's files through a
//! [`TableReader`], whose windows of blocks the sorted batch reads in file
//! order. Ids the table does not know
//! are either new in this import already ([`Pending`], so a repeated new id
//! gets one index) or truly new, and then interned through the import
//! transaction.

use crate::store::{self, Fingerprint, ImportTxn, KnownUsers, NewUsers};
#[cfg(doc)]
use crate::store::{FingerprintTable, TableReader};

use super::pending::Pending;

/// One id of a batch: its fingerprint and its position in the batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probe {
    key: u64,
    check: u16,
    pos: u32,
}

impl Probe {
    #[inline]
    pub(crate) fn new(id: &[u8], pos: u32) -> Probe {
        let fp = Fingerprint::of(id);
        Probe {
            key: fp.key,
            check: fp.check,
            pos,
        }
    }

    fn fp(&self) -> Fingerprint {
        Fingerprint {
            key: self.key,
            check: self.check,
        }
    }
}

/// Puts probes in the order [`Interner::resolve`] walks the table in: by
/// key. A reader with a thread of its own sorts there, off the thread that
/// resolves (a fifth of a 10M known-id import's time was this sort).
pub(crate) fn sort(probes: &mut [Probe]) {
    probes.sort_unstable_by_key(|p| p.key);
}

/// Bits of the key a [`Radix`] sort buckets by.
const RADIX_BITS: u32 = 16;

/// A reusable radix sort of probes by key: keys are hashes, spread evenly,
/// so one counting pass on their top [`RADIX_BITS`] bits leaves buckets of
/// a few probes each (17 at 1M), which a small sort finishes. On the
/// id-list reader's 1M-probe blocks it replaces the comparison sort that
/// had become the busier thread's largest cost.
#[derive(Default)]
pub(crate) struct Radix {
    counts: Vec<u32>,
    scratch: Vec<Probe>,
}

impl Radix {
    /// Sorts `probes` by key (the sorted probes may come back in another
    /// allocation: the two buffers trade places).
    pub(crate) fn sort(&mut self, probes: &mut Vec<Probe>) {
        let buckets = 1usize << RADIX_BITS;
        if probes.len() < buckets {
            sort(probes);
            return;
        }
        let bucket = |p: &Probe| (p.key >> (64 - RADIX_BITS)) as usize;
        self.counts.clear();
        self.counts.resize(buckets + 1, 0);
        for p in probes.iter() {
            self.counts[bucket(p) + 1] += 1;
        }
        for b in 0..buckets {
            self.counts[b + 1] += self.counts[b];
        }
        self.scratch.clear();
        self.scratch.resize(
            probes.len(),
            Probe {
                key: 0,
                check: 0,
                pos: 0,
            },
        );
        // `counts[b]` runs from bucket b's start to its end while filling.
        for p in probes.iter() {
            let b = bucket(p);
            let at = self.counts[b] as usize;
            self.scratch[at] = *p;
            self.counts[b] += 1;
        }
        let mut start = 0usize;
        for b in 0..buckets {
            let end = self.counts[b] as usize;
            self.scratch[start..end].sort_unstable_by_key(|p| p.key);
            start = end;
        }
        std::mem::swap(probes, &mut self.scratch);
    }
}

/// Resolves ids to user indexes for one import; see the module docs.
pub struct Interner {
    table: Option<KnownUsers>,
    /// The table while it is still loading on another thread: the first
    /// batch waits for it, so reading and hashing overlap the load.
    loading: Option<crossbeam::channel::Receiver<store::Result<KnownUsers>>>,
    /// Paged lookups: per probe of a batch, the user found (`u32::MAX`
    /// for none), and the reader's window of the file.
    found: Vec<u32>,
    window: Vec<u8>,
    /// Users this import created.
    pending: Pending,
    /// Per new id of a batch, in key order: the position of its first row;
    /// then those ids in row order, and the index each was given (buffers
    /// reused across batches).
    fresh: Vec<u32>,
    order: Vec<u32>,
    assigned: Vec<u32>,
}

impl Interner {
    /// An interner whose table arrives on `loading` (sent by a loader thread).
    pub(crate) fn deferred(
        loading: crossbeam::channel::Receiver<store::Result<KnownUsers>>,
    ) -> Interner {
        Interner {
            table: None,
            loading: Some(loading),
            found: Vec::new(),
            window: Vec::new(),
            pending: Pending::default(),
            fresh: Vec::new(),
            order: Vec::new(),
            assigned: Vec::new(),
        }
    }

    fn table(&mut self) -> store::Result<&mut KnownUsers> {
        if let Some(rx) = self.loading.take() {
            let table = rx.recv().map_err(|_| store::Error::Corrupt {
                what: "fingerprint table",
                reason: "the loader thread ended without a table".into(),
            })??;
            self.table = Some(table);
        }
        Ok(self
            .table
            .get_or_insert_with(|| KnownUsers::Loaded(Default::default())))
    }

    /// The table and the users this import created, for the commit to
    /// save together; the interner forgets the new users (its map is freed
    /// before the commit writes).
    pub fn finish(&mut self) -> store::Result<(&KnownUsers, NewUsers)> {
        let new = NewUsers(std::mem::take(&mut self.pending).finish());
        Ok((self.table()?, new))
    }

    /// Resolves a batch: `out[p.pos]` receives the index of each probe's id;
    /// `id_of(pos)` gives the id bytes, needed only for new ids.
    pub(crate) fn resolve<'a>(
        &mut self,
        txn: &mut ImportTxn<'_>,
        probes: &mut [Probe],
        id_of: impl Fn(u32) -> &'a [u8],
        out: &mut [u32],
    ) -> store::Result<()> {
        // The id-list reader sorts on its producer thread (see `sort`).
        if !probes.is_sorted_by_key(|p| p.key) {
            sort(probes);
        }
        self.table()?;
        if let Some(KnownUsers::Paged(reader)) = &self.table {
            let found = &mut self.found;
            found.clear();
            found.resize(probes.len(), u32::MAX);
            reader
                .find_sorted(
                    probes.len(),
                    |i| probes[i].fp(),
                    |i, idx| found[i] = idx.unwrap_or(u32::MAX),
                    &mut self.window,
                )
                .ok_or_else(|| store::Error::Corrupt {
                    what: "fingerprint table",
                    reason: "its file could not be read during the import".into(),
                })?;
        }
        // New ids get a tentative index in key order (`base + k`, above every
        // existing user); once the batch is walked, indexes are handed out in
        // row order instead, so a first load numbers users as its file lists
        // them and its changes arrive sorted by user.
        let base = txn.next_user_index();
        self.fresh.clear();
        for (i, p) in probes.iter().enumerate() {
            let fp = p.fp();
            let known = match &self.table {
                Some(KnownUsers::Loaded(t)) => t.lookup(fp),
                _ => self.found.get(i).copied().filter(|&f| f != u32::MAX),
            };
            let idx = match known.or_else(|| self.pending.get(fp)) {
                Some(idx) => idx,
                None => {
                    let tentative = u32::try_from(self.fresh.len())
                        .ok()
                        .and_then(|k| base.checked_add(k))
                        .ok_or(store::Error::Full)?;
                    self.fresh.push(p.pos);
                    self.pending.insert(fp, tentative);
                    tentative
                }
            };
            out[p.pos as usize] = idx;
        }
        if !self.fresh.is_empty() {
            let fresh = &self.fresh;
            // Row order without a sort: positions are distinct and below
            // the batch's length, so each new id's slot is its position.
            self.order.clear();
            self.order.resize(out.len(), u32::MAX);
            for (k, &pos) in fresh.iter().enumerate() {
                self.order[pos as usize] = k as u32;
            }
            self.order.retain(|&k| k != u32::MAX);
            self.assigned.clear();
            self.assigned.resize(fresh.len(), 0);
            for &k in &self.order {
                self.assigned[k as usize] = txn.new_user(id_of(fresh[k as usize]))?;
            }
            let assigned = &self.assigned;
            let final_of = |t: u32| assigned[(t - base) as usize];
            for o in out.iter_mut().filter(|o| **o >= base) {
                *o = final_of(*o);
            }
            self.pending.remap_batch(final_of);
        }
        self.pending.end_batch();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn radix_sort_orders_by_key_and_keeps_every_probe() {
        let mut radix = Radix::default();
        // Below the bucket count (comparison sort), above it, and reused
        // (the buffers trade places between calls).
        for n in [1000usize, 300_000, 70_000] {
            let ids: Vec<String> = (0..n)
                .map(|i| format!("user-{}", i % (n - n / 10)))
                .collect();
            let mut probes: Vec<Probe> = ids
                .iter()
                .enumerate()
                .map(|(i, id)| Probe::new(id.as_bytes(), i as u32))
                .collect();
            let mut expected: Vec<(u64, u16, u32)> =
                probes.iter().map(|p| (p.key, p.check, p.pos)).collect();
            radix.sort(&mut probes);
            assert!(probes.is_sorted_by_key(|p| p.key), "n = {n}");
            let mut got: Vec<(u64, u16, u32)> =
                probes.iter().map(|p| (p.key, p.check, p.pos)).collect();
            expected.sort_unstable();
            got.sort_unstable();
            assert_eq!(got, expected, "n = {n}");
        }
    }

    /// An interner over an empty table, as an import into a new store has.
    fn empty_interner() -> Interner {
        let (tx, rx) = crossbeam::channel::bounded(1);
        tx.send(Ok(KnownUsers::Loaded(Default::default()))).unwrap();
        Interner::deferred(rx)
    }

    #[test]
    fn new_users_are_numbered_in_row_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = store::Store::open(dir.path()).unwrap();
        let mut txn = store.begin_import().unwrap();
        let mut interner = empty_interner();
        let mut resolve = |txn: &mut ImportTxn<'_>, ids: &[&'static str]| {
            let mut probes: Vec<Probe> = ids
                .iter()
                .enumerate()
                .map(|(i, id)| Probe::new(id.as_bytes(), i as u32))
                .collect();
            let mut out = vec![0u32; ids.len()];
            interner
                .resolve(txn, &mut probes, |p| ids[p as usize].as_bytes(), &mut out)
                .unwrap();
            out
        };
        assert_eq!(
            resolve(&mut txn, &["c", "a", "b", "a", "d"]),
            [0, 1, 2, 1, 3]
        );
        assert_eq!(resolve(&mut txn, &["e", "b", "f", "c"]), [4, 2, 5, 0]);
        txn.commit(Some(interner.finish().unwrap())).unwrap();
        for (idx, id) in ["c", "a", "b", "d", "e", "f"].iter().enumerate() {
            assert_eq!(store.distinct_id(idx as u32).unwrap().as_deref(), Some(*id));
            assert_eq!(store.user_index(id).unwrap(), Some(idx as u32));
        }
    }

    #[test]
    fn ids_sharing_64_bits_stay_two_users() {
        let dir = tempfile::tempdir().unwrap();
        let store = store::Store::open(dir.path()).unwrap();
        let mut txn = store.begin_import().unwrap();
        let mut interner = empty_interner();
        let probe = |check: u16, pos: u32| Probe {
            key: 42,
            check,
            pos,
        };
        let ids: [&[u8]; 4] = [b"x", b"y", b"x", b"y"];
        let mut probes = [probe(1, 0), probe(2, 1), probe(1, 2), probe(2, 3)];
        let mut out = [0u32; 4];
        interner
            .resolve(&mut txn, &mut probes, |p| ids[p as usize], &mut out)
            .unwrap();
        assert_ne!(out[0], out[1], "a 64-bit collision merged two users");
        assert_eq!((out[0], out[1]), (out[2], out[3]));
        // A later batch finds both again.
        let mut again = [probe(2, 0), probe(1, 1)];
        let mut out2 = [0u32; 2];
        interner
            .resolve(&mut txn, &mut again, |p| ids[p as usize], &mut out2)
            .unwrap();
        assert_eq!(out2, [out[1], out[0]]);
        let (_, new) = interner.finish().unwrap();
        assert_eq!(new.len(), 2);
        assert_eq!(txn.new_users(), 2);
    }
}

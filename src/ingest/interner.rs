//! Distinct id → user index for a batch of ids, the hot spot of ingestion.
//!
//! A batch is fingerprinted, sorted by fingerprint and looked up in the
//! [`FingerprintTable`] in that order, so the table is walked front to back
//! instead of probed at random. Ids the table does not know are either new in
//! this import already (the `pending` map, so a repeated new id gets one
//! index) or truly new, and then interned through the import transaction.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::store::{self, Fingerprint, FingerprintTable, ImportTxn};

/// One id of a batch: its fingerprint and its position in the batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probe {
    key: u64,
    check: u32,
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

/// Fingerprints are uniform hashes already; hashing them again is waste.
#[derive(Default)]
struct FpHasher(u64);

impl Hasher for FpHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
    fn write_u32(&mut self, n: u32) {
        self.0 ^= u64::from(n).rotate_left(32);
    }
}

/// Resolves ids to user indexes for one import; see the module docs.
pub struct Interner {
    table: Option<FingerprintTable>,
    /// The table while it is still loading on another thread: the first
    /// batch waits for it, so reading and hashing overlap the load.
    loading: Option<crossbeam::channel::Receiver<store::Result<FingerprintTable>>>,
    pending: HashMap<Fingerprint, u32, BuildHasherDefault<FpHasher>>,
}

impl Interner {
    /// An interner whose table arrives on `loading` (sent by a loader thread).
    pub(crate) fn deferred(
        loading: crossbeam::channel::Receiver<store::Result<FingerprintTable>>,
    ) -> Interner {
        Interner {
            table: None,
            loading: Some(loading),
            pending: HashMap::default(),
        }
    }

    fn table(&mut self) -> store::Result<&mut FingerprintTable> {
        if let Some(rx) = self.loading.take() {
            let table = rx.recv().map_err(|_| store::Error::Corrupt {
                what: "fingerprint table",
                reason: "the loader thread ended without a table".into(),
            })??;
            self.table = Some(table);
        }
        Ok(self.table.get_or_insert_with(FingerprintTable::default))
    }

    /// The table, for the commit to extend with this import's new users.
    pub fn table_mut(&mut self) -> store::Result<&mut FingerprintTable> {
        self.table()
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
        probes.sort_unstable_by_key(|p| p.key);
        self.table()?;
        let Interner { table, pending, .. } = self;
        let table = table.as_ref().ok_or(store::Error::Corrupt {
            what: "fingerprint table",
            reason: "missing".into(),
        })?;
        for p in probes.iter() {
            let fp = p.fp();
            let idx = match table.lookup(fp) {
                Some(idx) => idx,
                None => match pending.get(&fp) {
                    Some(&idx) => idx,
                    None => {
                        let idx = txn.new_user(id_of(p.pos), fp)?;
                        pending.insert(fp, idx);
                        idx
                    }
                },
            };
            out[p.pos as usize] = idx;
        }
        Ok(())
    }
}

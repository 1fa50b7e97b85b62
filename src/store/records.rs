//! Configuration and history records (destinations, syncs, executions,
//! execution bitmaps): small bincode records behind the codec, id counters
//! in `meta`, and the writes that must land together going in one batch.

use rocksdb::WriteBatch;
use serde::{de::DeserializeOwned, Serialize};

use super::{cf, codec, db_err, Result, Store};

/// One write of a record batch.
pub(crate) enum Write {
    /// Put `value` under `key` in `cf`.
    Put(&'static str, Vec<u8>, Vec<u8>),
    /// Delete `key` in `cf`.
    Delete(&'static str, Vec<u8>),
}

impl Write {
    /// A record put.
    pub(crate) fn record<T: Serialize>(cf: &'static str, key: impl Into<Vec<u8>>, v: &T) -> Write {
        Write::Put(cf, key.into(), codec::encode_record(v))
    }

    /// A bitmap put.
    pub(crate) fn bitmap(
        cf: &'static str,
        key: impl Into<Vec<u8>>,
        b: &roaring::RoaringBitmap,
    ) -> Write {
        Write::Put(cf, key.into(), codec::encode_bitmap(b))
    }
}

impl Store {
    /// Reads one record.
    pub(crate) fn get_record<T: DeserializeOwned>(
        &self,
        cf: &'static str,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<T>> {
        self.db()
            .get_pinned_cf(self.cf(cf), key)
            .map_err(db_err("get", cf))?
            .map(|b| codec::decode_record(what, &b))
            .transpose()
    }

    /// Reads every record whose key starts with `prefix`, in key order.
    pub(crate) fn scan_records<T: DeserializeOwned>(
        &self,
        cf: &'static str,
        prefix: &[u8],
        what: &'static str,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        self.scan_with(cf, prefix, what, |_, v| out.push(v))?;
        Ok(out)
    }

    /// Like [`Store::scan_records`], with each record's key.
    pub(crate) fn scan_keyed_records<T: DeserializeOwned>(
        &self,
        cf: &'static str,
        prefix: &[u8],
        what: &'static str,
    ) -> Result<Vec<(Vec<u8>, T)>> {
        let mut out = Vec::new();
        self.scan_with(cf, prefix, what, |k, v| out.push((k.to_vec(), v)))?;
        Ok(out)
    }

    /// A big-endian u32 stored under `key`, if any.
    pub(crate) fn get_u32(&self, cf: &'static str, key: &[u8]) -> Result<Option<u32>> {
        Ok(self
            .db()
            .get_pinned_cf(self.cf(cf), key)
            .map_err(db_err("get", cf))?
            .and_then(|v| super::keys::read_u32(&v)))
    }

    /// Whether `key` is present.
    pub(crate) fn has_key(&self, cf: &'static str, key: &[u8]) -> Result<bool> {
        Ok(self
            .db()
            .get_pinned_cf(self.cf(cf), key)
            .map_err(db_err("get", cf))?
            .is_some())
    }

    /// The keys that start with `prefix`, in order (values not read).
    pub(crate) fn scan_keys(&self, cf: &'static str, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mode = rocksdb::IteratorMode::From(prefix, rocksdb::Direction::Forward);
        let mut out = Vec::new();
        for item in self.db().iterator_cf(self.cf(cf), mode) {
            let (k, _) = item.map_err(db_err("scan", cf))?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push(k.to_vec());
        }
        Ok(out)
    }

    fn scan_with<T: DeserializeOwned>(
        &self,
        cf: &'static str,
        prefix: &[u8],
        what: &'static str,
        mut f: impl FnMut(&[u8], T),
    ) -> Result<()> {
        let mode = rocksdb::IteratorMode::From(prefix, rocksdb::Direction::Forward);
        for item in self.db().iterator_cf(self.cf(cf), mode) {
            let (k, v) = item.map_err(db_err("scan", cf))?;
            if !k.starts_with(prefix) {
                break;
            }
            f(&k, codec::decode_record(what, &v)?);
        }
        Ok(())
    }

    /// Reads a bitmap record (`None` if absent).
    pub(crate) fn get_bitmap(
        &self,
        cf: &'static str,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<roaring::RoaringBitmap>> {
        self.db()
            .get_pinned_cf(self.cf(cf), key)
            .map_err(db_err("get", cf))?
            .map(|b| codec::decode_bitmap(what, &b))
            .transpose()
    }

    /// Applies writes atomically; `sync` waits for the disk (for state
    /// changes that must survive a power cut, not for per-page checkpoints,
    /// which a process crash cannot lose either way).
    pub(crate) fn write_records(&self, writes: Vec<Write>, sync: bool) -> Result<()> {
        let mut batch = WriteBatch::default();
        let mut inbound = false;
        for w in writes {
            let (Write::Put(c, ..) | Write::Delete(c, _)) = &w;
            inbound |= *c == cf::INBOUND;
            match w {
                Write::Put(c, k, v) => batch.put_cf(self.cf(c), k, v),
                Write::Delete(c, k) => batch.delete_cf(self.cf(c), k),
            }
        }
        let written = if sync {
            self.write_sync(batch, "records")
        } else {
            self.db().write(batch).map_err(db_err("write", "records"))
        };
        // Counted once written: a cache that reads the count first and the
        // records after can only read them again for nothing.
        if inbound {
            self.inbound_writes
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        written
    }

    /// How many writes to the `inbound` family this process has made: a
    /// cache of its records read when this was `n` is current while it
    /// still is (nothing else writes while the store is open).
    pub(crate) fn inbound_version(&self) -> u64 {
        self.inbound_writes
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Allocates the next id of a kind (`destination`, `sync`), starting at 1.
    pub(crate) fn next_id(&self, kind: &str) -> Result<u32> {
        let _ids = self.lock_ids();
        let key = super::keys::next_id(kind);
        let meta = self.cf(cf::META);
        let cur = self
            .db()
            .get_cf(meta, &key)
            .map_err(db_err("get", cf::META))?
            .and_then(|b| super::keys::read_u32(&b))
            .unwrap_or(1);
        self.db()
            .put_cf(meta, &key, (cur + 1).to_be_bytes())
            .map_err(db_err("put", cf::META))?;
        Ok(cur)
    }
}

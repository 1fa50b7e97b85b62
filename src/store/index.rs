//! The identity index: which users hold a given value of an identity
//! attribute (`uid`, `anonymous_id`), for inbound requests that name users
//! by those values (Cohort Sync members).
//!
//! An attribute is indexed on first use: [`Store::ensure_index`] scans its
//! values once, and from then on every import writes an entry with each
//! value it sets (in the same batch). Entries are never deleted: a lookup
//! verifies every hit against the current value, so an entry left behind by
//! a changed value or a rolled-back import is harmless, and imports need no
//! extra reads or undo records for the index.

use std::sync::PoisonError;

use xxhash_rust::xxh3::xxh3_64;

use super::{cf, db_err, keys, Result, Store, ValueRef};

/// Key of one index entry.
pub(crate) fn entry_key(attr: u32, text: &[u8], user: u32) -> [u8; 16] {
    keys::index_entry(attr, xxh3_64(text), user)
}

/// The attributes whose index is built, read at open.
pub(crate) fn load_built(store: &Store) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for item in store
        .db()
        .prefix_iterator_cf(store.cf(cf::META), keys::INDEXED_PREFIX)
    {
        let (k, _) = item.map_err(db_err("scan", cf::META))?;
        let Some(rest) = k.strip_prefix(keys::INDEXED_PREFIX) else {
            break;
        };
        if let Some(attr) = keys::read_u32(rest) {
            out.push(attr);
        }
    }
    Ok(out)
}

impl Store {
    /// Whether `attr` is indexed (imports then maintain its entries).
    pub(crate) fn is_indexed(&self, attr: u32) -> bool {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .indexed
            .contains(&attr)
    }

    /// Builds the index of attribute `name` if it is not built yet (one scan
    /// of its values, under the writer lock so no import runs meanwhile).
    /// Returns the attribute id, `None` if no user ever had it.
    pub fn ensure_index(&self, name: &str) -> Result<Option<u32>> {
        let Some(attr) = self.attr_id(name) else {
            return Ok(None);
        };
        if self.is_indexed(attr) {
            return Ok(Some(attr));
        }
        let _writer = self.lock_writer();
        if self.is_indexed(attr) {
            return Ok(Some(attr));
        }
        let started = std::time::Instant::now();
        let index_cf = self.cf(cf::ATTR_INDEX);
        let mut batch = rocksdb::WriteBatch::default();
        let mut n = 0u64;
        self.for_each_value(attr, |user, v| {
            if let Some(text) = v.identity_text() {
                batch.put_cf(index_cf, entry_key(attr, text, user), []);
                n += 1;
            }
            if batch.len() >= 100_000 {
                self.db()
                    .write(std::mem::take(&mut batch))
                    .map_err(db_err("write", cf::ATTR_INDEX))?;
            }
            Ok(())
        })?;
        batch.put_cf(self.cf(cf::META), keys::indexed(attr), []);
        self.write_sync(batch, cf::ATTR_INDEX)?;
        // Lookups seek: a million-entry memtable skiplist is several times
        // slower to seek than the SST files a flush makes.
        self.db()
            .flush_cf(index_cf)
            .map_err(db_err("flush", cf::ATTR_INDEX))?;
        self.state
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .indexed
            .push(attr);
        tracing::info!(
            attribute = name,
            entries = n,
            seconds = started.elapsed().as_secs_f64(),
            "identity index built"
        );
        Ok(Some(attr))
    }

    /// Resolves values of indexed attribute `attr` (as
    /// [`ValueRef::identity_text`] gives them): `(i, user)` for every user
    /// whose current value is `texts[i]`, ordered by `i` then user.
    /// Lookups run in key order on one iterator and the hits are verified
    /// with one batched read, which is several times faster than a seek and
    /// a point read per value.
    pub fn users_with_values(&self, attr: u32, texts: &[&[u8]]) -> Result<Vec<(u32, u32)>> {
        let mut order: Vec<([u8; 16], u32)> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| (entry_key(attr, t, 0), i as u32))
            .collect();
        order.sort_unstable();
        let mut candidates: Vec<(u32, u32)> = Vec::with_capacity(texts.len());
        let mut it = self.db().raw_iterator_cf(self.cf(cf::ATTR_INDEX));
        for (start, i) in &order {
            let prefix = &start[..12];
            // Consecutive equal values share the seek's position.
            it.seek(start);
            while let Some(k) = it.key() {
                if !k.starts_with(prefix) {
                    break;
                }
                if let Some(user) = keys::read_u32(&k[12..]) {
                    candidates.push((*i, user));
                }
                it.next();
            }
        }
        it.status().map_err(db_err("scan", cf::ATTR_INDEX))?;
        // Verify: an entry may be stale, or another value with the same hash.
        candidates.sort_unstable_by_key(|&(_, u)| u);
        let value_keys: Vec<[u8; 8]> = candidates
            .iter()
            .map(|&(_, u)| keys::attr_user(attr, u))
            .collect();
        let mut found = Vec::with_capacity(candidates.len());
        self.each_value(&value_keys, |k, v| {
            let (i, u) = candidates[k];
            let matches = match v {
                Some(b) => ValueRef::decode(b)?.identity_text() == Some(texts[i as usize]),
                None => false,
            };
            if matches {
                found.push((i, u));
            }
            Ok(())
        })?;
        found.sort_unstable();
        found.dedup();
        Ok(found)
    }
}

//! The renderer stage: user indexes → (distinct id, identifier value) with
//! ordered batched reads, written as the destination's JSON into a buffer.
//!
//! Values are read as of the execution's write sequence, so a run sends one
//! consistent point-in-time view even if an import lands while it runs (or
//! between a crash and its resume). Removed users are sent with the value as
//! of the execution that last added them: what the destination has.

use roaring::RoaringBitmap;

use super::pager::Page;
use crate::destination::segment_sync::SegmentSyncFormat;
use crate::store::{self, cf, keys, Store, ValueRef};

/// A rendered page, ready to send.
#[derive(Debug)]
pub(crate) struct Rendered {
    pub(crate) index: u32,
    pub(crate) body: Vec<u8>,
    pub(crate) adds: u32,
    pub(crate) removes: u32,
    /// Users left out for lacking a value.
    pub(crate) skipped: u32,
}

/// Everything a renderer thread needs; shared read-only between threads.
pub(crate) struct Renderer<'a> {
    pub(crate) store: &'a Store,
    pub(crate) attr: u32,
    pub(crate) write_seq: u32,
    /// (write seq, users) groups for removed users.
    pub(crate) removal_groups: Vec<(u32, RoaringBitmap)>,
    pub(crate) format: SegmentSyncFormat,
}

/// Per-thread scratch space, reused across pages.
#[derive(Default)]
pub(crate) struct Scratch {
    user_keys: Vec<[u8; 4]>,
    value_keys: Vec<[u8; 8]>,
    fallback: Vec<Vec<u8>>,
}

impl Renderer<'_> {
    fn as_of_for_removed(&self, user: u32) -> u32 {
        self.removal_groups
            .iter()
            .find(|(_, b)| b.contains(user))
            .map_or(self.write_seq, |(s, _)| *s)
    }

    /// Resolves and renders one page into `out`.
    pub(crate) fn render(
        &self,
        page: &Page,
        scratch: &mut Scratch,
        mut out: Vec<u8>,
    ) -> store::Result<Rendered> {
        let db = self.store.db();
        let users: Vec<u32> = page.adds.iter().chain(&page.removes).copied().collect();
        // Both lists are ascending, so each half of the key list is sorted.
        scratch.user_keys.clear();
        scratch
            .user_keys
            .extend(users.iter().map(|&u| keys::user(u)));
        scratch.value_keys.clear();
        scratch
            .value_keys
            .extend(users.iter().map(|&u| keys::attr_user(self.attr, u)));
        let n_add = page.adds.len();
        let fetch_ids = |range: std::ops::Range<usize>| {
            db.batched_multi_get_cf(
                self.store.cf(cf::USERS),
                scratch.user_keys[range].iter(),
                true,
            )
        };
        let fetch_vals = |range: std::ops::Range<usize>| {
            db.batched_multi_get_cf(
                self.store.cf(cf::ATTR_VALUES),
                scratch.value_keys[range].iter(),
                true,
            )
        };
        let ids: Vec<_> = fetch_ids(0..n_add)
            .into_iter()
            .chain(fetch_ids(n_add..users.len()))
            .collect();
        let vals: Vec<_> = fetch_vals(0..n_add)
            .into_iter()
            .chain(fetch_vals(n_add..users.len()))
            .collect();

        // First pass: find values that changed after the as-of point and
        // read them from history (rare; owned copies in `fallback`).
        scratch.fallback.clear();
        let mut need: Vec<Option<usize>> = vec![None; users.len()];
        for (i, &u) in users.iter().enumerate() {
            let as_of = if i < n_add {
                self.write_seq
            } else {
                self.as_of_for_removed(u)
            };
            let current_ok = match &vals[i] {
                Ok(Some(v)) => ValueRef::decode(v)?.seq <= as_of,
                Ok(None) => false,
                Err(e) => {
                    return Err(store::Error::Db {
                        op: "multi_get",
                        cf: cf::ATTR_VALUES,
                        source: e.clone(),
                    })
                }
            };
            if !current_ok {
                if let Some(v) = self.store.attr_value_as_of(self.attr, u, as_of)? {
                    let mut buf = Vec::new();
                    v.encode(as_of, &mut buf);
                    need[i] = Some(scratch.fallback.len());
                    scratch.fallback.push(buf);
                }
            }
        }

        let mut skipped = 0u32;
        let mut entries: Vec<(&[u8], ValueRef<'_>)> = Vec::with_capacity(users.len());
        let mut split = 0;
        for i in 0..users.len() {
            if i == n_add {
                split = entries.len();
            }
            let id = match &ids[i] {
                Ok(Some(id)) => &id[..],
                Ok(None) => {
                    skipped += 1;
                    continue;
                }
                Err(e) => {
                    return Err(store::Error::Db {
                        op: "multi_get",
                        cf: cf::USERS,
                        source: e.clone(),
                    })
                }
            };
            let value = match (need[i], &vals[i]) {
                (Some(f), _) => ValueRef::decode(&scratch.fallback[f])?,
                (None, Ok(Some(v)))
                    if ValueRef::decode(v)?.seq <= self.seq_for(i, n_add, users[i]) =>
                {
                    ValueRef::decode(v)?
                }
                _ => {
                    skipped += 1;
                    continue;
                }
            };
            entries.push((id, value));
        }
        if n_add == users.len() {
            split = entries.len();
        }
        let (adds, removes) = entries.split_at(split);
        self.format.render(
            page.index + 1,
            adds.iter().copied(),
            removes.iter().copied(),
            &mut out,
        );
        Ok(Rendered {
            index: page.index,
            body: out,
            adds: adds.len() as u32,
            removes: removes.len() as u32,
            skipped,
        })
    }

    fn seq_for(&self, i: usize, n_add: usize, user: u32) -> u32 {
        if i < n_add {
            self.write_seq
        } else {
            self.as_of_for_removed(user)
        }
    }
}

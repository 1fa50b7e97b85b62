//! The renderer stage: user indexes → (distinct id, identifier value) with
//! ordered batched reads, written as the destination's JSON into a buffer.
//!
//! Values are read as of the execution's write sequence, so a run sends one
//! consistent point-in-time view even if an import lands while it runs (or
//! between a crash and its resume). Removed users are sent with the value as
//! of the execution that last added them: what the destination has.

use roaring::RoaringBitmap;

use super::pager::Page;
use crate::destination::cohort_sync::{CohortSyncFormat, MemberAction};
use crate::destination::segment_sync::SegmentSyncFormat;
use crate::store::{self, cf, keys, Store, ValueRef};

/// A rendered page, ready to send.
#[derive(Debug)]
pub(crate) struct Rendered {
    pub(crate) index: u32,
    pub(crate) body: Vec<u8>,
    pub(crate) adds: u32,
    pub(crate) removes: u32,
    /// Users left out for lacking a value (or, for Cohort Sync, a value
    /// that cannot be a uid).
    pub(crate) skipped: u32,
}

/// Everything a renderer thread needs; shared read-only between threads.
pub(crate) struct Renderer<'a> {
    pub(crate) store: &'a Store,
    pub(crate) attr: u32,
    pub(crate) write_seq: u32,
    /// (write seq, users) groups for removed users.
    pub(crate) removal_groups: Vec<(u32, RoaringBitmap)>,
    pub(crate) format: Body,
}

/// The body format of an execution, with its pre-rendered fragments.
pub(crate) enum Body {
    /// The seed's `segment_sync` body.
    SegmentSync(SegmentSyncFormat),
    /// Cohort Sync, with the largest body allowed.
    Cohort(CohortSyncFormat, usize),
}

/// Bytes read for one page: entry `i` is the value for the page's user `i`.
#[derive(Default)]
struct Arena {
    bytes: Vec<u8>,
    spans: Vec<Option<(u32, u32)>>,
}

impl Arena {
    fn clear(&mut self) {
        self.bytes.clear();
        self.spans.clear();
    }

    fn push(&mut self, v: Option<&[u8]>) {
        self.spans.push(v.map(|v| {
            let start = self.bytes.len() as u32;
            self.bytes.extend_from_slice(v);
            (start, v.len() as u32)
        }));
    }

    fn get(&self, i: usize) -> Option<&[u8]> {
        self.spans[i].map(|(s, l)| &self.bytes[s as usize..(s + l) as usize])
    }
}

/// Per-thread scratch space, reused across pages.
#[derive(Default)]
pub(crate) struct Scratch {
    ids: Arena,
    vals: Arena,
    key: Vec<u8>,
    fallback: Vec<Vec<u8>>,
}

/// Reads the values of `users` (ascending) in `cf`, whose keys are
/// `prefix ++ user` (big-endian), with one iterator: `next()` through dense
/// runs, `seek()` over gaps. A page of a full sync is one dense run, where
/// this is several times faster than batched point lookups (each of which
/// searches the index and checks the bloom filter again).
fn scan(
    store: &Store,
    cf_name: &'static str,
    prefix: &[u8],
    users: &[u32],
    key: &mut Vec<u8>,
    out: &mut Arena,
) -> store::Result<()> {
    /// Beyond this gap a seek beats stepping.
    const MAX_STEP: u32 = 32;
    let (Some(&first), Some(&last)) = (users.first(), users.last()) else {
        return Ok(());
    };
    let mut opts = rocksdb::ReadOptions::default();
    // A sync reads each member's blocks once: caching them cost an insert
    // and an eviction per block and pushed out the blocks Personas calls
    // and imports reuse (10M full sync: sender CPU 3.7 → 3.3 s, peak RSS
    // 215–240 → 133–170 MB).
    opts.fill_cache(false);
    if let Some(end) = last.checked_add(1) {
        let mut upper = prefix.to_vec();
        keys::push_user(&mut upper, end);
        opts.set_iterate_upper_bound(upper);
    }
    let mut it = store.db().raw_iterator_cf_opt(store.cf(cf_name), opts);
    let mut seek = |it: &mut rocksdb::DBRawIterator<'_>, u: u32| {
        key.clear();
        key.extend_from_slice(prefix);
        keys::push_user(key, u);
        it.seek(&key[..]);
    };
    seek(&mut it, first);
    for &u in users {
        loop {
            let Some(k) = it.key() else {
                out.push(None);
                break;
            };
            let cur = keys::read_u32(k.get(prefix.len()..).unwrap_or(&[])).unwrap_or(u32::MAX);
            if cur == u {
                out.push(it.value());
                it.next();
                break;
            }
            if cur > u {
                out.push(None);
                break;
            }
            if u - cur > MAX_STEP {
                seek(&mut it, u);
            } else {
                it.next();
            }
        }
    }
    it.status().map_err(|e| store::Error::Db {
        op: "scan",
        cf: cf_name,
        cause: e,
    })
}

/// Why a page could not be rendered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RenderError {
    /// Reading users or values failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// A body came out larger than the destination accepts (the page was cut
    /// for a smaller head: the destination's cohort settings changed while
    /// the execution was in progress).
    #[error("page {page} is {bytes} bytes, over the destination's {max}-byte limit; the destination's cohort settings changed during the execution: run `sync resync-last`")]
    TooLarge { page: u32, bytes: usize, max: usize },
}

impl crate::error::Classify for RenderError {
    fn fault(&self) -> crate::error::Fault {
        crate::error::Fault::Internal
    }
}

/// One user of a page as resolved: distinct id (empty when not read) and
/// the value to send; `None` when it cannot be sent (no value).
type Entry<'v> = Option<(&'v [u8], ValueRef<'v>)>;

impl Renderer<'_> {
    fn as_of(&self, is_add: bool, user: u32) -> u32 {
        if is_add {
            return self.write_seq;
        }
        self.removal_groups
            .iter()
            .find(|(_, b)| b.contains(user))
            .map_or(self.write_seq, |(s, _)| *s)
    }

    /// Resolves a page's users (adds then removes) and hands the entries to
    /// `f`. Distinct ids are read only when the body needs them.
    fn with_entries<R>(
        &self,
        page: &Page,
        scratch: &mut Scratch,
        f: impl FnOnce(&[Entry<'_>]) -> R,
    ) -> store::Result<R> {
        let Scratch {
            ids,
            vals,
            key,
            fallback,
        } = scratch;
        ids.clear();
        vals.clear();
        fallback.clear();
        let need_ids = matches!(self.format, Body::SegmentSync(_));
        let attr_prefix = keys::attr(self.attr);
        for run in [&page.adds, &page.removes] {
            if need_ids {
                self.store.ids_of(run, |id| ids.push(id))?;
            }
            scan(self.store, cf::ATTR_VALUES, &attr_prefix, run, key, vals)?;
        }
        let n_add = page.adds.len();
        let users = page.adds.iter().chain(&page.removes).copied();

        // Each current value is decoded once; one written after its as-of
        // point is replaced by the value from history (rare), kept in
        // `fallback` and decoded in the second pass.
        enum Val<'v> {
            Current(ValueRef<'v>),
            History(usize),
            Missing,
        }
        let mut values: Vec<Val<'_>> = Vec::with_capacity(n_add + page.removes.len());
        for (i, u) in users.enumerate() {
            let as_of = self.as_of(i < n_add, u);
            let current = vals.get(i).map(ValueRef::decode).transpose()?;
            values.push(match current {
                Some(v) if v.seq <= as_of => Val::Current(v),
                _ => match self.store.attr_value_as_of(self.attr, u, as_of)? {
                    Some(v) => {
                        let mut buf = Vec::new();
                        v.encode(as_of, &mut buf);
                        fallback.push(buf);
                        Val::History(fallback.len() - 1)
                    }
                    None => Val::Missing,
                },
            });
        }
        let mut entries: Vec<Entry<'_>> = Vec::with_capacity(values.len());
        for (i, val) in values.into_iter().enumerate() {
            let value = match val {
                Val::Current(v) => Some(v),
                Val::History(f) => Some(ValueRef::decode(&fallback[f])?),
                Val::Missing => None,
            };
            let id = if need_ids { ids.get(i) } else { Some(&[][..]) };
            entries.push(id.zip(value));
        }
        Ok(f(&entries))
    }

    /// The bytes a page's members may take, for a format cut by size
    /// (Cohort Sync: the body limit less the fixed head and tail); `None`
    /// for a format cut by count.
    pub(crate) fn size_budget(&self) -> Option<u64> {
        match &self.format {
            Body::Cohort(format, max_body) => {
                Some((*max_body as u64).saturating_sub(format.overhead() as u64))
            }
            Body::SegmentSync(_) => None,
        }
    }

    /// The bytes each user of `page` adds to a Cohort Sync body (0 for a
    /// user that cannot be sent), in page order; for cutting pages by size.
    pub(crate) fn member_sizes(
        &self,
        page: &Page,
        scratch: &mut Scratch,
        sizes: &mut Vec<u32>,
    ) -> store::Result<()> {
        let mut buf = Vec::with_capacity(64);
        self.with_entries(page, scratch, |entries| {
            for e in entries {
                buf.clear();
                let ok = e.is_some_and(|(_, v)| CohortSyncFormat::member(&v, &mut buf));
                sizes.push(if ok { buf.len() as u32 } else { 0 });
            }
        })
    }

    /// Resolves and renders one page into `out`. A page with nothing to
    /// send renders an empty body.
    pub(crate) fn render(
        &self,
        page: &Page,
        scratch: &mut Scratch,
        mut out: Vec<u8>,
    ) -> Result<Rendered, RenderError> {
        let n_add = page.adds.len();
        let (adds, removes, skipped) = self.with_entries(page, scratch, |entries| {
            let sendable = entries.iter().filter(|e| e.is_some()).count() as u32;
            let skipped = entries.len() as u32 - sendable;
            let (a, r) = entries.split_at(n_add);
            match &self.format {
                Body::SegmentSync(f) => {
                    let (a, r) = (a.iter().flatten().copied(), r.iter().flatten().copied());
                    let n_a = a.clone().count() as u32;
                    f.render(page.index + 1, a, r, &mut out);
                    (n_a, sendable - n_a, skipped)
                }
                Body::Cohort(f, _) => {
                    // The pager never mixes the two lists on a Cohort Sync page.
                    let (action, list) = if a.is_empty() {
                        (MemberAction::Remove, r)
                    } else {
                        (MemberAction::Add, a)
                    };
                    let n = f.render(action, list.iter().flatten().map(|(_, v)| *v), &mut out);
                    // `list` holds every sendable user; those the format
                    // refuses (not a uid) are skipped too.
                    let skipped = skipped + (sendable - n);
                    if n == 0 {
                        out.clear();
                    }
                    match action {
                        MemberAction::Add => (n, 0, skipped),
                        MemberAction::Remove => (0, n, skipped),
                    }
                }
            }
        })?;
        if let Body::Cohort(_, max) = &self.format {
            if out.len() > *max {
                return Err(RenderError::TooLarge {
                    page: page.index + 1,
                    bytes: out.len(),
                    max: *max,
                });
            }
        }
        Ok(Rendered {
            index: page.index,
            body: out,
            adds,
            removes,
            skipped,
        })
    }
}
/// A renderer thread: renders pages until the pager stops or the sender
/// goes away, handing emptied page buffers back to the pager. A page that
/// cannot be rendered fails the execution (`fail`) and stops this thread.
pub(crate) fn run(
    renderer: &Renderer<'_>,
    pages: &crossbeam::channel::Receiver<Page>,
    free: &crossbeam::channel::Sender<Page>,
    out: &tokio::sync::mpsc::Sender<Rendered>,
    fail: &(dyn Fn(String) + Sync),
) {
    let mut scratch = Scratch::default();
    // Start each body at the largest size seen, so a page is one allocation.
    let mut cap = 0;
    for page in pages {
        match renderer.render(&page, &mut scratch, Vec::with_capacity(cap)) {
            Ok(r) => {
                cap = cap.max(r.body.len());
                let _ = free.try_send(page);
                if out.blocking_send(r).is_err() {
                    return;
                }
            }
            Err(e) => {
                fail(format!("rendering page {} failed: {e}", page.index + 1));
                return;
            }
        }
    }
}

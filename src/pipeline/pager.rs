//! Deterministic page cutting. Page *k* (0-based; `page_count` k+1 on the
//! wire) holds ranks `[k·size, (k+1)·size)` of `added` followed by
//! `removed`, so a page may carry both lists, `total_pages` is known before
//! the first request, and a resumed run recomputes exactly the pages it has
//! not delivered.
//!
//! Cohort Sync pages are cut by size as well (bodies ≤ 128 KB, one action
//! per request): the planner measures every member once and stores where
//! pages start ([`StartPlanner`]), and the same cutting walks those starts.

use crossbeam::channel::{Receiver, Sender};
use roaring::RoaringBitmap;

use crate::destination::Destination;
use crate::store::{self, BitmapKind, ExecutionRecord, Store};

/// One page: user indexes to add and to remove.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Page {
    /// 0-based page number.
    pub(crate) index: u32,
    pub(crate) adds: Vec<u32>,
    pub(crate) removes: Vec<u32>,
}

/// Where pages end.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cuts<'a> {
    /// Every `n` users (the `segment_sync` format).
    Count(u32),
    /// At these ranks of the added-then-removed sequence (Cohort Sync:
    /// planned from the users' byte sizes, see [`StartPlanner`]).
    Starts(&'a RoaringBitmap),
}

impl Cuts<'_> {
    fn starts_page(&self, rank: u32) -> bool {
        match self {
            Cuts::Count(n) => rank.is_multiple_of((*n).max(1)),
            Cuts::Starts(s) => s.contains(rank),
        }
    }
}

/// Plans size-capped pages over `sizes` (the bytes each user adds to a
/// body, in added-then-removed order; `n_added` of them are adds): a page
/// holds at most `max_users`, its members and separators fit in `budget`
/// bytes, and no page mixes adds and removes. Returns the ranks where pages
/// start (always including 0 when there are users). (The pipeline feeds a
/// [`StartPlanner`] as it measures, so no size list is ever held.)
#[cfg(test)]
pub(crate) fn plan_starts(
    sizes: impl IntoIterator<Item = u32>,
    n_added: u64,
    max_users: u32,
    budget: u64,
) -> RoaringBitmap {
    let mut p = StartPlanner::new(n_added, max_users, budget);
    for size in sizes {
        p.push(size);
    }
    p.finish()
}

/// The page planner of `plan_starts`, fed one size at a time, so sizes need not be kept.
#[derive(Debug)]
pub(crate) struct StartPlanner {
    starts: RoaringBitmap,
    rank: u64,
    users: u32,
    bytes: u64,
    n_added: u64,
    max_users: u32,
    budget: u64,
}

impl StartPlanner {
    pub(crate) fn new(n_added: u64, max_users: u32, budget: u64) -> StartPlanner {
        StartPlanner {
            starts: RoaringBitmap::new(),
            rank: 0,
            users: 0,
            bytes: 0,
            n_added,
            max_users: max_users.max(1),
            budget,
        }
    }

    /// The next user's size.
    pub(crate) fn push(&mut self, size: u32) {
        let size = u64::from(size);
        let with_sep = if self.users == 0 {
            size
        } else {
            self.bytes + 1 + size
        };
        let new_page = self.users == 0
            || self.users >= self.max_users
            || with_sep > self.budget
            || self.rank == self.n_added;
        if new_page {
            self.starts.insert(self.rank as u32);
            self.users = 1;
            self.bytes = size;
        } else {
            self.users += 1;
            self.bytes = with_sep;
        }
        self.rank += 1;
    }

    /// Where pages start.
    pub(crate) fn finish(self) -> RoaringBitmap {
        self.starts
    }
}

/// Cuts pages in order and hands each one not in `done` to `emit`, reusing
/// page buffers that come back on `free`. Stops early when `emit` returns
/// false (the consumer went away).
pub(crate) fn cut(
    added: &RoaringBitmap,
    removed: &RoaringBitmap,
    cuts: Cuts<'_>,
    done: &RoaringBitmap,
    free: Option<&Receiver<Page>>,
    mut emit: impl FnMut(Page) -> bool,
) {
    let fresh = |free: Option<&Receiver<Page>>| {
        let mut p = free.and_then(|f| f.try_recv().ok()).unwrap_or_default();
        p.adds.clear();
        p.removes.clear();
        p
    };
    let mut page = fresh(free);
    let mut index = 0u32;
    let skip = |index: u32| done.contains(index);
    let users = added
        .iter()
        .map(|u| (true, u))
        .chain(removed.iter().map(|u| (false, u)));
    let mut rank = 0u32;
    for (is_add, u) in users {
        if rank > 0 && cuts.starts_page(rank) {
            if !skip(index) {
                page.index = index;
                if !emit(std::mem::replace(&mut page, fresh(free))) {
                    return;
                }
            }
            index += 1;
        }
        if !skip(index) {
            if is_add {
                page.adds.push(u);
            } else {
                page.removes.push(u);
            }
        }
        rank += 1;
    }
    if rank > 0 && !skip(index) {
        page.index = index;
        emit(page);
    }
}

/// Sends pages into a bounded channel (the pipeline's first stage).
pub(crate) fn run(
    added: &RoaringBitmap,
    removed: &RoaringBitmap,
    cuts: Cuts<'_>,
    done: &RoaringBitmap,
    free: &Receiver<Page>,
    out: &Sender<Page>,
) {
    cut(added, removed, cuts, done, Some(free), |p| {
        out.send(p).is_ok()
    });
}

/// Users measured per batch when planning size-capped pages.
const MEASURE_BATCH: usize = 8192;
/// Threads measuring at once: measuring is reading, and reading scales
/// with cores until the disk or RocksDB's block cache does not.
const MEASURE_THREADS: usize = 4;

/// Measures every member of `added` then `removed` in batches of
/// [`MEASURE_BATCH`] on up to [`MEASURE_THREADS`] threads, and hands each
/// batch's sizes to `take` in member order. Measuring came before the first
/// request of a Cohort Sync run (1.4 s of a 5 s 9M-member run on one thread),
/// so it is spread over the cores the renderers will use next.
fn measure_in_order(
    added: &RoaringBitmap,
    removed: &RoaringBitmap,
    measure: &(impl Fn(&Page, &mut Vec<u32>) -> store::Result<()> + Sync),
    mut take: impl FnMut(&[u32]),
) -> store::Result<()> {
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, MEASURE_THREADS);
    // Batches go out in order on a bounded channel and come back tagged;
    // `pending` reorders them. It holds the batches that finished before a
    // slower earlier one: a few, as batches cost alike (32 KB of sizes
    // each), though nothing but that bounds it.
    let (job_tx, job_rx) = crossbeam::channel::bounded::<(u64, Page)>(threads);
    let (res_tx, res_rx) = crossbeam::channel::bounded::<(u64, store::Result<Vec<u32>>)>(threads);
    std::thread::scope(|s| {
        for _ in 0..threads {
            let (job_rx, res_tx) = (job_rx.clone(), res_tx.clone());
            s.spawn(move || {
                for (n, page) in job_rx {
                    let mut sizes = Vec::with_capacity(MEASURE_BATCH);
                    let r = measure(&page, &mut sizes).map(|()| sizes);
                    if res_tx.send((n, r)).is_err() {
                        return;
                    }
                }
            });
        }
        drop((job_rx, res_tx));
        let feeder = s.spawn(move || {
            let mut n = 0u64;
            for (list, is_add) in [(added, true), (removed, false)] {
                let mut it = list.iter().peekable();
                while it.peek().is_some() {
                    let batch: Vec<u32> = it.by_ref().take(MEASURE_BATCH).collect();
                    let page = if is_add {
                        Page {
                            adds: batch,
                            ..Page::default()
                        }
                    } else {
                        Page {
                            removes: batch,
                            ..Page::default()
                        }
                    };
                    if job_tx.send((n, page)).is_err() {
                        return;
                    }
                    n += 1;
                }
            }
        });
        let mut pending = std::collections::BTreeMap::new();
        let mut next = 0u64;
        let mut result = Ok(());
        for (n, r) in &res_rx {
            match r {
                Ok(sizes) => {
                    pending.insert(n, sizes);
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            while let Some(sizes) = pending.remove(&next) {
                take(&sizes);
                next += 1;
            }
        }
        // On an error, the workers and the feeder stop once the results
        // channel is gone.
        drop(res_rx);
        let _ = feeder.join();
        result
    })
}

/// The page cuts of an execution. `segment_sync` pages are cut by count
/// (`budget` is `None`). Size-capped formats (Cohort Sync) are cut by size
/// too, so the planner measures every member once (`measure` writes the
/// bytes each user of a page adds to a body, within `budget` bytes a page)
/// and persists where pages start (and the page count) before the first
/// request; a resumed run reads them back.
pub(super) fn page_starts(
    store: &Store,
    exec: &mut ExecutionRecord,
    dest: &Destination,
    budget: Option<u64>,
    added: &RoaringBitmap,
    removed: &RoaringBitmap,
    measure: impl Fn(&Page, &mut Vec<u32>) -> store::Result<()> + Sync,
) -> Result<Option<RoaringBitmap>, super::Error> {
    let stored = exec.bitmap_if_any(store, BitmapKind::PageStarts)?;
    let Some(budget) = budget else {
        if stored.is_some() {
            return Err(super::Error::Internal(format!(
                "execution {} was planned for Cohort Sync but destination '{}' is now segment_sync; run `sync resync-last`",
                exec.execution_id(),
                dest.name
            )));
        }
        return Ok(None);
    };
    if let Some(starts) = stored {
        return Ok(Some(starts));
    }
    if exec.pages_done > 0 {
        return Err(super::Error::Internal(format!(
            "execution {} was planned for the segment_sync format but destination '{}' is now Cohort Sync; run `sync resync-last`",
            exec.execution_id(),
            dest.name
        )));
    }
    let measuring = std::time::Instant::now();
    let mut planner = StartPlanner::new(added.len(), dest.page_size.get(), budget);
    measure_in_order(added, removed, &measure, |sizes| {
        for &size in sizes {
            planner.push(size);
        }
    })?;
    let starts = planner.finish();
    exec.total_pages = u32::try_from(starts.len()).unwrap_or(u32::MAX);
    tracing::info!(
        sync = exec.sync_id,
        execution = exec.seq,
        users = added.len() + removed.len(),
        pages = exec.total_pages,
        seconds = measuring.elapsed().as_secs_f64(),
        "size-capped pages planned"
    );
    store.write_records(
        vec![
            exec.write(),
            exec.bitmap_write(BitmapKind::PageStarts, &starts),
        ],
        true,
    )?;
    Ok(Some(starts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A size that depends on the user and on which list it is in. Every
    /// other batch is slow, so results arrive out of order.
    fn fake_measure(page: &Page, sizes: &mut Vec<u32>) -> store::Result<()> {
        let first = page.adds.first().or(page.removes.first()).copied();
        if first.is_some_and(|u| (u as usize / MEASURE_BATCH).is_multiple_of(2)) {
            std::thread::sleep(std::time::Duration::from_millis(3));
        }
        sizes.extend(page.adds.iter().map(|u| u % 97 + 1));
        sizes.extend(page.removes.iter().map(|u| u % 89 + 200));
        Ok(())
    }

    #[test]
    fn parallel_measuring_hands_sizes_over_in_member_order() {
        // Batches of both lists, a short one at each list's end, and gaps.
        let added: RoaringBitmap = (0..60_000u32).filter(|u| u % 7 != 3).collect();
        let removed: RoaringBitmap = (100_000..120_500u32).collect();
        let expected: Vec<u32> = added
            .iter()
            .map(|u| u % 97 + 1)
            .chain(removed.iter().map(|u| u % 89 + 200))
            .collect();
        let mut got = Vec::new();
        measure_in_order(&added, &removed, &fake_measure, |s| {
            got.extend_from_slice(s)
        })
        .unwrap();
        assert_eq!(got, expected);
    }

    #[test]
    fn a_failed_measure_stops_measuring_with_its_error() {
        let added: RoaringBitmap = (0..100_000u32).collect();
        let failing = |page: &Page, sizes: &mut Vec<u32>| {
            if page.adds.first() == Some(&(3 * MEASURE_BATCH as u32)) {
                return Err(store::Error::Pruned("measured too late".into()));
            }
            fake_measure(page, sizes)
        };
        let mut taken = 0;
        let err = measure_in_order(&added, &RoaringBitmap::new(), &failing, |s| {
            taken += s.len()
        })
        .unwrap_err();
        assert!(err.to_string().contains("measured too late"), "{err}");
        assert!(
            taken <= 3 * MEASURE_BATCH,
            "{taken} sizes taken past the failed batch"
        );
    }

    fn pages(
        added: &RoaringBitmap,
        removed: &RoaringBitmap,
        size: u32,
        done: &RoaringBitmap,
    ) -> Vec<Page> {
        let mut v = Vec::new();
        cut(added, removed, Cuts::Count(size), done, None, |p| {
            v.push(p);
            true
        });
        v
    }

    fn bitmap() -> impl Strategy<Value = RoaringBitmap> {
        prop::collection::vec(0u32..3000, 0..500).prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #[test]
        fn pages_partition_added_then_removed(added in bitmap(), removed in bitmap(), size in 1u32..120) {
            let ps = pages(&added, &removed, size, &RoaringBitmap::new());
            prop_assert_eq!(ps.len() as u32, crate::plan::total_pages(added.len(), removed.len(), size));
            let mut adds: Vec<u32> = Vec::new();
            let mut rems: Vec<u32> = Vec::new();
            for (k, p) in ps.iter().enumerate() {
                prop_assert_eq!(p.index as usize, k);
                let n = p.adds.len() + p.removes.len();
                prop_assert!(n <= size as usize && n > 0);
                if k + 1 < ps.len() {
                    prop_assert_eq!(n, size as usize);
                }
                // Removes only start once adds are exhausted.
                if !p.removes.is_empty() && k + 1 < ps.len() {
                    prop_assert!(ps[k + 1].adds.is_empty());
                }
                adds.extend(&p.adds);
                rems.extend(&p.removes);
            }
            prop_assert_eq!(adds, added.iter().collect::<Vec<_>>());
            prop_assert_eq!(rems, removed.iter().collect::<Vec<_>>());
        }

        #[test]
        fn resuming_skips_exactly_the_done_pages(added in bitmap(), removed in bitmap(), size in 1u32..60, done_mask in any::<u64>()) {
            let all = pages(&added, &removed, size, &RoaringBitmap::new());
            let done: RoaringBitmap = (0..all.len() as u32).filter(|k| done_mask >> (k % 64) & 1 == 1).collect();
            let rest = pages(&added, &removed, size, &done);
            let expected: Vec<Page> = all.into_iter().filter(|p| !done.contains(p.index)).collect();
            prop_assert_eq!(rest, expected);
        }
    }

    proptest! {
        #[test]
        fn size_capped_pages_respect_every_limit(
            sizes in prop::collection::vec(1u32..300, 0..600),
            split in 0usize..600,
            max_users in 1u32..50,
            budget in 300u64..2000,
        ) {
            let n_added = split.min(sizes.len());
            let added: RoaringBitmap = (0..n_added as u32).collect();
            let removed: RoaringBitmap = (10_000..10_000 + (sizes.len() - n_added) as u32).collect();
            let starts = plan_starts(sizes.iter().copied(), n_added as u64, max_users, budget);
            let mut ps = Vec::new();
            cut(&added, &removed, Cuts::Starts(&starts), &RoaringBitmap::new(), None, |p| {
                ps.push(p);
                true
            });
            prop_assert_eq!(ps.len() as u64, starts.len());
            let mut rank = 0usize;
            for (k, p) in ps.iter().enumerate() {
                prop_assert_eq!(p.index as usize, k);
                prop_assert!(p.adds.is_empty() || p.removes.is_empty(), "mixed page");
                let n = p.adds.len() + p.removes.len();
                prop_assert!(n >= 1 && n <= max_users as usize);
                let bytes: u64 = sizes[rank..rank + n].iter().map(|&s| u64::from(s)).sum::<u64>() + n as u64 - 1;
                prop_assert!(bytes <= budget, "page {} has {} bytes", k, bytes);
                // Greedy: the next user would not have fitted.
                if k + 1 < ps.len() && rank + n != n_added && n < max_users as usize {
                    prop_assert!(bytes + 1 + u64::from(sizes[rank + n]) > budget);
                }
                rank += n;
            }
            prop_assert_eq!(rank, sizes.len());
        }
    }

    #[test]
    fn a_page_can_carry_both_lists() {
        let added: RoaringBitmap = (0..3).collect();
        let removed: RoaringBitmap = (10..12).collect();
        let ps = pages(&added, &removed, 4, &RoaringBitmap::new());
        assert_eq!(ps.len(), 2);
        assert_eq!(
            (ps[0].adds.clone(), ps[0].removes.clone()),
            (vec![0, 1, 2], vec![10])
        );
        assert_eq!(
            (ps[1].adds.clone(), ps[1].removes.clone()),
            (vec![], vec![11])
        );
    }
}

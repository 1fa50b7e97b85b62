//! The users an import has created so far, by fingerprint: sorted runs
//! behind a blocked Bloom filter.
//!
//! The interner asks, for every id the fingerprint table does not know,
//! whether this import created it already. A first load asks that 10M times
//! and is almost always told no. A hash map answered with a cache miss into
//! 285 MB of buckets per question (a fifth of a 10M-row first load's time,
//! and its largest allocation); here the common "no" comes from a filter of
//! ~1.6 bytes a user, read in key order because batches are resolved in key
//! order, and the rare "maybe" searches a handful of sorted runs. The runs
//! are what the commit merges into the table anyway, so they cost nothing
//! extra: 12 bytes a user, already sorted.

use crate::store::{Fingerprint, Run};

/// One created user.
pub(crate) type Created = (Fingerprint, u32);

/// Keys a filter block holds at about 1 % false positives (10 bits a key).
const KEYS_PER_BLOCK: usize = 51;

/// The filter's first size, in 64-byte blocks (1 MB); it grows fourfold
/// whenever it holds more than [`KEYS_PER_BLOCK`] keys a block.
const FIRST_BLOCKS_LOG2: u32 = 14;

/// A split-block Bloom filter: a key sets one bit in each of the eight
/// words of one cache line, chosen by the key's top bits (so a sorted batch
/// walks the filter front to back).
struct Bloom {
    blocks: Vec<[u64; 8]>,
    shift: u32,
}

impl Bloom {
    fn with_blocks_log2(log2: u32) -> Bloom {
        Bloom {
            blocks: vec![[0; 8]; 1 << log2],
            shift: 64 - log2,
        }
    }

    fn capacity(&self) -> usize {
        self.blocks.len() * KEYS_PER_BLOCK
    }

    /// The block and the eight bit positions of `fp`: the block from the
    /// key's top bits, the bits from its low 32 and the check's 32 (both
    /// independent of the top bits of a uniform hash).
    #[inline]
    fn locate(&self, fp: Fingerprint) -> (usize, u64) {
        let block = (fp.key >> self.shift) as usize;
        let bits = (u64::from(fp.check) << 32) | (fp.key & 0xffff_ffff);
        (block, bits)
    }

    #[inline]
    fn insert(&mut self, fp: Fingerprint) {
        let (b, bits) = self.locate(fp);
        let block = &mut self.blocks[b];
        for (i, word) in block.iter_mut().enumerate() {
            *word |= 1u64 << ((bits >> (6 * i)) & 63);
        }
    }

    #[inline]
    fn may_contain(&self, fp: Fingerprint) -> bool {
        let (b, bits) = self.locate(fp);
        let block = &self.blocks[b];
        block
            .iter()
            .enumerate()
            .all(|(i, word)| word & (1u64 << ((bits >> (6 * i)) & 63)) != 0)
    }
}

/// See the module docs.
pub(crate) struct Pending {
    bloom: Bloom,
    /// Earlier batches' users, sizes falling by at least half along the
    /// list (so there are at most log2 of them).
    runs: Vec<Run>,
    /// This batch's users, appended in key order as it is resolved.
    current: Vec<Created>,
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            bloom: Bloom::with_blocks_log2(FIRST_BLOCKS_LOG2),
            runs: Vec::new(),
            current: Vec::new(),
        }
    }
}

impl Pending {
    /// The index of the user `fp` names, if this import created it. Within a
    /// batch, lookups must come in key order (as the interner resolves).
    #[inline]
    pub(crate) fn get(&self, fp: Fingerprint) -> Option<u32> {
        for &(f, idx) in self.current.iter().rev() {
            if f.key != fp.key {
                break;
            }
            if f.check == fp.check {
                return Some(idx);
            }
        }
        if self.runs.is_empty() || !self.bloom.may_contain(fp) {
            return None;
        }
        self.runs.iter().find_map(|run| run.find(fp))
    }

    /// Records a user created for `fp`. Within a batch, keys must not
    /// decrease.
    #[inline]
    pub(crate) fn insert(&mut self, fp: Fingerprint, idx: u32) {
        debug_assert!(self.current.last().is_none_or(|(f, _)| f.key <= fp.key));
        self.current.push((fp, idx));
        self.bloom.insert(fp);
    }

    /// Rewrites the indexes of this batch's users (the interner gives them
    /// tentative ones until it knows the batch's row order).
    pub(crate) fn remap_batch(&mut self, index: impl Fn(u32) -> u32) {
        for (_, idx) in &mut self.current {
            *idx = index(*idx);
        }
    }

    /// Ends a batch: its users become a run, and runs of similar size merge.
    pub(crate) fn end_batch(&mut self) {
        if self.current.is_empty() {
            return;
        }
        sort_batch(&mut self.current);
        self.runs.push(Run::from_sorted(self.current.drain(..)));
        while let [.., a, b] = &self.runs[..] {
            if a.len() >= 2 * b.len() {
                break;
            }
            let b = self.runs.pop().unwrap_or_default();
            if let Some(a) = self.runs.last_mut() {
                a.merge(b);
            }
        }
        if self.len() > self.bloom.capacity() {
            self.grow_bloom();
        }
    }

    /// Users created so far.
    fn len(&self) -> usize {
        self.runs.iter().map(Run::len).sum::<usize>() + self.current.len()
    }

    fn grow_bloom(&mut self) {
        let len = self.len();
        let mut log2 = self.bloom.blocks.len().trailing_zeros();
        while (1usize << log2) * KEYS_PER_BLOCK < len {
            log2 += 2;
        }
        self.bloom = Bloom::with_blocks_log2(log2);
        for run in &self.runs {
            for (fp, _) in run.iter() {
                self.bloom.insert(fp);
            }
        }
        for &(fp, _) in &self.current {
            self.bloom.insert(fp);
        }
    }

    /// Every created user (merged in place: no second copy).
    pub(crate) fn finish(self) -> Run {
        // The filter goes first: the merges below are the import's peak.
        let Pending {
            bloom,
            mut runs,
            mut current,
        } = self;
        drop(bloom);
        sort_batch(&mut current);
        let mut all = Run::from_sorted(current);
        while let Some(mut bigger) = runs.pop() {
            bigger.merge(all);
            all = bigger;
        }
        all
    }
}

/// Sorts a batch's users by whole fingerprint: they came in key order, but
/// ids of one key with different checks may have come in any order.
fn sort_batch(batch: &mut [Created]) {
    if !batch.is_sorted_by_key(|&(fp, _)| fp) {
        batch.sort_unstable_by_key(|&(fp, _)| fp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn fp(key: u64, check: u16) -> Fingerprint {
        Fingerprint { key, check }
    }

    proptest! {
        /// Against a map: batches of ids (repeats within and across
        /// batches, keys shared by different checks) are found exactly
        /// when created before, and `finish` returns each once, sorted.
        #[test]
        fn behaves_like_a_map(
            batches in proptest::collection::vec(
                proptest::collection::vec((0u64..400, 0u16..3), 0..120),
                0..40,
            )
        ) {
            let mut pending = Pending::default();
            let mut model: HashMap<Fingerprint, u32> = HashMap::new();
            let mut next = 0u32;
            for batch in batches {
                let mut batch: Vec<Fingerprint> = batch
                    .into_iter()
                    // Spread keys over the whole range, as hashes are.
                    .map(|(k, c)| fp(k.wrapping_mul(0x9E37_79B9_7F4A_7C15), c))
                    .collect();
                batch.sort_by_key(|f| f.key);
                for f in batch {
                    let got = pending.get(f);
                    prop_assert_eq!(got, model.get(&f).copied());
                    if got.is_none() {
                        pending.insert(f, next);
                        model.insert(f, next);
                        next += 1;
                    }
                }
                pending.end_batch();
                prop_assert!(pending.runs.windows(2).all(|w| w[0].len() >= 2 * w[1].len()));
            }
            prop_assert_eq!(pending.len(), model.len());
            let all: Vec<Created> = pending.finish().iter().collect();
            prop_assert!(all.is_sorted_by_key(|&(f, _)| f));
            let got: HashMap<Fingerprint, u32> = all.iter().copied().collect();
            prop_assert_eq!(got.len(), all.len());
            prop_assert_eq!(got, model);
        }
    }

    #[test]
    fn the_filter_grows_and_still_finds_everyone() {
        let mut pending = Pending::default();
        let first = pending.bloom.capacity();
        let n = 3 * first;
        let id = |i: usize| Fingerprint::of(format!("user-{i}").as_bytes());
        let mut idx = 0u32;
        for chunk in (0..n).collect::<Vec<_>>().chunks(50_000) {
            let mut fps: Vec<Fingerprint> = chunk.iter().map(|&i| id(i)).collect();
            fps.sort_unstable_by_key(|f| f.key);
            for f in fps {
                pending.insert(f, idx);
                idx += 1;
            }
            pending.end_batch();
        }
        assert!(pending.bloom.capacity() >= n, "the filter did not grow");
        let mut found = 0;
        let mut false_pos = 0;
        for i in 0..n {
            let f = id(i);
            found += usize::from(pending.get(f).is_some());
            // Same key, other check: never a match, whatever the filter says.
            let other = Fingerprint {
                key: f.key,
                check: f.check ^ 1,
            };
            assert_eq!(pending.get(other), None);
            let absent = Fingerprint::of(format!("absent-{i}").as_bytes());
            assert_eq!(pending.get(absent), None);
            false_pos += usize::from(pending.bloom.may_contain(absent));
        }
        assert_eq!(found, n);
        // ~1 % at full load, less below it.
        assert!(
            false_pos * 100 < 2 * n,
            "{false_pos} false positives of {n}"
        );
    }
}

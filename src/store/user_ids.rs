//! The `user_ids` family: each user's distinct id, kept in blocks of 256
//! users (key: the block number, big-endian) rather than one key a user.
//!
//! Written one key a user, the ids were half of a first load's SST keys:
//! RocksDB's SST writer spends ~170 ns a key whatever its size, and a
//! 10M-row `distinct_id,uid` load took 5.2–5.5 s with them against
//! 4.2–4.35 s without (the ids not written at all). A block value is a
//! list of runs, each a stretch of consecutive users:
//! `first (u32 LE) ++ n (u32 LE) ++ n cumulative ends (u32 LE) ++ ids`.
//! Users are created in index order and never change their id, so a block
//! only ever grows at its end: an import writes whole blocks (a put) and
//! the partial block it starts in (a merge operand), a real-time
//! transaction one run per block of the users it created (a merge
//! operand); the merge operator concatenates runs. Only a rollback cuts a block, by rewriting it.

use super::{Error, Result};

/// log2 of the users a block holds.
pub(crate) const BLOCK_BITS: u32 = 8;

/// The block holding user `idx`.
#[inline]
pub(crate) fn block(idx: u32) -> u32 {
    idx >> BLOCK_BITS
}

/// The first user of `block`.
#[inline]
pub(crate) fn first_of(block: u32) -> u32 {
    block << BLOCK_BITS
}

/// The key of `block`.
#[inline]
pub(crate) fn key(block: u32) -> [u8; 4] {
    block.to_be_bytes()
}

/// The block a key names.
pub(crate) fn block_of_key(key: &[u8]) -> Result<u32> {
    super::keys::read_u32(key).ok_or_else(|| corrupt("a key shorter than 4 bytes"))
}

fn corrupt(reason: &str) -> Error {
    Error::Corrupt {
        what: "user id block",
        reason: reason.into(),
    }
}

/// A run being built: consecutive users from `first`, buffers reused.
#[derive(Debug, Default)]
struct RunBuf {
    first: u32,
    ends: Vec<u32>,
    data: Vec<u8>,
}

impl RunBuf {
    /// Empties the run; the next user pushed is `first`.
    fn start(&mut self, first: u32) {
        self.first = first;
        self.ends.clear();
        self.data.clear();
    }

    fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The user the next push is.
    fn next(&self) -> u32 {
        self.first + self.ends.len() as u32
    }

    /// Appends the id of user [`RunBuf::next`].
    fn push(&mut self, id: &[u8]) {
        self.data.extend_from_slice(id);
        self.ends.push(self.data.len() as u32);
    }

    /// The encoded run, into `out` (cleared first).
    fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(8 + 4 * self.ends.len() + self.data.len());
        out.extend_from_slice(&self.first.to_le_bytes());
        out.extend_from_slice(&(self.ends.len() as u32).to_le_bytes());
        for e in &self.ends {
            out.extend_from_slice(&e.to_le_bytes());
        }
        out.extend_from_slice(&self.data);
    }
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32> {
    bytes
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| corrupt("a run cut short"))
}

/// One run of a block value: its users' ids, and what follows it.
struct Run<'a> {
    first: u32,
    ends: &'a [u8],
    data: &'a [u8],
    rest: &'a [u8],
}

impl<'a> Run<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Run<'a>> {
        let first = u32_at(bytes, 0)?;
        let n = u32_at(bytes, 4)? as usize;
        let ends_len = n.checked_mul(4).ok_or_else(|| corrupt("too many users"))?;
        let ends = bytes
            .get(8..8 + ends_len)
            .ok_or_else(|| corrupt("a run's ends cut short"))?;
        let len = if n == 0 {
            0
        } else {
            u32_at(ends, ends_len - 4)? as usize
        };
        let data_at = 8 + ends_len;
        let data = bytes
            .get(data_at..data_at + len)
            .ok_or_else(|| corrupt("a run's ids cut short"))?;
        if first.checked_add(n as u32).is_none() {
            return Err(corrupt("a run past the last user"));
        }
        Ok(Run {
            first,
            ends,
            data,
            rest: &bytes[data_at + len..],
        })
    }

    fn len(&self) -> u32 {
        (self.ends.len() / 4) as u32
    }

    /// The id of the run's `i`-th user.
    fn id(&self, i: usize) -> Result<&'a [u8]> {
        let start = if i == 0 {
            0
        } else {
            u32_at(self.ends, 4 * (i - 1))? as usize
        };
        let end = u32_at(self.ends, 4 * i)? as usize;
        self.data
            .get(start..end)
            .ok_or_else(|| corrupt("an id's ends out of order"))
    }
}

/// The id of user `idx` in a block value, if the block holds it.
pub fn find(value: &[u8], idx: u32) -> Result<Option<&[u8]>> {
    let mut rest = value;
    while !rest.is_empty() {
        let run = Run::parse(rest)?;
        if idx >= run.first && idx - run.first < run.len() {
            return run.id((idx - run.first) as usize).map(Some);
        }
        rest = run.rest;
    }
    Ok(None)
}

/// Calls `f(index, id)` for every user of a block value, in the order
/// written (index order: users are created in it).
pub(crate) fn for_each(value: &[u8], mut f: impl FnMut(u32, &[u8])) -> Result<()> {
    let mut rest = value;
    while !rest.is_empty() {
        let run = Run::parse(rest)?;
        for i in 0..run.len() {
            f(run.first + i, run.id(i as usize)?);
        }
        rest = run.rest;
    }
    Ok(())
}

/// How many runs a block value holds.
#[cfg(test)]
pub(crate) fn run_count(value: &[u8]) -> Result<usize> {
    let (mut rest, mut n) = (value, 0);
    while !rest.is_empty() {
        rest = Run::parse(rest)?.rest;
        n += 1;
    }
    Ok(n)
}

/// The block value without its users from `from` on (a rollback of the
/// users an import created); empty when none is left.
pub(crate) fn truncate(value: &[u8], from: u32) -> Result<Vec<u8>> {
    let mut kept = Blocks::default();
    for_each(value, |idx, id| {
        if idx < from {
            kept.push(idx, id);
        }
    })?;
    Ok(kept
        .finish()
        .map(|(_, v, _)| v.to_vec())
        .unwrap_or_default())
}

/// Users given in index order, gathered into block values: a new run
/// where they stop being consecutive, a block handed out (by
/// [`Blocks::finish`]) before the first user of the next. What an
/// import's writer, the upgrade from one key a user and a rollback's cut
/// all build.
#[derive(Debug, Default)]
pub(crate) struct Blocks {
    run: RunBuf,
    /// The block being gathered, and the first user of its value.
    block: Option<(u32, u32)>,
    value: Vec<u8>,
    encoded: Vec<u8>,
}

impl Blocks {
    /// Whether no user was added since the last [`Blocks::finish`].
    pub(crate) fn is_empty(&self) -> bool {
        self.block.is_none()
    }

    /// Whether user `idx` belongs to another block than the one being
    /// gathered: [`Blocks::finish`] that one first.
    pub(crate) fn ends_block(&self, idx: u32) -> bool {
        self.block.is_some_and(|(b, _)| b != block(idx))
    }

    /// Adds user `idx`, after every user added so far, in the block being
    /// gathered (see [`Blocks::ends_block`]).
    pub(crate) fn push(&mut self, idx: u32, id: &[u8]) {
        debug_assert!(!self.ends_block(idx));
        if self.block.is_none() {
            self.block = Some((block(idx), idx));
            self.value.clear();
        }
        if !self.run.is_empty() && self.run.next() != idx {
            self.end_run();
        }
        if self.run.is_empty() {
            self.run.start(idx);
        }
        self.run.push(id);
    }

    fn end_run(&mut self) {
        if !self.run.is_empty() {
            self.run.encode(&mut self.encoded);
            self.value.extend_from_slice(&self.encoded);
            self.run.start(0);
        }
    }

    /// The block gathered so far, if any: its number, its value, and
    /// whether the value starts at the block's first user (else it is to
    /// be appended to the users the block has).
    pub(crate) fn finish(&mut self) -> Option<(u32, &[u8], bool)> {
        self.end_run();
        let (b, first) = self.block.take()?;
        Some((b, &self.value, first == first_of(b)))
    }

    /// Drops what was gathered.
    pub(crate) fn clear(&mut self) {
        self.run.start(0);
        self.block = None;
    }
}

/// The merge operator's fold: the runs appended in order (full and partial
/// merges alike, since a block only grows at its end).
pub(crate) fn concat<'a>(
    existing: Option<&[u8]>,
    operands: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<u8> {
    let mut out = existing.map(<[u8]>::to_vec).unwrap_or_default();
    for op in operands {
        out.extend_from_slice(op);
    }
    out
}

/// The users a stored block value lists, in order: what a fuzzer feeds
/// damaged blocks to (`fuzz/harness.rs`, which checks them against
/// [`find`]). A damaged block is an error, never a panic.
pub fn decode_block(value: &[u8]) -> Result<Vec<(u32, Vec<u8>)>> {
    let mut users = Vec::new();
    for_each(value, |idx, id| users.push((idx, id.to_vec())))?;
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_of(first: u32, ids: &[&str]) -> Vec<u8> {
        let mut r = RunBuf::default();
        r.start(first);
        for id in ids {
            r.push(id.as_bytes());
        }
        let mut out = Vec::new();
        r.encode(&mut out);
        out
    }

    fn all(value: &[u8]) -> Vec<(u32, String)> {
        let mut v = Vec::new();
        for_each(value, |i, id| {
            v.push((i, String::from_utf8_lossy(id).into_owned()))
        })
        .unwrap();
        v
    }

    #[test]
    fn runs_appended_are_found_and_listed_in_order() {
        let block = concat(
            Some(&run_of(512, &["a", "bb"])),
            [&run_of(514, &[""])[..], &run_of(515, &["dddd", "e"])[..]],
        );
        assert_eq!(find(&block, 512).unwrap(), Some(&b"a"[..]));
        assert_eq!(find(&block, 513).unwrap(), Some(&b"bb"[..]));
        assert_eq!(find(&block, 514).unwrap(), Some(&b""[..]));
        assert_eq!(find(&block, 516).unwrap(), Some(&b"e"[..]));
        assert_eq!(find(&block, 517).unwrap(), None);
        assert_eq!(find(&block, 511).unwrap(), None);
        let ids: Vec<u32> = all(&block).iter().map(|(i, _)| *i).collect();
        assert_eq!(ids, [512, 513, 514, 515, 516]);
    }

    #[test]
    fn truncation_keeps_the_users_before_and_only_them() {
        let block = concat(
            None,
            [&run_of(0, &["a", "b"])[..], &run_of(2, &["c", "d"])[..]],
        );
        assert_eq!(
            all(&truncate(&block, 3).unwrap()),
            [(0, "a".into()), (1, "b".into()), (2, "c".into())]
        );
        assert!(truncate(&block, 0).unwrap().is_empty());
        assert_eq!(
            truncate(&block, 9).unwrap(),
            run_of(0, &["a", "b", "c", "d"])
        );
    }

    #[test]
    fn a_damaged_block_is_an_error_not_a_wrong_id() {
        let block = run_of(0, &["abc", "de"]);
        for cut in 1..block.len() {
            assert!(
                find(&block[..cut], 1).is_err() || find(&block[..cut], 1).unwrap().is_none(),
                "cut at {cut}"
            );
            assert!(for_each(&block[..cut], |_, _| {}).is_err(), "cut at {cut}");
        }
        // Ends out of order.
        let mut bad = block.clone();
        bad[8..12].copy_from_slice(&9u32.to_le_bytes());
        assert!(find(&bad, 1).is_err());
    }
}

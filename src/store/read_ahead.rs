//! Old values read ahead of a small transaction, on another thread.
//!
//! A real-time write must know each value it replaces (for the history, the
//! presence deltas and the change index), and on a large store those are
//! random block reads: half of the Personas commit thread's time on batches
//! of known users. The threads that parse calls read them instead
//! ([`Store::read_ahead`]), while the commit thread writes the previous
//! group; the commit thread then takes each value only if nothing can have
//! changed it since ([`RecentWrites`]), and reads the others itself.
//!
//! "Since" is counted in writer sessions ([`Store::writer_epoch`]): a read
//! made after the count was loaded sees every session that had ended by
//! then. A value read at epoch `e` is current for a transaction that began
//! at epoch `now` if every session that ended in `(e, now]` was one of the
//! committer's own small transactions and none of those wrote its key. A
//! session of anyone else (an import, which writes values before it
//! commits and may roll them back) voids the whole read-ahead.

use std::collections::VecDeque;

use super::{keys, Result, Store};

/// Current values of some `(attribute, user)` pairs as read at one writer
/// epoch, for [`super::ImportTxn::offer`].
#[derive(Debug, Default)]
pub struct ReadAhead {
    epoch: u64,
    /// `(attr << 32) | user`, ascending, with the value each had.
    values: Vec<(u64, Option<Vec<u8>>)>,
}

/// The key of `(attr, user)` in a read-ahead.
pub(crate) fn pair_key(attr: u32, user: u32) -> u64 {
    (u64::from(attr) << 32) | u64::from(user)
}

impl ReadAhead {
    /// Pairs read.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether nothing was read.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    pub(crate) fn into_values(self) -> Vec<(u64, Option<Vec<u8>>)> {
        self.values
    }

    #[cfg(test)]
    pub(crate) fn for_test(epoch: u64, values: Vec<(u64, Option<Vec<u8>>)>) -> ReadAhead {
        ReadAhead { epoch, values }
    }
}

impl Store {
    /// Reads the current value of each `(attribute, user)` of `pairs` in one
    /// batched read (`pairs` is left sorted and deduplicated).
    pub fn read_ahead(&self, pairs: &mut Vec<(u32, u32)>) -> Result<ReadAhead> {
        // Loaded before reading: a session that ends during the read counts
        // as after it.
        let epoch = self.writer_epoch();
        pairs.sort_unstable();
        pairs.dedup();
        let keybuf: Vec<[u8; 8]> = pairs
            .iter()
            .map(|&(attr, user)| keys::attr_user(attr, user))
            .collect();
        let mut values = Vec::with_capacity(pairs.len());
        self.each_value(&keybuf, |i, got| {
            let (attr, user) = pairs[i];
            values.push((pair_key(attr, user), got.map(<[u8]>::to_vec)));
            Ok(())
        })?;
        Ok(ReadAhead { epoch, values })
    }
}

/// Sessions of the writer's own kept (how far back a read-ahead may be
/// taken), and pairs kept over all of them (a bound on memory when groups
/// are large: an older read-ahead is then read again, never wrongly taken).
const WINDOW: u64 = 64;
const MAX_PAIRS: usize = 1 << 20;

/// What one writer's own recent small transactions wrote: enough to tell
/// whether a value read ahead is still current ([`RecentWrites::current`]).
#[derive(Debug, Default)]
pub struct RecentWrites {
    /// Its own sessions within the window, oldest first: the epoch each
    /// ended at and the pairs it wrote, sorted. A read-ahead is usually a
    /// commit or two old, so a pair is looked up in a few sorted lists
    /// (a map of every pair written cost 5 % of the commit thread).
    own: VecDeque<(u64, Vec<u64>)>,
    /// Pairs over `own`.
    pairs: usize,
}

impl RecentWrites {
    /// Records that the writer's own session ending at `epoch`
    /// ([`super::ImportTxn::ends_at`]) wrote the values of `pairs`
    /// (attribute, user).
    pub fn record(&mut self, epoch: u64, pairs: impl IntoIterator<Item = (u32, u32)>) {
        let floor = epoch.saturating_sub(WINDOW);
        let mut reuse = None;
        while let Some((e, v)) = self.own.front() {
            if *e > floor && self.pairs <= MAX_PAIRS {
                break;
            }
            self.pairs -= v.len();
            reuse = self.own.pop_front().map(|(_, v)| v);
        }
        let mut written = reuse.unwrap_or_default();
        written.clear();
        written.extend(pairs.into_iter().map(|(a, u)| pair_key(a, u)));
        written.sort_unstable();
        written.dedup();
        self.pairs += written.len();
        self.own.push_back((epoch, written));
    }

    /// Its own sessions that ended after epoch `read`, newest first.
    fn since(&self, read: u64) -> impl Iterator<Item = &(u64, Vec<u64>)> {
        self.own.iter().rev().take_while(move |(e, _)| *e > read)
    }

    /// Whether a read made at epoch `read` can stand in for one at `now`
    /// for pairs that [`RecentWrites::untouched`] clears: every session
    /// ended between them is one of the writer's own, and still kept.
    pub(crate) fn current(&self, read: u64, now: u64) -> bool {
        read <= now && self.since(read).count() as u64 == now - read
    }

    /// Whether none of the writer's own sessions since epoch `read` wrote
    /// `pair`.
    pub(crate) fn untouched(&self, pair: u64, read: u64) -> bool {
        self.since(read)
            .all(|(_, written)| written.binary_search(&pair).is_err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_own_sessions_that_left_a_pair_alone_keep_it_current() {
        let mut r = RecentWrites::default();
        // Nothing ended since the read: current.
        assert!(r.current(5, 5));
        // A session nobody recorded (someone else's) ended: not current.
        assert!(!r.current(5, 6));
        r.record(6, [(1, 10)]);
        assert!(r.current(5, 6));
        assert!(!r.untouched(pair_key(1, 10), 5), "written after the read");
        assert!(r.untouched(pair_key(1, 10), 6), "written before the read");
        assert!(r.untouched(pair_key(1, 11), 5));
        // Another session (8) ended unrecorded between 6 and 8.
        r.record(8, []);
        assert!(!r.current(5, 8));
        assert!(r.current(8, 8));
        assert!(!r.current(9, 8), "a read from the future is refused");
    }

    #[test]
    fn reads_older_than_the_window_are_refused_and_pairs_forgotten() {
        let mut r = RecentWrites::default();
        for e in 1..=(3 * WINDOW) {
            r.record(e, [(1, e as u32)]);
        }
        let now = 3 * WINDOW;
        assert!(r.current(now - WINDOW, now));
        assert!(!r.current(now - WINDOW - 1, now));
        assert_eq!(r.own.len() as u64, WINDOW, "older sessions are dropped");
        assert!(!r.untouched(pair_key(1, now as u32), now - 1));
    }

    #[test]
    fn large_groups_shorten_the_window_instead_of_growing_it() {
        let mut r = RecentWrites::default();
        let big = (MAX_PAIRS / 2) as u32;
        for e in 1..=4u64 {
            r.record(e, (0..big).map(|u| (e as u32, u)));
        }
        assert!(r.pairs <= MAX_PAIRS + big as usize, "{}", r.pairs);
        assert!(r.current(3, 4));
        assert!(r.current(1, 4));
        assert!(
            !r.current(0, 4),
            "a session it forgot counts as someone else's"
        );
        assert!(!r.untouched(pair_key(4, 7), 3));
        assert!(r.untouched(pair_key(3, 7), 3));
    }
}

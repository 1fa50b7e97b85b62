//! Which users have an attribute, kept in memory by the one real-time
//! writer for the attributes every call asks about.
//!
//! A Personas call fills a user's identifiers (`uid`, `anonymous_id`) in
//! only where the user has none yet, so each event of a known user asked
//! the store whether it had one: a random point read in the largest
//! family, on a 10M-user store a block read and decompressed per event,
//! and with single calls most of the commit thread's reads. The
//! attribute's presence bitmap answers the same from memory.
//!
//! The cache holds the bitmaps at one writer epoch
//! ([`super::Store::writer_epoch`]), where they are exact. A transaction
//! begun at that epoch borrows them (nothing else wrote in between), and
//! its commit hands them back with its own presence changes applied, at
//! the epoch it ends. Any other session meanwhile (an import, a plan) or a
//! failed commit leaves the epochs apart, and the next transaction loads
//! the bitmaps again, under the writer lock, so again exactly.

use roaring::RoaringBitmap;

/// Presence bitmaps of a few attributes as of one writer epoch; see the
/// module docs. Empty until a transaction first borrows it.
#[derive(Debug, Default)]
pub struct PresenceCache {
    /// The writer epoch the bitmaps are exact at; `None` while they are
    /// lent out, or were never loaded.
    pub(super) at: Option<u64>,
    pub(super) bitmaps: Vec<(u32, RoaringBitmap)>,
}

impl PresenceCache {
    /// Whether the bitmaps were exact at the end of the last transaction
    /// that borrowed them (else the next one loads them again).
    pub fn is_loaded(&self) -> bool {
        self.at.is_some()
    }

    /// Users the cache says have `attr`, if it holds that attribute.
    pub fn get(&self, attr: u32) -> Option<&RoaringBitmap> {
        self.bitmaps
            .iter()
            .find_map(|(a, bm)| (*a == attr).then_some(bm))
    }
}

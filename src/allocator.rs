//! Giving freed memory back to the system once bulk work ends, in a
//! process that lives on (`serve`).
//!
//! glibc keeps what a thread frees in that thread's arena for its next
//! allocation, and `serve` runs imports and syncs on many threads: after
//! each 10M-id snapshot upload its resident set stayed 5–28 MB higher
//! (62 → 118 MB over six uploads, of which RocksDB's memtables were 8 MB),
//! with 106 MB taken from the system by 15 arenas and 23 MB of it in use.
//! Asking glibc to trim them (`malloc_trim(0)`) brought the same process to
//! 76 MB. The library forbids `unsafe`, so the binary installs how to trim
//! ([`set_release`]); without it (tests, other allocators) nothing happens.

use std::sync::OnceLock;

static RELEASE: OnceLock<fn()> = OnceLock::new();

/// Installs how to give the allocator's free memory back (once; later
/// calls are ignored).
pub fn set_release(release: fn()) {
    let _ = RELEASE.set(release);
}

/// Gives the allocator's free memory back, if the binary said how. Call it
/// when bulk work ends, not in a loop: a trim also returns what the next
/// allocations would have reused, which must then be faulted in again.
pub fn release_free_memory() {
    if let Some(release) = RELEASE.get() {
        let started = std::time::Instant::now();
        release();
        tracing::debug!(took = ?started.elapsed(), "gave free memory back");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    static CALLS: AtomicU32 = AtomicU32::new(0);

    #[test]
    fn the_installed_release_runs_each_time_and_only_the_first_install_counts() {
        super::set_release(|| {
            CALLS.fetch_add(1, Ordering::SeqCst);
        });
        super::set_release(|| panic!("a second install replaced the first"));
        super::release_free_memory();
        super::release_free_memory();
        assert_eq!(CALLS.load(Ordering::SeqCst), 2);
    }
}

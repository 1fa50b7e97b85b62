//! Replays every fuzz corpus and finding (`fuzz/corpus/<target>/`, kept in
//! the repository) through the same checks as the libFuzzer targets, on
//! stable Rust, in seconds: an input that once broke an invariant is
//! checked on every test run. `make fuzz` grows the corpora. Like
//! libFuzzer's `-malloc_limit_mb`, no single allocation an input causes
//! may exceed [`ALLOCATION_LIMIT`] (a small damaged record once asked for
//! 4 GB, which a machine with memory to spare would have granted quietly).

#[path = "../fuzz/harness.rs"]
mod harness;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The largest single allocation an input may cause.
const ALLOCATION_LIMIT: usize = 256 << 20;

/// The system allocator, remembering the largest request since reset.
struct Largest;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        LARGEST.fetch_max(new, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static ALLOCATOR: Largest = Largest;

#[test]
fn every_corpus_input_keeps_the_invariants() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut replayed = 0;
    for (name, check) in harness::TARGETS {
        let dir = root.join(name);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (every target keeps a corpus)", dir.display()))
            .map(|e| e.expect("entry").path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "{} is empty", dir.display());
        for input in inputs {
            // `make fuzz` may be merging the corpus meanwhile.
            let Ok(data) = std::fs::read(&input) else {
                continue;
            };
            LARGEST.store(0, Ordering::Relaxed);
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(
                outcome.is_ok(),
                "{name}: {} broke an invariant",
                input.display()
            );
            let largest = LARGEST.load(Ordering::Relaxed);
            assert!(
                largest <= ALLOCATION_LIMIT,
                "{name}: {} ({} bytes) made an allocation of {largest} bytes",
                input.display(),
                data.len()
            );
            replayed += 1;
        }
    }
    assert!(replayed >= harness::TARGETS.len());
}

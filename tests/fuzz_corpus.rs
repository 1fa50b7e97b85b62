//! Replays every fuzz corpus and finding (`fuzz/corpus/<target>/`, kept in
//! the repository) through the same checks as the libFuzzer targets, on
//! stable Rust, in seconds: an input that once broke an invariant is
//! checked on every test run. `make fuzz` grows the corpora.

#[path = "../fuzz/harness.rs"]
mod harness;

use std::path::Path;

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
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(
                outcome.is_ok(),
                "{name}: {} broke an invariant",
                input.display()
            );
            replayed += 1;
        }
    }
    assert!(replayed >= harness::TARGETS.len());
}

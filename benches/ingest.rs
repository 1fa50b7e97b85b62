//! Snapshot import throughput at 1M and 10M users: ids the store already
//! knows (the budget: ≥ 5M ids/s) and ids it has never seen (≥ 1M ids/s).
//! Set `SEGSYNC_BENCH_SIZES=1000000` to run one size only.

mod common;

use std::io::{BufWriter, Write};
use std::path::Path;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use segsync::{fixtures::distinct_id, ingest, store::Store};

fn write_ids(path: &Path, n: u64) {
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    for i in 0..n {
        writeln!(w, "{}", distinct_id(i)).unwrap();
    }
    w.flush().unwrap();
}

fn bench(c: &mut Criterion) {
    let opts = ingest::Options::default();
    for n in common::sizes(&[1_000_000, 10_000_000]) {
        let dir = tempfile::tempdir().unwrap();
        let ids = dir.path().join("ids.txt");
        write_ids(&ids, n);
        let mut g = c.benchmark_group(format!("import_{n}"));
        g.sample_size(10);
        g.throughput(Throughput::Elements(n));

        let known = Store::open(dir.path().join("known")).unwrap();
        ingest::import_segment(&known, "s", &ids, &opts).unwrap();
        // Measure a settled store (snapshot imports are hours apart), not
        // the flush and compaction of the bulk load just made.
        known.compact();
        g.bench_function("known_ids", |b| {
            b.iter(|| ingest::import_segment(&known, "s", &ids, &opts).unwrap())
        });
        drop(known);

        g.bench_function("new_ids", |b| {
            b.iter_batched(
                || {
                    let d = tempfile::tempdir_in(dir.path()).unwrap();
                    let s = Store::open(d.path().join("store")).unwrap();
                    (d, s)
                },
                |(d, s)| {
                    ingest::import_segment(&s, "s", &ids, &opts).unwrap();
                    (d, s)
                },
                BatchSize::PerIteration,
            )
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

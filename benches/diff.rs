//! Diff of two snapshots with 1% churn at 1M and 10M users, loading both
//! bitmaps from RocksDB included (the budget: ≤ 10 ms at 10M), and the
//! bitmap algebra alone.

mod common;

use criterion::{criterion_group, criterion_main, Criterion};
use segsync::fixtures::{generate, Spec};
use segsync::{ingest, plan, store::Store};

fn bench(c: &mut Criterion) {
    for n in common::sizes(&[1_000_000, 10_000_000]) {
        let dir = tempfile::tempdir().unwrap();
        let spec = Spec {
            users: n,
            churn: 0.01,
            attribute_coverage: 0.9,
            seed: 1,
        };
        let g = generate(&spec, dir.path()).unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let opts = ingest::Options::default();
        ingest::import_users(&store, &g.users_csv, &opts).unwrap();
        ingest::import_segment(&store, "s", &g.snapshot_1, &opts).unwrap();
        ingest::import_segment(&store, "s", &g.snapshot_2, &opts).unwrap();

        let mut grp = c.benchmark_group(format!("diff_{n}"));
        grp.sample_size(20);
        grp.bench_function("load_and_diff", |b| {
            b.iter(|| plan::segment_diff(&store, "s", None, None, None).unwrap())
        });
        grp.bench_function("load_and_diff_with_attribute", |b| {
            b.iter(|| plan::segment_diff(&store, "s", None, None, Some("uid")).unwrap())
        });
        let seg = store.segment("s").unwrap().unwrap();
        let a = store.snapshot_members(seg.id, 1).unwrap();
        let bm = store.snapshot_members(seg.id, 2).unwrap();
        grp.bench_function("xor_only", |b| b.iter(|| plan::diff(&a, &bm)));
        grp.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Rendering pages to JSON (resolve distinct ids and identifier values from
//! the store, write the seed's body): the budget is ≥ 3M users/s per core.
//! Runs a planned full execution's pages through `pipeline::render_only`
//! on one and on two threads, for the custom body and for Cohort Sync
//! (whose first render of an execution also measures every member to plan
//! size-capped pages, on every core: `cohortsync_plan_and_render` pays
//! that each time).

mod common;

use std::io::Write;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use segsync::destination::{self, DestinationConfig};
use segsync::lifecycle::{ExecutionRecord, Frequency, Schedule, SyncRecord, Trigger};
use segsync::{fixtures::distinct_id, ingest, pipeline, plan, store::Store};

/// Adds destination `cfg`, a daily sync of segment `s` by `uid` to it, and
/// plans its first (full) execution.
fn planned_sync(store: &Store, cfg: DestinationConfig) -> (SyncRecord, ExecutionRecord) {
    let name = cfg.name.clone();
    destination::add(store, cfg).unwrap();
    let mut sync = segsync::lifecycle::actions::create(
        store,
        segsync::lifecycle::actions::NewSync::new(
            "s",
            &name,
            "uid",
            Schedule::Every(Frequency::Daily),
        ),
        chrono::Utc::now(),
        "bench",
    )
    .unwrap();
    let exec = plan::plan_execution(store, &mut sync, 10_000, Trigger::Scheduled).unwrap();
    (sync, exec)
}

fn bench(c: &mut Criterion) {
    for n in common::sizes(&[1_000_000]) {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("members.csv");
        let mut w = std::io::BufWriter::new(std::fs::File::create(&csv).unwrap());
        writeln!(w, "distinct_id,uid").unwrap();
        for i in 0..n {
            writeln!(w, "{},uid-{i}", distinct_id(i)).unwrap();
        }
        w.flush().unwrap();
        drop(w);
        let store = Store::open(dir.path().join("store")).unwrap();
        ingest::import_segment(&store, "s", &csv, &ingest::Options::default()).unwrap();
        let cfg = DestinationConfig {
            page_size: Some(10_000),
            static_kv: vec![("source".into(), "segsync".into())],
            ..DestinationConfig::new("d", "http://127.0.0.1:9/")
        };
        let (sync, exec) = planned_sync(&store, cfg);

        let mut g = c.benchmark_group(format!("render_{n}"));
        g.sample_size(10);
        g.throughput(Throughput::Elements(n));
        for threads in [1, 2] {
            g.bench_function(format!("{threads}_threads"), |b| {
                b.iter(|| pipeline::render_only(&store, sync.id, exec.seq, threads).unwrap())
            });
        }
        g.finish();

        let cohort = DestinationConfig {
            format: destination::Format::Cohortsync,
            basic: Some(destination::BasicAuth {
                user: "ws".into(),
                password: "data-api-key".into(),
            }),
            headers: vec![
                ("MOE-APPKEY".into(), "ws".into()),
                ("MOE-DESTINATION-PARTNER".into(), "moengage".into()),
            ],
            ..DestinationConfig::new("cohort", "http://127.0.0.1:9/")
        };
        let (mut csync, cexec) = planned_sync(&store, cohort);
        let mut g = c.benchmark_group(format!("cohortsync_{n}"));
        g.sample_size(10);
        g.throughput(Throughput::Elements(n));
        for threads in [1, 2] {
            g.bench_function(format!("render_{threads}_threads"), |b| {
                b.iter(|| pipeline::render_only(&store, csync.id, cexec.seq, threads).unwrap())
            });
        }
        let csync_id = csync.id;
        // Measuring the new plan's members runs on every core; rendering on one.
        g.bench_function("plan_and_render_1_render_thread", |b| {
            b.iter_batched(
                || plan::plan_execution(&store, &mut csync, 10_000, Trigger::Scheduled).unwrap(),
                |e| pipeline::render_only(&store, csync_id, e.seq, 1).unwrap(),
                criterion::BatchSize::PerIteration,
            )
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Personas ingestion without HTTP: identify calls and batches of 100 go
//! through the real [`Committer`] (parsed and resolved on the caller's
//! thread, applied in groups with one synced write on the writer thread),
//! with a fixed number of calls in flight, as `wrk` keeps connections busy.
//! Half the events update random users the store has, half create new
//! ones: the bodies `segsync bench` sends (`fixtures::identify_body`). What this leaves out (hyper, the
//! socket, the load generator) is what made the end-to-end figures too
//! noisy to compare two builds of the commit path on this machine.
//! `SEGSYNC_BENCH_SIZES=10000000` sets the store's users (default 1M).

mod common;

use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use segsync::fixtures::{self, distinct_id};
use segsync::inbound::personas::{Answer, Committer, Endpoint, GroupLimits};
use segsync::{ingest, store::Store};

/// Users `0..n` with a uid and two traits, loaded the way a first import is.
fn store_with_users(dir: &std::path::Path, n: u64) -> Arc<Store> {
    let csv = dir.join("users.csv");
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&csv).unwrap());
    writeln!(w, "distinct_id,uid,plan,score").unwrap();
    for i in 0..n {
        writeln!(w, "{},uid-{i},p{},{}", distinct_id(i), i % 7, i % 1000).unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let store = Store::open(dir.join("store")).unwrap();
    ingest::import_users(&store, &csv, &ingest::Options::default()).unwrap();
    std::fs::remove_file(&csv).unwrap();
    // Calls arrive at a settled store, not into the bulk load's compaction.
    store.compact();
    segsync::inbound::add_write_key(&store, "bench", fixtures::BENCH_WRITE_KEY).unwrap();
    Arc::new(store)
}

/// Threads that parse and resolve calls, as `serve`'s two async workers do
/// (one alone made the lookups of a 10M store the bottleneck, which the
/// server spreads over both cores).
const SENDERS: usize = 2;

/// Sends `bodies` with `in_flight` calls outstanding at a time, from
/// [`SENDERS`] threads, each next call submitted as an earlier one of its
/// thread is answered. Returns the time taken.
fn drive(
    store: &Arc<Store>,
    committer: &Committer,
    endpoint: Endpoint,
    bodies: &[String],
    in_flight: usize,
) -> Duration {
    let auth = format!("Basic {}", fixtures::bench_basic_auth());
    let started = Instant::now();
    let share = bodies.len().div_ceil(SENDERS);
    std::thread::scope(|s| {
        for part in bodies.chunks(share) {
            let auth = &auth;
            s.spawn(move || send_part(store, committer, endpoint, auth, part, in_flight / SENDERS));
        }
    });
    started.elapsed()
}

fn send_part(
    store: &Arc<Store>,
    committer: &Committer,
    endpoint: Endpoint,
    authorization: &str,
    bodies: &[String],
    in_flight: usize,
) {
    let (tx, rx) = crossbeam::channel::unbounded::<u16>();
    let submit = |body: &String| {
        let tx = tx.clone();
        committer.submit(
            store,
            endpoint,
            Some(authorization),
            body.as_bytes(),
            move |a: Answer| {
                let _ = tx.send(a.status());
            },
        );
    };
    let mut next = bodies.iter();
    for body in next.by_ref().take(in_flight.max(1)) {
        submit(body);
    }
    for _ in 0..bodies.len() {
        let status = rx.recv().unwrap();
        assert_eq!(status, 200, "a call was refused");
        if let Some(body) = next.next() {
            submit(body);
        }
    }
}

/// The time of `iters` rounds, each sending the bodies `make` builds
/// beforehand (untimed) with `send`.
fn rounds(
    iters: u64,
    mut make: impl FnMut() -> Vec<String>,
    send: impl Fn(&[String]) -> Duration,
) -> Duration {
    (0..iters)
        .map(|_| {
            let bodies = make();
            send(&bodies)
        })
        .sum()
}

fn bench(c: &mut Criterion) {
    for n in common::sizes(&[1_000_000]) {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_users(dir.path(), n);
        let committer = Committer::start(store.clone(), GroupLimits::default()).unwrap();
        let mut g = c.benchmark_group(format!("personas_{n}"));
        g.sample_size(10);

        // Call `k` of the run, and users nobody has sent before: `rt-1`, …
        let (mut k, mut new) = (0u64, 0u64);
        let mut next_call = || {
            k += 1;
            fixtures::identify_body(k, n, || {
                new += 1;
                new
            })
        };

        const CALLS: usize = 4096;
        g.throughput(Throughput::Elements(CALLS as u64));
        g.bench_function("identify_32_in_flight", |b| {
            b.iter_custom(|iters| {
                rounds(
                    iters,
                    || (0..CALLS).map(|_| next_call()).collect(),
                    |bodies| drive(&store, &committer, Endpoint::Identify, bodies, 32),
                )
            })
        });

        const BATCHES: usize = 128;
        const EVENTS: usize = 100;
        g.throughput(Throughput::Elements((BATCHES * EVENTS) as u64));
        g.bench_function("batch_of_100_8_in_flight", |b| {
            b.iter_custom(|iters| {
                let mut batch = || fixtures::batch_body((0..EVENTS).map(|_| next_call()));
                rounds(
                    iters,
                    || (0..BATCHES).map(|_| batch()).collect(),
                    |bodies| drive(&store, &committer, Endpoint::Batch, bodies, 8),
                )
            })
        });
        g.finish();
        committer.stop();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

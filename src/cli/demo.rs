//! `segsync demo`: the main job end to end on generated data — users and
//! two snapshots, a built-in receiver on 127.0.0.1, a periodic sync run
//! twice (the full membership, then after churn only the difference) — and a
//! check that what the receiver rebuilt equals what it should hold,
//! computed independently from the generator.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;

use crate::checking_receiver::{Receiver, ReceiverOptions};
use crate::destination::{self, DestinationConfig};
use crate::fixtures::{distinct_id, draw, generate, Spec};
use crate::lifecycle::{actions, ExecStatus, ExecutionRecord, Frequency, Schedule, Trigger};
use crate::pipeline::RunOptions;
use crate::{ingest, store::Store};

/// `demo` arguments.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Number of users to generate.
    #[arg(long, default_value_t = 1_000_000)]
    pub users: u64,
    /// Churn between the two snapshots.
    #[arg(long, default_value_t = 0.01)]
    pub churn: f64,
    /// Users per request.
    #[arg(long, default_value_t = 5000)]
    pub page_size: u32,
    /// Keep the demo's files and store here instead of a temporary directory.
    #[arg(long = "demo-dir")]
    pub demo_dir: Option<PathBuf>,
}

/// The demo found a mismatch (exit code 1).
#[derive(Debug, thiserror::Error)]
#[error("the receiver's membership differs from the expected one: {0}")]
pub struct Mismatch(String);

impl crate::error::Classify for Mismatch {
    /// The run or test happened and went wrong: a failure, not a usage error.
    fn fault(&self) -> crate::error::Fault {
        crate::error::Fault::Internal
    }
}

pub(crate) fn local_destination(
    name: &str,
    url: String,
    page_size: u32,
    rpm: u32,
) -> DestinationConfig {
    DestinationConfig {
        headers: vec![("X-Demo".into(), "segsync".into())],
        page_size: Some(page_size),
        rpm: Some(rpm),
        allow_resync: true,
        retry_delay_ms: Some(100),
        ..DestinationConfig::new(name, url)
    }
}

pub(crate) fn create_sync(store: &Store, segment: &str, dest: &str) -> anyhow::Result<u32> {
    let rec = actions::create(
        store,
        actions::NewSync::new(segment, dest, "uid", Schedule::Every(Frequency::Daily)),
        chrono::Utc::now(),
        "demo",
    )?;
    Ok(rec.id)
}

fn row(e: &ExecutionRecord) {
    let secs = e.seconds().unwrap_or(0.0).max(1e-9);
    println!(
        "{:<4} {:<5} {:>6} {:>10} {:>9} {:>10} {:>9} {:>8.2} {:>9.0} {:>11.0}",
        e.seq,
        if e.seq == 1 { "full" } else { "diff" },
        e.total_pages,
        e.added,
        e.removed,
        e.total,
        e.requests,
        secs,
        e.requests as f64 / secs,
        (e.added + e.removed) as f64 / secs
    );
}

pub(crate) fn run(a: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let tmp = tempfile::tempdir()?;
    let root = a
        .demo_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let spec = Spec {
        users: a.users,
        churn: a.churn,
        attribute_coverage: 0.9,
        seed: 42,
    };
    let g = generate(&spec, &root.join("fixtures"))?;
    println!(
        "generated {} users, 2 snapshots with {:.1}% churn",
        g.users,
        a.churn * 100.0
    );

    let store = Store::open(root.join("store"))?;
    let opts = ingest::Options {
        progress: true,
        ..Default::default()
    };
    let u = ingest::import_users(&store, &g.users_csv, &opts)?;
    println!("imported users:      {:>9} in {:.2} s", u.lines, u.seconds);
    let s1 = ingest::import_segment(&store, "demo", &g.snapshot_1, &opts)?;
    println!(
        "imported snapshot 1: {:>9} members in {:.2} s ({:.1}M ids/s)",
        s1.members.unwrap_or(0),
        s1.seconds,
        s1.ids_per_sec / 1e6
    );

    let receiver =
        Receiver::start(ReceiverOptions::default()).context("starting the built-in receiver")?;
    destination::add(
        &store,
        local_destination("demo-receiver", receiver.url(), a.page_size, 25_000),
    )?;
    let sync = create_sync(&store, "demo", "demo-receiver")?;
    println!(
        "receiver on {}; sync {sync}: demo → demo-receiver (uid, daily)\n",
        receiver.addr
    );
    println!(
        "{:<4} {:<5} {:>6} {:>10} {:>9} {:>10} {:>9} {:>8} {:>9} {:>11}",
        "run",
        "kind",
        "pages",
        "added",
        "removed",
        "total",
        "requests",
        "seconds",
        "req/s",
        "users/s"
    );
    let run_opts = RunOptions {
        progress: false,
        ..Default::default()
    };
    let first =
        crate::lifecycle::actions::run(&store, sync, Trigger::Scheduled, &run_opts, "demo")?;
    row(&first);
    let s2 = ingest::import_segment(&store, "demo", &g.snapshot_2, &ingest::Options::default())?;
    let second =
        crate::lifecycle::actions::run(&store, sync, Trigger::Scheduled, &run_opts, "demo")?;
    row(&second);
    for e in [&first, &second] {
        if e.status != ExecStatus::Complete {
            anyhow::bail!(
                "execution {} failed: {}",
                e.execution_id(),
                e.error.clone().unwrap_or_default()
            );
        }
    }

    // What the destination must hold, from the generator alone.
    let expected: HashSet<String> = (0..spec.users)
        .filter(|&i| {
            let d = draw(&spec, i);
            d.has_uid && d.in_snapshot_2(spec.churn)
        })
        .map(distinct_id)
        .collect();
    let got = receiver.received();
    let members: HashSet<&String> = got.members.keys().collect();
    let matches = got.errors.is_empty()
        && members.len() == expected.len()
        && expected.iter().all(|id| got.members.contains_key(id));
    println!(
        "\nreceiver: {} requests, {} rejected, {} members; expected {} (snapshot 2 ∩ has uid, {} members in snapshot 2): {}",
        got.requests,
        got.errors.len(),
        members.len(),
        expected.len(),
        s2.members.unwrap_or(0),
        if matches { "MATCH" } else { "MISMATCH" }
    );
    println!("demo finished in {:.1} s", started.elapsed().as_secs_f64());
    if !matches {
        return Err(Mismatch(format!(
            "{} rejected requests, {} members vs {} expected",
            got.errors.len(),
            members.len(),
            expected.len()
        ))
        .into());
    }
    Ok(())
}

//! `segsync soak --minutes N`: `serve` (in this process, on a store of its
//! own in a temp dir) under a steady mixed load for N minutes: three syncs
//! (two file-fed segments and one Personas audience) run again and again
//! against local receivers that answer 10 % of requests with a fault (503,
//! 429 with `Retry-After`, a slow answer, no answer within the timeout),
//! snapshots replaced every minute through the HTTP upload, Personas
//! identify calls arriving all the while, retention applied every minute.
//! Then the load stops, every sync runs to completion, and each receiver's
//! membership is compared with what the store says it should hold. Reports
//! requests, faults survived, executions, and resident memory over time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::checking_receiver::{Faults, Receiver, ReceiverOptions};
use crate::destination::{self, DestinationConfig};
use crate::lifecycle::{BitmapKind, ExecStatus, ExecutionRecord, SyncRecord};
use crate::store::Store;

/// `soak` arguments.
#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// How long the load lasts.
    #[arg(long, default_value_t = 30.0)]
    pub minutes: f64,
    /// Users in the store.
    #[arg(long, default_value_t = 100_000)]
    pub users: u64,
    /// Share of requests each receiver answers with a fault.
    #[arg(long, default_value_t = 0.1)]
    pub fault_rate: f64,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// One destination's outcome.
#[derive(Debug, Serialize)]
struct Destination {
    sync: u32,
    segment: String,
    requests: u64,
    pages_applied: u64,
    duplicates: u64,
    faults: Faults,
    executions: usize,
    complete: usize,
    failed: usize,
    members: u64,
    exact: bool,
}

/// The report.
#[derive(Debug, Serialize)]
struct Report {
    minutes: f64,
    users: u64,
    personas_calls: u64,
    personas_acknowledged: u64,
    snapshot_uploads: u64,
    runs_started: u64,
    destinations: Vec<Destination>,
    /// (seconds since start, resident MB), every 10 s.
    rss_mb: Vec<(u64, f64)>,
    /// Resident memory at the end of the load minus after the first quarter.
    rss_growth_after_warmup_mb: f64,
    all_exact: bool,
}

fn rss_mb() -> f64 {
    super::bench::process_memory_mb("VmRSS")
}

fn draw() -> u64 {
    crate::secret::random_bytes::<8>()
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

/// Segment `salt`'s members after `step` minutes: users whose hash bucket
/// (0..100), shifted by `step`, falls under `share`; each step moves 1 %
/// of the users in and 1 % out, as a day of churn would.
fn members_file(users: u64, share: u64, salt: u64, step: u64) -> String {
    let mut out = String::new();
    for i in 0..users {
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(&i.to_le_bytes(), salt);
        if (h % 100 + step) % 100 < share {
            out.push_str(&crate::fixtures::distinct_id(i));
            out.push('\n');
        }
    }
    out
}

pub(crate) fn run(a: SoakArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data)?;
    std::fs::write(
        crate::config::path(&data),
        "[limits]\nmax_resyncs_per_day = 1000000\ncool_off_minutes = 0\n\n[retention]\nkeep_executions = 3\nkeep_snapshots = 2\nevery_minutes = 1\n",
    )?;
    let settings = crate::config::load(&data)?;
    let store = Arc::new(Store::open(&data)?);
    let opts = crate::ingest::Options::default();
    let mut csv = String::from("distinct_id,uid\n");
    for i in 0..a.users {
        csv.push_str(&format!("{},uid-{i}\n", crate::fixtures::distinct_id(i)));
    }
    let users_csv = tmp.path().join("users.csv");
    std::fs::write(&users_csv, csv)?;
    crate::ingest::import_users(&store, &users_csv, &opts)?;
    let segments = ["soak-a", "soak-b", "soak_vip"];
    for (n, seg) in segments.iter().enumerate() {
        let f = tmp.path().join(format!("{seg}.txt"));
        std::fs::write(&f, members_file(a.users, [60, 30, 10][n], n as u64, 0))?;
        crate::ingest::import_segment(&store, seg, &f, &opts)?;
    }
    let mut receivers = Vec::new();
    let mut syncs = Vec::new();
    for seg in segments {
        let rx = Receiver::start(ReceiverOptions {
            fault_rate: a.fault_rate,
            slow: Duration::from_millis(800),
            ..Default::default()
        })?;
        destination::add(
            &store,
            DestinationConfig {
                page_size: Some(100),
                rpm: Some(6000),
                timeout_ms: Some(2000),
                retry_delay_ms: Some(200),
                max_retries: Some(6),
                ..DestinationConfig::new(format!("{seg}-dest"), rx.url())
            },
        )?;
        syncs.push(super::demo::create_sync(
            &store,
            seg,
            &format!("{seg}-dest"),
        )?);
        receivers.push(rx);
    }
    crate::inbound::add_write_key(&store, "soak", "soak-write-key")?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let started = Instant::now();
    let stop_load = Arc::new(AtomicBool::new(false));
    let (calls, acked, uploads, runs) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let report = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::server::serve(
            listener,
            store.clone(),
            crate::server::ServeOptions {
                tick: Duration::from_secs(1),
                retention: settings.retention,
                ..Default::default()
            },
            async move {
                let _ = stop_rx.await;
            },
        ));
        let client = reqwest::Client::new();
        let load_for = Duration::from_secs_f64(a.minutes * 60.0);

        // Personas: identify calls, one at a time, as fast as answered.
        let personas = {
            let (client, base, stop, calls, acked) = (
                client.clone(),
                base.clone(),
                stop_load.clone(),
                calls.clone(),
                acked.clone(),
            );
            let users = a.users;
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let r = draw();
                    let id = crate::fixtures::distinct_id(r % users);
                    let body = serde_json::json!({
                        "type": "identify", "userId": id,
                        "traits": {"soak_vip": (r >> 40).is_multiple_of(2)}
                    });
                    calls.fetch_add(1, Ordering::Relaxed);
                    let sent = client
                        .post(format!("{base}/v1/identify"))
                        .basic_auth("soak-write-key", Some(""))
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .send()
                        .await;
                    if sent.is_ok_and(|r| r.status().is_success()) {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };

        // Every 20 s each sync is asked to run; every minute the file-fed
        // segments get a new snapshot (uploaded); every 10 s RSS is read.
        let mut rss = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        let mut n = 0u64;
        while started.elapsed() < load_for {
            tick.tick().await;
            rss.push((started.elapsed().as_secs(), rss_mb()));
            if n.is_multiple_of(2) {
                for id in &syncs {
                    let r = client
                        .post(format!("{base}/api/v1/syncs/{id}/run"))
                        .send()
                        .await;
                    if r.is_ok_and(|r| r.status().as_u16() == 202) {
                        runs.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if n % 6 == 5 {
                for (k, seg) in ["soak-a", "soak-b"].iter().enumerate() {
                    let body = members_file(a.users, [60, 30][k], k as u64, n / 6 + 1);
                    let r = client
                        .post(format!(
                            "{base}/api/v1/segments/{seg}/snapshots?source=soak"
                        ))
                        .body(body)
                        .send()
                        .await;
                    if r.is_ok_and(|r| r.status().is_success()) {
                        uploads.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            n += 1;
        }
        stop_load.store(true, Ordering::Relaxed);
        let _ = personas.await;
        rss.push((started.elapsed().as_secs(), rss_mb()));

        // Drain: every sync runs until one run completes after the load.
        for id in &syncs {
            let mut tries = 0;
            loop {
                tries += 1;
                let r = client
                    .post(format!("{base}/api/v1/syncs/{id}/run"))
                    .send()
                    .await?;
                let accepted = r.status().as_u16() == 202;
                let seq = r
                    .bytes()
                    .await
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .and_then(|v| v["execution"].as_u64());
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let b = client
                        .get(format!("{base}/api/v1/syncs/{id}"))
                        .send()
                        .await?
                        .bytes()
                        .await?;
                    let v: serde_json::Value = serde_json::from_slice(&b)?;
                    if v["running"] == false {
                        break;
                    }
                }
                let last = SyncRecord::load(&store, *id)?.and_then(|s| s.last_execution);
                let done = last
                    .map(|q| ExecutionRecord::load(&store, *id, q))
                    .transpose()?
                    .flatten()
                    .is_some_and(|e| e.status == ExecStatus::Complete);
                if accepted && done && seq.is_some() {
                    break;
                }
                anyhow::ensure!(
                    tries < 50,
                    "sync {id} did not complete a run after the load"
                );
            }
        }
        let _ = stop_tx.send(());
        server.await??;

        let mut destinations = Vec::new();
        for ((id, rx), seg) in syncs.iter().zip(&receivers).zip(segments) {
            let sync = SyncRecord::load(&store, *id)?
                .ok_or_else(|| anyhow::anyhow!("sync {id} is gone"))?;
            let execs = ExecutionRecord::all(&store, *id)?;
            let last = sync
                .last_complete
                .and_then(|q| execs.iter().find(|e| e.seq == q))
                .ok_or_else(|| anyhow::anyhow!("sync {id} never completed"))?;
            let synced = last.bitmap(&store, BitmapKind::Synced)?;
            let attr = store
                .attr_id("uid")
                .ok_or_else(|| anyhow::anyhow!("no uid attribute"))?;
            let got = rx.received();
            let mut exact = got.members.len() as u64 == synced.len() && got.errors.is_empty();
            for u in &synced {
                if !exact {
                    break;
                }
                let id = store.distinct_id(u)?.unwrap_or_default();
                let want = store
                    .attr_value_as_of(attr, u, last.write_seq)?
                    .and_then(|v| match v {
                        crate::store::Value::Str(s) => serde_json::to_string(&s).ok(),
                        _ => None,
                    });
                exact = want.is_some() && got.members.get(&id) == want.as_ref();
            }
            destinations.push(Destination {
                sync: *id,
                segment: seg.to_string(),
                requests: got.requests,
                pages_applied: got.pages_applied,
                duplicates: got.duplicates,
                faults: got.faults,
                executions: execs.len(),
                complete: execs
                    .iter()
                    .filter(|e| e.status == ExecStatus::Complete)
                    .count(),
                failed: execs
                    .iter()
                    .filter(|e| e.status == ExecStatus::Failed)
                    .count(),
                members: synced.len(),
                exact,
            });
        }
        let warm = rss
            .iter()
            .find(|(t, _)| *t as f64 >= a.minutes * 60.0 / 4.0)
            .or(rss.first())
            .map_or(0.0, |(_, m)| *m);
        let end = rss.last().map_or(0.0, |(_, m)| *m);
        anyhow::Ok(Report {
            minutes: a.minutes,
            users: a.users,
            personas_calls: calls.load(Ordering::Relaxed),
            personas_acknowledged: acked.load(Ordering::Relaxed),
            snapshot_uploads: uploads.load(Ordering::Relaxed),
            runs_started: runs.load(Ordering::Relaxed),
            all_exact: destinations.iter().all(|d| d.exact),
            destinations,
            rss_growth_after_warmup_mb: end - warm,
            rss_mb: rss,
        })
    })?;
    if a.json {
        super::print_json(&report)?;
    } else {
        println!(
            "soak: {:.1} min, {} users; {} Personas calls ({} acknowledged), {} snapshot uploads, {} runs started",
            report.minutes,
            report.users,
            report.personas_calls,
            report.personas_acknowledged,
            report.snapshot_uploads,
            report.runs_started
        );
        for d in &report.destinations {
            println!(
                "  sync {} ({}): {} requests, faults {} 503 / {} 429 / {} slow / {} held; {} executions ({} complete, {} failed); {} members, exact: {}",
                d.sync, d.segment, d.requests, d.faults.unavailable, d.faults.throttled,
                d.faults.slow, d.faults.held, d.executions, d.complete, d.failed, d.members, d.exact
            );
        }
        let rss: Vec<String> = report
            .rss_mb
            .iter()
            .map(|(t, m)| format!("{t}s:{m:.0}"))
            .collect();
        println!("  RSS MB over time: {}", rss.join(" "));
        println!(
            "  RSS growth after warm-up: {:+.1} MB",
            report.rss_growth_after_warmup_mb
        );
    }
    anyhow::ensure!(
        report.all_exact,
        "a destination's membership is not exact after the soak"
    );
    Ok(())
}

//! `segsync bench --workers N`: the cluster simulated on one machine. The
//! same generated data goes out three ways — sent in-process, then through
//! NATS JetStream by 1 worker process, then by N — as K syncs to K
//! destinations at once (one destination alone is bound by its 25000
//! requests a minute, not by segsync). Every receiver is checked for exact
//! membership. It also measures JetStream's own publish/ack rate here and
//! the store's size per user and per execution: the inputs of
//! `docs/SCALE.md`.
//!
//! CPU time is read from `/proc` (clock ticks of 10 ms): this process less
//! its receiver threads is the coordinator (or the in-process sender);
//! workers and nats-server are their own processes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::demo::{create_sync, local_destination};
use crate::checking_receiver::{Receiver, ReceiverOptions, RECEIVER_THREAD};
use crate::cluster::{Cluster, ClusterOptions};
use crate::destination;
use crate::fixtures::{generate, Spec};
use crate::lifecycle::{ExecStatus, Trigger};
use crate::pipeline::RunOptions;
use crate::{ingest, store::Store};

/// Clock ticks per second of `/proc/*/stat` (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

/// One way of sending.
#[derive(Debug, Serialize)]
pub struct Phase {
    /// `in-process`, or `N workers`.
    mode: String,
    syncs: usize,
    pages: u64,
    users: u64,
    seconds: f64,
    pages_per_s: f64,
    users_per_s: f64,
    /// CPU ms per page of this process less its receivers: the
    /// coordinator (render, publish, outcomes, permits), or the
    /// in-process sender (render and send).
    coordinator_cpu_ms_per_page: f64,
    /// CPU ms per page of the worker processes together.
    workers_cpu_ms_per_page: f64,
    /// CPU ms per page of nats-server (when this bench started it).
    nats_cpu_ms_per_page: Option<f64>,
    verified: bool,
}

/// The figures.
#[derive(Debug, Serialize)]
pub struct Report {
    users: u64,
    page_size: u32,
    page_bytes: u64,
    jetstream_publish_acked_sequential_per_s: f64,
    jetstream_publish_acked_pipelined_per_s: f64,
    jetstream_publish_mb_per_s: f64,
    /// 256-byte messages (an event's size), 256 in flight.
    jetstream_small_publish_acked_pipelined_per_s: f64,
    store_mb_per_million_users: f64,
    store_kb_per_execution: f64,
    phases: Vec<Phase>,
}

/// utime + stime of `/proc/{pid}/stat` or `/proc/self/task/{tid}/stat`.
fn cpu_ticks(stat: &Path) -> u64 {
    let Ok(s) = std::fs::read_to_string(stat) else {
        return 0;
    };
    // Fields after the command name (which may hold spaces) in parentheses.
    let Some(rest) = s.rfind(')').map(|i| &s[i + 2..]) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

/// CPU ticks of this process's receiver threads.
fn receiver_ticks() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim().starts_with(RECEIVER_THREAD))
        })
        .map(|t| cpu_ticks(&t.path().join("stat")))
        .sum()
}

fn pid_ticks(pid: u32) -> u64 {
    cpu_ticks(&PathBuf::from(format!("/proc/{pid}/stat")))
}

/// CPU of everything involved, sampled before and after a phase.
struct Cpu {
    own: u64,
    receivers: u64,
    workers: u64,
    nats: u64,
}

fn sample(workers: &[Child], nats: Option<&Child>) -> Cpu {
    Cpu {
        own: cpu_ticks(Path::new("/proc/self/stat")),
        receivers: receiver_ticks(),
        workers: workers.iter().map(|c| pid_ticks(c.id())).sum(),
        nats: nats.map_or(0, |c| pid_ticks(c.id())),
    }
}

fn nats_binary() -> Option<PathBuf> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/bin"])
        .map(|d| Path::new(d).join("nats-server"))
        .find(|p| p.exists())
}

/// A nats-server of our own, on a free port, storing in `dir`.
fn start_nats(dir: &Path) -> anyhow::Result<(Child, String)> {
    let bin = nats_binary().ok_or_else(|| {
        anyhow::anyhow!("nats-server is not installed (Debian: apt-get install nats-server), and no --nats URL was given")
    })?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(bin)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            anyhow::bail!("nats-server did not start on port {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((child, format!("nats://127.0.0.1:{port}")))
}

fn spawn_worker(url: &str, name: &str) -> anyhow::Result<Child> {
    Ok(Command::new(std::env::current_exe()?)
        .args([
            "worker",
            "--nats",
            url,
            "--name",
            name,
            "--concurrency",
            "64",
        ])
        .stdout(Stdio::null())
        .stderr(if std::env::var_os("SEGSYNC_BENCH_WORKER_LOGS").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()?)
}

/// JetStream's publish rate here for `n` messages of `bytes`: each
/// acknowledged before the next (as the coordinator publishes), and 256 in
/// flight. File storage, like the page stream.
async fn jetstream_rate(cluster: &Cluster, bytes: usize, n: usize) -> anyhow::Result<(f64, f64)> {
    use async_nats::jetstream::stream;
    let js = &cluster.js;
    let _ = js.delete_stream("SEGSYNC_BENCH").await;
    js.create_stream(stream::Config {
        name: "SEGSYNC_BENCH".into(),
        subjects: vec!["segsync-bench.>".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("creating the bench stream: {e}"))?;
    let body = bytes::Bytes::from(vec![b'x'; bytes]);
    let t = Instant::now();
    for _ in 0..n {
        js.publish("segsync-bench.seq", body.clone())
            .await?
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let sequential = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut acks = std::collections::VecDeque::new();
    for _ in 0..n {
        acks.push_back(js.publish("segsync-bench.pipe", body.clone()).await?);
        if acks.len() >= 256 {
            if let Some(a) = acks.pop_front() {
                a.await.map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
    }
    for a in acks {
        a.await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let pipelined = n as f64 / t.elapsed().as_secs_f64();
    let _ = js.delete_stream("SEGSYNC_BENCH").await;
    Ok((sequential, pipelined))
}

struct Setup<'a> {
    store: &'a Store,
    syncs: usize,
    page_size: u32,
}

/// K syncs of the bench segment to K fresh receivers, run at once.
fn phase(
    s: &Setup<'_>,
    mode: &str,
    cluster: Option<Arc<Cluster>>,
    workers: &[Child],
    nats: Option<&Child>,
) -> anyhow::Result<Phase> {
    let mut receivers = Vec::new();
    let mut ids = Vec::new();
    let tag = mode.replace(' ', "-");
    for i in 0..s.syncs {
        let rx = Receiver::start(ReceiverOptions {
            keep_members: false,
            ..Default::default()
        })?;
        let name = format!("bench-{tag}-{i}");
        destination::add(
            s.store,
            local_destination(&name, rx.url(), s.page_size, 25_000),
        )?;
        ids.push(create_sync(s.store, "bench", &name)?);
        receivers.push(rx);
    }
    let opts = RunOptions {
        cluster,
        ..Default::default()
    };
    let before = sample(workers, nats);
    let t = Instant::now();
    let results: Vec<anyhow::Result<crate::lifecycle::ExecutionRecord>> =
        std::thread::scope(|sc| {
            let handles: Vec<_> = ids
                .iter()
                .map(|id| {
                    let opts = &opts;
                    sc.spawn(move || {
                        crate::lifecycle::actions::run(
                            s.store,
                            *id,
                            Trigger::Scheduled,
                            opts,
                            "bench",
                        )
                        .map_err(anyhow::Error::from)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a run panicked")))
                })
                .collect()
        });
    let seconds = t.elapsed().as_secs_f64();
    let after = sample(workers, nats);
    let (mut pages, mut users, mut verified) = (0u64, 0u64, true);
    for (r, rx) in results.into_iter().zip(&receivers) {
        let e = r?;
        if e.status != ExecStatus::Complete {
            anyhow::bail!("{mode}: a run failed: {:?}", e.error);
        }
        pages += u64::from(e.total_pages);
        users += e.added;
        let synced = e.bitmap(s.store, crate::lifecycle::BitmapKind::Synced)?;
        verified &= super::bench::holds_exactly(s.store, rx, &synced)?;
    }
    // Out of the way of the active-sync limit for the next phase.
    for id in &ids {
        crate::lifecycle::actions::set_status(
            s.store,
            *id,
            crate::lifecycle::rules::Action::Archive,
            chrono::Utc::now(),
            "bench",
        )?;
    }
    let per_page = |ticks: u64| ticks as f64 / TICKS * 1000.0 / pages.max(1) as f64;
    let own = after.own.saturating_sub(before.own);
    let rx = after.receivers.saturating_sub(before.receivers);
    Ok(Phase {
        mode: mode.to_string(),
        syncs: s.syncs,
        pages,
        users,
        seconds,
        pages_per_s: pages as f64 / seconds,
        users_per_s: users as f64 / seconds,
        coordinator_cpu_ms_per_page: per_page(own.saturating_sub(rx)),
        workers_cpu_ms_per_page: per_page(after.workers.saturating_sub(before.workers)),
        nats_cpu_ms_per_page: nats.map(|_| per_page(after.nats.saturating_sub(before.nats))),
        verified,
    })
}

/// Waits until the coordinator hears from `n` live workers.
fn wait_workers(cluster: &Cluster, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster
        .workers()
        .iter()
        .filter(|w| w.state == "alive")
        .count()
        < n
    {
        if Instant::now() > deadline {
            anyhow::bail!("{n} workers did not show up within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

pub(crate) fn run(workers: usize, a: super::bench::BenchArgs) -> anyhow::Result<()> {
    if workers == 0 || a.syncs == 0 {
        return Err(super::UsageError("--workers and --syncs must be at least 1".into()).into());
    }
    let (users, nats, syncs, page_size, json) = (a.users, a.nats, a.syncs, a.page_size, a.json);
    let tmp = tempfile::tempdir()?;
    let spec = Spec {
        users,
        churn: 0.01,
        attribute_coverage: 0.9,
        seed: 7,
    };
    let g = generate(&spec, &tmp.path().join("fixtures"))?;
    let store_dir = tmp.path().join("store");
    // Three phases of K syncs each: above the seed's default limits.
    std::fs::create_dir_all(&store_dir)?;
    std::fs::write(
        store_dir.join("segsync.toml"),
        "[limits]\nmax_active_syncs = 10000\nmax_syncs_created_per_day = 10000\n",
    )?;
    let store = Store::open(&store_dir)?;
    let opts = ingest::Options::default();
    ingest::import_users(&store, &g.users_csv, &opts)?;
    ingest::import_segment(&store, "bench", &g.snapshot_1, &opts)?;
    // Compaction flushes the memtables: the size on disk is the data's.
    store.compact();
    let after_import = crate::store::bytes_under(&store_dir);

    let (mut nats_child, url) = match nats {
        Some(u) => (None, u),
        None => {
            let (c, u) = start_nats(&tmp.path().join("jetstream"))?;
            (Some(c), u)
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let cluster = rt.block_on(Cluster::start(ClusterOptions::new(url.clone())))?;
    let setup = Setup {
        store: &store,
        syncs,
        page_size,
    };
    let mut phases = Vec::new();
    let nats_ref = nats_child.as_ref();
    phases.push(phase(&setup, "in-process", None, &[], None)?);
    store.compact();
    let after_runs = crate::store::bytes_under(&store_dir);

    let mut pool: Vec<Child> = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        let mut counts = vec![1];
        if workers > 1 {
            counts.push(workers);
        }
        for n in counts {
            while pool.len() < n {
                let name = format!("bench-w{}", pool.len() + 1);
                pool.push(spawn_worker(&url, &name)?);
            }
            wait_workers(&cluster, n)?;
            let mode = format!("{n} worker{}", if n == 1 { "" } else { "s" });
            phases.push(phase(
                &setup,
                &mode,
                Some(cluster.clone()),
                &pool,
                nats_ref,
            )?);
        }
        Ok(())
    })();
    // A typical page, as published.
    let page_bytes = {
        let first = crate::pipeline::first_pages(
            &store,
            &crate::lifecycle::SyncRecord::load(&store, 1)?
                .ok_or_else(|| anyhow::anyhow!("no sync"))?,
            crate::lifecycle::ExecutionRecord::load(&store, 1, 1)?
                .ok_or_else(|| anyhow::anyhow!("no execution"))?,
            &destination::get(&store, "bench-in-process-0")?.validated()?,
            1,
        )?;
        first.1.first().map_or(0, |p| p.body.len() as u64)
    };
    let (seq, pipe) = rt.block_on(jetstream_rate(&cluster, page_bytes.max(1) as usize, 2000))?;
    let (_, small) = rt.block_on(jetstream_rate(&cluster, 256, 20_000))?;
    for mut w in pool {
        let _ = w.kill();
        let _ = w.wait();
    }
    if let Some(c) = nats_child.as_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
    result?;
    let executions = (phases.len() * syncs) as f64;
    let r = Report {
        users,
        page_size,
        page_bytes,
        jetstream_publish_acked_sequential_per_s: seq,
        jetstream_publish_acked_pipelined_per_s: pipe,
        jetstream_publish_mb_per_s: pipe * page_bytes as f64 / 1e6,
        jetstream_small_publish_acked_pipelined_per_s: small,
        store_mb_per_million_users: after_import as f64 / 1e6 / (users as f64 / 1e6),
        store_kb_per_execution: after_runs.saturating_sub(after_import) as f64
            / 1e3
            / (executions / phases.len() as f64),
        phases,
    };
    if json {
        return super::print_json(&r);
    }
    println!(
        "{} users, {} syncs at once, {} users/page ({} bytes)",
        r.users, syncs, r.page_size, r.page_bytes
    );
    println!(
        "JetStream publish+ack ({} B, file storage): {:.0}/s one at a time, {:.0}/s 256 in flight ({:.0} MB/s)",
        r.page_bytes,
        r.jetstream_publish_acked_sequential_per_s,
        r.jetstream_publish_acked_pipelined_per_s,
        r.jetstream_publish_mb_per_s
    );
    println!(
        "JetStream publish+ack (256 B): {:.0}/s 256 in flight",
        r.jetstream_small_publish_acked_pipelined_per_s
    );
    println!(
        "store: {:.1} MB per million users, {:.1} KB per execution",
        r.store_mb_per_million_users, r.store_kb_per_execution
    );
    println!(
        "{:<12} {:>7} {:>8} {:>9} {:>11} {:>14} {:>12} {:>10}  verified",
        "mode", "pages", "seconds", "pages/s", "users/s", "coord ms/page", "workers ms", "nats ms"
    );
    for p in &r.phases {
        println!(
            "{:<12} {:>7} {:>8.2} {:>9.0} {:>10.2}M {:>14.3} {:>12.3} {:>10}  {}",
            p.mode,
            p.pages,
            p.seconds,
            p.pages_per_s,
            p.users_per_s / 1e6,
            p.coordinator_cpu_ms_per_page,
            p.workers_cpu_ms_per_page,
            p.nats_cpu_ms_per_page
                .map_or("-".into(), |v| format!("{v:.3}")),
            p.verified
        );
    }
    Ok(())
}

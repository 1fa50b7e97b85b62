//! `segsync bench`: end-to-end figures on generated data — ingest, diff,
//! render, full syncs to local receivers at the highest allowed rate (the
//! seed's body and Cohort Sync's), the achieved rate at a throttled
//! setting, and peak memory.

use std::time::Instant;

use serde::Serialize;

use super::demo::{create_sync, local_destination};
use crate::checking_receiver::{ReceiveFormat, Receiver, ReceiverOptions};
use crate::destination;
use crate::fixtures::{generate, Spec};
use crate::lifecycle::{ExecStatus, Trigger};
use crate::pipeline::{self, RunOptions};
use crate::{ingest, plan, store::Store};

/// `bench` arguments.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Users to generate.
    #[arg(long, default_value_t = 1_000_000)]
    pub users: u64,
    /// Requests per minute for the throttled run.
    #[arg(long, default_value_t = 1200)]
    pub throttled_rpm: u32,
    /// Seconds the throttled run lasts (about).
    #[arg(long, default_value_t = 20)]
    pub throttled_seconds: u32,
    /// Instead of the figures above: run a daily sync this many times (1 %
    /// of the members replaced and 1 % of their identifiers changed before
    /// each run, `[retention]` defaults applied after each) and report the
    /// data dir's size after the first and the last run.
    #[arg(long)]
    pub growth_runs: Option<u32>,
    /// With `--growth-runs`: apply no retention (to compare).
    #[arg(long, requires = "growth_runs")]
    pub no_retention: bool,
    /// Also run the tools a user would pick instead on the same files —
    /// `sort` + `comm`, DuckDB's CLI or Python module when installed — and
    /// print segsync's speed-up over each.
    #[arg(long)]
    pub compare: bool,
    /// Instead of the figures above: the cluster simulated on this machine
    /// — the same syncs sent in-process, then by 1 and by N `segsync
    /// worker` processes over NATS JetStream (a nats-server is started
    /// unless --nats is given).
    #[arg(long)]
    pub workers: Option<usize>,
    /// With --workers: the NATS server to use.
    #[arg(long, requires = "workers")]
    pub nats: Option<String>,
    /// With --workers: syncs (each to its own destination) run at once.
    #[arg(long, default_value_t = 4, requires = "workers")]
    pub syncs: usize,
    /// With --workers: users per page.
    #[arg(long, default_value_t = 1000, requires = "workers")]
    pub page_size: u32,
    /// Seconds each phase of the Personas load lasts (0 skips it).
    #[arg(long, default_value_t = 5.0)]
    pub personas_seconds: f64,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// The figures.
#[derive(Debug, Serialize)]
pub struct Report {
    users: u64,
    /// The 5-attribute file into the main store, whose users the snapshot
    /// imports created without attributes: every value a first value of a
    /// known user.
    users_import_rows_per_s: f64,
    /// The same file's first load into a fresh store (what DuckDB is
    /// compared with).
    users_first_load: FormatFigure,
    /// A tenth as many rows (`distinct_id,plan,age`), half for random
    /// users of that first load and half new, imported into its store.
    users_update: FormatFigure,
    /// `distinct_id,uid` first loads in CSV, NDJSON and gzipped CSV, each
    /// into a fresh store.
    users_import_formats: Vec<FormatFigure>,
    ingest_new_ids_per_s: f64,
    ingest_known_ids_per_s: f64,
    diff_ms: f64,
    /// A new snapshot (1 % of its ids new to the store) imported and diffed
    /// against the one before, in seconds.
    snapshot_new_ids_import_diff_s: f64,
    render_users_per_s: f64,
    render_threads: usize,
    full_sync_users: u64,
    full_sync_seconds: f64,
    full_sync_users_per_s: f64,
    full_sync_requests: u64,
    /// What the destination's rate alone allows: its requests spaced by
    /// one rate period.
    full_sync_ceiling_seconds: f64,
    full_sync_verified: bool,
    /// The same members to a Cohort Sync endpoint (128 KB bodies).
    cohort_sync: CohortFigure,
    throttled_rpm_configured: u32,
    throttled_requests: u64,
    throttled_rpm_achieved: f64,
    throttled_ratio: f64,
    peak_rss_mb: f64,
    full_sync_peak_rss_mb: Option<f64>,
    /// The process's RSS when the full sync started (what the imports
    /// before it left: caches, allocator), to tell the sync's own share.
    full_sync_rss_at_start_mb: f64,
    diff_plan_unchanged_ms: f64,
    diff_plan_changed_ids_ms: f64,
    changed_ids: u64,
    changed_ids_updated: u64,
    /// Real-time calls to `serve` (unless `--personas-seconds 0`).
    personas: Option<super::bench_personas::Personas>,
    /// With `--compare`: the baselines on the same files.
    compare: Option<super::bench_compare::Compare>,
}

/// A full Cohort Sync run of the bench segment.
#[derive(Debug, Serialize)]
pub struct CohortFigure {
    users: u64,
    seconds: f64,
    requests: u64,
    ceiling_seconds: f64,
    max_body_bytes: usize,
    verified: bool,
    peak_rss_mb: Option<f64>,
}

/// The rate of the bench's full syncs.
const FULL_SYNC_RPM: u32 = 25_000;

/// Seconds `requests` requests take at `rpm` if nothing but the rate held
/// them: (n − 1) periods.
fn rate_ceiling_s(requests: u64, rpm: u32) -> f64 {
    requests.saturating_sub(1) as f64 * 60.0 / f64::from(rpm)
}

/// Runs `sync` now; an execution that does not complete fails the bench
/// (`what` names it).
fn run_to_completion(
    store: &Store,
    sync: u32,
    what: &str,
) -> anyhow::Result<crate::lifecycle::ExecutionRecord> {
    let exec = crate::lifecycle::actions::run(
        store,
        sync,
        Trigger::Scheduled,
        &RunOptions::default(),
        "bench",
    )?;
    if exec.status != ExecStatus::Complete {
        anyhow::bail!("{what} failed: {:?}", exec.error);
    }
    Ok(exec)
}

/// Syncs `segment` in full to an in-process Cohort Sync receiver (128 KB
/// bodies, 25000 rpm), and checks that the receiver holds exactly the uids
/// of the members sent.
fn cohort_full_sync(store: &Store, segment: &str) -> anyhow::Result<CohortFigure> {
    use crate::destination::cohort_sync::{CohortSyncFormat, COHORT_MAX_BODY};
    let max_body = COHORT_MAX_BODY as usize;
    let receiver = Receiver::start(ReceiverOptions {
        keep_members: false,
        format: ReceiveFormat::CohortSync { max_body },
        ..Default::default()
    })?;
    let mut cfg = destination::DestinationConfig {
        format: destination::Format::Cohortsync,
        rpm: Some(FULL_SYNC_RPM),
        retry_delay_ms: Some(100),
        ..destination::DestinationConfig::new("bench-cohort", receiver.url())
    };
    cfg.set_workspace("bench-workspace", "bench-data-api-key");
    destination::add(store, cfg)?;
    let sync = create_sync(store, segment, "bench-cohort")?;
    let reset = reset_peak_rss();
    let run = run_to_completion(store, sync, "Cohort Sync full sync")?;
    let peak_rss_mb = reset.then(peak_rss_mb);
    let synced = run.bitmap(store, crate::lifecycle::BitmapKind::Synced)?;
    let attr = store
        .attr_id("uid")
        .ok_or_else(|| anyhow::anyhow!("the bench store has no uid attribute"))?;
    let (mut expected, mut with_uid) = (0u64, 0u64);
    store.for_each_value(attr, |user, v| {
        if let Some(uid) = CohortSyncFormat::uid_of(&v).filter(|_| synced.contains(user)) {
            expected = expected.wrapping_add(crate::checking_receiver::membership_checksum([uid]));
            with_uid += 1;
        }
        Ok(())
    })?;
    let got = receiver.summary();
    let verified = got.errors.is_empty()
        && got.checksum == expected
        && got.member_count == synced.len()
        && with_uid == synced.len();
    if !verified {
        anyhow::bail!(
            "the Cohort Sync receiver's membership does not match: {} members of {}, {} rejected{}",
            got.member_count,
            synced.len(),
            got.errors.len(),
            got.errors
                .first()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        );
    }
    Ok(CohortFigure {
        users: run.added,
        seconds: run.seconds().unwrap_or(0.0),
        requests: run.requests,
        ceiling_seconds: rate_ceiling_s(run.requests, FULL_SYNC_RPM),
        max_body_bytes: max_body,
        verified,
        peak_rss_mb,
    })
}

/// One format's first load of the same `distinct_id,uid` rows.
#[derive(Debug, Serialize)]
pub struct FormatFigure {
    format: &'static str,
    rows_per_s: f64,
    seconds: f64,
    /// Peak RSS of the import (`None` where the kernel cannot reset the mark).
    peak_rss_mb: Option<f64>,
}

/// Writes the first two columns of `users_csv` as CSV, NDJSON and gzipped
/// CSV, and imports each into a store of its own. The CSV stays (its path
/// is returned) for `--compare`'s baselines.
fn import_formats(
    dir: &std::path::Path,
    users_csv: &std::path::Path,
) -> anyhow::Result<(Vec<FormatFigure>, std::path::PathBuf)> {
    use std::io::{BufRead, Write};
    let csv_path = dir.join("users-2col.csv");
    let ndjson_path = dir.join("users-2col.ndjson");
    let gz_path = dir.join("users-2col.csv.gz");
    {
        let input = std::io::BufReader::new(std::fs::File::open(users_csv)?);
        let mut csv = std::io::BufWriter::new(std::fs::File::create(&csv_path)?);
        let mut nd = std::io::BufWriter::new(std::fs::File::create(&ndjson_path)?);
        let mut gz = flate2::write::GzEncoder::new(
            std::io::BufWriter::new(std::fs::File::create(&gz_path)?),
            flate2::Compression::fast(),
        );
        for (i, line) in input.lines().enumerate() {
            let line = line?;
            let mut cols = line.splitn(3, ',');
            let (id, uid) = (cols.next().unwrap_or(""), cols.next().unwrap_or(""));
            let row = format!("{id},{uid}\n");
            csv.write_all(row.as_bytes())?;
            gz.write_all(row.as_bytes())?;
            if i > 0 {
                // Generated ids and uids need no JSON escaping.
                if uid.is_empty() {
                    writeln!(nd, r#"{{"distinct_id":"{id}"}}"#)?;
                } else {
                    writeln!(nd, r#"{{"distinct_id":"{id}","uid":"{uid}"}}"#)?;
                }
            }
        }
        csv.flush()?;
        nd.flush()?;
        gz.finish()?.flush()?;
    }
    let mut out = Vec::new();
    for (format, path) in [
        ("csv", &csv_path),
        ("ndjson", &ndjson_path),
        ("csv.gz", &gz_path),
    ] {
        out.push(first_load(dir, format, path)?);
    }
    for p in [ndjson_path, gz_path] {
        std::fs::remove_file(p)?;
    }
    Ok((out, csv_path))
}

/// Imports the users file `path` into a fresh store of its own (removed
/// after), as a user's first load would: `segsync users import` in a child
/// process, so its peak RSS is the import's alone (this process keeps what
/// earlier steps freed, and a reset mark starts from that) — the figure
/// `/usr/bin/time` would show for the same command.
fn first_load(
    dir: &std::path::Path,
    format: &'static str,
    path: &std::path::Path,
) -> anyhow::Result<FormatFigure> {
    let name = format.replace([' ', ','], "");
    let store_dir = dir.join(format!("store-{name}"));
    let figure = import_child(dir, &store_dir, format, path)?;
    std::fs::remove_dir_all(&store_dir)?;
    Ok(figure)
}

/// `segsync users import --json path` into `store_dir` in a child process
/// (see [`first_load`]), its messages in a log under `dir`.
fn import_child(
    dir: &std::path::Path,
    store_dir: &std::path::Path,
    format: &'static str,
    path: &std::path::Path,
) -> anyhow::Result<FormatFigure> {
    let name = format.replace([' ', ','], "");
    // Its messages go to a file: a pipe nobody reads while it runs would
    // stop the import once full (the summary on stdout is a few hundred
    // bytes).
    let log_path = dir.join(format!("import-{name}.log"));
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("--data-dir")
        .arg(store_dir)
        .args(["users", "import", "--json"])
        .arg(path)
        .env_remove("SEGSYNC_SERVER")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log_path)?)
        .spawn()?;
    let peak_mb = super::bench_compare::peak_rss_mb(&mut child)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        anyhow::bail!(
            "the {format} import failed: {}",
            std::fs::read_to_string(&log_path)
                .unwrap_or_default()
                .trim()
        );
    }
    std::fs::remove_file(&log_path)?;
    let s: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let field = |name: &str| {
        s[name]
            .as_f64()
            .ok_or_else(|| anyhow::anyhow!("`users import --json` printed no {name}: {s}"))
    };
    Ok(FormatFigure {
        format,
        rows_per_s: field("ids_per_sec")?,
        seconds: field("seconds")?,
        peak_rss_mb: peak_mb,
    })
}

/// Writes an update of `users` generated users: a tenth as many rows
/// (`distinct_id,plan,age`), every other one for a known user drawn at
/// random, the others for new users, as a daily attribute refresh sends.
fn update_file(dir: &std::path::Path, users: u64) -> anyhow::Result<std::path::PathBuf> {
    use std::io::Write;
    let path = dir.join("users-update.csv");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
    writeln!(out, "distinct_id,plan,age")?;
    // xorshift64*: deterministic, spread over every known user.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    for k in 0..(users / 10).max(1) {
        let r = next();
        let plan = ["free", "pro", "team", "enterprise"][(r >> 60) as usize % 4];
        let age = 18 + (r >> 40) % 70;
        if k % 2 == 0 && users > 0 {
            let id = crate::fixtures::distinct_id(r % users);
            writeln!(out, "{id},{plan},{age}")?;
        } else {
            writeln!(out, "new-{k:012},{plan},{age}")?;
        }
    }
    out.flush()?;
    Ok(path)
}

/// Goal 2's second case: a segment's next snapshot where 1 % of the ids are
/// new to the store (every 100th line of `snapshot` replaced), imported
/// and diffed against the snapshot before it; seconds for both.
fn new_ids_import_diff(
    store: &Store,
    dir: &std::path::Path,
    snapshot: &std::path::Path,
) -> anyhow::Result<f64> {
    use std::io::{BufRead, Write};
    let next = dir.join("snapshot-1pct-new.txt");
    {
        let input = std::io::BufReader::new(std::fs::File::open(snapshot)?);
        let mut out = std::io::BufWriter::new(std::fs::File::create(&next)?);
        for (i, line) in input.lines().enumerate() {
            let line = line?;
            if i % 100 == 99 {
                writeln!(out, "fresh-{i}")?;
            } else {
                writeln!(out, "{line}")?;
            }
        }
        out.flush()?;
    }
    let opts = ingest::Options::default();
    ingest::import_segment(store, "bench-new-ids", snapshot, &opts)?;
    let t = Instant::now();
    let s = ingest::import_segment(store, "bench-new-ids", &next, &opts)?;
    let to = s.snapshot.unwrap_or(2);
    plan::segment_diff(store, "bench-new-ids", Some(to - 1), Some(to), None)?;
    let secs = t.elapsed().as_secs_f64();
    std::fs::remove_file(next)?;
    Ok(secs)
}

/// Resets the kernel's peak-RSS mark (`VmHWM`) so the next reading covers
/// only what follows; false where the kernel does not allow it.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn peak_rss_mb() -> f64 {
    process_memory_mb("VmHWM")
}

/// A memory figure of this process from `/proc/self/status` (`VmHWM`,
/// `VmRSS`…), in MB; 0 where the kernel has none.
pub(crate) fn process_memory_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .as_deref()
        .and_then(|s| crate::metrics::status_kb(s, field))
        .map_or(0.0, |kb| kb / 1024.0)
}

pub(crate) fn run(a: BenchArgs) -> anyhow::Result<()> {
    if let Some(runs) = a.growth_runs {
        return growth(a.users, runs, !a.no_retention, a.json);
    }
    let tmp = tempfile::tempdir()?;
    let spec = Spec {
        users: a.users,
        churn: 0.01,
        attribute_coverage: 0.9,
        seed: 7,
    };
    let g = generate(&spec, &tmp.path().join("fixtures"))?;
    let store = std::sync::Arc::new(Store::open(tmp.path().join("store"))?);
    let opts = ingest::Options::default();
    let new_ids = ingest::import_segment(&store, "bench", &g.snapshot_1, &opts)?;
    let known = ingest::import_segment(&store, "bench", &g.snapshot_1, &opts)?;
    let users = ingest::import_users(&store, &g.users_csv, &opts)?;
    // First loads go to stores of their own: measure them without the
    // main store still compacting the import above.
    store.wait_for_background_work(std::time::Duration::from_secs(120));
    // The 5-attribute first load, then an update of a tenth as many rows
    // into that store (random known users and new ones): updates in place.
    let first_store = tmp.path().join("store-first-load");
    let users_first_load = import_child(tmp.path(), &first_store, "csv, 5 attrs", &g.users_csv)?;
    let update = update_file(tmp.path(), a.users)?;
    let users_update = import_child(tmp.path(), &first_store, "csv, update", &update)?;
    std::fs::remove_dir_all(&first_store)?;
    std::fs::remove_file(&update)?;
    let (users_import_formats, users_2col_csv) = import_formats(tmp.path(), &g.users_csv)?;
    let t = Instant::now();
    ingest::import_segment(&store, "bench", &g.snapshot_2, &opts)?;
    let snapshot_import_s = t.elapsed().as_secs_f64();
    let diff = plan::segment_diff(&store, "bench", Some(1), Some(3), Some("uid"))?;
    let snapshot_new_ids_import_diff_s = new_ids_import_diff(&store, tmp.path(), &g.snapshot_2)?;
    let compare = if a.compare {
        let first = |f: &FormatFigure| (f.seconds, f.peak_rss_mb);
        Some(super::bench_compare::run(
            &super::bench_compare::Inputs {
                work: tmp.path(),
                users_csv: &g.users_csv,
                users_2col_csv: &users_2col_csv,
                s1: &g.snapshot_1,
                s2: &g.snapshot_2,
            },
            &super::bench_compare::Ours {
                users_import: first(&users_first_load),
                users_2col_import: users_import_formats
                    .iter()
                    .find(|f| f.format == "csv")
                    .map(first)
                    .ok_or_else(|| anyhow::anyhow!("no 2-column CSV first load to compare"))?,
                snapshot_diff_s: snapshot_import_s + diff.millis / 1000.0,
            },
        )?)
    } else {
        None
    };
    std::fs::remove_file(&users_2col_csv)?;

    // Constant-memory receiver: counts and a membership checksum.
    let receiver = Receiver::start(ReceiverOptions {
        keep_members: false,
        ..Default::default()
    })?;
    destination::add(
        &store,
        local_destination("bench-receiver", receiver.url(), 10_000, FULL_SYNC_RPM),
    )?;
    let sync = create_sync(&store, "bench", "bench-receiver")?;
    let full_sync_rss_at_start_mb = process_memory_mb("VmRSS");
    let reset = reset_peak_rss();
    let full = run_to_completion(&store, sync, "full sync")?;
    let full_sync_peak_rss_mb = reset.then(peak_rss_mb);
    let synced = full.bitmap(&store, crate::lifecycle::BitmapKind::Synced)?;
    let verified = holds_exactly(&store, &receiver, &synced)?;
    if !verified {
        let got = receiver.summary();
        anyhow::bail!(
            "the receiver's membership does not match: {} members, {} rejected",
            got.member_count,
            got.errors.len()
        );
    }
    let cohort_sync = cohort_full_sync(&store, "bench")?;
    let changed = changed_identifiers(&store, sync, &synced, tmp.path())?;
    let threads = 2;
    let t = Instant::now();
    let (_, rendered, _) = pipeline::render_only(&store, sync, full.seq, threads)?;
    let render_secs = t.elapsed().as_secs_f64();

    // Throttled: enough 100-user pages to last about `throttled_seconds`.
    let pages = u64::from(a.throttled_rpm) * u64::from(a.throttled_seconds) / 60;
    let slow_rx = Receiver::start(ReceiverOptions::default())?;
    destination::add(
        &store,
        local_destination("bench-throttled", slow_rx.url(), 100, a.throttled_rpm),
    )?;
    let ids: Vec<String> = (0..pages * 100).map(crate::fixtures::distinct_id).collect();
    let list = tmp.path().join("throttled.txt");
    std::fs::write(&list, ids.join("\n"))?;
    ingest::import_segment(&store, "bench-throttled", &list, &opts)?;
    let tsync = create_sync(&store, "bench-throttled", "bench-throttled")?;
    let throttled = crate::lifecycle::actions::run(
        &store,
        tsync,
        Trigger::Scheduled,
        &RunOptions::default(),
        "bench",
    )?;
    let tsecs = throttled.seconds().unwrap_or(0.0);
    // n requests spaced by one period span (n - 1) periods.
    let achieved = if tsecs > 0.0 {
        (throttled.requests.saturating_sub(1)) as f64 / tsecs * 60.0
    } else {
        0.0
    };

    let full_secs = full.seconds().unwrap_or(0.0).max(1e-9);
    let rss_before_serve = peak_rss_mb();
    let personas = if a.personas_seconds > 0.0 {
        Some(super::bench_personas::run(
            store.clone(),
            a.users,
            a.personas_seconds,
        )?)
    } else {
        None
    };
    let r = Report {
        users: a.users,
        users_import_rows_per_s: users.ids_per_sec,
        users_first_load,
        users_update,
        users_import_formats,
        ingest_new_ids_per_s: new_ids.ids_per_sec,
        ingest_known_ids_per_s: known.ids_per_sec,
        diff_ms: diff.millis,
        snapshot_new_ids_import_diff_s,
        render_users_per_s: rendered as f64 / render_secs.max(1e-9),
        render_threads: threads,
        full_sync_users: full.added,
        full_sync_seconds: full_secs,
        full_sync_users_per_s: full.added as f64 / full_secs,
        full_sync_requests: full.requests,
        full_sync_ceiling_seconds: rate_ceiling_s(full.requests, FULL_SYNC_RPM),
        full_sync_verified: verified,
        cohort_sync,
        throttled_rpm_configured: a.throttled_rpm,
        throttled_requests: throttled.requests,
        throttled_rpm_achieved: achieved,
        throttled_ratio: achieved / f64::from(a.throttled_rpm),
        peak_rss_mb: rss_before_serve,
        full_sync_peak_rss_mb,
        full_sync_rss_at_start_mb,
        diff_plan_unchanged_ms: changed.unchanged_ms,
        diff_plan_changed_ids_ms: changed.changed_ms,
        changed_ids: changed.changed,
        changed_ids_updated: changed.updated,
        personas,
        compare,
    };
    if a.json {
        return super::print_json(&r);
    }
    println!("users                         {}", r.users);
    println!(
        "users import (CSV, 5 attrs)   {:.0} rows/s (values of known users)",
        r.users_import_rows_per_s
    );
    let timing = |f: &FormatFigure| {
        format!(
            "{:.0} rows/s ({:.2} s{})",
            f.rows_per_s,
            f.seconds,
            f.peak_rss_mb
                .map(|m| format!(", peak RSS {m:.0} MB"))
                .unwrap_or_default()
        )
    };
    println!(
        "users import (CSV, 5 attrs), first load  {}",
        timing(&r.users_first_load)
    );
    println!(
        "users import, a tenth updating random users  {}",
        timing(&r.users_update)
    );
    for f in &r.users_import_formats {
        println!("users import, 2 cols, {:<8} {}", f.format, timing(f));
    }
    println!(
        "snapshot import, new ids      {:.2}M ids/s",
        r.ingest_new_ids_per_s / 1e6
    );
    println!(
        "snapshot import, known ids    {:.2}M ids/s",
        r.ingest_known_ids_per_s / 1e6
    );
    println!("diff (load + compute)         {:.2} ms", r.diff_ms);
    println!(
        "snapshot import + diff, 1% new ids  {:.2} s",
        r.snapshot_new_ids_import_diff_s
    );
    println!(
        "render                        {:.2}M users/s on {} threads",
        r.render_users_per_s / 1e6,
        threads
    );
    println!(
        "full sync                     {} users in {:.2} s = {:.2}M users/s ({} requests, receiver checksum verified; the rate alone allows {:.2} s: {:.0}%)",
        r.full_sync_users,
        r.full_sync_seconds,
        r.full_sync_users_per_s / 1e6,
        r.full_sync_requests,
        r.full_sync_ceiling_seconds,
        r.full_sync_ceiling_seconds / r.full_sync_seconds.max(1e-9) * 100.0
    );
    let c = &r.cohort_sync;
    println!(
        "full sync, Cohort Sync        {} users in {:.2} s ({} requests of ≤ {} KB, uids verified; the rate alone allows {:.2} s: {:.0}%{})",
        c.users,
        c.seconds,
        c.requests,
        c.max_body_bytes / 1024,
        c.ceiling_seconds,
        c.ceiling_seconds / c.seconds.max(1e-9) * 100.0,
        c.peak_rss_mb
            .map(|m| format!("; peak RSS {m:.0} MB"))
            .unwrap_or_default()
    );
    println!(
        "throttled rate                {:.1} of {} rpm ({:.2}%)",
        r.throttled_rpm_achieved,
        r.throttled_rpm_configured,
        r.throttled_ratio * 100.0
    );
    println!(
        "peak RSS, whole bench         {:.0} MB (imports included)",
        r.peak_rss_mb
    );
    if let Some(m) = r.full_sync_peak_rss_mb {
        println!(
            "peak RSS during the full sync  {m:.0} MB (receiver in-process; {:.0} MB at its start)",
            r.full_sync_rss_at_start_mb
        );
    }
    println!(
        "diff plan, nothing changed    {:.1} ms",
        r.diff_plan_unchanged_ms
    );
    println!(
        "diff plan, 1% uids changed    {:.1} ms ({} changed, {} updated: the step costs {:.1} ms)",
        r.diff_plan_changed_ids_ms,
        r.changed_ids,
        r.changed_ids_updated,
        r.diff_plan_changed_ids_ms - r.diff_plan_unchanged_ms
    );
    if let Some(p) = &r.personas {
        super::bench_personas::print(p);
    }
    if let Some(c) = &r.compare {
        super::bench_compare::print(c);
    }
    Ok(())
}

/// Whether the checksum receiver holds exactly the users of `synced`.
pub(crate) fn holds_exactly(
    store: &Store,
    receiver: &Receiver,
    synced: &roaring::RoaringBitmap,
) -> anyhow::Result<bool> {
    let mut expected = 0u64;
    store.for_each_user(|idx, id| {
        if synced.contains(idx) {
            expected = expected.wrapping_add(crate::checking_receiver::membership_checksum([id]));
        }
    })?;
    let got = receiver.summary();
    Ok(got.checksum == expected && got.member_count == synced.len() && got.errors.is_empty())
}

/// Plan times of a diff run with nothing changed, then with the synced
/// identifier of 1 % of the members changed (each run is executed, so the
/// receiver's checksum stays checked).
struct ChangedIds {
    unchanged_ms: f64,
    changed_ms: f64,
    changed: u64,
    updated: u64,
}

fn changed_identifiers(
    store: &Store,
    sync: u32,
    synced: &roaring::RoaringBitmap,
    tmp: &std::path::Path,
) -> anyhow::Result<ChangedIds> {
    let timed_run = || -> anyhow::Result<(f64, crate::lifecycle::ExecutionRecord)> {
        let t = Instant::now();
        let started = crate::lifecycle::actions::start_run(
            store,
            sync,
            Trigger::Scheduled,
            chrono::Utc::now(),
            "bench",
        )?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let exec = started.execute(store, &RunOptions::default())?;
        if exec.status != ExecStatus::Complete {
            anyhow::bail!("diff run failed: {:?}", exec.error);
        }
        Ok((ms, exec))
    };
    let (unchanged_ms, _) = timed_run()?;
    let mut csv = String::from("distinct_id,uid\n");
    let mut changed = 0u64;
    for u in synced.iter().step_by(100) {
        if let Some(id) = store.distinct_id(u)? {
            csv.push_str(&format!("{id},changed-{u}\n"));
            changed += 1;
        }
    }
    let path = tmp.join("changed-uids.csv");
    std::fs::write(&path, csv)?;
    ingest::import_users(store, &path, &ingest::Options::default())?;
    let (changed_ms, exec) = timed_run()?;
    Ok(ChangedIds {
        unchanged_ms,
        changed_ms,
        changed,
        updated: exec.updated,
    })
}

/// What `--growth-runs` measured.
#[derive(Debug, Serialize)]
struct Growth {
    members: u64,
    runs: u32,
    bytes_after_first_run: u64,
    bytes_after_last_run: u64,
    ratio: f64,
    bytes_peak: u64,
    history_entries_pruned: u64,
    snapshots_pruned: u64,
    executions_pruned: u64,
    every_run_verified: bool,
    seconds: f64,
}

/// Daily runs of a segment of `members` users with 1 % churn and 1 %
/// changed identifiers, retention after each run (a compaction too, as
/// `serve`'s RocksDB would do in its own time), the receiver's membership
/// checked after every run; the data dir measured after the first and the
/// last run.
fn growth(members: u64, runs: u32, retain: bool, json: bool) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let started = Instant::now();
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("store");
    let store = Store::open(&dir)?;
    let opts = ingest::Options::default();
    let receiver = Receiver::start(ReceiverOptions {
        keep_members: false,
        ..Default::default()
    })?;
    destination::add(
        &store,
        local_destination("growth-receiver", receiver.url(), 10_000, 25_000),
    )?;
    // The workspace has 10 % more users than the segment has members; the
    // members are a window of them that slides by 1 % a day (1 % leave, 1 %
    // join, wrapping around), and 1 % of the members get a new uid.
    let churn = (members / 100).max(1);
    let population = members + (members / 10).max(churn);
    let mut first = 0u64;
    let mut version = vec![0u32; population as usize];
    let write_users = |from: u64, to: u64, version: &[u32], path: &std::path::Path| {
        let mut csv = String::from("distinct_id,uid\n");
        for i in from..to {
            let v = version.get(i as usize).copied().unwrap_or(0);
            let _ = writeln!(csv, "{},uid-{i}-{v}", crate::fixtures::distinct_id(i));
        }
        std::fs::write(path, csv)
    };
    let write_members = |from: u64, path: &std::path::Path| {
        let mut list = String::with_capacity(members as usize * 15);
        for k in 0..members {
            let _ = writeln!(
                list,
                "{}",
                crate::fixtures::distinct_id((from + k) % population)
            );
        }
        std::fs::write(path, list)
    };
    let users_csv = tmp.path().join("users.csv");
    let members_txt = tmp.path().join("members.txt");
    write_users(0, population, &version, &users_csv)?;
    ingest::import_users(&store, &users_csv, &opts)?;
    write_members(0, &members_txt)?;
    ingest::import_segment(&store, "growth", &members_txt, &opts)?;
    let sync = create_sync(&store, "growth", "growth-receiver")?;
    let policy = crate::config::load(&dir)?.retention.policy;
    let (mut after_first, mut peak, mut verified) = (0, 0, true);
    let mut totals = crate::store::Pruned::default();
    for day in 0..runs {
        if day > 0 {
            // 1 % leave (the oldest), 1 % join (new users), 1 % of those
            // who stay get a new uid.
            first = (first + churn) % population;
            let mut csv = String::from("distinct_id,uid\n");
            for k in 0..churn {
                let i = (first + (u64::from(day) * 7919 + k * 97) % members) % population;
                version[i as usize] += 1;
                let _ = writeln!(
                    csv,
                    "{},uid-{i}-{}",
                    crate::fixtures::distinct_id(i),
                    version[i as usize]
                );
            }
            std::fs::write(&users_csv, csv)?;
            ingest::import_users(&store, &users_csv, &opts)?;
            write_members(first, &members_txt)?;
            ingest::import_segment(&store, "growth", &members_txt, &opts)?;
        }
        let exec = run_to_completion(&store, sync, &format!("run {}", day + 1))?;
        let synced = exec.bitmap(&store, crate::lifecycle::BitmapKind::Synced)?;
        verified &= holds_exactly(&store, &receiver, &synced)?;
        if retain {
            let p = store.apply_retention(policy)?;
            totals.executions += p.executions;
            totals.snapshots += p.snapshots;
            totals.history_entries += p.history_entries;
        }
        store.compact();
        let size = crate::store::bytes_under(&dir);
        peak = peak.max(size);
        if day == 0 {
            after_first = size;
        }
        tracing::info!(day = day + 1, bytes = size, "growth run");
    }
    let last = crate::store::bytes_under(&dir);
    let g = Growth {
        members,
        runs,
        bytes_after_first_run: after_first,
        bytes_after_last_run: last,
        ratio: last as f64 / after_first.max(1) as f64,
        bytes_peak: peak,
        history_entries_pruned: totals.history_entries,
        snapshots_pruned: totals.snapshots,
        executions_pruned: totals.executions,
        every_run_verified: verified,
        seconds: started.elapsed().as_secs_f64(),
    };
    if json {
        return super::print_json(&g);
    }
    println!(
        "{} daily runs of {} members (1% churn, 1% changed uids), {}:",
        g.runs,
        g.members,
        if retain {
            "retention after each"
        } else {
            "no retention"
        }
    );
    println!(
        "data dir after run 1  {:.1} MB; after run {}  {:.1} MB ({:.2}x); largest {:.1} MB",
        g.bytes_after_first_run as f64 / 1e6,
        g.runs,
        g.bytes_after_last_run as f64 / 1e6,
        g.ratio,
        g.bytes_peak as f64 / 1e6
    );
    println!(
        "pruned: {} executions' details, {} snapshots, {} history entries; membership verified after every run: {}",
        g.executions_pruned, g.snapshots_pruned, g.history_entries_pruned, g.every_run_verified
    );
    if !g.every_run_verified {
        anyhow::bail!("the receiver's membership did not match after some run");
    }
    Ok(())
}

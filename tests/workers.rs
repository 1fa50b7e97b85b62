//! Past one machine, for real: a `nats-server` with JetStream on a free
//! loopback port, the real `segsync serve --nats` (the coordinator) and
//! real `segsync worker` processes, delivering to a receiver in this test.
//! Each test kills or starves a part and checks that the destination ends
//! with exact membership, that every page was delivered, and that every
//! re-sent page carried the same key and the same bytes.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ok_json, path_str, Env, Scripted, Seed, Seen};

fn nats_binary() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain([
        "/usr/sbin",
        "/usr/bin",
        "/usr/local/bin",
    ]) {
        let p = Path::new(dir).join("nats-server");
        if p.exists() {
            return p;
        }
    }
    panic!("nats-server is not installed: `make test` installs it (Debian's nats-server package)");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real nats-server with JetStream on file storage in a temp dir.
struct Nats {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nats {
    fn start() -> Nats {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Nats::spawn(port, dir.path());
        Nats { child, port, dir }
    }

    fn spawn(port: u16, dir: &Path) -> Child {
        let child = Command::new(nats_binary())
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// `kill -9`, then start again on the same port and storage.
    fn restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        self.child = Nats::spawn(self.port, self.dir.path());
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Child processes killed when the test ends, however it ends.
#[derive(Default)]
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn worker(nats: &Nats, name: &str, env: &[(&str, &str)]) -> Child {
    worker_with(nats, name, env, &[])
}

fn worker_with(nats: &Nats, name: &str, env: &[(&str, &str)], args: &[&str]) -> Child {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("segsync"));
    cmd.args(["worker", "--nats", &nats.url(), "--name", name])
        .args(["--concurrency", "4", "--drain-secs", "5"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn worker")
}

/// The coordinator over `env`'s data dir: its process and address.
fn coordinator(env: &Env, nats: &Nats) -> (Child, String) {
    env.spawn_serve(&[
        "--nats",
        &nats.url(),
        "--ack-wait-secs",
        "3",
        "--tick-ms",
        "200",
    ])
}

/// A GET's body, on a throwaway runtime.
mod reqwest {
    pub fn blocking_get(url: &str) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async { ::reqwest::get(url).await.unwrap().text().await.unwrap() })
    }
}

/// Distinct ids (`u00042`) of a request's add and remove lists (the uid
/// `uid42` names user 42).
fn lists(r: &Seen) -> (Vec<String>, Vec<String>) {
    let of = |key: &str| -> Vec<String> {
        r.body["data"][key]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|u| {
                        let n: u32 = u["uid"].as_str().unwrap()[3..].parse().unwrap();
                        format!("u{n:05}")
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    (of("add_users"), of("remove_users"))
}

/// Every page of every execution seen, and the membership the requests
/// make: checks that each key always carried the same bytes, and that
/// execution `e` has `pages[e]` distinct keys.
fn membership(seen: &[Seen], pages: &BTreeMap<u32, usize>) -> HashSet<String> {
    let mut by_key: BTreeMap<String, &Seen> = BTreeMap::new();
    for r in seen {
        let key = r
            .header("idempotency-key")
            .expect("every request has a key");
        if let Some(first) = by_key.get(key) {
            assert_eq!(first.raw, r.raw, "page {key} was re-sent with other bytes");
        } else {
            by_key.insert(key.to_string(), r);
        }
    }
    let mut members = HashSet::new();
    for (exec, n) in pages {
        let keys: Vec<_> = by_key
            .iter()
            .filter(|(k, _)| k.split('-').nth(1) == Some(&exec.to_string()))
            .collect();
        let all: std::collections::BTreeSet<_> = by_key
            .keys()
            .map(|k| k.rsplit_once('-').map_or("", |x| x.0))
            .collect();
        assert_eq!(
            keys.len(),
            *n,
            "execution {exec}: every page, once per key (executions seen: {all:?})"
        );
        let mut removed = Vec::new();
        for (_, r) in keys {
            let (a, rm) = lists(r);
            members.extend(a);
            removed.extend(rm);
        }
        for u in removed {
            members.remove(&u);
        }
    }
    members
}

fn history(env: &Env, sync: &str) -> serde_json::Value {
    env.json(&["sync", "history", sync])
}

/// Waits until execution `seq` of `sync` is complete (through the
/// running coordinator, or the store when none runs).
fn wait_complete(env: &Env, sync: &str, seq: u64, limit: Duration) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    loop {
        let out = env.run(&["sync", "history", sync, "--json"]);
        if out.status.success() {
            let h: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if let Some(e) = h.as_array().unwrap().iter().find(|e| e["seq"] == seq) {
                if e["status"] == "complete" {
                    return e.clone();
                }
                assert_ne!(e["status"], "failed", "execution failed: {e}");
            }
        }
        assert!(Instant::now() < deadline, "execution {seq} never completed");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A data dir with `n` users (uid `uidN`), segment `seg` of members
/// `members`, destination `dest` at `url` and a daily sync; returns the
/// sync id.
fn seeded(
    env: &Env,
    n: usize,
    members: std::ops::Range<usize>,
    url: &str,
    dest: &[&str],
) -> String {
    let users: Vec<(String, Option<String>)> = (0..n)
        .map(|i| (format!("u{i:05}"), Some(format!("uid{i}"))))
        .collect();
    let u: Vec<(&str, Option<&str>)> = users
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_deref()))
        .collect();
    let m: Vec<&str> = users[members].iter().map(|(a, _)| a.as_str()).collect();
    Seed::of(&u, &m).destination(url, dest).daily_sync(env, &[])
}

/// `sync run`, again while the scheduler's own run of the sync (due
/// after an ad hoc run resumed it) holds it.
fn run_now(env: &Env, sync: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = env.run(&["sync", "run", sync, "--json"]);
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !err.contains("is running") || Instant::now() > deadline {
            assert!(out.status.success(), "sync run failed: {err}");
            return serde_json::from_slice(&out.stdout).unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `segsync workers --json` as soon as `until` holds of it (workers
/// report every 2 s), or the last listing after `limit`.
fn workers_listed(
    env: &Env,
    limit: Duration,
    until: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + limit;
    let mut last = serde_json::Value::Null;
    loop {
        let out = env.run(&["workers", "--json"]);
        if out.status.success() {
            last = serde_json::from_slice(&out.stdout).unwrap();
            if until(&last) {
                return last;
            }
        }
        if Instant::now() > deadline {
            return last;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Pauses `sync`, starts the coordinator beside `workers`, and waits until
/// it lists every one of them alive, so that each gets pages of the next
/// run. Returns every process, to be killed at the end.
fn with_all_workers(env: &Env, nats: &Nats, sync: &str, workers: Vec<Child>) -> Procs {
    env.ok(&["sync", "pause", sync]);
    let n = workers.len();
    let mut procs = Procs(workers);
    let (serve, _) = coordinator(env, nats);
    procs.0.push(serve);
    let alive = |v: &serde_json::Value| {
        v["workers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["state"] == "alive")
            .count()
    };
    let listed = workers_listed(env, Duration::from_secs(30), |v| alive(v) >= n);
    assert!(
        !listed.is_null() && alive(&listed) >= n,
        "{n} workers never showed up: {listed}"
    );
    procs
}

fn expected(r: std::ops::Range<usize>) -> HashSet<String> {
    r.map(|i| format!("u{i:05}")).collect()
}

#[test]
fn three_workers_deliver_a_full_sync_and_a_diff_exactly() {
    let rx = Scripted::start(|_, _| ok_json());
    let nats = Nats::start();
    let env = Env::new();
    let sync = seeded(
        &env,
        200_000,
        0..190_000,
        &rx.url("/"),
        &["--page-size", "2000", "--rpm", "25000", "--in-flight", "8"],
    );
    let mut workers = vec![worker_with(
        &nats,
        "w1",
        &[],
        &["--metrics-listen", "127.0.0.1:0"],
    )];
    workers.extend((2..=3).map(|i| worker(&nats, &format!("w{i}"), &[])));
    let _procs = with_all_workers(&env, &nats, &sync, workers);
    let first = run_now(&env, &sync);
    assert_eq!(first["status"], "complete", "{first}");
    assert_eq!(first["pages_done"], 95);
    // The diff: 10K leave, 10K join.
    let m: Vec<String> = (10_000..200_000).map(|i| format!("u{i:05}")).collect();
    let s = env.file("s2.txt", m.join("\n").as_bytes());
    env.ok(&["segment", "import", "seg", path_str(&s)]);
    let run = run_now(&env, &sync);
    assert_eq!(run["status"], "complete", "{run}");
    // The daily schedule's own first run (due once the ad hoc run resumed
    // the sync) may have taken the difference before this one: whichever
    // did, exactly one execution after the first sent it, in 10 pages.
    let seq = |r: &serde_json::Value| r["seq"].as_u64().unwrap() as u32;
    let h = history(&env, &sync);
    let diffs: Vec<&serde_json::Value> = h
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| seq(e) > seq(&first) && e["total_pages"].as_u64() > Some(0))
        .collect();
    assert_eq!(diffs.len(), 1, "{h}");
    let diff = diffs[0];
    assert_eq!(diff["status"], "complete", "{diff}");
    assert_eq!(diff["added"], 10_000);
    assert_eq!(diff["removed"], 10_000);
    let pages = BTreeMap::from([(seq(&first), 95), (seq(diff), 10)]);
    assert_eq!(membership(&rx.seen(), &pages), expected(10_000..200_000));

    // Every worker took part and is listed, with its figures (as of its
    // last heartbeat: wait for the one after the last page).
    let delivered = |v: &serde_json::Value| -> u64 {
        v["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["delivered"].as_u64().unwrap())
            .sum()
    };
    let listed = workers_listed(&env, Duration::from_secs(10), |v| delivered(v) >= 105);
    let workers = listed["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 3, "{listed}");
    let mut delivered = 0;
    for w in workers {
        assert_eq!(w["state"], "alive");
        assert!(
            w["delivered"].as_u64().unwrap() > 0,
            "every worker sent pages: {listed}"
        );
        assert_eq!(w["metrics"].is_null(), w["name"] != "w1", "{w}");
        delivered += w["delivered"].as_u64().unwrap();
    }
    assert!(delivered >= 105, "{delivered} pages delivered of 105");
    // w1's own /metrics says what it delivered.
    let w1 = workers.iter().find(|w| w["name"] == "w1").unwrap();
    let text = reqwest::blocking_get(w1["metrics"].as_str().unwrap());
    let line = text
        .lines()
        .find(|l| l.starts_with("segsync_worker_pages_delivered_total "))
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(
        line.rsplit(' ').next().unwrap().parse::<u64>().unwrap(),
        w1["delivered"].as_u64().unwrap()
    );
}

/// A 100-page run of 30K users to a receiver taking 60 ms a request,
/// under way: the workers named (kept apart, to kill them) plus those in
/// `procs`, and the coordinator (in `procs`, or returned when `own`).
struct MidRun {
    // Processes first: fields drop in order, and they go before their data.
    procs: Procs,
    named: Procs,
    coordinator: Procs,
    rx: Scripted,
    env: Env,
    sync: String,
}

impl MidRun {
    fn start(nats: &Nats, named: &[&str], others: usize, own_coordinator: bool) -> MidRun {
        let rx = Scripted::start(|_, _| {
            let mut r = ok_json();
            r.3 = Duration::from_millis(60);
            r
        });
        let env = Env::new();
        let sync = seeded(
            &env,
            30_000,
            0..30_000,
            &rx.url("/"),
            &["--page-size", "300", "--rpm", "25000", "--in-flight", "4"],
        );
        let mut procs = Procs::default();
        let named = Procs(named.iter().map(|n| worker(nats, n, &[])).collect());
        for i in 1..=others {
            procs.0.push(worker(nats, &format!("w{i}"), &[]));
        }
        let (serve, _) = coordinator(&env, nats);
        let mut coordinator = Procs::default();
        if own_coordinator {
            coordinator.0.push(serve);
        } else {
            procs.0.push(serve);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while rx.seen().len() < 20 {
            assert!(Instant::now() < deadline, "the run never got going");
            std::thread::sleep(Duration::from_millis(5));
        }
        MidRun {
            rx,
            env,
            sync,
            procs,
            named,
            coordinator,
        }
    }

    /// The run completes, every page delivered, membership exact.
    fn completes_exactly(&self) {
        let done = wait_complete(&self.env, &self.sync, 1, Duration::from_secs(120));
        assert_eq!(done["pages_done"], 100);
        let h = history(&self.env, &self.sync);
        assert_eq!(h.as_array().unwrap().len(), 1, "resumed, not planned again");
        let pages = BTreeMap::from([(1, 100)]);
        assert_eq!(membership(&self.rx.seen(), &pages), expected(0..30_000));
    }
}

#[test]
fn a_worker_killed_mid_run_loses_no_page() {
    let nats = Nats::start();
    let mut run = MidRun::start(&nats, &["victim", "drained"], 2, false);
    let mut victim = run.named.0.remove(0);
    victim.kill().unwrap(); // SIGKILL, holding pages
    victim.wait().unwrap();
    // SIGTERM: the other finishes what it holds and leaves.
    let mut drained = run.named.0.remove(0);
    let term = Command::new("kill")
        .args(["-TERM", &drained.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let left = Instant::now();
    let status = drained.wait().unwrap();
    assert!(status.success(), "a drained worker exits cleanly: {status}");
    assert!(left.elapsed() < Duration::from_secs(15), "drained in time");
    assert!(run.rx.seen().len() < 100, "killed mid-run");
    run.completes_exactly();
}

#[test]
fn a_coordinator_killed_mid_run_resumes_the_same_execution() {
    let nats = Nats::start();
    let mut run = MidRun::start(&nats, &[], 3, true);
    let mut serve = run.coordinator.0.pop().unwrap();
    serve.kill().unwrap();
    serve.wait().unwrap();
    let h = history(&run.env, &run.sync);
    assert_eq!(
        h[0]["status"], "processing",
        "a killed run stays processing"
    );
    assert!(h[0]["pages_done"].as_u64().unwrap() < 100);
    // The workers go on meanwhile with what they hold; then a new
    // coordinator resumes execution 1.
    let (serve, _) = coordinator(&run.env, &nats);
    run.procs.0.push(serve);
    run.completes_exactly();
}

#[test]
fn a_nats_server_restarted_mid_run_does_not_stop_it() {
    let mut nats = Nats::start();
    let run = MidRun::start(&nats, &[], 3, false);
    nats.restart();
    assert!(run.rx.seen().len() < 100, "restarted mid-run");
    run.completes_exactly();
}

#[test]
fn a_worker_that_cannot_reach_the_destination_hands_its_pages_back() {
    let rx = Scripted::start(|_, _| ok_json());
    let nats = Nats::start();
    let env = Env::new();
    let sync = seeded(
        &env,
        20_000,
        0..20_000,
        &rx.url("/"),
        &[
            "--page-size",
            "200",
            "--rpm",
            "25000",
            "--in-flight",
            "8",
            "--retry-delay-ms",
            "100",
        ],
    );
    // Its proxy refuses connections: nothing it sends arrives.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let workers = vec![
        worker(
            &nats,
            "cut-off",
            &[
                ("HTTP_PROXY", &closed),
                ("http_proxy", &closed),
                ("NO_PROXY", ""),
            ],
        ),
        worker(&nats, "w1", &[]),
        worker(&nats, "w2", &[]),
    ];
    let _procs = with_all_workers(&env, &nats, &sync, workers);
    let done = run_now(&env, &sync);
    assert_eq!(done["pages_done"], 100);
    assert_eq!(done["status"], "complete");
    let pages = BTreeMap::from([(1, 100)]);
    assert_eq!(membership(&rx.seen(), &pages), expected(0..20_000));
    // Its next heartbeat (every 2 s) tells.
    let cut_off = |v: &serde_json::Value| {
        v["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == "cut-off")
            .cloned()
            .unwrap()
    };
    let listed = workers_listed(&env, Duration::from_secs(10), |v| {
        cut_off(v)["failed"].as_u64().unwrap() > 0
    });
    let cut = cut_off(&listed);
    assert_eq!(cut["delivered"], 0, "{cut}");
    assert!(
        cut["failed"].as_u64().unwrap() > 0,
        "it took pages and gave them back: {cut}"
    );
    assert!(
        cut["last_error"]
            .as_str()
            .unwrap()
            .contains("request failed"),
        "{cut}"
    );
}

/// Three workers share one destination limit of 600 requests a minute for
/// two minutes (`WORKERS_RPM_MINUTES` to change; `docs/SCALE.md` quotes a
/// 3-minute run): no 60 s window of requests at the receiver holds more
/// than 600, and the limit is used. Two minutes still hold the start's
/// burst and every later window; the third took a minute of `make test`,
/// which must stay under 15 minutes on CI's two cores.
#[test]
fn three_workers_never_exceed_the_rpm_together() {
    let minutes: usize = std::env::var("WORKERS_RPM_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(2);
    let rx = Scripted::start(|_, _| ok_json());
    let nats = Nats::start();
    let env = Env::new();
    let pages = 600 * minutes + 60;
    let users = pages * 100;
    let sync = seeded(
        &env,
        users,
        0..users,
        &rx.url("/"),
        &["--page-size", "100", "--rpm", "600", "--in-flight", "8"],
    );
    let mut procs = Procs::default();
    for i in 1..=3 {
        procs.0.push(worker(&nats, &format!("w{i}"), &[]));
    }
    let (serve, metrics_base) = coordinator(&env, &nats);
    procs.0.push(serve);
    let done = wait_complete(
        &env,
        &sync,
        1,
        Duration::from_secs(60 * minutes as u64 + 120),
    );
    assert_eq!(done["pages_done"].as_u64().unwrap() as usize, pages);
    let seen = rx.seen();
    let mut at: Vec<Instant> = seen.iter().map(|r| r.at).collect();
    at.sort();
    let minute = Duration::from_secs(60);
    let (mut most, mut j) = (0, 0);
    for i in 0..at.len() {
        while j < at.len() && at[j] < at[i] + minute {
            j += 1;
        }
        most = most.max(j - i);
    }
    let span = (*at.last().unwrap() - at[0]).as_secs_f64();
    let rate = (at.len() - 1) as f64 * 60.0 / span;
    eprintln!(
        "{} requests from 3 workers in {span:.1} s: {rate:.1}/min, at most {most} in any 60 s",
        at.len()
    );
    assert!(most <= 600, "{most} requests in one 60 s window");
    assert!(rate >= 570.0, "the shared limit is used: {rate:.1}/min");
    let _ = metrics_base;
    let m = BTreeMap::from([(1, pages)]);
    assert_eq!(membership(&seen, &m), expected(0..users));
}

/// A 429 answered to one worker slows every worker: the coordinator's
/// limiter of the destination pauses for the `Retry-After`, so no worker
/// sends meanwhile (only requests already granted may still arrive).
#[test]
fn a_429_to_one_worker_pauses_them_all() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let first = AtomicBool::new(true);
    let rx = Scripted::start(move |_, _| {
        if first.swap(false, Ordering::SeqCst) {
            (
                429,
                vec![("retry-after", "3".into())],
                "slow down".into(),
                Duration::ZERO,
            )
        } else {
            ok_json()
        }
    });
    let nats = Nats::start();
    let env = Env::new();
    let sync = seeded(
        &env,
        20_000,
        0..20_000,
        &rx.url("/"),
        &["--page-size", "200", "--rpm", "25000", "--in-flight", "8"],
    );
    let workers = (1..=3)
        .map(|i| worker(&nats, &format!("w{i}"), &[]))
        .collect();
    let _procs = with_all_workers(&env, &nats, &sync, workers);
    let done = run_now(&env, &sync);
    assert_eq!(done["status"], "complete", "{done}");
    assert_eq!(done["pages_done"], 100);
    let seen = rx.seen();
    let throttled = seen[0].at;
    let during: Vec<f64> = seen[1..]
        .iter()
        .map(|r| r.at.saturating_duration_since(throttled).as_secs_f64())
        .filter(|t| *t > 0.5 && *t < 2.9)
        .collect();
    assert!(
        during.is_empty(),
        "requests during the 3 s pause: {during:?}"
    );
    let after = seen
        .iter()
        .filter(|r| r.at.saturating_duration_since(throttled) >= Duration::from_millis(2900))
        .count();
    assert!(after >= 80, "the run went on after the pause: {after}");
    assert_eq!(
        membership(&seen, &BTreeMap::from([(1, 100)])),
        expected(0..20_000)
    );
}

/// `segsync bench --workers` on a small set: every phase delivers exactly.
#[test]
fn bench_workers_compares_in_process_and_workers_exactly() {
    let out = Command::new(assert_cmd::cargo::cargo_bin("segsync"))
        .args([
            "bench",
            "--workers",
            "2",
            "--users",
            "20000",
            "--syncs",
            "2",
        ])
        .args(["--page-size", "500", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let phases = r["phases"].as_array().unwrap();
    let modes: Vec<&str> = phases.iter().map(|p| p["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["in-process", "1 worker", "2 workers"]);
    for p in phases {
        assert_eq!(p["verified"], true, "{p}");
        assert_eq!(p["pages"], phases[0]["pages"], "{p}");
        assert!(p["pages_per_s"].as_f64().unwrap() > 0.0);
    }
    assert!(
        r["jetstream_publish_acked_pipelined_per_s"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(r["store_mb_per_million_users"].as_f64().unwrap() > 0.0);
}

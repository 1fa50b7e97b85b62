//! A crash loop with the real binary: trials of a segment import, a users
//! import, a sync run or `serve` taking Personas calls, each `kill -9`ed
//! at a random moment, then restarted. After every trial: `segsync check`
//! passes on the store (it opens, its invariants hold); an import is all
//! there or not at all; every Personas call that was answered is stored;
//! the next run completes, the destination's membership rebuilt from every
//! request is exact, and every re-sent page carried the same
//! `Idempotency-Key` and the same bytes. Imports look ids up in the loaded
//! fingerprint table and in its file (`--lookups`) by turns.
//!
//! 20 trials by default (CI); `CRASH_LOOP_TRIALS=200` for the long mode,
//! `CRASH_LOOP_SEED` to replay a seed (printed on failure).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ok_json, path_str, Env, Lcg, Scripted, Seen};
use segsync::store::{Store, Value};

const USERS: usize = 3000;
const WRITE_KEY: &str = "crash-loop-key";

fn uid(u: usize, version: u32) -> String {
    format!("uid{u}-v{version}")
}

fn bin() -> Command {
    Command::new(assert_cmd::cargo::cargo_bin("segsync"))
}

/// Starts `segsync ARGS` on the data dir, quietly.
fn spawn(env: &Env, args: &[&str]) -> Child {
    bin()
        .arg("--data-dir")
        .arg(env.data())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn segsync")
}

fn kill_after(mut child: Child, after: Duration) -> bool {
    let deadline = Instant::now() + after;
    while Instant::now() < deadline {
        if child.try_wait().expect("wait").is_some() {
            return false; // finished before the kill
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    true
}

/// The model of what the store holds.
struct Model {
    members: BTreeSet<usize>,
    version: Vec<u32>,
}

impl Model {
    fn expected(&self) -> BTreeSet<String> {
        self.members
            .iter()
            .map(|&u| uid(u, self.version[u]))
            .collect()
    }
}

fn write_users(env: &Env, rows: &[(usize, u32)], n: usize) -> std::path::PathBuf {
    let mut csv = String::from("distinct_id,uid\n");
    for (u, v) in rows {
        csv.push_str(&format!("u{u:05},{}\n", uid(*u, *v)));
    }
    env.file(&format!("users-{n}.csv"), csv.as_bytes())
}

fn write_members(env: &Env, members: &BTreeSet<usize>, n: usize) -> std::path::PathBuf {
    let ids: Vec<String> = members.iter().map(|u| format!("u{u:05}")).collect();
    env.file(&format!("members-{n}.txt"), ids.join("\n").as_bytes())
}

fn uid_of(store: &Store, u: usize) -> Option<String> {
    let attr = store.attr_id("uid")?;
    let idx = store.user_index(&format!("u{u:05}")).ok()??;
    match store.attr_value_as_of(attr, idx, u32::MAX).ok()? {
        Some(Value::Str(s)) => Some(s),
        _ => None,
    }
}

/// The set of identifier values the destination holds, rebuilt from every
/// request in order; and a check that each re-sent page was byte-identical.
fn destination_state(seen: &[Seen]) -> BTreeSet<String> {
    let mut first: HashMap<String, &[u8]> = HashMap::new();
    let mut held = BTreeSet::new();
    for r in seen {
        let key = r.header("idempotency-key").expect("every page has a key");
        if let Some(prev) = first.get(key) {
            assert_eq!(*prev, &r.raw[..], "page {key} was re-sent with other bytes");
        } else {
            first.insert(key.to_string(), &r.raw);
        }
        for (k, add) in [("add_users", true), ("remove_users", false)] {
            for u in r.body["data"][k].as_array().into_iter().flatten() {
                let v = u["uid"].as_str().expect("uid").to_string();
                if add {
                    held.insert(v);
                } else {
                    held.remove(&v);
                }
            }
        }
    }
    held
}

fn check(env: &Env, trial: usize, seed: u64) {
    let out = env.run(&["check"]);
    assert!(
        out.status.success(),
        "trial {trial} (seed {seed}): segsync check failed after a restart:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn kill_9_at_random_moments_loses_nothing_acknowledged() {
    let trials: usize = std::env::var("CRASH_LOOP_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("CRASH_LOOP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("crash loop: {trials} trials, CRASH_LOOP_SEED={seed}");
    let mut rng = Lcg(seed);
    let rx = Scripted::start(|_, _| {
        let mut r = ok_json();
        r.3 = Duration::from_millis(3);
        r
    });
    let env = Env::new();
    // Runs here are ad hoc, two or three a trial.
    env.config("[limits]\nmax_resyncs_per_day = 100000\n");
    let mut model = Model {
        members: (0..2000).collect(),
        version: vec![0; USERS],
    };
    let all: Vec<(usize, u32)> = (0..USERS).map(|u| (u, 0)).collect();
    env.ok(&["users", "import", path_str(&write_users(&env, &all, 0))]);
    env.ok(&[
        "segment",
        "import",
        "seg",
        path_str(&write_members(&env, &model.members, 0)),
    ]);
    env.ok(&[
        "destination",
        "add",
        "dest",
        "--url",
        &rx.url("/"),
        "--page-size",
        "100",
        "--in-flight",
        "2",
        "--retry-delay-ms",
        "1",
    ]);
    env.ok(&["writekey", "add", "crash", "--key", WRITE_KEY]);
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let sync = env.create_daily_sync("dest", &["--start", &tomorrow]);
    let mut kills = 0;

    for trial in 1..=trials {
        let op = rng.next() % 4;
        let delay = Duration::from_millis(rng.next() % 400);
        // Imports look ids up in the loaded table or in its file by turns.
        let lookups = if trial % 2 == 0 { "memory" } else { "file" };
        match op {
            0 => {
                // A new snapshot: 5 % leave, 5 % join.
                let mut next = model.members.clone();
                for _ in 0..100 {
                    next.remove(&((rng.next() as usize) % USERS));
                    next.insert((rng.next() as usize) % USERS);
                }
                let file = write_members(&env, &next, trial);
                kills += kill_after(
                    spawn(
                        &env,
                        &[
                            "segment",
                            "import",
                            "--lookups",
                            lookups,
                            "seg",
                            path_str(&file),
                        ],
                    ),
                    delay,
                ) as usize;
                check(&env, trial, seed);
                let store = Store::open(env.data()).unwrap();
                let seg = store.segment("seg").unwrap().unwrap();
                let latest = seg.latest().unwrap();
                let got: BTreeSet<usize> = store
                    .snapshot_members(seg.id, latest.seq)
                    .unwrap()
                    .iter()
                    .map(|i| {
                        let id = store.distinct_id(i).unwrap().unwrap();
                        id[1..].parse().unwrap()
                    })
                    .collect();
                assert!(
                    got == next || got == model.members,
                    "trial {trial} (seed {seed}): a half import is visible ({} members)",
                    got.len()
                );
                model.members = got;
            }
            1 => {
                // 5 % of the users get a new uid.
                let rows: Vec<(usize, u32)> = (0..150)
                    .map(|_| (rng.next() as usize) % USERS)
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .map(|u| (u, model.version[u] + 1))
                    .collect();
                let file = write_users(&env, &rows, trial);
                kills += kill_after(
                    spawn(
                        &env,
                        &["users", "import", "--lookups", lookups, path_str(&file)],
                    ),
                    delay,
                ) as usize;
                check(&env, trial, seed);
                let store = Store::open(env.data()).unwrap();
                let new: Vec<bool> = rows
                    .iter()
                    .map(|&(u, v)| uid_of(&store, u) == Some(uid(u, v)))
                    .collect();
                let old: Vec<bool> = rows
                    .iter()
                    .map(|&(u, _)| uid_of(&store, u) == Some(uid(u, model.version[u])))
                    .collect();
                assert!(
                    new.iter().all(|&b| b) || old.iter().all(|&b| b),
                    "trial {trial} (seed {seed}): a half users import is visible"
                );
                if new[0] {
                    for &(u, v) in &rows {
                        model.version[u] = v;
                    }
                }
            }
            2 => {
                kills += kill_after(spawn(&env, &["sync", "run", &sync]), delay) as usize;
                check(&env, trial, seed);
            }
            _ => {
                // serve takes Personas identify calls, one user each; every
                // answered call must be stored after the kill.
                let (child, addr) = env.spawn_serve(&["--tick-ms", "3600000"]);
                let stop_at = Instant::now() + delay;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let acked: Vec<(usize, String)> = rt.block_on(async {
                    let client = reqwest::Client::new();
                    let mut acked = Vec::new();
                    let mut k = 0;
                    while Instant::now() < stop_at {
                        let u = 2000 + (trial * 37 + k) % (USERS - 2000);
                        let plan = format!("p{trial}-{k}");
                        let body = serde_json::json!({"userId": format!("u{u:05}"), "traits": {"plan": plan}});
                        let r = common::post_identify(&client, &addr, WRITE_KEY, &body).await;
                        if r.is_ok_and(|r| r.status().is_success()) {
                            acked.push((u, plan));
                        }
                        k += 1;
                    }
                    acked
                });
                kills += kill_after(child, Duration::ZERO) as usize;
                check(&env, trial, seed);
                let store = Store::open(env.data()).unwrap();
                let attr = store.attr_id("plan");
                let mut last: HashMap<usize, String> = HashMap::new();
                for (u, p) in acked {
                    last.insert(u, p);
                }
                for (u, p) in last {
                    let idx = store.user_index(&format!("u{u:05}")).unwrap().unwrap();
                    let got = attr.and_then(|a| store.attr_value_as_of(a, idx, u32::MAX).unwrap());
                    assert_eq!(
                        got,
                        Some(Value::Str(p.clone())),
                        "trial {trial} (seed {seed}): an acknowledged identify of u{u:05} is lost"
                    );
                }
            }
        }
        // After every trial the next run completes and the destination is exact.
        env.ok(&["sync", "run", &sync]);
        let held = destination_state(&rx.seen());
        assert_eq!(
            held,
            model.expected(),
            "trial {trial} (seed {seed}): the destination's membership is not exact"
        );
    }
    eprintln!("crash loop: {trials} trials, {kills} processes killed mid-work");
    assert!(
        kills > 0,
        "no trial killed a process mid-work (seed {seed})"
    );
}

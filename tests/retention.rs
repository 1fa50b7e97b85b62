//! Bounded growth: `[retention]` applied by `segsync compact` and by
//! `serve` in the background removes the details of old executions, old
//! snapshots, and attribute history and change index entries no sync can
//! need, while every later run still leaves the destination exact (by
//! identifier value, with changed identifiers), `segsync check` passes,
//! and asking for a removed execution's pages says why it is gone. The
//! model-based version (retention at its tightest between random steps) is
//! in `changed_identifiers.rs`.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{path_str, Env, Served};
use segsync::checking_receiver::{Receiver, ReceiverOptions};

const USERS: usize = 200;

/// Users 0..USERS with uid `uid{i}-v{version}`.
fn import_users(env: &Env, versions: &[u32], n: usize) {
    let mut csv = String::from("distinct_id,uid\n");
    for (i, v) in versions.iter().enumerate() {
        csv.push_str(&format!("u{i:05},uid{i}-v{v}\n"));
    }
    let f = env.file(&format!("users-{n}.csv"), csv.as_bytes());
    env.ok(&["users", "import", path_str(&f)]);
}

fn import_members(env: &Env, from: usize, to: usize, n: usize) {
    let ids: Vec<String> = (from..to).map(|i| format!("u{i:05}")).collect();
    let f = env.file(&format!("members-{n}.txt"), ids.join("\n").as_bytes());
    env.ok(&["segment", "import", "seg", path_str(&f)]);
}

#[test]
fn compact_forgets_what_no_sync_needs_and_later_runs_stay_exact() {
    let rx = Receiver::start(ReceiverOptions::default()).unwrap();
    let env = Env::new();
    env.config("[retention]\nkeep_executions = 2\nkeep_snapshots = 2\n");
    let mut versions = vec![0u32; USERS];
    import_users(&env, &versions, 0);
    import_members(&env, 0, 150, 0);
    env.ok(&["destination", "add", "dest", "--url", &rx.url()]);
    let sync = env.create_daily_sync("dest", &[]);
    let mut pruned = serde_json::Map::new();
    for round in 0..6usize {
        if round > 0 {
            // 5 leave, 5 join, 5 who stay change their uid.
            for k in 0..5 {
                versions[round * 5 + 20 + k] += 1;
            }
            import_users(&env, &versions, round);
            import_members(&env, round * 5, 150 + round * 5, round);
        }
        env.ok(&["sync", "run", &sync]);
        let report = env.json(&["compact"]);
        for (k, v) in report["pruned"].as_object().unwrap() {
            let sum = pruned.get(k).and_then(|x| x.as_u64()).unwrap_or(0) + v.as_u64().unwrap_or(0);
            pruned.insert(k.clone(), sum.into());
        }
        env.ok(&["check"]);

        // The destination holds exactly the members with their uid now.
        let got = rx.received();
        assert!(got.errors.is_empty(), "{:?}", got.errors);
        let by_value: BTreeMap<String, String> = got.by_value.into_iter().collect();
        let want: BTreeMap<String, String> = (round * 5..150 + round * 5)
            .map(|i| {
                (
                    serde_json::to_string(&format!("uid{i}-v{}", versions[i])).unwrap(),
                    format!("u{i:05}"),
                )
            })
            .collect();
        assert_eq!(by_value, want, "after run {}", round + 1);
    }
    let n = |k: &str| pruned[k].as_u64().unwrap();
    assert_eq!(n("executions"), 4, "6 runs, 2 kept: {pruned:?}");
    assert!(n("execution_bitmaps") >= 4 * 4, "{pruned:?}");
    assert!(n("page_outcomes") >= 4, "{pruned:?}");
    assert_eq!(n("snapshots"), 4, "6 snapshots, 2 kept: {pruned:?}");
    assert!(n("history_entries") >= 5, "{pruned:?}");
    assert!(n("change_entries") >= 1, "{pruned:?}");

    // Every execution stays in the history; a pruned one's pages are gone,
    // and the refusal says why.
    let history = env.json(&["sync", "history", &sync]);
    assert_eq!(history.as_array().map(Vec::len), Some(6), "{history}");
    let out = env.run(&["sync", "execution", &format!("{sync}-1"), "--pages", "all"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("removed by retention") && err.contains("keep_executions"),
        "{err}"
    );
    env.ok(&["sync", "execution", &format!("{sync}-6"), "--pages", "all"]);
}

#[test]
fn a_bad_retention_setting_is_refused_with_its_key() {
    let env = Env::new();
    env.config("[retention]\nkeep_executions = 0\n");
    let out = env.run(&["compact"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("segsync.toml") && err.contains("keep_executions"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_applies_retention_in_the_background() {
    let rx = Receiver::start(ReceiverOptions::default()).unwrap();
    let env = Env::new();
    let versions = vec![0u32; USERS];
    import_users(&env, &versions, 0);
    import_members(&env, 0, 100, 0);
    env.ok(&["destination", "add", "dest", "--url", &rx.url()]);
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let sync: u32 = env
        .create_daily_sync("dest", &["--start", &tomorrow])
        .parse()
        .unwrap();
    for n in 1..=3 {
        import_members(&env, n, 100 + n, n);
        env.ok(&["sync", "run", &sync.to_string()]);
    }
    let opts = segsync::server::ServeOptions {
        tick: Duration::from_secs(3600),
        retention: segsync::config::Retention {
            policy: segsync::store::RetentionPolicy {
                keep_executions: 1,
                keep_snapshots: 1,
            },
            every: Some(Duration::from_millis(200)),
        },
        ..Default::default()
    };
    let served = Served::start(&env, opts).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    // Executions first, then snapshots: wait for the whole pass.
    let snapshots = || -> Vec<u32> {
        let seg = served.store.segment("seg").unwrap().unwrap();
        seg.snapshots.iter().map(|s| s.seq).collect()
    };
    while served.store.pruned_below(sync).unwrap() < 3 || snapshots() != vec![4] {
        assert!(
            Instant::now() < deadline,
            "retention did not run: executions kept from {}, snapshots {:?}",
            served.store.pruned_below(sync).unwrap(),
            snapshots()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served.store.check().unwrap().violations.is_empty());
    served.stop().await;
}

#[test]
fn the_data_dir_stays_within_twice_its_first_size() {
    // The scenario at CI size (its full size, 1M members and 100
    // runs, is `segsync bench --users 1000000 --growth-runs 100`).
    let env = Env::new();
    let out = env.json(&["bench", "--users", "100000", "--growth-runs", "25"]);
    assert_eq!(out["every_run_verified"], true, "{out}");
    let ratio = out["ratio"].as_f64().unwrap();
    assert!(ratio <= 2.0, "the data dir grew {ratio:.2}x: {out}");
    assert!(out["history_entries_pruned"].as_u64().unwrap() > 0, "{out}");
    assert!(out["snapshots_pruned"].as_u64().unwrap() > 0, "{out}");
}

//! Online backup and restore: `segsync backup` through a running `serve`
//! (the real binary, holding the data dir) mid-schedule, more changes and
//! runs after it, then `segsync restore` into a new data dir whose next run
//! sends exactly the difference between what was delivered and the store
//! as backed up — nothing of what happened after the backup.

mod common;

use std::collections::BTreeSet;

use common::{ok_json, path_str, Env, Scripted};

fn members(env: &Env, from: usize, to: usize, n: usize) -> std::path::PathBuf {
    let ids: Vec<String> = (from..to).map(|i| format!("u{i:05}")).collect();
    env.file(&format!("members-{n}.txt"), ids.join("\n").as_bytes())
}

/// The uids added and removed by the requests of execution `seq`.
fn sent(rx: &Scripted, seq: u32) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut add, mut remove) = (BTreeSet::new(), BTreeSet::new());
    for r in rx.seen() {
        if r.body["data"]["moengage_execution_id"].as_str() != Some(&format!("1-{seq}")) {
            continue;
        }
        for (key, set) in [("add_users", &mut add), ("remove_users", &mut remove)] {
            for u in r.body["data"][key].as_array().into_iter().flatten() {
                set.insert(u["uid"].as_str().unwrap().to_string());
            }
        }
    }
    (add, remove)
}

fn uids(range: std::ops::Range<usize>) -> BTreeSet<String> {
    range.map(|i| format!("uid{i}")).collect()
}

#[test]
fn a_backup_taken_while_serving_restores_to_the_state_it_was_taken_in() {
    let rx = Scripted::start(|_, _| ok_json());
    let env = Env::new();
    let mut csv = String::from("distinct_id,uid\n");
    for i in 0..300 {
        csv.push_str(&format!("u{i:05},uid{i}\n"));
    }
    let users = env.file("users.csv", csv.as_bytes());
    env.ok(&["users", "import", path_str(&users)]);
    env.ok(&[
        "segment",
        "import",
        "seg",
        path_str(&members(&env, 0, 100, 1)),
    ]);
    env.ok(&[
        "destination",
        "add",
        "dest",
        "--url",
        &rx.url("/"),
        "--page-size",
        "100",
    ]);
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let sync = env.create_daily_sync("dest", &["--start", &tomorrow]);
    assert_eq!(sync, "1");

    // `serve` holds the data dir; every command below goes through it.
    let (mut serve, _) = env.spawn_serve(&["--tick-ms", "3600000"]);
    env.ok(&["sync", "run", "1"]);
    env.ok(&[
        "segment",
        "import",
        "seg",
        path_str(&members(&env, 20, 130, 2)),
    ]);
    // A few sign-ups: written to the fingerprint table's tail file.
    let mut signups = String::from("distinct_id,uid\n");
    for i in 300..310 {
        signups.push_str(&format!("u{i:05},uid{i}\n"));
    }
    let signups = env.file("signups.csv", signups.as_bytes());
    env.ok(&["users", "import", path_str(&signups)]);
    assert!(env.data().join("fingerprints.tail.bin").exists());
    let backup = env.dir.path().join("backup");
    let info = env.json(&["backup", path_str(&backup)]);
    assert!(info["bytes"].as_u64().unwrap() > 0, "{info}");
    assert!(backup.join("db/CURRENT").exists());
    for file in ["fingerprints.bin", "fingerprints.tail.bin"] {
        assert_eq!(
            std::fs::read(backup.join(file)).unwrap(),
            std::fs::read(env.data().join(file)).unwrap(),
            "{file}"
        );
    }
    // A second backup into the same place is refused; the first stands.
    let again = env.run(&["backup", path_str(&backup)]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    // After the backup: another snapshot and a run in the original.
    env.ok(&[
        "segment",
        "import",
        "seg",
        path_str(&members(&env, 50, 200, 3)),
    ]);
    env.ok(&["sync", "run", "1"]);
    assert_eq!(sent(&rx, 2), (uids(100..200), uids(0..50)));
    serve.kill().unwrap();
    serve.wait().unwrap();

    // Restored elsewhere, pointed at a new receiver: its next run is the
    // difference between run 1 (delivered) and snapshot 2 (the backup's).
    let restored = Env::new();
    let out = restored.json(&["restore", path_str(&backup)]);
    assert_eq!(out["write_seq"], info["write_seq"], "{out}");
    assert!(restored.data().join("fingerprints.tail.bin").exists());
    restored.ok(&["check"]);
    let history = restored.json(&["sync", "history", "1"]);
    assert_eq!(history.as_array().map(Vec::len), Some(1), "{history}");
    let rx2 = Scripted::start(|_, _| ok_json());
    restored.ok(&["destination", "edit", "dest", "--url", &rx2.url("/")]);
    restored.ok(&["sync", "run", "1"]);
    assert_eq!(sent(&rx2, 2), (uids(100..130), uids(0..20)));

    // Restoring over a data dir that exists is refused, nothing touched.
    let out = restored.run(&["restore", path_str(&backup)]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    restored.ok(&["check"]);
}

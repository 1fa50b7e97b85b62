//! A full run then diff runs: the membership the destination rebuilds from
//! the requests equals `snapshot ∩ has(uid)` each time, for random data; and
//! removed users carry the value they were last sent with.

mod common;

use std::collections::{HashMap, HashSet};

use common::{path_str, Env, Lcg};
use segsync::checking_receiver::{Receiver, ReceiverOptions};

#[test]
fn full_then_diff_runs_rebuild_the_exact_membership() {
    let rx = Receiver::start(ReceiverOptions::default()).unwrap();
    let env = Env::new();
    let mut rng = Lcg(7);
    let n = 2500u64;
    let mut uid: HashMap<String, String> = HashMap::new();
    let mut csv = String::from("distinct_id,uid\n");
    for i in 0..n {
        let id = format!("user-{i}");
        if rng.next() % 10 < 8 {
            let v = format!("uid-{i}");
            csv.push_str(&format!("{id},{v}\n"));
            uid.insert(id, v);
        } else {
            csv.push_str(&format!("{id},\n"));
        }
    }
    let users = env.file("users.csv", csv.as_bytes());
    env.ok(&["users", "import", path_str(&users)]);
    let url = rx.url();
    env.ok(&[
        "destination",
        "add",
        "dest",
        "--url",
        &url,
        "--page-size",
        "100",
        "--retry-delay-ms",
        "10",
    ]);

    let mut sync = String::new();
    for round in 0..4 {
        let members: Vec<String> = (0..n)
            .filter(|_| !rng.next().is_multiple_of(3))
            .map(|i| format!("user-{i}"))
            .collect();
        let p = env.file(&format!("s{round}.txt"), members.join("\n").as_bytes());
        env.ok(&["segment", "import", "seg", path_str(&p)]);
        if round == 0 {
            sync = env.create_daily_sync("dest", &[]);
        }
        if round == 2 {
            // Change some values and delete others: removals must still
            // carry the value the destination was sent.
            let mut csv = String::from("distinct_id,uid\n");
            for i in (0..n).step_by(7) {
                let id = format!("user-{i}");
                if uid.contains_key(&id) {
                    csv.push_str(&format!(
                        "{id}{}\n",
                        if i % 2 == 0 { ",changed" } else { "," }
                    ));
                }
            }
            let p = env.file("changes.csv", csv.as_bytes());
            env.ok(&["users", "import", path_str(&p)]);
            for i in (0..n).step_by(7) {
                let id = format!("user-{i}");
                if i % 2 == 0 {
                    if let Some(v) = uid.get_mut(&id) {
                        *v = "changed".into();
                    }
                } else {
                    uid.remove(&id);
                }
            }
        }
        let before = rx.received();
        let run = env.json(&["sync", "run", &sync]);
        assert_eq!(run["status"], "complete", "round {round}: {run}");
        assert_eq!(run["kind"], if round == 0 { "full" } else { "diff" });

        let expected: HashSet<&String> = members.iter().filter(|m| uid.contains_key(*m)).collect();
        let got = rx.received();
        let got_ids: HashSet<&String> = got.members.keys().collect();
        assert_eq!(got_ids, expected, "round {round}");
        assert_eq!(run["total"], expected.len() as u64);
        assert!(got.errors.is_empty(), "{:?}", got.errors);
        // A changed identifier is one removal and one addition.
        let updated = run["updated"].as_u64().unwrap();
        assert_eq!(
            got.users_added - before.users_added,
            run["added"].as_u64().unwrap() + updated
        );
        assert_eq!(
            got.users_removed - before.users_removed,
            run["removed"].as_u64().unwrap() + updated
        );
        if round == 2 {
            assert!(updated > 0, "round 2 changed values of members: {run}");
        }
        if round == 0 {
            assert_eq!(run["removed"], 0);
        }
    }
    let history = env.json(&["sync", "history", &sync]);
    assert_eq!(history.as_array().unwrap().len(), 4);
    for h in history.as_array().unwrap() {
        assert_eq!(h["status"], "complete");
    }
}

#[test]
fn removed_users_carry_the_value_last_sent() {
    let rx = common::Scripted::start(|_, _| common::ok_json());
    let env = Env::new();
    let sync = common::setup_sync(
        &env,
        &[
            ("a", Some("old-a")),
            ("b", Some("old-b")),
            ("c", Some("c1")),
        ],
        &["a", "b", "c"],
        &rx.url("/"),
        &["--page-size", "100"],
    );
    assert_eq!(env.json(&["sync", "run", &sync])["status"], "complete");
    // a's uid changes while it stays a member (not re-sent), then a leaves;
    // b's uid is deleted (so b leaves current), c stays.
    let change = env.file("change.csv", b"distinct_id,uid\na,new-a\nb,\n");
    env.ok(&["users", "import", path_str(&change)]);
    let s2 = env.file("s2.txt", b"b\nc\n");
    env.ok(&["segment", "import", "seg", path_str(&s2)]);
    let run = env.json(&["sync", "run", &sync]);
    assert_eq!(run["status"], "complete");
    assert_eq!(
        (run["added"].as_u64(), run["removed"].as_u64()),
        (Some(0), Some(2))
    );
    let last = rx.seen().pop().unwrap();
    let mut removed: Vec<(String, String)> = last.body["data"]["remove_users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["moengage_distinct_id"].as_str().unwrap().into(),
                u["uid"].as_str().unwrap().into(),
            )
        })
        .collect();
    removed.sort();
    assert_eq!(
        removed,
        vec![("a".into(), "old-a".into()), ("b".into(), "old-b".into())]
    );
}

#[test]
fn the_checksum_only_receiver_agrees_with_the_exact_membership() {
    let exact = Receiver::start(ReceiverOptions::default()).unwrap();
    let counting = Receiver::start(ReceiverOptions {
        keep_members: false,
        ..Default::default()
    })
    .unwrap();
    let env = Env::new();
    let users = env.file("u.csv", b"distinct_id,uid\na,1\nb,2\nc,3\nd,4\n");
    env.ok(&["users", "import", path_str(&users)]);
    let s1 = env.file("s1.txt", b"a\nb\nc\n");
    env.ok(&["segment", "import", "seg", path_str(&s1)]);
    for (name, rx) in [("exact", &exact), ("counting", &counting)] {
        env.ok(&[
            "destination",
            "add",
            name,
            "--url",
            &rx.url(),
            "--page-size",
            "100",
        ]);
        let c = env.json(&[
            "sync",
            "create",
            "--segment",
            "seg",
            "--destination",
            name,
            "--attribute",
            "uid",
            "--every",
            "daily",
        ]);
        env.ok(&["sync", "run", &c["id"].to_string()]);
    }
    let s2 = env.file("s2.txt", b"b\nc\nd\n");
    env.ok(&["segment", "import", "seg", path_str(&s2)]);
    env.ok(&["sync", "run", "1"]);
    env.ok(&["sync", "run", "2"]);
    let (e, c) = (exact.summary(), counting.summary());
    let expected = segsync::checking_receiver::membership_checksum([&b"b"[..], b"c", b"d"]);
    assert_eq!((e.member_count, e.checksum), (3, expected));
    assert_eq!((c.member_count, c.checksum), (3, expected));
    assert!(
        counting.received().members.is_empty(),
        "the counting receiver keeps no map"
    );
}

//! Group commit of Personas calls: many concurrent identify calls share
//! synced writes, a request is answered only once its write is durable (the
//! real binary is `kill -9`ed under load from 32 connections, and every
//! answered event is in the store after), and requests applied in one group
//! see each other's users exactly as if each had committed alone.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Env;
use segsync::inbound::personas::{Committer, Endpoint, GroupLimits};
use segsync::store::{Store, Value};

const WRITE_KEY: &str = "group-commit-key";
const CONNECTIONS: usize = 32;

/// One identify call through `committer`, answered 200; its reply body.
fn identify(
    committer: &Committer,
    store: &Store,
    auth: &str,
    body: &serde_json::Value,
) -> serde_json::Value {
    let (tx, rx) = std::sync::mpsc::channel();
    committer.submit(
        store,
        Endpoint::Identify,
        Some(auth),
        body.to_string().as_bytes(),
        move |r| tx.send(r).unwrap(),
    );
    let r = rx.recv().unwrap().into_reply();
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
}

#[test]
fn every_answered_event_survives_kill_9_under_concurrent_load() {
    let env = Env::new();
    env.ok(&["writekey", "add", "gc", "--key", WRITE_KEY]);
    let (mut child, addr) = env.spawn_serve(&["--tick-ms", "3600000"]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // (distinct id, value of `n`) of every call answered 200.
    let acked: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let (stop, acked, addr) = (stop.clone(), acked.clone(), addr.clone());
            rt.spawn(async move {
                let client = reqwest::Client::new();
                let mut k: i64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("c{c}-u{k}");
                    let body = serde_json::json!({"userId": id, "traits": {"n": k, "conn": c}});
                    let r = common::post_identify(&client, &addr, WRITE_KEY, &body).await;
                    match r {
                        Ok(r) if r.status().is_success() => {
                            acked.lock().unwrap().push((id, k));
                        }
                        Ok(r) => panic!("identify refused: {}", r.status()),
                        Err(_) => break, // the server is gone
                    }
                    k += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let metrics = rt.block_on(async {
        reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    // Killed while the 32 connections are still sending.
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for t in tasks {
            t.await.unwrap();
        }
    });

    let commits = metric(&metrics, "segsync_personas_commits_total");
    let requests = metric(&metrics, "segsync_personas_requests_total");
    assert!(requests > 100, "too few requests to judge: {requests}");
    assert!(
        commits < requests,
        "no synced write was shared: {commits} commits for {requests} requests"
    );

    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() as u64 >= requests,
        "{} < {requests}",
        acked.len()
    );
    let check = env.run(&["check"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let store = Store::open(env.data()).unwrap();
    let n = store.attr_id("n").expect("attribute n");
    for (id, k) in &acked {
        let user = store
            .user_index(id)
            .unwrap()
            .unwrap_or_else(|| panic!("answered user {id} is not stored"));
        assert_eq!(
            store.attr_value(n, user).unwrap(),
            Some(Value::Num(k.to_string())),
            "answered identify of {id} is lost"
        );
    }
    eprintln!(
        "{} answered calls stored; {commits} commits for {requests} requests before the kill",
        acked.len()
    );
}

#[test]
fn requests_in_one_group_see_each_others_users() {
    let env = Env::new();
    let store = Arc::new(Store::open(env.data()).unwrap());
    segsync::inbound::add_write_key(&store, "gc", WRITE_KEY).unwrap();
    let committer = Arc::new(Committer::start(store.clone(), GroupLimits::default()).unwrap());
    let auth = common::basic_auth(WRITE_KEY, "");
    // 16 threads, 50 rounds: every round all of them identify the same new
    // user at once, so most rounds put several of them in one group.
    let created: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let (store, committer, auth, created) = (
                store.clone(),
                committer.clone(),
                auth.clone(),
                created.clone(),
            );
            std::thread::spawn(move || {
                for round in 0..50 {
                    let body = serde_json::json!({
                        "userId": format!("shared-{round}"),
                        "anonymousId": format!("anon-{round}-{t}"),
                        "traits": {"plan": format!("p{t}"), "vip": t % 2 == 0},
                    });
                    let reply = identify(&committer, &store, &auth, &body);
                    *created
                        .lock()
                        .unwrap()
                        .entry(format!("shared-{round}"))
                        .or_default() += reply["users_created"].as_u64().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    committer.stop();
    drop(committer);
    let created = created.lock().unwrap();
    assert_eq!(created.len(), 50);
    for (id, n) in created.iter() {
        assert_eq!(*n, 1, "{id} was reported created {n} times");
    }
    assert_eq!(store.counters().user_count, 50, "a user was created twice");
    // The anonymous id of the first call to reach each user is kept: it is
    // filled in once, never overwritten by a later call of the same group.
    let anon = store.attr_id("anonymous_id").unwrap();
    for round in 0..50 {
        let user = store
            .user_index(&format!("shared-{round}"))
            .unwrap()
            .unwrap();
        match store.attr_value(anon, user).unwrap() {
            Some(Value::Str(s)) => assert!(s.starts_with(&format!("anon-{round}-")), "{s}"),
            other => panic!("anonymous_id of shared-{round}: {other:?}"),
        }
    }
    drop(store);
    let check = env.run(&["check"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}

#[test]
fn calls_find_users_imported_before_and_while_serving() {
    let env = Env::new();
    let store = Arc::new(Store::open(env.data()).unwrap());
    segsync::inbound::add_write_key(&store, "gc", WRITE_KEY).unwrap();
    let rows: String = (0..2000).map(|i| format!("old-{i},uid-{i}\n")).collect();
    let first = env.file("first.csv", format!("distinct_id,uid\n{rows}").as_bytes());
    segsync::ingest::import_users(&store, &first, &Default::default()).unwrap();
    let committer = Committer::start(store.clone(), GroupLimits::default()).unwrap();
    let auth = common::basic_auth(WRITE_KEY, "");
    let call = |id: &str, n: usize| {
        let body = serde_json::json!({"userId": id, "traits": {"n": n}});
        identify(&committer, &store, &auth, &body)
    };
    // The first calls open the table; later ones are resolved before the
    // queue, by the calling thread.
    for round in 0..3 {
        for i in (0..2000).step_by(97) {
            let v = call(&format!("old-{i}"), round);
            assert_eq!(v["users_created"], 0, "old-{i} is imported");
        }
        assert_eq!(call(&format!("new-{round}"), round)["users_created"], 1);
    }
    // Another writer adds users while the committer runs.
    let later = env.file("later.csv", b"distinct_id,uid\nlate-1,l1\nlate-2,l2\n");
    segsync::ingest::import_users(&store, &later, &Default::default()).unwrap();
    for id in ["late-1", "late-2", "old-5", "new-0"] {
        assert_eq!(call(id, 9)["users_created"], 0, "{id} exists");
    }
    assert_eq!(store.counters().user_count, 2000 + 3 + 2);
    let n = store.attr_id("n").unwrap();
    let late = store.user_index("late-2").unwrap().unwrap();
    assert_eq!(
        store.attr_value(n, late).unwrap(),
        Some(Value::Num("9".into()))
    );
    committer.stop();
}

//! Actions never race a run. Against a real `serve` (in process) and a slow
//! real receiver, an action taken while a run is in progress stands after
//! the run ends: pause → the execution completes and the sync stays
//! paused; archive → the execution stops at a page boundary and the sync
//! stays archived; edit → kept, applies from the next run; a snapshot
//! imported meanwhile does not change the execution in flight; a new
//! destination gets a full send on the next run.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{call, ok_json, Env, Reply, Scripted, Seed, Seen, Served};
use serde_json::{json, Value};

/// A receiver that answers every page after `delay`.
fn slow(delay: Duration) -> Scripted {
    Scripted::start(move |_, _| {
        let (status, headers, body, _) = ok_json();
        (status, headers, body, delay) as Reply
    })
}

/// uids added and removed across the requests a receiver saw, once per page
/// key.
fn delivered(seen: &[Seen]) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut keys = BTreeSet::new();
    let (mut added, mut removed) = (BTreeSet::new(), BTreeSet::new());
    for r in seen {
        if !keys.insert(r.header("idempotency-key").unwrap_or("").to_string()) {
            continue;
        }
        for (list, out) in [("add_users", &mut added), ("remove_users", &mut removed)] {
            for u in r.body["data"][list].as_array().into_iter().flatten() {
                out.insert(u["uid"].as_str().unwrap_or("").to_string());
            }
        }
    }
    (added, removed)
}

struct Rig {
    env: Env,
    rx: Scripted,
    served: Served,
    c: reqwest::Client,
    sync: String,
}

/// 2000 users in `seg`, 20 pages of 100 sent one at a time, each answered
/// after 60 ms: a run takes about 1.2 s.
async fn rig() -> Rig {
    let env = Env::new();
    let rx = slow(Duration::from_millis(60));
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let sync = Seed::numbered(2000)
        .destination(
            &rx.url("/"),
            &["--page-size", "100", "--in-flight", "1", "--allow-resync"],
        )
        // Not due for a day: only the test starts runs.
        .daily_sync(&env, &["--start", &tomorrow]);
    let served = Served::with_tick(&env, Duration::from_secs(3600)).await;
    Rig {
        env,
        rx,
        served,
        c: reqwest::Client::new(),
        sync,
    }
}

impl Rig {
    fn url(&self, path: &str) -> String {
        format!("{}/api/v1/syncs/{}{path}", self.served.base, self.sync)
    }

    async fn post(&self, path: &str) -> (u16, Value) {
        call(&self.c, "POST", self.url(path), None).await
    }

    async fn executions(&self) -> Vec<Value> {
        let (_, v) = call(&self.c, "GET", self.url("/executions"), None).await;
        v.as_array().cloned().unwrap_or_default()
    }

    async fn sync(&self) -> Value {
        call(&self.c, "GET", self.url(""), None).await.1
    }

    /// Waits until the receiver has seen `n` requests.
    async fn until_requests(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.rx.seen().len() < n {
            assert!(
                Instant::now() < deadline,
                "receiver saw {} requests",
                self.rx.seen().len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until no run is in progress and returns the executions.
    async fn until_idle(&self) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.sync().await;
            if s["running"] == false {
                return self.executions().await;
            }
            assert!(Instant::now() < deadline, "still running: {s}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_during_a_run_lets_it_finish_and_the_sync_stays_paused() {
    let r = rig().await;
    assert_eq!(r.post("/run").await.0, 202);
    r.until_requests(3).await;
    let (status, v) = r.post("/pause").await;
    assert_eq!((status, v["status"].as_str()), (200, Some("paused")));
    let ex = r.until_idle().await;
    assert_eq!(ex[0]["status"], "complete", "{ex:?}");
    assert_eq!(ex[0]["pages_done"], 20);
    assert_eq!(
        r.sync().await["status"],
        "paused",
        "the run's end did not undo the pause"
    );
    assert_eq!(delivered(&r.rx.seen()).0.len(), 2000);
    r.served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_during_a_run_stops_it_at_a_page_boundary_for_good() {
    let r = rig().await;
    assert_eq!(r.post("/run").await.0, 202);
    r.until_requests(3).await;
    let (status, v) = r.post("/archive").await;
    assert_eq!((status, v["status"].as_str()), (200, Some("archived")));
    let ex = r.until_idle().await;
    assert_eq!(ex[0]["status"], "cancelled", "{ex:?}");
    let done = ex[0]["pages_done"].as_u64().unwrap();
    assert!((3..20).contains(&done), "pages done: {done}");
    let sent = r.rx.seen().len() as u64;
    assert!(
        sent <= done + 1,
        "{sent} requests for {done} pages acknowledged"
    );
    // Nothing more goes out, and nothing can start again.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(r.rx.seen().len() as u64, sent);
    assert_eq!(r.sync().await["status"], "archived");
    assert_eq!(r.post("/run").await.0, 409);
    r.served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_during_a_run_is_kept_and_a_snapshot_import_waits_for_the_next_run() {
    let r = rig().await;
    assert_eq!(r.post("/run").await.0, 202);
    r.until_requests(3).await;
    // Edit the notification emails and the frequency mid-run.
    let (status, _) = call(
        &r.c,
        "PATCH",
        r.url(""),
        Some(json!({"every": "weekly", "notify": ["ops@example.com"]})),
    )
    .await;
    assert_eq!(status, 200);
    // A new snapshot without the first 100 users lands mid-run.
    let ids: Vec<String> = (100..2000).map(|i| format!("u{i:05}")).collect();
    let snap = r.env.file("smaller.txt", ids.join("\n").as_bytes());
    segsync::ingest::import_segment(&r.served.store, "seg", &snap, &Default::default()).unwrap();
    let ex = r.until_idle().await;
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0]["status"], "complete");
    assert_eq!(
        ex[0]["added"], 2000,
        "the execution in flight kept its plan"
    );
    let s = r.sync().await;
    assert_eq!(s["schedule"], json!({"every": "weekly"}), "{s}");
    assert_eq!(s["notify"], json!(["ops@example.com"]));
    assert_eq!(s["status"], "active");
    // The next run sends the import's difference.
    let before = r.rx.seen().len();
    assert_eq!(r.post("/run").await.0, 202);
    let ex = r.until_idle().await;
    assert_eq!(
        (ex[1]["kind"].as_str(), ex[1]["removed"].as_u64()),
        (Some("diff"), Some(100))
    );
    let (_, removed) = delivered(&r.rx.seen()[before..]);
    assert_eq!(removed.len(), 100);
    assert!(removed.contains("uid0") && removed.contains("uid99"));
    r.served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_destination_gets_everyone_on_the_next_run() {
    let r = rig().await;
    let other = slow(Duration::ZERO);
    let (status, _) = call(
        &r.c,
        "POST",
        format!("{}/api/v1/destinations", r.served.base),
        Some(json!({"name": "other", "url": other.url("/"), "page_size": 500})),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(r.post("/run").await.0, 202);
    r.until_requests(3).await;
    let (status, _) = call(
        &r.c,
        "PATCH",
        r.url(""),
        Some(json!({"destination": "other"})),
    )
    .await;
    assert_eq!(status, 200);
    let ex = r.until_idle().await;
    assert_eq!(
        ex[0]["status"], "complete",
        "the run in flight finished to the old destination"
    );
    assert_eq!(delivered(&r.rx.seen()).0.len(), 2000);
    assert!(other.seen().is_empty());
    // No change in the segment, yet the next run sends everyone to the new
    // destination, and says why.
    assert_eq!(r.post("/run").await.0, 202);
    let ex = r.until_idle().await;
    assert_eq!(ex[1]["kind"], "full-new-destination", "{:?}", ex[1]);
    assert_eq!(ex[1]["added"], 2000);
    assert_eq!(delivered(&other.seen()).0.len(), 2000);
    // And the one after is a plain diff again.
    assert_eq!(r.post("/run").await.0, 202);
    let ex = r.until_idle().await;
    assert_eq!(
        (ex[2]["kind"].as_str(), ex[2]["added"].as_u64()),
        (Some("diff"), Some(0))
    );
    r.served.stop().await;
}

//! `segsync serve`: REST round trips over real HTTP with the seed's status
//! codes, a scheduled run that fires and lands in the history, and SIGTERM
//! mid-run followed by a restart that resumes without losing a page, and a
//! store released by the time `serve` returns.

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{call, ok_json, Env, Scripted, Seed, Served};
use serde_json::{json, Value};

fn seeded(env: &Env, users: usize) {
    Seed::numbered(users).apply(env);
}

async fn wait_for_execution(
    c: &reqwest::Client,
    base: &str,
    id: u64,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = call(
            c,
            "GET",
            format!("{base}/api/v1/syncs/{id}/executions"),
            None,
        )
        .await;
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_round_trips_with_status_codes() {
    let rx = Scripted::start(|_, _| ok_json());
    let env = Env::new();
    seeded(&env, 150);
    let served = Served::with_tick(&env, Duration::from_secs(3600)).await;
    let base = served.base.clone();
    let c = reqwest::Client::new();

    assert_eq!(
        c.get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok"
    );
    let (s, spec) = call(&c, "GET", format!("{base}/api/v1/openapi.json"), None).await;
    assert_eq!(s, 200);
    for path in [
        "/api/v1/syncs/{id}/{action}",
        "/v1/integrations/cohortsync",
        "/v1/identify",
        "/v1/track",
        "/v1/batch",
    ] {
        assert!(
            spec["paths"][path].is_object(),
            "{path} missing from the spec"
        );
    }
    let (s, segs) = call(&c, "GET", format!("{base}/api/v1/segments"), None).await;
    assert_eq!((s, segs[0]["name"].as_str()), (200, Some("seg")));

    let (s, e) = call(
        &c,
        "POST",
        format!("{base}/api/v1/destinations"),
        Some(json!({"name": "d", "url": rx.url("/"), "page_size": 5})),
    )
    .await;
    assert_eq!(s, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("page_size"));
    let (s, e) = call(&c, "POST", format!("{base}/api/v1/destinations"), Some(json!({"name": "d", "url": rx.url("/"), "page_size": 100, "basic": {"user": "u", "password": "secret-pw"}}))).await;
    assert_eq!(s, 201, "{e}");
    assert!(!e.to_string().contains("secret-pw"));
    assert_eq!(
        call(&c, "GET", format!("{base}/api/v1/destinations/nope"), None)
            .await
            .0,
        404
    );
    let (s, e) = call(
        &c,
        "POST",
        format!("{base}/api/v1/destinations"),
        Some(json!({"name": "d", "url": rx.url("/")})),
    )
    .await;
    assert_eq!(s, 409, "{e}");

    let future = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let new_sync = json!({"segment": "seg", "destination": "d", "attribute": "uid", "schedule": {"every": "daily"}, "start": future});
    let (s, sync) = call(
        &c,
        "POST",
        format!("{base}/api/v1/syncs"),
        Some(new_sync.clone()),
    )
    .await;
    assert_eq!(s, 201, "{sync}");
    let id = sync["id"].as_u64().unwrap();
    assert_eq!(
        sync["next_run"].as_str().map(|t| &t[..10]),
        Some(&future[..10])
    );
    let (s, e) = call(
        &c,
        "POST",
        format!("{base}/api/v1/syncs"),
        Some(
            json!({"segment": "seg", "destination": "d", "attribute": "phone", "schedule": "once"}),
        ),
    )
    .await;
    assert_eq!(s, 404, "{e}");
    assert!(e["error"]
        .as_str()
        .unwrap()
        .contains("phone Type string attribute not found"));
    let (s, _) = call(
        &c,
        "PATCH",
        format!("{base}/api/v1/syncs/{id}"),
        Some(json!({"colour": "red"})),
    )
    .await;
    assert_eq!(s, 400);
    let (s, e) = call(
        &c,
        "PATCH",
        format!("{base}/api/v1/syncs/{id}"),
        Some(json!({"every": "weekly"})),
    )
    .await;
    assert_eq!((s, e["schedule"]["every"].as_str()), (200, Some("weekly")));

    assert_eq!(
        call(&c, "POST", format!("{base}/api/v1/syncs/{id}/pause"), None)
            .await
            .0,
        200
    );
    let (s, e) = call(&c, "POST", format!("{base}/api/v1/syncs/{id}/pause"), None).await;
    assert_eq!(s, 409, "{e}");
    assert_eq!(
        call(
            &c,
            "POST",
            format!("{base}/api/v1/syncs/{id}/resync-last"),
            None
        )
        .await
        .0,
        409
    );
    assert_eq!(
        call(
            &c,
            "POST",
            format!("{base}/api/v1/syncs/{id}/explode"),
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(
        call(&c, "GET", format!("{base}/api/v1/syncs/999"), None)
            .await
            .0,
        404
    );
    assert_eq!(
        call(&c, "GET", format!("{base}/api/v1/syncs/abc"), None)
            .await
            .0,
        400
    );

    let (s, e) = call(&c, "POST", format!("{base}/api/v1/syncs/{id}/run"), None).await;
    assert_eq!(s, 202, "{e}");
    let ex = wait_for_execution(&c, &base, id, |v| v[0]["status"] == "complete").await;
    assert_eq!(
        (ex[0]["added"].as_u64(), ex[0]["trigger"].as_str()),
        (Some(150), Some("ad-hoc"))
    );
    assert_eq!(rx.seen().len(), 2);
    let (_, sync) = call(&c, "GET", format!("{base}/api/v1/syncs/{id}"), None).await;
    assert_eq!(
        sync["status"], "active",
        "the ad hoc run resumed the paused sync"
    );

    env.config("[limits]\nmax_active_syncs = 1\n");
    let (s, e) = call(&c, "POST", format!("{base}/api/v1/syncs"), Some(new_sync)).await;
    assert_eq!(s, 429, "{e}");

    let metrics = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("segsync_pages_sent_total")
            && metrics.contains("segsync_requests_total{destination=\"d\"}"),
        "{metrics}"
    );
    // Memory, from the process and from the store it serves (the writes
    // above are still in a memtable: an empty one would read 0).
    let gauge = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    assert!(gauge("process_resident_memory_bytes") > 1 << 20);
    assert!(gauge("segsync_store_memory_bytes{part=\"memtables\"}") > 0);
    gauge("segsync_store_memory_bytes{part=\"table_readers\"}");
    gauge("segsync_store_memory_bytes{part=\"block_cache\"}");
    let (s, n) = call(&c, "GET", format!("{base}/api/v1/notifications"), None).await;
    assert_eq!((s, n.as_array().map(Vec::len)), (200, Some(0)));

    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_run_fires_once_and_lands_in_the_history() {
    let rx = Scripted::start(|_, _| ok_json());
    let env = Env::new();
    seeded(&env, 120);
    env.ok(&[
        "destination",
        "add",
        "d",
        "--url",
        &rx.url("/"),
        "--page-size",
        "100",
    ]);
    // Started a minute ago, hourly: the slot at the start is due now.
    let start_at = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    let hourly = [
        "sync",
        "create",
        "--segment",
        "seg",
        "--destination",
        "d",
        "--attribute",
        "uid",
        "--every",
        "hourly",
        "--start",
        &start_at,
    ];
    // Hourly syncs are enabled case by case (the seed).
    let refused = env.run(&hourly);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("allow_hourly"));
    env.config("[limits]\nallow_hourly = true\n");
    env.ok(&[
        "sync",
        "create",
        "--segment",
        "seg",
        "--destination",
        "d",
        "--attribute",
        "uid",
        "--every",
        "hourly",
        "--start",
        &start_at,
    ]);
    let served = Served::with_tick(&env, Duration::from_millis(50)).await;
    let base = served.base.clone();
    let c = reqwest::Client::new();
    let ex = wait_for_execution(&c, &base, 1, |v| v[0]["status"] == "complete").await;
    assert_eq!(ex[0]["trigger"], "scheduled");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, ex) = call(&c, "GET", format!("{base}/api/v1/syncs/1/executions"), None).await;
    assert_eq!(
        ex.as_array().unwrap().len(),
        1,
        "the next slot is an hour away"
    );
    let (_, sync) = call(&c, "GET", format!("{base}/api/v1/syncs/1"), None).await;
    assert!(sync["last_slot_ms"].is_number());
    served.stop().await;
    assert_eq!(rx.seen().len(), 2);
}

/// A plain HTTP GET (the store is held by the server, so no CLI).
fn http_get(addr: &str, path: &str) -> Value {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or(Value::Null)
}

#[test]
fn sigterm_mid_run_then_restart_resumes_without_losing_a_page() {
    let slow = Arc::new(AtomicBool::new(true));
    let s2 = slow.clone();
    let rx = Scripted::start(move |_, _| {
        let mut r = ok_json();
        if s2.load(Ordering::SeqCst) {
            r.3 = Duration::from_millis(60);
        }
        r
    });
    let env = Env::new();
    seeded(&env, 3000);
    env.ok(&[
        "destination",
        "add",
        "d",
        "--url",
        &rx.url("/"),
        "--page-size",
        "100",
        "--in-flight",
        "2",
    ]);
    env.ok(&[
        "sync",
        "create",
        "--segment",
        "seg",
        "--destination",
        "d",
        "--attribute",
        "uid",
        "--every",
        "daily",
    ]);

    let (mut child, _) = env.spawn_serve(&["--tick-ms", "50"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while rx.seen().len() < 6 {
        assert!(Instant::now() < deadline, "the scheduled run never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful exit on SIGTERM: {status:?}");
    let first = rx.seen().len();
    assert!(first < 30, "stopped mid-run");
    let hist = env.json(&["sync", "history", "1"]);
    assert_eq!(hist[0]["status"], "processing");
    let done_before = hist[0]["pages_done"].as_u64().unwrap();
    assert!(done_before >= 1 && done_before as usize <= first);

    slow.store(false, Ordering::SeqCst);
    let (mut child, addr) = env.spawn_serve(&["--tick-ms", "50"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ex = http_get(&addr, "/api/v1/syncs/1/executions");
        if ex[0]["status"] == "complete" {
            assert_eq!(
                ex.as_array().unwrap().len(),
                1,
                "the same execution was resumed"
            );
            assert_eq!(ex[0]["pages_done"], 30);
            break;
        }
        assert!(Instant::now() < deadline, "resume never completed: {ex}");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();

    let seen = rx.seen();
    let mut members = std::collections::HashSet::new();
    let mut pages = std::collections::HashSet::new();
    for r in &seen {
        assert!(r.header("idempotency-key").unwrap().starts_with("1-1-"));
        pages.insert(r.page());
        for u in r.body["data"]["add_users"].as_array().unwrap() {
            members.insert(u["moengage_distinct_id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(pages.len(), 30, "every page arrived");
    assert_eq!(members.len(), 3000, "final membership is exact");
    assert!(
        seen.len() <= 30 + 2,
        "only in-flight pages were sent twice ({} requests)",
        seen.len()
    );
}

/// `serve` returns only once nothing holds the store any more: a caller can
/// reopen the data dir at once, even with keep-alive connections open at
/// shutdown (their tasks drop the router after axum has stopped waiting).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_is_released_when_serve_returns() {
    let env = Env::new();
    seeded(&env, 10);
    for round in 0..40 {
        let srv = Served::start(&env, Default::default()).await;
        // Each client keeps its connection open after its answer.
        let mut clients = Vec::new();
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let c = reqwest::Client::new();
            let url = format!("{}/api/v1/syncs", srv.base);
            let c2 = c.clone();
            calls.spawn(async move { call(&c2, "GET", url, None).await.0 });
            clients.push(c);
        }
        while let Some(status) = calls.join_next().await {
            assert_eq!(status.unwrap(), 200);
        }
        srv.stop().await;
        if let Err(e) = segsync::store::Store::open(env.data()) {
            panic!("round {round}: the store is still held after serve returned: {e}");
        }
    }
}

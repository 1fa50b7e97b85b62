//! What the console needs of the API, against a real `serve`: the console
//! itself at `/` (embedded, nothing fetched from elsewhere), a running
//! sync's live progress and the run it refuses meanwhile, what each
//! snapshot changed, and a destination read, edited and written back (or
//! tested unsaved) keeping the secrets it only saw masked.

mod common;

use std::time::{Duration, Instant};

use common::{call, ok_json, Env, Scripted, Seed, Served};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_from_the_binary_with_a_self_only_policy() {
    let env = Env::new();
    Seed::numbered(3).apply(&env);
    let served = Served::with_tick(&env, Duration::from_secs(3600)).await;
    let c = reqwest::Client::new();
    for (path, kind, needle) in [
        ("/", "text/html", "/console/app.js"),
        ("/console/app.js", "text/javascript", "/api/v1/whoami"),
        ("/console/app.css", "text/css", "@media"),
    ] {
        let r = c
            .get(format!("{}{path}", served.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers().clone();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{path}: {h:?}"
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
            "{csp}"
        );
        let body = r.text().await.unwrap();
        assert!(body.contains(needle), "{path}");
        // The only absolute URLs: the SVG namespace and placeholders.
        for (at, _) in body.match_indices("://") {
            let url: String = body[at + 3..]
                .chars()
                .take_while(|c| !matches!(c, '\'' | '"' | ' ' | ')' | '`'))
                .collect();
            assert!(
                url.contains("www.w3.org/2000/svg") || url.contains("example.com"),
                "{path} refers to another origin: {url}"
            );
        }
    }
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_sync_shows_its_progress_and_refuses_a_second_run() {
    // 5 pages at 60 requests/minute: about four seconds.
    let rx = Scripted::start(|_, _| ok_json());
    let env = Env::new();
    // Not due yet: only the ad hoc run below sends.
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let sync = Seed::numbered(500)
        .destination(&rx.url("/"), &["--page-size", "100", "--rpm", "60"])
        .daily_sync(&env, &["--start", &tomorrow]);
    let served = Served::with_tick(&env, Duration::from_secs(3600)).await;
    let c = reqwest::Client::new();
    let api = |p: &str| format!("{}/api/v1{p}", served.base);
    let (s, started) = call(&c, "POST", api(&format!("/syncs/{sync}/run")), None).await;
    assert_eq!(s, 202, "{started}");

    let deadline = Instant::now() + Duration::from_secs(20);
    let seen = loop {
        let (_, v) = call(&c, "GET", api(&format!("/syncs/{sync}")), None).await;
        let p = &v["progress"];
        if p["pages_done"]
            .as_u64()
            .is_some_and(|d| (1..5).contains(&d))
        {
            break v;
        }
        assert!(Instant::now() < deadline, "no progress seen: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let p = &seen["progress"];
    assert_eq!(p["total_pages"], 5, "{p}");
    assert_eq!(p["users_planned"], 500, "{p}");
    assert_eq!(
        p["users_done"].as_u64(),
        p["pages_done"].as_u64().map(|d| d * 100),
        "{p}"
    );
    assert_eq!(p["limit_rpm"], 60, "{p}");
    assert!(
        p["rate_rpm"].as_f64().is_some_and(|r| r > 0.0 && r <= 60.0),
        "{p}"
    );
    assert!(p["users_per_s"].as_f64().is_some_and(|r| r > 0.0), "{p}");
    // The view says why a run cannot start now, before anyone tries.
    assert_eq!(seen["actions"]["run"], "a run is in progress", "{seen}");
    assert_eq!(seen["actions"]["pause"], Value::Null, "{seen}");
    let (s, refused) = call(&c, "POST", api(&format!("/syncs/{sync}/run")), None).await;
    assert_eq!(s, 409, "{refused}");

    // Once it ends: no progress, and running is allowed again.
    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        let (_, v) = call(&c, "GET", api(&format!("/syncs/{sync}")), None).await;
        if v["running"] == false {
            break v;
        }
        assert!(Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(done.get("progress").is_none(), "{done}");
    assert_eq!(done["actions"]["run"], Value::Null, "{done}");
    assert_eq!(done["history"][0]["pages_done"], 5, "{done}");
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_show_what_each_snapshot_changed() {
    let env = Env::new();
    Seed::numbered(100).apply(&env);
    // Snapshot 2: u00000..u00089 plus nothing new (10 leave); snapshot 3:
    // u00000..u00094 (5 come back).
    for n in [90, 95] {
        let ids: Vec<String> = (0..n).map(|i| format!("u{i:05}")).collect();
        let f = env.file("next.txt", ids.join("\n").as_bytes());
        env.ok(&["segment", "import", "seg", common::path_str(&f)]);
    }
    let served = Served::with_tick(&env, Duration::from_secs(3600)).await;
    let c = reqwest::Client::new();
    let (s, seg) = call(
        &c,
        "GET",
        format!("{}/api/v1/segments/seg", served.base),
        None,
    )
    .await;
    assert_eq!(s, 200, "{seg}");
    let changes: Vec<(u64, u64, u64)> = seg["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["seq"].as_u64().unwrap(),
                c["added"].as_u64().unwrap(),
                c["removed"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(changes, vec![(1, 100, 0), (2, 0, 10), (3, 5, 0)]);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_written_back_as_shown_keeps_its_secrets() {
    let rx = Scripted::start(|_, _| ok_json());
    let env = Env::new();
    Seed::numbered(3)
        .destination(
            &rx.url("/hook"),
            &[
                "--header",
                "X-Api-Key=header-secret-42",
                "--param",
                "api_key=param-secret-99",
                "--basic",
                "user:pass-word-7",
            ],
        )
        .apply(&env);
    let served = Served::with_tick(&env, Duration::from_secs(3600)).await;
    let c = reqwest::Client::new();
    let api = |p: &str| format!("{}/api/v1{p}", served.base);
    let (_, shown) = call(&c, "GET", api("/destinations/dest"), None).await;
    let text = shown.to_string();
    assert!(
        !text.contains("header-secret-42")
            && !text.contains("pass-word-7")
            && !text.contains("param-secret-99"),
        "{shown}"
    );

    // The console's form: what it was shown, one field changed.
    let mut edited: Value = shown.clone();
    edited.as_object_mut().unwrap().remove("id");
    edited["page_size"] = json!(250);
    // Testing the unsaved edit sends the real secrets.
    let (s, report) = call(&c, "POST", api("/destination-test"), Some(edited.clone())).await;
    assert_eq!((s, &report["ok"]), (200, &json!(true)), "{report}");
    let sent = rx.seen().pop().expect("the test request");
    assert_eq!(sent.header("x-api-key"), Some("header-secret-42"));
    assert!(sent.uri.contains("api_key=param-secret-99"), "{}", sent.uri);
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode("user:pass-word-7");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Basic {basic}").as_str())
    );

    let (s, saved) = call(&c, "PUT", api("/destinations/dest"), Some(edited)).await;
    assert_eq!(s, 200, "{saved}");
    let stored = segsync::destination::get(&served.store, "dest")
        .unwrap()
        .config;
    assert_eq!(stored.page_size, Some(250));
    assert_eq!(
        stored.headers,
        vec![("X-Api-Key".to_string(), "header-secret-42".to_string())]
    );
    assert_eq!(stored.basic.unwrap().password, "pass-word-7");
    assert_eq!(
        stored.params,
        vec![("api_key".to_string(), "param-secret-99".to_string())]
    );

    // A secret typed anew replaces the stored one.
    let mut changed = shown;
    changed.as_object_mut().unwrap().remove("id");
    changed["headers"] = json!([["X-Api-Key", "fresh-key-77"]]);
    let (s, _) = call(&c, "PUT", api("/destinations/dest"), Some(changed)).await;
    assert_eq!(s, 200);
    let stored = segsync::destination::get(&served.store, "dest")
        .unwrap()
        .config;
    assert_eq!(stored.headers[0].1, "fresh-key-77");
    served.stop().await;
}

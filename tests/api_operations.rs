//! The CLI's operations through the REST API of a real `serve`: segment
//! diff (with ids), destination preview (saved, and a configuration being
//! typed) and connection test, workspaces, write keys, received cohorts,
//! limits in force, and the seed's list and detail views of syncs (allowed
//! actions with the reason for the others, latest status, last synced,
//! history, `?status=archived`).

mod common;

use std::time::{Duration, Instant};

use common::{call, ok_json, Env, Scripted, Seed, Served};
use serde_json::{json, Value};

async fn until_idle(c: &reqwest::Client, base: &str, sync: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = call(c, "GET", format!("{base}/api/v1/syncs/{sync}"), None).await;
        if v["running"] == false && v["latest_status"] != Value::Null {
            return v;
        }
        assert!(Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_group_answers_through_the_api() {
    let rx = Scripted::start(|_, _| ok_json());
    let text = Scripted::start(|_, _| (200, vec![], "plain".into(), Duration::ZERO));
    let env = Env::new();
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let sync = Seed::numbered(300)
        .destination(
            &rx.url("/"),
            &["--page-size", "100", "--header", "X-Api-Key=secret-123456"],
        )
        .daily_sync(&env, &["--start", &tomorrow]);
    // A second snapshot without u00000 and u00001.
    let ids: Vec<String> = (2..300).map(|i| format!("u{i:05}")).collect();
    let snap = env.file("s2.txt", ids.join("\n").as_bytes());
    env.ok(&["segment", "import", "seg", snap.to_str().unwrap()]);
    env.ok(&["destination", "add", "text", "--url", &text.url("/")]);
    let srv = Served::with_tick(&env, Duration::from_secs(3600)).await;
    let c = reqwest::Client::new();
    let api = |p: &str| format!("{}/api/v1{p}", srv.base);

    // Segment diff, as `segment diff --attribute uid --ids`.
    let (s, d) = call(
        &c,
        "GET",
        api("/segments/seg/diff?attribute=uid&ids=true"),
        None,
    )
    .await;
    assert_eq!(
        (s, d["removed"].as_u64(), d["added"].as_u64()),
        (200, Some(2), Some(0)),
        "{d}"
    );
    let mut removed: Vec<&str> = d["removed_ids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    removed.sort();
    assert_eq!(removed, ["u00000", "u00001"]);
    let (s, d) = call(&c, "GET", api("/segments/seg/diff?attribute=phone"), None).await;
    assert_eq!(s, 404);
    assert_eq!(d["error"], "phone Type string attribute not found");
    assert_eq!(
        call(&c, "GET", api("/segments/nope/diff"), None).await.0,
        404
    );

    // Preview of a saved destination (secrets masked) and of one being typed.
    let (s, p) = call(
        &c,
        "GET",
        api("/destinations/dest/preview?attribute=uid"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{p}");
    assert!(p["headers"].to_string().contains("****56"), "{p}");
    assert!(!p.to_string().contains("secret-123456"));
    let typed = json!({"name": "new", "url": rx.url("/x"), "identifier_key": "partner_id"});
    let (s, p) = call(
        &c,
        "POST",
        api("/destination-preview?attribute=uid"),
        Some(typed),
    )
    .await;
    assert_eq!(s, 200, "{p}");
    assert!(
        p["body"]["data"]["add_users"][0]
            .get("partner_id")
            .is_some(),
        "{p}"
    );
    let (s, p) = call(
        &c,
        "POST",
        api("/destination-preview"),
        Some(json!({"name": "new", "url": rx.url("/"), "page_size": 5})),
    )
    .await;
    assert_eq!(s, 400);
    assert!(p["error"].as_str().unwrap().contains("page_size"), "{p}");

    // Connection test: the seed's rule (2xx + application/json).
    let (s, r) = call(&c, "POST", api("/destinations/dest/test"), None).await;
    assert_eq!((s, r["ok"].as_bool()), (200, Some(true)), "{r}");
    let (s, r) = call(&c, "POST", api("/destinations/text/test"), None).await;
    assert_eq!((s, r["ok"].as_bool()), (200, Some(false)), "{r}");
    assert!(r["message"].as_str().unwrap().contains("application/json"));

    // Workspaces, cohorts, write keys.
    let ws = json!({"id": "ws-1", "data_api_key": "key-0123456789"});
    assert_eq!(
        call(&c, "POST", api("/workspaces"), Some(ws.clone()))
            .await
            .0,
        201
    );
    assert_eq!(call(&c, "POST", api("/workspaces"), Some(ws)).await.0, 409);
    let (_, all) = call(&c, "GET", api("/workspaces"), None).await;
    assert_eq!(all[0]["id"], "ws-1");
    assert!(!all.to_string().contains("key-0123456789"));
    assert_eq!(
        call(&c, "DELETE", api("/workspaces/ws-1"), None).await.0,
        204
    );
    assert_eq!(
        call(&c, "DELETE", api("/workspaces/ws-1"), None).await.0,
        404
    );
    assert_eq!(call(&c, "GET", api("/cohorts"), None).await.1, json!([]));
    let wk = json!({"name": "web", "key": "wk-0123456789"});
    assert_eq!(call(&c, "POST", api("/writekeys"), Some(wk)).await.0, 201);
    assert_eq!(
        call(&c, "GET", api("/writekeys"), None).await.1[0]["name"],
        "web"
    );
    assert_eq!(call(&c, "DELETE", api("/writekeys/web"), None).await.0, 204);

    // Limits in force.
    let (s, l) = call(&c, "GET", api("/limits"), None).await;
    assert_eq!(
        (s, l["limits"]["max_active_syncs"].as_u64()),
        (200, Some(10)),
        "{l}"
    );
    assert_eq!(l["limits"]["allow_hourly"], false);
    assert_eq!(l["inbound"]["cohort_rpm"], 300);

    // The sync's views: actions with reasons, then history after a run.
    let (_, v) = call(&c, "GET", api(&format!("/syncs/{sync}")), None).await;
    assert_eq!(v["actions"]["run"], Value::Null);
    assert!(
        v["actions"]["resync-last"]
            .as_str()
            .unwrap()
            .contains("cannot"),
        "{v}"
    );
    assert!(v["actions"]["resync-all"]
        .as_str()
        .unwrap()
        .contains("does not allow resync"));
    assert_eq!(
        (v["latest_status"].clone(), v["last_synced"].clone()),
        (Value::Null, Value::Null)
    );
    assert_eq!(
        call(&c, "POST", api(&format!("/syncs/{sync}/run")), None)
            .await
            .0,
        202
    );
    let v = until_idle(&c, &srv.base, &sync).await;
    assert_eq!(v["latest_status"], "complete", "{v}");
    assert!(v["last_synced"].is_string());
    assert_eq!(v["history"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["history"][0]["added"], 298);
    assert_eq!(v["updated_by"], "local");

    // The Archived Syncs page.
    assert_eq!(
        call(&c, "GET", api("/syncs?status=archived"), None).await.1,
        json!([])
    );
    assert_eq!(
        call(&c, "POST", api(&format!("/syncs/{sync}/archive")), None)
            .await
            .0,
        200
    );
    let (_, archived) = call(&c, "GET", api("/syncs?status=archived"), None).await;
    assert_eq!(archived.as_array().map(Vec::len), Some(1));
    assert!(
        archived[0]["actions"]
            .as_object()
            .unwrap()
            .values()
            .all(|w| w.is_string()),
        "no action is left"
    );
    assert_eq!(
        call(&c, "GET", api("/syncs?status=bogus"), None).await.0,
        400
    );
    srv.stop().await;

    // The CLI shows the same views.
    let list = env.json(&["sync", "list", "--status", "archived"]);
    assert_eq!(list[0]["id"].to_string(), sync);
    assert_eq!(list[0]["latest_status"], "complete");
    assert_eq!(env.json(&["sync", "list", "--status", "active"]), json!([]));
    let table = env.ok(&["sync", "list"]);
    assert!(
        table.contains("last synced") && table.contains("archived"),
        "{table}"
    );
}

//! API tokens: with none, the admin API is open on loopback; once one
//! exists every `/api/v1` call needs it (401 without, or with a wrong or
//! revoked one), a viewer may only read (403), `/healthz`, `/metrics` and
//! the inbound `/v1` endpoints keep their own rules, changes record the
//! token's name ("updated by"), and `serve` refuses a non-loopback address
//! while no token exists.

mod common;

use std::time::Duration;

use common::{call_as, Env, Seed, Served};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_gate_the_admin_api_by_role() {
    let env = Env::new();
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let sync = Seed::numbered(10)
        .destination("http://127.0.0.1:9/", &[])
        .daily_sync(&env, &["--start", &tomorrow, "--notify", "ops@example.com"]);
    let srv = Served::with_tick(&env, Duration::from_secs(3600)).await;
    let c = reqwest::Client::new();
    let api = |p: &str| format!("{}/api/v1{p}", srv.base);

    // No token yet: open (on loopback), changes are by "local".
    assert_eq!(call_as(&c, "GET", api("/syncs"), None, None).await.0, 200);
    let (s, admin) = call_as(
        &c,
        "POST",
        api("/tokens"),
        None,
        Some(json!({"name": "ops", "role": "admin"})),
    )
    .await;
    assert_eq!(s, 201, "{admin}");
    let admin = admin["token"].as_str().unwrap().to_string();
    assert!(admin.starts_with("ssk_"));

    // From now on a token is needed.
    let (s, body) = call_as(&c, "GET", api("/syncs"), None, None).await;
    assert_eq!(s, 401, "{body}");
    assert!(body["error"].as_str().unwrap().contains("Bearer"));
    assert_eq!(
        call_as(&c, "GET", api("/syncs"), Some("ssk_00000000_nope"), None)
            .await
            .0,
        401
    );
    let (s, v) = call_as(
        &c,
        "POST",
        api("/tokens"),
        Some(&admin),
        Some(json!({"name": "dash", "role": "viewer"})),
    )
    .await;
    assert_eq!(s, 201);
    let viewer = v["token"].as_str().unwrap().to_string();

    // Health and metrics stay open; the inbound endpoints keep their own
    // credentials (Basic with a write key), not tokens.
    assert_eq!(
        call_as(&c, "GET", format!("{}/healthz", srv.base), None, None)
            .await
            .0,
        200
    );
    assert_eq!(
        call_as(&c, "GET", format!("{}/metrics", srv.base), None, None)
            .await
            .0,
        200
    );
    let (s, _) = call_as(
        &c,
        "POST",
        format!("{}/v1/identify", srv.base),
        Some(&admin),
        Some(json!({"userId": "x"})),
    )
    .await;
    assert_eq!(s, 401, "a token is not a write key");

    // A viewer reads everything and changes nothing.
    assert_eq!(
        call_as(
            &c,
            "GET",
            api(&format!("/syncs/{sync}")),
            Some(&viewer),
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call_as(&c, "GET", api("/destinations"), Some(&viewer), None)
            .await
            .0,
        200
    );
    let (s, body) = call_as(
        &c,
        "POST",
        api(&format!("/syncs/{sync}/pause")),
        Some(&viewer),
        None,
    )
    .await;
    assert_eq!(s, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("viewer"));
    let (s, _) = call_as(
        &c,
        "PATCH",
        api(&format!("/syncs/{sync}")),
        Some(&viewer),
        Some(json!({"every": "weekly"})),
    )
    .await;
    assert_eq!(s, 403);
    // A preview is a POST that changes nothing: a viewer may ask for it;
    // a connection test sends a request, so a viewer may not.
    let cfg = json!({"name": "draft", "url": "http://127.0.0.1:9/x", "add_key": "in"});
    let (s, p) = call_as(
        &c,
        "POST",
        api("/destination-preview"),
        Some(&viewer),
        Some(cfg.clone()),
    )
    .await;
    assert_eq!(s, 200, "{p}");
    assert!(p["body"]["data"]["in"].is_array(), "{p}");
    let (s, _) = call_as(
        &c,
        "POST",
        api("/destination-test"),
        Some(&viewer),
        Some(cfg),
    )
    .await;
    assert_eq!(s, 403);
    // whoami answers 200 either way (the console asks before sign-in).
    let (s, me) = call_as(&c, "GET", api("/whoami"), Some(&viewer), None).await;
    assert_eq!(
        (s, &me["signed_in"], &me["name"], &me["role"]),
        (200, &json!(true), &json!("dash"), &json!("viewer"))
    );
    let (s, me) = call_as(&c, "GET", api("/whoami"), Some("ssk_wrong"), None).await;
    assert_eq!(
        (s, &me["signed_in"], &me["tokens_exist"]),
        (200, &json!(false), &json!(true))
    );
    assert!(me.get("role").is_none(), "{me}");

    // An admin changes things, and is named as the one who did.
    let (s, v) = call_as(
        &c,
        "PATCH",
        api(&format!("/syncs/{sync}")),
        Some(&admin),
        Some(json!({"every": "weekly"})),
    )
    .await;
    assert_eq!((s, v["updated_by"].as_str()), (200, Some("ops")), "{v}");
    let (s, v) = call_as(
        &c,
        "POST",
        api(&format!("/syncs/{sync}/pause")),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(
        (s, v["status"].as_str(), v["updated_by"].as_str()),
        (200, Some("paused"), Some("ops"))
    );
    let (_, outbox) = call_as(&c, "GET", api("/notifications"), Some(&viewer), None).await;
    assert!(
        outbox[0]["body"]
            .as_str()
            .unwrap()
            .contains("Updated by ops"),
        "{outbox}"
    );

    // Listing shows names and roles, never a token.
    let (_, list) = call_as(&c, "GET", api("/tokens"), Some(&viewer), None).await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2);
    assert!(!list.to_string().contains(&admin[8..]));

    // Revoked: 401 from then on.
    assert_eq!(
        call_as(&c, "DELETE", api("/tokens/dash"), Some(&admin), None)
            .await
            .0,
        204
    );
    assert_eq!(
        call_as(&c, "GET", api("/syncs"), Some(&viewer), None)
            .await
            .0,
        401
    );
    assert_eq!(
        call_as(&c, "GET", api("/syncs"), Some(&admin), None)
            .await
            .0,
        200
    );
    srv.stop().await;

    // The CLI sees the same tokens and who changed the sync.
    let list = env.json(&["token", "list"]);
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["name"], "ops");
    assert_eq!(env.json(&["sync", "show", &sync])["updated_by"], "ops");
}

#[test]
fn serve_refuses_a_non_loopback_address_without_a_token() {
    let env = Env::new();
    env.ok(&["token", "list"]);
    let out = env.run(&["serve", "--listen", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no API token exists") && err.contains("--insecure"),
        "{err}"
    );
    // The CLI creates tokens and prints one once.
    let t = env.json(&["token", "create", "ci", "--role", "viewer"]);
    assert_eq!(
        (t["name"].as_str(), t["role"].as_str()),
        (Some("ci"), Some("viewer"))
    );
    assert!(t["token"].as_str().unwrap().starts_with("ssk_"));
    assert!(!env.ok(&["token", "list"]).contains("ssk_"));
    let out = env.run(&["token", "revoke", "nobody"]);
    assert_eq!(out.status.code(), Some(2));
}

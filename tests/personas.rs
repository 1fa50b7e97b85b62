//! Personas ingestion in `segsync serve` over real HTTP: identify, track and
//! batch calls with a write key build users, attributes and audience
//! membership in real time, malformed events are refused without applying
//! anything, and a following sync delivers the membership they built.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{ok_json, Env, Scripted, Seen, Served};
use segsync::server::ServeOptions;
use segsync::store::{Store, Value as AttrValue};
use serde_json::{json, Value};

const WRITE_KEY: &str = "wk-personas-1";

struct Server {
    base: String,
    served: Served,
    client: reqwest::Client,
}

impl Server {
    async fn start(env: &Env) -> Server {
        let served = Served::start(env, ServeOptions::default()).await;
        Server {
            base: served.base.clone(),
            served,
            client: reqwest::Client::new(),
        }
    }

    async fn call(&self, path: &str, key: Option<&str>, body: &Value) -> (u16, Value) {
        self.raw(path, key, serde_json::to_vec(body).unwrap()).await
    }

    async fn raw(&self, path: &str, key: Option<&str>, body: Vec<u8>) -> (u16, Value) {
        let mut r = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(k) = key {
            // Segment's convention: the write key is the user name.
            r = r.basic_auth(k, Some(""));
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn ok(&self, path: &str, body: Value) -> Value {
        let (s, v) = self.call(path, Some(WRITE_KEY), &body).await;
        assert_eq!(s, 200, "{path} {body}: {v}");
        v
    }

    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        common::call(&self.client, method, format!("{}{path}", self.base), body).await
    }

    /// Runs sync `id` through the API and waits for the execution to end.
    async fn run_sync(&self, id: &Value, runs_before: usize) -> Value {
        let (s, v) = self
            .admin("POST", &format!("/api/v1/syncs/{id}/run"), None)
            .await;
        assert_eq!(s, 202, "{v}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, h) = self
                .admin("GET", &format!("/api/v1/syncs/{id}/executions"), None)
                .await;
            if let Some(last) = h.as_array().and_then(|a| a.get(runs_before)) {
                if last["status"] != "processing" {
                    return last.clone();
                }
            }
            assert!(Instant::now() < deadline, "execution did not end: {h}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) {
        self.served.stop().await;
    }
}

/// uids in the add and remove lists of custom-format requests.
fn delivered(seen: &[Seen]) -> (BTreeSet<String>, BTreeSet<String>) {
    let list = |r: &Seen, k: &str| -> Vec<String> {
        r.body["data"][k]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["uid"].as_str().unwrap().to_string())
            .collect()
    };
    let mut adds = BTreeSet::new();
    let mut removes = BTreeSet::new();
    for r in seen {
        adds.extend(list(r, "add_users"));
        removes.extend(list(r, "remove_users"));
    }
    (adds, removes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_track_and_batch_build_membership_that_a_sync_delivers() {
    let env = Env::new();
    env.ok(&["writekey", "add", "segment-prod", "--key", WRITE_KEY]);
    for (args, why) in [
        (
            ["writekey", "add", "segment-prod", "--key", "another-key-1"],
            "already exists",
        ),
        (
            ["writekey", "add", "other", "--key", WRITE_KEY],
            "under another name",
        ),
        (["writekey", "add", "short", "--key", "abc"], "at least 8"),
    ] {
        let out = env.run(&args);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(why), "{args:?}: {err}");
    }
    let listed = env.json(&["writekey", "list"]).to_string();
    assert!(
        listed.contains("segment-prod") && !listed.contains(WRITE_KEY),
        "{listed}"
    );
    // u1 exists already (imported); the others are created by their events.
    let f = env.file(
        "users.csv",
        b"distinct_id,uid,plan\nz9,z9,free\nu1,U-ONE,free\n",
    );
    env.ok(&["users", "import", common::path_str(&f)]);
    let srv = Server::start(&env).await;

    // Authentication.
    let event = json!({"userId": "u1", "traits": {"high_value": true}});
    assert_eq!(srv.call("/v1/identify", None, &event).await.0, 401);
    assert_eq!(
        srv.call("/v1/identify", Some("not-the-key"), &event)
            .await
            .0,
        401
    );

    // identify: traits become attributes; a boolean trait is audience membership.
    let v = srv
        .ok("/v1/identify", json!({"type": "identify", "userId": "u1", "traits": {"high_value": true, "plan": "pro"}}))
        .await;
    // The whole answer: what the call applied, and nothing else.
    assert_eq!(
        v,
        json!({
            "success": true,
            "events": 1,
            "users_created": 0,
            "attributes_written": 2,
            "segments_changed": ["high_value"],
            "events_ignored": 0,
        }),
        "u1 was imported before, with its uid"
    );
    srv.ok(
        "/v1/identify",
        json!({"anonymousId": "anon-2", "traits": {"high_value": true}}),
    )
    .await;
    srv.ok(
        "/v1/identify",
        json!({"userId": "u3", "traits": {"high_value": true}}),
    )
    .await;
    srv.ok(
        "/v1/identify",
        json!({"userId": "u3", "traits": {"high_value": false}}),
    )
    .await;
    // track: Audience Entered / Exited with audience_key; other events are counted.
    srv.ok(
        "/v1/track",
        json!({"userId": "u4", "event": "Audience Entered", "properties": {"audience_key": "high_value"}}),
    )
    .await;
    let v = srv
        .ok(
            "/v1/track",
            json!({"userId": "u1", "event": "Order Completed", "properties": {"total": 3}}),
        )
        .await;
    assert_eq!(
        (v["events_ignored"].clone(), v["users_created"].clone()),
        (json!(1), json!(0))
    );
    // batch: applied in order, in one transaction.
    let v = srv
        .ok(
            "/v1/batch",
            json!({"batch": [
                {"type": "identify", "userId": "u5", "traits": {"high_value": true}},
                {"type": "track", "userId": "u4", "event": "Audience Exited", "properties": {"audience_key": "high_value"}},
                {"type": "identify", "userId": "u6", "anonymousId": "anon-6", "traits": {"vip": true}}
            ]}),
        )
        .await;
    assert_eq!(v["events"], 3);

    // Malformed: 400 naming the field, and nothing of the request applied.
    let bad = [
        (
            "/v1/identify",
            json!({"traits": {"high_value": true}}),
            "userId:",
        ),
        (
            "/v1/identify",
            json!({"userId": "u7", "traits": "high_value"}),
            "traits:",
        ),
        ("/v1/track", json!({"userId": "u7"}), "event:"),
        (
            "/v1/track",
            json!({"userId": "u7", "event": "Audience Entered"}),
            "properties.audience_key:",
        ),
        (
            "/v1/batch",
            json!({"batch": [
                {"type": "identify", "userId": "u7", "traits": {"high_value": true}},
                {"type": "track", "userId": "u8", "event": ""}
            ]}),
            "batch[1].event:",
        ),
        (
            "/v1/batch",
            json!({"batch": [{"type": "screen", "userId": "u7"}]}),
            "batch[0].type:",
        ),
    ];
    for (path, body, field) in bad {
        let (s, v) = srv.call(path, Some(WRITE_KEY), &body).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert!(
            v["error"].as_str().unwrap().starts_with(field),
            "{field}: {v}"
        );
    }
    let huge = json!({"userId": "u7", "traits": {"bio": "x".repeat(40_000)}});
    assert_eq!(
        srv.call("/v1/identify", Some(WRITE_KEY), &huge).await.0,
        413
    );

    // A sync of the audience delivers what the events built.
    let rx = Scripted::start(|_, _| ok_json());
    let (s, v) = srv
        .admin(
            "POST",
            "/api/v1/destinations",
            Some(json!({"name": "crm", "url": rx.url("/hook")})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = srv
        .admin(
            "POST",
            "/api/v1/syncs",
            Some(json!({"segment": "high_value", "destination": "crm", "attribute": "uid", "schedule": {"every": "daily"}})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].clone();
    let e = srv.run_sync(&id, 0).await;
    assert_eq!(e["status"], "complete", "{e}");
    // anon-2 is a member but has no uid: skipped and counted.
    assert_eq!(e["skipped"], 1, "{e}");
    let (adds, removes) = delivered(&rx.seen());
    // u1's imported uid is kept: identify fills identifiers in, never overwrites.
    assert_eq!(
        adds,
        ["U-ONE", "u5"].iter().map(|s| s.to_string()).collect()
    );
    assert!(removes.is_empty());

    // Real time: u5 leaves, u6 enters; the next run sends exactly that.
    srv.ok(
        "/v1/identify",
        json!({"userId": "u5", "traits": {"high_value": false}}),
    )
    .await;
    srv.ok(
        "/v1/track",
        json!({"userId": "u6", "event": "Audience Entered", "properties": {"audience_key": "high_value"}}),
    )
    .await;
    let before = rx.seen().len();
    let e = srv.run_sync(&id, 1).await;
    assert_eq!(
        (e["status"].clone(), e["kind"].clone()),
        (json!("complete"), json!("diff")),
        "{e}"
    );
    let (adds, removes) = delivered(&rx.seen()[before..]);
    assert_eq!(adds, ["u6"].iter().map(|s| s.to_string()).collect());
    assert_eq!(removes, ["u5"].iter().map(|s| s.to_string()).collect());
    srv.stop().await;

    let store = Store::open(env.data()).unwrap();
    assert!(
        store.user_index("u7").unwrap().is_none(),
        "refused requests applied nothing"
    );
    let u1 = store.user_index("u1").unwrap().unwrap();
    let plan = store.attr_id("plan").unwrap();
    assert_eq!(
        store.attr_value(plan, u1).unwrap(),
        Some(AttrValue::Str("pro".into()))
    );
    let anon = store.attr_id("anonymous_id").unwrap();
    let u6 = store.user_index("u6").unwrap().unwrap();
    assert_eq!(
        store.attr_value(anon, u6).unwrap(),
        Some(AttrValue::Str("anon-6".into()))
    );
    assert_eq!(
        store.counters().user_count,
        7,
        "z9, u1 imported; anon-2 (as its own user), u3..u6 created"
    );
    let vip = store
        .segment("vip")
        .unwrap()
        .expect("boolean trait vip is a segment too");
    assert_eq!(vip.latest().unwrap().members, 1);
    // One live snapshot per delivered state: the first run sealed the first.
    let seg = store.segment("high_value").unwrap().unwrap();
    assert_eq!(seg.snapshots.len(), 2, "{:?}", seg.snapshots);
}

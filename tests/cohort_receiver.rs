//! The Cohort Sync receiver of `segsync serve` over real HTTP: every
//! rejection with its status and reason, resolution by uid then anonymous
//! id without creating users, timestamp ordering per cohort, and repeated
//! idempotency keys acknowledged without being applied twice.

mod common;

use std::collections::BTreeSet;

use common::{path_str, Env, Served};
use segsync::config::ReceiverLimits as Limits;
use segsync::inbound::cohort::prune_idempotency;
use segsync::server::ServeOptions;
use segsync::store::Store;
use serde_json::{json, Value};

const WS: &str = "ws-dest";
const KEY: &str = "data-api-key-1";

/// A destination data dir: d1..d4 with uid / anonymous_id, a workspace.
fn destination() -> Env {
    let env = Env::new();
    let users = env.file(
        "users.csv",
        b"distinct_id,uid,anonymous_id\nd1,u-1,an-1\nd2,u-2,an-2\nd3,,an-3\nd4,u-4,\n",
    );
    env.ok(&["users", "import", path_str(&users)]);
    env.ok(&["workspace", "add", WS, "--data-api-key", KEY]);
    env
}

struct Server {
    base: String,
    served: Served,
    client: reqwest::Client,
}

impl Server {
    async fn start(env: &Env, cohort: Limits) -> Server {
        let opts = ServeOptions {
            cohort,
            ..Default::default()
        };
        let served = Served::start(env, opts).await;
        Server {
            base: served.base.clone(),
            served,
            client: reqwest::Client::new(),
        }
    }

    /// Posts `body` with the given credentials and headers.
    async fn post(
        &self,
        auth: Option<(&str, &str)>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, Option<String>, Value) {
        let mut r = self
            .client
            .post(format!("{}/v1/integrations/cohortsync", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some((u, p)) = auth {
            r = r.basic_auth(u, Some(p));
        }
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let retry = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let v = serde_json::from_str(&resp.text().await.unwrap()).unwrap_or(Value::Null);
        (status, retry, v)
    }

    /// A well-formed, authenticated request.
    async fn send(&self, body: &Value, key: Option<&str>) -> (u16, Value) {
        let mut h = vec![("MOE-APPKEY", WS), ("MOE-DESTINATION-PARTNER", "moengage")];
        if let Some(k) = key {
            h.push(("Idempotency-Key", k));
        }
        let (s, _, v) = self
            .post(Some((WS, KEY)), &h, serde_json::to_vec(body).unwrap())
            .await;
        (s, v)
    }

    async fn stop(self) {
        self.served.stop().await;
    }
}

fn request(action: &str, ts: &str, name: &str, members: Value) -> Value {
    json!({
        "action": action,
        "timestamp": ts,
        "partner": "moengage",
        "parameters": {
            "cohort_name": name,
            "cohort_id": "c-1",
            "cohort_description": "test cohort",
            "members": members
        }
    })
}

/// Distinct ids of the latest snapshot of `segment`.
fn members(env: &Env, segment: &str) -> BTreeSet<String> {
    let store = Store::open(env.data()).unwrap();
    let seg = store.segment(segment).unwrap().expect("segment exists");
    let bm = store
        .snapshot_members(seg.id, seg.latest().unwrap().seq)
        .unwrap();
    bm.iter()
        .map(|u| store.distinct_id(u).unwrap().unwrap())
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejection_has_its_status_and_reason() {
    let env = destination();
    let srv = Server::start(&env, Limits::default()).await;
    let good = request(
        "add_members",
        "2026-01-01T00:00:00Z",
        ".vip",
        json!([{"uid": "u-1"}]),
    );
    let body = serde_json::to_vec(&good).unwrap();
    let hdrs = [("MOE-APPKEY", WS), ("MOE-DESTINATION-PARTNER", "moengage")];

    for auth in [None, Some((WS, "wrong-key")), Some(("other-ws", KEY))] {
        let (s, _, v) = srv.post(auth, &hdrs, body.clone()).await;
        assert_eq!(s, 401, "{auth:?}: {v}");
        assert!(v["error"].as_str().unwrap().contains("Basic auth"), "{v}");
    }
    let cases: Vec<(&[(&str, &str)], &str)> = vec![
        (
            &[("MOE-DESTINATION-PARTNER", "moengage")],
            "MOE-APPKEY: missing",
        ),
        (
            &[
                ("MOE-APPKEY", "someone-else"),
                ("MOE-DESTINATION-PARTNER", "moengage"),
            ],
            "is not the authenticated workspace",
        ),
        (&[("MOE-APPKEY", WS)], "MOE-DESTINATION-PARTNER: missing"),
    ];
    for (h, reason) in cases {
        let (s, _, v) = srv.post(Some((WS, KEY)), h, body.clone()).await;
        assert_eq!(s, 400, "{h:?}: {v}");
        assert!(v["error"].as_str().unwrap().contains(reason), "{v}");
    }

    let many: Vec<Value> = (0..8000)
        .map(|i| json!({"uid": format!("user-{i:08}")}))
        .collect();
    let big = serde_json::to_vec(&request(
        "add_members",
        "2026-01-01T00:00:00Z",
        ".vip",
        json!(many),
    ))
    .unwrap();
    assert!(big.len() > 128 * 1024);
    let (s, _, v) = srv.post(Some((WS, KEY)), &hdrs, big).await;
    assert_eq!(s, 413, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("at most 131072"),
        "{v}"
    );

    let bad_bodies = [
        (
            request(
                "delete_all",
                "2026-01-01T00:00:00Z",
                ".vip",
                json!([{"uid": "u-1"}]),
            ),
            "action:",
        ),
        (
            request("add_members", "yesterday", ".vip", json!([{"uid": "u-1"}])),
            "timestamp:",
        ),
        (
            request(
                "add_members",
                "2026-01-01T00:00:00Z",
                "vip",
                json!([{"uid": "u-1"}]),
            ),
            "must start with '.'",
        ),
        (
            request(
                "add_members",
                "2026-01-01T00:00:00Z",
                ".a|b",
                json!([{"uid": "u-1"}]),
            ),
            "contains '|'",
        ),
        (
            request("add_members", "2026-01-01T00:00:00Z", ".vip", json!([])),
            "parameters.members: empty",
        ),
        (
            request(
                "add_members",
                "2026-01-01T00:00:00Z",
                ".vip",
                json!([{"uid": "u-1"}, {"email": "x@y"}]),
            ),
            "parameters.members[1]: needs a non-empty uid or anonymous_id",
        ),
        (json!({"action": "add_members"}), "timestamp: missing"),
        (json!([1, 2]), "not a Cohort Sync request"),
    ];
    for (b, reason) in bad_bodies {
        let (s, v) = srv.send(&b, None).await;
        assert_eq!(s, 400, "{b}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains(reason),
            "{reason}: {v}"
        );
    }
    srv.stop().await;
    // Nothing above was applied.
    let store = Store::open(env.data()).unwrap();
    assert!(store.segment(".vip").unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_rate_per_workspace_is_capped_with_retry_after() {
    let env = destination();
    let limits = Limits {
        rpm: 3,
        ..Limits::default()
    };
    let srv = Server::start(&env, limits).await;
    for i in 0..3 {
        let ts = format!("2026-01-01T00:00:0{i}Z");
        let (s, v) = srv
            .send(
                &request("add_members", &ts, ".vip", json!([{"uid": "u-1"}])),
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
    let body = serde_json::to_vec(&request(
        "add_members",
        "2026-01-01T00:00:09Z",
        ".vip",
        json!([{"uid": "u-2"}]),
    ))
    .unwrap();
    let (s, retry, v) = srv
        .post(
            Some((WS, KEY)),
            &[("MOE-APPKEY", WS), ("MOE-DESTINATION-PARTNER", "moengage")],
            body,
        )
        .await;
    assert_eq!(s, 429, "{v}");
    let secs: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&secs), "{secs}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("3 requests per minute"),
        "{v}"
    );
    srv.stop().await;
    assert_eq!(
        members(&env, ".vip"),
        set(&["d1"]),
        "the throttled request was not applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_resolve_by_uid_then_anonymous_id_and_no_user_is_created() {
    let env = destination();
    let srv = Server::start(&env, Limits::default()).await;
    let (s, v) = srv
        .send(
            &request(
                "add_members",
                "2026-03-01T10:00:00.000Z",
                ".vip",
                json!([
                    {"uid": "u-1"},
                    {"uid": "nobody", "anonymous_id": "an-2"},
                    {"anonymous_id": "an-3"},
                    {"uid": "ghost"},
                    {"uid": "u-4", "anonymous_id": "an-1"}
                ]),
            ),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["resolved_by_uid"], 2);
    assert_eq!(v["resolved_by_anonymous_id"], 2);
    assert_eq!(v["unresolved"], 1);
    assert_eq!(v["unresolved_examples"][0]["uid"], "ghost");
    let (s, v) = srv
        .send(
            &request(
                "remove_members",
                "2026-03-01T11:00:00Z",
                ".vip",
                json!([{"uid": "u-1"}, {"uid": "ghost"}]),
            ),
            None,
        )
        .await;
    assert_eq!((s, v["unresolved"].clone()), (200, json!(1)), "{v}");
    srv.stop().await;

    // uid wins over anonymous id: u-4 is d4 (not d1, whose anonymous id was given).
    assert_eq!(members(&env, ".vip"), set(&["d2", "d3", "d4"]));
    let store = Store::open(env.data()).unwrap();
    assert_eq!(
        store.counters().user_count,
        4,
        "unknown users are never created"
    );
    assert!(store.user_index("ghost").unwrap().is_none());
    // The received cohort is a segment like any other: one live snapshot.
    let seg = store.segment(".vip").unwrap().unwrap();
    assert_eq!(seg.snapshots.len(), 1);
    assert!(seg.snapshots[0].live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_apply_in_timestamp_order_and_repeated_keys_apply_once() {
    let env = destination();
    // A segment imported from a file is not taken over by a cohort.
    let s = env.file("s.txt", b"d1\n");
    env.ok(&["segment", "import", ".imported", path_str(&s)]);
    let srv = Server::start(&env, Limits::default()).await;
    let add_u1 = request(
        "add_members",
        "2026-05-01T00:00:00Z",
        ".vip",
        json!([{"uid": "u-1"}, {"uid": "u-2"}]),
    );
    let (s, v) = srv.send(&add_u1, Some("key-1")).await;
    assert_eq!((s, v["duplicate"].clone()), (200, json!(false)), "{v}");
    let remove_u1 = request(
        "remove_members",
        "2026-05-01T00:00:05Z",
        ".vip",
        json!([{"uid": "u-1"}]),
    );
    assert_eq!(srv.send(&remove_u1, Some("key-2")).await.0, 200);

    // The same key again: acknowledged with the first answer, not re-applied
    // (re-applying would bring u-1 back).
    let (s, v) = srv.send(&add_u1, Some("key-1")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["duplicate"], true);
    assert_eq!(v["resolved"], 2);

    // Older than the last applied: refused, with the rule in the message.
    let old = request(
        "add_members",
        "2026-04-30T23:59:59Z",
        ".vip",
        json!([{"uid": "u-4"}]),
    );
    let (s, v) = srv.send(&old, Some("key-3")).await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("older than the last applied"),
        "{v}"
    );
    // The same timestamp as the last applied (another page of that run) is fine.
    let same = request(
        "add_members",
        "2026-05-01T00:00:05Z",
        ".vip",
        json!([{"uid": "u-4"}]),
    );
    assert_eq!(srv.send(&same, Some("key-4")).await.0, 200);
    // A 409 is not remembered as an answer: the key can be used once fixed.
    let fixed = request(
        "add_members",
        "2026-05-01T00:01:00Z",
        ".vip",
        json!([{"anonymous_id": "an-3"}]),
    );
    assert_eq!(srv.send(&fixed, Some("key-3")).await.0, 200);

    let taken = request(
        "add_members",
        "2026-05-01T00:00:00Z",
        ".imported",
        json!([{"uid": "u-2"}]),
    );
    let (s, v) = srv.send(&taken, None).await;
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("not created by Cohort Sync"),
        "{v}"
    );
    srv.stop().await;

    assert_eq!(members(&env, ".vip"), set(&["d2", "d3", "d4"]));
    assert_eq!(members(&env, ".imported"), set(&["d1"]));
    let cohorts = env.json(&["workspace", "cohorts"]);
    assert_eq!(cohorts[0]["name"], ".vip");
    assert_eq!(cohorts[0]["requests"], 4);
    assert_eq!(cohorts[0]["last_timestamp"], "2026-05-01T00:01:00.000Z");

    // Answered keys are kept for the retention, then forgotten.
    let store = Store::open(env.data()).unwrap();
    let hour_ago = chrono::Utc::now().timestamp_millis() - 3_600_000;
    assert_eq!(prune_idempotency(&store, hour_ago).unwrap(), 0);
    let later = chrono::Utc::now().timestamp_millis() + 1000;
    assert_eq!(prune_idempotency(&store, later).unwrap(), 4, "key-1..key-4");
    assert_eq!(prune_idempotency(&store, later).unwrap(), 0);
}

#[test]
fn the_identity_index_follows_changed_values_and_rolled_back_imports() {
    let env = destination();
    let lookup = |texts: &[&str]| -> Vec<(u32, String)> {
        let store = Store::open(env.data()).unwrap();
        let attr = store.ensure_index("uid").unwrap().expect("uid exists");
        let bytes: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
        store
            .users_with_values(attr, &bytes)
            .unwrap()
            .into_iter()
            .map(|(i, u)| (i, store.distinct_id(u).unwrap().unwrap()))
            .collect()
    };
    assert_eq!(
        lookup(&["u-1", "u-2", "nope"]),
        vec![(0, "d1".to_string()), (1, "d2".to_string())]
    );
    // d1 changes uid and a new user takes the old one: imports keep the index.
    let f = env.file("change.csv", b"distinct_id,uid\nd1,u-100\nd5,u-1\n");
    env.ok(&["users", "import", path_str(&f)]);
    // A failed import leaves index entries behind (its first 32768-row batch
    // was written before the bad line); lookups ignore them.
    let mut bad = String::from("distinct_id,uid\nd2,u-200\n");
    for i in 0..40_000 {
        bad.push_str(&format!("x{i},u-x{i}\n"));
    }
    bad.push_str("d6,u-6,extra\n");
    let f = env.file("bad.csv", bad.as_bytes());
    assert_eq!(
        env.run(&["users", "import", path_str(&f)]).status.code(),
        Some(2)
    );
    assert_eq!(
        lookup(&["u-1", "u-100", "u-2", "u-200", "u-6", "u-x7"]),
        vec![
            (0, "d5".to_string()),
            (1, "d1".to_string()),
            (2, "d2".to_string())
        ]
    );
}

#[test]
fn workspaces_keep_their_key_hashed_and_refuse_duplicates() {
    let env = destination();
    let out = env.run(&["workspace", "add", WS, "--data-api-key", "another-key-1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let out = env.run(&["workspace", "add", "ws-2", "--data-api-key", "short"]);
    assert_eq!(out.status.code(), Some(2));
    let listed = env.json(&["workspace", "list"]);
    assert_eq!(listed[0]["id"], WS);
    assert!(!listed.to_string().contains(KEY));
    let raw = std::fs::read_dir(env.data().join("db"))
        .unwrap()
        .filter_map(|e| std::fs::read(e.unwrap().path()).ok())
        .any(|bytes| bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes()));
    assert!(!raw, "the data API key is stored in clear");
    env.ok(&["workspace", "remove", WS]);
    assert_eq!(env.json(&["workspace", "list"]), json!([]));
}

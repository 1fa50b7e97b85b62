//! The Cohort Sync destination format against a real local receiver: bodies
//! under 128 KB with many long uids, one action per request, the mandatory
//! headers and Basic auth, cohort-name rules, the 300-a-minute default rate,
//! skipped anonymous users, and the pipeline's guarantees (Retry-After,
//! idempotency keys, resume of an interrupted execution).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use common::{ok_json, path_str, setup_sync, Env, Scripted, Seen};
use segsync::lifecycle::actions::run as run_sync;
use segsync::lifecycle::{ExecStatus, Trigger};
use segsync::pipeline::RunOptions;
use segsync::store::Store;

const WS: &str = "ws-dest";
const KEY: &str = "data-api-key-1";

fn cohort_args() -> Vec<&'static str> {
    vec![
        "--format",
        "cohortsync",
        "--workspace-id",
        WS,
        "--data-api-key",
        KEY,
        "--rpm",
        "25000",
    ]
}

/// A long uid with characters JSON must escape, so sizes are not just lengths.
fn long_uid(i: usize) -> String {
    format!("uid-{i:06}-{}\\\"q", "x".repeat(150 + i % 40))
}

/// `n` distinct ids `p0000…` and their uids `u0000…`.
fn numbered(n: usize) -> (Vec<String>, Vec<String>) {
    (
        (0..n).map(|i| format!("p{i:04}")).collect(),
        (0..n).map(|i| format!("u{i:04}")).collect(),
    )
}

fn with_uids<'a>(ids: &'a [String], uids: &'a [String]) -> Vec<(&'a str, Option<&'a str>)> {
    ids.iter()
        .zip(uids)
        .map(|(a, b)| (a.as_str(), Some(b.as_str())))
        .collect()
}

/// (action, uids) of every request, in arrival order.
fn actions(seen: &[Seen]) -> Vec<(String, Vec<String>)> {
    seen.iter()
        .map(|r| {
            let members = r.body["parameters"]["members"]
                .as_array()
                .expect("members")
                .iter()
                .map(|m| m["uid"].as_str().expect("uid").to_string())
                .collect();
            (r.body["action"].as_str().unwrap_or("").to_string(), members)
        })
        .collect()
}

#[test]
fn bodies_stay_under_128kb_with_one_action_each_and_the_api_headers() {
    let env = Env::new();
    let rx = Scripted::start(|_, _| ok_json());
    let n = 3000;
    let uids: Vec<String> = (0..n).map(long_uid).collect();
    let ids: Vec<String> = (0..n).map(|i| format!("user-{i}")).collect();
    // Every 7th user has no uid (anonymous): skipped and counted.
    let users: Vec<(&str, Option<&str>)> = (0..n)
        .map(|i| (ids[i].as_str(), (i % 7 != 0).then(|| uids[i].as_str())))
        .collect();
    let first: Vec<&str> = ids[..2000].iter().map(String::as_str).collect();
    let sync = setup_sync(
        &env,
        &users,
        &first,
        &rx.url("/v1/integrations/cohortsync"),
        &cohort_args(),
    );
    env.ok(&["sync", "run", &sync]);

    let seen = rx.seen();
    let expected_auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{WS}:{KEY}"))
    );
    let mut keys = BTreeSet::new();
    for r in &seen {
        assert!(r.bytes <= 128 * 1024, "body of {} bytes", r.bytes);
        assert_eq!(r.header("moe-appkey"), Some(WS));
        assert_eq!(r.header("moe-destination-partner"), Some("moengage"));
        assert_eq!(r.header("authorization"), Some(expected_auth.as_str()));
        assert_eq!(r.body["parameters"]["cohort_name"], ".seg");
        assert_eq!(r.body["partner"], "moengage");
        assert!(r.body["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() == 24));
        assert!(keys.insert(r.header("idempotency-key").expect("key").to_string()));
    }
    // ~170-byte members: a page holds about 750, so 1715 adds need 3 pages,
    // and each but the last was filled close to the limit.
    assert!(seen.len() >= 3, "{} requests", seen.len());
    // Pages arrive in any order; all but the last page are nearly full.
    let mut sizes: Vec<usize> = seen.iter().map(|r| r.bytes).collect();
    sizes.sort_unstable();
    assert!(sizes[1..].iter().all(|&b| b > 120 * 1024), "{sizes:?}");
    let sent: BTreeSet<String> = actions(&seen)
        .into_iter()
        .inspect(|(a, _)| assert_eq!(a, "add_members"))
        .flat_map(|(_, m)| m)
        .collect();
    let expected: BTreeSet<String> = (0..2000)
        .filter(|i| i % 7 != 0)
        .map(|i| uids[i].clone())
        .collect();
    assert_eq!(sent, expected);
    let h = env.json(&["sync", "history", &sync]);
    assert_eq!(h[0]["skipped"], (0..2000).filter(|i| i % 7 == 0).count());

    // Second run: 1000 leave, 1000 join. No request mixes the two actions.
    let second: Vec<&str> = ids[1000..].iter().map(String::as_str).collect();
    let s = env.file("second.txt", second.join("\n").as_bytes());
    env.ok(&["segment", "import", "seg", path_str(&s)]);
    env.ok(&["sync", "run", &sync]);
    let later = &rx.seen()[seen.len()..];
    let mut added = BTreeSet::new();
    let mut removed = BTreeSet::new();
    for (action, members) in actions(later) {
        match action.as_str() {
            "add_members" => added.extend(members),
            "remove_members" => removed.extend(members),
            other => panic!("action {other}"),
        }
    }
    assert!(later.iter().all(|r| r.bytes <= 128 * 1024));
    let uid_set = |r: std::ops::Range<usize>| -> BTreeSet<String> {
        r.filter(|i| i % 7 != 0).map(|i| uids[i].clone()).collect()
    };
    assert_eq!(added, uid_set(2000..3000));
    assert_eq!(removed, uid_set(0..1000));
}

#[test]
fn cohort_configuration_is_refused_without_what_the_api_needs() {
    let env = Env::new();
    let url = "http://127.0.0.1:9/v1/integrations/cohortsync";
    let refused = |args: &[&str], needle: &str| {
        let mut a = vec!["destination", "add", "d", "--format", "cohortsync"];
        a.extend_from_slice(args);
        let out = env.run(&a);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    };
    refused(&["--url", url], "Basic auth");
    refused(&["--url", url, "--basic", "ws:key12345"], "MOE-APPKEY");
    refused(
        &[
            "--url",
            url,
            "--basic",
            "ws:key12345",
            "--header",
            "MOE-APPKEY=ws",
        ],
        "MOE-DESTINATION-PARTNER",
    );
    refused(
        &[
            "--url",
            url,
            "--basic",
            "ws:key12345",
            "--header",
            "MOE-APPKEY=other",
            "--header",
            "MOE-DESTINATION-PARTNER=moengage",
        ],
        "must equal the Basic auth user",
    );
    let ws = ["--workspace-id", "ws", "--data-api-key", "key12345"];
    for (name, why) in [
        ("vip", "must start with '.'"),
        (".", "needs a name after"),
        (".a|b", "contains '|'"),
        (".a=b", "contains '='"),
        (".a$", "contains '$'"),
        (".a\"b", "contains '\"'"),
    ] {
        let mut a = vec!["--url", url, "--cohort-name", name];
        a.extend_from_slice(&ws);
        refused(&a, why);
    }
    let mut a = vec!["--url", url, "--identifier-key", "x"];
    a.extend_from_slice(&ws);
    refused(&a, "does not apply to --format cohortsync");
    let mut a = vec!["--data-center", "04"];
    a.extend_from_slice(&ws);
    refused(&a, "01, 02 or 03");
    // MoEngage's own API is held to its limits; a custom URL (another
    // segsync) may take more.
    let mut a = vec!["--data-center", "01", "--max-body-bytes", "200000"];
    a.extend_from_slice(&ws);
    refused(&a, "only a custom --url may take more");
    let mut a = vec!["--data-center", "01", "--rpm", "301"];
    a.extend_from_slice(&ws);
    refused(&a, "at most 300 requests a minute");
    let mut a = vec!["--url", url, "--max-body-bytes", "5000000"];
    a.extend_from_slice(&ws);
    refused(&a, "max_body_bytes");
    let mut a = vec![
        "destination",
        "add",
        "fast",
        "--format",
        "cohortsync",
        "--url",
        url,
        "--rpm",
        "25000",
        "--max-body-bytes",
        "1048576",
    ];
    a.extend_from_slice(&ws);
    env.ok(&a);
    let shown = env.ok(&["destination", "show", "fast"]);
    assert!(shown.contains("custom endpoint"), "{shown}");
    // The custom format refuses cohort settings.
    let out = env.run(&[
        "destination",
        "add",
        "c",
        "--url",
        url,
        "--cohort-name",
        ".x",
    ]);
    assert_eq!(out.status.code(), Some(2));

    // The data center picks the URL; the headers come from the workspace id;
    // the rate defaults to 300 a minute; the key is never shown.
    let mut a = vec![
        "destination",
        "add",
        "d",
        "--format",
        "cohortsync",
        "--data-center",
        "02",
        "--cohort-name",
        ".VIP users",
    ];
    a.extend_from_slice(&ws);
    env.ok(&a);
    let shown = env.ok(&["destination", "show", "d"]);
    assert!(
        shown.contains("https://api-02.moengage.com/v1/integrations/cohortsync"),
        "{shown}"
    );
    assert!(shown.contains("MOE-APPKEY: ws"), "{shown}");
    assert!(
        shown.contains("MOE-DESTINATION-PARTNER: moengage"),
        "{shown}"
    );
    assert!(shown.contains("300 requests/minute"), "{shown}");
    assert!(
        shown.contains("MoEngage's Cohort Sync API: at most 300"),
        "{shown}"
    );
    assert!(!shown.contains("key12345"), "{shown}");
    let json = env.json(&["destination", "show", "d"]);
    assert_eq!(json["format"], "cohortsync");
    assert_eq!(json["cohort_name"], ".VIP users");

    // Switching formats drops the other format's settings.
    env.ok(&[
        "destination",
        "add",
        "c2",
        "--url",
        url,
        "--identifier-key",
        "pid",
        "--static",
        "a=b",
    ]);
    let mut a = vec!["destination", "edit", "c2", "--format", "cohortsync"];
    a.extend_from_slice(&ws);
    let json = env.json(&a);
    assert_eq!(json["format"], "cohortsync");
    assert!(json["identifier_key"].is_null() && json["static_kv"] == serde_json::json!([]));
    // `custom`, the format's old name, is still accepted.
    let json = env.json(&["destination", "edit", "d", "--format", "custom"]);
    assert_eq!(json["format"], "segment_sync");
    assert!(json["cohort_name"].is_null());
}

#[test]
fn the_default_rate_spaces_requests_300_a_minute() {
    let env = Env::new();
    let rx = Scripted::start(|_, _| ok_json());
    let (ids, uids) = numbered(400);
    let users = with_uids(&ids, &uids);
    let members: Vec<&str> = ids.iter().map(String::as_str).collect();
    // No --rpm: the format's default of 300 a minute, one request per 200 ms.
    let sync = setup_sync(
        &env,
        &users,
        &members,
        &rx.url("/v1/integrations/cohortsync"),
        &[
            "--format",
            "cohortsync",
            "--workspace-id",
            WS,
            "--data-api-key",
            KEY,
            "--page-size",
            "100",
        ],
    );
    env.ok(&["sync", "run", &sync]);
    let seen = rx.seen();
    assert_eq!(seen.len(), 4);
    let span = seen[3].at.duration_since(seen[0].at);
    // Three gaps of 200 ms at send time; arrival jitter is far below 60 ms.
    assert!(
        span >= Duration::from_millis(540),
        "4 requests within {span:?}"
    );
}

#[test]
fn retry_after_and_resume_keep_pages_and_keys() {
    let env = Env::new();
    let cancel = Arc::new(AtomicBool::new(false));
    let stop = cancel.clone();
    let rx = Scripted::start(move |req, attempt| {
        let key = req.header("idempotency-key").unwrap_or("");
        // Page 3 is throttled once, with Retry-After.
        if key.ends_with("-3") && attempt == 1 {
            return (
                429,
                vec![("retry-after", "1".into())],
                "{}".into(),
                Duration::ZERO,
            );
        }
        // The first request interrupts the run (as a shutdown would).
        stop.store(true, Ordering::SeqCst);
        ok_json()
    });
    let (ids, uids) = numbered(1000);
    let users = with_uids(&ids, &uids);
    let members: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut args = cohort_args();
    args.extend([
        "--page-size",
        "200",
        "--in-flight",
        "1",
        "--retry-delay-ms",
        "10",
    ]);
    let sync = setup_sync(
        &env,
        &users,
        &members,
        &rx.url("/v1/integrations/cohortsync"),
        &args,
    );
    let sync: u32 = sync.parse().unwrap();

    let store = Store::open(env.data()).unwrap();
    let opts = RunOptions {
        cancel: vec![cancel.clone()],
        ..Default::default()
    };
    let e = run_sync(&store, sync, Trigger::AdHoc, &opts, "test").unwrap();
    assert_eq!(
        e.status,
        ExecStatus::Processing,
        "interrupted, to be resumed"
    );
    assert!(
        e.pages_done >= 1 && e.pages_done < 5,
        "{} pages done",
        e.pages_done
    );
    let before = rx.seen().len();

    cancel.store(false, Ordering::SeqCst);
    let e2 = run_sync(&store, sync, Trigger::AdHoc, &RunOptions::default(), "test").unwrap();
    assert_eq!((e2.seq, e2.status), (e.seq, ExecStatus::Complete));
    assert_eq!(e2.total_pages, 5);
    // The 429 is throttling, not a retry.
    assert_eq!((e2.retries, e2.throttled), (0, 1));

    let seen = rx.seen();
    // Pages delivered before the interruption are not sent again.
    let mut by_key: HashMap<String, Vec<&Seen>> = HashMap::new();
    for r in &seen {
        by_key
            .entry(r.header("idempotency-key").unwrap().to_string())
            .or_default()
            .push(r);
    }
    assert_eq!(by_key.len(), 5);
    for (key, reqs) in &by_key {
        assert!(key.starts_with(&format!("{sync}-{}-", e.seq)), "{key}");
        // A retried page is byte-for-byte the same request.
        assert!(reqs.iter().all(|r| r.body == reqs[0].body), "{key}");
        let throttled = key.ends_with("-3");
        assert_eq!(reqs.len(), if throttled { 2 } else { 1 }, "{key}");
    }
    let gap = by_key
        .values()
        .find(|r| r.len() == 2)
        .map(|r| r[1].at.duration_since(r[0].at))
        .unwrap();
    assert!(
        gap >= Duration::from_millis(900),
        "Retry-After honoured: {gap:?}"
    );
    assert!(seen.len() > before);
    let sent: BTreeSet<String> = actions(&seen).into_iter().flat_map(|(_, m)| m).collect();
    assert_eq!(sent, uids.iter().cloned().collect());
}

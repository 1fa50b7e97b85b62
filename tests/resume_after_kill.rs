//! Crash safety with the real binary: `kill -9` mid-run, run again. Every
//! page arrives at least once, re-sent pages carry the same Idempotency-Key
//! (the resumed run is the same execution), only pages that were in flight
//! are sent twice, and the final membership is exact.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ok_json, setup_sync, Env, Scripted};

#[test]
fn kill_9_mid_run_then_resume_loses_no_page() {
    let slow = Arc::new(AtomicBool::new(true));
    let s2 = slow.clone();
    let rx = Scripted::start(move |_, _| {
        let mut r = ok_json();
        if s2.load(Ordering::SeqCst) {
            r.3 = Duration::from_millis(80);
        }
        r
    });
    let env = Env::new();
    let users: Vec<(String, String)> = (0..5000)
        .map(|i| (format!("user-{i:05}"), format!("uid-{i}")))
        .collect();
    let u: Vec<(&str, Option<&str>)> = users
        .iter()
        .map(|(a, b)| (a.as_str(), Some(b.as_str())))
        .collect();
    let m: Vec<&str> = users.iter().map(|(a, _)| a.as_str()).collect();
    let in_flight = 2;
    let sync = setup_sync(
        &env,
        &u,
        &m,
        &rx.url("/"),
        &["--page-size", "100", "--in-flight", "2"],
    );

    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("segsync"))
        .arg("--data-dir")
        .arg(env.data())
        .args(["sync", "run", &sync, "--json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while rx.seen().len() < 12 {
        assert!(Instant::now() < deadline, "the run never got going");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before_restart = rx.seen().len();
    assert!(before_restart < 50, "killed mid-run, not after it finished");

    let hist = env.json(&["sync", "history", &sync]);
    assert_eq!(
        hist[0]["status"], "processing",
        "a killed run stays processing"
    );

    slow.store(false, Ordering::SeqCst);
    let run = env.json(&["sync", "run", &sync]);
    assert_eq!(run["status"], "complete");
    assert_eq!(run["seq"], 1, "the same execution was resumed");
    assert_eq!(run["pages_done"], 50);

    let seen = rx.seen();
    let mut per_page: HashMap<u64, Vec<String>> = HashMap::new();
    let mut members = HashSet::new();
    for r in &seen {
        per_page
            .entry(r.page())
            .or_default()
            .push(r.header("idempotency-key").unwrap().to_string());
        for u in r.body["data"]["add_users"].as_array().unwrap() {
            members.insert(u["moengage_distinct_id"].as_str().unwrap().to_string());
        }
    }
    for page in 1..=50u64 {
        let keys = per_page
            .get(&page)
            .unwrap_or_else(|| panic!("page {page} never arrived"));
        assert!(
            keys.iter().all(|k| *k == format!("{sync}-1-{page}")),
            "page {page}: {keys:?}"
        );
    }
    let resent = per_page.values().filter(|k| k.len() > 1).count();
    assert!(
        resent <= 2 * in_flight,
        "{resent} pages sent twice; only in-flight pages may be"
    );
    let expected: HashSet<String> = users.iter().map(|(a, _)| a.clone()).collect();
    assert_eq!(members, expected);
    // The second run sent only what the first had not recorded.
    assert!(seen.len() - before_restart <= 50 - 12 + 2 * in_flight);
}

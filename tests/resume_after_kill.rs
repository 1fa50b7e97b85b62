//! Crash safety with the real binary: `kill -9` mid-run, run again. Every
//! page arrives at least once, re-sent pages carry the same Idempotency-Key
//! and body (the resumed run is the same execution), only pages that were
//! in flight are sent twice, and the final membership is exact — for the
//! custom format and for Cohort Sync (whose size-capped pages are planned
//! and stored before the first request).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ok_json, setup_sync, Env, Scripted, Seen};

#[test]
fn kill_9_mid_run_then_resume_loses_no_page() {
    kill_and_resume(&["--page-size", "100", "--in-flight", "2"], |r| {
        r.body["data"]["add_users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["moengage_distinct_id"].as_str().unwrap().to_string())
            .collect()
    });
}

#[test]
fn kill_9_mid_cohort_sync_then_resume_loses_no_page() {
    kill_and_resume(
        &[
            "--format",
            "cohortsync",
            "--workspace-id",
            "ws",
            "--data-api-key",
            "data-api-key",
            "--rpm",
            "25000",
            "--page-size",
            "100",
            "--in-flight",
            "2",
        ],
        |r| {
            assert_eq!(r.body["action"], "add_members");
            r.body["parameters"]["members"]
                .as_array()
                .unwrap()
                .iter()
                // uid-N belongs to user-N.
                .map(|m| {
                    let n: u32 = m["uid"].as_str().unwrap()[4..].parse().unwrap();
                    format!("user-{n:05}")
                })
                .collect()
        },
    );
}

/// Starts a run of 50 pages, kills it after 12 requests, runs again, and
/// checks every page against `members_of` (the distinct ids a request adds).
fn kill_and_resume(dest_args: &[&str], members_of: fn(&Seen) -> Vec<String>) {
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
    let sync = setup_sync(&env, &u, &m, &rx.url("/"), dest_args);

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
    // Requests by page (the key's last part), each with its key and body.
    let mut per_page: HashMap<u64, Vec<(String, &serde_json::Value)>> = HashMap::new();
    let mut members = HashSet::new();
    for r in &seen {
        let key = r.header("idempotency-key").unwrap().to_string();
        let page: u64 = key.rsplit('-').next().unwrap().parse().unwrap();
        per_page.entry(page).or_default().push((key, &r.body));
        members.extend(members_of(r));
    }
    for page in 1..=50u64 {
        let sent = per_page
            .get(&page)
            .unwrap_or_else(|| panic!("page {page} never arrived"));
        assert!(
            sent.iter().all(|(k, _)| *k == format!("{sync}-1-{page}")),
            "page {page}: {sent:?}"
        );
        assert!(
            sent.iter().all(|(_, b)| *b == sent[0].1),
            "page {page} was sent with different bodies"
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

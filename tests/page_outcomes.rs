//! Per-page outcomes and replay. A page refused with a non-retryable 4xx no
//! longer stops the run: the other pages go out, the execution ends failed
//! saying how many pages were refused, each page's outcome is kept, and
//! `sync replay` sends exactly the refused page again — same body, same
//! `Idempotency-Key` — although the data has not changed.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{ok_json, Env, Scripted, Seed};

#[test]
fn a_refused_page_is_kept_aside_and_replayed_alone() {
    let refuse = Arc::new(AtomicBool::new(true));
    let r = refuse.clone();
    let rx = Scripted::start(move |seen, _| {
        if seen.page() == 3 && r.load(Ordering::SeqCst) {
            (
                400,
                vec![],
                "bad page: uid field rejected".into(),
                Duration::ZERO,
            )
        } else {
            ok_json()
        }
    });
    let env = Env::new();
    let sync = Seed::numbered(1000)
        .destination(&rx.url("/"), &["--page-size", "100", "--in-flight", "2"])
        .daily_sync(&env, &[]);
    let out = env.run(&["sync", "run", &sync, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["status"], "failed");
    assert_eq!(e["pages_done"], 9, "pages 1-2 and 4-10 delivered: {e}");
    assert!(
        e["error"].as_str().unwrap().contains("1 page refused"),
        "{e}"
    );
    let seen = rx.seen();
    let mut pages: Vec<u64> = seen.iter().map(|s| s.page()).collect();
    pages.sort();
    assert_eq!(
        pages,
        (1..=10).collect::<Vec<u64>>(),
        "every page tried once (no retry of a 4xx)"
    );
    let refused_key = seen
        .iter()
        .find(|s| s.page() == 3)
        .and_then(|s| s.header("idempotency-key").map(str::to_string))
        .unwrap();
    let refused_body = seen.iter().find(|s| s.page() == 3).unwrap().body.clone();

    // The outcomes say which page and why.
    let exec = format!("{sync}-1");
    let failed = env.json(&["sync", "execution", &exec, "--pages", "failed"]);
    assert_eq!(failed.as_array().map(Vec::len), Some(1), "{failed}");
    assert_eq!(
        (failed[0]["page"].as_u64(), failed[0]["status"].as_u64()),
        (Some(3), Some(400))
    );
    assert!(failed[0]["error"]
        .as_str()
        .unwrap()
        .contains("uid field rejected"));
    let all = env.json(&["sync", "execution", &exec, "--pages", "all"]);
    assert_eq!(all.as_array().map(Vec::len), Some(10));

    // Replay sends page 3 alone, as it was.
    refuse.store(false, Ordering::SeqCst);
    env.config("[limits]\ncool_off_minutes = 0\n");
    let e = env.json(&["sync", "replay", &exec]);
    assert_eq!(
        (e["status"].as_str(), e["pages_done"].as_u64()),
        (Some("complete"), Some(10)),
        "{e}"
    );
    let again: Vec<_> = rx.seen().into_iter().skip(seen.len()).collect();
    assert_eq!(again.len(), 1, "only the refused page");
    assert_eq!(
        again[0].header("idempotency-key"),
        Some(refused_key.as_str())
    );
    assert_eq!(again[0].body, refused_body);
    assert_eq!(
        env.json(&["sync", "execution", &exec])
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    assert_eq!(env.json(&["sync", "show", &sync])["status"], "active");
    // Only a failed, latest execution is replayed.
    let out = env.run(&["sync", "replay", &exec]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only a failed execution"));
}

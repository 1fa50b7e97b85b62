//! The status-code table: for each class of answer, whether the page is
//! retried and how many attempts are made (1, or 1 + 3 retries).

mod common;

use std::time::Duration;

use common::{setup_sync, Env, Scripted};

fn attempts_for(url: &str, extra: &[&str]) -> (serde_json::Value, i32) {
    let env = Env::new();
    let mut args = vec!["--page-size", "100", "--retry-delay-ms", "10"];
    args.extend_from_slice(extra);
    let sync = setup_sync(&env, &[("a", Some("1"))], &["a"], url, &args);
    let out = env.run(&["sync", "run", &sync, "--json"]);
    (
        serde_json::from_slice(&out.stdout).unwrap(),
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn status_code_table() {
    // (status, retried?)
    let table: [(u16, bool); 9] = [
        (200, false),
        (204, false),
        (400, false),
        (401, false),
        (404, false),
        (408, true),
        (429, true),
        (500, true),
        (503, true),
    ];
    for (status, retried) in table {
        let rx = Scripted::start(move |_, _| (status, vec![], "x".into(), Duration::ZERO));
        let (run, code) = attempts_for(&rx.url("/"), &[]);
        let ok = (200..300).contains(&status);
        // A 429 is flow control: it does not spend the 3 retries; the page
        // gives up after THROTTLE_PATIENCE rounds with nothing accepted.
        let expected_attempts = match (status, retried) {
            (429, _) => segsync::pipeline::send::THROTTLE_PATIENCE as usize,
            (_, true) => 4,
            _ => 1,
        };
        assert_eq!(rx.seen().len(), expected_attempts, "status {status}");
        assert_eq!(run["requests"], expected_attempts as u64, "status {status}");
        assert_eq!(
            run["status"],
            if ok { "complete" } else { "failed" },
            "status {status}"
        );
        assert_eq!(code, if ok { 0 } else { 1 }, "status {status}");
    }
}

#[test]
fn connection_refused_is_retried() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (run, code) = attempts_for(&format!("http://127.0.0.1:{port}/"), &[]);
    assert_eq!(code, 1);
    assert_eq!(run["requests"], 4);
    let err = run["error"].as_str().unwrap();
    assert!(
        err.starts_with("Exhausted max retries for the segment"),
        "{err}"
    );
}

#[test]
fn timeout_is_retried() {
    let rx = Scripted::start(|_, _| (200, vec![], String::new(), Duration::from_secs(20)));
    let (run, code) = attempts_for(&rx.url("/"), &["--timeout-ms", "150"]);
    assert_eq!(code, 1);
    assert_eq!(run["requests"], 4);
    assert_eq!(rx.seen().len(), 4);
}

//! Segment's own Python client library (segment-analytics-python, installed
//! by the Makefile from PyPI) sending identify and track calls to the real
//! `segsync serve`, with and without gzip: every user, trait and audience
//! lands, and a wrong write key is refused.

mod common;

use common::Env;
use serde_json::Value;

fn send(addr: &str, key: &str, prefix: &str, gzip: bool) -> std::process::Output {
    std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/segment_client.py"
        ))
        .arg(format!("http://{addr}"))
        .args([key, prefix, if gzip { "1" } else { "0" }])
        .output()
        .expect("python3 runs (the Makefile installs segment-analytics-python)")
}

#[test]
fn segments_python_client_identifies_and_tracks_with_and_without_gzip() {
    let env = Env::new();
    env.ok(&["writekey", "add", "py", "--key", "wk-python-0001"]);
    let (mut child, addr) = env.spawn_serve(&[]);
    for (prefix, gzip) in [("plain", false), ("gz", true)] {
        let out = send(&addr, "wk-python-0001", prefix, gzip);
        assert!(
            out.status.success(),
            "gzip={gzip}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let bad = send(&addr, "not-a-key", "bad", false);
    assert!(!bad.status.success(), "an unknown write key is refused");
    child.kill().unwrap();
    child.wait().unwrap();
    // Every boolean trait is an audience; Audience Entered adds to its own.
    let vip = env.json(&["segment", "show", "vip"]);
    let trial = env.json(&["segment", "show", "trial"]);
    let members = |v: &Value| {
        v["snapshots"]
            .as_array()
            .and_then(|s| s.last())
            .map(|s| s["members"].clone())
    };
    assert_eq!(members(&vip), Some(Value::from(20)), "{vip}"); // 10 vip per prefix
    assert_eq!(members(&trial), Some(Value::from(10)), "{trial}"); // 5 per prefix
    let d = env.json(&["segment", "diff", "vip", "--attribute", "uid", "--ids"]);
    let ids: Vec<&str> = d["added_ids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(ids.contains(&"gz-0") && ids.contains(&"plain-18"), "{d}");
    assert!(!ids.iter().any(|i| i.starts_with("bad")));
}

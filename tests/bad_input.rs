//! Every malformed input aborts with exit code 2 and `FILE:LINE: reason`,
//! and the store is exactly as before (same snapshots, same members, same
//! users); `--skip-invalid` skips and counts instead.

mod common;

use std::path::PathBuf;

use common::{path_str, Env};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// Everything observable about the store that an import could change
/// (timings left out).
fn state(env: &Env) -> (serde_json::Value, serde_json::Value, serde_json::Value) {
    let diff = |args: &[&str]| {
        let mut v = env.json(args);
        if let Some(o) = v.as_object_mut() {
            o.remove("millis");
        }
        v
    };
    (
        env.json(&["segment", "list"]),
        diff(&["segment", "diff", "seg", "--ids"]),
        diff(&["segment", "diff", "seg", "--attribute", "uid", "--ids"]),
    )
}

fn seeded() -> Env {
    let env = Env::new();
    env.ok(&["users", "import", path_str(&fixture("users.csv"))]);
    env.ok(&[
        "segment",
        "import",
        "seg",
        path_str(&fixture("segment_1.txt")),
    ]);
    env
}

#[test]
fn every_bad_input_is_refused_with_file_and_line_and_changes_nothing() {
    // (fixture, import kind, expected line, expected reason fragment)
    let cases = [
        ("bad/unequal_fields.csv", "users", 3, "expected 2 fields"),
        ("bad/unequal_fields.csv", "segment", 3, "expected 2 fields"),
        ("bad/invalid_json.ndjson", "users", 2, "invalid JSON"),
        ("bad/invalid_json.ndjson", "segment", 2, "invalid JSON"),
        (
            "bad/missing_id_column.csv",
            "users",
            1,
            "no id column 'distinct_id'",
        ),
        (
            "bad/missing_id_column.csv",
            "segment",
            1,
            "no id column 'distinct_id'",
        ),
        ("bad/empty_id.csv", "users", 3, "empty id"),
        ("bad/empty_id.csv", "segment", 3, "empty id"),
        ("bad/invalid_utf8.txt", "segment", 2, "invalid UTF-8"),
        ("bad/empty_line.txt", "segment", 2, "empty id"),
        (
            "bad/missing_id_field.ndjson",
            "users",
            1,
            "missing id field",
        ),
    ];
    let env = seeded();
    let before = state(&env);
    for (name, kind, line, reason) in cases {
        let path = fixture(name);
        let p = path_str(&path);
        let args: Vec<&str> = if kind == "users" {
            vec!["users", "import", p]
        } else {
            vec!["segment", "import", "seg", p]
        };
        let out = env.run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name} ({kind}): {stderr}");
        let want = format!("{p}:{line}: ");
        assert!(
            stderr.contains(&want),
            "{name} ({kind}): expected {want:?} in {stderr:?}"
        );
        assert!(
            stderr.contains(reason),
            "{name} ({kind}): expected {reason:?} in {stderr:?}"
        );
        assert_eq!(state(&env), before, "{name} ({kind}) changed the store");
    }
    // A bad import into a segment that does not exist yet does not create it.
    let out = env.run(&[
        "segment",
        "import",
        "fresh",
        path_str(&fixture("bad/empty_line.txt")),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let list = env.json(&["segment", "list"]);
    assert_eq!(list.as_array().map(Vec::len), Some(1));
}

#[test]
fn a_bad_line_late_in_a_big_file_rolls_back_new_users_and_attributes() {
    let env = seeded();
    let before = state(&env);
    // 100k new users with attributes (several internal batches), then a bad line.
    let mut csv = String::from("distinct_id,uid\n");
    for i in 0..100_000 {
        csv.push_str(&format!("new-{i},uid-{i}\n"));
    }
    csv.push_str("alice,changed\n");
    csv.push_str("broken,line,here\n");
    let p = env.file("big.csv", csv.as_bytes());
    let out = env.run(&["segment", "import", "seg", path_str(&p)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(":100003: "));
    assert_eq!(state(&env), before);
    // The rolled-back users really are gone: importing them again makes them new.
    let ok = env.file("one.csv", b"distinct_id,uid\nnew-5,x\nalice,u-alice\n");
    let s = env.json(&["users", "import", path_str(&ok)]);
    assert_eq!(s["users_new"], 1);
    assert_eq!(s["users_known"], 1);
}

#[test]
fn skip_invalid_skips_and_counts() {
    let env = seeded();
    let p = fixture("bad/invalid_utf8.txt");
    let s = env.json(&["segment", "import", "seg", path_str(&p), "--skip-invalid"]);
    assert_eq!(s["skipped"], 1);
    assert_eq!(s["lines"], 3);
    assert_eq!(s["members"], 2);
    let examples = s["skipped_examples"].to_string();
    assert!(examples.contains(":2: invalid UTF-8"), "{examples}");
}

#[test]
fn missing_file_is_bad_input() {
    let env = Env::new();
    let out = env.run(&["segment", "import", "s", "/nonexistent/file.txt"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/file.txt"));
}

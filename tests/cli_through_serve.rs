//! The CLI is a client of a running `serve`: every command group, run on a
//! data dir that a real `segsync serve` holds, prints what it prints when
//! it opens the store itself, with the same exit code — never "locked by
//! another process". Two data dirs get the same commands; one is served.

mod common;

use std::time::Duration;

use common::{ok_json, Env, Scripted};

/// Removes what differs between two runs of the same command: times,
/// durations, rates.
fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut l = String::new();
        let mut chars = line.chars().peekable();
        // Digits become `#`, so times, durations and rates compare equal.
        while let Some(c) = chars.next() {
            if c.is_ascii_digit() {
                while chars
                    .peek()
                    .is_some_and(|c| c.is_ascii_digit() || *c == '.')
                {
                    chars.next();
                }
                l.push('#');
            } else {
                l.push(c);
            }
        }
        out.push_str(&l);
        out.push('\n');
    }
    out
}

#[test]
fn every_command_group_behaves_the_same_through_serve() {
    let rx = Scripted::start(|_, _| ok_json());
    let text = Scripted::start(|_, _| (200, vec![], "plain".into(), Duration::ZERO));
    let (direct, served) = (Env::new(), Env::new());
    let users = direct.file("u.csv", b"distinct_id,uid\na,1\nb,2\nc,3\n");
    let snap = direct.file("s.txt", b"a\nb\n");
    let snap2 = direct.file("s2.txt", b"b\nc\n");
    let bad = direct.file("bad.txt", b"a\n\nb\n");
    let (u, s, s2, bad) = (
        users.to_str().unwrap(),
        snap.to_str().unwrap(),
        snap2.to_str().unwrap(),
        bad.to_str().unwrap(),
    );
    // Both start with users; one is then held by serve.
    for env in [&direct, &served] {
        env.ok(&["users", "import", u]);
    }
    let (mut child, _) = served.spawn_serve(&["--tick-ms", "3600000"]);
    let url = rx.url("/");
    let text_url = text.url("/");

    // (command, expected exit code)
    let table: Vec<(Vec<&str>, i32)> = vec![
        (vec!["users", "import", u, "--json"], 0),
        (vec!["segment", "import", "seg", s], 0),
        (vec!["segment", "import", "seg", bad], 2),
        (vec!["segment", "import", "seg", s2, "--json"], 0),
        (vec!["segment", "list"], 0),
        (vec!["segment", "list", "--json"], 0),
        (vec!["segment", "show", "seg"], 0),
        (vec!["segment", "show", "nope"], 2),
        (
            vec!["segment", "diff", "seg", "--attribute", "uid", "--ids"],
            0,
        ),
        (vec!["segment", "diff", "seg", "--attribute", "phone"], 2),
        (
            vec![
                "destination",
                "add",
                "d",
                "--url",
                &url,
                "--header",
                "X-Api-Key=secret-99",
                "--allow-resync",
            ],
            0,
        ),
        (vec!["destination", "add", "d", "--url", &url], 2),
        (vec!["destination", "add", "t", "--url", &text_url], 0),
        (vec!["destination", "add", "x", "--url", "ftp://nope"], 2),
        (vec!["destination", "list"], 0),
        (vec!["destination", "show", "d", "--json"], 0),
        (vec!["destination", "edit", "d", "--page-size", "100"], 0),
        (vec!["destination", "preview", "d", "--json"], 0),
        (vec!["destination", "test", "d"], 0),
        (vec!["destination", "test", "t"], 1),
        (
            vec![
                "sync",
                "create",
                "--segment",
                "seg",
                "--destination",
                "d",
                "--attribute",
                "uid",
                "--every",
                "daily",
                "--notify",
                "ops@example.com",
            ],
            0,
        ),
        (
            vec![
                "sync",
                "create",
                "--segment",
                "seg",
                "--destination",
                "d",
                "--attribute",
                "phone",
                "--once",
            ],
            2,
        ),
        (vec!["sync", "list"], 0),
        (vec!["sync", "show", "1", "--json"], 0),
        (vec!["sync", "run", "1"], 0),
        (vec!["sync", "run", "1", "--json"], 0),
        (vec!["sync", "resync-all", "1"], 0),
        (vec!["sync", "resync-last", "1"], 2),
        (vec!["sync", "history", "1"], 0),
        (vec!["sync", "edit", "1", "--every", "weekly"], 0),
        (vec!["sync", "edit", "1", "--every", "hourly"], 2),
        (vec!["sync", "pause", "1"], 0),
        (vec!["sync", "pause", "1"], 2),
        (vec!["sync", "show", "1"], 0),
        (vec!["destination", "remove", "d"], 2),
        (vec!["sync", "archive", "1"], 0),
        (vec!["sync", "list", "--status", "archived", "--json"], 0),
        (vec!["destination", "remove", "t"], 0),
        (vec!["notifications", "list"], 0),
        (
            vec![
                "workspace",
                "add",
                "ws-1",
                "--data-api-key",
                "key-0123456789",
            ],
            0,
        ),
        (
            vec![
                "workspace",
                "add",
                "ws-1",
                "--data-api-key",
                "key-0123456789",
            ],
            2,
        ),
        (vec!["workspace", "list"], 0),
        (vec!["workspace", "cohorts", "--json"], 0),
        (vec!["workspace", "remove", "ws-1"], 0),
        (vec!["writekey", "add", "web", "--key", "wk-0123456789"], 0),
        (vec!["writekey", "list", "--json"], 0),
        (vec!["writekey", "remove", "web"], 0),
        (vec!["token", "list"], 0),
        (vec!["sync", "nonsense"], 2),
    ];
    for (args, code) in &table {
        let a = direct.run(args);
        let b = served.run(args);
        let (a_err, b_err) = (
            String::from_utf8_lossy(&a.stderr).to_string(),
            String::from_utf8_lossy(&b.stderr).to_string(),
        );
        assert!(!b_err.contains("locked"), "{args:?} through serve: {b_err}");
        assert_eq!(a.status.code(), Some(*code), "{args:?} directly: {a_err}");
        assert_eq!(
            b.status.code(),
            Some(*code),
            "{args:?} through serve: {b_err}"
        );
        let (a_out, b_out) = (
            String::from_utf8_lossy(&a.stdout),
            String::from_utf8_lossy(&b.stdout),
        );
        assert_eq!(
            normalize(&a_out),
            normalize(&b_out),
            "{args:?}: stdout differs\n--- direct\n{a_out}\n--- served\n{b_out}"
        );
        // The data dir's path is the one thing that may differ in messages.
        let strip = |s: &str| {
            normalize(
                &s.replace(direct.dir.path().to_str().unwrap(), "DIR")
                    .replace(served.dir.path().to_str().unwrap(), "DIR"),
            )
        };
        assert_eq!(strip(&a_err), strip(&b_err), "{args:?}: stderr differs");
    }
    // Both data dirs ended in the same state; and the served one is still
    // served (the file the CLI finds it by is there until it stops).
    assert!(served.data().join("serve.json").exists());
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    child.wait().unwrap();
    assert!(
        !served.data().join("serve.json").exists(),
        "removed at shutdown"
    );
    // Direct again, now that serve is gone.
    let a = normalize(&direct.ok(&["sync", "history", "1"]));
    let b = normalize(&served.ok(&["sync", "history", "1"]));
    assert_eq!(a, b);
}

#[test]
fn a_remote_serve_takes_commands_with_a_token_by_role() {
    let env = Env::new();
    let users = env.file("u.csv", b"distinct_id,uid\na,1\n");
    env.ok(&["users", "import", users.to_str().unwrap()]);
    let admin = env.json(&["token", "create", "ops", "--role", "admin"])["token"]
        .as_str()
        .unwrap()
        .to_string();
    let viewer = env.json(&["token", "create", "dash", "--role", "viewer"])["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (mut child, addr) = env.spawn_serve(&[]);
    let other = Env::new(); // a client on another data dir (its own machine)
    let server = format!("http://{addr}");
    let run = |token: &str, args: &[&str]| {
        let mut c = assert_cmd::Command::cargo_bin("segsync").unwrap();
        c.env("SEGSYNC_SERVER", &server)
            .env("SEGSYNC_TOKEN", token)
            .arg("--data-dir")
            .arg(other.data())
            .args(args);
        c.output().unwrap()
    };
    let out = run(&viewer, &["segment", "list"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&viewer, &["writekey", "add", "w", "--key", "wk-0123456789"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("viewer"));
    let out = run(&admin, &["writekey", "add", "w", "--key", "wk-0123456789"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run("ssk_00000000_wrong", &["segment", "list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("token"));
    child.kill().unwrap();
    child.wait().unwrap();
    // Nothing was written to the client's own data dir.
    assert!(!other.data().join("db").exists());
}

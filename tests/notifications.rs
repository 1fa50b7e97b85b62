//! Notifications on configuration updates, successes and failures: sent to
//! a real SMTP server started here on 127.0.0.1 (a minimal one, speaking the
//! protocol over TCP), recorded in the outbox when the server is down or
//! none is configured, and never failing the sync.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use common::{ok_json, path_str, Env, Scripted, Seed};

/// Accepts SMTP sessions and keeps each message's DATA.
fn smtp_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mail = Arc::new(Mutex::new(Vec::new()));
    let m = mail.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut out) = stream else { return };
            let mut input = BufReader::new(out.try_clone().unwrap());
            let mut say = |s: &str| out.write_all(format!("{s}\r\n").as_bytes()).is_ok();
            say("220 test ESMTP");
            let mut line = String::new();
            loop {
                line.clear();
                if input.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let cmd = line.trim_end().to_ascii_uppercase();
                if cmd.starts_with("EHLO") || cmd.starts_with("HELO") {
                    say("250 test");
                } else if cmd.starts_with("DATA") {
                    say("354 go ahead");
                    let mut data = String::new();
                    loop {
                        line.clear();
                        if input.read_line(&mut line).unwrap_or(0) == 0 || line == ".\r\n" {
                            break;
                        }
                        data.push_str(&line);
                    }
                    m.lock().unwrap().push(data);
                    say("250 queued");
                } else if cmd.starts_with("QUIT") {
                    say("221 bye");
                    break;
                } else {
                    say("250 ok");
                }
            }
        }
    });
    (port, mail)
}

fn setup(env: &Env, url: &str) -> String {
    Seed::of(&[("a", Some("1"))], &["a"])
        .destination(url, &["--max-retries", "0"])
        .daily_sync(env, &["--notify", "ops@example.com"])
}

#[test]
fn success_failure_and_config_updates_are_emailed() {
    let (port, mail) = smtp_server();
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let h = healthy.clone();
    let rx = Scripted::start(move |_, _| {
        if h.load(std::sync::atomic::Ordering::SeqCst) {
            ok_json()
        } else {
            (500, vec![], "x".into(), std::time::Duration::ZERO)
        }
    });
    let env = Env::new();
    env.config(&format!("[smtp]\nhost = \"127.0.0.1\"\nport = {port}\nfrom = \"segsync@example.com\"\n\n[limits]\ncool_off_minutes = 0\n"));
    let id = setup(&env, &rx.url("/"));
    env.ok(&["sync", "run", &id]);
    env.ok(&["sync", "edit", &id, "--every", "weekly"]);
    healthy.store(false, std::sync::atomic::Ordering::SeqCst);
    let seg = env.file("s2.txt", b"b\n");
    env.ok(&["segment", "import", "seg", path_str(&seg)]);
    assert_eq!(env.run(&["sync", "run", &id]).status.code(), Some(1));

    let sent = mail.lock().unwrap().clone();
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(sent[0].contains("sync succeeded") && sent[0].contains("ops@example.com"));
    assert!(sent[1].contains("configuration updated"));
    assert!(sent[2].contains("sync failed"));
    let outbox = env.json(&["notifications", "list"]);
    let kinds: Vec<&str> = outbox
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["success", "config-update", "failure"]);
    assert!(outbox
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n["delivery"] == "sent"));
}

#[test]
fn smtp_down_or_absent_is_recorded_and_never_fails_the_sync() {
    let rx = Scripted::start(|_, _| ok_json());
    let env = Env::new();
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    env.config(&format!(
        "[smtp]\nhost = \"127.0.0.1\"\nport = {dead}\nfrom = \"segsync@example.com\"\n"
    ));
    let id = setup(&env, &rx.url("/"));
    assert_eq!(
        env.json(&["sync", "run", &id])["status"],
        "complete",
        "a dead SMTP server does not fail the sync"
    );
    let outbox = env.json(&["notifications", "list"]);
    assert_eq!(outbox[0]["kind"], "success");
    assert!(outbox[0]["delivery"]["failed"].is_string(), "{outbox}");

    std::fs::remove_file(env.data().join("segsync.toml")).unwrap();
    env.ok(&["sync", "edit", &id, "--no-end"]);
    let outbox = env.json(&["notifications", "list"]);
    assert_eq!(outbox[1]["kind"], "config-update");
    assert_eq!(outbox[1]["delivery"], "recorded");
}

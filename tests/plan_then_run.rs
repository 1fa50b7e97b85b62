//! Plan before you send: `sync plan` persists the next execution and shows
//! its first requests exactly as they will go out; `sync run` then sends
//! exactly those (same bodies, same keys) even if the data changed after
//! planning; `--discard` drops the plan; a plan older than
//! `plan_max_age_minutes` is planned again, and the run says so.

mod common;

use common::{ok_json, Env, Scripted, Seed};
use serde_json::Value;

#[test]
fn the_run_sends_exactly_the_plan() {
    let rx = Scripted::start(|_, _| ok_json());
    let env = Env::new();
    let sync = Seed::numbered(250)
        .destination(
            &rx.url("/hook"),
            &["--page-size", "100", "--header", "X-Api-Key=key-123456"],
        )
        .daily_sync(&env, &[]);

    let plan = env.json(&["sync", "plan", &sync, "--requests", "3"]);
    let e = &plan["execution"];
    assert_eq!(
        (e["added"].as_u64(), e["total_pages"].as_u64()),
        (Some(250), Some(3)),
        "{plan}"
    );
    assert_eq!(e["status"], "processing");
    let shown = plan["requests"].as_array().unwrap().clone();
    assert_eq!(shown.len(), 3);
    assert!(shown[0]["url"].as_str().unwrap().ends_with("/hook"));
    assert!(
        shown[0]["headers"].to_string().contains("****56"),
        "secrets masked"
    );
    assert!(rx.seen().is_empty(), "planning sends nothing");
    // Planning again shows the same plan.
    let again = env.json(&["sync", "plan", &sync, "--requests", "3"]);
    assert_eq!(again["requests"], plan["requests"]);

    // The data changes after planning: new values and a smaller segment.
    let users = env.file("u2.csv", b"distinct_id,uid\nu00000,changed\n");
    env.ok(&["users", "import", users.to_str().unwrap()]);
    let ids: Vec<String> = (100..250).map(|i| format!("u{i:05}")).collect();
    let snap = env.file("s2.txt", ids.join("\n").as_bytes());
    env.ok(&["segment", "import", "seg", snap.to_str().unwrap()]);

    let run = env.json(&["sync", "run", &sync]);
    assert_eq!(run["status"], "complete", "{run}");
    let seen = rx.seen();
    assert_eq!(seen.len(), 3);
    // Pages go out concurrently: match them by key, not by arrival order.
    for s in &shown {
        let key = s["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h[0] == "Idempotency-Key")
            .map(|h| h[1].as_str().unwrap().to_string())
            .unwrap();
        let r = seen
            .iter()
            .find(|r| r.header("idempotency-key") == Some(key.as_str()))
            .unwrap_or_else(|| panic!("no request with key {key}"));
        assert_eq!(r.body, s["body"], "the run sent the planned body");
    }
    let page_1 = seen
        .iter()
        .find(|r| r.body["pagination"]["page_count"] == 1)
        .unwrap();
    let first: Vec<&Value> = page_1.body["data"]["add_users"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert!(
        !first.iter().any(|u| u["uid"] == "changed"),
        "a value changed after planning did not leak into the run"
    );

    // The next plan sees the change; discarding it leaves nothing behind.
    let next = env.json(&["sync", "plan", &sync, "--requests", "1"]);
    assert_eq!(next["execution"]["seq"], 2);
    assert_eq!(next["execution"]["removed"], 100, "{next}");
    let d = env.json(&["sync", "plan", &sync, "--discard"]);
    assert_eq!(d["execution_id"], format!("{sync}-2"));
    let out = env.run(&["sync", "plan", &sync, "--discard"]);
    assert_eq!(out.status.code(), Some(2), "nothing left to discard");
    let out = env.run(&["sync", "run", &sync, "--json"]);
    assert!(out.status.success());
    let hist = env.json(&["sync", "history", &sync]);
    assert_eq!(hist.as_array().map(Vec::len), Some(2), "{hist}");
}

#[test]
fn a_discarded_or_stale_plan_is_planned_again() {
    let rx = Scripted::start(|_, _| ok_json());
    let env = Env::new();
    let sync = Seed::numbered(50)
        .destination(&rx.url("/"), &["--page-size", "100"])
        .daily_sync(&env, &[]);
    let plan = env.json(&["sync", "plan", &sync]);
    assert_eq!(plan["execution"]["seq"], 1);
    env.ok(&["sync", "plan", &sync, "--discard"]);
    assert_eq!(env.json(&["sync", "history", &sync]), Value::Array(vec![]));
    // A plan older than the configured age: the run plans again and says so.
    env.config("[limits]\nplan_max_age_minutes = 0\n");
    env.json(&["sync", "plan", &sync]);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let out = env.run(&["sync", "run", &sync]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("planned again"), "{err}");
    assert_eq!(rx.seen().len(), 1);
    assert_eq!(
        env.json(&["sync", "history", &sync])
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

//! The web console end to end in a real headless Chromium (Debian's
//! `/usr/bin/chromium`, driven by playwright-core from `tests/console/`,
//! both installed by `make test`'s deps step): a real `serve` over a real
//! store, a JSON receiver and a text/plain one on 127.0.0.1. The browser
//! script (`tests/console/e2e.mjs`) signs in, creates a destination while
//! watching its preview, tests the connection both ways, creates and runs a
//! sync while its live progress shows, pauses and archives it through the
//! action menu, uploads a snapshot, and looks at every page as a viewer and
//! at phone width; this test then checks what it read off the pages
//! against what the receiver really got. Screenshots of every page land in
//! `<target>/console-screenshots/`.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{ok_json, path_str, Env, Scripted, Seed, Served};
use serde_json::Value;

/// Where the screenshots and the script's report go: beside the binary's
/// target directory, so CI keeps them with the build.
fn artifacts() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_segsync"));
    bin.parent()
        .and_then(|p| p.parent())
        .map(|t| t.join("console-screenshots"))
        .unwrap_or_else(|| std::env::temp_dir().join("segsync-console-screenshots"))
}

fn token(env: &Env, name: &str, role: &str) -> String {
    let v = env.json(&["token", "create", name, "--role", role]);
    v["token"].as_str().expect("token").to_string()
}

/// The members the receiver holds after every page: added minus removed,
/// by identifier, under the console's renamed add key.
fn reconstructed(seen: &[common::Seen]) -> BTreeSet<String> {
    let mut members = BTreeSet::new();
    for r in seen {
        let data = &r.body["data"];
        for (key, add) in [("members_in", true), ("remove_users", false)] {
            for u in data[key].as_array().into_iter().flatten() {
                let id = u["moengage_distinct_id"].as_str().unwrap_or("");
                if id.starts_with("sample-user-") {
                    continue; // the connection test's sample user
                }
                let uid = u["uid"].as_str().expect("uid in a user object").to_string();
                if add {
                    members.insert(uid);
                } else {
                    members.remove(&uid);
                }
            }
        }
    }
    members
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_operates_syncs_end_to_end_in_chromium() {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/console");
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Debian's chromium is missing: `make test` installs it (scripts/ensure-deps.sh)"
    );
    assert!(
        script.join("node_modules/playwright-core").exists(),
        "playwright-core is missing: `make test` installs it (scripts/ensure-deps.sh)"
    );

    let env = Env::new();
    Seed::numbered(600).apply(&env);
    // 53 more syncs of another segment, so the list pages (50 a page).
    env.config("[limits]\nmax_active_syncs = 100\nmax_syncs_created_per_day = 100\n");
    let bulk = env.file("bulk.txt", b"u00001\nu00002\n");
    env.ok(&["segment", "import", "bulk", path_str(&bulk)]);
    let admin = token(&env, "ops", "admin");
    let viewer = token(&env, "dashboard", "viewer");
    // The next snapshot the browser uploads: 50 members leave.
    let next: Vec<String> = (0..550).map(|i| format!("u{i:05}")).collect();
    let snapshot = env.file("next-members.txt", next.join("\n").as_bytes());

    // A JSON receiver slow enough that the run's progress is seen live.
    let rx = Scripted::start(|_, _| {
        let mut r = ok_json();
        r.3 = Duration::from_millis(150);
        r
    });
    let text = Scripted::start(|_, _| {
        (
            200,
            vec![("content-type", "text/plain".into())],
            "ok".into(),
            Duration::ZERO,
        )
    });
    let served = Served::with_tick(&env, Duration::from_secs(3600)).await;
    let shots = artifacts();
    let c = reqwest::Client::new();
    let (s, d) = common::call_as(
        &c,
        "POST",
        format!("{}/api/v1/destinations", served.base),
        Some(&admin),
        Some(serde_json::json!({"name": "bulk-dest", "url": rx.url("/bulk")})),
    )
    .await;
    assert_eq!(s, 201, "{d}");
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    for _ in 0..53 {
        let (s, v) = common::call_as(
            &c,
            "POST",
            format!("{}/api/v1/syncs", served.base),
            Some(&admin),
            Some(serde_json::json!({
                "segment": "bulk", "destination": "bulk-dest", "attribute": "uid",
                "schedule": {"every": "weekly"}, "start": tomorrow,
            })),
        )
        .await;
        assert_eq!(s, 201, "{v}");
    }

    let base = served.base.clone();
    let (rx_url, text_url) = (rx.url("/segments"), text.url("/hook"));
    let shots_dir = shots.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg("e2e.mjs")
            .current_dir(&script)
            .env("CONSOLE_BASE", &base)
            .env("CONSOLE_ADMIN_TOKEN", &admin)
            .env("CONSOLE_VIEWER_TOKEN", &viewer)
            .env("CONSOLE_JSON_RECEIVER", &rx_url)
            .env("CONSOLE_TEXT_RECEIVER", &text_url)
            .env("CONSOLE_SNAPSHOT_FILE", path_str(&snapshot))
            .env("CONSOLE_SCREENSHOTS", &shots_dir)
            .output()
            .expect("node runs (installed by `make test`)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    assert!(
        out.status.success(),
        "the browser script failed: {}\nreport: {report:#}\nstderr:\n{}",
        report["failed"],
        String::from_utf8_lossy(&out.stderr)
    );

    // What the receiver got is the segment, and the page said so.
    let got = reconstructed(&rx.seen());
    let want: BTreeSet<String> = (0..600).map(|i| format!("uid{i}")).collect();
    assert_eq!(
        got, want,
        "the receiver's membership after the console's run"
    );
    assert_eq!(report["ui_added"], 600, "{report:#}");
    assert_eq!(report["ui_removed"], 0, "{report:#}");
    assert_eq!(report["ui_total"], 600, "{report:#}");
    assert_eq!(report["chart_total"], 600, "{report:#}");
    assert_eq!(
        report["chart_points"], 3,
        "one point per series: {report:#}"
    );
    let progress = report["progress_seen"].as_str().unwrap_or("");
    assert!(
        progress.contains("of 6 pages acknowledged") && progress.contains("of 60 requests/min"),
        "live progress: {progress}"
    );

    // 53 syncs before the browser made two: 50 on page one, 3 on page two.
    assert_eq!(report["page2_rows"], 3, "{report:#}");
    assert!(
        report["first_by_segment"]
            .as_str()
            .is_some_and(|s| s.starts_with("bulk")),
        "{report:#}"
    );
    assert!(
        report["first_by_segment_desc"]
            .as_str()
            .is_some_and(|s| s.starts_with("seg")),
        "{report:#}"
    );

    // The API's refusal shown next to the field it is about.
    assert!(
        report["end_error"]
            .as_str()
            .is_some_and(|e| e.contains("end date") && e.contains("not after the start")),
        "{report:#}"
    );

    // The connection test against text/plain failed, by the seed's rule.
    let test = report["text_plain_test"].as_str().unwrap_or("");
    assert!(
        test.contains("Connection failed") && test.contains("text/plain"),
        "{test}"
    );

    // A paused sync's menu: run, archive (and edit) allowed; pause,
    // resync-last and (not allowed by this destination) resync-all not.
    let m = &report["paused_menu"];
    assert_eq!(m["Run ad hoc"], false, "{m}");
    assert_eq!(m["Archive"], false, "{m}");
    assert_eq!(m["Edit link"], true, "{m}");
    assert_eq!(m["Pause"], true, "{m}");
    assert_eq!(m["Resync last difference"], true, "{m}");
    assert_eq!(m["Resync all users"], true, "{m}");
    assert!(
        report["pause_refusal"]
            .as_str()
            .is_some_and(|r| r.contains("paused")),
        "{report:#}"
    );
    // Archived: nothing is left.
    let a = report["archived_menu"].as_object().expect("archived menu");
    assert!(
        a.iter()
            .all(|(k, v)| (k == "Edit link" && v == false) || (k != "Edit link" && v == true)),
        "an archived sync allows nothing: {a:?}"
    );
    // The store agrees with the page.
    let (status, sync) = common::call_as(
        &reqwest::Client::new(),
        "GET",
        format!("{}/api/v1/syncs/{}", served.base, report["sync_id"]),
        None,
        None,
    )
    .await;
    assert_eq!(status, 401, "the API still needs a token: {sync}");
    let rec = segsync::lifecycle::actions::load(
        &served.store,
        report["sync_id"].as_u64().unwrap() as u32,
    )
    .unwrap();
    assert_eq!(rec.status, segsync::lifecycle::SyncStatus::Archived);

    // The upload made snapshot 2 with 50 removed, shown on the page.
    let snap2: Vec<&str> = report["snapshot2"]
        .as_array()
        .expect("snapshot row")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(snap2.first(), Some(&"2"), "{snap2:?}");
    assert_eq!(snap2.get(3), Some(&"550"), "members: {snap2:?}");
    assert_eq!(snap2.get(4), Some(&"0"), "added: {snap2:?}");
    assert_eq!(snap2.get(5), Some(&"50"), "removed: {snap2:?}");
    assert_eq!(
        served
            .store
            .segment("seg")
            .unwrap()
            .unwrap()
            .snapshots
            .len(),
        2
    );

    // A viewer: every action disabled with the reason, nothing to save.
    let v = report["viewer_menu"].as_object().expect("viewer menu");
    assert!(
        v.iter().all(|(k, d)| k == "Edit link" || d == true) && v["Edit link"] == false,
        "a viewer can do nothing: {v:?}"
    );
    assert!(report["viewer_reason"]
        .as_str()
        .is_some_and(|r| r.contains("viewer")));
    assert_eq!(report["viewer_detail_enabled"], 0);
    assert_eq!(report["viewer_can_save"], 0);
    assert_eq!(report["viewer_url_disabled"], true);

    // Without --nats the workers page says there are none, and why.
    assert!(
        report["workers_text"]
            .as_str()
            .is_some_and(|t| t.contains("without --nats")),
        "{}",
        report["workers_text"]
    );

    // Readable at 390 px: no page wider than the phone.
    for (page, overflow) in report["phone_overflow"].as_object().expect("phone pages") {
        assert!(
            overflow.as_i64().is_some_and(|o| o <= 0),
            "{page} is wider than a 390 px phone by {overflow} px"
        );
    }
    for name in ["desktop-sync-detail", "phone-syncs", "desktop-destination"] {
        assert!(shots.join(format!("{name}.png")).exists(), "{name}.png");
    }
    served.stop().await;
}

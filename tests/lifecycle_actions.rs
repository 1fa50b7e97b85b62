//! The seed's lifecycle rules through the library and the CLI: limits and
//! their configuration, the cool-off (with an injected clock), the inactive
//! rule, edit rules, and both resyncs.

mod common;

use chrono::{Duration, Utc};
use common::{ok_json, path_str, Env, Scripted, Seed};
use segsync::error::{Classify, Fault};
use segsync::lifecycle::actions::{self, ActionError, NewSync, SyncEdit};
use segsync::lifecycle::{ExecStatus, Frequency, Schedule, SyncRecord, SyncStatus, Trigger};
use segsync::pipeline::RunOptions;
use segsync::store::Store;

fn seeded(env: &Env, url: &str, allow_resync: bool) {
    let mut args = vec![
        "--page-size",
        "100",
        "--retry-delay-ms",
        "1",
        "--max-retries",
        "0",
    ];
    if allow_resync {
        args.push("--allow-resync");
    }
    Seed::of(
        &[("a", Some("1")), ("b", Some("2")), ("c", Some("3"))],
        &["a", "b"],
    )
    .destination(url, &args)
    .apply(env);
}

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn new_sync(schedule: Schedule) -> NewSync {
    NewSync::new("seg", "dest", "uid", schedule)
}

#[test]
fn creation_limits_and_raising_them() -> TestResult {
    let env = Env::new();
    seeded(&env, "http://127.0.0.1:9/", false);
    let store = Store::open(env.data())?;
    let now = Utc::now();
    for _ in 0..10 {
        actions::create(&store, new_sync(Schedule::Once), now, "test")?;
    }
    let e = actions::create(&store, new_sync(Schedule::Once), now, "test").unwrap_err();
    assert!(matches!(e, ActionError::Limit(_)), "{e}");
    assert_eq!(e.fault(), Fault::Limit);
    assert_eq!(e.fault().http_status(), 429);
    assert!(
        e.to_string()
            .contains("active syncs limit reached: 10 of 10"),
        "{e}"
    );
    // Archiving frees an active slot, but 10 were created today already.
    actions::set_status(
        &store,
        1,
        segsync::lifecycle::rules::Action::Archive,
        now,
        "test",
    )?;
    let e = actions::create(&store, new_sync(Schedule::Once), now, "test").unwrap_err();
    assert!(
        e.to_string()
            .contains("syncs created today limit reached: 10 of 10"),
        "{e}"
    );
    // Tomorrow it is allowed again.
    actions::create(
        &store,
        new_sync(Schedule::Once),
        now + Duration::days(1),
        "test",
    )?;
    drop(store);
    // Raising the limits in segsync.toml lifts them.
    env.config("[limits]\nmax_active_syncs = 20\nmax_syncs_created_per_day = 20\n");
    let store = Store::open(env.data())?;
    actions::create(&store, new_sync(Schedule::Once), now, "test")?;
    drop(store);
    // Through the CLI a limit is exit code 2 with the message.
    env.config("[limits]\nmax_active_syncs = 1\n");
    let out = env.run(&[
        "sync",
        "create",
        "--segment",
        "seg",
        "--destination",
        "dest",
        "--attribute",
        "uid",
        "--once",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("active syncs limit reached"));
    // A typo in the config is an error naming the file and key.
    env.config("[limits]\nmax_active = 3\n");
    let out = env.run(&["sync", "list"]);
    assert!(out.status.success(), "listing does not read limits");
    let out = env.run(&[
        "sync",
        "create",
        "--segment",
        "seg",
        "--destination",
        "dest",
        "--attribute",
        "uid",
        "--once",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("segsync.toml"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn the_21st_ad_hoc_run_or_resync_of_the_day_is_refused() -> TestResult {
    let rx = Scripted::start(|_, _| ok_json());
    let env = Env::new();
    seeded(&env, &rx.url("/"), true);
    let store = Store::open(env.data())?;
    let s = actions::create(
        &store,
        new_sync(Schedule::Every(Frequency::Daily)),
        Utc::now(),
        "test",
    )?;
    let opts = RunOptions::default();
    // Scheduled runs do not count.
    actions::run(&store, s.id, Trigger::Scheduled, &opts, "test")?;
    for i in 0..20 {
        let trigger = if i % 2 == 0 {
            Trigger::AdHoc
        } else {
            Trigger::ResyncAll
        };
        assert_eq!(
            actions::run(&store, s.id, trigger, &opts, "test")?.status,
            ExecStatus::Complete
        );
    }
    let e = actions::run(&store, s.id, Trigger::AdHoc, &opts, "test").unwrap_err();
    assert!(
        e.to_string()
            .contains("ad hoc runs and resyncs today limit reached: 20 of 20"),
        "{e}"
    );
    actions::run(&store, s.id, Trigger::Scheduled, &opts, "test")?;
    Ok(())
}

#[test]
fn cool_off_refuses_a_retry_until_it_passes() -> TestResult {
    let rx = Scripted::start(|_, _| (500, vec![], "down".into(), std::time::Duration::ZERO));
    let env = Env::new();
    seeded(&env, &rx.url("/"), false);
    let store = Store::open(env.data())?;
    let s = actions::create(
        &store,
        new_sync(Schedule::Every(Frequency::Daily)),
        Utc::now(),
        "test",
    )?;
    let failed = actions::run(&store, s.id, Trigger::AdHoc, &RunOptions::default(), "test")?;
    assert_eq!(failed.status, ExecStatus::Failed);
    let s = SyncRecord::load(&store, s.id)?.ok_or("missing")?;
    assert_eq!(s.status, SyncStatus::Failed);
    let finished = chrono::DateTime::from_timestamp_millis(failed.finished_ms.unwrap()).unwrap();
    let e = actions::check_run(
        &store,
        &s,
        Trigger::AdHoc,
        false,
        finished + Duration::minutes(29),
    )
    .unwrap_err();
    assert_eq!(e.fault(), Fault::Conflict);
    let until = (finished + Duration::minutes(30))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    assert!(
        e.to_string().contains(&until),
        "names when a retry is possible: {e}"
    );
    actions::check_run(
        &store,
        &s,
        Trigger::AdHoc,
        false,
        finished + Duration::minutes(30),
    )?;
    // The CLI refuses now (exit 2) since the failure was just now.
    drop(store);
    let out = env.run(&["sync", "run", &s.id.to_string()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cool-off"));
    Ok(())
}

#[test]
fn an_inactive_sync_blocks_the_same_segment_frequency_and_destination() -> TestResult {
    let env = Env::new();
    seeded(&env, "http://127.0.0.1:9/", false);
    env.ok(&[
        "destination",
        "add",
        "other",
        "--url",
        "http://127.0.0.1:9/o",
    ]);
    let store = Store::open(env.data())?;
    let now = Utc::now();
    let mut s = actions::create(
        &store,
        new_sync(Schedule::Every(Frequency::Daily)),
        now,
        "test",
    )?;
    s.status = SyncStatus::Inactive;
    s.save(&store)?;
    let e = actions::create(
        &store,
        new_sync(Schedule::Every(Frequency::Daily)),
        now,
        "test",
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("is inactive; archive it first"),
        "{e}"
    );
    // Another frequency or destination is allowed.
    actions::create(
        &store,
        new_sync(Schedule::Every(Frequency::Weekly)),
        now,
        "test",
    )?;
    actions::create(
        &store,
        NewSync {
            destination: "other".into(),
            ..new_sync(Schedule::Every(Frequency::Daily))
        },
        now,
        "test",
    )?;
    // After archiving, the same again is allowed.
    actions::set_status(
        &store,
        s.id,
        segsync::lifecycle::rules::Action::Archive,
        now,
        "test",
    )?;
    actions::create(
        &store,
        new_sync(Schedule::Every(Frequency::Daily)),
        now,
        "test",
    )?;
    Ok(())
}

#[test]
fn edit_rules() -> TestResult {
    let env = Env::new();
    seeded(&env, "http://127.0.0.1:9/", false);
    env.ok(&[
        "destination",
        "add",
        "other",
        "--url",
        "http://127.0.0.1:9/o",
    ]);
    let store = Store::open(env.data())?;
    let now = Utc::now();
    let once = actions::create(&store, new_sync(Schedule::Once), now, "test")?;
    let e = actions::edit(
        &store,
        once.id,
        SyncEdit {
            every: Some(Frequency::Daily),
            ..Default::default()
        },
        now,
        "test",
    )
    .unwrap_err();
    assert!(e.to_string().contains("cannot become periodic"), "{e}");
    let future = now + Duration::days(2);
    let p = actions::create(
        &store,
        NewSync {
            start: Some(future),
            ..new_sync(Schedule::Every(Frequency::Daily))
        },
        now,
        "test",
    )?;
    // Before the start: start, frequency, end, destination, emails all editable.
    let edited = actions::edit(
        &store,
        p.id,
        SyncEdit {
            every: Some(Frequency::Weekly),
            start: Some(future + Duration::hours(1)),
            end: Some(Some(future + Duration::days(30))),
            destination: Some("other".into()),
            notify: Some(vec!["ops@example.com".into()]),
        },
        now,
        "test",
    )?;
    assert_eq!(edited.schedule, Schedule::Every(Frequency::Weekly));
    assert_eq!(edited.destination, "other");
    // Once the start has passed it is fixed; the end date stays editable.
    let later = future + Duration::days(1);
    let e = actions::edit(
        &store,
        p.id,
        SyncEdit {
            start: Some(later + Duration::days(1)),
            ..Default::default()
        },
        later,
        "test",
    )
    .unwrap_err();
    assert!(e.to_string().contains("start date has passed"), "{e}");
    actions::edit(
        &store,
        p.id,
        SyncEdit {
            end: Some(None),
            ..Default::default()
        },
        later,
        "test",
    )?;
    let e = actions::edit(
        &store,
        p.id,
        SyncEdit {
            notify: Some(vec!["not-an-email".into()]),
            ..Default::default()
        },
        later,
        "test",
    )
    .unwrap_err();
    assert_eq!(e.fault(), Fault::BadInput);
    // Not in archived status.
    actions::set_status(
        &store,
        p.id,
        segsync::lifecycle::rules::Action::Archive,
        later,
        "test",
    )?;
    let e = actions::edit(
        &store,
        p.id,
        SyncEdit {
            end: Some(None),
            ..Default::default()
        },
        later,
        "test",
    )
    .unwrap_err();
    assert_eq!(e.fault(), Fault::Conflict);
    Ok(())
}

#[test]
fn resync_all_and_resync_last_through_the_cli() -> TestResult {
    let fail = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = fail.clone();
    let rx = Scripted::start(move |_, _| {
        if f.load(std::sync::atomic::Ordering::SeqCst) {
            (500, vec![], "down".into(), std::time::Duration::ZERO)
        } else {
            ok_json()
        }
    });
    let env = Env::new();
    seeded(&env, &rx.url("/"), false);
    env.config("[limits]\ncool_off_minutes = 0\n");
    let id = env.create_daily_sync("dest", &[]);
    assert_eq!(env.json(&["sync", "run", &id])["added"], 2);
    // Not allowed by the destination yet.
    let out = env.run(&["sync", "resync-all", &id]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not allow resync"));
    env.ok(&["destination", "edit", "dest", "--allow-resync"]);
    let r = env.json(&["sync", "resync-all", &id]);
    assert_eq!(
        (
            r["kind"].as_str(),
            r["trigger"].as_str(),
            r["added"].as_u64()
        ),
        (Some("full"), Some("resync-all"), Some(2))
    );

    // Only a failed sync can resync its last difference.
    let out = env.run(&["sync", "resync-last", &id]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("only a failed sync"));
    let seg = env.file("s2.txt", b"b\nc\n");
    env.ok(&["segment", "import", "seg", path_str(&seg)]);
    fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let out = env.run(&["sync", "run", &id, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let failed: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    let before = rx.seen().len();
    let r = env.json(&["sync", "resync-last", &id]);
    assert_eq!(r["status"], "complete");
    assert_eq!(r["trigger"], "resync-last");
    assert_eq!(
        (r["added"].clone(), r["removed"].clone()),
        (failed["added"].clone(), failed["removed"].clone())
    );
    let last = rx.seen()[before..].to_vec();
    let body = &last.last().unwrap().body["data"];
    assert_eq!(body["add_users"][0]["moengage_distinct_id"], "c");
    assert_eq!(body["remove_users"][0]["moengage_distinct_id"], "a");
    assert_eq!(env.json(&["sync", "show", &id])["status"], "active");
    Ok(())
}

//! Status rules through the CLI: pause and archive follow the seed's table,
//! an ad hoc run resumes a paused sync, an archived sync refuses everything.

mod common;

use common::{ok_json, setup_sync, Env, Scripted};

#[test]
fn pause_run_archive_through_the_cli() {
    let rx = Scripted::start(|_, _| ok_json());
    let env = Env::new();
    let sync = setup_sync(
        &env,
        &[("a", Some("1")), ("b", Some("2"))],
        &["a", "b"],
        &rx.url("/"),
        &["--page-size", "100"],
    );
    assert_eq!(env.json(&["sync", "pause", &sync])["status"], "paused");
    let again = env.run(&["sync", "pause", &sync]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("cannot pause a sync that is paused"));

    // An ad hoc run resumes a paused sync.
    assert_eq!(env.json(&["sync", "run", &sync])["status"], "complete");
    assert_eq!(env.json(&["sync", "show", &sync])["status"], "active");

    assert_eq!(env.json(&["sync", "archive", &sync])["status"], "archived");
    for action in ["run", "pause", "archive"] {
        let out = env.run(&["sync", action, &sync]);
        assert_eq!(out.status.code(), Some(2), "{action}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("archived syncs are final"),
            "{action}"
        );
    }
    assert_eq!(rx.seen().len(), 1, "the refused run sent nothing");
    // Archived syncs no longer hold their destination.
    env.ok(&["destination", "remove", "dest"]);
}

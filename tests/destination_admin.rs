//! Managing destinations through the CLI: add, list, show (secrets
//! masked), edit (validated again), and remove, which is refused while a
//! sync uses the destination.

mod common;

use common::{path_str, Env};

#[test]
fn add_list_show_edit_remove() {
    let env = Env::new();
    let d = env.json(&[
        "destination",
        "add",
        "crm",
        "--url",
        "https://crm.example.com/in",
        "--header",
        "Authorization=Bearer abcdefgh",
        "--basic",
        "ws:supersecret",
        "--rpm",
        "300",
        "--app",
        "crm-app",
    ]);
    assert_eq!(d["name"], "crm");
    assert_eq!(d["app"], "crm-app");
    let text = d.to_string();
    assert!(
        !text.contains("abcdefgh") && !text.contains("supersecret"),
        "{text}"
    );
    assert!(text.contains("****gh") && text.contains("****et"), "{text}");

    let dup = env.run(&[
        "destination",
        "add",
        "crm",
        "--url",
        "https://x.example.com",
    ]);
    assert_eq!(dup.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));

    // Edit replaces what is given, keeps the rest, and validates again.
    let e = env.json(&[
        "destination",
        "edit",
        "crm",
        "--page-size",
        "5000",
        "--allow-resync",
    ]);
    assert_eq!(
        (
            e["page_size"].as_u64(),
            e["rpm"].as_u64(),
            e["allow_resync"].as_bool()
        ),
        (Some(5000), Some(300), Some(true))
    );
    let bad = env.run(&["destination", "edit", "crm", "--rpm", "30000"]);
    assert_eq!(bad.status.code(), Some(2));
    assert_eq!(
        env.json(&["destination", "show", "crm"])["rpm"],
        300,
        "a refused edit changes nothing"
    );

    // In use by a sync: removal refused.
    let users = env.file("u.csv", b"distinct_id,uid\na,1\n");
    env.ok(&["users", "import", path_str(&users)]);
    let seg = env.file("s.txt", b"a\n");
    env.ok(&["segment", "import", "s", path_str(&seg)]);
    env.ok(&[
        "sync",
        "create",
        "--segment",
        "s",
        "--destination",
        "crm",
        "--attribute",
        "uid",
        "--once",
    ]);
    let out = env.run(&["destination", "remove", "crm"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("used by sync(s) 1"));

    env.ok(&[
        "destination",
        "add",
        "spare",
        "--url",
        "http://127.0.0.1:9/x",
    ]);
    assert_eq!(
        env.json(&["destination", "remove", "spare"])["removed"],
        "spare"
    );
    let names: Vec<String> = env
        .json(&["destination", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["crm"]);
}

#[test]
fn sync_create_checks_segment_destination_and_attribute() {
    let env = Env::new();
    let users = env.file("u.csv", b"distinct_id,uid\na,1\n");
    env.ok(&["users", "import", path_str(&users)]);
    let seg = env.file("s.txt", b"a\n");
    env.ok(&["segment", "import", "s", path_str(&seg)]);
    env.ok(&[
        "destination",
        "add",
        "d",
        "--url",
        "http://127.0.0.1:9/x",
        "--static",
        "email=x",
    ]);
    for (args, msg) in [
        (
            vec![
                "--segment",
                "nope",
                "--destination",
                "d",
                "--attribute",
                "uid",
            ],
            "segment 'nope' not found",
        ),
        (
            vec![
                "--segment",
                "s",
                "--destination",
                "nope",
                "--attribute",
                "uid",
            ],
            "destination 'nope' not found",
        ),
        (
            vec![
                "--segment",
                "s",
                "--destination",
                "d",
                "--attribute",
                "phone",
            ],
            "phone Type string attribute not found",
        ),
    ] {
        let mut a = vec!["sync", "create", "--once"];
        a.extend(args);
        let out = env.run(&a);
        assert_eq!(out.status.code(), Some(2), "{a:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(msg), "{a:?}");
    }
    // The attribute's name would collide with a static key.
    let u2 = env.file("u2.csv", b"distinct_id,email\na,a@x\n");
    env.ok(&["users", "import", path_str(&u2)]);
    let out = env.run(&[
        "sync",
        "create",
        "--once",
        "--segment",
        "s",
        "--destination",
        "d",
        "--attribute",
        "email",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(env.json(&["sync", "list"]), serde_json::json!([]));
}

//! The request a destination receives: the seed's body with renames and
//! static key-values, JSON content type, headers, query parameters, Basic
//! auth and the idempotency key — checked on a real local server.

mod common;

use common::{ok_json, setup_sync, Env, Scripted};

#[test]
fn payload_shape_headers_renames_statics_auth_and_params() {
    let rx = Scripted::start(|_, _| ok_json());
    let env = Env::new();
    let url = rx.url("/segments");
    let sync = setup_sync(
        &env,
        &[
            ("alice", Some("u-alice")),
            ("bob", Some("u\"bob")),
            ("carol", None),
        ],
        &["alice", "bob", "carol"],
        &url,
        &[
            "--header",
            "X-Api-Key=secret-token",
            "--param",
            "tenant=acme",
            "--basic",
            "user:pa:ss",
            "--identifier-key",
            "partner_user_id",
            "--add-key",
            "adds",
            "--remove-key",
            "removes",
            "--static",
            "source=segsync",
            "--page-size",
            "100",
        ],
    );
    let run = env.json(&["sync", "run", &sync]);
    assert_eq!(run["status"], "complete");
    assert_eq!(run["skipped"], 1, "carol has no uid");

    let seen = rx.seen();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(r.uri, "/segments?tenant=acme");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-api-key"), Some("secret-token"));
    // Basic base64("user:pa:ss")
    assert_eq!(r.header("authorization"), Some("Basic dXNlcjpwYTpzcw=="));
    assert_eq!(
        r.header("idempotency-key"),
        Some(format!("{sync}-1-1").as_str())
    );
    let b = &r.body;
    assert_eq!(b["type"], "segment_sync");
    assert_eq!(
        b["pagination"],
        serde_json::json!({"total_pages": 1, "page_count": 1})
    );
    assert_eq!(b["data"]["moengage_sync_id"], sync);
    assert_eq!(b["data"]["moengage_sync_name"], "seg");
    assert_eq!(b["data"]["moengage_execution_id"], format!("{sync}-1"));
    assert!(b["data"]["moengage_integration_id"].is_string());
    let mut adds = b["data"]["adds"].as_array().unwrap().clone();
    adds.sort_by_key(|u| u["moengage_distinct_id"].as_str().unwrap().to_string());
    assert_eq!(
        adds,
        vec![
            serde_json::json!({"moengage_distinct_id": "alice", "partner_user_id": "u-alice", "source": "segsync"}),
            serde_json::json!({"moengage_distinct_id": "bob", "partner_user_id": "u\"bob", "source": "segsync"}),
        ]
    );
    assert_eq!(b["data"]["removes"], serde_json::json!([]));

    // Secrets never appear in show or preview.
    let show = env.ok(&["destination", "show", "dest"]);
    let preview = env.ok(&["destination", "preview", "dest"]);
    for out in [&show, &preview] {
        assert!(
            !out.contains("secret-token") && !out.contains("pa:ss"),
            "{out}"
        );
    }
    assert!(
        preview.contains("POST http://")
            && preview.contains("\"adds\"")
            && preview.contains("\"removes\"")
    );
}

#[test]
fn invalid_destinations_are_refused_with_the_field_named() {
    let env = Env::new();
    for (args, field) in [
        (vec!["--url", "ftp://x"], "url"),
        (
            vec!["--url", "http://127.0.0.1:9", "--page-size", "99"],
            "page_size",
        ),
        (
            vec!["--url", "http://127.0.0.1:9", "--page-size", "10001"],
            "page_size",
        ),
        (vec!["--url", "http://127.0.0.1:9", "--rpm", "25001"], "rpm"),
        (
            vec![
                "--url",
                "http://127.0.0.1:9",
                "--static",
                "moengage_distinct_id=x",
            ],
            "static",
        ),
        (
            vec![
                "--url",
                "http://127.0.0.1:9",
                "--add-key",
                "k",
                "--remove-key",
                "k",
            ],
            "remove_key",
        ),
    ] {
        let mut a = vec!["destination", "add", "d"];
        a.extend(args);
        let out = env.run(&a);
        assert_eq!(out.status.code(), Some(2), "{a:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("destination {field}")),
            "{a:?}: {err}"
        );
    }
    assert_eq!(env.json(&["destination", "list"]), serde_json::json!([]));
}

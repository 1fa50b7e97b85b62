//! `destination test`: success only for a 2xx answer with an
//! `application/json` content type; anything else exits 1 with the
//! destination's message.

mod common;

use std::time::Duration;

use common::{Env, Scripted};

fn test_against(reply: common::Reply) -> (i32, String, common::Seen) {
    let rx = Scripted::start(move |_, _| reply.clone());
    let env = Env::new();
    env.ok(&[
        "destination",
        "add",
        "d",
        "--url",
        &rx.url("/hook"),
        "--basic",
        "ws:key",
    ]);
    let out = env.run(&["destination", "test", "d"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = rx.seen();
    assert_eq!(seen.len(), 1);
    (out.status.code().unwrap_or(-1), text, seen[0].clone())
}

#[test]
fn json_2xx_passes_and_sends_the_real_format() {
    let (code, text, seen) = test_against((
        200,
        vec![("content-type", "application/json; charset=utf-8".into())],
        "{}".into(),
        Duration::ZERO,
    ));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("connection ok"));
    assert_eq!(seen.body["type"], "segment_sync");
    assert_eq!(
        seen.body["data"]["add_users"].as_array().map(Vec::len),
        Some(1)
    );
    assert!(seen.header("authorization").is_some());
}

#[test]
fn text_plain_2xx_fails() {
    let (code, text, _) = test_against((
        200,
        vec![("content-type", "text/plain".into())],
        "fine".into(),
        Duration::ZERO,
    ));
    assert_eq!(code, 1);
    assert!(text.contains("application/json"), "{text}");
}

#[test]
fn server_error_fails_with_the_destination_message() {
    let (code, text, _) = test_against((
        500,
        vec![("content-type", "application/json".into())],
        "{\"error\":\"db down\"}".into(),
        Duration::ZERO,
    ));
    assert_eq!(code, 1);
    assert!(text.contains("500") && text.contains("db down"), "{text}");
}

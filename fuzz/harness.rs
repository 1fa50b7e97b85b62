//! What every fuzz target checks, shared by the libFuzzer targets
//! (`fuzz/fuzz_targets/`, run by `make fuzz`) and by the corpus replay in
//! `make test` (`tests/fuzz_corpus.rs`), so that a finding, once in the
//! corpus, is checked on every test run, on stable Rust.
//!
//! Invariants: no panic; a refusal is an error with a message (naming the
//! line for an import); a refused import leaves the store as it was
//! (atomic); a request to the receivers is answered 2xx or 4xx, never 500.
#![allow(dead_code)]

use std::sync::{Mutex, OnceLock};

use segsync::store::Store;

/// One store per process, reused by every input (opening RocksDB per input
/// would make fuzzing a hundred times slower); the first users and the
/// credentials the request targets need are set up once.
fn store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let store = Store::open(&dir).expect("store");
        let users = dir.join("users.csv");
        std::fs::write(&users, "distinct_id,uid,anonymous_id\na,1,x\nb,2,y\n").expect("users");
        segsync::ingest::import_users(&store, &users, &Default::default()).expect("users import");
        segsync::inbound::add_workspace(&store, "ws", "key-123456", "uid", "anonymous_id")
            .expect("workspace");
        segsync::inbound::add_write_key(&store, "fuzz", "wk-123456").expect("write key");
        store
    })
}

fn stream(data: &[u8]) -> segsync::ingest::Source<'static> {
    segsync::ingest::Source::Stream {
        name: "fuzz",
        reader: Box::new(std::io::Cursor::new(data.to_vec())),
        size: data.len() as u64,
    }
}

fn atomic<T, E: std::fmt::Display>(import: impl FnOnce(&Store) -> Result<T, E>) {
    let store = store();
    let before = store.counters();
    if let Err(e) = import(store) {
        let msg = e.to_string();
        assert!(!msg.trim().is_empty(), "an import refused without a reason");
        assert_eq!(
            store.counters(),
            before,
            "a refused import changed the store: {msg}"
        );
    }
}

/// A segment snapshot import (id list, CSV or NDJSON; gzip or not).
pub fn segment_import(data: &[u8]) {
    let opts = segsync::ingest::Options::default();
    atomic(|s| segsync::ingest::import_segment_from(s, "fuzz", stream(data), &opts));
}

/// A users import (CSV or NDJSON; gzip or not).
pub fn users_import(data: &[u8]) {
    let opts = segsync::ingest::Options::default();
    atomic(|s| segsync::ingest::import_users_from(s, stream(data), &opts));
}

fn answered(status: u16, body: &serde_json::Value) {
    assert!(
        (200..500).contains(&status),
        "answered {status} {body}: every refusal of a request is a 4xx"
    );
    if status >= 400 {
        assert!(
            body["error"].as_str().is_some_and(|e| !e.trim().is_empty()),
            "a {status} without a reason: {body}"
        );
    }
}

/// A Cohort Sync request body from a registered workspace.
pub fn cohort_request(data: &[u8]) {
    static LIMITER: OnceLock<segsync::inbound::WindowLimiter> = OnceLock::new();
    let limiter = LIMITER.get_or_init(|| segsync::inbound::WindowLimiter::new(u32::MAX));
    let auth = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "ws:key-123456")
    );
    let req = segsync::inbound::cohort::Request {
        authorization: Some(&auth),
        appkey: Some("ws"),
        partner: Some("moengage"),
        idempotency_key: None,
        body: data,
    };
    let limits = segsync::config::ReceiverLimits {
        rpm: u32::MAX,
        ..Default::default()
    };
    let r =
        segsync::inbound::cohort::handle(store(), limiter, limits, &req, std::time::Instant::now());
    answered(r.status, &r.body);
}

/// A Personas identify, track or batch body (the first byte picks which).
pub fn personas_request(data: &[u8]) {
    use segsync::inbound::personas::{handle, Endpoint, Users};
    static USERS: OnceLock<Mutex<Users>> = OnceLock::new();
    let users = USERS.get_or_init(Default::default);
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let endpoint = [Endpoint::Identify, Endpoint::Track, Endpoint::Batch][usize::from(pick % 3)];
    let auth = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "wk-123456:")
    );
    let mut users = users
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let r = handle(store(), &mut users, endpoint, Some(&auth), body);
    answered(r.status, &r.body);
}

/// A destination configuration as the API takes it: validated, previewed,
/// and a sample body rendered.
pub fn destination_config(data: &[u8]) {
    let Ok(cfg) = serde_json::from_slice::<segsync::destination::DestinationConfig>(data) else {
        return;
    };
    match cfg.validate(1) {
        Ok(d) => {
            let p = segsync::destination::preview(&d, "uid");
            assert_eq!(p.method, "POST");
            let body = segsync::destination::sample_body(&d, "uid", 2, 1);
            serde_json::from_slice::<serde_json::Value>(&body).expect("a sample body is JSON");
        }
        Err(e) => assert!(!e.field.is_empty() && !e.reason.is_empty(), "{e}"),
    }
}

/// A `segsync.toml`.
pub fn settings(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = segsync::config::validate(text) {
        assert!(!e.trim().is_empty());
    }
}

/// The store's decoders: every record type, bitmaps, attribute values,
/// blocks of distinct ids (the first byte picks which). A block's listed
/// users are each found, with the same id, by the lookup reads use.
pub fn store_decoders(data: &[u8]) {
    use segsync::store::codec::{decode_bitmap, decode_record};
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let refused = match pick % 8 {
        0 => decode_record::<segsync::store::SyncRecord>("sync", bytes).err(),
        1 => decode_record::<segsync::store::ExecutionRecord>("execution", bytes).err(),
        2 => decode_record::<segsync::store::SegmentRecord>("segment", bytes).err(),
        3 => decode_record::<segsync::destination::DestinationRecord>("destination", bytes).err(),
        4 => decode_record::<segsync::store::PageOutcome>("page", bytes).err(),
        5 => decode_bitmap("bitmap", bytes).err(),
        6 => segsync::store::ValueRef::decode(bytes).err(),
        _ => match segsync::store::decode_user_ids_block(bytes) {
            Ok(users) => {
                for (i, (idx, id)) in users.iter().enumerate() {
                    // A user listed twice (a damaged block) is found at
                    // its first run.
                    if users[..i].iter().all(|(j, _)| j != idx) {
                        let found = segsync::store::find_in_user_ids_block(bytes, *idx);
                        assert_eq!(found.ok().flatten(), Some(&id[..]), "user {idx}");
                    }
                }
                None
            }
            Err(e) => Some(e),
        },
    };
    if let Some(e) = refused {
        assert!(e.to_string().contains("corrupt"), "{e}");
    }
}

/// One target's check.
pub type Check = fn(&[u8]);

/// Every target by name (the corpus replay walks `fuzz/corpus/<name>/`).
pub const TARGETS: &[(&str, Check)] = &[
    ("segment_import", segment_import),
    ("users_import", users_import),
    ("cohort_request", cohort_request),
    ("personas_request", personas_request),
    ("destination_config", destination_config),
    ("settings", settings),
    ("store_decoders", store_decoders),
];

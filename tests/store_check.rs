//! `segsync check` on a real store: a store after imports and runs (a full
//! send, a diff with changed identifiers) has no violation; a corrupted
//! execution bitmap and a bitmap naming a user that does not exist are
//! reported with the column family and the record, exit code 1.

mod common;

use common::{path_str, Env};
use segsync::checking_receiver::{Receiver, ReceiverOptions};

fn corrupt(env: &Env, family: &str, key: &[u8], value: &[u8]) {
    let db_dir = env.data().join("db");
    let cfs = rocksdb::DB::list_cf(&rocksdb::Options::default(), &db_dir).unwrap();
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &db_dir, &cfs).unwrap();
    db.put_cf(db.cf_handle(family).unwrap(), key, value)
        .unwrap();
}

#[test]
fn a_healthy_store_passes_and_corruption_is_named() {
    let rx = Receiver::start(ReceiverOptions::default()).unwrap();
    let env = Env::new();
    let users = env.file("u.csv", b"distinct_id,uid\nd1,A1\nd2,A2\nd3,A3\n");
    env.ok(&["users", "import", path_str(&users)]);
    let seg = env.file("s.txt", b"d1\nd2\nd3\n");
    env.ok(&["segment", "import", "seg", path_str(&seg)]);
    env.ok(&["destination", "add", "dest", "--url", &rx.url()]);
    let sync = env.create_daily_sync("dest", &[]);
    env.ok(&["sync", "run", &sync]);
    let change = env.file("c.csv", b"distinct_id,uid\nd1,B1\nd3,\n");
    env.ok(&["users", "import", path_str(&change)]);
    env.ok(&["sync", "run", &sync]);

    let report = env.json(&["check"]);
    assert_eq!(report["violations"], serde_json::json!([]), "{report}");
    assert_eq!(
        (
            &report["users"],
            &report["executions"],
            &report["snapshots"]
        ),
        (&3.into(), &2.into(), &1.into())
    );

    // Execution 1-2's `added` bitmap (kind 2) replaced by garbage, and the
    // snapshot naming a user that does not exist.
    let sync_id: u32 = sync.parse().unwrap();
    let segment_id = {
        let store = segsync::store::Store::open(env.data()).unwrap();
        store.segment("seg").unwrap().unwrap().id
    };
    let mut key = Vec::new();
    key.extend_from_slice(&sync_id.to_be_bytes());
    key.extend_from_slice(&2u32.to_be_bytes());
    key.push(2);
    corrupt(&env, "exec_bitmaps", &key, b"\x01garbage");
    let mut ghost = roaring::RoaringBitmap::new();
    ghost.insert(1000);
    let mut bytes = vec![1u8];
    ghost.serialize_into(&mut bytes).unwrap();
    let mut skey = Vec::new();
    skey.extend_from_slice(&segment_id.to_be_bytes());
    skey.extend_from_slice(&1u32.to_be_bytes());
    corrupt(&env, "snapshots", &skey, &bytes);

    let out = env.run(&["check", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = report["violations"].to_string();
    assert!(
        text.contains("exec_bitmaps") && text.contains(&format!("execution {sync_id}-2 Added")),
        "{text}"
    );
    assert!(
        text.contains("segment 'seg' snapshot 1") && text.contains("names user 1000"),
        "{text}"
    );
    let human = env.run(&["check"]);
    assert_eq!(human.status.code(), Some(1));
    let n = report["violations"].as_array().unwrap().len();
    let stderr = String::from_utf8_lossy(&human.stderr);
    assert!(
        stderr.contains(&format!("breaks {n} invariant")),
        "{stderr}"
    );
}

//! Opening a data dir: data survives a restart, a different schema version
//! or a foreign directory is refused, a second opener is told the dir is
//! locked, and an import interrupted mid-way is rolled back at next open.

mod common;

use common::{path_str, Env};
use segsync::store::{AttrChange, Store, Value};

#[test]
fn data_survives_a_restart() {
    let env = Env::new();
    let seg = env.file("s.txt", b"a\nb\nc\n");
    let users = env.file("u.csv", b"distinct_id,uid\na,1\nb,2\n");
    env.ok(&["users", "import", path_str(&users)]);
    env.ok(&["segment", "import", "s", path_str(&seg)]);
    // Every command is a new process: reopen and read back.
    let d = env.json(&["segment", "diff", "s", "--attribute", "uid"]);
    assert_eq!(d["total"], 2);
    let store = Store::open(env.data()).unwrap();
    assert_eq!(store.counters().user_count, 3);
    let uid = store.attr_id("uid").unwrap();
    let b = store.user_index("b").unwrap().unwrap();
    assert_eq!(
        store.attr_value(uid, b).unwrap(),
        Some(Value::Str("2".into()))
    );
    // Known ids resolve to the same users after a restart (fingerprint table persisted).
    drop(store);
    let again = env.json(&["segment", "import", "s", path_str(&seg)]);
    assert_eq!(again["users_new"], 0);
    assert_eq!(again["users_known"], 3);
}

#[test]
fn a_stale_or_missing_fingerprint_table_is_rebuilt() {
    let env = Env::new();
    let seg = env.file("s.txt", b"a\nb\nc\n");
    env.ok(&["segment", "import", "s", path_str(&seg)]);
    std::fs::remove_file(env.data().join("fingerprints.bin")).unwrap();
    let s = env.json(&["segment", "import", "s", path_str(&seg)]);
    assert_eq!(
        s["users_new"], 0,
        "ids must still resolve to the known users"
    );
    std::fs::write(env.data().join("fingerprints.bin"), b"garbage").unwrap();
    let s = env.json(&["segment", "import", "s", path_str(&seg)]);
    assert_eq!(s["users_new"], 0);
}

#[test]
fn schema_mismatch_is_refused() {
    let env = Env::new();
    drop(Store::open(env.data()).unwrap());
    {
        let cfs =
            rocksdb::DB::list_cf(&rocksdb::Options::default(), env.data().join("db")).unwrap();
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), env.data().join("db"), &cfs)
            .unwrap();
        let meta = db.cf_handle("meta").unwrap();
        db.put_cf(meta, b"schema_version", 99u32.to_be_bytes())
            .unwrap();
    }
    let err = Store::open(env.data()).unwrap_err().to_string();
    assert!(err.contains("schema version 99"), "{err}");
    let out = env.run(&["segment", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("schema version 99"));
}

#[test]
fn a_new_data_dir_may_hold_its_config_file_first() {
    let env = Env::new();
    env.config("[limits]\ncool_off_minutes = 5\n");
    Store::open(env.data()).unwrap();
    env.ok(&["segment", "list"]);
}

#[test]
fn a_directory_that_is_not_a_store_is_refused() {
    let env = Env::new();
    std::fs::create_dir_all(env.data()).unwrap();
    std::fs::write(env.data().join("notes.txt"), b"hello").unwrap();
    let err = Store::open(env.data()).unwrap_err().to_string();
    assert!(err.contains("not a segsync data dir"), "{err}");
    // The foreign file is untouched.
    assert_eq!(
        std::fs::read(env.data().join("notes.txt")).unwrap(),
        b"hello"
    );
}

#[test]
fn a_second_opener_is_told_the_dir_is_locked() {
    let env = Env::new();
    let store = Store::open(env.data()).unwrap();
    // The same process: told apart from another command holding it.
    let err = Store::open(env.data()).unwrap_err().to_string();
    assert!(err.contains("already open in this process"), "{err}");
    // Another process, for real.
    let out = env.run(&["segment", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("locked by another process"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(store);
    env.ok(&["segment", "list"]);
}

#[test]
fn an_import_interrupted_without_rollback_is_undone_at_next_open() {
    let env = Env::new();
    let users = env.file("u.csv", b"distinct_id,uid\na,old-a\nb,old-b\n");
    env.ok(&["users", "import", path_str(&users)]);
    {
        let store = Store::open(env.data()).unwrap();
        let uid = store.attr_id("uid").unwrap();
        let a = store.user_index("a").unwrap().unwrap();
        let mut txn = store.begin_import().unwrap();
        let email = txn.attr("email");
        let z = txn.new_user(b"zed").unwrap();
        let mut changes = vec![
            AttrChange {
                attr: uid,
                user: a,
                value: Some(Value::Str("new-a".into())),
            },
            AttrChange {
                attr: uid,
                user: z,
                value: Some(Value::Str("z".into())),
            },
            AttrChange {
                attr: email,
                user: a,
                value: Some(Value::Str("a@x".into())),
            },
        ];
        // Enough new users and rows that intermediate batches reach RocksDB.
        for i in 0..40_000u32 {
            let id = format!("zed-{i}");
            let u = txn.new_user(id.as_bytes()).unwrap();
            changes.push(AttrChange {
                attr: email,
                user: u,
                value: Some(Value::Num(i.to_string())),
            });
        }
        txn.set_attrs(&changes).unwrap();
        // Simulate `kill -9`: the process "dies" without rollback or commit.
        std::mem::forget(txn);
    }
    // The writer mutex leaked with the forgotten txn, but the process-level
    // state is gone with the store; reopen as a new process would.
    let store = Store::open(env.data()).unwrap();
    let uid = store.attr_id("uid").unwrap();
    let a = store.user_index("a").unwrap().unwrap();
    assert_eq!(
        store.attr_value(uid, a).unwrap(),
        Some(Value::Str("old-a".into()))
    );
    assert_eq!(store.user_index("zed").unwrap(), None);
    assert_eq!(store.user_index("zed-39999").unwrap(), None);
    assert_eq!(store.distinct_id(2).unwrap(), None);
    assert_eq!(store.attr_id("email"), None);
    assert_eq!(store.counters().user_count, 2);
    assert_eq!(store.attr_present(uid).unwrap().len(), 2);
}

//! Overwritten and deleted attribute values stay readable as of any earlier
//! import (removals are sent with the value last delivered), and a failed
//! import leaves no history behind.

mod common;

use common::{path_str, Env};
use segsync::store::{Store, Value};

#[test]
fn values_are_readable_as_of_each_import() {
    let env = Env::new();
    let imports: [&[u8]; 3] = [
        b"distinct_id,uid\na,a1\nb,b1\n",
        b"distinct_id,uid\na,a2\nb,b1\n",
        b"distinct_id,uid\na,\nb,b3\n",
    ];
    for (i, content) in imports.iter().enumerate() {
        let p = env.file(&format!("u{i}.csv"), content);
        env.ok(&["users", "import", path_str(&p)]);
    }
    // A failing import must not leave history entries behind.
    let bad = env.file("bad.csv", b"distinct_id,uid\na,zzz\nb,zzz\n,oops\n");
    assert_eq!(
        env.run(&["users", "import", path_str(&bad)]).status.code(),
        Some(2)
    );

    let store = Store::open(env.data()).unwrap();
    let uid = store.attr_id("uid").unwrap();
    let (a, b) = (
        store.user_index("a").unwrap().unwrap(),
        store.user_index("b").unwrap().unwrap(),
    );
    let s = |v: &str| Some(Value::Str(v.into()));
    assert_eq!(store.attr_value_as_of(uid, a, 1).unwrap(), s("a1"));
    assert_eq!(store.attr_value_as_of(uid, a, 2).unwrap(), s("a2"));
    assert_eq!(store.attr_value_as_of(uid, a, 3).unwrap(), None);
    assert_eq!(store.attr_value_as_of(uid, a, 0).unwrap(), None);
    assert_eq!(store.attr_value_as_of(uid, b, 1).unwrap(), s("b1"));
    assert_eq!(store.attr_value_as_of(uid, b, 2).unwrap(), s("b1"));
    assert_eq!(store.attr_value_as_of(uid, b, 3).unwrap(), s("b3"));
    assert_eq!(store.attr_value(uid, a).unwrap(), None);
    assert!(!store.attr_present(uid).unwrap().contains(a));
    assert_eq!(store.counters().write_seq, 3);
}

#[test]
fn ndjson_keeps_types_and_null_deletes() {
    let env = Env::new();
    let p = env.file(
        "u.ndjson",
        br#"{"distinct_id":"a","age":31,"vip":true,"tags":["x"],"uid":"u1"}
{"distinct_id":7,"uid":"seven"}
{"distinct_id":"a","uid":null}
"#,
    );
    let s = env.json(&["users", "import", path_str(&p)]);
    assert_eq!(s["users_new"], 2);
    let store = Store::open(env.data()).unwrap();
    let a = store.user_index("a").unwrap().unwrap();
    let get = |name: &str, u: u32| store.attr_value(store.attr_id(name).unwrap(), u).unwrap();
    assert_eq!(get("age", a), Some(Value::Num("31".into())));
    assert_eq!(get("vip", a), Some(Value::Bool(true)));
    assert_eq!(get("tags", a), Some(Value::Json("[\"x\"]".into())));
    assert_eq!(get("uid", a), None, "null in a later row deletes");
    let seven = store.user_index("7").unwrap().unwrap();
    assert_eq!(get("uid", seven), Some(Value::Str("seven".into())));
}

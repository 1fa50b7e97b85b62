//! The import paths agree, model-based: random sequences of users files
//! (values set, replaced, deleted; ids repeated within a file; new and known
//! users) go through the CSV import, the NDJSON import (both write values
//! encoded in an arena, with undo bitmaps for first values), Personas
//! identify calls (the small transaction's `set_attrs`, presence by merge
//! deltas) and the CSV import looking ids up in the fingerprint table's
//! file instead of the loaded table, into four stores. Every store ends with the values the model
//! says — the last value in file order, `null`/empty deleting — and passes
//! the store's invariant check (presence bitmaps equal the values).

mod common;

use std::collections::BTreeMap;

use common::Env;
use proptest::prelude::*;
use segsync::inbound::personas::{self, Endpoint, Users};
use segsync::ingest::{self, Options};
use segsync::store::{Store, Value};

const USERS: u8 = 12;
const ATTRS: [&str; 3] = ["a", "b", "c"];

/// A row: user, and for each attribute the new value (`None` deletes).
type Row = (u8, [Option<u8>; 3]);

fn value_text(v: u8) -> String {
    // Some values look like numbers: a CSV cell and a JSON string are both
    // stored as strings all the same.
    if v.is_multiple_of(3) {
        format!("{v}")
    } else {
        format!("v{v} \"q\"")
    }
}

fn csv(rows: &[Row]) -> String {
    let mut out = String::from("distinct_id,a,b,c\n");
    for (u, vals) in rows {
        out.push_str(&format!("user-{u}"));
        for v in vals {
            out.push(',');
            if let Some(v) = v {
                out.push_str(&format!("\"{}\"", value_text(*v).replace('"', "\"\"")));
            }
        }
        out.push('\n');
    }
    out
}

fn traits(vals: &[Option<u8>; 3]) -> serde_json::Map<String, serde_json::Value> {
    ATTRS
        .iter()
        .zip(vals)
        .map(|(a, v)| {
            let v = v.map_or(serde_json::Value::Null, |v| value_text(v).into());
            (a.to_string(), v)
        })
        .collect()
}

fn ndjson(rows: &[Row]) -> String {
    rows.iter()
        .map(|(u, vals)| {
            let mut obj = traits(vals);
            obj.insert("distinct_id".into(), format!("user-{u}").into());
            serde_json::Value::Object(obj).to_string() + "\n"
        })
        .collect()
}

fn identify(store: &Store, users: &mut Users, row: &Row) {
    let auth = common::basic_auth("wk-import-paths", "");
    let body = serde_json::json!({"userId": format!("user-{}", row.0), "traits": traits(&row.1)});
    let r = personas::handle(
        store,
        users,
        Endpoint::Identify,
        Some(&auth),
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

fn contents(store: &Store) -> BTreeMap<(u8, &'static str), String> {
    let mut out = BTreeMap::new();
    for u in 0..USERS {
        let Some(idx) = store.user_index(&format!("user-{u}")).unwrap() else {
            continue;
        };
        for a in ATTRS {
            let Some(attr) = store.attr_id(a) else {
                continue;
            };
            match store.attr_value(attr, idx).unwrap() {
                Some(Value::Str(s)) => {
                    out.insert((u, a), s);
                }
                Some(other) => panic!("user-{u}.{a} stored as {other:?}"),
                None => {}
            }
        }
    }
    out
}

fn assert_sound(store: &Store, what: &str) {
    let report = store.check().unwrap();
    assert!(
        report.violations.is_empty(),
        "{what}: {:?}",
        report.violations
    );
}

fn rows() -> impl Strategy<Value = Vec<Row>> {
    let value = prop_oneof![1 => Just(None), 3 => (0u8..6).prop_map(Some)];
    prop::collection::vec((0..USERS, [value.clone(), value.clone(), value]), 1..25)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn csv_ndjson_and_identify_calls_store_the_same(files in prop::collection::vec(rows(), 1..4)) {
        let env = Env::new();
        let names = ["csv", "ndjson", "identify", "csv, ids looked up in the table file"];
        let dirs = names.map(|d| env.data().join(d));
        let stores = dirs.each_ref().map(|d| Store::open(d).unwrap());
        let paged = Options { lookups: ingest::Lookups::File, ..Options::default() };
        segsync::inbound::add_write_key(&stores[2], "wk", "wk-import-paths").unwrap();
        let mut users = Users::default();
        let mut model: BTreeMap<(u8, &'static str), String> = BTreeMap::new();
        for (n, rows) in files.iter().enumerate() {
            let c = env.file(&format!("f{n}.csv"), csv(rows).as_bytes());
            let j = env.file(&format!("f{n}.ndjson"), ndjson(rows).as_bytes());
            ingest::import_users(&stores[0], &c, &Options::default()).unwrap();
            ingest::import_users(&stores[1], &j, &Options::default()).unwrap();
            ingest::import_users(&stores[3], &c, &paged).unwrap();
            for row in rows {
                identify(&stores[2], &mut users, row);
            }
            for (u, vals) in rows {
                for (a, v) in ATTRS.iter().zip(vals) {
                    match v {
                        Some(v) => model.insert((*u, *a), value_text(*v)),
                        None => model.remove(&(*u, *a)),
                    };
                }
            }
            for (store, name) in stores.iter().zip(names) {
                prop_assert_eq!(&contents(store), &model, "{} after file {}", name, n);
                assert_sound(store, name);
            }
            // Both lookups number users alike, and leave table files that
            // find every user (the table file path saved its new users
            // to a tail or merged them into the main file as it read it).
            for u in 0..USERS {
                let id = format!("user-{u}");
                prop_assert_eq!(
                    stores[3].user_index(&id).unwrap(),
                    stores[0].user_index(&id).unwrap(),
                    "{} after file {}", id, n
                );
            }
        }
    }
}

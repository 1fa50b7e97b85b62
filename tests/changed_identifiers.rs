//! Changed identifiers of continuing members, model-based: random sequences
//! of user imports (values set, changed, changed back, deleted), real-time
//! writes, snapshot imports and runs of a daily sync, against a real
//! receiver and a real store. After every run the membership a destination
//! that knows users only by their identifier value rebuilds from the
//! requests equals `segment ∩ has(uid)` with the values users have *now*
//! (and so does the one rebuilt by distinct id). Retention at its tightest
//! may run between any two steps.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use common::{path_str, Env};
use proptest::prelude::*;
use segsync::checking_receiver::{Receiver, ReceiverOptions};
use segsync::ingest::{self, Options};
use segsync::lifecycle::actions;
use segsync::lifecycle::Trigger;
use segsync::pipeline::RunOptions;
use segsync::store::{AttrChange, Store, Value};

const USERS: usize = 10;

#[derive(Debug, Clone)]
enum Step {
    /// A users import: (user, new version or `None` to delete the value).
    Import(Vec<(usize, Option<u8>)>),
    /// A real-time write of one user's value (a Personas identify).
    Realtime(usize, Option<u8>),
    /// A new snapshot of the segment (a bit per user).
    Snapshot(u16),
    /// A run of the sync.
    Run,
    /// Retention at its tightest (one execution, one snapshot kept):
    /// whatever it removes, later runs must not need.
    Retain,
}

fn step() -> impl Strategy<Value = Step> {
    // Three versions per user: values change, and change back.
    let version = prop::option::weighted(0.85, 0u8..3);
    prop_oneof![
        3 => prop::collection::vec((0..USERS, version.clone()), 1..6).prop_map(Step::Import),
        2 => (0..USERS, version).prop_map(|(u, v)| Step::Realtime(u, v)),
        2 => any::<u16>().prop_map(Step::Snapshot),
        3 => Just(Step::Run),
        2 => Just(Step::Retain),
    ]
}

fn uid(user: usize, version: u8) -> String {
    format!("u{user}-v{version}")
}

/// What the model says a destination should hold: distinct id → uid.
fn expected(values: &[Option<u8>], members: u16) -> BTreeMap<String, String> {
    (0..USERS)
        .filter(|u| members & (1 << u) != 0)
        .filter_map(|u| values[u].map(|v| (format!("d{u}"), uid(u, v))))
        .collect()
}

fn import_users(env: &Env, store: &Store, rows: &[(usize, Option<u8>)], n: usize) {
    let mut csv = String::from("distinct_id,uid\n");
    for (u, v) in rows {
        let value = v.map(|v| uid(*u, v)).unwrap_or_default();
        csv.push_str(&format!("d{u},{value}\n"));
    }
    let p = env.file(&format!("users-{n}.csv"), csv.as_bytes());
    ingest::import_users(store, &p, &Options::default()).unwrap();
}

fn realtime(store: &Store, user: usize, version: Option<u8>) {
    let idx = store.user_index(&format!("d{user}")).unwrap().unwrap();
    let mut txn = store.begin_small().unwrap();
    let attr = txn.attr("uid");
    let changes = vec![AttrChange {
        attr,
        user: idx,
        value: version.map(|v| Value::Str(uid(user, v))),
    }];
    txn.set_attrs(&changes).unwrap();
    txn.commit(None).unwrap();
}

fn snapshot(env: &Env, store: &Store, members: u16, n: usize) {
    let ids: Vec<String> = (0..USERS)
        .filter(|u| members & (1 << u) != 0)
        .map(|u| format!("d{u}"))
        .collect();
    let p = env.file(&format!("seg-{n}.txt"), ids.join("\n").as_bytes());
    ingest::import_segment(store, "seg", &p, &Options::default()).unwrap();
}

fn check(rx: &Receiver, want: &BTreeMap<String, String>, after: usize) {
    let got = rx.received();
    assert!(got.errors.is_empty(), "{:?}", got.errors);
    let json = |s: &String| serde_json::to_string(s).unwrap();
    let by_value: BTreeMap<String, String> = got.by_value.into_iter().collect();
    let want_by_value: BTreeMap<String, String> =
        want.iter().map(|(id, v)| (json(v), id.clone())).collect();
    assert_eq!(
        by_value, want_by_value,
        "by identifier value, after step {after}"
    );
    let by_id: BTreeMap<String, String> = got.members.into_iter().collect();
    let want_by_id: BTreeMap<String, String> =
        want.iter().map(|(id, v)| (id.clone(), json(v))).collect();
    assert_eq!(by_id, want_by_id, "by distinct id, after step {after}");
}

fn scenario(initial: Vec<Option<u8>>, first: u16, steps: Vec<Step>) {
    let rx = Receiver::start(ReceiverOptions::default()).unwrap();
    let env = Env::new();
    // Every user exists (with or without a value) and the sync is set up
    // through the CLI, as a user would; the steps then drive the library.
    let rows: Vec<(usize, Option<u8>)> = initial.iter().copied().enumerate().collect();
    let mut csv = String::from("distinct_id,uid\n");
    for (u, v) in &rows {
        csv.push_str(&format!(
            "d{u},{}\n",
            v.map(|v| uid(*u, v)).unwrap_or_default()
        ));
    }
    // `uid` must exist as an attribute for the sync to be created.
    csv.push_str("anchor,anchor\n");
    let users = env.file("users.csv", csv.as_bytes());
    env.ok(&["users", "import", path_str(&users)]);
    let ids: Vec<String> = (0..USERS)
        .filter(|u| first & (1 << u) != 0)
        .map(|u| format!("d{u}"))
        .collect();
    let seg = env.file("seg.txt", ids.join("\n").as_bytes());
    env.ok(&["segment", "import", "seg", path_str(&seg)]);
    env.ok(&[
        "destination",
        "add",
        "dest",
        "--url",
        &rx.url(),
        "--retry-delay-ms",
        "1",
    ]);
    let sync: u32 = env.create_daily_sync("dest", &[]).parse().unwrap();

    let store = Store::open(env.data()).unwrap();
    let mut values = initial;
    let mut members = first;
    let mut ran = false;
    let opts = RunOptions::default();
    for (n, step) in steps.into_iter().chain([Step::Run]).enumerate() {
        match step {
            Step::Import(rows) => {
                import_users(&env, &store, &rows, n);
                let mut last: HashMap<usize, Option<u8>> = HashMap::new();
                for (u, v) in rows {
                    last.insert(u, v);
                }
                for (u, v) in last {
                    values[u] = v;
                }
            }
            Step::Realtime(u, v) => {
                realtime(&store, u, v);
                values[u] = v;
            }
            Step::Snapshot(m) => {
                snapshot(&env, &store, m, n);
                members = m;
            }
            Step::Retain => {
                let tightest = segsync::store::RetentionPolicy {
                    keep_executions: 1,
                    keep_snapshots: 1,
                };
                store.apply_retention(tightest).unwrap();
                let report = store.check().unwrap();
                assert!(
                    report.violations.is_empty(),
                    "step {n}: {:?}",
                    report.violations
                );
            }
            Step::Run => {
                let exec = actions::run(&store, sync, Trigger::Scheduled, &opts, "test").unwrap();
                assert_eq!(
                    exec.error, None,
                    "step {n}: the run must complete ({exec:?})"
                );
                if ran {
                    assert_eq!(exec.kind, segsync::store::ExecKind::Diff);
                }
                ran = true;
                check(&rx, &expected(&values, members), n);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_destination_holds_the_current_identifiers_after_every_run(
        initial in prop::collection::vec(prop::option::weighted(0.8, 0u8..3), USERS),
        first in any::<u16>(),
        steps in prop::collection::vec(step(), 0..12),
    ) {
        scenario(initial, first, steps);
    }
}

/// The case as a user met it: d1's uid changes, d2's is deleted;
/// the next run removes A1 and A2, adds B1, and says one was updated.
#[test]
fn a_changed_uid_is_sent_as_removal_of_the_old_and_addition_of_the_new() {
    let rx = Receiver::start(ReceiverOptions::default()).unwrap();
    let env = Env::new();
    let users = env.file("u.csv", b"distinct_id,uid\nd1,A1\nd2,A2\nd3,A3\n");
    env.ok(&["users", "import", path_str(&users)]);
    let seg = env.file("v.txt", b"d1\nd2\nd3\n");
    env.ok(&["segment", "import", "seg", path_str(&seg)]);
    env.ok(&["destination", "add", "dest", "--url", &rx.url()]);
    let sync = env.create_daily_sync("dest", &[]);
    assert_eq!(env.json(&["sync", "run", &sync])["added"], 3);

    let change = env.file("c.csv", b"distinct_id,uid\nd1,B1\nd2,\n");
    env.ok(&["users", "import", path_str(&change)]);
    let plan = env.json(&["sync", "plan", &sync]);
    assert_eq!(
        (
            &plan["execution"]["added"],
            &plan["execution"]["removed"],
            &plan["execution"]["updated"]
        ),
        (
            &serde_json::json!(0),
            &serde_json::json!(1),
            &serde_json::json!(1)
        ),
        "{plan}"
    );
    let run = env.json(&["sync", "run", &sync]);
    assert_eq!(run["updated"], 1, "{run}");
    let got = rx.received();
    let values: BTreeSet<&str> = got.by_value.keys().map(String::as_str).collect();
    assert_eq!(values, BTreeSet::from(["\"A3\"", "\"B1\""]));
    assert_eq!(got.members["d1"], "\"B1\"");
    assert!(!got.members.contains_key("d2"));
}

//! App-to-app segment sync over real HTTP between two instances: a source
//! data dir syncs a segment with the Cohort Sync format to a destination
//! `segsync serve` (the real binary). After each periodic run, the
//! destination's segment is exactly the source segment's uid set restricted
//! to users that exist in the destination.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{path_str, Env, Lcg};
use segsync::store::Store;

struct Dest {
    child: Child,
    base: String,
}

impl Dest {
    fn start(env: &Env) -> Dest {
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("segsync"))
            .arg("--data-dir")
            .arg(env.data())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .rsplit(' ')
            .next()
            .expect("listening address")
            .to_string();
        assert!(base.starts_with("http://127.0.0.1:"), "{line}");
        Dest { child, base }
    }

    /// SIGTERM, then wait for a clean exit.
    fn stop(mut self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                assert!(s.success(), "serve exited with {s}");
                return;
            }
            assert!(Instant::now() < deadline, "serve did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Members of the latest snapshot of `segment`, as distinct ids.
fn members(env: &Env, segment: &str) -> BTreeSet<String> {
    let store = Store::open(env.data()).unwrap();
    let seg = store.segment(segment).unwrap().expect("segment received");
    store
        .snapshot_members(seg.id, seg.latest().unwrap().seq)
        .unwrap()
        .iter()
        .map(|u| store.distinct_id(u).unwrap().unwrap())
        .collect()
}

fn get_json(url: &str) -> serde_json::Value {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let text = reqwest::get(url).await.unwrap().text().await.unwrap();
        serde_json::from_str(&text).unwrap()
    })
}

#[test]
fn a_segment_syncs_to_another_workspace_with_removals_on_the_next_run() {
    let mut rng = Lcg(42);
    let (src, dst) = (Env::new(), Env::new());

    // Source: 3000 users; every 10th has no uid (anonymous, cannot be synced).
    let n = 3000;
    let uid = |i: usize| format!("uid-{i:05}");
    let mut csv = String::from("distinct_id,uid\n");
    for i in 0..n {
        let u = if i % 10 == 0 { String::new() } else { uid(i) };
        csv.push_str(&format!("src-{i},{u}\n"));
    }
    let f = src.file("users.csv", csv.as_bytes());
    src.ok(&["users", "import", path_str(&f)]);

    // Destination: 70% of the source's uids under other distinct ids, plus
    // 300 users the source does not have.
    let mut dest_of_uid: BTreeMap<String, String> = BTreeMap::new();
    let mut csv = String::from("distinct_id,uid,anonymous_id\n");
    for i in 0..n {
        if rng.next() % 10 < 7 {
            csv.push_str(&format!("dst-{i},{},anon-{i}\n", uid(i)));
            dest_of_uid.insert(uid(i), format!("dst-{i}"));
        }
    }
    for j in 0..300 {
        csv.push_str(&format!("only-dst-{j},other-{j},\n"));
    }
    let f = dst.file("users.csv", csv.as_bytes());
    dst.ok(&["users", "import", path_str(&f)]);
    dst.ok(&[
        "workspace",
        "add",
        "ws-b",
        "--data-api-key",
        "ws-b-data-key",
    ]);
    let dest = Dest::start(&dst);

    // The source segment: a random half.
    let mut segment: BTreeSet<usize> = (0..n).filter(|_| rng.next().is_multiple_of(2)).collect();
    let write_segment = |env: &Env, seg: &BTreeSet<usize>, name: &str| {
        let ids: Vec<String> = seg.iter().map(|i| format!("src-{i}")).collect();
        let f = env.file(name, ids.join("\n").as_bytes());
        env.ok(&["segment", "import", "high value", path_str(&f)]);
    };
    write_segment(&src, &segment, "s1.txt");
    src.ok(&[
        "destination",
        "add",
        "workspace-b",
        "--format",
        "cohortsync",
        "--url",
        &format!("{}/v1/integrations/cohortsync", dest.base),
        "--workspace-id",
        "ws-b",
        "--data-api-key",
        "ws-b-data-key",
        "--page-size",
        "500",
        "--rpm",
        "6000",
    ]);
    // The connection test succeeds and uses a cohort of its own.
    let test = src.ok(&["destination", "test", "workspace-b"]);
    assert!(test.contains("connection ok"), "{test}");
    assert!(test.contains(".segsync-connection-test"), "{test}");
    let sync = src.json(&[
        "sync",
        "create",
        "--segment",
        "high value",
        "--destination",
        "workspace-b",
        "--attribute",
        "uid",
        "--every",
        "daily",
    ])["id"]
        .to_string();
    let expected = |seg: &BTreeSet<usize>| -> BTreeSet<String> {
        seg.iter()
            .filter(|i| *i % 10 != 0)
            .filter_map(|&i| dest_of_uid.get(&uid(i)).cloned())
            .collect()
    };

    let out = src.ok(&["sync", "run", &sync]);
    assert!(out.contains("complete"), "{out}");
    // Check through the destination's own API while it runs.
    let api = get_json(&format!("{}/api/v1/segments/.high value", dest.base));
    assert_eq!(api["snapshots"][0]["members"], expected(&segment).len());

    // Next period: 200 members leave, 150 join.
    let leaving: Vec<usize> = segment
        .iter()
        .copied()
        .filter(|_| rng.next().is_multiple_of(7))
        .take(200)
        .collect();
    for i in &leaving {
        segment.remove(i);
    }
    let joining: Vec<usize> = (0..n)
        .filter(|i| !segment.contains(i))
        .filter(|_| rng.next().is_multiple_of(5))
        .take(150)
        .collect();
    segment.extend(joining);
    write_segment(&src, &segment, "s2.txt");
    src.ok(&["sync", "run", &sync]);
    let h = src.json(&["sync", "history", &sync]);
    assert_eq!(h[1]["kind"], "diff");
    assert!(h[1]["removed"].as_u64().unwrap() > 100, "{h}");
    assert!(h[1]["added"].as_u64().unwrap() > 100, "{h}");
    dest.stop();

    assert_eq!(members(&dst, ".high value"), expected(&segment));
    {
        let store = Store::open(dst.data()).unwrap();
        assert_eq!(
            store.counters().user_count as usize,
            dest_of_uid.len() + 300
        );
    }

    // The received cohort is a segment like any other: sync it onward.
    let rx = common::Scripted::start(|_, _| common::ok_json());
    dst.ok(&["destination", "add", "crm", "--url", &rx.url("/hook")]);
    let onward = dst.json(&[
        "sync",
        "create",
        "--segment",
        ".high value",
        "--destination",
        "crm",
        "--attribute",
        "uid",
        "--once",
    ])["id"]
        .to_string();
    dst.ok(&["sync", "run", &onward]);
    let sent: BTreeSet<String> = rx
        .seen()
        .iter()
        .flat_map(|r| r.body["data"]["add_users"].as_array().unwrap().clone())
        .map(|u| u["uid"].as_str().unwrap().to_string())
        .collect();
    let want: BTreeSet<String> = segment
        .iter()
        .filter(|i| *i % 10 != 0 && dest_of_uid.contains_key(&uid(**i)))
        .map(|&i| uid(i))
        .collect();
    assert_eq!(sent, want);
}

//! Import → diff equals an independent computation with hash sets, for
//! random data, through the real binary and the real store.

mod common;

use std::collections::{HashMap, HashSet};

use common::{path_str, Env, Lcg};

#[test]
fn diff_counts_match_hash_sets_for_random_data() {
    for seed in [1u64, 2, 3] {
        let env = Env::new();
        let mut rng = Lcg(seed);
        let n = 3000;
        let ids: Vec<String> = (0..n).map(|i| format!("user-{seed}-{i}")).collect();
        // Users: about 70% have a uid; some rows repeat (last one wins).
        let mut users = String::from("distinct_id,uid,email\n");
        let mut uid: HashMap<&str, Option<String>> = HashMap::new();
        for id in &ids {
            let v = (rng.next() % 10 < 7).then(|| format!("u{}", rng.next()));
            users.push_str(&format!("{id},{},x@y.z\n", v.as_deref().unwrap_or("")));
            uid.insert(id, v);
        }
        for id in ids.iter().step_by(17) {
            users.push_str(&format!("{id},,x@y.z\n"));
            uid.insert(id, None);
        }
        let users_path = env.file("users.csv", users.as_bytes());
        env.ok(&["users", "import", path_str(&users_path)]);

        // Two snapshots over a slightly larger universe (unknown ids are new users),
        // with duplicates inside a file.
        let pick = |rng: &mut Lcg| -> Vec<String> {
            (0..n + 500)
                .filter(|_| !rng.next().is_multiple_of(3))
                .map(|i| format!("user-{seed}-{i}"))
                .collect()
        };
        let s1 = pick(&mut rng);
        let s2 = pick(&mut rng);
        let mut f1 = s1.join("\n");
        f1.push('\n');
        f1.push_str(&s1[..10].join("\n"));
        let p1 = env.file("s1.txt", f1.as_bytes());
        let p2 = env.file("s2.txt", s2.join("\n").as_bytes());
        let imp1 = env.json(&["segment", "import", "seg", path_str(&p1)]);
        assert_eq!(imp1["lines"], s1.len() as u64 + 10);
        let set1: HashSet<&String> = s1.iter().collect();
        assert_eq!(imp1["members"], set1.len() as u64, "duplicates count once");
        env.ok(&["segment", "import", "seg", path_str(&p2)]);

        let has_uid = |id: &&String| uid.get(id.as_str()).is_some_and(|v| v.is_some());
        let set2: HashSet<&String> = s2.iter().collect();
        let cur: HashSet<&String> = set2.iter().copied().filter(has_uid).collect();
        let prev: HashSet<&String> = set1.iter().copied().filter(has_uid).collect();
        let added: HashSet<String> = cur.difference(&prev).map(|s| s.to_string()).collect();
        let removed: HashSet<String> = prev.difference(&cur).map(|s| s.to_string()).collect();

        let d = env.json(&["segment", "diff", "seg", "--attribute", "uid", "--ids"]);
        assert_eq!(d["added"], added.len() as u64);
        assert_eq!(d["removed"], removed.len() as u64);
        assert_eq!(d["total"], cur.len() as u64);
        let list =
            |k: &str| -> HashSet<String> { serde_json::from_value(d[k].clone()).expect("id list") };
        let (ga, gr) = (list("added_ids"), list("removed_ids"));
        assert_eq!(ga, added);
        assert_eq!(gr, removed);

        // Without the attribute: plain membership diff.
        let plain = env.json(&["segment", "diff", "seg"]);
        assert_eq!(plain["added"], set2.difference(&set1).count() as u64);
        assert_eq!(plain["removed"], set1.difference(&set2).count() as u64);
    }
}

#[test]
fn users_lacking_the_attribute_are_outside_current() {
    let env = Env::new();
    let users = env.file(
        "u.ndjson",
        b"{\"distinct_id\":\"a\",\"email\":\"a@x\"}\n{\"distinct_id\":\"b\",\"email\":null}\n{\"distinct_id\":\"c\"}\n",
    );
    env.ok(&["users", "import", path_str(&users)]);
    let seg = env.file("s.txt", b"a\nb\nc\n");
    env.ok(&["segment", "import", "s", path_str(&seg)]);
    let d = env.json(&["segment", "diff", "s", "--attribute", "email", "--ids"]);
    assert_eq!(d["total"], 1);
    assert_eq!(d["added"], 1);
    let out = env.run(&["segment", "diff", "s", "--attribute", "phone"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("phone Type string attribute not found"));
}

#[test]
fn a_new_id_repeated_in_one_file_becomes_one_user() {
    let env = Env::new();
    // Repeats close together and far apart (beyond one 16 MiB block).
    let mut ids: Vec<String> = (0..50).map(|i| format!("fresh-{i}")).collect();
    ids.extend((0..50).map(|i| format!("fresh-{i}")));
    let filler: Vec<String> = (0..1_300_000).map(|i| format!("filler-{i:07}")).collect();
    ids.extend(filler.iter().cloned());
    ids.extend((0..50).map(|i| format!("fresh-{i}")));
    let p = env.file("dups.txt", ids.join("\n").as_bytes());
    let s = env.json(&["segment", "import", "s", path_str(&p)]);
    assert!(std::fs::metadata(&p).unwrap().len() > 16 << 20);
    assert_eq!(s["lines"], ids.len() as u64);
    assert_eq!(s["members"], 1_300_050);
    assert_eq!(s["users_new"], 1_300_050);
    let again = env.json(&["segment", "import", "s", path_str(&p)]);
    assert_eq!(again["users_new"], 0);
    assert_eq!(again["users_known"], 1_300_050);
}

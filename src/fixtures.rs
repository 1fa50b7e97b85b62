//! Deterministic test data: `users.csv` and two snapshots that differ by a
//! churn fraction. The same arguments always give the same bytes, so
//! benchmarks and tests can regenerate instead of committing big files.
//!
//! Each user `i` draws its values from a SplitMix64 stream keyed by the seed
//! and `i`, independent of the other users: `u < churn/2` users join in the
//! second snapshot, `churn/2 ≤ u < churn` users leave it, the rest are in
//! both. Distinct ids are a bijective scramble of `i` (14 bytes, unique).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Generator parameters.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Number of users.
    pub users: u64,
    /// Fraction of users whose membership differs between the snapshots.
    pub churn: f64,
    /// Share of users that have a `uid`.
    pub attribute_coverage: f64,
    /// Random seed.
    pub seed: u64,
}

/// What was written.
#[derive(Debug, Clone, Serialize)]
pub struct Generated {
    /// `users.csv`.
    pub users_csv: PathBuf,
    /// `snapshot_1.txt`.
    pub snapshot_1: PathBuf,
    /// `snapshot_2.txt`.
    pub snapshot_2: PathBuf,
    /// Users written.
    pub users: u64,
    /// Members of snapshot 1.
    pub snapshot_1_members: u64,
    /// Members of snapshot 2.
    pub snapshot_2_members: u64,
    /// Users with a uid.
    pub with_uid: u64,
}

/// SplitMix64: tiny, fast and good enough for test data.
pub(crate) struct SplitMix(u64);

impl SplitMix {
    pub(crate) fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A bijection on 52-bit integers, so ids look random yet never repeat.
fn scramble52(i: u64) -> u64 {
    const MASK: u64 = (1 << 52) - 1;
    let mut x = i & MASK;
    x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15 | 1) & MASK;
    x ^= x >> 26;
    x = x.wrapping_mul(0xC2B2_AE3D_27D4_EB4F | 1) & MASK;
    x ^= x >> 26;
    x
}

/// The distinct id of generated user `i`.
pub fn distinct_id(i: u64) -> String {
    format!("d{:013x}", scramble52(i))
}

/// The write key Personas loads send with (`segsync bench`,
/// `benches/personas.rs`).
pub const BENCH_WRITE_KEY: &str = "bench-write-key";

/// `Basic` credentials of [`BENCH_WRITE_KEY`] (no password).
pub fn bench_basic_auth() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{BENCH_WRITE_KEY}:"))
}

/// The body of Personas identify call `k` of a load: even calls update one
/// of the `known` generated users (spread over them by a multiplicative
/// hash), odd ones (all of them if `known` is 0) a new user `rt-<n>`, `n`
/// from `new_id`.
pub fn identify_body(k: u64, known: u64, new_id: impl FnOnce() -> u64) -> String {
    let id = if k.is_multiple_of(2) && known > 0 {
        distinct_id(k.wrapping_mul(2_654_435_761) % known)
    } else {
        format!("rt-{}", new_id())
    };
    format!(
        r#"{{"userId":"{id}","traits":{{"plan":"p{}","score":{k}}}}}"#,
        k % 7
    )
}

/// A `/v1/batch` body of identify events, from [`identify_body`]'s bodies.
pub fn batch_body(identify_bodies: impl IntoIterator<Item = String>) -> String {
    let mut body = String::from(r#"{"batch":["#);
    for (i, b) in identify_bodies.into_iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(r#"{"type":"identify","#);
        body.push_str(b.strip_prefix('{').unwrap_or(&b));
    }
    body.push_str("]}");
    body
}

/// Per-user draws, the same wherever they are needed.
pub(crate) struct UserDraw {
    pub(crate) membership: f64,
    pub(crate) has_uid: bool,
    pub(crate) plan: &'static str,
    pub(crate) age: u64,
    pub(crate) vip: bool,
}

pub(crate) fn draw(spec: &Spec, i: u64) -> UserDraw {
    let mut r = SplitMix::new(spec.seed ^ i.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    UserDraw {
        membership: r.unit(),
        has_uid: r.unit() < spec.attribute_coverage,
        plan: ["free", "pro", "enterprise"][(r.next_u64() % 3) as usize],
        age: 18 + r.next_u64() % 63,
        vip: r.next_u64().is_multiple_of(10),
    }
}

impl UserDraw {
    pub(crate) fn in_snapshot_1(&self, churn: f64) -> bool {
        self.membership >= churn / 2.0
    }

    pub(crate) fn in_snapshot_2(&self, churn: f64) -> bool {
        self.membership < churn / 2.0 || self.membership >= churn
    }
}

/// Writes `users.csv`, `snapshot_1.txt` and `snapshot_2.txt` into `out`.
pub fn generate(spec: &Spec, out: &Path) -> std::io::Result<Generated> {
    std::fs::create_dir_all(out)?;
    let paths = [
        out.join("users.csv"),
        out.join("snapshot_1.txt"),
        out.join("snapshot_2.txt"),
    ];
    let open = |p: &PathBuf| File::create(p).map(|f| BufWriter::with_capacity(1 << 20, f));
    let (mut users, mut s1, mut s2) = (open(&paths[0])?, open(&paths[1])?, open(&paths[2])?);
    writeln!(users, "distinct_id,uid,email,plan,age,vip")?;
    let mut g = Generated {
        users_csv: paths[0].clone(),
        snapshot_1: paths[1].clone(),
        snapshot_2: paths[2].clone(),
        users: spec.users,
        snapshot_1_members: 0,
        snapshot_2_members: 0,
        with_uid: 0,
    };
    for i in 0..spec.users {
        let d = draw(spec, i);
        let id = distinct_id(i);
        if d.has_uid {
            g.with_uid += 1;
            write!(users, "{id},uid-{i}")?;
        } else {
            write!(users, "{id},")?;
        }
        writeln!(users, ",user{i}@example.com,{},{},{}", d.plan, d.age, d.vip)?;
        if d.in_snapshot_1(spec.churn) {
            g.snapshot_1_members += 1;
            writeln!(s1, "{id}")?;
        }
        if d.in_snapshot_2(spec.churn) {
            g.snapshot_2_members += 1;
            writeln!(s2, "{id}")?;
        }
    }
    for w in [&mut users, &mut s1, &mut s2] {
        w.flush()?;
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn personas_load_bodies_are_identify_calls_and_batches_of_them() {
        let mut next = 6;
        let mut new_id = || {
            next += 1;
            next
        };
        let known = identify_body(4, 10, &mut new_id);
        let fresh = identify_body(5, 10, &mut new_id);
        let only_new = identify_body(4, 0, &mut new_id);
        let v: serde_json::Value = serde_json::from_str(&known).unwrap();
        assert_eq!(v["userId"], distinct_id(4 * 2_654_435_761 % 10));
        assert_eq!(v["traits"]["plan"], "p4");
        assert_eq!(v["traits"]["score"], 4);
        let v: serde_json::Value = serde_json::from_str(&fresh).unwrap();
        assert_eq!(v["userId"], "rt-7");
        let v: serde_json::Value = serde_json::from_str(&only_new).unwrap();
        assert_eq!(v["userId"], "rt-8");

        let batch: serde_json::Value = serde_json::from_str(&batch_body([known, fresh])).unwrap();
        let events = batch["batch"].as_array().unwrap();
        assert_eq!(events.len(), 2);
        assert!(events.iter().all(|e| e["type"] == "identify"));
        assert_eq!(events[1]["userId"], "rt-7");
        assert_eq!(events[1]["traits"]["score"], 5);
        assert_eq!(batch_body([]), r#"{"batch":[]}"#);
    }

    #[test]
    fn scramble_is_injective_on_a_range() {
        let ids: HashSet<u64> = (0..200_000).map(scramble52).collect();
        assert_eq!(ids.len(), 200_000);
        assert_eq!(distinct_id(5).len(), 14);
    }

    #[test]
    fn generation_is_deterministic_and_churn_matches() {
        let spec = Spec {
            users: 20_000,
            churn: 0.1,
            attribute_coverage: 0.8,
            seed: 7,
        };
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ga = generate(&spec, a.path()).unwrap();
        generate(&spec, b.path()).unwrap();
        for f in ["users.csv", "snapshot_1.txt", "snapshot_2.txt"] {
            assert_eq!(
                std::fs::read(a.path().join(f)).unwrap(),
                std::fs::read(b.path().join(f)).unwrap()
            );
        }
        let read = |p: &Path| -> HashSet<String> {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(String::from)
                .collect()
        };
        let (s1, s2) = (read(&ga.snapshot_1), read(&ga.snapshot_2));
        let changed = s1.symmetric_difference(&s2).count() as f64;
        assert!((changed / 20_000.0 - 0.1).abs() < 0.01, "churn {changed}");
        assert!((ga.with_uid as f64 / 20_000.0 - 0.8).abs() < 0.02);
    }
}

//! A full disk and a corrupt file, with the real binary. The data dir sits
//! on a small tmpfs the test mounts itself (skipped, saying so, where it
//! cannot mount): an import that runs out of space fails with a clear "no
//! space left" error and stores nothing; once space is freed the store
//! opens, `segsync check` passes and the import works. A sync whose
//! checkpoint cannot be written stops instead of sending pages it could
//! not record, and resumes exactly once space is back. A flipped byte in
//! an SST file is reported as corruption naming the column family, with
//! exit code 1, never a panic.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{ok_json, path_str, Env, Scripted};

/// A tmpfs of `mb` megabytes mounted on a fresh directory, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mb: u32) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN); the full-disk cases did not run"
            );
            return None;
        }
        Some(SmallDisk { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the disk but for about `leave` bytes, in `filler-N` files.
    fn fill(&self, leave: u64) {
        let chunk = vec![0x5au8; 64 << 10];
        let mut n = 0;
        loop {
            let free = fs_free(self.path());
            if free <= leave + chunk.len() as u64 {
                break;
            }
            let p = self.path().join(format!("filler-{n}"));
            if std::fs::write(&p, &chunk).is_err() {
                break;
            }
            n += 1;
        }
    }

    /// Fills every last byte.
    fn fill_up(&self) {
        let chunk = vec![0x5au8; 4 << 10];
        for n in 0.. {
            if std::fs::write(self.path().join(format!("last-{n}")), &chunk).is_err() {
                break;
            }
        }
    }

    fn free_space(&self) {
        for e in std::fs::read_dir(self.path()).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("filler-") || name.starts_with("last-") {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).output();
    }
}

fn fs_free(p: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0)
}

fn segsync(data: &Path, args: &[&str]) -> std::process::Output {
    Command::new(assert_cmd::cargo::cargo_bin("segsync"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .unwrap()
}

/// Runs and expects success.
fn segsync_ok(data: &Path, args: &[&str]) {
    let out = segsync(data, args);
    assert!(
        out.status.success(),
        "segsync {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs an import that cannot fit and expects it to fail with the store's
/// full-disk error, never a panic; returns its stderr.
fn out_of_space(data: &Path, args: &[&str]) -> String {
    let out = segsync(data, args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the import cannot fit");
    assert_ne!(out.status.code(), Some(101), "a panic: {err}");
    assert!(err.to_lowercase().contains("no space left"), "{err}");
    err
}

fn ids_file(env: &Env, name: &str, from: usize, to: usize) -> PathBuf {
    let ids: Vec<String> = (from..to).map(|i| format!("user-{i:09}")).collect();
    env.file(name, ids.join("\n").as_bytes())
}

#[test]
fn an_import_that_runs_out_of_space_stores_nothing_and_works_once_freed() {
    let Some(disk) = SmallDisk::mount(48) else {
        return;
    };
    let env = Env::new();
    let data = disk.path().join("data");
    let small = ids_file(&env, "small.txt", 0, 1000);
    segsync_ok(&data, &["segment", "import", "seg", path_str(&small)]);
    disk.fill(2 << 20);
    // 600K new users need far more than 2 MB.
    let big = ids_file(&env, "big.txt", 1000, 601_000);
    out_of_space(&data, &["segment", "import", "seg", path_str(&big)]);

    disk.free_space();
    checked(&data);
    let list = segsync(&data, &["segment", "list", "--json"]);
    let segs: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(
        segs[0]["snapshots"], 1,
        "nothing of the failed import: {segs}"
    );
    assert_eq!(segs[0]["members"], 1000, "{segs}");
    segsync_ok(&data, &["segment", "import", "seg", path_str(&big)]);
    checked(&data);
}

/// The check's figures, asserting it found nothing wrong.
fn checked(data: &Path) -> serde_json::Value {
    let out = segsync(data, &["check", "--json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["violations"], serde_json::json!([]), "{report}");
    report
}

/// A users file in an order of its own goes through the import's sort and
/// its value files; a full disk there fails the same clear way and leaves
/// no attribute, value or user behind.
#[test]
fn a_users_import_out_of_order_that_runs_out_of_space_stores_nothing() {
    let Some(disk) = SmallDisk::mount(64) else {
        return;
    };
    let env = Env::new();
    let data = disk.path().join("data");
    let members = ids_file(&env, "members.txt", 0, 200_000);
    segsync_ok(&data, &["segment", "import", "seg", path_str(&members)]);
    // The same users, last first, with two values each (about 18 MB).
    let mut csv = String::from("distinct_id,uid,note\n");
    for i in (0..200_000).rev() {
        csv.push_str(&format!(
            "user-{i:09},uid-{i:012}-aaaaaaaaaaaaaaaaaaaa,note {i} bbbbbbbbbbbbbbbbbbbbbbbbbbbb\n"
        ));
    }
    let users = env.file("users.csv", csv.as_bytes());
    disk.fill(2 << 20);
    let err = out_of_space(&data, &["users", "import", path_str(&users)]);
    assert!(err.contains("free space and run it again"), "{err}");

    disk.free_space();
    let report = checked(&data);
    assert_eq!(report["users"], 200_000, "{report}");
    assert_eq!(
        report["attributes"], 0,
        "no attribute of the failed import: {report}"
    );
    let leftovers: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("import-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "files of the failed import: {leftovers:?}"
    );

    segsync_ok(&data, &["users", "import", path_str(&users)]);
    let report = checked(&data);
    assert_eq!(report["users"], 200_000, "{report}");
    assert_eq!(report["attributes"], 2, "{report}");
}

#[test]
fn a_sync_that_cannot_checkpoint_stops_sending_and_resumes_once_freed() {
    let Some(disk) = SmallDisk::mount(64) else {
        return;
    };
    let env = Env::new();
    let data = disk.path().join("data");
    // 100 pages of 100, one every 20 ms or so.
    let rx = Scripted::start(|_, _| {
        let mut r = ok_json();
        r.3 = Duration::from_millis(20);
        r
    });
    let mut csv = String::from("distinct_id,uid\n");
    for i in 0..10_000 {
        csv.push_str(&format!("u{i:05},uid{i}\n"));
    }
    let users = env.file("users.csv", csv.as_bytes());
    let ids: Vec<String> = (0..10_000).map(|i| format!("u{i:05}")).collect();
    let members = env.file("members.txt", ids.join("\n").as_bytes());
    for args in [
        vec!["users", "import", path_str(&users)],
        vec!["segment", "import", "seg", path_str(&members)],
        vec![
            "destination",
            "add",
            "dest",
            "--url",
            &rx.url("/"),
            "--page-size",
            "100",
            "--in-flight",
            "1",
        ],
        vec![
            "sync",
            "create",
            "--segment",
            "seg",
            "--destination",
            "dest",
            "--attribute",
            "uid",
            "--every",
            "daily",
        ],
    ] {
        let out = segsync(&data, &args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut run = Command::new(assert_cmd::cargo::cargo_bin("segsync"))
        .arg("--data-dir")
        .arg(&data)
        .args(["sync", "run", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once pages flow, the disk fills to the last byte.
    let deadline = Instant::now() + Duration::from_secs(20);
    while rx.seen().len() < 5 {
        assert!(Instant::now() < deadline, "no page sent");
        std::thread::sleep(Duration::from_millis(5));
    }
    disk.fill_up();
    let status = run.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(run.stderr.as_mut().unwrap(), &mut err).unwrap();
    let sent = rx.seen().len();
    assert!(
        !status.success(),
        "the run cannot complete without its checkpoints"
    );
    assert_ne!(status.code(), Some(101), "a panic: {err}");
    assert!(err.to_lowercase().contains("no space left"), "{err}");

    disk.free_space();
    assert!(segsync(&data, &["check"]).status.success());
    // Pages sent but not recorded: at most the one in flight and the one
    // whose acknowledgement was being written when the write failed (the
    // last, partly used page of the log file takes a few more records
    // after the disk is "full"; those are recorded).
    let history = segsync(&data, &["sync", "history", "1", "--json"]);
    let history: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    let recorded = history[0]["pages_done"].as_u64().unwrap() as usize;
    assert!(
        sent < 100 && sent <= recorded + 2,
        "pages went on after the checkpoint failed: {sent} sent, {recorded} recorded ({err})"
    );
    let out = segsync(&data, &["sync", "run", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut members = std::collections::BTreeSet::new();
    for r in rx.seen() {
        for u in r.body["data"]["add_users"].as_array().into_iter().flatten() {
            members.insert(u["uid"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(
        members.len(),
        10_000,
        "every member arrives once space is back"
    );
}

#[test]
fn a_flipped_byte_in_an_sst_file_is_reported_as_corruption_never_a_panic() {
    let env = Env::new();
    let marker = "segment-with-a-long-recognisable-name-for-the-corruption-test";
    let ids = env.file("ids.txt", b"a\nb\nc\n");
    env.ok(&["segment", "import", marker, path_str(&ids)]);
    // Flushed into SST files.
    env.ok(&["compact"]);
    let db = env.data().join("db");
    let mut flipped = false;
    for e in std::fs::read_dir(&db).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "sst") {
            let mut bytes = std::fs::read(&p).unwrap();
            if let Some(at) = bytes
                .windows(marker.len())
                .position(|w| w == marker.as_bytes())
            {
                bytes[at + 10] ^= 0xff;
                std::fs::write(&p, bytes).unwrap();
                flipped = true;
            }
        }
    }
    assert!(flipped, "the segment's record is in an SST file");
    for args in [&["segment", "list"][..], &["check"][..]] {
        let out = env.run(args);
        // The error (stderr), or for `check` its report (stdout).
        let err = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.to_lowercase().contains("corrupt") && err.contains("segments"),
            "{args:?} names the corruption and the column family: {err}"
        );
    }
}

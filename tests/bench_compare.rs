//! `segsync bench --compare`: the baselines a user would pick instead run
//! on the same generated files, and every ratio is reported (a baseline not
//! installed is listed as missing, never estimated).

use std::process::Command;

#[test]
fn bench_compare_runs_sort_comm_on_the_same_files_and_reports_ratios() {
    let out = Command::new(assert_cmd::cargo::cargo_bin("segsync"))
        .args(["bench", "--users", "20000", "--compare", "--json"])
        .args(["--throttled-rpm", "600", "--throttled-seconds", "1"])
        .args(["--personas-seconds", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `serve`, started for the Personas phases, runs none of the bench's
    // syncs: one of them would retry against a receiver already stopped.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("attempt failed"), "{stderr}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The same members went to the Cohort Sync receiver, in bodies under
    // 128 KB (it refuses larger ones), and it holds exactly their uids.
    let cohort = &r["cohort_sync"];
    assert_eq!(cohort["verified"], true, "{cohort}");
    assert_eq!(cohort["users"], r["full_sync_users"], "{r}");
    assert_eq!(cohort["max_body_bytes"], 131_072, "{cohort}");
    let requests = cohort["requests"].as_u64().unwrap();
    assert!(
        requests > r["full_sync_requests"].as_u64().unwrap(),
        "128 KB bodies hold fewer users than 10000-user pages: {r}"
    );
    let ceiling = (requests - 1) as f64 * 60.0 / 25_000.0;
    assert!((cohort["ceiling_seconds"].as_f64().unwrap() - ceiling).abs() < 1e-9);
    // Both batch loads ran against `serve`: half known users, new only.
    let p = &r["personas"];
    for figure in ["batch_events_per_s", "batch_new_events_per_s"] {
        assert!(p[figure].as_f64().unwrap() > 0.0, "{figure}: {p}");
    }
    // At half load each call is timed from when it was due and from when
    // it was sent: the second is never the longer, call by call.
    let (due, answered) = (
        p["half_load_p99_ms"].as_f64().unwrap(),
        p["half_load_answer_p99_ms"].as_f64().unwrap(),
    );
    assert!(answered > 0.0 && answered <= due, "{p}");
    // The update of a tenth as many rows ran into the first load's store,
    // its memory measured as the first loads' is.
    let update = &r["users_update"];
    assert!(update["rows_per_s"].as_f64().unwrap() > 0.0, "{update}");
    assert!(update["peak_rss_mb"].as_f64().unwrap() > 1.0, "{update}");
    let c = &r["compare"];
    let ours = c["snapshot_diff"]["segsync_s"].as_f64().unwrap();
    assert!(ours > 0.0, "{c}");
    // Both users files' first loads, with segsync's peak memory beside
    // its time (the baselines' own peaks beside theirs).
    for task in ["users_import", "users_2col_import"] {
        assert!(c[task]["segsync_s"].as_f64().unwrap() > 0.0, "{task}: {c}");
        assert!(
            c[task]["segsync_peak_rss_mb"].as_f64().unwrap() > 1.0,
            "{task}: {c}"
        );
    }
    let diffs = c["snapshot_diff"]["baselines"].as_array().unwrap();
    let sort = diffs
        .iter()
        .find(|b| b["tool"].as_str().unwrap().starts_with("sort"))
        .unwrap_or_else(|| panic!("sort/comm is on every Debian machine: {c}"));
    let (secs, speedup) = (
        sort["seconds"].as_f64().unwrap(),
        sort["segsync_speedup"].as_f64().unwrap(),
    );
    assert!(secs > 0.0);
    assert!(
        (speedup - secs / ours).abs() < 1e-6 * speedup.max(1.0),
        "{sort}"
    );
    // DuckDB is compared when installed, and said to be missing when not.
    let duck = |task: &str| {
        c[task]["baselines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["tool"].as_str().unwrap().starts_with("duckdb"))
    };
    assert_eq!(duck("users_import"), duck("users_2col_import"), "{c}");
    let missing = c["missing"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m.as_str().unwrap().starts_with("duckdb"));
    assert!(duck("users_import") != missing, "{c}");
}

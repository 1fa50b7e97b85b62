//! `segsync bench --compare`: the tools a user would pick instead, run on
//! the same generated files in the same run, so the ratios are
//! reproducible on any machine: `sort` + `comm` for a snapshot diff, and
//! DuckDB (its CLI, or its Python module) for the users import and the
//! diff, when installed. A baseline that is not installed is reported as
//! missing, never estimated.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde::Serialize;

/// segsync's own figures to compare.
pub(crate) struct Ours {
    /// Seconds to import the users CSV.
    pub users_import_s: f64,
    /// Seconds to import the second snapshot and diff it against the first.
    pub snapshot_diff_s: f64,
}

/// One baseline's time and segsync's speed-up over it (> 1: segsync faster).
#[derive(Debug, Serialize)]
pub struct Baseline {
    /// What ran.
    tool: String,
    /// Its wall-clock seconds.
    seconds: f64,
    /// Its time divided by segsync's.
    segsync_speedup: f64,
}

/// The comparison.
#[derive(Debug, Serialize)]
pub struct Compare {
    /// Snapshot import + diff: segsync, then each baseline.
    snapshot_diff_segsync_s: f64,
    snapshot_diff: Vec<Baseline>,
    /// Users import: segsync, then each baseline.
    users_import_segsync_s: f64,
    users_import: Vec<Baseline>,
    /// Baselines not found on this machine.
    missing: Vec<String>,
}

fn timed_sh(script: &str) -> anyhow::Result<f64> {
    let t = Instant::now();
    let status = Command::new("sh").arg("-c").arg(script).status()?;
    if !status.success() {
        anyhow::bail!("baseline failed ({status}): {script}");
    }
    Ok(t.elapsed().as_secs_f64())
}

fn quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd} >/dev/null 2>&1"))
        .status()
        .is_ok_and(|s| s.success())
}

fn python_duckdb() -> bool {
    Command::new("python3")
        .args(["-c", "import duckdb"])
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs every baseline found on `users_csv`, `s1` and `s2` (in `work`).
pub(crate) fn run(
    work: &Path,
    users_csv: &Path,
    s1: &Path,
    s2: &Path,
    ours: &Ours,
) -> anyhow::Result<Compare> {
    let mut c = Compare {
        snapshot_diff_segsync_s: ours.snapshot_diff_s,
        snapshot_diff: Vec::new(),
        users_import_segsync_s: ours.users_import_s,
        users_import: Vec::new(),
        missing: Vec::new(),
    };
    let diff = |tool: &str, s: f64| Baseline {
        tool: tool.into(),
        seconds: s,
        segsync_speedup: s / ours.snapshot_diff_s.max(1e-9),
    };
    let users = |tool: &str, s: f64| Baseline {
        tool: tool.into(),
        seconds: s,
        segsync_speedup: s / ours.users_import_s.max(1e-9),
    };
    if have("sort") && have("comm") {
        let (a, b, out) = (
            work.join("s1.sorted"),
            work.join("s2.sorted"),
            work.join("comm.out"),
        );
        let s = timed_sh(&format!(
            "export LC_ALL=C; sort -S 1G {} -o {} && sort -S 1G {} -o {} && comm -3 {} {} > {}",
            quote(s1),
            quote(&a),
            quote(s2),
            quote(&b),
            quote(&a),
            quote(&b),
            quote(&out)
        ))?;
        c.snapshot_diff
            .push(diff("sort -S 1G + comm -3 (LC_ALL=C)", s));
    } else {
        c.missing.push("sort/comm".into());
    }
    let sql_users = format!(
        "CREATE TABLE users AS SELECT * FROM read_csv({}, header = true, all_varchar = true);",
        quote(users_csv)
    );
    let sql_diff = format!(
        "CREATE TABLE s1 AS SELECT * FROM read_csv({}, header = false, columns = {{'id': 'VARCHAR'}}); \
         CREATE TABLE s2 AS SELECT * FROM read_csv({}, header = false, columns = {{'id': 'VARCHAR'}}); \
         CREATE TABLE added AS (SELECT id FROM s2 EXCEPT SELECT id FROM s1); \
         CREATE TABLE removed AS (SELECT id FROM s1 EXCEPT SELECT id FROM s2);",
        quote(s1),
        quote(s2)
    );
    let fresh = |name: &str| -> anyhow::Result<std::path::PathBuf> {
        let p = work.join(name);
        let _ = std::fs::remove_file(&p);
        Ok(p)
    };
    let users_sql = work.join("users.sql");
    let diff_sql = work.join("diff.sql");
    std::fs::write(&users_sql, &sql_users)?;
    std::fs::write(&diff_sql, &sql_diff)?;
    if have("duckdb") {
        let p = fresh("cli-users.duckdb")?;
        let s = timed_sh(&format!("duckdb {} < {}", quote(&p), quote(&users_sql)))?;
        c.users_import.push(users(
            "duckdb CLI: CREATE TABLE AS read_csv, into a file",
            s,
        ));
        let p = fresh("cli-diff.duckdb")?;
        let s = timed_sh(&format!("duckdb {} < {}", quote(&p), quote(&diff_sql)))?;
        c.snapshot_diff
            .push(diff("duckdb CLI: load both, EXCEPT both ways", s));
    } else if python_duckdb() {
        // Timed inside Python: the interpreter's start is not DuckDB's.
        let script = work.join("run.py");
        std::fs::write(
            &script,
            "import duckdb, sys, time\n\
             con = duckdb.connect(sys.argv[1])\n\
             sql = open(sys.argv[2]).read()\n\
             t = time.perf_counter()\n\
             con.execute(sql)\n\
             con.close()\n\
             print(time.perf_counter() - t)\n",
        )?;
        let py = |sql: &Path, db: &Path| -> anyhow::Result<f64> {
            let out = Command::new("python3")
                .arg(&script)
                .arg(db)
                .arg(sql)
                .output()?;
            if !out.status.success() {
                anyhow::bail!(
                    "duckdb (Python) failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
        };
        let s = py(&users_sql, &fresh("py-users.duckdb")?)?;
        c.users_import.push(users(
            "duckdb (Python): CREATE TABLE AS read_csv, into a file",
            s,
        ));
        let s = py(&diff_sql, &fresh("py-diff.duckdb")?)?;
        c.snapshot_diff
            .push(diff("duckdb (Python): load both, EXCEPT both ways", s));
    } else {
        c.missing.push("duckdb (CLI or Python module)".into());
    }
    Ok(c)
}

/// Prints the comparison.
pub(crate) fn print(c: &Compare) {
    println!(
        "compare: snapshot import + diff, segsync {:.2} s",
        c.snapshot_diff_segsync_s
    );
    for b in &c.snapshot_diff {
        println!(
            "  {:<52} {:>7.2} s  segsync {:.1}× faster",
            b.tool, b.seconds, b.segsync_speedup
        );
    }
    println!(
        "compare: users import, segsync {:.2} s",
        c.users_import_segsync_s
    );
    for b in &c.users_import {
        println!(
            "  {:<52} {:>7.2} s  segsync {:.2}× {}",
            b.tool,
            b.seconds,
            b.segsync_speedup,
            if b.segsync_speedup >= 1.0 {
                "faster"
            } else {
                "(slower)"
            }
        );
    }
    for m in &c.missing {
        println!("  {m}: not installed, not compared");
    }
}

//! `segsync bench --compare`: the tools a user would pick instead, run on
//! the same generated files in the same run, so the ratios are
//! reproducible on any machine: `sort` + `comm` for a snapshot diff, and
//! DuckDB (its CLI, or its Python module) for the users import and the
//! diff, when installed. A baseline that is not installed is reported as
//! missing, never estimated.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use serde::Serialize;

/// segsync's own figures to compare.
pub(crate) struct Ours {
    /// The 5-attribute users CSV's first load: seconds, peak RSS.
    pub users_import: (f64, Option<f64>),
    /// The `distinct_id,uid` CSV's first load: seconds, peak RSS (the
    /// issue's own comparison).
    pub users_2col_import: (f64, Option<f64>),
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
    /// Its peak RSS (the process's, `VmHWM`), where measured.
    peak_rss_mb: Option<f64>,
    /// Its peak RSS divided by segsync's (> 1: segsync needs less).
    memory_ratio: Option<f64>,
}

/// One task: segsync's figures and every baseline's.
#[derive(Debug, Serialize)]
pub struct Task {
    segsync_s: f64,
    segsync_peak_rss_mb: Option<f64>,
    baselines: Vec<Baseline>,
}

impl Task {
    fn new((segsync_s, segsync_peak_rss_mb): (f64, Option<f64>)) -> Task {
        Task {
            segsync_s,
            segsync_peak_rss_mb,
            baselines: Vec::new(),
        }
    }

    fn push(&mut self, tool: &str, (seconds, peak_rss_mb): (f64, Option<f64>)) {
        self.baselines.push(Baseline {
            tool: tool.into(),
            seconds,
            segsync_speedup: seconds / self.segsync_s.max(1e-9),
            peak_rss_mb,
            memory_ratio: peak_rss_mb
                .zip(self.segsync_peak_rss_mb)
                .map(|(b, ours)| b / ours.max(1e-9)),
        });
    }
}

/// The comparison.
#[derive(Debug, Serialize)]
pub struct Compare {
    /// Snapshot import + diff (segsync's peak is not its own process's).
    snapshot_diff: Task,
    /// Users import, 5 attributes, first load.
    users_import: Task,
    /// Users import, `distinct_id,uid`, first load.
    users_2col_import: Task,
    /// Baselines not found on this machine.
    missing: Vec<String>,
}

/// Waits for `child` to exit and returns its peak RSS in MB, read from
/// the kernel's mark while it runs (`None` where there is no `/proc`). The
/// mark only grows, so the last reading before the exit is the peak, to
/// within the 5 ms between readings. A child spawned by `sh -c` execs its
/// command in place (one simple command), so the shell's pid is the
/// tool's.
pub(crate) fn peak_rss_mb(child: &mut Child) -> std::io::Result<Option<f64>> {
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kb: Option<f64> = None;
    while child.try_wait()?.is_none() {
        if let Some(kb) = std::fs::read_to_string(&status_file)
            .ok()
            .as_deref()
            .and_then(|s| crate::metrics::status_kb(s, "VmHWM"))
        {
            peak_kb = Some(peak_kb.map_or(kb, |p: f64| p.max(kb)));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Ok(peak_kb.map(|kb| kb / 1024.0))
}

/// Runs `script` with `sh -c`: wall seconds and peak RSS.
fn timed_sh(script: &str) -> anyhow::Result<(f64, Option<f64>)> {
    let t = Instant::now();
    let mut child = Command::new("sh").arg("-c").arg(script).spawn()?;
    let peak = peak_rss_mb(&mut child)?;
    let status = child.wait()?;
    if !status.success() {
        anyhow::bail!("baseline failed ({status}): {script}");
    }
    Ok((t.elapsed().as_secs_f64(), peak))
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

/// The files every baseline runs on.
pub(crate) struct Inputs<'a> {
    /// Scratch space for the baselines' outputs.
    pub work: &'a Path,
    /// The 5-attribute users CSV.
    pub users_csv: &'a Path,
    /// The same users' `distinct_id,uid` CSV.
    pub users_2col_csv: &'a Path,
    /// The two snapshots.
    pub s1: &'a Path,
    pub s2: &'a Path,
}

/// Runs every baseline found on the inputs.
pub(crate) fn run(inputs: &Inputs<'_>, ours: &Ours) -> anyhow::Result<Compare> {
    let Inputs {
        work,
        users_csv,
        users_2col_csv,
        s1,
        s2,
    } = *inputs;
    let mut c = Compare {
        snapshot_diff: Task::new((ours.snapshot_diff_s, None)),
        users_import: Task::new(ours.users_import),
        users_2col_import: Task::new(ours.users_2col_import),
        missing: Vec::new(),
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
        // A pipeline of three commands: the shell's own peak is not theirs.
        c.snapshot_diff
            .push("sort -S 1G + comm -3 (LC_ALL=C)", (s.0, None));
    } else {
        c.missing.push("sort/comm".into());
    }
    let sql_users = |csv: &Path| {
        format!(
            "CREATE TABLE users AS SELECT * FROM read_csv({}, header = true, all_varchar = true);",
            quote(csv)
        )
    };
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
    let users_2col_sql = work.join("users-2col.sql");
    let diff_sql = work.join("diff.sql");
    std::fs::write(&users_sql, sql_users(users_csv))?;
    std::fs::write(&users_2col_sql, sql_users(users_2col_csv))?;
    std::fs::write(&diff_sql, &sql_diff)?;
    // Each task in a database file of its own, removed after, as a user's
    // first load would start.
    let jobs = [
        (&users_sql, "users", &mut c.users_import),
        (&users_2col_sql, "users-2col", &mut c.users_2col_import),
    ];
    if have("duckdb") {
        let cli = |sql: &Path, name: &str| -> anyhow::Result<(f64, Option<f64>)> {
            let p = fresh(&format!("cli-{name}.duckdb"))?;
            // `exec`: the measured process is DuckDB, not the shell.
            let s = timed_sh(&format!("exec duckdb {} < {}", quote(&p), quote(sql)))?;
            let _ = std::fs::remove_file(&p);
            Ok(s)
        };
        for (sql, name, task) in jobs {
            task.push(
                "duckdb CLI: CREATE TABLE AS read_csv, into a file",
                cli(sql, name)?,
            );
        }
        let s = cli(&diff_sql, "diff")?;
        c.snapshot_diff
            .push("duckdb CLI: load both, EXCEPT both ways", s);
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
        let py = |sql: &Path, name: &str| -> anyhow::Result<(f64, Option<f64>)> {
            let db = fresh(&format!("py-{name}.duckdb"))?;
            let mut child = Command::new("python3")
                .arg(&script)
                .arg(&db)
                .arg(sql)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
            let peak = peak_rss_mb(&mut child)?;
            let out = child.wait_with_output()?;
            let _ = std::fs::remove_file(&db);
            if !out.status.success() {
                anyhow::bail!(
                    "duckdb (Python) failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok((String::from_utf8_lossy(&out.stdout).trim().parse()?, peak))
        };
        for (sql, name, task) in jobs {
            task.push(
                "duckdb (Python): CREATE TABLE AS read_csv, into a file",
                py(sql, name)?,
            );
        }
        let s = py(&diff_sql, "diff")?;
        c.snapshot_diff
            .push("duckdb (Python): load both, EXCEPT both ways", s);
    } else {
        c.missing.push("duckdb (CLI or Python module)".into());
    }
    Ok(c)
}

/// Prints the comparison.
pub(crate) fn print(c: &Compare) {
    let mb = |m: Option<f64>| m.map_or_else(String::new, |m| format!(", {m:.0} MB"));
    for (what, task) in [
        ("snapshot import + diff", &c.snapshot_diff),
        ("users import, 5 attributes", &c.users_import),
        ("users import, distinct_id,uid", &c.users_2col_import),
    ] {
        println!(
            "compare: {what}, segsync {:.2} s{}",
            task.segsync_s,
            mb(task.segsync_peak_rss_mb)
        );
        for b in &task.baselines {
            let memory = b
                .memory_ratio
                .map_or_else(String::new, |r| format!(", {r:.1}× segsync's memory"));
            println!(
                "  {:<52} {:>7.2} s{}  segsync {:.2}× {}{memory}",
                b.tool,
                b.seconds,
                mb(b.peak_rss_mb),
                b.segsync_speedup,
                if b.segsync_speedup >= 1.0 {
                    "faster"
                } else {
                    "(slower)"
                }
            );
        }
    }
    for m in &c.missing {
        println!("  {m}: not installed, not compared");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_childs_peak_memory_is_read_while_it_runs() {
        // 64 MB touched, then held long enough for several readings.
        let mut child = Command::new("python3")
            .args([
                "-c",
                "import time; b = bytearray(64 << 20); time.sleep(0.3)",
            ])
            .spawn()
            .unwrap();
        let peak = peak_rss_mb(&mut child).unwrap().unwrap();
        assert!(child.wait().unwrap().success());
        assert!((64.0..1024.0).contains(&peak), "{peak} MB");
    }

    #[test]
    fn ratios_are_the_baselines_over_segsyncs() {
        let mut t = Task::new((2.0, Some(100.0)));
        t.push("a", (5.0, Some(400.0)));
        t.push("b", (1.0, None));
        assert_eq!(t.baselines[0].segsync_speedup, 2.5);
        assert_eq!(t.baselines[0].memory_ratio, Some(4.0));
        assert_eq!(t.baselines[1].segsync_speedup, 0.5);
        assert_eq!(t.baselines[1].memory_ratio, None);
        let mut no_peak = Task::new((2.0, None));
        no_peak.push("c", (4.0, Some(10.0)));
        assert_eq!(no_peak.baselines[0].memory_ratio, None);
    }
}

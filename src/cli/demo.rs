//! `segsync demo`: the main job end to end on generated data, in a
//! temporary data dir unless one is given.

use std::path::PathBuf;
use std::time::Instant;

use crate::fixtures::{generate, Spec};
use crate::{ingest, plan, store::Store};

/// `demo` arguments.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Number of users to generate.
    #[arg(long, default_value_t = 1_000_000)]
    pub users: u64,
    /// Churn between the two snapshots.
    #[arg(long, default_value_t = 0.01)]
    pub churn: f64,
    /// Keep the demo's store here instead of a temporary directory.
    #[arg(long = "demo-dir")]
    pub demo_dir: Option<PathBuf>,
}

pub(crate) fn run(a: DemoArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let root = a
        .demo_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let data = root.join("fixtures");
    let spec = Spec {
        users: a.users,
        churn: a.churn,
        attribute_coverage: 0.9,
        seed: 42,
    };
    let t = Instant::now();
    let g = generate(&spec, &data)?;
    println!(
        "generated {} users in {:.2} s",
        g.users,
        t.elapsed().as_secs_f64()
    );

    let store = Store::open(root.join("store"))?;
    let opts = ingest::Options {
        progress: true,
        ..Default::default()
    };
    let users = ingest::import_users(&store, &g.users_csv, &opts)?;
    println!(
        "users import:    {:>9} users in {:.2} s ({:.0} ids/s)",
        users.lines, users.seconds, users.ids_per_sec
    );
    for path in [&g.snapshot_1, &g.snapshot_2] {
        let s = ingest::import_segment(&store, "demo", path, &opts)?;
        println!(
            "snapshot {}:      {:>9} members in {:.2} s ({:.0} ids/s, {} new users)",
            s.snapshot.unwrap_or(0),
            s.members.unwrap_or(0),
            s.seconds,
            s.ids_per_sec,
            s.users_new
        );
    }
    let d = plan::segment_diff(&store, "demo", None, None, Some("uid"))?;
    println!(
        "diff (members with uid): +{} added, -{} removed, {} total, {:.2} ms",
        d.added, d.removed, d.total, d.millis
    );
    Ok(())
}

//! `segsync fixtures gen`: deterministic users and snapshots for tests,
//! benchmarks and the demo.

use std::path::PathBuf;

use clap::Subcommand;

use super::UsageError;
use crate::fixtures::{generate, Spec};

/// `fixtures` subcommands.
#[derive(Debug, Subcommand)]
pub enum FixturesCmd {
    /// Write users.csv, snapshot_1.txt and snapshot_2.txt.
    Gen(GenArgs),
}

/// `fixtures gen` arguments.
#[derive(Debug, clap::Args)]
pub struct GenArgs {
    /// Number of users.
    #[arg(long)]
    pub users: u64,
    /// Fraction of users whose membership differs between the two snapshots (0..=1).
    #[arg(long)]
    pub churn: f64,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Share of users that have a uid (0..=1).
    #[arg(long, default_value_t = 0.9)]
    pub attribute_coverage: f64,
    /// Print what was written as JSON.
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn spec(a: &GenArgs) -> Result<Spec, UsageError> {
    for (name, v) in [
        ("--churn", a.churn),
        ("--attribute-coverage", a.attribute_coverage),
    ] {
        if !(0.0..=1.0).contains(&v) {
            return Err(UsageError(format!(
                "{name} must be between 0 and 1, got {v}"
            )));
        }
    }
    Ok(Spec {
        users: a.users,
        churn: a.churn,
        attribute_coverage: a.attribute_coverage,
        seed: a.seed,
    })
}

pub(crate) fn run(cmd: FixturesCmd) -> anyhow::Result<()> {
    let FixturesCmd::Gen(a) = cmd;
    let g = generate(&spec(&a)?, &a.out)?;
    if a.json {
        return super::print_json(&g);
    }
    println!(
        "wrote {} users ({} with uid) to {}; snapshot_1 {} members, snapshot_2 {} members",
        g.users,
        g.with_uid,
        g.users_csv.display(),
        g.snapshot_1_members,
        g.snapshot_2_members
    );
    Ok(())
}

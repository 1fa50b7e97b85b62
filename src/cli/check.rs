//! `segsync check`: verifies the store's invariants and prints a report;
//! exit code 1 on any violation.

use std::path::Path;

use super::output::say;

/// `check` arguments.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The store broke an invariant (exit code 1).
#[derive(Debug, thiserror::Error)]
#[error("the store breaks {0} invariant(s)")]
pub struct CheckFailed(usize);

impl crate::error::Classify for CheckFailed {
    /// The store is not as it should be: a failure, not a wrong request.
    fn fault(&self) -> crate::error::Fault {
        crate::error::Fault::Internal
    }
}

pub(crate) fn run(data_dir: &Path, a: CheckArgs) -> anyhow::Result<()> {
    let store = super::open_store(data_dir)?;
    let report = store.check()?;
    if a.json {
        super::print_json(&report)?;
    } else {
        say!(
            "checked {} users, {} attributes, {} snapshots, {} executions",
            report.users,
            report.attributes,
            report.snapshots,
            report.executions
        );
        for v in &report.violations {
            say!("{}: {}: {}", v.family, v.record, v.problem);
        }
        if report.violations.is_empty() {
            say!("no violation");
        }
    }
    match report.violations.len() {
        0 => Ok(()),
        n => Err(CheckFailed(n).into()),
    }
}

//! `segsync backup DIR` and `segsync restore DIR`: a consistent copy of
//! the data dir taken while it is in use (through `serve` when it holds the
//! data dir, like every command), and a new data dir made from one.

use std::path::{Path, PathBuf};

use super::output::say;

/// `backup` arguments.
#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    /// A new or empty directory for the backup (on the same filesystem,
    /// its files are hard links: instant, and no extra space until the
    /// store moves on). Made absolute here, so that a `serve` running the
    /// command for this CLI writes where the user meant.
    #[arg(value_parser = absolute)]
    pub dir: PathBuf,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// `restore` arguments.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// A backup made by `segsync backup`; it is copied into `--data-dir`,
    /// which must be new or empty.
    pub backup: PathBuf,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

fn absolute(s: &str) -> Result<PathBuf, String> {
    std::path::absolute(s).map_err(|e| format!("{s}: {e}"))
}

pub(crate) fn backup(data_dir: &Path, a: BackupArgs) -> anyhow::Result<()> {
    let store = super::open_store(data_dir)?;
    let info = store.backup(&a.dir)?;
    tracing::info!(dir = %a.dir.display(), write_seq = info.write_seq, bytes = info.bytes, "backup taken");
    if a.json {
        return super::print_json(&info);
    }
    say!(
        "backed up {} users, write {}, {:.1} MB into {}",
        info.users,
        info.write_seq,
        info.bytes as f64 / 1e6,
        a.dir.display()
    );
    Ok(())
}

pub(crate) fn restore(data_dir: &Path, a: RestoreArgs) -> anyhow::Result<()> {
    let (store, info) = crate::store::Store::restore(&a.backup, data_dir)?;
    let report = store.check()?;
    if !report.violations.is_empty() {
        anyhow::bail!(
            "restored into {}, but the store breaks {} invariant(s); run `segsync check` there",
            data_dir.display(),
            report.violations.len()
        );
    }
    if a.json {
        return super::print_json(&info);
    }
    say!(
        "restored {} users, write {} (backup taken {}) into {}; `segsync check` passes",
        info.users,
        info.write_seq,
        super::fmt_ms(info.taken_ms),
        data_dir.display()
    );
    Ok(())
}

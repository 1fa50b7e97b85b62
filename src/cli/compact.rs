//! `segsync compact`: applies `[retention]` (what no sync can need any
//! more goes: old executions' bitmaps and page outcomes, old snapshots,
//! attribute history and change index entries older than every sync's
//! needs), then compacts the store so the space returns to the disk, and
//! reports what went and the data dir's size before and after.

use std::path::Path;

use serde_json::json;

use super::output::say;

/// `compact` arguments.
#[derive(Debug, clap::Args)]
pub struct CompactArgs {
    /// Apply retention only; leave RocksDB's compaction to its own pace.
    #[arg(long)]
    pub no_compaction: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub(crate) fn run(data_dir: &Path, a: CompactArgs) -> anyhow::Result<()> {
    let settings = crate::config::load(data_dir)?;
    let store = super::open_store(data_dir)?;
    let before = crate::store::bytes_under(data_dir);
    let started = std::time::Instant::now();
    let pruned = store.apply_retention(settings.retention.policy)?;
    if !a.no_compaction {
        store.compact();
    }
    let after = crate::store::bytes_under(data_dir);
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(?pruned, before, after, seconds, "retention applied");
    if a.json {
        return super::print_json(&json!({
            "pruned": pruned,
            "bytes_before": before,
            "bytes_after": after,
            "seconds": seconds,
            "policy": {
                "keep_executions": settings.retention.policy.keep_executions,
                "keep_snapshots": settings.retention.policy.keep_snapshots,
            },
        }));
    }
    say!(
        "removed the details of {} executions ({} bitmaps, {} page outcomes), {} snapshots, {} attribute history entries, {} change index entries",
        pruned.executions,
        pruned.execution_bitmaps,
        pruned.page_outcomes,
        pruned.snapshots,
        pruned.history_entries,
        pruned.change_entries
    );
    say!(
        "data dir {:.1} MB -> {:.1} MB in {seconds:.1} s",
        before as f64 / 1e6,
        after as f64 / 1e6
    );
    Ok(())
}

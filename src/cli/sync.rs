//! `segsync sync …`: create, list, show, run in the foreground, history.

use std::path::Path;

use clap::Subcommand;
use serde::Serialize;

use super::UsageError;
use crate::destination;
use crate::lifecycle::rules::{self, Action};
use crate::lifecycle::{ExecStatus, ExecutionRecord, Frequency, Schedule, SyncRecord, SyncStatus};
use crate::pipeline::{self, RunOptions};
use crate::plan;
use crate::store::Store;

/// `sync` subcommands.
#[derive(Debug, Subcommand)]
pub enum SyncCmd {
    /// Create a sync of a segment to a destination.
    Create(CreateArgs),
    /// List syncs.
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show a sync and its last execution.
    Show {
        /// Sync id.
        id: u32,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Run one execution now, in the foreground (resumes one left processing).
    /// Exits 0 only when it completed.
    Run {
        /// Sync id.
        id: u32,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Pause scheduled runs (an ad hoc run resumes them).
    Pause {
        /// Sync id.
        id: u32,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Archive a sync. Irreversible.
    Archive {
        /// Sync id.
        id: u32,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Every execution of a sync.
    History {
        /// Sync id.
        id: u32,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

/// `sync create`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Segment to sync.
    #[arg(long)]
    pub segment: String,
    /// Destination to sync to.
    #[arg(long)]
    pub destination: String,
    /// The one user attribute sent as the identifier.
    #[arg(long)]
    pub attribute: String,
    /// One-time sync.
    #[arg(long, conflicts_with = "every", required_unless_present = "every")]
    pub once: bool,
    /// Periodic sync.
    #[arg(long, value_enum)]
    pub every: Option<Frequency>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// An execution that ended failed (exit code 1).
#[derive(Debug, thiserror::Error)]
#[error("execution {id} failed: {error}")]
pub struct ExecutionFailed {
    id: String,
    error: String,
}

fn load(store: &Store, id: u32) -> anyhow::Result<SyncRecord> {
    SyncRecord::load(store, id)?.ok_or_else(|| pipeline::Error::NoSync(id).into())
}

fn schedule_text(s: Schedule) -> String {
    match s {
        Schedule::Once => "once".into(),
        Schedule::Every(f) => format!(
            "every {}",
            serde_json::to_value(f)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        ),
    }
}

/// One history row.
#[derive(Serialize)]
struct Row<'a> {
    #[serde(flatten)]
    exec: &'a ExecutionRecord,
    execution_id: String,
    run_time: String,
    seconds: Option<f64>,
}

fn row(e: &ExecutionRecord) -> Row<'_> {
    Row {
        execution_id: e.execution_id(),
        run_time: super::fmt_ms(e.started_ms),
        seconds: e.seconds(),
        exec: e,
    }
}

fn print_exec(e: &ExecutionRecord) {
    println!(
        "{:<8} {:<20} {:<5} {:<10} {:>6}/{:<6} +{:<9} -{:<9} total {:<9} {}",
        e.execution_id(),
        super::fmt_ms(e.started_ms),
        serde_json::to_value(e.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        serde_json::to_value(e.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        e.pages_done,
        e.total_pages,
        e.added,
        e.removed,
        e.total,
        e.error.as_deref().unwrap_or("")
    );
}

fn set_status(
    store: &Store,
    id: u32,
    action: Action,
    to: SyncStatus,
    json: bool,
) -> anyhow::Result<()> {
    let mut s = load(store, id)?;
    let resync = destination::get(store, &s.destination)
        .ok()
        .and_then(|d| d.validated().ok())
        .is_some_and(|d| d.allow_resync);
    rules::check(s.status, action, resync)?;
    s.status = to;
    s.save(store)?;
    if json {
        return super::print_json(&s);
    }
    println!(
        "sync {id} is now {}",
        serde_json::to_value(to)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    );
    Ok(())
}

pub(crate) fn run(data_dir: &Path, cmd: SyncCmd) -> anyhow::Result<()> {
    let store = super::open_store(data_dir)?;
    match cmd {
        SyncCmd::Create(a) => {
            let schedule = match (a.once, a.every) {
                (true, None) => Schedule::Once,
                (false, Some(f)) => Schedule::Every(f),
                _ => return Err(UsageError("give exactly one of --once or --every".into()).into()),
            };
            let seg = store
                .segment(&a.segment)?
                .ok_or_else(|| plan::Error::NoSegment(a.segment.clone()))?;
            let dest = destination::get(&store, &a.destination)?.validated()?;
            if store.attr_id(&a.attribute).is_none() {
                return Err(plan::Error::UnknownAttribute(a.attribute.clone()).into());
            }
            dest.check_attribute(&a.attribute)?;
            let rec = SyncRecord {
                id: store.next_id("sync")?,
                segment: seg.name,
                destination: a.destination,
                attribute: a.attribute,
                schedule,
                status: SyncStatus::Active,
                created_ms: chrono::Utc::now().timestamp_millis(),
                last_complete: None,
                last_execution: None,
            };
            rec.save(&store)?;
            if a.json {
                return super::print_json(&rec);
            }
            println!(
                "created sync {} ({} → {}, {}, {})",
                rec.id,
                rec.segment,
                rec.destination,
                rec.attribute,
                schedule_text(schedule)
            );
            Ok(())
        }
        SyncCmd::List { json } => {
            let all = SyncRecord::all(&store)?;
            if json {
                return super::print_json(&all);
            }
            if all.is_empty() {
                println!("no syncs yet (create one with `segsync sync create`)");
            }
            for s in all {
                println!(
                    "{:>4}  {:<20} → {:<20} {:<10} {:<14} {:?}",
                    s.id,
                    s.segment,
                    s.destination,
                    s.attribute,
                    schedule_text(s.schedule),
                    s.status
                );
            }
            Ok(())
        }
        SyncCmd::Show { id, json } => {
            let s = load(&store, id)?;
            let last = s
                .last_execution
                .map(|seq| ExecutionRecord::load(&store, id, seq))
                .transpose()?
                .flatten();
            if json {
                #[derive(Serialize)]
                struct Out<'a> {
                    #[serde(flatten)]
                    sync: &'a SyncRecord,
                    last_run: Option<Row<'a>>,
                }
                return super::print_json(&Out {
                    sync: &s,
                    last_run: last.as_ref().map(row),
                });
            }
            println!(
                "sync {}: {} → {} ({}), {}, status {:?}",
                s.id,
                s.segment,
                s.destination,
                s.attribute,
                schedule_text(s.schedule),
                s.status
            );
            match &last {
                Some(e) => print_exec(e),
                None => println!("never run"),
            }
            Ok(())
        }
        SyncCmd::Run { id, json } => {
            let e = pipeline::run_sync(
                &store,
                id,
                &RunOptions {
                    progress: !json,
                    ..Default::default()
                },
            )?;
            if json {
                super::print_json(&row(&e))?;
            } else {
                println!(
                    "execution {} {}: {} pages, +{} added, -{} removed, {} total, {} skipped, {} requests ({} retries), {:.2} s",
                    e.execution_id(),
                    if e.status == ExecStatus::Complete { "complete" } else { "failed" },
                    e.pages_done,
                    e.added,
                    e.removed,
                    e.total,
                    e.skipped,
                    e.requests,
                    e.retries,
                    e.seconds().unwrap_or(0.0)
                );
            }
            match e.status {
                ExecStatus::Complete => Ok(()),
                _ => Err(ExecutionFailed {
                    id: e.execution_id(),
                    error: e.error.clone().unwrap_or_default(),
                }
                .into()),
            }
        }
        SyncCmd::Pause { id, json } => {
            set_status(&store, id, Action::Pause, SyncStatus::Paused, json)
        }
        SyncCmd::Archive { id, json } => {
            set_status(&store, id, Action::Archive, SyncStatus::Archived, json)
        }
        SyncCmd::History { id, json } => {
            load(&store, id)?;
            let all = ExecutionRecord::all(&store, id)?;
            if json {
                let rows: Vec<Row<'_>> = all.iter().map(row).collect();
                return super::print_json(&rows);
            }
            if all.is_empty() {
                println!("no executions yet");
            }
            for e in &all {
                print_exec(e);
            }
            Ok(())
        }
    }
}

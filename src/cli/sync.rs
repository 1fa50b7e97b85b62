//! `segsync sync …`: create, list, show, edit, run in the foreground,
//! pause, resync, archive, history. The rules live in
//! [`crate::lifecycle::actions`]; this file only parses and prints.

use std::path::Path;

use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde::Serialize;

use super::output::{say, warn_user};
use super::UsageError;
use crate::lifecycle::actions::{self, NewSync, SyncEdit};
use crate::lifecycle::rules::Action;
use crate::lifecycle::view::SyncView;
use crate::lifecycle::{
    ExecStatus, ExecutionRecord, Frequency, Schedule, SyncRecord, SyncStatus, Trigger,
};
use crate::pipeline::RunOptions;
use crate::store::Store;

/// `sync` subcommands.
#[derive(Debug, Subcommand)]
pub enum SyncCmd {
    /// Create a sync of a segment to a destination.
    Create(CreateArgs),
    /// List syncs.
    List {
        /// Only syncs in this status (`archived`: the Archived Syncs page).
        #[arg(long, value_parser = parse_status)]
        status: Option<SyncStatus>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show a sync: status, last and next run.
    Show {
        /// Sync id.
        id: u32,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Change destination, frequency, start (until it passes), end, emails.
    Edit(EditArgs),
    /// Run now, in the foreground (resumes an execution left processing;
    /// resumes a paused or failed sync). Exits 0 only when it completed.
    Run {
        /// Sync id.
        id: u32,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Pause scheduled runs (`sync run` resumes them).
    Pause {
        /// Sync id.
        id: u32,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Send every current member again (if the destination allows resync).
    ResyncAll {
        /// Sync id.
        id: u32,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Send the last execution's difference again (failed syncs only).
    ResyncLast {
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
    /// Plan the next execution without sending anything: its counts and
    /// its first requests exactly as they will go out. `sync run` then
    /// executes exactly this plan (same bodies, same keys).
    Plan {
        /// Sync id.
        id: u32,
        /// How many requests to show.
        #[arg(long, default_value_t = 3)]
        requests: usize,
        /// Drop the plan instead (nothing of it was sent).
        #[arg(long)]
        discard: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Per-page outcomes of an execution: attempts, delivered, the refusing
    /// status and the error's excerpt.
    Execution {
        /// Execution id (`SYNC-SEQ`, as history shows it).
        #[arg(value_parser = parse_execution)]
        execution: (u32, u32),
        /// Which pages: `failed` (not delivered) or `all`.
        #[arg(long, default_value = "failed", value_parser = ["failed", "all"])]
        pages: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Send the pages of a failed execution that were not delivered again,
    /// exactly as planned (same bodies, same keys).
    Replay {
        /// Execution id (`SYNC-SEQ`).
        #[arg(value_parser = parse_execution)]
        execution: (u32, u32),
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
    /// First run (RFC 3339, e.g. 2026-12-01T09:00:00Z; default now).
    #[arg(long, value_parser = parse_time)]
    pub start: Option<DateTime<Utc>>,
    /// No runs from this time on (periodic syncs).
    #[arg(long, value_parser = parse_time)]
    pub end: Option<DateTime<Utc>>,
    /// IANA time zone whose wall clock the schedule follows (default UTC).
    #[arg(long)]
    pub timezone: Option<String>,
    /// Email told about changes, successes and failures; repeatable.
    #[arg(long = "notify", value_name = "EMAIL")]
    pub notify: Vec<String>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// `sync edit`.
#[derive(Debug, clap::Args)]
pub struct EditArgs {
    /// Sync id.
    pub id: u32,
    /// New destination.
    #[arg(long)]
    pub destination: Option<String>,
    /// New frequency (periodic syncs).
    #[arg(long, value_enum)]
    pub every: Option<Frequency>,
    /// New start (only before the current one passes).
    #[arg(long, value_parser = parse_time)]
    pub start: Option<DateTime<Utc>>,
    /// New end date.
    #[arg(long, value_parser = parse_time, conflicts_with = "no_end")]
    pub end: Option<DateTime<Utc>>,
    /// Remove the end date.
    #[arg(long)]
    pub no_end: bool,
    /// Replace the notification emails; repeatable.
    #[arg(long = "notify", value_name = "EMAIL")]
    pub notify: Vec<String>,
    /// Remove every notification email.
    #[arg(long, conflicts_with = "notify")]
    pub no_notify: bool,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

fn parse_execution(s: &str) -> Result<(u32, u32), String> {
    s.split_once('-')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .ok_or_else(|| format!("{s:?} is not an execution id (SYNC-SEQ, e.g. 3-12)"))
}

fn parse_status(s: &str) -> Result<SyncStatus, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("{s:?} is not a status (active, paused, failed, inactive, archived)"))
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if s == "now" {
        return Ok(Utc::now());
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 time ({e}); e.g. 2026-12-01T09:00:00Z"))
}

/// An execution that ended failed (exit code 1).
#[derive(Debug, thiserror::Error)]
#[error("execution {id} failed: {error}")]
pub struct ExecutionFailed {
    id: String,
    error: String,
}

impl crate::error::Classify for ExecutionFailed {
    /// The run or test happened and went wrong: a failure, not a usage error.
    fn fault(&self) -> crate::error::Fault {
        crate::error::Fault::Internal
    }
}

fn schedule_text(s: Schedule) -> String {
    match s {
        Schedule::Once => "once".into(),
        Schedule::Every(f) => format!("every {}", super::word(f)),
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
    let duration = e.seconds().map_or("-".to_string(), |s| format!("{s:.2}s"));
    say!(
        "{:<8} {:<20} {:<5} {:<11} {:<10} {:>6}/{:<6} +{:<9} -{:<9} ~{:<8} total {:<9} {:>9} {}",
        e.execution_id(),
        super::fmt_ms(e.started_ms),
        super::word(e.kind),
        super::word(e.trigger),
        super::word(e.status),
        e.pages_done,
        e.total_pages,
        e.added,
        e.removed,
        e.updated,
        e.total,
        duration,
        e.error.as_deref().unwrap_or("")
    );
}

#[derive(Serialize)]
struct Shown<'a> {
    #[serde(flatten)]
    view: &'a SyncView,
    last_run: Option<Row<'a>>,
}

fn print_sync(store: &Store, s: &SyncRecord, json: bool) -> anyhow::Result<()> {
    let last = s
        .last_execution
        .map(|seq| ExecutionRecord::load(store, s.id, seq))
        .transpose()?
        .flatten();
    let view = SyncView::of(store, s, false, Utc::now())?;
    if json {
        return super::print_json(&Shown {
            view: &view,
            last_run: last.as_ref().map(row),
        });
    }
    let time = |t: Option<DateTime<Utc>>| {
        t.map_or("-".to_string(), |t| {
            t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
        })
    };
    say!(
        "sync {}: {} → {} ({}), {} ({}), status {}",
        s.id,
        s.segment,
        s.destination,
        s.attribute,
        schedule_text(s.schedule),
        s.timezone,
        super::word(s.status)
    );
    say!(
        "  start {}, end {}, last synced {}, next run {}, notify {}",
        super::fmt_ms(s.start_ms),
        s.end_ms.map_or("-".into(), super::fmt_ms),
        time(view.last_synced),
        time(view.next_run),
        if s.notify.is_empty() {
            "-".into()
        } else {
            s.notify.join(", ")
        }
    );
    say!(
        "  updated {} by {}",
        super::fmt_ms(s.updated_ms),
        view.updated_by.as_deref().unwrap_or("-")
    );
    say!("  actions now: {}", view.allowed().join(", "));
    for (a, why) in &view.actions {
        if let Some(why) = why {
            say!("    not {a}: {why}");
        }
    }
    match &last {
        Some(e) => print_exec(e),
        None => say!("  never run"),
    }
    Ok(())
}

fn run_now(store: &Store, id: u32, trigger: Trigger, json: bool) -> anyhow::Result<()> {
    execute_and_report(
        store,
        actions::start_run(store, id, trigger, Utc::now(), "cli")?,
        json,
    )
}

/// Runs a started execution in the foreground (a progress bar unless
/// `json`) and reports how it ended.
fn execute_and_report(
    store: &Store,
    started: actions::StartedRun,
    json: bool,
) -> anyhow::Result<()> {
    if let Some(note) = &started.note {
        warn_user!("note: {note}");
    }
    let e = started.execute(
        store,
        &RunOptions {
            progress: !json,
            ..Default::default()
        },
    )?;
    report_run(&e, json)
}

/// Prints how a run ended (`sync run`, `resync-all`, `resync-last`), here
/// or for a run that a server executed; an execution that did not complete
/// is an error (exit code 1).
pub(crate) fn report_run(e: &ExecutionRecord, json: bool) -> anyhow::Result<()> {
    if json {
        super::print_json(&row(e))?;
    } else {
        say!(
            "execution {} {}: {} pages, +{} added, -{} removed, ~{} updated, {} total, {} skipped, {} requests ({} retries, {} throttled), {} requests/min, {:.2} s",
            e.execution_id(),
            super::word(e.status),
            e.pages_done,
            e.added,
            e.removed,
            e.updated,
            e.total,
            e.skipped,
            e.requests,
            e.retries,
            e.throttled,
            e.effective_rpm,
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

pub(crate) fn run(data_dir: &Path, cmd: SyncCmd) -> anyhow::Result<()> {
    let store = super::open_store(data_dir)?;
    let result = dispatch(&store, cmd);
    // Runs and edits leave notifications in the outbox; the command's work
    // is done (or failed) before any mail is attempted. (Run by `serve` for
    // a client, its mailer delivers them.)
    if matches!(store, super::StoreHandle::Own(_)) {
        crate::lifecycle::notify::deliver_outbox(&store);
    }
    result
}

fn dispatch(store: &Store, cmd: SyncCmd) -> anyhow::Result<()> {
    let now = Utc::now();
    match cmd {
        SyncCmd::Create(a) => {
            let schedule = match (a.once, a.every) {
                (true, None) => Schedule::Once,
                (false, Some(f)) => Schedule::Every(f),
                _ => return Err(UsageError("give exactly one of --once or --every".into()).into()),
            };
            let rec = actions::create(
                store,
                NewSync {
                    segment: a.segment,
                    destination: a.destination,
                    attribute: a.attribute,
                    schedule,
                    start: a.start,
                    end: a.end,
                    timezone: a.timezone,
                    notify: a.notify,
                },
                now,
                "cli",
            )?;
            if a.json {
                return print_sync(store, &rec, true);
            }
            say!(
                "created sync {} ({} → {}, {}, {})",
                rec.id,
                rec.segment,
                rec.destination,
                rec.attribute,
                schedule_text(schedule)
            );
            Ok(())
        }
        SyncCmd::List { status, json } => {
            let mut views = Vec::new();
            for s in SyncRecord::all(store)? {
                if status.is_none_or(|st| s.status == st) {
                    views.push(SyncView::of(store, &s, false, now)?);
                }
            }
            if json {
                return super::print_json(&views);
            }
            if views.is_empty() {
                say!("no syncs (create one with `segsync sync create`)");
                return Ok(());
            }
            let time = |t: Option<DateTime<Utc>>| {
                t.map_or("-".to_string(), |t| t.format("%Y-%m-%d %H:%M").to_string())
            };
            say!(
                "{:>4}  {:<20} {:<9} {:<10} {:<18} {:<16} {:<16} {:<16} actions",
                "id",
                "segment",
                "status",
                "latest",
                "destination",
                "schedule",
                "last synced",
                "next run"
            );
            for v in &views {
                let s = &v.sync;
                say!(
                    "{:>4}  {:<20} {:<9} {:<10} {:<18} {:<16} {:<16} {:<16} {}",
                    s.id,
                    s.segment,
                    super::word(s.status),
                    v.latest_status.map_or("-".to_string(), super::word),
                    s.destination,
                    schedule_text(s.schedule),
                    time(v.last_synced),
                    time(v.next_run),
                    v.allowed().join(",")
                );
            }
            Ok(())
        }
        SyncCmd::Show { id, json } => print_sync(store, &actions::load(store, id)?, json),
        SyncCmd::Edit(e) => {
            let edit = SyncEdit {
                destination: e.destination,
                every: e.every,
                start: e.start,
                end: SyncEdit::end_change(e.end, e.no_end),
                notify: if e.no_notify {
                    Some(Vec::new())
                } else if e.notify.is_empty() {
                    None
                } else {
                    Some(e.notify)
                },
            };
            let s = actions::edit(store, e.id, edit, now, "cli")?;
            print_sync(store, &s, e.json)
        }
        SyncCmd::Run { id, json } => run_now(store, id, Trigger::AdHoc, json),
        SyncCmd::ResyncAll { id, json } => run_now(store, id, Trigger::ResyncAll, json),
        SyncCmd::ResyncLast { id, json } => run_now(store, id, Trigger::ResyncLast, json),
        SyncCmd::Pause { id, json } => print_sync(
            store,
            &actions::set_status(store, id, Action::Pause, now, "cli")?,
            json,
        ),
        SyncCmd::Archive { id, json } => print_sync(
            store,
            &actions::set_status(store, id, Action::Archive, now, "cli")?,
            json,
        ),
        SyncCmd::Plan {
            id,
            requests,
            discard,
            json,
        } => {
            if discard {
                let e = actions::discard_plan(store, id, "cli")?;
                if json {
                    return super::print_json(&row(&e));
                }
                say!("discarded the plan of execution {}", e.execution_id());
                return Ok(());
            }
            let p = actions::plan(store, id, now, "cli", requests)?;
            if json {
                return super::print_json(&p);
            }
            let e = &p.execution;
            say!(
                "execution {} planned ({}): +{} added, -{} removed, ~{} updated, {} total, {} skipped, {} pages; `segsync sync run {id}` sends exactly this",
                e.execution_id(),
                super::word(e.kind),
                e.added,
                e.removed,
                e.updated,
                e.total,
                e.skipped,
                e.total_pages
            );
            for r in &p.requests {
                say!();
                say!("{} {}", r.method, r.url);
                for (k, v) in &r.headers {
                    say!("{k}: {v}");
                }
                say!("{}", serde_json::to_string_pretty(&r.body)?);
            }
            Ok(())
        }
        SyncCmd::Execution {
            execution: (id, seq),
            pages,
            json,
        } => {
            actions::load(store, id)?;
            let e = ExecutionRecord::load(store, id, seq)?
                .ok_or_else(|| UsageError(format!("sync {id} has no execution {seq}")))?;
            store.ensure_details(&e)?;
            let all = if pages == "all" {
                e.page_outcomes(store)?
            } else {
                e.failed_pages(store)?
            };
            if json {
                return super::print_json(&all);
            }
            if all.is_empty() {
                say!("execution {}: no {pages} pages", e.execution_id());
            }
            for o in &all {
                say!(
                    "page {:>6}  {:<10} {:>3} attempts  {}  {}",
                    o.page,
                    if o.delivered {
                        "delivered".to_string()
                    } else {
                        o.status
                            .map_or("failed".to_string(), |s| format!("refused {s}"))
                    },
                    o.attempts,
                    super::fmt_ms(o.at_ms),
                    o.error.as_deref().unwrap_or("")
                );
            }
            Ok(())
        }
        SyncCmd::Replay {
            execution: (id, seq),
            json,
        } => execute_and_report(
            store,
            actions::start_replay(store, id, seq, now, "cli")?,
            json,
        ),
        SyncCmd::History { id, json } => {
            actions::load(store, id)?;
            let all = ExecutionRecord::all(store, id)?;
            if json {
                let rows: Vec<Row<'_>> = all.iter().map(row).collect();
                return super::print_json(&rows);
            }
            if all.is_empty() {
                say!("no executions yet");
            }
            for e in &all {
                print_exec(e);
            }
            Ok(())
        }
    }
}

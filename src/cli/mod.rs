//! The command line: clap definitions and dispatch, one file per command
//! group. This is the edge where errors become `anyhow` with context and
//! then exit codes: 0 ok, 1 failure, 2 usage or bad input.

mod bench;
mod demo;
mod destination;
mod fixtures;
mod notifications;
mod receive;
mod segment;
mod serve;
mod sync;
mod users;
mod workspace;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::store::Store;

/// segsync: keeps customer segments in sync with the systems around them.
#[derive(Debug, Parser)]
#[command(name = "segsync", version, about)]
pub struct Args {
    /// Data directory (created on first use).
    #[arg(
        long,
        global = true,
        env = "SEGSYNC_DATA_DIR",
        default_value = "./segsync-data"
    )]
    pub data_dir: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Import users and attributes.
    #[command(subcommand)]
    Users(users::UsersCmd),
    /// Import, list, inspect and diff segments.
    #[command(subcommand)]
    Segment(segment::SegmentCmd),
    /// Destinations (integrations): add, list, show, edit, remove, preview, test.
    #[command(subcommand)]
    Destination(Box<destination::DestinationCmd>),
    /// Syncs: create, list, show, run, history.
    #[command(subcommand)]
    Sync(sync::SyncCmd),
    /// Generate test data.
    #[command(subcommand)]
    Fixtures(fixtures::FixturesCmd),
    /// Run the main job end to end on built-in data and a built-in receiver.
    Demo(demo::DemoArgs),
    /// End-to-end performance figures on generated data.
    Bench(bench::BenchArgs),
    /// Run the scheduler and the admin REST API (holds the data dir).
    Serve(serve::ServeArgs),
    /// The notification outbox.
    #[command(subcommand)]
    Notifications(notifications::NotificationsCmd),
    /// Run the built-in checking receiver (a local destination for trials).
    Receive(receive::ReceiveArgs),
    /// Workspaces this data dir receives Cohort Sync requests for, and the cohorts received.
    #[command(subcommand)]
    Workspace(workspace::WorkspaceCmd),
    /// Write keys for Personas identify/track/batch calls.
    #[command(subcommand)]
    Writekey(workspace::WriteKeyCmd),
}

/// An error in how segsync was called (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Runs a parsed command line.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Users(cmd) => users::run(&args.data_dir, cmd),
        Command::Segment(cmd) => segment::run(&args.data_dir, cmd),
        Command::Destination(cmd) => destination::run(&args.data_dir, *cmd),
        Command::Sync(cmd) => sync::run(&args.data_dir, cmd),
        Command::Fixtures(cmd) => fixtures::run(cmd),
        Command::Demo(a) => demo::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Receive(a) => receive::run(a),
        Command::Serve(a) => serve::run(&args.data_dir, a),
        Command::Notifications(cmd) => notifications::run(&args.data_dir, cmd),
        Command::Workspace(cmd) => workspace::run(&args.data_dir, cmd),
        Command::Writekey(cmd) => workspace::run_write_key(&args.data_dir, cmd),
    }
}

/// The exit code for an error: 2 for bad input or usage, 1 otherwise.
/// The first error in the chain that knows whose fault it is decides.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    macro_rules! classify {
        ($cause:expr, $($ty:ty),*) => {
            $( if let Some(e) = $cause.downcast_ref::<$ty>() {
                return if e.is_bad_input() { 2 } else { 1 };
            } )*
        };
    }
    for cause in err.chain() {
        if cause.is::<UsageError>() || cause.is::<crate::destination::ConfigError>() {
            return 2;
        }
        classify!(
            cause,
            crate::ingest::Error,
            crate::plan::Error,
            crate::pipeline::Error,
            crate::destination::Error,
            crate::inbound::Error,
            crate::lifecycle::actions::ActionError
        );
    }
    1
}

pub(crate) fn open_store(dir: &std::path::Path) -> anyhow::Result<Store> {
    Ok(Store::open(dir)?)
}

/// Prints `value` as pretty JSON on stdout.
pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Formats Unix milliseconds as RFC 3339 UTC.
pub(crate) fn fmt_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

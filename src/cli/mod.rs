//! The command line: clap definitions and dispatch, one file per command
//! group. This is the edge where errors become `anyhow` with context and
//! then exit codes: 0 ok, 1 failure, 2 usage or bad input.

mod backup;
mod bench;
mod bench_compare;
mod bench_personas;
mod bench_workers;
mod check;
mod compact;
mod demo;
mod destination;
mod fixtures;
mod notifications;
pub(crate) mod output;
mod receive;
mod remote;
mod segment;
mod serve;
mod soak;
mod sync;
mod token;
mod users;
mod worker;
mod workspace;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::error::{Classify, Fault};
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
    /// A running `segsync serve` to send the command to (with the token in
    /// SEGSYNC_TOKEN). Without it, a `serve` holding the data dir is found
    /// through its `serve.json`.
    #[arg(long, global = true, env = "SEGSYNC_SERVER")]
    pub server: Option<String>,
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
    /// Tokens for the admin API (`serve`'s /api/v1).
    #[command(subcommand)]
    Token(token::TokenCmd),
    /// Verify the store's invariants (bitmaps, execution counts,
    /// fingerprints); exit code 1 on any violation.
    Check(check::CheckArgs),
    /// Apply `[retention]` and compact the store (what no sync needs goes).
    Compact(compact::CompactArgs),
    /// Take a consistent backup of the data dir while it is in use.
    Backup(backup::BackupArgs),
    /// Make the new data dir `--data-dir` from a backup.
    Restore(backup::RestoreArgs),
    /// `serve` under a steady mixed load with faulty receivers for a while,
    /// then check every destination (on a store of its own).
    Soak(soak::SoakArgs),
    /// A stateless page sender for `serve --nats` (any number, any machine).
    Worker(worker::WorkerArgs),
    /// The workers the running `serve --nats` hears from.
    Workers(worker::WorkersArgs),
}

pub use output::exit_quietly_on_broken_pipe;
pub use remote::Exit;

/// The runner `serve` uses to run commands for CLI clients.
pub fn command_runner() -> crate::server::CommandRunner {
    std::sync::Arc::new(remote::run_for_client)
}

/// An error in how segsync was called (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Runs a parsed command line: through a running `serve` when one holds the
/// data dir (or `--server` names one), else on the data dir itself.
pub fn run(args: Args) -> anyhow::Result<()> {
    if uses_store(&args.command) {
        if let Some(r) = remote::target(&args) {
            return remote::run(&r, &args);
        }
    }
    run_local(args)
}

/// Whether the command works on the data dir's store (and so may go
/// through a server).
fn uses_store(c: &Command) -> bool {
    !matches!(
        c,
        Command::Fixtures(_)
            | Command::Demo(_)
            | Command::Bench(_)
            | Command::Serve(_)
            | Command::Receive(_)
            | Command::Restore(_)
            | Command::Soak(_)
            | Command::Worker(_)
            | Command::Workers(_)
    )
}

impl Args {
    /// Whether this is a bulk import from a file (`users import`, `segment
    /// import`): the binary tunes the allocator for those (see `main.rs`).
    pub fn is_bulk_import(&self) -> bool {
        matches!(
            self.command,
            Command::Users(users::UsersCmd::Import(_))
                | Command::Segment(segment::SegmentCmd::Import { .. })
        )
    }
}

/// Whether the command only reads (what a viewer token may run).
fn reads_only(c: &Command) -> bool {
    use destination::DestinationCmd as D;
    use segment::SegmentCmd as S;
    use sync::SyncCmd as Y;
    match c {
        Command::Segment(s) => !matches!(s, S::Import { .. }),
        Command::Destination(d) => {
            matches!(**d, D::List { .. } | D::Show { .. } | D::Preview { .. })
        }
        Command::Sync(s) => matches!(
            s,
            Y::List { .. } | Y::Show { .. } | Y::History { .. } | Y::Execution { .. }
        ),
        Command::Notifications(_) | Command::Check(_) => true,
        Command::Workspace(w) => matches!(
            w,
            workspace::WorkspaceCmd::List { .. } | workspace::WorkspaceCmd::Cohorts { .. }
        ),
        Command::Writekey(w) => matches!(w, workspace::WriteKeyCmd::List { .. }),
        Command::Token(t) => matches!(t, token::TokenCmd::List { .. }),
        _ => false,
    }
}

/// Runs a command on the data dir (or, inside `serve`, on its store).
pub(crate) fn run_local(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Users(cmd) => users::run(&args.data_dir, cmd),
        Command::Segment(cmd) => segment::run(&args.data_dir, cmd),
        Command::Destination(cmd) => destination::run(&args.data_dir, *cmd),
        Command::Sync(cmd) => sync::run(&args.data_dir, cmd),
        Command::Fixtures(cmd) => fixtures::run(cmd),
        Command::Demo(a) => demo::run(a),
        Command::Bench(a) => match a.workers {
            Some(n) => bench_workers::run(n, a),
            None => bench::run(a),
        },
        Command::Receive(a) => receive::run(a),
        Command::Serve(a) => serve::run(&args.data_dir, a),
        Command::Notifications(cmd) => notifications::run(&args.data_dir, cmd),
        Command::Workspace(cmd) => workspace::run(&args.data_dir, cmd),
        Command::Writekey(cmd) => workspace::run_write_key(&args.data_dir, cmd),
        Command::Token(cmd) => token::run(&args.data_dir, cmd),
        Command::Check(a) => check::run(&args.data_dir, a),
        Command::Compact(a) => compact::run(&args.data_dir, a),
        Command::Backup(a) => backup::backup(&args.data_dir, a),
        Command::Restore(a) => backup::restore(&args.data_dir, a),
        Command::Soak(a) => soak::run(a),
        Command::Worker(a) => worker::run(a),
        Command::Workers(ref a) => worker::list(&args, a),
    }
}

impl Classify for UsageError {
    fn fault(&self) -> Fault {
        Fault::BadInput
    }
}

/// The fault of one error of a chain, found by its concrete type: the
/// CLI's own error types first, then every error type of the library. (The
/// test below fails when an error type of `src/` is missing here.)
macro_rules! registry {
    ($($ty:ty),* $(,)?) => {
        fn fault_of(e: &(dyn std::error::Error + 'static)) -> Option<Fault> {
            $( if let Some(x) = e.downcast_ref::<$ty>() {
                return Some(x.fault());
            } )*
            None
        }
    };
}

registry!(
    UsageError,
    sync::ExecutionFailed,
    check::CheckFailed,
    destination::TestFailed,
    demo::Mismatch,
    remote::RemoteError,
    remote::Exit,
    crate::lifecycle::actions::ActionError,
    crate::lifecycle::limits::LimitReached,
    crate::lifecycle::rules::Refused,
    crate::pipeline::Error,
    crate::plan::Error,
    crate::destination::Error,
    crate::destination::ConfigError,
    crate::inbound::Error,
    crate::auth::Error,
    crate::ingest::Error,
    crate::config::Error,
    crate::store::Error,
    crate::cluster::Error,
    crate::worker::Error,
);

/// The exit code for an error, from its [`Fault`]: 2 for what the user can
/// correct, 1 otherwise. The first error in the chain whose type is known
/// decides; an error of no known type is a failure.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    if let Some(remote::Exit(code)) = err.downcast_ref() {
        return *code;
    }
    err.chain()
        .find_map(fault_of)
        .unwrap_or(Fault::Internal)
        .exit_code()
}

/// The store a command works on: its own, or the one `serve` lent it when
/// `serve` runs the command for a CLI client.
pub(crate) enum StoreHandle {
    /// Opened by this command.
    Own(Box<Store>),
    /// `serve`'s.
    Shared(std::sync::Arc<Store>),
}

impl std::ops::Deref for StoreHandle {
    type Target = Store;
    fn deref(&self) -> &Store {
        match self {
            StoreHandle::Own(s) => s,
            StoreHandle::Shared(s) => s,
        }
    }
}

pub(crate) fn open_store(dir: &std::path::Path) -> anyhow::Result<StoreHandle> {
    if let Some(s) = output::shared_store() {
        return Ok(StoreHandle::Shared(s));
    }
    Ok(StoreHandle::Own(Box::new(Store::open(dir)?)))
}

/// Prints `value` as pretty JSON on stdout.
pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    output::say!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A unit enum value as its serde name (`active`, `viewer`).
pub(crate) fn word<T: serde::Serialize>(v: T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Formats Unix milliseconds as RFC 3339 UTC.
pub(crate) fn fmt_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    fn sources(dir: &std::path::Path, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                sources(&p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push((
                    p.display().to_string(),
                    std::fs::read_to_string(&p).unwrap(),
                ));
            }
        }
    }

    /// A new error type that nobody classified would silently exit 1 and
    /// answer 500: every `thiserror` type in `src/` must implement
    /// [`Classify`] and be in the registry (or, for the CLI's own, in
    /// `cli::exit_code`).
    #[test]
    fn every_error_type_is_classified_and_registered() {
        let mut files = Vec::new();
        sources(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        let all: String = files.iter().map(|(_, s)| s.as_str()).collect();
        let registry = include_str!("mod.rs");
        let mut checked = 0;
        for (path, text) in &files {
            let mut lines = text.lines();
            while let Some(line) = lines.next() {
                if !line.contains("thiserror::Error") {
                    continue;
                }
                let Some(decl) = lines.by_ref().find(|l| {
                    let l = l.trim_start();
                    l.starts_with("pub") && (l.contains(" enum ") || l.contains(" struct "))
                }) else {
                    continue;
                };
                let name = decl
                    .split_whitespace()
                    .skip_while(|w| *w != "enum" && *w != "struct")
                    .nth(1)
                    .unwrap()
                    .trim_end_matches(|c: char| !c.is_alphanumeric())
                    .split(['(', '<', '{'])
                    .next()
                    .unwrap()
                    .to_string();
                assert!(
                    all.contains(&format!("impl Classify for {name} "))
                        || all.contains(&format!("impl crate::error::Classify for {name} ")),
                    "{path}: error type {name} does not implement Classify"
                );
                let registered = registry.contains(&format!("::{name},\n"))
                    || registry.contains(&format!("    {name},\n"));
                assert!(
                    registered || decl.contains("pub(crate)"),
                    "{path}: error type {name} is not in the registry"
                );
                checked += 1;
            }
        }
        assert!(checked >= 10, "only {checked} error types found");
    }

    #[test]
    fn only_file_imports_count_as_bulk_imports() {
        use clap::Parser;
        let bulk = |argv: &[&str]| {
            let mut full = vec!["segsync"];
            full.extend_from_slice(argv);
            super::Args::try_parse_from(full).unwrap().is_bulk_import()
        };
        assert!(bulk(&["users", "import", "u.csv"]));
        assert!(bulk(&["segment", "import", "vip", "ids.txt"]));
        assert!(!bulk(&["segment", "list"]));
        assert!(!bulk(&["sync", "run", "1"]));
        assert!(!bulk(&["serve"]));
    }
}

//! Ingestion: bulk files of users and segment snapshots into the store.
//!
//! Readers stream the file (id list, CSV with header, NDJSON; gzip detected
//! by magic bytes) in batches; the [`interner`] turns distinct ids into user
//! indexes; attribute changes and the member bitmap go through one
//! [`ImportTxn`], so an import is atomic: a bad line aborts it (exit code 2,
//! `FILE:LINE: reason`) and nothing of it becomes visible, unless
//! `--skip-invalid` asks to skip such lines and count them.

mod flat_json;
mod idlist;
pub mod input;
pub mod interner;
mod pending;
mod rows;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use roaring::RoaringBitmap;
use serde::Serialize;

use crate::error::{Classify, Fault};
use crate::progress::Progress;
use crate::store::{self, ImportTxn, Store};
use input::{Input, InputFormat};
use interner::Interner;

/// How many skipped lines are quoted in the summary.
const MAX_EXAMPLES: usize = 10;

/// Errors of an import. Every variant but [`Error::Store`] is bad input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A line of the file is malformed.
    #[error("{file}:{line}: {reason}")]
    Line {
        /// The file.
        file: String,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// The file cannot be opened or read (missing, unreadable, corrupt gzip).
    #[error("{file}: {reason}")]
    File {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// The store failed; the import was rolled back.
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl Classify for Error {
    fn fault(&self) -> Fault {
        match self {
            Error::Line { .. } | Error::File { .. } => Fault::BadInput,
            Error::Store(e) => e.fault(),
        }
    }
}

/// Options shared by both imports.
#[derive(Debug, Clone)]
pub struct Options {
    /// Column (CSV) or field (NDJSON) holding the distinct id.
    pub id_column: String,
    /// Skip malformed lines (and count them) instead of aborting.
    pub skip_invalid: bool,
    /// Show a progress bar when stderr is a terminal.
    pub progress: bool,
    /// How ids are looked up among the store's users.
    pub lookups: Lookups,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            id_column: "distinct_id".into(),
            skip_invalid: false,
            progress: false,
            lookups: Lookups::Auto,
        }
    }
}

/// Where an import looks ids up: the fingerprint table loaded whole (13.6
/// bytes of memory a user of the store), or its file read in windows as
/// sorted batches reach them (15 MB at 10M users; every batch may read the
/// whole file: a few per cent of a users file's time, a third of an id
/// list's unless the list is small next to the store).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Lookups {
    /// Paged when the store has at least [`PAGED_MIN_USERS`] users, for a
    /// users file of any size, for an id list when it has, by its size, at
    /// most half as many ids as the store has users; else loaded.
    #[default]
    Auto,
    /// Always load the table.
    Memory,
    /// Always read the table's file.
    File,
}

/// Users a store has before [`Lookups::Auto`] considers paging: below,
/// the table is under 54 MB and loading it costs little.
pub const PAGED_MIN_USERS: u32 = 4_000_000;

/// Inputs from this size (or of unknown size) import with RocksDB's
/// memtable budget and block cache lowered ([`ImportTxn::lower_memory`]).
/// A smaller one keeps them: lowering flushes the memtables and empties
/// the cache that real-time calls read through, for nothing an import of
/// a few thousand rows would notice.
///
/// [`ImportTxn::lower_memory`]: crate::store::ImportTxn::lower_memory
pub const LOWER_MEMORY_MIN_BYTES: u64 = 1 << 20;

fn lowers_memory(input_bytes: u64) -> bool {
    input_bytes == 0 || input_bytes >= LOWER_MEMORY_MIN_BYTES
}

/// Bytes an id is taken to have at least when an id list's length is
/// estimated from its size (the id and a newline): few, so a large list is
/// not taken for a small one. Gzip inputs are taken to expand five times.
const MIN_ID_BYTES: u64 = 16;
const GZIP_EXPANSION: u64 = 5;

impl Lookups {
    /// Whether an import of `input_bytes` (0: unknown, as for an upload)
    /// into a store of `users` users reads the table's file. Paging costs
    /// each batch up to a read of the whole file, whatever its rows do: a
    /// few per cent of a users file's time even in creation order (its
    /// rows cost far more than the reads), so every users file pages in a
    /// large store (memory then does not grow with the table); but a
    /// third of an id list's (12M ids a second), which therefore pages
    /// only when it is known to be small, and otherwise holds the table
    /// (227 MB for a 10M-id snapshot of 10M users).
    fn paged(self, users: u32, input_bytes: u64, gzip: bool, id_list: bool) -> bool {
        match self {
            Lookups::Memory => false,
            Lookups::File => true,
            Lookups::Auto if !id_list => users >= PAGED_MIN_USERS,
            Lookups::Auto => {
                let bytes = input_bytes.saturating_mul(if gzip { GZIP_EXPANSION } else { 1 });
                let ids = bytes / MIN_ID_BYTES;
                users >= PAGED_MIN_USERS
                    && input_bytes > 0
                    && ids.saturating_mul(2) <= u64::from(users)
            }
        }
    }
}

/// What an import did; printed as a summary line or JSON.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Summary {
    /// The file.
    pub file: PathBuf,
    /// Detected format.
    pub format: String,
    /// Segment name (segment imports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    /// Snapshot sequence number (segment imports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<u32>,
    /// Data lines read.
    pub lines: u64,
    /// Users created.
    pub users_new: u64,
    /// Distinct users the file named that already existed.
    pub users_known: u64,
    /// Distinct members of the snapshot (segment imports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<u64>,
    /// Attribute values set.
    pub attributes_set: u64,
    /// Attribute values deleted.
    pub attributes_deleted: u64,
    /// Lines skipped with `--skip-invalid`.
    pub skipped: u64,
    /// The first skipped lines, as `FILE:LINE: reason`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_examples: Vec<String>,
    /// Wall time.
    pub seconds: f64,
    /// Lines per second.
    pub ids_per_sec: f64,
}

/// The state a reader feeds: transaction, interner, member bitmap, counts.
pub(crate) struct Sink<'s, 'o> {
    txn: ImportTxn<'s>,
    interner: Interner,
    members: idlist::DenseSet,
    file: String,
    opts: &'o Options,
    lines: u64,
    skipped: u64,
    examples: Vec<String>,
    progress: Progress,
    input_read: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<'s> Sink<'s, '_> {
    pub(crate) fn parts(&mut self) -> (&mut ImportTxn<'s>, &mut Interner) {
        (&mut self.txn, &mut self.interner)
    }

    pub(crate) fn members_mut(&mut self) -> &mut idlist::DenseSet {
        &mut self.members
    }

    pub(crate) fn id_column(&self) -> &str {
        &self.opts.id_column
    }

    pub(crate) fn lines(&self) -> u64 {
        self.lines
    }

    /// Counts a line and returns its 1-based number.
    pub(crate) fn next_line(&mut self) -> u64 {
        self.lines += 1;
        self.lines
    }

    /// Counts lines read elsewhere (by the id-list producer thread).
    pub(crate) fn add_lines(&mut self, n: u64) {
        self.lines += n;
    }

    pub(crate) fn set_line(&mut self, line: u64) {
        self.lines = self.lines.max(line);
    }

    pub(crate) fn line_error(&self, line: u64, reason: String) -> Error {
        Error::Line {
            file: self.file.clone(),
            line,
            reason,
        }
    }

    /// A malformed line: an error, or with `--skip-invalid` a counted skip.
    pub(crate) fn bad_line(&mut self, line: u64, reason: String) -> Result<(), Error> {
        if !self.opts.skip_invalid {
            return Err(self.line_error(line, reason));
        }
        self.skipped += 1;
        if self.examples.len() < MAX_EXAMPLES {
            self.examples
                .push(format!("{}:{line}: {reason}", self.file));
        }
        Ok(())
    }

    pub(crate) fn read_error(&self, e: std::io::Error) -> Error {
        Error::File {
            file: self.file.clone(),
            reason: format!("{READ_FAILED_AFTER}{}: {e}", self.lines),
        }
    }

    pub(crate) fn csv_error(&self, e: &csv::Error) -> Error {
        match e.position() {
            Some(p) => self.line_error(p.line(), format!("malformed CSV: {e}")),
            None => Error::File {
                file: self.file.clone(),
                reason: format!("malformed CSV: {e}"),
            },
        }
    }

    pub(crate) fn progress(&self) {
        self.progress.set(self.input_read.load(Ordering::Relaxed));
    }
}

enum Kind<'a> {
    Users,
    Segment(&'a str),
}

/// How a read error starts, before the line it names.
const READ_FAILED_AFTER: &str = "read failed after line ";

/// The line a read error (`…read failed after line N: …`) names, for tests
/// of where a file stopped being readable.
#[cfg(test)]
pub(crate) fn line_read_before_failure(error: &str) -> u64 {
    error
        .split(READ_FAILED_AFTER)
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no line read in: {error}"))
}

/// Imports users and their attributes from a CSV (with header) or NDJSON file.
pub fn import_users(store: &Store, path: &Path, opts: &Options) -> Result<Summary, Error> {
    run(store, Source::File(path), opts, Kind::Users)
}

/// Imports a snapshot of segment `name`: one distinct id per line, or CSV or
/// NDJSON with an id column (other columns upsert attributes).
pub fn import_segment(
    store: &Store,
    name: &str,
    path: &Path,
    opts: &Options,
) -> Result<Summary, Error> {
    import_segment_from(store, name, Source::File(path), opts)
}

/// [`import_users`] from any source (an HTTP upload streams through here).
pub fn import_users_from(
    store: &Store,
    source: Source<'_>,
    opts: &Options,
) -> Result<Summary, Error> {
    run(store, source, opts, Kind::Users)
}

/// [`import_segment`] from any source (an HTTP upload streams through here).
pub fn import_segment_from(
    store: &Store,
    name: &str,
    source: Source<'_>,
    opts: &Options,
) -> Result<Summary, Error> {
    if name.trim().is_empty() {
        return Err(Error::File {
            file: source.name(),
            reason: "segment name must not be empty".into(),
        });
    }
    run(store, source, opts, Kind::Segment(name))
}

/// Where an import reads from.
pub enum Source<'a> {
    /// A file.
    File(&'a Path),
    /// A stream (an HTTP upload), named `name` in messages.
    Stream {
        /// How messages name it (`FILE:LINE: reason`).
        name: &'a str,
        /// The bytes, gzip or not.
        reader: Box<dyn std::io::Read + Send>,
        /// How many bytes it holds, if the sender said so ahead (0 when
        /// not): an id list pages its lookups only when known to be small,
        /// and an import lowers RocksDB's budgets only from 1 MB.
        size: u64,
    },
}

impl Source<'_> {
    fn name(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Stream { name, .. } => name.to_string(),
        }
    }
}

fn run(
    store: &Store,
    source: Source<'_>,
    opts: &Options,
    kind: Kind<'_>,
) -> Result<Summary, Error> {
    let started = Instant::now();
    let file = source.name();
    let opened = match source {
        Source::File(path) => Input::open(path),
        Source::Stream { reader, size, .. } => Input::from_reader(reader, size),
    };
    let mut input = opened.map_err(|e| Error::File {
        file: file.clone(),
        reason: e.to_string(),
    })?;
    let format = input.detect(&opts.id_column).map_err(|e| Error::File {
        file: file.clone(),
        reason: format!("cannot read: {e}"),
    })?;
    if matches!(kind, Kind::Users) && format == InputFormat::IdList {
        return Err(Error::Line {
            file,
            line: 1,
            reason: format!(
                "a users file needs a CSV header naming the id column '{}' or NDJSON objects",
                opts.id_column
            ),
        });
    }
    let mut txn = store.begin_import()?;
    let users = store.counters().user_count;
    let paged = opts
        .lookups
        .paged(users, input.size, input.gzip, format == InputFormat::IdList);
    if paged {
        tracing::info!(
            file = %file,
            bytes = input.size,
            users,
            "ids looked up in the fingerprint table's file"
        );
    }
    if lowers_memory(input.size) {
        txn.lower_memory();
    }
    // The fingerprint table (136 MB at 10M users) loads, or its file is
    // opened, on another thread while the first blocks are read and hashed.
    std::thread::scope(|scope| {
        let (table_tx, table_rx) = crossbeam::channel::bounded(1);
        scope.spawn(move || {
            let known = if paged {
                store.fingerprint_reader().map(store::KnownUsers::Paged)
            } else {
                store.fingerprints().map(store::KnownUsers::Loaded)
            };
            let _ = table_tx.send(known);
        });
        let interner = Interner::deferred(table_rx);
        // Staged writes go to a thread of their own while this one reads,
        // resolves and encodes the next batch.
        txn.write_on(scope);
        let mut sink = Sink {
            txn,
            interner,
            members: idlist::DenseSet::default(),
            file: file.clone(),
            opts,
            lines: 0,
            skipped: 0,
            examples: Vec::new(),
            progress: Progress::bytes(input.size, opts.progress, "importing"),
            input_read: input.read.clone(),
        };
        let read = match format {
            InputFormat::IdList => idlist::read(&mut input.reader, &mut sink),
            InputFormat::Csv => rows::read_csv(&mut input.reader, &mut sink),
            InputFormat::Ndjson => rows::read_ndjson(&mut input.reader, &mut sink),
        };
        // On error `sink` (and its transaction) drops here, which rolls back.
        read?;
        sink.progress.finish();

        let Sink {
            mut txn,
            mut interner,
            members,
            lines,
            skipped,
            examples,
            ..
        } = sink;
        let members: RoaringBitmap = members.to_bitmap();
        // For CSV, `lines` counted the header line too.
        let lines = lines.saturating_sub(u64::from(format == InputFormat::Csv));
        let users_new = u64::from(txn.new_users());
        let attr = txn.attr_stats();
        let (segment, snapshot, member_count) = match kind {
            Kind::Users => (None, None, None),
            Kind::Segment(name) => {
                let rec = txn.put_snapshot(name, &members, lines, &file)?;
                let seq = rec.latest().map(|s| s.seq);
                (Some(name.to_string()), seq, Some(members.len()))
            }
        };
        txn.commit(Some(interner.finish()?))?;
        let seconds = started.elapsed().as_secs_f64();
        let summary = Summary {
            file: PathBuf::from(&file),
            format: match format {
                InputFormat::IdList => "id-list",
                InputFormat::Csv => "csv",
                InputFormat::Ndjson => "ndjson",
            }
            .to_string(),
            segment,
            snapshot,
            lines,
            users_new,
            users_known: members.len().saturating_sub(users_new),
            members: member_count,
            attributes_set: attr.set,
            attributes_deleted: attr.deleted,
            skipped,
            skipped_examples: examples,
            seconds,
            ids_per_sec: if seconds > 0.0 {
                lines as f64 / seconds
            } else {
                0.0
            },
        };
        tracing::info!(
            file = %summary.file.display(),
            lines,
            users_new,
            users_known = summary.users_known,
            members = ?member_count,
            seconds,
            "import committed"
        );
        Ok(summary)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_page_users_files_and_only_small_id_lists_in_large_stores() {
        let m = PAGED_MIN_USERS;
        let auto = |users, bytes, gzip, id_list| Lookups::Auto.paged(users, bytes, gzip, id_list);
        // 10M users: a users file pages whatever its size, known or not
        // (an upload of unknown size), gzip or not.
        assert!(auto(10_000_000, 22_000_000, false, false));
        assert!(auto(10_000_000, 262_000_000, false, false));
        assert!(auto(10_000_000, 5_000_000_000, false, false));
        assert!(auto(10_000_000, 0, false, false));
        assert!(auto(10_000_000, 40_000_000, true, false));
        // An id list pages at most half as many ids as users: a 1M-id
        // snapshot does, a 10M-id one (149 MB) does not, nor a 100 MB one,
        // nor one of unknown size; gzip is taken as five times its size.
        assert!(auto(10_000_000, 15_000_000, false, true));
        assert!(!auto(10_000_000, 100_000_000, false, true));
        assert!(!auto(10_000_000, 149_000_000, false, true));
        assert!(!auto(10_000_000, 0, false, true));
        assert!(auto(10_000_000, 10_000_000, true, true));
        assert!(!auto(10_000_000, 20_000_000, true, true));
        // Below the store size that makes the table worth leaving on disk.
        assert!(!auto(m - 1, 1000, false, false));
        assert!(!auto(m - 1, 1000, false, true));
        assert!(auto(m, 1000, false, false));
        // The edge of an id list: at 16 bytes an id, half the users.
        let edge = u64::from(m) * MIN_ID_BYTES / 2;
        assert!(auto(m, edge, false, true));
        assert!(!auto(m, edge + MIN_ID_BYTES, false, true));
        // Forced either way.
        assert!(Lookups::File.paged(0, 0, false, true));
        assert!(!Lookups::Memory.paged(u32::MAX, 1, false, false));
    }

    #[test]
    fn only_bulk_or_unsized_inputs_lower_rocksdbs_memory() {
        assert!(!lowers_memory(1));
        assert!(!lowers_memory(LOWER_MEMORY_MIN_BYTES - 1));
        assert!(lowers_memory(LOWER_MEMORY_MIN_BYTES));
        assert!(lowers_memory(262_000_000));
        // An upload of unknown size may be any size.
        assert!(lowers_memory(0));
    }
}

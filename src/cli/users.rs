//! `segsync users …`: bulk import of users and attributes.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::output::say;
use crate::ingest;

/// `users` subcommands.
#[derive(Debug, Subcommand)]
pub enum UsersCmd {
    /// Import users from CSV (with header) or NDJSON, optionally gzip.
    /// An empty value or JSON null deletes the attribute.
    Import(ImportArgs),
}

/// Options shared by `users import` and `segment import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The file (CSV with header, NDJSON, or for segments one id per line; gzip ok).
    pub file: PathBuf,
    /// Column or field holding the distinct id.
    #[arg(long, default_value = "distinct_id")]
    pub id_column: String,
    /// Skip malformed lines and count them instead of aborting the import.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Where ids are looked up among the store's users: the fingerprint
    /// table loaded whole (`memory`), its file read as sorted batches reach
    /// it (`file`: little memory), or chosen by the store's users and, for
    /// an id list, the input's size (`auto`).
    #[arg(long, value_enum, default_value_t = ingest::Lookups::Auto)]
    pub lookups: ingest::Lookups,
}

impl ImportArgs {
    pub(crate) fn options(&self) -> ingest::Options {
        ingest::Options {
            id_column: self.id_column.clone(),
            skip_invalid: self.skip_invalid,
            progress: true,
            lookups: self.lookups,
        }
    }
}

pub(crate) fn run(data_dir: &Path, cmd: UsersCmd) -> anyhow::Result<()> {
    match cmd {
        UsersCmd::Import(a) => {
            let store = super::open_store(data_dir)?;
            let s = ingest::import_users(&store, &a.file, &a.options())?;
            print_summary(&s, a.json)
        }
    }
}

pub(crate) fn print_summary(s: &ingest::Summary, json: bool) -> anyhow::Result<()> {
    if json {
        return super::print_json(s);
    }
    let what = match (&s.segment, s.snapshot) {
        (Some(name), Some(seq)) => format!("segment {name} snapshot {seq}: "),
        _ => String::new(),
    };
    let members = s
        .members
        .map(|m| format!(", {m} members"))
        .unwrap_or_default();
    say!(
        "{what}{} lines ({}), users {} new / {} known{members}, attributes {} set / {} deleted, {:.2} s, {:.0} ids/s",
        s.lines, s.format, s.users_new, s.users_known, s.attributes_set, s.attributes_deleted, s.seconds, s.ids_per_sec
    );
    if s.skipped > 0 {
        say!("skipped {} invalid lines:", s.skipped);
        for e in &s.skipped_examples {
            say!("  {e}");
        }
    }
    Ok(())
}

//! `segsync segment …`: snapshot import, listing, details and diffs.

use std::path::Path;

use clap::Subcommand;
use serde::Serialize;

use super::output::say;
use super::users::{print_summary, ImportArgs};
use crate::{ingest, plan};

/// `segment` subcommands.
#[derive(Debug, Subcommand)]
pub enum SegmentCmd {
    /// Import a snapshot of a segment: one distinct id per line, or CSV/NDJSON
    /// with an id column (other columns upsert attributes).
    Import {
        /// Segment name (created on first import).
        name: String,
        /// Import options.
        #[command(flatten)]
        args: ImportArgs,
    },
    /// List segments.
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show a segment and its snapshots.
    Show {
        /// Segment name.
        name: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// What changed between two snapshots (default: the last two).
    Diff {
        /// Segment name.
        name: String,
        /// Older snapshot number.
        #[arg(long)]
        from: Option<u32>,
        /// Newer snapshot number.
        #[arg(long)]
        to: Option<u32>,
        /// Count only members that have this attribute (as a sync would).
        #[arg(long)]
        attribute: Option<String>,
        /// List the distinct ids added and removed.
        #[arg(long)]
        ids: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Serialize)]
struct ListRow<'a> {
    name: &'a str,
    id: u32,
    snapshots: usize,
    latest_seq: Option<u32>,
    members: u64,
    updated: Option<String>,
}

#[derive(Serialize)]
struct DiffIds {
    added_ids: Vec<String>,
    removed_ids: Vec<String>,
}

pub(crate) fn run(data_dir: &Path, cmd: SegmentCmd) -> anyhow::Result<()> {
    let store = super::open_store(data_dir)?;
    match cmd {
        SegmentCmd::Import { name, args } => {
            let s = ingest::import_segment(&store, &name, &args.file, &args.options())?;
            print_summary(&s, args.json)
        }
        SegmentCmd::List { json } => {
            let segs = store.segments()?;
            let rows: Vec<ListRow<'_>> = segs
                .iter()
                .map(|s| ListRow {
                    name: &s.name,
                    id: s.id,
                    snapshots: s.snapshots.len(),
                    latest_seq: s.latest().map(|l| l.seq),
                    members: s.latest().map_or(0, |l| l.members),
                    updated: s.latest().map(|l| super::fmt_ms(l.at_ms)),
                })
                .collect();
            if json {
                return super::print_json(&rows);
            }
            if rows.is_empty() {
                say!("no segments yet (import one with `segsync segment import NAME FILE`)");
            }
            for r in rows {
                say!(
                    "{:<24} {:>12} members  {:>3} snapshots  updated {}",
                    r.name,
                    r.members,
                    r.snapshots,
                    r.updated.as_deref().unwrap_or("-")
                );
            }
            Ok(())
        }
        SegmentCmd::Show { name, json } => {
            let seg = store
                .segment(&name)?
                .ok_or_else(|| plan::Error::NoSegment(name.clone()))?;
            if json {
                return super::print_json(&seg);
            }
            say!(
                "segment {} (id {}), created {}",
                seg.name,
                seg.id,
                super::fmt_ms(seg.created_ms)
            );
            say!(
                "{:>5}  {:<20}  {:>12}  {:>12}  {:>10}  source",
                "seq",
                "imported",
                "members",
                "lines",
                "new users"
            );
            for s in &seg.snapshots {
                say!(
                    "{:>5}  {:<20}  {:>12}  {:>12}  {:>10}  {}",
                    s.seq,
                    super::fmt_ms(s.at_ms),
                    s.members,
                    s.lines,
                    s.new_users,
                    s.source
                );
            }
            Ok(())
        }
        SegmentCmd::Diff {
            name,
            from,
            to,
            attribute,
            ids,
            json,
        } => {
            let d = plan::segment_diff(&store, &name, from, to, attribute.as_deref())?;
            let id_lists = if ids {
                let (added_ids, removed_ids) = d.ids(&store)?;
                Some(DiffIds {
                    added_ids,
                    removed_ids,
                })
            } else {
                None
            };
            if json {
                #[derive(Serialize)]
                struct Out<'a> {
                    #[serde(flatten)]
                    diff: &'a plan::SegmentDiff,
                    #[serde(flatten, skip_serializing_if = "Option::is_none")]
                    ids: Option<DiffIds>,
                }
                return super::print_json(&Out {
                    diff: &d,
                    ids: id_lists,
                });
            }
            let from = d
                .from
                .map_or("nothing".to_string(), |f| format!("snapshot {f}"));
            let attr = d
                .attribute
                .as_ref()
                .map(|a| format!(" (members with {a})"))
                .unwrap_or_default();
            say!(
                "segment {} {from} → snapshot {}{attr}: +{} added, -{} removed, {} total (was {}), {:.2} ms",
                d.segment, d.to, d.added, d.removed, d.total, d.previous_total, d.millis
            );
            if let Some(l) = id_lists {
                for id in l.added_ids {
                    say!("+ {id}");
                }
                for id in l.removed_ids {
                    say!("- {id}");
                }
            }
            Ok(())
        }
    }
}

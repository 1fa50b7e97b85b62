//! `segsync workspace …` and `segsync writekey …`: the credentials inbound
//! requests must carry (Cohort Sync from another workspace; Personas write
//! keys), stored hashed and never printed back; and the cohorts received.

use std::path::Path;

use clap::Subcommand;
use serde::Serialize;
use serde_json::json;

use super::output::say;
use crate::inbound::{self, cohort, personas};

/// `workspace` subcommands.
#[derive(Debug, Subcommand)]
pub enum WorkspaceCmd {
    /// Register a workspace id this data dir answers to as a Cohort Sync destination.
    Add {
        /// Workspace id (the sender's Basic auth user and MOE-APPKEY).
        id: String,
        /// Data API key (the sender's Basic auth password); stored hashed.
        #[arg(long, env = "SEGSYNC_DATA_API_KEY", hide_env_values = true)]
        data_api_key: String,
        /// Attribute holding users' uid here.
        #[arg(long, default_value = personas::UID_ATTRIBUTE)]
        uid_attribute: String,
        /// Attribute holding users' anonymous id here.
        #[arg(long, default_value = personas::ANONYMOUS_ID_ATTRIBUTE)]
        anonymous_id_attribute: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// List workspaces (keys are never shown).
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Remove a workspace.
    Remove {
        /// Workspace id.
        id: String,
    },
    /// Cohorts received over Cohort Sync, with their ordering state.
    Cohorts {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

/// `writekey` subcommands.
#[derive(Debug, Subcommand)]
pub enum WriteKeyCmd {
    /// Register a write key for `/v1/identify`, `/v1/track`, `/v1/batch`.
    Add {
        /// Name of the key (for listing and removal).
        name: String,
        /// The key; stored hashed.
        #[arg(long, env = "SEGSYNC_WRITE_KEY", hide_env_values = true)]
        key: String,
    },
    /// List write keys by name.
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Remove a write key.
    Remove {
        /// Name.
        name: String,
    },
}

/// What listings show of a workspace (no secret).
#[derive(Debug, Clone, Serialize)]
struct WorkspaceView {
    /// Workspace id.
    id: String,
    /// uid attribute.
    uid_attribute: String,
    /// anonymous id attribute.
    anonymous_id_attribute: String,
    /// Creation time.
    created: String,
}

impl WorkspaceView {
    /// The listing form of a workspace.
    fn of(w: &inbound::Workspace) -> WorkspaceView {
        WorkspaceView {
            id: w.id.clone(),
            uid_attribute: w.uid_attribute.clone(),
            anonymous_id_attribute: w.anonymous_id_attribute.clone(),
            created: super::fmt_ms(w.created_ms),
        }
    }
}

pub(crate) fn run(data_dir: &Path, cmd: WorkspaceCmd) -> anyhow::Result<()> {
    let store = super::open_store(data_dir)?;
    match cmd {
        WorkspaceCmd::Add {
            id,
            data_api_key,
            uid_attribute,
            anonymous_id_attribute,
            json,
        } => {
            let w = inbound::add_workspace(
                &store,
                &id,
                &data_api_key,
                &uid_attribute,
                &anonymous_id_attribute,
            )?;
            if json {
                return super::print_json(&WorkspaceView::of(&w));
            }
            say!(
                "added workspace {} (members resolve by {}, then {})",
                w.id,
                w.uid_attribute,
                w.anonymous_id_attribute
            );
        }
        WorkspaceCmd::List { json } => {
            let all: Vec<_> = inbound::workspaces(&store)?
                .iter()
                .map(WorkspaceView::of)
                .collect();
            if json {
                return super::print_json(&all);
            }
            if all.is_empty() {
                say!("no workspaces (add one with `segsync workspace add ID --data-api-key KEY`)");
            }
            for w in all {
                say!(
                    "{:<24} uid={} anonymous_id={} added {}",
                    w.id,
                    w.uid_attribute,
                    w.anonymous_id_attribute,
                    w.created
                );
            }
        }
        WorkspaceCmd::Remove { id } => {
            inbound::remove_workspace(&store, &id)?;
            say!("removed workspace {id}");
        }
        WorkspaceCmd::Cohorts { json } => {
            let all = cohort::cohorts(&store)?;
            if json {
                let v: Vec<_> = all
                    .iter()
                    .map(|c| {
                        json!({
                            "name": c.name,
                            "workspace": c.workspace,
                            "cohort_id": c.cohort_id,
                            "partner": c.partner,
                            "last_timestamp": crate::destination::cohort_sync::timestamp(c.last_timestamp_ms),
                            "requests": c.requests,
                            "created": super::fmt_ms(c.created_ms),
                            "updated": super::fmt_ms(c.updated_ms),
                        })
                    })
                    .collect();
                return super::print_json(&v);
            }
            if all.is_empty() {
                say!("no cohorts received yet");
            }
            for c in all {
                say!(
                    "{:<24} from {} ({} requests, last timestamp {})",
                    c.name,
                    c.workspace,
                    c.requests,
                    crate::destination::cohort_sync::timestamp(c.last_timestamp_ms)
                );
            }
        }
    }
    Ok(())
}

pub(crate) fn run_write_key(data_dir: &Path, cmd: WriteKeyCmd) -> anyhow::Result<()> {
    let store = super::open_store(data_dir)?;
    match cmd {
        WriteKeyCmd::Add { name, key } => {
            inbound::add_write_key(&store, &name, &key)?;
            say!("added write key {name}");
        }
        WriteKeyCmd::List { json } => {
            let all: Vec<_> = inbound::write_keys(&store)?
                .into_iter()
                .map(|k| json!({ "name": k.name, "created": super::fmt_ms(k.created_ms) }))
                .collect();
            if json {
                return super::print_json(&all);
            }
            if all.is_empty() {
                say!("no write keys (add one with `segsync writekey add NAME --key KEY`)");
            }
            for k in all {
                say!(
                    "{} (added {})",
                    k["name"].as_str().unwrap_or_default(),
                    k["created"].as_str().unwrap_or_default()
                );
            }
        }
        WriteKeyCmd::Remove { name } => {
            inbound::remove_write_key(&store, &name)?;
            say!("removed write key {name}");
        }
    }
    Ok(())
}

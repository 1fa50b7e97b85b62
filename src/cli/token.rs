//! `segsync token …`: the admin API's tokens. `create` prints the token
//! once (only a hash is kept); once any token exists, `serve`'s `/api/v1`
//! needs one.

use std::path::Path;

use clap::Subcommand;
use serde_json::json;

use super::output::{say, warn_user};
use crate::auth::{self, Role};

/// `token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a token and print it (it is never shown again).
    Create {
        /// Name (shown as "updated by" for the changes it makes).
        name: String,
        /// admin: everything; viewer: read only.
        #[arg(long, value_enum, default_value = "admin")]
        role: Role,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// List tokens (names and roles, never the tokens).
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: requests carrying it get 401 from then on.
    Revoke {
        /// Name.
        name: String,
    },
}

pub(crate) fn run(data_dir: &Path, cmd: TokenCmd) -> anyhow::Result<()> {
    let store = super::open_store(data_dir)?;
    match cmd {
        TokenCmd::Create { name, role, json } => {
            let (t, text) = auth::create(&store, &name, role)?;
            if json {
                return super::print_json(&json!({
                    "name": t.name,
                    "role": t.role,
                    "created": super::fmt_ms(t.created_ms),
                    "token": text,
                }));
            }
            say!("{text}");
            warn_user!(
                "created {} token '{}': keep it now, it is not shown again",
                super::word(t.role),
                t.name
            );
        }
        TokenCmd::List { json } => {
            let all = auth::list(&store)?;
            if json {
                let v: Vec<_> = all
                    .iter()
                    .map(|t| json!({"name": t.name, "role": t.role, "created": super::fmt_ms(t.created_ms)}))
                    .collect();
                return super::print_json(&v);
            }
            if all.is_empty() {
                say!("no tokens: the admin API is open on loopback (create one with `segsync token create NAME`)");
            }
            for t in all {
                say!(
                    "{:<24} {:<7} created {}",
                    t.name,
                    super::word(t.role),
                    super::fmt_ms(t.created_ms)
                );
            }
        }
        TokenCmd::Revoke { name } => {
            auth::revoke(&store, &name)?;
            say!("revoked token '{name}'");
        }
    }
    Ok(())
}

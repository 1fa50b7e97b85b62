//! `segsync destination …`: destinations (the seed's integrations), the
//! request preview and the connection test, as flags and printed output.
//! The logic is the library's (`destination::display`, `pipeline::probe`),
//! shared with the REST API. Secrets are masked whenever shown.

use std::path::Path;

use anyhow::Context;
use clap::Subcommand;
use serde::Serialize;

use super::output::say;
use super::UsageError;
use crate::destination::{self, cohort_sync, BasicAuth, DestinationConfig};

/// `destination` subcommands.
#[derive(Debug, Subcommand)]
pub enum DestinationCmd {
    /// Add a destination.
    Add(AddArgs),
    /// List destinations.
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show a destination (secrets masked).
    Show {
        /// Name.
        name: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Change a destination: every option given replaces that setting.
    Edit(EditArgs),
    /// Remove a destination no sync uses.
    Remove {
        /// Name.
        name: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Print the exact request a sync would send, for a sample page.
    Preview {
        /// Name.
        name: String,
        /// Attribute the sync would send (names the identifier key unless renamed).
        #[arg(long, default_value = "uid")]
        attribute: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Send one sample user in the real format and report the answer.
    Test {
        /// Name.
        name: String,
        /// Attribute the sync would send.
        #[arg(long, default_value = "uid")]
        attribute: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

/// Settings shared by `add` and `edit`.
#[derive(Debug, clap::Args, Default)]
pub struct Settings {
    /// Request body format: segment_sync (the seed's body; `custom` is accepted too) or cohortsync
    /// (MoEngage Cohort Sync, to sync a segment to another workspace).
    #[arg(long, value_enum)]
    pub format: Option<destination::Format>,
    /// Cohort Sync: destination workspace id (Basic auth user and MOE-APPKEY).
    #[arg(long, requires = "data_api_key")]
    pub workspace_id: Option<String>,
    /// Cohort Sync: destination workspace's data API key (Basic auth password).
    #[arg(long, requires = "workspace_id")]
    pub data_api_key: Option<String>,
    /// Cohort Sync: cohort name (default: `.` + the segment name, sanitised).
    #[arg(long)]
    pub cohort_name: Option<String>,
    /// Cohort Sync: cohort id (default `segsync-<sync id>`).
    #[arg(long)]
    pub cohort_id: Option<String>,
    /// Cohort Sync: cohort description.
    #[arg(long)]
    pub cohort_description: Option<String>,
    /// Cohort Sync: the `partner` field (default `moengage`).
    #[arg(long)]
    pub partner: Option<String>,
    /// Cohort Sync: largest body in bytes, 16384–131072 (default 131072).
    #[arg(long)]
    pub max_body_bytes: Option<u32>,
    /// Request header, repeatable.
    #[arg(long = "header", value_name = "K=V", value_parser = parse_kv)]
    pub headers: Vec<(String, String)>,
    /// Query parameter, repeatable.
    #[arg(long = "param", value_name = "K=V", value_parser = parse_kv)]
    pub params: Vec<(String, String)>,
    /// Basic auth.
    #[arg(long, value_name = "USER:PASS")]
    pub basic: Option<String>,
    /// Rename the identifier key (default: the synced attribute's name).
    #[arg(long)]
    pub identifier_key: Option<String>,
    /// Rename `add_users`.
    #[arg(long)]
    pub add_key: Option<String>,
    /// Rename `remove_users`.
    #[arg(long)]
    pub remove_key: Option<String>,
    /// Static key-value added to every user, repeatable.
    #[arg(long = "static", value_name = "K=V", value_parser = parse_kv)]
    pub static_kv: Vec<(String, String)>,
    /// Users per request, 100–10000 (default 1000; cohortsync 10000, cut
    /// further by body size).
    #[arg(long)]
    pub page_size: Option<u32>,
    /// Requests per minute, 1–25000 (default 25000; cohortsync 300).
    #[arg(long)]
    pub rpm: Option<u32>,
    /// Allow `sync resync-all` to this destination.
    #[arg(long)]
    pub allow_resync: bool,
    /// Connected app this destination belongs to.
    #[arg(long)]
    pub app: Option<String>,
    /// Per-request timeout in ms (default 30000).
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Delay between retries in ms (default 3000).
    #[arg(long)]
    pub retry_delay_ms: Option<u64>,
    /// Retries after the first attempt (default 3).
    #[arg(long)]
    pub max_retries: Option<u32>,
    /// Requests in flight at once (default 32).
    #[arg(long)]
    pub in_flight: Option<u32>,
}

/// `destination add`.
#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// Name.
    pub name: String,
    /// Endpoint (http or https).
    #[arg(
        long,
        required_unless_present = "data_center",
        conflicts_with = "data_center"
    )]
    pub url: Option<String>,
    /// Cohort Sync: MoEngage data center 01, 02 or 03 (sets the URL).
    #[arg(long)]
    pub data_center: Option<String>,
    /// Settings.
    #[command(flatten)]
    pub settings: Settings,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// `destination edit`.
#[derive(Debug, clap::Args)]
pub struct EditArgs {
    /// Name.
    pub name: String,
    /// Endpoint.
    #[arg(long)]
    pub url: Option<String>,
    /// Settings.
    #[command(flatten)]
    pub settings: Settings,
    /// Turn resync off.
    #[arg(long, conflicts_with = "allow_resync")]
    pub deny_resync: bool,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn parse_basic(s: &str) -> Result<BasicAuth, UsageError> {
    match s.split_once(':') {
        Some((u, p)) => Ok(BasicAuth {
            user: u.to_string(),
            password: p.to_string(),
        }),
        None => Err(UsageError(format!(
            "--basic expects USER:PASS, got {:?}",
            destination::mask(s)
        ))),
    }
}

fn apply(c: &mut DestinationConfig, s: Settings, replace_lists: bool) -> Result<(), UsageError> {
    if replace_lists || !s.headers.is_empty() {
        c.headers = s.headers;
    }
    if let Some(f) = s.format {
        c.switch_format(f);
    }
    if let (Some(ws), Some(key)) = (s.workspace_id, s.data_api_key) {
        c.set_workspace(&ws, &key);
    }
    if replace_lists || !s.params.is_empty() {
        c.params = s.params;
    }
    if replace_lists || !s.static_kv.is_empty() {
        c.static_kv = s.static_kv;
    }
    if let Some(b) = s.basic {
        c.basic = Some(parse_basic(&b)?);
    }
    macro_rules! set {
        ($($f:ident),*) => { $( if s.$f.is_some() { c.$f = s.$f; } )* };
    }
    set!(
        cohort_name,
        cohort_id,
        cohort_description,
        partner,
        max_body_bytes,
        identifier_key,
        add_key,
        remove_key,
        page_size,
        rpm,
        app,
        timeout_ms,
        retry_delay_ms,
        max_retries,
        in_flight
    );
    if s.allow_resync {
        c.allow_resync = true;
    }
    Ok(())
}

/// A destination as shown: secrets masked.
#[derive(Serialize)]
struct Shown {
    id: u32,
    #[serde(flatten)]
    config: DestinationConfig,
}

fn print_one(rec: &destination::DestinationRecord, json: bool) -> anyhow::Result<()> {
    let shown = Shown {
        id: rec.id,
        config: rec.config.clone().masked(),
    };
    if json {
        return super::print_json(&shown);
    }
    let d = rec.validated()?;
    say!("destination {} (id {})", rec.config.name, rec.id);
    say!("  url            {}", destination::masked_url(&d));
    for (k, v) in &shown.config.headers {
        say!("  header         {k}: {v}");
    }
    if let Some(b) = &shown.config.basic {
        say!("  basic auth     {}:{}", b.user, b.password);
    }
    if let Some(c) = d.cohort() {
        say!("  format         cohortsync (one action per request, members by uid)");
        say!(
            "  cohort         {} (id {}), partner {}",
            c.name
                .as_ref()
                .map_or("(. + the segment name)", |n| n.as_str()),
            c.id.as_deref().unwrap_or("segsync-<sync id>"),
            c.partner
        );
        say!("  body limit     {} bytes", c.max_body);
        if c.moengage {
            say!(
                "  api limits     MoEngage's Cohort Sync API: at most {} requests a minute and {} KB bodies (a custom --url may go higher)",
                cohort_sync::COHORT_RPM,
                cohort_sync::COHORT_MAX_BODY / 1024
            );
        } else {
            say!(
                "  api limits     custom endpoint: up to {} requests a minute and {} bytes a body",
                crate::destination::Rpm::MAX,
                cohort_sync::CUSTOM_MAX_BODY
            );
        }
    } else {
        say!("  format         segment_sync");
        say!(
            "  identifier key {}",
            d.identifier_key
                .as_deref()
                .unwrap_or("(the synced attribute's name)")
        );
        say!("  lists          {} / {}", d.add_key, d.remove_key);
        for (k, v) in &d.static_kv {
            say!("  static         {k}={v}");
        }
    }
    say!(
        "  page size      {} users, {} requests/minute, {} in flight",
        d.page_size.get(),
        d.rpm.get(),
        d.in_flight
    );
    say!(
        "  retries        {} every {} ms, timeout {} ms, resync {}",
        d.retry.max_retries,
        d.retry.delay.as_millis(),
        d.timeout.as_millis(),
        if d.allow_resync {
            "allowed"
        } else {
            "not allowed"
        }
    );
    Ok(())
}

/// A failed connection test (exit code 1).
#[derive(Debug, thiserror::Error)]
#[error("connection test failed: {0}")]
pub struct TestFailed(String);

impl crate::error::Classify for TestFailed {
    /// The run or test happened and went wrong: a failure, not a usage error.
    fn fault(&self) -> crate::error::Fault {
        crate::error::Fault::Internal
    }
}

pub(crate) fn run(data_dir: &Path, cmd: DestinationCmd) -> anyhow::Result<()> {
    let store = super::open_store(data_dir)?;
    match cmd {
        DestinationCmd::Add(a) => {
            let url = match (a.url, a.data_center) {
                (Some(u), _) => u,
                (None, Some(dc)) => cohort_sync::data_center_url(&dc)?,
                (None, None) => return Err(UsageError("give --url or --data-center".into()).into()),
            };
            let mut c = DestinationConfig::new(a.name, url);
            apply(&mut c, a.settings, true)?;
            let rec = destination::add(&store, c)?;
            if a.json {
                return print_one(&rec, true);
            }
            say!("added destination {} (id {})", rec.config.name, rec.id);
            Ok(())
        }
        DestinationCmd::List { json } => {
            let all = destination::list(&store)?;
            if json {
                let shown: Vec<Shown> = all
                    .into_iter()
                    .map(|r| Shown {
                        id: r.id,
                        config: r.config.masked(),
                    })
                    .collect();
                return super::print_json(&shown);
            }
            if all.is_empty() {
                say!("no destinations yet (add one with `segsync destination add NAME --url URL`)");
            }
            for r in all {
                let d = r.validated()?;
                say!(
                    "{:<20} {:>4}  {}  page {} rpm {}",
                    r.config.name,
                    r.id,
                    destination::masked_url(&d),
                    d.page_size.get(),
                    d.rpm.get()
                );
            }
            Ok(())
        }
        DestinationCmd::Show { name, json } => print_one(&destination::get(&store, &name)?, json),
        DestinationCmd::Edit(e) => {
            let mut err = None;
            let rec = destination::edit(&store, &e.name, |c| {
                if let Some(u) = e.url {
                    c.url = u;
                }
                if e.deny_resync {
                    c.allow_resync = false;
                }
                if let Err(x) = apply(c, e.settings, false) {
                    err = Some(x);
                }
            })?;
            if let Some(x) = err {
                return Err(x.into());
            }
            print_one(&rec, e.json)
        }
        DestinationCmd::Remove { name, json } => {
            crate::lifecycle::actions::remove_destination(&store, &name)?;
            if json {
                return super::print_json(&serde_json::json!({ "removed": name }));
            }
            say!("removed destination {name}");
            Ok(())
        }
        DestinationCmd::Preview {
            name,
            attribute,
            json,
        } => {
            let d = destination::get(&store, &name)?.validated()?;
            d.check_attribute(&attribute)?;
            let p = destination::preview(&d, &attribute);
            if json {
                return super::print_json(&p);
            }
            say!("{} {}", p.method, p.url);
            for (k, v) in &p.headers {
                say!("{k}: {v}");
            }
            say!();
            say!("{}", serde_json::to_string_pretty(&p.body)?);
            Ok(())
        }
        DestinationCmd::Test {
            name,
            attribute,
            json,
        } => {
            let d = destination::get(&store, &name)?.validated()?;
            drop(store);
            let r = crate::pipeline::probe::test_connection(&d, &attribute)
                .context("testing the connection")?;
            if json {
                super::print_json(&r)?;
            } else {
                say!("{}", r.message);
                if let Some(s) = r.status {
                    say!(
                        "status: {s}, content-type: {}",
                        r.content_type.as_deref().unwrap_or("-")
                    );
                }
                if !r.body.is_empty() {
                    say!("body: {}", r.body);
                }
            }
            if r.ok {
                Ok(())
            } else {
                Err(TestFailed(r.message).into())
            }
        }
    }
}

//! Notifications on configuration updates, successful executions and
//! failures, to a sync's email addresses. Every notification is recorded in
//! the outbox (the `events` family) first; when `[smtp]` is configured in
//! `segsync.toml` it is also sent, and the outcome recorded. A delivery
//! failure is logged and kept in the outbox, never turned into a sync error.
//!
//! ```toml
//! [smtp]
//! host = "127.0.0.1"
//! port = 25
//! from = "segsync@example.com"
//! ```
//!
//! (Plain SMTP, as to a local relay; the relay handles TLS onwards.)

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::limits::{ConfigFile, ConfigFileError};
use super::SyncRecord;
use crate::store::{self, cf, Store, Write};

/// Where notifications are sent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// Relay host.
    pub host: String,
    /// Relay port (default 25).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Sender address.
    pub from: String,
}

fn default_port() -> u16 {
    25
}

impl SmtpConfig {
    /// The `[smtp]` section of a data dir's `segsync.toml`, if any.
    pub fn load(data_dir: &Path) -> Result<Option<SmtpConfig>, ConfigFileError> {
        ConfigFile::load(data_dir).map(|c| c.smtp)
    }
}

/// Why a notification was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// The sync's configuration changed.
    ConfigUpdate,
    /// An execution completed.
    Success,
    /// An execution failed.
    Failure,
}

/// What happened to a notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Stored with bincode, which cannot encode internally or adjacently tagged
// enums: keep serde's default (external) tagging for stored records.
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// No SMTP server is configured: recorded only.
    Recorded,
    /// Accepted by the SMTP server.
    Sent,
    /// The SMTP server could not be reached or refused it.
    Failed(String),
}

/// One notification, as kept in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Outbox id.
    pub id: u32,
    /// When, Unix ms.
    pub at_ms: i64,
    /// The sync.
    pub sync_id: u32,
    /// Why.
    pub kind: Kind,
    /// Recipients.
    pub to: Vec<String>,
    /// Subject line.
    pub subject: String,
    /// Text.
    pub body: String,
    /// Outcome.
    pub delivery: Delivery,
}

const PREFIX: &[u8] = b"notification/";

fn key(id: u32) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// Every notification, oldest first.
pub fn list(store: &Store) -> store::Result<Vec<Notification>> {
    store.scan_records(cf::EVENTS, PREFIX, "notification")
}

fn send(smtp: &SmtpConfig, n: &Notification) -> Result<(), String> {
    use lettre::message::Mailbox;
    use lettre::Transport;
    let from: Mailbox = smtp
        .from
        .parse()
        .map_err(|e| format!("bad sender {:?}: {e}", smtp.from))?;
    let mut msg = lettre::Message::builder()
        .from(from)
        .subject(n.subject.clone());
    for to in &n.to {
        msg = msg.to(to
            .parse::<Mailbox>()
            .map_err(|e| format!("bad recipient {to:?}: {e}"))?);
    }
    let msg = msg.body(n.body.clone()).map_err(|e| e.to_string())?;
    let transport = lettre::SmtpTransport::builder_dangerous(&smtp.host)
        .port(smtp.port)
        .timeout(Some(Duration::from_secs(10)))
        .build();
    transport.send(&msg).map(|_| ()).map_err(|e| e.to_string())
}

/// Records (and with SMTP configured, sends) a notification about `sync`.
/// Returns it as recorded; never fails the caller for a delivery problem.
pub fn notify(store: &Store, sync: &SyncRecord, kind: Kind, detail: &str) -> Option<Notification> {
    if sync.notify.is_empty() {
        return None;
    }
    let what = match kind {
        Kind::ConfigUpdate => "configuration updated",
        Kind::Success => "sync succeeded",
        Kind::Failure => "sync failed",
    };
    let id = match store.next_id("notification") {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, "cannot record a notification");
            return None;
        }
    };
    let mut n = Notification {
        id,
        at_ms: chrono::Utc::now().timestamp_millis(),
        sync_id: sync.id,
        kind,
        to: sync.notify.clone(),
        subject: format!(
            "[segsync] sync {} ({} → {}): {what}",
            sync.id, sync.segment, sync.destination
        ),
        body: format!(
            "Sync {} of segment '{}' to '{}': {what}.\n\n{detail}\n",
            sync.id, sync.segment, sync.destination
        ),
        delivery: Delivery::Recorded,
    };
    let save = |n: &Notification| {
        if let Err(e) = store.write_records(vec![Write::record(cf::EVENTS, key(n.id), n)], false) {
            tracing::error!(error = %e, "cannot record a notification");
        }
    };
    // Recorded before any attempt, so a crash mid-send still leaves it.
    save(&n);
    match SmtpConfig::load(store.dir()) {
        Ok(None) => {}
        Ok(Some(smtp)) => {
            n.delivery = match send(&smtp, &n) {
                Ok(()) => Delivery::Sent,
                Err(e) => {
                    tracing::warn!(error = %e, sync = sync.id, "notification not delivered");
                    Delivery::Failed(e)
                }
            };
            save(&n);
        }
        Err(e) => {
            n.delivery = Delivery::Failed(e.to_string());
            save(&n);
        }
    }
    Some(n)
}

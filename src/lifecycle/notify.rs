//! Notifications on configuration updates, successful executions and
//! failures, to a sync's email addresses. Every notification is recorded in
//! the outbox (the `events` family) by the action that causes it; when
//! `[smtp]` is configured in `segsync.toml` it is marked pending, and
//! [`deliver_pending`] sends it and records the outcome. Mail is never sent
//! inside an action or a request: `serve` delivers the outbox from a
//! background task, a CLI command after its work is done. A delivery failure
//! is logged and kept in the outbox, never turned into a sync error.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::SyncRecord;
use crate::config::{self, Smtp};
use crate::store::{self, cf, keys, Store, Write};

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
    /// Waiting for the outbox to be delivered.
    Pending,
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

/// Every notification, oldest first.
pub fn list(store: &Store) -> store::Result<Vec<Notification>> {
    store.scan_records(cf::EVENTS, keys::NOTIFICATION_PREFIX, "notification")
}

fn send(smtp: &Smtp, n: &Notification) -> Result<(), String> {
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

/// Records a notification about `sync` in the outbox, pending delivery when
/// SMTP is configured. Returns it as recorded; never fails the caller.
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
    let delivery = match config::load(store.dir()) {
        Ok(c) if c.smtp.is_some() => Delivery::Pending,
        Ok(_) => Delivery::Recorded,
        Err(e) => Delivery::Failed(e.to_string()),
    };
    let n = Notification {
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
        delivery,
    };
    let mut writes = vec![Write::record(cf::EVENTS, keys::notification(n.id), &n)];
    if n.delivery == Delivery::Pending {
        writes.push(Write::Put(
            cf::EVENTS,
            keys::pending_notification(n.id),
            Vec::new(),
        ));
    }
    // Synced: the outbox is what survives a crash before delivery.
    if let Err(e) = store.write_records(writes, true) {
        tracing::error!(error = %e, "cannot record a notification");
    }
    Some(n)
}

/// Sends every pending notification through `smtp` (or, without SMTP
/// configured any more, marks them recorded) and records each outcome.
/// Returns how many were attempted.
pub fn deliver_pending(store: &Store, smtp: Option<&Smtp>) -> store::Result<usize> {
    let pending = store.scan_keys(cf::EVENTS, keys::PENDING_NOTIFICATION_PREFIX)?;
    let mut attempted = 0;
    for key in pending {
        let Some(id) = key
            .strip_prefix(keys::PENDING_NOTIFICATION_PREFIX)
            .and_then(keys::read_u32)
        else {
            continue;
        };
        let Some(mut n) = store.get_record::<Notification>(
            cf::EVENTS,
            &keys::notification(id),
            "notification",
        )?
        else {
            continue;
        };
        n.delivery = match smtp {
            None => Delivery::Recorded,
            Some(smtp) => match send(smtp, &n) {
                Ok(()) => Delivery::Sent,
                Err(e) => {
                    tracing::warn!(error = %e, sync = n.sync_id, "notification not delivered");
                    Delivery::Failed(e)
                }
            },
        };
        attempted += 1;
        store.write_records(
            vec![
                Write::record(cf::EVENTS, keys::notification(id), &n),
                Write::Delete(cf::EVENTS, key),
            ],
            true,
        )?;
    }
    Ok(attempted)
}

/// Delivers the outbox with the data dir's current `[smtp]` settings (for
/// a CLI command once its work is done).
pub fn deliver_outbox(store: &Store) {
    let smtp = match config::load(store.dir()) {
        Ok(c) => c.smtp,
        Err(e) => {
            tracing::warn!(error = %e, "notifications not delivered");
            return;
        }
    };
    if let Err(e) = deliver_pending(store, smtp.as_ref()) {
        tracing::error!(error = %e, "cannot deliver the notification outbox");
    }
}

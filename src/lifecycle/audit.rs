//! Who changed a sync, when, and how: one entry per action (create, edit,
//! pause, archive, ad hoc run, resync), written in the same batch as the
//! change it records. The seed's "updated by" is the newest entry's actor:
//! the API token's name, or `cli` for a command run on the data dir.

use serde::{Deserialize, Serialize};

use crate::store::{self, cf, keys, Store, Write};

/// One change to a sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Entry id (store-wide, ascending).
    pub id: u32,
    /// When, Unix ms.
    pub at_ms: i64,
    /// The sync.
    pub sync_id: u32,
    /// Who: a token name, or `cli`.
    pub by: String,
    /// What: `create`, `edit`, `pause`, `archive`, `run`, `resync-all`,
    /// `resync-last`.
    pub action: String,
    /// The change in words.
    pub detail: String,
}

/// The write that records a change (its id allocated now).
pub(crate) fn entry(
    store: &Store,
    sync_id: u32,
    by: &str,
    action: &str,
    detail: String,
) -> store::Result<Write> {
    let c = Change {
        id: store.next_id("audit")?,
        at_ms: chrono::Utc::now().timestamp_millis(),
        sync_id,
        by: by.to_string(),
        action: action.to_string(),
        detail,
    };
    Ok(Write::record(cf::EVENTS, keys::audit(sync_id, c.id), &c))
}

/// A sync's changes, oldest first.
pub fn of_sync(store: &Store, sync_id: u32) -> store::Result<Vec<Change>> {
    store.scan_records(cf::EVENTS, &keys::audit_of(sync_id), "audit entry")
}

/// Who changed the sync last (the seed's "updated by"), if anyone did.
pub fn updated_by(store: &Store, sync_id: u32) -> store::Result<Option<String>> {
    Ok(of_sync(store, sync_id)?.pop().map(|c| c.by))
}

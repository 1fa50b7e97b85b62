//! What a person sees of a sync (the seed's Synced Segments list and sync
//! detail page): the record plus its next run, latest status, last synced
//! time, who changed it last, and every action with why it is not allowed
//! now. The CLI, the REST API and the console show this one view.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::rules::Action;
use super::{actions, audit, rules, ExecStatus, ExecutionRecord, SyncRecord};
use crate::destination;
use crate::store::{self, Store};

/// A sync as shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncView {
    /// The record.
    #[serde(flatten)]
    pub sync: SyncRecord,
    /// The next scheduled run, if any.
    pub next_run: Option<DateTime<Utc>>,
    /// Whether a run is in progress (known to `serve` only).
    pub running: bool,
    /// Who changed the sync last (a token's name, or `cli`).
    pub updated_by: Option<String>,
    /// When the last complete execution finished.
    pub last_synced: Option<DateTime<Utc>>,
    /// The latest execution's status (the seed's "latest sync status").
    pub latest_status: Option<ExecStatus>,
    /// Each action (`edit`, `run`, `pause`, `resync-all`, `resync-last`,
    /// `archive`) with `None` when allowed now, or why not.
    pub actions: BTreeMap<String, Option<String>>,
}

impl SyncView {
    /// The view of `s` at `now`.
    pub fn of(
        store: &Store,
        s: &SyncRecord,
        running: bool,
        now: DateTime<Utc>,
    ) -> store::Result<SyncView> {
        let load = |seq: Option<u32>| -> store::Result<Option<ExecutionRecord>> {
            Ok(match seq {
                Some(q) => ExecutionRecord::load(store, s.id, q)?,
                None => None,
            })
        };
        let resync_allowed = destination::get(store, &s.destination)
            .ok()
            .and_then(|d| d.validated().ok())
            .is_some_and(|d| d.allow_resync);
        let actions = rules::allowed(s.status, resync_allowed)
            .into_iter()
            .map(|(a, why)| {
                // One run of a sync at a time: `serve` refuses a second
                // (409), so the view says so before anyone tries.
                let starts_run = matches!(a, Action::Run | Action::ResyncAll | Action::ResyncLast);
                let why = why.or_else(|| {
                    (running && starts_run).then(|| "a run is in progress".to_string())
                });
                let name = serde_json::to_value(a)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                (name, why)
            })
            .collect();
        Ok(SyncView {
            next_run: actions::next_run(s, now),
            running,
            updated_by: audit::updated_by(store, s.id)?,
            last_synced: load(s.last_complete)?
                .and_then(|e| e.finished_ms)
                .and_then(DateTime::from_timestamp_millis),
            latest_status: load(s.last_execution)?.map(|e| e.status),
            actions,
            sync: s.clone(),
        })
    }

    /// The actions allowed now, by name.
    pub fn allowed(&self) -> Vec<&str> {
        self.actions
            .iter()
            .filter(|(_, why)| why.is_none())
            .map(|(a, _)| a.as_str())
            .collect()
    }
}

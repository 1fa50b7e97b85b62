//! Destinations (the seed's integrations): configuration, validation,
//! storage, and one module per request format.

pub mod cohort_sync;
pub mod config;
pub mod segment_sync;

use serde::{Deserialize, Serialize};

pub use config::{
    mask, BasicAuth, CohortName, CohortSettings, ConfigError, Destination, DestinationConfig,
    Format, FormatSpec, PageSize, RetryPolicy, Rpm,
};

use crate::lifecycle::{SyncRecord, SyncStatus};
use crate::store::{self, cf, Store, Write};

/// Errors of destination management.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No destination of that name.
    #[error("destination '{0}' not found (see `segsync destination list`)")]
    NotFound(String),
    /// The name is taken.
    #[error("destination '{0}' already exists (change it with `segsync destination edit`)")]
    Exists(String),
    /// Still used by syncs.
    #[error("destination '{name}' is used by sync(s) {syncs}; archive them first")]
    InUse {
        /// The destination.
        name: String,
        /// Ids of the syncs using it.
        syncs: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl Error {
    /// True for errors in what the user asked for.
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, Error::Store(_))
    }
}

/// A stored destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationRecord {
    /// Store id (the integration id).
    pub id: u32,
    /// Creation time, Unix ms.
    pub created_ms: i64,
    /// Last update, Unix ms.
    pub updated_ms: i64,
    /// The configuration.
    pub config: DestinationConfig,
}

impl DestinationRecord {
    /// Validates the stored configuration.
    pub fn validated(&self) -> Result<Destination, ConfigError> {
        self.config.validate(self.id)
    }
}

/// Adds a destination.
pub fn add(store: &Store, config: DestinationConfig) -> Result<DestinationRecord, Error> {
    config.validate(0)?;
    if get(store, &config.name).is_ok() {
        return Err(Error::Exists(config.name));
    }
    let now = chrono::Utc::now().timestamp_millis();
    let rec = DestinationRecord {
        id: store.next_id("destination")?,
        created_ms: now,
        updated_ms: now,
        config,
    };
    save(store, &rec)?;
    Ok(rec)
}

fn save(store: &Store, rec: &DestinationRecord) -> Result<(), Error> {
    let w = Write::record(cf::DESTINATIONS, rec.config.name.as_bytes().to_vec(), rec);
    Ok(store.write_records(vec![w], true)?)
}

/// The destination called `name`.
pub fn get(store: &Store, name: &str) -> Result<DestinationRecord, Error> {
    store
        .get_record(cf::DESTINATIONS, name.as_bytes(), "destination record")?
        .ok_or_else(|| Error::NotFound(name.to_string()))
}

/// All destinations, by name.
pub fn list(store: &Store) -> Result<Vec<DestinationRecord>, Error> {
    Ok(store.scan_records(cf::DESTINATIONS, &[], "destination record")?)
}

/// Replaces a destination's configuration (the name stays).
pub fn edit(
    store: &Store,
    name: &str,
    change: impl FnOnce(&mut DestinationConfig),
) -> Result<DestinationRecord, Error> {
    let mut rec = get(store, name)?;
    change(&mut rec.config);
    rec.config.name = name.to_string();
    rec.config.validate(rec.id)?;
    rec.updated_ms = chrono::Utc::now().timestamp_millis();
    save(store, &rec)?;
    Ok(rec)
}

/// Removes a destination no live sync uses.
pub fn remove(store: &Store, name: &str) -> Result<(), Error> {
    get(store, name)?;
    let users: Vec<String> = SyncRecord::all(store)?
        .into_iter()
        .filter(|s| s.destination == name && s.status != SyncStatus::Archived)
        .map(|s| s.id.to_string())
        .collect();
    if !users.is_empty() {
        return Err(Error::InUse {
            name: name.to_string(),
            syncs: users.join(", "),
        });
    }
    Ok(store.write_records(
        vec![Write::Delete(cf::DESTINATIONS, name.as_bytes().to_vec())],
        true,
    )?)
}

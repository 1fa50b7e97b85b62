//! Destinations (the seed's integrations), split the way vector splits an
//! HTTP sink: the raw configuration ([`config`]), its validation into types
//! that cannot be invalid ([`settings`]), one module per request format
//! ([`segment_sync`], [`cohort_sync`], each with its own rules and
//! constants), and what is shown of a destination ([`display`]: masking and
//! the request preview). This file stores them. Sending is the pipeline's
//! (the connection test too: `pipeline::probe`), and whether a destination
//! may be removed is the lifecycle's.

pub mod cohort_sync;
pub mod config;
pub mod display;
pub mod segment_sync;
pub mod settings;

use serde::{Deserialize, Serialize};

pub use cohort_sync::{CohortName, CohortSettings};
pub use config::{BasicAuth, ConfigError, DestinationConfig, Format};
pub use display::{mask, masked_url, preview, request, sample_body, Preview};
pub use settings::{Destination, FormatSpec, PageSize, RetryPolicy, Rpm};

use crate::error::{Classify, Fault};
use crate::store::{self, cf, keys, Store, Write};

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
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl Classify for Error {
    fn fault(&self) -> Fault {
        match self {
            Error::Config(e) => e.fault(),
            Error::NotFound(_) => Fault::NotFound,
            Error::Exists(_) => Fault::Conflict,
            Error::Store(e) => e.fault(),
        }
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
    let w = Write::record(cf::DESTINATIONS, keys::destination(&rec.config.name), rec);
    Ok(store.write_records(vec![w], true)?)
}

/// The destination called `name`.
pub fn get(store: &Store, name: &str) -> Result<DestinationRecord, Error> {
    store
        .get_record(
            cf::DESTINATIONS,
            &keys::destination(name),
            "destination record",
        )?
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

/// Removes a destination. Whether a sync still uses it is the lifecycle's
/// rule ([`crate::lifecycle::actions::remove_destination`]), which is what
/// the CLI and the API call.
pub fn remove(store: &Store, name: &str) -> Result<(), Error> {
    get(store, name)?;
    Ok(store.write_records(
        vec![Write::Delete(cf::DESTINATIONS, keys::destination(name))],
        true,
    )?)
}

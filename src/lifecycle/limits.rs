//! Account limits and the cool-off, from `segsync.toml` in the data dir:
//!
//! ```toml
//! [limits]
//! max_active_syncs = 10           # syncs not archived (active, paused, failed, inactive)
//! max_syncs_created_per_day = 10  # per UTC day
//! max_resyncs_per_day = 20        # ad hoc runs and resyncs, per UTC day
//! cool_off_minutes = 30           # before a failed run may be retried
//! ```
//!
//! Missing file or keys mean the seed's defaults. Unknown keys are refused,
//! so a typo cannot silently leave a limit at its default.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The limits in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Syncs that are not archived.
    pub max_active_syncs: u32,
    /// Syncs created per UTC day.
    pub max_syncs_created_per_day: u32,
    /// Ad hoc runs and resyncs per UTC day.
    pub max_resyncs_per_day: u32,
    /// Minutes after a failed run before it may be retried.
    pub cool_off_minutes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_active_syncs: 10,
            max_syncs_created_per_day: 10,
            max_resyncs_per_day: 20,
            cool_off_minutes: 30,
        }
    }
}

/// The whole of `segsync.toml`: one schema, unknown sections and keys
/// refused, so a typo is an error instead of a silent default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `[limits]`.
    #[serde(default)]
    pub limits: Limits,
    /// `[smtp]`, if notifications are to be emailed.
    #[serde(default)]
    pub smtp: Option<super::notify::SmtpConfig>,
    /// `[inbound]`: limits of the Cohort Sync receiver.
    #[serde(default)]
    pub inbound: InboundLimits,
}

/// `[inbound]` in `segsync.toml`: what the Cohort Sync receiver of `serve`
/// accepts (the API's own limits by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InboundLimits {
    /// Requests per minute per workspace.
    pub cohort_rpm: u32,
    /// Largest request body, bytes.
    pub cohort_max_body_bytes: u32,
    /// Hours an answered `Idempotency-Key` is remembered.
    pub idempotency_retention_hours: u32,
}

impl Default for InboundLimits {
    fn default() -> Self {
        InboundLimits {
            cohort_rpm: crate::destination::config::COHORT_RPM,
            cohort_max_body_bytes: crate::destination::config::COHORT_MAX_BODY,
            idempotency_retention_hours: crate::inbound::cohort::IDEMPOTENCY_RETENTION_HOURS,
        }
    }
}

impl ConfigFile {
    /// Reads a data dir's `segsync.toml` (defaults when there is none).
    pub fn load(data_dir: &Path) -> Result<ConfigFile, ConfigFileError> {
        let path = config_path(data_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ConfigFile::default()),
            Err(e) => {
                return Err(ConfigFileError {
                    path,
                    reason: e.to_string(),
                })
            }
        };
        toml::from_str(&text).map_err(|e| ConfigFileError {
            path,
            reason: e.to_string(),
        })
    }
}

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ConfigFileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong (with the key and line, from the TOML parser).
    pub reason: String,
}

/// Path of the config file of a data dir.
pub fn config_path(data_dir: &Path) -> PathBuf {
    data_dir.join("segsync.toml")
}

impl Limits {
    /// Reads the limits of a data dir (defaults when there is no file).
    pub fn load(data_dir: &Path) -> Result<Limits, ConfigFileError> {
        ConfigFile::load(data_dir).map(|c| c.limits)
    }
}

/// A limit was reached (the API answers 429).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} limit reached: {count} of {max} ({hint})")]
pub struct LimitReached {
    /// Which limit.
    pub what: &'static str,
    /// Current count.
    pub count: u32,
    /// The limit.
    pub max: u32,
    /// What to do.
    pub hint: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_file_values_and_typos() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Limits::load(dir.path()).unwrap(), Limits::default());
        std::fs::write(
            config_path(dir.path()),
            "[limits]\nmax_active_syncs = 12\ncool_off_minutes = 0\n",
        )
        .unwrap();
        let l = Limits::load(dir.path()).unwrap();
        assert_eq!(
            (
                l.max_active_syncs,
                l.cool_off_minutes,
                l.max_resyncs_per_day
            ),
            (12, 0, 20)
        );
        std::fs::write(config_path(dir.path()), "[limits]\nmax_active_sync = 12\n").unwrap();
        let e = Limits::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("segsync.toml") && e.contains("max_active_sync"),
            "{e}"
        );
    }
}

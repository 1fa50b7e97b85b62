//! `segsync.toml`, the data dir's settings: one schema, read and validated
//! in one place ([`load`]) into types that cannot be invalid. Unknown
//! sections and keys are refused with the key named, so a typo is an error
//! instead of a silent default; a missing file or key means the default.
//!
//! ```toml
//! [limits]                        # the seed's account limits (lifecycle)
//! max_active_syncs = 10           # syncs not archived (active, paused, failed, inactive)
//! max_syncs_created_per_day = 10  # per UTC day
//! max_resyncs_per_day = 20        # ad hoc runs and resyncs, per UTC day
//! cool_off_minutes = 30           # before a failed run may be retried
//! allow_hourly = false            # hourly schedules (the seed enables them case by case)
//! plan_max_age_minutes = 60       # a `sync plan` older than this is planned again by `sync run`
//!
//! [smtp]                          # notifications are emailed when set
//! host = "127.0.0.1"
//! port = 25
//! from = "segsync@example.com"
//!
//! [inbound]                       # what `serve`'s Cohort Sync receiver accepts
//! cohort_rpm = 300
//! cohort_max_body_bytes = 131072
//! idempotency_retention_hours = 168
//!
//! [retention]                     # what the store keeps (`segsync compact`; `serve` in the background)
//! keep_executions = 10            # per sync, with bitmaps and page outcomes (records stay)
//! keep_snapshots = 10             # per segment
//! every_minutes = 60              # how often `serve` applies it (0: never)
//! ```
//!
//! `serve` validates the file when it starts and refuses to start on a bad
//! one; the lifecycle reads `[limits]` and `[smtp]` again at each action, so
//! raising a limit takes effect without a restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::destination::cohort_sync::{COHORT_MAX_BODY, COHORT_RPM};
use crate::error::{Classify, Fault};

/// Default time an answered `Idempotency-Key` is remembered: a week, far
/// beyond any sender's retries or a resumed execution.
pub const IDEMPOTENCY_RETENTION_HOURS: u32 = 7 * 24;

/// A `segsync.toml` that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct Error {
    /// The file.
    pub path: PathBuf,
    /// What is wrong (with the key and line).
    pub reason: String,
}

impl Classify for Error {
    fn fault(&self) -> Fault {
        Fault::BadInput
    }
}

/// Everything `segsync.toml` sets, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// `[limits]`.
    pub limits: SyncLimits,
    /// `[smtp]`, if notifications are to be emailed.
    pub smtp: Option<Smtp>,
    /// `[inbound]`.
    pub receiver: ReceiverLimits,
    /// `[retention]`.
    pub retention: Retention,
}

/// `[retention]`, validated: what the store keeps, and how often `serve`
/// applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// What is kept.
    pub policy: crate::store::RetentionPolicy,
    /// How often `serve` applies it; `None`: only `segsync compact` does.
    pub every: Option<Duration>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            policy: crate::store::RetentionPolicy::default(),
            every: Some(Duration::from_secs(3600)),
        }
    }
}

/// `[retention]` as written in the file.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRetention {
    keep_executions: u32,
    keep_snapshots: u32,
    every_minutes: u32,
}

impl Default for RawRetention {
    fn default() -> Self {
        let p = crate::store::RetentionPolicy::default();
        RawRetention {
            keep_executions: p.keep_executions,
            keep_snapshots: p.keep_snapshots,
            every_minutes: 60,
        }
    }
}

/// `[limits]`: the seed's account limits and the cool-off. Every value is
/// valid (0 forbids what it limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncLimits {
    /// Syncs that are not archived.
    pub max_active_syncs: u32,
    /// Syncs created per UTC day.
    pub max_syncs_created_per_day: u32,
    /// Ad hoc runs and resyncs per UTC day.
    pub max_resyncs_per_day: u32,
    /// Minutes after a failed run before it may be retried.
    pub cool_off_minutes: u32,
    /// Whether hourly schedules may be chosen (the seed enables them case
    /// by case).
    pub allow_hourly: bool,
    /// Minutes a plan made by `sync plan` stays good: `sync run` executes
    /// an older one only after planning again (and says so).
    pub plan_max_age_minutes: u32,
}

impl Default for SyncLimits {
    fn default() -> Self {
        SyncLimits {
            max_active_syncs: 10,
            max_syncs_created_per_day: 10,
            max_resyncs_per_day: 20,
            cool_off_minutes: 30,
            allow_hourly: false,
            plan_max_age_minutes: 60,
        }
    }
}

/// `[smtp]`: the relay notifications are sent through (plain SMTP, as to a
/// local relay; the relay handles TLS onwards).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Smtp {
    /// Relay host.
    pub host: String,
    /// Relay port (default 25).
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// Sender address.
    pub from: String,
}

fn default_smtp_port() -> u16 {
    25
}

/// What `serve`'s Cohort Sync receiver accepts (the API's own limits by
/// default), validated: every value positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverLimits {
    /// Largest body accepted, bytes.
    pub max_body: usize,
    /// Requests per minute per workspace.
    pub rpm: u32,
    /// How long an answered `Idempotency-Key` is remembered.
    pub idempotency_retention: Duration,
}

impl Default for ReceiverLimits {
    fn default() -> Self {
        ReceiverLimits {
            max_body: COHORT_MAX_BODY as usize,
            rpm: COHORT_RPM,
            idempotency_retention: Duration::from_secs(
                u64::from(IDEMPOTENCY_RETENTION_HOURS) * 3600,
            ),
        }
    }
}

/// `[inbound]` as written in the file.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawReceiver {
    cohort_rpm: u32,
    cohort_max_body_bytes: u32,
    idempotency_retention_hours: u32,
}

impl Default for RawReceiver {
    fn default() -> Self {
        RawReceiver {
            cohort_rpm: COHORT_RPM,
            cohort_max_body_bytes: COHORT_MAX_BODY,
            idempotency_retention_hours: IDEMPOTENCY_RETENTION_HOURS,
        }
    }
}

/// The whole file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    limits: SyncLimits,
    #[serde(default)]
    smtp: Option<Smtp>,
    #[serde(default)]
    inbound: RawReceiver,
    #[serde(default)]
    retention: RawRetention,
}

/// Path of the config file of a data dir.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("segsync.toml")
}

/// Reads and validates a data dir's `segsync.toml` (defaults when there is
/// none).
pub fn load(data_dir: &Path) -> Result<Settings, Error> {
    let path = path(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Settings::default()),
        Err(e) => {
            return Err(Error {
                path,
                reason: e.to_string(),
            })
        }
    };
    validate(&text).map_err(|reason| Error { path, reason })
}

/// Parses and validates the text of a `segsync.toml`; the error names the
/// key (and, for syntax, the line).
pub fn validate(text: &str) -> Result<Settings, String> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| e.to_string())?;
    let r = raw.inbound;
    for (key, v) in [
        ("cohort_rpm", r.cohort_rpm),
        ("cohort_max_body_bytes", r.cohort_max_body_bytes),
        ("idempotency_retention_hours", r.idempotency_retention_hours),
    ] {
        if v == 0 {
            return Err(format!("[inbound] {key} must be positive"));
        }
    }
    let k = raw.retention;
    for (key, v) in [
        ("keep_executions", k.keep_executions),
        ("keep_snapshots", k.keep_snapshots),
    ] {
        if v == 0 {
            return Err(format!(
                "[retention] {key} must be at least 1 (what planning needs is kept anyway)"
            ));
        }
    }
    if let Some(smtp) = &raw.smtp {
        if smtp.host.trim().is_empty() {
            return Err("[smtp] host must not be empty".into());
        }
        if smtp.port == 0 {
            return Err("[smtp] port must be positive".into());
        }
        if smtp.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(format!(
                "[smtp] from {:?} is not an email address",
                smtp.from
            ));
        }
    }
    Ok(Settings {
        limits: raw.limits,
        smtp: raw.smtp,
        receiver: ReceiverLimits {
            max_body: r.cohort_max_body_bytes as usize,
            rpm: r.cohort_rpm,
            idempotency_retention: Duration::from_secs(
                u64::from(r.idempotency_retention_hours) * 3600,
            ),
        },
        retention: Retention {
            policy: crate::store::RetentionPolicy {
                keep_executions: k.keep_executions,
                keep_snapshots: k.keep_snapshots,
            },
            every: (k.every_minutes > 0)
                .then(|| Duration::from_secs(u64::from(k.every_minutes) * 60)),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_file_values_and_typos() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), Settings::default());
        std::fs::write(
            path(dir.path()),
            "[limits]\nmax_active_syncs = 12\ncool_off_minutes = 0\n",
        )
        .unwrap();
        let l = load(dir.path()).unwrap().limits;
        assert_eq!(
            (
                l.max_active_syncs,
                l.cool_off_minutes,
                l.max_resyncs_per_day
            ),
            (12, 0, 20)
        );
        std::fs::write(path(dir.path()), "[limits]\nmax_active_sync = 12\n").unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("segsync.toml") && e.contains("max_active_sync"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_key_named() {
        for (text, key) in [
            ("[inbound]\ncohort_rpm = 0\n", "cohort_rpm"),
            (
                "[inbound]\ncohort_max_body_bytes = 0\n",
                "cohort_max_body_bytes",
            ),
            (
                "[inbound]\nidempotency_retention_hours = 0\n",
                "idempotency_retention_hours",
            ),
            ("[smtp]\nhost = \"\"\nfrom = \"a@b.c\"\n", "host"),
            ("[smtp]\nhost = \"h\"\nfrom = \"nobody\"\n", "from"),
            ("[smtp]\nhost = \"h\"\n", "from"),
            ("[receiver]\n", "receiver"),
            ("[limits]\nmax_active_syncs = -1\n", "max_active_syncs"),
            ("[retention]\nkeep_executions = 0\n", "keep_executions"),
            ("[retention]\nkeep_snapshots = 0\n", "keep_snapshots"),
            ("[retention]\nkeep_everything = true\n", "keep_everything"),
        ] {
            let e = validate(text).unwrap_err();
            assert!(e.contains(key), "{text:?}: {e}");
        }
        let s = validate("[inbound]\ncohort_rpm = 7\nidempotency_retention_hours = 2\n").unwrap();
        assert_eq!(s.receiver.rpm, 7);
        assert_eq!(s.receiver.idempotency_retention, Duration::from_secs(7200));
        assert_eq!(s.receiver.max_body, COHORT_MAX_BODY as usize);
        let r = validate("[retention]\nkeep_executions = 3\nevery_minutes = 0\n")
            .unwrap()
            .retention;
        assert_eq!(
            (r.policy.keep_executions, r.policy.keep_snapshots, r.every),
            (3, 10, None)
        );
        assert_eq!(
            validate("").unwrap().retention.every,
            Some(Duration::from_secs(3600))
        );
    }
}

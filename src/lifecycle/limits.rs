//! The seed's account limits and the cool-off, checked before a sync is
//! created or a run starts. The numbers come from `[limits]` in
//! `segsync.toml` ([`crate::config::SyncLimits`]); this module counts what
//! they limit and says precisely which limit was reached.
//!
//! "Active syncs" counts every sync not archived (the seed lists active,
//! paused, inactive and failed under that limit). Syncs created, and ad hoc
//! runs plus resyncs, are counted per UTC day, store-wide. Scheduled runs
//! and resuming an execution left processing count towards nothing.

use chrono::{DateTime, Duration, Utc};

use super::{ExecutionRecord, Frequency, Schedule, SyncRecord, SyncStatus, Trigger};
use crate::config::SyncLimits;
use crate::error::{Classify, Fault};
use crate::store::{self, Store};

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

impl Classify for LimitReached {
    fn fault(&self) -> Fault {
        Fault::Limit
    }
}

fn utc_day_start(now: DateTime<Utc>) -> i64 {
    now.date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or(0, |d| d.and_utc().timestamp_millis())
}

/// Whether one more sync may be created, given every sync there is.
pub fn check_create(
    limits: &SyncLimits,
    all: &[SyncRecord],
    now: DateTime<Utc>,
) -> Result<(), LimitReached> {
    let live = all
        .iter()
        .filter(|s| s.status != SyncStatus::Archived)
        .count() as u32;
    if live >= limits.max_active_syncs {
        return Err(LimitReached {
            what: "active syncs",
            count: live,
            max: limits.max_active_syncs,
            hint: "archive a sync, or raise max_active_syncs in segsync.toml".into(),
        });
    }
    let today = utc_day_start(now);
    let created_today = all.iter().filter(|s| s.created_ms >= today).count() as u32;
    if created_today >= limits.max_syncs_created_per_day {
        return Err(LimitReached {
            what: "syncs created today",
            count: created_today,
            max: limits.max_syncs_created_per_day,
            hint: "try again tomorrow (UTC), or raise max_syncs_created_per_day in segsync.toml"
                .into(),
        });
    }
    Ok(())
}

/// Whether `schedule` may be chosen: hourly only where `allow_hourly`.
pub fn check_schedule(limits: &SyncLimits, schedule: Schedule) -> Result<(), LimitReached> {
    if schedule == Schedule::Every(Frequency::Hourly) && !limits.allow_hourly {
        return Err(LimitReached {
            what: "hourly schedules",
            count: 1,
            max: 0,
            hint: "hourly syncs are enabled case by case: set allow_hourly = true under [limits] in segsync.toml".into(),
        });
    }
    Ok(())
}

/// Whether one more ad hoc run or resync may start today (store-wide).
pub fn check_ad_hoc_runs(
    store: &Store,
    limits: &SyncLimits,
    now: DateTime<Utc>,
) -> Result<Result<(), LimitReached>, store::Error> {
    let today = utc_day_start(now);
    let mut count = 0u32;
    for s in SyncRecord::all(store)? {
        count += ExecutionRecord::all(store, s.id)?
            .iter()
            .filter(|e| e.trigger != Trigger::Scheduled && e.started_ms >= today)
            .count() as u32;
    }
    if count >= limits.max_resyncs_per_day {
        return Ok(Err(LimitReached {
            what: "ad hoc runs and resyncs today",
            count,
            max: limits.max_resyncs_per_day,
            hint: "try again tomorrow (UTC), or raise max_resyncs_per_day in segsync.toml".into(),
        }));
    }
    Ok(Ok(()))
}

/// When a failed sync may run again: `cool_off_minutes` after its failed
/// execution finished. `None` when no cool-off applies now.
pub fn cool_off_until(
    limits: &SyncLimits,
    sync: &SyncRecord,
    last: Option<&ExecutionRecord>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if sync.status != SyncStatus::Failed {
        return None;
    }
    let finished = last?.finished_ms?;
    let until = finished + Duration::minutes(i64::from(limits.cool_off_minutes)).num_milliseconds();
    (now.timestamp_millis() < until).then(|| DateTime::from_timestamp_millis(until).unwrap_or(now))
}

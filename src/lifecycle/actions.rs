//! The actions on syncs, one function each, shared by the CLI and (later)
//! the REST API: they check the status table, the limits and the cool-off,
//! and say precisely why when they refuse. Runs themselves are the
//! pipeline's; [`check_run`] is what must hold before one starts.

use chrono::{DateTime, Duration, Utc};

use super::limits::{ConfigFileError, LimitReached, Limits};
use super::rules::{self, Action, Refused};
use super::{
    schedule, ExecStatus, ExecutionRecord, Frequency, Schedule, SyncRecord, SyncStatus, Trigger,
};
use crate::destination;
use crate::plan;
use crate::store::{self, Store};

/// Why an action did not happen. [`ActionError::status`] maps each to the
/// REST API's status code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ActionError {
    /// No such sync.
    #[error("sync {0} not found (see `segsync sync list`)")]
    NotFound(u32),
    /// Invalid request.
    #[error("{0}")]
    Invalid(String),
    /// Not allowed in the sync's status.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// Not allowed while an execution is in progress or in a cool-off.
    #[error("{0}")]
    Conflict(String),
    /// A limit was reached.
    #[error(transparent)]
    Limit(#[from] LimitReached),
    /// Unknown segment or attribute.
    #[error(transparent)]
    Plan(#[from] plan::Error),
    /// Unknown or invalid destination.
    #[error(transparent)]
    Destination(#[from] destination::Error),
    /// Invalid destination configuration.
    #[error(transparent)]
    DestinationConfig(#[from] destination::ConfigError),
    /// Unreadable `segsync.toml`.
    #[error(transparent)]
    Config(#[from] ConfigFileError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl ActionError {
    /// The HTTP status for this error: 400 bad input, 404 unknown, 409 not
    /// allowed now, 429 limit reached, 500 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            ActionError::NotFound(_) => 404,
            ActionError::Invalid(_) | ActionError::DestinationConfig(_) => 400,
            ActionError::Refused(_) | ActionError::Conflict(_) => 409,
            ActionError::Limit(_) => 429,
            ActionError::Plan(e) if e.is_bad_input() => 404,
            ActionError::Destination(destination::Error::NotFound(_)) => 404,
            ActionError::Destination(e) if e.is_bad_input() => 400,
            _ => 500,
        }
    }

    /// True for errors in what was asked (CLI exit code 2).
    pub fn is_bad_input(&self) -> bool {
        self.status() < 500
    }
}

/// What `sync create` asks for.
#[derive(Debug, Clone)]
pub struct NewSync {
    /// Segment.
    pub segment: String,
    /// Destination.
    pub destination: String,
    /// Synced attribute.
    pub attribute: String,
    /// Schedule.
    pub schedule: Schedule,
    /// First run (default: now).
    pub start: Option<DateTime<Utc>>,
    /// End (periodic only).
    pub end: Option<DateTime<Utc>>,
    /// Time zone (default UTC).
    pub timezone: Option<String>,
    /// Notification emails.
    pub notify: Vec<String>,
}

impl NewSync {
    /// A sync starting now, in UTC, notifying no one.
    pub fn new(segment: &str, destination: &str, attribute: &str, schedule: Schedule) -> NewSync {
        NewSync {
            segment: segment.into(),
            destination: destination.into(),
            attribute: attribute.into(),
            schedule,
            start: None,
            end: None,
            timezone: None,
            notify: Vec::new(),
        }
    }
}

fn utc_day_start(now: DateTime<Utc>) -> i64 {
    now.date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or(0, |d| d.and_utc().timestamp_millis())
}

fn check_emails(emails: &[String]) -> Result<(), ActionError> {
    for e in emails {
        let ok = e.split_once('@').is_some_and(|(u, d)| {
            !u.is_empty() && d.contains('.') && !e.contains(char::is_whitespace)
        });
        if !ok {
            return Err(ActionError::Invalid(format!(
                "notification email {e:?} is not an email address"
            )));
        }
    }
    Ok(())
}

fn check_timezone(tz: &str) -> Result<(), ActionError> {
    tz.parse::<chrono_tz::Tz>().map(|_| ()).map_err(|_| {
        ActionError::Invalid(format!(
            "unknown time zone {tz:?} (use an IANA name such as Europe/Berlin)"
        ))
    })
}

/// Loads a sync.
pub fn load(store: &Store, id: u32) -> Result<SyncRecord, ActionError> {
    SyncRecord::load(store, id)?.ok_or(ActionError::NotFound(id))
}

/// Creates a sync, enforcing the seed's limits and the inactive rule.
pub fn create(store: &Store, req: NewSync, now: DateTime<Utc>) -> Result<SyncRecord, ActionError> {
    let limits = Limits::load(store.dir())?;
    let seg = store
        .segment(&req.segment)?
        .ok_or_else(|| plan::Error::NoSegment(req.segment.clone()))?;
    let dest = destination::get(store, &req.destination)?.validated()?;
    if store.attr_id(&req.attribute).is_none() {
        return Err(plan::Error::UnknownAttribute(req.attribute.clone()).into());
    }
    dest.check_attribute(&req.attribute)?;
    let timezone = req.timezone.unwrap_or_else(|| "UTC".into());
    check_timezone(&timezone)?;
    check_emails(&req.notify)?;
    let start = req.start.unwrap_or(now);
    if let Some(end) = req.end {
        if req.schedule == Schedule::Once {
            return Err(ActionError::Invalid(
                "a one-time sync has no end date".into(),
            ));
        }
        if end <= start {
            return Err(ActionError::Invalid(format!(
                "the end date {end} is not after the start {start}"
            )));
        }
    }
    let all = SyncRecord::all(store)?;
    if let Some(blocking) = all.iter().find(|s| {
        s.status == SyncStatus::Inactive
            && s.segment == seg.name
            && s.schedule == req.schedule
            && s.destination == req.destination
    }) {
        return Err(ActionError::Conflict(format!(
            "sync {} of segment '{}' to '{}' with the same frequency is inactive; archive it first (`segsync sync archive {}`), or choose another frequency or destination",
            blocking.id, seg.name, req.destination, blocking.id
        )));
    }
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
        }
        .into());
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
        }
        .into());
    }
    let now_ms = now.timestamp_millis();
    let rec = SyncRecord {
        id: store.next_id("sync")?,
        segment: seg.name,
        destination: req.destination,
        attribute: req.attribute,
        schedule: req.schedule,
        status: SyncStatus::Active,
        created_ms: now_ms,
        last_complete: None,
        last_execution: None,
        start_ms: start.timestamp_millis(),
        end_ms: req.end.map(|e| e.timestamp_millis()),
        timezone,
        notify: req.notify,
        last_slot_ms: None,
        inactive_since_ms: None,
        updated_ms: now_ms,
    };
    rec.save(store)?;
    Ok(rec)
}

/// What `sync edit` may change; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default)]
pub struct SyncEdit {
    /// New destination.
    pub destination: Option<String>,
    /// New frequency (periodic syncs only).
    pub every: Option<Frequency>,
    /// New start (only while the current start has not passed).
    pub start: Option<DateTime<Utc>>,
    /// New end date (`Some(None)` removes it).
    pub end: Option<Option<DateTime<Utc>>>,
    /// New notification emails (replace the list).
    pub notify: Option<Vec<String>>,
}

impl SyncEdit {
    /// The end-date change asked for by an `end` value and a `no_end` flag
    /// (as the CLI and the API spell it).
    pub fn end_change(end: Option<DateTime<Utc>>, no_end: bool) -> Option<Option<DateTime<Utc>>> {
        if no_end {
            Some(None)
        } else {
            end.map(Some)
        }
    }
}

/// Edits a sync within the seed's rules.
pub fn edit(
    store: &Store,
    id: u32,
    e: SyncEdit,
    now: DateTime<Utc>,
) -> Result<SyncRecord, ActionError> {
    let mut s = load(store, id)?;
    rules::check(s.status, Action::Edit, false)?;
    if let Some(f) = e.every {
        match s.schedule {
            Schedule::Once => {
                return Err(ActionError::Invalid(
                    "a one-time sync cannot become periodic; create a new sync".into(),
                ))
            }
            Schedule::Every(_) => s.schedule = Schedule::Every(f),
        }
    }
    if let Some(start) = e.start {
        if s.start_ms <= now.timestamp_millis() {
            return Err(ActionError::Invalid(
                "the start date has passed and can no longer be changed".into(),
            ));
        }
        s.start_ms = start.timestamp_millis();
    }
    if let Some(end) = e.end {
        if s.schedule == Schedule::Once && end.is_some() {
            return Err(ActionError::Invalid(
                "a one-time sync has no end date".into(),
            ));
        }
        if let Some(end) = end {
            if end.timestamp_millis() <= s.start_ms {
                return Err(ActionError::Invalid(
                    "the end date must be after the start".into(),
                ));
            }
        }
        s.end_ms = end.map(|t| t.timestamp_millis());
    }
    if let Some(d) = e.destination {
        let dest = destination::get(store, &d)?.validated()?;
        dest.check_attribute(&s.attribute)?;
        s.destination = d;
    }
    if let Some(n) = e.notify {
        check_emails(&n)?;
        s.notify = n;
    }
    s.updated_ms = now.timestamp_millis();
    s.save(store)?;
    let detail = format!(
        "Now: destination '{}', schedule {:?}, end {}, notifications to {}.",
        s.destination,
        s.schedule,
        s.end_ms
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map_or("none".to_string(), |t| t.to_rfc3339()),
        s.notify.join(", ")
    );
    super::notify::notify(store, &s, super::notify::Kind::ConfigUpdate, &detail);
    Ok(s)
}

/// Pauses or archives a sync.
pub fn set_status(
    store: &Store,
    id: u32,
    action: Action,
    now: DateTime<Utc>,
) -> Result<SyncRecord, ActionError> {
    let mut s = load(store, id)?;
    rules::check(s.status, action, true)?;
    s.status = match action {
        Action::Pause => SyncStatus::Paused,
        Action::Archive => SyncStatus::Archived,
        _ => {
            return Err(ActionError::Invalid(
                "only pause and archive set a status".into(),
            ))
        }
    };
    s.updated_ms = now.timestamp_millis();
    s.save(store)?;
    Ok(s)
}

/// What must hold before a run of `trigger` starts: the status table, the
/// daily limit on ad hoc runs and resyncs, and the cool-off after a failure.
/// An execution left processing is resumed by any trigger but the resyncs.
pub fn check_run(
    store: &Store,
    sync: &SyncRecord,
    trigger: Trigger,
    resync_allowed: bool,
    now: DateTime<Utc>,
) -> Result<(), ActionError> {
    let action = match trigger {
        Trigger::Scheduled | Trigger::AdHoc => Action::Run,
        Trigger::ResyncAll => Action::ResyncAll,
        Trigger::ResyncLast => Action::ResyncLast,
    };
    rules::check(sync.status, action, resync_allowed)?;
    let last = sync
        .last_execution
        .map(|seq| ExecutionRecord::load(store, sync.id, seq))
        .transpose()?
        .flatten();
    if let Some(l) = &last {
        if l.status == ExecStatus::Processing {
            if matches!(trigger, Trigger::ResyncAll | Trigger::ResyncLast) {
                return Err(ActionError::Conflict(format!(
                    "execution {} is still processing; `segsync sync run {}` resumes it",
                    l.execution_id(),
                    sync.id
                )));
            }
            return Ok(());
        }
    }
    let limits = Limits::load(store.dir())?;
    if sync.status == SyncStatus::Failed {
        if let Some(finished) = last.as_ref().and_then(|l| l.finished_ms) {
            let until =
                finished + Duration::minutes(i64::from(limits.cool_off_minutes)).num_milliseconds();
            if now.timestamp_millis() < until {
                let at = DateTime::from_timestamp_millis(until).unwrap_or(now);
                return Err(ActionError::Conflict(format!(
                    "the last run failed less than {} minutes ago; a retry is possible from {} (cool-off)",
                    limits.cool_off_minutes,
                    at.format("%Y-%m-%dT%H:%M:%SZ")
                )));
            }
        }
    }
    if trigger != Trigger::Scheduled {
        let today = utc_day_start(now);
        let mut count = 0u32;
        for s in SyncRecord::all(store)? {
            count += ExecutionRecord::all(store, s.id)?
                .iter()
                .filter(|e| e.trigger != Trigger::Scheduled && e.started_ms >= today)
                .count() as u32;
        }
        if count >= limits.max_resyncs_per_day {
            return Err(LimitReached {
                what: "ad hoc runs and resyncs today",
                count,
                max: limits.max_resyncs_per_day,
                hint: "try again tomorrow (UTC), or raise max_resyncs_per_day in segsync.toml"
                    .into(),
            }
            .into());
        }
    }
    Ok(())
}

/// The next scheduled run, if any (for `sync show`).
pub fn next_run(s: &SyncRecord, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if !matches!(s.status, SyncStatus::Active) {
        return None;
    }
    let t = s.timing();
    match s.schedule {
        Schedule::Once if s.last_execution.is_some() => None,
        Schedule::Once => Some(t.start.max(now)),
        Schedule::Every(_) => {
            let after = s
                .last_slot_ms
                .and_then(DateTime::from_timestamp_millis)
                .unwrap_or(t.start - Duration::milliseconds(1));
            schedule::next_after(s.schedule, &t, after.max(now - Duration::milliseconds(1)))
        }
    }
}

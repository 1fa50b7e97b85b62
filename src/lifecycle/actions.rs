//! The actions on syncs, one function each, shared by the CLI, the REST
//! API and the scheduler: they check the status table, the limits and the
//! cool-off, and say precisely why when they refuse.
//!
//! Runs go through here too: [`start_run`] checks that a run may start and
//! plans (or resumes) its execution; [`StartedRun::execute`] hands it to the
//! pipeline and then settles what the outcome means for the sync (status,
//! last complete execution, notification) in one synced write. [`run`] is
//! both in one call.

use chrono::{DateTime, Duration, Utc};

use super::audit;
use super::limits::{self, LimitReached};
use super::notify;
use super::rules::{self, Action, Refused};
use super::{
    schedule, ExecStatus, ExecutionRecord, Frequency, Schedule, SyncRecord, SyncStatus, Trigger,
};
use crate::config;
use crate::destination::{self, Destination};
use crate::error::{Classify, Fault};
use crate::pipeline::{self, Outcome, RunOptions};
use crate::plan;
use crate::store::{self, Store};

/// Why an action did not happen.
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
    /// Unreadable or invalid `segsync.toml`.
    #[error(transparent)]
    Config(#[from] config::Error),
    /// The execution could not be run.
    #[error(transparent)]
    Pipeline(#[from] pipeline::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl Classify for ActionError {
    fn fault(&self) -> Fault {
        match self {
            ActionError::NotFound(_) => Fault::NotFound,
            ActionError::Invalid(_) => Fault::BadInput,
            ActionError::Refused(e) => e.fault(),
            ActionError::Conflict(_) => Fault::Conflict,
            ActionError::Limit(e) => e.fault(),
            ActionError::Plan(e) => e.fault(),
            ActionError::Destination(e) => e.fault(),
            ActionError::DestinationConfig(e) => e.fault(),
            ActionError::Config(e) => e.fault(),
            ActionError::Pipeline(e) => e.fault(),
            ActionError::Store(e) => e.fault(),
        }
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
/// `by` is who asks (an API token's name, or `cli`), kept in the audit log.
pub fn create(
    store: &Store,
    req: NewSync,
    now: DateTime<Utc>,
    by: &str,
) -> Result<SyncRecord, ActionError> {
    let limits = config::load(store.dir())?.limits;
    limits::check_schedule(&limits, req.schedule)?;
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
    limits::check_create(&limits, &all, now)?;
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
    let created = audit::entry(
        store,
        rec.id,
        by,
        "create",
        format!(
            "segment '{}' to '{}' by {}, {:?}",
            rec.segment, rec.destination, rec.attribute, rec.schedule
        ),
    )?;
    store.write_records(vec![rec.write(), created], true)?;
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

/// Edits a sync within the seed's rules. The change applies from the next
/// run: a run in progress keeps the plan it made. Changing the destination
/// makes the next run a full send to the new one.
pub fn edit(
    store: &Store,
    id: u32,
    e: SyncEdit,
    now: DateTime<Utc>,
    by: &str,
) -> Result<SyncRecord, ActionError> {
    let s = SyncRecord::update(store, id, |s, writes| {
        rules::check(s.status, Action::Edit, false)?;
        if let Some(f) = e.every {
            match s.schedule {
                Schedule::Once => {
                    return Err(ActionError::Invalid(
                        "a one-time sync cannot become periodic; create a new sync".into(),
                    ))
                }
                Schedule::Every(_) => {
                    limits::check_schedule(&config::load(store.dir())?.limits, Schedule::Every(f))?;
                    s.schedule = Schedule::Every(f);
                }
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
            if d != s.destination {
                // The new destination has never received anyone: the next
                // run sends the whole membership to it.
                writes.push(plan::full_resend_marker(s.id));
            }
            s.destination = d;
        }
        if let Some(n) = e.notify {
            check_emails(&n)?;
            s.notify = n;
        }
        s.updated_ms = now.timestamp_millis();
        let detail = format!(
            "Now: destination '{}', schedule {:?}, end {}, notifications to {}.",
            s.destination,
            s.schedule,
            s.end_ms
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map_or("none".to_string(), |t| t.to_rfc3339()),
            s.notify.join(", ")
        );
        writes.push(audit::entry(store, s.id, by, "edit", detail.clone())?);
        Ok::<_, ActionError>((s.clone(), detail))
    })?
    .ok_or(ActionError::NotFound(id))?;
    let (s, detail) = s;
    notify::notify(
        store,
        &s,
        notify::Kind::ConfigUpdate,
        &format!("Updated by {by}. {detail}"),
    );
    Ok(s)
}

/// Pauses or archives a sync. A run in progress is not undone by its end:
/// a paused sync finishes the execution and stays paused; an archived one
/// is stopped at the next page boundary by whoever runs it (`serve` cancels
/// it), and stays archived.
pub fn set_status(
    store: &Store,
    id: u32,
    action: Action,
    now: DateTime<Utc>,
    by: &str,
) -> Result<SyncRecord, ActionError> {
    SyncRecord::update(store, id, |s, writes| {
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
        writes.push(audit::entry(
            store,
            s.id,
            by,
            action.name(),
            format!("now {}", rules::status_name(s.status)),
        )?);
        Ok(s.clone())
    })?
    .ok_or(ActionError::NotFound(id))
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
    let limits = config::load(store.dir())?.limits;
    if let Some(at) = limits::cool_off_until(&limits, sync, last.as_ref(), now) {
        return Err(ActionError::Conflict(format!(
            "the last run failed less than {} minutes ago; a retry is possible from {} (cool-off)",
            limits.cool_off_minutes,
            at.format("%Y-%m-%dT%H:%M:%SZ")
        )));
    }
    if trigger != Trigger::Scheduled {
        limits::check_ad_hoc_runs(store, &limits, now)??;
    }
    Ok(())
}

/// A run that may start, with its execution planned (or resumed) and
/// persisted: ready to execute.
#[derive(Debug)]
pub struct StartedRun {
    sync: SyncRecord,
    exec: ExecutionRecord,
    dest: Destination,
    /// Something the person who asked should know (a stale plan replanned).
    pub note: Option<String>,
}

/// Checks that a run of `trigger` may start now (status table, limits,
/// cool-off), then resumes the sync's execution left processing or plans a
/// new one. The plan is persisted before this returns.
/// `by` is who asked (scheduled runs are nobody's change and are not in
/// the audit log).
pub fn start_run(
    store: &Store,
    sync_id: u32,
    trigger: Trigger,
    now: DateTime<Utc>,
    by: &str,
) -> Result<StartedRun, ActionError> {
    // The check and the plan (which records the new execution in the sync)
    // see one state of the sync: no action interleaves.
    let _syncs = store.lock_syncs();
    let mut sync = load(store, sync_id)?;
    let dest = destination::get(store, &sync.destination)?.validated()?;
    check_run(store, &sync, trigger, dest.allow_resync, now)?;
    let mut resumable = match sync.last_execution {
        Some(seq) => ExecutionRecord::load(store, sync.id, seq)?
            .filter(|e| e.status == ExecStatus::Processing),
        None => None,
    };
    // A plan made ahead (`sync plan`) runs as planned while it is fresh; an
    // older one is planned again, and the caller is told.
    let mut note = None;
    let planned_key = crate::store::keys::planned(sync.id);
    let planned = store.get_u32(crate::store::cf::META, &planned_key)?;
    if let Some(e) = resumable.as_ref().filter(|e| planned == Some(e.seq)) {
        let max_age = config::load(store.dir())?.limits.plan_max_age_minutes;
        let age_ms = now.timestamp_millis() - e.started_ms;
        let mut writes = vec![crate::store::Write::Delete(
            crate::store::cf::META,
            planned_key,
        )];
        if e.pages_done == 0 && age_ms > Duration::minutes(i64::from(max_age)).num_milliseconds() {
            note = Some(format!(
                "the plan of execution {} was made {} minutes ago, over plan_max_age_minutes = {max_age}: planned again",
                e.execution_id(),
                age_ms / 60_000
            ));
            writes.extend(discard_writes(&mut sync, e));
            resumable = None;
        }
        store.write_records(writes, true)?;
    }
    let exec = match resumable {
        Some(e) => {
            tracing::info!(
                sync = sync.id,
                execution = e.seq,
                pages_done = e.pages_done,
                "resuming execution"
            );
            e
        }
        None => plan::plan_execution(store, &mut sync, dest.page_size.get(), trigger)?,
    };
    let asked = match trigger {
        Trigger::Scheduled => None,
        Trigger::AdHoc => Some("run"),
        Trigger::ResyncAll => Some("resync-all"),
        Trigger::ResyncLast => Some("resync-last"),
    };
    if let Some(action) = asked {
        let w = audit::entry(
            store,
            sync.id,
            by,
            action,
            format!("execution {}", exec.execution_id()),
        )?;
        store.write_records(vec![w], true)?;
    }
    Ok(StartedRun {
        sync,
        exec,
        dest,
        note,
    })
}

impl StartedRun {
    /// The execution that will run.
    pub fn execution(&self) -> &ExecutionRecord {
        &self.exec
    }

    /// Runs the execution through the pipeline, then records its outcome:
    /// the execution's end and the sync's status (active after success,
    /// failed after a failure) and last complete execution in one synced
    /// write, then the notification. An execution interrupted by shutdown
    /// stays processing and changes nothing about the sync.
    pub fn execute(self, store: &Store, opts: &RunOptions) -> Result<ExecutionRecord, ActionError> {
        let StartedRun {
            sync, exec, dest, ..
        } = self;
        let started_updated_ms = sync.updated_ms;
        let done = pipeline::execute(store, &sync, exec, dest, opts)?;
        let mut exec = done.exec.clone();
        // The end of a run changes only what the run owns: its execution,
        // the last complete pointer, and the status its outcome implies —
        // unless an action changed the sync meanwhile (pause, archive,
        // edit), whose result stands.
        let settled = SyncRecord::update(store, sync.id, |current, writes| {
            let untouched = current.updated_ms == started_updated_ms;
            let kind = match &done.outcome {
                Outcome::Interrupted if current.status == SyncStatus::Archived => {
                    exec.status = ExecStatus::Cancelled;
                    exec.finished_ms = Some(Utc::now().timestamp_millis());
                    exec.error = Some("stopped: the sync was archived during the run".into());
                    None
                }
                Outcome::Interrupted => return Ok::<_, ActionError>(None),
                Outcome::Complete => {
                    current.last_complete = Some(exec.seq);
                    if untouched {
                        current.status = rules::after_run(true);
                    }
                    Some(notify::Kind::Success)
                }
                Outcome::Failed(_) => {
                    if untouched {
                        current.status = rules::after_run(false);
                    }
                    Some(notify::Kind::Failure)
                }
            };
            writes.extend(done.final_writes(&exec));
            Ok(Some((kind, current.clone())))
        })?
        .ok_or(ActionError::NotFound(sync.id))?;
        let Some((kind, sync)) = settled else {
            return Ok(exec);
        };
        let Some(kind) = kind else {
            tracing::info!(
                sync = sync.id,
                execution = exec.seq,
                "execution cancelled: the sync was archived"
            );
            return Ok(exec);
        };
        let detail = match kind {
            notify::Kind::Success => format!(
                "Execution {} complete: {} users added, {} removed, {} with a changed identifier, {} in the segment with the attribute, {} pages.",
                exec.execution_id(),
                exec.added,
                exec.removed,
                exec.updated,
                exec.total,
                exec.pages_done
            ),
            _ => format!(
                "Execution {} failed after {} of {} pages: {}",
                exec.execution_id(),
                exec.pages_done,
                exec.total_pages,
                exec.error.as_deref().unwrap_or("unknown error")
            ),
        };
        notify::notify(store, &sync, kind, &detail);
        crate::metrics::execution_ended(
            exec.status == ExecStatus::Complete,
            u64::try_from(exec.finished_ms.unwrap_or(exec.started_ms) - exec.started_ms)
                .unwrap_or(0),
        );
        tracing::info!(
            sync = sync.id,
            execution = exec.seq,
            status = ?exec.status,
            pages = exec.pages_done,
            requests = exec.requests,
            "execution finished"
        );
        Ok(exec)
    }
}

/// `sync replay`: sends the pages of failed execution `seq` that were not
/// delivered (refused, or never sent) again, exactly as planned — same
/// bodies, same keys — even if the data has not changed. Only the sync's
/// latest execution can be replayed, under the rules of an ad hoc run
/// (status, cool-off, daily limit).
pub fn start_replay(
    store: &Store,
    sync_id: u32,
    seq: u32,
    now: DateTime<Utc>,
    by: &str,
) -> Result<StartedRun, ActionError> {
    let _syncs = store.lock_syncs();
    let sync = load(store, sync_id)?;
    let mut exec = ExecutionRecord::load(store, sync_id, seq)?
        .ok_or_else(|| ActionError::Invalid(format!("sync {sync_id} has no execution {seq}")))?;
    if sync.last_execution != Some(seq) {
        return Err(ActionError::Conflict(format!(
            "execution {} is not the sync's latest: only the latest execution can be replayed",
            exec.execution_id()
        )));
    }
    if exec.status != ExecStatus::Failed {
        return Err(ActionError::Conflict(format!(
            "execution {} is {}: only a failed execution is replayed",
            exec.execution_id(),
            serde_json::to_value(exec.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        )));
    }
    let dest = destination::get(store, &sync.destination)?.validated()?;
    check_run(store, &sync, Trigger::AdHoc, dest.allow_resync, now)?;
    exec.status = ExecStatus::Processing;
    exec.error = None;
    exec.finished_ms = None;
    let w = audit::entry(
        store,
        sync.id,
        by,
        "replay",
        format!(
            "execution {}: {} of {} pages not delivered",
            exec.execution_id(),
            exec.total_pages.saturating_sub(exec.pages_done),
            exec.total_pages
        ),
    )?;
    store.write_records(vec![exec.write(), w], true)?;
    Ok(StartedRun {
        sync,
        exec,
        dest,
        note: None,
    })
}

/// The writes that drop planned execution `e` of `sync` (no page sent yet):
/// the execution and its bitmaps go, the sync points at the one before,
/// and a full send it had taken over (new destination) is owed again.
fn discard_writes(sync: &mut SyncRecord, e: &ExecutionRecord) -> Vec<crate::store::Write> {
    let mut w = e.delete_writes();
    if e.kind == super::ExecKind::FullNewDestination {
        w.push(plan::full_resend_marker(sync.id));
    }
    sync.last_execution = e.seq.checked_sub(1).filter(|s| *s > 0);
    w.push(sync.write());
    w
}

/// A planned execution and its first requests exactly as they will go out.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    /// The execution (`sync run` executes exactly this one).
    pub execution: ExecutionRecord,
    /// Its first pages' requests (secrets masked), with their keys.
    pub requests: Vec<destination::Preview>,
}

/// `sync plan`: computes and persists the next execution of a sync without
/// sending anything, and renders its first `show` requests. The checks of
/// an ad hoc run apply. Planning again returns the same plan while it has
/// not run; `sync run` then executes exactly it (same bodies, same keys).
pub fn plan(
    store: &Store,
    sync_id: u32,
    now: DateTime<Utc>,
    by: &str,
    show: usize,
) -> Result<Plan, ActionError> {
    let (sync, exec, dest) = {
        let _syncs = store.lock_syncs();
        let mut sync = load(store, sync_id)?;
        let dest = destination::get(store, &sync.destination)?.validated()?;
        let planned_key = crate::store::keys::planned(sync.id);
        let planned = store.get_u32(crate::store::cf::META, &planned_key)?;
        let processing = match sync.last_execution {
            Some(seq) => ExecutionRecord::load(store, sync.id, seq)?
                .filter(|e| e.status == ExecStatus::Processing),
            None => None,
        };
        let exec = match processing {
            Some(e) if planned == Some(e.seq) => e,
            Some(e) => {
                return Err(ActionError::Conflict(format!(
                    "execution {} is in progress; `segsync sync run {}` resumes it",
                    e.execution_id(),
                    sync.id
                )))
            }
            None => {
                check_run(store, &sync, Trigger::AdHoc, dest.allow_resync, now)?;
                let e =
                    plan::plan_execution(store, &mut sync, dest.page_size.get(), Trigger::AdHoc)?;
                let w = audit::entry(
                    store,
                    sync.id,
                    by,
                    "plan",
                    format!("execution {}", e.execution_id()),
                )?;
                store.write_records(
                    vec![
                        crate::store::Write::Put(
                            crate::store::cf::META,
                            planned_key,
                            e.seq.to_be_bytes().to_vec(),
                        ),
                        w,
                    ],
                    true,
                )?;
                e
            }
        };
        (sync, exec, dest)
    };
    let (execution, pages) = pipeline::first_pages(store, &sync, exec, &dest, show)?;
    let requests = pages
        .iter()
        .map(|p| destination::request(&dest, &p.key, &p.body))
        .collect();
    Ok(Plan {
        execution,
        requests,
    })
}

/// `sync plan --discard`: drops the plan made by `sync plan` (nothing of it
/// was sent); the next run plans afresh.
pub fn discard_plan(store: &Store, sync_id: u32, by: &str) -> Result<ExecutionRecord, ActionError> {
    SyncRecord::update(store, sync_id, |s, writes| {
        let planned_key = crate::store::keys::planned(s.id);
        let planned = store.get_u32(crate::store::cf::META, &planned_key)?;
        let e = s
            .last_execution
            .map(|seq| ExecutionRecord::load(store, s.id, seq))
            .transpose()?
            .flatten()
            .filter(|e| {
                planned == Some(e.seq) && e.status == ExecStatus::Processing && e.pages_done == 0
            })
            .ok_or_else(|| {
                ActionError::Conflict(format!(
                    "sync {} has no plan to discard (see `segsync sync plan {}`)",
                    s.id, s.id
                ))
            })?;
        writes.extend(discard_writes(s, &e));
        writes.push(crate::store::Write::Delete(
            crate::store::cf::META,
            planned_key,
        ));
        writes.push(audit::entry(
            store,
            s.id,
            by,
            "discard-plan",
            format!("execution {}", e.execution_id()),
        )?);
        Ok::<_, ActionError>(e)
    })?
    .ok_or(ActionError::NotFound(sync_id))
}

/// Runs sync `sync_id` once, now: [`start_run`] then
/// [`StartedRun::execute`]. Returns the execution as it ended (complete,
/// failed, or still processing after a shutdown).
pub fn run(
    store: &Store,
    sync_id: u32,
    trigger: Trigger,
    opts: &RunOptions,
    by: &str,
) -> Result<ExecutionRecord, ActionError> {
    start_run(store, sync_id, trigger, Utc::now(), by)?.execute(store, opts)
}

/// What the scheduler's look at one sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A slot is due: it is recorded, and the caller starts the run.
    RunDue(DateTime<Utc>),
    /// The end of the schedule was reached: the sync is now inactive.
    Ended,
    /// Inactive for 30 days: the sync is now archived.
    Archived,
    /// Nothing to do.
    Nothing,
}

/// The scheduler's look at sync `id` at `now`, on the record as stored
/// (so it never undoes an action taken since the caller listed syncs).
/// Only active syncs run; failed syncs wait for an ad hoc run, paused and
/// archived ones do not run.
pub fn schedule_step(store: &Store, id: u32, now: DateTime<Utc>) -> Result<Step, ActionError> {
    Ok(SyncRecord::update(store, id, |s, _| {
        let t = schedule::Timing::of(s);
        let mut last_slot = s.last_slot_ms.and_then(DateTime::from_timestamp_millis);
        if s.schedule == Schedule::Once && s.last_execution.is_some() {
            // A one-time sync runs once: a run started by hand (`sync
            // run`, before the scheduler got to its slot) is that run, as
            // `next_run` shows. Else a server started later sent the whole
            // segment a second time.
            last_slot = last_slot.or(Some(t.start));
        }
        Ok::<_, ActionError>(match s.status {
            SyncStatus::Active => {
                if let Some(slot) = schedule::due(s.schedule, &t, last_slot, now) {
                    s.last_slot_ms = Some(slot.timestamp_millis());
                    Step::RunDue(slot)
                } else if schedule::ended(s.schedule, &t, last_slot, now) {
                    s.status = SyncStatus::Inactive;
                    s.inactive_since_ms = Some(now.timestamp_millis());
                    Step::Ended
                } else {
                    Step::Nothing
                }
            }
            SyncStatus::Inactive => {
                let since = s
                    .inactive_since_ms
                    .and_then(DateTime::from_timestamp_millis)
                    .unwrap_or(now);
                if schedule::archive_due(since, now) {
                    s.status = SyncStatus::Archived;
                    Step::Archived
                } else {
                    Step::Nothing
                }
            }
            SyncStatus::Failed | SyncStatus::Paused | SyncStatus::Archived => Step::Nothing,
        })
    })?
    .unwrap_or(Step::Nothing))
}

/// Removes a destination that no sync uses any more (archived syncs keep
/// its name in their history only).
pub fn remove_destination(store: &Store, name: &str) -> Result<(), ActionError> {
    destination::get(store, name)?;
    let users: Vec<String> = SyncRecord::all(store)?
        .into_iter()
        .filter(|s| s.destination == name && s.status != SyncStatus::Archived)
        .map(|s| s.id.to_string())
        .collect();
    if !users.is_empty() {
        return Err(ActionError::Conflict(format!(
            "destination '{name}' is used by sync(s) {}; archive them first",
            users.join(", ")
        )));
    }
    Ok(destination::remove(store, name)?)
}

/// The next scheduled run, if any (for `sync show`).
pub fn next_run(s: &SyncRecord, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if !matches!(s.status, SyncStatus::Active) {
        return None;
    }
    let t = schedule::Timing::of(s);
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

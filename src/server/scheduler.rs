//! The scheduler: every tick, each active sync whose schedule has a due slot
//! runs once (missed slots collapse into one run); syncs past their end
//! date become inactive, and inactive syncs are archived after 30 days.
//! Beside it, the mailer delivers the notification outbox, so no request
//! or run ever waits on an SMTP server.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::AppState;
use crate::lifecycle::actions::{self, Step};
use crate::lifecycle::{SyncRecord, Trigger};

pub(crate) async fn run(
    state: Arc<AppState>,
    tick: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut interval = tokio::time::interval(tick);
    let mut last_prune: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let st = state.clone();
        let pass = tokio::task::spawn_blocking(move || pass(&st, Utc::now())).await;
        if let Ok(Err(e)) = pass {
            tracing::error!(error = %e, "scheduler pass failed");
        }
        if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            last_prune = Some(std::time::Instant::now());
            let st = state.clone();
            let keep = st.cohort_limits.idempotency_retention;
            let pruned = tokio::task::spawn_blocking(move || {
                let before = Utc::now().timestamp_millis()
                    - i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
                crate::inbound::cohort::prune_idempotency(&st.store, before)
            })
            .await;
            match pruned {
                Ok(Ok(n)) if n > 0 => tracing::info!(keys = n, "old idempotency keys forgotten"),
                Ok(Err(e)) => tracing::error!(error = %e, "pruning idempotency keys failed"),
                _ => {}
            }
        }
    }
}

/// Delivers the notification outbox whenever a run or an edit may have
/// added to it (and every `tick` in any case), with the `[smtp]` settings
/// in force at that moment.
/// Applies `[retention]` every `every` (first after one period, not at
/// start), off the runtime, under the store's writer lock like an import.
pub(crate) async fn retention(
    state: Arc<AppState>,
    retention: crate::config::Retention,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let Some(every) = retention.every else {
        return;
    };
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let st = state.clone();
        let policy = retention.policy;
        match tokio::task::spawn_blocking(move || st.store.apply_retention(policy)).await {
            Ok(Ok(pruned)) => tracing::info!(?pruned, "retention applied"),
            Ok(Err(e)) => tracing::error!(error = %e, "retention failed"),
            Err(e) => tracing::error!(error = %e, "retention task failed"),
        }
    }
}

pub(crate) async fn deliver_mail(
    state: Arc<AppState>,
    tick: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut interval = tokio::time::interval(tick);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = state.mail.notified() => {}
            _ = stop.changed() => {}
        }
        let st = state.clone();
        let done = tokio::task::spawn_blocking(move || {
            crate::lifecycle::notify::deliver_outbox(&st.store)
        })
        .await;
        if let Err(e) = done {
            tracing::error!(error = %e, "the mailer task failed");
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// How often answered idempotency keys past their retention are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// One look at every sync at `now`: what is due runs, what ended becomes
/// inactive, what stayed inactive 30 days is archived
/// ([`actions::schedule_step`] decides, on the record as stored now).
pub(crate) fn pass(state: &Arc<AppState>, now: DateTime<Utc>) -> Result<(), crate::store::Error> {
    for s in SyncRecord::all(&state.store)? {
        if state.is_running(s.id) {
            continue;
        }
        match actions::schedule_step(&state.store, s.id, now) {
            Ok(Step::RunDue(slot)) => {
                tracing::info!(sync = s.id, slot = %slot, "scheduled run due");
                if let Err(e) = state.start_run(s.id, Trigger::Scheduled, "scheduler") {
                    tracing::warn!(sync = s.id, error = %e, "scheduled run refused");
                }
            }
            Ok(Step::Ended) => tracing::info!(sync = s.id, "end of schedule reached: inactive"),
            Ok(Step::Archived) => tracing::info!(sync = s.id, "inactive for 30 days: archived"),
            Ok(Step::Nothing) => {}
            Err(e) => tracing::error!(sync = s.id, error = %e, "scheduler step failed"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::{Frequency, Schedule, SyncStatus};

    /// The start of every sync these tests make.
    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-01T09:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn state(dir: &std::path::Path) -> Arc<AppState> {
        Arc::new(
            AppState::new(
                Arc::new(crate::store::Store::open(dir).unwrap()),
                &crate::server::ServeOptions::default(),
            )
            .unwrap(),
        )
    }

    fn sync(
        id: u32,
        schedule: Schedule,
        start: DateTime<Utc>,
        end: Option<DateTime<Utc>>,
    ) -> SyncRecord {
        SyncRecord {
            id,
            segment: "s".into(),
            destination: "d".into(),
            attribute: "uid".into(),
            schedule,
            status: SyncStatus::Active,
            created_ms: start.timestamp_millis(),
            last_complete: None,
            last_execution: None,
            start_ms: start.timestamp_millis(),
            end_ms: end.map(|e| e.timestamp_millis()),
            timezone: "UTC".into(),
            notify: vec![],
            last_slot_ms: None,
            inactive_since_ms: None,
            updated_ms: start.timestamp_millis(),
        }
    }

    #[test]
    fn end_date_makes_inactive_and_30_days_later_archived() {
        let dir = tempfile::tempdir().unwrap();
        let st = state(dir.path());
        let t0 = t0();
        let end = t0 + chrono::Duration::days(3);
        let mut s = sync(1, Schedule::Every(Frequency::Daily), t0, Some(end));
        // Its last slot before the end already ran.
        s.last_slot_ms = Some((t0 + chrono::Duration::days(2)).timestamp_millis());
        s.save(&st.store).unwrap();
        let status = |st: &Arc<AppState>| SyncRecord::load(&st.store, 1).unwrap().unwrap().status;

        pass(&st, end - chrono::Duration::hours(1)).unwrap();
        assert_eq!(status(&st), SyncStatus::Active);
        pass(&st, end).unwrap();
        assert_eq!(status(&st), SyncStatus::Inactive);
        pass(&st, end + chrono::Duration::days(29)).unwrap();
        assert_eq!(status(&st), SyncStatus::Inactive);
        pass(&st, end + chrono::Duration::days(30)).unwrap();
        assert_eq!(status(&st), SyncStatus::Archived);
    }

    #[test]
    fn a_one_time_sync_becomes_inactive_after_its_run() {
        let dir = tempfile::tempdir().unwrap();
        let st = state(dir.path());
        let t0 = t0();
        let mut s = sync(1, Schedule::Once, t0, None);
        s.last_slot_ms = Some(t0.timestamp_millis());
        s.save(&st.store).unwrap();
        pass(&st, t0 + chrono::Duration::minutes(5)).unwrap();
        assert_eq!(
            SyncRecord::load(&st.store, 1).unwrap().unwrap().status,
            SyncStatus::Inactive
        );
    }

    #[test]
    fn a_one_time_sync_run_by_hand_is_not_run_again() {
        let dir = tempfile::tempdir().unwrap();
        let st = state(dir.path());
        let t0 = t0();
        // Run with `sync run` while no server was there to take its slot.
        let mut s = sync(1, Schedule::Once, t0, None);
        s.last_execution = Some(1);
        s.save(&st.store).unwrap();
        assert_eq!(actions::next_run(&s, t0), None);
        pass(&st, t0 + chrono::Duration::hours(2)).unwrap();
        let s = SyncRecord::load(&st.store, 1).unwrap().unwrap();
        assert_eq!(s.last_slot_ms, None, "its slot was run again");
        assert_eq!(s.status, SyncStatus::Inactive);
        assert!(st.threads.lock().unwrap().is_empty());
        // Never run: its slot is due.
        let s = sync(2, Schedule::Once, t0, None);
        s.save(&st.store).unwrap();
        assert_eq!(
            actions::schedule_step(&st.store, 2, t0 + chrono::Duration::hours(2)).unwrap(),
            Step::RunDue(t0)
        );
    }

    #[test]
    fn failed_and_paused_syncs_do_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let st = state(dir.path());
        let t0 = t0();
        for (id, status) in [(1, SyncStatus::Failed), (2, SyncStatus::Paused)] {
            let mut s = sync(id, Schedule::Every(Frequency::Hourly), t0, None);
            s.status = status;
            s.save(&st.store).unwrap();
        }
        pass(&st, t0 + chrono::Duration::hours(5)).unwrap();
        for id in [1, 2] {
            let s = SyncRecord::load(&st.store, id).unwrap().unwrap();
            assert_eq!(s.last_slot_ms, None, "sync {id} was not scheduled");
        }
        assert!(st.threads.lock().unwrap().is_empty());
    }
}

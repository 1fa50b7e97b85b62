//! When a sync runs, computed from an injected `now` (the scheduler passes
//! the clock, tests pass fixed instants).
//!
//! Slot *k* of a periodic schedule is the start time plus *k* periods in the
//! sync's time zone (UTC by default): the same wall-clock time every day or
//! week; monthly on the start's day of month, clamped to the month's last
//! day (a sync started on Jan 31 runs on Feb 28, Mar 31, Apr 30). Hourly
//! slots are exact hours. A wall-clock time that does not exist (spring
//! forward) moves an hour later; one that exists twice (fall back) takes
//! the first. After downtime the missed slots collapse into one run: the
//! latest slot not after `now`. Nothing starts at or after the end date,
//! not even a slot missed before it: the sync has ended (inactive).

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::{Frequency, Schedule, SyncRecord};

/// Inactive syncs are archived this long after they ended (the seed).
pub const ARCHIVE_AFTER: Duration = Duration::days(30);

/// Start, optional end and time zone of a schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// First run.
    pub start: DateTime<Utc>,
    /// No run at or after this instant.
    pub end: Option<DateTime<Utc>>,
    /// Zone whose wall clock the slots follow.
    pub tz: Tz,
}

impl Timing {
    /// A sync's start, end and zone (UTC if its stored zone no longer parses).
    pub fn of(s: &SyncRecord) -> Timing {
        let ts = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap_or_default();
        Timing {
            start: ts(s.start_ms),
            end: s.end_ms.map(ts),
            tz: s.timezone.parse().unwrap_or(Tz::UTC),
        }
    }
}

fn to_utc(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => {
            // In a spring-forward gap: an hour later exists.
            let later = local + Duration::hours(1);
            tz.from_local_datetime(&later)
                .earliest()
                .map_or_else(|| Utc.from_utc_datetime(&local), |t| t.with_timezone(&Utc))
        }
    }
}

fn add_months(date: NaiveDate, months: u32) -> Option<NaiveDate> {
    let total = date.year() * 12 + date.month0() as i32 + months as i32;
    let (y, m0) = (total.div_euclid(12), total.rem_euclid(12) as u32);
    let first = NaiveDate::from_ymd_opt(y, m0 + 1, 1)?;
    let next_first = if m0 == 11 {
        NaiveDate::from_ymd_opt(y + 1, 1, 1)?
    } else {
        NaiveDate::from_ymd_opt(y, m0 + 2, 1)?
    };
    let last_day = (next_first - first).num_days() as u32;
    NaiveDate::from_ymd_opt(y, m0 + 1, date.day().min(last_day))
}

/// Slot `k` of a periodic schedule.
pub fn slot(freq: Frequency, t: &Timing, k: u32) -> Option<DateTime<Utc>> {
    if freq == Frequency::Hourly {
        return t.start.checked_add_signed(Duration::hours(i64::from(k)));
    }
    let local = t.start.with_timezone(&t.tz).naive_local();
    let shifted = match freq {
        Frequency::Daily => local.checked_add_signed(Duration::days(i64::from(k)))?,
        Frequency::Weekly => local.checked_add_signed(Duration::weeks(i64::from(k)))?,
        Frequency::Monthly => add_months(local.date(), k)?.and_time(local.time()),
        Frequency::Hourly => local,
    };
    Some(to_utc(t.tz, shifted))
}

fn nominal(freq: Frequency) -> Duration {
    match freq {
        Frequency::Hourly => Duration::hours(1),
        Frequency::Daily => Duration::days(1),
        Frequency::Weekly => Duration::weeks(1),
        Frequency::Monthly => Duration::days(28),
    }
}

/// Index of the first slot strictly after `after` (a lower estimate from the
/// nominal period, then stepped; at most a few steps).
fn first_index_after(freq: Frequency, t: &Timing, after: DateTime<Utc>) -> Option<u32> {
    if after < t.start {
        return Some(0);
    }
    let est = ((after - t.start).num_seconds() / nominal(freq).num_seconds())
        .saturating_sub(2)
        .max(0);
    let mut k = u32::try_from(est).ok()?;
    while slot(freq, t, k)? <= after {
        k = k.checked_add(1)?;
    }
    Some(k)
}

fn within_end(t: &Timing, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match t.end {
        Some(end) if at >= end => None,
        _ => Some(at),
    }
}

/// The first run strictly after `after` (`None`: the schedule is over).
pub fn next_after(schedule: Schedule, t: &Timing, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match schedule {
        Schedule::Once => (after < t.start)
            .then_some(t.start)
            .and_then(|s| within_end(t, s)),
        Schedule::Every(f) => within_end(t, slot(f, t, first_index_after(f, t, after)?)?),
    }
}

/// The run due at `now`, if any: the latest slot not after `now` that is
/// later than the last scheduled run. Missed slots collapse into this one.
pub fn due(
    schedule: Schedule,
    t: &Timing,
    last_run: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let candidate = match schedule {
        Schedule::Once => (last_run.is_none() && t.start <= now).then_some(t.start)?,
        Schedule::Every(f) => {
            let k = first_index_after(f, t, now)?;
            slot(f, t, k.checked_sub(1)?)?
        }
    };
    if last_run.is_some_and(|l| l >= candidate) {
        return None;
    }
    within_end(t, candidate)
}

/// Whether the schedule has ended at `now` (the sync becomes inactive).
pub fn ended(
    schedule: Schedule,
    t: &Timing,
    last_run: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> bool {
    match schedule {
        Schedule::Once => last_run.is_some(),
        Schedule::Every(_) => t.end.is_some_and(|e| e <= now),
    }
}

/// Whether an inactive sync (inactive since `since`) is archived at `now`.
pub fn archive_due(since: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    now - since >= ARCHIVE_AFTER
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn timing(start: &str, tz: Tz) -> Timing {
        Timing {
            start: at(start),
            end: None,
            tz,
        }
    }

    #[test]
    fn each_frequency_in_utc() {
        let t = timing("2026-11-23T09:00:00Z", Tz::UTC);
        let now = at("2026-11-25T10:30:00Z");
        let next = |f| next_after(Schedule::Every(f), &t, now).unwrap();
        assert_eq!(next(Frequency::Hourly), at("2026-11-25T11:00:00Z"));
        assert_eq!(next(Frequency::Daily), at("2026-11-26T09:00:00Z"));
        assert_eq!(next(Frequency::Weekly), at("2026-11-30T09:00:00Z"));
        assert_eq!(next(Frequency::Monthly), at("2026-12-23T09:00:00Z"));
        // Before the start, the start itself.
        assert_eq!(
            next_after(
                Schedule::Every(Frequency::Daily),
                &t,
                at("2026-01-01T00:00:00Z")
            ),
            Some(t.start)
        );
    }

    #[test]
    fn month_ends_are_clamped_and_come_back() {
        let t = timing("2027-01-31T06:00:00Z", Tz::UTC);
        let slots: Vec<_> = (0..5)
            .map(|k| slot(Frequency::Monthly, &t, k).unwrap())
            .collect();
        assert_eq!(
            slots,
            [
                "2027-01-31",
                "2027-02-28",
                "2027-03-31",
                "2027-04-30",
                "2027-05-31"
            ]
            .map(|d| at(&format!("{d}T06:00:00Z")))
            .to_vec()
        );
        let leap = timing("2028-01-31T06:00:00Z", Tz::UTC);
        assert_eq!(
            slot(Frequency::Monthly, &leap, 1),
            Some(at("2028-02-29T06:00:00Z"))
        );
        let dec = timing("2026-12-15T00:00:00Z", Tz::UTC);
        assert_eq!(
            slot(Frequency::Monthly, &dec, 1),
            Some(at("2027-01-15T00:00:00Z"))
        );
    }

    #[test]
    fn wall_clock_is_kept_across_dst() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        // 09:00 CEST (UTC+2) before the fall-back on 2026-10-25, 09:00 CET (UTC+1) after.
        let t = timing("2026-10-24T07:00:00Z", berlin);
        assert_eq!(
            slot(Frequency::Daily, &t, 1),
            Some(at("2026-10-25T08:00:00Z"))
        );
        assert_eq!(
            slot(Frequency::Daily, &t, 2),
            Some(at("2026-10-26T08:00:00Z"))
        );
        // 02:30 does not exist on 2027-03-28 (spring forward): 03:30 CEST.
        let gap = timing("2027-03-27T01:30:00Z", berlin);
        assert_eq!(
            slot(Frequency::Daily, &gap, 1),
            Some(at("2027-03-28T01:30:00Z"))
        );
        // 02:30 exists twice on 2026-10-25: the first (CEST, UTC+2).
        let twice = timing("2026-10-24T00:30:00Z", berlin);
        assert_eq!(
            slot(Frequency::Daily, &twice, 1),
            Some(at("2026-10-25T00:30:00Z"))
        );
        // Hourly is exact hours whatever the wall clock does.
        assert_eq!(
            slot(Frequency::Hourly, &t, 30),
            Some(at("2026-10-25T13:00:00Z"))
        );
    }

    #[test]
    fn missed_runs_collapse_into_one() {
        let t = timing("2026-11-01T09:00:00Z", Tz::UTC);
        let s = Schedule::Every(Frequency::Daily);
        let last = Some(at("2026-11-02T09:00:00Z"));
        // Down for four days: one run is due, for the latest missed slot.
        let now = at("2026-11-06T12:00:00Z");
        assert_eq!(due(s, &t, last, now), Some(at("2026-11-06T09:00:00Z")));
        // Once it ran, nothing until the next slot.
        assert_eq!(due(s, &t, Some(at("2026-11-06T09:00:00Z")), now), None);
        assert_eq!(next_after(s, &t, now), Some(at("2026-11-07T09:00:00Z")));
        // Nothing is due before the start.
        assert_eq!(due(s, &t, None, at("2026-10-30T00:00:00Z")), None);
        assert_eq!(due(s, &t, None, t.start), Some(t.start));
    }

    #[test]
    fn one_time_runs_once_at_its_start() {
        let t = timing("2026-11-23T12:00:00Z", Tz::UTC);
        assert_eq!(
            due(Schedule::Once, &t, None, at("2026-11-23T11:59:00Z")),
            None
        );
        assert_eq!(
            due(Schedule::Once, &t, None, at("2026-11-23T12:00:00Z")),
            Some(t.start)
        );
        assert_eq!(
            due(
                Schedule::Once,
                &t,
                Some(t.start),
                at("2026-11-24T00:00:00Z")
            ),
            None
        );
        assert!(ended(
            Schedule::Once,
            &t,
            Some(t.start),
            at("2026-11-24T00:00:00Z")
        ));
    }

    #[test]
    fn end_date_makes_inactive_then_archived_after_30_days() {
        let mut t = timing("2026-11-01T09:00:00Z", Tz::UTC);
        t.end = Some(at("2026-11-05T00:00:00Z"));
        let s = Schedule::Every(Frequency::Daily);
        assert_eq!(
            next_after(s, &t, at("2026-11-04T10:00:00Z")),
            None,
            "the next slot is past the end"
        );
        // A slot missed during downtime still runs before the end date...
        assert_eq!(
            due(
                s,
                &t,
                Some(at("2026-11-02T09:00:00Z")),
                at("2026-11-04T20:00:00Z")
            ),
            Some(at("2026-11-04T09:00:00Z"))
        );
        // ...but nothing starts once the end date has passed.
        assert_eq!(
            due(
                s,
                &t,
                Some(at("2026-11-03T09:00:00Z")),
                at("2026-11-06T00:00:00Z")
            ),
            None
        );
        assert!(!ended(s, &t, None, at("2026-11-04T23:59:59Z")));
        assert!(ended(s, &t, None, at("2026-11-05T00:00:00Z")));
        let since = at("2026-11-05T00:00:00Z");
        assert!(!archive_due(since, at("2026-12-04T23:59:59Z")));
        assert!(archive_due(since, at("2026-12-05T00:00:00Z")));
    }
}

//! Process-wide counters for `/metrics` (Prometheus text format), updated
//! by the pipeline as pages are acknowledged and executions end.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

static PAGES_SENT: AtomicU64 = AtomicU64::new(0);
static USERS_DELIVERED: AtomicU64 = AtomicU64::new(0);
static RETRIES: AtomicU64 = AtomicU64::new(0);
static EXECUTIONS_FAILED: AtomicU64 = AtomicU64::new(0);
static EXECUTIONS_COMPLETE: AtomicU64 = AtomicU64::new(0);
static EXECUTION_MS_SUM: AtomicU64 = AtomicU64::new(0);
static REQUESTS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());
static COHORT_ADDS: AtomicU64 = AtomicU64::new(0);
static COHORT_REMOVES: AtomicU64 = AtomicU64::new(0);
static COHORT_UNRESOLVED: AtomicU64 = AtomicU64::new(0);
static EVENTS_RECEIVED: AtomicU64 = AtomicU64::new(0);
static PERSONAS_COMMITS: AtomicU64 = AtomicU64::new(0);
static PERSONAS_REQUESTS: AtomicU64 = AtomicU64::new(0);
static PERSONAS_READ_AHEAD: AtomicU64 = AtomicU64::new(0);
static PERSONAS_READ_AHEAD_TAKEN: AtomicU64 = AtomicU64::new(0);
static THROTTLED: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());
static RATES: Mutex<BTreeMap<String, f64>> = Mutex::new(BTreeMap::new());

/// A destination answered 429 `n` times (to one page).
pub(crate) fn throttled_by(destination: &str, n: u32) {
    if n == 0 {
        return;
    }
    let mut t = THROTTLED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *t.entry(destination.to_string()).or_default() += u64::from(n);
}

/// A destination's current adaptive rate.
pub(crate) fn destination_rate(destination: &str, rpm: f64) {
    RATES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(destination.to_string(), rpm);
}

/// A Cohort Sync request was applied.
pub(crate) fn cohort_request(add: bool, unresolved: u64) {
    if add {
        COHORT_ADDS.fetch_add(1, Ordering::Relaxed);
    } else {
        COHORT_REMOVES.fetch_add(1, Ordering::Relaxed);
    }
    COHORT_UNRESOLVED.fetch_add(unresolved, Ordering::Relaxed);
}

/// Personas events were applied.
pub(crate) fn events_received(n: u64) {
    EVENTS_RECEIVED.fetch_add(n, Ordering::Relaxed);
}

/// One Personas group commit (one synced write) answered `requests` requests.
pub(crate) fn personas_group(requests: u64) {
    PERSONAS_COMMITS.fetch_add(1, Ordering::Relaxed);
    PERSONAS_REQUESTS.fetch_add(requests, Ordering::Relaxed);
}

/// A Personas commit was offered `read` old values read ahead by the
/// parsing threads, and found `taken` of them still current.
pub(crate) fn personas_read_ahead(read: u64, taken: u64) {
    PERSONAS_READ_AHEAD.fetch_add(read, Ordering::Relaxed);
    PERSONAS_READ_AHEAD_TAKEN.fetch_add(taken, Ordering::Relaxed);
}

/// A page was acknowledged after `requests` attempts.
pub(crate) fn page_acked(destination: &str, users: u64, requests: u32) {
    PAGES_SENT.fetch_add(1, Ordering::Relaxed);
    USERS_DELIVERED.fetch_add(users, Ordering::Relaxed);
    RETRIES.fetch_add(u64::from(requests.saturating_sub(1)), Ordering::Relaxed);
    requests_to(destination, requests);
}

/// Attempts that did not deliver a page.
pub(crate) fn requests_to(destination: &str, requests: u32) {
    let mut r = REQUESTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *r.entry(destination.to_string()).or_default() += u64::from(requests);
}

/// An execution ended.
pub(crate) fn execution_ended(complete: bool, millis: u64) {
    if complete {
        EXECUTIONS_COMPLETE.fetch_add(1, Ordering::Relaxed);
    } else {
        EXECUTIONS_FAILED.fetch_add(1, Ordering::Relaxed);
    }
    EXECUTION_MS_SUM.fetch_add(millis, Ordering::Relaxed);
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One metric (`"name type"`) labelled by destination.
fn per_destination(out: &mut String, name_type: &str, help: &str, rows: Vec<(String, String)>) {
    let name = name_type.split(' ').next().unwrap_or(name_type);
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name_type}");
    for (d, v) in rows {
        let _ = writeln!(out, "{name}{{destination=\"{}\"}} {v}", escape(&d));
    }
}

/// Gauges of memory, appended to [`render`]'s text: the process's
/// resident set (Linux: `/proc/self/status`; left out elsewhere) and the
/// parts the store reports holding.
pub fn render_memory(out: &mut String, store: &[(&str, u64)]) {
    if let Some(rss) = resident_bytes() {
        let _ = writeln!(
            out,
            "# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}"
        );
    }
    let name = "segsync_store_memory_bytes";
    let _ = writeln!(
        out,
        "# HELP {name} Memory RocksDB holds, by part (table readers: index and filter blocks outside the block cache).\n# TYPE {name} gauge"
    );
    for (part, bytes) in store {
        let _ = writeln!(out, "{name}{{part=\"{}\"}} {bytes}", escape(part));
    }
}

/// The resident set of this process (`VmRSS` of `/proc/self/status`).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status_kb(&status, "VmRSS").map(|kb| kb as u64 * 1024)
}

/// A `/proc/<pid>/status` figure in kB (`VmHWM:  1234 kB`).
pub(crate) fn status_kb(status: &str, field: &str) -> Option<f64> {
    status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
}

/// The Prometheus exposition of every counter. The request rate per
/// destination is `rate(segsync_requests_total[1m])`.
pub fn render() -> String {
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    };
    counter(
        "segsync_pages_sent_total",
        "Pages acknowledged by destinations.",
        PAGES_SENT.load(Ordering::Relaxed),
    );
    counter(
        "segsync_users_delivered_total",
        "Users in acknowledged pages.",
        USERS_DELIVERED.load(Ordering::Relaxed),
    );
    counter(
        "segsync_retries_total",
        "Request attempts after the first for a page.",
        RETRIES.load(Ordering::Relaxed),
    );
    counter(
        "segsync_executions_failed_total",
        "Executions that failed.",
        EXECUTIONS_FAILED.load(Ordering::Relaxed),
    );
    counter(
        "segsync_cohort_add_requests_total",
        "Cohort Sync add_members requests applied.",
        COHORT_ADDS.load(Ordering::Relaxed),
    );
    counter(
        "segsync_cohort_remove_requests_total",
        "Cohort Sync remove_members requests applied.",
        COHORT_REMOVES.load(Ordering::Relaxed),
    );
    counter(
        "segsync_cohort_unresolved_members_total",
        "Cohort Sync members that matched no user.",
        COHORT_UNRESOLVED.load(Ordering::Relaxed),
    );
    counter(
        "segsync_events_received_total",
        "Identify and track events applied.",
        EVENTS_RECEIVED.load(Ordering::Relaxed),
    );
    counter(
        "segsync_personas_commits_total",
        "Synced writes of Personas calls (one per group commit).",
        PERSONAS_COMMITS.load(Ordering::Relaxed),
    );
    counter(
        "segsync_personas_requests_total",
        "Personas calls those commits answered.",
        PERSONAS_REQUESTS.load(Ordering::Relaxed),
    );
    counter(
        "segsync_personas_read_ahead_total",
        "Old values of known users read ahead by the threads that parse Personas calls.",
        PERSONAS_READ_AHEAD.load(Ordering::Relaxed),
    );
    counter(
        "segsync_personas_read_ahead_taken_total",
        "Of those, values the commit took as still current (the rest it read again).",
        PERSONAS_READ_AHEAD_TAKEN.load(Ordering::Relaxed),
    );
    let complete = EXECUTIONS_COMPLETE.load(Ordering::Relaxed);
    let failed = EXECUTIONS_FAILED.load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "# HELP segsync_execution_duration_seconds Time executions took.\n# TYPE segsync_execution_duration_seconds summary\nsegsync_execution_duration_seconds_sum {}\nsegsync_execution_duration_seconds_count {}",
        EXECUTION_MS_SUM.load(Ordering::Relaxed) as f64 / 1000.0,
        complete + failed
    );
    let lock = |m: &'static Mutex<BTreeMap<String, u64>>| {
        m.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(d, n)| (d.clone(), n.to_string()))
            .collect::<Vec<_>>()
    };
    per_destination(
        &mut out,
        "segsync_requests_total counter",
        "Requests sent, retries included.",
        lock(&REQUESTS),
    );
    per_destination(
        &mut out,
        "segsync_throttled_total counter",
        "Answers of 429 (slow down) per destination.",
        lock(&THROTTLED),
    );
    let rates = RATES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(|(d, r)| (d.clone(), format!("{r:.1}")))
        .collect();
    per_destination(
        &mut out,
        "segsync_destination_rate_rpm gauge",
        "The adaptive rate per destination (requests per minute, at most its rpm).",
        rates,
    );
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn throttling_and_the_adaptive_rate_are_exposed_per_destination() {
        super::throttled_by("metrics-test-dest", 3);
        super::throttled_by("metrics-test-dest", 0);
        super::destination_rate("metrics-test-dest", 540.0);
        let text = super::render();
        assert!(
            text.contains("segsync_throttled_total{destination=\"metrics-test-dest\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("segsync_destination_rate_rpm{destination=\"metrics-test-dest\"} 540.0"),
            "{text}"
        );
    }

    #[test]
    fn memory_gauges_name_the_process_and_each_store_part() {
        let mut text = String::new();
        super::render_memory(&mut text, &[("memtables", 4096), ("table_readers", 12)]);
        assert!(
            text.contains("segsync_store_memory_bytes{part=\"memtables\"} 4096"),
            "{text}"
        );
        assert!(
            text.contains("segsync_store_memory_bytes{part=\"table_readers\"} 12"),
            "{text}"
        );
        if cfg!(target_os = "linux") {
            let rss: u64 = text
                .lines()
                .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no resident set in {text}"));
            assert!(rss > 1 << 20, "{rss}");
        }
    }
}

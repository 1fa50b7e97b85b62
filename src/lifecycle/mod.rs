//! Syncs over time: the sync and execution records, the status × action
//! table ([`rules`]) and when periodic syncs run ([`schedule`]). Limits,
//! the scheduler and notifications are still to come (docs/ARCHITECTURE.md,
//! Status).

pub mod limits;
pub mod notify;
mod records;
pub mod rules;
pub mod schedule;

pub mod actions;

pub use records::{
    BitmapKind, ExecKind, ExecStatus, ExecutionRecord, Frequency, Schedule, SyncRecord, SyncStatus,
    Trigger,
};

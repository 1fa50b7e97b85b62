//! Syncs over time. For now: the sync and execution records and their
//! storage; statuses, actions, limits, schedules and notifications come with
//! the lifecycle work (see docs/ARCHITECTURE.md, Status).

mod records;

pub use records::{
    BitmapKind, ExecKind, ExecStatus, ExecutionRecord, Frequency, Schedule, SyncRecord, SyncStatus,
};

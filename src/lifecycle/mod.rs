//! Syncs over time: the status × action table ([`rules`]), every action a
//! user or the scheduler takes on a sync ([`actions`], the one entry point
//! for runs), account limits and the cool-off ([`limits`]), when periodic
//! syncs run ([`schedule`]) and who is told about it ([`notify`]).
//!
//! The records themselves (syncs, executions, their bitmaps) are the
//! store's ([`crate::store::SyncRecord`]), re-exported here for callers
//! above this layer.

pub mod actions;
pub mod audit;
pub mod limits;
pub mod notify;
pub mod rules;
pub mod schedule;
pub mod view;

pub use crate::store::{
    BitmapKind, ExecKind, ExecStatus, ExecutionRecord, Frequency, Schedule, SyncRecord, SyncStatus,
    Trigger,
};

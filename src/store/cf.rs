//! Names of the RocksDB column families, one per record family of the design.
//!
//! Kept in one place so the open path, the tests and the key builders agree on
//! the exact set; opening a store whose families differ is refused.

/// Schema version, id counters, the attribute catalogue, the import marker.
pub(crate) const META: &str = "meta";
/// User index → distinct id bytes, one key a user: schema 5 and older.
/// Read only by the upgrade to 6, which moves the ids to [`USER_IDS`].
pub(crate) const USERS: &str = "users";
/// Block of 256 users → their distinct ids (see `user_ids.rs`). (Distinct
/// id → index is the interner's fingerprint table, see `fingerprints.rs`;
/// a second, random-keyed family doubled the cost of interning new users.)
pub(crate) const USER_IDS: &str = "user_ids";
/// (attribute, user) → current value, tagged with the write sequence that set it.
pub(crate) const ATTR_VALUES: &str = "attr_values";
/// (attribute, user, write seq) → the value that write replaced or deleted.
pub(crate) const ATTR_HISTORY: &str = "attr_history";
/// Attribute id → bitmap of the users that have it.
pub(crate) const ATTR_PRESENT: &str = "attr_present";
/// Segment name → segment record (id, snapshot list).
pub(crate) const SEGMENTS: &str = "segments";
/// (segment id, snapshot seq) → member bitmap.
pub(crate) const SNAPSHOTS: &str = "snapshots";
/// Undo log of the import in progress: (write seq, n) → old attribute value.
pub(crate) const UNDO: &str = "undo";
/// Destination configuration records.
pub(crate) const DESTINATIONS: &str = "destinations";
/// Sync configuration records.
pub(crate) const SYNCS: &str = "syncs";
/// (sync id, execution seq) → execution record.
pub(crate) const EXECUTIONS: &str = "executions";
/// (sync id, execution seq, kind) → bitmap (synced, added, removed, done pages).
pub(crate) const EXEC_BITMAPS: &str = "exec_bitmaps";
/// History, audit log and notification outbox.
pub(crate) const EVENTS: &str = "events";
/// (attribute, xxh3 of the value, user) → nothing: the users holding a value
/// of an identity attribute (uid, anonymous id), for resolving inbound
/// requests. Add-only; every hit is verified against `attr_values`.
pub(crate) const ATTR_INDEX: &str = "attr_index";
/// Credentials and inbound state: workspaces, write keys and admin API
/// tokens (hashed), received cohorts and their ordering, idempotency keys
/// already answered.
pub(crate) const INBOUND: &str = "inbound";

/// (attribute, kind, write seq) → bitmap of the users whose value that write
/// (or, for real-time writes, a bucket of writes) replaced or deleted: what
/// changed since a sync's last delivery, without scanning its members.
pub(crate) const ATTR_CHANGES: &str = "attr_changes";

/// Every column family, in the order they are created.
pub(crate) const ALL: [&str; 17] = [
    META,
    USERS,
    ATTR_VALUES,
    ATTR_HISTORY,
    ATTR_PRESENT,
    SEGMENTS,
    SNAPSHOTS,
    UNDO,
    DESTINATIONS,
    SYNCS,
    EXECUTIONS,
    EXEC_BITMAPS,
    EVENTS,
    ATTR_INDEX,
    INBOUND,
    ATTR_CHANGES,
    USER_IDS,
];

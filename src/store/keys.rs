//! Every key of the store, built in one place. Integers are big-endian so
//! that RocksDB's byte order is the numeric order and prefix scans come out
//! sorted (one attribute's values sit together, which makes resolving a page
//! one ordered batched read).
//!
//! Families that hold several kinds of record (`meta`, `events`, `inbound`)
//! separate them by a textual prefix ending in `/`; `PREFIXES` lists them
//! all, and a test checks that no prefix of a family is a prefix of another.

// --- meta -----------------------------------------------------------------

/// Key of the schema version in `meta`.
pub(crate) const SCHEMA_VERSION: &[u8] = b"schema_version";
/// Key of the counters record in `meta`.
pub(crate) const COUNTERS: &[u8] = b"counters";
/// Key of the marker of an import in progress in `meta`.
pub(crate) const IMPORT_MARKER: &[u8] = b"import_in_progress";
/// Prefix of attribute catalogue entries in `meta` (`attr/<name>` → id).
pub(crate) const ATTR_PREFIX: &[u8] = b"attr/";
/// Prefix of the id allocators in `meta` (`next_id/<kind>` → next id).
pub(crate) const NEXT_ID_PREFIX: &[u8] = b"next_id/";
/// Prefix of the "identity index built" markers in `meta` (`indexed/<attr>`).
pub(crate) const INDEXED_PREFIX: &[u8] = b"indexed/";
/// Prefix of the markers of syncs whose next run must send everyone (their
/// destination changed) in `meta` (`full_resend/<sync>`).
pub(crate) const FULL_RESEND_PREFIX: &[u8] = b"full_resend/";

/// Prefix of retention's floors in `meta` (`pruned_below/<sync>` → the
/// oldest execution whose bitmaps and page outcomes are kept).
pub(crate) const PRUNED_BELOW_PREFIX: &[u8] = b"pruned_below/";
/// Key of the oldest write sequence attribute history still answers for
/// (retention removed what only older reads needed).
pub(crate) const HISTORY_HORIZON: &[u8] = b"history_horizon";

/// `pruned_below/<sync>` in `meta`.
pub(crate) fn pruned_below(sync: u32) -> Vec<u8> {
    prefixed(PRUNED_BELOW_PREFIX, &sync.to_be_bytes())
}

// --- events ---------------------------------------------------------------

/// Prefix of the notification outbox in `events` (`notification/<id>`).
pub(crate) const NOTIFICATION_PREFIX: &[u8] = b"notification/";

/// Prefix of the per-page outcomes of executions in `events`
/// (`page/<sync><seq><page>`).
pub(crate) const PAGE_OUTCOME_PREFIX: &[u8] = b"page/";

/// `page/<sync><seq>`: the prefix of one execution's page outcomes.
pub(crate) fn page_outcomes_of(sync: u32, seq: u32) -> Vec<u8> {
    prefixed(PAGE_OUTCOME_PREFIX, &execution(sync, seq))
}

/// `page/<sync><seq><page>` in `events`.
pub(crate) fn page_outcome(sync: u32, seq: u32, page: u32) -> Vec<u8> {
    let mut k = page_outcomes_of(sync, seq);
    k.extend_from_slice(&page.to_be_bytes());
    k
}

/// Prefix of the outbox's pending deliveries in `events`
/// (`mail_pending/<id>` → nothing).
pub(crate) const PENDING_NOTIFICATION_PREFIX: &[u8] = b"mail_pending/";

/// Prefix of the audit log of sync changes in `events`
/// (`audit/<sync><id>`).
pub(crate) const AUDIT_PREFIX: &[u8] = b"audit/";

/// `audit/<sync>`: the prefix of one sync's audit entries.
pub(crate) fn audit_of(sync: u32) -> Vec<u8> {
    prefixed(AUDIT_PREFIX, &sync.to_be_bytes())
}

/// `audit/<sync><id>` in `events`.
pub(crate) fn audit(sync: u32, id: u32) -> Vec<u8> {
    let mut k = audit_of(sync);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// `mail_pending/<id>` in `events`.
pub(crate) fn pending_notification(id: u32) -> Vec<u8> {
    prefixed(PENDING_NOTIFICATION_PREFIX, &id.to_be_bytes())
}

// --- inbound --------------------------------------------------------------

/// Prefix of registered workspaces in `inbound` (`workspace/<id>`).
pub(crate) const WORKSPACE_PREFIX: &[u8] = b"workspace/";
/// Prefix of Personas write keys in `inbound` (`writekey/<name>`).
pub(crate) const WRITE_KEY_PREFIX: &[u8] = b"writekey/";
/// Prefix of received cohorts' state in `inbound` (`cohort/<name>`).
pub(crate) const COHORT_PREFIX: &[u8] = b"cohort/";
/// Prefix of answered idempotency keys in `inbound`
/// (`idem/<workspace>\0<key>`).
pub(crate) const IDEMPOTENCY_PREFIX: &[u8] = b"idem/";

/// Prefix of admin API tokens in `inbound` (`api_token/<id>`).
pub(crate) const API_TOKEN_PREFIX: &[u8] = b"api_token/";

/// Every (family, prefix or fixed key) that shares a family with others.
#[cfg(test)]
pub(crate) const PREFIXES: &[(&str, &[u8])] = &[
    (super::cf::META, SCHEMA_VERSION),
    (super::cf::META, COUNTERS),
    (super::cf::META, IMPORT_MARKER),
    (super::cf::META, ATTR_PREFIX),
    (super::cf::META, NEXT_ID_PREFIX),
    (super::cf::META, INDEXED_PREFIX),
    (super::cf::META, FULL_RESEND_PREFIX),
    (super::cf::META, PLANNED_PREFIX),
    (super::cf::META, PRUNED_BELOW_PREFIX),
    (super::cf::META, HISTORY_HORIZON),
    (super::cf::EVENTS, NOTIFICATION_PREFIX),
    (super::cf::EVENTS, PENDING_NOTIFICATION_PREFIX),
    (super::cf::EVENTS, AUDIT_PREFIX),
    (super::cf::EVENTS, PAGE_OUTCOME_PREFIX),
    (super::cf::INBOUND, WORKSPACE_PREFIX),
    (super::cf::INBOUND, WRITE_KEY_PREFIX),
    (super::cf::INBOUND, COHORT_PREFIX),
    (super::cf::INBOUND, IDEMPOTENCY_PREFIX),
    (super::cf::INBOUND, API_TOKEN_PREFIX),
];

fn prefixed(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + rest.len());
    k.extend_from_slice(prefix);
    k.extend_from_slice(rest);
    k
}

/// `next_id/<kind>` in `meta`.
pub(crate) fn next_id(kind: &str) -> Vec<u8> {
    prefixed(NEXT_ID_PREFIX, kind.as_bytes())
}

/// `indexed/<attr>` in `meta`.
pub(crate) fn indexed(attr: u32) -> Vec<u8> {
    prefixed(INDEXED_PREFIX, &attr.to_be_bytes())
}

/// Prefix of the markers of executions planned ahead of their run
/// (`sync plan`) in `meta` (`planned/<sync>` → the plan's execution seq).
pub(crate) const PLANNED_PREFIX: &[u8] = b"planned/";

/// `planned/<sync>` in `meta`.
pub(crate) fn planned(sync: u32) -> Vec<u8> {
    prefixed(PLANNED_PREFIX, &sync.to_be_bytes())
}

/// `full_resend/<sync>` in `meta`.
pub(crate) fn full_resend(sync: u32) -> Vec<u8> {
    prefixed(FULL_RESEND_PREFIX, &sync.to_be_bytes())
}

/// `notification/<id>` in `events`.
pub(crate) fn notification(id: u32) -> Vec<u8> {
    prefixed(NOTIFICATION_PREFIX, &id.to_be_bytes())
}

/// `workspace/<id>` in `inbound`.
pub(crate) fn workspace(id: &str) -> Vec<u8> {
    prefixed(WORKSPACE_PREFIX, id.as_bytes())
}

/// `writekey/<name>` in `inbound`.
pub(crate) fn write_key(name: &str) -> Vec<u8> {
    prefixed(WRITE_KEY_PREFIX, name.as_bytes())
}

/// `api_token/<id>` in `inbound`.
pub(crate) fn api_token(id: &str) -> Vec<u8> {
    prefixed(API_TOKEN_PREFIX, id.as_bytes())
}

/// `cohort/<name>` in `inbound`.
pub(crate) fn cohort(name: &str) -> Vec<u8> {
    prefixed(COHORT_PREFIX, name.as_bytes())
}

/// `idem/<workspace>\0<key>` in `inbound` (workspace ids contain no NUL).
pub(crate) fn idempotency(workspace: &str, key: &str) -> Vec<u8> {
    let mut k = prefixed(IDEMPOTENCY_PREFIX, workspace.as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

// --- destinations, syncs, executions --------------------------------------

/// A destination, by name, in `destinations`.
pub(crate) fn destination(name: &str) -> Vec<u8> {
    name.as_bytes().to_vec()
}

/// A sync in `syncs`; also the prefix of its executions in `executions`.
pub(crate) fn sync(id: u32) -> [u8; 4] {
    id.to_be_bytes()
}

/// (sync, execution seq) in `executions`.
pub(crate) fn execution(sync: u32, seq: u32) -> [u8; 8] {
    pair(sync, seq)
}

/// (sync, execution seq, bitmap kind code) in `exec_bitmaps`.
pub(crate) fn exec_bitmap(sync: u32, seq: u32, kind: u8) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[..8].copy_from_slice(&pair(sync, seq));
    k[8] = kind;
    k
}

// --- users, attributes, segments ------------------------------------------

/// Built as one integer: two 4-byte stores read back as one 8-byte load
/// stall store forwarding, and an import builds 10M keys a column.
#[inline]
fn pair(a: u32, b: u32) -> [u8; 8] {
    ((u64::from(a) << 32) | u64::from(b)).to_be_bytes()
}

/// (attribute, xxh3-64 of a value, user) in `attr_index`.
pub(crate) fn index_entry(attr: u32, value_hash: u64, user: u32) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..4].copy_from_slice(&attr.to_be_bytes());
    k[4..12].copy_from_slice(&value_hash.to_be_bytes());
    k[12..].copy_from_slice(&user.to_be_bytes());
    k
}

/// Appends `user`'s key part to a prefix being built in a reused buffer
/// (the renderer's ordered seeks).
pub(crate) fn push_user(buf: &mut Vec<u8>, user: u32) {
    buf.extend_from_slice(&user.to_be_bytes());
}

pub(crate) fn attr_name(name: &str) -> Vec<u8> {
    prefixed(ATTR_PREFIX, name.as_bytes())
}

pub(crate) fn attr_user(attr: u32, user: u32) -> [u8; 8] {
    pair(attr, user)
}

/// Real-time writes (one per request) record their changes per bucket of
/// this many write sequences, so the index stays small under a stream of
/// single-user writes; an import records its own write sequence exactly.
pub(crate) const CHANGE_BUCKET: u32 = 1024;

/// Whether an `attr_changes` key names one write (an import) or a bucket of
/// [`CHANGE_BUCKET`] real-time writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeKey {
    /// The write sequence of one import.
    Exact = 0,
    /// The first write sequence of a bucket.
    Bucket = 1,
}

/// (attribute, kind) in `attr_changes`: the prefix of one kind's entries.
pub(crate) fn attr_changes_of(attr: u32, kind: ChangeKey) -> [u8; 5] {
    let mut k = [0u8; 5];
    k[..4].copy_from_slice(&attr.to_be_bytes());
    k[4] = kind as u8;
    k
}

/// (attribute, kind, write seq) in `attr_changes`.
pub(crate) fn attr_change(attr: u32, kind: ChangeKey, seq: u32) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[..5].copy_from_slice(&attr_changes_of(attr, kind));
    k[5..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub(crate) fn attr_user_seq(attr: u32, user: u32, seq: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&attr_user(attr, user));
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The history key of a value key (as read back from the undo log) and a
/// write sequence.
pub(crate) fn history_of(value_key: &[u8], seq: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    let n = value_key.len().min(8);
    k[..n].copy_from_slice(&value_key[..n]);
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub(crate) fn attr(attr: u32) -> [u8; 4] {
    attr.to_be_bytes()
}

pub(crate) fn snapshot(segment: u32, seq: u32) -> [u8; 8] {
    pair(segment, seq)
}

/// (write seq, n) in `undo`.
pub(crate) fn undo(seq: u32, n: u64) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&seq.to_be_bytes());
    k[4..].copy_from_slice(&n.to_be_bytes());
    k
}

pub(crate) fn read_u32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_endian_keys_sort_numerically() {
        let mut keys: Vec<[u8; 8]> = [(2, 1), (1, 300), (1, 2), (0, u32::MAX)]
            .iter()
            .map(|&(a, u)| attr_user(a, u))
            .collect();
        keys.sort();
        let decoded: Vec<(u32, u32)> = keys
            .iter()
            .map(|k| (read_u32(&k[..4]).unwrap(), read_u32(&k[4..]).unwrap()))
            .collect();
        assert_eq!(decoded, vec![(0, u32::MAX), (1, 2), (1, 300), (2, 1)]);
    }

    #[test]
    fn no_prefix_of_a_shared_family_overlaps_another() {
        for (i, (cf_a, a)) in PREFIXES.iter().enumerate() {
            for (cf_b, b) in &PREFIXES[i + 1..] {
                if cf_a == cf_b {
                    assert!(
                        !a.starts_with(b) && !b.starts_with(a),
                        "{cf_a}: {:?} and {:?} overlap",
                        String::from_utf8_lossy(a),
                        String::from_utf8_lossy(b)
                    );
                }
            }
        }
        // The builders use their own prefix.
        assert!(workspace("w").starts_with(WORKSPACE_PREFIX));
        assert!(write_key("k").starts_with(WRITE_KEY_PREFIX));
        assert!(cohort(".c").starts_with(COHORT_PREFIX));
        assert!(idempotency("w", "k").starts_with(IDEMPOTENCY_PREFIX));
        assert!(notification(1).starts_with(NOTIFICATION_PREFIX));
        assert!(next_id("sync").starts_with(NEXT_ID_PREFIX));
        assert!(indexed(1).starts_with(INDEXED_PREFIX));
        assert!(full_resend(1).starts_with(FULL_RESEND_PREFIX));
        assert!(attr_name("uid").starts_with(ATTR_PREFIX));
        assert!(api_token("ab12").starts_with(API_TOKEN_PREFIX));
    }

    #[test]
    fn execution_keys_nest_under_their_sync() {
        assert_eq!(&execution(3, 9)[..4], &sync(3));
        assert_eq!(&exec_bitmap(3, 9, 4)[..8], &execution(3, 9));
    }

    #[test]
    fn history_keys_extend_the_value_key() {
        let k = attr_user_seq(7, 9, 3);
        assert_eq!(&k[..8], &attr_user(7, 9));
        assert_eq!(read_u32(&k[8..]), Some(3));
    }
}

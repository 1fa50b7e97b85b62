//! Key builders. Integers are big-endian so that RocksDB's byte order is the
//! numeric order and prefix scans come out sorted (one attribute's values sit
//! together, which makes resolving a page one ordered batched read).

/// Key of the schema version in `meta`.
pub(crate) const SCHEMA_VERSION: &[u8] = b"schema_version";
/// Key of the counters record in `meta`.
pub(crate) const COUNTERS: &[u8] = b"counters";
/// Key of the marker of an import in progress in `meta`.
pub(crate) const IMPORT_MARKER: &[u8] = b"import_in_progress";
/// Prefix of attribute catalogue entries in `meta` (`attr/<name>` → id).
pub(crate) const ATTR_PREFIX: &[u8] = b"attr/";

pub(crate) fn user(idx: u32) -> [u8; 4] {
    idx.to_be_bytes()
}

pub(crate) fn attr_name(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(ATTR_PREFIX.len() + name.len());
    k.extend_from_slice(ATTR_PREFIX);
    k.extend_from_slice(name.as_bytes());
    k
}

pub(crate) fn attr_user(attr: u32, user: u32) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[..4].copy_from_slice(&attr.to_be_bytes());
    k[4..].copy_from_slice(&user.to_be_bytes());
    k
}

pub(crate) fn attr_user_seq(attr: u32, user: u32, seq: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&attr_user(attr, user));
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub(crate) fn attr(attr: u32) -> [u8; 4] {
    attr.to_be_bytes()
}

pub(crate) fn snapshot(segment: u32, seq: u32) -> [u8; 8] {
    let mut k = [0u8; 8];
    k[..4].copy_from_slice(&segment.to_be_bytes());
    k[4..].copy_from_slice(&seq.to_be_bytes());
    k
}

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
    fn history_keys_extend_the_value_key() {
        let k = attr_user_seq(7, 9, 3);
        assert_eq!(&k[..8], &attr_user(7, 9));
        assert_eq!(read_u32(&k[8..]), Some(3));
    }
}

//! The Cohort Sync body: one action per request,
//!
//! ```json
//! {"action":"add_members","timestamp":"2026-11-23T10:00:00.000Z","partner":"moengage",
//!  "parameters":{"cohort_name":".vip","cohort_id":"segsync-3","cohort_description":"…",
//!                "members":[{"uid":"u-1"},{"uid":"u-2"}]}}
//! ```
//!
//! Everything but the members is rendered once per execution. The timestamp
//! is the time the execution was planned, the same on every page: a page
//! carries part of one point-in-time membership, so its pages may arrive in
//! any order, while every page of a later execution is newer (see the
//! receiver's ordering rule in `inbound/cohort.rs`). The byte size of each
//! member is what the pager needs to keep bodies under the API's 128 KB.

use super::config::{CohortName, CohortSettings};
use crate::store::codec::{write_json_str, ValueRef};

/// Which list a page changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `add_members`.
    Add,
    /// `remove_members`.
    Remove,
}

/// Pre-rendered fragments of one execution's bodies.
#[derive(Debug, Clone)]
pub struct CohortSyncFormat {
    head_add: Vec<u8>,
    head_remove: Vec<u8>,
    /// The cohort name the bodies carry.
    pub cohort_name: String,
}

const MEMBER_OPEN: &[u8] = b"{\"uid\":";

/// Longest uid sent; a longer value is skipped (no page could need it, and
/// one member must never be able to exceed a body on its own).
pub const MAX_UID_BYTES: usize = 1024;
const TAIL: &[u8] = b"]}}";

/// The ISO 8601 form of a Unix-ms time, always 24 bytes (`…T…:…:….mmmZ`).
pub fn timestamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

impl CohortSyncFormat {
    /// Fragments for a sync of `segment` (sync `sync_id`), planned at `planned_ms`.
    pub fn new(settings: &CohortSettings, segment: &str, sync_id: u32, planned_ms: i64) -> Self {
        let name = settings
            .name
            .clone()
            .unwrap_or_else(|| CohortName::derive(segment));
        let id = settings
            .id
            .clone()
            .unwrap_or_else(|| format!("segsync-{sync_id}"));
        let description = settings
            .description
            .clone()
            .unwrap_or_else(|| format!("segsync sync {sync_id} of segment {segment}"));
        let head = |action: &str| {
            let mut h = Vec::with_capacity(256);
            h.extend_from_slice(b"{\"action\":\"");
            h.extend_from_slice(action.as_bytes());
            h.extend_from_slice(b"\",\"timestamp\":\"");
            h.extend_from_slice(timestamp(planned_ms).as_bytes());
            h.extend_from_slice(b"\",\"partner\":");
            write_json_str(settings.partner.as_bytes(), &mut h);
            h.extend_from_slice(b",\"parameters\":{\"cohort_name\":");
            write_json_str(name.as_str().as_bytes(), &mut h);
            h.extend_from_slice(b",\"cohort_id\":");
            write_json_str(id.as_bytes(), &mut h);
            h.extend_from_slice(b",\"cohort_description\":");
            write_json_str(description.as_bytes(), &mut h);
            h.extend_from_slice(b",\"members\":[");
            h
        };
        CohortSyncFormat {
            head_add: head("add_members"),
            head_remove: head("remove_members"),
            cohort_name: name.as_str().to_string(),
        }
    }

    /// Bytes of a body around its members (the larger of the two actions).
    pub fn overhead(&self) -> usize {
        self.head_add.len().max(self.head_remove.len()) + TAIL.len()
    }

    /// The uid text of a value: strings and numbers as written, booleans as
    /// `true`/`false`; `None` for arrays and objects, which cannot be a uid.
    pub fn uid_of<'v>(value: &ValueRef<'v>) -> Option<&'v [u8]> {
        value
            .identity_text()
            .filter(|t| !t.is_empty() && t.len() <= MAX_UID_BYTES)
    }

    /// Appends one member; returns false (writing nothing) when the value
    /// cannot be a uid.
    pub fn member(value: &ValueRef<'_>, out: &mut Vec<u8>) -> bool {
        let Some(uid) = Self::uid_of(value) else {
            return false;
        };
        out.extend_from_slice(MEMBER_OPEN);
        write_json_str(uid, out);
        out.push(b'}');
        true
    }

    /// Writes a body for `members` into `out` (cleared first).
    pub fn render<'a>(
        &self,
        action: Action,
        members: impl IntoIterator<Item = ValueRef<'a>>,
        out: &mut Vec<u8>,
    ) -> u32 {
        out.clear();
        out.extend_from_slice(match action {
            Action::Add => &self.head_add,
            Action::Remove => &self.head_remove,
        });
        let mut n = 0u32;
        for v in members {
            let before = out.len();
            if n > 0 {
                out.push(b',');
            }
            if Self::member(&v, out) {
                n += 1;
            } else {
                out.truncate(before);
            }
        }
        out.extend_from_slice(TAIL);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Value;

    fn settings() -> CohortSettings {
        CohortSettings {
            name: None,
            id: None,
            description: None,
            partner: "moengage".into(),
            max_body: 131_072,
        }
    }

    #[test]
    fn body_has_the_api_shape() {
        let f = CohortSyncFormat::new(&settings(), "vip|gold", 3, 1_795_000_000_123);
        let vals: Vec<Vec<u8>> = [
            Value::Str("u\"1".into()),
            Value::Num("42".into()),
            Value::Json("[1]".into()),
            Value::Str("x".repeat(MAX_UID_BYTES + 1)),
        ]
        .iter()
        .map(|v| {
            let mut b = Vec::new();
            v.encode(1, &mut b);
            b
        })
        .collect();
        let refs: Vec<ValueRef<'_>> = vals.iter().map(|b| ValueRef::decode(b).unwrap()).collect();
        let mut out = Vec::new();
        let n = f.render(Action::Remove, refs.iter().copied(), &mut out);
        assert_eq!(n, 2, "the JSON value and the over-long uid are skipped");
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "action": "remove_members",
                "timestamp": "2026-11-18T11:06:40.123Z",
                "partner": "moengage",
                "parameters": {
                    "cohort_name": ".vip_gold",
                    "cohort_id": "segsync-3",
                    "cohort_description": "segsync sync 3 of segment vip|gold",
                    "members": [{"uid": "u\"1"}, {"uid": "42"}]
                }
            })
        );
        assert!(out.len() <= f.overhead() + 2 * 16);
        assert_eq!(timestamp(0).len(), 24);
    }

    #[test]
    fn cohort_names_follow_the_api_rules() {
        assert!(CohortName::new(".vip").is_ok());
        for bad in [
            "vip", ".", ". ", ".a|b", ".a*", ".a?", ".a\\b", ".a:b", ".a<", ".a>", ".a=b", ".a$",
            ".a\"", ".a\nb",
        ] {
            assert!(CohortName::new(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(CohortName::derive("VIP users").as_str(), ".VIP users");
        assert_eq!(CohortName::derive(".x").as_str(), ".x");
        assert_eq!(CohortName::derive("a:b=c").as_str(), ".a_b_c");
        assert_eq!(CohortName::derive("").as_str(), ".segment");
        let long = "x".repeat(400);
        assert!(CohortName::new(CohortName::derive(&long).as_str()).is_ok());
    }
}

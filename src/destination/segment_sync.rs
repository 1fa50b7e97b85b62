//! The seed's request body (`"type":"segment_sync"`), written straight into
//! a reused buffer. Everything constant for an execution (ids, renamed keys,
//! static key-values) is rendered once into byte fragments, so a user costs
//! a handful of `extend_from_slice` calls and two escaped strings.

use std::io::Write;

use super::config::DISTINCT_ID_KEY;
use super::Destination;
use crate::store::codec::{write_json_str, ValueRef};

/// What the body says about the sync and execution.
#[derive(Debug, Clone)]
pub struct Ids {
    /// `moengage_sync_id`.
    pub sync_id: String,
    /// `moengage_sync_name`.
    pub sync_name: String,
    /// `moengage_execution_id`.
    pub execution_id: String,
    /// `moengage_integration_id`.
    pub integration_id: String,
}

/// Pre-rendered fragments of one execution's bodies.
#[derive(Debug, Clone)]
pub struct SegmentSyncFormat {
    head: Vec<u8>,
    mid: Vec<u8>,
    between: Vec<u8>,
    user_open: Vec<u8>,
    id_key: Vec<u8>,
    user_close: Vec<u8>,
}

fn json_str(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + 2);
    write_json_str(s.as_bytes(), &mut v);
    v
}

impl SegmentSyncFormat {
    /// Fragments for `dest`, syncing `attribute`, with `total_pages` pages.
    pub fn new(dest: &Destination, attribute: &str, ids: &Ids, total_pages: u32) -> Self {
        let mut head = Vec::new();
        head.extend_from_slice(b"{\"type\":\"segment_sync\",\"pagination\":{\"total_pages\":");
        head.extend_from_slice(total_pages.to_string().as_bytes());
        head.extend_from_slice(b",\"page_count\":");
        let mut mid = b"},\"data\":{".to_vec();
        for (k, v) in [
            ("moengage_sync_id", &ids.sync_id),
            ("moengage_sync_name", &ids.sync_name),
            ("moengage_execution_id", &ids.execution_id),
            ("moengage_integration_id", &ids.integration_id),
        ] {
            mid.extend_from_slice(&json_str(k));
            mid.push(b':');
            mid.extend_from_slice(&json_str(v));
            mid.push(b',');
        }
        mid.extend_from_slice(&json_str(&dest.add_key));
        mid.extend_from_slice(b":[");
        let mut between = b"],".to_vec();
        between.extend_from_slice(&json_str(&dest.remove_key));
        between.extend_from_slice(b":[");
        let mut user_open = b"{".to_vec();
        user_open.extend_from_slice(&json_str(DISTINCT_ID_KEY));
        user_open.push(b':');
        let mut id_key = b",".to_vec();
        id_key.extend_from_slice(&json_str(dest.identifier_key_for(attribute)));
        id_key.push(b':');
        let mut user_close = Vec::new();
        for (k, v) in &dest.static_kv {
            user_close.push(b',');
            user_close.extend_from_slice(&json_str(k));
            user_close.push(b':');
            user_close.extend_from_slice(&json_str(v));
        }
        user_close.push(b'}');
        SegmentSyncFormat {
            head,
            mid,
            between,
            user_open,
            id_key,
            user_close,
        }
    }

    fn user(&self, id: &[u8], value: &ValueRef<'_>, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.user_open);
        write_json_str(id, out);
        out.extend_from_slice(&self.id_key);
        value.write_json(out);
        out.extend_from_slice(&self.user_close);
    }

    /// Writes the body of page `page_count` (1-based) into `out`.
    pub fn render<'a>(
        &self,
        page_count: u32,
        adds: impl IntoIterator<Item = (&'a [u8], ValueRef<'a>)>,
        removes: impl IntoIterator<Item = (&'a [u8], ValueRef<'a>)>,
        out: &mut Vec<u8>,
    ) {
        out.clear();
        out.extend_from_slice(&self.head);
        let _ = write!(out, "{page_count}");
        out.extend_from_slice(&self.mid);
        for (i, (id, v)) in adds.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            self.user(id, &v, out);
        }
        out.extend_from_slice(&self.between);
        for (i, (id, v)) in removes.into_iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            self.user(id, &v, out);
        }
        out.extend_from_slice(b"]}}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::config::DestinationConfig;
    use crate::store::Value;

    #[test]
    fn body_has_the_seed_shape_with_renames_and_statics() {
        let cfg = DestinationConfig {
            identifier_key: Some("partner_user_id".into()),
            add_key: Some("adds".into()),
            static_kv: vec![("source".into(), "moe\"ngage".into())],
            ..DestinationConfig::new("crm", "http://127.0.0.1:1/x")
        };
        let dest = cfg.validate(4).unwrap();
        let ids = Ids {
            sync_id: "7".into(),
            sync_name: "vip".into(),
            execution_id: "7-2".into(),
            integration_id: "4-1".into(),
        };
        let f = SegmentSyncFormat::new(&dest, "uid", &ids, 14);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        Value::Str("u\"99".into()).encode(1, &mut a);
        Value::Num("5".into()).encode(1, &mut b);
        let (va, vb) = (ValueRef::decode(&a).unwrap(), ValueRef::decode(&b).unwrap());
        let mut out = Vec::new();
        f.render(12, [(&b"d1"[..], va)], [(&b"d2"[..], vb)], &mut out);
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "type": "segment_sync",
                "pagination": {"total_pages": 14, "page_count": 12},
                "data": {
                    "moengage_sync_id": "7",
                    "moengage_sync_name": "vip",
                    "moengage_execution_id": "7-2",
                    "moengage_integration_id": "4-1",
                    "adds": [{"moengage_distinct_id": "d1", "partner_user_id": "u\"99", "source": "moe\"ngage"}],
                    "remove_users": [{"moengage_distinct_id": "d2", "partner_user_id": 5, "source": "moe\"ngage"}]
                }
            })
        );
        // Buffer reuse: a second render replaces, never appends.
        f.render(1, std::iter::empty(), std::iter::empty(), &mut out);
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["data"]["adds"], serde_json::json!([]));
    }
}

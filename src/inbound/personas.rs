//! Personas ingestion: Segment-spec `identify`, `track` and `batch` calls,
//! authenticated with a write key (Basic auth, the key as user name).
//!
//! Here the store is the source of truth, so an event naming an unknown user
//! creates it: the distinct id is `userId`, or `anonymousId` when there is
//! none, and both are also kept as the `uid` and `anonymous_id` attributes
//! (what a sync sends and what a Cohort Sync receiver resolves) of a user
//! that has none yet; an identifier already set is never overwritten.
//!
//! - identify: every trait becomes an attribute (`null` deletes it); a
//!   boolean trait is a computed trait or audience, so it also sets or
//!   clears the user's membership of the segment of that name, live;
//! - track `Audience Entered` / `Audience Exited` with
//!   `properties.audience_key` does the same for that audience; other track
//!   events are accepted and counted (segsync keeps no event stream);
//! - batch: every event is validated before any is applied, and they apply
//!   in order in one atomic transaction, so a batch is all or nothing.
//!
//! A malformed event is refused with 400 naming the field
//! (`batch[3].traits`), and nothing of its request is applied.

use std::collections::HashMap;

use serde_json::{json, value::RawValue};

use super::{id_text, parse_basic, write_keys, Reply};
use crate::store::{self, AttrChange, Fingerprint, ImportTxn, Store, Value};

/// Largest single identify or track body (Segment's own limit).
pub const MAX_EVENT_BYTES: usize = 32 * 1024;
/// Largest batch body (Segment's own limit).
pub const MAX_BATCH_BYTES: usize = 500 * 1024;
/// Attribute that keeps `userId`.
pub const UID_ATTRIBUTE: &str = "uid";
/// Attribute that keeps `anonymousId`.
pub const ANONYMOUS_ID_ATTRIBUTE: &str = "anonymous_id";
/// Where live changes from Personas come from, in snapshot listings.
const SOURCE: &str = "personas";

/// Which endpoint was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/identify`.
    Identify,
    /// `/v1/track`.
    Track,
    /// `/v1/batch`.
    Batch,
}

/// Finds users by distinct id without loading the fingerprint table: a
/// binary search in the persisted table, plus the users created since.
#[derive(Debug, Default)]
pub struct Users {
    covers: Option<u32>,
    created: HashMap<String, u32>,
}

impl Users {
    fn find(&mut self, store: &Store, id: &str) -> store::Result<Option<u32>> {
        let covers = match self.covers {
            Some(c) => c,
            None => {
                let c = store.refresh_fingerprints()?;
                self.covers = Some(c);
                c
            }
        };
        if let Some(&u) = self.created.get(id) {
            return Ok(Some(u));
        }
        store.find_user_in_table(id, covers)
    }
}

enum Kind {
    Identify {
        traits: Vec<(String, Option<Value>, Option<bool>)>,
    },
    Audience {
        key: String,
        entered: bool,
    },
    Other,
}

struct Event {
    user_id: Option<String>,
    anonymous_id: Option<String>,
    kind: Kind,
}

fn parse_event(raw: &RawValue, at: &str, default_type: Option<&str>) -> Result<Event, String> {
    let whole = if at.is_empty() {
        "body"
    } else {
        at.trim_end_matches('.')
    };
    let obj: HashMap<String, &RawValue> =
        serde_json::from_str(raw.get()).map_err(|e| format!("{whole}: not a JSON object: {e}"))?;
    let field = |k: &str| -> Option<serde_json::Value> {
        obj.get(k).and_then(|r| serde_json::from_str(r.get()).ok())
    };
    let kind_name = match (field("type"), default_type) {
        (Some(serde_json::Value::String(t)), _) => t,
        (None, Some(d)) => d.to_string(),
        _ => return Err(format!("{at}type: missing (identify or track)")),
    };
    if let Some(d) = default_type {
        if kind_name != d {
            return Err(format!("{at}type: {kind_name:?} sent to the {d} endpoint"));
        }
    }
    let user_id = field("userId").as_ref().and_then(id_text);
    let anonymous_id = field("anonymousId").as_ref().and_then(id_text);
    if user_id.is_none() && anonymous_id.is_none() {
        return Err(format!(
            "{at}userId: userId or anonymousId is required (a non-empty string)"
        ));
    }
    let kind = match kind_name.as_str() {
        "identify" => {
            let mut traits = Vec::new();
            if let Some(t) = obj.get("traits") {
                let map: std::collections::BTreeMap<String, &RawValue> =
                    serde_json::from_str(t.get())
                        .map_err(|_| format!("{at}traits: must be an object"))?;
                for (k, v) in map {
                    if k.trim().is_empty() {
                        return Err(format!("{at}traits: empty trait name"));
                    }
                    let value = Value::from_raw(v).map_err(|e| format!("{at}traits.{k}: {e}"))?;
                    let flag = match &value {
                        Some(Value::Bool(b)) => Some(*b),
                        _ => None,
                    };
                    traits.push((k, value, flag));
                }
            }
            Kind::Identify { traits }
        }
        "track" => {
            let event = match field("event") {
                Some(serde_json::Value::String(e)) if !e.trim().is_empty() => e,
                _ => return Err(format!("{at}event: required (a non-empty string)")),
            };
            let props = field("properties");
            if props.as_ref().is_some_and(|p| !p.is_object()) {
                return Err(format!("{at}properties: must be an object"));
            }
            match event.as_str() {
                "Audience Entered" | "Audience Exited" => {
                    let key = props
                        .as_ref()
                        .and_then(|p| p.get("audience_key"))
                        .and_then(|k| k.as_str())
                        .filter(|k| !k.trim().is_empty())
                        .ok_or_else(|| {
                            format!("{at}properties.audience_key: required for {event:?}")
                        })?;
                    Kind::Audience {
                        key: key.to_string(),
                        entered: event == "Audience Entered",
                    }
                }
                _ => Kind::Other,
            }
        }
        other => {
            return Err(format!(
                "{at}type: {other:?} is not supported (identify or track)"
            ))
        }
    };
    Ok(Event {
        user_id,
        anonymous_id,
        kind,
    })
}

fn parse(endpoint: Endpoint, body: &[u8]) -> Result<Vec<Event>, String> {
    let raw: &RawValue =
        serde_json::from_slice(body).map_err(|e| format!("body: invalid JSON: {e}"))?;
    match endpoint {
        Endpoint::Identify => Ok(vec![parse_event(raw, "", Some("identify"))?]),
        Endpoint::Track => Ok(vec![parse_event(raw, "", Some("track"))?]),
        Endpoint::Batch => {
            let obj: HashMap<String, &RawValue> = serde_json::from_str(raw.get())
                .map_err(|e| format!("body: not a JSON object: {e}"))?;
            let list = obj.get("batch").ok_or("batch: missing")?;
            let items: Vec<&RawValue> =
                serde_json::from_str(list.get()).map_err(|_| "batch: must be an array")?;
            if items.is_empty() {
                return Err("batch: empty".into());
            }
            items
                .iter()
                .enumerate()
                .map(|(i, r)| parse_event(r, &format!("batch[{i}]."), None))
                .collect()
        }
    }
}

/// Summary of what a request applied.
#[derive(Debug, Default)]
struct Applied {
    users_created: u64,
    attributes: u64,
    segments: Vec<String>,
    ignored: u64,
}

fn apply(store: &Store, users: &mut Users, events: &[Event]) -> store::Result<Applied> {
    let mut txn: ImportTxn<'_> = store.begin_small()?;
    let mut applied = Applied::default();
    let mut created: Vec<(String, u32)> = Vec::new();
    let mut changes: Vec<AttrChange> = Vec::new();
    let (uid_attr, anon_attr) = (txn.attr(UID_ATTRIBUTE), txn.attr(ANONYMOUS_ID_ATTRIBUTE));
    for e in events {
        let Some(id) = e.user_id.as_deref().or(e.anonymous_id.as_deref()) else {
            continue;
        };
        let user = match created.iter().find(|(c, _)| c == id) {
            Some((_, u)) => *u,
            None => match users.find(store, id)? {
                Some(u) => u,
                None => {
                    let u = txn.new_user(id.as_bytes(), Fingerprint::of(id.as_bytes()))?;
                    created.push((id.to_string(), u));
                    u
                }
            },
        };
        // Identifiers are filled in, never overwritten: an imported uid that
        // differs from the distinct id stays (a trait named uid may change it).
        for (attr, v) in [(uid_attr, &e.user_id), (anon_attr, &e.anonymous_id)] {
            if let Some(v) = v {
                let staged = changes.iter().any(|c| c.attr == attr && c.user == user);
                if !staged && !txn.has_value(attr, user)? {
                    changes.push(AttrChange {
                        attr,
                        user,
                        value: Some(Value::Str(v.clone())),
                    });
                }
            }
        }
        match &e.kind {
            Kind::Identify { traits } => {
                for (name, value, flag) in traits {
                    let attr = txn.attr(name);
                    changes.push(AttrChange {
                        attr,
                        user,
                        value: value.clone(),
                    });
                    if let Some(member) = flag {
                        txn.change_live(name, SOURCE, &[user], *member);
                        if !applied.segments.contains(name) {
                            applied.segments.push(name.clone());
                        }
                    }
                }
            }
            Kind::Audience { key, entered } => {
                txn.change_live(key, SOURCE, &[user], *entered);
                if !applied.segments.contains(key) {
                    applied.segments.push(key.clone());
                }
            }
            Kind::Other => applied.ignored += 1,
        }
    }
    applied.attributes = changes.len() as u64;
    txn.set_attrs(&mut changes)?;
    txn.commit(None)?;
    applied.users_created = created.len() as u64;
    users.created.extend(created);
    Ok(applied)
}

/// Handles one call to `endpoint`.
pub fn handle(
    store: &Store,
    users: &mut Users,
    endpoint: Endpoint,
    authorization: Option<&str>,
    body: &[u8],
) -> Reply {
    let internal = |e: &dyn std::fmt::Display| {
        tracing::error!(error = %e, "personas ingestion failed");
        Reply::error(500, "internal error (see the server log)")
    };
    let Some((user, password)) = parse_basic(authorization) else {
        return Reply::error(
            401,
            "Basic auth with a write key (as the user name) is required",
        );
    };
    match write_keys(store) {
        Ok(keys)
            if keys.iter().any(|k| {
                k.key.matches(&user) || (!password.is_empty() && k.key.matches(&password))
            }) => {}
        Ok(_) => return Reply::error(401, "unknown write key"),
        Err(e) => return internal(&e),
    }
    let max = match endpoint {
        Endpoint::Batch => MAX_BATCH_BYTES,
        _ => MAX_EVENT_BYTES,
    };
    if body.len() > max {
        return Reply::error(
            413,
            format!(
                "body is {} bytes; at most {max} are accepted here",
                body.len()
            ),
        );
    }
    let events = match parse(endpoint, body) {
        Ok(e) => e,
        Err(m) => return Reply::error(400, m),
    };
    match apply(store, users, &events) {
        Ok(a) => {
            crate::metrics::events_received(events.len() as u64);
            Reply::ok(json!({
                "success": true,
                "events": events.len(),
                "users_created": a.users_created,
                "attributes_written": a.attributes,
                "segments_changed": a.segments,
                "events_ignored": a.ignored,
            }))
        }
        Err(e) => internal(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(endpoint: Endpoint, body: &str) -> String {
        match parse(endpoint, body.as_bytes()) {
            Ok(_) => panic!("accepted {body}"),
            Err(e) => e,
        }
    }

    #[test]
    fn malformed_events_name_the_field() {
        assert!(err(Endpoint::Identify, r#"{"traits":{}}"#).starts_with("userId:"));
        assert!(err(Endpoint::Identify, r#"{"userId":"u","traits":[1]}"#).starts_with("traits:"));
        assert!(err(Endpoint::Track, r#"{"userId":"u"}"#).starts_with("event:"));
        assert!(err(
            Endpoint::Track,
            r#"{"userId":"u","event":"Audience Entered","properties":{}}"#
        )
        .starts_with("properties.audience_key:"));
        assert!(err(Endpoint::Track, r#"{"type":"identify","userId":"u"}"#).starts_with("type:"));
        let e = err(
            Endpoint::Batch,
            r#"{"batch":[{"type":"identify","userId":"a"},{"type":"alias","userId":"b"}]}"#,
        );
        assert!(e.starts_with("batch[1].type:"), "{e}");
        assert!(err(Endpoint::Batch, r#"{"batch":[]}"#).starts_with("batch:"));
        assert!(err(Endpoint::Batch, "{").starts_with("body:"));
        assert!(err(Endpoint::Batch, r#"{"batch":[1]}"#).starts_with("batch[0]: not a JSON object"));
        assert!(err(Endpoint::Identify, "[1]").starts_with("body: not a JSON object"));
    }

    #[test]
    fn boolean_traits_are_audience_flags() {
        let ev = parse(
            Endpoint::Identify,
            br#"{"userId":"u1","anonymousId":"a1","traits":{"high_value":true,"plan":"pro","gone":null}}"#,
        )
        .unwrap();
        let Kind::Identify { traits } = &ev[0].kind else {
            panic!("not identify")
        };
        let flags: Vec<_> = traits.iter().map(|(k, _, f)| (k.as_str(), *f)).collect();
        assert_eq!(
            flags,
            vec![("gone", None), ("high_value", Some(true)), ("plan", None)]
        );
        assert_eq!(ev[0].user_id.as_deref(), Some("u1"));
        assert_eq!(ev[0].anonymous_id.as_deref(), Some("a1"));
    }
}

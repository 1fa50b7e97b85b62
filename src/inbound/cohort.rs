//! The Cohort Sync receiver: `POST /v1/integrations/cohortsync` makes this
//! data dir the destination workspace of another app's segment sync.
//!
//! Checks, in order, each with its status: Basic auth against a registered
//! workspace (401); `MOE-APPKEY` equal to that workspace and
//! `MOE-DESTINATION-PARTNER` present (400); body ≤ 128 KB (413); at most
//! 300 requests a minute per workspace (429 with `Retry-After`); a valid
//! action, timestamp and cohort name, and every member with a uid or an
//! anonymous id (400, naming the field).
//!
//! Members resolve against existing users only: by uid first, then by
//! anonymous id (through the identity index); unknown users are counted,
//! never created. The cohort becomes a custom segment named by
//! `cohort_name`, created on first use, whose live snapshot each request
//! amends, so a received cohort can itself be synced onward.
//!
//! Ordering: per cohort, a request whose timestamp is older than the last
//! one applied is refused with 409; equal timestamps are applied (segsync
//! stamps every page of one execution with the execution's plan time, and
//! those pages may arrive in any order). A repeated `Idempotency-Key` of the
//! same workspace is answered with the first answer and not applied again
//! (keys are remembered for a week by default, then pruned by `serve`).
//! The checks after authentication, the membership change, the cohort's
//! ordering state and the idempotency record commit in one atomic batch.

use std::time::Instant;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{id_text, parse_basic, workspace, Reply, WindowLimiter, Workspace};
use crate::config::ReceiverLimits;
use crate::destination::cohort_sync::{CohortName, APPKEY_HEADER};
use crate::store::{self, cf, codec, keys, Store};

/// An answered request, kept under its `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Answered {
    at_ms: i64,
    answer: String,
}

/// Forgets idempotency keys answered before `before_ms`; returns how many.
pub fn prune_idempotency(store: &Store, before_ms: i64) -> store::Result<u64> {
    let mut stale = Vec::new();
    for (key, rec) in store.scan_keyed_records::<Answered>(
        cf::INBOUND,
        keys::IDEMPOTENCY_PREFIX,
        "idempotency record",
    )? {
        if rec.at_ms < before_ms {
            stale.push(store::Write::Delete(cf::INBOUND, key));
        }
    }
    let n = stale.len() as u64;
    if n > 0 {
        store.write_records(stale, false)?;
    }
    Ok(n)
}

/// The parts of an HTTP request the receiver reads.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    /// `Authorization`.
    pub authorization: Option<&'a str>,
    /// `MOE-APPKEY`.
    pub appkey: Option<&'a str>,
    /// `MOE-DESTINATION-PARTNER`.
    pub partner: Option<&'a str>,
    /// `Idempotency-Key`.
    pub idempotency_key: Option<&'a str>,
    /// The body.
    pub body: &'a [u8],
}

/// A received cohort's state, kept per cohort name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CohortState {
    /// Cohort (and segment) name.
    pub name: String,
    /// Workspace that last sent it.
    pub workspace: String,
    /// `cohort_id` last received.
    pub cohort_id: String,
    /// `partner` last received.
    pub partner: String,
    /// Timestamp of the newest request applied, Unix ms.
    pub last_timestamp_ms: i64,
    /// Requests applied.
    pub requests: u64,
    /// First request, Unix ms.
    pub created_ms: i64,
    /// Last request, Unix ms.
    pub updated_ms: i64,
}

/// Every received cohort, by name.
pub fn cohorts(store: &Store) -> store::Result<Vec<CohortState>> {
    store.scan_records(cf::INBOUND, keys::COHORT_PREFIX, "cohort state")
}

#[derive(Debug, Deserialize)]
struct Body {
    action: Option<String>,
    timestamp: Option<String>,
    partner: Option<serde_json::Value>,
    parameters: Option<Parameters>,
}

#[derive(Debug, Deserialize)]
struct Parameters {
    cohort_name: Option<String>,
    cohort_id: Option<serde_json::Value>,
    #[serde(default)]
    #[allow(dead_code)]
    cohort_description: Option<serde_json::Value>,
    members: Option<Vec<serde_json::Value>>,
}

/// One member as sent: uid and anonymous id texts.
struct Member {
    uid: Option<String>,
    anonymous_id: Option<String>,
}

/// A request that passed validation.
struct Valid {
    add: bool,
    timestamp_ms: i64,
    cohort: CohortName,
    cohort_id: String,
    partner: String,
    members: Vec<Member>,
}

/// ISO 8601: RFC 3339, or without an offset (read as UTC).
fn parse_timestamp(s: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    None
}

fn validate(body: &[u8]) -> Result<Valid, Reply> {
    let bad = |m: String| Reply::error(400, m);
    let b: Body = serde_json::from_slice(body)
        .map_err(|e| bad(format!("body is not a Cohort Sync request: {e}")))?;
    let add = match b.action.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("add_members") => true,
        Some("remove_members") => false,
        Some(other) => {
            return Err(bad(format!(
                "action: {other:?} is not add_members or remove_members"
            )))
        }
        None => return Err(bad("action: missing (add_members or remove_members)".into())),
    };
    let ts = b.timestamp.as_deref().ok_or_else(|| {
        bad("timestamp: missing (ISO 8601, used to apply requests in order)".into())
    })?;
    let timestamp_ms = parse_timestamp(ts)
        .ok_or_else(|| bad(format!("timestamp: {ts:?} is not an ISO 8601 date-time")))?;
    let partner = b
        .partner
        .as_ref()
        .and_then(id_text)
        .ok_or_else(|| bad("partner: missing or empty".into()))?;
    let p = b
        .parameters
        .ok_or_else(|| bad("parameters: missing".into()))?;
    let name = p
        .cohort_name
        .ok_or_else(|| bad("parameters.cohort_name: missing".into()))?;
    let cohort = CohortName::new(&name).map_err(|r| bad(format!("parameters.{r}")))?;
    let cohort_id = p.cohort_id.as_ref().and_then(id_text).unwrap_or_default();
    let raw = p
        .members
        .ok_or_else(|| bad("parameters.members: missing".into()))?;
    if raw.is_empty() {
        return Err(bad("parameters.members: empty".into()));
    }
    let mut members = Vec::with_capacity(raw.len());
    for (i, m) in raw.iter().enumerate() {
        let field = |k: &str| m.get(k).and_then(id_text);
        let member = Member {
            uid: field("uid"),
            anonymous_id: field("anonymous_id"),
        };
        if !m.is_object() || (member.uid.is_none() && member.anonymous_id.is_none()) {
            return Err(bad(format!(
                "parameters.members[{i}]: needs a non-empty uid or anonymous_id"
            )));
        }
        members.push(member);
    }
    Ok(Valid {
        add,
        timestamp_ms,
        cohort,
        cohort_id,
        partner,
        members,
    })
}

/// Users resolved from a request's members.
struct Resolved {
    users: Vec<u32>,
    by_uid: u64,
    by_anonymous_id: u64,
    unresolved: Vec<usize>,
}

/// Picks one identifier of a member.
type IdField = fn(&Member) -> Option<&str>;

fn resolve(store: &Store, ws: &Workspace, members: &[Member]) -> store::Result<Resolved> {
    let uid_attr = store.ensure_index(&ws.uid_attribute)?;
    let anon_attr = store.ensure_index(&ws.anonymous_id_attribute)?;
    let mut by_member: Vec<Vec<u32>> = vec![Vec::new(); members.len()];
    let mut r = Resolved {
        users: Vec::with_capacity(members.len()),
        by_uid: 0,
        by_anonymous_id: 0,
        unresolved: Vec::new(),
    };
    // uid first, for every member that has one; then anonymous ids for the
    // members still unresolved.
    let passes: [(Option<u32>, IdField); 2] = [
        (uid_attr, |m| m.uid.as_deref()),
        (anon_attr, |m| m.anonymous_id.as_deref()),
    ];
    for (pass, (attr, field)) in passes.into_iter().enumerate() {
        let Some(attr) = attr else { continue };
        let (idx, texts): (Vec<usize>, Vec<&[u8]>) = members
            .iter()
            .enumerate()
            .filter(|(i, _)| by_member[*i].is_empty())
            .filter_map(|(i, m)| field(m).map(|t| (i, t.as_bytes())))
            .unzip();
        for (j, user) in store.users_with_values(attr, &texts)? {
            let i = idx[j as usize];
            if by_member[i].is_empty() {
                if pass == 0 {
                    r.by_uid += 1;
                } else {
                    r.by_anonymous_id += 1;
                }
            }
            by_member[i].push(user);
        }
    }
    for (i, users) in by_member.iter().enumerate() {
        if users.is_empty() {
            r.unresolved.push(i);
        }
        r.users.extend_from_slice(users);
    }
    Ok(r)
}

/// Handles one request. `now` drives the rate window.
pub fn handle(
    store: &Store,
    limiter: &WindowLimiter,
    limits: ReceiverLimits,
    req: &Request<'_>,
    now: Instant,
) -> Reply {
    match handle_inner(store, limiter, limits, req, now) {
        Ok(r) | Err(r) => r,
    }
}

fn handle_inner(
    store: &Store,
    limiter: &WindowLimiter,
    limits: ReceiverLimits,
    req: &Request<'_>,
    now: Instant,
) -> Result<Reply, Reply> {
    let internal = |e: store::Error| {
        tracing::error!(error = %e, "cohort sync receiver failed");
        Reply::error(500, "internal error (see the server log)")
    };
    let unauthorized = || {
        Reply::error(
            401,
            "Basic auth with a registered workspace id and its data API key is required",
        )
    };
    let (user, password) = parse_basic(req.authorization).ok_or_else(unauthorized)?;
    let ws = workspace(store, &user)
        .map_err(|e| match e {
            super::Error::Store(e) => internal(e),
            _ => unauthorized(),
        })?
        .filter(|w| w.key.matches(&password))
        .ok_or_else(unauthorized)?;
    match req.appkey {
        Some(k) if k == ws.id => {}
        Some(k) => {
            return Err(Reply::error(
                400,
                format!(
                    "header {APPKEY_HEADER}: {k:?} is not the authenticated workspace {:?}",
                    ws.id
                ),
            ))
        }
        None => {
            return Err(Reply::error(
                400,
                format!("header {APPKEY_HEADER}: missing (the destination workspace id)"),
            ))
        }
    }
    if req.partner.is_none_or(|p| p.trim().is_empty()) {
        return Err(Reply::error(
            400,
            "header MOE-DESTINATION-PARTNER: missing (e.g. moengage)",
        ));
    }
    if req.body.len() > limits.max_body {
        return Err(Reply::error(
            413,
            format!(
                "body is {} bytes; at most {} are accepted",
                req.body.len(),
                limits.max_body
            ),
        ));
    }
    if let Err(wait) = limiter.admit(&ws.id, now) {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        let mut r = Reply::error(
            429,
            format!(
                "workspace {} is over {} requests per minute; retry in {secs} s",
                ws.id, limits.rpm
            ),
        );
        r.retry_after = Some(secs);
        return Err(r);
    }
    let v = validate(req.body)?;

    // Resolution reads only; it runs before the writer lock is taken (and
    // may build the identity index, which takes that lock itself).
    let resolved = resolve(store, &ws, &v.members).map_err(internal)?;

    let name = v.cohort.as_str();
    let mut txn = store.begin_small().map_err(internal)?;
    if let Some(key) = req.idempotency_key {
        if let Some(done) = store
            .get_record::<Answered>(
                cf::INBOUND,
                &keys::idempotency(&ws.id, key),
                "idempotency record",
            )
            .map_err(internal)?
        {
            let mut first: serde_json::Value =
                serde_json::from_str(&done.answer).unwrap_or_else(|_| json!({}));
            first["duplicate"] = json!(true);
            return Ok(Reply::ok(first));
        }
    }
    let state: Option<CohortState> = store
        .get_record(cf::INBOUND, &keys::cohort(name), "cohort state")
        .map_err(internal)?;
    let now_ms = Utc::now().timestamp_millis();
    match &state {
        Some(s) if v.timestamp_ms < s.last_timestamp_ms => {
            return Err(Reply::error(
                409,
                format!(
                    "cohort {name:?}: request timestamp {} is older than the last applied ({}); requests of a cohort are applied in timestamp order",
                    crate::destination::cohort_sync::timestamp(v.timestamp_ms),
                    crate::destination::cohort_sync::timestamp(s.last_timestamp_ms)
                ),
            ))
        }
        None if store.segment(name).map_err(internal)?.is_some() => {
            return Err(Reply::error(
                409,
                format!("cohort {name:?}: a segment of that name exists and was not created by Cohort Sync; use another cohort_name"),
            ))
        }
        _ => {}
    }
    txn.change_live(
        name,
        &format!("cohortsync:{}", ws.id),
        &resolved.users,
        v.add,
    );
    let state = CohortState {
        name: name.to_string(),
        workspace: ws.id.clone(),
        cohort_id: v.cohort_id.clone(),
        partner: v.partner.clone(),
        last_timestamp_ms: v
            .timestamp_ms
            .max(state.as_ref().map_or(i64::MIN, |s| s.last_timestamp_ms)),
        requests: state.as_ref().map_or(0, |s| s.requests) + 1,
        created_ms: state.as_ref().map_or(now_ms, |s| s.created_ms),
        updated_ms: now_ms,
    };
    let unresolved_examples: Vec<serde_json::Value> = resolved
        .unresolved
        .iter()
        .take(10)
        .map(|&i| {
            let m = &v.members[i];
            json!({ "index": i, "uid": m.uid, "anonymous_id": m.anonymous_id })
        })
        .collect();
    let answer = json!({
        "status": "applied",
        "duplicate": false,
        "action": if v.add { "add_members" } else { "remove_members" },
        "cohort_name": name,
        "cohort_id": v.cohort_id,
        "members": v.members.len(),
        "resolved": v.members.len() - resolved.unresolved.len(),
        "resolved_by_uid": resolved.by_uid,
        "resolved_by_anonymous_id": resolved.by_anonymous_id,
        "unresolved": resolved.unresolved.len(),
        "unresolved_examples": unresolved_examples,
        "users": resolved.users.len(),
    });
    let inbound = store.cf(cf::INBOUND);
    let batch = txn.commit_batch();
    batch.put_cf(inbound, keys::cohort(name), codec::encode_record(&state));
    if let Some(key) = req.idempotency_key {
        batch.put_cf(
            inbound,
            keys::idempotency(&ws.id, key),
            codec::encode_record(&Answered {
                at_ms: now_ms,
                answer: answer.to_string(),
            }),
        );
    }
    txn.commit(None).map_err(internal)?;
    crate::metrics::cohort_request(v.add, resolved.unresolved.len() as u64);
    Ok(Reply::ok(answer))
}

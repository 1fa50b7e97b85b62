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
use std::sync::Arc;

use serde_json::value::RawValue;

use super::{id_text, parse_basic, write_keys, Reply, WriteKey};
use crate::store::{self, AttrChange, Fingerprint, ImportTxn, ReadAhead, Store, Value};

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

/// Finds users by distinct id without loading the fingerprint table: the
/// persisted table opened for lookups (a few KB of fences in memory, one
/// read per lookup), plus the users created since.
#[derive(Debug, Default)]
pub struct Users {
    table: Option<Arc<store::TableReader>>,
    /// Users created since the refresh in flight started (or since the
    /// table was read).
    created: CreatedIds,
    /// Users created before the refresh in flight started, all of which
    /// the refreshed table covers: dropped whole, off the commit thread,
    /// when it is taken over. Sifting one map instead (a `retain` over a
    /// million ids) stalled every call for 150–450 ms on the 10M store.
    older: CreatedIds,
    /// One past the last user created in memory (0: none).
    created_end: u32,
    /// `created_end` when `older` was set aside.
    older_end: u32,
    /// Where the committer publishes its table for the parsing threads.
    shared: Option<Shared>,
    /// The store, for bringing the table file up to date on a thread of
    /// its own (without it, the commit thread does it and every call waits).
    owner: Option<Arc<Store>>,
    /// The table being brought up to date off the commit thread.
    refreshing: Option<crossbeam::channel::Receiver<store::Result<store::TableReader>>>,
    /// Users created in memory past which the table is refreshed
    /// (`MAX_CREATED_IN_MEMORY` unless a test sets it).
    max_created: Option<usize>,
    /// Refreshed tables taken over without a stall.
    adopted: u64,
    /// Times the table was dropped, to be read again by the commit thread
    /// (a stall).
    resets: u64,
    /// Which users have an identifier (`uid`, `anonymous_id`): every event
    /// of a known user asks, and filled in only where missing.
    presence: store::PresenceCache,
    /// What this committer's own transactions wrote lately, to tell which
    /// values the parsing threads read ahead are still current.
    recent: store::RecentWrites,
}

type Shared = Arc<std::sync::RwLock<Option<Arc<store::TableReader>>>>;

/// Users created in memory: distinct id → user, with the ids laid end to
/// end instead of a `String` each. A million ids then take a third less
/// memory and go back to the system in a few frees: dropping a million
/// `String`s from another thread still held up the commit thread's own
/// allocations for 70–220 ms.
#[derive(Debug, Default)]
struct CreatedIds {
    /// Fingerprint of the id → its entry.
    index: HashMap<Fingerprint, u32>,
    users: Vec<u32>,
    /// Where each entry's id ends in `bytes`.
    ends: Vec<u32>,
    bytes: Vec<u8>,
    /// Ids whose fingerprint an earlier id here has (never seen: 80 bits).
    spill: HashMap<Vec<u8>, u32>,
}

impl CreatedIds {
    fn get(&self, id: &str) -> Option<u32> {
        let id = id.as_bytes();
        if let Some(&n) = self.index.get(&Fingerprint::of(id)) {
            let n = n as usize;
            let start = n.checked_sub(1).map_or(0, |p| self.ends[p] as usize);
            if &self.bytes[start..self.ends[n] as usize] == id {
                return Some(self.users[n]);
            }
        }
        if self.spill.is_empty() {
            return None;
        }
        self.spill.get(id).copied()
    }

    /// Adds `id` (not here yet) as `user`.
    fn insert(&mut self, id: &[u8], user: u32) {
        match self.index.entry(Fingerprint::of(id)) {
            std::collections::hash_map::Entry::Occupied(_) => {
                self.spill.insert(id.to_vec(), user);
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(self.users.len() as u32);
                self.users.push(user);
                self.bytes.extend_from_slice(id);
                self.ends.push(self.bytes.len() as u32);
            }
        }
    }

    /// Adds every id of `other`.
    fn append(&mut self, other: CreatedIds) {
        let mut start = 0;
        for (&user, &end) in other.users.iter().zip(&other.ends) {
            self.insert(&other.bytes[start..end as usize], user);
            start = end as usize;
        }
        for (id, user) in other.spill {
            self.insert(&id, user);
        }
    }

    fn reserve(&mut self, n: usize) {
        self.index.reserve(n);
    }

    fn len(&self) -> usize {
        self.users.len() + self.spill.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Users {
    /// `id`'s user; the table is not searched when the parsing thread
    /// already found `id` absent from all the users it covers.
    fn find(&mut self, store: &Store, id: &str, absent_below: u32) -> store::Result<Option<u32>> {
        if let Some(u) = self.created.get(id).or_else(|| self.older.get(id)) {
            return Ok(Some(u));
        }
        let table = match &self.table {
            Some(t) => t.clone(),
            None => self.load(store)?,
        };
        if absent_below >= table.covers() {
            return Ok(None);
        }
        store.find_user_with(&table, id)
    }

    /// Gives the parsing threads `table` to look ids up in (`None`: none).
    fn publish(&self, table: Option<Arc<store::TableReader>>) {
        if let Some(shared) = &self.shared {
            *shared
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = table;
        }
    }

    /// Forgets the table and the users created since (read again on next
    /// use); the parsing threads stop using the old table at once.
    fn reset(&mut self) {
        self.publish(None);
        self.table = None;
        self.created = CreatedIds::default();
        self.older = CreatedIds::default();
        self.created_end = 0;
        self.older_end = 0;
        // A refresh started before would bring back an older table.
        self.refreshing = None;
        self.resets += 1;
    }

    /// Reads the table, the commit thread waiting: the load started with
    /// the committer when there is one (so a server's first calls do not
    /// wait for a whole table's read), else a read of its own.
    fn load(&mut self, store: &Store) -> store::Result<Arc<store::TableReader>> {
        if let Some(rx) = self.refreshing.take() {
            self.older = CreatedIds::default();
            match rx.recv() {
                Ok(Ok(t)) => {
                    let t = Arc::new(t);
                    self.publish(Some(t.clone()));
                    return Ok(self.table.insert(t).clone());
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "reading the fingerprint table in the background failed; reading it again");
                }
                Err(_) => {}
            }
        }
        let t = Arc::new(store.fingerprint_reader()?);
        self.publish(Some(t.clone()));
        Ok(self.table.insert(t).clone())
    }

    /// Starts reading the table on a thread of its own, for the first
    /// call to take over (see `load`).
    fn preload(&mut self) {
        if self.table.is_none() && self.refreshing.is_none() {
            self.start_refresh();
        }
    }

    /// Records users this group created (committed).
    fn remember(&mut self, created: HashMap<String, u32>) {
        if created.is_empty() {
            return;
        }
        if self.created.is_empty() {
            // Room for a whole generation up front: growing a map of a
            // million ids rehashes all of them, 90–190 ms of the commit
            // thread at 0.46M and 0.92M.
            let max = self.max_created.unwrap_or(MAX_CREATED_IN_MEMORY);
            self.created.reserve(max + max / 8);
        }
        for (id, user) in created {
            self.created_end = self.created_end.max(user + 1);
            self.created.insert(id.as_bytes(), user);
        }
    }

    /// Keeps what this knows consistent with the store's `count` users and
    /// its memory bounded. Past the users it may keep in memory, a thread
    /// brings the table file up to date and reopens it while calls go on
    /// (at 10M users that took the commit thread about 1 s, a stall for
    /// every call, every million users); the next group takes it over.
    fn maintain(&mut self, count: u32) {
        self.adopt_refreshed();
        // Another writer (an import through the API) may have added users
        // since the table was last read: what this knows must cover them.
        if self.known().is_some_and(|k| k != count as usize) {
            self.reset();
            return;
        }
        let max = self.max_created.unwrap_or(MAX_CREATED_IN_MEMORY);
        // Long ids count too: at most 64 bytes an id on average.
        let max_bytes = max.saturating_mul(64);
        if self.created.len() <= max && self.created.bytes.len() <= max_bytes {
            return;
        }
        if self.refreshing.is_none() {
            if self.start_refresh() {
                // Every user in memory is committed: the refreshed table
                // will cover them all.
                self.older = std::mem::take(&mut self.created);
                self.older_end = self.created_end;
            } else {
                self.reset();
            }
        } else if self.created.len() + self.older.len() > 2 * max
            || self.created.bytes.len() + self.older.bytes.len() > 2 * max_bytes
        {
            // A refresh that does not end: stop growing.
            self.reset();
        }
    }

    fn start_refresh(&mut self) -> bool {
        let Some(store) = self.owner.clone() else {
            return false;
        };
        let (tx, rx) = crossbeam::channel::bounded(1);
        let spawned = std::thread::Builder::new()
            .name("personas-table".into())
            .spawn(move || {
                let _ = tx.send(store.fingerprint_reader());
            });
        match spawned {
            Ok(_) => {
                self.refreshing = Some(rx);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a thread to refresh the fingerprint table");
                false
            }
        }
    }

    /// Takes over a refreshed table, if one is ready: the users it covers
    /// leave the in-memory map.
    fn adopt_refreshed(&mut self) {
        let Some(rx) = &self.refreshing else {
            return;
        };
        let table = match rx.try_recv() {
            Err(crossbeam::channel::TryRecvError::Empty) => return,
            Err(crossbeam::channel::TryRecvError::Disconnected) => None,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "refreshing the fingerprint table failed; calls go on with the users kept in memory");
                None
            }
            Ok(Ok(t)) => Some(t),
        };
        self.refreshing = None;
        let table = table.filter(|t| {
            let covers = t.covers();
            self.table.as_ref().is_none_or(|old| old.covers() <= covers) && self.older_end <= covers
        });
        let Some(table) = table else {
            // Not taken over: the older users stay in memory.
            let older = std::mem::take(&mut self.older);
            self.created.append(older);
            return;
        };
        let covers = table.covers();
        let table = Arc::new(table);
        self.publish(Some(table.clone()));
        let old = self.table.replace(table);
        let older = std::mem::take(&mut self.older);
        // The old table's file was replaced: its last close frees a file of
        // hundreds of MB, 50–65 ms at 16M users. Parsing threads may hold
        // it a moment longer, so this thread waits until its reference is
        // the last one and closes it then.
        let freed = std::thread::Builder::new()
            .name("personas-free".into())
            .spawn(move || {
                drop(older);
                if let Some(mut old) = old {
                    loop {
                        match Arc::try_unwrap(old) {
                            Ok(reader) => break drop(reader),
                            Err(still) => old = still,
                        }
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                }
            });
        if let Err(e) = freed {
            tracing::debug!(error = %e, "no thread to free the old table on");
        }
        self.adopted += 1;
        tracing::debug!(
            covers,
            kept = self.created.len(),
            "fingerprint table refreshed off the commit thread"
        );
    }

    /// Users this knows of, when it has looked at the table: those it
    /// covers and those created in memory since (users created while a
    /// refresh ran may be in both).
    fn known(&self) -> Option<usize> {
        self.table
            .as_ref()
            .map(|t| (t.covers() as usize).max(self.created_end as usize))
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
    /// The user, when the parsing thread found it committed already.
    user: Option<u32>,
    /// The parsing thread found no such user among the first this many.
    absent_below: u32,
}

impl Event {
    /// The distinct id: `userId`, else `anonymousId`.
    fn distinct_id(&self) -> Option<&str> {
        self.user_id.as_deref().or(self.anonymous_id.as_deref())
    }
}

/// The fields of an event that segsync reads, borrowed from the body (no
/// map of every key, no copy): the rest of the event is ignored. A field
/// sent as `null` is present (`Some("null")`), as it was when events were
/// read through a map, so `"traits": null` is still refused.
#[derive(serde::Deserialize)]
struct Fields<'a> {
    #[serde(rename = "type", default, borrow, deserialize_with = "present")]
    kind: Option<&'a RawValue>,
    #[serde(rename = "userId", default, borrow, deserialize_with = "present")]
    user_id: Option<&'a RawValue>,
    #[serde(rename = "anonymousId", default, borrow, deserialize_with = "present")]
    anonymous_id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    traits: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    event: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    properties: Option<&'a RawValue>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue as serde::Deserialize>::deserialize(d).map(Some)
}

fn parse_event(raw: &RawValue, at: &str, default_type: Option<&str>) -> Result<Event, String> {
    let whole = if at.is_empty() {
        "body"
    } else {
        at.trim_end_matches('.')
    };
    // A derived struct would also take a JSON array, its fields in order.
    if !raw.get().trim_start().starts_with('{') {
        return Err(format!("{whole}: not a JSON object"));
    }
    // Valid JSON already: what can fail here is a field sent twice.
    let obj: Fields<'_> = serde_json::from_str(raw.get()).map_err(|e| format!("{whole}: {e}"))?;
    let value = |r: Option<&RawValue>| -> Option<serde_json::Value> {
        r.and_then(|r| serde_json::from_str(r.get()).ok())
    };
    let kind_name = match (obj.kind, default_type) {
        (Some(t), _) => match serde_json::from_str::<String>(t.get()) {
            Ok(t) => t,
            Err(_) => return Err(format!("{at}type: missing (identify or track)")),
        },
        (None, Some(d)) => d.to_string(),
        (None, None) => return Err(format!("{at}type: missing (identify or track)")),
    };
    if let Some(d) = default_type {
        if kind_name != d {
            return Err(format!("{at}type: {kind_name:?} sent to the {d} endpoint"));
        }
    }
    let user_id = value(obj.user_id).as_ref().and_then(id_text);
    let anonymous_id = value(obj.anonymous_id).as_ref().and_then(id_text);
    if user_id.is_none() && anonymous_id.is_none() {
        return Err(format!(
            "{at}userId: userId or anonymousId is required (a non-empty string)"
        ));
    }
    let kind = match kind_name.as_str() {
        "identify" => {
            let mut traits = Vec::new();
            if let Some(t) = obj.traits {
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
            let event = match value(obj.event) {
                Some(serde_json::Value::String(e)) if !e.trim().is_empty() => e,
                _ => return Err(format!("{at}event: required (a non-empty string)")),
            };
            let props = value(obj.properties);
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
        user: None,
        absent_below: 0,
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

/// Summary of what one request applied.
#[derive(Debug, Default)]
struct Applied {
    users_created: u64,
    attributes: u64,
    segments: Vec<String>,
    ignored: u64,
}

impl Applied {
    fn answer(self, events: usize) -> Answer {
        Answer::Applied(Summary {
            success: true,
            events,
            users_created: self.users_created,
            attributes_written: self.attributes,
            segments_changed: self.segments,
            events_ignored: self.ignored,
        })
    }
}

/// The body of a 200 answer: what the call applied. Serialized as it is
/// by whoever answers the call, never built as a `serde_json::Value` on
/// the commit thread, which every call waits for (the `Value`, its map and
/// its keys were 2.75 % of the server's samples under single calls).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Summary {
    /// Always true.
    pub success: bool,
    /// Events in the call.
    pub events: usize,
    /// Users the call created.
    pub users_created: u64,
    /// Attribute values written.
    pub attributes_written: u64,
    /// Segments whose membership the call changed.
    pub segments_changed: Vec<String>,
    /// Events of a kind that changes nothing here.
    pub events_ignored: u64,
}

/// What a call gets back: what it applied, or any other reply (a refusal,
/// an error).
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// 200, with what was applied.
    Applied(Summary),
    /// Anything else.
    Reply(Reply),
}

impl Answer {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Answer::Applied(_) => 200,
            Answer::Reply(r) => r.status,
        }
    }

    /// As a [`Reply`] with a JSON body.
    pub fn into_reply(self) -> Reply {
        match self {
            // Serializing these plain fields cannot fail; were it to, the
            // caller is told, not handed a body short of its fields.
            Answer::Applied(s) => serde_json::to_value(s).map_or_else(
                |e| Reply::error(500, format!("internal error: {e}")),
                Reply::ok,
            ),
            Answer::Reply(r) => r,
        }
    }
}

impl From<Reply> for Answer {
    fn from(r: Reply) -> Answer {
        Answer::Reply(r)
    }
}

/// Applies every request of a group in one transaction, in arrival order,
/// and tells what each applied. A later request sees what an earlier one of
/// the same group did (users it created, identifiers it set), exactly as if
/// each had committed alone. Values move out of the events (they are spent).
fn apply(
    store: &Store,
    users: &mut Users,
    group: &mut [&mut [Event]],
    read_ahead: Vec<ReadAhead>,
) -> store::Result<Vec<Applied>> {
    let mut txn: ImportTxn<'_> = store.begin_small()?;
    users.maintain(txn.store().counters().user_count);
    if !read_ahead.is_empty() {
        let (mut read, mut taken) = (0, 0);
        for ahead in read_ahead {
            read += ahead.len();
            taken += txn.offer(ahead, &users.recent);
        }
        crate::metrics::personas_read_ahead(read as u64, taken as u64);
    }
    let mut out = Vec::with_capacity(group.len());
    let mut created: HashMap<String, u32> = HashMap::new();
    let mut changes: Vec<AttrChange> = Vec::new();
    // Identifiers this group set (filled in, or by a trait of that name):
    // a later event of the group must not fill them in again.
    let mut filled: std::collections::HashSet<(u32, u32)> = std::collections::HashSet::new();
    let (uid_attr, anon_attr) = (txn.attr(UID_ATTRIBUTE), txn.attr(ANONYMOUS_ID_ATTRIBUTE));
    // Whether the users have their identifiers yet, from memory: a point
    // read each was most of the commit thread's reads on a large store.
    txn.borrow_presence(&mut users.presence, &[uid_attr, anon_attr])?;
    for events in group.iter_mut() {
        let mut applied = Applied::default();
        let changes_before = changes.len();
        for e in events.iter_mut() {
            let Some(id) = e.distinct_id() else {
                continue;
            };
            let user = match created.get(id).copied().or(e.user) {
                Some(u) => u,
                None => match users.find(store, id, e.absent_below)? {
                    Some(u) => u,
                    None => {
                        let u = txn.new_user(id.as_bytes())?;
                        created.insert(id.to_string(), u);
                        applied.users_created += 1;
                        u
                    }
                },
            };
            // Identifiers are filled in, never overwritten: an imported uid that
            // differs from the distinct id stays (a trait named uid may change it).
            for (attr, v) in [(uid_attr, &mut e.user_id), (anon_attr, &mut e.anonymous_id)] {
                if v.is_some() && !filled.contains(&(attr, user)) && !txn.has_value(attr, user)? {
                    filled.insert((attr, user));
                    changes.push(AttrChange {
                        attr,
                        user,
                        value: v.take().map(Value::Str),
                    });
                }
            }
            match &mut e.kind {
                Kind::Identify { traits } => {
                    for (name, value, flag) in traits.iter_mut() {
                        let attr = txn.attr(name);
                        if attr == uid_attr || attr == anon_attr {
                            // A trait named for an identifier sets it; a
                            // later event must not fill it in over that.
                            filled.insert((attr, user));
                        }
                        changes.push(AttrChange {
                            attr,
                            user,
                            value: value.take(),
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
        applied.attributes = (changes.len() - changes_before) as u64;
        out.push(applied);
    }
    txn.set_attrs(&changes)?;
    let ends = txn.ends_at();
    txn.commit_keeping(&mut users.presence)?;
    users
        .recent
        .record(ends, changes.iter().map(|c| (c.attr, c.user)));
    users.remember(created);
    Ok(out)
}

/// Users created by Personas kept in memory before the fingerprint table is
/// brought up to date instead (a refresh costs a pass over the new users).
const MAX_CREATED_IN_MEMORY: usize = 1_000_000;

/// How many requests, and events, one commit takes at most.
#[derive(Debug, Clone, Copy)]
pub struct GroupLimits {
    /// Requests per group.
    pub requests: usize,
    /// Events per group (a group takes at least one request whatever its size).
    pub events: usize,
}

impl Default for GroupLimits {
    fn default() -> Self {
        GroupLimits {
            requests: 4096,
            events: 100_000,
        }
    }
}

/// The write keys as last read, with the store's `inbound` version they
/// reflect. Read for every call, they were 8 % of a server's samples under
/// single identify calls (an iterator and a decode per call); a key added
/// or removed is seen by the next call, since that bumps the version.
#[derive(Default)]
struct KeyCache(std::sync::RwLock<Option<(u64, Arc<Vec<WriteKey>>)>>);

impl KeyCache {
    fn get(&self, store: &Store) -> Result<Arc<Vec<WriteKey>>, super::Error> {
        // Read before the records: a write in between only makes the next
        // call read them again.
        let version = store.inbound_version();
        if let Some((at, keys)) = &*self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            if *at == version {
                return Ok(keys.clone());
            }
        }
        let keys = Arc::new(write_keys(store)?);
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((version, keys.clone()));
        Ok(keys)
    }
}

type Done = Box<dyn FnOnce(Answer) + Send>;

enum Msg {
    Apply {
        events: Vec<Event>,
        /// Old values of the events' known users, read on the caller's thread.
        ahead: Option<ReadAhead>,
        done: Done,
    },
    Stop,
}

/// Group commit: requests are checked and parsed on the caller's thread,
/// then one writer thread applies whatever has queued up meanwhile in one
/// transaction with one synced write, and only then answers each of them.
/// Under load the fsync is shared by every request that arrived while the
/// previous one ran; alone, a request commits at once (nothing waits for a
/// timer).
pub struct Committer {
    tx: crossbeam::channel::Sender<Msg>,
    /// The committer's fingerprint table, for resolving ids while parsing.
    table: Shared,
    keys: KeyCache,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Committer {
    /// Starts the writer thread.
    pub fn start(store: Arc<Store>, limits: GroupLimits) -> std::io::Result<Committer> {
        let (tx, rx) = crossbeam::channel::bounded::<Msg>(limits.requests.max(1) * 4);
        let table = Shared::default();
        let mut users = Users {
            shared: Some(table.clone()),
            owner: Some(store.clone()),
            ..Users::default()
        };
        // With a write key there will be calls: the table is read now, so
        // the first of them does not wait for it (a second at 10M users).
        if super::write_keys(&store).is_ok_and(|k| !k.is_empty()) {
            users.preload();
        }
        let thread = std::thread::Builder::new()
            .name("personas-commit".into())
            .spawn(move || commit_loop(&store, &rx, limits, users))?;
        Ok(Committer {
            tx,
            table,
            keys: KeyCache::default(),
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    /// Handles one call to `endpoint`: a bad request is answered at once,
    /// a good one once its events are durable. `done` runs exactly once.
    pub fn submit(
        &self,
        store: &Store,
        endpoint: Endpoint,
        authorization: Option<&str>,
        body: &[u8],
        done: impl FnOnce(Answer) + Send + 'static,
    ) {
        let keys = self.keys.get(store);
        let mut events = match check(keys, endpoint, authorization, body) {
            Ok(e) => e,
            Err(r) => return done(r.into()),
        };
        let ahead = self.resolve(store, &mut events);
        let msg = Msg::Apply {
            events,
            ahead,
            done: Box::new(done),
        };
        if let Err(crossbeam::channel::SendError(Msg::Apply { done, .. })) = self.tx.send(msg) {
            done(Reply::error(503, "the server is shutting down").into());
        }
    }

    /// Looks the events' users up in the committer's table here, on the
    /// caller's thread (the lookups then run on every core, not on the one
    /// writer thread). Only committed users are found, and those never
    /// change index; an id not found is looked up again by the committer
    /// unless its table is the one searched here.
    ///
    /// For a batch, the values its events will replace are read here too
    /// (see `store/read_ahead.rs`): on a large store those reads were half
    /// the commit thread's time. Not for a single call: on two cores its
    /// HTTP side, not the commit thread, is the limit, and a commit thread
    /// spared the reads only commits smaller groups — twice the WAL syncs
    /// and 6–16 % fewer calls a second under `wrk -c32` (three runs each on
    /// a 10M-user store), though without HTTP it doubled the calls the
    /// commit path takes (`benches/personas.rs`). Measured again once the
    /// identifiers' presence came from memory: reading ahead for single
    /// calls gave 16.5K calls/s against 16.6K over ten pairs (parity, 8
    /// calls a WAL sync instead of 13), so it stays off.
    fn resolve(&self, store: &Store, events: &mut [Event]) -> Option<ReadAhead> {
        let table = self
            .table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let table = table?;
        let read_ahead = events.len() >= READ_AHEAD_MIN_EVENTS;
        resolve(store, &table, events, read_ahead)
    }

    /// Answers what is queued, then stops the writer thread.
    pub fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn commit_loop(
    store: &Store,
    rx: &crossbeam::channel::Receiver<Msg>,
    limits: GroupLimits,
    mut users: Users,
) {
    let mut group: Vec<(Vec<Event>, Done)> = Vec::new();
    let mut read_ahead: Vec<ReadAhead> = Vec::new();
    let mut stopping = false;
    while !stopping {
        match rx.recv() {
            Ok(Msg::Apply {
                events,
                ahead,
                done,
            }) => {
                group.push((events, done));
                read_ahead.extend(ahead);
            }
            Ok(Msg::Stop) | Err(_) => break,
        }
        let mut n_events = group[0].0.len();
        while group.len() < limits.requests && n_events < limits.events {
            match rx.try_recv() {
                Ok(Msg::Apply {
                    events,
                    ahead,
                    done,
                }) => {
                    n_events += events.len();
                    group.push((events, done));
                    read_ahead.extend(ahead);
                }
                Ok(Msg::Stop) => {
                    stopping = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let mut lists: Vec<&mut [Event]> =
            group.iter_mut().map(|(e, _)| e.as_mut_slice()).collect();
        let replies = apply_and_answer(
            store,
            &mut users,
            &mut lists,
            std::mem::take(&mut read_ahead),
        );
        drop(lists);
        crate::metrics::personas_group(group.len() as u64);
        for ((_, done), reply) in group.drain(..).zip(replies) {
            done(reply);
        }
    }
}

/// Events a call must carry for its old values to be read ahead.
const READ_AHEAD_MIN_EVENTS: usize = 2;

/// Looks `events`' users up in `table`, and with `read_ahead` reads the
/// values their events will replace (see [`Committer::resolve`]).
fn resolve(
    store: &Store,
    table: &store::TableReader,
    events: &mut [Event],
    read_ahead: bool,
) -> Option<ReadAhead> {
    let mut pairs: Vec<(u32, u32)> = Vec::new();
    for e in events {
        let Some(id) = e.distinct_id() else {
            continue;
        };
        match store.find_user_with(table, id) {
            Ok(Some(u)) => e.user = Some(u),
            Ok(None) => e.absent_below = table.covers(),
            // The committer looks again, and reports what fails.
            Err(_) => {}
        }
        let Some(user) = e.user.filter(|_| read_ahead) else {
            continue;
        };
        // Whether the user has its identifiers the commit knows from
        // memory (`Users::presence`); only traits need their old values.
        if let Kind::Identify { traits } = &e.kind {
            // A trait no import has named yet has no values to read.
            pairs.extend(
                traits
                    .iter()
                    .filter_map(|(name, _, _)| store.attr_id(name).map(|a| (a, user))),
            );
        }
    }
    if pairs.is_empty() {
        return None;
    }
    // A failed read only leaves the reads to the committer.
    store.read_ahead(&mut pairs).ok()
}

/// Applies a group and answers each of its requests, in order: what each
/// applied, or 500 for all when the transaction failed (then nothing of it
/// is stored, and what `users` learnt inside it is void).
fn apply_and_answer(
    store: &Store,
    users: &mut Users,
    group: &mut [&mut [Event]],
    read_ahead: Vec<ReadAhead>,
) -> Vec<Answer> {
    match apply(store, users, group, read_ahead) {
        Ok(applied) => {
            let events: usize = group.iter().map(|e| e.len()).sum();
            crate::metrics::events_received(events as u64);
            group
                .iter()
                .zip(applied)
                .map(|(e, a)| a.answer(e.len()))
                .collect()
        }
        Err(e) => {
            tracing::error!(error = %e, requests = group.len(), "personas ingestion failed");
            users.reset();
            group
                .iter()
                .map(|_| Reply::error(500, "internal error (see the server log)").into())
                .collect()
        }
    }
}

/// Handles one call alone, on this thread: what the committer does for a
/// group of one (for fuzzing and embedding without a writer thread).
pub fn handle(
    store: &Store,
    users: &mut Users,
    endpoint: Endpoint,
    authorization: Option<&str>,
    body: &[u8],
) -> Reply {
    let keys = write_keys(store).map(Arc::new);
    let mut events = match check(keys, endpoint, authorization, body) {
        Ok(e) => e,
        Err(r) => return r,
    };
    apply_and_answer(store, users, &mut [&mut events], Vec::new())
        .pop()
        .map_or_else(
            || Reply::error(500, "internal error (see the server log)"),
            Answer::into_reply,
        )
}

/// Authenticates, bounds and parses one call; a refusal is the reply.
fn check(
    keys: Result<Arc<Vec<WriteKey>>, super::Error>,
    endpoint: Endpoint,
    authorization: Option<&str>,
    body: &[u8],
) -> Result<Vec<Event>, Reply> {
    let Some((user, password)) = parse_basic(authorization) else {
        return Err(Reply::error(
            401,
            "Basic auth with a write key (as the user name) is required",
        ));
    };
    match keys {
        Ok(keys)
            if keys.iter().any(|k| {
                k.key.matches(&user) || (!password.is_empty() && k.key.matches(&password))
            }) => {}
        Ok(_) => return Err(Reply::error(401, "unknown write key")),
        Err(e) => {
            tracing::error!(error = %e, "reading write keys failed");
            return Err(Reply::error(500, "internal error (see the server log)"));
        }
    }
    let max = match endpoint {
        Endpoint::Batch => MAX_BATCH_BYTES,
        _ => MAX_EVENT_BYTES,
    };
    if body.len() > max {
        return Err(Reply::error(
            413,
            format!(
                "body is {} bytes; at most {max} are accepted here",
                body.len()
            ),
        ));
    }
    parse(endpoint, body).map_err(|m| Reply::error(400, m))
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

    /// A batch of identify calls for users `u{i}`, each setting trait `n`.
    fn identify_batch(ids: &mut dyn Iterator<Item = u32>) -> Vec<Event> {
        let events: Vec<String> = ids
            .map(|i| format!(r#"{{"type":"identify","userId":"u{i}","traits":{{"n":{i}}}}}"#))
            .collect();
        parse(
            Endpoint::Batch,
            format!(r#"{{"batch":[{}]}}"#, events.join(",")).as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn the_table_is_refreshed_off_the_commit_thread_and_nobody_created_twice() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let mut users = Users {
            owner: Some(store.clone()),
            max_created: Some(40),
            ..Users::default()
        };
        let identify = |ids: &mut dyn Iterator<Item = u32>| identify_batch(ids);
        for round in 0..30u32 {
            // 20 new users, and 5 of the earlier ones again.
            let earlier = (0..5).map(|k| (round * 7 + k) % (round * 20).max(1));
            let mut events = identify(&mut (round * 20..round * 20 + 20).chain(earlier));
            apply(&store, &mut users, &mut [&mut events], Vec::new()).unwrap();
            if users.refreshing.is_some() {
                // Calls go on while the table is refreshed...
                let mut again = identify(&mut (0..3).map(|k| round * 20 + k));
                apply(&store, &mut users, &mut [&mut again], Vec::new()).unwrap();
                // ...and a later group takes the refreshed table over.
                let t = std::time::Instant::now();
                while users.refreshing.as_ref().is_some_and(|r| r.is_empty())
                    && t.elapsed() < std::time::Duration::from_secs(10)
                {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
        }
        assert_eq!(store.counters().user_count, 600, "a user was created twice");
        assert!(
            users.adopted >= 2,
            "refreshed tables taken over: {}",
            users.adopted
        );
        assert_eq!(
            users.resets, 0,
            "the commit thread re-read the table itself"
        );
        assert!(
            users.created.len() + users.older.len() <= 80,
            "kept {} + {} in memory",
            users.created.len(),
            users.older.len()
        );
        if users.refreshing.is_none() {
            assert!(users.older.is_empty(), "a taken-over generation was kept");
        }
        for i in (0..600).step_by(37) {
            let idx = store.user_index(&format!("u{i}")).unwrap().unwrap();
            assert_eq!(
                store.attr_value(store.attr_id("n").unwrap(), idx).unwrap(),
                Some(Value::Num(i.to_string()))
            );
        }
        assert!(store.check().unwrap().violations.is_empty());
    }

    #[test]
    fn created_ids_are_verified_and_colliding_fingerprints_spill() {
        let mut c = CreatedIds::default();
        c.insert(b"alice", 10);
        c.insert(b"bob", 11);
        assert_eq!(
            (c.get("alice"), c.get("bob"), c.get("carol")),
            (Some(10), Some(11), None)
        );
        // "carol" made to share alice's fingerprint: a match of the
        // fingerprint alone is not alice...
        c.index.insert(Fingerprint::of(b"carol"), 0);
        assert_eq!(c.get("carol"), None);
        // ...and carol, added, is kept whole.
        c.insert(b"carol", 12);
        assert_eq!((c.get("alice"), c.get("carol")), (Some(10), Some(12)));
        assert_eq!(c.len(), 3);
        let mut d = CreatedIds::default();
        d.insert(b"dave", 13);
        d.append(c);
        for (id, user) in [("alice", 10), ("bob", 11), ("carol", 12), ("dave", 13)] {
            assert_eq!(d.get(id), Some(user), "{id}");
        }
        assert_eq!(d.len(), 4);
    }

    #[test]
    fn a_write_key_added_or_removed_is_seen_by_the_next_call() {
        use base64::Engine;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let committer = Committer::start(store.clone(), GroupLimits::default()).unwrap();
        let call = |key: &str| -> u16 {
            let auth = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
            );
            let (tx, rx) = std::sync::mpsc::channel();
            let body = br#"{"userId":"u-1","traits":{"plan":"pro"}}"#;
            committer.submit(&store, Endpoint::Identify, Some(&auth), body, move |a| {
                let _ = tx.send(a.status());
            });
            rx.recv().unwrap()
        };
        assert_eq!(call("write-key-one"), 401);
        super::super::add_write_key(&store, "one", "write-key-one").unwrap();
        assert_eq!(call("write-key-one"), 200);
        assert_eq!(call("write-key-two"), 401);
        super::super::add_write_key(&store, "two", "write-key-two").unwrap();
        assert_eq!(call("write-key-two"), 200);
        super::super::remove_write_key(&store, "one").unwrap();
        assert_eq!(call("write-key-one"), 401, "a removed key still writes");
        assert_eq!(call("write-key-two"), 200);
    }

    #[test]
    fn the_first_call_takes_over_the_table_read_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let batch = |mut ids: std::ops::Range<u32>| identify_batch(&mut ids);
        let mut first = Users::default();
        apply(&store, &mut first, &mut [&mut batch(0..50)], Vec::new()).unwrap();
        // A restarted server: the table is read on a thread of its own.
        let mut users = Users {
            owner: Some(store.clone()),
            ..Users::default()
        };
        users.preload();
        assert!(users.refreshing.is_some(), "no read started");
        apply(&store, &mut users, &mut [&mut batch(40..60)], Vec::new()).unwrap();
        assert_eq!(
            store.counters().user_count,
            60,
            "a known user was created again"
        );
        assert!(users.refreshing.is_none(), "the read was left running");
        assert_eq!(users.table.as_ref().map(|t| t.covers()), Some(50));
        assert_eq!(users.created.len(), 10);
        assert_eq!(users.resets, 0);
        // What it knows matches the store: the next call keeps it.
        apply(&store, &mut users, &mut [&mut batch(55..65)], Vec::new()).unwrap();
        assert_eq!(store.counters().user_count, 65);
        assert_eq!(users.resets, 0, "the table was dropped and read again");
        assert_eq!(users.known(), Some(65));
    }

    /// A store where one call identified users `u0..u{n}` (each with
    /// trait `n`), and the committer's state after it.
    fn after_first_call(n: u32) -> (tempfile::TempDir, Store, Users) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut users = Users::default();
        let mut events = identify_batch(&mut (0..n));
        apply(&store, &mut users, &mut [&mut events], Vec::new()).unwrap();
        (dir, store, users)
    }

    #[test]
    fn a_value_read_ahead_that_a_later_commit_replaced_is_read_again() {
        let (_dir, store, mut users) = after_first_call(10);
        let table = users.load(&store).unwrap();
        let n = store.attr_id("n").unwrap();
        let call = |v: u32| {
            parse(
                Endpoint::Identify,
                format!(r#"{{"userId":"u1","traits":{{"n":{v}}}}}"#).as_bytes(),
            )
            .unwrap()
        };

        // Parsed (and its old value, 1, read) before a call setting 2
        // commits; it sets 1 again.
        let mut stale = call(1);
        let ahead = resolve(&store, &table, &mut stale, true).expect("u1 is known");
        assert_eq!(ahead.len(), 1, "n of u1 (its uid the commit knows)");
        let twin = resolve(&store, &table, &mut identify_batch(&mut (1..3)), true).unwrap();
        apply(&store, &mut users, &mut [&mut call(2)], Vec::new()).unwrap();
        apply(&store, &mut users, &mut [&mut stale], vec![ahead]).unwrap();
        // Taken as current, the 1 read ahead would make this call a no-op.
        assert_eq!(
            store.attr_value(n, 1).unwrap(),
            Some(Value::Num("1".into()))
        );

        // Values read at that moment: of u1's and u2's n, only u2's
        // (which neither commit wrote) is still current.
        let mut txn = store.begin_small().unwrap();
        assert_eq!(txn.offer(twin, &users.recent), 1);
        drop(txn);
    }

    #[test]
    fn identifiers_are_filled_in_where_another_writer_left_none() {
        let (_dir, store, mut users) = after_first_call(5);
        assert!(users.presence.is_loaded());
        let uid = store.attr_id(UID_ATTRIBUTE).unwrap();
        let idx = |i: u32| store.user_index(&format!("u{i}")).unwrap().unwrap();
        let uid_of = |i: u32| store.attr_value(uid, idx(i)).unwrap();
        assert_eq!(uid_of(3), Some(Value::Str("u3".into())));
        // An import between two calls gives u2 a uid of its own and takes
        // u3's away.
        let mut import = store.begin_import().unwrap();
        import
            .set_attrs(&[
                store::AttrChange {
                    attr: uid,
                    user: idx(2),
                    value: Some(Value::Str("imported-2".into())),
                },
                store::AttrChange {
                    attr: uid,
                    user: idx(3),
                    value: None,
                },
            ])
            .unwrap();
        import.commit(None).unwrap();
        apply(
            &store,
            &mut users,
            &mut [&mut identify_batch(&mut (2..4))],
            Vec::new(),
        )
        .unwrap();
        // Filled in where missing (what the commit knew before the import
        // said u3 had one), never overwritten.
        assert_eq!(uid_of(3), Some(Value::Str("u3".into())));
        assert_eq!(uid_of(2), Some(Value::Str("imported-2".into())));
        assert_eq!(
            users.presence.get(uid),
            Some(&store.attr_present(uid).unwrap())
        );
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
        assert!(
            err(Endpoint::Identify, r#"["identify","u"]"#).starts_with("body: not a JSON object")
        );
        // A field sent as null is there, not missing.
        assert!(err(Endpoint::Identify, r#"{"userId":"u","traits":null}"#).starts_with("traits:"));
        assert!(err(
            Endpoint::Track,
            r#"{"userId":"u","event":"x","properties":null}"#
        )
        .starts_with("properties:"));
        assert!(err(Endpoint::Identify, r#"{"type":null,"userId":"u"}"#).starts_with("type:"));
        let e = err(Endpoint::Identify, r#"{"userId":"u","userId":"v"}"#);
        assert!(e.starts_with("body: duplicate field `userId`"), "{e}");
        // Fields segsync does not read are ignored, whatever they hold.
        let ev = parse(
            Endpoint::Identify,
            br#"{"userId":7,"context":{"ip":[1,2]},"timestamp":null,"traits":{"a":1}}"#,
        )
        .unwrap();
        assert_eq!(ev[0].user_id.as_deref(), Some("7"));
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

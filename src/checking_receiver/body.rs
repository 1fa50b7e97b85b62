//! The checking receiver's request bodies, read in one pass and borrowed
//! from their bytes: the seed's `segment_sync` pages and Cohort Sync
//! actions, each checked against its format with an error naming what is
//! wrong. A 10000-user page parses without a `serde_json::Value` tree and
//! without an allocation per user (three a user, and two passes over the
//! lists, made the receiver — not the sender — the bottleneck of a
//! 10M-user run).

use std::borrow::Cow;

use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::ReceiverOptions;

/// What one pass over a `segment_sync` body finds.
#[derive(Default)]
struct Found<'a> {
    kind: Option<Cow<'a, str>>,
    pagination: Option<Pagination>,
    /// [`META`] in order: `None` when missing, `Some(None)` when present
    /// but not a string.
    meta: [Option<Option<Cow<'a, str>>>; 4],
    /// The add and remove lists, when present.
    lists: [Option<Vec<Member<'a>>>; 2],
}

/// The sync's identity, every page carries it in `data`.
const META: [&str; 4] = [
    "moengage_sync_id",
    "moengage_sync_name",
    "moengage_execution_id",
    "moengage_integration_id",
];

/// The body's top level: `type`, `pagination`, `data`; anything else is
/// skipped.
struct BodySeed<'o> {
    opts: &'o ReceiverOptions,
}

impl<'de> serde::de::DeserializeSeed<'de> for BodySeed<'_> {
    type Value = Found<'de>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Found<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for BodySeed<'_> {
    type Value = Found<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a segment_sync body")
    }
    fn visit_map<M: serde::de::MapAccess<'de>>(self, mut m: M) -> Result<Found<'de>, M::Error> {
        let mut found = Found::default();
        while let Some(Str(k)) = m.next_key::<Str<'de>>()? {
            match k.as_ref() {
                "type" => found.kind = Some(m.next_value::<Str<'de>>()?.0),
                "pagination" => found.pagination = Some(m.next_value()?),
                "data" => m.next_value_seed(DataSeed {
                    opts: self.opts,
                    found: &mut found,
                })?,
                _ => {
                    m.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }
}

/// The `data` object: the sync's identity and the two user lists, read
/// straight into `found`.
struct DataSeed<'o, 'a> {
    opts: &'o ReceiverOptions,
    found: &'o mut Found<'a>,
}

impl<'de: 'a, 'a> serde::de::DeserializeSeed<'de> for DataSeed<'_, 'a> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de: 'a, 'a> serde::de::Visitor<'de> for DataSeed<'_, 'a> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the data object")
    }
    fn visit_map<M: serde::de::MapAccess<'de>>(self, mut m: M) -> Result<(), M::Error> {
        use serde::de::Error;
        while let Some(Str(k)) = m.next_key::<Str<'de>>()? {
            let list = [&self.opts.add_key, &self.opts.remove_key]
                .iter()
                .position(|l| k == l.as_str());
            if let Some(i) = list {
                if self.found.lists[i].is_some() {
                    return Err(M::Error::custom(format!("data.{k} appears twice")));
                }
                let mut out = Vec::new();
                m.next_value_seed(UserList {
                    list: &k,
                    id_field: "moengage_distinct_id",
                    id_key: Some(&self.opts.id_key),
                    out: &mut out,
                })?;
                self.found.lists[i] = Some(out);
            } else if let Some(i) = META.iter().position(|n| k == *n) {
                self.found.meta[i] = Some(m.next_value::<MaybeStr<'de>>()?.0);
            } else {
                m.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct Pagination {
    total_pages: u64,
    page_count: u64,
}

/// A JSON string, borrowed from the body unless it has escapes (serde's
/// own `Cow<str>` always allocates).
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Any JSON value, kept when it is a string (borrowed unless escaped).
struct MaybeStr<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for MaybeStr<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = MaybeStr<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<MaybeStr<'de>, E> {
                Ok(MaybeStr(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<MaybeStr<'de>, E> {
                Ok(MaybeStr(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_bool<E>(self, _: bool) -> Result<MaybeStr<'de>, E> {
                Ok(MaybeStr(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<MaybeStr<'de>, E> {
                Ok(MaybeStr(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<MaybeStr<'de>, E> {
                Ok(MaybeStr(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<MaybeStr<'de>, E> {
                Ok(MaybeStr(None))
            }
            fn visit_unit<E>(self) -> Result<MaybeStr<'de>, E> {
                Ok(MaybeStr(None))
            }
            fn visit_seq<S: serde::de::SeqAccess<'de>>(
                self,
                mut s: S,
            ) -> Result<MaybeStr<'de>, S::Error> {
                while s.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(MaybeStr(None))
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut m: M,
            ) -> Result<MaybeStr<'de>, M::Error> {
                while m
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(MaybeStr(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// One user of a list as the receiver keeps it: distinct id and the raw
/// JSON of its identifier value.
pub(super) type Member<'a> = (Cow<'a, str>, &'a str);

/// Reads a list of user objects straight into `out`, checking that each
/// has a string `id_field` and (when given) a non-null `id_key` (the first
/// occurrence of a repeated key counts).
struct UserList<'o, 'a> {
    list: &'o str,
    id_field: &'o str,
    id_key: Option<&'o str>,
    out: &'o mut Vec<Member<'a>>,
}

impl<'de: 'a, 'a> serde::de::DeserializeSeed<'de> for UserList<'_, 'a> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de: 'a, 'a> serde::de::Visitor<'de> for UserList<'_, 'a> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of user objects")
    }
    fn visit_seq<S: serde::de::SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        use serde::de::Error;
        if let Some(n) = seq.size_hint() {
            self.out.reserve(n);
        }
        let seed = UserSeed {
            id_field: self.id_field,
            value_field: self.id_key,
        };
        while let Some((id, value)) = seq.next_element_seed(seed)? {
            let id = id.ok_or_else(|| {
                S::Error::custom(format!(
                    "a user in {} has no string {}",
                    self.list, self.id_field
                ))
            })?;
            let value = value.ok_or_else(|| {
                S::Error::custom(format!(
                    "a user in {} has no {}",
                    self.list,
                    self.id_key.unwrap_or(self.id_field)
                ))
            })?;
            self.out.push((id, value));
        }
        Ok(())
    }
}

/// One user object: (the string in `id_field`, the raw JSON of
/// `value_field` if present and not null). Without a `value_field` the
/// value is the raw JSON of `id_field` itself (a Cohort Sync member).
#[derive(Clone, Copy)]
struct UserSeed<'o> {
    id_field: &'o str,
    value_field: Option<&'o str>,
}

impl<'de> serde::de::DeserializeSeed<'de> for UserSeed<'_> {
    type Value = (Option<Cow<'de, str>>, Option<&'de str>);
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for UserSeed<'_> {
    type Value = (Option<Cow<'de, str>>, Option<&'de str>);
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a user object")
    }
    fn visit_map<M: serde::de::MapAccess<'de>>(self, mut m: M) -> Result<Self::Value, M::Error> {
        let (mut id, mut value, mut seen_id, mut seen_value) = (None, None, false, false);
        while let Some(Str(k)) = m.next_key::<Str<'de>>()? {
            if k == self.id_field && !seen_id {
                seen_id = true;
                if self.value_field.is_some() {
                    id = m.next_value::<MaybeStr<'de>>()?.0;
                } else {
                    let raw = m.next_value::<&'de RawValue>()?.get();
                    id = serde_json::from_str::<MaybeStr<'de>>(raw)
                        .ok()
                        .and_then(|s| s.0);
                    value = Some(raw);
                }
            } else if Some(k.as_ref()) == self.value_field && !seen_value {
                seen_value = true;
                value = Some(m.next_value::<&'de RawValue>()?.get()).filter(|v| *v != "null");
            } else {
                m.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok((id, value))
    }
}

/// A checked page, ready to apply, borrowed from the request's body.
pub(super) struct Parsed<'a> {
    /// `page_count` (0 for Cohort Sync, whose bodies carry none).
    pub(super) page: u64,
    pub(super) adds: Vec<Member<'a>>,
    pub(super) removes: Vec<Member<'a>>,
}

/// Reads a whole body with `seed`: one UTF-8 check of the body instead of
/// one per string, and nothing but whitespace after the JSON value.
fn read<'a, S: serde::de::DeserializeSeed<'a>>(
    bytes: &'a [u8],
    seed: S,
) -> Result<S::Value, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("body is not UTF-8: {e}"))?;
    let mut de = serde_json::Deserializer::from_str(text);
    seed.deserialize(&mut de)
        .and_then(|f| de.end().map(|()| f))
        .map_err(|e| format!("body is not the expected JSON: {e}"))
}

/// Validates the seed's shape.
pub(super) fn parse<'a>(
    opts: &ReceiverOptions,
    bytes: &'a [u8],
    key: &str,
) -> Result<Parsed<'a>, String> {
    let found = read(bytes, BodySeed { opts })?;
    if found.kind.as_deref() != Some("segment_sync") {
        return Err("type is not segment_sync".into());
    }
    let Pagination {
        total_pages: total,
        page_count: page,
    } = found.pagination.ok_or("pagination missing")?;
    if page == 0 || page > total {
        return Err(format!("page_count {page} outside 1..={total}"));
    }
    for (k, v) in META.iter().zip(&found.meta) {
        match v {
            None => return Err(format!("data.{k} missing")),
            Some(None) => return Err(format!("data.{k} is not a string")),
            Some(Some(_)) => {}
        }
    }
    let execution = found.meta[2]
        .as_ref()
        .and_then(Option::as_deref)
        .unwrap_or("");
    let expected_key = format!("{execution}-{page}");
    if key != expected_key {
        return Err(format!(
            "Idempotency-Key {key:?}, expected {expected_key:?}"
        ));
    }
    let [adds, removes] = found.lists;
    let missing = |list: &str| format!("data.{list} missing");
    let adds = adds.ok_or_else(|| missing(&opts.add_key))?;
    let removes = removes.ok_or_else(|| missing(&opts.remove_key))?;
    Ok(Parsed {
        page,
        adds,
        removes,
    })
}

/// What one pass over a Cohort Sync body finds.
#[derive(Default)]
struct CohortFound<'a> {
    action: Option<Cow<'a, str>>,
    cohort_name: Option<Cow<'a, str>>,
    cohort_id: Option<Cow<'a, str>>,
    members: Option<Vec<Member<'a>>>,
}

/// A Cohort Sync body's top level (`action`, `parameters`); anything else
/// is skipped.
struct CohortSeed;

impl<'de> serde::de::DeserializeSeed<'de> for CohortSeed {
    type Value = CohortFound<'de>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for CohortSeed {
    type Value = CohortFound<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a Cohort Sync body")
    }
    fn visit_map<M: serde::de::MapAccess<'de>>(self, mut m: M) -> Result<Self::Value, M::Error> {
        let mut found = CohortFound::default();
        while let Some(Str(k)) = m.next_key::<Str<'de>>()? {
            match k.as_ref() {
                "action" => found.action = Some(m.next_value::<Str<'de>>()?.0),
                "parameters" => m.next_value_seed(CohortParams(&mut found))?,
                _ => {
                    m.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }
}

/// `parameters`: the cohort's name and id, and its members.
struct CohortParams<'o, 'a>(&'o mut CohortFound<'a>);

impl<'de: 'a, 'a> serde::de::DeserializeSeed<'de> for CohortParams<'_, 'a> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de: 'a, 'a> serde::de::Visitor<'de> for CohortParams<'_, 'a> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the parameters object")
    }
    fn visit_map<M: serde::de::MapAccess<'de>>(self, mut m: M) -> Result<(), M::Error> {
        while let Some(Str(k)) = m.next_key::<Str<'de>>()? {
            match k.as_ref() {
                "cohort_name" => self.0.cohort_name = Some(m.next_value::<Str<'de>>()?.0),
                "cohort_id" => self.0.cohort_id = Some(m.next_value::<Str<'de>>()?.0),
                "members" => {
                    let mut out = Vec::new();
                    m.next_value_seed(UserList {
                        list: "members",
                        id_field: "uid",
                        id_key: None,
                        out: &mut out,
                    })?;
                    self.0.members = Some(out);
                }
                _ => {
                    m.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// Validates a Cohort Sync request: its size, Basic auth and the
/// workspace headers, the action, the cohort, and members by string uid.
/// Adds or removes (page 0: the body carries no page number) the members,
/// each as (uid, its JSON).
pub(super) fn parse_cohort<'a>(
    headers: &HeaderMap,
    bytes: &'a [u8],
    max_body: usize,
) -> Result<Parsed<'a>, String> {
    if bytes.len() > max_body {
        return Err(format!(
            "body is {} bytes, over the {max_body}-byte limit",
            bytes.len()
        ));
    }
    let basic = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Basic "));
    if !basic {
        return Err("missing Basic authorization".into());
    }
    for h in [
        crate::destination::cohort_sync::APPKEY_HEADER,
        crate::destination::cohort_sync::PARTNER_HEADER,
    ] {
        if headers.get(h).is_none() {
            return Err(format!("missing header {h}"));
        }
    }
    let found = read(bytes, CohortSeed)?;
    if !found
        .cohort_name
        .as_deref()
        .is_some_and(|n| n.starts_with('.'))
    {
        return Err("parameters.cohort_name missing or not starting with '.'".into());
    }
    if found.cohort_id.is_none() {
        return Err("parameters.cohort_id missing".into());
    }
    let members = found.members.ok_or("parameters.members missing")?;
    let (adds, removes) = match found.action.as_deref() {
        Some("add_members") => (members, Vec::new()),
        Some("remove_members") => (Vec::new(), members),
        other => {
            return Err(format!(
                "action {other:?} is not add_members or remove_members"
            ))
        }
    };
    Ok(Parsed {
        page: 0,
        adds,
        removes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(adds: &str, removes: &str, extra: &str) -> String {
        format!(
            r#"{{"type":"segment_sync","pagination":{{"total_pages":3,"page_count":2}},
               "data":{{"moengage_sync_id":"7","moengage_sync_name":"vip",
               "moengage_execution_id":"7-1","moengage_integration_id":"1-1"{extra},
               "add_users":{adds},"remove_users":{removes}}}}}"#
        )
    }

    fn opts() -> ReceiverOptions {
        ReceiverOptions::default()
    }

    #[test]
    fn one_pass_reads_members_borrowed_unless_escaped() {
        let b = body(
            r#"[{"moengage_distinct_id":"a","uid":"u1","x":[1,{"y":2}]},
                {"uid":7,"moengage_distinct_id":"b\"q"}]"#,
            r#"[{"moengage_distinct_id":"c","uid":"u3","uid":null}]"#,
            r#","static":{"k":"v"}"#,
        );
        let p = parse(&opts(), b.as_bytes(), "7-1-2").unwrap();
        assert_eq!(p.page, 2);
        let adds: Vec<(&str, &str)> = p.adds.iter().map(|(i, v)| (i.as_ref(), *v)).collect();
        assert_eq!(adds, [("a", "\"u1\""), ("b\"q", "7")]);
        assert!(matches!(p.adds[0].0, Cow::Borrowed(_)));
        assert!(matches!(p.adds[1].0, Cow::Owned(_)));
        // The first occurrence of a repeated key counts.
        assert_eq!(p.removes[0].1, "\"u3\"");
    }

    #[test]
    fn malformed_bodies_name_what_is_wrong() {
        let o = opts();
        let cases = [
            (body("[]", "[]", ""), "7-1-1", "Idempotency-Key"),
            (
                body(r#"[{"uid":"u"}]"#, "[]", ""),
                "7-1-2",
                "a user in add_users has no string moengage_distinct_id",
            ),
            (
                body(r#"[{"moengage_distinct_id":5,"uid":"u"}]"#, "[]", ""),
                "7-1-2",
                "has no string moengage_distinct_id",
            ),
            (
                body("[]", r#"[{"moengage_distinct_id":"d","uid":null}]"#, ""),
                "7-1-2",
                "a user in remove_users has no uid",
            ),
            (
                body("[]", "[]", r#","add_users":[]"#),
                "7-1-2",
                "data.add_users appears twice",
            ),
            (
                body("[]", "[]", "").replace("\"moengage_sync_name\":\"vip\",", ""),
                "7-1-2",
                "data.moengage_sync_name missing",
            ),
            (
                body("[]", "[]", "").replace("\"vip\"", "3"),
                "7-1-2",
                "data.moengage_sync_name is not a string",
            ),
            (
                body("[]", "[]", "").replace(",\"remove_users\":[]", ""),
                "7-1-2",
                "data.remove_users missing",
            ),
            (
                body("[]", "[]", "").replace("segment_sync", "other"),
                "7-1-2",
                "type is not segment_sync",
            ),
            (
                body("[]", "[]", "").replace("\"page_count\":2", "\"page_count\":4"),
                "7-1-4",
                "page_count 4 outside 1..=3",
            ),
            (body("[]", "[]", "") + "x", "7-1-2", "trailing characters"),
        ];
        for (b, key, want) in cases {
            let err = parse(&o, b.as_bytes(), key).err().unwrap_or_default();
            assert!(err.contains(want), "{want:?} not in {err:?}");
        }
    }

    fn cohort_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Basic d3M6a2V5".parse().unwrap());
        h.insert("MOE-APPKEY", "ws".parse().unwrap());
        h.insert("MOE-DESTINATION-PARTNER", "moengage".parse().unwrap());
        h
    }

    fn cohort_body(action: &str, members: &str) -> String {
        format!(
            r#"{{"action":"{action}","timestamp":"2026-11-29T10:00:00.000Z","partner":"moengage",
               "parameters":{{"cohort_name":".vip","cohort_id":"segsync-3",
               "cohort_description":"d","members":{members}}}}}"#
        )
    }

    #[test]
    fn cohort_bodies_add_or_remove_members_by_uid() {
        let b = cohort_body("add_members", r#"[{"uid":"u-1"},{"uid":"u\"2"}]"#);
        let p = parse_cohort(&cohort_headers(), b.as_bytes(), 131_072).unwrap();
        let adds: Vec<(&str, &str)> = p.adds.iter().map(|(i, v)| (i.as_ref(), *v)).collect();
        assert_eq!(adds, [("u-1", "\"u-1\""), ("u\"2", "\"u\\\"2\"")]);
        assert!(p.removes.is_empty());
        let b = cohort_body("remove_members", r#"[{"uid":"u-1"}]"#);
        let p = parse_cohort(&cohort_headers(), b.as_bytes(), 131_072).unwrap();
        assert_eq!((p.adds.len(), p.removes.len()), (0, 1));
    }

    #[test]
    fn cohort_requests_are_checked() {
        let ok = cohort_body("add_members", r#"[{"uid":"u-1"}]"#);
        let mut no_appkey = cohort_headers();
        no_appkey.remove("MOE-APPKEY");
        let mut no_auth = cohort_headers();
        no_auth.remove("authorization");
        let cases = [
            (cohort_headers(), ok.clone(), 10, "over the 10-byte limit"),
            (no_appkey, ok.clone(), 131_072, "missing header MOE-APPKEY"),
            (no_auth, ok.clone(), 131_072, "missing Basic authorization"),
            (
                cohort_headers(),
                cohort_body("add_members", r#"[{"uid":7}]"#),
                131_072,
                "a user in members has no string uid",
            ),
            (
                cohort_headers(),
                cohort_body("drop_members", "[]"),
                131_072,
                "is not add_members or remove_members",
            ),
            (
                cohort_headers(),
                ok.replace(".vip", "vip"),
                131_072,
                "cohort_name missing or not starting with '.'",
            ),
            (
                cohort_headers(),
                ok.replace(r#","members":[{"uid":"u-1"}]"#, ""),
                131_072,
                "parameters.members missing",
            ),
        ];
        for (h, b, max, want) in cases {
            let err = parse_cohort(&h, b.as_bytes(), max)
                .err()
                .unwrap_or_default();
            assert!(err.contains(want), "{want:?} not in {err:?}");
        }
    }
}

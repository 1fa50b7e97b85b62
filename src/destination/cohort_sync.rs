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

use serde::Serialize;

use super::config::{bad, ConfigError, DestinationConfig};
use crate::store::codec::{write_json_str, ValueRef};

/// The header naming the destination workspace (Cohort Sync).
pub const APPKEY_HEADER: &str = "MOE-APPKEY";
/// The header naming the partner (Cohort Sync).
pub const PARTNER_HEADER: &str = "MOE-DESTINATION-PARTNER";
/// Largest Cohort Sync request body, from the API's limits.
pub const COHORT_MAX_BODY: u32 = 128 * 1024;
/// Smallest Cohort Sync body limit accepted.
pub const COHORT_MIN_BODY: u32 = 16 * 1024;
/// Cohort Sync's request-rate ceiling, the default for that format.
pub const COHORT_RPM: u32 = 300;

/// Largest body a custom Cohort Sync endpoint (another segsync, say) may be
/// sent: the size `serve`'s receiver reads at most.
pub const CUSTOM_MAX_BODY: u32 = 4 << 20;

/// Whether `url` is MoEngage's own Cohort Sync API, whose limits (300
/// requests a minute, 128 KB bodies) are hard: only another endpoint may be
/// sent more.
pub fn is_moengage(url: &str) -> bool {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        .is_some_and(|h| h == "moengage.com" || h.ends_with(".moengage.com"))
}

/// The Cohort Sync endpoint of MoEngage data center `dc` (01, 02, 03).
pub fn data_center_url(dc: &str) -> Result<String, ConfigError> {
    match dc.trim_start_matches('0') {
        d @ ("1" | "2" | "3") => Ok(format!(
            "https://api-0{d}.moengage.com/v1/integrations/cohortsync"
        )),
        _ => Err(bad(
            "data_center",
            format!("must be 01, 02 or 03, got {dc:?}"),
        )),
    }
}

/// A cohort name the Cohort Sync API accepts: starts with `.`, has
/// something after it, and contains none of `| * ? \\ : < > = $ "` nor
/// control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CohortName(String);

/// Characters a cohort name must not contain.
pub const COHORT_NAME_FORBIDDEN: &[char] = &['|', '*', '?', '\\', ':', '<', '>', '=', '$', '"'];

impl CohortName {
    /// Longest name accepted.
    pub const MAX_LEN: usize = 255;

    /// Validates a name, saying which rule it breaks.
    pub fn new(name: &str) -> Result<CohortName, String> {
        if !name.starts_with('.') {
            return Err(format!("cohort_name {name:?} must start with '.'"));
        }
        if name.len() < 2 || name[1..].trim().is_empty() {
            return Err(format!("cohort_name {name:?} needs a name after the '.'"));
        }
        if name.len() > Self::MAX_LEN {
            return Err(format!(
                "cohort_name is {} bytes long; at most {} are allowed",
                name.len(),
                Self::MAX_LEN
            ));
        }
        if let Some(c) = name
            .chars()
            .find(|c| COHORT_NAME_FORBIDDEN.contains(c) || c.is_control())
        {
            return Err(format!(
                "cohort_name {name:?} contains {c:?}; none of | * ? \\ : < > = $ \" nor control characters are allowed"
            ));
        }
        Ok(CohortName(name.to_string()))
    }

    /// A valid name derived from a segment name: `.` in front, forbidden
    /// characters replaced by `_`, cut to the longest length allowed.
    pub fn derive(segment: &str) -> CohortName {
        let mut s = String::with_capacity(segment.len() + 1);
        if !segment.starts_with('.') {
            s.push('.');
        }
        for c in segment.chars() {
            let c = if COHORT_NAME_FORBIDDEN.contains(&c) || c.is_control() {
                '_'
            } else {
                c
            };
            if s.len() + c.len_utf8() > Self::MAX_LEN {
                break;
            }
            s.push(c);
        }
        if s.len() < 2 || s[1..].trim().is_empty() {
            s = ".segment".into();
        }
        CohortName(s)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Cohort Sync settings, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CohortSettings {
    /// Fixed cohort name, or derived from each sync's segment.
    pub name: Option<CohortName>,
    /// Fixed cohort id, or `segsync-<sync id>`.
    pub id: Option<String>,
    /// Fixed description, or one naming the sync.
    pub description: Option<String>,
    /// The `partner` field.
    pub partner: String,
    /// Largest body in bytes.
    pub max_body: u32,
    /// Whether the endpoint is MoEngage's API, held to its limits.
    pub moengage: bool,
}

impl DestinationConfig {
    /// Fills in what Cohort Sync needs to reach workspace `id` with its data
    /// API key: Basic auth, `MOE-APPKEY`, and `MOE-DESTINATION-PARTNER`
    /// (`moengage`) unless one is set.
    pub fn set_workspace(&mut self, id: &str, data_api_key: &str) {
        self.basic = Some(super::BasicAuth {
            user: id.to_string(),
            password: data_api_key.to_string(),
        });
        self.headers
            .retain(|(k, _)| !k.eq_ignore_ascii_case(APPKEY_HEADER));
        self.headers.push((APPKEY_HEADER.into(), id.to_string()));
        if !self
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case(PARTNER_HEADER))
        {
            self.headers
                .push((PARTNER_HEADER.into(), "moengage".into()));
        }
    }
}

/// Validates a configuration's Cohort Sync settings: Basic auth and the
/// two mandatory headers naming the same workspace, a valid cohort name, a
/// body limit within the API's, and none of the `segment_sync` format's keys
/// (they would be silently unused).
pub(crate) fn validate_settings(cfg: &DestinationConfig) -> Result<CohortSettings, ConfigError> {
    let custom_only = [
        ("identifier_key", cfg.identifier_key.is_some()),
        ("add_key", cfg.add_key.is_some()),
        ("remove_key", cfg.remove_key.is_some()),
        ("static", !cfg.static_kv.is_empty()),
    ];
    if let Some((field, _)) = custom_only.iter().find(|(_, set)| *set) {
        return Err(bad(
            *field,
            "does not apply to --format cohortsync (its members carry only uid)",
        ));
    }
    let header = |name: &str| {
        cfg.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let Some(basic) = &cfg.basic else {
        return Err(bad(
            "basic",
            "Cohort Sync needs Basic auth: workspace id as user, data API key as password (--workspace-id and --data-api-key)",
        ));
    };
    match header(APPKEY_HEADER) {
        None => {
            return Err(bad(
                format!("header {APPKEY_HEADER}"),
                "is mandatory for Cohort Sync (the destination workspace id)",
            ))
        }
        Some(v) if v != basic.user => {
            return Err(bad(
                format!("header {APPKEY_HEADER}"),
                format!(
                    "must equal the Basic auth user (the workspace id {:?}), got {v:?}",
                    basic.user
                ),
            ))
        }
        Some(_) => {}
    }
    match header(PARTNER_HEADER) {
        Some(v) if !v.trim().is_empty() => {}
        _ => {
            return Err(bad(
                format!("header {PARTNER_HEADER}"),
                "is mandatory for Cohort Sync (use `moengage`)",
            ))
        }
    }
    if basic.password.is_empty() {
        return Err(bad("basic", "the data API key (password) is empty"));
    }
    let name = cfg
        .cohort_name
        .as_deref()
        .map(CohortName::new)
        .transpose()
        .map_err(|r| bad("cohort_name", r))?;
    let max_body = cfg.max_body_bytes.unwrap_or(COHORT_MAX_BODY);
    // The floor leaves room for the head and the largest member a body
    // can carry (a 1024-byte uid, escaped). MoEngage's API takes at most
    // 128 KB; only another endpoint may be sent more.
    let moengage = is_moengage(&cfg.url);
    let ceiling = if moengage {
        COHORT_MAX_BODY
    } else {
        CUSTOM_MAX_BODY
    };
    if !(COHORT_MIN_BODY..=ceiling).contains(&max_body) {
        let why = if moengage {
            " (MoEngage's Cohort Sync API limit; only a custom --url may take more)"
        } else {
            ""
        };
        return Err(bad(
            "max_body_bytes",
            format!("must be between {COHORT_MIN_BODY} and {ceiling}{why}, got {max_body}"),
        ));
    }
    if moengage && cfg.rpm.is_some_and(|r| r > COHORT_RPM) {
        return Err(bad(
            "rpm",
            format!(
                "MoEngage's Cohort Sync API takes at most {COHORT_RPM} requests a minute; only a custom --url (another segsync, say) may go higher"
            ),
        ));
    }
    for (field, v) in [
        ("cohort_id", &cfg.cohort_id),
        ("cohort_description", &cfg.cohort_description),
        ("partner", &cfg.partner),
    ] {
        if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return Err(bad(field, "must not be empty"));
        }
    }
    Ok(CohortSettings {
        name,
        id: cfg.cohort_id.clone(),
        description: cfg.cohort_description.clone(),
        partner: cfg.partner.clone().unwrap_or_else(|| "moengage".into()),
        max_body,
        moengage,
    })
}

/// Which list a page changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberAction {
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
        action: MemberAction,
        members: impl IntoIterator<Item = ValueRef<'a>>,
        out: &mut Vec<u8>,
    ) -> u32 {
        out.clear();
        out.extend_from_slice(match action {
            MemberAction::Add => &self.head_add,
            MemberAction::Remove => &self.head_remove,
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
            moengage: false,
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
        let n = f.render(MemberAction::Remove, refs.iter().copied(), &mut out);
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

    #[test]
    fn moengage_endpoints_are_held_to_the_api_limits() {
        let cfg = |url: &str, rpm: Option<u32>, body: Option<u32>| {
            let mut c = DestinationConfig::new("c", url);
            c.switch_format(super::super::Format::Cohortsync);
            c.set_workspace("ws", "key-0123456789");
            c.rpm = rpm;
            c.max_body_bytes = body;
            c
        };
        let dc = data_center_url("01").unwrap();
        assert!(is_moengage(&dc));
        assert!(!is_moengage(
            "http://127.0.0.1:8080/v1/integrations/cohortsync"
        ));
        assert!(!is_moengage("https://evilmoengage.com/x"));
        let e = cfg(&dc, Some(301), None).validate(1).unwrap_err();
        assert_eq!(e.field, "rpm");
        assert!(e.reason.contains("custom --url"), "{e}");
        let e = cfg(&dc, None, Some(COHORT_MAX_BODY + 1))
            .validate(1)
            .unwrap_err();
        assert_eq!(e.field, "max_body_bytes");
        let ok = cfg(&dc, Some(300), Some(COHORT_MAX_BODY))
            .validate(1)
            .unwrap();
        assert!(ok.cohort().unwrap().moengage);
        let custom = "http://127.0.0.1:8080/v1/integrations/cohortsync";
        let ok = cfg(custom, Some(25_000), Some(1 << 20))
            .validate(1)
            .unwrap();
        assert_eq!(
            (ok.rpm.get(), ok.cohort().unwrap().max_body),
            (25_000, 1 << 20)
        );
        assert!(cfg(custom, None, Some(CUSTOM_MAX_BODY + 1))
            .validate(1)
            .is_err());
    }
}

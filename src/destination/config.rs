//! Destination configuration: the raw, serde form as stored and as given on
//! the command line, validated once into [`Destination`], whose fields cannot
//! be invalid (`PageSize` 100..=10000, `Rpm` 1..=25000, a parsed http(s) URL,
//! distinct non-empty keys). Code past this edge never re-checks.

use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::Url;
use serde::{Deserialize, Serialize};

/// The key every user object carries (the seed's `moengage_distinct_id`).
pub const DISTINCT_ID_KEY: &str = "moengage_distinct_id";

/// Configuration errors; each names the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("destination {field}: {reason}")]
pub struct ConfigError {
    /// The offending field (`url`, `page_size`, `header X`…).
    pub field: String,
    /// Why it is refused.
    pub reason: String,
}

fn bad(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Basic auth credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// User name.
    pub user: String,
    /// Password (never printed).
    pub password: String,
}

/// The request body a destination receives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The seed's custom-destination body (`"type":"segment_sync"`).
    #[default]
    Custom,
    /// MoEngage's Cohort Sync API: one `add_members` or `remove_members`
    /// action per request, for syncing a segment to another workspace.
    Cohortsync,
}

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

/// A destination as stored and as given by the user (unvalidated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// Unique name.
    pub name: String,
    /// Endpoint, http or https.
    pub url: String,
    /// Request body format.
    #[serde(default)]
    pub format: Format,
    /// Cohort Sync: the cohort name (default: `.` + the segment's name, sanitised).
    #[serde(default)]
    pub cohort_name: Option<String>,
    /// Cohort Sync: the cohort id (default: `segsync-<sync id>`).
    #[serde(default)]
    pub cohort_id: Option<String>,
    /// Cohort Sync: the cohort description.
    #[serde(default)]
    pub cohort_description: Option<String>,
    /// Cohort Sync: the `partner` field (default `moengage`).
    #[serde(default)]
    pub partner: Option<String>,
    /// Cohort Sync: largest request body in bytes (default and ceiling 131072).
    #[serde(default)]
    pub max_body_bytes: Option<u32>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Query parameters.
    #[serde(default)]
    pub params: Vec<(String, String)>,
    /// Basic auth, if any.
    #[serde(default)]
    pub basic: Option<BasicAuth>,
    /// Key of the identifier in each user object (default: the synced attribute's name).
    #[serde(default)]
    pub identifier_key: Option<String>,
    /// Key of the added-users list (default `add_users`).
    #[serde(default)]
    pub add_key: Option<String>,
    /// Key of the removed-users list (default `remove_users`).
    #[serde(default)]
    pub remove_key: Option<String>,
    /// Static key-values added to every user object.
    #[serde(default)]
    pub static_kv: Vec<(String, String)>,
    /// Users per request, 100..=10000 (default 1000).
    #[serde(default)]
    pub page_size: Option<u32>,
    /// Requests per minute, 1..=25000 (default 25000).
    #[serde(default)]
    pub rpm: Option<u32>,
    /// Whether `sync resync-all` is allowed.
    #[serde(default)]
    pub allow_resync: bool,
    /// Connected app this destination belongs to.
    #[serde(default)]
    pub app: Option<String>,
    /// Per-request timeout in milliseconds (default 30000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Delay between retries in milliseconds (default 3000).
    #[serde(default)]
    pub retry_delay_ms: Option<u64>,
    /// Retries after the first attempt (default 3).
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// Requests in flight at once (default 32).
    #[serde(default)]
    pub in_flight: Option<u32>,
}

/// Users per request: 100..=10000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PageSize(u16);

impl PageSize {
    /// Smallest page.
    pub const MIN: u32 = 100;
    /// Largest page.
    pub const MAX: u32 = 10_000;
    /// Default page.
    pub const DEFAULT: u32 = 1000;

    /// Validates a page size.
    pub fn new(n: u32) -> Result<PageSize, ConfigError> {
        if (Self::MIN..=Self::MAX).contains(&n) {
            Ok(PageSize(n as u16))
        } else {
            Err(bad(
                "page_size",
                format!(
                    "must be between {} and {} users, got {n}",
                    Self::MIN,
                    Self::MAX
                ),
            ))
        }
    }

    /// The size.
    pub fn get(self) -> u32 {
        u32::from(self.0)
    }
}

/// Requests per minute: 1..=25000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Rpm(u32);

impl Rpm {
    /// The seed's ceiling.
    pub const MAX: u32 = 25_000;

    /// Validates a rate.
    pub fn new(n: u32) -> Result<Rpm, ConfigError> {
        if (1..=Self::MAX).contains(&n) {
            Ok(Rpm(n))
        } else {
            Err(bad(
                "rpm",
                format!(
                    "must be between 1 and {} requests per minute, got {n}",
                    Self::MAX
                ),
            ))
        }
    }

    /// The rate.
    pub fn get(self) -> u32 {
        self.0
    }

    /// The spacing between two requests, rounded up to the nanosecond so
    /// that no 60-second window can ever hold more than `rpm` requests.
    pub fn period(self) -> Duration {
        let nanos = 60_000_000_000u64.div_ceil(u64::from(self.0));
        Duration::from_nanos(nanos)
    }
}

/// Retry policy: which failures are retried is fixed by the seed; how often
/// and how far apart is configurable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Delay before each retry (unless the response says `Retry-After`).
    pub delay: Duration,
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
}

/// A validated body format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatSpec {
    /// The custom-destination body.
    Custom,
    /// Cohort Sync.
    Cohort(CohortSettings),
}

/// A validated destination.
#[derive(Debug, Clone)]
pub struct Destination {
    /// Store id (the integration id).
    pub id: u32,
    /// Name.
    pub name: String,
    /// Endpoint with the query parameters applied.
    pub url: Url,
    /// Headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Basic auth.
    pub basic: Option<BasicAuth>,
    /// Explicit identifier key, if renamed.
    pub identifier_key: Option<String>,
    /// Added-users key.
    pub add_key: String,
    /// Removed-users key.
    pub remove_key: String,
    /// Static key-values.
    pub static_kv: Vec<(String, String)>,
    /// Users per page.
    pub page_size: PageSize,
    /// Requests per minute.
    pub rpm: Rpm,
    /// The body format, with its settings.
    pub format: FormatSpec,
    /// Resync allowed.
    pub allow_resync: bool,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Retries.
    pub retry: RetryPolicy,
    /// Requests in flight.
    pub in_flight: usize,
    /// The raw form it came from.
    pub config: DestinationConfig,
}

fn check_key(field: &str, key: &str) -> Result<(), ConfigError> {
    if key.trim().is_empty() {
        return Err(bad(field, "must not be empty"));
    }
    if key.chars().any(char::is_control) {
        return Err(bad(field, "must not contain control characters"));
    }
    Ok(())
}

impl DestinationConfig {
    /// A configuration with every optional setting at its default.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> DestinationConfig {
        DestinationConfig {
            name: name.into(),
            url: url.into(),
            format: Format::Custom,
            cohort_name: None,
            cohort_id: None,
            cohort_description: None,
            partner: None,
            max_body_bytes: None,
            headers: vec![],
            params: vec![],
            basic: None,
            identifier_key: None,
            add_key: None,
            remove_key: None,
            static_kv: vec![],
            page_size: None,
            rpm: None,
            allow_resync: false,
            app: None,
            timeout_ms: None,
            retry_delay_ms: None,
            max_retries: None,
            in_flight: None,
        }
    }

    /// A copy safe to show: secret header and parameter values and the
    /// Basic password masked.
    pub fn masked(mut self) -> DestinationConfig {
        for (k, v) in self.headers.iter_mut().chain(self.params.iter_mut()) {
            if is_secret_header(k) {
                *v = mask(v);
            }
        }
        if let Some(b) = &mut self.basic {
            b.password = mask(&b.password);
        }
        self
    }

    /// Validates into a [`Destination`] with store id `id`.
    pub fn validate(&self, id: u32) -> Result<Destination, ConfigError> {
        if self.name.trim().is_empty() || self.name.contains('/') {
            return Err(bad("name", "must be non-empty and contain no '/'"));
        }
        let mut url =
            Url::parse(&self.url).map_err(|e| bad("url", format!("{e}: {:?}", self.url)))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(bad(
                "url",
                format!("must be an http(s) URL with a host, got {:?}", self.url),
            ));
        }
        for (k, _) in &self.params {
            check_key(&format!("param {k:?}"), k)?;
        }
        if !self.params.is_empty() {
            url.query_pairs_mut().extend_pairs(self.params.iter());
        }
        let mut headers = Vec::with_capacity(self.headers.len());
        for (k, v) in &self.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| bad(format!("header {k:?}"), "is not a valid HTTP header name"))?;
            let value = HeaderValue::from_str(v).map_err(|_| {
                bad(
                    format!("header {k:?}"),
                    "value is not a valid HTTP header value",
                )
            })?;
            headers.push((name, value));
        }
        if let Some(b) = &self.basic {
            if b.user.is_empty() || b.user.contains(':') {
                return Err(bad("basic", "user must be non-empty and contain no ':'"));
            }
        }
        let add_key = self.add_key.clone().unwrap_or_else(|| "add_users".into());
        let remove_key = self
            .remove_key
            .clone()
            .unwrap_or_else(|| "remove_users".into());
        check_key("add_key", &add_key)?;
        check_key("remove_key", &remove_key)?;
        if add_key == remove_key {
            return Err(bad(
                "remove_key",
                format!("must differ from add_key ({add_key:?})"),
            ));
        }
        if let Some(k) = &self.identifier_key {
            check_key("identifier_key", k)?;
            if k == DISTINCT_ID_KEY {
                return Err(bad(
                    "identifier_key",
                    format!("{DISTINCT_ID_KEY:?} is reserved"),
                ));
            }
        }
        let mut seen: Vec<&str> = Vec::new();
        for (k, _) in &self.static_kv {
            check_key(&format!("static {k:?}"), k)?;
            if k == DISTINCT_ID_KEY || Some(k) == self.identifier_key.as_ref() {
                return Err(bad(
                    format!("static {k:?}"),
                    "collides with the identifier or moengage_distinct_id",
                ));
            }
            if seen.contains(&k.as_str()) {
                return Err(bad(format!("static {k:?}"), "is given twice"));
            }
            seen.push(k);
        }
        let format = self.validate_format()?;
        let (default_page, default_rpm) = match format {
            FormatSpec::Custom => (PageSize::DEFAULT, Rpm::MAX),
            // Cohort Sync pages are cut by size first; the count cap is the largest.
            FormatSpec::Cohort(_) => (PageSize::MAX, COHORT_RPM),
        };
        let timeout = Duration::from_millis(self.timeout_ms.unwrap_or(30_000));
        if timeout.is_zero() {
            return Err(bad("timeout_ms", "must be positive"));
        }
        let in_flight = self.in_flight.unwrap_or(32);
        if !(1..=1024).contains(&in_flight) {
            return Err(bad(
                "in_flight",
                format!("must be between 1 and 1024, got {in_flight}"),
            ));
        }
        Ok(Destination {
            id,
            name: self.name.clone(),
            url,
            headers,
            basic: self.basic.clone(),
            identifier_key: self.identifier_key.clone(),
            add_key,
            remove_key,
            static_kv: self.static_kv.clone(),
            page_size: PageSize::new(self.page_size.unwrap_or(default_page))?,
            rpm: Rpm::new(self.rpm.unwrap_or(default_rpm))?,
            format,
            allow_resync: self.allow_resync,
            timeout,
            retry: RetryPolicy {
                max_retries: self.max_retries.unwrap_or(3),
                delay: Duration::from_millis(self.retry_delay_ms.unwrap_or(3000)),
            },
            in_flight: in_flight as usize,
            config: self.clone(),
        })
    }
}

impl DestinationConfig {
    /// Checks the format's own settings: for Cohort Sync, Basic auth and the
    /// two mandatory headers naming the same workspace, a valid cohort name,
    /// and none of the custom format's keys (they would be silently unused).
    fn validate_format(&self) -> Result<FormatSpec, ConfigError> {
        let cohort_only = [
            ("cohort_name", self.cohort_name.is_some()),
            ("cohort_id", self.cohort_id.is_some()),
            ("cohort_description", self.cohort_description.is_some()),
            ("partner", self.partner.is_some()),
            ("max_body_bytes", self.max_body_bytes.is_some()),
        ];
        if self.format == Format::Custom {
            if let Some((field, _)) = cohort_only.iter().find(|(_, set)| *set) {
                return Err(bad(*field, "applies only to --format cohortsync"));
            }
            return Ok(FormatSpec::Custom);
        }
        let custom_only = [
            ("identifier_key", self.identifier_key.is_some()),
            ("add_key", self.add_key.is_some()),
            ("remove_key", self.remove_key.is_some()),
            ("static", !self.static_kv.is_empty()),
        ];
        if let Some((field, _)) = custom_only.iter().find(|(_, set)| *set) {
            return Err(bad(
                *field,
                "does not apply to --format cohortsync (its members carry only uid)",
            ));
        }
        let header = |name: &str| {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let Some(basic) = &self.basic else {
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
        let name = self
            .cohort_name
            .as_deref()
            .map(CohortName::new)
            .transpose()
            .map_err(|r| bad("cohort_name", r))?;
        let max_body = self.max_body_bytes.unwrap_or(COHORT_MAX_BODY);
        // The floor leaves room for the head and the largest member a body
        // can carry (a 1024-byte uid, escaped).
        if !(COHORT_MIN_BODY..=COHORT_MAX_BODY).contains(&max_body) {
            return Err(bad(
                "max_body_bytes",
                format!("must be between {COHORT_MIN_BODY} and {COHORT_MAX_BODY}, got {max_body}"),
            ));
        }
        for (field, v) in [
            ("cohort_id", &self.cohort_id),
            ("cohort_description", &self.cohort_description),
            ("partner", &self.partner),
        ] {
            if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(bad(field, "must not be empty"));
            }
        }
        Ok(FormatSpec::Cohort(CohortSettings {
            name,
            id: self.cohort_id.clone(),
            description: self.cohort_description.clone(),
            partner: self.partner.clone().unwrap_or_else(|| "moengage".into()),
            max_body,
        }))
    }
}

impl Destination {
    /// The Cohort Sync settings, if that is the format.
    pub fn cohort(&self) -> Option<&CohortSettings> {
        match &self.format {
            FormatSpec::Cohort(c) => Some(c),
            FormatSpec::Custom => None,
        }
    }

    /// The identifier key for a sync of `attribute`.
    pub fn identifier_key_for<'a>(&'a self, attribute: &'a str) -> &'a str {
        self.identifier_key.as_deref().unwrap_or(attribute)
    }

    /// Refuses an attribute whose default key would collide with a static key.
    pub fn check_attribute(&self, attribute: &str) -> Result<(), ConfigError> {
        let key = self.identifier_key_for(attribute);
        if key == DISTINCT_ID_KEY || self.static_kv.iter().any(|(k, _)| k == key) {
            return Err(bad(
                "identifier_key",
                format!("{key:?} collides with a static key or moengage_distinct_id; rename it with --identifier-key"),
            ));
        }
        Ok(())
    }
}

/// Masks a secret for display: never more than its last two characters.
pub fn mask(secret: &str) -> String {
    let n = secret.chars().count();
    if n <= 4 {
        "****".into()
    } else {
        let tail: String = secret.chars().skip(n - 2).collect();
        format!("****{tail}")
    }
}

/// Whether a header's value should be masked when shown.
pub fn is_secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    // A workspace id, not a key (it is the Basic auth user, shown anyway).
    if n == APPKEY_HEADER.to_ascii_lowercase() {
        return false;
    }
    [
        "authorization",
        "key",
        "token",
        "secret",
        "password",
        "cookie",
    ]
    .iter()
    .any(|s| n.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> DestinationConfig {
        DestinationConfig::new("crm", "https://api.example.com/segments")
    }

    #[test]
    fn defaults_follow_the_seed() {
        let d = cfg().validate(1).unwrap();
        assert_eq!(d.rpm.get(), 25_000);
        assert_eq!(d.page_size.get(), 1000);
        assert_eq!(d.add_key, "add_users");
        assert_eq!(d.remove_key, "remove_users");
        assert_eq!(d.retry.max_retries, 3);
        assert_eq!(d.retry.delay, Duration::from_secs(3));
        assert_eq!(d.timeout, Duration::from_secs(30));
        assert_eq!(d.identifier_key_for("uid"), "uid");
    }

    #[test]
    fn limits_are_enforced_with_the_field_named() {
        type Mutation = Box<dyn Fn(&mut DestinationConfig)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|c| c.page_size = Some(99)), "page_size"),
            (Box::new(|c| c.page_size = Some(10_001)), "page_size"),
            (Box::new(|c| c.rpm = Some(0)), "rpm"),
            (Box::new(|c| c.rpm = Some(25_001)), "rpm"),
            (Box::new(|c| c.url = "ftp://x/y".into()), "url"),
            (Box::new(|c| c.url = "not a url".into()), "url"),
            (Box::new(|c| c.add_key = Some(" ".into())), "add_key"),
            (
                Box::new(|c| c.remove_key = Some("add_users".into())),
                "remove_key",
            ),
            (
                Box::new(|c| c.identifier_key = Some(DISTINCT_ID_KEY.into())),
                "identifier_key",
            ),
            (
                Box::new(|c| c.static_kv = vec![(DISTINCT_ID_KEY.into(), "x".into())]),
                "static",
            ),
            (
                Box::new(|c| {
                    c.identifier_key = Some("pid".into());
                    c.static_kv = vec![("pid".into(), "x".into())];
                }),
                "static",
            ),
            (
                Box::new(|c| c.headers = vec![("bad header".into(), "v".into())]),
                "header",
            ),
        ];
        for (mutate, field) in cases {
            let mut c = cfg();
            mutate(&mut c);
            let err = c.validate(1).unwrap_err();
            assert!(err.field.starts_with(field), "{field}: {err}");
        }
        for ok in [100, 10_000] {
            let mut c = cfg();
            c.page_size = Some(ok);
            assert!(c.validate(1).is_ok());
        }
    }

    #[test]
    fn rate_period_never_allows_more_than_rpm_a_minute() {
        for rpm in [1, 7, 300, 24_999, 25_000] {
            let p = Rpm::new(rpm).unwrap().period();
            // rpm requests spaced by p span (rpm - 1) * p < 60 s, and rpm + 1
            // span rpm * p ≥ 60 s: at most rpm fit in any half-open minute.
            assert!(p.as_nanos() * u128::from(rpm) >= 60_000_000_000);
            assert!(p.as_nanos() * u128::from(rpm) < 60_000_000_000 + u128::from(rpm));
        }
    }

    #[test]
    fn params_land_in_the_url_and_secrets_are_masked() {
        let mut c = cfg();
        c.params = vec![("a".into(), "1 2".into())];
        let d = c.validate(1).unwrap();
        assert_eq!(d.url.query(), Some("a=1+2"));
        assert_eq!(mask("supersecret"), "****et");
        assert_eq!(mask("abc"), "****");
        assert!(is_secret_header("X-Api-Key"));
        assert!(!is_secret_header("MOE-DESTINATION-PARTNER"));
    }
}

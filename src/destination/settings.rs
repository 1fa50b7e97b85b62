//! The validated destination: [`Destination`] and the newtypes that make
//! an invalid value unrepresentable (`PageSize` 100..=10000, `Rpm`
//! 1..=25000, a parsed http(s) URL, distinct non-empty keys), built once by
//! [`DestinationConfig::validate`]. Code past this edge never re-checks.

use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::Url;
use serde::Serialize;

use super::cohort_sync::{self, CohortSettings, COHORT_RPM};
use super::config::{bad, BasicAuth, ConfigError, DestinationConfig, Format, DISTINCT_ID_KEY};

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

/// A validated body format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatSpec {
    /// The seed's `segment_sync` body.
    SegmentSync,
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
            FormatSpec::SegmentSync => (PageSize::DEFAULT, Rpm::MAX),
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
    /// Checks the format's own settings: the other format's keys are refused
    /// (they would be silently unused); Cohort Sync's own rules are in
    /// [`cohort_sync::validate_settings`].
    fn validate_format(&self) -> Result<FormatSpec, ConfigError> {
        let cohort_only = [
            ("cohort_name", self.cohort_name.is_some()),
            ("cohort_id", self.cohort_id.is_some()),
            ("cohort_description", self.cohort_description.is_some()),
            ("partner", self.partner.is_some()),
            ("max_body_bytes", self.max_body_bytes.is_some()),
        ];
        if self.format == Format::SegmentSync {
            if let Some((field, _)) = cohort_only.iter().find(|(_, set)| *set) {
                return Err(bad(*field, "applies only to --format cohortsync"));
            }
            return Ok(FormatSpec::SegmentSync);
        }
        Ok(FormatSpec::Cohort(cohort_sync::validate_settings(self)?))
    }
}

impl Destination {
    /// The Cohort Sync settings, if that is the format.
    pub fn cohort(&self) -> Option<&CohortSettings> {
        match &self.format {
            FormatSpec::Cohort(c) => Some(c),
            FormatSpec::SegmentSync => None,
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
    fn params_land_in_the_url() {
        let mut c = cfg();
        c.params = vec![("a".into(), "1 2".into())];
        let d = c.validate(1).unwrap();
        assert_eq!(d.url.query(), Some("a=1+2"));
    }
}

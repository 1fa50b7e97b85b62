//! Destination configuration as stored and as given by the user (the CLI's
//! flags, the API's JSON): the raw serde form, unvalidated, and the edits
//! that keep it coherent (switching formats, filling in a workspace's
//! credentials). [`DestinationConfig::validate`] (in `settings.rs`) turns it
//! into a [`super::Destination`] whose fields cannot be invalid.

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

impl crate::error::Classify for ConfigError {
    fn fault(&self) -> crate::error::Fault {
        crate::error::Fault::BadInput
    }
}

pub(crate) fn bad(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Basic auth credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// User name.
    pub user: String,
    /// Password (never printed).
    pub password: String,
}

/// The request body a destination receives.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    clap::ValueEnum,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The seed's custom-destination body (`"type":"segment_sync"`). Stored
    /// records and older scripts call it `custom`, which is still accepted.
    #[default]
    #[serde(rename = "segment_sync", alias = "custom")]
    #[value(name = "segment_sync", alias = "custom")]
    SegmentSync,
    /// MoEngage's Cohort Sync API: one `add_members` or `remove_members`
    /// action per request, for syncing a segment to another workspace.
    Cohortsync,
}

/// A destination as stored and as given by the user (unvalidated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// Extra request headers, as `[name, value]` pairs.
    #[serde(default)]
    #[schema(value_type = Vec<Vec<String>>)]
    pub headers: Vec<(String, String)>,
    /// Query parameters, as `[name, value]` pairs.
    #[serde(default)]
    #[schema(value_type = Vec<Vec<String>>)]
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
    /// Static key-values added to every user object, as `[key, value]` pairs.
    #[serde(default)]
    #[schema(value_type = Vec<Vec<String>>)]
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
    /// Requests in flight at once (default 32); pages waiting out a retry
    /// delay do not count.
    #[serde(default)]
    pub in_flight: Option<u32>,
}

impl DestinationConfig {
    /// A configuration with every optional setting at its default.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> DestinationConfig {
        DestinationConfig {
            name: name.into(),
            url: url.into(),
            format: Format::SegmentSync,
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

    /// Sets the body format. Switching formats drops the settings only the
    /// other one has, so `edit --format` never leaves a configuration that
    /// cannot validate.
    pub fn switch_format(&mut self, format: Format) {
        if format != self.format {
            match format {
                Format::Cohortsync => {
                    self.identifier_key = None;
                    self.add_key = None;
                    self.remove_key = None;
                    self.static_kv.clear();
                }
                Format::SegmentSync => {
                    self.cohort_name = None;
                    self.cohort_id = None;
                    self.cohort_description = None;
                    self.partner = None;
                    self.max_body_bytes = None;
                }
            }
        }
        self.format = format;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switching_formats_drops_the_other_formats_settings() {
        let mut c = DestinationConfig::new("d", "http://127.0.0.1:1/");
        c.identifier_key = Some("id".into());
        c.static_kv = vec![("k".into(), "v".into())];
        c.switch_format(Format::Cohortsync);
        c.set_workspace("ws", "secret-key");
        c.cohort_name = Some(".vip".into());
        assert!(c.identifier_key.is_none() && c.static_kv.is_empty());
        assert!(c.validate(1).is_ok(), "{:?}", c.validate(1));
        c.switch_format(Format::SegmentSync);
        assert!(c.cohort_name.is_none());
        assert!(c.validate(1).is_ok());
    }
}

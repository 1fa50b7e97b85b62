//! What other systems send us, served by `segsync serve`: Cohort Sync
//! requests from another workspace ([`cohort`]) and Segment-spec identify,
//! track and batch calls from Personas ([`personas`]).
//!
//! This module owns the credentials those requests carry (workspaces with
//! their data API key, write keys), stored salted and hashed in the
//! `inbound` column family and never shown again, and the per-workspace
//! request-rate window. HTTP itself lives in `server/inbound.rs`: the logic
//! here takes parsed headers and a body and answers with a status and a
//! JSON body, so it is tested without a socket as well as through one.

pub mod cohort;
pub mod personas;
mod rate;

use serde::{Deserialize, Serialize};

pub use rate::WindowLimiter;

use crate::error::{Classify, Fault};
use crate::secret::Secret;
use crate::store::{self, cf, keys, Store, Write};

/// Errors of credential management.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Invalid id, name or key.
    #[error("{0}")]
    Invalid(String),
    /// Already registered.
    #[error("{0} already exists (remove it first to change its key)")]
    Exists(String),
    /// Not registered.
    #[error("{0} not found")]
    NotFound(String),
    /// The machine could not give random bytes for a salt.
    #[error("cannot read random bytes for a salt: {0}")]
    Random(std::io::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

impl Classify for Error {
    fn fault(&self) -> Fault {
        match self {
            Error::Invalid(_) => Fault::BadInput,
            Error::Exists(_) => Fault::Conflict,
            Error::NotFound(_) => Fault::NotFound,
            Error::Random(_) => Fault::Internal,
            Error::Store(e) => e.fault(),
        }
    }
}

/// A workspace this data dir answers to as a Cohort Sync destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workspace {
    /// Workspace id (Basic auth user, `MOE-APPKEY`).
    pub id: String,
    /// The data API key, hashed.
    pub key: Secret,
    /// Attribute that holds users' uid here.
    pub uid_attribute: String,
    /// Attribute that holds users' anonymous id here.
    pub anonymous_id_attribute: String,
    /// Creation time, Unix ms.
    pub created_ms: i64,
}

/// A write key Segment (Personas) authenticates with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteKey {
    /// Name, for listing and removal.
    pub name: String,
    /// The key, hashed.
    pub key: Secret,
    /// Creation time, Unix ms.
    pub created_ms: i64,
}

fn check_name(what: &str, s: &str) -> Result<(), Error> {
    if s.trim().is_empty() || s.contains(':') || s.contains('/') || s.chars().any(char::is_control)
    {
        return Err(Error::Invalid(format!(
            "{what} {s:?} must be non-empty and contain no ':', '/' or control characters"
        )));
    }
    Ok(())
}

fn check_key(what: &str, key: &str) -> Result<(), Error> {
    if key.len() < 8 {
        return Err(Error::Invalid(format!(
            "{what} must be at least 8 characters long"
        )));
    }
    Ok(())
}

/// Registers workspace `id` with its data API key.
pub fn add_workspace(
    store: &Store,
    id: &str,
    data_api_key: &str,
    uid_attribute: &str,
    anonymous_id_attribute: &str,
) -> Result<Workspace, Error> {
    check_name("workspace id", id)?;
    check_key("the data API key", data_api_key)?;
    for a in [uid_attribute, anonymous_id_attribute] {
        if a.trim().is_empty() {
            return Err(Error::Invalid("attribute names must not be empty".into()));
        }
    }
    if workspace(store, id)?.is_some() {
        return Err(Error::Exists(format!("workspace '{id}'")));
    }
    let w = Workspace {
        id: id.to_string(),
        key: Secret::new(data_api_key).map_err(Error::Random)?,
        uid_attribute: uid_attribute.to_string(),
        anonymous_id_attribute: anonymous_id_attribute.to_string(),
        created_ms: chrono::Utc::now().timestamp_millis(),
    };
    store.write_records(
        vec![Write::record(cf::INBOUND, keys::workspace(id), &w)],
        true,
    )?;
    Ok(w)
}

/// The workspace `id`.
pub fn workspace(store: &Store, id: &str) -> Result<Option<Workspace>, Error> {
    Ok(store.get_record(cf::INBOUND, &keys::workspace(id), "workspace record")?)
}

/// Every workspace, by id.
pub fn workspaces(store: &Store) -> Result<Vec<Workspace>, Error> {
    Ok(store.scan_records(cf::INBOUND, keys::WORKSPACE_PREFIX, "workspace record")?)
}

/// Removes workspace `id`.
pub fn remove_workspace(store: &Store, id: &str) -> Result<(), Error> {
    if workspace(store, id)?.is_none() {
        return Err(Error::NotFound(format!("workspace '{id}'")));
    }
    store.write_records(vec![Write::Delete(cf::INBOUND, keys::workspace(id))], true)?;
    Ok(())
}

/// Registers a write key under `name`.
pub fn add_write_key(store: &Store, name: &str, key: &str) -> Result<WriteKey, Error> {
    check_name("write key name", name)?;
    check_key("the write key", key)?;
    for k in write_keys(store)? {
        if k.name == name {
            return Err(Error::Exists(format!("write key '{name}'")));
        }
        if k.key.matches(key) {
            return Err(Error::Exists("that write key (under another name)".into()));
        }
    }
    let k = WriteKey {
        name: name.to_string(),
        key: Secret::new(key).map_err(Error::Random)?,
        created_ms: chrono::Utc::now().timestamp_millis(),
    };
    store.write_records(
        vec![Write::record(cf::INBOUND, keys::write_key(name), &k)],
        true,
    )?;
    Ok(k)
}

/// Every write key, by name.
pub fn write_keys(store: &Store) -> Result<Vec<WriteKey>, Error> {
    Ok(store.scan_records(cf::INBOUND, keys::WRITE_KEY_PREFIX, "write key record")?)
}

/// Removes write key `name`.
pub fn remove_write_key(store: &Store, name: &str) -> Result<(), Error> {
    if store
        .get_record::<WriteKey>(cf::INBOUND, &keys::write_key(name), "write key record")?
        .is_none()
    {
        return Err(Error::NotFound(format!("write key '{name}'")));
    }
    store.write_records(
        vec![Write::Delete(cf::INBOUND, keys::write_key(name))],
        true,
    )?;
    Ok(())
}

/// An answer to an inbound request: HTTP status and JSON body, plus a
/// `Retry-After` in seconds for 429.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: serde_json::Value,
    /// Seconds to wait, for 429.
    pub retry_after: Option<u64>,
}

impl Reply {
    /// A success.
    pub fn ok(body: serde_json::Value) -> Reply {
        Reply {
            status: 200,
            body,
            retry_after: None,
        }
    }

    /// A rejection with a message.
    pub fn error(status: u16, message: impl Into<String>) -> Reply {
        Reply {
            status,
            body: serde_json::json!({ "error": message.into() }),
            retry_after: None,
        }
    }

    /// The message of a rejection (for logs and tests).
    pub fn message(&self) -> &str {
        self.body
            .get("error")
            .and_then(|m| m.as_str())
            .unwrap_or_default()
    }
}

/// An identifier as sent in JSON: a non-empty string, or a number (as its
/// text); anything else is no identifier.
pub(crate) fn id_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Basic credentials from an `Authorization` header value.
pub fn parse_basic(header: Option<&str>) -> Option<(String, String)> {
    use base64::Engine;
    let v = header?.trim();
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':').unwrap_or((text.as_str(), ""));
    Some((u.to_string(), p.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_header_parsing() {
        use base64::Engine;
        let enc = base64::engine::general_purpose::STANDARD.encode("ws1:key:with:colons");
        assert_eq!(
            parse_basic(Some(&format!("Basic {enc}"))),
            Some(("ws1".into(), "key:with:colons".into()))
        );
        let enc = base64::engine::general_purpose::STANDARD.encode("writekey");
        assert_eq!(
            parse_basic(Some(&format!("basic {enc}"))),
            Some(("writekey".into(), String::new()))
        );
        assert_eq!(parse_basic(Some("Bearer x")), None);
        assert_eq!(parse_basic(Some("Basic !!!")), None);
        assert_eq!(parse_basic(None), None);
    }
}

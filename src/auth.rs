//! Who may call the admin API: named tokens with a role. `segsync token
//! create NAME --role admin|viewer` prints a token once; only a salted hash
//! is stored (the `inbound` family, `api_token/<id>`). Once any token
//! exists every `/api/v1` call needs `Authorization: Bearer <token>`; a
//! viewer may only read. A token looks like `ssk_<id>_<secret>`: the id
//! finds the record without trying every hash, the secret is checked
//! against the hash in constant time.

use serde::{Deserialize, Serialize};

use crate::error::{Classify, Fault};
use crate::secret::{random_bytes, Secret};
use crate::store::{self, cf, keys, Store, Write};

/// What a token may do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Read only (GET).
    Viewer,
}

/// A stored token (its secret hashed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// Name, for listing, revoking and "updated by".
    pub name: String,
    /// Public id, part of the token text.
    pub id: String,
    /// The secret part, hashed.
    key: Secret,
    /// Role.
    pub role: Role,
    /// Creation time, Unix ms.
    pub created_ms: i64,
}

/// What listings show of a token (no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Creation time, Unix ms.
    pub created_ms: i64,
}

impl Token {
    /// The listing form.
    pub fn view(&self) -> TokenView {
        TokenView {
            name: self.name.clone(),
            role: self.role,
            created_ms: self.created_ms,
        }
    }
}

/// Errors of token management.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Invalid name.
    #[error("{0}")]
    Invalid(String),
    /// The name is taken.
    #[error("token '{0}' already exists (revoke it first)")]
    Exists(String),
    /// No token of that name.
    #[error("token '{0}' not found (see `segsync token list`)")]
    NotFound(String),
    /// No random bytes for the token.
    #[error("cannot read random bytes for a token: {0}")]
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

/// Every token, by id.
pub fn list(store: &Store) -> Result<Vec<Token>, Error> {
    Ok(store.scan_records(cf::INBOUND, keys::API_TOKEN_PREFIX, "api token")?)
}

/// Creates a token; returns it and its text, which is never shown again.
pub fn create(store: &Store, name: &str, role: Role) -> Result<(Token, String), Error> {
    if name.trim().is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(Error::Invalid(format!(
            "token name {name:?} must be 1 to 64 characters, none of them control characters"
        )));
    }
    if list(store)?.iter().any(|t| t.name == name) {
        return Err(Error::Exists(name.to_string()));
    }
    let id = hex::encode(random_bytes::<4>().map_err(Error::Random)?);
    let secret = hex::encode(random_bytes::<16>().map_err(Error::Random)?);
    let token = Token {
        name: name.to_string(),
        id: id.clone(),
        key: Secret::new(&secret).map_err(Error::Random)?,
        role,
        created_ms: chrono::Utc::now().timestamp_millis(),
    };
    store.write_records(
        vec![Write::record(cf::INBOUND, keys::api_token(&id), &token)],
        true,
    )?;
    Ok((token, format!("ssk_{id}_{secret}")))
}

/// Revokes the token called `name`.
pub fn revoke(store: &Store, name: &str) -> Result<(), Error> {
    let t = list(store)?
        .into_iter()
        .find(|t| t.name == name)
        .ok_or_else(|| Error::NotFound(name.to_string()))?;
    store.write_records(
        vec![Write::Delete(cf::INBOUND, keys::api_token(&t.id))],
        true,
    )?;
    Ok(())
}

/// The token `text` is, among `tokens`, if any.
pub fn verify<'t>(tokens: &'t [Token], text: &str) -> Option<&'t Token> {
    let rest = text.trim().strip_prefix("ssk_")?;
    let (id, secret) = rest.split_once('_')?;
    tokens
        .iter()
        .find(|t| t.id == id)
        .filter(|t| t.key.matches(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_by_id_and_secret_and_are_never_stored_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (admin, text) = create(&store, "ops", Role::Admin).unwrap();
        let (_, viewer_text) = create(&store, "dash", Role::Viewer).unwrap();
        assert!(matches!(
            create(&store, "ops", Role::Viewer),
            Err(Error::Exists(_))
        ));
        assert!(matches!(
            create(&store, " ", Role::Viewer),
            Err(Error::Invalid(_))
        ));
        let all = list(&store).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(verify(&all, &text).map(|t| &t.name), Some(&admin.name));
        assert_eq!(
            verify(&all, &viewer_text).map(|t| t.role),
            Some(Role::Viewer)
        );
        let secret = text.rsplit('_').next().unwrap();
        let forged = format!("ssk_{}_{}", admin.id, "0".repeat(secret.len()));
        assert!(verify(&all, &forged).is_none());
        assert!(verify(&all, "Bearer nonsense").is_none());
        let stored = serde_json::to_string(&all).unwrap();
        assert!(!stored.contains(secret));
        revoke(&store, "ops").unwrap();
        assert!(verify(&list(&store).unwrap(), &text).is_none());
        assert!(matches!(revoke(&store, "ops"), Err(Error::NotFound(_))));
    }
}

//! Who is calling the admin API: this machine's CLI (the token in
//! `serve.json`), anyone while no token exists (loopback only), or a stored
//! token with its role; the middleware that answers 401 and 403 for every
//! `/api/v1` route, and the identity the console's `whoami` reports.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::reply::{err, ApiError};
use super::AppState;
use crate::auth::{self, Role};

/// Who made a request to the admin API: a token's name, or `local` while no
/// token exists (the API is then open, on loopback only).
#[derive(Debug, Clone)]
pub(crate) struct Actor(pub(crate) String);

/// Who presents `headers`' bearer token: this machine's CLI (through
/// serve.json), anyone while no token exists (the API is then open, on
/// loopback only), or a stored token; `None` for no or an unknown token
/// once tokens exist.
pub(crate) fn identify(s: &AppState, headers: &axum::http::HeaderMap) -> Option<(Actor, Role)> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented.is_some() && presented == s.local_token.as_deref() {
        return Some((Actor("cli".into()), Role::Admin));
    }
    let tokens = s.tokens();
    if tokens.is_empty() {
        return Some((Actor("local".into()), Role::Admin));
    }
    let token = presented.and_then(|p| auth::verify(&tokens, p))?;
    Some((Actor(token.name.clone()), token.role))
}

/// Once any token exists, every `/api/v1` call needs `Authorization: Bearer
/// <token>` (401 without or with an unknown one); a viewer token may only
/// read (403 for anything but GET and HEAD).
pub(crate) async fn authorize(
    State(s): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some((actor, role)) = identify(&s, req.headers()) else {
        let mut resp = err(
            401,
            "this API needs a token: Authorization: Bearer <token> (see `segsync token create`)",
        )
        .into_response();
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
        return Ok(resp);
    };
    let read_only = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    // The command runner checks a viewer's commands itself; a preview is
    // a POST only to carry the configuration, and changes nothing.
    let runs_commands = req.uri().path() == "/api/v1/commands";
    let previews = req.uri().path() == "/api/v1/destination-preview";
    if role == Role::Viewer && !read_only && !runs_commands && !previews {
        return Err(err(
            403,
            format!("token '{}' is a viewer: it may only read", actor.0),
        ));
    }
    req.extensions_mut().insert(role);
    req.extensions_mut().insert(actor);
    Ok(next.run(req).await)
}

//! The web console: a single-page app (plain HTML, CSS and JavaScript in
//! `src/server/console/`, no build step) embedded in the binary and served
//! at `/`. It is only a client of `/api/v1`, with the token a person signs
//! in with: every rule it shows (which actions a status allows and why not,
//! the one-time ↔ periodic and start-date rules, the destination's
//! validation and request preview) is the API's answer, so the console, the
//! CLI and scripts cannot disagree.
//!
//! The pages forbid every fetch but to this server (a Content-Security-
//! Policy of `'self'`): no CDN, no font or chart service, nothing from the
//! internet.

use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::AppState;

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/app.js");
const STYLE: &str = include_str!("console/app.css");

/// Nothing but this origin; no inline script or style.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // The assets change with the binary: always revalidate.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// `/` and the console's two assets.
pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/console/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/console/app.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

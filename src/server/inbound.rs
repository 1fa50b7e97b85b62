//! HTTP for the inbound endpoints: `POST /v1/integrations/cohortsync`
//! (Cohort Sync receiver) and `POST /v1/identify`, `/v1/track`, `/v1/batch`
//! (Personas). Handlers only pick headers and body apart and run the logic
//! of [`crate::inbound`] on a blocking thread (it reads and writes RocksDB).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::AppState;
use crate::destination::cohort_sync::{APPKEY_HEADER, PARTNER_HEADER};
use crate::inbound::{cohort, personas, Reply};

fn respond(r: Reply) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, Json(r.body)).into_response();
    if let Some(secs) = r.retry_after {
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    resp
}

fn text<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Decompressed bodies larger than this are refused before any check: the
/// endpoints' own limits (32 KB a call, 500 KB a batch, 128 KB a cohort
/// request) then apply to what was decompressed.
const MAX_INFLATED: u64 = 4 << 20;

/// The body as sent, or inflated when `Content-Encoding: gzip` (Segment's
/// client libraries send that when asked). A corrupt or oversized gzip body
/// is a 400/413 reply.
fn inflate(headers: &HeaderMap, body: Bytes) -> Result<Bytes, Reply> {
    let gzip = text(headers, header::CONTENT_ENCODING.as_str())
        .is_some_and(|e| e.trim().eq_ignore_ascii_case("gzip"));
    if !gzip {
        return Ok(body);
    }
    use std::io::Read;
    let mut out = Vec::with_capacity(body.len() * 4);
    let mut dec = flate2::read::MultiGzDecoder::new(&body[..]).take(MAX_INFLATED + 1);
    dec.read_to_end(&mut out).map_err(|e| {
        Reply::error(
            400,
            format!("body: Content-Encoding gzip, but it does not inflate: {e}"),
        )
    })?;
    if out.len() as u64 > MAX_INFLATED {
        return Err(Reply::error(
            413,
            format!("body inflates to more than {MAX_INFLATED} bytes"),
        ));
    }
    Ok(Bytes::from(out))
}

async fn blocking(f: impl FnOnce() -> Reply + Send + 'static) -> Response {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => respond(r),
        Err(e) => {
            tracing::error!(error = %e, "inbound handler panicked");
            respond(Reply::error(500, "internal error (see the server log)"))
        }
    }
}

#[utoipa::path(
    post,
    path = "/v1/integrations/cohortsync",
    request_body(content = String, content_type = "application/json", description = "the request as the sender defines it; Content-Encoding gzip accepted"),
    responses((status = 200, description = "applied (or a repeated Idempotency-Key: the first answer)"), (status = 400, description = "bad headers or body, the field named"), (status = 401, description = "not a registered workspace and key"), (status = 409, description = "older than the last request applied"), (status = 413, description = "body over the limit"), (status = 429, description = "over the rate; Retry-After says when"), (status = 500, description = "internal error"))
)]
pub(crate) async fn cohortsync(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = Instant::now();
    blocking(move || {
        let body = match inflate(&headers, body) {
            Ok(b) => b,
            Err(r) => return r,
        };
        let req = cohort::Request {
            authorization: text(&headers, header::AUTHORIZATION.as_str()),
            appkey: text(&headers, APPKEY_HEADER),
            partner: text(&headers, PARTNER_HEADER),
            idempotency_key: text(&headers, "idempotency-key"),
            body: &body,
        };
        cohort::handle(&s.store, &s.cohort_limiter, s.cohort_limits, &req, now)
    })
    .await
}

/// `POST /v1/{identify,track,batch}`.
/// `POST /v1/identify`: a user and their traits (boolean traits are audiences).
#[utoipa::path(
    post,
    path = "/v1/identify",
    request_body(content = String, content_type = "application/json", description = "Segment's spec for the call; Content-Encoding gzip accepted"),
    responses((status = 200, description = "applied"), (status = 400, description = "malformed event, the field named"), (status = 401, description = "unknown write key"), (status = 413, description = "over Segment's size limits"), (status = 500, description = "internal error"))
)]
pub(crate) async fn identify(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    personas_call(s, personas::Endpoint::Identify, headers, body).await
}

/// `POST /v1/track`: an event (Audience Entered/Exited change membership).
#[utoipa::path(
    post,
    path = "/v1/track",
    request_body(content = String, content_type = "application/json", description = "Segment's spec for the call; Content-Encoding gzip accepted"),
    responses((status = 200, description = "applied"), (status = 400, description = "malformed event, the field named"), (status = 401, description = "unknown write key"), (status = 413, description = "over Segment's size limits"), (status = 500, description = "internal error"))
)]
pub(crate) async fn track(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    personas_call(s, personas::Endpoint::Track, headers, body).await
}

/// `POST /v1/batch`: identify and track calls together, all or nothing.
#[utoipa::path(
    post,
    path = "/v1/batch",
    request_body(content = String, content_type = "application/json", description = "Segment's spec for the call; Content-Encoding gzip accepted"),
    responses((status = 200, description = "applied"), (status = 400, description = "malformed event, the field named"), (status = 401, description = "unknown write key"), (status = 413, description = "over Segment's size limits"), (status = 500, description = "internal error"))
)]
pub(crate) async fn batch(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    personas_call(s, personas::Endpoint::Batch, headers, body).await
}

/// `POST /v1/{call}` for any other name: 404 naming the endpoints there are.
pub(crate) async fn unknown(Path(call): Path<String>) -> Response {
    respond(Reply::error(
        404,
        format!("no endpoint /v1/{call} (identify, track, batch, integrations/cohortsync)"),
    ))
}

async fn personas_call(
    s: Arc<AppState>,
    endpoint: personas::Endpoint,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let small =
        body.len() <= personas::MAX_EVENT_BYTES && !headers.contains_key(header::CONTENT_ENCODING);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let submit = move || {
        let body = match inflate(&headers, body) {
            Ok(b) => b,
            Err(r) => {
                let _ = tx.send(r.into());
                return;
            }
        };
        s.personas.submit(
            &s.store,
            endpoint,
            text(&headers, header::AUTHORIZATION.as_str()),
            &body,
            move |r| {
                let _ = tx.send(r);
            },
        );
    };
    // A single event is checked and parsed right here (tens of
    // microseconds: a blocking-pool hand-off would cost more than the work);
    // a compressed body or a batch of up to 500 KB goes to a blocking thread.
    // Either way the reply comes from the group committer once the write is
    // durable.
    if small {
        submit();
    } else if let Err(e) = tokio::task::spawn_blocking(submit).await {
        tracing::error!(error = %e, "personas handler panicked");
        return respond(Reply::error(500, "internal error (see the server log)"));
    }
    match rx.await {
        // Serialized straight from the summary: no `serde_json::Value`.
        Ok(personas::Answer::Applied(summary)) => (StatusCode::OK, Json(summary)).into_response(),
        Ok(personas::Answer::Reply(r)) => respond(r),
        Err(_) => respond(Reply::error(500, "the request was dropped unanswered")),
    }
}

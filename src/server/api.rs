//! The admin REST API under `/api/v1` (the CLI's operations over HTTP),
//! `/healthz` and `/metrics`. One error path: [`ApiError`] turns every
//! failure into a JSON body `{"error": …}` with the status of its
//! [`Fault`](crate::error::Fault) — 400 bad input, 404 unknown, 409 not
//! allowed in this status or now, 429 limit reached — or an opaque 500 that
//! is logged once.
//!
//! Handlers never touch the store on the async runtime: every call into the
//! library runs in [`blocking`] (RocksDB reads, runs being planned), and
//! mail is sent by the mailer task, never inside a request.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::routing::get;
use axum::Extension;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::gate::Actor;
use super::reply::{blocking, err, ApiResult};
use super::AppState;
use crate::auth::{self, Role};
use crate::destination::{self, DestinationConfig};
use crate::lifecycle::actions::{self, NewSync, SyncEdit};
use crate::lifecycle::rules::Action;
use crate::lifecycle::view::SyncView;
use crate::lifecycle::{
    notify, ExecutionRecord, Frequency, Schedule, SyncRecord, SyncStatus, Trigger,
};

/// Parses a JSON body, answering 400 with serde's message (line, column, field).
use super::admin::{self, body};

pub(crate) fn router(state: Arc<AppState>) -> Router {
    use super::{inbound, upload};
    // Every handler is registered with the `#[utoipa::path]` that describes
    // it, so the OpenAPI document is generated from the code it describes.
    let (api, api_doc) = OpenApiRouter::<Arc<AppState>>::new()
        .routes(routes!(segments))
        .routes(routes!(segment))
        .routes(routes!(upload::snapshot))
        .routes(routes!(admin::segment_diff))
        .routes(routes!(upload::users))
        .routes(routes!(destinations, add_destination))
        .routes(routes!(
            get_destination,
            put_destination,
            delete_destination
        ))
        .routes(routes!(admin::preview))
        .routes(routes!(admin::test))
        .routes(routes!(admin::preview_unsaved))
        .routes(routes!(admin::test_unsaved))
        .routes(routes!(admin::workspaces, admin::add_workspace))
        .routes(routes!(admin::remove_workspace))
        .routes(routes!(admin::cohorts))
        .routes(routes!(admin::write_keys, admin::add_write_key))
        .routes(routes!(admin::remove_write_key))
        .routes(routes!(admin::limits))
        .routes(routes!(admin::command))
        .routes(routes!(syncs, create_sync))
        .routes(routes!(get_sync, edit_sync))
        .routes(routes!(executions))
        .routes(routes!(plan, discard_plan))
        .routes(routes!(replay))
        .routes(routes!(pages))
        .routes(routes!(act))
        .routes(routes!(notifications))
        .routes(routes!(workers))
        .routes(routes!(tokens, create_token))
        .routes(routes!(revoke_token))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::gate::authorize,
        ))
        .split_for_parts();
    let (inbound_routes, inbound_doc) = OpenApiRouter::<Arc<AppState>>::new()
        // Outside the token check: it says whether the caller is signed in.
        .routes(routes!(admin::whoami))
        .routes(routes!(inbound::cohortsync))
        .routes(routes!(inbound::identify))
        .routes(routes!(inbound::track))
        .routes(routes!(inbound::batch))
        .route("/v1/{call}", axum::routing::post(inbound::unknown))
        // Our own size checks answer with JSON and the exact limit; this
        // only stops absurd bodies before they are read.
        .layer(axum::extract::DefaultBodyLimit::max(4 << 20))
        .split_for_parts();
    let doc = super::openapi::document(api_doc, inbound_doc);
    Router::new()
        .merge(super::console::router())
        .route("/healthz", get(|| async { "ok" }))
        // The API's description stays readable without a token.
        .route(
            "/api/v1/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], doc) }
            }),
        )
        .route(
            "/metrics",
            get(|State(s): State<Arc<AppState>>| async move {
                let mut text = crate::metrics::render();
                crate::metrics::render_memory(&mut text, &s.store.memory());
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
            }),
        )
        .merge(api)
        .merge(inbound_routes)
        .with_state(state)
}

#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    responses((status = 200, description = "tokens: names and roles, never the tokens"))
)]
async fn tokens(State(s): State<Arc<AppState>>) -> ApiResult<Json<Value>> {
    blocking(&s, |s| {
        let all: Vec<_> = auth::list(&s.store)?
            .iter()
            .map(auth::Token::view)
            .collect();
        Ok(Json(json!(all)))
    })
    .await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenBody {
    name: String,
    role: Role,
}

#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    request_body = TokenBody,
    responses((status = 201, description = "created; the answer carries the token once"), (status = 400, description = "invalid name"), (status = 409, description = "the name is taken"))
)]
async fn create_token(
    State(s): State<Arc<AppState>>,
    b: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let t: TokenBody = body(&b)?;
    blocking(&s, move |s| {
        let (token, text) = auth::create(&s.store, &t.name, t.role)?;
        s.reload_tokens()?;
        let mut v = json!(token.view());
        // Shown once; only its hash is kept.
        v["token"] = json!(text);
        Ok((StatusCode::CREATED, Json(v)))
    })
    .await
}

#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{name}",
    params(("name" = String, Path, description = "token name")),
    responses((status = 204, description = "revoked"), (status = 404, description = "no such token"))
)]
async fn revoke_token(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    blocking(&s, move |s| {
        auth::revoke(&s.store, &name)?;
        s.reload_tokens()?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

#[utoipa::path(
    get,
    path = "/api/v1/segments",
    responses((status = 200, description = "every segment with its snapshots"))
)]
async fn segments(State(s): State<Arc<AppState>>) -> ApiResult<Json<Value>> {
    blocking(&s, |s| Ok(Json(json!(s.store.segments()?)))).await
}

#[utoipa::path(
    get,
    path = "/api/v1/segments/{name}",
    params(("name" = String, Path, description = "segment name")),
    responses((status = 200, description = "the segment"), (status = 404, description = "no such segment"))
)]
async fn segment(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    blocking(&s, move |s| {
        let seg = s
            .store
            .segment(&name)?
            .ok_or_else(|| err(404, format!("segment '{name}' not found")))?;
        let mut v = json!(seg);
        // What each recent snapshot changed (the console's segment page).
        v["changes"] = json!(crate::plan::snapshot_changes(
            &s.store,
            &seg,
            SNAPSHOT_CHANGES
        )?);
        Ok(Json(v))
    })
    .await
}

/// Snapshots whose changes a segment's detail shows.
const SNAPSHOT_CHANGES: usize = 50;

fn shown(rec: &destination::DestinationRecord) -> Value {
    let mut v = json!(rec.config.clone().masked());
    v["id"] = json!(rec.id);
    v
}

#[utoipa::path(
    get,
    path = "/api/v1/destinations",
    responses((status = 200, description = "destinations, secrets masked"))
)]
async fn destinations(State(s): State<Arc<AppState>>) -> ApiResult<Json<Value>> {
    blocking(&s, |s| {
        Ok(Json(Value::Array(
            destination::list(&s.store)?.iter().map(shown).collect(),
        )))
    })
    .await
}

#[utoipa::path(
    post,
    path = "/api/v1/destinations",
    request_body = DestinationConfig,
    responses((status = 201, description = "added"), (status = 400, description = "invalid, the field named"), (status = 409, description = "the name is taken"))
)]
async fn add_destination(
    State(s): State<Arc<AppState>>,
    b: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let cfg: DestinationConfig = body(&b)?;
    blocking(&s, move |s| {
        Ok((
            StatusCode::CREATED,
            Json(shown(&destination::add(&s.store, cfg)?)),
        ))
    })
    .await
}

#[utoipa::path(
    get,
    path = "/api/v1/destinations/{name}",
    params(("name" = String, Path, description = "destination name")),
    responses((status = 200, description = "the destination, secrets masked"), (status = 404, description = "no such destination"))
)]
async fn get_destination(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    blocking(&s, move |s| {
        Ok(Json(shown(&destination::get(&s.store, &name)?)))
    })
    .await
}

#[utoipa::path(
    put,
    path = "/api/v1/destinations/{name}",
    params(("name" = String, Path, description = "destination name")),
    request_body = DestinationConfig,
    responses((status = 200, description = "replaced"), (status = 400, description = "invalid, the field named"), (status = 404, description = "no such destination"))
)]
async fn put_destination(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    b: Bytes,
) -> ApiResult<Json<Value>> {
    let mut cfg: DestinationConfig = body(&b)?;
    blocking(&s, move |s| {
        Ok(Json(shown(&destination::edit(&s.store, &name, |c| {
            cfg.keep_masked_secrets(c);
            *c = cfg
        })?)))
    })
    .await
}

#[utoipa::path(
    delete,
    path = "/api/v1/destinations/{name}",
    params(("name" = String, Path, description = "destination name")),
    responses((status = 204, description = "removed"), (status = 404, description = "no such destination"), (status = 409, description = "a sync still uses it"))
)]
async fn delete_destination(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    blocking(&s, move |s| {
        actions::remove_destination(&s.store, &name)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// The seed's list and detail fields of a sync.
fn sync_view(state: &AppState, s: &SyncRecord) -> Value {
    match SyncView::of(&state.store, s, state.is_running(s.id), Utc::now()) {
        Ok(v) => json!(v),
        Err(e) => {
            tracing::error!(error = %e, sync = s.id, "cannot read a sync's view");
            json!(s)
        }
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Only syncs in this status (`archived` gives the Archived Syncs page).
    #[serde(default)]
    status: Option<SyncStatus>,
}

#[utoipa::path(
    get,
    path = "/api/v1/syncs",
    params(ListQuery),
    responses((status = 200, description = "the Synced Segments list: each sync with its view"), (status = 400, description = "unknown status"))
)]
async fn syncs(
    State(s): State<Arc<AppState>>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Value>> {
    blocking(&s, move |s| {
        Ok(Json(Value::Array(
            SyncRecord::all(&s.store)?
                .iter()
                .filter(|r| q.status.is_none_or(|st| r.status == st))
                .map(|r| sync_view(s, r))
                .collect(),
        )))
    })
    .await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBody {
    segment: String,
    destination: String,
    attribute: String,
    schedule: Schedule,
    #[serde(default)]
    start: Option<DateTime<Utc>>,
    #[serde(default)]
    end: Option<DateTime<Utc>>,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default)]
    notify: Vec<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/syncs",
    request_body = CreateBody,
    responses((status = 201, description = "created"), (status = 400, description = "invalid"), (status = 404, description = "unknown segment, destination or attribute"), (status = 409, description = "an inactive sync blocks it"), (status = 429, description = "a limit was reached"))
)]
async fn create_sync(
    State(s): State<Arc<AppState>>,
    Extension(by): Extension<Actor>,
    b: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let c: CreateBody = body(&b)?;
    blocking(&s, move |s| {
        let rec = actions::create(
            &s.store,
            NewSync {
                segment: c.segment,
                destination: c.destination,
                attribute: c.attribute,
                schedule: c.schedule,
                start: c.start,
                end: c.end,
                timezone: c.timezone,
                notify: c.notify,
            },
            Utc::now(),
            &by.0,
        )?;
        Ok((StatusCode::CREATED, Json(sync_view(s, &rec))))
    })
    .await
}

fn parse_id(id: &str) -> ApiResult<u32> {
    id.parse()
        .map_err(|_| err(400, format!("sync id {id:?} is not a number")))
}

#[utoipa::path(
    get,
    path = "/api/v1/syncs/{id}",
    params(("id" = String, Path, description = "sync id")),
    responses((status = 200, description = "the detail view with the recent history"), (status = 400, description = "not a number"), (status = 404, description = "no such sync"))
)]
async fn get_sync(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&id)?;
    blocking(&s, move |s| {
        let rec = actions::load(&s.store, id)?;
        let mut v = sync_view(s, &rec);
        // The detail page: the recent history, newest first.
        let all = ExecutionRecord::all(&s.store, id)?;
        let history: Vec<Value> = all
            .iter()
            .rev()
            .take(RECENT_HISTORY)
            .map(execution_view)
            .collect();
        v["history"] = json!(history);
        if s.is_running(id) {
            if let Some(e) = all.last() {
                v["progress"] = progress_view(e, &rec.destination, Utc::now());
            }
        }
        Ok(Json(v))
    })
    .await
}

/// A running execution's progress: pages acknowledged of all, users sent
/// (estimated as pages × page size, capped by the plan's users), users per
/// second since it started, and the destination's current rate against its
/// ceiling (while the rate limiter is live).
fn progress_view(e: &ExecutionRecord, destination: &str, now: DateTime<Utc>) -> Value {
    let planned = e.added + e.removed + 2 * e.updated;
    let users = (u64::from(e.pages_done) * u64::from(e.page_size)).min(planned);
    let elapsed = ((now.timestamp_millis() - e.started_ms) as f64 / 1000.0).max(0.001);
    let (rate, limit) = match crate::pipeline::rate::current(destination) {
        Some((rate, limit)) => (Some(rate.round()), Some(limit)),
        None => (None, None),
    };
    json!({
        "seq": e.seq,
        "pages_done": e.pages_done,
        "total_pages": e.total_pages,
        "users_done": users,
        "users_planned": planned,
        "elapsed_s": elapsed,
        "users_per_s": users as f64 / elapsed,
        "rate_rpm": rate,
        "limit_rpm": limit,
    })
}

/// Executions shown with a sync's detail.
const RECENT_HISTORY: usize = 10;

fn execution_view(e: &ExecutionRecord) -> Value {
    let mut v = json!(e);
    v["execution_id"] = json!(e.execution_id());
    v["seconds"] = json!(e.seconds());
    v
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EditBody {
    #[serde(default)]
    destination: Option<String>,
    #[serde(default)]
    every: Option<Frequency>,
    #[serde(default)]
    start: Option<DateTime<Utc>>,
    #[serde(default)]
    end: Option<DateTime<Utc>>,
    #[serde(default)]
    no_end: bool,
    #[serde(default)]
    notify: Option<Vec<String>>,
}

#[utoipa::path(
    patch,
    path = "/api/v1/syncs/{id}",
    params(("id" = String, Path, description = "sync id")),
    request_body = EditBody,
    responses((status = 200, description = "edited"), (status = 400, description = "invalid"), (status = 404, description = "no such sync or destination"), (status = 409, description = "not allowed in its status"), (status = 429, description = "hourly schedules are not enabled"))
)]
async fn edit_sync(
    State(s): State<Arc<AppState>>,
    Extension(by): Extension<Actor>,
    Path(id): Path<String>,
    b: Bytes,
) -> ApiResult<Json<Value>> {
    let e: EditBody = body(&b)?;
    let id = parse_id(&id)?;
    let edit = SyncEdit {
        destination: e.destination,
        every: e.every,
        start: e.start,
        end: SyncEdit::end_change(e.end, e.no_end),
        notify: e.notify,
    };
    let view = blocking(&s, move |s| {
        let rec = actions::edit(&s.store, id, edit, Utc::now(), &by.0)?;
        Ok(Json(sync_view(s, &rec)))
    })
    .await?;
    // The config-update notification is in the outbox; the mailer sends it.
    s.mail.notify_one();
    Ok(view)
}

#[utoipa::path(
    post,
    path = "/api/v1/syncs/{id}/{action}",
    params(("id" = String, Path, description = "sync id"), ("action" = String, Path, description = "run, pause, resync-all, resync-last or archive")),
    responses((status = 200, description = "paused or archived"), (status = 202, description = "run checked, planned and started: sync, started, execution"), (status = 400, description = "not a number"), (status = 404, description = "no such sync or action"), (status = 409, description = "not allowed now (status, running, cool-off)"), (status = 429, description = "a limit was reached"))
)]
async fn act(
    State(s): State<Arc<AppState>>,
    Extension(by): Extension<Actor>,
    Path((id, action)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let id = parse_id(&id)?;
    let trigger = match action.as_str() {
        "pause" | "archive" => {
            let a = if action == "pause" {
                Action::Pause
            } else {
                Action::Archive
            };
            return blocking(&s, move |s| {
                let rec = actions::set_status(&s.store, id, a, Utc::now(), &by.0)?;
                if a == Action::Archive {
                    // Archived is final: a run in progress stops at the next
                    // page boundary, checkpointed.
                    s.stop_run(id);
                }
                Ok((StatusCode::OK, Json(sync_view(s, &rec))))
            })
            .await;
        }
        "run" => Trigger::AdHoc,
        "resync-all" => Trigger::ResyncAll,
        "resync-last" => Trigger::ResyncLast,
        other => {
            return Err(err(
                404,
                format!("unknown action {other:?} (run, pause, resync-all, resync-last, archive)"),
            ))
        }
    };
    let (exec, note) = blocking(&s, move |s| Ok(s.start_run(id, trigger, &by.0)?)).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "sync": id, "started": action, "execution": exec.seq, "note": note })),
    ))
}

fn parse_seq(seq: &str) -> ApiResult<u32> {
    seq.parse()
        .map_err(|_| err(400, format!("execution number {seq:?} is not a number")))
}

/// `POST /api/v1/syncs/{id}/executions/{seq}/replay`: sends the pages of a
/// failed execution that were not delivered again, same bodies and keys.
#[utoipa::path(
    post,
    path = "/api/v1/syncs/{id}/executions/{seq}/replay",
    params(("id" = String, Path, description = "sync id"), ("seq" = String, Path, description = "execution number")),
    responses((status = 202, description = "replay started: sync, started, execution"), (status = 400, description = "not a number, or no such execution"), (status = 404, description = "no such sync"), (status = 409, description = "not the latest execution, not failed, or not allowed now"), (status = 429, description = "a limit was reached"))
)]
async fn replay(
    State(s): State<Arc<AppState>>,
    Extension(by): Extension<Actor>,
    Path((id, seq)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let (id, seq) = (parse_id(&id)?, parse_seq(&seq)?);
    let (exec, _) = blocking(&s, move |s| Ok(s.start_replay(id, seq, &by.0)?)).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "sync": id, "started": "replay", "execution": exec.seq })),
    ))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct PagesQuery {
    /// Only the pages not delivered.
    #[serde(default)]
    failed: bool,
}

/// `GET /api/v1/syncs/{id}/executions/{seq}/pages`: per-page outcomes.
#[utoipa::path(
    get,
    path = "/api/v1/syncs/{id}/executions/{seq}/pages",
    params(("id" = String, Path, description = "sync id"), ("seq" = String, Path, description = "execution number"), PagesQuery),
    responses((status = 200, description = "attempts, delivered, refusing status, error excerpt and time of each page"), (status = 400, description = "not a number, or no such execution"), (status = 404, description = "no such sync"))
)]
async fn pages(
    State(s): State<Arc<AppState>>,
    Path((id, seq)): Path<(String, String)>,
    Query(q): Query<PagesQuery>,
) -> ApiResult<Json<Value>> {
    let (id, seq) = (parse_id(&id)?, parse_seq(&seq)?);
    blocking(&s, move |s| {
        actions::load(&s.store, id)?;
        let e = ExecutionRecord::load(&s.store, id, seq)?
            .ok_or_else(|| err(400, format!("sync {id} has no execution {seq}")))?;
        s.store.ensure_details(&e)?;
        let all = if q.failed {
            e.failed_pages(&s.store)?
        } else {
            e.page_outcomes(&s.store)?
        };
        Ok(Json(json!(all)))
    })
    .await
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlanQuery {
    /// How many of the plan's requests to show (default 3).
    #[serde(default)]
    requests: Option<usize>,
}

/// The most requests a plan shows.
const MAX_SHOWN: usize = 100;

/// `POST /api/v1/syncs/{id}/plan`: plans the next execution without
/// sending (or returns the plan made already).
#[utoipa::path(
    post,
    path = "/api/v1/syncs/{id}/plan",
    params(("id" = String, Path, description = "sync id"), PlanQuery),
    responses((status = 200, description = "the planned execution and its first requests exactly as they will go out"), (status = 400, description = "not a number"), (status = 404, description = "no such sync, segment or attribute"), (status = 409, description = "not allowed now, or an execution is in progress"), (status = 429, description = "a limit was reached"))
)]
async fn plan(
    State(s): State<Arc<AppState>>,
    Extension(by): Extension<Actor>,
    Path(id): Path<String>,
    Query(q): Query<PlanQuery>,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&id)?;
    if s.is_running(id) {
        return Err(err(409, format!("sync {id} is running")));
    }
    let show = q.requests.unwrap_or(3).min(MAX_SHOWN);
    blocking(&s, move |s| {
        Ok(Json(json!(actions::plan(
            &s.store,
            id,
            Utc::now(),
            &by.0,
            show
        )?)))
    })
    .await
}

/// `DELETE /api/v1/syncs/{id}/plan`: drops the plan (nothing was sent).
#[utoipa::path(
    delete,
    path = "/api/v1/syncs/{id}/plan",
    params(("id" = String, Path, description = "sync id")),
    responses((status = 200, description = "the discarded execution"), (status = 400, description = "not a number"), (status = 404, description = "no such sync"), (status = 409, description = "there is no plan to discard"))
)]
async fn discard_plan(
    State(s): State<Arc<AppState>>,
    Extension(by): Extension<Actor>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&id)?;
    blocking(&s, move |s| {
        Ok(Json(execution_view(&actions::discard_plan(
            &s.store, id, &by.0,
        )?)))
    })
    .await
}

#[utoipa::path(
    get,
    path = "/api/v1/syncs/{id}/executions",
    params(("id" = String, Path, description = "sync id")),
    responses((status = 200, description = "the sync's executions, oldest first"), (status = 400, description = "not a number"), (status = 404, description = "no such sync"))
)]
async fn executions(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&id)?;
    blocking(&s, move |s| {
        actions::load(&s.store, id)?;
        let all = ExecutionRecord::all(&s.store, id)?;
        Ok(Json(Value::Array(all.iter().map(execution_view).collect())))
    })
    .await
}

#[utoipa::path(
    get,
    path = "/api/v1/notifications",
    responses((status = 200, description = "the notification outbox, oldest first"))
)]
async fn notifications(State(s): State<Arc<AppState>>) -> ApiResult<Json<Value>> {
    blocking(&s, |s| Ok(Json(json!(notify::list(&s.store)?)))).await
}

#[utoipa::path(
    get,
    path = "/api/v1/workers",
    responses((status = 200, description = "the NATS server (null without --nats) and the workers heard from: pages in flight, delivered, failed, last error"))
)]
async fn workers(State(s): State<Arc<AppState>>) -> Json<Value> {
    Json(match &s.cluster {
        Some(c) => json!({
            "nats": c.options.url,
            "ack_wait_secs": c.options.ack_wait.as_secs_f64(),
            "workers": c.workers(),
        }),
        None => json!({ "nats": null, "workers": [] }),
    })
}

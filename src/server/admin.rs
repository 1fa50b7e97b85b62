//! The rest of the CLI's operations under `/api/v1`: segment diffs, the
//! destination preview and connection test (for a saved destination, or a
//! configuration being typed), workspaces and the cohorts received from
//! them, Personas write keys, and the limits in force. Each handler calls
//! the same library function as the CLI command of the same name.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::reply::{blocking, err, ApiResult};
use super::AppState;
use crate::destination::{self, DestinationConfig};
use crate::inbound::{self, cohort};
use crate::plan;

/// Parses a JSON body, answering 400 with serde's message (line, column, field).
pub(crate) fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|e| err(400, format!("invalid request body: {e}")))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct DiffQuery {
    #[serde(default)]
    from: Option<u32>,
    #[serde(default)]
    to: Option<u32>,
    #[serde(default)]
    attribute: Option<String>,
    #[serde(default)]
    ids: bool,
}

/// `GET /api/v1/segments/{name}/diff?from=&to=&attribute=&ids=`.
#[utoipa::path(
    get,
    path = "/api/v1/segments/{name}/diff",
    params(("name" = String, Path, description = "segment name"), DiffQuery),
    responses((status = 200, description = "counts, and the ids with ids=true"), (status = 400, description = "bad query"), (status = 404, description = "unknown segment, snapshot or attribute"))
)]
pub(crate) async fn segment_diff(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Query<DiffQuery>,
) -> ApiResult<Json<Value>> {
    blocking(&s, move |s| {
        let d = plan::segment_diff(&s.store, &name, q.from, q.to, q.attribute.as_deref())?;
        let mut v = json!(d);
        if q.ids {
            let (added, removed) = d.ids(&s.store)?;
            v["added_ids"] = json!(added);
            v["removed_ids"] = json!(removed);
        }
        Ok(Json(v))
    })
    .await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct AttributeQuery {
    #[serde(default = "default_attribute")]
    attribute: String,
}

fn default_attribute() -> String {
    "uid".into()
}

/// `GET /api/v1/destinations/{name}/preview?attribute=`: the exact request
/// a sync would send for a sample page, secrets masked.
#[utoipa::path(
    get,
    path = "/api/v1/destinations/{name}/preview",
    params(("name" = String, Path, description = "destination name"), AttributeQuery),
    responses((status = 200, description = "method, url, headers (secrets masked), body"), (status = 400, description = "bad query, or the stored destination no longer validates"), (status = 404, description = "no such destination"))
)]
pub(crate) async fn preview(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Query<AttributeQuery>,
) -> ApiResult<Json<Value>> {
    blocking(&s, move |s| {
        let d = destination::get(&s.store, &name)?.validated()?;
        Ok(Json(json!(destination::preview(&d, &q.attribute))))
    })
    .await
}

/// `POST /api/v1/destination-preview?attribute=` with a configuration that
/// is not saved: the preview as it would be (the console's live preview),
/// or 400 naming the field that does not validate.
#[utoipa::path(
    post,
    path = "/api/v1/destination-preview",
    params(AttributeQuery),
    request_body = DestinationConfig,
    responses((status = 200, description = "method, url, headers (secrets masked), body"), (status = 400, description = "invalid, the field named"))
)]
pub(crate) async fn preview_unsaved(
    Query(q): Query<AttributeQuery>,
    b: Bytes,
) -> ApiResult<Json<Value>> {
    let cfg: DestinationConfig = body(&b)?;
    let d = cfg.validate(0)?;
    Ok(Json(json!(destination::preview(&d, &q.attribute))))
}

/// `POST /api/v1/destinations/{name}/test?attribute=`: one sample user
/// through the real sender; 200 with the report either way (`ok` says
/// whether the seed's rule held).
#[utoipa::path(
    post,
    path = "/api/v1/destinations/{name}/test",
    params(("name" = String, Path, description = "destination name"), AttributeQuery),
    responses((status = 200, description = "the test report; ok is the seed's rule (2xx + application/json)"), (status = 400, description = "bad query, or the destination no longer validates"), (status = 404, description = "no such destination"))
)]
pub(crate) async fn test(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Query<AttributeQuery>,
) -> ApiResult<Json<Value>> {
    blocking(&s, move |s| {
        connection_test(
            &destination::get(&s.store, &name)?.validated()?,
            &q.attribute,
        )
    })
    .await
}

/// One sample user through the real sender, reported as JSON.
fn connection_test(d: &destination::Destination, attribute: &str) -> ApiResult<Json<Value>> {
    let report = crate::pipeline::probe::test_connection(d, attribute)?;
    Ok(Json(json!(report)))
}

/// `POST /api/v1/destination-test?attribute=` with a configuration that
/// is not saved (the console's form): the connection test of
/// [`test`]. Secrets still masked as shown are taken from the stored
/// destination of the same name, so testing an edit sends the real key.
#[utoipa::path(
    post,
    path = "/api/v1/destination-test",
    params(AttributeQuery),
    request_body = DestinationConfig,
    responses((status = 200, description = "the test report; ok is the seed's rule (2xx + application/json)"), (status = 400, description = "invalid, the field named"))
)]
pub(crate) async fn test_unsaved(
    State(s): State<Arc<AppState>>,
    Query(q): Query<AttributeQuery>,
    b: Bytes,
) -> ApiResult<Json<Value>> {
    let mut cfg: DestinationConfig = body(&b)?;
    blocking(&s, move |s| {
        if let Ok(stored) = destination::get(&s.store, &cfg.name) {
            cfg.keep_masked_secrets(&stored.config);
        }
        connection_test(&cfg.validate(0)?, &q.attribute)
    })
    .await
}

/// `GET /api/v1/whoami`: whether the caller's token is accepted, with its
/// name and role (the console's sign-in, and why it shows a viewer every
/// action disabled). Answers 200 either way, so a page that asks before
/// anyone signed in logs no error.
#[utoipa::path(
    get,
    path = "/api/v1/whoami",
    responses((status = 200, description = "signed_in, and the token's name and role when it is accepted"))
)]
pub(crate) async fn whoami(
    State(s): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
) -> Json<Value> {
    let tokens_exist = !s.tokens().is_empty();
    Json(match super::gate::identify(&s, &headers) {
        Some((actor, role)) => json!({
            "signed_in": true,
            "name": actor.0,
            "role": role,
            "tokens_exist": tokens_exist,
        }),
        None => json!({ "signed_in": false, "tokens_exist": tokens_exist }),
    })
}

/// A workspace as listed (no key).
fn workspace_view(w: &inbound::Workspace) -> Value {
    json!({
        "id": w.id,
        "uid_attribute": w.uid_attribute,
        "anonymous_id_attribute": w.anonymous_id_attribute,
        "created_ms": w.created_ms,
    })
}

/// `GET /api/v1/workspaces`.
#[utoipa::path(
    get,
    path = "/api/v1/workspaces",
    responses((status = 200, description = "workspaces (no keys)"))
)]
pub(crate) async fn workspaces(State(s): State<Arc<AppState>>) -> ApiResult<Json<Value>> {
    blocking(&s, |s| {
        let all: Vec<Value> = inbound::workspaces(&s.store)?
            .iter()
            .map(workspace_view)
            .collect();
        Ok(Json(json!(all)))
    })
    .await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkspaceBody {
    id: String,
    data_api_key: String,
    #[serde(default = "default_attribute")]
    uid_attribute: String,
    #[serde(default = "default_anonymous")]
    anonymous_id_attribute: String,
}

fn default_anonymous() -> String {
    "anonymous_id".into()
}

/// `POST /api/v1/workspaces`.
#[utoipa::path(
    post,
    path = "/api/v1/workspaces",
    request_body = WorkspaceBody,
    responses((status = 201, description = "registered"), (status = 400, description = "invalid"), (status = 409, description = "already registered"))
)]
pub(crate) async fn add_workspace(
    State(s): State<Arc<AppState>>,
    b: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let w: WorkspaceBody = body(&b)?;
    blocking(&s, move |s| {
        let w = inbound::add_workspace(
            &s.store,
            &w.id,
            &w.data_api_key,
            &w.uid_attribute,
            &w.anonymous_id_attribute,
        )?;
        Ok((StatusCode::CREATED, Json(workspace_view(&w))))
    })
    .await
}

/// `DELETE /api/v1/workspaces/{id}`.
#[utoipa::path(
    delete,
    path = "/api/v1/workspaces/{id}",
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 204, description = "removed"), (status = 404, description = "no such workspace"))
)]
pub(crate) async fn remove_workspace(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    blocking(&s, move |s| {
        inbound::remove_workspace(&s.store, &id)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// `GET /api/v1/cohorts`: cohorts received from other workspaces.
#[utoipa::path(
    get,
    path = "/api/v1/cohorts",
    responses((status = 200, description = "cohorts received from other workspaces"))
)]
pub(crate) async fn cohorts(State(s): State<Arc<AppState>>) -> ApiResult<Json<Value>> {
    blocking(&s, |s| Ok(Json(json!(cohort::cohorts(&s.store)?)))).await
}

/// `GET /api/v1/writekeys` (names only).
#[utoipa::path(
    get,
    path = "/api/v1/writekeys",
    responses((status = 200, description = "write keys, names only"))
)]
pub(crate) async fn write_keys(State(s): State<Arc<AppState>>) -> ApiResult<Json<Value>> {
    blocking(&s, |s| {
        let all: Vec<Value> = inbound::write_keys(&s.store)?
            .iter()
            .map(|k| json!({"name": k.name, "created_ms": k.created_ms}))
            .collect();
        Ok(Json(json!(all)))
    })
    .await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WriteKeyBody {
    name: String,
    key: String,
}

/// `POST /api/v1/writekeys`.
#[utoipa::path(
    post,
    path = "/api/v1/writekeys",
    request_body = WriteKeyBody,
    responses((status = 201, description = "added"), (status = 400, description = "invalid"), (status = 409, description = "the name is taken"))
)]
pub(crate) async fn add_write_key(
    State(s): State<Arc<AppState>>,
    b: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let k: WriteKeyBody = body(&b)?;
    blocking(&s, move |s| {
        let k = inbound::add_write_key(&s.store, &k.name, &k.key)?;
        Ok((
            StatusCode::CREATED,
            Json(json!({"name": k.name, "created_ms": k.created_ms})),
        ))
    })
    .await
}

/// `DELETE /api/v1/writekeys/{name}`.
#[utoipa::path(
    delete,
    path = "/api/v1/writekeys/{name}",
    params(("name" = String, Path, description = "write key name")),
    responses((status = 204, description = "removed"), (status = 404, description = "no such write key"))
)]
pub(crate) async fn remove_write_key(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    blocking(&s, move |s| {
        inbound::remove_write_key(&s.store, &name)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommandBody {
    /// The command's arguments after `segsync` (global options included).
    args: Vec<String>,
}

/// `POST /api/v1/commands`: runs a CLI command against this server's store
/// for a CLI client and answers what it printed and its exit code, so the
/// client behaves exactly as if it had opened the data dir itself. (A
/// viewer's token may only run commands that read. Runs and imports do
/// not come here: the client uses the run and upload endpoints.)
#[utoipa::path(
    post,
    path = "/api/v1/commands",
    request_body = CommandBody,
    responses((status = 200, description = "stdout, stderr, exit_code of the command"), (status = 400, description = "invalid body"), (status = 404, description = "this server does not run commands"))
)]
pub(crate) async fn command(
    State(s): State<Arc<AppState>>,
    axum::Extension(role): axum::Extension<crate::auth::Role>,
    b: Bytes,
) -> ApiResult<Json<Value>> {
    let c: CommandBody = body(&b)?;
    let Some(runner) = s.commands.clone() else {
        return Err(err(404, "this server does not run CLI commands"));
    };
    let read_only = role == crate::auth::Role::Viewer;
    blocking(&s, move |s| {
        let out = runner(c.args, s.store.clone(), read_only);
        // A command may have created or revoked tokens.
        s.reload_tokens()?;
        Ok(Json(json!(out)))
    })
    .await
}

/// `GET /api/v1/limits`: the limits in force (`segsync.toml` as read now;
/// the receiver's as `serve` started with), and whether mail is sent.
#[utoipa::path(
    get,
    path = "/api/v1/limits",
    responses((status = 200, description = "limits, inbound, smtp in force"))
)]
pub(crate) async fn limits(State(s): State<Arc<AppState>>) -> ApiResult<Json<Value>> {
    blocking(&s, |s| {
        let settings = crate::config::load(s.store.dir())?;
        let r = s.cohort_limits;
        Ok(Json(json!({
            "limits": settings.limits,
            "inbound": {
                "cohort_rpm": r.rpm,
                "cohort_max_body_bytes": r.max_body,
                "idempotency_retention_hours": r.idempotency_retention.as_secs() / 3600,
            },
            "smtp": settings.smtp.map(|m| json!({"host": m.host, "port": m.port, "from": m.from})),
        })))
    })
    .await
}

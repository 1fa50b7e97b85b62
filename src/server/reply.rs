//! The one error path of the admin API (axum's `AppError` pattern): every
//! failure becomes a JSON body `{"error": …}` with the status of its
//! [`Fault`](crate::error::Fault), or an opaque 500 that is logged once; and
//! the helper that runs library work off the async runtime.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::AppState;
use crate::error::Classify;

/// Every failure of a handler.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

pub(crate) fn err(status: u16, message: impl std::fmt::Display) -> ApiError {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        // The caller sees an id to quote; the log has the detail under it.
        let id = crate::secret::random_bytes::<4>()
            .map(hex::encode)
            .unwrap_or_else(|_| "00000000".into());
        tracing::error!(error = %message, error_id = %id, "internal error in the API");
        return ApiError {
            status,
            message: format!("internal error {id} (see the server log)"),
        };
    }
    ApiError {
        status,
        message: message.to_string(),
    }
}

impl<E: Classify + std::fmt::Display> From<E> for ApiError {
    fn from(e: E) -> Self {
        err(e.fault().http_status(), e)
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// Runs library work on the blocking pool, never on the runtime's threads.
pub(crate) async fn blocking<T: Send + 'static>(
    state: &Arc<AppState>,
    f: impl FnOnce(&Arc<AppState>) -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    let st = state.clone();
    tokio::task::spawn_blocking(move || f(&st))
        .await
        .map_err(|e| err(500, format!("handler task failed: {e}")))?
}

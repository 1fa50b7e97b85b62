//! Bulk imports over HTTP, streamed: `POST /api/v1/segments/{name}/snapshots`
//! and `POST /api/v1/users/import` take an id list, CSV or NDJSON body
//! (gzip or not: detected by its magic bytes, so `Content-Encoding: gzip`
//! and a `.gz` file both work). The body is parsed while it arrives — the
//! async side forwards chunks through a small bounded channel to the
//! import running on a blocking thread — so memory stays that of a file
//! import, and an import is atomic exactly like one: a bad line answers 400
//! naming the line, and nothing is stored.

use std::io::Read;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::Json;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use super::reply::{err, ApiResult};
use super::AppState;
use crate::ingest::{self, Source};

/// Chunks in flight between the socket and the parser.
const CHUNKS_IN_FLIGHT: usize = 16;

/// Import options, as query parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportQuery {
    /// Column (CSV) or field (NDJSON) holding the distinct id.
    #[serde(default)]
    id_column: Option<String>,
    /// Skip malformed lines (and count them) instead of refusing the import.
    #[serde(default)]
    skip_invalid: bool,
    /// How messages and the snapshot's record name the upload (the CLI
    /// sends its file's path); `upload` by default.
    #[serde(default)]
    source: Option<String>,
    /// The upload's size in bytes, when the client knows it ahead (the CLI
    /// and the console send their file's; else the `Content-Length`, if
    /// any): with it, an id list small next to the store looks ids up in
    /// the fingerprint table's file instead of loading the table (a users
    /// file in a large store always does), and the import lowers RocksDB's
    /// budgets only from 1 MB.
    #[serde(default)]
    size: Option<u64>,
    /// Where ids are looked up: `auto` (default), `memory` or `file`.
    #[serde(default)]
    lookups: Option<ingest::Lookups>,
}

impl ImportQuery {
    fn options(&self) -> ingest::Options {
        let mut o = ingest::Options::default();
        if let Some(c) = &self.id_column {
            o.id_column = c.clone();
        }
        o.skip_invalid = self.skip_invalid;
        o.lookups = self.lookups.unwrap_or_default();
        o
    }
}

/// The upload as a blocking reader: chunks arrive over a bounded channel.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

/// Longest `source` name kept.
const MAX_SOURCE: usize = 1024;

/// Runs `import` on a blocking thread over the streamed `body`.
async fn streamed(
    body: Body,
    source: Option<String>,
    size: Option<u64>,
    import: impl FnOnce(Source<'_>) -> Result<ingest::Summary, ingest::Error> + Send + 'static,
) -> ApiResult<Json<Value>> {
    let name = match source {
        Some(s) if s.len() > MAX_SOURCE || s.chars().any(char::is_control) => {
            return Err(err(
                400,
                format!("source must be at most {MAX_SOURCE} bytes, without control characters"),
            ))
        }
        Some(s) if !s.is_empty() => s,
        _ => "upload".to_string(),
    };
    // Without `?size=`, a body sent with its `Content-Length` (curl
    // `--data-binary`) says its size all the same.
    let size = size.or_else(|| axum::body::HttpBody::size_hint(&body).exact());
    let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_IN_FLIGHT);
    let reader = ChannelReader {
        rx,
        cur: Bytes::new(),
    };
    let job = tokio::task::spawn_blocking(move || {
        import(Source::Stream {
            name: &name,
            reader: Box::new(reader),
            size: size.unwrap_or(0),
        })
    });
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| std::io::Error::other(format!("upload interrupted: {e}")));
        let failed = chunk.is_err();
        // The import stopped reading (a bad line): its answer is the reply.
        if tx.send(chunk).await.is_err() || failed {
            break;
        }
    }
    drop(tx);
    let summary = job
        .await
        .map_err(|e| err(500, format!("import task failed: {e}")));
    // The import's buffers are free now, in the arenas of the threads that
    // used them: give them back after the reply, whatever it says.
    tokio::task::spawn_blocking(crate::allocator::release_free_memory);
    Ok(Json(json!(summary??)))
}

/// `POST /api/v1/segments/{name}/snapshots`: a new snapshot of a segment.
#[utoipa::path(
    post,
    path = "/api/v1/segments/{name}/snapshots",
    params(("name" = String, Path, description = "segment name"), ImportQuery),
    request_body(content = String, content_type = "application/octet-stream", description = "an id list, CSV or NDJSON; gzip accepted (magic bytes or Content-Encoding); streamed"),
    responses((status = 200, description = "the import summary"), (status = 400, description = "a bad line (upload:LINE: reason) or query; nothing stored"))
)]
pub(crate) async fn snapshot(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Query<ImportQuery>,
    body: Body,
) -> ApiResult<Json<Value>> {
    let opts = q.options();
    let store = s.store.clone();
    streamed(body, q.source, q.size, move |src| {
        ingest::import_segment_from(&store, &name, src, &opts)
    })
    .await
}

/// `POST /api/v1/users/import`: users and their attributes.
#[utoipa::path(
    post,
    path = "/api/v1/users/import",
    params(ImportQuery),
    request_body(content = String, content_type = "application/octet-stream", description = "an id list, CSV or NDJSON; gzip accepted (magic bytes or Content-Encoding); streamed"),
    responses((status = 200, description = "the import summary"), (status = 400, description = "a bad line (upload:LINE: reason) or query; nothing stored"))
)]
pub(crate) async fn users(
    State(s): State<Arc<AppState>>,
    Query(q): Query<ImportQuery>,
    body: Body,
) -> ApiResult<Json<Value>> {
    let opts = q.options();
    let store = s.store.clone();
    streamed(body, q.source, q.size, move |src| {
        ingest::import_users_from(&store, src, &opts)
    })
    .await
}

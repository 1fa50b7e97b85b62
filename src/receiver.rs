//! A built-in receiving endpoint: what the demo and the benchmark deliver
//! to, and what tests use as a well-behaved destination. It checks every
//! request against the seed's format, applies `add_users`/`remove_users` to
//! the membership it reconstructs (once per `Idempotency-Key`), and can be
//! told to fail chosen pages or answer slowly.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

/// How the receiver behaves.
#[derive(Debug, Clone)]
pub struct ReceiverOptions {
    /// Key of the added list.
    pub add_key: String,
    /// Key of the removed list.
    pub remove_key: String,
    /// Key of the identifier in each user object.
    pub id_key: String,
    /// Page (`page_count`) → how many times to answer `fail_status` first.
    pub fail_pages: HashMap<u64, u32>,
    /// Status used for injected failures.
    pub fail_status: u16,
    /// Delay before answering each request.
    pub delay: Duration,
}

impl Default for ReceiverOptions {
    fn default() -> Self {
        ReceiverOptions {
            add_key: "add_users".into(),
            remove_key: "remove_users".into(),
            id_key: "uid".into(),
            fail_pages: HashMap::new(),
            fail_status: 503,
            delay: Duration::ZERO,
        }
    }
}

/// What the receiver saw.
#[derive(Debug, Default, Clone)]
pub struct Received {
    /// Reconstructed membership: distinct id → identifier value.
    pub members: HashMap<String, Value>,
    /// Requests received (including injected failures and rejects).
    pub requests: u64,
    /// Pages applied (distinct idempotency keys).
    pub pages_applied: u64,
    /// Requests whose key had been applied already.
    pub duplicates: u64,
    /// Every idempotency key with how often it arrived.
    pub keys: HashMap<String, u32>,
    /// Rejected requests and why.
    pub errors: Vec<String>,
    /// Users added and removed over all applied pages.
    pub users_added: u64,
    /// Users removed.
    pub users_removed: u64,
}

struct Shared {
    opts: ReceiverOptions,
    state: Mutex<Received>,
    applied: Mutex<HashSet<String>>,
    failures_left: Mutex<HashMap<u64, u32>>,
}

/// A running receiver on 127.0.0.1; stops when dropped.
pub struct Receiver {
    /// Its address.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    /// Starts a receiver on its own thread and runtime.
    pub fn start(opts: ReceiverOptions) -> std::io::Result<Receiver> {
        let shared = Arc::new(Shared {
            failures_left: Mutex::new(opts.fail_pages.clone()),
            opts,
            state: Mutex::new(Received::default()),
            applied: Mutex::new(HashSet::new()),
        });
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new()
            .route("/", post(handle))
            .route("/{*path}", post(handle))
            .with_state(shared.clone());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                    return;
                };
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
        });
        Ok(Receiver {
            addr,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT/segments`.
    pub fn url(&self) -> String {
        format!("http://{}/segments", self.addr)
    }

    /// A copy of what was received so far.
    pub fn received(&self) -> Received {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn reject(shared: &Shared, msg: String) -> (StatusCode, Json<Value>) {
    shared
        .state
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .errors
        .push(msg.clone());
    (StatusCode::BAD_REQUEST, Json(json!({ "error": msg })))
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, Json<Value>) {
    if !shared.opts.delay.is_zero() {
        tokio::time::sleep(shared.opts.delay).await;
    }
    shared
        .state
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .requests += 1;
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct != "application/json" {
        return reject(
            &shared,
            format!("content-type is {ct:?}, expected application/json"),
        );
    }
    let Some(key) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    else {
        return reject(&shared, "missing Idempotency-Key".into());
    };
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return reject(&shared, format!("body is not JSON: {e}")),
    };
    match check(&shared.opts, &v, &key) {
        Err(msg) => reject(&shared, msg),
        Ok(page) => {
            {
                let mut left = shared
                    .failures_left
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if let Some(n) = left.get_mut(&page) {
                    if *n > 0 {
                        *n -= 1;
                        let status = StatusCode::from_u16(shared.opts.fail_status)
                            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                        return (status, Json(json!({ "error": "injected failure" })));
                    }
                }
            }
            apply(&shared, &v, key);
            (StatusCode::OK, Json(json!({ "status": "ok" })))
        }
    }
}

/// Validates the seed's shape; returns `page_count`.
fn check(opts: &ReceiverOptions, v: &Value, key: &str) -> Result<u64, String> {
    if v["type"] != "segment_sync" {
        return Err("type is not segment_sync".into());
    }
    let total = v["pagination"]["total_pages"]
        .as_u64()
        .ok_or("missing pagination.total_pages")?;
    let page = v["pagination"]["page_count"]
        .as_u64()
        .ok_or("missing pagination.page_count")?;
    if page == 0 || page > total {
        return Err(format!("page_count {page} outside 1..={total}"));
    }
    let data = &v["data"];
    for k in [
        "moengage_sync_id",
        "moengage_sync_name",
        "moengage_execution_id",
        "moengage_integration_id",
    ] {
        if !data[k].is_string() {
            return Err(format!("data.{k} missing or not a string"));
        }
    }
    let expected_key = format!(
        "{}-{page}",
        data["moengage_execution_id"].as_str().unwrap_or("")
    );
    if key != expected_key {
        return Err(format!(
            "Idempotency-Key {key:?}, expected {expected_key:?}"
        ));
    }
    for list in [&opts.add_key, &opts.remove_key] {
        let users = data[list.as_str()]
            .as_array()
            .ok_or_else(|| format!("data.{list} missing"))?;
        for u in users {
            if !u["moengage_distinct_id"].is_string() {
                return Err(format!("a user in {list} has no moengage_distinct_id"));
            }
            if u.get(&opts.id_key).is_none_or(Value::is_null) {
                return Err(format!("a user in {list} has no {}", opts.id_key));
            }
        }
    }
    Ok(page)
}

fn apply(shared: &Shared, v: &Value, key: String) {
    let fresh = shared
        .applied
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key.clone());
    let mut st = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
    *st.keys.entry(key).or_default() += 1;
    if !fresh {
        st.duplicates += 1;
        return;
    }
    st.pages_applied += 1;
    let data = &v["data"];
    let empty = Vec::new();
    for u in data[shared.opts.add_key.as_str()]
        .as_array()
        .unwrap_or(&empty)
    {
        if let Some(id) = u["moengage_distinct_id"].as_str() {
            st.members
                .insert(id.to_string(), u[shared.opts.id_key.as_str()].clone());
            st.users_added += 1;
        }
    }
    for u in data[shared.opts.remove_key.as_str()]
        .as_array()
        .unwrap_or(&empty)
    {
        if let Some(id) = u["moengage_distinct_id"].as_str() {
            st.members.remove(id);
            st.users_removed += 1;
        }
    }
}

//! A built-in receiving endpoint: what the demo and the benchmark deliver
//! to, and what tests use as a well-behaved destination. It checks every
//! request against the seed's format (or Cohort Sync's), applies the added
//! and removed users to the membership it reconstructs (once per
//! `Idempotency-Key`), and can be told to fail chosen pages or answer
//! slowly. Bodies are read in `body`.

mod body;

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
    /// Keep the membership itself (tests, demo); when false only its size
    /// and [`membership_checksum`] are kept, in constant memory (benchmarks
    /// of 10M users, where the map would cost gigabytes).
    pub keep_members: bool,
    /// Share of requests answered with a fault, drawn at random (the soak):
    /// a quarter each 503, 429 with `Retry-After: 1`, a slow answer (the
    /// page is applied, after `slow`), and no answer at all (held past the
    /// sender's timeout). Only the slow answer applies the page.
    pub fault_rate: f64,
    /// How long a slow answer and a held request take.
    pub slow: Duration,
    /// The body format requests must have.
    pub format: ReceiveFormat,
}

/// The body format a receiver checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReceiveFormat {
    /// The seed's `segment_sync` body: pages of users by distinct id with
    /// their identifier, the key `{execution}-{page}`.
    #[default]
    SegmentSync,
    /// A Cohort Sync endpoint: one action per request on members by uid,
    /// Basic auth and the workspace headers, bodies of at most `max_body`
    /// bytes. The membership is the set of uids (its checksum sums the
    /// uids' hashes).
    CohortSync {
        /// Largest body accepted.
        max_body: usize,
    },
}

/// The faults a receiver injected, by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Faults {
    /// 503 answers.
    pub unavailable: u64,
    /// 429 answers with `Retry-After`.
    pub throttled: u64,
    /// Slow (but successful) answers.
    pub slow: u64,
    /// Requests never answered in time.
    pub held: u64,
}

/// Order-independent checksum of a set of distinct ids: the wrapping sum
/// of their xxh3 hashes. Adding a user adds its hash, removing subtracts
/// it, so the receiver's running value equals the checksum of the expected
/// set exactly when (barring a 2⁻⁶⁴ accident) the sets are equal.
pub fn membership_checksum<'a>(ids: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    ids.into_iter().fold(0u64, |acc, id| {
        acc.wrapping_add(xxhash_rust::xxh3::xxh3_64(id))
    })
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
            keep_members: true,
            fault_rate: 0.0,
            slow: Duration::from_secs(2),
            format: ReceiveFormat::SegmentSync,
        }
    }
}

/// What the receiver saw.
#[derive(Debug, Default, Clone)]
pub struct Received {
    /// Reconstructed membership: distinct id → identifier value (JSON text).
    /// A removal applies only when it names the value the receiver holds:
    /// a changed identifier arrives as the removal of the old value and the
    /// addition of the new one, possibly on different pages in any order.
    pub members: HashMap<String, String>,
    /// The membership as a destination that knows users only by their
    /// identifier (an ad network): identifier value (JSON text) → the
    /// distinct id that sent it. Removals remove the value they name.
    pub by_value: HashMap<String, String>,
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
    /// Current membership size (kept in both modes).
    pub member_count: u64,
    /// [`membership_checksum`] of the current membership.
    pub checksum: u64,
    /// Faults injected ([`ReceiverOptions::fault_rate`]).
    pub faults: Faults,
}

struct Shared {
    opts: ReceiverOptions,
    state: Mutex<Received>,
    applied: Mutex<HashSet<String>>,
    failures_left: Mutex<HashMap<u64, u32>>,
}

/// The name of the receiver's runtime threads.
pub const RECEIVER_THREAD: &str = "segsync-receive";

/// A running receiver on 127.0.0.1; stops when dropped.
pub struct Receiver {
    /// Its address.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    /// Starts a receiver on 127.0.0.1 (a free port) on its own thread.
    pub fn start(opts: ReceiverOptions) -> std::io::Result<Receiver> {
        Self::start_on("127.0.0.1:0", opts)
    }

    /// Starts a receiver on `addr` on its own thread and runtime.
    pub fn start_on(addr: &str, opts: ReceiverOptions) -> std::io::Result<Receiver> {
        let shared = Arc::new(Shared {
            failures_left: Mutex::new(opts.fail_pages.clone()),
            opts,
            state: Mutex::new(Received::default()),
            applied: Mutex::new(HashSet::new()),
        });
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new()
            .route("/", post(handle))
            .route("/{*path}", post(handle))
            .with_state(shared.clone());
        // Named, so that a benchmark can tell the receiver's CPU time from
        // the rest of its process (`/proc/self/task/*/comm`).
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(RECEIVER_THREAD)
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

    /// Counts only (no copy of the membership or the key log).
    pub fn summary(&self) -> Received {
        let st = self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Received {
            members: HashMap::new(),
            by_value: HashMap::new(),
            keys: HashMap::new(),
            errors: st.errors.clone(),
            requests: st.requests,
            pages_applied: st.pages_applied,
            duplicates: st.duplicates,
            users_added: st.users_added,
            users_removed: st.users_removed,
            member_count: st.member_count,
            checksum: st.checksum,
            faults: st.faults,
        }
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
    state: State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (status, json) = answer(state, headers, body).await;
    let mut resp = (status, json).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        resp.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
    }
    resp
}

async fn answer(
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
    let parsed = match shared.opts.format {
        ReceiveFormat::SegmentSync => body::parse(&shared.opts, &body, &key),
        ReceiveFormat::CohortSync { max_body } => body::parse_cohort(&headers, &body, max_body),
    };
    let page = match parsed {
        Err(msg) => return reject(&shared, msg),
        Ok(p) => p,
    };
    if shared.opts.fault_rate > 0.0 {
        let draw = crate::secret::random_bytes::<8>()
            .map(u64::from_le_bytes)
            .unwrap_or(0) as f64
            / u64::MAX as f64;
        if draw < shared.opts.fault_rate {
            let kind = (draw / shared.opts.fault_rate * 4.0) as u8;
            let count = |f: fn(&mut Faults) -> &mut u64| {
                let mut st = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
                *f(&mut st.faults) += 1;
            };
            match kind {
                0 => {
                    count(|f| &mut f.unavailable);
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        Json(json!({ "error": "injected 503" })),
                    );
                }
                1 => {
                    count(|f| &mut f.throttled);
                    return (
                        StatusCode::TOO_MANY_REQUESTS,
                        Json(json!({ "error": "injected 429", "retry_after": 1 })),
                    );
                }
                2 => {
                    count(|f| &mut f.slow);
                    tokio::time::sleep(shared.opts.slow).await;
                }
                _ => {
                    count(|f| &mut f.held);
                    tokio::time::sleep(shared.opts.slow * 30).await;
                    return (
                        StatusCode::GATEWAY_TIMEOUT,
                        Json(json!({ "error": "held" })),
                    );
                }
            }
        }
    }
    {
        let mut left = shared
            .failures_left
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = left.get_mut(&page.page) {
            if *n > 0 {
                *n -= 1;
                let status = StatusCode::from_u16(shared.opts.fail_status)
                    .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                return (status, Json(json!({ "error": "injected failure" })));
            }
        }
    }
    apply(&shared, page, key);
    (StatusCode::OK, Json(json!({ "status": "ok" })))
}

fn apply(shared: &Shared, page: body::Parsed<'_>, key: String) {
    let fresh = shared
        .applied
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key.clone());
    let mut st = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
    if shared.opts.keep_members {
        *st.keys.entry(key).or_default() += 1;
    }
    if !fresh {
        st.duplicates += 1;
        return;
    }
    st.pages_applied += 1;
    st.users_added += page.adds.len() as u64;
    st.users_removed += page.removes.len() as u64;
    if shared.opts.keep_members {
        for (id, value) in page.adds {
            let h = xxhash_rust::xxh3::xxh3_64(id.as_bytes());
            let (id, value) = (id.into_owned(), value.to_owned());
            st.by_value.insert(value.clone(), id.clone());
            if st.members.insert(id, value).is_none() {
                st.member_count += 1;
                st.checksum = st.checksum.wrapping_add(h);
            }
        }
        for (id, value) in page.removes {
            st.by_value.remove(value);
            if st.members.get(id.as_ref()).map(String::as_str) == Some(value) {
                st.members.remove(id.as_ref());
                st.member_count -= 1;
                st.checksum = st
                    .checksum
                    .wrapping_sub(xxhash_rust::xxh3::xxh3_64(id.as_bytes()));
            }
        }
    } else {
        // Without the set a duplicate add cannot be told apart: pages are
        // applied once per idempotency key, and a sync never adds a member
        // twice in one execution, so counts stay exact for a clean run.
        for (id, _) in &page.adds {
            st.member_count += 1;
            st.checksum = st
                .checksum
                .wrapping_add(xxhash_rust::xxh3::xxh3_64(id.as_bytes()));
        }
        for (id, _) in &page.removes {
            st.member_count = st.member_count.saturating_sub(1);
            st.checksum = st
                .checksum
                .wrapping_sub(xxhash_rust::xxh3::xxh3_64(id.as_bytes()));
        }
    }
}

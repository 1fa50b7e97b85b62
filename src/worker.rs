//! `segsync worker`: a stateless sender. It pulls rendered pages from
//! JetStream (the shared `workers` consumer), sends each with the same
//! retry rules and classification as the in-process sender — every
//! attempt under a rate permit from the coordinator's limiter — publishes
//! the page's outcome to JetStream, and only then acknowledges the page.
//!
//! A worker killed mid-page never acknowledged it: JetStream redelivers it
//! to another worker after the ack wait (a worker at work keeps extending
//! it). A page no attempt of this worker could even deliver to the
//! destination (connection refused, no route, no permit) is handed back
//! (negative acknowledgement with a delay) for another worker, up to
//! `handbacks` deliveries; after that it is reported failed by the seed's
//! rule. SIGTERM drains: no new page is pulled, the pages held finish
//! (or, past the drain timeout, are handed back).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, AckKind};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::time::Instant;

use crate::cluster::wire::{
    self, DestinationReply, Heartbeat, PageFailure, PageOutcome, PermitGrant, Report, WireSignal,
};
use crate::cluster::{self, PAGES_STREAM, WORKERS_CONSUMER};
use crate::pipeline::rate::Signal;
use crate::pipeline::send::{PageSender, RemotePermits};

/// Errors that stop a worker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// NATS could not be reached or set up.
    #[error(transparent)]
    Cluster(#[from] cluster::Error),
    /// The metrics address could not be bound.
    #[error("cannot listen for /metrics on {addr}: {cause}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        cause: std::io::Error,
    },
}

impl crate::error::Classify for Error {
    fn fault(&self) -> crate::error::Fault {
        match self {
            Error::Cluster(e) => e.fault(),
            Error::Listen { .. } => crate::error::Fault::BadInput,
        }
    }
}

/// Settings of `segsync worker`.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The NATS server.
    pub url: String,
    /// This worker's name (default: host-pid).
    pub name: String,
    /// Pages held at once.
    pub concurrency: usize,
    /// Where to serve `/metrics` (none: not served).
    pub metrics_listen: Option<String>,
    /// How long SIGTERM waits for the pages held before handing them back.
    pub drain_timeout: Duration,
    /// Deliveries of a page that could not reach the destination before it
    /// is reported failed instead of handed back.
    pub handbacks: u32,
}

/// The default name: host and process id.
pub fn default_name() -> String {
    format!("{}-{}", host_name(), std::process::id())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// What the worker reports about itself.
#[derive(Default)]
struct Counters {
    in_flight: AtomicU32,
    delivered: AtomicU64,
    failed: AtomicU64,
    handed_back: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Counters {
    fn error(&self, e: impl Into<String>) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(e.into());
    }
}

/// Permits from the coordinator's limiter of one run.
struct NatsPermits {
    client: async_nats::Client,
    permit: String,
    report: String,
    grace: Duration,
    stalled: AtomicU32,
    rpm_bits: AtomicU64,
    /// Give up asking after this long without an answer (the run is over
    /// or the coordinator is gone: the page is handed back).
    patience: Duration,
}

impl RemotePermits for NatsPermits {
    fn acquire(&self) -> std::pin::Pin<Box<dyn Future<Output = Result<u64, String>> + Send + '_>> {
        Box::pin(async move {
            let since = Instant::now();
            loop {
                let asked = Instant::now();
                let req = async_nats::Request::new().timeout(Some(Duration::from_secs(5)));
                match self.client.send_request(self.permit.clone(), req).await {
                    Ok(msg) => {
                        let Ok(g) = serde_json::from_slice::<PermitGrant>(&msg.payload) else {
                            return Err("an unreadable permit".into());
                        };
                        self.stalled.store(g.stalled_rounds, Ordering::Relaxed);
                        self.rpm_bits.store(g.rpm.to_bits(), Ordering::Relaxed);
                        // From the reply's arrival, never before the slot:
                        // the reply left the coordinator `wait` before it.
                        let wait = Duration::from_nanos(g.wait_ns);
                        tokio::time::sleep_until(Instant::now() + wait).await;
                        // An upper bound of how late after the slot the
                        // request goes out (see `wire::PermitGrant`).
                        let late = asked.elapsed().saturating_sub(wait);
                        if late > self.grace {
                            tracing::debug!(?late, "a late permit was discarded");
                            continue;
                        }
                        return Ok(g.slot_ns);
                    }
                    Err(e) => {
                        if since.elapsed() >= self.patience {
                            return Err(format!("the coordinator does not grant permits ({e})"));
                        }
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
            }
        })
    }

    fn report(&self, slot: u64, signal: Signal) {
        let signal = match signal {
            Signal::Accepted => WireSignal::Accepted,
            Signal::Throttled(a) => WireSignal::Throttled(a.map(|d| d.as_millis() as u64)),
            Signal::Overloaded(a) => WireSignal::Overloaded(a.map(|d| d.as_millis() as u64)),
            Signal::Neutral => WireSignal::Neutral,
        };
        let Ok(body) = serde_json::to_vec(&Report {
            slot_ns: slot,
            signal,
        }) else {
            return;
        };
        let (client, subject) = (self.client.clone(), self.report.clone());
        tokio::spawn(async move {
            let _ = client.publish(subject, body.into()).await;
        });
    }

    fn stalled_rounds(&self) -> u32 {
        self.stalled.load(Ordering::Relaxed)
    }

    fn rpm(&self) -> f64 {
        f64::from_bits(self.rpm_bits.load(Ordering::Relaxed))
    }
}

/// Everything a page's task needs.
struct Shared {
    client: async_nats::Client,
    js: jetstream::Context,
    opts: WorkerOptions,
    counters: Counters,
    /// Senders of the runs seen, by (sync, seq).
    senders: Mutex<HashMap<(u32, u32), Arc<PageSender>>>,
    ack_wait: Duration,
    /// Set when the drain timeout passed: tasks hand their pages back.
    abandon: tokio::sync::watch::Receiver<bool>,
    /// A page ended: the next heartbeat goes out soon, not in 2 s.
    changed: tokio::sync::Notify,
    /// The destination was unreachable from here: no new page before this
    /// (the healthy workers take them), and the next pause.
    sick: Mutex<(Option<Instant>, Duration)>,
}

impl Shared {
    fn unreachable(&self) {
        let mut s = self.sick.lock().unwrap_or_else(PoisonError::into_inner);
        s.1 = if s.1.is_zero() {
            Duration::from_secs(1)
        } else {
            (s.1 * 2).min(Duration::from_secs(30))
        };
        s.0 = Some(Instant::now() + s.1);
    }

    fn reached(&self) {
        *self.sick.lock().unwrap_or_else(PoisonError::into_inner) = (None, Duration::ZERO);
    }

    fn sick_until(&self) -> Option<Instant> {
        self.sick
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .filter(|t| *t > Instant::now())
    }
}

impl Shared {
    /// The sender of a run: its destination's settings from the coordinator.
    async fn sender(&self, sync: u32, seq: u32) -> Result<Arc<PageSender>, String> {
        if let Some(s) = self
            .senders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(sync, seq))
        {
            return Ok(s.clone());
        }
        let req = async_nats::Request::new().timeout(Some(Duration::from_secs(5)));
        let msg = self
            .client
            .send_request(wire::run_subject(sync, seq, "dest"), req)
            .await
            .map_err(|e| format!("the coordinator does not answer for run {sync}-{seq}: {e}"))?;
        let reply: DestinationReply = serde_json::from_slice(&msg.payload)
            .map_err(|e| format!("unreadable destination settings: {e}"))?;
        let dest = reply
            .config
            .validate(reply.id)
            .map_err(|e| format!("the destination's settings do not validate here: {e}"))?;
        let permits = Arc::new(NatsPermits {
            client: self.client.clone(),
            permit: wire::run_subject(sync, seq, "permit"),
            report: wire::run_subject(sync, seq, "report"),
            grace: Duration::from_millis(reply.grace_ms),
            stalled: AtomicU32::new(0),
            rpm_bits: AtomicU64::new(f64::from(dest.rpm.get()).to_bits()),
            patience: self.ack_wait.max(Duration::from_secs(10)),
        });
        let sender = Arc::new(
            PageSender::with_remote_permits(dest, sync, seq, permits)
                .map_err(|e| format!("cannot start an HTTP client: {e}"))?,
        );
        let mut all = self.senders.lock().unwrap_or_else(PoisonError::into_inner);
        if all.len() > 256 {
            all.clear(); // runs come and go; settings are asked for again
        }
        all.insert((sync, seq), sender.clone());
        Ok(sender)
    }
}

fn header_u32(msg: &jetstream::Message, name: &str) -> Option<u32> {
    msg.headers.as_ref()?.get(name)?.as_str().parse().ok()
}

/// Hands a page back for another worker (or this one, later).
async fn hand_back(msg: &jetstream::Message, delay: Duration) {
    let _ = msg.ack_with(AckKind::Nak(Some(delay))).await;
}

/// Handles one page message to the end: outcome published and page
/// acknowledged, or handed back.
async fn handle(shared: Arc<Shared>, msg: jetstream::Message) {
    handle_page(&shared, msg).await;
    shared.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
    shared.changed.notify_one();
}

async fn handle_page(shared: &Arc<Shared>, msg: jetstream::Message) {
    let c = &shared.counters;
    let (Some((sync, seq)), Some(index)) =
        (wire::run_of(&msg.subject), header_u32(&msg, wire::H_PAGE))
    else {
        tracing::warn!(subject = %msg.subject, "a page without its headers was dropped");
        let _ = msg.ack_with(AckKind::Term).await;
        return;
    };
    let skipped = header_u32(&msg, wire::H_SKIPPED).unwrap_or(0);
    let users = header_u32(&msg, wire::H_USERS).unwrap_or(0);
    let sender = match shared.sender(sync, seq).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(sync, execution = seq, error = %e, "page handed back");
            c.error(e);
            c.handed_back.fetch_add(1, Ordering::Relaxed);
            hand_back(&msg, Duration::from_secs(1)).await;
            return;
        }
    };
    // Keep the page ours while it waits for permits and retries.
    let keep = {
        let (msg2, every) = (msg.clone(), shared.ack_wait / 3);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every.max(Duration::from_millis(200))).await;
                let _ = msg2.ack_with(AckKind::Progress).await;
            }
        })
    };
    let mut abandon = shared.abandon.clone();
    let body = Bytes::copy_from_slice(&msg.payload);
    let result = tokio::select! {
        r = sender.send(index, body) => Some(r),
        _ = abandon.wait_for(|a| *a) => None,
    };
    keep.abort();
    let Some(result) = result else {
        hand_back(&msg, Duration::ZERO).await;
        c.handed_back.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let worker = shared.opts.name.clone();
    let dest = sender.destination_name().to_string();
    let outcome = match result {
        Ok(stats) => {
            shared.reached();
            crate::metrics::page_acked(&dest, u64::from(users), stats.requests);
            crate::metrics::throttled_by(&dest, stats.throttled);
            c.delivered.fetch_add(1, Ordering::Relaxed);
            PageOutcome {
                index,
                skipped,
                users,
                requests: stats.requests,
                throttled: stats.throttled,
                failure: None,
                worker,
            }
        }
        Err(e) => {
            crate::metrics::requests_to(&dest, e.requests);
            c.error(e.last_error.clone());
            let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
            if e.unreachable && delivered <= i64::from(shared.opts.handbacks) {
                tracing::warn!(sync, execution = seq, page = index + 1, error = %e.last_error,
                    "the destination is unreachable from this worker: page handed back");
                c.handed_back.fetch_add(1, Ordering::Relaxed);
                shared.unreachable();
                hand_back(&msg, sender.retry_delay()).await;
                return;
            }
            c.failed.fetch_add(1, Ordering::Relaxed);
            PageOutcome {
                index,
                skipped,
                users,
                requests: e.requests,
                throttled: e.throttled,
                failure: Some(PageFailure {
                    message: e.message,
                    refused: e.refused,
                    last_error: e.last_error,
                }),
                worker,
            }
        }
    };
    let Ok(body) = serde_json::to_vec(&outcome) else {
        return;
    };
    let body = Bytes::from(body);
    let subject = wire::outcomes_subject(sync, seq);
    let id = format!(
        "{}.{}.{}",
        sender.idempotency_key(index),
        msg.info().map(|i| i.stream_sequence).unwrap_or(0),
        msg.info().map(|i| i.delivered).unwrap_or(0)
    );
    // The outcome must be stored before the page is acknowledged.
    let mut delay = Duration::from_millis(100);
    loop {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        let stored = match shared
            .js
            .publish_with_headers(subject.clone(), headers, body.clone())
            .await
        {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match stored {
            Ok(()) => break,
            Err(e) => {
                if *shared.abandon.borrow() {
                    // Not recorded: the page goes again (same key, same bytes).
                    hand_back(&msg, Duration::ZERO).await;
                    return;
                }
                tracing::warn!(error = %e, "storing a page outcome failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
    if let Err(e) = msg.double_ack().await {
        // The outcome is stored: a redelivered copy is sent again and its
        // second outcome ignored.
        tracing::warn!(error = %e, "acknowledging a page failed");
    }
}

/// The worker's own figures, after the process-wide ones.
fn metrics_text(c: &Counters) -> String {
    let mut s = crate::metrics::render();
    s.push_str(&format!(
        "# HELP segsync_worker_pages_in_flight Pages this worker holds.\n# TYPE segsync_worker_pages_in_flight gauge\nsegsync_worker_pages_in_flight {}\n\
         # HELP segsync_worker_pages_delivered_total Pages delivered by this worker.\n# TYPE segsync_worker_pages_delivered_total counter\nsegsync_worker_pages_delivered_total {}\n\
         # HELP segsync_worker_pages_failed_total Pages this worker reported failed.\n# TYPE segsync_worker_pages_failed_total counter\nsegsync_worker_pages_failed_total {}\n\
         # HELP segsync_worker_pages_handed_back_total Pages handed back for another worker.\n# TYPE segsync_worker_pages_handed_back_total counter\nsegsync_worker_pages_handed_back_total {}\n",
        c.in_flight.load(Ordering::Relaxed),
        c.delivered.load(Ordering::Relaxed),
        c.failed.load(Ordering::Relaxed),
        c.handed_back.load(Ordering::Relaxed),
    ));
    s
}

/// Runs a worker until `shutdown`, then drains.
pub async fn run(
    opts: WorkerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let metrics_listener = match &opts.metrics_listen {
        Some(addr) => {
            Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|cause| Error::Listen {
                        addr: addr.clone(),
                        cause,
                    })?,
            )
        }
        None => None,
    };
    let metrics_addr = metrics_listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map(|a| format!("http://{a}/metrics"));
    let client = loop {
        match cluster::connect(&opts.url, &opts.name).await {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, "waiting for NATS");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let js = jetstream::new(client.clone());
    // The coordinator creates the consumer (it owns the ack wait).
    let consumer: consumer::PullConsumer = loop {
        let found = match js.get_stream(PAGES_STREAM).await {
            Ok(s) => s
                .get_consumer(WORKERS_CONSUMER)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match found {
            Ok(c) => break c,
            Err(e) => {
                tracing::info!(error = %e, "waiting for a coordinator (segsync serve --nats) to set up the streams");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let ack_wait = consumer.cached_info().config.ack_wait;
    let (abandon_tx, abandon_rx) = tokio::sync::watch::channel(false);
    let shared = Arc::new(Shared {
        client: client.clone(),
        js,
        opts: opts.clone(),
        counters: Counters::default(),
        senders: Mutex::new(HashMap::new()),
        ack_wait,
        abandon: abandon_rx,
        changed: tokio::sync::Notify::new(),
        sick: Mutex::new((None, Duration::ZERO)),
    });
    let started = chrono::Utc::now().to_rfc3339();
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let beat = {
        let (shared, draining, metrics_addr) =
            (shared.clone(), draining.clone(), metrics_addr.clone());
        move || {
            let c = &shared.counters;
            Heartbeat {
                name: shared.opts.name.clone(),
                host: host_name(),
                pid: std::process::id(),
                started: started.clone(),
                in_flight: c.in_flight.load(Ordering::Relaxed),
                delivered: c.delivered.load(Ordering::Relaxed),
                failed: c.failed.load(Ordering::Relaxed) + c.handed_back.load(Ordering::Relaxed),
                last_error: c
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone(),
                metrics: metrics_addr.clone(),
                draining: draining.load(Ordering::Relaxed),
            }
        }
    };
    let beat = Arc::new(beat);
    let heartbeats = {
        let (client, beat, shared) = (client.clone(), beat.clone(), shared.clone());
        tokio::spawn(async move {
            loop {
                if let Ok(b) = serde_json::to_vec(&beat()) {
                    let _ = client.publish(wire::HEARTBEAT, b.into()).await;
                }
                // At most 4 a second while pages end, else every 2 s.
                tokio::time::sleep(Duration::from_millis(250)).await;
                tokio::select! {
                    _ = tokio::time::sleep(cluster::HEARTBEAT_EVERY) => {}
                    _ = shared.changed.notified() => {}
                }
            }
        })
    };
    if let Some(listener) = metrics_listener {
        let shared = shared.clone();
        let app = axum::Router::new()
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let shared = shared.clone();
                    async move { metrics_text(&shared.counters) }
                }),
            )
            .route("/healthz", axum::routing::get(|| async { "ok\n" }));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
    }
    tracing::info!(name = %opts.name, url = %opts.url, concurrency = opts.concurrency, "worker started");
    println!("segsync worker {} started", opts.name);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopping = || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    let concurrency = opts.concurrency.max(1);
    loop {
        while tasks.try_join_next().is_some() {}
        if let Some(until) = shared.sick_until() {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                _ = tasks.join_next(), if !tasks.is_empty() => {}
                _ = stopping() => break,
            }
            continue;
        }
        let free = concurrency.saturating_sub(tasks.len());
        if free == 0 {
            tokio::select! {
                _ = tasks.join_next() => continue,
                _ = stopping() => break,
            }
        }
        let batch = consumer
            .batch()
            .max_messages(free)
            .expires(Duration::from_secs(1))
            .messages();
        let mut batch = tokio::select! {
            b = batch => match b {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "pulling pages failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            },
            _ = stopping() => break,
        };
        loop {
            let next = tokio::select! {
                m = batch.next() => m,
                _ = stopping() => None,
            };
            match next {
                Some(Ok(msg)) => {
                    shared.counters.in_flight.fetch_add(1, Ordering::Relaxed);
                    tasks.spawn(handle(shared.clone(), msg));
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "pull ended");
                    break;
                }
                None => break,
            }
        }
    }
    // Drain: nothing new; what is held finishes, or goes back.
    draining.store(true, Ordering::Relaxed);
    tracing::info!(held = tasks.len(), "draining");
    if let Ok(b) = serde_json::to_vec(&beat()) {
        let _ = client.publish(wire::HEARTBEAT, b.into()).await;
    }
    let drained = tokio::time::timeout(opts.drain_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        let _ = abandon_tx.send(true);
        while tasks.join_next().await.is_some() {}
    }
    shared.counters.in_flight.store(0, Ordering::Relaxed);
    if let Ok(b) = serde_json::to_vec(&beat()) {
        let _ = client.publish(wire::HEARTBEAT, b.into()).await;
    }
    heartbeats.abort();
    let _ = client.flush().await;
    eprintln!("segsync worker {} stopped", opts.name);
    Ok(())
}

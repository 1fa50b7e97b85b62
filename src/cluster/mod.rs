//! Past one machine: the NATS JetStream side of `serve --nats` (the
//! coordinator) and of `segsync worker`.
//!
//! The coordinator keeps everything stateful — the store, plans,
//! checkpoints, schedules, the rate limiters — and renders pages; workers
//! are stateless senders. Two JetStream work-queue streams (file storage)
//! carry the work: `SEGSYNC_PAGES` (one message per rendered page, pulled
//! by any worker through the shared durable consumer `workers`) and
//! `SEGSYNC_OUTCOMES` (what became of each page, pulled by the coordinator
//! through one durable consumer per execution). A page message is
//! acknowledged only after its outcome is stored in JetStream, so a worker
//! killed mid-page leaves the page to be redelivered after the ack wait,
//! and a coordinator killed mid-run finds every outcome waiting when it
//! resumes. Rate permits and destination settings are request/reply to the
//! coordinator (see [`wire`]).

pub mod wire;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;

pub use wire::Heartbeat;

/// The page stream.
pub const PAGES_STREAM: &str = "SEGSYNC_PAGES";
/// The outcome stream.
pub const OUTCOMES_STREAM: &str = "SEGSYNC_OUTCOMES";
/// The workers' shared durable consumer of the page stream.
pub const WORKERS_CONSUMER: &str = "workers";
/// How long outcomes are kept: a run resumed later than this sends again
/// the pages whose outcomes it had not recorded (same keys and bytes).
pub const OUTCOMES_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often a worker says it is alive.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// A worker silent this long is listed as gone (and dropped after 10×).
pub const WORKER_GONE_AFTER: Duration = Duration::from_secs(10);

/// Errors of the NATS side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server cannot be reached.
    #[error("cannot connect to NATS at {url}: {cause}")]
    Connect {
        /// The URL given.
        url: String,
        /// Why.
        cause: String,
    },
    /// JetStream refused to set up or use a stream or consumer.
    #[error(
        "JetStream {what}: {cause} (is JetStream enabled? start nats-server with -js -sd DIR)"
    )]
    JetStream {
        /// What was being done.
        what: String,
        /// Why it failed.
        cause: String,
    },
}

impl crate::error::Classify for Error {
    fn fault(&self) -> crate::error::Fault {
        crate::error::Fault::Internal
    }
}

fn js_err(what: &str) -> impl FnOnce(String) -> Error + '_ {
    move |cause| Error::JetStream {
        what: what.to_string(),
        cause,
    }
}

/// Settings of `serve --nats`.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The NATS server, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// How long a worker may hold a page without a sign of life before it
    /// is redelivered to another (workers extend it while they work).
    pub ack_wait: Duration,
    /// Longest time from a permit's grant to its request (see
    /// [`wire::PermitGrant`]).
    pub grace: Duration,
}

impl ClusterOptions {
    /// Defaults for `url`: 30 s ack wait, 500 ms grace.
    pub fn new(url: impl Into<String>) -> ClusterOptions {
        ClusterOptions {
            url: url.into(),
            ack_wait: Duration::from_secs(30),
            grace: Duration::from_millis(500),
        }
    }
}

/// A client connection that retries for ever once it was up (a restarted
/// server is reconnected to), named for the server's monitoring.
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client, Error> {
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None::<usize>)
        .connect(url)
        .await
        .map_err(|e| Error::Connect {
            url: url.to_string(),
            cause: e.to_string(),
        })
}

/// A worker as the coordinator last heard of it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct WorkerView {
    /// Its last heartbeat.
    #[serde(flatten)]
    pub status: Heartbeat,
    /// Seconds since that heartbeat.
    pub seen_secs_ago: f64,
    /// `alive`, or `gone` (silent for 10 s).
    pub state: String,
}

/// The coordinator's connection: the streams, the workers' consumer, and
/// the workers heard from.
pub struct Cluster {
    /// The NATS connection.
    pub client: async_nats::Client,
    /// JetStream on it.
    pub js: jetstream::Context,
    /// Settings.
    pub options: ClusterOptions,
    /// The largest message the server takes.
    pub max_payload: usize,
    workers: Arc<Mutex<BTreeMap<String, (Heartbeat, Instant)>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("options", &self.options)
            .finish()
    }
}

/// The page and outcome streams (work queues on disk), created if missing.
pub async fn ensure_streams(
    js: &jetstream::Context,
) -> Result<(stream::Stream, stream::Stream), Error> {
    // Pages: a work queue, a message gone once a worker acknowledged it.
    // A page published again (a resumed run) within the duplicate window
    // is dropped by its message id, the page's idempotency key.
    let pages = js
        .get_or_create_stream(stream::Config {
            name: PAGES_STREAM.to_string(),
            subjects: vec![wire::PAGES_SUBJECTS.to_string()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|e| js_err("creating the page stream")(e.to_string()))?;
    // Outcomes: kept (a week), so that a coordinator resuming a run reads
    // every outcome of it again from the start, those it had received but
    // not yet recorded included. Nothing is purged while other runs read:
    // a filtered purge can make nats-server 2.9 consumers skip messages
    // published meanwhile (seen here), so old outcomes age out instead.
    let outcomes = js
        .get_or_create_stream(stream::Config {
            name: OUTCOMES_STREAM.to_string(),
            subjects: vec![wire::OUTCOMES_SUBJECTS.to_string()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: OUTCOMES_KEPT,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|e| js_err("creating the outcome stream")(e.to_string()))?;
    Ok((pages, outcomes))
}

impl Cluster {
    /// Connects, sets up the streams and the workers' consumer, and starts
    /// listening to heartbeats. Call it on the runtime that lives as long
    /// as the process (the connection's tasks run there).
    pub async fn start(options: ClusterOptions) -> Result<Arc<Cluster>, Error> {
        let client = connect(&options.url, "segsync-coordinator").await?;
        let max_payload = client.server_info().max_payload;
        let js = jetstream::new(client.clone());
        let (pages, _) = ensure_streams(&js).await?;
        let config = consumer::pull::Config {
            durable_name: Some(WORKERS_CONSUMER.to_string()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: options.ack_wait,
            max_deliver: -1,
            max_ack_pending: 100_000,
            filter_subject: wire::PAGES_SUBJECTS.to_string(),
            ..Default::default()
        };
        // The ack wait is the coordinator's setting: update it if it changed.
        match pages
            .get_consumer::<consumer::pull::Config>(WORKERS_CONSUMER)
            .await
        {
            Ok(c) if c.cached_info().config.ack_wait == options.ack_wait => {}
            Ok(_) => {
                // Pages in the work queue stay; the new consumer delivers
                // the unacknowledged ones again.
                pages
                    .delete_consumer(WORKERS_CONSUMER)
                    .await
                    .map_err(|e| js_err("replacing the workers' consumer")(e.to_string()))?;
                pages
                    .create_consumer(config)
                    .await
                    .map_err(|e| js_err("creating the workers' consumer")(e.to_string()))?;
            }
            Err(_) => {
                pages
                    .create_consumer(config)
                    .await
                    .map_err(|e| js_err("creating the workers' consumer")(e.to_string()))?;
            }
        }
        let workers: Arc<Mutex<BTreeMap<String, (Heartbeat, Instant)>>> = Arc::default();
        let mut beats = client
            .subscribe(wire::HEARTBEAT)
            .await
            .map_err(|e| js_err("subscribing to heartbeats")(e.to_string()))?;
        let seen = workers.clone();
        tokio::spawn(async move {
            while let Some(msg) = beats.next().await {
                let Ok(hb) = serde_json::from_slice::<Heartbeat>(&msg.payload) else {
                    tracing::warn!("an unreadable worker heartbeat was ignored");
                    continue;
                };
                let mut w = seen.lock().unwrap_or_else(PoisonError::into_inner);
                w.retain(|_, (_, at)| at.elapsed() < WORKER_GONE_AFTER * 10);
                w.insert(hb.name.clone(), (hb, Instant::now()));
            }
        });
        tracing::info!(url = %options.url, max_payload, "connected to NATS JetStream as coordinator");
        Ok(Arc::new(Cluster {
            client,
            js,
            options,
            max_payload,
            workers,
        }))
    }

    /// The workers heard from, by name.
    pub fn workers(&self) -> Vec<WorkerView> {
        let w = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        w.values()
            .map(|(hb, at)| WorkerView {
                status: hb.clone(),
                seen_secs_ago: (at.elapsed().as_secs_f64() * 10.0).round() / 10.0,
                state: if at.elapsed() < WORKER_GONE_AFTER {
                    "alive".into()
                } else {
                    "gone".into()
                },
            })
            .collect()
    }
}

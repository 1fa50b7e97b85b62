//! The sender stage of a coordinator (`serve --nats`): instead of posting
//! rendered pages itself, it publishes them to JetStream for the workers,
//! serves the run's rate permits and destination settings, and turns the
//! workers' outcomes into the same checkpoint events the local sender
//! produces — so plans, checkpoints, resumption and history are the
//! in-process ones.
//!
//! At-least-once across crashes: a page message is acknowledged by its
//! worker only after the outcome is stored in JetStream, and outcomes are
//! kept; every incarnation of a run reads its outcomes from the first, so
//! a coordinator killed mid-run finds them all when it resumes, recorded
//! or not. A resumed run publishes again every page not yet recorded, with
//! the page's idempotency key as message id: a copy still in the stream
//! within JetStream's duplicate window is not stored twice; past it, the
//! page may go out twice, with the same key and the same bytes. An
//! outcome that arrives before its page is published again resolves it.
//! Nothing is purged (see `cluster::ensure_streams`): a stopped run
//! withdraws its pages by deleting their messages one by one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::consumer;
use bytes::Bytes;
use futures_util::StreamExt;
use roaring::RoaringBitmap;
use tokio::time::Instant;

use super::checkpoint::Event;
use super::rate::{self, RateLimiter, Signal};
use super::render::Rendered;
use super::send::{self, PageError, PageStats};
use crate::cluster::wire::{self, DestinationReply, PageOutcome, PermitGrant, Report, WireSignal};
use crate::cluster::{Cluster, OUTCOMES_STREAM, PAGES_STREAM};
use crate::destination::Destination;

/// How long a stopping run waits for the outcomes of pages workers hold.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// One execution, as the coordinator sees it.
pub(crate) struct Run<'a> {
    /// The coordinator's connection.
    pub(crate) cluster: &'a Cluster,
    /// Where the pages go.
    pub(crate) dest: &'a Destination,
    /// Sync id.
    pub(crate) sync_id: u32,
    /// Execution seq.
    pub(crate) seq: u32,
    /// Pages acknowledged when the run started.
    pub(crate) done: &'a RoaringBitmap,
}

/// Permits granted for this run: the first and last grant and how many
/// (its effective rate).
#[derive(Default)]
struct Grants {
    first: Option<Instant>,
    last: Option<Instant>,
    count: u64,
}

impl Grants {
    fn rpm(&self) -> u32 {
        match (self.first, self.last) {
            (Some(a), Some(b)) if b > a => {
                ((self.count - 1) as f64 * 60.0 / (b - a).as_secs_f64()).round() as u32
            }
            _ => self.count as u32,
        }
    }
}

fn signal_of(s: WireSignal) -> Signal {
    match s {
        WireSignal::Accepted => Signal::Accepted,
        WireSignal::Throttled(ms) => Signal::Throttled(WireSignal::after(ms)),
        WireSignal::Overloaded(ms) => Signal::Overloaded(WireSignal::after(ms)),
        WireSignal::Neutral => Signal::Neutral,
    }
}

/// Answers the run's requests (settings, permits, reports) until dropped.
async fn serve_requests(
    client: async_nats::Client,
    subject: String,
    reply: DestinationReply,
    limiter: Arc<RateLimiter>,
    epoch: Instant,
    grants: Arc<Mutex<Grants>>,
) {
    let settings = match serde_json::to_vec(&reply) {
        Ok(b) => Bytes::from(b),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the destination settings");
            return;
        }
    };
    loop {
        let mut sub = match client.subscribe(subject.clone()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to the run's requests; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        while let Some(msg) = sub.next().await {
            let what = msg.subject.rsplit('.').next().unwrap_or("");
            match (what, msg.reply.clone()) {
                ("dest", Some(to)) => {
                    let _ = client.publish(to, settings.clone()).await;
                }
                ("permit", Some(to)) => {
                    // Answered at once (the worker waits for the slot): a
                    // request never waits on a coordinator that may die.
                    let slot = limiter.reserve();
                    let grant = PermitGrant {
                        slot_ns: (slot - epoch).as_nanos() as u64,
                        wait_ns: slot.saturating_duration_since(Instant::now()).as_nanos() as u64,
                        stalled_rounds: limiter.stalled_rounds(),
                        rpm: limiter.rpm(),
                    };
                    {
                        let mut g = grants.lock().unwrap_or_else(PoisonError::into_inner);
                        g.first.get_or_insert(slot);
                        g.last = Some(slot);
                        g.count += 1;
                    }
                    if let Ok(body) = serde_json::to_vec(&grant) {
                        let _ = client.publish(to, body.into()).await;
                    }
                }
                ("report", _) => {
                    if let Ok(r) = serde_json::from_slice::<Report>(&msg.payload) {
                        limiter
                            .report(epoch + Duration::from_nanos(r.slot_ns), signal_of(r.signal));
                    }
                }
                _ => {}
            }
        }
        // The subscription ended (the connection was replaced): again.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Retries `f` until it succeeds or `give_up()`; `what` names it in logs.
async fn persist<T, E: std::fmt::Display, F, Fut>(
    what: &str,
    give_up: impl Fn() -> bool,
    mut f: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match f().await {
            Ok(v) => return Some(v),
            Err(e) => {
                if give_up() {
                    return None;
                }
                tracing::warn!(error = %e, "{what} failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Every outcome of the run, from the first (an ordered consumer: no
/// acknowledgements, and a fresh one after any error).
async fn outcome_messages(
    cluster: &Cluster,
    sync_id: u32,
    seq: u32,
) -> Result<consumer::pull::Ordered, String> {
    let stream = cluster
        .js
        .get_stream(OUTCOMES_STREAM)
        .await
        .map_err(|e| e.to_string())?;
    let c = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: wire::outcomes_subject(sync_id, seq),
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    c.messages().await.map_err(|e| e.to_string())
}

impl Run<'_> {
    /// Publishes the rendered pages and turns outcomes into checkpoint
    /// events until every page is accounted for, or `stopped()` (then the
    /// pages not yet taken by a worker are withdrawn and the outcomes of
    /// those held are awaited a while). Returns the rate achieved.
    pub(crate) async fn drive(
        self,
        window: usize,
        mut pages: tokio::sync::mpsc::Receiver<Rendered>,
        events: crossbeam::channel::Sender<Event>,
        stopped: impl Fn() -> bool,
        fail: &(dyn Fn(String) + Sync),
    ) -> u32 {
        let (cluster, dest, sync_id, seq) = (self.cluster, self.dest, self.sync_id, self.seq);
        let grace = cluster.options.grace;
        let limiter = rate::for_destination_with_grace(
            &dest.name,
            dest.url.as_str(),
            dest.rpm,
            dest.retry.delay,
            grace,
        );
        let grants: Arc<Mutex<Grants>> = Arc::default();
        let epoch = Instant::now();
        let services = tokio::spawn(serve_requests(
            cluster.client.clone(),
            wire::run_subject(sync_id, seq, "*"),
            DestinationReply {
                id: dest.id,
                config: dest.config.clone(),
                grace_ms: grace.as_millis() as u64,
            },
            limiter,
            epoch,
            grants.clone(),
        ));
        let pages_subject = wire::pages_subject(sync_id, seq);
        // Pages not taken by a worker are withdrawn when the run stops.
        let withdraw = |seqs: Vec<u64>| async move {
            if let Ok(s) = cluster.js.get_stream(PAGES_STREAM).await {
                for q in seqs {
                    let _ = s.delete_message(q).await;
                }
            }
        };
        let dest_name = dest.name.clone();
        let mut resolved = self.done.clone();
        // Published and not yet resolved: page → its stream sequence.
        let mut outstanding: HashMap<u32, u64> = HashMap::new();
        let mut input_open = true;
        let mut stop_by: Option<Instant> = None;
        let mut published = 0u64;
        let mut outcomes: Option<consumer::pull::Ordered> = None;
        let emit = |o: PageOutcome, resolved: &mut RoaringBitmap| {
            if !resolved.insert(o.index) {
                return; // a second outcome of a page sent twice
            }
            let result = match o.failure {
                None => Ok(PageStats {
                    requests: o.requests,
                    throttled: o.throttled,
                }),
                Some(f) => Err(PageError {
                    message: f.message,
                    requests: o.requests,
                    throttled: o.throttled,
                    refused: f.refused,
                    last_error: f.last_error,
                    unreachable: false,
                }),
            };
            send::PageOutcome {
                index: o.index,
                skipped: o.skipped,
                users: o.users,
                result,
            }
            .record(&dest_name, &events, fail);
        };
        loop {
            if stop_by.is_none() && stopped() {
                // Withdraw what no worker took; wait a while for the rest.
                withdraw(outstanding.values().copied().collect()).await;
                stop_by = Some(Instant::now() + STOP_WAIT);
            }
            outstanding.retain(|i, _| !resolved.contains(*i));
            if outstanding.is_empty() && (!input_open || stop_by.is_some()) {
                break;
            }
            if stop_by.is_some_and(|t| Instant::now() >= t) {
                break;
            }
            if outcomes.is_none() {
                match outcome_messages(cluster, sync_id, seq).await {
                    Ok(s) => outcomes = Some(s),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the run's outcomes; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                }
            }
            let can_take = input_open && stop_by.is_none() && outstanding.len() < window;
            let Some(stream) = outcomes.as_mut() else {
                continue;
            };
            let mut reconnect = false;
            tokio::select! {
                page = pages.recv(), if can_take => {
                    let Some(page) = page else {
                        input_open = false;
                        continue;
                    };
                    if resolved.contains(page.index) {
                        continue; // its outcome came before it was published again
                    }
                    if page.body.is_empty() {
                        emit(PageOutcome {
                            index: page.index,
                            skipped: page.skipped,
                            users: 0,
                            requests: 0,
                            throttled: 0,
                            failure: None,
                            worker: String::new(),
                        }, &mut resolved);
                        continue;
                    }
                    if page.body.len() + 1024 > cluster.max_payload {
                        fail(format!(
                            "page {} is {} bytes, more than the NATS server takes in one message ({} bytes): raise max_payload in nats-server's configuration (up to 64 MB) or lower the destination's page size",
                            page.index + 1, page.body.len(), cluster.max_payload
                        ));
                        continue;
                    }
                    let key = send::PageSender::key_of(sync_id, seq, page.index);
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert(wire::H_PAGE, page.index.to_string().as_str());
                    headers.insert(wire::H_SKIPPED, page.skipped.to_string().as_str());
                    headers.insert(wire::H_USERS, (page.adds + page.removes).to_string().as_str());
                    headers.insert(wire::H_KEY, key.as_str());
                    headers.insert("Nats-Msg-Id", key.as_str());
                    let body = Bytes::from(page.body);
                    let sent = persist("publishing a page", &stopped, || {
                        let (h, b, subject) = (headers.clone(), body.clone(), pages_subject.clone());
                        async move {
                            match cluster.js.publish_with_headers(subject, h, b).await {
                                Ok(ack) => ack.await.map(|a| a.sequence).map_err(|e| e.to_string()),
                                Err(e) => Err(e.to_string()),
                            }
                        }
                    })
                    .await;
                    if let Some(q) = sent {
                        published += 1;
                        outstanding.insert(page.index, q);
                    }
                }
                msg = stream.next() => {
                    match msg {
                        Some(Ok(m)) => {
                            match serde_json::from_slice::<PageOutcome>(&m.payload) {
                                Ok(o) => emit(o, &mut resolved),
                                _ => tracing::warn!(subject = %m.subject, "an unreadable page outcome was dropped"),
                            }
                        }
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "reading outcomes failed; reconnecting");
                            reconnect = true;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        None => reconnect = true,
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            if reconnect {
                outcomes = None;
            }
        }
        // Renderers blocked on a full channel (a run stopped early) end.
        pages.close();
        while pages.recv().await.is_some() {}
        services.abort();
        tracing::info!(
            sync = sync_id,
            execution = seq,
            published,
            "run's pages handed to workers"
        );
        let rpm = grants.lock().unwrap_or_else(PoisonError::into_inner).rpm();
        rpm
    }
}

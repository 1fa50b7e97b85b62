//! `segsync serve`: one process holding the store, with the scheduler,
//! resumption of executions left processing, and the HTTP endpoints (the
//! admin REST API under `/api/v1`, the web console at `/`, `/healthz`,
//! `/metrics`, and the inbound Cohort Sync and Personas endpoints under
//! `/v1`).
//!
//! Shutdown is an argument ([`serve`] takes a future): the binary passes
//! Ctrl-C/SIGTERM, tests pass a oneshot. On shutdown no new run starts,
//! running executions finish the pages in flight and checkpoint, and stay
//! processing; the next start resumes them.

mod admin;
mod api;
mod console;
mod gate;
mod inbound;
mod openapi;
mod reply;
mod scheduler;
mod upload;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::config::ReceiverLimits;
use crate::lifecycle::actions::{self, ActionError};
use crate::lifecycle::{ExecStatus, ExecutionRecord, SyncRecord, Trigger};
use crate::pipeline::RunOptions;
use crate::store::Store;

/// What a CLI command run for a client printed, and its exit code.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CommandOutput {
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
    /// Its exit code.
    pub exit_code: i32,
}

/// Runs a CLI command (its arguments after `segsync`) against the store
/// `serve` holds, for a CLI client; `read_only` when the caller may only
/// read. The CLI injects it ([`ServeOptions::commands`]): the server does
/// not depend on the CLI.
pub type CommandRunner = Arc<dyn Fn(Vec<String>, Arc<Store>, bool) -> CommandOutput + Send + Sync>;

/// Server settings.
#[derive(Clone)]
pub struct ServeOptions {
    /// How often the scheduler looks for due syncs.
    pub tick: Duration,
    /// What the Cohort Sync receiver accepts (`[inbound]`).
    pub cohort: ReceiverLimits,
    /// Listen beyond loopback although no API token exists (the admin API
    /// is then open to the network).
    pub insecure: bool,
    /// Runs CLI commands for CLI clients (`POST /api/v1/commands`).
    pub commands: Option<CommandRunner>,
    /// A token for this machine's CLI, valid while this process runs (it
    /// is written to the data dir's `serve.json`, readable by its owner).
    pub local_token: Option<String>,
    /// `[retention]`, applied in the background.
    pub retention: crate::config::Retention,
    /// Hand pages to workers over NATS JetStream (`--nats`).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// How much one Personas group commit takes at most.
    pub personas: crate::inbound::personas::GroupLimits,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("tick", &self.tick)
            .field("cohort", &self.cohort)
            .field("insecure", &self.insecure)
            .field("commands", &self.commands.is_some())
            .finish()
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            tick: Duration::from_secs(10),
            cohort: ReceiverLimits::default(),
            insecure: false,
            commands: None,
            local_token: None,
            retention: crate::config::Retention::default(),
            cluster: None,
            personas: Default::default(),
        }
    }
}

/// What the handlers and the scheduler share.
pub(crate) struct AppState {
    pub(crate) store: Arc<Store>,
    /// Syncs running now, each with the flag that stops its run (set when
    /// the sync is archived meanwhile).
    running: Mutex<HashMap<u32, Arc<AtomicBool>>>,
    /// Set at shutdown: no new run, and every run stops taking pages.
    cancel: Arc<AtomicBool>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    cohort_limiter: crate::inbound::WindowLimiter,
    cohort_limits: ReceiverLimits,
    /// Personas calls, applied by one writer thread with group commit.
    pub(crate) personas: crate::inbound::personas::Committer,
    /// Woken when notifications may be waiting in the outbox.
    pub(crate) mail: tokio::sync::Notify,
    /// The admin API's tokens, as stored (reloaded when the API changes
    /// them; nothing else writes them while `serve` holds the store).
    tokens: std::sync::RwLock<Arc<Vec<crate::auth::Token>>>,
    pub(crate) commands: Option<CommandRunner>,
    pub(crate) local_token: Option<String>,
    /// The NATS side, with `--nats`.
    pub(crate) cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl AppState {
    fn new(store: Arc<Store>, opts: &ServeOptions) -> std::io::Result<AppState> {
        let personas = crate::inbound::personas::Committer::start(store.clone(), opts.personas)?;
        Ok(AppState {
            store,
            running: Mutex::new(HashMap::new()),
            cancel: Arc::new(AtomicBool::new(false)),
            threads: Mutex::new(Vec::new()),
            cohort_limiter: crate::inbound::WindowLimiter::new(opts.cohort.rpm),
            cohort_limits: opts.cohort,
            personas,
            mail: tokio::sync::Notify::new(),
            tokens: Default::default(),
            commands: opts.commands.clone(),
            local_token: opts.local_token.clone(),
            cluster: opts.cluster.clone(),
        })
    }

    /// The admin API's tokens now.
    pub(crate) fn tokens(&self) -> Arc<Vec<crate::auth::Token>> {
        self.tokens
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the tokens from the store again.
    pub(crate) fn reload_tokens(&self) -> Result<(), crate::auth::Error> {
        let all = crate::auth::list(&self.store)?;
        *self.tokens.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(all);
        Ok(())
    }

    /// Starts a run of `sync_id`: checks that it is allowed now and plans
    /// (or resumes) its execution here, so a refusal is the caller's answer,
    /// then executes it on its own thread. Refuses a second concurrent run
    /// of the same sync. Blocking: call it off the async runtime.
    pub(crate) fn start_run(
        self: &Arc<Self>,
        sync_id: u32,
        trigger: Trigger,
        by: &str,
    ) -> Result<(ExecutionRecord, Option<String>), ActionError> {
        self.start_with(sync_id, |store| {
            actions::start_run(store, sync_id, trigger, chrono::Utc::now(), by)
        })
    }

    /// Replays failed execution `seq` of `sync_id` like a run
    /// ([`actions::start_replay`]).
    pub(crate) fn start_replay(
        self: &Arc<Self>,
        sync_id: u32,
        seq: u32,
        by: &str,
    ) -> Result<(ExecutionRecord, Option<String>), ActionError> {
        self.start_with(sync_id, |store| {
            actions::start_replay(store, sync_id, seq, chrono::Utc::now(), by)
        })
    }

    fn start_with(
        self: &Arc<Self>,
        sync_id: u32,
        start: impl FnOnce(&Store) -> Result<actions::StartedRun, ActionError>,
    ) -> Result<(ExecutionRecord, Option<String>), ActionError> {
        if self.cancel.load(Ordering::SeqCst) {
            return Err(ActionError::Conflict("the server is shutting down".into()));
        }
        let stop = Arc::new(AtomicBool::new(false));
        {
            let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            if running.contains_key(&sync_id) {
                return Err(ActionError::Conflict(format!("sync {sync_id} is running")));
            }
            running.insert(sync_id, stop.clone());
        }
        let not_running = move |state: &AppState| {
            state
                .running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&sync_id);
        };
        let started = match start(&self.store) {
            Ok(s) => s,
            Err(e) => {
                not_running(self);
                return Err(e);
            }
        };
        let planned = started.execution().clone();
        let note = started.note.clone();
        let state = self.clone();
        let handle = std::thread::spawn(move || {
            let opts = RunOptions {
                cancel: vec![state.cancel.clone(), stop],
                cluster: state.cluster.clone(),
                ..Default::default()
            };
            match started.execute(&state.store, &opts) {
                Ok(e) => {
                    tracing::info!(sync = sync_id, execution = e.seq, status = ?e.status, "run ended")
                }
                Err(e) => tracing::warn!(sync = sync_id, error = %e, "run failed to execute"),
            }
            not_running(&state);
            state.mail.notify_one();
            // The run's page buffers and reads are free now, in this and
            // its renderers' arenas.
            crate::allocator::release_free_memory();
        });
        let mut threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
        // Join the runs that ended: an exited thread keeps its stack until
        // it is joined, so a server running syncs all day grew by a stack
        // per run (the soak showed it).
        let (ended, running): (Vec<_>, Vec<_>) = std::mem::take(&mut *threads)
            .into_iter()
            .partition(|h| h.is_finished());
        for h in ended {
            let _ = h.join();
        }
        *threads = running;
        threads.push(handle);
        Ok((planned, note))
    }

    pub(crate) fn is_running(&self, sync_id: u32) -> bool {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&sync_id)
    }

    /// Stops the run of `sync_id` in progress, if any, at the next page
    /// boundary (after the sync was archived).
    pub(crate) fn stop_run(&self, sync_id: u32) {
        if let Some(stop) = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&sync_id)
        {
            stop.store(true, Ordering::SeqCst);
        }
    }
}

/// Resumes every execution a previous process left processing.
fn resume_interrupted(state: &Arc<AppState>) {
    let Ok(syncs) = SyncRecord::all(&state.store) else {
        return;
    };
    for s in syncs {
        let processing = s
            .last_execution
            .and_then(|seq| {
                ExecutionRecord::load(&state.store, s.id, seq)
                    .ok()
                    .flatten()
            })
            .is_some_and(|e| e.status == ExecStatus::Processing);
        if processing {
            tracing::info!(sync = s.id, "resuming an execution left processing");
            if let Err(e) = state.start_run(s.id, Trigger::Scheduled, "scheduler") {
                tracing::warn!(sync = s.id, error = %e, "cannot resume");
            }
        }
    }
}

/// Serves until `shutdown` completes, then lets running executions
/// checkpoint and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Arc<Store>,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = Arc::new(AppState::new(store, &opts)?);
    state.reload_tokens().map_err(std::io::Error::other)?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() && state.tokens().is_empty() && !opts.insecure {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "refusing to listen on {addr}: no API token exists, so the admin API would be open to the network; create one with `segsync token create NAME --role admin`, or pass --insecure"
            ),
        ));
    }
    resume_interrupted(&state);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sched = tokio::spawn(scheduler::run(state.clone(), opts.tick, stop_rx.clone()));
    let keeper = tokio::spawn(scheduler::retention(
        state.clone(),
        opts.retention,
        stop_rx.clone(),
    ));
    let mailer = tokio::spawn(scheduler::deliver_mail(
        state.clone(),
        opts.tick,
        stop_rx.clone(),
    ));
    let app = api::router(state.clone());
    let cancel = state.cancel.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: no new runs; running executions checkpoint");
            cancel.store(true, Ordering::SeqCst);
            let _ = stop_tx.send(true);
        })
        .await?;
    let _ = sched.await;
    let _ = keeper.await;
    let _ = mailer.await;
    let threads: Vec<_> =
        std::mem::take(&mut *state.threads.lock().unwrap_or_else(PoisonError::into_inner));
    let joined = state.clone();
    tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
        // Every request was answered before axum returned: nothing is queued.
        joined.personas.stop();
    })
    .await
    .map_err(std::io::Error::other)?;
    release(state).await;
    Ok(())
}

/// How long [`release`] waits for the last copies of the state.
const RELEASE_WAIT: Duration = Duration::from_secs(10);

/// Waits until `state` is the last copy of the state, then drops it, so
/// that a caller can reopen the data dir as soon as [`serve`] returns.
///
/// axum's graceful shutdown stops waiting for a connection's task just
/// before that task drops its copy of the router, and with it a copy of the
/// state (and the store): on a loaded machine the store could still be held
/// when `serve` had returned, and reopening it failed as locked.
async fn release(mut state: Arc<AppState>) {
    let deadline = tokio::time::Instant::now() + RELEASE_WAIT;
    loop {
        match Arc::try_unwrap(state) {
            Ok(last) => {
                // Closing RocksDB flushes and joins its threads: not on a
                // runtime worker.
                let _ = tokio::task::spawn_blocking(move || drop(last)).await;
                return;
            }
            Err(shared) if tokio::time::Instant::now() >= deadline => {
                tracing::warn!(
                    copies = Arc::strong_count(&shared),
                    "serve returned while copies of its state were still held"
                );
                return;
            }
            Err(shared) => {
                state = shared;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

//! One execution as a pipeline:
//!
//! ```text
//! plan (persisted) → pager → renderer ×n → sender (tokio) → checkpoint
//!        crossbeam bounded     tokio mpsc bounded     crossbeam
//! ```
//!
//! The plan is written before the first request ([`crate::plan::plan_execution`]).
//! The pager cuts deterministic pages, skipping pages already acknowledged;
//! renderer threads resolve users and write JSON into buffers; the sender
//! posts them under the rate limit with retries; the checkpoint records
//! every acknowledged page. Channels are bounded, so memory is proportional
//! to the pages in flight, never to the segment. Blocking work (RocksDB,
//! rendering) runs on threads, network work on a tokio runtime.

mod checkpoint;
mod pager;
pub mod rate;
mod render;
pub mod send;

use std::sync::Mutex;

use bytes::Bytes;
use crossbeam::channel;
use roaring::RoaringBitmap;

use crate::destination::{self, cohort_sync, segment_sync, ConfigError, Destination, FormatSpec};
use crate::lifecycle::{actions, notify, rules};
use crate::lifecycle::{BitmapKind, ExecStatus, ExecutionRecord, SyncRecord, Trigger};
use crate::plan;
use crate::progress::Progress;
use crate::store::{self, Store};

pub use pager::total_pages;

/// What a sender task reports: page, users skipped, users sent, outcome.
type PageResult = (u32, u32, u32, Result<send::PageStats, send::PageError>);

/// Errors that stop an execution from being run at all. (A run that starts
/// and fails ends as a failed execution, not as an error.)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No such sync.
    #[error("sync {0} not found (see `segsync sync list`)")]
    NoSync(u32),
    /// Planning failed (segment or attribute missing).
    #[error(transparent)]
    Plan(#[from] plan::Error),
    /// The destination is missing.
    #[error(transparent)]
    Destination(#[from] destination::Error),
    /// The stored destination no longer validates.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The HTTP client or runtime could not start.
    #[error("cannot start the sender: {0}")]
    Start(String),
    /// A pipeline thread died.
    #[error("internal error: {0}")]
    Internal(String),
    /// The run is not allowed now (status, limit, cool-off).
    #[error(transparent)]
    Action(#[from] crate::lifecycle::actions::ActionError),
}

impl Error {
    /// True for errors in what the user asked for.
    pub fn is_bad_input(&self) -> bool {
        match self {
            Error::NoSync(_) | Error::Config(_) => true,
            Error::Action(e) => e.is_bad_input(),
            Error::Plan(e) => e.is_bad_input(),
            Error::Destination(e) => e.is_bad_input(),
            Error::Store(_) | Error::Start(_) | Error::Internal(_) => false,
        }
    }
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Show a progress bar on a terminal.
    pub progress: bool,
    /// Renderer threads.
    pub render_threads: usize,
    /// Set to stop early (shutdown): no new page is sent, the pages in
    /// flight finish and are checkpointed, and the execution stays
    /// processing, to be resumed by the next run.
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            progress: false,
            render_threads: 2,
            cancel: None,
        }
    }
}

/// Runs sync `sync_id` once: resumes its execution left processing, or plans
/// a new one for `trigger`; returns the execution as it ended (complete or
/// failed). Refuses what the status table, limits or cool-off forbid.
pub fn run_sync(
    store: &Store,
    sync_id: u32,
    trigger: Trigger,
    opts: &RunOptions,
) -> Result<ExecutionRecord, Error> {
    let mut sync = SyncRecord::load(store, sync_id)?.ok_or(Error::NoSync(sync_id))?;
    let dest = destination::get(store, &sync.destination)?.validated()?;
    actions::check_run(store, &sync, trigger, dest.allow_resync, chrono::Utc::now())?;
    let resumable = match sync.last_execution {
        Some(seq) => ExecutionRecord::load(store, sync.id, seq)?
            .filter(|e| e.status == ExecStatus::Processing),
        None => None,
    };
    let exec = match resumable {
        Some(e) => {
            tracing::info!(
                sync = sync.id,
                execution = e.seq,
                pages_done = e.pages_done,
                "resuming execution"
            );
            e
        }
        None => plan::plan_execution(store, &mut sync, dest.page_size.get(), trigger)?,
    };
    execute(store, &mut sync, exec, dest, opts)
}

/// The renderer of one execution: the synced attribute, the values' as-of
/// points (the plan's write sequence, and the removal groups) and the body
/// fragments.
fn renderer_for<'a>(
    store: &'a Store,
    sync: &SyncRecord,
    exec: &ExecutionRecord,
    dest: &Destination,
) -> Result<render::Renderer<'a>, Error> {
    let mut groups = Vec::with_capacity(exec.removed_as_of.len());
    for (i, seq) in exec.removed_as_of.iter().enumerate() {
        groups.push((*seq, exec.bitmap(store, BitmapKind::RemovedAsOf(i as u8))?));
    }
    let attr = store
        .attr_id(&sync.attribute)
        .ok_or_else(|| plan::Error::UnknownAttribute(sync.attribute.clone()))?;
    let format = match &dest.format {
        FormatSpec::Custom => {
            let ids = segment_sync::Ids {
                sync_id: sync.id.to_string(),
                sync_name: sync.segment.clone(),
                execution_id: exec.execution_id(),
                integration_id: format!("{}-{}", dest.id, sync.id),
            };
            render::Body::Custom(segment_sync::SegmentSyncFormat::new(
                dest,
                &sync.attribute,
                &ids,
                exec.total_pages,
            ))
        }
        FormatSpec::Cohort(c) => render::Body::Cohort(
            cohort_sync::CohortSyncFormat::new(c, &sync.segment, sync.id, exec.started_ms),
            c.max_body as usize,
        ),
    };
    Ok(render::Renderer {
        store,
        attr,
        write_seq: exec.write_seq,
        removal_groups: groups,
        format,
    })
}

/// Users measured per batch when planning size-capped pages.
const MEASURE_BATCH: usize = 8192;

/// The page cuts of an execution. Custom-format pages are cut by count.
/// Cohort Sync pages are cut by size too, so the planner measures every
/// member once and persists where pages start (and the page count) before
/// the first request; a resumed run reads them back.
fn page_starts(
    store: &Store,
    exec: &mut ExecutionRecord,
    dest: &Destination,
    renderer: &render::Renderer<'_>,
    added: &RoaringBitmap,
    removed: &RoaringBitmap,
) -> Result<Option<RoaringBitmap>, Error> {
    let stored = exec.bitmap_if_any(store, BitmapKind::PageStarts)?;
    let render::Body::Cohort(format, max_body) = &renderer.format else {
        if stored.is_some() {
            return Err(Error::Internal(format!(
                "execution {} was planned for Cohort Sync but destination '{}' is now custom; run `sync resync-last`",
                exec.execution_id(),
                dest.name
            )));
        }
        return Ok(None);
    };
    if let Some(starts) = stored {
        return Ok(Some(starts));
    }
    if exec.pages_done > 0 {
        return Err(Error::Internal(format!(
            "execution {} was planned for the custom format but destination '{}' is now Cohort Sync; run `sync resync-last`",
            exec.execution_id(),
            dest.name
        )));
    }
    let measuring = std::time::Instant::now();
    let budget = (*max_body as u64).saturating_sub(format.overhead() as u64);
    let mut planner = pager::StartPlanner::new(added.len(), dest.page_size.get(), budget);
    let mut sizes = Vec::with_capacity(MEASURE_BATCH);
    let mut scratch = render::Scratch::default();
    let mut page = pager::Page::default();
    for (list, is_add) in [(added, true), (removed, false)] {
        let mut it = list.iter().peekable();
        while it.peek().is_some() {
            page.adds.clear();
            page.removes.clear();
            let target = if is_add {
                &mut page.adds
            } else {
                &mut page.removes
            };
            target.extend(it.by_ref().take(MEASURE_BATCH));
            sizes.clear();
            renderer.member_sizes(&page, &mut scratch, &mut sizes)?;
            for &size in &sizes {
                planner.push(size);
            }
        }
    }
    let starts = planner.finish();
    exec.total_pages = u32::try_from(starts.len()).unwrap_or(u32::MAX);
    tracing::info!(
        sync = exec.sync_id,
        execution = exec.seq,
        users = added.len() + removed.len(),
        pages = exec.total_pages,
        seconds = measuring.elapsed().as_secs_f64(),
        "size-capped pages planned"
    );
    store.write_records(
        vec![
            exec.write(),
            exec.bitmap_write(BitmapKind::PageStarts, &starts),
        ],
        true,
    )?;
    Ok(Some(starts))
}

fn execute(
    store: &Store,
    sync: &mut SyncRecord,
    mut exec: ExecutionRecord,
    dest: Destination,
    opts: &RunOptions,
) -> Result<ExecutionRecord, Error> {
    let added = exec.bitmap(store, BitmapKind::Added)?;
    let removed = exec.bitmap(store, BitmapKind::Removed)?;
    let mut done = exec.bitmap(store, BitmapKind::DonePages)?;
    let renderer = renderer_for(store, sync, &exec, &dest)?;
    let starts = page_starts(store, &mut exec, &dest, &renderer, &added, &removed)?;
    let cuts = match &starts {
        Some(s) => pager::Cuts::Starts(s),
        None => pager::Cuts::Count(exec.page_size),
    };
    let in_flight = dest.in_flight;
    let sender =
        send::PageSender::new(dest, sync.id, exec.seq).map_err(|e| Error::Start(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Start(e.to_string()))?;
    let progress = Progress::items(u64::from(exec.total_pages), opts.progress, "sending pages");
    progress.set(u64::from(exec.pages_done));

    let failure: Mutex<Option<String>> = Mutex::new(None);
    let fail = |msg: String| {
        let mut f = failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f.get_or_insert(msg);
    };
    let window = in_flight.max(2);
    let mut checkpoint_result: Result<(), Error> = Ok(());
    // The pager skips what was done when the run started; the checkpoint
    // thread owns the live set.
    let skip = done.clone();
    std::thread::scope(|s| {
        let (page_tx, page_rx) = channel::bounded::<pager::Page>(window);
        let (free_tx, free_rx) = channel::bounded::<pager::Page>(window * 2);
        let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<render::Rendered>(window);
        let (ev_tx, ev_rx) = channel::unbounded::<checkpoint::Event>();

        let (added, removed, done_ref) = (&added, &removed, &skip);
        s.spawn(move || pager::run(added, removed, cuts, done_ref, &free_rx, &page_tx));
        for _ in 0..opts.render_threads.max(1) {
            let (page_rx, free_tx, out_tx, renderer, fail) = (
                page_rx.clone(),
                free_tx.clone(),
                out_tx.clone(),
                &renderer,
                &fail,
            );
            s.spawn(move || {
                let mut scratch = render::Scratch::default();
                let mut cap = 0;
                for page in page_rx {
                    match renderer.render(&page, &mut scratch, Vec::with_capacity(cap)) {
                        Ok(r) => {
                            cap = cap.max(r.body.len());
                            let _ = free_tx.try_send(page);
                            if out_tx.blocking_send(r).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            fail(format!("rendering page {} failed: {e}", page.index + 1));
                            return;
                        }
                    }
                }
            });
        }
        drop((page_rx, free_tx, out_tx));

        let exec_ref = &mut exec;
        let done_mut = &mut done;
        let progress_ref = &progress;
        let cp = s.spawn(move || checkpoint::run(store, exec_ref, done_mut, &ev_rx, progress_ref));

        runtime.block_on(async {
            let sender = std::sync::Arc::new(sender);
            let mut tasks = tokio::task::JoinSet::new();
            let cancelled = || {
                opts.cancel
                    .as_ref()
                    .is_some_and(|c| c.load(std::sync::atomic::Ordering::SeqCst))
            };
            let stopped = || cancelled() || failure.lock().map(|f| f.is_some()).unwrap_or(true);
            let dest_name = sender.destination_name().to_string();
            let handle = |res: Result<PageResult, tokio::task::JoinError>| match res {
                Ok((index, skipped, users, Ok(stats))) => {
                    crate::metrics::page_acked(&dest_name, u64::from(users), stats.requests);
                    let _ = ev_tx.send(checkpoint::Event::Ack {
                        index,
                        requests: stats.requests,
                        skipped,
                    });
                }
                Ok((_, _, _, Err(e))) => {
                    crate::metrics::requests_to(&dest_name, e.requests);
                    let _ = ev_tx.send(checkpoint::Event::Failed {
                        requests: e.requests,
                    });
                    fail(e.message);
                }
                Err(e) => fail(format!("sender task failed: {e}")),
            };
            while !stopped() {
                let Some(page) = out_rx.recv().await else {
                    break;
                };
                while tasks.len() >= in_flight {
                    if let Some(r) = tasks.join_next().await {
                        handle(r);
                    }
                }
                if stopped() {
                    break;
                }
                if page.body.is_empty() {
                    // Every user of the page was skipped: nothing to send.
                    handle(Ok((
                        page.index,
                        page.skipped,
                        0,
                        Ok(send::PageStats::default()),
                    )));
                    continue;
                }
                let sender = sender.clone();
                tasks.spawn(async move {
                    let users = page.adds + page.removes;
                    let r = sender.send(page.index, Bytes::from(page.body)).await;
                    (page.index, page.skipped, users, r)
                });
                while let Some(r) = tasks.try_join_next() {
                    handle(r);
                }
            }
            // Stop the renderers (if we broke out early), finish what is in flight.
            out_rx.close();
            while out_rx.recv().await.is_some() {}
            while let Some(r) = tasks.join_next().await {
                handle(r);
            }
            drop(ev_tx);
        });
        checkpoint_result = match cp.join() {
            Ok(r) => r.map_err(Error::from),
            Err(_) => Err(Error::Internal("the checkpoint thread panicked".into())),
        };
    });
    progress.finish();
    checkpoint_result?;

    let failure = failure
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let cancelled = opts
        .cancel
        .as_ref()
        .is_some_and(|c| c.load(std::sync::atomic::Ordering::SeqCst));
    if cancelled && failure.is_none() && exec.pages_done < exec.total_pages {
        // Shutdown: what was in flight is checkpointed; the next run resumes.
        store.write_records(
            vec![
                exec.write(),
                exec.bitmap_write(BitmapKind::DonePages, &done),
            ],
            true,
        )?;
        tracing::info!(
            sync = sync.id,
            execution = exec.seq,
            pages_done = exec.pages_done,
            "execution interrupted by shutdown; it resumes at the next start"
        );
        return Ok(exec);
    }
    exec.finished_ms = Some(chrono::Utc::now().timestamp_millis());
    match failure {
        None if exec.pages_done >= exec.total_pages => {
            exec.status = ExecStatus::Complete;
            sync.last_complete = Some(exec.seq);
            sync.status = rules::after_run(true);
        }
        other => {
            exec.status = ExecStatus::Failed;
            exec.error =
                Some(other.unwrap_or_else(|| "the run ended with pages not delivered".into()));
            sync.status = rules::after_run(false);
        }
    }
    store.write_records(
        vec![
            exec.write(),
            exec.bitmap_write(BitmapKind::DonePages, &done),
            sync.write(),
        ],
        true,
    )?;
    let (kind, detail) = match exec.status {
        ExecStatus::Complete => (
            notify::Kind::Success,
            format!(
                "Execution {} complete: {} users added, {} removed, {} in the segment with the attribute, {} pages.",
                exec.execution_id(),
                exec.added,
                exec.removed,
                exec.total,
                exec.pages_done
            ),
        ),
        _ => (
            notify::Kind::Failure,
            format!(
                "Execution {} failed after {} of {} pages: {}",
                exec.execution_id(),
                exec.pages_done,
                exec.total_pages,
                exec.error.as_deref().unwrap_or("unknown error")
            ),
        ),
    };
    notify::notify(store, sync, kind, &detail);
    crate::metrics::execution_ended(
        exec.status == ExecStatus::Complete,
        u64::try_from(exec.finished_ms.unwrap_or(exec.started_ms) - exec.started_ms).unwrap_or(0),
    );
    tracing::info!(
        sync = sync.id,
        execution = exec.seq,
        status = ?exec.status,
        pages = exec.pages_done,
        requests = exec.requests,
        "execution finished"
    );
    Ok(exec)
}

/// Renders every page of a plan without sending (for benchmarks): returns
/// (pages, users, bytes).
pub fn render_only(
    store: &Store,
    sync_id: u32,
    seq: u32,
    threads: usize,
) -> Result<(u64, u64, u64), Error> {
    let sync = SyncRecord::load(store, sync_id)?.ok_or(Error::NoSync(sync_id))?;
    let exec = ExecutionRecord::load(store, sync_id, seq)?.ok_or(Error::NoSync(sync_id))?;
    let dest = destination::get(store, &sync.destination)?.validated()?;
    let added = exec.bitmap(store, BitmapKind::Added)?;
    let removed = exec.bitmap(store, BitmapKind::Removed)?;
    let renderer = renderer_for(store, &sync, &exec, &dest)?;
    let mut exec = exec;
    let starts = page_starts(store, &mut exec, &dest, &renderer, &added, &removed)?;
    let cuts = match &starts {
        Some(s) => pager::Cuts::Starts(s),
        None => pager::Cuts::Count(exec.page_size),
    };
    let totals = Mutex::new((0u64, 0u64, 0u64));
    let error = Mutex::new(None);
    let none = RoaringBitmap::new();
    std::thread::scope(|s| {
        let (tx, rx) = channel::bounded::<pager::Page>(8);
        let (added, removed, none_ref) = (&added, &removed, &none);
        s.spawn(move || pager::cut(added, removed, cuts, none_ref, None, |p| tx.send(p).is_ok()));
        for _ in 0..threads.max(1) {
            let (rx, renderer, totals, error) = (rx.clone(), &renderer, &totals, &error);
            s.spawn(move || {
                let mut scratch = render::Scratch::default();
                let mut buf = Vec::new();
                for page in rx {
                    match renderer.render(&page, &mut scratch, std::mem::take(&mut buf)) {
                        Ok(r) => {
                            if let Ok(mut t) = totals.lock() {
                                t.0 += 1;
                                t.1 += u64::from(r.adds + r.removes);
                                t.2 += r.body.len() as u64;
                            }
                            buf = r.body;
                        }
                        Err(e) => {
                            if let Ok(mut er) = error.lock() {
                                *er = Some(e);
                            }
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = error
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
    {
        return Err(match e {
            render::RenderError::Store(e) => e.into(),
            other => Error::Internal(other.to_string()),
        });
    }
    Ok(totals
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner))
}

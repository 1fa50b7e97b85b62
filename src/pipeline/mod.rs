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
//!
//! The pipeline only executes: whether a run may start, and what its
//! outcome means for the sync (status, notifications), are the lifecycle's
//! ([`crate::lifecycle::actions::run`]). [`execute`] returns an
//! [`Executed`] whose final writes the lifecycle commits together with the
//! sync record, in one synced batch.

mod checkpoint;
mod pager;
pub mod probe;
pub mod rate;
mod remote;
mod render;
pub mod send;

use std::sync::Mutex;

use crossbeam::channel;
use roaring::RoaringBitmap;

use crate::destination::{self, cohort_sync, segment_sync, ConfigError, Destination, FormatSpec};
use crate::error::{Classify, Fault};
use crate::plan;
use crate::progress::Progress;
use crate::store::{self, BitmapKind, ExecutionRecord, Store, SyncRecord, Write};

pub use checkpoint::Outcome;

/// Errors that stop an execution from being run at all. (A run that starts
/// and fails ends as a failed execution, not as an error.)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No such sync or execution.
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
    /// A pipeline thread died, or the plan no longer fits the destination.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Classify for Error {
    fn fault(&self) -> Fault {
        match self {
            Error::NoSync(_) => Fault::NotFound,
            Error::Plan(e) => e.fault(),
            Error::Destination(e) => e.fault(),
            Error::Config(e) => e.fault(),
            Error::Store(e) => e.fault(),
            Error::Start(_) | Error::Internal(_) => Fault::Internal,
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
    /// Any of these set stops the run early (shutdown, or the sync archived
    /// meanwhile): no new page is sent, the pages in flight finish and are
    /// checkpointed, and the execution is left for the caller to settle.
    pub cancel: Vec<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// Hand the pages to workers over NATS JetStream instead of sending
    /// them from this process (`serve --nats`).
    pub cluster: Option<std::sync::Arc<crate::cluster::Cluster>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            progress: false,
            render_threads: 2,
            cancel: Vec::new(),
            cluster: None,
        }
    }
}

impl RunOptions {
    fn cancelled(&self) -> bool {
        self.cancel
            .iter()
            .any(|c| c.load(std::sync::atomic::Ordering::SeqCst))
    }
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
        FormatSpec::SegmentSync => {
            let ids = segment_sync::Ids {
                sync_id: sync.id.to_string(),
                sync_name: sync.segment.clone(),
                execution_id: exec.execution_id(),
                integration_id: format!("{}-{}", dest.id, sync.id),
            };
            render::Body::SegmentSync(segment_sync::SegmentSyncFormat::new(
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

/// An execution ready to cut and render: its bitmaps, renderer and page
/// cuts. Shared by [`execute`] and [`render_only`].
struct Prepared<'a> {
    exec: ExecutionRecord,
    added: RoaringBitmap,
    removed: RoaringBitmap,
    /// Pages acknowledged when the run started.
    done: RoaringBitmap,
    renderer: render::Renderer<'a>,
    /// Page starts of a size-capped format (persisted with the plan).
    starts: Option<RoaringBitmap>,
}

impl<'a> Prepared<'a> {
    fn new(
        store: &'a Store,
        sync: &SyncRecord,
        mut exec: ExecutionRecord,
        dest: &Destination,
    ) -> Result<Prepared<'a>, Error> {
        // Values are read as of the plan and its removal groups: retention
        // keeps history back to the oldest such point of every kept
        // execution, so an older one here would read wrong values.
        let horizon = store.history_horizon()?;
        if exec.write_seq < horizon || exec.removed_as_of.iter().any(|&q| q < horizon) {
            return Err(store::Error::Pruned(format!(
                "execution {}: the attribute values it was planned with were removed by retention",
                exec.execution_id()
            ))
            .into());
        }
        let added = exec.bitmap(store, BitmapKind::Added)?;
        let removed = exec.bitmap(store, BitmapKind::Removed)?;
        let done = exec.bitmap(store, BitmapKind::DonePages)?;
        let renderer = renderer_for(store, sync, &exec, dest)?;
        let starts = pager::page_starts(
            store,
            &mut exec,
            dest,
            renderer.size_budget(),
            &added,
            &removed,
            |page, sizes| renderer.member_sizes(page, &mut render::Scratch::default(), sizes),
        )?;
        Ok(Prepared {
            exec,
            added,
            removed,
            done,
            renderer,
            starts,
        })
    }

    fn cuts(&self) -> pager::Cuts<'_> {
        match &self.starts {
            Some(s) => pager::Cuts::Starts(s),
            None => pager::Cuts::Count(self.exec.page_size),
        }
    }
}

/// An execution as the pipeline left it: complete, failed or interrupted,
/// with its counts. Nothing about the sync has been written yet.
#[derive(Debug)]
pub struct Executed {
    /// The execution record (status, counts, error set).
    pub exec: ExecutionRecord,
    /// How it ended.
    pub outcome: Outcome,
    done: RoaringBitmap,
}

impl Executed {
    /// The writes that record the end of the execution as `exec` (this
    /// execution, as the caller settled it); the caller commits them with
    /// its own (the sync record) in one synced batch.
    pub(crate) fn final_writes(&self, exec: &ExecutionRecord) -> Vec<Write> {
        checkpoint::final_writes(exec, &self.done)
    }
}

/// Sends the pages of `exec` (a planned or resumed execution of `sync`) to
/// `dest`, checkpointing each acknowledged page. An interrupted run (`opts.
/// cancel`) is checkpointed here and stays processing; a finished one is
/// returned for the caller to commit.
pub fn execute(
    store: &Store,
    sync: &SyncRecord,
    exec: ExecutionRecord,
    dest: Destination,
    opts: &RunOptions,
) -> Result<Executed, Error> {
    let prepared = Prepared::new(store, sync, exec, &dest)?;
    let in_flight = dest.in_flight;
    let sender = send::PageSender::new(dest.clone(), prepared.exec.sync_id, prepared.exec.seq)
        .map_err(|e| Error::Start(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Start(e.to_string()))?;
    let progress = Progress::items(
        u64::from(prepared.exec.total_pages),
        opts.progress,
        "sending pages",
    );
    progress.set(u64::from(prepared.exec.pages_done));

    let failure: Mutex<Option<String>> = Mutex::new(None);
    let fail = |msg: String| {
        let mut f = failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f.get_or_insert(msg);
    };
    let window = in_flight.max(2);
    // The pager skips what was done when the run started; the checkpoint
    // thread owns the live set.
    let mut exec = prepared.exec.clone();
    let mut done = prepared.done.clone();
    let mut checkpoint_result: Result<checkpoint::Refusals, Error> =
        Ok(checkpoint::Refusals::default());
    let mut exec_rate = 0;
    std::thread::scope(|s| {
        let (page_tx, page_rx) = channel::bounded::<pager::Page>(window);
        let (free_tx, free_rx) = channel::bounded::<pager::Page>(window * 2);
        let (out_tx, out_rx) = tokio::sync::mpsc::channel::<render::Rendered>(window);
        let (ev_tx, ev_rx) = channel::unbounded::<checkpoint::Event>();

        let p = &prepared;
        s.spawn(move || pager::run(&p.added, &p.removed, p.cuts(), &p.done, &free_rx, &page_tx));
        for _ in 0..opts.render_threads.max(1) {
            let (page_rx, free_tx, out_tx, fail) =
                (page_rx.clone(), free_tx.clone(), out_tx.clone(), &fail);
            s.spawn(move || render::run(&p.renderer, &page_rx, &free_tx, &out_tx, fail));
        }
        drop((page_rx, free_tx, out_tx));

        let (exec_ref, done_mut, progress_ref, fail_ref) = (&mut exec, &mut done, &progress, &fail);
        let cp = s.spawn(move || {
            let r = checkpoint::run(store, exec_ref, done_mut, &ev_rx, progress_ref);
            if let Err(e) = &r {
                // No page may go out that could not be recorded (a full
                // disk, a failing device): the sender stops at once.
                fail_ref(format!(
                    "cannot record acknowledged pages, so no more are sent: {e}"
                ));
            }
            r
        });

        let stopped = || opts.cancelled() || failure.lock().map(|f| f.is_some()).unwrap_or(true);
        exec_rate = match &opts.cluster {
            None => runtime.block_on(send::drive(
                sender, in_flight, out_rx, ev_tx, stopped, &fail,
            )),
            Some(cluster) => runtime.block_on(
                remote::Run {
                    cluster,
                    dest: &dest,
                    sync_id: p.exec.sync_id,
                    seq: p.exec.seq,
                    done: &p.done,
                }
                .drive((in_flight * 2).max(4), out_rx, ev_tx, stopped, &fail),
            ),
        };
        checkpoint_result = match cp.join() {
            Ok(r) => r.map_err(Error::from),
            Err(_) => Err(Error::Internal("the checkpoint thread panicked".into())),
        };
    });
    progress.finish();
    let refused = checkpoint_result?;
    exec.effective_rpm = exec_rate;

    let failure = failure
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let outcome = checkpoint::finish(store, &mut exec, &done, failure, refused, opts.cancelled())?;
    Ok(Executed {
        exec,
        outcome,
        done,
    })
}

/// A page of a plan as it will be sent.
#[derive(Debug, Clone)]
pub struct PlannedPage {
    /// 1-based page number (`page_count` on the wire).
    pub number: u32,
    /// Its `Idempotency-Key`.
    pub key: String,
    /// Its body.
    pub body: Vec<u8>,
}

/// The first `n` pages of a planned execution, rendered exactly as they
/// will be sent (page number, idempotency key, body), without sending.
/// Size-capped pages are cut (and their starts persisted) as a run would.
pub fn first_pages(
    store: &Store,
    sync: &SyncRecord,
    exec: ExecutionRecord,
    dest: &Destination,
    n: usize,
) -> Result<(ExecutionRecord, Vec<PlannedPage>), Error> {
    let prepared = Prepared::new(store, sync, exec, dest)?;
    let none = RoaringBitmap::new();
    let mut pages = Vec::new();
    pager::cut(
        &prepared.added,
        &prepared.removed,
        prepared.cuts(),
        &none,
        None,
        |p| {
            pages.push(p);
            pages.len() < n
        },
    );
    let mut scratch = render::Scratch::default();
    let mut out = Vec::with_capacity(pages.len());
    for page in pages.iter().take(n) {
        let r = prepared
            .renderer
            .render(page, &mut scratch, Vec::new())
            .map_err(|e| match e {
                render::RenderError::Store(e) => Error::Store(e),
                other => Error::Internal(other.to_string()),
            })?;
        let key = send::PageSender::key_of(sync.id, prepared.exec.seq, page.index);
        out.push(PlannedPage {
            number: page.index + 1,
            key,
            body: r.body,
        });
    }
    Ok((prepared.exec, out))
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
    let prepared = Prepared::new(store, &sync, exec, &dest)?;
    let totals = Mutex::new((0u64, 0u64, 0u64));
    let error = Mutex::new(None);
    let none = RoaringBitmap::new();
    std::thread::scope(|s| {
        let (tx, rx) = channel::bounded::<pager::Page>(8);
        let (p, none_ref) = (&prepared, &none);
        s.spawn(move || {
            pager::cut(&p.added, &p.removed, p.cuts(), none_ref, None, |pg| {
                tx.send(pg).is_ok()
            })
        });
        for _ in 0..threads.max(1) {
            let (rx, totals, error) = (rx.clone(), &totals, &error);
            s.spawn(move || {
                let mut scratch = render::Scratch::default();
                let mut buf = Vec::new();
                for page in rx {
                    match p
                        .renderer
                        .render(&page, &mut scratch, std::mem::take(&mut buf))
                    {
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

//! Where an import's staged writes go, and on which thread.
//!
//! An import stages three kinds of writes before its commit: batches of
//! attribute writes (RocksDB without the WAL), the ids of the users it
//! creates (one SST file, ingested at commit), and the first values of
//! those users (SST files per attribute, ingested at commit or when the
//! import needs to read one back). Writing them took half of a first load's
//! import thread (the memtable inserts of a batch and the SST writer's
//! blocks), while the other core idled; so a bulk import hands them to a
//! writer thread and goes on resolving and encoding the next batch. One job
//! is in flight at most: the next waits for it, and so does anything that
//! reads what it writes (an old value, the undo log, the commit). Without a
//! thread (small transactions, tests) the same writer runs inline.
//!
//! Values written as SST files skip the memtable, its flush and the
//! compaction that follows (a first load's files are ingested straight into
//! the last level). They are only ever first values of new users, in
//! ascending user order per attribute: a later change of such a value reads
//! it back, which ingests the files first (`Stager::ingest_values`), so a
//! key is never in a pending file and the memtable at once.

use std::path::PathBuf;

use crossbeam::channel::{Receiver, Sender};
use rocksdb::{SstFileWriter, WriteBatch};

use super::{cf, db_err, keys, Error, Result, Store};

/// Ids of users an import created, in index order from `first`.
#[derive(Default)]
pub(crate) struct NewIds {
    first: u32,
    bytes: Vec<u8>,
    ends: Vec<u32>,
}

impl NewIds {
    /// Appends the id of user `idx` (the next index after the last one).
    pub(crate) fn push(&mut self, idx: u32, id: &[u8]) {
        if self.ends.is_empty() {
            self.first = idx;
        }
        self.bytes.extend_from_slice(id);
        self.ends.push(self.bytes.len() as u32);
    }

    /// Bytes held (the import hands them off past a few MB).
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.len()
    }

    fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

/// First values of new users for one attribute, users ascending (each
/// after every user of that attribute's pending file): stored values
/// (`seq ++ body`) laid end to end.
#[derive(Default)]
pub(crate) struct NewValues {
    users: Vec<u32>,
    ends: Vec<u32>,
    bytes: Vec<u8>,
}

impl NewValues {
    /// Appends the stored value of `user`, `seq ++ body`.
    pub(crate) fn push(&mut self, user: u32, seq: u32, body: &[u8]) {
        self.users.push(user);
        self.bytes.extend_from_slice(&seq.to_be_bytes());
        self.bytes.extend_from_slice(body);
        self.ends.push(self.bytes.len() as u32);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// One hand-off: a batch of attribute writes, the ids created meanwhile and
/// new users' first values per attribute.
pub(crate) struct Job {
    pub(crate) batch: WriteBatch,
    pub(crate) ids: NewIds,
    pub(crate) values: Vec<(u32, NewValues)>,
}

/// What [`Stager::finish`] leaves to ingest.
#[derive(Default)]
pub(crate) struct Finished {
    /// The SST file of new users, if any were created.
    pub(crate) users: bool,
    /// SST files of first values, for `attr_values`.
    pub(crate) values: Vec<PathBuf>,
}

/// Writes jobs: the batch without the WAL, the ids into the import's SST
/// file of new users.
pub(crate) struct Writer<'s> {
    store: &'s Store,
    sst: Option<SstFileWriter<'s>>,
    path: PathBuf,
    /// Open files of first values, by attribute.
    values: Vec<(u32, SstFileWriter<'s>)>,
    /// Value files written so far (numbered for their names).
    value_files: u32,
    /// Closed value files not yet ingested.
    closed: Vec<PathBuf>,
}

impl<'s> Writer<'s> {
    fn new(store: &'s Store, path: PathBuf) -> Writer<'s> {
        Writer {
            store,
            sst: None,
            path,
            values: Vec::new(),
            value_files: 0,
            closed: Vec::new(),
        }
    }

    fn write(&mut self, job: Job) -> Result<()> {
        if !job.ids.is_empty() {
            if self.sst.is_none() {
                let w = SstFileWriter::create(self.store.sst_options());
                w.open(&self.path).map_err(db_err("sst open", cf::USERS))?;
                self.sst = Some(w);
            }
            if let Some(w) = &mut self.sst {
                let mut start = 0usize;
                for (i, &end) in job.ids.ends.iter().enumerate() {
                    let id = &job.ids.bytes[start..end as usize];
                    w.put(keys::user(job.ids.first + i as u32), id)
                        .map_err(db_err("sst put", cf::USERS))?;
                    start = end as usize;
                }
            }
        }
        for (attr, run) in &job.values {
            let w = match self.values.iter().position(|(a, _)| a == attr) {
                Some(i) => &mut self.values[i].1,
                None => {
                    let w = SstFileWriter::create(self.store.values_sst_options());
                    w.open(self.value_path(self.value_files))
                        .map_err(db_err("sst open", cf::ATTR_VALUES))?;
                    self.value_files += 1;
                    self.values.push((*attr, w));
                    &mut self.values.last_mut().ok_or_else(thread_gone)?.1
                }
            };
            let mut start = 0usize;
            for (&user, &end) in run.users.iter().zip(&run.ends) {
                w.put(
                    keys::attr_user(*attr, user),
                    &run.bytes[start..end as usize],
                )
                .map_err(db_err("sst put", cf::ATTR_VALUES))?;
                start = end as usize;
            }
        }
        if !job.batch.is_empty() {
            let mut wo = rocksdb::WriteOptions::default();
            wo.disable_wal(true);
            self.store
                .db()
                .write_opt(job.batch, &wo)
                .map_err(db_err("write", "*"))?;
        }
        Ok(())
    }

    /// `import-<seq>-v<n>.sst` next to the file of new users.
    fn value_path(&self, n: u32) -> PathBuf {
        let mut name = self.path.file_stem().unwrap_or_default().to_os_string();
        name.push(format!("-v{n}.sst"));
        self.path.with_file_name(name)
    }

    /// Closes the open value files (they join `closed`).
    fn close_values(&mut self) -> Result<()> {
        // Files were numbered in the order they were opened.
        let first = self.value_files - self.values.len() as u32;
        for (i, (_, mut w)) in std::mem::take(&mut self.values).into_iter().enumerate() {
            w.finish().map_err(db_err("sst finish", cf::ATTR_VALUES))?;
            self.closed.push(self.value_path(first + i as u32));
        }
        Ok(())
    }

    /// Ingests every value file written so far into `attr_values`.
    fn ingest_values(&mut self) -> Result<()> {
        self.close_values()?;
        let files = std::mem::take(&mut self.closed);
        ingest(self.store, cf::ATTR_VALUES, &files)
    }

    /// Closes every file; what there is to ingest.
    fn finish(&mut self) -> Result<Finished> {
        self.close_values()?;
        let users = match self.sst.take() {
            Some(mut w) => {
                w.finish().map_err(db_err("sst finish", cf::USERS))?;
                true
            }
            None => false,
        };
        Ok(Finished {
            users,
            values: std::mem::take(&mut self.closed),
        })
    }
}

/// Moves SST files into family `name` (and removes them).
pub(crate) fn ingest(store: &Store, name: &'static str, files: &[PathBuf]) -> Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    let mut io = rocksdb::IngestExternalFileOptions::default();
    io.set_move_files(true);
    store
        .db()
        .ingest_external_file_cf_opts(store.cf(name), &io, files.to_vec())
        .map_err(db_err("ingest", name))?;
    for f in files {
        let _ = std::fs::remove_file(f);
    }
    Ok(())
}

pub(crate) enum Msg {
    Write(Job),
    IngestValues,
    Finish,
}

/// An import's writer, inline or on a thread; see the module docs.
pub(crate) enum Stager<'s> {
    Inline(Writer<'s>),
    Thread {
        jobs: Option<Sender<Msg>>,
        done: Receiver<Result<Finished>>,
        in_flight: bool,
    },
}

fn thread_gone() -> Error {
    Error::Corrupt {
        what: "import",
        reason: "its writer thread ended early".into(),
    }
}

impl<'s> Stager<'s> {
    /// A writer that runs on the caller's thread; its SST file is `path`.
    pub(crate) fn inline(store: &'s Store, path: PathBuf) -> Stager<'s> {
        Stager::Inline(Writer::new(store, path))
    }

    /// Moves an inline writer that has written nothing yet onto a thread of
    /// `scope`; any other stager stays as it is.
    pub(crate) fn spawn_on<'scope>(&mut self, scope: &'scope std::thread::Scope<'scope, '_>)
    where
        's: 'scope,
    {
        let Stager::Inline(w) = self else { return };
        if w.sst.is_some() || w.value_files > 0 {
            return;
        }
        let mut writer = Writer::new(w.store, w.path.clone());
        let (jobs, rx) = crossbeam::channel::bounded::<Msg>(1);
        let (done_tx, done) = crossbeam::channel::bounded(1);
        scope.spawn(move || {
            for msg in rx {
                let r = match msg {
                    Msg::Write(job) => writer.write(job).map(|()| Finished::default()),
                    Msg::IngestValues => writer.ingest_values().map(|()| Finished::default()),
                    Msg::Finish => writer.finish(),
                };
                if done_tx.send(r).is_err() {
                    break;
                }
            }
        });
        *self = Stager::Thread {
            jobs: Some(jobs),
            done,
            in_flight: false,
        };
    }

    /// Writes `job` (on the thread: once the job before it is written).
    pub(crate) fn submit(&mut self, job: Job) -> Result<()> {
        self.settle()?;
        match self {
            Stager::Inline(w) => w.write(job),
            Stager::Thread {
                jobs, in_flight, ..
            } => {
                let jobs = jobs.as_ref().ok_or_else(thread_gone)?;
                jobs.send(Msg::Write(job)).map_err(|_| thread_gone())?;
                *in_flight = true;
                Ok(())
            }
        }
    }

    /// Waits until every submitted job is written, with its result.
    pub(crate) fn settle(&mut self) -> Result<()> {
        if let Stager::Thread {
            done, in_flight, ..
        } = self
        {
            if *in_flight {
                *in_flight = false;
                done.recv().map_err(|_| thread_gone())??;
            }
        }
        Ok(())
    }

    /// Writes what was submitted, then ingests every file of first values
    /// written so far (before the import reads one of them back).
    pub(crate) fn ingest_values(&mut self) -> Result<()> {
        self.settle()?;
        match self {
            Stager::Inline(w) => w.ingest_values(),
            Stager::Thread {
                jobs, in_flight, ..
            } => {
                let jobs = jobs.as_ref().ok_or_else(thread_gone)?;
                jobs.send(Msg::IngestValues).map_err(|_| thread_gone())?;
                *in_flight = true;
                self.settle()
            }
        }
    }

    /// Writes what was submitted and closes every file; what there is to
    /// ingest.
    pub(crate) fn finish(&mut self) -> Result<Finished> {
        self.settle()?;
        match self {
            Stager::Inline(w) => w.finish(),
            Stager::Thread { jobs, done, .. } => {
                let jobs = jobs.as_ref().ok_or_else(thread_gone)?;
                jobs.send(Msg::Finish).map_err(|_| thread_gone())?;
                done.recv().map_err(|_| thread_gone())?
            }
        }
    }

    /// Stops writing: waits for the job in flight (whatever its result) and
    /// lets the thread end, so a rollback that follows sees every write and
    /// no write lands after it.
    pub(crate) fn abandon(&mut self) {
        let _ = self.settle();
        match self {
            Stager::Inline(w) => {
                w.sst = None;
                w.values.clear();
            }
            Stager::Thread { jobs, .. } => *jobs = None,
        }
    }
}

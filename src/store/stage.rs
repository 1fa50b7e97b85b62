//! Where an import's staged writes go, and on which thread.
//!
//! An import stages two kinds of writes before its commit: batches of
//! attribute writes (RocksDB without the WAL) and the ids of the users it
//! creates (one SST file, ingested at commit). Writing them took half of
//! a first load's import thread (the memtable inserts of a batch and the
//! SST writer's blocks), while the other core idled; so a bulk import hands
//! them to a writer thread and goes on resolving and encoding the next batch.
//! One job is in flight at most: the next waits for it, and so does anything
//! that reads what it writes (an old value, the undo log, the commit).
//! Without a thread (small transactions, tests) the same writer runs inline.

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

/// One hand-off: a batch of attribute writes and the ids created meanwhile.
pub(crate) struct Job {
    pub(crate) batch: WriteBatch,
    pub(crate) ids: NewIds,
}

/// Writes jobs: the batch without the WAL, the ids into the import's SST
/// file of new users.
pub(crate) struct Writer<'s> {
    store: &'s Store,
    sst: Option<SstFileWriter<'s>>,
    path: PathBuf,
}

impl<'s> Writer<'s> {
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

    /// Closes the SST file of new users; whether there is one to ingest.
    fn finish(&mut self) -> Result<bool> {
        match self.sst.take() {
            Some(mut w) => {
                w.finish().map_err(db_err("sst finish", cf::USERS))?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

pub(crate) enum Msg {
    Write(Job),
    Finish,
}

/// An import's writer, inline or on a thread; see the module docs.
pub(crate) enum Stager<'s> {
    Inline(Writer<'s>),
    Thread {
        jobs: Option<Sender<Msg>>,
        done: Receiver<Result<bool>>,
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
        Stager::Inline(Writer {
            store,
            sst: None,
            path,
        })
    }

    /// Moves an inline writer that has written nothing yet onto a thread of
    /// `scope`; any other stager stays as it is.
    pub(crate) fn spawn_on<'scope>(&mut self, scope: &'scope std::thread::Scope<'scope, '_>)
    where
        's: 'scope,
    {
        let Stager::Inline(w) = self else { return };
        if w.sst.is_some() {
            return;
        }
        let mut writer = Writer {
            store: w.store,
            sst: None,
            path: w.path.clone(),
        };
        let (jobs, rx) = crossbeam::channel::bounded::<Msg>(1);
        let (done_tx, done) = crossbeam::channel::bounded(1);
        scope.spawn(move || {
            for msg in rx {
                let r = match msg {
                    Msg::Write(job) => writer.write(job).map(|()| false),
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

    /// Writes what was submitted and closes the SST file of new users;
    /// whether there is one to ingest.
    pub(crate) fn finish(&mut self) -> Result<bool> {
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
            Stager::Inline(w) => w.sst = None,
            Stager::Thread { jobs, .. } => *jobs = None,
        }
    }
}

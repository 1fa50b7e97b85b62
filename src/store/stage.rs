//! Where an import's staged writes go, and on which thread.
//!
//! An import stages three kinds of writes before its commit: batches of
//! attribute writes (RocksDB without the WAL), the ids of the users it
//! creates (SST files, ingested at commit), and first values (SST files per
//! attribute, ingested at commit or when the import needs to read one
//! back). Writing them took half of a first load's
//! import thread (the memtable inserts of a batch and the SST writer's
//! blocks), while the other core idled; so a bulk import hands them to a
//! writer thread and goes on resolving and encoding the next batch. One job
//! is in flight at most: the next waits for it, and so does anything that
//! reads what it writes (an old value, the undo log, the commit). Without a
//! thread (small transactions, tests) the same writer runs inline.
//!
//! Values written as SST files skip the memtable, its flush and the
//! compaction that follows (a first load's files are ingested straight into
//! the last level). They are only ever first values, in ascending user
//! order per attribute and lane (a user below the last one written goes to
//! the batch instead). The lanes are the users from before the import and
//! the users it creates: their keys never meet, so a file of `users.csv`
//! rows for the members a snapshot created, with a sign-up here and there,
//! still goes to files (one lane alone sent every row after the first
//! sign-up to the batch: 0.23M rows/s instead of 0.81M in `segsync bench`).
//! A later change of such a value reads it back, which ingests the files
//! first (`Stager::ingest_values`), so a key is never in a pending file
//! and the memtable at once. A rollback deletes them like
//! any first value: by the undo log for users from before the import, by
//! range for the users it created.

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
}

/// First values of one attribute, users ascending (each after every user
/// of that attribute's pending file): stored values (`seq ++ body`) laid
/// end to end.
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
/// first values per attribute.
pub(crate) struct Job {
    pub(crate) batch: WriteBatch,
    pub(crate) ids: NewIds,
    pub(crate) values: Vec<(u32, NewValues)>,
}

/// What [`Stager::finish`] leaves to ingest.
#[derive(Default)]
pub(crate) struct Finished {
    /// SST files of new users, for `users`.
    pub(crate) users: Vec<PathBuf>,
    /// SST files of first values, for `attr_values`.
    pub(crate) values: Vec<PathBuf>,
}

/// Keys an SST file takes before the writer starts another. RocksDB's
/// writer keeps 8 bytes per key for the file's filter until it finishes
/// the file: one file per family of a 10M-user first load held 160 MB of
/// them.
const FILE_KEYS: usize = 1 << 20;

/// An SST file being written.
struct OpenFile<'s> {
    writer: SstFileWriter<'s>,
    path: PathBuf,
    keys: usize,
}

impl OpenFile<'_> {
    fn put(&mut self, key: &[u8], value: &[u8], family: &'static str) -> Result<()> {
        self.keys += 1;
        self.writer
            .put(key, value)
            .map_err(db_err("sst put", family))
    }

    fn finish(mut self, family: &'static str) -> Result<PathBuf> {
        self.writer.finish().map_err(db_err("sst finish", family))?;
        Ok(self.path)
    }
}

/// Writes jobs: the batch without the WAL, ids and first values into SST
/// files (`<prefix>-<n>.sst`) of at most [`FILE_KEYS`] keys.
pub(crate) struct Writer<'s> {
    store: &'s Store,
    /// `<data dir>/import-<seq>`.
    prefix: PathBuf,
    /// The first user the import created: the lanes' boundary.
    first_new_user: u32,
    /// Files numbered so far.
    files: u32,
    users: Option<OpenFile<'s>>,
    /// Open files of first values, by attribute and lane (whether the
    /// users are ones the import created).
    values: Vec<((u32, bool), OpenFile<'s>)>,
    /// Closed files not yet ingested.
    done: Finished,
}

impl<'s> Writer<'s> {
    fn new(store: &'s Store, prefix: PathBuf, first_new_user: u32) -> Writer<'s> {
        Writer {
            store,
            prefix,
            first_new_user,
            files: 0,
            users: None,
            values: Vec::new(),
            done: Finished::default(),
        }
    }

    fn open(&mut self, opts: &'s rocksdb::Options, family: &'static str) -> Result<OpenFile<'s>> {
        let mut name = self.prefix.file_name().unwrap_or_default().to_os_string();
        name.push(format!("-{}.sst", self.files));
        let path = self.prefix.with_file_name(name);
        self.files += 1;
        let writer = SstFileWriter::create(opts);
        writer.open(&path).map_err(db_err("sst open", family))?;
        Ok(OpenFile {
            writer,
            path,
            keys: 0,
        })
    }

    fn write(&mut self, job: Job) -> Result<()> {
        let mut start = 0usize;
        for (i, &end) in job.ids.ends.iter().enumerate() {
            let mut file = match self.users.take() {
                Some(f) => f,
                None => self.open(self.store.sst_options(), cf::USERS)?,
            };
            let id = &job.ids.bytes[start..end as usize];
            file.put(&keys::user(job.ids.first + i as u32), id, cf::USERS)?;
            start = end as usize;
            if file.keys >= FILE_KEYS {
                self.done.users.push(file.finish(cf::USERS)?);
            } else {
                self.users = Some(file);
            }
        }
        for (attr, run) in &job.values {
            // Each lane's users ascend; a run interleaves them when one
            // batch took several calls.
            let mut lanes: [Option<OpenFile<'s>>; 2] = [None, None];
            let mut start = 0usize;
            for (&user, &end) in run.users.iter().zip(&run.ends) {
                let new = user >= self.first_new_user;
                let mut file = match lanes[usize::from(new)].take() {
                    Some(f) => f,
                    None => self.take_values_file((*attr, new))?,
                };
                if file.keys >= FILE_KEYS {
                    self.done.values.push(file.finish(cf::ATTR_VALUES)?);
                    file = self.open(self.store.values_sst_options(), cf::ATTR_VALUES)?;
                }
                let value = &run.bytes[start..end as usize];
                file.put(&keys::attr_user(*attr, user), value, cf::ATTR_VALUES)?;
                start = end as usize;
                lanes[usize::from(new)] = Some(file);
            }
            for (new, file) in [false, true].into_iter().zip(lanes) {
                if let Some(file) = file {
                    self.values.push(((*attr, new), file));
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

    /// The open file of first values of `lane` (attribute, whether its
    /// users are new), or a new one.
    fn take_values_file(&mut self, lane: (u32, bool)) -> Result<OpenFile<'s>> {
        match self.values.iter().position(|(l, _)| *l == lane) {
            Some(i) => Ok(self.values.swap_remove(i).1),
            None => self.open(self.store.values_sst_options(), cf::ATTR_VALUES),
        }
    }

    /// Closes the open value files.
    fn close_values(&mut self) -> Result<()> {
        for (_, file) in std::mem::take(&mut self.values) {
            self.done.values.push(file.finish(cf::ATTR_VALUES)?);
        }
        Ok(())
    }

    /// Ingests every value file written so far into `attr_values`.
    fn ingest_values(&mut self) -> Result<()> {
        self.close_values()?;
        // The files may hold first values of users from before the import,
        // logged for rollback in batches written without the WAL: those
        // logs must be on disk before the values are.
        self.store.flush_staged()?;
        let files = std::mem::take(&mut self.done.values);
        ingest(self.store, cf::ATTR_VALUES, &files)
    }

    /// Closes every file; what there is to ingest.
    fn finish(&mut self) -> Result<Finished> {
        self.close_values()?;
        if let Some(file) = self.users.take() {
            self.done.users.push(file.finish(cf::USERS)?);
        }
        Ok(std::mem::take(&mut self.done))
    }

    /// Drops the open files unfinished (a rollback removes them).
    fn abandon(&mut self) {
        self.users = None;
        self.values.clear();
    }

    /// Carries out `msg`, inline or on the writer thread alike.
    fn handle(&mut self, msg: Msg) -> Result<Finished> {
        match msg {
            Msg::Write(job) => self.write(job).map(|()| Finished::default()),
            Msg::IngestValues => self.ingest_values().map(|()| Finished::default()),
            Msg::Finish => self.finish(),
        }
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
    /// A writer that runs on the caller's thread; its SST files are named
    /// `<prefix>-<n>.sst`.
    pub(crate) fn inline(store: &'s Store, prefix: PathBuf, first_new_user: u32) -> Stager<'s> {
        Stager::Inline(Writer::new(store, prefix, first_new_user))
    }

    /// Moves an inline writer that has written nothing yet onto a thread of
    /// `scope`; any other stager stays as it is.
    pub(crate) fn spawn_on<'scope>(&mut self, scope: &'scope std::thread::Scope<'scope, '_>)
    where
        's: 'scope,
    {
        let Stager::Inline(w) = self else { return };
        if w.files > 0 {
            return;
        }
        let mut writer = Writer::new(w.store, w.prefix.clone(), w.first_new_user);
        let (jobs, rx) = crossbeam::channel::bounded::<Msg>(1);
        let (done_tx, done) = crossbeam::channel::bounded(1);
        scope.spawn(move || {
            for msg in rx {
                if done_tx.send(writer.handle(msg)).is_err() {
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

    /// Hands `msg` over once the message before it is done: inline, it is
    /// done at once, with its result; on the thread, it is in flight, and
    /// [`Stager::settle`] gives its result.
    fn send(&mut self, msg: Msg) -> Result<Finished> {
        self.settle()?;
        match self {
            Stager::Inline(w) => w.handle(msg),
            Stager::Thread {
                jobs, in_flight, ..
            } => {
                let jobs = jobs.as_ref().ok_or_else(thread_gone)?;
                jobs.send(msg).map_err(|_| thread_gone())?;
                *in_flight = true;
                Ok(Finished::default())
            }
        }
    }

    /// Writes `job` (on the thread: once the job before it is written).
    pub(crate) fn submit(&mut self, job: Job) -> Result<()> {
        self.send(Msg::Write(job)).map(drop)
    }

    /// Waits until every submitted job is written (failing as it failed).
    pub(crate) fn settle(&mut self) -> Result<()> {
        self.wait().map(drop)
    }

    fn wait(&mut self) -> Result<Finished> {
        match self {
            Stager::Thread {
                done, in_flight, ..
            } if *in_flight => {
                *in_flight = false;
                done.recv().map_err(|_| thread_gone())?
            }
            _ => Ok(Finished::default()),
        }
    }

    /// Hands `msg` over and waits for its result.
    fn call(&mut self, msg: Msg) -> Result<Finished> {
        let inline = self.send(msg)?;
        match self {
            Stager::Inline(_) => Ok(inline),
            Stager::Thread { .. } => self.wait(),
        }
    }

    /// Writes what was submitted, then ingests every file of first values
    /// written so far (before the import reads one of them back).
    pub(crate) fn ingest_values(&mut self) -> Result<()> {
        self.call(Msg::IngestValues).map(drop)
    }

    /// Writes what was submitted and closes every file; what there is to
    /// ingest.
    pub(crate) fn finish(&mut self) -> Result<Finished> {
        self.call(Msg::Finish)
    }

    /// Stops writing: waits for the job in flight (whatever its result) and
    /// lets the thread end, so a rollback that follows sees every write and
    /// no write lands after it.
    pub(crate) fn abandon(&mut self) {
        let _ = self.settle();
        match self {
            Stager::Inline(w) => w.abandon(),
            Stager::Thread { jobs, .. } => *jobs = None,
        }
    }
}

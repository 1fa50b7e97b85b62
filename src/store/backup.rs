//! Online backups and restores of a data dir. A backup is a RocksDB
//! checkpoint (every column family at one point in time; SST files are
//! hard-linked when the backup is on the same filesystem, copied
//! otherwise), taken under the writer lock so that no import is half-way
//! in it, plus the data dir's `fingerprints.bin` and its tail file (a
//! cache: completed from `user_ids` where it is behind, a tail that no
//! longer follows the main file ignored) and `segsync.toml`. `serve` keeps serving meanwhile: runs
//! keep checkpointing pages (a run's pages after the backup are simply not
//! in it, and a restored store resumes or re-plans from what is).
//!
//! A restore copies (never links) a backup into a new data dir and opens
//! it, so the restored store is checked the way every open checks a store.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Error, Result, Store, SCHEMA_VERSION};

/// What a backup holds, written beside it as `BACKUP.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupInfo {
    /// When it was taken, Unix ms.
    pub taken_ms: i64,
    /// The store's schema version.
    pub schema: u32,
    /// The last write sequence in it.
    pub write_seq: u32,
    /// Users in it.
    pub users: u32,
    /// Bytes of its files.
    pub bytes: u64,
}

const INFO: &str = "BACKUP.json";
const COPIED: [&str; 3] = ["fingerprints.bin", "fingerprints.tail.bin", "segsync.toml"];

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Bytes of every file under `dir` (a data dir's or a backup's size).
pub fn bytes_under(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => bytes_under(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Refuses a destination that exists and is not an empty directory.
fn fresh_target(dir: &Path, what: &str) -> Result<()> {
    if let Ok(mut entries) = std::fs::read_dir(dir) {
        if entries.next().is_some() {
            return Err(Error::NotAStore {
                path: dir.to_path_buf(),
                reason: format!(
                    "a {what} goes into a new or empty directory; this one is not empty"
                ),
            });
        }
    } else if dir.exists() {
        return Err(Error::NotAStore {
            path: dir.to_path_buf(),
            reason: "not a directory".into(),
        });
    }
    Ok(())
}

impl Store {
    /// Takes a consistent backup into `dest` (new or empty) while the
    /// store stays in use.
    pub fn backup(&self, dest: &Path) -> Result<BackupInfo> {
        fresh_target(dest, "backup")?;
        std::fs::create_dir_all(dest).map_err(io(dest))?;
        {
            let _writer = self.lock_writer();
            let checkpoint = rocksdb::checkpoint::Checkpoint::new(self.db())
                .map_err(super::db_err("checkpoint", "*"))?;
            checkpoint
                .create_checkpoint(dest.join("db"))
                .map_err(super::db_err("checkpoint", "*"))?;
            for name in COPIED {
                let from = self.dir().join(name);
                if from.exists() {
                    std::fs::copy(&from, dest.join(name)).map_err(io(&from))?;
                }
            }
        }
        let c = self.counters();
        let info = BackupInfo {
            taken_ms: chrono::Utc::now().timestamp_millis(),
            schema: SCHEMA_VERSION,
            write_seq: c.write_seq,
            users: c.user_count,
            bytes: bytes_under(dest),
        };
        let path = dest.join(INFO);
        let text = serde_json::to_vec_pretty(&info).map_err(|e| Error::Corrupt {
            what: "backup info",
            reason: e.to_string(),
        })?;
        std::fs::write(&path, text).map_err(io(&path))?;
        Ok(info)
    }

    /// Restores the backup in `backup` into the new data dir `data_dir`
    /// (new or empty), copying its files, and opens it.
    pub fn restore(backup: &Path, data_dir: &Path) -> Result<(Store, BackupInfo)> {
        let info_path = backup.join(INFO);
        let info: BackupInfo = std::fs::read(&info_path)
            .map_err(io(&info_path))
            .and_then(|b| {
                serde_json::from_slice(&b).map_err(|e| Error::NotAStore {
                    path: backup.to_path_buf(),
                    reason: format!("{INFO} does not read as a segsync backup: {e}"),
                })
            })?;
        fresh_target(data_dir, "restore")?;
        let db = data_dir.join("db");
        std::fs::create_dir_all(&db).map_err(io(&db))?;
        copy_dir(&backup.join("db"), &db)?;
        for name in COPIED {
            let from = backup.join(name);
            if from.exists() {
                std::fs::copy(&from, data_dir.join(name)).map_err(io(&from))?;
            }
        }
        let store = Store::open(data_dir)?;
        let c = store.counters();
        if c.write_seq != info.write_seq || c.user_count != info.users {
            return Err(Error::Corrupt {
                what: "restored store",
                reason: format!(
                    "the backup says write {} and {} users, the restored store has write {} and {} users",
                    info.write_seq, info.users, c.write_seq, c.user_count
                ),
            });
        }
        Ok((store, info))
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let entries: Vec<PathBuf> = std::fs::read_dir(from)
        .map_err(io(from))?
        .flatten()
        .map(|e| e.path())
        .collect();
    for p in entries {
        if let Some(name) = p.file_name() {
            std::fs::copy(&p, to.join(name)).map_err(io(&p))?;
        }
    }
    Ok(())
}

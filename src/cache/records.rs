//! The index of finished stages, as plain files under the cache root:
//!
//! ```text
//! records/ab/<key>.json       one StageRecord per stage key
//! latest/<pipeline>/<stage>   the key of the stage's last successful run
//! ```
//!
//! Files, not a database, because the cache is shared: several `seqpipe`
//! processes — two terminals, or Slurm jobs on many nodes over a shared
//! filesystem — read and write it at once, and an embedded database (sled)
//! allows one process. Every file is written to a unique temporary name and
//! renamed into place, so a reader sees a whole record or none; two writers
//! of one key write the same stage's result and the last rename wins.
//!
//! The local sled index, when this process holds it, serves as a read cache
//! in front of the files (a shared filesystem is slow to ask). A record never
//! changes under its key, so a cached copy can only be stale by having been
//! forgotten elsewhere; the run checks every hit's artifacts anyway.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use std::sync::Arc;

use super::remote::RemoteStore;
use super::{io_err, CacheError, StageRecord};
use crate::key::Hash;

/// Stage records and latest keys under one cache root.
pub struct Records {
    root: PathBuf,
    /// Local read cache of `records/` (absent without the local index).
    read_cache: Option<sled::Tree>,
    /// The shared object store, when the cache has one: records are
    /// written there too, and read from there when this machine has none.
    remote: Option<Arc<RemoteStore>>,
}

/// A record's name relative to the cache root (local or remote).
pub fn record_rel(key: &str) -> String {
    let prefix = key.get(..2).unwrap_or("__");
    format!("records/{prefix}/{key}.json")
}

fn latest_rel(pipeline: &str, stage: &str) -> String {
    format!("latest/{}/{}", file_name(pipeline), file_name(stage))
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Records {
    pub fn new(
        root: &Path,
        read_cache: Option<sled::Tree>,
        remote: Option<Arc<RemoteStore>>,
    ) -> Records {
        Records {
            root: root.to_path_buf(),
            read_cache,
            remote,
        }
    }

    fn record_path(&self, key: &str) -> PathBuf {
        self.root.join(record_rel(key))
    }

    fn latest_path(&self, pipeline: &str, stage: &str) -> PathBuf {
        self.root.join(latest_rel(pipeline, stage))
    }

    /// A file of the index: the local copy, else the shared store's (kept
    /// locally from then on).
    fn read_through(&self, rel: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let path = self.root.join(rel);
        match fs::read(&path) {
            Ok(bytes) => return Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("cannot read", &path)(e)),
        }
        let Some(remote) = &self.remote else {
            return Ok(None);
        };
        let Some(bytes) = remote.get(rel)? else {
            return Ok(None);
        };
        write_atomic(&path, &bytes)?;
        Ok(Some(bytes))
    }

    /// The record for a stage key, if any. A damaged record is a miss (the
    /// stage reruns), not a failure.
    pub fn get(&self, key: &str) -> Result<Option<StageRecord>, CacheError> {
        let cached = self
            .read_cache
            .as_ref()
            .and_then(|t| t.get(key).ok().flatten());
        let bytes = match cached {
            Some(bytes) => bytes.to_vec(),
            None => match self.read_through(&record_rel(key))? {
                Some(bytes) => bytes,
                None => return Ok(None),
            },
        };
        match serde_json::from_slice(&bytes) {
            Ok(record) => {
                if let Some(t) = &self.read_cache {
                    let _ = t.insert(key, bytes);
                }
                Ok(Some(record))
            }
            Err(e) => {
                tracing::warn!("ignoring unreadable cache record {key}: {e}");
                Ok(None)
            }
        }
    }

    /// Records a finished stage under its key and as the latest key of
    /// `pipeline/stage`, durably (synced) before returning.
    pub fn put(
        &self,
        pipeline: &str,
        stage: &str,
        key: &str,
        record: &StageRecord,
    ) -> Result<(), CacheError> {
        let bytes = serde_json::to_vec(record)?;
        write_atomic(&self.record_path(key), &bytes)?;
        write_atomic(&self.latest_path(pipeline, stage), key.as_bytes())?;
        if let Some(remote) = &self.remote {
            remote.put(&record_rel(key), bytes.clone())?;
            remote.put(&latest_rel(pipeline, stage), key.as_bytes().to_vec())?;
        }
        if let Some(t) = &self.read_cache {
            let _ = t.insert(key, bytes);
        }
        Ok(())
    }

    /// The key of the last successful run of `pipeline/stage`.
    pub fn latest(&self, pipeline: &str, stage: &str) -> Result<Option<Hash>, CacheError> {
        let bytes = self.read_through(&latest_rel(pipeline, stage))?;
        Ok(bytes.map(|b| String::from_utf8_lossy(&b).trim().to_string()))
    }

    /// Forgets a key (its artifacts stay until `gc`).
    pub fn forget(&self, key: &str) -> Result<(), CacheError> {
        if let Some(t) = &self.read_cache {
            let _ = t.remove(key);
        }
        let path = self.record_path(key);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("cannot remove", &path)(e)),
            _ => Ok(()),
        }
    }

    /// Every readable stage record.
    pub fn all(&self) -> Result<Vec<(Hash, StageRecord)>, CacheError> {
        let mut out = Vec::new();
        let dir = self.root.join("records");
        for entry in walkdir::WalkDir::new(&dir).sort_by_file_name().min_depth(2) {
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            let Some(key) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            if let Ok(Some(record)) = self.get(key) {
                out.push((key.to_string(), record));
            }
        }
        Ok(out)
    }

    /// Copies the records of a cache written by seqpipe before records were
    /// files (they lived in the sled index only) out to `records/` and
    /// `latest/`, once, so an upgrade does not rerun finished work.
    pub fn import_from_sled(
        &self,
        keys: &sled::Tree,
        latest: &sled::Tree,
    ) -> Result<(), CacheError> {
        for (k, v) in keys.iter().flatten() {
            let key = String::from_utf8_lossy(&k).into_owned();
            if !self.record_path(&key).exists() {
                write_atomic(&self.record_path(&key), &v)?;
            }
        }
        for (name, key) in latest.iter().flatten() {
            let name = String::from_utf8_lossy(&name).into_owned();
            if let Some((pipeline, stage)) = name.rsplit_once('/') {
                write_atomic(&self.latest_path(pipeline, stage), &key)?;
            }
        }
        Ok(())
    }
}

/// A name as one path component: names from specs are already safe
/// (letters, digits, `_`, `-`); anything else is hex-encoded so no name can
/// reach outside its folder.
fn file_name(name: &str) -> String {
    let safe = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if safe {
        name.to_string()
    } else {
        let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
        format!("x-{hex}")
    }
}

/// Writes `bytes` to `path` through a unique temporary file, synced and
/// renamed into place: readers see the old file or the new one, never part
/// of one, whichever process or thread writes.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    let dir = path.parent().expect("a file inside the cache");
    fs::create_dir_all(dir).map_err(io_err("cannot create", dir))?;
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}-{n}.tmp", std::process::id()));
    let write = || -> io::Result<()> {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("cannot write", &tmp)(e));
    }
    fs::rename(&tmp, path).map_err(io_err("cannot rename into", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_names_stay_inside_their_folder() {
        assert_eq!(file_name("ml100k"), "ml100k");
        assert_eq!(file_name("train_sasrec-2"), "train_sasrec-2");
        assert_eq!(file_name(".."), "x-2e2e");
        assert_eq!(file_name("a/b"), "x-612f62");
        assert_eq!(file_name(""), "x-");
    }
}

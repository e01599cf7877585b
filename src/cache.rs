//! The cache: content-addressed artifacts plus an index of stage keys.
//!
//! Layout under the cache root (default `./cache`):
//!
//! ```text
//! LOCK                     one process at a time (the second waits, or fails with --no-wait)
//! index/                   sled: keys → stage records, latest key per stage name,
//!                          run records, and the file-hash memo
//! objects/ab/<hash>/       one folder per artifact, named by its content hash, read-only
//! tmp/<id>/                outputs being written; published into objects/ by rename
//! checkpoints/<key>/       a running stage's checkpoints; survive a killed run
//! runs/<pipeline>/         run manifests (JSON), `latest.json` the newest
//! ```
//!
//! An artifact is a folder. Its hash is blake3 over the sorted list of its
//! files (relative path, size, blake3 of the bytes), so the same bytes always
//! get the same name and two writers of the same artifact cannot disagree.
//! Outputs are staged in `tmp/` and renamed into place: a crash never leaves a
//! half-written artifact under `objects/`. A stage's record is written only
//! after all its outputs are published, so an interrupted run simply resumes.
//!
//! Re-hashing large artifacts on every read would be slow, so a memo maps
//! (path, size, mtime, inode) → hash; a file that changed in any of these is
//! hashed again, and a file modified in the last two seconds is not memoised
//! (an edit in the same clock tick can keep all four). The memo only saves
//! time: mtimes never enter a key.
//!
//! Artifacts are stored behind the [`ArtifactStore`] trait so that another
//! backend (a shared object store) can replace the local folder later.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use serde::{Deserialize, Serialize};

use crate::key::{Fingerprint, Hash};

/// What can go wrong in the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("the cache at {path} is in use by another seqpipe process (run without --no-wait to wait for it)")]
    Locked { path: PathBuf },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("artifact {id} is corrupt: {detail}")]
    Corrupt { id: Hash, detail: String },
    #[error("the cache index at {path}: {source}")]
    Index { path: PathBuf, source: sled::Error },
    #[error("a record in the cache index cannot be read: {0}")]
    Record(#[from] serde_json::Error),
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CacheError {
    let path = path.to_path_buf();
    move |source| CacheError::Io {
        action,
        path,
        source,
    }
}

/// Where artifacts live. The local folder is the one implementation today;
/// the trait is the seam for a shared object store.
pub trait ArtifactStore: Send + Sync {
    /// Moves a staged folder into the store; returns its content hash.
    fn publish(&self, staged: &Path) -> Result<Hash, CacheError>;
    /// A local folder holding the artifact's files (read-only).
    fn path(&self, id: &str) -> PathBuf;
    fn contains(&self, id: &str) -> bool;
    /// Re-hashes the artifact (memoised) and compares with its name.
    fn verify(&self, id: &str) -> Result<(), CacheError>;
    fn remove(&self, id: &str) -> Result<(), CacheError>;
    fn list(&self) -> Result<Vec<Hash>, CacheError>;
}

/// What the index keeps for a stage key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRecord {
    pub fingerprint: Fingerprint,
    /// Output name → artifact hash.
    pub outputs: BTreeMap<String, Hash>,
    pub seconds: f64,
    /// Unix seconds when it finished.
    pub finished_at: u64,
}

/// The artifact store on local disk.
pub struct LocalStore {
    objects: PathBuf,
    memo: sled::Tree,
}

/// The cache: a locked root, its artifact store and its index.
pub struct Cache {
    root: PathBuf,
    store: LocalStore,
    db: sled::Db,
    keys: sled::Tree,
    latest: sled::Tree,
    runs: sled::Tree,
    _lock: File,
    /// Keys a thread of this process is computing (see [`Cache::claim`]).
    in_flight: Mutex<BTreeSet<String>>,
    released: Condvar,
}

/// A stage key claimed for computing by this thread; released on drop.
pub struct Claim<'a> {
    cache: &'a Cache,
    key: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut keys = self
            .cache
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        keys.remove(&self.key);
        self.cache.released.notify_all();
    }
}

static STAGING_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Cache {
    /// Opens (creating if needed) the cache at `root`, taking its lock. With
    /// `wait`, a busy cache is waited for with a message; otherwise it is an
    /// error.
    pub fn open(root: &Path, wait: bool) -> Result<Cache, CacheError> {
        fs::create_dir_all(root).map_err(io_err("cannot create the cache folder", root))?;
        let lock_path = root.join("LOCK");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("cannot open", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) if wait => {
                eprintln!(
                    "seqpipe: waiting for the cache lock {} (another seqpipe process is using this cache)…",
                    lock_path.display()
                );
                lock.lock().map_err(io_err("cannot lock", &lock_path))?;
            }
            Err(fs::TryLockError::WouldBlock) => {
                return Err(CacheError::Locked {
                    path: root.to_path_buf(),
                })
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err("cannot lock", &lock_path)(e)),
        }
        for sub in ["objects", "tmp", "checkpoints", "runs"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
        }
        // Anything left in tmp/ is from a run that was killed: we hold the
        // lock, so nobody else is writing there.
        let tmp = root.join("tmp");
        for entry in fs::read_dir(&tmp).map_err(io_err("cannot list", &tmp))? {
            let path = entry.map_err(io_err("cannot list", &tmp))?.path();
            remove_tree(&path).map_err(io_err("cannot clean", &path))?;
        }
        let index = root.join("index");
        let db = sled::open(&index).map_err(|source| CacheError::Index {
            path: index.clone(),
            source,
        })?;
        let tree = |name: &str| {
            db.open_tree(name).map_err(|source| CacheError::Index {
                path: index.clone(),
                source,
            })
        };
        Ok(Cache {
            store: LocalStore {
                objects: root.join("objects"),
                memo: tree("memo")?,
            },
            keys: tree("keys")?,
            latest: tree("latest")?,
            runs: tree("runs")?,
            db,
            root: root.to_path_buf(),
            _lock: lock,
            in_flight: Mutex::new(BTreeSet::new()),
            released: Condvar::new(),
        })
    }

    /// Claims stage key `key` for computing, waiting while another thread of
    /// this process holds it. The file lock keeps other processes out of
    /// the cache, but parallel sweep trials are threads of one process and
    /// may share a stage (one trained model, two evaluations): the first to
    /// claim computes it, the others wait and then find it cached instead
    /// of computing it again into the same checkpoint folder.
    pub fn claim(&self, key: &str) -> Claim<'_> {
        let mut keys = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        while keys.contains(key) {
            keys = self.released.wait(keys).unwrap_or_else(|e| e.into_inner());
        }
        keys.insert(key.to_string());
        Claim {
            cache: self,
            key: key.to_string(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The content hash of a raw input on disk (a file or a folder), through
    /// the memo, so unchanged data is not read again. A file hashes like a
    /// folder holding just that file, so its name is part of the hash.
    pub fn hash_path(&self, path: &Path) -> Result<Hash, CacheError> {
        self.store.hash_folder(path, true)
    }

    /// The content hash of a folder, read in full (no memo): for scratch
    /// output that is about to be deleted (`seqpipe verify`).
    pub fn hash_fresh(&self, path: &Path) -> Result<Hash, CacheError> {
        self.store.hash_folder(path, false)
    }

    pub fn store(&self) -> &dyn ArtifactStore {
        &self.store
    }

    fn index_err(&self, source: sled::Error) -> CacheError {
        CacheError::Index {
            path: self.root.join("index"),
            source,
        }
    }

    /// The record for a stage key, if any.
    pub fn lookup(&self, key: &str) -> Result<Option<StageRecord>, CacheError> {
        match self.keys.get(key).map_err(|e| self.index_err(e))? {
            None => Ok(None),
            Some(bytes) => match serde_json::from_slice(&bytes) {
                Ok(record) => Ok(Some(record)),
                // A damaged record is a miss, not a failure: the stage reruns.
                Err(e) => {
                    tracing::warn!("ignoring unreadable cache record {key}: {e}");
                    Ok(None)
                }
            },
        }
    }

    /// Records a finished stage under its key, and as the latest key for
    /// `pipeline/stage`, durably (flushed) before returning.
    pub fn record(
        &self,
        pipeline: &str,
        stage: &str,
        key: &str,
        record: &StageRecord,
    ) -> Result<(), CacheError> {
        let bytes = serde_json::to_vec(record)?;
        self.keys
            .insert(key, bytes)
            .map_err(|e| self.index_err(e))?;
        self.latest
            .insert(format!("{pipeline}/{stage}"), key.as_bytes())
            .map_err(|e| self.index_err(e))?;
        self.db.flush().map_err(|e| self.index_err(e))?;
        Ok(())
    }

    /// The key of the last successful run of `pipeline/stage`.
    pub fn latest_key(&self, pipeline: &str, stage: &str) -> Result<Option<Hash>, CacheError> {
        Ok(self
            .latest
            .get(format!("{pipeline}/{stage}"))
            .map_err(|e| self.index_err(e))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Forgets a key (its artifacts stay until `gc`).
    pub fn forget(&self, key: &str) -> Result<(), CacheError> {
        self.keys.remove(key).map_err(|e| self.index_err(e))?;
        Ok(())
    }

    /// Every stage record in the index.
    pub fn records(&self) -> Result<Vec<(Hash, StageRecord)>, CacheError> {
        let mut out = Vec::new();
        for item in self.keys.iter() {
            let (k, v) = item.map_err(|e| self.index_err(e))?;
            if let Ok(rec) = serde_json::from_slice(&v) {
                out.push((String::from_utf8_lossy(&k).into_owned(), rec));
            }
        }
        Ok(out)
    }

    /// A fresh, empty folder under `tmp/` for a stage to write into.
    pub fn staging_dir(&self, label: &str) -> Result<PathBuf, CacheError> {
        let n = STAGING_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .root
            .join("tmp")
            .join(format!("{label}-{}-{n}", std::process::id()));
        fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
        Ok(dir)
    }

    /// The checkpoint folder for a stage key (created if needed).
    pub fn checkpoint_dir(&self, key: &str) -> Result<PathBuf, CacheError> {
        let dir = self.root.join("checkpoints").join(key);
        fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
        Ok(dir)
    }

    /// Seeds stage key `key`'s checkpoint folder with a copy of key
    /// `from`'s, when `key` has none yet and `from` has one (a sweep
    /// promoting a trial to a larger budget: the stage resumes where the
    /// smaller budget stopped instead of starting over).
    pub fn inherit_checkpoints(&self, key: &str, from: &str) -> Result<(), CacheError> {
        let dir = self.root.join("checkpoints").join(key);
        let source = self.root.join("checkpoints").join(from);
        let empty = |d: &Path| fs::read_dir(d).map_or(true, |mut e| e.next().is_none());
        if !empty(&dir) || empty(&source) {
            return Ok(());
        }
        fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
        for entry in fs::read_dir(&source).map_err(io_err("cannot list", &source))? {
            let path = entry.map_err(io_err("cannot list", &source))?.path();
            if path.is_file() {
                let to = dir.join(path.file_name().expect("a file name"));
                fs::copy(&path, &to).map_err(io_err("cannot copy", &path))?;
            }
        }
        Ok(())
    }

    /// Removes a stage key's checkpoints once it has succeeded.
    pub fn drop_checkpoints(&self, key: &str) -> Result<(), CacheError> {
        let dir = self.root.join("checkpoints").join(key);
        if dir.exists() {
            remove_tree(&dir).map_err(io_err("cannot remove", &dir))?;
        }
        Ok(())
    }

    /// Saves a run manifest: in the index and as `runs/<pipeline>/<id>.json`
    /// plus `latest.json`. Returns the file's path.
    pub fn save_run(
        &self,
        pipeline: &str,
        run_id: &str,
        manifest: &serde_json::Value,
    ) -> Result<PathBuf, CacheError> {
        let text = serde_json::to_string_pretty(manifest)?;
        self.runs
            .insert(format!("{pipeline}/{run_id}"), text.as_bytes())
            .map_err(|e| self.index_err(e))?;
        self.db.flush().map_err(|e| self.index_err(e))?;
        let dir = self.root.join("runs").join(pipeline);
        fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
        let path = dir.join(format!("{run_id}.json"));
        write_atomic(&path, text.as_bytes())?;
        write_atomic(&dir.join("latest.json"), text.as_bytes())?;
        Ok(path)
    }

    /// The newest run manifest of a pipeline.
    pub fn latest_run(&self, pipeline: &str) -> Result<Option<serde_json::Value>, CacheError> {
        let path = self.root.join("runs").join(pipeline).join("latest.json");
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("cannot read", &path)(e)),
        }
    }

    /// Every artifact hash named by any recorded run.
    pub fn artifacts_in_runs(&self) -> Result<BTreeSet<Hash>, CacheError> {
        let mut ids = BTreeSet::new();
        for item in self.runs.iter() {
            let (_, v) = item.map_err(|e| self.index_err(e))?;
            let manifest: serde_json::Value = serde_json::from_slice(&v)?;
            for stage in manifest["stages"].as_array().into_iter().flatten() {
                for id in stage["outputs"].as_object().into_iter().flatten() {
                    if let Some(id) = id.1.as_str() {
                        ids.insert(id.to_string());
                    }
                }
            }
        }
        Ok(ids)
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, bytes).map_err(io_err("cannot write", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("cannot rename into", path))
}

/// Removes a folder tree, restoring write permission on the way (published
/// artifacts are read-only).
pub fn remove_tree(path: &Path) -> io::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    for entry in walkdir::WalkDir::new(path).into_iter().flatten() {
        let mut perms = entry.metadata()?.permissions();
        if perms.readonly() {
            perms.set_mode(perms.mode() | 0o200);
            let _ = fs::set_permissions(entry.path(), perms);
        }
    }
    if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

impl LocalStore {
    fn object_path(&self, id: &str) -> PathBuf {
        let prefix = id.get(..2).unwrap_or("__");
        self.objects.join(prefix).join(id)
    }

    fn memo_get(&self, path: &Path, meta: &fs::Metadata) -> Option<[u8; 32]> {
        let stored = self.memo.get(path.as_os_str().as_encoded_bytes()).ok()??;
        let stamp = memo_stamp(meta);
        (stored.len() == stamp.len() + 32 && stored[..stamp.len()] == stamp[..]).then(|| {
            let mut h = [0u8; 32];
            h.copy_from_slice(&stored[stamp.len()..]);
            h
        })
    }

    fn memo_put(&self, path: &Path, meta: &fs::Metadata, hash: &[u8; 32]) {
        let mut value = memo_stamp(meta);
        value.extend_from_slice(hash);
        let _ = self.memo.insert(path.as_os_str().as_encoded_bytes(), value);
    }

    /// The content hash of a folder; `memo` consults and fills the memo.
    fn hash_folder(&self, dir: &Path, memo: bool) -> Result<Hash, CacheError> {
        let mut listing = blake3::Hasher::new();
        let mut files = 0usize;
        // A single file is its own listing; links in raw data folders are
        // followed (artifacts hold none).
        let walker = walkdir::WalkDir::new(dir)
            .sort_by_file_name()
            .follow_links(true)
            .min_depth(if dir.is_file() { 0 } else { 1 });
        for entry in walker {
            let entry = entry.map_err(|e| CacheError::Io {
                action: "cannot list",
                path: dir.to_path_buf(),
                source: e.into(),
            })?;
            if entry.file_type().is_dir() {
                continue;
            }
            let path = entry.path();
            let meta = entry.metadata().map_err(|e| CacheError::Io {
                action: "cannot stat",
                path: path.to_path_buf(),
                source: e.into(),
            })?;
            let cached = if memo {
                self.memo_get(path, &meta)
            } else {
                None
            };
            let hash = match cached {
                Some(h) => h,
                None => {
                    let h = hash_file(path)?;
                    if memo && !recently_modified(&meta) {
                        self.memo_put(path, &meta, &h);
                    }
                    h
                }
            };
            let rel = match path.strip_prefix(dir) {
                Ok(rel) if !rel.as_os_str().is_empty() => rel.to_string_lossy(),
                _ => path.file_name().unwrap_or_default().to_string_lossy(),
            };
            listing.update(rel.as_bytes());
            listing.update(&[0]);
            listing.update(&meta.len().to_le_bytes());
            listing.update(&hash);
            files += 1;
        }
        listing.update(&files.to_le_bytes());
        Ok(listing.finalize().to_hex().to_string())
    }
}

/// A file modified in the last two seconds is not memoised: another write in
/// the same clock tick could leave size, mtime and inode unchanged (an edit
/// that keeps the length, on a filesystem with coarse timestamps), and the
/// memo would then hide it. Like git's "racily clean" entries, such a file
/// is simply hashed again next time.
fn recently_modified(meta: &fs::Metadata) -> bool {
    let Ok(modified) = meta.modified() else {
        return true;
    };
    match std::time::SystemTime::now().duration_since(modified) {
        Ok(age) => age < std::time::Duration::from_secs(2),
        Err(_) => true, // modified "in the future": clock skew, trust nothing
    }
}

fn memo_stamp(meta: &fs::Metadata) -> Vec<u8> {
    let mut v = Vec::with_capacity(32);
    v.extend_from_slice(&meta.len().to_le_bytes());
    v.extend_from_slice(&meta.mtime().to_le_bytes());
    v.extend_from_slice(&meta.mtime_nsec().to_le_bytes());
    v.extend_from_slice(&meta.ino().to_le_bytes());
    v
}

/// blake3 of a file's bytes, streamed.
pub fn hash_file(path: &Path) -> Result<[u8; 32], CacheError> {
    let mut file = File::open(path).map_err(io_err("cannot open", path))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io_err("cannot read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(*hasher.finalize().as_bytes())
}

fn set_read_only(dir: &Path) {
    for entry in walkdir::WalkDir::new(dir).into_iter().flatten() {
        if entry.file_type().is_file() {
            if let Ok(meta) = entry.metadata() {
                let mut perms = meta.permissions();
                perms.set_mode(perms.mode() & !0o222);
                let _ = fs::set_permissions(entry.path(), perms);
            }
        }
    }
}

impl ArtifactStore for LocalStore {
    fn publish(&self, staged: &Path) -> Result<Hash, CacheError> {
        let id = self.hash_folder(staged, false)?;
        let target = self.object_path(&id);
        if target.exists() {
            // Same bytes already stored, unless the stored copy is damaged.
            if self.verify(&id).is_ok() {
                remove_tree(staged).map_err(io_err("cannot remove", staged))?;
                return Ok(id);
            }
            remove_tree(&target).map_err(io_err("cannot remove", &target))?;
        }
        let parent = target.parent().expect("objects/ab");
        fs::create_dir_all(parent).map_err(io_err("cannot create", parent))?;
        set_read_only(staged);
        if let Err(e) = fs::rename(staged, &target) {
            // Two stages of one run may produce the same bytes at once: the
            // other one published first, and its copy is ours.
            if target.is_dir() && self.verify(&id).is_ok() {
                remove_tree(staged).map_err(io_err("cannot remove", staged))?;
                return Ok(id);
            }
            return Err(io_err("cannot publish into", &target)(e));
        }
        // Fill the memo for the published paths (rename keeps mtime and inode).
        self.hash_folder(&target, true)?;
        Ok(id)
    }

    fn path(&self, id: &str) -> PathBuf {
        self.object_path(id)
    }

    fn contains(&self, id: &str) -> bool {
        self.object_path(id).is_dir()
    }

    fn verify(&self, id: &str) -> Result<(), CacheError> {
        let path = self.object_path(id);
        if !path.is_dir() {
            return Err(CacheError::Corrupt {
                id: id.to_string(),
                detail: format!("{} is missing", path.display()),
            });
        }
        let actual = self.hash_folder(&path, true)?;
        if actual != id {
            return Err(CacheError::Corrupt {
                id: id.to_string(),
                detail: format!("its files hash to {actual}"),
            });
        }
        Ok(())
    }

    fn remove(&self, id: &str) -> Result<(), CacheError> {
        let path = self.object_path(id);
        remove_tree(&path).map_err(io_err("cannot remove", &path))
    }

    fn list(&self) -> Result<Vec<Hash>, CacheError> {
        let mut ids = Vec::new();
        let prefixes = fs::read_dir(&self.objects).map_err(io_err("cannot list", &self.objects))?;
        for prefix in prefixes.flatten() {
            for entry in fs::read_dir(prefix.path()).into_iter().flatten().flatten() {
                ids.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }
}

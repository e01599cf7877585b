//! The cache: content-addressed artifacts plus an index of stage keys.
//!
//! Layout under the cache root (default `./cache`):
//!
//! ```text
//! SEQPIPE_CACHE.toml       the marker: this folder is a cache (layout version)
//! CACHEDIR.TAG             tells backup tools to skip it
//! LOCK                     shared by every run, exclusive for `gc`
//! objects/ab/<hash>/       one folder per artifact, named by its content hash, read-only
//! records/ab/<key>.json    a finished stage: its fingerprint and output hashes
//! latest/<pipeline>/<stage>  the key of the stage's last successful run
//! claims/<key>             locked while someone computes that stage key
//! tmp/<host>-<pid>/        outputs being written; published into objects/ by rename
//! checkpoints/<key>/       a running stage's checkpoints; survive a killed run
//! runs/<pipeline>/         run manifests (JSON), `latest.json` the newest
//! index/                   sled, local to one process at a time: the file-hash
//!                          memo and a read cache of records/
//! ```
//!
//! An artifact is a folder. Its hash is blake3 over the sorted list of its
//! files (relative path, size, blake3 of the bytes), so the same bytes always
//! get the same name and two writers of the same artifact cannot disagree.
//! Outputs are staged in `tmp/` and renamed into place: a crash never leaves a
//! half-written artifact under `objects/`. A stage's record is written only
//! after all its outputs are published, so an interrupted run simply resumes.
//!
//! Many processes may share one cache — two terminals, or Slurm jobs on
//! several nodes over a shared filesystem. Content addressing makes their
//! artifact writes safe (same name, same bytes); records are files written
//! by atomic rename ([`records`]); a stage key is computed by whoever
//! [`claim`]s it first while the others wait and then find it cached. Only
//! `gc`, which deletes, needs the cache to itself: runs hold `LOCK` shared,
//! `gc` exclusive.
//!
//! Re-hashing large artifacts on every read would be slow, so a memo maps
//! (path, size, mtime, inode) → hash; a file that changed in any of these is
//! hashed again, and a file modified in the last two seconds is not memoised
//! (an edit in the same clock tick can keep all four). The memo only saves
//! time: mtimes never enter a key. It lives in the sled index, which one
//! process holds at a time; another process sharing the cache meanwhile
//! hashes without it.
//!
//! seqpipe deletes inside its cache, so it uses no folder that lacks the
//! marker unless the folder is new, empty, or an unmarked cache of an older
//! seqpipe (see [`marker`]); `gc` needs the marker.
//!
//! Artifacts are stored behind the [`ArtifactStore`] trait so that another
//! backend (a shared object store) can replace the local folder later.

mod claim;
mod marker;
mod records;
#[cfg(feature = "cloud")]
mod remote;
#[cfg(not(feature = "cloud"))]
#[path = "no_remote.rs"]
mod remote;
mod store;
#[cfg(feature = "cloud")]
mod store_gc;
mod tiered;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use claim::Claim;
pub use marker::{LAYOUT_VERSION, MARKER};
use records::{write_atomic, Records};
pub use remote::RemoteStore;
pub use store::{hash_file, remove_tree, LocalStore};
use tiered::TieredStore;

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
    #[error("the shared cache {url}: {detail}")]
    Remote { url: String, detail: String },
    #[error(
        "{path} is not a seqpipe cache ({holds}, but no {marker}), so seqpipe will not \
         use it, nor delete anything in it; name a new or empty folder with --cache, \
         or an existing cache",
        marker = MARKER
    )]
    NotACache { path: PathBuf, holds: String },
    #[error(
        "{path} looks like a cache from an older seqpipe but has no {marker}; `gc` \
         deletes, so it cleans only marked caches: any `seqpipe run` or `seqpipe status` \
         with this cache marks it",
        marker = MARKER
    )]
    Unmarked { path: PathBuf },
    #[error("{path}: {detail}")]
    BadMarker { path: PathBuf, detail: String },
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

/// What `gc --store` removed from the shared store.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StoreGc {
    pub artifacts_removed: usize,
    pub bytes_freed: u64,
    pub records_forgotten: usize,
    /// Unreferenced artifacts kept because they are younger than the grace
    /// period (a run elsewhere may still be writing its manifest).
    pub young_kept: usize,
}

/// How a command uses the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Runs, status, show: any number at once.
    Shared,
    /// `gc`: deletes what no run references, so it waits for every run.
    Exclusive,
}

/// The cache: a root held shared or exclusive, its artifact store and its
/// stage records.
pub struct Cache {
    root: PathBuf,
    store: TieredStore,
    records: Records,
    /// The local sled index, when this process holds it.
    _index: Option<sled::Db>,
    _lock: File,
}

static STAGING_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Cache {
    /// Opens (creating if needed) the cache at `root` for a run: shared with
    /// other runs, waiting for a `gc` to finish (with a message) when `wait`,
    /// else failing at once.
    pub fn open(root: &Path, wait: bool) -> Result<Cache, CacheError> {
        Cache::open_as(root, Access::Shared, wait)
    }

    /// Opens the cache with the given access.
    pub fn open_as(root: &Path, access: Access, wait: bool) -> Result<Cache, CacheError> {
        Cache::open_shared(root, None, access, wait)
    }

    /// Opens the local working folder `root` in front of the object store
    /// at `remote` (`s3://bucket/prefix`, `gs://…`, `az://…`, `file://…`),
    /// or alone when `remote` is `None`.
    pub fn open_shared(
        root: &Path,
        remote: Option<&str>,
        access: Access,
        wait: bool,
    ) -> Result<Cache, CacheError> {
        let remote = remote.map(RemoteStore::open).transpose()?.map(Arc::new);
        // Before anything is created or cleaned in it.
        marker::ensure(root, access)?;
        fs::create_dir_all(root).map_err(io_err("cannot create the cache folder", root))?;
        let lock = lock_root(root, access, wait)?;
        for sub in [
            "objects",
            "records",
            "latest",
            "claims",
            "tmp",
            "checkpoints",
            "runs",
        ] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
        }
        clean_staging(&root.join("tmp"), access)?;
        if access == Access::Exclusive {
            // Nobody else has the cache open, so no claim is held.
            let claims = root.join("claims");
            remove_tree(&claims).map_err(io_err("cannot clean", &claims))?;
            fs::create_dir_all(&claims).map_err(io_err("cannot create", &claims))?;
        }
        let index = open_index(root)?;
        let tree = |name: &str| -> Result<Option<sled::Tree>, CacheError> {
            let Some(db) = &index else { return Ok(None) };
            db.open_tree(name)
                .map(Some)
                .map_err(|source| CacheError::Index {
                    path: root.join("index"),
                    source,
                })
        };
        let records = Records::new(root, tree("records")?, remote.clone());
        if let (Some(keys), Some(latest)) = (tree("keys")?, tree("latest")?) {
            if !keys.is_empty() {
                // A cache from before records were files: move them out once.
                records.import_from_sled(&keys, &latest)?;
                let _ = keys.clear();
                let _ = latest.clear();
            }
        }
        Ok(Cache {
            store: TieredStore {
                local: LocalStore {
                    objects: root.join("objects"),
                    memo: tree("memo")?,
                },
                remote,
                downloads: root.join("tmp").join(staging_owner()),
            },
            records,
            _index: index,
            root: root.to_path_buf(),
            _lock: lock,
        })
    }

    /// Claims stage key `key` for computing, waiting while another thread
    /// or process computes it (`on_wait` is told first). The first to claim
    /// computes the stage; the others then find it cached.
    pub fn claim(&self, key: &str, on_wait: impl FnOnce()) -> Result<Claim, CacheError> {
        let mut on_wait = Some(on_wait);
        let mut tell = || {
            if let Some(f) = on_wait.take() {
                f()
            }
        };
        let mut claim = claim::claim(&self.root.join("claims"), key, &mut tell)?;
        if let Some(remote) = &self.store.remote {
            claim._lease = remote::lease(remote, key, &records::record_rel(key), &mut tell)?;
        }
        Ok(claim)
    }

    /// The shared object store's URL, if the cache has one.
    /// Cleans the shared store (see `store_gc`); `None` without one.
    pub fn gc_store(&self, grace: std::time::Duration) -> Result<Option<StoreGc>, CacheError> {
        self.store.remote.as_ref().map(|r| r.gc(grace)).transpose()
    }

    pub fn remote_url(&self) -> Option<&str> {
        self.store.remote.as_deref().map(RemoteStore::url)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The content hash of a raw input on disk (a file or a folder), through
    /// the memo, so unchanged data is not read again. A file hashes like a
    /// folder holding just that file, so its name is part of the hash.
    pub fn hash_path(&self, path: &Path) -> Result<Hash, CacheError> {
        self.store.local.hash_folder(path, true)
    }

    /// The content hash of a folder, read in full (no memo): for scratch
    /// output that is about to be deleted (`seqpipe verify`).
    pub fn hash_fresh(&self, path: &Path) -> Result<Hash, CacheError> {
        self.store.local.hash_folder(path, false)
    }

    pub fn store(&self) -> &dyn ArtifactStore {
        &self.store
    }

    /// The record for a stage key, if any.
    pub fn lookup(&self, key: &str) -> Result<Option<StageRecord>, CacheError> {
        self.records.get(key)
    }

    /// Records a finished stage under its key, and as the latest key for
    /// `pipeline/stage`, durably before returning.
    pub fn record(
        &self,
        pipeline: &str,
        stage: &str,
        key: &str,
        record: &StageRecord,
    ) -> Result<(), CacheError> {
        self.records.put(pipeline, stage, key, record)
    }

    /// The key of the last successful run of `pipeline/stage`.
    pub fn latest_key(&self, pipeline: &str, stage: &str) -> Result<Option<Hash>, CacheError> {
        self.records.latest(pipeline, stage)
    }

    /// Forgets a key (its artifacts stay until `gc`).
    pub fn forget(&self, key: &str) -> Result<(), CacheError> {
        self.records.forget(key)
    }

    /// Every stage record in the index.
    pub fn records(&self) -> Result<Vec<(Hash, StageRecord)>, CacheError> {
        self.records.all()
    }

    /// A fresh, empty folder under `tmp/` for a stage to write into.
    pub fn staging_dir(&self, label: &str) -> Result<PathBuf, CacheError> {
        let n = STAGING_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .root
            .join("tmp")
            .join(staging_owner())
            .join(format!("{label}-{n}"));
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

    /// Saves a run manifest as `runs/<pipeline>/<id>.json` plus
    /// `latest.json`. Returns the file's path.
    pub fn save_run(
        &self,
        pipeline: &str,
        run_id: &str,
        manifest: &serde_json::Value,
    ) -> Result<PathBuf, CacheError> {
        let text = serde_json::to_string_pretty(manifest)?;
        let dir = self.root.join("runs").join(pipeline);
        fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
        let path = dir.join(format!("{run_id}.json"));
        write_atomic(&path, text.as_bytes())?;
        if let Some(remote) = &self.store.remote {
            remote.put(
                &format!("runs/{pipeline}/{run_id}.json"),
                text.clone().into_bytes(),
            )?;
        }
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
        let runs = self.root.join("runs");
        for entry in walkdir::WalkDir::new(&runs).min_depth(2) {
            let entry = entry.map_err(|e| CacheError::Io {
                action: "cannot list",
                path: runs.clone(),
                source: e.into(),
            })?;
            let name = entry.file_name().to_string_lossy();
            // latest.json repeats a run listed under its own id.
            if !name.ends_with(".json") || name == "latest.json" || name.starts_with('.') {
                continue;
            }
            let bytes = fs::read(entry.path()).map_err(io_err("cannot read", entry.path()))?;
            let manifest: serde_json::Value = serde_json::from_slice(&bytes)?;
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

impl Drop for Cache {
    /// Removes this process's staging folder if nothing is left in it (a
    /// failed stage removes its own staging; a killed one leaves it for the
    /// next open to clean).
    fn drop(&mut self) {
        let _ = fs::remove_dir(self.root.join("tmp").join(staging_owner()));
    }
}

/// Takes `LOCK` shared or exclusive, waiting (with a message) when `wait`.
fn lock_root(root: &Path, access: Access, wait: bool) -> Result<File, CacheError> {
    let lock_path = root.join("LOCK");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err("cannot open", &lock_path))?;
    let tried = match access {
        Access::Shared => lock.try_lock_shared(),
        Access::Exclusive => lock.try_lock(),
    };
    match tried {
        Ok(()) => Ok(lock),
        Err(TryLockError::WouldBlock) if wait => {
            crate::errln!(
                "seqpipe: waiting for the cache lock {} ({})…",
                lock_path.display(),
                match access {
                    Access::Shared => "a `seqpipe gc` is cleaning this cache",
                    Access::Exclusive => "gc waits for the runs using this cache",
                }
            );
            match access {
                Access::Shared => lock.lock_shared(),
                Access::Exclusive => lock.lock(),
            }
            .map_err(io_err("cannot lock", &lock_path))?;
            Ok(lock)
        }
        Err(TryLockError::WouldBlock) => Err(CacheError::Locked {
            path: root.to_path_buf(),
        }),
        Err(TryLockError::Error(e)) => Err(io_err("cannot lock", &lock_path)(e)),
    }
}

/// This process's folder under `tmp/`: `<host>-<pid>`, so a process can
/// tell its own machine's dead runs from live ones and from other nodes'.
fn staging_owner() -> String {
    format!("{}-{}", host_name(), std::process::id())
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    if rc == 0 && end > 0 {
        String::from_utf8_lossy(&buf[..end]).replace(['/', '-'], "_")
    } else {
        "localhost".to_string()
    }
}

/// Removes staging folders that nobody is writing: with the cache to
/// ourselves (`gc`), all of them; otherwise those of dead processes on this
/// machine (another node's we cannot judge; `gc` removes them).
fn clean_staging(tmp: &Path, access: Access) -> Result<(), CacheError> {
    let ours = host_name();
    for entry in fs::read_dir(tmp).map_err(io_err("cannot list", tmp))? {
        let path = entry.map_err(io_err("cannot list", tmp))?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let unused = match name.split_once('-') {
            Some((host, pid)) if !pid.contains('-') => match pid.parse::<i32>() {
                Ok(pid) if host == ours => !process_alive(pid),
                Ok(_) => false, // another node's: it may be running
                Err(_) => true,
            },
            // `label-pid-n`: left by an older seqpipe, which held the whole
            // cache while it ran.
            _ => true,
        };
        if access == Access::Exclusive || unused {
            remove_tree(&path).map_err(io_err("cannot clean", &path))?;
        }
    }
    Ok(())
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The local sled index, or `None` when another process holds it (the
/// cache is shared; this process then hashes without the memo).
fn open_index(root: &Path) -> Result<Option<sled::Db>, CacheError> {
    let path = root.join("index");
    match sled::open(&path) {
        Ok(db) => Ok(Some(db)),
        Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
            tracing::debug!(
                "the local index {} is held by another process",
                path.display()
            );
            Ok(None)
        }
        Err(source) => Err(CacheError::Index { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seconds: f64) -> StageRecord {
        StageRecord {
            fingerprint: Fingerprint {
                kind: "pop".into(),
                kind_version: 1,
                params: serde_json::json!({}),
                inputs: BTreeMap::new(),
                seed: 0,
                format: crate::FORMAT_VERSION,
            },
            outputs: BTreeMap::from([("model".to_string(), "ab12".to_string())]),
            seconds,
            finished_at: 0,
        }
    }

    #[test]
    fn two_processes_worth_of_handles_share_records() {
        let dir = tempfile::tempdir().unwrap();
        let a = Cache::open(dir.path(), false).unwrap();
        // A second handle cannot have the sled index (sled allows one
        // holder), yet opens, and sees and writes the same records.
        let b = Cache::open(dir.path(), false).unwrap();
        assert!(a._index.is_some() && b._index.is_none());
        a.record("p", "s", "k1", &record(1.0)).unwrap();
        assert_eq!(b.lookup("k1").unwrap().unwrap().seconds, 1.0);
        b.record("p", "s", "k2", &record(2.0)).unwrap();
        assert_eq!(a.lookup("k2").unwrap().unwrap().seconds, 2.0);
        assert_eq!(a.latest_key("p", "s").unwrap().as_deref(), Some("k2"));
        b.forget("k1").unwrap();
        assert_eq!(b.records().unwrap().len(), 1);
        // gc's exclusive open is refused while they are open.
        assert!(matches!(
            Cache::open_as(dir.path(), Access::Exclusive, false),
            Err(CacheError::Locked { .. })
        ));
        drop((a, b));
        assert!(Cache::open_as(dir.path(), Access::Exclusive, false).is_ok());
    }

    #[test]
    fn a_cache_whose_records_lived_in_sled_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path().join("index")).unwrap();
            let keys = db.open_tree("keys").unwrap();
            keys.insert("k1", serde_json::to_vec(&record(3.0)).unwrap())
                .unwrap();
            db.open_tree("latest")
                .unwrap()
                .insert("ml100k/train", &b"k1"[..])
                .unwrap();
            db.flush().unwrap();
        }
        let cache = Cache::open(dir.path(), false).unwrap();
        assert_eq!(cache.lookup("k1").unwrap().unwrap().seconds, 3.0);
        assert_eq!(
            cache.latest_key("ml100k", "train").unwrap().as_deref(),
            Some("k1")
        );
        assert!(dir.path().join("records/k1/k1.json").is_file());
    }

    #[test]
    fn staging_of_dead_processes_and_older_versions_is_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        drop(Cache::open(dir.path(), false).unwrap()); // an existing cache
        let tmp = dir.path().join("tmp");
        let dead = tmp.join(format!("{}-{}", host_name(), i32::MAX));
        let old = tmp.join("train-123-0");
        let elsewhere = tmp.join("othernode-42");
        for d in [&dead, &old, &elsewhere] {
            fs::create_dir_all(d.join("out")).unwrap();
        }
        let cache = Cache::open(dir.path(), false).unwrap();
        let staged = cache.staging_dir("train").unwrap();
        assert!(!dead.exists() && !old.exists());
        assert!(elsewhere.exists(), "another node's run may be writing");
        drop(cache);
        // gc (exclusive) removes everything left.
        let _gc = Cache::open_as(dir.path(), Access::Exclusive, false).unwrap();
        assert!(!elsewhere.exists() && !staged.exists());
    }
}

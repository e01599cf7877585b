//! The artifact store a run sees: the local folder, backed by the shared
//! object store when the cache has one. Publishing uploads; a hit on an
//! artifact only the object store has downloads it first, and checks that
//! its bytes hash to its name, like any local artifact.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::remote::RemoteStore;
use super::store::LocalStore;
use super::{io_err, remove_tree, ArtifactStore, CacheError};
use crate::key::Hash;

pub struct TieredStore {
    pub(super) local: LocalStore,
    pub(super) remote: Option<Arc<RemoteStore>>,
    /// Where downloads are staged (this process's folder under `tmp/`).
    pub(super) downloads: PathBuf,
}

static DOWNLOADS: AtomicU64 = AtomicU64::new(0);

impl TieredStore {
    /// Makes artifact `id` local, downloading it if only the object store
    /// has it; `Ok(false)` if neither has it.
    fn fetch(&self, id: &str) -> Result<bool, CacheError> {
        if self.local.contains(id) {
            return Ok(true);
        }
        let Some(remote) = &self.remote else {
            return Ok(false);
        };
        let n = DOWNLOADS.fetch_add(1, Ordering::Relaxed);
        let staged = self.downloads.join(format!("fetch-{n}"));
        std::fs::create_dir_all(&staged).map_err(io_err("cannot create", &staged))?;
        let fetched = remote.download_artifact(id, &staged);
        let published = match fetched {
            Ok(true) => self.local.publish(&staged),
            other => {
                let _ = remove_tree(&staged);
                return other;
            }
        };
        match published {
            Ok(got) if got == id => Ok(true),
            Ok(got) => Err(CacheError::Corrupt {
                id: id.to_string(),
                detail: format!("the copy in {} hashes to {got}", remote.url()),
            }),
            Err(e) => {
                let _ = remove_tree(&staged);
                Err(e)
            }
        }
    }
}

impl ArtifactStore for TieredStore {
    fn publish(&self, staged: &Path) -> Result<Hash, CacheError> {
        let id = self.local.publish(staged)?;
        if let Some(remote) = &self.remote {
            remote.upload_artifact(&id, &self.local.path(&id))?;
        }
        Ok(id)
    }

    fn path(&self, id: &str) -> PathBuf {
        // Hits are verified (and so fetched) before their paths are used;
        // this covers a reader that asks first (`show`).
        let _ = self.fetch(id);
        self.local.path(id)
    }

    fn contains(&self, id: &str) -> bool {
        self.local.contains(id)
            || self
                .remote
                .as_ref()
                .is_some_and(|r| r.has_artifact(id).unwrap_or(false))
    }

    fn verify(&self, id: &str) -> Result<(), CacheError> {
        self.fetch(id)?;
        self.local.verify(id)
    }

    /// Removes the local copy only: `gc` cleans this machine's folder, never
    /// the shared store.
    fn remove(&self, id: &str) -> Result<(), CacheError> {
        self.local.remove(id)
    }

    fn list(&self) -> Result<Vec<Hash>, CacheError> {
        self.local.list()
    }
}

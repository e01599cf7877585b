//! The cache in an object store (`--cache s3://bucket/prefix`; also `gs://`,
//! `az://`, `file://`), through the `object_store` crate.
//!
//! The local cache folder stays this machine's working copy: stages read
//! and write local files, artifacts are published locally first. The store
//! holds the shared truth, under the prefix:
//!
//! ```text
//! objects/<id>/<files>      an artifact's files
//! objects/<id>.complete     its file list, written last: the artifact is whole
//! records/ab/<key>.json     stage records (as in the local folder)
//! latest/<pipeline>/<stage>
//! claims/<key>              a lease: who computes that key, renewed while alive
//! runs/<pipeline>/<id>.json run manifests
//! ```
//!
//! Content addressing makes concurrent writers safe: two machines that
//! compute one key upload the same bytes under the same names. The lease
//! keeps them from computing it twice: it is created with a conditional put
//! (fails if it exists), renewed every few seconds, deleted when done, and
//! taken over when its holder stopped renewing it (a crashed machine).
//!
//! `object_store` is async; this module owns a small tokio runtime and
//! blocks on it, since the engine is threads and processes, not futures.
//!
//! Deleting from the store is `gc --store`'s alone ([`RemoteStore::gc`]);
//! otherwise only leases are ever deleted.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreScheme, PutMode, PutOptions, PutPayload};

use super::{io_err, CacheError};

/// How often a lease holder renews it, and after how long without renewal a
/// lease is considered abandoned.
const LEASE_RENEW: Duration = Duration::from_secs(5);
const LEASE_EXPIRY: Duration = Duration::from_secs(30);

/// A cache location in an object store.
pub struct RemoteStore {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: StorePath,
    runtime: tokio::runtime::Runtime,
}

fn remote_err(url: &str, what: &str, e: impl std::fmt::Display) -> CacheError {
    CacheError::Remote {
        url: url.to_string(),
        detail: format!("{what}: {e}"),
    }
}

impl RemoteStore {
    /// Connects to `url`; credentials and endpoints come from the usual
    /// environment variables of each service (`AWS_ACCESS_KEY_ID`,
    /// `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, `GOOGLE_SERVICE_ACCOUNT`,
    /// `AZURE_STORAGE_ACCOUNT_NAME`, …).
    pub fn open(url: &str) -> Result<RemoteStore, CacheError> {
        let parsed = url::Url::parse(url).map_err(|e| remote_err(url, "not a URL", e))?;
        let (scheme, prefix) =
            ObjectStoreScheme::parse(&parsed).map_err(|e| remote_err(url, "unsupported", e))?;
        let built: Result<Arc<dyn ObjectStore>, object_store::Error> = match scheme {
            ObjectStoreScheme::AmazonS3 => object_store::aws::AmazonS3Builder::from_env()
                .with_url(url)
                .build()
                .map(|s| Arc::new(s) as _),
            ObjectStoreScheme::GoogleCloudStorage => {
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url)
                    .build()
                    .map(|s| Arc::new(s) as _)
            }
            ObjectStoreScheme::MicrosoftAzure => {
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url)
                    .build()
                    .map(|s| Arc::new(s) as _)
            }
            ObjectStoreScheme::Local => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|_| remote_err(url, "not a file path", "file:///absolute/path"))?;
                std::fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
                object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map(|s| Arc::new(s) as _)
            }
            other => {
                return Err(remote_err(
                    url,
                    "unsupported",
                    format!("{other:?} (use s3://, gs://, az:// or file://)"),
                ))
            }
        };
        let store = built.map_err(|e| remote_err(url, "cannot configure", e))?;
        let prefix = match scheme {
            ObjectStoreScheme::Local => StorePath::default(),
            _ => prefix,
        };
        // Several threads (parallel stages, a lease's renewer) block on it
        // at once: a multi-threaded runtime lets each of them.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(io_err("cannot start the I/O runtime for", Path::new(url)))?;
        Ok(RemoteStore {
            url: url.to_string(),
            store,
            prefix,
            runtime,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, rel: &str) -> StorePath {
        rel.split('/')
            .filter(|p| !p.is_empty())
            .fold(self.prefix.clone(), |p, part| p.child(part))
    }

    fn err(&self, what: &str, rel: &str, e: object_store::Error) -> CacheError {
        remote_err(&self.url, &format!("{what} {rel}"), e)
    }

    /// The object at `rel`, or `None` if there is none.
    pub fn get(&self, rel: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let path = self.path(rel);
        let got = self.runtime.block_on(async {
            match self.store.get(&path).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        got.map(|b| b.map(|b| b.to_vec()))
            .map_err(|e| self.err("cannot read", rel, e))
    }

    /// Writes `bytes` at `rel` (replacing any object there).
    pub fn put(&self, rel: &str, bytes: Vec<u8>) -> Result<(), CacheError> {
        let path = self.path(rel);
        self.runtime
            .block_on(self.store.put(&path, PutPayload::from(bytes)))
            .map(drop)
            .map_err(|e| self.err("cannot write", rel, e))
    }

    /// Writes `bytes` at `rel` only if nothing is there; `false` if
    /// something was.
    pub fn put_new(&self, rel: &str, bytes: Vec<u8>) -> Result<bool, CacheError> {
        let path = self.path(rel);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .runtime
            .block_on(self.store.put_opts(&path, PutPayload::from(bytes), opts))
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.err("cannot create", rel, e)),
        }
    }

    /// How long ago the object at `rel` was last written (`None`: absent).
    pub fn age(&self, rel: &str) -> Result<Option<Duration>, CacheError> {
        let path = self.path(rel);
        match self.runtime.block_on(self.store.head(&path)) {
            Ok(meta) => {
                let age = chrono::Utc::now() - meta.last_modified;
                Ok(Some(age.to_std().unwrap_or_default()))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("cannot stat", rel, e)),
        }
    }

    pub fn delete(&self, rel: &str) -> Result<(), CacheError> {
        let path = self.path(rel);
        match self.runtime.block_on(self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("cannot delete", rel, e)),
        }
    }

    /// Whether artifact `id` is whole in the store.
    pub fn has_artifact(&self, id: &str) -> Result<bool, CacheError> {
        Ok(self.age(&format!("objects/{id}.complete"))?.is_some())
    }

    /// Uploads the artifact folder `dir` as `id`: its files, then its file
    /// list (so a reader never sees part of an artifact as whole).
    pub fn upload_artifact(&self, id: &str, dir: &Path) -> Result<(), CacheError> {
        if self.has_artifact(id)? {
            return Ok(());
        }
        let mut files = Vec::new();
        for entry in walkdir::WalkDir::new(dir).sort_by_file_name().min_depth(1) {
            let entry = entry.map_err(|e| CacheError::Io {
                action: "cannot list",
                path: dir.to_path_buf(),
                source: e.into(),
            })?;
            if !entry.file_type().is_file() {
                continue;
            }
            let rel = entry
                .path()
                .strip_prefix(dir)
                .expect("inside the artifact")
                .to_string_lossy()
                .into_owned();
            let bytes = std::fs::read(entry.path()).map_err(io_err("cannot read", entry.path()))?;
            self.put(&format!("objects/{id}/{rel}"), bytes)?;
            files.push(rel);
        }
        let list = serde_json::to_vec(&files)?;
        self.put(&format!("objects/{id}.complete"), list)
    }

    /// Downloads artifact `id` into the folder `into` (which must not
    /// exist); `false` if the store has no whole artifact `id`.
    pub fn download_artifact(&self, id: &str, into: &Path) -> Result<bool, CacheError> {
        let Some(list) = self.get(&format!("objects/{id}.complete"))? else {
            return Ok(false);
        };
        let files: Vec<String> = serde_json::from_slice(&list)?;
        for rel in files {
            let bytes = self
                .get(&format!("objects/{id}/{rel}"))?
                .ok_or_else(|| remote_err(&self.url, "missing part of artifact", &rel))?;
            let path = into.join(&rel);
            let parent = path.parent().expect("a file in the artifact");
            std::fs::create_dir_all(parent).map_err(io_err("cannot create", parent))?;
            std::fs::write(&path, bytes).map_err(io_err("cannot write", &path))?;
        }
        Ok(true)
    }

    /// Every object name under `rel` (relative to the prefix).
    pub fn list(&self, rel: &str) -> Result<Vec<String>, CacheError> {
        Ok(self.list_meta(rel)?.into_iter().map(|o| o.name).collect())
    }

    /// Every object under `rel`: its name (relative to the prefix), size and
    /// age.
    pub fn list_meta(&self, rel: &str) -> Result<Vec<StoredObject>, CacheError> {
        let path = self.path(rel);
        let metas: Vec<object_store::ObjectMeta> = self
            .runtime
            .block_on(self.store.list(Some(&path)).try_collect())
            .map_err(|e| self.err("cannot list", rel, e))?;
        let skip = self.prefix.parts().count();
        let now = chrono::Utc::now();
        Ok(metas
            .into_iter()
            .map(|m| StoredObject {
                name: m
                    .location
                    .parts()
                    .skip(skip)
                    .map(|p| p.as_ref().to_string())
                    .collect::<Vec<_>>()
                    .join("/"),
                size: m.size,
                age: (now - m.last_modified).to_std().unwrap_or_default(),
            })
            .collect())
    }
}

/// One object of the store, as listed.
#[derive(Debug, Clone)]
pub struct StoredObject {
    pub name: String,
    pub size: u64,
    pub age: Duration,
}

/// A held lease on `claims/<key>`: renewed by a thread until dropped, then
/// deleted.
pub struct Lease {
    stop: Arc<AtomicBool>,
    renewer: Option<std::thread::JoinHandle<()>>,
    store: Arc<RemoteStore>,
    name: String,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.renewer.take() {
            let _ = t.join();
        }
        let _ = self.store.delete(&self.name);
    }
}

/// Takes the lease on `key`, waiting while a live holder has it (calling
/// `on_wait` once). Returns `None` instead of a lease when the key's record
/// appeared while waiting: the holder finished, nothing is left to compute.
pub fn lease(
    store: &Arc<RemoteStore>,
    key: &str,
    record: &str,
    on_wait: impl FnOnce(),
) -> Result<Option<Lease>, CacheError> {
    let name = format!("claims/{key}");
    let holder = format!("{}:{}", super::host_name(), std::process::id()).into_bytes();
    let mut on_wait = Some(on_wait);
    loop {
        if store.put_new(&name, holder.clone())? {
            return Ok(Some(start_renewing(store, name, holder)));
        }
        match store.age(&name)? {
            Some(age) if age > LEASE_EXPIRY => {
                tracing::warn!("taking over the abandoned lease {name} ({age:?} old)");
                store.delete(&name)?;
                continue;
            }
            None => continue, // released just now
            Some(_) => {}
        }
        if store.get(record)?.is_some() {
            return Ok(None);
        }
        if let Some(f) = on_wait.take() {
            f();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn start_renewing(store: &Arc<RemoteStore>, name: String, holder: Vec<u8>) -> Lease {
    let stop = Arc::new(AtomicBool::new(false));
    let (s, st, n) = (stop.clone(), store.clone(), name.clone());
    let renewer = std::thread::spawn(move || {
        let mut waited = Duration::ZERO;
        while !s.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
            waited += Duration::from_millis(100);
            if waited >= LEASE_RENEW {
                waited = Duration::ZERO;
                let _ = st.put(&n, holder.clone());
            }
        }
    });
    Lease {
        stop,
        renewer: Some(renewer),
        store: store.clone(),
        name,
    }
}

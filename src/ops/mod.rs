//! One function per command. Each takes an options struct filled by
//! [`crate::cli`] and the stage registry, and does its work through the model
//! modules (`spec`, `graph`, `cache`, `run`).

mod asha;
pub mod gc;
pub mod job;
pub mod run;
pub mod show;
pub mod stages;
pub mod status;
pub mod sweep;
mod sweep_array;
pub mod verify;

use std::path::{Path, PathBuf};

use crate::cache::{Access, Cache};
use crate::graph::{self, Plan};
use crate::spec::{self, Override, Spec};
use crate::stage::Registry;

/// Where the cache is and whether to wait for its lock.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// The local cache folder (with `remote`, this machine's working copy).
    pub root: PathBuf,
    /// The shared object store (`s3://bucket/prefix`, …), if any.
    pub remote: Option<String>,
    pub wait: bool,
    /// Whether `--cache` or `SEQPIPE_CACHE` chose it; if not, a spec's
    /// `[pipeline] cache` does (see [`CacheOptions::for_spec`]).
    pub explicit: bool,
    /// `--local-cache`: the working folder if the cache turns out to be a
    /// store.
    pub working: PathBuf,
}

/// Where the cache is when nothing names it.
pub const DEFAULT_CACHE: &str = "cache";

impl CacheOptions {
    /// `cache` as given (`None`: not given, the default for now); a URL
    /// (`scheme://…`) is the shared store, with `local` as the working folder.
    pub fn new(cache: Option<&str>, local: PathBuf, wait: bool) -> CacheOptions {
        let text = cache.unwrap_or(DEFAULT_CACHE);
        let (root, remote) = if text.contains("://") {
            (local.clone(), Some(text.to_string()))
        } else {
            (PathBuf::from(text), None)
        };
        CacheOptions {
            root,
            remote,
            wait,
            explicit: cache.is_some(),
            working: local,
        }
    }

    /// These options, unless they were defaulted and `spec` names its cache
    /// (`[pipeline] cache`; a relative folder is the spec file's).
    pub fn for_spec(&self, spec: &Spec) -> CacheOptions {
        let Some(named) = spec.cache.as_deref().filter(|_| !self.explicit) else {
            return self.clone();
        };
        let local = self.working.clone();
        let mut options = if named.contains("://") {
            CacheOptions::new(Some(named), local, self.wait)
        } else {
            let dir = spec.source.path.parent().unwrap_or(Path::new(""));
            CacheOptions::new(Some(&dir.join(named).to_string_lossy()), local, self.wait)
        };
        options.explicit = false;
        options
    }

    /// Opens the cache for a run (shared with other runs).
    pub fn open(&self) -> anyhow::Result<Cache> {
        self.open_as(Access::Shared)
    }

    /// Opens the cache for `gc` (alone: it waits for every run).
    pub fn open_exclusive(&self) -> anyhow::Result<Cache> {
        self.open_as(Access::Exclusive)
    }

    fn open_as(&self, access: Access) -> anyhow::Result<Cache> {
        let remote = self.remote.as_deref();
        Ok(Cache::open_shared(&self.root, remote, access, self.wait)?)
    }
}

/// Reads the spec, applies `--set` flags and resolves the DAG.
pub fn load_plan(path: &Path, sets: &[String], registry: &Registry) -> anyhow::Result<Plan> {
    Ok(graph::resolve(load_spec(path, sets)?, registry)?)
}

/// Reads the spec and applies `--set` flags (`STAGE.PARAM=VALUE`).
pub fn load_spec(path: &Path, sets: &[String]) -> anyhow::Result<Spec> {
    let overrides = sets
        .iter()
        .map(|s| Override::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(spec::load(path, &overrides)?)
}

/// Files named `summary.txt` in a stage's outputs are printed after a run and
/// by `show`: a stage's way to tell the user its headline result.
pub fn summaries(
    cache: &Cache,
    outputs: &std::collections::BTreeMap<String, String>,
) -> Vec<String> {
    outputs
        .values()
        .filter_map(|id| std::fs::read_to_string(cache.store().path(id).join("summary.txt")).ok())
        .collect()
}

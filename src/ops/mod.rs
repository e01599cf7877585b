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
}

impl CacheOptions {
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

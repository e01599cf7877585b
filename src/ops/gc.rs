//! `seqpipe gc`: removes artifacts that no recorded run references, and the
//! index entries that pointed at them.

use std::time::Duration;

use super::CacheOptions;
use crate::cache::StoreGc;

/// What `gc` removed.
#[derive(Debug, Default)]
pub struct GcReport {
    pub artifacts_removed: usize,
    pub bytes_freed: u64,
    pub records_forgotten: usize,
    /// From the shared store, when asked to clean it.
    pub store: Option<StoreGc>,
}

/// Options of `seqpipe gc`.
#[derive(Debug, Clone)]
pub struct GcCommand {
    pub cache: CacheOptions,
    /// Also clean the shared object store (`--cache s3://…`).
    pub store: bool,
    /// In the store, unreferenced artifacts younger than this are kept.
    pub grace: Duration,
}

pub fn gc(cmd: &GcCommand) -> anyhow::Result<GcReport> {
    if cmd.store && cmd.cache.remote.is_none() {
        anyhow::bail!(
            "`gc --store` cleans an object-store cache, but the cache is the folder {} \
             (name the store with --cache s3://… or SEQPIPE_CACHE)",
            cmd.cache.root.display()
        );
    }
    let cache = cmd.cache.open_exclusive()?;
    let mut report = local_gc(&cache)?;
    if cmd.store {
        report.store = cache.gc_store(cmd.grace)?;
    }
    Ok(report)
}

/// The local folder: artifacts no local run manifest references.
fn local_gc(cache: &crate::cache::Cache) -> anyhow::Result<GcReport> {
    let keep = cache.artifacts_in_runs()?;
    let mut report = GcReport::default();
    for id in cache.store().list()? {
        if keep.contains(&id) {
            continue;
        }
        let path = cache.store().path(&id);
        report.bytes_freed += walkdir::WalkDir::new(&path)
            .into_iter()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum::<u64>();
        cache.store().remove(&id)?;
        report.artifacts_removed += 1;
    }
    for (key, record) in cache.records()? {
        if record
            .outputs
            .values()
            .any(|id| !cache.store().contains(id))
        {
            cache.forget(&key)?;
            report.records_forgotten += 1;
        }
    }
    Ok(report)
}

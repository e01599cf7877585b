//! `seqpipe gc`: removes artifacts that no recorded run references, and the
//! index entries that pointed at them.

use super::CacheOptions;

/// What `gc` removed.
#[derive(Debug, Default)]
pub struct GcReport {
    pub artifacts_removed: usize,
    pub bytes_freed: u64,
    pub records_forgotten: usize,
}

pub fn gc(cache: &CacheOptions) -> anyhow::Result<GcReport> {
    let cache = cache.open_exclusive()?;
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

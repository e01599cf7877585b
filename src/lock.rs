//! The lock file: `<spec>.lock` beside the spec (`quickstart.toml` →
//! `quickstart.lock`), written by every complete `seqpipe run` of the spec
//! as written, and meant to be committed — like `dvc.lock`, it lets a
//! colleague check that they got the same results. Per stage it records the
//! key, the fingerprint it was made from (kind and version, canonical
//! params, input hashes, seed) and the output hashes. It holds no paths,
//! times or machine facts, so the same results give the same bytes.
//!
//! `seqpipe status` compares every stage with it and says why one differs
//! (`params.lr 0.001 → 0.003`, `input `events` changed`, or outputs whose
//! bytes differ for the same key — a result that did not reproduce).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::graph::Plan;
use crate::key::{Fingerprint, Hash};
use crate::run::{fingerprint, Outcome, RunReport};

/// The whole lock file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockFile {
    pub pipeline: String,
    pub stages: BTreeMap<String, LockedStage>,
}

/// One stage as it was locked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockedStage {
    pub key: Hash,
    pub fingerprint: Fingerprint,
    pub outputs: BTreeMap<String, Hash>,
}

/// Where the lock file of `spec` lives.
pub fn path_for(spec: &Path) -> PathBuf {
    spec.with_extension("lock")
}

/// The lock file of `spec`, if there is one.
pub fn read(spec: &Path) -> anyhow::Result<Option<LockFile>> {
    let path = path_for(spec);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
            anyhow::anyhow!("{} is not a seqpipe lock file: {e}", path.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// The lock of a run in which every stage succeeded (`None` otherwise).
pub fn from_run(plan: &Plan, report: &RunReport) -> Option<LockFile> {
    let mut stages = BTreeMap::new();
    for r in &report.stages {
        if !matches!(r.outcome, Outcome::Ran | Outcome::Cached) {
            return None;
        }
        let i = plan.index_of(&r.name)?;
        stages.insert(
            r.name.clone(),
            LockedStage {
                key: r.key.clone()?,
                fingerprint: fingerprint(plan, i, r.inputs.clone()),
                outputs: r.outputs.clone(),
            },
        );
    }
    Some(LockFile {
        pipeline: plan.spec.name.clone(),
        stages,
    })
}

/// Writes `lock` beside `spec` (atomically) unless it is already there.
/// Returns whether the file changed.
pub fn write(spec: &Path, lock: &LockFile) -> anyhow::Result<bool> {
    if read(spec).ok().flatten().as_ref() == Some(lock) {
        return Ok(false);
    }
    let path = path_for(spec);
    // Two runs of one spec may finish together (they share the cache): each
    // writes its own temporary file, and the last rename wins with a whole
    // lock file (both hold the same results).
    static TEMP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = TEMP.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("lock.{}-{n}.tmp", std::process::id()));
    let mut text = serde_json::to_string_pretty(lock)?;
    text.push('\n');
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot rename {} to {}", tmp.display(), path.display())
    })?;
    Ok(true)
}

/// How a stage compares with its locked state: `None` when it matches.
/// `now` is its fingerprint (input hashes that are not known yet filled in
/// from the lock), `outputs` its cached outputs when it is cached.
pub fn compare(
    locked: &LockedStage,
    now: &Fingerprint,
    outputs: Option<&BTreeMap<String, Hash>>,
) -> Option<String> {
    if now.key() != locked.key {
        return Some(match now.diff(&locked.fingerprint) {
            Some(reason) => format!("differs from the lock: {reason}"),
            None => "differs from the lock".into(),
        });
    }
    let outputs = outputs?;
    let differ: Vec<String> = locked
        .outputs
        .iter()
        .filter(|(name, id)| outputs.get(*name) != Some(*id))
        .map(|(name, id)| {
            let here = outputs.get(name).map_or("missing", |h| &h[..12]);
            format!("{name} {} → {here}", &id[..12])
        })
        .collect();
    (!differ.is_empty()).then(|| {
        format!(
            "same key as the lock, different bytes: {} (not reproduced)",
            differ.join(", ")
        )
    })
}

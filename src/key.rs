//! Stage keys: what a cached result depends on, and why a stage is stale.
//!
//! | field          | covers                                              |
//! |----------------|-----------------------------------------------------|
//! | `kind`         | the stage kind's name                               |
//! | `kind_version` | the kind's `VERSION` (bumped when outputs change)   |
//! | `params`       | the stage's own params, canonical JSON, defaults in |
//! | `inputs`       | input name → content hash of the artifact consumed  |
//! | `seed`         | the pipeline seed                                   |
//! | `format`       | the engine's [`crate::FORMAT_VERSION`]              |
//!
//! The key is blake3 over the fingerprint's canonical JSON (serde_json sorts
//! object keys). Inputs enter by *content* hash, not by upstream key: an
//! upstream stage that reruns and produces the same bytes leaves its
//! dependants' keys unchanged (early cutoff). Paths, mtimes, the device and
//! the stage's name stay out of the key; renaming a stage keeps its cache.
//!
//! The fingerprint JSON is stored next to the key only to explain staleness:
//! [`Fingerprint::diff`] names the first field that changed, old → new.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A blake3 hash in hex: a stage key or an artifact's content hash.
pub type Hash = String;

/// Everything a stage's outputs depend on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub kind: String,
    pub kind_version: u32,
    pub params: serde_json::Value,
    pub inputs: BTreeMap<String, Hash>,
    pub seed: u64,
    pub format: u32,
}

impl Fingerprint {
    /// The stage key.
    pub fn key(&self) -> Hash {
        let bytes = serde_json::to_vec(self).expect("a fingerprint serialises");
        blake3::hash(&bytes).to_hex().to_string()
    }

    /// Why `self` (now) differs from `old` (the last successful run of the
    /// same stage name), cheapest and most fundamental field first.
    pub fn diff(&self, old: &Fingerprint) -> Option<StaleReason> {
        if self.format != old.format {
            return Some(StaleReason::FormatChanged {
                old: old.format,
                new: self.format,
            });
        }
        if self.kind != old.kind {
            return Some(StaleReason::KindChanged {
                old: old.kind.clone(),
                new: self.kind.clone(),
            });
        }
        if self.kind_version != old.kind_version {
            return Some(StaleReason::KindVersionChanged {
                old: old.kind_version,
                new: self.kind_version,
            });
        }
        if self.seed != old.seed {
            return Some(StaleReason::SeedChanged {
                old: old.seed,
                new: self.seed,
            });
        }
        if let Some(reason) = diff_params(&old.params, &self.params) {
            return Some(reason);
        }
        for (name, hash) in &self.inputs {
            if old.inputs.get(name) != Some(hash) {
                return Some(StaleReason::InputChanged {
                    input: name.clone(),
                });
            }
        }
        if old.inputs.keys().any(|k| !self.inputs.contains_key(k)) {
            return Some(StaleReason::InputChanged {
                input: old
                    .inputs
                    .keys()
                    .find(|k| !self.inputs.contains_key(*k))
                    .cloned()
                    .unwrap_or_default(),
            });
        }
        None
    }
}

fn diff_params(old: &serde_json::Value, new: &serde_json::Value) -> Option<StaleReason> {
    let empty = serde_json::Map::new();
    let old = old.as_object().unwrap_or(&empty);
    let new = new.as_object().unwrap_or(&empty);
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let reason = keys.into_iter().find_map(|k| {
        let (o, n) = (old.get(k), new.get(k));
        (o != n).then(|| StaleReason::ParamChanged {
            param: k.clone(),
            old: o.map(|v| v.to_string()),
            new: n.map(|v| v.to_string()),
        })
    });
    reason
}

/// Why a stage would run. Root causes come first in `status`; cascades
/// (`InputWillChange`) name the upstream stage that will rerun.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum StaleReason {
    /// No run of this stage (under this name) was ever recorded.
    NeverRun,
    ParamChanged {
        param: String,
        old: Option<String>,
        new: Option<String>,
    },
    /// An input's content hash differs from the last run's.
    InputChanged {
        input: String,
    },
    /// An input comes from a stage that will run first; its new hash is not
    /// known yet.
    InputWillChange {
        input: String,
        upstream: String,
    },
    KindChanged {
        old: String,
        new: String,
    },
    KindVersionChanged {
        old: u32,
        new: u32,
    },
    SeedChanged {
        old: u64,
        new: u64,
    },
    FormatChanged {
        old: u32,
        new: u32,
    },
    /// The key is recorded but an output artifact is missing or corrupt.
    ArtifactDamaged {
        output: String,
        detail: String,
    },
    /// The same fingerprint as before, but its record is gone (e.g. after `gc`).
    NotInCache,
    /// `--force` named this stage.
    Forced,
}

impl StaleReason {
    /// A root cause is a change in this stage itself, not in what it reads.
    pub fn is_root_cause(&self) -> bool {
        !matches!(self, StaleReason::InputWillChange { .. })
    }
}

impl fmt::Display for StaleReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(unset)".into());
        match self {
            StaleReason::NeverRun => write!(f, "never run"),
            StaleReason::ParamChanged { param, old, new } => {
                write!(f, "params.{param} {} → {}", show(old), show(new))
            }
            StaleReason::InputChanged { input } => write!(f, "input `{input}` changed"),
            StaleReason::InputWillChange { input, upstream } => {
                write!(f, "input `{input}` will be rebuilt by `{upstream}`")
            }
            StaleReason::KindChanged { old, new } => write!(f, "kind {old} → {new}"),
            StaleReason::KindVersionChanged { old, new } => {
                write!(f, "kind version {old} → {new}")
            }
            StaleReason::SeedChanged { old, new } => write!(f, "pipeline seed {old} → {new}"),
            StaleReason::FormatChanged { old, new } => {
                write!(f, "cache format {old} → {new}")
            }
            StaleReason::ArtifactDamaged { output, detail } => {
                write!(f, "output `{output}` is damaged in the cache: {detail}")
            }
            StaleReason::NotInCache => write!(f, "not in the cache (removed by gc?)"),
            StaleReason::Forced => write!(f, "forced with --force"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(lr: f64) -> Fingerprint {
        Fingerprint {
            kind: "train".into(),
            kind_version: 1,
            params: serde_json::json!({"lr": lr, "dim": 64}),
            inputs: BTreeMap::from([("data".into(), "abc".into())]),
            seed: 42,
            format: 1,
        }
    }

    #[test]
    fn key_depends_on_params_only_through_values() {
        assert_eq!(fp(1e-3).key(), fp(1e-3).key());
        assert_ne!(fp(1e-3).key(), fp(3e-4).key());
    }

    #[test]
    fn diff_names_the_param_with_old_and_new() {
        let reason = fp(3e-4).diff(&fp(1e-3)).unwrap();
        assert_eq!(reason.to_string(), "params.lr 0.001 → 0.0003");
    }

    #[test]
    fn version_change_wins_over_params() {
        let mut new = fp(3e-4);
        new.kind_version = 2;
        assert_eq!(
            new.diff(&fp(1e-3)),
            Some(StaleReason::KindVersionChanged { old: 1, new: 2 })
        );
    }
}

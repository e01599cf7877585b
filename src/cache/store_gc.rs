//! `gc --store`: removing from the shared object store the artifacts that no
//! run manifest in the store references, and the stage records that pointed
//! at them.
//!
//! The local `gc` takes the cache's lock exclusively, so no run is half-way
//! while it deletes. A store has no such lock — machines come and go — and a
//! run elsewhere uploads its artifacts as it goes but its manifest only at
//! the end. So an unreferenced artifact is removed only when every one of
//! its objects is older than a grace period (an hour by default): longer
//! than any stage takes between publishing an output and its run's end
//! means nothing in flight is touched. An artifact's `.complete` list goes
//! first, so a reader never takes what is left of it for a whole artifact.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::remote::{RemoteStore, StoredObject};
use super::{CacheError, StoreGc};

impl RemoteStore {
    /// Removes unreferenced artifacts older than `grace`, then the records
    /// whose outputs are gone.
    pub fn gc(&self, grace: Duration) -> Result<StoreGc, CacheError> {
        let referenced = self.artifacts_in_runs()?;
        let mut report = StoreGc::default();
        let mut removed = BTreeSet::new();
        for (id, objects) in artifacts(self.list_meta("objects")?) {
            if referenced.contains(&id) {
                continue;
            }
            if objects.iter().any(|o| o.age < grace) {
                report.young_kept += 1;
                continue;
            }
            self.delete(&format!("objects/{id}.complete"))?;
            for object in &objects {
                self.delete(&object.name)?;
                report.bytes_freed += object.size;
            }
            report.artifacts_removed += 1;
            removed.insert(id);
        }
        for record in self.list("records")? {
            let Some(bytes) = self.get(&record)? else {
                continue;
            };
            if outputs(&bytes).iter().any(|id| removed.contains(id)) {
                self.delete(&record)?;
                report.records_forgotten += 1;
            }
        }
        Ok(report)
    }

    /// Every artifact id named in a run manifest of the store.
    fn artifacts_in_runs(&self) -> Result<BTreeSet<String>, CacheError> {
        let mut ids = BTreeSet::new();
        for name in self.list("runs")? {
            if !name.ends_with(".json") || name.ends_with("/latest.json") {
                continue;
            }
            let Some(bytes) = self.get(&name)? else {
                continue;
            };
            let manifest: serde_json::Value = serde_json::from_slice(&bytes)?;
            for stage in manifest["stages"].as_array().into_iter().flatten() {
                let outputs = stage["outputs"].as_object().into_iter().flatten();
                ids.extend(outputs.filter_map(|(_, id)| Some(id.as_str()?.to_string())));
            }
        }
        Ok(ids)
    }
}

/// The objects under `objects/`, grouped by artifact id
/// (`objects/<id>.complete` and `objects/<id>/<file>`).
fn artifacts(objects: Vec<StoredObject>) -> BTreeMap<String, Vec<StoredObject>> {
    let mut by_id: BTreeMap<String, Vec<StoredObject>> = BTreeMap::new();
    for object in objects {
        let Some(rest) = object.name.strip_prefix("objects/") else {
            continue;
        };
        let id = match rest.split_once('/') {
            Some((id, _)) => id,
            None => rest.strip_suffix(".complete").unwrap_or(rest),
        };
        by_id.entry(id.to_string()).or_default().push(object);
    }
    by_id
}

/// The artifact ids a stage record's `outputs` names.
fn outputs(record: &[u8]) -> Vec<String> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(record) else {
        return Vec::new();
    };
    value["outputs"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, id)| Some(id.as_str()?.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str) -> StoredObject {
        StoredObject {
            name: name.into(),
            size: 1,
            age: Duration::ZERO,
        }
    }

    #[test]
    fn objects_group_by_artifact_and_records_name_their_outputs() {
        let grouped = artifacts(vec![
            object("objects/aa.complete"),
            object("objects/aa/data.parquet"),
            object("objects/aa/sub/x.json"),
            object("objects/bb/only-part"),
            object("records/ab/k.json"),
        ]);
        let sizes: Vec<(&str, usize)> =
            grouped.iter().map(|(k, v)| (k.as_str(), v.len())).collect();
        assert_eq!(sizes, [("aa", 3), ("bb", 1)]);
        let record = br#"{"outputs": {"model": "aa", "log": "cc"}, "seconds": 1.0}"#;
        let named: BTreeSet<String> = outputs(record).into_iter().collect();
        assert_eq!(named, BTreeSet::from(["aa".to_string(), "cc".to_string()]));
        assert!(outputs(b"not json").is_empty());
    }
}

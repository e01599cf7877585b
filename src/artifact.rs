//! Artifact types a stage can declare for its own outputs, each with a check
//! its folder must pass before the engine publishes it.
//!
//! Built-in kinds write their outputs themselves and are trusted; a
//! `command` stage runs somebody's script, so what it wrote is checked
//! against the type it declared (`outputs = { model = "dir", scores =
//! "metrics" }`) and a mismatch publishes nothing. The engine knows the
//! types that need no format library (`dir`, `file`, `metrics`, `log`); a
//! stage library adds the rest (`table` checks Parquet, `tensor`
//! safetensors) with [`crate::stage::Registry::register_artifact_type`].

use std::path::Path;

/// Checks an output folder; `Err` says what is wrong, naming the file.
pub type ArtifactCheck = fn(&Path) -> Result<(), String>;

/// A named artifact type and its check.
#[derive(Clone, Copy)]
pub struct ArtifactType {
    pub name: &'static str,
    pub doc: &'static str,
    pub check: ArtifactCheck,
}

/// The file a `metrics` artifact holds.
pub const METRICS_FILE: &str = "metrics.json";

/// The types every registry has.
pub fn builtin_types() -> Vec<ArtifactType> {
    vec![
        ArtifactType {
            name: "dir",
            doc: "any files (the folder must not be empty)",
            check: check_dir,
        },
        ArtifactType {
            name: "file",
            doc: "one file; `{outputs.NAME}` is its path (`<folder>/NAME`)",
            check: check_file,
        },
        ArtifactType {
            name: "metrics",
            doc: "metrics.json: a JSON object of numbers (nested objects allowed), as `evaluate` writes",
            check: check_metrics,
        },
        ArtifactType {
            name: "log",
            doc: "stdout.txt and stderr.txt of a command",
            check: check_dir,
        },
    ]
}

fn check_dir(dir: &Path) -> Result<(), String> {
    let mut entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    match entries.next() {
        Some(_) => Ok(()),
        None => Err(format!("nothing was written to {}", dir.display())),
    }
}

fn check_file(dir: &Path) -> Result<(), String> {
    let files = files_in(dir)?;
    match files.as_slice() {
        [_] => Ok(()),
        [] => Err(format!("no file was written in {}", dir.display())),
        many => Err(format!(
            "a `file` output holds one file, but {} has {}",
            dir.display(),
            many.len()
        )),
    }
}

fn check_metrics(dir: &Path) -> Result<(), String> {
    let path = dir.join(METRICS_FILE);
    let bytes = std::fs::read(&path).map_err(|_| format!("{} was not written", path.display()))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    let Some(object) = value.as_object() else {
        return Err(format!("{} is not a JSON object", path.display()));
    };
    let mut numbers = 0;
    for (key, v) in object {
        count_numbers(v, key, &mut numbers).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if numbers == 0 {
        return Err(format!("{} holds no numbers", path.display()));
    }
    Ok(())
}

/// Counts the numbers under `value`; strings are allowed (a model's name),
/// booleans and nulls are not metrics.
fn count_numbers(value: &serde_json::Value, at: &str, numbers: &mut usize) -> Result<(), String> {
    use serde_json::Value;
    match value {
        Value::Number(_) => *numbers += 1,
        Value::String(_) => {}
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                count_numbers(v, &format!("{at}[{i}]"), numbers)?;
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                count_numbers(v, &format!("{at}.{k}"), numbers)?;
            }
        }
        Value::Bool(_) | Value::Null => {
            return Err(format!("`{at}` is {value}, not a number"));
        }
    }
    Ok(())
}

/// The regular files under `dir`, recursively.
pub fn files_in(dir: &Path) -> Result<Vec<std::path::PathBuf>, String> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(dir) {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        if entry.file_type().is_file() {
            files.push(entry.into_path());
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_must_be_an_object_of_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let write = |text: &str| std::fs::write(dir.path().join(METRICS_FILE), text).unwrap();
        assert!(check_metrics(dir.path())
            .unwrap_err()
            .contains("was not written"));
        write(r#"{"model": "gru", "test": {"hr@10": 0.5, "hr@10_ci": [0.4, 0.6]}}"#);
        assert_eq!(check_metrics(dir.path()), Ok(()));
        write("[1, 2]");
        assert!(check_metrics(dir.path())
            .unwrap_err()
            .contains("not a JSON object"));
        write(r#"{"test": {"hr@10": null}}"#);
        assert!(check_metrics(dir.path())
            .unwrap_err()
            .contains("`test.hr@10` is null"));
        write(r#"{"model": "x"}"#);
        assert!(check_metrics(dir.path())
            .unwrap_err()
            .contains("no numbers"));
        write("{not json");
        assert!(check_metrics(dir.path())
            .unwrap_err()
            .contains("is not JSON"));
    }

    #[test]
    fn file_outputs_hold_exactly_one_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_file(dir.path()).is_err());
        std::fs::write(dir.path().join("a"), "x").unwrap();
        assert_eq!(check_file(dir.path()), Ok(()));
        std::fs::write(dir.path().join("b"), "y").unwrap();
        assert!(check_file(dir.path()).unwrap_err().contains("has 2"));
    }
}

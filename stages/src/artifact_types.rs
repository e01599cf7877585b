//! The artifact types this library adds for `command` stages (the engine
//! has `dir`, `file`, `metrics` and `log`): what a script's output folder
//! must hold before it is published, so that the built-in stages reading it
//! next can trust it.
//!
//! - `table`: one or more Parquet files, each readable (as `load.*` and
//!   `clean` write: `events.parquet`); `sequences` reads `events.parquet`.
//! - `tensor`: one or more `.safetensors` files, each parseable.

use std::path::Path;

use seqpipe::artifact::files_in;
use seqpipe::stage::Registry;

/// Adds `table` and `tensor` to `registry`.
pub fn register(registry: &mut Registry) {
    registry
        .register_artifact_type(
            "table",
            "Parquet files (e.g. events.parquet), each readable",
            check_table,
        )
        .register_artifact_type(
            "tensor",
            "safetensors files (+ any JSON config), each parseable",
            check_tensor,
        );
}

/// Files under `dir` whose name ends in `.{extension}`; an error if none.
fn files_with(dir: &Path, extension: &str) -> Result<Vec<std::path::PathBuf>, String> {
    let files: Vec<_> = files_in(dir)?
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == extension))
        .collect();
    if files.is_empty() {
        return Err(format!(
            "no .{extension} file was written in {}",
            dir.display()
        ));
    }
    Ok(files)
}

fn check_table(dir: &Path) -> Result<(), String> {
    for file in files_with(dir, "parquet")? {
        crate::table::read(&file).map_err(|e| format!("{e:#}"))?;
    }
    Ok(())
}

fn check_tensor(dir: &Path) -> Result<(), String> {
    for file in files_with(dir, "safetensors")? {
        let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| format!("{} is not a safetensors file: {e:?}", file.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_must_be_readable_parquet() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_table(dir.path())
            .unwrap_err()
            .contains("no .parquet file"));
        std::fs::write(dir.path().join("events.parquet"), b"not parquet").unwrap();
        let e = check_table(dir.path()).unwrap_err();
        assert!(
            e.contains("events.parquet is not a readable Parquet file"),
            "{e}"
        );
        let batch = crate::table::batch(vec![(
            "user_id",
            std::sync::Arc::new(arrow::array::Int64Array::from(vec![1, 2])),
        )])
        .unwrap();
        crate::table::write(&dir.path().join("events.parquet"), &batch).unwrap();
        assert_eq!(check_table(dir.path()), Ok(()));
    }

    #[test]
    fn tensors_must_parse() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("w.safetensors"),
            b"\x08\0\0\0\0\0\0\0{broken}",
        )
        .unwrap();
        assert!(check_tensor(dir.path())
            .unwrap_err()
            .contains("not a safetensors file"));
        // An 8-byte little-endian header length, then the JSON header.
        let header = br#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&1.0f32.to_le_bytes());
        std::fs::write(dir.path().join("w.safetensors"), bytes).unwrap();
        assert_eq!(check_tensor(dir.path()), Ok(()));
    }
}

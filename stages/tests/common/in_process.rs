//! Running one stage kind in this process, without the engine: through the
//! registry with a hand-built `StageContext`, as the engine would run it.
//! For tests of a kind's own behaviour on tiny hand-made inputs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use seqpipe::progress::Progress;
use seqpipe::stage::StageContext;

/// Runs kind `kind` with TOML `params` on `inputs`, writing outputs into
/// fresh folders under `dir/<tag>/<name>`; returns the output folders.
pub fn run_stage(
    dir: &Path,
    tag: &str,
    kind: &str,
    params: &str,
    inputs: &[(&str, &Path)],
) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let registry = seqpipe_stages::registry();
    let stage = registry.get(kind).expect("registered kind");
    let table: toml::Table = toml::from_str(params).unwrap();
    let params = stage
        .canonical_params(&table.into_iter().collect())
        .map_err(|e| anyhow::anyhow!("params: {e}"))?;
    let outputs: BTreeMap<String, PathBuf> = stage
        .info()
        .outputs
        .iter()
        .map(|p| {
            let path = dir.join(tag).join(p.name);
            std::fs::create_dir_all(&path).unwrap();
            (p.name.to_string(), path)
        })
        .collect();
    let progress = Progress::hidden();
    let mut ctx = StageContext {
        stage: kind,
        params,
        seed: 1,
        device: "cpu",
        inputs: inputs
            .iter()
            .map(|(n, p)| (n.to_string(), p.to_path_buf()))
            .collect(),
        outputs: outputs.clone(),
        checkpoint_dir: dir.join("checkpoint"),
        progress: &progress,
        notes: BTreeMap::new(),
    };
    stage.run(&mut ctx)?;
    Ok(outputs)
}

/// Writes `text` to `dir/name`; returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

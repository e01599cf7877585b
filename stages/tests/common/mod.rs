//! Helpers shared by the end-to-end tests: run the real `seqpipe` binary in
//! a temporary folder holding `p.toml` and a cache, and read what it did from
//! `seqpipe show --json`.
#![allow(dead_code)] // each test binary uses its own subset

pub mod in_process;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The `seqpipe` command, run in `dir` against `dir/cache`.
pub fn command(dir: &Path, args: &[&str]) -> Command {
    command_with_cache(dir, "cache", args)
}

/// The `seqpipe` command, run in `dir` against the cache folder `dir/<cache>`.
pub fn command_with_cache(dir: &Path, cache: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_seqpipe"));
    c.args(args)
        .arg("--cache")
        .arg(dir.join(cache))
        .current_dir(dir);
    c
}

/// Starts `seqpipe run p.toml --quiet` in the background, output captured.
pub fn spawn_run(dir: &Path, extra: &[&str]) -> Child {
    let mut args = vec!["run", "p.toml", "--quiet"];
    args.extend_from_slice(extra);
    command(dir, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("seqpipe starts")
}

/// The run manifest of the last run, from `show --json`.
pub fn manifest(dir: &Path) -> serde_json::Value {
    let out = seqpipe(dir, &["show", "p.toml", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// One stage's entry in the last run's manifest.
pub fn stage_record(dir: &Path, name: &str) -> serde_json::Value {
    manifest(dir)["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no stage {name} in the manifest"))
}

/// stage name → its output hashes, from the last run's manifest.
pub fn output_hashes(dir: &Path) -> BTreeMap<String, serde_json::Value> {
    manifest(dir)["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["outputs"].clone(),
            )
        })
        .collect()
}

/// Runs `seqpipe ARGS` in `dir` to completion.
pub fn seqpipe(dir: &Path, args: &[&str]) -> Output {
    command(dir, args).output().expect("seqpipe runs")
}

/// A temporary folder holding `p.toml` with `spec`.
pub fn setup(spec: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(&path, spec).unwrap();
    (dir, path)
}

/// stage name → outcome, from `show --json`.
pub fn outcomes(dir: &Path) -> Vec<(String, String)> {
    manifest(dir)["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The stages the last run computed (not cache hits).
pub fn ran(dir: &Path) -> Vec<String> {
    outcomes(dir)
        .into_iter()
        .filter(|(_, o)| o == "ran")
        .map(|(n, _)| n)
        .collect()
}

/// `seqpipe run p.toml --quiet EXTRA`, which must succeed.
pub fn run_ok(dir: &Path, extra: &[&str]) {
    let mut args = vec!["run", "p.toml", "--quiet"];
    args.extend_from_slice(extra);
    let out = seqpipe(dir, &args);
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The folder of output `output` of stage `stage` in the last run, from
/// `show --json`.
pub fn artifact_dir(dir: &Path, stage: &str, output: &str) -> PathBuf {
    let out = seqpipe(dir, &["show", "p.toml", stage, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let record = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == stage)
        .unwrap_or_else(|| panic!("no stage {stage} in {v}"));
    PathBuf::from(
        record["artifacts"][output]["path"]
            .as_str()
            .unwrap_or_else(|| panic!("no output {output} of {stage} in {record}")),
    )
}

/// A small CPU pipeline `name` — synth (50 users, 30 items) → sequences →
/// train (pop) → eval — with `pipeline_extra` lines added to `[pipeline]`.
pub fn small_spec(name: &str, pipeline_extra: &str) -> String {
    format!(
        r#"
[pipeline]
name = "{name}"
seed = 4
device = "cpu"
{pipeline_extra}

[stages.synth]
kind = "synth"
params = {{ users = 50, items = 30, min_len = 5, max_len = 10 }}

[stages.sequences]
kind = "sequences"
inputs = {{ events = "synth.events" }}

[stages.train]
kind = "train"
inputs = {{ data = "sequences.data" }}
params = {{ model = "pop" }}

[stages.eval]
kind = "evaluate"
inputs = {{ model = "train.model", data = "sequences.data" }}
"#
    )
}

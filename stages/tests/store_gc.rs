//! `gc --store`: the shared store loses what no run manifest in it
//! references, once older than the grace period, and nothing else. A
//! `file://` store stands in for S3 (the same `object_store` code paths).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

/// `seqpipe ARGS` for machine `local` (its working folder) on the store.
fn seqpipe(d: &Path, store: &Path, local: &str, args: &[&str]) -> Output {
    let url = format!("file://{}", store.display());
    Command::new(env!("CARGO_BIN_EXE_seqpipe"))
        .args(args)
        .args(["--cache", &url, "--local-cache", local])
        .current_dir(d)
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The stages the last run on `local` computed.
fn ran(d: &Path, local: &str) -> Vec<String> {
    let bytes = std::fs::read(d.join(local).join("runs/pruned/latest.json")).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    manifest["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["outcome"] == "ran")
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

/// The store's run manifests.
fn manifests(store: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(store.join("runs/pruned"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

fn whole_artifacts(store: &Path) -> usize {
    std::fs::read_dir(store.join("objects"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".complete")
        })
        .count()
}

#[test]
fn gc_store_removes_only_old_unreferenced_artifacts_and_their_records() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("p.toml"), common::small_spec("pruned", "")).unwrap();
    let store = d.join("store");
    std::fs::create_dir_all(&store).unwrap();

    // Two experiments from machine a: pop, then markov (new train and eval).
    ok(seqpipe(d, &store, "a", &["run", "p.toml", "--quiet"]));
    let kept_run = manifests(&store);
    ok(seqpipe(
        d,
        &store,
        "a",
        &[
            "run",
            "p.toml",
            "--quiet",
            "--set",
            "train.model=\"markov\"",
        ],
    ));
    assert_eq!(whole_artifacts(&store), 6);
    // The markov experiment is pruned from the store's runs.
    for path in manifests(&store) {
        if !kept_run.contains(&path) {
            std::fs::remove_file(path).unwrap();
        }
    }

    // Within the grace period nothing goes: a run elsewhere may be mid-way.
    let text = ok(seqpipe(d, &store, "a", &["gc", "--store"]));
    assert!(
        text.contains("store: removed 0 artifact(s)") && text.contains("kept 2 unreferenced"),
        "{text}"
    );
    assert_eq!(whole_artifacts(&store), 6);

    let text = ok(seqpipe(d, &store, "a", &["gc", "--store", "--grace", "0s"]));
    assert!(
        text.contains("store: removed 2 artifact(s)") && text.contains("forgot 2 record(s)"),
        "{text}"
    );
    assert_eq!(whole_artifacts(&store), 4);

    // A new machine: the kept experiment is all hits; the pruned one
    // computes its own two stages again and shares the rest.
    ok(seqpipe(d, &store, "b", &["run", "p.toml", "--quiet"]));
    assert!(ran(d, "b").is_empty(), "{:?}", ran(d, "b"));
    ok(seqpipe(
        d,
        &store,
        "b",
        &[
            "run",
            "p.toml",
            "--quiet",
            "--set",
            "train.model=\"markov\"",
        ],
    ));
    assert_eq!(ran(d, "b"), ["train", "eval"]);
}

#[test]
fn gc_store_on_a_local_cache_says_what_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_seqpipe"))
        .args(["gc", "--store", "--cache"])
        .arg(dir.path().join("cache"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`gc --store` cleans an object-store cache"),
        "{err}"
    );
}

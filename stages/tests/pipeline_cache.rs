//! `[pipeline] cache`: a spec names its cache (a folder beside it, or a
//! store URL) for when neither `--cache` nor `SEQPIPE_CACHE` does.

use std::path::Path;
use std::process::{Command, Output};

mod common;

/// `seqpipe ARGS` in `dir` with no cache named on the command line or in
/// the environment unless `env` says so.
fn seqpipe(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_seqpipe"))
        .args(args)
        .current_dir(dir)
        .env_remove("SEQPIPE_CACHE")
        .env_remove("SEQPIPE_LOCAL_CACHE")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "seqpipe {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The stages the last run computed, as `show --json` reads them.
fn ran(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let mut args = vec!["show", "exp/p.toml", "--json"];
    args.extend_from_slice(extra);
    let show: serde_json::Value = serde_json::from_slice(&seqpipe(dir, &args, env).stdout).unwrap();
    show["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["outcome"] == "ran")
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

fn write_spec(dir: &Path, cache: &str) {
    std::fs::create_dir_all(dir.join("exp")).unwrap();
    let spec = common::small_spec("named_cache", &format!("cache = \"{cache}\""));
    std::fs::write(dir.join("exp/p.toml"), spec).unwrap();
}

#[test]
fn a_spec_names_its_cache_folder_and_the_flag_or_environment_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_spec(d, "runs-cache");
    let run = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["run", "exp/p.toml", "--quiet"];
        args.extend_from_slice(extra);
        seqpipe(d, &args, env);
    };
    // The folder is the spec file's, wherever seqpipe is started.
    run(&[], &[]);
    assert!(d.join("exp/runs-cache/objects").is_dir());
    assert!(!d.join("cache").exists(), "the default folder is not used");
    assert_eq!(ran(d, &[], &[]).len(), 4);
    run(&[], &[]);
    assert!(
        ran(d, &[], &[]).is_empty(),
        "the rerun hits the spec's cache"
    );
    // `--cache` and SEQPIPE_CACHE win over the spec.
    run(&["--cache", "flag-cache"], &[]);
    assert!(d.join("flag-cache/objects").is_dir());
    assert_eq!(ran(d, &["--cache", "flag-cache"], &[]).len(), 4);
    run(&[], &[("SEQPIPE_CACHE", "env-cache")]);
    assert!(d.join("env-cache/objects").is_dir());
    assert_eq!(ran(d, &[], &[("SEQPIPE_CACHE", "env-cache")]).len(), 4);
}

#[test]
fn a_store_url_in_the_spec_is_shared_by_two_working_folders() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = d.join("store");
    std::fs::create_dir_all(&store).unwrap();
    write_spec(d, &format!("file://{}", store.display()));
    let on = |machine: &str| {
        seqpipe(
            d,
            &["run", "exp/p.toml", "--quiet", "--local-cache", machine],
            &[],
        );
        ran(d, &["--local-cache", machine], &[])
    };
    assert_eq!(on("machine-a").len(), 4);
    assert!(
        store.join("objects").is_dir(),
        "artifacts went to the store"
    );
    // Another working folder computes nothing: every stage is in the store.
    assert!(on("machine-b").is_empty());
    assert!(d.join("machine-b/objects").is_dir());
}

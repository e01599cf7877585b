//! seqpipe never deletes what is not its own: a folder is a cache only when
//! it carries the `SEQPIPE_CACHE.toml` marker (written when the cache is
//! made), is new or empty, or is an unmarked cache of an older seqpipe
//! (which a run marks, and `gc` refuses until then). An empty cache path
//! is a usage error rather than the current folder. Through the real binary.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{setup, small_spec};

fn seqpipe_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_seqpipe"));
    c.args(args).current_dir(dir).env_remove("SEQPIPE_CACHE");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// Every file under `dir` with its content, sorted.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut all: Vec<(String, Vec<u8>)> = walk(dir)
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().to_string();
            (rel, std::fs::read(&p).unwrap())
        })
        .collect();
    all.sort();
    all
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn gc_and_run_refuse_a_folder_that_is_not_a_cache_and_touch_nothing() {
    let (dir, _) = setup(&small_spec("marker", ""));
    let d = dir.path();
    let mine = d.join("mine");
    for (f, text) in [
        ("claims/x", "a claim"),
        ("objects/y", "an object"),
        ("tmp/z", "t"),
    ] {
        let path = mine.join(f);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let before = files(&mine);
    for args in [
        &["gc", "--cache", "mine"][..],
        &["--cache", "mine", "run", "p.toml", "--quiet"][..],
        &["status", "p.toml", "--cache", "mine"][..],
    ] {
        let out = seqpipe_in(d, args, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("mine is not a seqpipe cache")
                && err.contains("it holds claims/, objects/, tmp/")
                && err.contains("no SEQPIPE_CACHE.toml"),
            "{args:?}: {err}"
        );
        assert_eq!(files(&mine), before, "{args:?} changed the folder");
    }
    // SEQPIPE_CACHE is refused the same way.
    let out = seqpipe_in(d, &["gc"], &[("SEQPIPE_CACHE", "mine")]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(files(&mine), before);
}

/// Arguments and environment variables of one invocation.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);

#[test]
fn an_empty_cache_path_is_a_usage_error() {
    let (dir, _) = setup(&small_spec("marker", ""));
    let d = dir.path();
    let before = files(d);
    let cases: [Case<'_>; 5] = [
        (&["gc", "--cache", ""], &[]),
        (&["run", "p.toml", "--cache", ""], &[]),
        (&["gc"], &[("SEQPIPE_CACHE", "")]),
        (&["run", "p.toml"], &[("SEQPIPE_CACHE", "")]),
        (&["gc", "--local-cache", " "], &[]),
    ];
    for (args, env) in cases {
        let out = seqpipe_in(d, args, env);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {err}");
        assert!(
            err.contains("the cache cannot be an empty path"),
            "{args:?} {env:?}: {err}"
        );
        assert_eq!(files(d), before, "{args:?} {env:?} wrote into the folder");
    }
}

#[test]
fn a_new_cache_is_marked_and_an_older_one_is_adopted_by_a_run_not_by_gc() {
    let (dir, _) = setup(&small_spec("marker", ""));
    let d = dir.path();
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "p.toml", "--quiet", "--cache", "c"];
        args.extend_from_slice(extra);
        let out = seqpipe_in(d, &args, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[]);
    let marker = std::fs::read_to_string(d.join("c/SEQPIPE_CACHE.toml")).unwrap();
    assert!(marker.contains("seqpipe_cache = 1"), "{marker}");
    let tag = std::fs::read_to_string(d.join("c/CACHEDIR.TAG")).unwrap();
    assert!(tag.starts_with("Signature: 8a477f597d28d172789f06886806bc55"));
    let gc = seqpipe_in(d, &["gc", "--cache", "c"], &[]);
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );

    // A cache as an older seqpipe left it: no marker, no tag.
    std::fs::remove_file(d.join("c/SEQPIPE_CACHE.toml")).unwrap();
    std::fs::remove_file(d.join("c/CACHEDIR.TAG")).unwrap();
    let gc = seqpipe_in(d, &["gc", "--cache", "c"], &[]);
    let err = String::from_utf8_lossy(&gc.stderr);
    assert_eq!(gc.status.code(), Some(2), "{err}");
    assert!(
        err.contains("looks like a cache from an older seqpipe"),
        "{err}"
    );
    assert!(!d.join("c/SEQPIPE_CACHE.toml").exists());
    // A run uses it as it is (every stage a hit) and marks it; gc then works.
    run(&[]);
    let out = seqpipe_in(d, &["show", "p.toml", "--json", "--cache", "c"], &[]);
    let manifest: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(manifest["stages"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["outcome"] == "cached"));
    assert!(d.join("c/SEQPIPE_CACHE.toml").is_file());
    let gc = seqpipe_in(d, &["gc", "--cache", "c"], &[]);
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
}

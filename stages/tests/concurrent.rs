//! Two `seqpipe run` processes and a `seqpipe gc` on one cache: the runs
//! share it (the second waits only for the stage the first is computing,
//! saying so, and then finds it cached), `gc` waits for both (or fails at
//! once with `--no-wait`), nothing is corrupted, gc removes nothing a run
//! needs, and every stage is computed once.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{command, ran, run_ok, seqpipe, setup, spawn_run};
const SPEC: &str = r#"
[pipeline]
name = "together"
seed = 3
device = "cpu"

[stages.synth]
kind = "synth"
params = { users = 600, items = 80, min_len = 5, max_len = 20 }

[stages.sequences]
kind = "sequences"
inputs = { events = "synth.events" }

[stages.train_sasrec]
kind = "train"
inputs = { data = "sequences.data" }
params = { model = "sasrec", dim = 16, layers = 1, heads = 1, epochs = 40, max_len = 16 }

[stages.eval_sasrec]
kind = "evaluate"
inputs = { model = "train_sasrec.model", data = "sequences.data" }
"#;

/// Whether some stage key's checkpoint folder holds a training checkpoint.
fn has_epoch_checkpoint(d: &Path) -> bool {
    let Ok(keys) = std::fs::read_dir(d.join("cache/checkpoints")) else {
        return false;
    };
    keys.flatten()
        .any(|key| key.path().join("checkpoint.json").exists())
}

/// Stage name → how many of the pipeline's recorded runs computed it.
fn times_computed(d: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for entry in std::fs::read_dir(d.join("cache/runs/together")).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() == "latest.json" {
            continue;
        }
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for stage in manifest["stages"].as_array().unwrap() {
            let n = counts
                .entry(stage["name"].as_str().unwrap().to_string())
                .or_insert(0);
            if stage["outcome"] == "ran" {
                *n += 1;
            }
        }
    }
    counts
}

#[test]
fn two_runs_share_the_cache_computing_each_stage_once_and_gc_waits_for_both() {
    let (dir, _) = setup(SPEC);
    let d = dir.path();
    let first = spawn_run(d, &[]);
    // The first run is training once it has written an epoch checkpoint.
    // (Not merely once a checkpoint folder exists: every computed stage
    // gets one, so `synth`'s would let the second run start too early and
    // wait for `sequences` instead.)
    let deadline = Instant::now() + Duration::from_secs(120);
    while !has_epoch_checkpoint(d) {
        assert!(
            Instant::now() < deadline,
            "the first run never started training"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    // gc needs the cache to itself: refused at once with --no-wait…
    let refused = seqpipe(d, &["--no-wait", "gc"]);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("in use by another seqpipe process"), "{err}");

    // …while a second run goes ahead beside the first.
    let second = spawn_run(d, &[]);
    let gc = command(d, &["gc"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = first.wait_with_output().unwrap();
    let second = second.wait_with_output().unwrap();
    let gc = gc.wait_with_output().unwrap();
    for (what, out) in [("first", &first), ("second", &second), ("gc", &gc)] {
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        String::from_utf8_lossy(&gc.stderr).contains("waiting for the cache lock"),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    let waited = String::from_utf8_lossy(&second.stderr);
    assert!(
        waited.contains("waiting for `train_sasrec`: another run is computing it"),
        "{waited}"
    );

    // Between them the two runs computed every stage exactly once.
    let counts = times_computed(d);
    assert_eq!(counts.len(), 4, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    // Every artifact verifies and gc removed nothing: a rerun is all hits.
    run_ok(d, &[]);
    assert!(ran(d).is_empty());
    let gc = seqpipe(d, &["gc"]);
    assert!(gc.status.success());
    assert!(String::from_utf8_lossy(&gc.stdout).starts_with("removed 0 artifact(s)"));
}

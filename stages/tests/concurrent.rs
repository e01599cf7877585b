//! Two `seqpipe run` processes and a `seqpipe gc` on one cache: the later
//! ones wait for the first (saying so), or fail at once with `--no-wait`;
//! nothing is corrupted, gc removes nothing a run needs, and the work is
//! done once.

mod common;

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
params = { users = 200, items = 80, min_len = 5, max_len = 20 }

[stages.sequences]
kind = "sequences"
inputs = { events = "synth.events" }

[stages.train_sasrec]
kind = "train"
inputs = { data = "sequences.data" }
params = { model = "sasrec", dim = 16, layers = 1, heads = 1, epochs = 6, max_len = 16 }

[stages.eval_sasrec]
kind = "evaluate"
inputs = { model = "train_sasrec.model", data = "sequences.data" }
"#;

#[test]
fn second_run_waits_or_fails_with_no_wait_and_the_cache_stays_sound() {
    let (dir, _) = setup(SPEC);
    let d = dir.path();
    let first = spawn_run(d, &[]);
    // The first run holds the lock once it has a sequences artifact to train on.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !d.join("cache/checkpoints").exists() {
        assert!(
            Instant::now() < deadline,
            "the first run never started training"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    let refused = seqpipe(d, &["--no-wait", "run", "p.toml", "--quiet"]);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("in use by another seqpipe process"), "{err}");

    let second = spawn_run(d, &[]);
    // …and a gc at the same time: it waits its turn too, and removes
    // nothing a run still needs.
    let gc = command(d, &["gc"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = first.wait_with_output().unwrap();
    let second = second.wait_with_output().unwrap();
    let gc = gc.wait_with_output().unwrap();
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    assert!(
        String::from_utf8_lossy(&gc.stderr).contains("waiting for the cache lock"),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let waited = String::from_utf8_lossy(&second.stderr);
    assert!(waited.contains("waiting for the cache lock"), "{waited}");

    // The second run found everything done by the first.
    assert!(ran(d).is_empty(), "the second run recomputed {:?}", ran(d));
    // Every artifact verifies: a forced re-verification run is all hits.
    run_ok(d, &[]);
    assert!(ran(d).is_empty());
    let gc = seqpipe(d, &["gc"]);
    assert!(gc.status.success());
    assert!(String::from_utf8_lossy(&gc.stdout).starts_with("removed 0 artifact(s)"));
}

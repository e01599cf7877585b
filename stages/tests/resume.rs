//! A `seqpipe run` killed with SIGKILL in the middle of SASRec training is
//! resumed by the next run from its last completed epoch, and ends with the
//! same artifact hashes (bit for bit, on CPU) as a run never interrupted.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{output_hashes, ran, run_ok, setup, spawn_run, stage_record};

const EPOCHS: usize = 12;

fn spec() -> String {
    format!(
        r#"
[pipeline]
name = "resume"
seed = 11
device = "cpu"

[stages.synth]
kind = "synth"
params = {{ users = 400, items = 150, min_len = 10, max_len = 30 }}

[stages.sequences]
kind = "sequences"
inputs = {{ events = "synth.events" }}

[stages.train_sasrec]
kind = "train"
inputs = {{ data = "sequences.data" }}
params = {{ model = "sasrec", dim = 32, layers = 1, heads = 2, epochs = {EPOCHS}, max_len = 20 }}

[stages.eval_sasrec]
kind = "evaluate"
inputs = {{ model = "train_sasrec.model", data = "sequences.data" }}
"#
    )
}

/// Epochs in the (single) training checkpoint under `dir/cache`, 0 if none.
fn checkpointed_epochs(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir.join("cache/checkpoints")) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("checkpoint.json")).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .filter_map(|v| v["epochs_done"].as_u64())
        .max()
        .unwrap_or(0) as usize
}

#[test]
fn sigkill_during_training_resumes_to_identical_hashes() {
    let spec = spec();

    // The reference: one uninterrupted run.
    let (reference, _) = setup(&spec);
    run_ok(reference.path(), &[]);
    let expected = output_hashes(reference.path());

    // Kill a second run once two epochs are checkpointed.
    let (killed, _) = setup(&spec);
    let d = killed.path();
    let mut child = spawn_run(d, &[]);
    let deadline = Instant::now() + Duration::from_secs(300);
    while checkpointed_epochs(d) < 2 {
        assert!(Instant::now() < deadline, "no checkpoint after 300 s");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let at_kill = checkpointed_epochs(d);
    assert!(
        at_kill < EPOCHS,
        "training finished before the kill; the test needs more epochs"
    );

    // The worker died with its parent: no epoch is added after the kill.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        checkpointed_epochs(d),
        at_kill,
        "the training worker outlived the killed run"
    );

    // The rerun resumes after the last checkpointed epoch…
    run_ok(d, &[]);
    assert_eq!(ran(d), ["train_sasrec", "eval_sasrec"]);
    let train = stage_record(d, "train_sasrec");
    assert_eq!(
        train["notes"]["resumed_after_epoch"],
        at_kill.to_string(),
        "{train}"
    );
    // …and ends where the uninterrupted run did, bit for bit.
    assert_eq!(output_hashes(d), expected);
    // A finished stage leaves no checkpoint behind.
    assert_eq!(checkpointed_epochs(d), 0);
}

//! The lock file and `seqpipe verify` through the real binary: a complete
//! run writes `<spec>.lock`; `status` explains every difference from it;
//! `verify` recomputes stages bit for bit (SASRec included, on CPU) and
//! catches a stage that does not reproduce; `--jobs` does not change a
//! single output byte.

mod common;

use std::path::Path;

use common::{run_ok, seqpipe, setup};

const SPEC: &str = r#"
[pipeline]
name = "lv"
seed = 4
device = "cpu"

[stages.synth]
kind = "synth"
params = { users = 150, items = 60, min_len = 6, max_len = 12 }

[stages.sequences]
kind = "sequences"
inputs = { events = "synth.events" }

[stages.train_markov]
kind = "train"
inputs = { data = "sequences.data" }
params = { model = "markov" }

[stages.train_sasrec]
kind = "train"
inputs = { data = "sequences.data" }
params = { model = "sasrec", dim = 16, layers = 1, heads = 1, max_len = 12, epochs = 2 }

[stages.eval_sasrec]
kind = "evaluate"
inputs = { model = "train_sasrec.model", data = "sequences.data" }
params = { k = [10], bootstrap = 20 }
"#;

fn status(dir: &Path) -> serde_json::Value {
    let out = seqpipe(dir, &["status", "p.toml", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn lock_of(dir: &Path, stage: &str) -> String {
    status(dir)
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == stage)
        .unwrap()["lock"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_complete_run_writes_the_lock_and_status_explains_differences() {
    let (dir, spec) = setup(SPEC);
    let d = dir.path();
    run_ok(d, &[]);
    let lock_path = d.join("p.lock");
    let locked = std::fs::read_to_string(&lock_path).unwrap();
    assert!(status(d)
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["lock"] == "matches"));

    // An experiment with --set leaves the lock alone.
    run_ok(d, &["--set", "train_sasrec.epochs=1"]);
    assert_eq!(std::fs::read_to_string(&lock_path).unwrap(), locked);

    // Editing the spec: the stage names its change, its dependants wait.
    std::fs::write(&spec, SPEC.replace("epochs = 2", "epochs = 3")).unwrap();
    assert_eq!(
        lock_of(d, "train_sasrec"),
        "differs from the lock: params.epochs 2 → 3"
    );
    assert!(lock_of(d, "eval_sasrec").contains("waits on input `model` from `train_sasrec`"));
    assert_eq!(lock_of(d, "train_markov"), "matches");

    // A colleague's lock with other bytes for the same key: not reproduced.
    std::fs::write(&spec, SPEC).unwrap();
    let mut lock: serde_json::Value = serde_json::from_str(&locked).unwrap();
    lock["stages"]["synth"]["outputs"]["events"] = "0".repeat(64).into();
    std::fs::write(&lock_path, serde_json::to_string(&lock).unwrap()).unwrap();
    let synth = lock_of(d, "synth");
    assert!(
        synth.starts_with("same key as the lock, different bytes: events 000000000000 → "),
        "{synth}"
    );

    // The next complete run of the spec as written rewrites it.
    run_ok(d, &[]);
    assert_eq!(std::fs::read_to_string(&lock_path).unwrap(), locked);
}

#[test]
fn verify_reproduces_every_stage_and_catches_one_that_does_not() {
    let spec = format!(
        "{SPEC}
[stages.clock]
kind = \"command\"
shell = true
cmd = \"date +%s%N > {{outputs.now}}/now.txt\"
outputs = {{ now = \"dir\" }}
"
    );
    let (dir, _) = setup(&spec);
    let d = dir.path();
    run_ok(d, &[]);
    let out = seqpipe(d, &["verify", "p.toml", "--json"]);
    let verdicts: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the clock stage cannot reproduce"
    );
    for v in verdicts.as_array().unwrap() {
        let expected = if v["stage"] == "clock" {
            "differs"
        } else {
            "identical"
        };
        assert_eq!(v["verdict"], expected, "{v}");
    }
    assert_eq!(verdicts.as_array().unwrap().len(), 6);
    let clock = verdicts
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["stage"] == "clock")
        .unwrap();
    assert!(
        clock["detail"].as_str().unwrap().starts_with("now: "),
        "{clock}"
    );

    // One stage alone; nothing was published by verifying.
    let objects = std::fs::read_dir(d.join("cache/objects")).unwrap().count();
    let out = seqpipe(d, &["verify", "p.toml", "train_sasrec", "--quiet"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("bit for bit"));
    assert_eq!(
        std::fs::read_dir(d.join("cache/objects")).unwrap().count(),
        objects
    );
}

#[test]
fn jobs_do_not_change_any_output() {
    let (one, _) = setup(SPEC);
    let (four, _) = setup(SPEC);
    run_ok(one.path(), &["--jobs", "1"]);
    run_ok(four.path(), &["--jobs", "4"]);
    let a = std::fs::read_to_string(one.path().join("p.lock")).unwrap();
    let b = std::fs::read_to_string(four.path().join("p.lock")).unwrap();
    assert_eq!(a, b, "the lock files (every key and output hash) differ");
}

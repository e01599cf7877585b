//! End-to-end through the real `seqpipe` binary on tiny data: hits and
//! misses counted from the run manifest, `--set` reruns exactly the changed
//! stage and its dependants, a corrupted artifact is recomputed, and bad
//! specs fail with exit code 2 before anything runs.

mod common;

use std::path::PathBuf;

use common::{outcomes, ran, run_ok, seqpipe, setup};

const SPEC: &str = r#"
[pipeline]
name = "tiny"
seed = 7
device = "cpu"

[stages.synth]
kind = "synth"
params = { users = 60, items = 40, min_len = 5, max_len = 12 }

[stages.sequences]
kind = "sequences"
inputs = { events = "synth.events" }

[stages.train_pop]
kind = "train"
inputs = { data = "sequences.data" }
params = { model = "pop" }

[stages.train_sasrec]
kind = "train"
inputs = { data = "sequences.data" }
params = { model = "sasrec", dim = 16, layers = 1, heads = 1, epochs = 2, max_len = 12 }

[stages.eval_pop]
kind = "evaluate"
inputs = { model = "train_pop.model", data = "sequences.data" }

[stages.eval_sasrec]
kind = "evaluate"
inputs = { model = "train_sasrec.model", data = "sequences.data" }

[stages.report]
kind = "report"
inputs = { pop = "eval_pop.metrics", sasrec = "eval_sasrec.metrics" }
"#;

#[test]
fn rerun_hits_set_reruns_dependants_and_corruption_is_recomputed() {
    let (dir, _) = setup(SPEC);
    let d = dir.path();
    run_ok(d, &[]);
    assert_eq!(ran(d).len(), 7, "first run computes everything");

    run_ok(d, &[]);
    assert!(
        ran(d).is_empty(),
        "second run is all hits: {:?}",
        outcomes(d)
    );

    // status explains a param change before running it
    let out = seqpipe(
        d,
        &[
            "status",
            "p.toml",
            "--json",
            "--set",
            "train_sasrec.lr=0.003",
        ],
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sasrec = status
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "train_sasrec")
        .unwrap();
    assert_eq!(sasrec["state"], "stale");
    assert_eq!(sasrec["why"], "params.lr 0.001 → 0.003");

    run_ok(d, &["--set", "train_sasrec.lr=0.003"]);
    assert_eq!(ran(d), ["train_sasrec", "eval_sasrec", "report"]);

    // Corrupt the pop model's artifact: detected and recomputed; the same
    // bytes come back, so nothing downstream reruns (early cutoff).
    let show = seqpipe(d, &["show", "p.toml", "train_pop", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    let stage = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "train_pop")
        .unwrap();
    let path = PathBuf::from(stage["artifacts"]["model"]["path"].as_str().unwrap())
        .join("model.safetensors");
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&path, perms).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    run_ok(d, &["--set", "train_sasrec.lr=0.003"]);
    assert_eq!(ran(d), ["train_pop"]);
}

#[test]
fn malformed_specs_exit_2_naming_file_line_and_key() {
    let base = SPEC;
    let cases: Vec<(String, &str)> = vec![
        (
            base.replace("kind = \"synth\"", "kind = \"synht\""),
            "did you mean `synth`",
        ),
        (
            base.replace("users = 60", "userz = 60"),
            "unknown param `userz`",
        ),
        (
            base.replace("users = 60", "users = \"many\""),
            "stages.synth.params.users",
        ),
        (
            base.replace("\"synth.events\"", "\"synth.evnts\""),
            "has no output `evnts`",
        ),
        (
            base.replace("\"synth.events\"", "\"nosuch.events\""),
            "there is no stage `nosuch`",
        ),
        (
            base.replace("\"synth.events\"", "\"synthevents\""),
            "not an input reference",
        ),
        (
            base.replace("inputs = { events = \"synth.events\" }", ""),
            "needs input `events`",
        ),
        (
            base.replace("\"train_pop.model\", data", "\"sequences.data\", data"),
            "is a `sequences` artifact",
        ),
        (
            base.replace("seed = 7", "seed = 7\nseed = 8"),
            "duplicate key",
        ),
        (
            base.replace(
                "[stages.synth]\nkind",
                "[stages.synth]\ninputs = { x = \"report.report\" }\nkind",
            ),
            "has no input `x`",
        ),
        (
            base.replace("device = \"cpu\"", "device = \"tpu\""),
            "unknown device",
        ),
        (
            base.replace("name = \"tiny\"", "name = 5"),
            "p.toml:3:8: name: invalid type",
        ),
        (
            base.replace("[stages.sequences]", "[stages.sequences\n"),
            "p.toml:",
        ),
        (
            base.replace("kind = \"sequences\"", "kind = \"sequences\"\ncolour = 1"),
            "colour",
        ),
        (base.replace("seed = 7", "seed = -1"), "seed"),
        (
            base.replace(
                "params = { model = \"pop\" }",
                "params = { model = \"pop\", lrr = 1 }",
            ),
            "unknown param `lrr`",
        ),
        ("[pipeline]\nname = \"x\"\n".to_string(), "no stages"),
        (
            base.replace("model = \"pop\"", "model = \"sasrek\""),
            "unknown model \"sasrek\"",
        ),
        (
            base.replace("heads = 1, epochs", "heads = 3, epochs"),
            "heads: 3 does not divide dim 16",
        ),
        (
            base.replace(
                "[stages.eval_pop]",
                "[stages.synth]\nkind = \"synth\"\n\n[stages.eval_pop]",
            ),
            "duplicate key",
        ),
    ];
    for (spec, needle) in cases {
        let (dir, _) = setup(&spec);
        let out = seqpipe(dir.path(), &["run", "p.toml", "--quiet"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "expected exit 2 for {needle:?}: {err}"
        );
        assert!(err.contains(needle), "{needle:?} not in: {err}");
        assert!(err.contains("p.toml:"), "no file location in: {err}");
        assert!(
            !dir.path().join("cache/objects").exists()
                || std::fs::read_dir(dir.path().join("cache/objects"))
                    .unwrap()
                    .next()
                    .is_none(),
            "nothing may be cached"
        );
    }
}

//! `seqpipe sweep` through the real binary: trials share the data stages,
//! trials a key cannot tell apart run once, the leaderboard is sorted by the
//! selection metric read from the evaluation's metrics.json, the best trial
//! is written as a pipeline that reproduces it from the cache, and a rerun
//! of the whole sweep computes nothing.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{seqpipe, setup};

const SPEC: &str = r#"
[pipeline]
name = "sw"
seed = 9

[stages.synth]
kind = "synth"
params = { users = 300, items = 80, min_len = 6, max_len = 15 }

[stages.sequences]
kind = "sequences"
inputs = { events = "synth.events" }

[stages.train]
kind = "train"
inputs = { data = "sequences.data" }
params = { model = "pop" }

[stages.eval]
kind = "evaluate"
inputs = { model = "train.model", data = "sequences.data" }
params = { k = [10], bootstrap = 0 }

[sweep]
metric = "eval.valid.ndcg@10"

[sweep.grid]
"train.model" = ["pop", "markov"]
"train.lr" = [1e-3, 1e-2]
"#;

/// How often each stage ran ("ran", not cached) over every recorded run.
fn executions(dir: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for entry in std::fs::read_dir(dir.join("cache/runs/sw"))
        .unwrap()
        .flatten()
    {
        if entry.file_name() == "latest.json" {
            continue;
        }
        let run: serde_json::Value =
            serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
        for s in run["stages"].as_array().unwrap() {
            if s["outcome"] == "ran" {
                *counts
                    .entry(s["name"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
        }
    }
    counts
}

fn sweep(dir: &Path) -> String {
    let out = seqpipe(dir, &["sweep", "p.toml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn a_sweep_shares_data_stages_dedups_trials_and_writes_the_best() {
    let (dir, _) = setup(SPEC);
    let d = dir.path();
    let stdout = sweep(d);

    // 4 trials, 2 distinct: lr is not in pop's or markov's key.
    let counts = executions(d);
    assert_eq!(counts["synth"], 1, "{counts:?}");
    assert_eq!(counts["sequences"], 1, "{counts:?}");
    assert_eq!(counts["train"], 2, "{counts:?}");
    assert_eq!(counts["eval"], 2, "{counts:?}");
    assert!(stdout.contains("same as trial"), "{stdout}");

    // The CSV: one line per trial, best first; markov wins on synth data.
    let csv = std::fs::read_to_string(d.join("cache/sweeps/sw/leaderboard.csv")).unwrap();
    let lines: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    let header = &lines[0];
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    assert_eq!(lines.len(), 5, "{csv}");
    let model = col("train.model");
    let metric = col("eval.valid.ndcg@10");
    assert_eq!(lines[1][model], "markov", "{csv}");
    assert_eq!(lines[4][model], "pop", "{csv}");
    let best: f64 = lines[1][metric].parse().unwrap();
    let worst: f64 = lines[4][metric].parse().unwrap();
    assert!(best > worst, "{csv}");
    assert!(
        csv.contains("hr@10"),
        "the numbers beside the metric: {csv}"
    );

    // The best trial as a pipeline: runs from the cache, same number.
    let best_spec = std::fs::read_to_string(d.join("p.best.toml")).unwrap();
    assert!(best_spec.contains("model = \"markov\""), "{best_spec}");
    assert!(!best_spec.contains("[sweep"), "{best_spec}");
    let out = seqpipe(d, &["run", "p.best.toml", "--quiet"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let show = seqpipe(d, &["show", "p.best.toml", "--json"]);
    let manifest: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    let stages = manifest["stages"].as_array().unwrap();
    assert!(
        stages.iter().all(|s| s["outcome"] == "cached"),
        "{manifest}"
    );
    let eval = stages.iter().find(|s| s["name"] == "eval").unwrap();
    let path = eval["artifacts"]["metrics"]["path"].as_str().unwrap();
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(Path::new(path).join("metrics.json")).unwrap())
            .unwrap();
    assert_eq!(metrics["valid"]["ndcg@10"].as_f64().unwrap(), best);

    // The whole sweep again: nothing runs.
    let before = executions(d);
    sweep(d);
    let after = executions(d);
    assert_eq!(before, after, "a rerun of the sweep computed something");
}

#[test]
fn bad_sweeps_exit_2_naming_the_key() {
    let cases = [
        (
            r#""train.lr" = [1e-3, 1e-2]"#,
            r#""train.lrr" = [1e-3]"#,
            "has no param `lrr`",
        ),
        (
            r#""train.lr" = [1e-3, 1e-2]"#,
            r#""trian.lr" = [1e-3]"#,
            "did you mean `train`?",
        ),
        (
            r#"metric = "eval.valid.ndcg@10""#,
            r#"metric = "train.valid.ndcg@10""#,
            "writes no `metrics` artifact",
        ),
    ];
    for (from, to, message) in cases {
        let (dir, _) = setup(&SPEC.replace(from, to));
        let out = seqpipe(dir.path(), &["sweep", "p.toml"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{to}: {stderr}");
        assert!(
            stderr.contains(message),
            "{to}: wanted {message:?} in {stderr}"
        );
        assert!(stderr.contains("p.toml:"), "{stderr}");
        assert!(
            !dir.path().join("cache/objects").exists(),
            "{to}: something ran"
        );
    }
    // `run` ignores the sweep; `sweep` without one is a clear error.
    let (dir, _) = setup(&SPEC[..SPEC.find("[sweep]").unwrap()]);
    let out = seqpipe(dir.path(), &["sweep", "p.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no [sweep] table"));
}

#[test]
fn sweeps_work_over_a_command_stage_s_params() {
    // score = -(n - 2)^2: best at n = 2.
    let spec = r#"
[pipeline]
name = "sw"

[stages.score]
kind = "command"
shell = true
cmd = "echo '{\"score\": '$(( -({params.n} - 2) * ({params.n} - 2) ))'}' > {outputs.m}/metrics.json"
outputs = { m = "metrics" }
params = { n = 0 }

[sweep]
metric = "score.score"

[sweep.grid]
"score.n" = [1, 2, 3, 4]
"#;
    let (dir, _) = setup(spec);
    let d = dir.path();
    sweep(d);
    let csv = std::fs::read_to_string(d.join("cache/sweeps/sw/leaderboard.csv")).unwrap();
    let best: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(&best[..6], ["1", "2", "2", "0", "2", "0"], "{csv}");
    let worst: Vec<&str> = csv.lines().nth(4).unwrap().split(',').collect();
    assert_eq!(&worst[4..6], ["4", "-4"], "{csv}");
    assert!(std::fs::read_to_string(d.join("p.best.toml"))
        .unwrap()
        .contains("n = 2"));
}

/// `--parallel 3`: trials that share a trained model (two evaluations of
/// it) run at the same time, and the model is still trained once; the
/// leaderboard is the sequential one.
#[test]
fn parallel_trials_compute_a_shared_stage_once_and_rank_as_sequential_ones() {
    let spec = SPEC
        .replace(
            "\"train.model\" = [\"pop\", \"markov\"]",
            "\"train.model\" = [\"pop\", \"markov\", \"itemknn\"]",
        )
        .replace(
            "\"train.lr\" = [1e-3, 1e-2]",
            "\"eval.k\" = [[10], [5, 10]]",
        );
    let (parallel_dir, _) = setup(&spec);
    let p = parallel_dir.path();
    let out = seqpipe(p, &["sweep", "p.toml", "--parallel", "3", "--quiet"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts = executions(p);
    assert_eq!(counts["synth"], 1, "{counts:?}");
    assert_eq!(counts["train"], 3, "one per model: {counts:?}");
    assert_eq!(counts["eval"], 6, "{counts:?}");

    let (sequential_dir, _) = setup(&spec);
    let s = sequential_dir.path();
    let out = seqpipe(s, &["sweep", "p.toml", "--quiet"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let board =
        |d: &Path| std::fs::read_to_string(d.join("cache/sweeps/sw/leaderboard.csv")).unwrap();
    // seconds differ; everything else is the same
    let strip = |csv: String| -> Vec<Vec<String>> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(csv.as_bytes());
        let rows: Vec<Vec<String>> = reader
            .records()
            .map(|r| r.unwrap().iter().map(String::from).collect())
            .collect();
        let secs = rows[0].iter().position(|h| h == "seconds").unwrap();
        rows.into_iter()
            .map(|mut r| {
                r.remove(secs);
                r
            })
            .collect()
    };
    assert_eq!(strip(board(p)), strip(board(s)));
}

/// A `report` stage given the sweep's folder as its `sweep` input: one row
/// per distinct trial, best first.
#[test]
fn a_report_takes_a_whole_sweep_as_its_input() {
    let (dir, _) = setup(SPEC);
    let d = dir.path();
    sweep(d);
    let trials: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("cache/sweeps/sw/trials.json")).unwrap())
            .unwrap();
    let trials = trials.as_array().unwrap();
    assert_eq!(trials.len(), 2, "two distinct trials: {trials:?}");
    assert!(trials[0]["label"]
        .as_str()
        .unwrap()
        .contains("train.model=\"markov\""));

    std::fs::write(
        d.join("r.toml"),
        "[pipeline]\nname = \"sweep-report\"\n\n[stages.report]\nkind = \"report\"\n\
         inputs = { sweep = \"./cache/sweeps/sw\" }\nparams = { split = \"valid\", significance = \"\" }\n",
    )
    .unwrap();
    let out = seqpipe(d, &["run", "r.toml", "--quiet"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let show = seqpipe(d, &["show", "r.toml", "--json"]);
    let manifest: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    let path = manifest["stages"][0]["artifacts"]["report"]["path"]
        .as_str()
        .unwrap();
    let md = std::fs::read_to_string(Path::new(path).join("report.md")).unwrap();
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| trial")).collect();
    assert_eq!(rows.len(), 2, "{md}");
    assert!(
        rows[0].contains("markov") && rows[1].contains("pop"),
        "{md}"
    );
}

const HALVING: &str = r#"
[pipeline]
name = "sw"
seed = 9
device = "cpu"

[stages.synth]
kind = "synth"
params = { users = 300, items = 80, min_len = 6, max_len = 15 }

[stages.sequences]
kind = "sequences"
inputs = { events = "synth.events" }

[stages.train]
kind = "train"
inputs = { data = "sequences.data" }
params = { model = "gru4rec", dim = 16, layers = 1, max_len = 15, epochs = 3 }

[stages.eval]
kind = "evaluate"
inputs = { model = "train.model", data = "sequences.data" }
params = { k = [10], bootstrap = 0 }

[sweep]
metric = "eval.valid.ndcg@10"

[sweep.grid]
"train.lr" = [1e-4, 1e-3, 1e-2]
"train.dropout" = [0.0, 0.3]

[sweep.halving]
param = "train.epochs"
min = 1
eta = 3
"#;

/// Successive halving: 6 trials at 1 epoch, the best 2 go on to 3 epochs
/// from their 1-epoch checkpoints; the promoted winner's model is bit for
/// bit the one a plain 3-epoch training gives.
#[test]
fn successive_halving_promotes_the_best_third_and_continues_their_training() {
    let (dir, _) = setup(HALVING);
    let d = dir.path();
    sweep(d);
    let counts = executions(d);
    assert_eq!(counts["train"], 6 + 2, "{counts:?}");
    assert_eq!(counts["eval"], 6 + 2, "{counts:?}");
    assert_eq!(counts["synth"], 1, "{counts:?}");

    let csv = std::fs::read_to_string(d.join("cache/sweeps/sw/leaderboard.csv")).unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let header = reader.headers().unwrap().clone();
    let stopped = header.iter().position(|h| h == "stopped_at").unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    let stops: Vec<&str> = rows.iter().map(|r| &r[stopped]).collect();
    assert_eq!(stops, ["", "", "1", "1", "1", "1"], "{csv}");
    // the two promoted trainings resumed from their 1-epoch checkpoints
    let mut resumed = 0;
    for entry in std::fs::read_dir(d.join("cache/runs/sw"))
        .unwrap()
        .flatten()
    {
        if entry.file_name() == "latest.json" {
            continue;
        }
        let run: serde_json::Value =
            serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
        for st in run["stages"].as_array().unwrap() {
            if st["name"] == "train"
                && st["outcome"] == "ran"
                && st["notes"]["resumed_after_epoch"] == "1"
            {
                resumed += 1;
            }
        }
    }
    assert_eq!(
        resumed, 2,
        "the promoted trainings did not continue from epoch 1"
    );
    // no checkpoint is left behind
    let left: Vec<_> = std::fs::read_dir(d.join("cache/checkpoints"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // The winner, trained for 3 epochs from scratch in another cache:
    // the same model bytes as the promoted 1 + 2 epochs.
    let model_hash = |cache: &str, spec: &str| -> String {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_seqpipe"))
            .args(["--cache", cache, "show", spec, "train", "--json"])
            .current_dir(d)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["stages"][0]["artifacts"]["model"]["hash"].to_string()
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_seqpipe"))
        .args(["--cache", "fresh", "run", "p.best.toml", "--quiet"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let promoted = {
        let out = seqpipe(d, &["run", "p.best.toml", "--quiet"]);
        assert!(out.status.success());
        model_hash("cache", "p.best.toml")
    };
    assert_eq!(model_hash("fresh", "p.best.toml"), promoted);
}

/// Asynchronous halving (ASHA) with one slot: trials start in sweep order,
/// and a trial is promoted as soon as it is in the top ⌊n/eta⌋ of the n
/// finished at its rung — before the rung is complete. The promotions must
/// be exactly those the rule gives on the trials' first-rung metrics.
#[test]
fn asynchronous_halving_promotes_as_soon_as_a_trial_qualifies() {
    let spec = HALVING.replace("eta = 3\n", "eta = 3\nmode = \"async\"\n");
    let (dir, _) = setup(&spec);
    let d = dir.path();
    let out = seqpipe(d, &["sweep", "p.toml"]);
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{log}");

    // (trial id, first-rung metric, promoted?) from trials.json
    let trials: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("cache/sweeps/sw/trials.json")).unwrap())
            .unwrap();
    let mut first_rung: Vec<(u64, f64, bool)> = trials
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let rungs = t["rungs"].as_array().unwrap();
            assert_eq!(rungs[0][0], 1, "{t}");
            (
                t["trial"].as_u64().unwrap(),
                rungs[0][1].as_f64().unwrap(),
                rungs.len() == 2,
            )
        })
        .collect();
    first_rung.sort_by_key(|t| t.0);
    assert_eq!(first_rung.len(), 6);

    // The rule, replayed in finishing order (= trial order with one slot).
    let mut finished: Vec<(u64, f64)> = vec![];
    let mut promoted: Vec<u64> = vec![];
    for &(id, metric, _) in &first_rung {
        finished.push((id, metric));
        loop {
            let mut ranked = finished.clone();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let top = finished.len() / 3;
            match ranked[..top].iter().find(|(i, _)| !promoted.contains(i)) {
                Some(&(i, _)) => promoted.push(i),
                None => break,
            }
        }
    }
    let mut expected: Vec<u64> = promoted.clone();
    expected.sort_unstable();
    let actual: Vec<u64> = first_rung.iter().filter(|t| t.2).map(|t| t.0).collect();
    assert_eq!(actual, expected, "{log}");
    let counts = executions(d);
    assert_eq!(counts["train"], 6 + promoted.len(), "{counts:?}");

    // Asynchronous: the first promotion ran before the last new trial.
    let lines: Vec<&str> = log.lines().collect();
    let first_promotion = lines
        .iter()
        .position(|l| l.contains("at rung 2 of 2"))
        .unwrap();
    let last_start = lines
        .iter()
        .rposition(|l| l.contains("at rung 1 of 2"))
        .unwrap();
    assert!(first_promotion < last_start, "{log}");
    // every promoted training continued from its 1-epoch checkpoint
    let left: Vec<_> = std::fs::read_dir(d.join("cache/checkpoints"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

//! The temporal and ratio splits through the real binary: `sequences` with
//! sessions, then a model trained and evaluated on what it held out.

mod common;

use common::{artifact_dir, run_ok, setup};

const SPEC: &str = r#"
[pipeline]
name = "splits"
seed = 3
device = "cpu"

[stages.synth]
kind = "synth"
params = { users = 120, items = 60, min_len = 8, max_len = 20 }

[stages.temporal]
kind = "sequences"
inputs = { events = "synth.events" }
params = { split = "temporal", valid_share = 0.1, test_share = 0.2, session_gap = 1800, unit = "session", targets = "all" }

[stages.ratio]
kind = "sequences"
inputs = { events = "synth.events" }
params = { split = "ratio", targets = "one" }

[stages.markov]
kind = "train"
inputs = { data = "temporal.data" }
params = { model = "markov" }

[stages.eval]
kind = "evaluate"
inputs = { model = "markov.model", data = "temporal.data" }
params = { bootstrap = 0 }
"#;

fn meta(d: &std::path::Path, stage: &str) -> serde_json::Value {
    let dir = artifact_dir(d, stage, "data");
    serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap()
}

#[test]
fn temporal_sessions_and_ratio_splits_feed_training_and_evaluation() {
    let (dir, _) = setup(SPEC);
    let d = dir.path();
    run_ok(d, &[]);

    let t = meta(d, "temporal");
    assert_eq!(t["split"], "temporal");
    let detail = &t["split_detail"];
    assert_eq!(detail["unit"], "session");
    assert_eq!(detail["targets"], "all");
    let (valid_from, test_from) = (
        detail["valid_from"].as_i64().unwrap(),
        detail["test_from"].as_i64().unwrap(),
    );
    assert!(valid_from < test_from, "{detail}");
    // synth's sessions: pauses of up to an hour, so a 30-minute gap makes
    // more sessions than users
    assert!(detail["units"].as_u64().unwrap() > 120, "{detail}");

    let metrics: serde_json::Value = serde_json::from_slice(
        &std::fs::read(artifact_dir(d, "eval", "metrics").join("metrics.json")).unwrap(),
    )
    .unwrap();
    let examples = metrics["test"]["examples"].as_f64().unwrap();
    assert!(examples > 0.0);
    // markov learns synth's planted successors within sessions
    assert!(
        metrics["test"]["hr@10"].as_f64().unwrap() > 0.2,
        "{metrics}"
    );

    let r = meta(d, "ratio");
    assert_eq!(r["split"], "ratio");
    assert_eq!(r["split_detail"]["unit"], "user");
    // every user has 8+ events: none dropped, one test example each
    assert_eq!(r["split_detail"]["dropped_units"], 0);
    assert_eq!(r["num_users"], 120);
}

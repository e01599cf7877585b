//! evaluate's attention entropies through the real binary: a tiny SASRec's
//! `metrics.json` carries `attention` by history length (the breakdown's
//! buckets, the same example counts, entropies within their bounds), a
//! Markov chain's does not, sampled-only ranking keeps it under
//! `<split>_sampled`, and the report shows the table.

mod common;

use std::path::Path;

use common::{artifact_dir, run_ok, setup};
use serde_json::Value;

/// SASRec reads at most this many items.
const MAX_LEN: f64 = 20.0;
const LAYERS: usize = 2;

const SPEC: &str = r#"
[pipeline]
name = "attention"
seed = 3
device = "cpu"

[stages.synth]
kind = "synth"
params = { users = 120, items = 50, min_len = 3, max_len = 70 }

[stages.sequences]
kind = "sequences"
inputs = { events = "synth.events" }
params = { min_len = 3, max_len = 80 }

[stages.train_sasrec]
kind = "train"
inputs = { data = "sequences.data" }
params = { model = "sasrec", dim = 16, layers = 2, heads = 2, max_len = 20, epochs = 2 }

[stages.train_markov]
kind = "train"
inputs = { data = "sequences.data" }
params = { model = "markov" }

[stages.eval_sasrec]
kind = "evaluate"
inputs = { model = "train_sasrec.model", data = "sequences.data" }
params = { bootstrap = 0 }

[stages.eval_sasrec_sampled]
kind = "evaluate"
inputs = { model = "train_sasrec.model", data = "sequences.data" }
params = { bootstrap = 0, ranking = "sampled", negatives = 10, splits = ["test"] }

[stages.eval_markov]
kind = "evaluate"
inputs = { model = "train_markov.model", data = "sequences.data" }
params = { bootstrap = 0 }

[stages.report]
kind = "report"
inputs = { sasrec = "eval_sasrec.metrics", markov = "eval_markov.metrics" }
"#;

fn metrics(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("metrics.json")).unwrap()).unwrap()
}

/// The per-layer numbers of a bucket's `key`, all present.
fn layer_values(bucket: &Value, key: &str) -> Vec<f64> {
    let values = bucket[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} in {bucket}"));
    assert_eq!(values.len(), LAYERS, "{key} per layer: {bucket}");
    values
        .iter()
        .map(|v| {
            v.as_f64()
                .unwrap_or_else(|| panic!("{key} null in {bucket}"))
        })
        .collect()
}

/// Checks one split's `attention` against the split's breakdown; returns
/// its buckets.
fn check_attention(split: &Value) -> Vec<Value> {
    let a = &split["attention"];
    assert_eq!(a["layers"], LAYERS as u64, "{a}");
    let buckets = a["history_length"]
        .as_array()
        .expect("history_length")
        .clone();
    let labels: Vec<&str> = buckets
        .iter()
        .map(|b| b["bucket"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        ["<3", "3-9", "10-19", "20-49", "50-99", "100-199", ">=200"]
    );
    let total: u64 = buckets
        .iter()
        .map(|b| b["examples"].as_u64().unwrap())
        .sum();
    assert_eq!(total, split["examples"].as_u64().unwrap(), "{a}");
    for b in &buckets {
        if b["examples"].as_u64().unwrap() == 0 {
            continue;
        }
        let keys = b["keys"].as_f64().unwrap();
        assert!((1.0..=MAX_LEN).contains(&keys), "mean keys {keys}: {b}");
        for h in layer_values(b, "entropy") {
            assert!((0.0..=MAX_LEN.ln() + 1e-9).contains(&h), "H {h}: {b}");
            assert!(h <= keys.ln() + 1e-6, "H {h} above ln(mean keys): {b}");
        }
        if b["normalised_examples"].as_u64().unwrap() > 0 {
            for n in layer_values(b, "normalised_entropy") {
                assert!((0.0..=1.0 + 1e-9).contains(&n), "H/ln n {n}: {b}");
            }
        }
    }
    buckets
}

#[test]
fn attention_models_report_entropy_by_history_length() {
    let (dir, _) = setup(SPEC);
    let d = dir.path();
    run_ok(d, &[]);

    let sasrec = metrics(&artifact_dir(d, "eval_sasrec", "metrics"));
    for split in ["valid", "test"] {
        let buckets = check_attention(&sasrec[split]);
        // The same buckets as the HR/NDCG breakdown by history length.
        let breakdown = sasrec[split]["breakdown"]["history_length"]
            .as_array()
            .unwrap();
        for (a, b) in buckets.iter().zip(breakdown) {
            assert_eq!(a["bucket"], b["bucket"]);
            assert_eq!(a["examples"], b["examples"], "{split}: {a} vs {b}");
        }
        // Histories of 50+ items are cut to the model's 20.
        let long = &buckets[4];
        assert!(
            long["examples"].as_u64().unwrap() > 0,
            "no long history: {long}"
        );
        assert_eq!(long["keys"].as_f64(), Some(MAX_LEN), "{long}");
    }

    let sampled = metrics(&artifact_dir(d, "eval_sasrec_sampled", "metrics"));
    assert!(sampled.get("test").is_none(), "{sampled}");
    let buckets = check_attention(&sampled["test_sampled"]);
    assert_eq!(
        buckets,
        check_attention(&sasrec["test"]),
        "the diagnostic depends on the ranking"
    );

    let markov = metrics(&artifact_dir(d, "eval_markov", "metrics"));
    for split in ["valid", "test"] {
        assert!(markov[split].is_object(), "{markov}");
        assert!(
            markov[split].get("attention").is_none(),
            "markov has attention: {markov}"
        );
    }

    let report = artifact_dir(d, "report", "report");
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(
        md.contains("## Attention entropy by history length (sasrec)"),
        "{md}"
    );
    assert!(
        !md.contains("Attention entropy by history length (markov)"),
        "{md}"
    );
    assert!(md.contains("| history length | examples | n | layer 1 H | layer 1 H/ln n | layer 2 H | layer 2 H/ln n |"), "{md}");
    // The 50-99 row: its example count and, rounded, its first layer's H.
    let long = &check_attention(&sasrec["test"])[4];
    let row = format!(
        "| 50-99 | {} | 20.0 | {:.3} |",
        long["examples"],
        layer_values(long, "entropy")[0]
    );
    assert!(md.contains(&row), "no row {row} in {md}");
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    let section = html
        .split("<h2>Attention entropy by history length</h2>")
        .nth(1)
        .unwrap_or_else(|| panic!("no attention section in the HTML"));
    let section = section.split("<h2>").next().unwrap();
    assert!(section.contains("<h3>sasrec</h3>"));
    assert!(!section.contains("<h3>markov</h3>"));
    assert!(section.contains("<svg"), "no chart");
}

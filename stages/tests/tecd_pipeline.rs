//! `pipelines/tecd.toml` end to end through the real binary, shrunk with
//! `--set` (20 000 events, one or two epochs): T-ECD partitions → clean →
//! co-occurrence graph → InfoNCE embeddings → GRU4Rec and SASRec with and
//! without `init` → evaluation → a report holding every model and the
//! embedding map. (At its default size the pipeline is timed, not tested:
//! see docs/design.md.)

mod common;

use common::{artifact_dir, run_ok, setup, stage_record};

#[test]
fn the_tecd_pipeline_runs_end_to_end_with_initialised_models() {
    let spec = include_str!("../../pipelines/tecd.toml");
    let (dir, _) = setup(spec);
    let d = dir.path();
    let mut sets = vec![
        "data.events=20000".to_string(),
        "data.days=4".into(),
        "embed.epochs=2".into(),
    ];
    for stage in [
        "train_gru4rec",
        "train_gru4rec_init",
        "train_sasrec",
        "train_sasrec_init",
    ] {
        sets.push(format!("{stage}.epochs=1"));
    }
    let args: Vec<String> = sets
        .iter()
        .flat_map(|s| ["--set".to_string(), s.clone()])
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_ok(d, &args);

    // the initialised models say how many of their items the embeddings covered
    for stage in ["train_gru4rec_init", "train_sasrec_init"] {
        let record = stage_record(d, stage);
        let note = record["notes"]["init_items"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            note.contains(" of ") && note.contains('%'),
            "{stage}: {record}"
        );
    }
    assert!(stage_record(d, "train_gru4rec")["notes"]["init_items"].is_null());

    let report = artifact_dir(d, "report", "report");
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    for model in [
        "pop",
        "markov",
        "gru4rec",
        "gru4rec_init",
        "sasrec",
        "sasrec_init",
    ] {
        assert!(
            html.contains(&format!("<td>{model}</td>")),
            "{model} missing"
        );
    }
    assert!(html.contains("Item embeddings") && html.contains("Training curves"));
    assert!(html.contains("Significance against pop"));

    // Breakdowns by the target event's type and domain: every test example
    // is in exactly one bucket of each, and the report shows them.
    let metrics = artifact_dir(d, "eval_sasrec", "metrics");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(metrics.join("metrics.json")).unwrap()).unwrap();
    let examples = m["test"]["examples"].as_u64().unwrap();
    let b = &m["test"]["breakdown"];
    for key in [
        "target_event_type",
        "target_domain",
        "domain_transition",
        "domain_change",
    ] {
        let buckets = b[key]
            .as_array()
            .unwrap_or_else(|| panic!("no {key} in {b}"));
        let total: u64 = buckets
            .iter()
            .map(|x| x["examples"].as_u64().unwrap())
            .sum();
        assert_eq!(total, examples, "{key}");
    }
    let labels: Vec<&str> = b["domain_change"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["bucket"].as_str().unwrap())
        .collect();
    assert!(
        labels.iter().all(|l| *l == "same" || *l == "changed"),
        "{labels:?}"
    );
    assert!(html.contains("By target event_type") && html.contains("By domain change"));
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(
        md.contains("## By domain transition (previous → target)"),
        "{md}"
    );

    let graph = artifact_dir(d, "graph", "graph");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(graph.join("summary.json")).unwrap()).unwrap();
    assert!(summary.to_string().contains("co_purchase"), "{summary}");
}

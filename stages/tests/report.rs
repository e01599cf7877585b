//! The `report` stage on hand-written `metrics.json` files of fake models:
//! report.md / summary.txt as before, and a self-contained, well-formed
//! report.html with the table, confidence intervals, charts and breakdowns.

use std::path::{Path, PathBuf};

use seqpipe_stages::report::{write_report, Params};
use serde_json::json;

fn breakdown(scale: f64) -> serde_json::Value {
    json!({
        "k": 10,
        "long_tail": 50,
        "history_length": [
            {"bucket": "<5", "examples": 10, "hr@10": 0.1 * scale, "ndcg@10": 0.05 * scale},
            {"bucket": "5-19", "examples": 20, "hr@10": 0.2 * scale, "ndcg@10": 0.1 * scale},
            {"bucket": "20-49", "examples": 5, "hr@10": 0.3 * scale, "ndcg@10": 0.15 * scale},
            {"bucket": ">=50", "examples": 0, "hr@10": 0.0, "ndcg@10": 0.0},
        ],
        "target_popularity": [
            {"bucket": "tail (<50)", "examples": 25, "hr@10": 0.05 * scale, "ndcg@10": 0.02 * scale},
            {"bucket": "head (>=50)", "examples": 10, "hr@10": 0.4 * scale, "ndcg@10": 0.2 * scale},
        ],
    })
}

/// A metrics.json as evaluate (version 2) writes it, values scaled by `s`.
fn write_metrics(dir: &Path, model: &str, s: f64, with_ci: bool) -> PathBuf {
    let d = dir.join(model);
    std::fs::create_dir_all(&d).unwrap();
    let mut split = serde_json::Map::new();
    for k in [5usize, 10, 20] {
        let kf = k as f64;
        let vals = [
            ("hr", 0.02 * s * kf.sqrt()),
            ("ndcg", 0.01 * s * kf.sqrt()),
            ("mrr", 0.008 * s),
            ("precision", 0.02 * s * kf.sqrt() / kf),
            ("coverage", 0.1 * s),
            ("avg_pop", 100.0 / s),
        ];
        for (name, v) in vals {
            split.insert(format!("{name}@{k}"), json!(v));
            if with_ci && name != "coverage" {
                split.insert(format!("{name}@{k}_ci"), json!([v * 0.9, v * 1.1]));
            }
        }
    }
    split.insert("mrr".into(), json!(0.01 * s));
    split.insert("examples".into(), json!(35));
    if with_ci {
        split.insert("breakdown".into(), breakdown(s));
    }
    let v = json!({"model": model, "num_items": 100, "test": split, "valid": split});
    std::fs::write(
        d.join("metrics.json"),
        serde_json::to_vec_pretty(&v).unwrap(),
    )
    .unwrap();
    d
}

/// Checks that every non-void element is closed in order (a small XML-ish
/// well-formedness check of the page and its inline SVG).
fn assert_balanced(html: &str) {
    const VOID: [&str; 6] = ["meta", "br", "hr", "img", "link", "input"];
    let mut stack: Vec<String> = vec![];
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        rest = &rest[start + 1..];
        let end = rest.find('>').expect("unclosed <");
        let tag = &rest[..end];
        rest = &rest[end + 1..];
        if tag.starts_with('!') || tag.starts_with('?') {
            continue;
        }
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        assert!(!name.is_empty(), "empty tag <{tag}>");
        if let Some(closing) = tag.strip_prefix('/') {
            let _ = closing;
            let open = stack
                .pop()
                .unwrap_or_else(|| panic!("</{name}> with nothing open"));
            assert_eq!(open, name, "</{name}> closes <{open}>");
        } else if !tag.ends_with('/') && !VOID.contains(&name.as_str()) {
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "left open: {stack:?}");
}

#[test]
fn report_html_is_self_contained_and_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = vec![
        (
            "gru4rec".to_string(),
            write_metrics(tmp.path(), "gru4rec", 3.0, true),
        ),
        (
            "pop".to_string(),
            write_metrics(tmp.path(), "pop", 1.0, true),
        ),
        (
            "sasrec".to_string(),
            write_metrics(tmp.path(), "sasrec", 4.0, true),
        ),
    ];
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let p = Params::default();
    write_report(&p, &inputs, &out).unwrap();

    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| sasrec |") && md.contains("**"));
    assert!(std::fs::read_to_string(out.join("summary.txt"))
        .unwrap()
        .contains("gru4rec"));

    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(!html.contains("http"), "the page must fetch nothing");
    assert!(html.contains("<style>"));
    assert_balanced(&html);
    assert_eq!(html.matches("<svg").count(), 2, "bar chart and line plot");
    for model in ["gru4rec", "pop", "sasrec"] {
        assert!(html.contains(&format!("<td>{model}</td>")), "{model} row");
    }
    for c in &p.columns {
        assert!(html.contains(&format!("<th>{c}</th>")), "{c} column");
    }
    for c in ["precision@10", "coverage@10", "avg_pop@10"] {
        assert!(html.contains(&format!("<th>{c}</th>")), "{c} column");
    }
    // sasrec is best at hr@10: bold, with its interval; Δ against pop
    let hr10 = 0.02 * 4.0 * 10f64.sqrt();
    assert!(html.contains(&format!("<b>{hr10:.4}</b>")));
    assert!(html.contains(&format!("[{:.4}, {:.4}]", hr10 * 0.9, hr10 * 1.1)));
    assert!(html.contains("Δ +300.0%"), "sasrec vs pop is 4×");
    assert!(html.contains("Δ is relative to <b>pop</b>"));
    // breakdowns
    assert!(html.contains("By history length") && html.contains("By target popularity"));
    assert!(html.contains("&lt;5 HR@10") && html.contains("head (&gt;=50) NDCG@10"));
    // charts carry the model names
    assert!(html.contains("NDCG@10 and HR@10"));
    let svg = &html[html.find("<svg").unwrap()..];
    assert!(svg.contains(">sasrec<"), "bar label");
}

#[test]
fn report_reads_old_metrics_without_intervals_and_takes_baseline_param() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = vec![
        (
            "a".to_string(),
            write_metrics(tmp.path(), "markov", 2.0, false),
        ),
        (
            "b<c".to_string(),
            write_metrics(tmp.path(), "sasrec", 1.0, false),
        ),
    ];
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let p = Params {
        baseline: "b<c".into(),
        ..Params::default()
    };
    write_report(&p, &inputs, &out).unwrap();
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_balanced(&html);
    assert!(html.contains("<td>b&lt;c</td>") && !html.contains("<td>b<c</td>"));
    assert!(html.contains("Δ +100.0%"));
    assert!(!html.contains("class=\"ci\""), "no intervals in old files");
    assert!(!html.contains("Breakdowns"));
    assert!(!html.contains("http"));

    let bad = Params {
        baseline: "nope".into(),
        ..Params::default()
    };
    assert!(write_report(&bad, &inputs, &out).is_err());
    let wrong_split = Params {
        split: "train".into(),
        ..Params::default()
    };
    assert!(write_report(&wrong_split, &inputs, &out).is_err());
}

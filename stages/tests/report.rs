//! The `report` stage on hand-written `metrics.json` files of fake models:
//! report.md / summary.txt as before, and a self-contained, well-formed
//! report.html with the table, confidence intervals, charts and breakdowns;
//! with evaluate's `ranks.parquet` and `training.json` beside them, paired
//! significance tests, training curves and sampled against full ranking.

use std::path::{Path, PathBuf};

use std::sync::Arc;

use arrow::array::{Int64Array, StringArray};
use seqpipe_stages::report::{write_report, Params};
use seqpipe_stages::table;
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
    write_report(&p, &inputs, None, &out, 1).unwrap();

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
    write_report(&p, &inputs, None, &out, 1).unwrap();
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
    assert!(write_report(&bad, &inputs, None, &out, 1).is_err());
    let wrong_split = Params {
        split: "train".into(),
        ..Params::default()
    };
    assert!(write_report(&wrong_split, &inputs, None, &out, 1).is_err());
}

/// evaluate's ranks.parquet: `test` ranks per user, full (`rank`) and
/// sampled.
fn write_ranks(dir: &Path, ranks: &[(i64, i64, i64)]) {
    let n = ranks.len();
    table::write(
        &dir.join("ranks.parquet"),
        &table::batch(vec![
            ("split", Arc::new(StringArray::from(vec!["test"; n]))),
            (
                "user",
                Arc::new(Int64Array::from_iter_values(ranks.iter().map(|r| r.0))),
            ),
            ("target", Arc::new(Int64Array::from(vec![7; n]))),
            (
                "rank",
                Arc::new(Int64Array::from_iter_values(ranks.iter().map(|r| r.1))),
            ),
            (
                "sampled_rank",
                Arc::new(Int64Array::from_iter_values(ranks.iter().map(|r| r.2))),
            ),
        ])
        .unwrap(),
    )
    .unwrap();
}

/// Adds a `test_sampled` split (values × 3) to a metrics.json.
fn add_sampled(dir: &Path) {
    let path = dir.join("metrics.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut sampled = v["test"].clone();
    for (_, x) in sampled.as_object_mut().unwrap().iter_mut() {
        if let Some(f) = x.as_f64() {
            *x = json!(f * 3.0);
        }
    }
    v["test_sampled"] = sampled;
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
}

#[test]
fn report_tests_significance_draws_training_curves_and_compares_sampled_ranking() {
    let tmp = tempfile::tempdir().unwrap();
    let pop = write_metrics(tmp.path(), "pop", 1.0, true);
    let sasrec = write_metrics(tmp.path(), "sasrec", 4.0, true);
    let markov = write_metrics(tmp.path(), "markov", 1.1, true);
    // 40 users: sasrec ranks every target first, pop 50th, markov like pop
    // but first on one user.
    write_ranks(&pop, &(1..=40).map(|u| (u, 50, 5)).collect::<Vec<_>>());
    write_ranks(&sasrec, &(1..=40).map(|u| (u, 1, 1)).collect::<Vec<_>>());
    write_ranks(
        &markov,
        &(1..=40)
            .map(|u| (u, if u == 1 { 1 } else { 50 }, 5))
            .collect::<Vec<_>>(),
    );
    let curve = json!({"epochs": [
        {"epoch": 1, "train_loss": 6.5}, {"epoch": 2, "train_loss": 5.0}, {"epoch": 3, "train_loss": 4.2}
    ]});
    std::fs::write(sasrec.join("training.json"), curve.to_string()).unwrap();
    for d in [&pop, &sasrec, &markov] {
        add_sampled(d);
    }
    let inputs = vec![
        ("pop".to_string(), pop),
        ("sasrec".to_string(), sasrec),
        ("markov".to_string(), markov),
    ];
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let p = Params {
        permutations: 999,
        ..Params::default()
    };
    let embeddings = write_embeddings(tmp.path());
    write_report(&p, &inputs, Some(&embeddings), &out, 3).unwrap();

    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    // sasrec gains 1 NDCG@10 on each of 40 users: only the observed sign
    // assignment reaches the mean, p = 1 / 1000.
    assert!(
        md.contains("- sasrec: Δ +1.0000 over 40 examples, p = 0.0010 *"),
        "{md}"
    );
    // markov gains on one user only: half the flips reach it.
    let markov_line = md.lines().find(|l| l.starts_with("- markov")).unwrap();
    assert!(!markov_line.ends_with('*'), "{markov_line}");
    assert!(
        !md.contains("- pop:"),
        "no test of the baseline against itself"
    );

    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_balanced(&html);
    assert!(!html.contains("http"));
    assert!(html.contains("Significance against pop") && html.contains("<b>0.0010</b>"));
    assert!(html.contains("Training curves") && html.contains("train_loss per epoch"));
    assert_eq!(
        html.matches("<svg").count(),
        4,
        "bars, metric vs K, one curve, the embedding map"
    );
    let map = &html[html.find("Item embeddings").unwrap()..];
    assert!(
        map.contains("marketplace") && map.contains("retail"),
        "legend by domain"
    );
    assert!(html.contains("Sampled against full ranking"));
    assert!(html.contains("<td>3.00</td>"), "sampled is 3× full here");

    // the sampled split is a table of its own
    let sampled = Params {
        split: "test_sampled".into(),
        permutations: 99,
        ..Params::default()
    };
    write_report(&sampled, &inputs, None, &out, 3).unwrap();
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.starts_with("# Model comparison (test_sampled split, sampled ranking)"),
        "{md}"
    );
    assert!(md.contains("- sasrec: Δ"), "sampled ranks are tested too");
}

/// An `embed.infonce` output: 6 items in two domains, 3-d rows (row 0
/// padding).
fn write_embeddings(dir: &Path) -> PathBuf {
    let d = dir.join("embeddings");
    std::fs::create_dir_all(&d).unwrap();
    let mut values: Vec<f32> = vec![0.0; 3];
    for i in 0..6 {
        let x = i as f32;
        values.extend([x, 1.0 - x, if i < 3 { 1.0 } else { -1.0 }]);
    }
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![7, 3], &bytes).unwrap();
    let file = safetensors::serialize([("embeddings", view)], &None).unwrap();
    std::fs::write(d.join("embeddings.safetensors"), file).unwrap();
    let domains: Vec<&str> = (0..6)
        .map(|i| if i < 3 { "retail" } else { "marketplace" })
        .collect();
    table::write(
        &d.join("items.parquet"),
        &table::batch(vec![
            ("row", Arc::new(Int64Array::from_iter_values(1..=6))),
            ("item_id", Arc::new(Int64Array::from_iter_values(101..=106))),
            ("domain", Arc::new(StringArray::from(domains))),
        ])
        .unwrap(),
    )
    .unwrap();
    d
}

/// The page as a person sees it: headless Chromium (Debian's `chromium`,
/// which scripts/test.sh installs) parses it and renders it to a PNG
/// without errors. Without Chromium the test says why and passes, unless
/// SEQPIPE_REQUIRE_CHROMIUM is set (scripts/test.sh sets it once Chromium
/// is there), so CI cannot skip it silently.
#[test]
fn the_report_renders_in_headless_chromium() {
    let Some(chromium) = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
    else {
        assert!(
            std::env::var_os("SEQPIPE_REQUIRE_CHROMIUM").is_none(),
            "SEQPIPE_REQUIRE_CHROMIUM is set but no chromium runs"
        );
        eprintln!("skipped: no chromium on PATH (scripts/test.sh installs Debian's)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let inputs: Vec<(String, PathBuf)> = ["pop", "gru4rec", "sasrec"]
        .iter()
        .zip([1.0, 3.0, 4.0])
        .map(|(m, s)| (m.to_string(), write_metrics(tmp.path(), m, s, true)))
        .collect();
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    write_report(&Params::default(), &inputs, None, &out, 1).unwrap();
    let page = format!("file://{}", out.join("report.html").display());
    let headless = |extra: &[&str]| {
        let o = std::process::Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
            ])
            .arg(format!(
                "--user-data-dir={}",
                tmp.path().join("profile").display()
            ))
            .args(extra)
            .arg(&page)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o
    };
    // The DOM Chromium built holds every model row and both charts.
    let dom = String::from_utf8(headless(&["--dump-dom"]).stdout).unwrap();
    for model in ["pop", "gru4rec", "sasrec"] {
        assert!(
            dom.contains(&format!("<td>{model}</td>")),
            "{model} not rendered"
        );
    }
    assert_eq!(dom.matches("<svg").count(), 2, "charts not in the DOM");
    // The screenshot: a PNG of the asked size with real content.
    let png = tmp.path().join("report.png");
    headless(&[
        "--window-size=1200,1600",
        &format!("--screenshot={}", png.display()),
    ]);
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let dim = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    assert_eq!((dim(16), dim(20)), (1200, 1600));
    assert!(
        bytes.len() > 20_000,
        "a near-empty page: {} bytes",
        bytes.len()
    );
}

//! The report's breakdown tables: metrics by history length and target
//! popularity (always, from `evaluate`), and by the target event's
//! attributes when `sequences` recorded them (`attributes = [...]`): by
//! target value, by transition from the previous event's value, and same
//! vs changed (a cross-domain next item is "changed"); and, for attention
//! models, the attention entropy by history length (evaluate's
//! `attention`).

use serde_json::Value;

use super::{esc, ModelRow};

/// The breakdowns every evaluation has, with their headings.
const FIXED: [(&str, &str); 2] = [
    ("history_length", "By history length"),
    (
        "target_popularity",
        "By target popularity (long tail vs head)",
    ),
];

/// The HTML section (empty when no model has breakdowns).
pub(super) fn html(models: &[ModelRow]) -> String {
    let with: Vec<&ModelRow> = models
        .iter()
        .filter(|m| m.detail.breakdown.is_some())
        .collect();
    if with.is_empty() {
        return String::new();
    }
    let mut s = "<h2>Breakdowns</h2>\n".to_string();
    for (key, heading) in FIXED {
        s += &html_table(&with, key, heading);
    }
    for key in attribute_keys(&with) {
        s += &html_table(&with, &key, &heading(&key));
    }
    s
}

/// The attribute breakdowns as Markdown: one table per breakdown, a row
/// per bucket, NDCG@k and examples per model (empty when there are none).
pub(super) fn markdown(models: &[ModelRow]) -> String {
    let with: Vec<&ModelRow> = models
        .iter()
        .filter(|m| m.detail.breakdown.is_some())
        .collect();
    let mut s = String::new();
    for key in attribute_keys(&with) {
        let buckets = bucket_labels(&with, &key);
        let k = k_of(&with);
        s += &format!("\n## {} (NDCG@{k}, examples)\n\n| bucket |", heading(&key));
        for m in &with {
            s += &format!(" {} |", m.name);
        }
        s += "\n|---|";
        s += &"---:|".repeat(with.len());
        s += "\n";
        for b in &buckets {
            s += &format!("| {b} |");
            for m in &with {
                s += &match find_bucket(m, &key, b) {
                    Some(g) => format!(
                        " {:.4} ({}) |",
                        g[format!("ndcg@{k}").as_str()].as_f64().unwrap_or(0.0),
                        g["examples"].as_u64().unwrap_or(0)
                    ),
                    None => " - |".to_string(),
                };
            }
            s += "\n";
        }
    }
    s
}

/// Breakdown keys beyond the fixed ones, sorted (attribute breakdowns).
fn attribute_keys(models: &[&ModelRow]) -> Vec<String> {
    let mut keys: Vec<String> = models
        .iter()
        .filter_map(|m| m.detail.breakdown.as_ref()?.as_object().cloned())
        .flat_map(|o| {
            o.into_iter()
                .filter(|(k, v)| v.is_array() && !FIXED.iter().any(|f| f.0 == k))
                .map(|(k, _)| k)
                .collect::<Vec<_>>()
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// "target_event_type" → "By target event_type"; "domain_transition" →
/// "By domain transition (previous → target)"; "domain_change" → "By
/// domain change (same vs changed)".
fn heading(key: &str) -> String {
    if let Some(a) = key.strip_prefix("target_") {
        format!("By target {a}")
    } else if let Some(a) = key.strip_suffix("_transition") {
        format!("By {a} transition (previous → target)")
    } else if let Some(a) = key.strip_suffix("_change") {
        format!("By {a} change (same vs changed)")
    } else {
        format!("By {key}")
    }
}

/// Bucket labels of breakdown `key`, in the first model's order, then any
/// only later models have.
fn bucket_labels(models: &[&ModelRow], key: &str) -> Vec<String> {
    let mut labels: Vec<String> = vec![];
    for m in models {
        let groups = m
            .detail
            .breakdown
            .as_ref()
            .and_then(|b| b[key].as_array().cloned())
            .unwrap_or_default();
        for g in groups {
            if let Some(b) = g["bucket"].as_str() {
                if !labels.iter().any(|l| l == b) {
                    labels.push(b.to_string());
                }
            }
        }
    }
    labels
}

fn find_bucket(m: &ModelRow, key: &str, bucket: &str) -> Option<Value> {
    m.detail.breakdown.as_ref()?[key]
        .as_array()?
        .iter()
        .find(|g| g["bucket"].as_str() == Some(bucket))
        .cloned()
}

fn k_of(models: &[&ModelRow]) -> u64 {
    models
        .iter()
        .find_map(|m| m.detail.breakdown.as_ref()?["k"].as_u64())
        .unwrap_or(10)
}

/// One breakdown as an HTML table: a row per model, HR@k, NDCG@k and
/// examples per bucket (empty when no model has it).
fn html_table(models: &[&ModelRow], key: &str, heading: &str) -> String {
    let buckets = bucket_labels(models, key);
    if buckets.is_empty() {
        return String::new();
    }
    let k = k_of(models);
    let mut s = format!(
        "<h3>{}</h3>\n<table>\n<thead><tr><th>model</th>",
        esc(heading)
    );
    for b in &buckets {
        let b = esc(b);
        s += &format!("<th>{b} HR@{k}</th><th>{b} NDCG@{k}</th><th>{b} n</th>");
    }
    s += "</tr></thead>\n<tbody>\n";
    for m in models {
        s += &format!("<tr><td>{}</td>", esc(&m.name));
        for b in &buckets {
            match find_bucket(m, key, b) {
                Some(g) => {
                    let f = |name: String| {
                        g[name.as_str()]
                            .as_f64()
                            .map_or("-".into(), |v| format!("{v:.4}"))
                    };
                    s += &format!(
                        "<td>{}</td><td>{}</td><td>{}</td>",
                        f(format!("hr@{k}")),
                        f(format!("ndcg@{k}")),
                        g["examples"].as_u64().unwrap_or(0)
                    );
                }
                None => s += "<td>-</td><td>-</td><td>-</td>",
            }
        }
        s += "</tr>\n";
    }
    s += "</tbody>\n</table>\n";
    s
}

/// The heading of the attention tables.
const ATTENTION: &str = "Attention entropy by history length";

/// What the attention tables show, under their heading.
const ATTENTION_NOTE: &str = "Entropy H (nats) of the attention the query each model scores from \
    pays to the history — the last position; the appended [MASK] for BERT4Rec — averaged over heads, \
    per layer and history-length bucket; n is the mean number of keys (items within the model's \
    max_len, plus [MASK]). H/ln n divides each example's H by that of uniform attention over its \
    keys: 1 = uniform, 0 = all on one item (examples with one key are left out of it). Attention \
    that collapses on long histories shows as H/ln n falling with length.";

/// The models with evaluate's `attention` object, with its layer count and
/// buckets.
fn attention_models(models: &[ModelRow]) -> Vec<(&ModelRow, usize, Vec<Value>)> {
    models
        .iter()
        .filter_map(|m| {
            let a = m.attention.as_ref()?;
            let layers = a["layers"].as_u64()? as usize;
            let buckets = a["history_length"].as_array()?.clone();
            Some((m, layers, buckets))
        })
        .collect()
}

/// Entry `layer` of a bucket's per-layer array `key` ("-" when null).
fn layer_value(bucket: &Value, key: &str, layer: usize) -> String {
    bucket[key][layer]
        .as_f64()
        .map_or("-".into(), |v| format!("{v:.3}"))
}

/// A bucket's cells: examples, mean keys, then H and H/ln n per layer.
fn attention_cells(bucket: &Value, layers: usize) -> Vec<String> {
    let mut cells = vec![
        bucket["examples"].as_u64().unwrap_or(0).to_string(),
        bucket["keys"]
            .as_f64()
            .map_or("-".into(), |v| format!("{v:.1}")),
    ];
    for l in 0..layers {
        cells.push(layer_value(bucket, "entropy", l));
        cells.push(layer_value(bucket, "normalised_entropy", l));
    }
    cells
}

fn attention_header(layers: usize) -> Vec<String> {
    let mut h = vec!["history length".into(), "examples".into(), "n".into()];
    for l in 1..=layers {
        h.push(format!("layer {l} H"));
        h.push(format!("layer {l} H/ln n"));
    }
    h
}

/// The attention tables as Markdown, one per attention model (empty when
/// there is none).
pub(super) fn attention_markdown(models: &[ModelRow]) -> String {
    let mut s = String::new();
    for (m, layers, buckets) in attention_models(models) {
        let header = attention_header(layers);
        s += &format!("\n## {ATTENTION} ({})\n\n", m.name);
        s += &format!("| {} |\n|---|", header.join(" | "));
        s += &"---:|".repeat(header.len() - 1);
        s += "\n";
        for b in &buckets {
            let label = b["bucket"].as_str().unwrap_or("?");
            s += &format!("| {label} | {} |\n", attention_cells(b, layers).join(" | "));
        }
    }
    s
}

/// The attention section: a table per attention model and a chart of the
/// normalised entropy (empty when no model has attention).
pub(super) fn attention_html(models: &[ModelRow]) -> anyhow::Result<String> {
    let with = attention_models(models);
    if with.is_empty() {
        return Ok(String::new());
    }
    let mut s = format!(
        "<h2>{ATTENTION}</h2>\n<p class=\"note\">{}</p>\n",
        esc(ATTENTION_NOTE)
    );
    // The chart: H/ln n per (model, layer) against the bucket's index in
    // `labels`.
    let mut lines: Vec<(String, Vec<(usize, f64)>)> = vec![];
    let mut labels: Vec<String> = vec![];
    for (m, layers, buckets) in &with {
        s += &format!("<h3>{}</h3>\n<table>\n<thead><tr>", esc(&m.name));
        for h in attention_header(*layers) {
            s += &format!("<th>{}</th>", esc(&h));
        }
        s += "</tr></thead>\n<tbody>\n";
        let mut x = vec![];
        for b in buckets {
            let label = b["bucket"].as_str().unwrap_or("?");
            s += &format!("<tr><td>{}</td>", esc(label));
            for c in attention_cells(b, *layers) {
                s += &format!("<td>{c}</td>");
            }
            s += "</tr>\n";
            x.push(labels.iter().position(|l| l == label).unwrap_or_else(|| {
                labels.push(label.to_string());
                labels.len() - 1
            }));
        }
        s += "</tbody>\n</table>\n";
        for l in 0..*layers {
            let points = buckets
                .iter()
                .zip(&x)
                .filter_map(|(b, &i)| Some((i, b["normalised_entropy"][l].as_f64()?)))
                .collect();
            lines.push((format!("{} layer {}", m.name, l + 1), points));
        }
    }
    s += "<div class=\"chart\">";
    s += &super::charts::attention_chart(&labels, &lines)?;
    s += "</div>\n";
    Ok(s)
}

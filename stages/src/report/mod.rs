//! `report` — a model comparison from any number of `evaluate` outputs.
//!
//! Params (defaults): `split` ("test"; `test_sampled` for sampled ranking),
//! `columns` (["hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20",
//! "mrr@10"]), `baseline` (""): the row the relative differences and the
//! significance tests are taken against (empty: the row named `pop`, or
//! whose model is `pop`, else the first), `chart_k` (10: the cut-off of the
//! bar chart, or the nearest one evaluated), `significance` ("ndcg@10": the
//! per-example metric of the paired tests; "" = none), `permutations`
//! (10000 random sign flips per test, seeded by the pipeline seed).
//! Inputs: any number of `metrics` artifacts, each under the name the row
//! should have (e.g. `inputs = { sasrec = "eval_sasrec.metrics" }`), and
//! optionally `embeddings` (an `embed.infonce` output), drawn as a 2-D PCA
//! map of the items coloured by domain, and `sweep` (the folder `seqpipe
//! sweep` writes its leaderboard to, e.g. `"../cache/sweeps/sweep"`): every
//! distinct trial in its `trials.json` becomes a row named `trial N: <its
//! params>`, best first, beside any named inputs. The folder's content is
//! part of the key, so a report over a sweep reruns when the sweep changes.
//! Outputs: `report` (report: `report.md`, the table with the best value per
//! column in bold and the paired tests, `summary.txt`, the same table for
//! the terminal, which `seqpipe run` and `seqpipe show` print, and
//! `report.html`, one self-contained page — inline CSS and SVG, nothing
//! fetched — with the table (best in bold, relative Δ vs the baseline, 95 %
//! bootstrap intervals where evaluate computed them), the paired
//! significance tests, the beyond-accuracy metrics (precision, coverage,
//! popularity), a bar chart of NDCG@K and HR@K per model, metric-vs-K line
//! plots, sampled against full ranking when evaluate computed both, the
//! training curves of every model whose evaluation carries its
//! `training.json`, the breakdowns by history length and target
//! popularity, and — for attention models, from evaluate's `attention` —
//! the attention entropy by history length, a table per model (also in
//! `report.md`) and a chart of the normalised entropy).
//!
//! Significance: each model against the baseline with a paired sign-flip
//! test ([`crate::significance`]) on the per-example `significance` metric,
//! over the examples both ranked (evaluate's `ranks.parquet`); metrics
//! from before evaluate version 3 have no ranks and get no test.

mod breakdowns;
mod charts;
mod embedding_map;
mod paired;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use seqpipe::stage::{KindInfo, ParamDoc, Port, Resource, StageContext, TypedStage};
use serde::{Deserialize, Serialize};

use crate::evaluate::SplitDetail;
use crate::significance::PairedTest;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    pub split: String,
    pub columns: Vec<String>,
    pub baseline: String,
    pub chart_k: usize,
    pub significance: String,
    pub permutations: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            split: "test".into(),
            columns: [
                "hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr@10",
            ]
            .map(String::from)
            .to_vec(),
            baseline: String::new(),
            chart_k: 10,
            significance: "ndcg@10".into(),
            permutations: 10_000,
        }
    }
}

pub struct Report;

/// 2: report.html. 3: paired significance tests, training curves, sampled
/// against full ranking. 4: wide tables scroll inside the page; attribute
/// breakdowns (Markdown and HTML). 5: attention entropy by history length
/// (table and chart) for the models whose evaluation has an `attention`
/// object, so a report over such models gets new content.
pub const VERSION: u32 = 5;

impl TypedStage for Report {
    type Params = Params;

    fn info(&self) -> KindInfo {
        KindInfo {
            kind: "report",
            version: VERSION,
            summary: "Compares evaluated models in one table (Markdown, printed after the run) and an HTML page with charts and breakdowns.",
            inputs: vec![
                Port {
                    optional: true,
                    name: "embeddings",
                    ty: "embeddings",
                    doc: "item embeddings (embed.infonce) to draw as a 2-D map by domain",
                },
                Port {
                    optional: true,
                    name: "sweep",
                    ty: "path",
                    doc: "a sweep's output folder (trials.json): one row per trial",
                },
            ],
            extra_inputs: Some("metrics"),
            outputs: vec![Port {
                optional: false,
                name: "report",
                ty: "report",
                doc: "report.md, summary.txt and report.html",
            }],
            params: vec![
                ParamDoc {
                    name: "split",
                    doc: "which split's metrics to compare",
                },
                ParamDoc {
                    name: "columns",
                    doc: "metrics to show, in order",
                },
                ParamDoc {
                    name: "baseline",
                    doc: "row the relative differences are taken against (default: pop, else the first)",
                },
                ParamDoc {
                    name: "chart_k",
                    doc: "cut-off of the bar chart",
                },
                ParamDoc {
                    name: "significance",
                    doc: "per-example metric of the paired tests vs the baseline, e.g. ndcg@10 (\"\" = none)",
                },
                ParamDoc {
                    name: "permutations",
                    doc: "random sign flips per paired test",
                },
            ],
            resource: Resource::Cpu,
        }
    }

    fn validate(&self, p: &Params) -> Result<(), String> {
        if !p.significance.is_empty() && paired::parse_metric(&p.significance).is_none() {
            return Err(format!(
                "significance: {:?} is not a per-example rank metric (hr@K, ndcg@K, mrr@K, precision@K)",
                p.significance
            ));
        }
        if p.permutations == 0 {
            return Err("permutations: must be above 0".into());
        }
        Ok(())
    }

    fn run(&self, p: Params, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        let mut inputs: Vec<(String, PathBuf)> = ctx
            .inputs
            .iter()
            .filter(|(n, _)| !["embeddings", "sweep"].contains(&n.as_str()))
            .map(|(n, d)| (n.clone(), d.clone()))
            .collect();
        if let Some(dir) = ctx.optional_input("sweep") {
            inputs.extend(sweep_trials(dir)?);
        }
        let embeddings = ctx.optional_input("embeddings").map(Path::to_path_buf);
        let out = ctx.output("report")?.to_path_buf();
        write_report(&p, &inputs, embeddings.as_deref(), &out, ctx.seed)
    }
}

/// The stage's work: reads each (row name, metrics directory) and writes
/// report.md, summary.txt and report.html into `out`; `embeddings` (an
/// `embed.infonce` output) adds the item map; `seed` seeds the paired tests.
pub fn write_report(
    p: &Params,
    inputs: &[(String, PathBuf)],
    embeddings: Option<&Path>,
    out: &Path,
    seed: u64,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !inputs.is_empty(),
        "report needs at least one metrics input"
    );
    let mut rows = Vec::new();
    let mut models = Vec::new();
    for (name, dir) in inputs {
        let model = ModelRow::read(name, dir, &p.split)?;
        rows.push((
            name.clone(),
            p.columns
                .iter()
                .map(|c| model.detail.values.get(c).copied())
                .collect::<Vec<_>>(),
        ));
        models.push(model);
    }
    let base = baseline_index(p, &models)?;
    let tests = significance(p, &models, base, seed);
    let best = best_of(&rows, p.columns.len());
    let mut md = markdown(p, &rows, &best);
    md += &tests_markdown(p, &models, base, &tests);
    md += &breakdowns::markdown(&models);
    md += &breakdowns::attention_markdown(&models);
    std::fs::write(out.join("report.md"), md)?;
    std::fs::write(out.join("summary.txt"), plain(p, &rows, &best))?;
    let map = embeddings
        .map(|dir| embedding_map::map_svg(&embedding_map::read(dir)?))
        .transpose()?;
    std::fs::write(
        out.join("report.html"),
        html(p, &models, base, &tests, map.as_deref())?,
    )?;
    Ok(())
}

/// The rows of a sweep: (label, metrics folder) per trial in the folder's
/// `trials.json`, as `seqpipe sweep` wrote it.
pub fn sweep_trials(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let path = dir.join("trials.json");
    let text = std::fs::read(&path).map_err(|e| {
        anyhow::anyhow!(
            "sweep: {} cannot be read ({e}); give the folder `seqpipe sweep` wrote (its leaderboard.md is there)",
            path.display()
        )
    })?;
    let trials: Vec<serde_json::Value> = serde_json::from_slice(&text)
        .map_err(|e| anyhow::anyhow!("sweep: {} is not a trial list: {e}", path.display()))?;
    trials
        .iter()
        .map(|t| {
            let label = t["label"].as_str();
            let metrics = t["metrics"].as_str();
            match (label, metrics) {
                (Some(l), Some(m)) => Ok((l.to_string(), PathBuf::from(m))),
                _ => anyhow::bail!(
                    "sweep: {}: a trial without `label` and `metrics`: {t}",
                    path.display()
                ),
            }
        })
        .collect()
}

/// Per model, its paired test against the baseline (`None` for the
/// baseline itself, and where ranks are missing or the test is off).
fn significance(
    p: &Params,
    models: &[ModelRow],
    base: usize,
    seed: u64,
) -> Vec<Option<PairedTest>> {
    models
        .iter()
        .enumerate()
        .map(|(i, m)| {
            if i == base || p.significance.is_empty() {
                return None;
            }
            let (a, b) = (m.ranks.as_ref()?, models[base].ranks.as_ref()?);
            paired::compare(a, b, &p.significance, p.permutations, seed)
        })
        .collect()
}

/// The paired tests as Markdown lines under the table.
fn tests_markdown(
    p: &Params,
    models: &[ModelRow],
    base: usize,
    tests: &[Option<PairedTest>],
) -> String {
    if tests.iter().all(Option::is_none) {
        return String::new();
    }
    let mut s = format!(
        "\nPaired sign-flip tests of {} against **{}** ({} permutations; * = p < 0.05):\n\n",
        p.significance, models[base].name, p.permutations
    );
    for (m, t) in models.iter().zip(tests) {
        if let Some(t) = t {
            let star = if t.p_value < 0.05 { " *" } else { "" };
            s += &format!(
                "- {}: Δ {:+.4} over {} examples, p = {:.4}{star}\n",
                m.name, t.mean_diff, t.n, t.p_value
            );
        }
    }
    s
}

fn baseline_index(p: &Params, models: &[ModelRow]) -> anyhow::Result<usize> {
    if p.baseline.is_empty() {
        return Ok(models
            .iter()
            .position(|m| m.name == "pop")
            .or_else(|| models.iter().position(|m| m.model == "pop"))
            .unwrap_or(0));
    }
    models
        .iter()
        .position(|m| m.name == p.baseline)
        .ok_or_else(|| anyhow::anyhow!("baseline: no input named {:?}", p.baseline))
}

type Row = (String, Vec<Option<f64>>);

/// Everything the report shows of one evaluated model.
struct ModelRow {
    name: String,
    model: String,
    /// The compared split.
    detail: SplitDetail,
    /// Every split of its metrics.json (for sampled against full).
    splits: BTreeMap<String, SplitDetail>,
    /// The compared split's per-example ranks, when evaluate wrote them.
    ranks: Option<paired::SplitRanks>,
    /// (epoch, series → value) from the model's `training.json`.
    curve: Vec<(f64, BTreeMap<String, f64>)>,
    /// evaluate's `attention` object for the compared split (attention
    /// models only).
    attention: Option<serde_json::Value>,
}

impl ModelRow {
    fn read(name: &str, dir: &Path, split: &str) -> anyhow::Result<ModelRow> {
        let (model, splits) = crate::evaluate::read_metrics_detail(dir)?;
        let detail = splits.get(split).cloned().ok_or_else(|| {
            anyhow::anyhow!(
                "input `{name}` has no `{split}` split (its splits: {}; see evaluate's params.splits and params.ranking)",
                splits.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        Ok(ModelRow {
            name: name.to_string(),
            model,
            detail,
            ranks: paired::read_ranks(dir, split)?,
            curve: read_curve(dir)?,
            attention: read_attention(dir, split)?,
            splits,
        })
    }
}

/// The `attention` object of `split` in `metrics.json` (evaluate writes it
/// in the full-ranking object, or in `<split>_sampled` when only sampled
/// ranking ran, so either may hold it); `None` for models without one.
fn read_attention(dir: &Path, split: &str) -> anyhow::Result<Option<serde_json::Value>> {
    let path = dir.join("metrics.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let base = split.strip_suffix("_sampled").unwrap_or(split);
    Ok([
        split.to_string(),
        base.to_string(),
        format!("{base}_sampled"),
    ]
    .iter()
    .find_map(|s| v[s.as_str()].get("attention").filter(|a| a.is_object()))
    .cloned())
}

/// `training.json`'s epochs as (epoch, numeric fields); empty when absent.
fn read_curve(dir: &Path) -> anyhow::Result<Vec<(f64, BTreeMap<String, f64>)>> {
    let path = dir.join("training.json");
    if !path.exists() {
        return Ok(vec![]);
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let epochs = v["epochs"].as_array().cloned().unwrap_or_default();
    Ok(epochs
        .iter()
        .enumerate()
        .filter_map(|(i, e)| {
            let obj = e.as_object()?;
            let epoch = obj
                .get("epoch")
                .and_then(|x| x.as_f64())
                .unwrap_or(i as f64 + 1.0);
            let values = obj
                .iter()
                .filter(|(k, _)| k.as_str() != "epoch")
                .filter_map(|(k, x)| Some((k.clone(), x.as_f64()?)))
                .collect();
            Some((epoch, values))
        })
        .collect())
}

fn best_of(rows: &[Row], columns: usize) -> Vec<Option<f64>> {
    (0..columns)
        .map(|c| rows.iter().filter_map(|(_, v)| v[c]).reduce(f64::max))
        .collect()
}

fn cell(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.4}"))
}

fn markdown(p: &Params, rows: &[Row], best: &[Option<f64>]) -> String {
    let mut s = format!(
        "# Model comparison ({} split, {})\n\n| model |",
        p.split,
        protocol(&p.split)
    );
    for c in &p.columns {
        s += &format!(" {c} |");
    }
    s += "\n|---|";
    s += &"---:|".repeat(p.columns.len());
    s += "\n";
    for (name, values) in rows {
        s += &format!("| {name} |");
        for (v, b) in values.iter().zip(best) {
            let text = cell(*v);
            s += &if v.is_some() && v == b {
                format!(" **{text}** |")
            } else {
                format!(" {text} |")
            };
        }
        s += "\n";
    }
    s
}

fn plain(p: &Params, rows: &[Row], best: &[Option<f64>]) -> String {
    let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(5).max(5);
    let mut s = format!(
        "Model comparison — {} split, {} (* = best)\n",
        p.split,
        protocol(&p.split)
    );
    s += &format!("{:<width$}", "model");
    for c in &p.columns {
        s += &format!(" {c:>9}");
    }
    s += "\n";
    for (name, values) in rows {
        s += &format!("{name:<width$}");
        for (v, b) in values.iter().zip(best) {
            let mark = if v.is_some() && v == b { "*" } else { " " };
            s += &format!(" {:>8}{mark}", cell(*v));
        }
        s += "\n";
    }
    s
}

/// HTML-escapes text.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const CSS: &str = "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:1em 0;display:block;overflow-x:auto;max-width:100%}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}\
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}\
.ci,.delta{display:block;font-size:75%;color:#666}.up{color:#1a7f37}.down{color:#c62828}\
.chart{margin:1em 0}p.note{color:#555;font-size:90%}";

/// The cut-offs `metric@K` present in any row, ascending.
fn ks_of(models: &[ModelRow], metric: &str) -> Vec<usize> {
    let prefix = format!("{metric}@");
    let ks: BTreeSet<usize> = models
        .iter()
        .flat_map(|m| m.detail.values.keys())
        .filter_map(|k| k.strip_prefix(&prefix)?.parse().ok())
        .collect();
    ks.into_iter().collect()
}

fn html(
    p: &Params,
    models: &[ModelRow],
    base: usize,
    tests: &[Option<PairedTest>],
    embedding_map: Option<&str>,
) -> anyhow::Result<String> {
    let mut s = String::new();
    let title = format!(
        "Model comparison ({} split, {})",
        esc(&p.split),
        protocol(&p.split)
    );
    write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<h1>{title}</h1>\n"
    )?;
    writeln!(
        s,
        "<p class=\"note\">{} models. Best value per column in <b>bold</b>; Δ is relative to <b>{}</b>; \
         brackets are 95% bootstrap confidence intervals over examples where evaluate computed them.</p>",
        models.len(),
        esc(&models[base].name)
    )?;
    s += &table(models, &p.columns, base);
    s += &tests_html(p, models, base, tests);

    // beyond accuracy
    let extra: Vec<String> = ["precision", "coverage", "avg_pop"]
        .iter()
        .flat_map(|m| {
            ks_of(models, m)
                .into_iter()
                .map(move |k| format!("{m}@{k}"))
        })
        .collect();
    if !extra.is_empty() {
        s += "<h2>Beyond accuracy</h2>\n<p class=\"note\">precision@K = HR@K / K; coverage@K = distinct items in all top-K lists / catalogue size; \
              avg_pop@K = mean training occurrences of the recommended items (lower = less popularity bias).</p>\n";
        s += &table(models, &extra, base);
    }

    // charts
    let chart_k = nearest_k(&ks_of(models, "ndcg"), p.chart_k)
        .or_else(|| nearest_k(&ks_of(models, "hr"), p.chart_k));
    if let Some(k) = chart_k {
        s += &format!("<h2>NDCG@{k} and HR@{k}</h2>\n<div class=\"chart\">");
        s += &charts::bar_chart(models, k)?;
        s += "</div>\n";
    }
    if !ks_of(models, "ndcg").is_empty() || !ks_of(models, "hr").is_empty() {
        s += "<h2>Metrics against K</h2>\n<div class=\"chart\">";
        s += &charts::line_chart(models)?;
        s += "</div>\n";
    }

    s += &breakdowns::html(models);
    s += &breakdowns::attention_html(models)?;
    s += &sampled_vs_full(models, &p.split, chart_k.unwrap_or(p.chart_k));
    s += &training_curves(models)?;
    if let Some(svg) = embedding_map {
        s += "<h2>Item embeddings</h2>\n<p class=\"note\">Each dot is an item (a sample of at most 4000), placed by the first two \
              principal components of its contrastive embedding and coloured by domain.</p>\n<div class=\"chart\">";
        s += svg;
        s += "</div>\n";
    }
    s += "</body>\n</html>\n";
    Ok(s)
}

/// How the split's items were ranked.
fn protocol(split: &str) -> &'static str {
    if split.ends_with("_sampled") {
        "sampled ranking"
    } else {
        "full ranking"
    }
}

/// The paired tests against the baseline as a table.
fn tests_html(
    p: &Params,
    models: &[ModelRow],
    base: usize,
    tests: &[Option<PairedTest>],
) -> String {
    if tests.iter().all(Option::is_none) {
        return String::new();
    }
    let mut s = format!(
        "<h2>Significance against {}</h2>\n<p class=\"note\">Paired sign-flip test of the mean per-example {} \
         difference over the examples both models ranked ({} random sign assignments); p &lt; 0.05 in bold.</p>\n\
         <table>\n<thead><tr><th>model</th><th>Δ {}</th><th>examples</th><th>p-value</th></tr></thead>\n<tbody>\n",
        esc(&models[base].name),
        esc(&p.significance),
        p.permutations,
        esc(&p.significance)
    );
    for (m, t) in models.iter().zip(tests) {
        let Some(t) = t else { continue };
        let pv = format!("{:.4}", t.p_value);
        let pv = if t.p_value < 0.05 {
            format!("<b>{pv}</b>")
        } else {
            pv
        };
        s += &format!(
            "<tr><td>{}</td><td>{:+.4}</td><td>{}</td><td>{pv}</td></tr>\n",
            esc(&m.name),
            t.mean_diff,
            t.n
        );
    }
    s + "</tbody>\n</table>\n"
}

/// NDCG@K and HR@K of full and sampled ranking side by side, when the
/// evaluations hold both for the compared split.
fn sampled_vs_full(models: &[ModelRow], split: &str, k: usize) -> String {
    let base = split.strip_suffix("_sampled").unwrap_or(split);
    let sampled = format!("{base}_sampled");
    let pairs: Vec<(&ModelRow, &SplitDetail, &SplitDetail)> = models
        .iter()
        .filter_map(|m| Some((m, m.splits.get(base)?, m.splits.get(&sampled)?)))
        .collect();
    if pairs.is_empty() {
        return String::new();
    }
    let mut s = format!(
        "<h2>Sampled against full ranking</h2>\n<p class=\"note\">The same models on the same examples, ranked against \
         the whole catalogue and against sampled negatives. Sampled metrics are inflated and can reorder models \
         (Krichene &amp; Rendle, KDD 2020).</p>\n<table>\n<thead><tr><th>model</th><th>NDCG@{k} full</th>\
         <th>NDCG@{k} sampled</th><th>×</th><th>HR@{k} full</th><th>HR@{k} sampled</th><th>×</th></tr></thead>\n<tbody>\n"
    );
    for (m, full, samp) in pairs {
        s += &format!("<tr><td>{}</td>", esc(&m.name));
        for metric in ["ndcg", "hr"] {
            let key = format!("{metric}@{k}");
            let (f, sm) = (full.values.get(&key), samp.values.get(&key));
            let ratio = match (f, sm) {
                (Some(f), Some(sm)) if *f > 0.0 => format!("{:.2}", sm / f),
                _ => "-".into(),
            };
            s += &format!(
                "<td>{}</td><td>{}</td><td>{ratio}</td>",
                cell(f.copied()),
                cell(sm.copied())
            );
        }
        s += "</tr>\n";
    }
    s + "</tbody>\n</table>\n"
}

/// A chart per series of the models' training curves (`train_loss` first).
fn training_curves(models: &[ModelRow]) -> anyhow::Result<String> {
    let mut series: BTreeSet<&str> = models
        .iter()
        .flat_map(|m| {
            m.curve
                .iter()
                .flat_map(|(_, v)| v.keys().map(String::as_str))
        })
        .collect();
    if series.is_empty() {
        return Ok("<p class=\"note\">No training curves: none of the evaluated models was trained by epochs.</p>\n".into());
    }
    let mut ordered = vec![];
    if series.remove("train_loss") {
        ordered.push("train_loss");
    }
    ordered.extend(series);
    let mut s = String::from("<h2>Training curves</h2>\n");
    for name in ordered {
        s += "<div class=\"chart\">";
        s += &charts::training_curve(models, name)?;
        s += "</div>\n";
    }
    Ok(s)
}

fn nearest_k(ks: &[usize], want: usize) -> Option<usize> {
    ks.iter().copied().min_by_key(|k| (k.abs_diff(want), *k))
}

fn table(models: &[ModelRow], columns: &[String], base: usize) -> String {
    let mut s = String::from("<table>\n<thead><tr><th>model</th>");
    for c in columns {
        s += &format!("<th>{}</th>", esc(c));
    }
    s += "</tr></thead>\n<tbody>\n";
    let best: Vec<Option<f64>> = columns
        .iter()
        .map(|c| {
            models
                .iter()
                .filter_map(|m| m.detail.values.get(c).copied())
                .reduce(f64::max)
        })
        .collect();
    for (i, m) in models.iter().enumerate() {
        s += &format!("<tr><td>{}</td>", esc(&m.name));
        for (c, b) in columns.iter().zip(&best) {
            let Some(v) = m.detail.values.get(c).copied() else {
                s += "<td>-</td>";
                continue;
            };
            let text = format!("{v:.4}");
            s += "<td>";
            s += &if Some(v) == *b {
                format!("<b>{text}</b>")
            } else {
                text
            };
            if let Some((lo, hi)) = m.detail.ci.get(c) {
                s += &format!("<span class=\"ci\">[{lo:.4}, {hi:.4}]</span>");
            }
            if i != base {
                if let Some(bv) = models[base].detail.values.get(c).copied() {
                    s += &delta(v, bv);
                }
            }
            s += "</td>";
        }
        s += "</tr>\n";
    }
    s += "</tbody>\n</table>\n";
    s
}

fn delta(v: f64, base: f64) -> String {
    if base == 0.0 {
        return "<span class=\"delta\">Δ n/a</span>".into();
    }
    let d = (v - base) / base * 100.0;
    let class = if d > 0.0 {
        "up"
    } else if d < 0.0 {
        "down"
    } else {
        ""
    };
    format!("<span class=\"delta {class}\">Δ {d:+.1}%</span>")
}

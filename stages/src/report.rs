//! `report` — a model comparison from any number of `evaluate` outputs.
//!
//! Params (defaults): `split` ("test"), `columns` (["hr@5", "hr@10",
//! "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr@10"]), `baseline` (""):
//! the row the relative differences are taken against (empty: the row named
//! `pop`, or whose model is `pop`, else the first), `chart_k` (10: the
//! cut-off of the bar chart, or the nearest one evaluated).
//! Inputs: any number of `metrics` artifacts, each under the name the row
//! should have (e.g. `inputs = { sasrec = "eval_sasrec.metrics" }`).
//! Outputs: `report` (report: `report.md`, the table with the best value per
//! column in bold, `summary.txt`, the same table for the terminal, which
//! `seqpipe run` and `seqpipe show` print, and `report.html`, one
//! self-contained page — inline CSS and SVG, nothing fetched — with the table
//! (best in bold, relative Δ vs the baseline, 95 % bootstrap intervals where
//! evaluate computed them), the beyond-accuracy metrics (precision, coverage,
//! popularity), a bar chart of NDCG@K and HR@K per model, metric-vs-K line
//! plots and the breakdowns by history length and target popularity).
//!
//! Training curves are not drawn: the report only receives `metrics`
//! artifacts, not the models' `training.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use seqpipe::stage::{KindInfo, ParamDoc, Port, Resource, StageContext, TypedStage};
use serde::{Deserialize, Serialize};

use crate::evaluate::SplitDetail;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    pub split: String,
    pub columns: Vec<String>,
    pub baseline: String,
    pub chart_k: usize,
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
        }
    }
}

pub struct Report;

/// 2: report.html.
pub const VERSION: u32 = 2;

impl TypedStage for Report {
    type Params = Params;

    fn info(&self) -> KindInfo {
        KindInfo {
            kind: "report",
            version: VERSION,
            summary: "Compares evaluated models in one table (Markdown, printed after the run) and an HTML page with charts and breakdowns.",
            inputs: vec![],
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
            ],
            resource: Resource::Cpu,
        }
    }

    fn run(&self, p: Params, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        let inputs: Vec<(String, PathBuf)> = ctx
            .inputs
            .iter()
            .map(|(n, d)| (n.clone(), d.clone()))
            .collect();
        let out = ctx.output("report")?.to_path_buf();
        write_report(&p, &inputs, &out)
    }
}

/// The stage's work: reads each (row name, metrics directory) and writes
/// report.md, summary.txt and report.html into `out`.
pub fn write_report(p: &Params, inputs: &[(String, PathBuf)], out: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        !inputs.is_empty(),
        "report needs at least one metrics input"
    );
    let mut rows = Vec::new();
    let mut models = Vec::new();
    for (name, dir) in inputs {
        let (model, mut splits) = crate::evaluate::read_metrics_detail(dir)?;
        let detail = splits.remove(&p.split).ok_or_else(|| {
            anyhow::anyhow!(
                "input `{name}` has no `{}` split (evaluate's params.splits)",
                p.split
            )
        })?;
        rows.push((
            name.clone(),
            p.columns
                .iter()
                .map(|c| detail.values.get(c).copied())
                .collect::<Vec<_>>(),
        ));
        models.push(ModelRow {
            name: name.clone(),
            model,
            detail,
        });
    }
    let best = best_of(&rows, p.columns.len());
    std::fs::write(out.join("report.md"), markdown(p, &rows, &best))?;
    std::fs::write(out.join("summary.txt"), plain(p, &rows, &best))?;
    std::fs::write(out.join("report.html"), html(p, &models)?)?;
    Ok(())
}

type Row = (String, Vec<Option<f64>>);

struct ModelRow {
    name: String,
    model: String,
    detail: SplitDetail,
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
        "# Model comparison ({} split, full ranking)\n\n| model |",
        p.split
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
        "Model comparison — {} split, full ranking (* = best)\n",
        p.split
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
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}\
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

fn html(p: &Params, models: &[ModelRow]) -> anyhow::Result<String> {
    let base = if p.baseline.is_empty() {
        models
            .iter()
            .position(|m| m.name == "pop")
            .or_else(|| models.iter().position(|m| m.model == "pop"))
            .unwrap_or(0)
    } else {
        models
            .iter()
            .position(|m| m.name == p.baseline)
            .ok_or_else(|| anyhow::anyhow!("baseline: no input named {:?}", p.baseline))?
    };
    let mut s = String::new();
    let title = format!("Model comparison ({} split, full ranking)", esc(&p.split));
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
        s += &bar_chart(models, k)?;
        s += "</div>\n";
    }
    if !ks_of(models, "ndcg").is_empty() || !ks_of(models, "hr").is_empty() {
        s += "<h2>Metrics against K</h2>\n<div class=\"chart\">";
        s += &line_chart(models)?;
        s += "</div>\n";
    }

    // breakdowns
    let with_breakdown: Vec<&ModelRow> = models
        .iter()
        .filter(|m| m.detail.breakdown.is_some())
        .collect();
    if !with_breakdown.is_empty() {
        s += "<h2>Breakdowns</h2>\n";
        for (key, heading) in [
            ("history_length", "By history length"),
            (
                "target_popularity",
                "By target popularity (long tail vs head)",
            ),
        ] {
            s += &breakdown_table(&with_breakdown, key, heading);
        }
    }
    s += "<p class=\"note\">Training curves are not shown: the report stage only receives evaluate's metrics.</p>\n";
    s += "</body>\n</html>\n";
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

fn breakdown_table(models: &[&ModelRow], key: &str, heading: &str) -> String {
    // buckets in the order of the first model that has them
    let buckets: Vec<String> = models
        .iter()
        .find_map(|m| m.detail.breakdown.as_ref()?[key].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|b| b["bucket"].as_str().map(String::from))
        .collect();
    if buckets.is_empty() {
        return String::new();
    }
    let k = models
        .iter()
        .find_map(|m| m.detail.breakdown.as_ref()?["k"].as_u64())
        .unwrap_or(10);
    let mut s = format!(
        "<h3>{}</h3>\n<table>\n<thead><tr><th>model</th>",
        esc(heading)
    );
    for b in &buckets {
        s += &format!(
            "<th>{} HR@{k}</th><th>{} NDCG@{k}</th><th>{} n</th>",
            esc(b),
            esc(b),
            esc(b)
        );
    }
    s += "</tr></thead>\n<tbody>\n";
    for m in models {
        s += &format!("<tr><td>{}</td>", esc(&m.name));
        let groups = m
            .detail
            .breakdown
            .as_ref()
            .and_then(|b| b[key].as_array().cloned())
            .unwrap_or_default();
        for b in &buckets {
            match groups.iter().find(|g| g["bucket"].as_str() == Some(b)) {
                Some(g) => {
                    let f =
                        |name: String| g[&name].as_f64().map_or("-".into(), |v| format!("{v:.4}"));
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

fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {e}")
}

/// plotters' SVG, made to sit inline in HTML: no XML namespace URL.
fn inline_svg(svg: String) -> String {
    svg.replace(" xmlns=\"http://www.w3.org/2000/svg\"", "")
}

fn y_max(values: impl Iterator<Item = f64>) -> f64 {
    let m = values.fold(0.0f64, f64::max);
    if m > 0.0 {
        m * 1.15
    } else {
        1.0
    }
}

fn bar_chart(models: &[ModelRow], k: usize) -> anyhow::Result<String> {
    let n = models.len();
    let mut svg = String::new();
    {
        let width = (360 + 60 * n as u32).clamp(480, 1000);
        let root = SVGBackend::with_string(&mut svg, (width, 340)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let panels = root.split_evenly((1, 2));
        for (panel, metric) in panels.iter().zip(["ndcg", "hr"]) {
            let key = format!("{metric}@{k}");
            let values: Vec<f64> = models
                .iter()
                .map(|m| m.detail.values.get(&key).copied().unwrap_or(0.0))
                .collect();
            let label = format!("{}@{k}", metric.to_uppercase());
            let mut chart = ChartBuilder::on(panel)
                .caption(&label, ("sans-serif", 18))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(50)
                .build_cartesian_2d((0..n).into_segmented(), 0f64..y_max(values.iter().copied()))
                .map_err(plot_err)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(n)
                .x_label_formatter(&|v| match v {
                    SegmentValue::CenterOf(i) => {
                        models.get(*i).map_or(String::new(), |m| m.name.clone())
                    }
                    _ => String::new(),
                })
                .y_desc(&label)
                .draw()
                .map_err(plot_err)?;
            chart
                .draw_series(values.iter().enumerate().map(|(i, v)| {
                    let mut bar = Rectangle::new(
                        [
                            (SegmentValue::Exact(i), *v),
                            (SegmentValue::Exact(i + 1), 0.0),
                        ],
                        Palette99::pick(i).filled(),
                    );
                    bar.set_margin(0, 0, 6, 6);
                    bar
                }))
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(inline_svg(svg))
}

fn line_chart(models: &[ModelRow]) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 360)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        let panels = root.split_evenly((1, 2));
        for (panel, metric) in panels.iter().zip(["ndcg", "hr"]) {
            let ks = ks_of(models, metric);
            if ks.is_empty() {
                continue;
            }
            let series: BTreeMap<usize, Vec<(f64, f64)>> = models
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let pts = ks
                        .iter()
                        .filter_map(|k| {
                            let v = m.detail.values.get(&format!("{metric}@{k}"))?;
                            Some((*k as f64, *v))
                        })
                        .collect();
                    (i, pts)
                })
                .collect();
            let (lo, hi) = (ks[0] as f64, ks[ks.len() - 1] as f64);
            let pad = ((hi - lo) * 0.05).max(1.0);
            let label = format!("{}@K", metric.to_uppercase());
            let mut chart = ChartBuilder::on(panel)
                .caption(format!("{label} against K"), ("sans-serif", 18))
                .margin(10)
                .x_label_area_size(35)
                .y_label_area_size(50)
                .build_cartesian_2d(
                    (lo - pad)..(hi + pad),
                    0f64..y_max(series.values().flatten().map(|p| p.1)),
                )
                .map_err(plot_err)?;
            chart
                .configure_mesh()
                .x_desc("K")
                .y_desc(&label)
                .draw()
                .map_err(plot_err)?;
            for (i, pts) in &series {
                let color = Palette99::pick(*i);
                chart
                    .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                    .map_err(plot_err)?
                    .label(models[*i].name.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(
                            vec![(x, y), (x + 16, y)],
                            Palette99::pick(*i).stroke_width(2),
                        )
                    });
                chart
                    .draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))
                    .map_err(plot_err)?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    Ok(inline_svg(svg))
}

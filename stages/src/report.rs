//! `report` — a model comparison table from any number of `evaluate` outputs.
//!
//! Params (defaults): `split` ("test"), `columns` (["hr@5", "hr@10",
//! "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr@10"]).
//! Inputs: any number of `metrics` artifacts, each under the name the row
//! should have (e.g. `inputs = { sasrec = "eval_sasrec.metrics" }`).
//! Outputs: `report` (report: `report.md`, the table with the best value per
//! column in bold, and `summary.txt`, the same table for the terminal, which
//! `seqpipe run` and `seqpipe show` print).

use seqpipe::stage::{KindInfo, ParamDoc, Port, Resource, StageContext, TypedStage};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    pub split: String,
    pub columns: Vec<String>,
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
        }
    }
}

pub struct Report;

pub const VERSION: u32 = 1;

impl TypedStage for Report {
    type Params = Params;

    fn info(&self) -> KindInfo {
        KindInfo {
            kind: "report",
            version: VERSION,
            summary:
                "Compares evaluated models in one table (Markdown, and printed after the run).",
            inputs: vec![],
            extra_inputs: Some("metrics"),
            outputs: vec![Port {
                name: "report",
                ty: "report",
                doc: "report.md and summary.txt",
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
            ],
            resource: Resource::Cpu,
        }
    }

    fn run(&self, p: Params, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        anyhow::ensure!(
            !ctx.inputs.is_empty(),
            "report needs at least one metrics input"
        );
        let mut rows = Vec::new();
        for (name, dir) in &ctx.inputs {
            let (_, splits) = crate::evaluate::read_metrics(dir)?;
            let values = splits.get(&p.split).ok_or_else(|| {
                anyhow::anyhow!(
                    "input `{name}` has no `{}` split (evaluate's params.splits)",
                    p.split
                )
            })?;
            rows.push((
                name.clone(),
                p.columns
                    .iter()
                    .map(|c| values.get(c).copied())
                    .collect::<Vec<_>>(),
            ));
        }
        let best: Vec<Option<f64>> = (0..p.columns.len())
            .map(|c| rows.iter().filter_map(|(_, v)| v[c]).reduce(f64::max))
            .collect();
        let out = ctx.output("report")?;
        std::fs::write(out.join("report.md"), markdown(&p, &rows, &best))?;
        std::fs::write(out.join("summary.txt"), plain(&p, &rows, &best))?;
        Ok(())
    }
}

type Row = (String, Vec<Option<f64>>);

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

//! `evaluate` — full-ranking evaluation of a trained model.
//!
//! Params (defaults): `k` ([5, 10, 20]), `metrics` (["hr", "ndcg", "mrr"]),
//! `ranking` ("full": every item in the catalogue is a candidate),
//! `splits` (["valid", "test"]), `exclude_seen` (false: items already in
//! the history stay candidates), `batch_size` (256 histories scored at once).
//! Inputs: `model` (model), `data` (sequences).
//! Outputs: `metrics` (metrics: `metrics.json`, one object per split with
//! `hr@K`, `ndcg@K`, `mrr@K`, `mrr` and `examples`).
//!
//! Histories are scored in batches, so users × items is never held at once.
//! See [`crate::metrics`] for the definitions and how ties are ranked.

use std::collections::BTreeMap;

use seqpipe::stage::{KindInfo, ParamDoc, Port, Resource, StageContext, TypedStage};
use serde::{Deserialize, Serialize};

use crate::metrics;
use crate::seqdata::{Example, SequenceData};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    pub k: Vec<usize>,
    pub metrics: Vec<String>,
    pub ranking: String,
    pub splits: Vec<String>,
    pub exclude_seen: bool,
    pub batch_size: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            k: vec![5, 10, 20],
            metrics: vec!["hr".into(), "ndcg".into(), "mrr".into()],
            ranking: "full".into(),
            splits: vec!["valid".into(), "test".into()],
            exclude_seen: false,
            batch_size: 256,
        }
    }
}

pub struct Evaluate;

pub const VERSION: u32 = 1;

impl TypedStage for Evaluate {
    type Params = Params;

    fn info(&self) -> KindInfo {
        KindInfo {
            kind: "evaluate",
            version: VERSION,
            summary: "Ranks the whole catalogue for every held-out example and reports HR, NDCG and MRR at each K.",
            inputs: vec![
                Port { name: "model", ty: "model", doc: "a model trained by `train`" },
                Port { name: "data", ty: "sequences", doc: "the split the model was trained on" },
            ],
            extra_inputs: None,
            outputs: vec![Port { name: "metrics", ty: "metrics", doc: "metrics.json: per split, hr@K, ndcg@K, mrr@K, mrr" }],
            params: vec![
                ParamDoc { name: "k", doc: "cut-offs" },
                ParamDoc { name: "metrics", doc: "any of hr, ndcg, mrr" },
                ParamDoc { name: "ranking", doc: "full (the only protocol so far)" },
                ParamDoc { name: "splits", doc: "valid and/or test" },
                ParamDoc { name: "exclude_seen", doc: "remove history items from the candidates" },
                ParamDoc { name: "batch_size", doc: "histories scored at once" },
            ],
            resource: Resource::Tensor,
        }
    }

    fn run(&self, p: Params, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        check(&p)?;
        let device = crate::device::resolve(ctx.device)?;
        ctx.note("device", crate::device::describe(device));
        let data = SequenceData::read(ctx.input("data")?)?;
        let model_dir = ctx.input("model")?.to_path_buf();
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(model_dir.join("config.json"))?)?;
        anyhow::ensure!(
            config["num_items"].as_i64() == Some(data.meta.num_items),
            "the model was trained on {} items but the data has {}: were they built from the same sequences?",
            config["num_items"],
            data.meta.num_items
        );
        let scorer = crate::models::load(&model_dir, device)?;
        let mut out = serde_json::Map::new();
        out.insert("model".into(), config["model"].clone());
        out.insert("num_items".into(), data.meta.num_items.into());
        for split in &p.splits {
            let examples = if split == "valid" {
                &data.valid
            } else {
                &data.test
            };
            let bar = ctx.progress.bar(ctx.stage, split, examples.len() as u64);
            let ranks = rank_all(scorer.as_ref(), examples, &p, &|n| bar.inc(n as u64))?;
            bar.finish_and_clear();
            let m = metrics::summarize(&ranks, &p.k, &p.metrics);
            out.insert(split.clone(), serde_json::to_value(m)?);
        }
        std::fs::write(
            ctx.output("metrics")?.join("metrics.json"),
            serde_json::to_vec_pretty(&out)?,
        )?;
        Ok(())
    }
}

fn check(p: &Params) -> anyhow::Result<()> {
    anyhow::ensure!(
        p.ranking == "full",
        "params.ranking: only \"full\" is supported so far, not {:?}",
        p.ranking
    );
    anyhow::ensure!(
        !p.k.is_empty() && p.k.iter().all(|k| *k > 0),
        "params.k must list cut-offs above 0"
    );
    for m in &p.metrics {
        anyhow::ensure!(
            ["hr", "ndcg", "mrr"].contains(&m.as_str()),
            "params.metrics: unknown metric {m:?} (hr, ndcg, mrr)"
        );
    }
    for s in &p.splits {
        anyhow::ensure!(
            s == "valid" || s == "test",
            "params.splits: unknown split {s:?} (valid, test)"
        );
    }
    anyhow::ensure!(p.batch_size > 0, "params.batch_size must be above 0");
    Ok(())
}

/// The rank of each example's target, scoring `batch_size` histories at once.
pub fn rank_all(
    scorer: &dyn crate::models::Scorer,
    examples: &[Example],
    p: &Params,
    progress: &dyn Fn(usize),
) -> anyhow::Result<Vec<usize>> {
    let mut ranks = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(p.batch_size) {
        let histories: Vec<Vec<i64>> = chunk.iter().map(|e| e.history.clone()).collect();
        let scores = scorer.score(&histories)?;
        for (e, row) in chunk.iter().zip(&scores) {
            let exclude: Vec<usize> = if p.exclude_seen {
                let mut seen: Vec<usize> = e.history.iter().map(|i| *i as usize).collect();
                seen.sort();
                seen.dedup();
                seen
            } else {
                vec![]
            };
            ranks.push(metrics::rank_of(row, e.target as usize, &exclude));
        }
        progress(chunk.len());
    }
    Ok(ranks)
}

/// Split name → metric name → value.
pub type SplitMetrics = BTreeMap<String, BTreeMap<String, f64>>;

/// Reads a `metrics.json` into (model name, split → metric → value).
pub fn read_metrics(dir: &std::path::Path) -> anyhow::Result<(String, SplitMetrics)> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("metrics.json"))?)?;
    let model = v["model"].as_str().unwrap_or("?").to_string();
    let mut splits = BTreeMap::new();
    for (k, val) in v.as_object().into_iter().flatten() {
        if let Some(obj) = val.as_object() {
            splits.insert(
                k.clone(),
                obj.iter()
                    .filter_map(|(m, x)| x.as_f64().map(|x| (m.clone(), x)))
                    .collect(),
            );
        }
    }
    Ok((model, splits))
}

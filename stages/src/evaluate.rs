//! `evaluate` — ranking evaluation of a trained model.
//!
//! Params (defaults): `k` ([5, 10, 20]), `metrics` (all of "hr", "ndcg",
//! "mrr", "precision", "coverage", "popularity", "accuracy"),
//! `ranking` ("full": every item in the catalogue is a candidate;
//! "sampled": the target against `negatives` sampled items; "both"),
//! `negatives` (100) and `sampler` ("uniform" | "popularity") for sampled
//! ranking, `splits` (["valid", "test"]), `exclude_seen` (false: items
//! the user already met stay candidates — and may be sampled; true:
//! every item of the user's training sequence and of the example's history
//! is removed, except the target itself),
//! `ties` ("expected": a target tied with other candidates counts at the
//! mean of the positions the tie allows, the exact expectation over every
//! ordering of the tied items; "pessimistic": after all of them;
//! "optimistic": before them — see [`crate::rank`]),
//! `batch_size` (256 histories scored at once), `bootstrap` (1000 resamples
//! for the 95 % confidence intervals, 0 = none; seeded by the pipeline
//! seed), `long_tail` (50: targets with fewer training occurrences count as
//! long tail in the breakdown).
//! `popularity` writes `avg_pop@K`; `accuracy` writes `accuracy` (top-1 =
//! target), `macro_precision` and `macro_recall` over items (see
//! [`crate::metrics`]; full ranking only).
//! Inputs: `model` (model), `data` (sequences).
//! Outputs: `metrics` (metrics):
//! - `metrics.json`: `model`, `num_items`, `protocol` (how every number
//!   was computed: `ranking`, `k`, `negatives` and `sampler` (null unless
//!   sampled), `exclude_seen`, `ties`, `bootstrap`, `seed`, `long_tail`,
//!   `evaluate_version`), and one object per split with `hr@K`, `ndcg@K`, `mrr@K`,
//!   `mrr` and `examples`, and as asked `precision@K`, `coverage@K`,
//!   `avg_pop@K`; `<metric>_ci` = `[lo, hi]` for every example-averaged
//!   metric; `breakdown` = HR@10/NDCG@10 and counts by history length (<3 — the
//!   cold-start users —, 3-9, 10-19, 20-49, 50-99, 100-199, >=200) and by
//!   target popularity, see [`crate::metrics`]. Sampled ranking writes its
//!   rank metrics (hr, ndcg, mrr, precision) under `<split>_sampled`
//!   (`test_sampled`), next to the full-ranking `test` when `ranking = "both"`,
//!   so the report can show how much sampling inflates them.
//!
//!   For attention models (sasrec, bert4rec, gsrec) the split's object
//!   (`<split>_sampled` when only sampled ranking ran) also holds
//!   `attention`: how the query the model scores from — the last position;
//!   the `[MASK]` appended after the history for bert4rec — spreads its
//!   attention over its keys (the history's items within the model's
//!   `max_len`, plus `[MASK]` for bert4rec; never padding). Per example
//!   and layer the weights are averaged over heads and summarised by their
//!   entropy H = −Σ p ln p (nats, in [0, ln n] for n keys) and H / ln n
//!   (1 = uniform, 0 = all on one item; undefined for one key, so such
//!   examples are left out of it). `attention` = `{ "layers": L,
//!   "history_length": [...] }`, a bucket per history-length bucket of the
//!   breakdown (by the example's whole history length) with `bucket`,
//!   `examples`, `keys` (mean n), `entropy` (mean H per layer, first to
//!   last), `normalised_entropy` (mean H / ln n per layer) and
//!   `normalised_examples` (the examples with n > 1 it averages); a mean
//!   over no example is null. The weights come from an explicit
//!   softmax(QKᵀ/√d + mask) recomputed in the same batches as the scoring
//!   (eval mode, no gradients), so the fused attention that trains and
//!   scores is untouched. Models without attention write no `attention`.
//! - `ranks.parquet`: per example `split`, `user`, `target`, `rank` (full
//!   ranking: the best 1-based position the target can take, i.e. one more
//!   than the candidates scored above it; null when not computed), `tied`
//!   (the other candidates scored the same: the target's position is
//!   uniform on `rank ..= rank + tied` under `ties = "expected"`, and `tied`
//!   is 0 under the other two rules, `rank` then being the position), and
//!   `sampled_rank` / `sampled_tied` the same for sampled ranking — what the
//!   report's paired significance tests compare, user by user.
//! - `training.json`: the model's per-epoch curve, copied when the model has
//!   one, so the report can draw training curves from its `metrics` inputs.
//!
//! Histories are scored in batches, so users × items is never held at once;
//! each example's top-K list is folded into the metrics as it is produced.
//! See [`crate::metrics`] for the definitions and how ties are ranked, and
//! [`crate::sampled`] for how negatives are drawn. The scoring runs in the
//! `seqpipe-torch` worker (see [`crate::torch_worker`]).

use std::collections::BTreeMap;

use seqpipe::stage::{KindInfo, ParamDoc, Port, Resource, StageContext, TypedStage};
use serde::{Deserialize, Serialize};

use crate::rank::Ties;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    pub k: Vec<usize>,
    pub metrics: Vec<String>,
    pub ranking: String,
    pub negatives: usize,
    pub sampler: String,
    pub splits: Vec<String>,
    pub exclude_seen: bool,
    pub ties: Ties,
    pub batch_size: usize,
    pub bootstrap: usize,
    pub long_tail: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            k: vec![5, 10, 20],
            metrics: METRICS.map(String::from).to_vec(),
            ranking: "full".into(),
            negatives: 100,
            sampler: "uniform".into(),
            splits: vec!["valid".into(), "test".into()],
            exclude_seen: false,
            ties: Ties::Expected,
            batch_size: 256,
            bootstrap: 1000,
            long_tail: 50,
        }
    }
}

pub struct Evaluate;

/// 2: precision, coverage, popularity, confidence intervals, breakdowns.
/// 3: sampled ranking, ranks.parquet, training.json.
/// 4: `exclude_seen` removes the unit's whole training sequence, not only
/// the history kept in the example (cut to `sequences`' `max_len`); attention
/// models' `attention` entropies by history length.
/// 5: ties between the target and other candidates count by `ties`
/// (expected by default) instead of by item index; top-K lists break equal
/// scores by a seeded hash of the item; `ranks.parquet` gains `tied`.
pub const VERSION: u32 = 5;

impl TypedStage for Evaluate {
    type Params = Params;

    fn info(&self) -> KindInfo {
        KindInfo {
            kind: "evaluate",
            version: VERSION,
            summary: "Ranks the whole catalogue (or sampled negatives) for every held-out example and reports HR, NDCG, MRR and more at each K.",
            inputs: vec![
                Port { optional: false, name: "model", ty: "model", doc: "a model trained by `train`" },
                Port { optional: false, name: "data", ty: "sequences", doc: "the split the model was trained on" },
            ],
            extra_inputs: None,
            outputs: vec![Port { optional: false, name: "metrics", ty: "metrics", doc: "metrics.json (per split: hr@K, ndcg@K, mrr@K, mrr, …, their _ci, breakdown), ranks.parquet, training.json" }],
            params: vec![
                ParamDoc { name: "k", doc: "cut-offs" },
                ParamDoc { name: "metrics", doc: "any of hr, ndcg, mrr, precision, coverage, popularity, accuracy (top-1 accuracy, macro precision and recall over items)" },
                ParamDoc { name: "ranking", doc: "full (whole catalogue), sampled (target vs `negatives` sampled items) or both" },
                ParamDoc { name: "negatives", doc: "sampled negatives per example (sampled ranking)" },
                ParamDoc { name: "sampler", doc: "uniform or popularity (sampled ranking)" },
                ParamDoc { name: "splits", doc: "valid and/or test" },
                ParamDoc { name: "exclude_seen", doc: "remove the user's training items and history from the candidates (never the target)" },
                ParamDoc { name: "ties", doc: "how a target tied with other candidates ranks: expected (the mean over the tie's orderings), pessimistic (after them) or optimistic (before them)" },
                ParamDoc { name: "batch_size", doc: "histories scored at once" },
                ParamDoc { name: "bootstrap", doc: "resamples for 95% confidence intervals (0 = off)" },
                ParamDoc { name: "long_tail", doc: "training occurrences below which a target is long tail" },
            ],
            resource: Resource::Tensor,
        }
    }

    fn validate(&self, p: &Params) -> Result<(), String> {
        check(p).map_err(|e| e.to_string())
    }

    fn run(&self, _p: Params, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        crate::torch_worker::run("evaluate", ctx)
    }
}

/// What `metrics` may list.
pub const METRICS: [&str; 7] = [
    "hr",
    "ndcg",
    "mrr",
    "precision",
    "coverage",
    "popularity",
    "accuracy",
];

/// What `ranking` may be.
pub const RANKINGS: [&str; 3] = ["full", "sampled", "both"];

/// What `sampler` may be.
pub const SAMPLERS: [&str; 2] = ["uniform", "popularity"];

/// The rank metrics sampled ranking reports (the others describe top-K
/// lists of the whole catalogue).
pub const SAMPLED_METRICS: [&str; 4] = ["hr", "ndcg", "mrr", "precision"];

impl Params {
    pub fn full(&self) -> bool {
        self.ranking != "sampled"
    }

    pub fn sampled(&self) -> bool {
        self.ranking != "full"
    }
}

/// Checks the params together (also run by the worker before it starts).
pub fn check(p: &Params) -> anyhow::Result<()> {
    anyhow::ensure!(
        RANKINGS.contains(&p.ranking.as_str()),
        "ranking: unknown protocol {:?} ({})",
        p.ranking,
        RANKINGS.join(", ")
    );
    anyhow::ensure!(p.negatives > 0, "negatives: must be above 0");
    anyhow::ensure!(
        SAMPLERS.contains(&p.sampler.as_str()),
        "sampler: unknown sampler {:?} ({})",
        p.sampler,
        SAMPLERS.join(", ")
    );
    anyhow::ensure!(
        !p.k.is_empty() && p.k.iter().all(|k| *k > 0),
        "k: must list cut-offs above 0"
    );
    for m in &p.metrics {
        anyhow::ensure!(
            METRICS.contains(&m.as_str()),
            "metrics: unknown metric {m:?} ({})",
            METRICS.join(", ")
        );
    }
    for s in &p.splits {
        anyhow::ensure!(
            s == "valid" || s == "test",
            "splits: unknown split {s:?} (valid, test)"
        );
    }
    anyhow::ensure!(p.batch_size > 0, "batch_size: must be above 0");
    Ok(())
}

/// The key of `metrics.json`'s object that records how its numbers were
/// computed (not a split).
pub const PROTOCOL_KEY: &str = "protocol";

/// The `protocol` object of `metrics.json`: every param that decides what a
/// number means, so a table read without this pipeline still says how it
/// was ranked.
pub fn protocol(p: &Params, seed: u64) -> serde_json::Value {
    serde_json::json!({
        "ranking": p.ranking,
        "k": p.k,
        "negatives": if p.sampled() { serde_json::json!(p.negatives) } else { serde_json::Value::Null },
        "sampler": if p.sampled() { serde_json::json!(p.sampler) } else { serde_json::Value::Null },
        "exclude_seen": p.exclude_seen,
        "ties": p.ties.as_str(),
        "bootstrap": p.bootstrap,
        "seed": seed,
        "long_tail": p.long_tail,
        "evaluate_version": VERSION,
    })
}

/// Split name → metric name → value.
pub type SplitMetrics = BTreeMap<String, BTreeMap<String, f64>>;

/// Reads a `metrics.json` into (model name, split → metric → value).
pub fn read_metrics(dir: &std::path::Path) -> anyhow::Result<(String, SplitMetrics)> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("metrics.json"))?)?;
    let model = v["model"].as_str().unwrap_or("?").to_string();
    let mut splits = BTreeMap::new();
    for (k, val) in v.as_object().into_iter().flatten() {
        if k == PROTOCOL_KEY {
            continue;
        }
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

/// One split of a `metrics.json` with everything the report shows.
#[derive(Debug, Clone, Default)]
pub struct SplitDetail {
    /// metric → value (as [`read_metrics`])
    pub values: BTreeMap<String, f64>,
    /// metric → 95 % bootstrap interval, where present
    pub ci: BTreeMap<String, (f64, f64)>,
    /// the `breakdown` object, where present
    pub breakdown: Option<serde_json::Value>,
}

/// Reads a `metrics.json` into (model name, split → values, intervals and
/// breakdown). Files from before version 2 read with no intervals.
pub fn read_metrics_detail(
    dir: &std::path::Path,
) -> anyhow::Result<(String, BTreeMap<String, SplitDetail>)> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("metrics.json"))?)?;
    let model = v["model"].as_str().unwrap_or("?").to_string();
    let mut splits = BTreeMap::new();
    for (k, val) in v.as_object().into_iter().flatten() {
        let Some(obj) = val.as_object().filter(|_| k != PROTOCOL_KEY) else {
            continue;
        };
        let mut d = SplitDetail::default();
        for (m, x) in obj {
            if let Some(x) = x.as_f64() {
                d.values.insert(m.clone(), x);
            } else if let (Some(name), Some([lo, hi])) =
                (m.strip_suffix("_ci"), x.as_array().map(Vec::as_slice))
            {
                if let (Some(lo), Some(hi)) = (lo.as_f64(), hi.as_f64()) {
                    d.ci.insert(name.to_string(), (lo, hi));
                }
            } else if m == "breakdown" {
                d.breakdown = Some(x.clone());
            }
        }
        splits.insert(k.clone(), d);
    }
    Ok((model, splits))
}

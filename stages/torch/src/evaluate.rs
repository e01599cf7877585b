//! The `evaluate` kind's implementation (declared in
//! `seqpipe_stages::evaluate`): scores histories in batches with the trained
//! model and ranks each held-out target against the whole catalogue and/or
//! sampled negatives. Each example's top-K list is folded into a
//! [`metrics::Accumulator`] as soon as its batch is scored, so no
//! users × items matrix is ever held. For attention models the same batches
//! also give each example's attention entropies, folded into an
//! [`AttentionSummary`] by history length.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Int64Array, StringArray};
use seqpipe::stage::{KindInfo, StageContext, TypedStage};
use seqpipe_stages::evaluate::{check, Evaluate, Params, SAMPLED_METRICS};
use seqpipe_stages::sampled::{self, Sampler};
use seqpipe_stages::seqdata::{Example, SequenceData};
use seqpipe_stages::{metrics, table};

use serde_json::{json, Value};

use crate::models::{AttentionEntropy, Scorer};

pub struct EvaluateImpl;

impl TypedStage for EvaluateImpl {
    type Params = Params;

    fn info(&self) -> KindInfo {
        Evaluate.info()
    }

    fn validate(&self, p: &Params) -> Result<(), String> {
        Evaluate.validate(p)
    }

    fn run(&self, p: Params, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        check(&p)?;
        let device = crate::device::resolve(ctx.device)?;
        crate::note_runtime(ctx, device);
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
        let num_items = data.meta.num_items.max(0) as usize;
        let mut popularity = vec![0u64; num_items + 1];
        for (_, items) in &data.train {
            for &i in items {
                if let Some(c) = popularity.get_mut(i as usize) {
                    *c += 1;
                }
            }
        }
        let options = metrics::Options {
            metrics: p.metrics.clone(),
            bootstrap: p.bootstrap,
            seed: ctx.seed,
            long_tail: p.long_tail,
        };
        let sampled_options = metrics::Options {
            metrics: p
                .metrics
                .iter()
                .filter(|m| SAMPLED_METRICS.contains(&m.as_str()))
                .cloned()
                .collect(),
            ..options.clone()
        };
        let seen = p.exclude_seen.then(|| training_items(&data));
        let sampler = if p.sampled() {
            Some(Sampler::new(&p.sampler, &popularity)?)
        } else {
            None
        };
        let mut out = serde_json::Map::new();
        out.insert("model".into(), config["model"].clone());
        out.insert("num_items".into(), data.meta.num_items.into());
        out.insert(
            seqpipe_stages::evaluate::PROTOCOL_KEY.into(),
            seqpipe_stages::evaluate::protocol(&p, ctx.seed),
        );
        let mut ranks = RankRows::default();
        // What the scoring rate in the run manifest is made of: every
        // example is scored against the whole catalogue.
        let (mut rows_scored, mut scoring) = (0u64, std::time::Duration::ZERO);
        for split in &p.splits {
            let (examples, split_index) = if split == "valid" {
                (&data.valid, 0)
            } else {
                (&data.test, 1)
            };
            let bar = ctx.progress.bar(ctx.stage, split, examples.len() as u64);
            let mut full = metrics::Accumulator::new(&p.k, popularity.clone());
            let mut sampled_acc = metrics::Accumulator::new(&p.k, popularity.clone());
            // Breakdowns by the target event's attributes, when `sequences`
            // recorded them.
            let attributes = seqpipe_stages::attributes::read_split(ctx.input("data")?, split)?;
            for (name, labels) in seqpipe_stages::attributes::breakdowns(&attributes) {
                anyhow::ensure!(
                    labels.len() == examples.len(),
                    "{split}_attributes.parquet has {} rows for {} examples",
                    labels.len(),
                    examples.len()
                );
                full.group_by(&name, labels.clone());
                sampled_acc.group_by(&name, labels);
            }
            let protocol = Protocol {
                params: &p,
                seen: seen.as_ref(),
                sampler: sampler.as_ref(),
                seed: ctx.seed,
                split: split_index,
                num_items,
            };
            let mut attention = AttentionSummary::default();
            let started = std::time::Instant::now();
            let split_ranks = rank_all(
                scorer.as_ref(),
                examples,
                &protocol,
                &mut full,
                &mut sampled_acc,
                &mut attention,
                &|n| bar.inc(n as u64),
            )?;
            scoring += started.elapsed();
            rows_scored += examples.len() as u64 * num_items as u64;
            bar.finish_and_clear();
            // The attention object sits in the split's full-ranking object,
            // or in `<split>_sampled` when only sampled ranking ran.
            let mut attention = attention.finish();
            if p.full() {
                let mut m = full.finish(&options);
                if let Some(a) = attention.take() {
                    m.insert("attention".into(), a);
                }
                out.insert(split.clone(), m.into());
            }
            if p.sampled() {
                let mut m = sampled_acc.finish(&sampled_options);
                if let Some(a) = attention.take() {
                    m.insert("attention".into(), a);
                }
                out.insert(format!("{split}_sampled"), m.into());
            }
            ranks.extend(split, examples, &split_ranks);
        }
        let seconds = scoring.as_secs_f64();
        ctx.note("rows_scored", rows_scored);
        ctx.note("scoring_seconds", format!("{seconds:.3}"));
        if seconds > 0.0 {
            ctx.note(
                "rows_per_second",
                format!("{:.0}", rows_scored as f64 / seconds),
            );
        }
        let dir = ctx.output("metrics")?;
        std::fs::write(dir.join("metrics.json"), serde_json::to_vec_pretty(&out)?)?;
        ranks.write(&dir.join("ranks.parquet"))?;
        let curve = model_dir.join("training.json");
        if curve.exists() {
            std::fs::copy(&curve, dir.join("training.json"))?;
        }
        Ok(())
    }
}

/// How one split is ranked.
pub struct Protocol<'a> {
    pub params: &'a Params,
    /// With `exclude_seen`: each unit's training items (see
    /// [`training_items`]).
    pub seen: Option<&'a HashMap<i64, Vec<usize>>>,
    /// Set when sampled ranking is asked for.
    pub sampler: Option<&'a Sampler>,
    pub seed: u64,
    /// 0 = valid, 1 = test: part of each example's sampling stream.
    pub split: u64,
    pub num_items: usize,
}

/// One example's ranks: full ranking and sampled, each when computed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranks {
    pub full: Option<metrics::Rank>,
    pub sampled: Option<metrics::Rank>,
}

/// The rows of `ranks.parquet`.
#[derive(Default)]
struct RankRows {
    split: Vec<String>,
    user: Vec<i64>,
    target: Vec<i64>,
    full: Vec<Option<i64>>,
    full_tied: Vec<Option<i64>>,
    sampled: Vec<Option<i64>>,
    sampled_tied: Vec<Option<i64>>,
}

impl RankRows {
    fn extend(&mut self, split: &str, examples: &[Example], ranks: &[Ranks]) {
        for (e, r) in examples.iter().zip(ranks) {
            self.split.push(split.to_string());
            self.user.push(e.user);
            self.target.push(e.target);
            self.full.push(r.full.map(|x| x.first() as i64));
            self.full_tied.push(r.full.map(|x| x.tied as i64));
            self.sampled.push(r.sampled.map(|x| x.first() as i64));
            self.sampled_tied.push(r.sampled.map(|x| x.tied as i64));
        }
    }

    fn write(self, path: &Path) -> anyhow::Result<()> {
        table::write(
            path,
            &table::batch(vec![
                ("split", Arc::new(StringArray::from(self.split))),
                ("user", Arc::new(Int64Array::from(self.user))),
                ("target", Arc::new(Int64Array::from(self.target))),
                ("rank", Arc::new(Int64Array::from(self.full))),
                ("tied", Arc::new(Int64Array::from(self.full_tied))),
                ("sampled_rank", Arc::new(Int64Array::from(self.sampled))),
                (
                    "sampled_tied",
                    Arc::new(Int64Array::from(self.sampled_tied)),
                ),
            ])?,
        )
    }
}

/// Ranks each example's target — against the whole catalogue (its top-K
/// list, K = the largest cut-off, goes into `full`) and/or against sampled
/// negatives (into `sampled`) — scoring `batch_size` histories at once;
/// returns the ranks. A model with attention also gives each batch's
/// attention entropies, which go into `attention`.
pub fn rank_all(
    scorer: &dyn Scorer,
    examples: &[Example],
    protocol: &Protocol<'_>,
    full: &mut metrics::Accumulator,
    sampled: &mut metrics::Accumulator,
    attention: &mut AttentionSummary,
    progress: &dyn Fn(usize),
) -> anyhow::Result<Vec<Ranks>> {
    let p = protocol.params;
    let mut ranks = Vec::with_capacity(examples.len());
    let max_k = full.max_k();
    for (c, chunk) in examples.chunks(p.batch_size).enumerate() {
        let histories: Vec<Vec<i64>> = chunk.iter().map(|e| e.history.clone()).collect();
        let (scores, attention_rows) = scorer.score_with_attention(&histories)?;
        if let Some(stats) = attention_rows {
            anyhow::ensure!(
                stats.len() == chunk.len(),
                "the attention diagnostic gave {} rows for {} histories",
                stats.len(),
                chunk.len()
            );
            for (e, a) in chunk.iter().zip(&stats) {
                attention.push(e.history.len(), a)?;
            }
        }
        for (i, (e, row)) in chunk.iter().zip(&scores).enumerate() {
            let exclude = match protocol.seen {
                Some(seen) => seen_items(e, seen),
                None => vec![],
            };
            let target = e.target as usize;
            let mut r = Ranks {
                full: None,
                sampled: None,
            };
            if p.full() {
                let rank = metrics::rank_of(row, target, &exclude).under(p.ties);
                full.push(
                    rank,
                    &metrics::top_k(row, max_k, &exclude, protocol.seed),
                    e.history.len(),
                    target,
                );
                r.full = Some(rank);
            }
            if let Some(sampler) = protocol.sampler {
                let index = (c * p.batch_size + i) as u64;
                let mut rng = sampled::example_rng(protocol.seed, protocol.split, index);
                let negatives = sampled::negatives(
                    &mut rng,
                    sampler,
                    protocol.num_items,
                    target,
                    &exclude,
                    p.negatives,
                );
                let rank = metrics::rank_among(row, target, &negatives).under(p.ties);
                sampled.push(rank, &[], e.history.len(), target);
                r.sampled = Some(rank);
            }
            ranks.push(r);
        }
        progress(chunk.len());
    }
    Ok(ranks)
}

/// One split's attention entropies by history length (the breakdown's
/// buckets, [`metrics::HISTORY_BUCKETS`], by the example's whole history
/// length): sums per bucket, turned into means by
/// [`finish`](Self::finish).
#[derive(Default)]
pub struct AttentionSummary {
    /// The models' layer count, set by the first example.
    layers: Option<usize>,
    buckets: Vec<AttentionSums>,
}

#[derive(Default, Clone)]
struct AttentionSums {
    examples: usize,
    keys: usize,
    entropy: Vec<f64>,
    /// Examples with more than one key, over which `normalised` is summed.
    normalised_examples: usize,
    normalised: Vec<f64>,
}

impl AttentionSummary {
    /// Adds one example with `history_len` items.
    pub fn push(&mut self, history_len: usize, a: &AttentionEntropy) -> anyhow::Result<()> {
        let layers = *self.layers.get_or_insert(a.entropy.len());
        anyhow::ensure!(
            a.entropy.len() == layers,
            "the attention diagnostic gave {} layers after {layers}",
            a.entropy.len()
        );
        if self.buckets.is_empty() {
            let empty = AttentionSums {
                entropy: vec![0.0; layers],
                normalised: vec![0.0; layers],
                ..Default::default()
            };
            self.buckets = vec![empty; metrics::HISTORY_BUCKETS.len()];
        }
        let b = &mut self.buckets[metrics::history_bucket(history_len)];
        b.examples += 1;
        b.keys += a.keys;
        add(&mut b.entropy, &a.entropy);
        if let Some(n) = &a.normalised {
            b.normalised_examples += 1;
            add(&mut b.normalised, n);
        }
        Ok(())
    }

    /// The `attention` object: `layers` and `history_length`, a bucket per
    /// history-length bucket with its `examples`, mean `keys`, and per layer
    /// the mean `entropy` (nats) and mean `normalised_entropy` (over the
    /// `normalised_examples` that have more than one key); means over no
    /// example are null. `None` when no example was pushed (a model
    /// without attention) or the model has no attention layer.
    pub fn finish(&self) -> Option<Value> {
        let layers = self.layers.filter(|&l| l > 0)?;
        let mean = |sum: f64, n: usize| json!(if n == 0 { f64::NAN } else { sum / n as f64 });
        let buckets: Vec<Value> = metrics::HISTORY_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(&(label, _), b)| {
                json!({
                    "bucket": label,
                    "examples": b.examples,
                    "keys": mean(b.keys as f64, b.examples),
                    "entropy": b.entropy.iter().map(|&s| mean(s, b.examples)).collect::<Vec<_>>(),
                    "normalised_examples": b.normalised_examples,
                    "normalised_entropy": b.normalised.iter().map(|&s| mean(s, b.normalised_examples)).collect::<Vec<_>>(),
                })
            })
            .collect();
        Some(json!({ "layers": layers, "history_length": buckets }))
    }
}

/// `sums[i] += values[i]`.
fn add(sums: &mut [f64], values: &[f64]) {
    for (s, v) in sums.iter_mut().zip(values) {
        *s += v;
    }
}

/// Each unit's (user's or session's) training sequence as a sorted,
/// deduplicated item list, for `exclude_seen`.
pub fn training_items(data: &SequenceData) -> HashMap<i64, Vec<usize>> {
    data.train
        .iter()
        .map(|(unit, items)| {
            let mut seen: Vec<usize> = items.iter().map(|i| *i as usize).collect();
            seen.sort_unstable();
            seen.dedup();
            (*unit, seen)
        })
        .collect()
}

/// What `exclude_seen` removes from an example's candidates: every item its
/// unit met before the target — the whole training sequence, not only the
/// history the example keeps (`sequences` cuts that to `max_len`), plus
/// that history (which also holds the validation target when the test
/// target is ranked). The target itself always stays a candidate.
pub fn seen_items(e: &Example, training: &HashMap<i64, Vec<usize>>) -> Vec<usize> {
    let mut seen: Vec<usize> = e.history.iter().map(|i| *i as usize).collect();
    if let Some(items) = training.get(&e.user) {
        seen.extend_from_slice(items);
    }
    seen.sort_unstable();
    seen.dedup();
    seen
}

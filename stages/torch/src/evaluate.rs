//! The `evaluate` kind's implementation (declared in
//! `seqpipe_stages::evaluate`): scores histories in batches with the trained
//! model and ranks each held-out target against the whole catalogue. Each
//! example's top-K list is folded into a [`metrics::Accumulator`] as soon as
//! its batch is scored, so no users × items matrix is ever held.

use seqpipe::stage::{KindInfo, StageContext, TypedStage};
use seqpipe_stages::evaluate::{check, Evaluate, Params};
use seqpipe_stages::metrics;
use seqpipe_stages::seqdata::{Example, SequenceData};

use crate::models::Scorer;

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
            let mut acc = metrics::Accumulator::new(&p.k, popularity.clone());
            rank_all(scorer.as_ref(), examples, &p, &mut acc, &|n| {
                bar.inc(n as u64)
            })?;
            bar.finish_and_clear();
            out.insert(split.clone(), acc.finish(&options).into());
        }
        std::fs::write(
            ctx.output("metrics")?.join("metrics.json"),
            serde_json::to_vec_pretty(&out)?,
        )?;
        Ok(())
    }
}

/// Ranks each example's target and takes its top-K list (K = the largest
/// cut-off), scoring `batch_size` histories at once, and pushes both into
/// `acc`; returns the ranks.
pub fn rank_all(
    scorer: &dyn Scorer,
    examples: &[Example],
    p: &Params,
    acc: &mut metrics::Accumulator,
    progress: &dyn Fn(usize),
) -> anyhow::Result<Vec<usize>> {
    let mut ranks = Vec::with_capacity(examples.len());
    let max_k = acc.max_k();
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
            let rank = metrics::rank_of(row, e.target as usize, &exclude);
            let top = metrics::top_k(row, max_k, &exclude);
            acc.push(rank, &top, e.history.len(), e.target as usize);
            ranks.push(rank);
        }
        progress(chunk.len());
    }
    Ok(ranks)
}

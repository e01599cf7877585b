//! The `evaluate` kind's implementation (declared in
//! `seqpipe_stages::evaluate`): scores histories in batches with the trained
//! model and ranks each held-out target against the whole catalogue.

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

/// The rank of each example's target, scoring `batch_size` histories at once.
pub fn rank_all(
    scorer: &dyn Scorer,
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

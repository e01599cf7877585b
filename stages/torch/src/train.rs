//! The `train` kind's implementation (declared in `seqpipe_stages::train`).

use std::path::Path;

use anyhow::Context;

use seqpipe::stage::{KindInfo, StageContext, TypedStage};
use seqpipe_stages::seqdata::SequenceData;
use seqpipe_stages::train::{Params, Train};

use crate::models::bert4rec::Bert4RecConfig;
use crate::models::caser::CaserConfig;
use crate::models::gru4rec::Gru4RecConfig;
use crate::models::sasrec::SasRecConfig;
use crate::models::trainer::{self, ModelConfig, TrainConfig};
use crate::models::{itemknn::ItemKnn, markov::Markov, pop::Pop};

pub struct TrainImpl;

impl TypedStage for TrainImpl {
    type Params = Params;

    fn info(&self) -> KindInfo {
        Train.info()
    }

    fn validate(&self, p: &Params) -> Result<(), String> {
        Train.validate(p)
    }

    fn run(&self, p: Params, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        Train
            .validate(&p)
            .map_err(|e| anyhow::anyhow!("params.{e}"))?;
        let data = SequenceData::read(ctx.input("data")?)?;
        let out = ctx.output("model")?.to_path_buf();
        let n = data.meta.num_items;
        match p.model.as_str() {
            "pop" => Pop::fit(&data.train, n).save(&out),
            "markov" => Markov::fit_order(&data.train, n, p.order as usize).save(&out),
            "itemknn" => ItemKnn::fit(&data.train, n, p.knn_k as usize, p.shrink).save(&out),
            "sasrec" => {
                let model = SasRecConfig {
                    num_items: n,
                    max_len: p.max_len,
                    dim: p.dim,
                    layers: p.layers,
                    heads: p.heads,
                    ffn_dim: p.ffn_dim,
                    dropout: p.dropout,
                    pre_norm: p.pre_norm,
                };
                train_neural(&model, &p, &data, ctx, &out)
            }
            "gru4rec" => {
                let model = Gru4RecConfig {
                    num_items: n,
                    max_len: p.max_len,
                    dim: p.dim,
                    hidden: p.hidden,
                    layers: p.layers,
                    dropout: p.dropout,
                };
                train_neural(&model, &p, &data, ctx, &out)
            }
            "bert4rec" => {
                let model = Bert4RecConfig {
                    num_items: n,
                    max_len: p.max_len,
                    dim: p.dim,
                    layers: p.layers,
                    heads: p.heads,
                    ffn_dim: p.ffn_dim,
                    dropout: p.dropout,
                    pre_norm: p.pre_norm,
                    mask_prob: p.mask_prob,
                };
                train_neural(&model, &p, &data, ctx, &out)
            }
            "caser" => {
                let model = CaserConfig {
                    num_items: n,
                    max_len: p.max_len,
                    dim: p.dim,
                    h_filters: p.h_filters,
                    v_filters: p.v_filters,
                    dropout: p.dropout,
                    ..CaserConfig::new(n)
                };
                train_neural(&model, &p, &data, ctx, &out)
            }
            other => anyhow::bail!("params.model: no implementation for model `{other}`"),
        }
    }
}

/// Trains a neural model through the shared trainer: progress bar, resume
/// message and notes are the same for every model.
fn train_neural<C: ModelConfig>(
    model: &C,
    p: &Params,
    data: &SequenceData,
    ctx: &mut StageContext<'_>,
    out: &Path,
) -> anyhow::Result<()> {
    let device = crate::device::resolve(ctx.device)?;
    crate::note_runtime(ctx, device);
    let cfg = TrainConfig {
        epochs: p.epochs,
        batch_size: p.batch_size,
        lr: p.lr,
        weight_decay: p.weight_decay,
        clip_norm: p.clip_norm,
        ..TrainConfig::default()
    };
    let seqs: Vec<Vec<i64>> = data
        .train
        .iter()
        .map(|(_, s)| s.clone())
        .filter(|s| s.len() >= 2)
        .collect();
    let bar = ctx.progress.bar(ctx.stage, "epochs", p.epochs as u64);
    let resumed = trainer::checkpointed_epochs(&ctx.checkpoint_dir);
    if resumed > 0 {
        ctx.progress.println(&format!(
            "{}: resuming from the checkpoint after epoch {resumed} of {}",
            ctx.stage, p.epochs
        ));
        ctx.note("resumed_after_epoch", resumed);
        bar.set_position(resumed as u64);
    }
    let stage = ctx.stage.to_string();
    let mut on_epoch = |s: &trainer::EpochStats| {
        bar.set_position(s.epoch as u64 + 1);
        bar.set_message(format!("loss {:.4}", s.train_loss));
        tracing::info!(
            "{stage}: epoch {} loss {:.4} ({:.1}s, {:.0} seq/s)",
            s.epoch + 1,
            s.train_loss,
            s.seconds,
            s.samples_per_sec
        );
    };
    let (vs, stats) = trainer::train(
        model,
        &cfg,
        &seqs,
        ctx.seed,
        device,
        &ctx.checkpoint_dir,
        &mut on_epoch,
    )?;
    bar.finish_and_clear();
    // config.json is tagged with the model name so `models::load` can dispatch.
    trainer::save_model(&vs, model, out)
        .with_context(|| format!("{}: saving the trained {}", ctx.stage, C::NAME))?;
    write_training_log(out, &stats)?;
    // Timings are facts about this run, not about the model: they go to the
    // manifest, so the artifact's bytes (and hash) do not depend on them.
    let trained: Vec<_> = stats.iter().skip(resumed).collect();
    if !trained.is_empty() {
        let seconds: f64 = trained.iter().map(|s| s.seconds).sum();
        let rate = trained.iter().map(|s| s.samples_per_sec).sum::<f64>() / trained.len() as f64;
        ctx.note("train_seconds", format!("{seconds:.2}"));
        ctx.note("sequences_per_second", format!("{rate:.0}"));
    }
    Ok(())
}

/// `training.json`: the loss of every epoch, and nothing run-dependent.
fn write_training_log(out: &Path, stats: &[trainer::EpochStats]) -> anyhow::Result<()> {
    let epochs: Vec<_> = stats
        .iter()
        .map(|s| serde_json::json!({ "epoch": s.epoch + 1, "train_loss": s.train_loss }))
        .collect();
    let log = serde_json::json!({ "epochs": epochs });
    std::fs::write(out.join("training.json"), serde_json::to_vec_pretty(&log)?)?;
    Ok(())
}

//! `train` — fits a recommendation model on the training sequences.
//!
//! Params (defaults): `model` ("pop" | "markov" | "sasrec"; "sasrec"), and for
//! SASRec: `dim` (64), `layers` (2), `heads` (1), `ffn_dim` (0 = dim),
//! `dropout` (0.2), `max_len` (50), `pre_norm` (true), `epochs` (20),
//! `batch_size` (128), `lr` (1e-3), `weight_decay` (0.0), `clip_norm` (1.0).
//! Params a model does not use are left out of its key, so `lr` on a `pop`
//! stage changes nothing.
//! Inputs: `data` (sequences). Outputs: `model` (model: `config.json`,
//! `model.safetensors`, and `training.json` with one entry per epoch for
//! neural models).
//!
//! SASRec checkpoints every epoch into the stage's checkpoint folder, which
//! survives a killed run: the rerun resumes from the last completed epoch and,
//! on CPU, ends bit-for-bit where an uninterrupted run would have.

use seqpipe::stage::{KindInfo, ParamDoc, Port, Resource, StageContext, TypedStage};
use serde::{Deserialize, Serialize};

use crate::models::sasrec::SasRecConfig;
use crate::models::sasrec_train::{self, TrainConfig};
use crate::models::{markov::Markov, pop::Pop};
use crate::seqdata::SequenceData;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    pub model: String,
    pub dim: i64,
    pub layers: i64,
    pub heads: i64,
    pub ffn_dim: i64,
    pub dropout: f64,
    pub max_len: i64,
    pub pre_norm: bool,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub clip_norm: f64,
}

impl Default for Params {
    fn default() -> Self {
        let t = TrainConfig::default();
        Params {
            model: "sasrec".into(),
            dim: 64,
            layers: 2,
            heads: 1,
            ffn_dim: 0,
            dropout: 0.2,
            max_len: 50,
            pre_norm: true,
            epochs: t.epochs,
            batch_size: t.batch_size,
            lr: t.lr,
            weight_decay: t.weight_decay,
            clip_norm: t.clip_norm,
        }
    }
}

const MODELS: [&str; 3] = ["pop", "markov", "sasrec"];

pub struct Train;

pub const VERSION: u32 = 1;

impl TypedStage for Train {
    type Params = Params;

    fn info(&self) -> KindInfo {
        KindInfo {
            kind: "train",
            version: VERSION,
            summary: "Trains pop, markov or SASRec on the training sequences; SASRec resumes from per-epoch checkpoints.",
            inputs: vec![Port { name: "data", ty: "sequences", doc: "output of `sequences`" }],
            extra_inputs: None,
            outputs: vec![Port { name: "model", ty: "model", doc: "config.json + model.safetensors (+ training.json)" }],
            params: vec![
                ParamDoc { name: "model", doc: "pop | markov | sasrec" },
                ParamDoc { name: "dim", doc: "sasrec: embedding size" },
                ParamDoc { name: "layers", doc: "sasrec: self-attention blocks" },
                ParamDoc { name: "heads", doc: "sasrec: attention heads (must divide dim)" },
                ParamDoc { name: "ffn_dim", doc: "sasrec: feed-forward width (0 = dim)" },
                ParamDoc { name: "dropout", doc: "sasrec: dropout rate" },
                ParamDoc { name: "max_len", doc: "sasrec: most recent items the model reads" },
                ParamDoc { name: "pre_norm", doc: "sasrec: LayerNorm before (true) or after each block" },
                ParamDoc { name: "epochs", doc: "sasrec: passes over the training sequences" },
                ParamDoc { name: "batch_size", doc: "sasrec: sequences per step" },
                ParamDoc { name: "lr", doc: "sasrec: AdamW learning rate" },
                ParamDoc { name: "weight_decay", doc: "sasrec: AdamW decoupled weight decay" },
                ParamDoc { name: "clip_norm", doc: "sasrec: gradient-norm clipping (0 = off)" },
            ],
            resource: Resource::Tensor,
        }
    }

    fn canonical(&self, p: &Params) -> serde_json::Value {
        match p.model.as_str() {
            "sasrec" => serde_json::to_value(p).unwrap_or_default(),
            // Baselines have no hyperparameters: only the model name matters.
            other => serde_json::json!({ "model": other }),
        }
    }

    fn run(&self, p: Params, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        anyhow::ensure!(
            MODELS.contains(&p.model.as_str()),
            "params.model: unknown model {:?} (one of {})",
            p.model,
            MODELS.join(", ")
        );
        let data = SequenceData::read(ctx.input("data")?)?;
        let out = ctx.output("model")?.to_path_buf();
        let n = data.meta.num_items;
        match p.model.as_str() {
            "pop" => Pop::fit(&data.train, n).save(&out),
            "markov" => Markov::fit(&data.train, n).save(&out),
            _ => train_sasrec(&p, &data, ctx, &out),
        }
    }
}

fn train_sasrec(
    p: &Params,
    data: &SequenceData,
    ctx: &mut StageContext<'_>,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let device = crate::device::resolve(ctx.device)?;
    ctx.note("device", crate::device::describe(device));
    let model = SasRecConfig {
        num_items: data.meta.num_items,
        max_len: p.max_len,
        dim: p.dim,
        layers: p.layers,
        heads: p.heads,
        ffn_dim: p.ffn_dim,
        dropout: p.dropout,
        pre_norm: p.pre_norm,
    };
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
    let stage = ctx.stage.to_string();
    let mut on_epoch = |s: &sasrec_train::EpochStats| {
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
    let (vs, stats) = sasrec_train::train_sasrec(
        &model,
        &cfg,
        &seqs,
        ctx.seed,
        device,
        &ctx.checkpoint_dir,
        &mut on_epoch,
    )?;
    bar.finish_and_clear();
    sasrec_train::save_model(&vs, &model, out)?;
    // Tag the config with the model name so `models::load` can dispatch.
    let mut config = serde_json::to_value(&model)?;
    config["model"] = "sasrec".into();
    crate::models::write_config(out, &config)?;
    std::fs::write(
        out.join("training.json"),
        serde_json::to_vec_pretty(&stats)?,
    )?;
    Ok(())
}

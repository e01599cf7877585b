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
//! This file declares the kind; the models and the training loop live in the
//! `seqpipe-torch` crate and run in its worker process (see
//! [`crate::torch_worker`]). SASRec checkpoints every epoch into the stage's
//! checkpoint folder, which survives a killed run: the rerun resumes from the
//! last completed epoch and, on CPU, ends bit-for-bit where an uninterrupted
//! run would have.

use seqpipe::stage::{KindInfo, ParamDoc, Port, Resource, StageContext, TypedStage};
use serde::{Deserialize, Serialize};

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
        Params {
            model: "sasrec".into(),
            dim: 64,
            layers: 2,
            heads: 1,
            ffn_dim: 0,
            dropout: 0.2,
            max_len: 50,
            pre_norm: true,
            epochs: 20,
            batch_size: 128,
            lr: 1e-3,
            weight_decay: 0.0,
            clip_norm: 1.0,
        }
    }
}

/// The models this kind can train.
pub const MODELS: [&str; 3] = ["pop", "markov", "sasrec"];

pub struct Train;

pub const VERSION: u32 = 2;

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

    fn validate(&self, p: &Params) -> Result<(), String> {
        if !MODELS.contains(&p.model.as_str()) {
            return Err(format!(
                "model: unknown model {:?} (one of {})",
                p.model,
                MODELS.join(", ")
            ));
        }
        if p.model == "sasrec" {
            positive("dim", p.dim)?;
            positive("layers", p.layers)?;
            positive("heads", p.heads)?;
            positive("max_len", p.max_len)?;
            positive("epochs", p.epochs as i64)?;
            positive("batch_size", p.batch_size as i64)?;
            if p.dim % p.heads != 0 {
                return Err(format!("heads: {} does not divide dim {}", p.heads, p.dim));
            }
            if !(0.0..1.0).contains(&p.dropout) {
                return Err(format!("dropout: {} is not in [0, 1)", p.dropout));
            }
        }
        Ok(())
    }

    fn canonical(&self, p: &Params) -> serde_json::Value {
        match p.model.as_str() {
            "sasrec" => serde_json::to_value(p).unwrap_or_default(),
            // Baselines have no hyperparameters: only the model name matters.
            other => serde_json::json!({ "model": other }),
        }
    }

    fn run(&self, _p: Params, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        crate::torch_worker::run("train", ctx)
    }
}

fn positive(key: &str, value: i64) -> Result<(), String> {
    if value > 0 {
        Ok(())
    } else {
        Err(format!("{key}: must be above 0, not {value}"))
    }
}

//! `train` — fits a recommendation model on the training sequences.
//!
//! Params (defaults): `model` ("pop" | "markov" | "sasrec" | "gru4rec" |
//! "bert4rec"; "sasrec"); for the neural models (SASRec, GRU4Rec and
//! BERT4Rec): `dim` (64), `layers` (2), `dropout` (0.2), `max_len` (50),
//! `epochs` (20), `batch_size` (128), `lr` (1e-3), `weight_decay` (0.0),
//! `clip_norm` (1.0); for the transformers (SASRec and BERT4Rec): `heads`
//! (1), `ffn_dim` (0 = dim for SASRec, 4 * dim for BERT4Rec), `pre_norm`
//! (true); for GRU4Rec only: `hidden` (0 = dim; the GRU's hidden size; when
//! it equals `dim` item scores are tied to the embedding table, otherwise a
//! linear output layer is learnt); for BERT4Rec only: `mask_prob` (0.2; the
//! share of positions masked for its cloze training task, in (0, 1)).
//! BERT4Rec's `max_len` counts the `[MASK]` appended at scoring time, so it
//! reads the last `max_len - 1` history items and needs `max_len >= 2`.
//! Params a model does not use are left out of its key, so `lr` on a `pop`
//! stage, or `heads` on a `gru4rec` stage, changes nothing.
//! Inputs: `data` (sequences). Outputs: `model` (model: `config.json`,
//! `model.safetensors`, and `training.json` with one entry per epoch for
//! neural models).
//!
//! This file declares the kind; the models and the training loop live in the
//! `seqpipe-torch` crate and run in its worker process (see
//! [`crate::torch_worker`]). SASRec, GRU4Rec and BERT4Rec checkpoint every epoch into the stage's
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
    pub hidden: i64,
    pub dropout: f64,
    pub max_len: i64,
    pub pre_norm: bool,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub clip_norm: f64,
    pub mask_prob: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            model: "sasrec".into(),
            dim: 64,
            layers: 2,
            heads: 1,
            ffn_dim: 0,
            hidden: 0,
            dropout: 0.2,
            max_len: 50,
            pre_norm: true,
            epochs: 20,
            batch_size: 128,
            lr: 1e-3,
            weight_decay: 0.0,
            clip_norm: 1.0,
            mask_prob: 0.2,
        }
    }
}

/// The models this kind can train.
pub const MODELS: [&str; 5] = ["pop", "markov", "sasrec", "gru4rec", "bert4rec"];

/// The params each neural model is keyed on (besides `model`); the others
/// are left out of its key, so changing them reruns nothing.
const SASREC_PARAMS: [&str; 12] = [
    "dim",
    "layers",
    "heads",
    "ffn_dim",
    "dropout",
    "max_len",
    "pre_norm",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "clip_norm",
];
const GRU4REC_PARAMS: [&str; 10] = [
    "dim",
    "hidden",
    "layers",
    "dropout",
    "max_len",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "clip_norm",
];

const BERT4REC_PARAMS: [&str; 13] = [
    "dim",
    "layers",
    "heads",
    "ffn_dim",
    "dropout",
    "max_len",
    "pre_norm",
    "mask_prob",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "clip_norm",
];

pub struct Train;

pub const VERSION: u32 = 2;

impl TypedStage for Train {
    type Params = Params;

    fn info(&self) -> KindInfo {
        KindInfo {
            kind: "train",
            version: VERSION,
            summary: "Trains pop, markov, SASRec, GRU4Rec or BERT4Rec on the training sequences; the neural models resume from per-epoch checkpoints.",
            inputs: vec![Port { name: "data", ty: "sequences", doc: "output of `sequences`" }],
            extra_inputs: None,
            outputs: vec![Port { name: "model", ty: "model", doc: "config.json + model.safetensors (+ training.json)" }],
            params: vec![
                ParamDoc { name: "model", doc: "pop | markov | sasrec | gru4rec | bert4rec" },
                ParamDoc { name: "dim", doc: "sasrec, gru4rec, bert4rec: item embedding size" },
                ParamDoc { name: "layers", doc: "sasrec, bert4rec: self-attention blocks; gru4rec: stacked GRU layers" },
                ParamDoc { name: "heads", doc: "sasrec, bert4rec: attention heads (must divide dim)" },
                ParamDoc { name: "ffn_dim", doc: "sasrec: feed-forward width (0 = dim); bert4rec: the same (0 = 4 * dim)" },
                ParamDoc { name: "hidden", doc: "gru4rec: GRU hidden size (0 = dim: scores tied to the item embeddings; else a linear output layer)" },
                ParamDoc { name: "dropout", doc: "sasrec, gru4rec, bert4rec: dropout rate" },
                ParamDoc { name: "max_len", doc: "sasrec, gru4rec: most recent items the model reads; bert4rec: the same, [MASK] included (>= 2)" },
                ParamDoc { name: "pre_norm", doc: "sasrec, bert4rec: LayerNorm before (true) or after each block" },
                ParamDoc { name: "mask_prob", doc: "bert4rec: share of positions masked for the cloze task, in (0, 1)" },
                ParamDoc { name: "epochs", doc: "sasrec, gru4rec, bert4rec: passes over the training sequences" },
                ParamDoc { name: "batch_size", doc: "sasrec, gru4rec, bert4rec: sequences per step" },
                ParamDoc { name: "lr", doc: "sasrec, gru4rec, bert4rec: AdamW learning rate" },
                ParamDoc { name: "weight_decay", doc: "sasrec, gru4rec, bert4rec: AdamW decoupled weight decay" },
                ParamDoc { name: "clip_norm", doc: "sasrec, gru4rec, bert4rec: gradient-norm clipping (0 = off)" },
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
        if ["sasrec", "gru4rec", "bert4rec"].contains(&p.model.as_str()) {
            positive("dim", p.dim)?;
            positive("layers", p.layers)?;
            positive("max_len", p.max_len)?;
            positive("epochs", p.epochs as i64)?;
            positive("batch_size", p.batch_size as i64)?;
            if !(0.0..1.0).contains(&p.dropout) {
                return Err(format!("dropout: {} is not in [0, 1)", p.dropout));
            }
        }
        if p.model == "sasrec" || p.model == "bert4rec" {
            positive("heads", p.heads)?;
            if p.dim % p.heads != 0 {
                return Err(format!("heads: {} does not divide dim {}", p.heads, p.dim));
            }
        }
        if p.model == "bert4rec" {
            if p.max_len < 2 {
                return Err(format!(
                    "max_len: must be 2 or above for bert4rec, not {}",
                    p.max_len
                ));
            }
            if !(p.mask_prob > 0.0 && p.mask_prob < 1.0) {
                return Err(format!("mask_prob: {} is not in (0, 1)", p.mask_prob));
            }
            if p.ffn_dim < 0 {
                return Err(format!(
                    "ffn_dim: must be 0 (= 4 * dim) or above, not {}",
                    p.ffn_dim
                ));
            }
        }
        if p.model == "gru4rec" && p.hidden < 0 {
            return Err(format!(
                "hidden: must be 0 (= dim) or above, not {}",
                p.hidden
            ));
        }
        Ok(())
    }

    fn canonical(&self, p: &Params) -> serde_json::Value {
        match p.model.as_str() {
            "sasrec" => keep_params(p, &SASREC_PARAMS),
            "gru4rec" => keep_params(p, &GRU4REC_PARAMS),
            "bert4rec" => keep_params(p, &BERT4REC_PARAMS),
            // Baselines have no hyperparameters: only the model name matters.
            other => serde_json::json!({ "model": other }),
        }
    }

    fn run(&self, _p: Params, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        crate::torch_worker::run("train", ctx)
    }
}

/// `p` as JSON with only `model` and `keys`. For SASRec this is exactly the
/// object all its keys were computed from before `hidden` and `mask_prob`
/// existed, so existing SASRec artifacts stay cached.
fn keep_params(p: &Params, keys: &[&str]) -> serde_json::Value {
    let mut all = match serde_json::to_value(p) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => return serde_json::Value::Null,
    };
    all.retain(|k, _| k == "model" || keys.contains(&k.as_str()));
    serde_json::Value::Object(all)
}

fn positive(key: &str, value: i64) -> Result<(), String> {
    if value > 0 {
        Ok(())
    } else {
        Err(format!("{key}: must be above 0, not {value}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sasrec_key_ignores_hidden_and_is_unchanged() {
        let p = Params::default();
        let mut before = serde_json::to_value(&p).unwrap();
        before.as_object_mut().unwrap().remove("hidden");
        before.as_object_mut().unwrap().remove("mask_prob");
        assert_eq!(Train.canonical(&p), before);
        let other = Params {
            hidden: 32,
            mask_prob: 0.5,
            ..p
        };
        assert_eq!(Train.canonical(&other), before);
    }

    #[test]
    fn sasrec_and_gru4rec_keys_are_exactly_as_before_mask_prob() {
        // The canonical JSON texts from before `mask_prob` existed: their
        // hashes are the cache keys of existing artifacts.
        let sasrec = r#"{"batch_size":128,"clip_norm":1.0,"dim":64,"dropout":0.2,"epochs":20,"ffn_dim":0,"heads":1,"layers":2,"lr":0.001,"max_len":50,"model":"sasrec","pre_norm":true,"weight_decay":0.0}"#;
        let gru = r#"{"batch_size":128,"clip_norm":1.0,"dim":64,"dropout":0.2,"epochs":20,"hidden":0,"layers":2,"lr":0.001,"max_len":50,"model":"gru4rec","weight_decay":0.0}"#;
        let text = |p: &Params| {
            let v = Train.canonical(p);
            // Sorted keys, whatever the map's order.
            let sorted: std::collections::BTreeMap<String, serde_json::Value> =
                serde_json::from_value(v).unwrap();
            serde_json::to_string(&sorted).unwrap()
        };
        assert_eq!(text(&Params::default()), sasrec);
        let g = Params {
            model: "gru4rec".into(),
            mask_prob: 0.4,
            ..Params::default()
        };
        assert_eq!(text(&g), gru);
    }

    #[test]
    fn bert4rec_key_and_validation() {
        let p = Params {
            model: "bert4rec".into(),
            ..Params::default()
        };
        assert!(Train.validate(&p).is_ok());
        let key = Train.canonical(&p);
        let mut names: Vec<&str> = key
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        names.sort();
        let mut want: Vec<&str> = BERT4REC_PARAMS.iter().copied().chain(["model"]).collect();
        want.sort();
        assert_eq!(names, want);
        assert_eq!(
            Train.canonical(&Params {
                hidden: 9,
                ..p.clone()
            }),
            key
        );
        assert_ne!(
            Train.canonical(&Params {
                mask_prob: 0.3,
                ..p.clone()
            }),
            key
        );
        for bad in [0.0, 1.0, -0.1, f64::NAN] {
            let q = Params {
                mask_prob: bad,
                ..p.clone()
            };
            assert!(Train.validate(&q).unwrap_err().starts_with("mask_prob:"));
        }
        let q = Params {
            max_len: 1,
            ..p.clone()
        };
        assert!(Train.validate(&q).unwrap_err().starts_with("max_len:"));
        let q = Params { heads: 3, ..p };
        assert!(Train.validate(&q).unwrap_err().starts_with("heads:"));
    }

    #[test]
    fn gru4rec_key_holds_only_its_params() {
        let p = Params {
            model: "gru4rec".into(),
            ..Params::default()
        };
        let key = Train.canonical(&p);
        let mut names: Vec<&str> = key
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        names.sort();
        let mut want: Vec<&str> = GRU4REC_PARAMS.iter().copied().chain(["model"]).collect();
        want.sort();
        assert_eq!(names, want);
        let unused = Params {
            heads: 4,
            ffn_dim: 7,
            pre_norm: false,
            ..p.clone()
        };
        assert_eq!(Train.canonical(&unused), key);
        let used = Params {
            hidden: 32,
            ..p.clone()
        };
        assert_ne!(Train.canonical(&used), key);
    }

    #[test]
    fn gru4rec_validation() {
        let p = Params {
            model: "gru4rec".into(),
            heads: 3,
            ..Params::default()
        };
        assert!(Train.validate(&p).is_ok(), "heads is not a gru4rec param");
        let bad = Params {
            hidden: -1,
            ..p.clone()
        };
        assert!(Train.validate(&bad).unwrap_err().starts_with("hidden:"));
        let bad = Params { layers: 0, ..p };
        assert!(Train.validate(&bad).unwrap_err().starts_with("layers:"));
    }
}

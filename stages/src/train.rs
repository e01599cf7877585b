//! `train` — fits a recommendation model on the training sequences.
//!
//! Params (defaults): `model` ("pop" | "markov" | "itemknn" | "sasrec" |
//! "gru4rec" | "bert4rec" | "caser" | "gsrec"; "sasrec"); for `markov`: `order` (1;
//! the Markov chain reads the last `order` items and backs off to shorter
//! contexts, then popularity); for `itemknn`: `knn_k` (100; neighbours kept
//! per item) and `shrink` (0.0; added to the cosine's denominator); for the
//! neural models (SASRec, GRU4Rec, BERT4Rec and Caser): `dim` (64),
//! `dropout` (0.2), `max_len` (50), `epochs` (20), `batch_size` (128), `lr`
//! (1e-3), `weight_decay` (0.0), `clip_norm` (1.0); for SASRec, GRU4Rec and
//! BERT4Rec: `layers` (2); for the transformers (SASRec and BERT4Rec): `heads`
//! (1), `ffn_dim` (0 = dim for SASRec, 4 * dim for BERT4Rec), `pre_norm`
//! (true); for GRU4Rec only: `hidden` (0 = dim; the GRU's hidden size; when
//! it equals `dim` item scores are tied to the embedding table, otherwise a
//! linear output layer is learnt); for BERT4Rec only: `mask_prob` (0.2; the
//! share of positions masked for its cloze training task, in (0, 1)).
//! BERT4Rec's `max_len` counts the `[MASK]` appended at scoring time, so it
//! reads the last `max_len - 1` history items and needs `max_len >= 2`.
//! For Caser only: `h_filters` (16; horizontal filters per height 1..=L)
//! and `v_filters` (4; vertical filters); Caser's `max_len` is its window L,
//! the most recent items each prediction reads (the paper uses L = 5: set
//! it, the shared default 50 makes Caser slow); it trains on one window per
//! position of the last 200 items of each sequence.
//! GSRec (self-attention feeding a GRU) reads `dim`, `layers` (attention
//! blocks), `heads`, `pre_norm`, `hidden` (0 = dim; the GRU's size, scores
//! through a linear layer), `gru_layers` (1; stacked GRUs) and `ffn`
//! (false; a feed-forward layer of width `ffn_dim`, 0 = dim, in each block)
//! besides the shared neural params.
//! Params a model does not use are left out of its key, so `lr` on a `pop`
//! stage, or `heads` on a `gru4rec` stage, changes nothing; `markov` is
//! keyed on `order` only when it is not 1, so first-order keys are the ones
//! from before `order` existed.
//! Inputs: `data` (sequences); optional `init` (embeddings, e.g. from
//! `embed.infonce`). Outputs: `model` (model: `config.json`,
//! `model.safetensors`, and `training.json` with one entry per epoch for
//! neural models).
//!
//! `init` starts a neural model's item embedding table (`item_emb`) from
//! pretrained rows, matched by ORIGINAL item id: the sequences' `vocab.parquet`
//! (`index` → `item_id`) against the embeddings' `items.parquet` (`row` →
//! `item_id`, rows of `embeddings.safetensors`). Items the embeddings lack
//! keep their random initialisation, as does the padding row (and
//! BERT4Rec's `[MASK]` row); every other variable starts exactly as without
//! `init`. The rows are copied once, on a fresh start: a resumed run loads
//! its trained weights. The embeddings must be `dim` wide (else the run
//! fails: `init: embeddings are 128-d but dim = 64; set dim = 128`), and
//! `init` on pop, markov or itemknn is an error. The run manifest notes the
//! coverage (`init_items`: "812 of 1000 items (81.2%)"). Without `init`
//! nothing changes.
//!
//! This file declares the kind; the models and the training loop live in the
//! `seqpipe-torch` crate and run in its worker process (see
//! [`crate::torch_worker`]). The neural models checkpoint every epoch into the stage's
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
    pub order: i64,
    pub knn_k: i64,
    pub shrink: f64,
    pub h_filters: i64,
    pub v_filters: i64,
    pub gru_layers: i64,
    pub ffn: bool,
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
            order: 1,
            knn_k: 100,
            shrink: 0.0,
            h_filters: 16,
            v_filters: 4,
            gru_layers: 1,
            ffn: false,
        }
    }
}

/// The models this kind can train.
pub const MODELS: [&str; 8] = [
    "pop", "markov", "itemknn", "sasrec", "gru4rec", "bert4rec", "caser", "gsrec",
];

/// The models trained by gradient descent (through the worker's shared
/// trainer); the ones with an item embedding table that `init` fills.
pub const NEURAL: [&str; 5] = ["sasrec", "gru4rec", "bert4rec", "caser", "gsrec"];

/// The params each model is keyed on (besides `model`); the others are left
/// out of its key, so changing them reruns nothing.
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

const CASER_PARAMS: [&str; 10] = [
    "dim",
    "max_len",
    "h_filters",
    "v_filters",
    "dropout",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "clip_norm",
];

const GSREC_PARAMS: [&str; 15] = [
    "dim",
    "layers",
    "heads",
    "ffn",
    "ffn_dim",
    "gru_layers",
    "hidden",
    "dropout",
    "max_len",
    "pre_norm",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "clip_norm",
];

const ITEMKNN_PARAMS: [&str; 2] = ["knn_k", "shrink"];

pub struct Train;

/// 3: GRU4Rec's item table starts at N(0, 1) (was N(0, 1/dim)).
pub const VERSION: u32 = 3;

impl TypedStage for Train {
    type Params = Params;

    fn info(&self) -> KindInfo {
        KindInfo {
            kind: "train",
            version: VERSION,
            summary: "Trains pop, markov (order k), item kNN, SASRec, GRU4Rec, BERT4Rec, Caser or GSRec on the training sequences; the neural models resume from per-epoch checkpoints.",
            inputs: vec![
                Port { optional: false, name: "data", ty: "sequences", doc: "output of `sequences`" },
                Port { optional: true, name: "init", ty: "embeddings", doc: "sasrec, gru4rec, bert4rec, caser, gsrec: pretrained item embeddings (e.g. `embed.infonce`) for the item table, matched by item id" },
            ],
            extra_inputs: None,
            outputs: vec![Port { optional: false, name: "model", ty: "model", doc: "config.json + model.safetensors (+ training.json)" }],
            params: vec![
                ParamDoc { name: "model", doc: "pop | markov | itemknn | sasrec | gru4rec | bert4rec | caser | gsrec" },
                ParamDoc { name: "order", doc: "markov: items of context (>= 1), backing off to shorter contexts, then popularity" },
                ParamDoc { name: "knn_k", doc: "itemknn: most similar items kept per item (>= 1)" },
                ParamDoc { name: "shrink", doc: "itemknn: added to the cosine's denominator, damping pairs seen by few users (>= 0)" },
                ParamDoc { name: "dim", doc: "sasrec, gru4rec, bert4rec, caser, gsrec: item embedding size" },
                ParamDoc { name: "layers", doc: "sasrec, bert4rec, gsrec: self-attention blocks; gru4rec: stacked GRU layers" },
                ParamDoc { name: "heads", doc: "sasrec, bert4rec, gsrec: attention heads (must divide dim)" },
                ParamDoc { name: "ffn_dim", doc: "sasrec, gsrec (with ffn): feed-forward width (0 = dim); bert4rec: the same (0 = 4 * dim)" },
                ParamDoc { name: "hidden", doc: "gru4rec: GRU hidden size (0 = dim: scores tied to the item embeddings; else a linear output layer); gsrec: GRU hidden size (0 = dim)" },
                ParamDoc { name: "gru_layers", doc: "gsrec: stacked GRU layers after the attention" },
                ParamDoc { name: "ffn", doc: "gsrec: add a feed-forward layer (width ffn_dim, 0 = dim) to each attention block" },
                ParamDoc { name: "h_filters", doc: "caser: horizontal convolution filters per height 1..=max_len" },
                ParamDoc { name: "v_filters", doc: "caser: vertical convolution filters" },
                ParamDoc { name: "dropout", doc: "sasrec, gru4rec, bert4rec, caser, gsrec: dropout rate" },
                ParamDoc { name: "max_len", doc: "sasrec, gru4rec, gsrec: most recent items the model reads; bert4rec: the same, [MASK] included (>= 2); caser: the window L each prediction reads (paper: 5)" },
                ParamDoc { name: "pre_norm", doc: "sasrec, bert4rec, gsrec: LayerNorm before (true) or after each block" },
                ParamDoc { name: "mask_prob", doc: "bert4rec: share of positions masked for the cloze task, in (0, 1)" },
                ParamDoc { name: "epochs", doc: "sasrec, gru4rec, bert4rec, caser, gsrec: passes over the training sequences" },
                ParamDoc { name: "batch_size", doc: "sasrec, gru4rec, bert4rec, caser, gsrec: sequences per step" },
                ParamDoc { name: "lr", doc: "sasrec, gru4rec, bert4rec, caser, gsrec: AdamW learning rate" },
                ParamDoc { name: "weight_decay", doc: "sasrec, gru4rec, bert4rec, caser, gsrec: AdamW decoupled weight decay" },
                ParamDoc { name: "clip_norm", doc: "sasrec, gru4rec, bert4rec, caser, gsrec: gradient-norm clipping (0 = off)" },
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
        if NEURAL.contains(&p.model.as_str()) {
            positive("dim", p.dim)?;
            if p.model != "caser" {
                positive("layers", p.layers)?;
            }
            positive("max_len", p.max_len)?;
            positive("epochs", p.epochs as i64)?;
            positive("batch_size", p.batch_size as i64)?;
            if !(0.0..1.0).contains(&p.dropout) {
                return Err(format!("dropout: {} is not in [0, 1)", p.dropout));
            }
        }
        if p.model == "sasrec" || p.model == "bert4rec" || p.model == "gsrec" {
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
        if p.model == "gsrec" {
            positive("gru_layers", p.gru_layers)?;
            if p.ffn_dim < 0 {
                return Err(format!(
                    "ffn_dim: must be 0 (= dim) or above, not {}",
                    p.ffn_dim
                ));
            }
        }
        if (p.model == "gru4rec" || p.model == "gsrec") && p.hidden < 0 {
            return Err(format!(
                "hidden: must be 0 (= dim) or above, not {}",
                p.hidden
            ));
        }
        if p.model == "caser" {
            positive("h_filters", p.h_filters)?;
            positive("v_filters", p.v_filters)?;
        }
        if p.model == "markov" {
            positive("order", p.order)?;
        }
        if p.model == "itemknn" {
            positive("knn_k", p.knn_k)?;
            if !(p.shrink >= 0.0 && p.shrink.is_finite()) {
                return Err(format!("shrink: must be 0 or above, not {}", p.shrink));
            }
        }
        Ok(())
    }

    fn canonical(&self, p: &Params) -> serde_json::Value {
        match p.model.as_str() {
            "sasrec" => keep_params(p, &SASREC_PARAMS),
            "gru4rec" => keep_params(p, &GRU4REC_PARAMS),
            "bert4rec" => keep_params(p, &BERT4REC_PARAMS),
            "caser" => keep_params(p, &CASER_PARAMS),
            "gsrec" => keep_params(p, &GSREC_PARAMS),
            "itemknn" => keep_params(p, &ITEMKNN_PARAMS),
            // First-order keys are those from before `order` existed.
            "markov" if p.order != 1 => keep_params(p, &["order"]),
            // pop and first-order markov: only the model name matters.
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
        for later in [
            "hidden",
            "mask_prob",
            "order",
            "knn_k",
            "shrink",
            "h_filters",
            "v_filters",
            "gru_layers",
            "ffn",
        ] {
            before.as_object_mut().unwrap().remove(later);
        }
        assert_eq!(Train.canonical(&p), before);
        let other = Params {
            hidden: 32,
            mask_prob: 0.5,
            order: 3,
            knn_k: 7,
            shrink: 2.0,
            h_filters: 2,
            v_filters: 9,
            gru_layers: 3,
            ffn: true,
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

    /// The sorted names in a canonical params object.
    fn key_names(v: &serde_json::Value) -> Vec<String> {
        let mut names: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        names.sort();
        names
    }

    #[test]
    fn markov_key_holds_order_only_above_one() {
        let p = Params {
            model: "markov".into(),
            ..Params::default()
        };
        // Exactly the key first-order markov had before `order` existed.
        assert_eq!(
            Train.canonical(&p),
            serde_json::json!({ "model": "markov" })
        );
        let unused = Params {
            lr: 0.5,
            knn_k: 3,
            max_len: 4,
            ..p.clone()
        };
        assert_eq!(Train.canonical(&unused), Train.canonical(&p));
        let second = Params {
            order: 2,
            ..p.clone()
        };
        assert_eq!(
            Train.canonical(&second),
            serde_json::json!({ "model": "markov", "order": 2 })
        );
        assert!(Train.validate(&second).is_ok());
        let bad = Params { order: 0, ..p };
        assert_eq!(
            Train.validate(&bad).unwrap_err(),
            "order: must be above 0, not 0"
        );
    }

    #[test]
    fn itemknn_key_and_validation() {
        let p = Params {
            model: "itemknn".into(),
            ..Params::default()
        };
        assert!(Train.validate(&p).is_ok());
        let key = Train.canonical(&p);
        assert_eq!(key_names(&key), ["knn_k", "model", "shrink"]);
        let unused = Params {
            lr: 0.5,
            epochs: 3,
            order: 2,
            dim: 8,
            ..p.clone()
        };
        assert_eq!(Train.canonical(&unused), key);
        assert_ne!(
            Train.canonical(&Params {
                knn_k: 5,
                ..p.clone()
            }),
            key
        );
        assert_ne!(
            Train.canonical(&Params {
                shrink: 10.0,
                ..p.clone()
            }),
            key
        );
        let bad = Params {
            knn_k: 0,
            ..p.clone()
        };
        assert_eq!(
            Train.validate(&bad).unwrap_err(),
            "knn_k: must be above 0, not 0"
        );
        for shrink in [-1.0, f64::NAN, f64::INFINITY] {
            let bad = Params {
                shrink,
                ..p.clone()
            };
            assert!(
                Train.validate(&bad).unwrap_err().starts_with("shrink:"),
                "{shrink}"
            );
        }
        // Neural params are not checked for itemknn.
        assert!(Train.validate(&Params { dim: 0, ..p }).is_ok());
    }

    #[test]
    fn gsrec_key_and_validation() {
        let p = Params {
            model: "gsrec".into(),
            ..Params::default()
        };
        let key = Train.canonical(&p);
        let mut want: Vec<&str> = GSREC_PARAMS.iter().copied().chain(["model"]).collect();
        want.sort();
        let got: Vec<&str> = key
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(got, want);
        let bad = Params {
            gru_layers: 0,
            ..p.clone()
        };
        assert!(Train.validate(&bad).unwrap_err().starts_with("gru_layers:"));
        let bad = Params { heads: 3, ..p };
        assert!(Train.validate(&bad).unwrap_err().starts_with("heads:"));
    }

    #[test]
    fn caser_key_and_validation() {
        let p = Params {
            model: "caser".into(),
            max_len: 5,
            ..Params::default()
        };
        assert!(Train.validate(&p).is_ok());
        let key = Train.canonical(&p);
        let mut want: Vec<&str> = CASER_PARAMS.iter().copied().chain(["model"]).collect();
        want.sort();
        assert_eq!(key_names(&key), want);
        let unused = Params {
            layers: 0,
            heads: 3,
            order: 2,
            knn_k: 1,
            mask_prob: 0.9,
            ..p.clone()
        };
        assert_eq!(Train.canonical(&unused), key);
        assert!(
            Train.validate(&unused).is_ok(),
            "layers is not a caser param"
        );
        for used in [
            Params {
                h_filters: 2,
                ..p.clone()
            },
            Params {
                v_filters: 1,
                ..p.clone()
            },
            Params {
                max_len: 3,
                ..p.clone()
            },
        ] {
            assert_ne!(Train.canonical(&used), key);
        }
        for (bad, prefix) in [
            (
                Params {
                    h_filters: 0,
                    ..p.clone()
                },
                "h_filters:",
            ),
            (
                Params {
                    v_filters: -1,
                    ..p.clone()
                },
                "v_filters:",
            ),
            (
                Params {
                    max_len: 0,
                    ..p.clone()
                },
                "max_len:",
            ),
            (
                Params {
                    dim: 0,
                    ..p.clone()
                },
                "dim:",
            ),
            (
                Params {
                    dropout: 1.0,
                    ..p.clone()
                },
                "dropout:",
            ),
        ] {
            let e = Train.validate(&bad).unwrap_err();
            assert!(e.starts_with(prefix), "{e}");
        }
    }

    #[test]
    fn new_params_stay_out_of_other_models_keys() {
        for model in ["sasrec", "gru4rec", "bert4rec", "pop"] {
            let p = Params {
                model: model.into(),
                ..Params::default()
            };
            let q = Params {
                order: 3,
                knn_k: 5,
                shrink: 1.0,
                h_filters: 2,
                v_filters: 2,
                ..p.clone()
            };
            assert_eq!(Train.canonical(&q), Train.canonical(&p), "{model}");
            assert!(Train
                .validate(&Params {
                    order: 0,
                    knn_k: 0,
                    h_filters: 0,
                    ..p
                })
                .is_ok());
        }
    }
}

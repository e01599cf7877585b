//! `embed.infonce` — contrastive item embeddings from a co-occurrence graph:
//! items bought or viewed together are pulled together, other items pushed
//! apart, with the InfoNCE loss (as in the T-ECD study, whose 128-d
//! embeddings, trained on co-purchase and co-view pairs, then initialise
//! GRU4Rec and SASRec through `train`'s `init` input).
//!
//! Params (defaults): `dim` (128; the embedding size, >= 2), `hidden` (0 =
//! dim; the projection's hidden width), `temperature` (0.1), `edge_types`
//! ([] = every type; e.g. ["co_purchase"]), `weighted` (false: every edge
//! once per epoch; true: each epoch draws as many edges, with replacement,
//! with probability proportional to `weight`), `epochs` (10), `batch_size`
//! (8192 pairs, >= 2), `lr` (1e-3), `weight_decay` (0.0; Adam when 0, else
//! AdamW's decoupled decay), `plateau_factor` (0.5) and `plateau_patience`
//! (1; the learning rate is multiplied by the factor once the validation
//! loss has not improved for more than `plateau_patience` epochs, as
//! PyTorch's `ReduceLROnPlateau`), `valid_share` (0.05; the seeded share of
//! the edges held out, in [0, 1); 0 = no validation, the plateau then
//! watches the training loss), `query_items` ([] = the 3 most frequent
//! items of each domain) and `neighbours` (10; nearest items listed per
//! query).
//! Inputs: `graph` (table: `edges.parquet` and `items.parquet` as
//! `graph.cooccurrence` writes them). Outputs: `embeddings` (embeddings:
//! `embeddings.safetensors`, `embeddings.npy`, `items.parquet`,
//! `config.json`, `training.json`, `neighbours.json`, `neighbours.md`).
//!
//! Model: an item table (`V + 1` × `dim`, row `r` = the `r`-th item of
//! `items.parquet`, row 0 unused) → a two-layer MLP (`dim` → `hidden` →
//! `dim`, ReLU between) → L2 normalisation, one tower for both ends of an
//! edge. Loss: symmetric InfoNCE with in-batch negatives: for a batch of
//! `B` edges `(a_i, b_i)` the logits are `z_a · z_bᵀ / temperature` and the
//! loss is the mean of the cross-entropies with target `i` by rows and by
//! columns. In-batch copies of the positive item, and of the anchor itself,
//! are not counted as negatives (they are masked out of the softmax), as a
//! popular item often ends several edges of one batch. Edges are undirected
//! and kept once per type; an edge listed under both types is a pair twice.
//!
//! Validation (when `valid_share` > 0): the loss over the held-out edges,
//! in batches of `batch_size` in file order (an in-batch loss grows with
//! the batch, about as ln B, so it compares with the training loss only
//! when the held-out edges fill whole batches), and recall@10 — the share of
//! held-out edges `(a, b)` for which fewer than 10 items score above `b`
//! when `a` queries every item but itself — on the first 10 000 held-out
//! edges (the split is a seeded shuffle, so they are a random sample).
//!
//! Outputs: `embeddings.safetensors` holds `embeddings` [V + 1, dim]
//! float32: row 0 zeros (padding), row `r` the normalised projection of
//! item `r` (unit norm, so cosine = dot product); `embeddings.npy` the same
//! matrix for `numpy.load`; `items.parquet` maps `row` (int64, 1..=V) to
//! `item_id` (int64) and `domain` (utf8); `config.json` the params, `V`,
//! the edges used and the seed; `training.json` per epoch the training
//! loss, validation loss and recall@10 (null without validation) and the
//! learning rate the epoch ran with; `neighbours.json` / `neighbours.md`
//! each query item's nearest items by cosine, with domain and score, the
//! cross-domain ones marked. Timings (seconds, pairs per second) go to the
//! run manifest, not the artifact, so the same seed gives the same bytes on
//! CPU (on CUDA, index backward passes are not deterministic).
//!
//! Training checkpoints every epoch (weights, optimiser and plateau state,
//! statistics) into the stage's checkpoint folder; a killed run resumes
//! from the last completed epoch and, on CPU, ends bit for bit where an
//! uninterrupted run would have. Memory: 16 bytes per edge (its two 32-bit
//! item rows, its index in the split and in the epoch's order; 8 more for
//! the weight when `weighted`), batches built on the fly, and a
//! `batch_size`² score matrix per step; `edges.parquet` is read batch by
//! batch.
//!
//! This file declares the kind; it runs in the `seqpipe-torch` worker
//! (`stages/torch/src/embed.rs`).

use seqpipe::stage::{KindInfo, ParamDoc, Port, Resource, StageContext, TypedStage};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    pub dim: i64,
    pub hidden: i64,
    pub temperature: f64,
    pub edge_types: Vec<String>,
    pub weighted: bool,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub plateau_factor: f64,
    pub plateau_patience: usize,
    pub valid_share: f64,
    pub query_items: Vec<i64>,
    pub neighbours: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            dim: 128,
            hidden: 0,
            temperature: 0.1,
            edge_types: Vec::new(),
            weighted: false,
            epochs: 10,
            batch_size: 8192,
            lr: 1e-3,
            weight_decay: 0.0,
            plateau_factor: 0.5,
            plateau_patience: 1,
            valid_share: 0.05,
            query_items: Vec::new(),
            neighbours: 10,
        }
    }
}

impl Params {
    /// The projection's hidden width (`hidden`, or `dim` when 0).
    pub fn hidden_size(&self) -> i64 {
        if self.hidden > 0 {
            self.hidden
        } else {
            self.dim
        }
    }
}

/// The edge types `graph.cooccurrence` writes.
pub const EDGE_TYPES: [&str; 2] = ["co_purchase", "co_view"];

/// The kind's name.
pub const KIND: &str = "embed.infonce";

pub struct Embed;

/// The kind's version (in every key):
/// 2: the loss computed in blocks of rows with its gradient written out
/// (bounded memory at batch 8192): same loss, summed in another order, so
/// other bytes.
pub const VERSION: u32 = 2;

impl TypedStage for Embed {
    type Params = Params;

    fn info(&self) -> KindInfo {
        KindInfo {
            kind: KIND,
            version: VERSION,
            summary: "Trains contrastive (InfoNCE) item embeddings on co-purchase and co-view pairs, for `train`'s init input; resumes from per-epoch checkpoints.",
            inputs: vec![Port { optional: false, name: "graph", ty: "table", doc: "output of `graph.cooccurrence`: edges.parquet + items.parquet" }],
            extra_inputs: None,
            outputs: vec![Port { optional: false, name: "embeddings", ty: "embeddings", doc: "embeddings.safetensors / .npy [V+1, dim] (row 0 zeros, rows unit-norm), items.parquet (row → item_id, domain), config.json, training.json, neighbours.json/.md" }],
            params: vec![
                ParamDoc { name: "dim", doc: "embedding size (>= 2)" },
                ParamDoc { name: "hidden", doc: "projection MLP's hidden width (0 = dim)" },
                ParamDoc { name: "temperature", doc: "InfoNCE temperature (> 0)" },
                ParamDoc { name: "edge_types", doc: "edge types trained on: co_purchase, co_view ([] = all)" },
                ParamDoc { name: "weighted", doc: "draw edges with probability ∝ weight (true) or take each once per epoch (false)" },
                ParamDoc { name: "epochs", doc: "passes over the training edges" },
                ParamDoc { name: "batch_size", doc: "edges per step; the other edges of a batch are the negatives (>= 2)" },
                ParamDoc { name: "lr", doc: "Adam(W) learning rate at the start" },
                ParamDoc { name: "weight_decay", doc: "AdamW decoupled weight decay (0 = Adam)" },
                ParamDoc { name: "plateau_factor", doc: "learning-rate factor when the validation loss stalls, in (0, 1)" },
                ParamDoc { name: "plateau_patience", doc: "epochs without improvement tolerated before the rate drops" },
                ParamDoc { name: "valid_share", doc: "share of edges held out for validation loss and recall@10, in [0, 1)" },
                ParamDoc { name: "query_items", doc: "item ids whose neighbours are listed ([] = the 3 most frequent per domain)" },
                ParamDoc { name: "neighbours", doc: "nearest items listed per query item (>= 1)" },
            ],
            resource: Resource::Tensor,
        }
    }

    fn validate(&self, p: &Params) -> Result<(), String> {
        if p.dim < 2 {
            return Err(format!("dim: must be 2 or above, not {}", p.dim));
        }
        if p.hidden < 0 {
            return Err(format!(
                "hidden: must be 0 (= dim) or above, not {}",
                p.hidden
            ));
        }
        if !(p.temperature > 0.0 && p.temperature.is_finite()) {
            return Err(format!(
                "temperature: must be above 0, not {}",
                p.temperature
            ));
        }
        validate_edge_types(&p.edge_types)?;
        if p.epochs == 0 {
            return Err("epochs: must be above 0, not 0".into());
        }
        if p.batch_size < 2 {
            return Err(format!(
                "batch_size: must be 2 or above (the other pairs of a batch are the negatives), not {}",
                p.batch_size
            ));
        }
        if !(p.lr > 0.0 && p.lr.is_finite()) {
            return Err(format!("lr: must be above 0, not {}", p.lr));
        }
        if !(p.weight_decay >= 0.0 && p.weight_decay.is_finite()) {
            return Err(format!(
                "weight_decay: must be 0 or above, not {}",
                p.weight_decay
            ));
        }
        if !(p.plateau_factor > 0.0 && p.plateau_factor < 1.0) {
            return Err(format!(
                "plateau_factor: {} is not in (0, 1)",
                p.plateau_factor
            ));
        }
        if !(0.0..1.0).contains(&p.valid_share) {
            return Err(format!("valid_share: {} is not in [0, 1)", p.valid_share));
        }
        if p.neighbours == 0 {
            return Err("neighbours: must be above 0, not 0".into());
        }
        Ok(())
    }

    fn run(&self, _p: Params, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        crate::torch_worker::run(KIND, ctx)
    }
}

/// Every name must be a known edge type, named once.
fn validate_edge_types(types: &[String]) -> Result<(), String> {
    for (i, t) in types.iter().enumerate() {
        if !EDGE_TYPES.contains(&t.as_str()) {
            return Err(format!(
                "edge_types: unknown edge type {t:?} (one of {})",
                EDGE_TYPES.join(", ")
            ));
        }
        if types[..i].contains(t) {
            return Err(format!("edge_types: {t:?} is listed twice"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(p: Params) -> String {
        Embed.validate(&p).unwrap_err()
    }

    #[test]
    fn defaults_are_valid() {
        assert!(Embed.validate(&Params::default()).is_ok());
        assert_eq!(Params::default().hidden_size(), 128);
        let p = Params {
            dim: 16,
            hidden: 64,
            edge_types: vec!["co_view".into()],
            valid_share: 0.0,
            ..Params::default()
        };
        assert!(Embed.validate(&p).is_ok());
        assert_eq!(p.hidden_size(), 64);
    }

    #[test]
    fn bad_params_name_their_key() {
        let d = Params::default;
        let cases = [
            (Params { dim: 1, ..d() }, "dim: must be 2 or above, not 1"),
            (
                Params { hidden: -1, ..d() },
                "hidden: must be 0 (= dim) or above, not -1",
            ),
            (
                Params {
                    temperature: 0.0,
                    ..d()
                },
                "temperature: must be above 0, not 0",
            ),
            (
                Params { epochs: 0, ..d() },
                "epochs: must be above 0, not 0",
            ),
            (Params { lr: -1.0, ..d() }, "lr: must be above 0, not -1"),
            (
                Params {
                    weight_decay: -0.5,
                    ..d()
                },
                "weight_decay: must be 0 or above, not -0.5",
            ),
            (
                Params {
                    plateau_factor: 1.0,
                    ..d()
                },
                "plateau_factor: 1 is not in (0, 1)",
            ),
            (
                Params {
                    valid_share: 1.0,
                    ..d()
                },
                "valid_share: 1 is not in [0, 1)",
            ),
            (
                Params {
                    valid_share: -0.1,
                    ..d()
                },
                "valid_share: -0.1 is not in [0, 1)",
            ),
            (
                Params {
                    neighbours: 0,
                    ..d()
                },
                "neighbours: must be above 0, not 0",
            ),
            (
                Params {
                    edge_types: vec!["co_buy".into()],
                    ..d()
                },
                "edge_types: unknown edge type \"co_buy\" (one of co_purchase, co_view)",
            ),
            (
                Params {
                    edge_types: vec!["co_view".into(), "co_view".into()],
                    ..d()
                },
                "edge_types: \"co_view\" is listed twice",
            ),
        ];
        for (p, want) in cases {
            assert_eq!(error_of(p), want);
        }
        assert!(error_of(Params {
            batch_size: 1,
            ..d()
        })
        .starts_with("batch_size: must be 2 or above"));
        assert!(error_of(Params {
            temperature: f64::NAN,
            ..d()
        })
        .starts_with("temperature:"));
    }
}

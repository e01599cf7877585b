//! `train` — fits a recommendation model on the training sequences.
//!
//! Params (defaults): `model` ("pop" | "markov" | "itemknn" | "sasrec" |
//! "gru4rec" | "bert4rec" | "caser" | "gsrec"; "sasrec"); for `markov`: `order` (1;
//! the Markov chain reads the last `order` items and backs off to shorter
//! contexts, then popularity); for `itemknn`: `knn_k` (100; neighbours kept
//! per item) and `shrink` (0.0; added to the cosine's denominator); for the
//! neural models (SASRec, GRU4Rec, BERT4Rec and Caser): `dim` (64),
//! `dropout` (0.2), `max_len` (50), `epochs` (20), `batch_size` (128), `lr`
//! (1e-3), `weight_decay` (0.0; on matrices and embedding tables),
//! `optimizer` ("adamw" | "adam"; "adamw": decoupled weight decay, or Adam
//! with the decay as L2 in the gradient; in the key only when "adam"),
//! `clip_norm` (1.0); for SASRec, GRU4Rec and
//! BERT4Rec: `layers` (2); for the transformers (SASRec and BERT4Rec): `heads`
//! (1), `ffn_dim` (0 = dim for SASRec, 4 * dim for BERT4Rec), `pre_norm`
//! (true); for SASRec only: `activation` ("gelu" | "relu"; "gelu": the
//! feed-forward non-linearity, ReLU being the paper's; in the key only when
//! "relu"); for GRU4Rec only: `hidden` (0 = dim; the GRU's hidden size; when
//! it equals `dim` item scores are tied to the embedding table, otherwise a
//! linear output layer is learnt), `preset` ("": "small" | "medium" |
//! "large" = `dim`/`hidden` 128/256, 256/256, 256/512, the GRU4Rec papers'
//! sizes; the key holds the sizes, not the name); for BERT4Rec only: `mask_prob` (0.2; the
//! share of positions masked for its cloze training task, in (0, 1)).
//! BERT4Rec's `max_len` counts the `[MASK]` appended at scoring time, so it
//! reads the last `max_len - 1` history items and needs `max_len >= 2`.
//! For Caser only: `h_filters` (16; horizontal filters per height 1..=L)
//! and `v_filters` (4; vertical filters); Caser's `max_len` is its window L,
//! the most recent items each prediction reads (the paper uses L = 5: set
//! it, the shared default 50 makes Caser slow); it trains on one window per
//! position of the last `train_len` (200) positions of each sequence — each
//! window reading the items before it, within the last `max(train_len,
//! max_len) + 1` items of the sequence. `train_len` enters Caser's key only
//! when it is not 200.
//! GSRec (self-attention feeding a GRU) reads `dim`, `layers` (attention
//! blocks), `heads`, `pre_norm`, `hidden` (0 = dim; the GRU's size, scores
//! through a linear layer), `gru_layers` (1; stacked GRUs) and `ffn`
//! (false; a feed-forward layer of width `ffn_dim`, 0 = dim, in each block)
//! besides the shared neural params.
//!
//! Loss (SASRec, GRU4Rec, Caser and GSRec): `loss` ("ce" | "bce" |
//! "bce_full"; "ce") —
//! "ce" is full-softmax cross-entropy over the whole catalogue at every
//! predicted position; "bce" is the SASRec paper's binary cross-entropy
//! (Kang & McAuley 2018; also Caser's): at every predicted position the
//! true next item and `negatives` (1) items drawn
//! uniformly, with replacement, from the catalogue minus padding and minus
//! the items of the user's training sequence (as the authors' sampler; a
//! user who has seen every item gets any item but the target), scored by
//! the model's output for just those items; loss `-log σ(pos) - Σ log(1 -
//! σ(neg))`, averaged over the real positions (padding never enters). The
//! draws come from a ChaCha stream keyed by (seed, epoch), so runs stay
//! bit-identical on CPU and resume bit-exactly. A user's own items are never
//! negatives, so such a model never learns to rank them low: evaluate it as
//! the paper does, with `evaluate`'s `exclude_seen = true` (on a planted
//! successor rule in short chains SASRec trained so ranks the next item
//! first for every user among the unseen items, for a third among all). `train_loss` in
//! `training.json` is then that sampled loss, while `valid_loss` stays the
//! full-softmax cross-entropy, comparable across losses. "bce_full" is
//! binary cross-entropy with logits over the whole catalogue with a one-hot
//! target (the GSRec thesis' `BCEWithLogitsLoss`): per predicted position
//! `-log σ(target) - Σ log(1 - σ(other))` over every other item, the user's
//! own included, averaged over the positions (summed over items, where
//! PyTorch's default averages: a constant factor that Adam's normalisation
//! mostly absorbs); it draws nothing, and with `training = "sliding"` each
//! example is scored at its last hidden state only, as the thesis trains. "bce" or
//! "bce_full" on another model (BERT4Rec's cloze task, pop, markov,
//! itemknn) is refused at plan time. `loss` enters the key only when not
//! "ce", `negatives` only under "bce" and when not 1.
//!
//! Training examples (SASRec, GRU4Rec, GSRec): `training` ("sequence" |
//! "sliding"; "sequence"). "sequence" trains on each sequence's last
//! `max_len + 1` items with a loss at every position (a causal model's
//! position t sees only the items up to t, so this is every prefix of that
//! window at once); "sliding" makes every position t >= 1 of every
//! sequence its own example — its last `max_len` items before t, left-
//! padded, predicting item t — so long sequences train on all their
//! items, at the cost of one example per interaction (GRU4Rec's
//! sliding-window setup). With `loss` "ce" or "bce_full"; in the key only
//! when "sliding".
//!
//! Mixed precision (neural models): `precision` ("fp32" | "bf16"; "fp32").
//! "bf16" runs training's forward passes and loss under LibTorch's bf16
//! autocast — matmuls, attention and recurrent cells in bf16, weights,
//! gradients and AdamW's moments in fp32, no gradient scaler (bf16 has
//! fp32's exponent range) — as `torch.autocast(dtype=torch.bfloat16)`.
//! Meant for CUDA (tensor cores run bf16 matmuls; not measured here yet);
//! CPU autocast takes it too, at whatever speed the CPU's bf16 support
//! gives. Validation and `evaluate` score in fp32. Resume stays bit-exact
//! on the CPU; `precision` enters the key only when "bf16".
//! Params a model does not use are left out of its key, so `lr` on a `pop`
//! stage, or `heads` on a `gru4rec` stage, changes nothing; `markov` is
//! keyed on `order` only when it is not 1, so first-order keys are the ones
//! from before `order` existed.
//!
//! Validation, learning-rate schedules and early stopping (neural models):
//! after every epoch the model scores the sequences' `valid` examples in
//! eval mode (no dropout, no random draw, no weight change) and records the
//! validation loss (mean full-softmax cross-entropy of the target) and
//! HR@10 / NDCG@10 over the whole catalogue, ranked under the same
//! protocol as `evaluate`: `exclude_seen` (false) leaves the user's training
//! items and history out of the candidates, `ties` ("expected") counts a
//! target tied with other items at the mean of its possible positions (see
//! [`crate::rank`]). Set them once for validation and evaluation in
//! `[pipeline.params]` (`exclude_seen = true`), so early stopping picks the
//! epoch that is best by the metric the evaluation reports; they enter the
//! key only when not the defaults. It costs one scoring pass over
//! the valid split per epoch — what `evaluate` spends on it, about one
//! forward pass of an epoch (some 10% of a GRU4Rec epoch on 2000 users and
//! 1000 items, less with bigger catalogues, where the training softmax
//! dominates); the run manifest's `valid_seconds` says what it took.
//! `valid_every` (1) validates after every N-th epoch and after the last
//! instead (0 = never: the curve's validation entries are null). Params:
//! `schedule` ("constant" |
//! "cosine" | "plateau"; "constant": the rate `lr` throughout); for
//! "cosine": `warmup_epochs` (0; must be below `epochs`) and `min_lr` (0.0;
//! in [0, lr)) — stepped every batch: the rate rises linearly over the
//! warm-up epochs' batches to `lr` (batch s of W warm-up batches gets
//! `lr * (s + 1) / W`), then falls along half a cosine towards `min_lr`
//! over the remaining batches; for "plateau": `plateau_factor` (0.5; in
//! (0, 1)) and `plateau_patience` (1) — stepped every epoch, as PyTorch's
//! `ReduceLROnPlateau` with its defaults (mode min, relative threshold
//! 1e-4): when the validation loss has not gone below `best * (1 - 1e-4)`
//! for MORE than `plateau_patience` epochs in a row, the rate of the
//! following epochs is multiplied by `plateau_factor`. `early_stopping` (0
//! = off, else a patience in epochs) with `early_stopping_metric`
//! ("ndcg@10" | "hr@10" | "valid_loss"; "ndcg@10"): training ends once the
//! metric has not strictly improved for `early_stopping` epochs in a row,
//! and the saved model holds the BEST epoch's weights (best-epoch restore;
//! the run manifest notes `best_epoch` and, when it ended before `epochs`,
//! `stopped_after_epoch`, both 1-based). "plateau" and early stopping need
//! validation examples (an empty `valid.parquet` is an error) every epoch
//! (`valid_every` = 1). These params
//! enter a neural model's key only when they differ from their defaults
//! (and then only those the schedule reads: `warmup_epochs` and `min_lr`
//! with "cosine", `plateau_*` with "plateau", `early_stopping_metric` with
//! `early_stopping` > 0; `valid_every` when not 1), so every key from
//! before they existed is unchanged; the other models ignore them.
//! Inputs: `data` (sequences); optional `init` (embeddings, e.g. from
//! `embed.infonce`). Outputs: `model` (model: `config.json`,
//! `model.safetensors`, and for neural models `training.json`: per epoch
//! `epoch` (1-based), `train_loss`, `valid_loss`, `valid_hr@10`,
//! `valid_ndcg@10` (null without validation examples) and `lr` (the rate of
//! the epoch's first batch), plus `best_epoch` under early stopping; no
//! timings, so its bytes are reproducible — seconds, sequences per second
//! and validation seconds go to the run manifest's notes).
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
//! last completed epoch — weights, optimiser, the schedule's state, the
//! early-stopping count and the best weights — and, on CPU, ends
//! bit-for-bit where an uninterrupted run would have.

use seqpipe::stage::{KindInfo, ParamDoc, Port, Resource, StageContext, TypedStage};
use serde::{Deserialize, Serialize};

use crate::rank::Ties;

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
    pub schedule: String,
    pub warmup_epochs: usize,
    pub min_lr: f64,
    pub plateau_factor: f64,
    pub plateau_patience: usize,
    pub early_stopping: usize,
    pub early_stopping_metric: String,
    pub valid_every: usize,
    pub loss: String,
    pub negatives: usize,
    pub train_len: i64,
    pub precision: String,
    pub activation: String,
    pub optimizer: String,
    pub preset: String,
    pub training: String,
    /// The validation protocol (what `evaluate` calls `exclude_seen` and
    /// `ties`, so one `[pipeline.params]` entry sets both).
    pub exclude_seen: bool,
    pub ties: Ties,
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
            schedule: "constant".into(),
            warmup_epochs: 0,
            min_lr: 0.0,
            plateau_factor: 0.5,
            plateau_patience: 1,
            early_stopping: 0,
            early_stopping_metric: "ndcg@10".into(),
            valid_every: 1,
            loss: "ce".into(),
            negatives: 1,
            train_len: 200,
            precision: "fp32".into(),
            activation: "gelu".into(),
            optimizer: "adamw".into(),
            preset: String::new(),
            training: "sequence".into(),
            exclude_seen: false,
            ties: Ties::Expected,
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

/// The arithmetic of a neural model's forward passes: fp32, or bf16
/// autocast (fp32 weights and optimiser; matmuls, attention and recurrent
/// cells in bf16 — on CUDA, and on CPUs with bf16 support).
pub const PRECISIONS: [&str; 2] = ["fp32", "bf16"];

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

/// The learning-rate schedules of the neural models.
pub const SCHEDULES: [&str; 3] = ["constant", "cosine", "plateau"];

/// The validation metrics early stopping can watch.
pub const STOP_METRICS: [&str; 3] = ["ndcg@10", "hr@10", "valid_loss"];

/// The training losses of the neural models.
pub const LOSSES: [&str; 3] = ["ce", "bce", "bce_full"];

/// The models `loss = "bce"` (sampled negatives) and `"bce_full"` (every
/// other item) train: the next-item models of the shared trainer.
/// BERT4Rec's cloze task keeps its softmax.
pub const BCE_MODELS: [&str; 4] = ["sasrec", "gru4rec", "caser", "gsrec"];

pub struct Train;

/// 3: GRU4Rec's item table starts at N(0, 1) (was N(0, 1/dim)).
/// 4: training.json carries per-epoch validation loss, HR@10, NDCG@10 and
/// the learning rate (the weights of default runs are unchanged, but an
/// artifact's bytes may differ only under a new key).
/// 5: dropout masks on CPU are drawn by ChaCha8 from one seed of torch's
/// generator per call (models/dropout.rs), not by LibTorch's per-element
/// mt19937: the same distribution, other draws, so other weights.
pub const VERSION: u32 = 5;

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
                ParamDoc { name: "schedule", doc: "neural models: learning-rate schedule: constant | cosine (linear warm-up, then cosine decay to min_lr, per batch) | plateau (ReduceLROnPlateau on the validation loss, per epoch)" },
                ParamDoc { name: "warmup_epochs", doc: "cosine: epochs of linear warm-up (below epochs)" },
                ParamDoc { name: "min_lr", doc: "cosine: the rate the cosine decays to, in [0, lr)" },
                ParamDoc { name: "plateau_factor", doc: "plateau: factor the rate is multiplied by on a plateau, in (0, 1)" },
                ParamDoc { name: "plateau_patience", doc: "plateau: epochs without a better validation loss tolerated before a drop (drops after more than this many)" },
                ParamDoc { name: "early_stopping", doc: "neural models: stop after this many epochs without improving early_stopping_metric and keep the best epoch's weights (0 = off)" },
                ParamDoc { name: "early_stopping_metric", doc: "neural models: ndcg@10 | hr@10 (higher is better) | valid_loss (lower is better), on the valid split" },
                ParamDoc { name: "exclude_seen", doc: "neural models: validation leaves the user's training items out of the candidates, as evaluate's exclude_seen (set both at once in [pipeline.params])" },
                ParamDoc { name: "ties", doc: "neural models: how validation ranks a target tied with other items: expected | pessimistic | optimistic, as evaluate's ties" },
                ParamDoc { name: "valid_every", doc: "neural models: validate after every N-th epoch and the last (1 = every epoch; 0 = never); plateau and early stopping need 1" },
                ParamDoc { name: "loss", doc: "sasrec, gru4rec, caser, gsrec: ce (full-softmax cross-entropy) | bce (binary cross-entropy of the target against `negatives` sampled items, as the SASRec paper) | bce_full (binary cross-entropy with logits over every item, one-hot target, as the GSRec thesis); valid_loss stays ce" },
                ParamDoc { name: "training", doc: "sasrec, gru4rec, gsrec: sequence (each sequence's last max_len + 1 items, a loss at every position) | sliding (every prefix predicts its next item: one example per position)" },
                ParamDoc { name: "preset", doc: "gru4rec: small (dim 128, hidden 256) | medium (256, 256) | large (256, 512), instead of dim and hidden" },
                ParamDoc { name: "optimizer", doc: "neural models: adamw (decoupled weight decay) | adam (weight decay as L2 in the gradient, torch.optim.Adam's); the same without weight_decay" },
                ParamDoc { name: "activation", doc: "sasrec: the feed-forward non-linearity, gelu | relu (the paper's)" },
                ParamDoc { name: "precision", doc: "neural models: fp32 | bf16 (autocast around forward passes, fp32 weights and optimiser; for CUDA)" },
                ParamDoc { name: "negatives", doc: "bce: negatives per position, drawn uniformly from the items the user's training sequence lacks (>= 1)" },
                ParamDoc { name: "train_len", doc: "caser: the most recent positions of each training sequence that become training windows (>= 1)" },
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
            validate_schedule(p)?;
        }
        validate_loss(p)?;
        if !PRECISIONS.contains(&p.precision.as_str()) {
            return Err(format!(
                "precision: unknown precision {:?} ({})",
                p.precision,
                PRECISIONS.join(", ")
            ));
        }
        if !["adamw", "adam"].contains(&p.optimizer.as_str()) {
            return Err(format!(
                "optimizer: unknown optimizer {:?} (adamw, adam)",
                p.optimizer
            ));
        }
        validate_preset(p)?;
        validate_training(p)?;
        if p.optimizer != "adamw" && !NEURAL.contains(&p.model.as_str()) {
            return Err(format!(
                "optimizer: {:?} is for the neural models ({}), not `{}`",
                p.optimizer,
                NEURAL.join(", "),
                p.model
            ));
        }
        if !["gelu", "relu"].contains(&p.activation.as_str()) {
            return Err(format!(
                "activation: unknown activation {:?} (gelu, relu)",
                p.activation
            ));
        }
        if p.activation != "gelu" && p.model != "sasrec" {
            return Err(format!(
                "activation: {:?} is a sasrec param, not one of `{}`",
                p.activation, p.model
            ));
        }
        if p.precision != "fp32" && !NEURAL.contains(&p.model.as_str()) {
            return Err(format!(
                "precision: \"{}\" is for the neural models ({}), not `{}`",
                p.precision,
                NEURAL.join(", "),
                p.model
            ));
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
            positive("train_len", p.train_len)?;
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
            "sasrec" => sasrec_key(p),
            "gru4rec" => neural_key(&with_preset(p), &GRU4REC_PARAMS),
            "bert4rec" => neural_key(p, &BERT4REC_PARAMS),
            "caser" => caser_key(p),
            "gsrec" => neural_key(p, &GSREC_PARAMS),
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

/// Caser's key: `train_len` joins its params only when it is not the
/// default, so keys from before it was a param are unchanged.
/// GRU4Rec's size presets (the GRU4Rec papers' small, medium and large
/// networks): name → (`dim`, `hidden`).
pub const GRU4REC_PRESETS: [(&str, i64, i64); 3] = [
    ("small", 128, 256),
    ("medium", 256, 256),
    ("large", 256, 512),
];

/// `p` with its `preset` (if any) written out as `dim` and `hidden`, and
/// the preset itself cleared — so `preset = "small"` and `dim = 128,
/// hidden = 256` are the same stage, with the same key.
pub fn with_preset(p: &Params) -> Params {
    match GRU4REC_PRESETS.iter().find(|(name, ..)| *name == p.preset) {
        Some(&(_, dim, hidden)) => Params {
            dim,
            hidden,
            preset: String::new(),
            ..p.clone()
        },
        None => p.clone(),
    }
}

/// SASRec's key: its params, with `activation` only when not the default
/// GELU (keys from before it existed stay).
fn sasrec_key(p: &Params) -> serde_json::Value {
    let mut used = SASREC_PARAMS.to_vec();
    if p.activation != Params::default().activation {
        used.push("activation");
    }
    neural_key(p, &used)
}

fn caser_key(p: &Params) -> serde_json::Value {
    let mut used = CASER_PARAMS.to_vec();
    if p.train_len != Params::default().train_len {
        used.push("train_len");
    }
    neural_key(p, &used)
}

/// A neural model's key: its `model_params`, plus the schedule and
/// early-stopping params that are in use and differ from their defaults —
/// so with the defaults the key is exactly the one from before they existed.
fn neural_key(p: &Params, model_params: &[&str]) -> serde_json::Value {
    let mut used: Vec<&str> = model_params.to_vec();
    let d = Params::default();
    if p.schedule != d.schedule {
        used.push("schedule");
    }
    if p.schedule == "cosine" {
        if p.warmup_epochs != d.warmup_epochs {
            used.push("warmup_epochs");
        }
        if p.min_lr != d.min_lr {
            used.push("min_lr");
        }
    }
    if p.schedule == "plateau" {
        if p.plateau_factor != d.plateau_factor {
            used.push("plateau_factor");
        }
        if p.plateau_patience != d.plateau_patience {
            used.push("plateau_patience");
        }
    }
    if p.valid_every != d.valid_every {
        used.push("valid_every");
    }
    if p.early_stopping != d.early_stopping {
        used.push("early_stopping");
        if p.early_stopping_metric != d.early_stopping_metric {
            used.push("early_stopping_metric");
        }
    }
    if p.loss != d.loss {
        used.push("loss");
        if p.loss == "bce" && p.negatives != d.negatives {
            used.push("negatives");
        }
    }
    if p.precision != d.precision {
        used.push("precision");
    }
    if p.optimizer != d.optimizer {
        used.push("optimizer");
    }
    if p.training != d.training {
        used.push("training");
    }
    if p.exclude_seen != d.exclude_seen {
        used.push("exclude_seen");
    }
    if p.ties != d.ties {
        used.push("ties");
    }
    keep_params(p, &used)
}

/// The models `training = "sliding"` is for: those trained on plain
/// next-item batches.
pub const SLIDING_MODELS: [&str; 3] = ["sasrec", "gru4rec", "gsrec"];

/// `training`: "sequence" (every model) or "sliding" (see the module docs).
fn validate_training(p: &Params) -> Result<(), String> {
    match p.training.as_str() {
        "sequence" => Ok(()),
        "sliding" if !SLIDING_MODELS.contains(&p.model.as_str()) => Err(format!(
            "training: \"sliding\" is for {}, not `{}`",
            SLIDING_MODELS.join(", "),
            p.model
        )),
        "sliding" if p.loss == "bce" => Err(
            "training: \"sliding\" takes loss = \"ce\" or \"bce_full\" (each window has one target)"
                .into(),
        ),
        "sliding" => Ok(()),
        other => Err(format!(
            "training: unknown training {other:?} (sequence, sliding)"
        )),
    }
}

/// `preset`: a GRU4Rec size by name, instead of `dim` and `hidden`.
fn validate_preset(p: &Params) -> Result<(), String> {
    if p.preset.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = GRU4REC_PRESETS.iter().map(|(n, ..)| *n).collect();
    if !names.contains(&p.preset.as_str()) {
        return Err(format!(
            "preset: unknown preset {:?} ({})",
            p.preset,
            names.join(", ")
        ));
    }
    if p.model != "gru4rec" {
        return Err(format!(
            "preset: presets are gru4rec sizes, not `{}`'s",
            p.model
        ));
    }
    let d = Params::default();
    if p.dim != d.dim || p.hidden != d.hidden {
        return Err(format!(
            "preset: {:?} sets dim and hidden; leave them out or drop the preset",
            p.preset
        ));
    }
    Ok(())
}

/// `loss` and, under "bce", `negatives`: any model may name the default
/// loss, but "bce" and "bce_full" only those that train with them.
fn validate_loss(p: &Params) -> Result<(), String> {
    if !LOSSES.contains(&p.loss.as_str()) {
        return Err(format!(
            "loss: unknown loss {:?} ({})",
            p.loss,
            LOSSES.join(", ")
        ));
    }
    if p.loss != "ce" && !BCE_MODELS.contains(&p.model.as_str()) {
        return Err(format!(
            "loss: {:?} is not available for model `{}` (only for {})",
            p.loss,
            p.model,
            BCE_MODELS.join(", ")
        ));
    }
    if p.loss == "bce" {
        positive("negatives", p.negatives as i64)?;
    }
    Ok(())
}

/// The schedule and early-stopping params of a neural model.
fn validate_schedule(p: &Params) -> Result<(), String> {
    if !SCHEDULES.contains(&p.schedule.as_str()) {
        return Err(format!(
            "schedule: unknown schedule {:?} ({})",
            p.schedule,
            SCHEDULES.join(", ")
        ));
    }
    if p.schedule == "cosine" {
        if p.warmup_epochs >= p.epochs {
            return Err(format!(
                "warmup_epochs: must be below epochs ({}), not {}",
                p.epochs, p.warmup_epochs
            ));
        }
        if !(p.min_lr >= 0.0 && p.min_lr < p.lr) {
            return Err(format!(
                "min_lr: must be in [0, lr = {}), not {}",
                p.lr, p.min_lr
            ));
        }
    }
    if p.schedule == "plateau" && !(p.plateau_factor > 0.0 && p.plateau_factor < 1.0) {
        return Err(format!(
            "plateau_factor: must be in (0, 1), not {}",
            p.plateau_factor
        ));
    }
    if p.early_stopping > 0 && !STOP_METRICS.contains(&p.early_stopping_metric.as_str()) {
        return Err(format!(
            "early_stopping_metric: unknown metric {:?} ({})",
            p.early_stopping_metric,
            STOP_METRICS.join(", ")
        ));
    }
    if p.valid_every != 1 && (p.schedule == "plateau" || p.early_stopping > 0) {
        return Err(format!(
            "valid_every: must be 1 with schedule = \"plateau\" or early_stopping, which read \
             every epoch's validation, not {}",
            p.valid_every
        ));
    }
    Ok(())
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
            "schedule",
            "warmup_epochs",
            "min_lr",
            "plateau_factor",
            "plateau_patience",
            "early_stopping",
            "early_stopping_metric",
            "valid_every",
            "loss",
            "negatives",
            "train_len",
            "precision",
            "activation",
            "optimizer",
            "preset",
            "training",
            "exclude_seen",
            "ties",
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
            // Unread: the schedule is constant and early stopping is off.
            warmup_epochs: 3,
            min_lr: 1e-5,
            plateau_factor: 0.1,
            plateau_patience: 4,
            early_stopping_metric: "valid_loss".into(),
            // Unread: the loss is "ce"; train_len is Caser's.
            negatives: 5,
            train_len: 7,
            ..p
        };
        assert_eq!(Train.canonical(&other), before);
    }

    /// The key's schedule and early-stopping entries for `p`, as
    /// (name, value) pairs beyond `model`'s own params.
    fn schedule_entries(p: &Params) -> Vec<(String, serde_json::Value)> {
        let base = Train.canonical(&Params {
            schedule: "constant".into(),
            early_stopping: 0,
            ..p.clone()
        });
        let key = Train.canonical(p);
        let mut extra: Vec<(String, serde_json::Value)> = key
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| !base.as_object().unwrap().contains_key(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        extra.sort_by(|a, b| a.0.cmp(&b.0));
        extra
    }

    #[test]
    fn schedule_params_enter_neural_keys_only_when_used_and_not_default() {
        use serde_json::json;
        for model in NEURAL {
            let p = Params {
                model: model.into(),
                max_len: 5,
                ..Params::default()
            };
            assert!(schedule_entries(&p).is_empty(), "{model}");
            let cosine = Params {
                schedule: "cosine".into(),
                ..p.clone()
            };
            assert_eq!(
                schedule_entries(&cosine),
                [("schedule".to_string(), json!("cosine"))],
                "{model}"
            );
            let cosine = Params {
                warmup_epochs: 2,
                min_lr: 1e-5,
                plateau_patience: 9,
                ..cosine
            };
            assert_eq!(
                schedule_entries(&cosine),
                [
                    ("min_lr".to_string(), json!(1e-5)),
                    ("schedule".to_string(), json!("cosine")),
                    ("warmup_epochs".to_string(), json!(2)),
                ],
                "{model}"
            );
            let plateau = Params {
                schedule: "plateau".into(),
                plateau_factor: 0.2,
                warmup_epochs: 2,
                ..p.clone()
            };
            assert_eq!(
                schedule_entries(&plateau),
                [
                    ("plateau_factor".to_string(), json!(0.2)),
                    ("schedule".to_string(), json!("plateau")),
                ],
                "{model}"
            );
            let stopping = Params {
                early_stopping: 3,
                ..p.clone()
            };
            assert_eq!(
                schedule_entries(&stopping),
                [("early_stopping".to_string(), json!(3))],
                "{model}"
            );
            let stopping = Params {
                early_stopping_metric: "valid_loss".into(),
                ..stopping
            };
            assert_eq!(
                schedule_entries(&stopping),
                [
                    ("early_stopping".to_string(), json!(3)),
                    ("early_stopping_metric".to_string(), json!("valid_loss")),
                ],
                "{model}"
            );
            let sparse = Params {
                valid_every: 0,
                ..p.clone()
            };
            assert_eq!(Train.canonical(&sparse)["valid_every"], json!(0), "{model}");
        }
        // The other models ignore them, in key and validation alike.
        for model in ["pop", "markov", "itemknn"] {
            let p = Params {
                model: model.into(),
                ..Params::default()
            };
            let q = Params {
                schedule: "linear".into(),
                early_stopping: 2,
                early_stopping_metric: "mrr".into(),
                ..p.clone()
            };
            assert_eq!(Train.canonical(&q), Train.canonical(&p), "{model}");
            assert!(Train.validate(&q).is_ok(), "{model}");
        }
    }

    #[test]
    fn sliding_training_is_for_next_item_models_with_cross_entropy() {
        let p = Params {
            model: "gru4rec".into(),
            training: "sliding".into(),
            ..Params::default()
        };
        assert!(Train.validate(&p).is_ok());
        assert_eq!(Train.canonical(&p)["training"], "sliding");
        assert!(!key_names(&Train.canonical(&Params::default())).contains(&"training".to_string()));
        let err = |q: Params| Train.validate(&q).unwrap_err();
        assert!(err(Params {
            model: "bert4rec".into(),
            ..p.clone()
        })
        .starts_with(r#"training: "sliding" is for sasrec, gru4rec, gsrec"#));
        assert!(err(Params {
            loss: "bce".into(),
            ..p.clone()
        })
        .contains(r#"takes loss = "ce" or "bce_full""#));
        // The full BCE has one target per window, like the cross-entropy.
        let full = Params {
            loss: "bce_full".into(),
            ..p.clone()
        };
        assert!(Train.validate(&full).is_ok());
        assert_eq!(
            err(Params {
                training: "prefix".into(),
                ..p
            }),
            r#"training: unknown training "prefix" (sequence, sliding)"#
        );
    }

    #[test]
    fn gru4rec_presets_are_their_sizes() {
        let p = Params {
            model: "gru4rec".into(),
            ..Params::default()
        };
        let small = Params {
            preset: "small".into(),
            ..p.clone()
        };
        let spelled = Params {
            dim: 128,
            hidden: 256,
            ..p.clone()
        };
        assert!(Train.validate(&small).is_ok());
        assert_eq!(Train.canonical(&small), Train.canonical(&spelled));
        assert_eq!(with_preset(&small).hidden, 256);
        let err = |q: Params| Train.validate(&q).unwrap_err();
        assert!(err(Params {
            preset: "huge".into(),
            ..p.clone()
        })
        .starts_with(r#"preset: unknown preset "huge" (small, medium, large)"#));
        assert!(err(Params {
            dim: 32,
            ..small.clone()
        })
        .contains("sets dim and hidden"));
        assert!(err(Params {
            model: "sasrec".into(),
            ..small
        })
        .contains("gru4rec sizes"));
    }

    #[test]
    fn optimizer_enters_the_key_only_when_adam() {
        let p = Params {
            model: "gru4rec".into(),
            ..Params::default()
        };
        assert!(!key_names(&Train.canonical(&p)).contains(&"optimizer".to_string()));
        let adam = Params {
            optimizer: "adam".into(),
            ..p.clone()
        };
        assert_eq!(Train.canonical(&adam)["optimizer"], "adam");
        assert_eq!(
            Train
                .validate(&Params {
                    optimizer: "sgd".into(),
                    ..p
                })
                .unwrap_err(),
            r#"optimizer: unknown optimizer "sgd" (adamw, adam)"#
        );
        assert!(Train
            .validate(&Params {
                model: "markov".into(),
                ..adam
            })
            .unwrap_err()
            .starts_with(r#"optimizer: "adam" is for the neural models"#));
    }

    #[test]
    fn activation_is_a_sasrec_param_in_its_key_only_when_relu() {
        let p = Params::default();
        let relu = Params {
            activation: "relu".into(),
            ..p.clone()
        };
        assert!(!key_names(&Train.canonical(&p)).contains(&"activation".to_string()));
        assert_eq!(Train.canonical(&relu)["activation"], "relu");
        let err = |q: Params| Train.validate(&q).unwrap_err();
        assert_eq!(
            err(Params {
                activation: "tanh".into(),
                ..p.clone()
            }),
            r#"activation: unknown activation "tanh" (gelu, relu)"#
        );
        assert!(err(Params {
            model: "gru4rec".into(),
            ..relu
        })
        .starts_with("activation: \"relu\" is a sasrec param"));
    }

    #[test]
    fn precision_enters_the_key_only_when_bf16_and_only_for_neural_models() {
        let p = Params {
            model: "sasrec".into(),
            ..Params::default()
        };
        let bf16 = Params {
            precision: "bf16".into(),
            ..p.clone()
        };
        assert!(!key_names(&Train.canonical(&p)).contains(&"precision".to_string()));
        assert_eq!(Train.canonical(&bf16)["precision"], "bf16");
        assert!(Train.validate(&bf16).is_ok());
        let err = |q: Params| Train.validate(&q).unwrap_err();
        assert_eq!(
            err(Params {
                precision: "fp16".into(),
                ..p.clone()
            }),
            r#"precision: unknown precision "fp16" (fp32, bf16)"#
        );
        assert!(err(Params {
            model: "pop".into(),
            ..bf16
        })
        .starts_with(r#"precision: "bf16" is for the neural models"#));
    }

    #[test]
    fn schedule_params_are_validated_by_name() {
        let p = Params {
            model: "gru4rec".into(),
            epochs: 5,
            ..Params::default()
        };
        let err = |q: Params| Train.validate(&q).unwrap_err();
        assert_eq!(
            err(Params {
                schedule: "linear".into(),
                ..p.clone()
            }),
            r#"schedule: unknown schedule "linear" (constant, cosine, plateau)"#
        );
        let cosine = Params {
            schedule: "cosine".into(),
            ..p.clone()
        };
        assert!(Train
            .validate(&Params {
                warmup_epochs: 4,
                ..cosine.clone()
            })
            .is_ok());
        assert_eq!(
            err(Params {
                warmup_epochs: 5,
                ..cosine.clone()
            }),
            "warmup_epochs: must be below epochs (5), not 5"
        );
        for min_lr in [-1e-4, 1e-3, 1.0, f64::NAN] {
            let e = err(Params {
                min_lr,
                ..cosine.clone()
            });
            assert!(e.starts_with("min_lr: must be in [0, lr = 0.001)"), "{e}");
        }
        for plateau_factor in [0.0, 1.0, 1.5, f64::NAN] {
            let e = err(Params {
                schedule: "plateau".into(),
                plateau_factor,
                ..p.clone()
            });
            assert!(e.starts_with("plateau_factor: must be in (0, 1)"), "{e}");
        }
        assert_eq!(
            err(Params {
                early_stopping: 2,
                early_stopping_metric: "mrr".into(),
                ..p.clone()
            }),
            r#"early_stopping_metric: unknown metric "mrr" (ndcg@10, hr@10, valid_loss)"#
        );
        for q in [
            Params {
                schedule: "plateau".into(),
                valid_every: 2,
                ..p.clone()
            },
            Params {
                early_stopping: 1,
                valid_every: 0,
                ..p.clone()
            },
        ] {
            assert!(err(q).starts_with("valid_every: must be 1 with"));
        }
        assert!(Train
            .validate(&Params {
                schedule: "cosine".into(),
                valid_every: 3,
                ..p.clone()
            })
            .is_ok());
        // Unread settings are not checked: no warm-up without cosine, no
        // metric without early stopping.
        assert!(Train
            .validate(&Params {
                warmup_epochs: 50,
                early_stopping_metric: "mrr".into(),
                ..p
            })
            .is_ok());
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

    #[test]
    fn loss_enters_the_key_only_when_bce_and_negatives_only_when_not_one() {
        use serde_json::json;
        for model in BCE_MODELS {
            let p = Params {
                model: model.into(),
                max_len: 5,
                ..Params::default()
            };
            let base = Train.canonical(&p);
            assert!(base.get("loss").is_none(), "{model}");
            // negatives is unread under "ce".
            assert_eq!(
                Train.canonical(&Params {
                    negatives: 4,
                    ..p.clone()
                }),
                base,
                "{model}"
            );
            let bce = Params {
                loss: "bce".into(),
                ..p.clone()
            };
            assert!(Train.validate(&bce).is_ok(), "{model}");
            let key = Train.canonical(&bce);
            assert_eq!(key["loss"], json!("bce"), "{model}");
            assert!(key.get("negatives").is_none(), "{model}");
            let mut rest = key.as_object().unwrap().clone();
            rest.remove("loss");
            assert_eq!(serde_json::Value::Object(rest), base, "{model}");
            let three = Train.canonical(&Params {
                negatives: 3,
                ..bce.clone()
            });
            assert_eq!(three["negatives"], json!(3), "{model}");
            assert_eq!(
                Train
                    .validate(&Params {
                        negatives: 0,
                        ..bce
                    })
                    .unwrap_err(),
                "negatives: must be above 0, not 0"
            );
            // "bce_full" reads no negatives: they stay out of its key, and
            // 0 is not refused.
            let full = Params {
                loss: "bce_full".into(),
                negatives: 0,
                ..p.clone()
            };
            assert!(Train.validate(&full).is_ok(), "{model}");
            let key = Train.canonical(&full);
            assert_eq!(key["loss"], json!("bce_full"), "{model}");
            assert!(key.get("negatives").is_none(), "{model}");
            let mut rest = key.as_object().unwrap().clone();
            rest.remove("loss");
            assert_eq!(serde_json::Value::Object(rest), base, "{model}");
        }
    }

    #[test]
    fn bce_is_refused_by_name_for_models_without_it() {
        for model in ["bert4rec", "pop", "markov", "itemknn"] {
            let p = Params {
                model: model.into(),
                loss: "bce".into(),
                ..Params::default()
            };
            let e = Train.validate(&p).unwrap_err();
            assert_eq!(
                e,
                format!(
                    "loss: \"bce\" is not available for model `{model}` (only for sasrec, gru4rec, caser, gsrec)"
                )
            );
            let full = Params {
                loss: "bce_full".into(),
                ..p.clone()
            };
            assert_eq!(
                Train.validate(&full).unwrap_err(),
                format!(
                    "loss: \"bce_full\" is not available for model `{model}` (only for sasrec, gru4rec, caser, gsrec)"
                )
            );
            // The default loss is fine everywhere and changes no key.
            let ce = Params {
                loss: "ce".into(),
                ..p
            };
            assert!(Train.validate(&ce).is_ok(), "{model}");
            assert_eq!(
                Train.canonical(&ce),
                Train.canonical(&Params {
                    model: model.into(),
                    ..Params::default()
                })
            );
        }
        let e = Train
            .validate(&Params {
                loss: "bpr".into(),
                ..Params::default()
            })
            .unwrap_err();
        assert_eq!(e, r#"loss: unknown loss "bpr" (ce, bce, bce_full)"#);
    }

    #[test]
    fn caser_train_len_is_keyed_only_when_not_200_and_validated() {
        let p = Params {
            model: "caser".into(),
            max_len: 5,
            ..Params::default()
        };
        let key = Train.canonical(&p);
        assert!(key.get("train_len").is_none());
        let q = Params {
            train_len: 50,
            ..p.clone()
        };
        assert!(Train.validate(&q).is_ok());
        assert_eq!(Train.canonical(&q)["train_len"], serde_json::json!(50));
        let e = Train
            .validate(&Params {
                train_len: 0,
                ..p.clone()
            })
            .unwrap_err();
        assert_eq!(e, "train_len: must be above 0, not 0");
        // Other models neither read nor check it.
        for model in ["sasrec", "gsrec", "gru4rec", "bert4rec"] {
            let m = Params {
                model: model.into(),
                ..Params::default()
            };
            let odd = Params {
                train_len: 0,
                ..m.clone()
            };
            assert!(Train.validate(&odd).is_ok(), "{model}");
            assert_eq!(Train.canonical(&odd), Train.canonical(&m), "{model}");
        }
    }
}

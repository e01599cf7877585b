//! The model-agnostic trainer: resumable, deterministic training of any
//! [`SequenceModel`] with full-softmax cross-entropy at every real position
//! (or, with [`Loss::SampledBce`], binary cross-entropy against sampled
//! negatives; with [`Loss::FullBce`], against every other item), plus
//! saving and loading of trained models.
//!
//! A model plugs in through two small traits. Its config implements
//! [`ModelConfig`] (name, validation, catalogue size, history length, how
//! to build the model on a var store, and optionally how to turn training
//! sequences into a [`TrainBatch`]: next-item targets by default, cloze
//! masking for BERT4Rec); the model implements
//! [`SequenceModel`] (left-padded `[B, L]` item ids → hidden states
//! `[B, L, D]`, hidden states → item logits, last-position scores). Batching,
//! the loss, the optimiser ([`AdamW`] with saved state), gradient clipping,
//! checkpoints and resume are written once here, so every model gets the same
//! guarantees.
//!
//! Determinism: an epoch's result depends only on the state at its start.
//! The batch order of epoch `e` is a permutation drawn from a fresh
//! `ChaCha8Rng` seeded with `seed` on stream `e` (never from a running RNG),
//! and `tch::manual_seed(seed + e)` is called at the start of the epoch for
//! dropout. A model that draws while building batches (masking) gets a
//! `ChaCha8Rng` that is likewise fresh per epoch, a function of `(seed, e)`
//! ([`batch_rng`]); the negatives of [`Loss::SampledBce`] come from a third
//! stream of the same kind ([`negative_rng`]), so the RNG state a
//! checkpoint needs is just `(seed, epoch)` and nothing is saved for it.
//! After every epoch the model weights, the optimiser state and the
//! statistics so far are checkpointed atomically; a later call on the same
//! checkpoint directory continues from the next epoch and, on CPU, ends with
//! bit-for-bit the same weights as an uninterrupted run. (On CUDA some kernels
//! — index/embedding backward, attention, cuDNN RNNs — are not deterministic,
//! so resumed and uninterrupted runs agree only statistically.)
//!
//! Dropout and initialisation draw from torch's *process-global* generator.
//! [`train`] therefore holds [`torch_rng_lock`] for its whole run, so two
//! trainings in one process never interleave their draws; other code in the
//! same process that draws from torch's RNG while a training runs (random
//! tensors, dropout in train mode, [`ModelConfig::build`] on an empty var
//! store) must hold the lock as well, or it breaks reproducibility.
//!
//! Pretrained item embeddings ([`train_from`] with an [`ItemInit`]) are
//! copied over rows of the item table right after the model is built, on a
//! fresh start only; they draw nothing, so every other variable starts as
//! it would without them.
//!
//! Validation: after every epoch (or every [`TrainConfig::valid_every`]-th),
//! when [`TrainData::valid`] holds examples,
//! the model scores their histories in eval mode (no dropout, no RNG draw,
//! no gradient) and [`validate`] records the mean full-softmax cross-entropy
//! of the targets and HR@10 / NDCG@10 over the whole catalogue, ranked as
//! the `evaluate` stage ranks with the same protocol ([`ValidProtocol`]:
//! the items of [`TrainData::valid_seen`] excluded, ties counted by
//! [`TrainConfig::ties`]). It changes no weight, so a training's weights do not
//! depend on whether it validates.
//!
//! Loss ([`TrainConfig::loss`]): full-softmax cross-entropy over every item
//! at every predicted position (the default), or the SASRec paper's binary
//! cross-entropy: at every predicted position the true next item and
//! `negatives` items drawn uniformly from the catalogue minus padding and
//! minus the items of the user's training sequence ([`draw_negative`]), each
//! scored by [`SequenceModel::item_scores`], loss `-log σ(pos) - Σ log(1 -
//! σ(neg))` averaged over the positions ([`bce_loss`]); or binary
//! cross-entropy with logits over the whole catalogue, the target's label 1
//! and every other item's 0 ([`Loss::FullBce`], [`full_bce_loss`]: the GSRec
//! thesis' loss; it draws nothing; with `sliding` every example is scored
//! at its last hidden state only, as the thesis trains). Validation always
//! reports the full-softmax cross-entropy, so validation losses compare
//! across losses.
//!
//! Learning rate: [`TrainConfig::schedule`] ([`Schedule`]: constant, cosine
//! with warm-up stepped per batch, or reduce-on-plateau on the validation
//! loss stepped per epoch). Early stopping ([`TrainConfig::early_stopping`])
//! watches a validation metric, ends the training once it has not improved
//! for `patience` epochs, and hands back the BEST epoch's weights.
//!
//! Checkpoint layout in `checkpoint_dir`: `checkpoint.json` (the commit
//! point: configuration, epochs done, stats with their exact bits, the
//! schedule's and early stopping's state, and the name of the tensor file)
//! and `checkpoint-epochNNNNN.safetensors` (`model.<var>` and
//! `optim.<state>` tensors, plus `best.<var>`, the best epoch's weights,
//! under early stopping). Files are written to a temporary name, synced
//! and renamed; the tensor file of the previous checkpoint is removed only
//! after the new `checkpoint.json` is in place. So a resumed run continues
//! the schedule, the early-stopping count and the best weights exactly
//! where the killed one left them.

use std::fs;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use seqpipe_stages::metrics::{self, Ties};
use seqpipe_stages::seqdata::Example;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tch::nn::{self, VarStore};
use tch::{Device, Kind, Reduction, Tensor};

use crate::autocast::{self, Precision};
use crate::models::left_pad_batch;
use crate::models::optim::{AdamW, AdamWConfig, LrScheduler, Schedule, SchedulerState};

/// A model's hyper-parameters, as the trainer needs them. Serialised next to
/// the weights (`config.json`, tagged with [`ModelConfig::NAME`]) and into
/// every checkpoint, where a resume compares them.
pub trait ModelConfig: Serialize + DeserializeOwned + Clone + PartialEq {
    /// The model built from this config.
    type Model: SequenceModel;
    /// The `model` tag of `config.json` that `models::load` dispatches on.
    const NAME: &'static str;
    /// Checks that the hyper-parameters are usable.
    fn check(&self) -> Result<()>;
    /// Number of real items; items are `1..=num_items`, 0 is padding.
    fn num_items(&self) -> i64;
    /// Longest history the model reads; training keeps the last `max_len`
    /// inputs of each sequence and scoring the last `max_len` history items.
    fn max_len(&self) -> i64;
    /// Builds the model under `p`, reusing variables the var store already
    /// holds (no RNG draw for those) and initialising missing ones from
    /// torch's global RNG.
    fn build(&self, p: &nn::Path) -> Self::Model;
    /// Like [`ModelConfig::build`], but missing variables are zero-filled
    /// without any RNG draw: for a model whose weights are loaded right after.
    fn build_uninit(&self, p: &nn::Path) -> Self::Model;
    /// The training batch for `windows` (each the last `max_len + 1` items of
    /// a training sequence, at least two): inputs, which positions are
    /// predicted, and their targets. The default is next-item prediction
    /// ([`next_item_batch`]). `rng` is the epoch's [`batch_rng`], for models
    /// that draw (the default draws nothing from it).
    fn training_batch(
        &self,
        windows: &[&[i64]],
        rng: &mut ChaCha8Rng,
        device: Device,
    ) -> TrainBatch {
        let _ = rng;
        next_item_batch(windows, device)
    }
}

/// A next-item model over LEFT-padded histories (items `1..=num_items`, 0 =
/// padding).
pub trait SequenceModel {
    /// `seqs`: [B, L] int64, `L <= max_len`. Returns [B, L, D]: the states
    /// [`ModelConfig::training_batch`]'s positions are read from. They do not
    /// depend on how much left padding the row has, and padded positions
    /// come out as zeros. For next-item models the state at position `t`
    /// depends only on items at positions `<= t` (it predicts the item at
    /// `t + 1`). `train` switches dropout on.
    fn encode(&self, seqs: &Tensor, train: bool) -> Tensor;
    /// Scores of items `1..=num_items` for hidden states [..., D]: returns
    /// [..., num_items], column `k` holding item `k + 1`, so that the padding
    /// item never enters the softmax.
    fn item_logits(&self, hidden: &Tensor) -> Tensor;
    /// The scores of some items only: `hidden` [T, D] and `columns` [T, K]
    /// (item minus one, as in [`SequenceModel::item_logits`]) → [T, K],
    /// entry `[t, k]` being `item_logits(hidden)[t, columns[t, k]]`. The
    /// sampled loss reads these; a model overrides the default (which
    /// scores every item and picks) to score just the K items.
    fn item_scores(&self, hidden: &Tensor, columns: &Tensor) -> Tensor {
        self.item_logits(hidden).gather(-1, columns, false)
    }
    /// Next-item scores after the last position of each left-padded history,
    /// in eval mode and without gradients: [B, num_items + 1] float, column
    /// `i` scoring item `i`, column 0 (padding) `-inf`.
    fn score_last(&self, seqs: &Tensor) -> Tensor;
    /// The device the model's weights live on.
    fn device(&self) -> Device;
}

/// Optimisation settings for [`train`]. Every field has a default.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default)]
pub struct TrainConfig {
    /// Total number of epochs (a resumed run trains the missing ones).
    pub epochs: usize,
    /// Sequences per batch.
    pub batch_size: usize,
    /// AdamW learning rate: the base rate [`TrainConfig::schedule`] starts from.
    pub lr: f64,
    /// Decoupled weight decay on matrices and embedding tables.
    pub weight_decay: f64,
    /// Global gradient-norm clipping; `<= 0` disables it.
    pub clip_norm: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// How the rate moves (constant by default). Left out of the JSON when
    /// constant, so checkpoints from before schedules existed still resume.
    #[serde(skip_serializing_if = "is_constant")]
    pub schedule: Schedule,
    /// Early stopping with best-epoch restore; off when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<EarlyStopping>,
    /// Validate after every `valid_every`-th epoch and after the last (1:
    /// every epoch, the default; 0: never). The plateau schedule and early
    /// stopping read every epoch's validation, so they need 1.
    #[serde(skip_serializing_if = "is_one")]
    pub valid_every: usize,
    /// The training objective (full-softmax cross-entropy by default). Left
    /// out of the JSON when it is the default, so checkpoints from before
    /// it existed still resume.
    #[serde(skip_serializing_if = "is_cross_entropy")]
    pub loss: Loss,
    /// fp32, or bf16 autocast around the forward passes of training (not
    /// validation, which scores in fp32 like `evaluate`). Left out of the
    /// JSON when fp32, so older checkpoints still resume.
    #[serde(skip_serializing_if = "is_fp32")]
    pub precision: Precision,
    /// AdamW (decoupled weight decay) or Adam (L2 added to the gradient).
    /// Left out of the JSON when AdamW.
    #[serde(skip_serializing_if = "is_adamw")]
    pub optimizer: Optimizer,
    /// Sliding-window training: every prefix of a sequence (its last
    /// `max_len` items) predicts its next item, the loss at that one
    /// position ([`sliding_windows`]), instead of each sequence's last
    /// `max_len + 1` items with a loss at every position. For the models
    /// whose batches are plain next-item batches (SASRec, GRU4Rec, GSRec),
    /// with the cross-entropy or the full binary cross-entropy. Left out of
    /// the JSON when off.
    #[serde(skip_serializing_if = "is_false")]
    pub sliding: bool,
    /// How validation ranks a target tied with other items (the `evaluate`
    /// rule, expected by default). Left out of the JSON when expected.
    #[serde(default, skip_serializing_if = "is_expected")]
    pub ties: Ties,
}

fn is_expected(t: &Ties) -> bool {
    *t == Ties::Expected
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The optimiser of the neural models (see [`super::optim`]).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Optimizer {
    #[default]
    #[serde(rename = "adamw")]
    AdamW,
    #[serde(rename = "adam")]
    Adam,
}

fn is_adamw(o: &Optimizer) -> bool {
    *o == Optimizer::AdamW
}

fn is_fp32(p: &Precision) -> bool {
    *p == Precision::Fp32
}

/// What training minimises at every predicted position.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Loss {
    /// Full-softmax cross-entropy over the whole catalogue.
    #[default]
    #[serde(rename = "ce")]
    CrossEntropy,
    /// Binary cross-entropy of the target against `negatives` items drawn
    /// uniformly (with replacement) from the catalogue minus the user's
    /// training items (Kang & McAuley 2018).
    #[serde(rename = "bce")]
    SampledBce { negatives: usize },
    /// Binary cross-entropy with logits over the whole catalogue, target 1
    /// for the true next item and 0 for every other (the GSRec thesis'
    /// one-hot `BCEWithLogitsLoss`), summed over items ([`full_bce_loss`]).
    #[serde(rename = "bce_full")]
    FullBce,
}

fn is_cross_entropy(l: &Loss) -> bool {
    *l == Loss::CrossEntropy
}

fn is_constant(s: &Schedule) -> bool {
    *s == Schedule::Constant
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 20,
            batch_size: 128,
            lr: 1e-3,
            weight_decay: 0.0,
            clip_norm: 1.0,
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-8,
            schedule: Schedule::Constant,
            early_stopping: None,
            valid_every: 1,
            loss: Loss::CrossEntropy,
            precision: Precision::Fp32,
            optimizer: Optimizer::AdamW,
            sliding: false,
            ties: Ties::Expected,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        ensure!(self.batch_size >= 1, "batch_size must be >= 1");
        ensure!(self.lr > 0.0 && self.lr.is_finite(), "lr must be positive");
        ensure!(self.weight_decay >= 0.0, "weight_decay must be >= 0");
        ensure!(
            (0.0..1.0).contains(&self.beta1) && (0.0..1.0).contains(&self.beta2),
            "beta1 and beta2 must be in [0, 1)"
        );
        ensure!(self.eps > 0.0, "eps must be positive");
        self.schedule.validate(self.epochs, self.lr)?;
        if let Some(stop) = &self.early_stopping {
            ensure!(stop.patience >= 1, "early stopping's patience must be >= 1");
        }
        if let Loss::SampledBce { negatives } = self.loss {
            ensure!(negatives >= 1, "the sampled loss needs at least 1 negative");
            ensure!(
                !self.sliding,
                "sliding-window training takes the cross-entropy loss"
            );
        }
        if let Some(user) = self.needs_validation() {
            ensure!(
                self.valid_every == 1,
                "valid_every must be 1 with {user}, which reads every epoch's validation"
            );
        }
        Ok(())
    }

    /// Whether epoch `epoch` (0-based) ends with a validation (when there
    /// are examples).
    pub fn validates_after(&self, epoch: usize) -> bool {
        self.valid_every > 0
            && ((epoch + 1).is_multiple_of(self.valid_every) || epoch + 1 == self.epochs)
    }

    /// What needs validation examples ("the plateau schedule", "early
    /// stopping"), or `None` when nothing does.
    pub fn needs_validation(&self) -> Option<&'static str> {
        if self.early_stopping.is_some() {
            Some("early stopping")
        } else if self.schedule.needs_validation() {
            Some("the plateau schedule")
        } else {
            None
        }
    }

    /// The config a checkpoint must match to be resumed: all of it but
    /// `epochs`, which may grow on resume — except under the cosine
    /// schedule, whose every rate depends on the total.
    fn resume_json(&self) -> Result<serde_json::Value> {
        let mut json = serde_json::to_value(self)?;
        if !matches!(self.schedule, Schedule::Cosine { .. }) {
            if let Some(obj) = json.as_object_mut() {
                obj.remove("epochs");
            }
        }
        Ok(json)
    }

    fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            clip_norm: self.clip_norm,
            coupled_decay: self.optimizer == Optimizer::Adam,
        }
    }
}

/// Early stopping: end the training once `metric` has not improved for
/// `patience` epochs in a row, and keep the best epoch's weights.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct EarlyStopping {
    /// Epochs without improvement that end the training (>= 1).
    pub patience: usize,
    pub metric: StopMetric,
}

/// The validation number early stopping watches.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMetric {
    /// NDCG@10, higher is better.
    #[serde(rename = "ndcg@10")]
    NdcgAt10,
    /// HR@10, higher is better.
    #[serde(rename = "hr@10")]
    HrAt10,
    /// The validation loss, lower is better.
    #[serde(rename = "valid_loss")]
    ValidLoss,
}

impl StopMetric {
    /// Every metric with its name (the `train` stage's
    /// `early_stopping_metric` values).
    pub const ALL: [(&'static str, StopMetric); 3] = [
        ("ndcg@10", StopMetric::NdcgAt10),
        ("hr@10", StopMetric::HrAt10),
        ("valid_loss", StopMetric::ValidLoss),
    ];

    /// The metric called `name`, if any.
    pub fn from_name(name: &str) -> Option<StopMetric> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, m)| *m)
    }

    fn of(self, v: &Validation) -> f64 {
        match self {
            StopMetric::NdcgAt10 => v.ndcg_at_10,
            StopMetric::HrAt10 => v.hr_at_10,
            StopMetric::ValidLoss => v.loss,
        }
    }

    /// Whether `value` is strictly better than `best`.
    fn improves(self, value: f64, best: f64) -> bool {
        match self {
            StopMetric::ValidLoss => value < best,
            StopMetric::NdcgAt10 | StopMetric::HrAt10 => value > best,
        }
    }
}

/// A model's numbers on held-out examples ([`validate`]).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct Validation {
    /// Mean full-softmax cross-entropy of the targets.
    pub loss: f64,
    /// Share of targets ranked 10th or better among all items.
    pub hr_at_10: f64,
    /// Mean of `1 / log2(rank + 1)` over targets ranked 10th or better (0
    /// for the others).
    pub ndcg_at_10: f64,
}

/// What one epoch did.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct EpochStats {
    /// 0-based epoch index.
    pub epoch: usize,
    /// Mean training loss per predicted position over the epoch (weighted
    /// by positions, computed with the weights of the moment, dropout on):
    /// the cross-entropy, or under [`Loss::SampledBce`] the sampled binary
    /// cross-entropy, or under [`Loss::FullBce`] the full one, so they are
    /// not comparable across losses.
    pub train_loss: f64,
    /// The learning rate of the epoch's first batch (the cosine schedule
    /// changes it every batch; the others hold it for the epoch). 0 in
    /// stats restored from checkpoints written before rates were recorded.
    #[serde(default)]
    pub lr: f64,
    /// The model on the validation examples after the epoch; `None`
    /// without them, or when the epoch did not validate
    /// ([`TrainConfig::valid_every`]).
    #[serde(default)]
    pub valid: Option<Validation>,
    /// Wall-clock seconds of the epoch's training (validation and
    /// checkpointing excluded).
    pub seconds: f64,
    /// Training sequences per second.
    pub samples_per_sec: f64,
    /// Wall-clock seconds of the epoch's validation.
    #[serde(default)]
    pub valid_seconds: f64,
}

static TORCH_RNG: Mutex<()> = Mutex::new(());

/// Serialises users of torch's process-global RNG; see the module docs.
/// Not re-entrant: do not call [`train`] while holding it.
pub fn torch_rng_lock() -> MutexGuard<'static, ()> {
    TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

const CHECKPOINT_META: &str = "checkpoint.json";
const CHECKPOINT_FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct CheckpointMeta {
    format: u32,
    epochs_done: usize,
    /// File name (in the checkpoint directory) of the tensors.
    tensors: String,
    seed: u64,
    /// The model config as serialised by [`ModelConfig`] (untagged, so that
    /// checkpoints written before the trainer was generic still resume).
    model: serde_json::Value,
    /// The training config without `epochs`, which may grow on resume.
    train: serde_json::Value,
    data_fingerprint: u64,
    stats: Vec<EpochStats>,
    /// Exact bits of `stats[i].train_loss` (decimal JSON may not round-trip).
    loss_bits: Vec<u64>,
    /// [`ItemInit::fingerprint`] of the pretrained rows the run started
    /// from; absent without them, so older checkpoints still resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    init: Option<u64>,
    /// [`valid_fingerprint`] of the validation examples; absent without
    /// them (and in checkpoints written before validation existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    valid_data: Option<u64>,
    /// Exact bits of each epoch's rate and validation numbers (empty in
    /// checkpoints written before they were recorded).
    #[serde(default)]
    epoch_bits: Vec<EpochBits>,
    /// The learning-rate schedule's state after `epochs_done` epochs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scheduler: Option<SchedulerState>,
    /// Early stopping's state, under early stopping (the best weights are
    /// the tensor file's `best.<var>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stopping: Option<Watch>,
}

/// One epoch's floats other than the training loss, as exact bits
/// (decimal JSON may not round-trip, and a resumed run must compare and
/// write exactly what the uninterrupted one would).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct EpochBits {
    lr: u64,
    /// loss, HR@10, NDCG@10.
    valid: Option<[u64; 3]>,
}

impl EpochBits {
    fn of(s: &EpochStats) -> EpochBits {
        EpochBits {
            lr: s.lr.to_bits(),
            valid: s.valid.map(|v| {
                [
                    v.loss.to_bits(),
                    v.hr_at_10.to_bits(),
                    v.ndcg_at_10.to_bits(),
                ]
            }),
        }
    }

    /// Puts the exact values back into `s`.
    fn restore(&self, s: &mut EpochStats) {
        s.lr = f64::from_bits(self.lr);
        s.valid = self.valid.map(|[loss, hr, ndcg]| Validation {
            loss: f64::from_bits(loss),
            hr_at_10: f64::from_bits(hr),
            ndcg_at_10: f64::from_bits(ndcg),
        });
    }
}

/// Pretrained rows for a model's item table (`item_emb`), copied over its
/// random initialisation once, when a training starts from scratch (a
/// resumed one loads trained weights instead). `train`'s `init` input.
pub struct ItemInit {
    /// [K] int64: the item-table rows to overwrite (items `1..=num_items`).
    pub rows: Tensor,
    /// [K, dim] float: their new values, on any device.
    pub values: Tensor,
}

impl ItemInit {
    /// The variable the rows go into; every neural model names its item table so.
    pub const VARIABLE: &'static str = "item_emb";

    /// FNV-1a over the rows and the values' bits: a checkpoint records it,
    /// so a run never resumes from one that started from other rows.
    pub fn fingerprint(&self) -> u64 {
        let cpu = |t: &Tensor, kind: Kind| t.to_device(Device::Cpu).to_kind(kind).flatten(0, -1);
        let rows = Vec::<i64>::try_from(cpu(&self.rows, Kind::Int64)).unwrap_or_default();
        let values = Vec::<f32>::try_from(cpu(&self.values, Kind::Float)).unwrap_or_default();
        let mut h = Fnv::new();
        h.eat(rows.len() as u64);
        rows.iter().for_each(|&r| h.eat(r as u64));
        values.iter().for_each(|&v| h.eat(v.to_bits() as u64));
        h.0
    }

    /// Copies the rows into `vs`'s item table, without recording gradients.
    fn apply(&self, vs: &VarStore) -> Result<()> {
        let mut table = vs
            .variables()
            .remove(Self::VARIABLE)
            .ok_or_else(|| anyhow::anyhow!("the model has no `{}` table", Self::VARIABLE))?;
        let (rows, dim) = (table.size()[0], table.size()[1]);
        ensure!(
            self.values.dim() == 2 && self.values.size()[1] == dim,
            "pretrained rows have shape {:?}, the item table is {rows} x {dim}",
            self.values.size()
        );
        let index = self.rows.to_device(table.device());
        let values = self.values.to_device(table.device()).to_kind(table.kind());
        let _ = tch::no_grad(|| table.f_index_copy_(0, &index, &values))?;
        Ok(())
    }
}

/// Trains the model `model_cfg` describes on `train_seqs` (one chronological
/// item sequence per user, items in `1..=num_items`), resuming from
/// `checkpoint_dir` if it holds a checkpoint of the same run (same model
/// config, training config apart from `epochs`, seed and data; anything else
/// is an error).
///
/// Each sequence `s` with at least two items contributes its last `max_len +
/// 1` items to [`ModelConfig::training_batch`]; by default that is input
/// `s[..n-1]` and targets `s[1..]`, cut to the last `max_len` positions. The
/// loss is `cfg.loss` at every predicted position: full-softmax
/// cross-entropy over all items, or binary cross-entropy against sampled
/// negatives.
///
/// `on_epoch` is called after each newly trained epoch, once its checkpoint
/// is committed. Returns the var store holding the model (rebuild the module
/// with `model_cfg.build(&vs.root())`, which then draws nothing) and the
/// stats of all epochs, restored ones included. A checkpoint with more epochs than `cfg.epochs`
/// is an error; one with exactly `cfg.epochs` is returned without training.
/// Without validation examples; see [`fit`] for them.
pub fn train<C: ModelConfig>(
    model_cfg: &C,
    cfg: &TrainConfig,
    train_seqs: &[Vec<i64>],
    seed: u64,
    device: Device,
    checkpoint_dir: &Path,
    on_epoch: &mut dyn FnMut(&EpochStats),
) -> Result<(VarStore, Vec<EpochStats>)> {
    train_from(
        model_cfg,
        cfg,
        train_seqs,
        seed,
        device,
        checkpoint_dir,
        None,
        on_epoch,
    )
}

/// [`train`], with the item table starting from pretrained rows when `init`
/// is given. They are copied in after the model is built (so the other
/// variables draw exactly what they draw without `init`) and only on a fresh
/// start; a checkpoint remembers their [`ItemInit::fingerprint`] and is
/// refused by a run with other rows, or none.
#[allow(clippy::too_many_arguments)]
pub fn train_from<C: ModelConfig>(
    model_cfg: &C,
    cfg: &TrainConfig,
    train_seqs: &[Vec<i64>],
    seed: u64,
    device: Device,
    checkpoint_dir: &Path,
    init: Option<&ItemInit>,
    on_epoch: &mut dyn FnMut(&EpochStats),
) -> Result<(VarStore, Vec<EpochStats>)> {
    let data = TrainData {
        train: train_seqs,
        valid: &[],
        valid_seen: &[],
        init,
    };
    let trained = fit(
        model_cfg,
        cfg,
        &data,
        seed,
        device,
        checkpoint_dir,
        on_epoch,
    )?;
    Ok((trained.vs, trained.stats))
}

/// What [`fit`] trains and validates on.
pub struct TrainData<'a> {
    /// One chronological item sequence per user, items in `1..=num_items`.
    pub train: &'a [Vec<i64>],
    /// Held-out examples (history → next item) scored after every epoch;
    /// may be empty unless the schedule or early stopping reads them
    /// ([`TrainConfig::needs_validation`]).
    pub valid: &'a [Example],
    /// Per validation example, the sorted items left out of its candidates
    /// (`exclude_seen`); empty = nothing excluded.
    pub valid_seen: &'a [Vec<usize>],
    /// Pretrained item rows, as for [`train_from`].
    pub init: Option<&'a ItemInit>,
}

/// A finished [`fit`].
pub struct Trained {
    /// The model's variables: the last epoch's, or under early stopping the
    /// best epoch's.
    pub vs: VarStore,
    /// Every epoch's stats, restored ones included.
    pub stats: Vec<EpochStats>,
    /// Under early stopping: the 0-based epoch whose weights `vs` holds.
    pub best_epoch: Option<usize>,
    /// Whether early stopping ended the training before `cfg.epochs`.
    pub stopped_early: bool,
}

/// [`train_from`] with validation after every epoch (when `data.valid` has
/// examples), the learning-rate schedule and early stopping of `cfg`, and
/// the outcome in full. Resuming works as for [`train`]; a checkpoint also
/// restores the schedule's state, the early-stopping count and the best
/// weights, and one whose training stopped early is returned without
/// training. Under the cosine schedule `epochs` must match the
/// checkpoint's too, as every rate depends on it.
pub fn fit<C: ModelConfig>(
    model_cfg: &C,
    cfg: &TrainConfig,
    data: &TrainData<'_>,
    seed: u64,
    device: Device,
    checkpoint_dir: &Path,
    on_epoch: &mut dyn FnMut(&EpochStats),
) -> Result<Trained> {
    model_cfg.check()?;
    cfg.validate()?;
    if let Some(user) = cfg.needs_validation() {
        ensure!(
            !data.valid.is_empty(),
            "{user} needs validation examples, and there are none"
        );
    }
    let windows = if cfg.sliding {
        sliding_windows(data.train, model_cfg.num_items(), model_cfg.max_len())?
    } else {
        training_windows(data.train, model_cfg.num_items(), model_cfg.max_len())?
    };
    ensure!(
        !windows.is_empty(),
        "no training sequence has at least two items"
    );
    let avoid = match cfg.loss {
        Loss::CrossEntropy | Loss::FullBce => Vec::new(),
        Loss::SampledBce { .. } => {
            ensure!(
                model_cfg.num_items() >= 2,
                "the sampled loss needs at least 2 items to draw a negative besides the target"
            );
            training_items(data.train)
        }
    };
    let identity = RunIdentity {
        seed,
        model: serde_json::to_value(model_cfg)?,
        train: cfg.resume_json()?,
        data: data_fingerprint(data.train),
        init: data.init.map(ItemInit::fingerprint),
        valid: (!data.valid.is_empty()).then(|| valid_fingerprint(data.valid)),
    };
    fs::create_dir_all(checkpoint_dir)
        .with_context(|| format!("creating {}", checkpoint_dir.display()))?;

    let _rng_guard = torch_rng_lock();
    tch::manual_seed(seed as i64);
    let vs = VarStore::new(device);
    let model = model_cfg.build(&vs.root());
    let mut opt = AdamW::from_var_store(&vs, cfg.adamw());
    let run = Run {
        model_cfg,
        cfg,
        windows,
        avoid,
        seed,
        device,
    };
    let mut state = State::new(cfg, run.windows.len().div_ceil(cfg.batch_size));
    match read_meta::<CheckpointMeta>(checkpoint_dir)? {
        None => {
            if let Some(init) = data.init {
                init.apply(&vs)
                    .context("copying the pretrained item embeddings")?;
            }
        }
        Some(meta) => {
            identity.check(&meta, checkpoint_dir, cfg.epochs)?;
            state
                .restore(meta, checkpoint_dir, &vs, &mut opt, cfg)
                .with_context(|| format!("resuming from {}", checkpoint_dir.display()))?;
        }
    }

    while state.stats.len() < cfg.epochs && !state.stopped() {
        let epoch = state.stats.len();
        let start = Instant::now();
        let train_loss = run.train_epoch(&model, &mut opt, &state.scheduler, epoch)?;
        let seconds = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let valid = match data.valid {
            [] => None,
            _ if !cfg.validates_after(epoch) => None,
            examples => Some(validate(
                &model,
                examples,
                &ValidProtocol {
                    seen: data.valid_seen,
                    ties: cfg.ties,
                },
                model_cfg.max_len(),
                cfg.batch_size,
            )?),
        };
        let stat = EpochStats {
            epoch,
            train_loss,
            lr: state.scheduler.lr(epoch, 0),
            valid,
            seconds,
            samples_per_sec: run.windows.len() as f64 / seconds.max(1e-9),
            valid_seconds: start.elapsed().as_secs_f64(),
        };
        state.end_epoch(stat.clone(), &vs)?;
        let meta = state.meta(&identity);
        let best = state.best_tensors();
        write_checkpoint_with(checkpoint_dir, &vs, &opt, &best, &meta.tensors, &meta)?;
        on_epoch(&stat);
    }
    let stopped_early = state.stopped() && state.stats.len() < cfg.epochs;
    let best_epoch = state.restore_best(&vs)?;
    Ok(Trained {
        vs,
        stats: state.stats,
        best_epoch,
        stopped_early,
    })
}

/// What a checkpoint must have been written for to be resumed.
struct RunIdentity {
    seed: u64,
    model: serde_json::Value,
    train: serde_json::Value,
    data: u64,
    init: Option<u64>,
    valid: Option<u64>,
}

impl RunIdentity {
    /// Refuses a checkpoint of another run, or one past `epochs`.
    fn check(&self, meta: &CheckpointMeta, dir: &Path, epochs: usize) -> Result<()> {
        let dir = dir.display();
        ensure!(
            meta.format == CHECKPOINT_FORMAT,
            "checkpoint format {} is not supported",
            meta.format
        );
        ensure!(
            meta.model == self.model,
            "checkpoint in {dir} was written for another model config"
        );
        ensure!(
            meta.train == self.train,
            "checkpoint in {dir} was written with another training config"
        );
        ensure!(
            meta.seed == self.seed,
            "checkpoint in {dir} was written with seed {}, not {}",
            meta.seed,
            self.seed
        );
        ensure!(
            meta.data_fingerprint == self.data,
            "checkpoint in {dir} was written for other training data"
        );
        ensure!(
            meta.init == self.init,
            "checkpoint in {dir} was written from other pretrained item embeddings"
        );
        // Checkpoints from before validation existed have no fingerprint;
        // their config (constant rate, no early stopping) never read it.
        ensure!(
            meta.valid_data.is_none() || meta.valid_data == self.valid,
            "checkpoint in {dir} was written for other validation examples"
        );
        let n = meta.epochs_done;
        ensure!(
            meta.stats.len() == n
                && meta.loss_bits.len() == n
                && (meta.epoch_bits.is_empty() || meta.epoch_bits.len() == n),
            "checkpoint in {dir} is inconsistent"
        );
        ensure!(
            n <= epochs,
            "checkpoint in {dir} already has {n} epochs, more than the {epochs} asked for"
        );
        Ok(())
    }
}

/// The fixed setup of one training: what every epoch reads.
struct Run<'a, C: ModelConfig> {
    model_cfg: &'a C,
    cfg: &'a TrainConfig,
    windows: Vec<&'a [i64]>,
    /// Under the sampled loss: per window, the sorted distinct items of its
    /// whole training sequence, which its negatives avoid; else empty.
    avoid: Vec<Vec<i64>>,
    seed: u64,
    device: Device,
}

impl<C: ModelConfig> Run<'_, C> {
    /// Trains epoch `epoch` (batch order, dropout and batch draws from
    /// `(seed, epoch)` only, rates from `scheduler`); returns its mean
    /// training loss, or an error naming the batch when it is not finite.
    fn train_epoch(
        &self,
        model: &C::Model,
        opt: &mut AdamW,
        scheduler: &LrScheduler,
        epoch: usize,
    ) -> Result<f64> {
        let (cfg, device) = (self.cfg, self.device);
        tch::manual_seed(self.seed.wrapping_add(epoch as u64) as i64);
        let order = epoch_order(self.windows.len(), self.seed, epoch);
        let mut rng = batch_rng(self.seed, epoch);
        let mut neg_rng = negative_rng(self.seed, epoch);
        let mut loss_sum = Tensor::zeros([], (Kind::Double, device));
        let mut positions = 0usize;
        // Per batch "was the loss finite", kept on the device: reading it
        // every batch would stall a GPU; it is read once if the epoch fails.
        let mut finite: Vec<Tensor> = Vec::new();
        for (b, chunk) in order.chunks(cfg.batch_size).enumerate() {
            let picked: Vec<&[i64]> = chunk.iter().map(|&i| self.windows[i]).collect();
            let (batch, loss) = match cfg.loss {
                Loss::CrossEntropy | Loss::FullBce => {
                    let batch = if cfg.sliding {
                        next_item_batch_last(&picked, 1, device)
                    } else {
                        self.model_cfg.training_batch(&picked, &mut rng, device)
                    };
                    let loss = autocast::run(cfg.precision, device, || {
                        if cfg.loss == Loss::FullBce {
                            full_bce_batch_loss(model, &batch, true)
                        } else {
                            cross_entropy_batch_loss(model, &batch, true)
                        }
                    });
                    (batch, loss)
                }
                Loss::SampledBce { negatives } => {
                    // Built on the CPU, where the negatives are drawn.
                    let batch = self
                        .model_cfg
                        .training_batch(&picked, &mut rng, Device::Cpu);
                    let avoid: Vec<&[i64]> =
                        chunk.iter().map(|&i| self.avoid[i].as_slice()).collect();
                    let neg = batch_negatives(
                        &batch,
                        &avoid,
                        self.model_cfg.num_items(),
                        negatives,
                        &mut neg_rng,
                    )?;
                    let batch = batch.to_device(device);
                    let neg = neg.to_device(device);
                    let loss = autocast::run(cfg.precision, device, || {
                        sampled_bce_batch_loss(model, &batch, &neg, true)
                    });
                    (batch, loss)
                }
            };
            finite.push(loss.detach().isfinite());
            opt.set_lr(scheduler.lr(epoch, b));
            opt.backward_step(&loss);
            loss_sum += loss.detach().to_kind(Kind::Double) * batch.count as f64;
            positions += batch.count;
        }
        let train_loss = loss_sum.double_value(&[]) / positions as f64;
        if !train_loss.is_finite() {
            // Nothing of this epoch is saved: the checkpoint on disk is still
            // the last good epoch's.
            let bad = finite
                .iter()
                .position(|f| f.int64_value(&[]) == 0)
                .unwrap_or(0);
            bail!(
                "training diverged in epoch {} of {}, batch {} of {}: the loss is not finite; \
                 the checkpoint of the last good epoch ({}) is kept (try a lower lr or clip_norm > 0)",
                epoch + 1,
                cfg.epochs,
                bad + 1,
                finite.len(),
                epoch
            );
        }
        Ok(train_loss)
    }
}

/// Where a training stands: everything a checkpoint restores besides the
/// model's weights and the optimiser's state.
struct State {
    stats: Vec<EpochStats>,
    scheduler: LrScheduler,
    /// Under early stopping.
    stopping: Option<Stopping>,
}

impl State {
    /// A fresh start of `cfg`, epochs of `batches_per_epoch` batches.
    fn new(cfg: &TrainConfig, batches_per_epoch: usize) -> State {
        State {
            stats: Vec::new(),
            scheduler: LrScheduler::new(&cfg.schedule, cfg.lr, cfg.epochs, batches_per_epoch),
            stopping: cfg.early_stopping.clone().map(|rule| Stopping {
                rule,
                watch: Watch::default(),
                best: Vec::new(),
            }),
        }
    }

    fn stopped(&self) -> bool {
        self.stopping.as_ref().is_some_and(Stopping::stopped)
    }

    /// Records a trained and validated epoch: the schedule and early
    /// stopping see its validation numbers (the best weights are copied
    /// from `vs` when it is the best so far).
    fn end_epoch(&mut self, stat: EpochStats, vs: &VarStore) -> Result<()> {
        self.scheduler.end_epoch(stat.valid.map(|v| v.loss))?;
        if let Some(stopping) = &mut self.stopping {
            let valid = stat
                .valid
                .ok_or_else(|| anyhow::anyhow!("early stopping needs validation every epoch"))?;
            stopping.observe(stat.epoch, &valid, vs);
        }
        self.stats.push(stat);
        Ok(())
    }

    /// The checkpoint metadata after the epochs so far.
    fn meta(&self, identity: &RunIdentity) -> CheckpointMeta {
        let n = self.stats.len();
        CheckpointMeta {
            format: CHECKPOINT_FORMAT,
            epochs_done: n,
            tensors: checkpoint_tensors_name(n),
            seed: identity.seed,
            model: identity.model.clone(),
            train: identity.train.clone(),
            data_fingerprint: identity.data,
            init: identity.init,
            valid_data: identity.valid,
            loss_bits: self.stats.iter().map(|s| s.train_loss.to_bits()).collect(),
            epoch_bits: self.stats.iter().map(EpochBits::of).collect(),
            stats: self.stats.clone(),
            scheduler: Some(self.scheduler.state().clone()),
            stopping: self.stopping.as_ref().map(|s| s.watch.clone()),
        }
    }

    /// The best weights as the checkpoint's `best.<var>` tensors (none
    /// without early stopping).
    fn best_tensors(&self) -> Vec<(String, Tensor)> {
        let Some(stopping) = &self.stopping else {
            return Vec::new();
        };
        stopping
            .best
            .iter()
            .map(|(n, t)| (format!("best.{n}"), t.to_device(Device::Cpu).contiguous()))
            .collect()
    }

    /// Continues from checkpoint `meta` in `dir`: weights and optimiser
    /// into `vs` and `opt`, the rest into `self`.
    fn restore(
        &mut self,
        meta: CheckpointMeta,
        dir: &Path,
        vs: &VarStore,
        opt: &mut AdamW,
        cfg: &TrainConfig,
    ) -> Result<()> {
        let best = restore_checkpoint_with_best(dir, &meta.tensors, vs, opt)?;
        self.stats = meta.stats;
        for (s, bits) in self.stats.iter_mut().zip(&meta.loss_bits) {
            s.train_loss = f64::from_bits(*bits);
        }
        if meta.epoch_bits.is_empty() {
            // Written before rates were recorded: the rate was constant.
            self.stats.iter_mut().for_each(|s| s.lr = cfg.lr);
        }
        for (s, bits) in self.stats.iter_mut().zip(&meta.epoch_bits) {
            bits.restore(s);
        }
        match meta.scheduler {
            Some(saved) => self.scheduler.restore(saved)?,
            None => ensure!(
                cfg.schedule == Schedule::Constant,
                "the checkpoint has no learning-rate schedule state"
            ),
        }
        match (&mut self.stopping, meta.stopping) {
            (Some(stopping), Some(watch)) => {
                let device = vs.device();
                stopping.best = best
                    .into_iter()
                    .map(|(n, t)| (n, t.to_device(device)))
                    .collect();
                ensure!(
                    watch.best.is_none() || !stopping.best.is_empty(),
                    "the checkpoint lacks the best epoch's weights (`best.*`)"
                );
                stopping.watch = watch;
            }
            (None, None) => ensure!(
                best.is_empty(),
                "the checkpoint holds best weights (`best.*`) but early stopping is off"
            ),
            _ => bail!("the checkpoint's early-stopping state does not match the config"),
        }
        Ok(())
    }

    /// Under early stopping, puts the best epoch's weights into `vs` and
    /// returns that epoch; otherwise leaves `vs` (the last epoch's) alone.
    fn restore_best(&self, vs: &VarStore) -> Result<Option<usize>> {
        let Some(stopping) = &self.stopping else {
            return Ok(None);
        };
        let Some((epoch, _)) = stopping.watch.best else {
            return Ok(None); // no epoch trained
        };
        let best = stopping
            .best
            .iter()
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect();
        load_vars(vs, best).context("restoring the best epoch's weights")?;
        Ok(Some(epoch))
    }
}

/// Early stopping in progress.
struct Stopping {
    rule: EarlyStopping,
    watch: Watch,
    /// The best epoch's variables (detached copies on the model's device),
    /// sorted by name; empty before the first epoch.
    best: Vec<(String, Tensor)>,
}

/// What a checkpoint saves of early stopping besides the best weights.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
struct Watch {
    /// The best epoch so far (0-based) and its metric's exact bits.
    best: Option<(usize, u64)>,
    /// Epochs since the best one.
    bad_epochs: usize,
}

impl Stopping {
    /// Records epoch `epoch`'s validation; copies the weights of `vs` when
    /// it is the best so far (the first epoch always is).
    fn observe(&mut self, epoch: usize, valid: &Validation, vs: &VarStore) {
        let value = self.rule.metric.of(valid);
        let improved = match self.watch.best {
            None => true,
            Some((_, bits)) => self.rule.metric.improves(value, f64::from_bits(bits)),
        };
        if improved {
            self.watch.best = Some((epoch, value.to_bits()));
            self.watch.bad_epochs = 0;
            self.best = snapshot(vs);
        } else {
            self.watch.bad_epochs += 1;
        }
    }

    /// Whether the metric has gone `patience` epochs without improving.
    fn stopped(&self) -> bool {
        self.watch.bad_epochs >= self.rule.patience
    }
}

/// Detached copies of every variable of `vs`, sorted by name.
fn snapshot(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut named: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.detach().copy()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// How validation ranks, as the `evaluate` stage does with the same params.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidProtocol<'a> {
    /// Per example, the sorted items left out of its candidates (empty:
    /// nothing excluded).
    pub seen: &'a [Vec<usize>],
    pub ties: Ties,
}

/// Scores `examples` with `model` and measures how well it predicts their
/// targets. Histories are cut to their last `max_len` items and left-padded
/// as [`crate::models::SeqScorer`] does, `batch_size` at a time, and scored
/// with [`SequenceModel::score_last`] (eval mode, no gradient, no RNG
/// draw). Ranks are over the whole catalogue minus `protocol.seen`, ties
/// counted by `protocol.ties` ([`metrics::rank_of`]), as the `evaluate`
/// stage ranks with the same `exclude_seen` and `ties`. The loss is the
/// full-softmax cross-entropy over every item, excluded ones included.
pub fn validate<M: SequenceModel>(
    model: &M,
    examples: &[Example],
    protocol: &ValidProtocol<'_>,
    max_len: i64,
    batch_size: usize,
) -> Result<Validation> {
    ensure!(!examples.is_empty(), "no validation examples to score");
    ensure!(
        protocol.seen.is_empty() || protocol.seen.len() == examples.len(),
        "{} exclusion lists for {} validation examples",
        protocol.seen.len(),
        examples.len()
    );
    let device = model.device();
    let mut loss_sum = Tensor::zeros([], (Kind::Double, device));
    let (mut hr, mut ndcg) = (0.0, 0.0);
    let batch_size = batch_size.max(1);
    for (c, chunk) in examples.chunks(batch_size).enumerate() {
        let histories: Vec<&[i64]> = chunk.iter().map(|e| e.history.as_slice()).collect();
        let scores = model.score_last(&left_pad_batch(&histories, max_len).to_device(device));
        let width = scores.size()[1]; // num_items + 1
        let targets: Vec<i64> = chunk.iter().map(|e| e.target).collect();
        if let Some(bad) = targets.iter().find(|&&t| t < 1 || t >= width) {
            bail!(
                "validation target {bad} is outside the model's items 1..={}",
                width - 1
            );
        }
        // Column 0 (padding, -inf) is left out of the softmax.
        let columns = Tensor::from_slice(&targets).to_device(device) - 1;
        let loss = scores.narrow(1, 1, width - 1).cross_entropy_loss::<Tensor>(
            &columns,
            None,
            Reduction::Sum,
            -100,
            0.0,
        );
        loss_sum += loss.to_kind(Kind::Double);
        let rows = Vec::<f32>::try_from(
            scores
                .to_kind(Kind::Float)
                .to_device(Device::Cpu)
                .flatten(0, -1),
        )?;
        for (i, (row, &target)) in rows.chunks(width as usize).zip(&targets).enumerate() {
            let exclude = protocol
                .seen
                .get(c * batch_size + i)
                .map_or(&[][..], Vec::as_slice);
            let rank = metrics::rank_of(row, target as usize, exclude).under(protocol.ties);
            hr += rank.metric(metrics::RankMetric::Hr, 10);
            ndcg += rank.metric(metrics::RankMetric::Ndcg, 10);
        }
    }
    let n = examples.len() as f64;
    Ok(Validation {
        loss: loss_sum.double_value(&[]) / n,
        hr_at_10: hr / n,
        ndcg_at_10: ndcg / n,
    })
}

/// FNV-1a over the examples (histories, targets); detects resuming on
/// other validation data.
fn valid_fingerprint(examples: &[Example]) -> u64 {
    let mut h = Fnv::new();
    h.eat(examples.len() as u64);
    for e in examples {
        h.eat(e.history.len() as u64);
        e.history.iter().for_each(|&i| h.eat(i as u64));
        h.eat(e.target as u64);
    }
    h.0
}

/// Writes `model.safetensors` (every variable, by var-store name) and
/// `config.json` (the config tagged with `"model": C::NAME`) into `dir`, each
/// atomically.
pub fn save_model<C: ModelConfig>(vs: &VarStore, cfg: &C, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let named = cpu_vars(vs, "");
    write_atomic(dir, "model.safetensors", |tmp| {
        Tensor::write_safetensors(&named, tmp)?;
        Ok(())
    })?;
    let mut config = serde_json::to_value(cfg)?;
    config["model"] = C::NAME.into();
    let json = serde_json::to_vec_pretty(&config)?;
    write_atomic(dir, "config.json", |tmp| Ok(fs::write(tmp, &json)?))?;
    Ok(())
}

/// Loads a model written by [`save_model`] onto `device`. Draws nothing from
/// torch's RNG. Missing, extra or mis-shaped tensors are errors.
pub fn load_model<C: ModelConfig>(dir: &Path, device: Device) -> Result<(VarStore, C::Model)> {
    let cfg_path = dir.join("config.json");
    let cfg: C = serde_json::from_slice(
        &fs::read(&cfg_path).with_context(|| format!("reading {}", cfg_path.display()))?,
    )
    .with_context(|| format!("parsing {}", cfg_path.display()))?;
    cfg.check()
        .with_context(|| format!("{} is not a usable {} config", cfg_path.display(), C::NAME))?;
    let vs = VarStore::new(device);
    let model = cfg.build_uninit(&vs.root());
    let path = dir.join("model.safetensors");
    let tensors =
        Tensor::read_safetensors(&path).with_context(|| format!("reading {}", path.display()))?;
    load_vars(&vs, tensors).with_context(|| format!("loading {}", path.display()))?;
    Ok((vs, model))
}

/// The part of each usable sequence (at least two items) that training
/// sees: its last `max_len + 1` items (inputs are all but the last, targets
/// all but the first), in the order of `seqs`. Items outside
/// `1..=num_items` are an error.
pub fn training_windows(seqs: &[Vec<i64>], num_items: i64, max_len: i64) -> Result<Vec<&[i64]>> {
    let keep = max_len as usize + 1;
    let mut out = Vec::with_capacity(seqs.len());
    for (u, s) in seqs.iter().enumerate() {
        if let Some(&bad) = s.iter().find(|&&i| i < 1 || i > num_items) {
            bail!("sequence {u} holds item {bad}, outside 1..={num_items}");
        }
        if s.len() >= 2 {
            out.push(&s[s.len().saturating_sub(keep)..]);
        }
    }
    Ok(out)
}

/// Sliding-window training's examples: for every position `t >= 1` of
/// every sequence, the window `s[t - max_len ..= t]` (shorter at the
/// start): up to `max_len` inputs and their next item, in the order of
/// `seqs` and then of `t`. Items outside `1..=num_items` are an error.
pub fn sliding_windows(seqs: &[Vec<i64>], num_items: i64, max_len: i64) -> Result<Vec<&[i64]>> {
    let max_len = max_len as usize;
    let mut out = Vec::with_capacity(seqs.iter().map(|s| s.len().saturating_sub(1)).sum());
    for (u, s) in seqs.iter().enumerate() {
        if let Some(&bad) = s.iter().find(|&&i| i < 1 || i > num_items) {
            bail!("sequence {u} holds item {bad}, outside 1..={num_items}");
        }
        for t in 1..s.len() {
            out.push(&s[t.saturating_sub(max_len)..=t]);
        }
    }
    Ok(out)
}

/// FNV-1a over the sequences (lengths included); detects resuming on other data.
fn data_fingerprint(seqs: &[Vec<i64>]) -> u64 {
    let mut h = Fnv::new();
    h.eat(seqs.len() as u64);
    for s in seqs {
        h.eat(s.len() as u64);
        for &i in s {
            h.eat(i as u64);
        }
    }
    h.0
}

/// 64-bit FNV-1a over little-endian words: the fingerprints checkpoints
/// record of their data, to refuse resuming on something else.
pub(crate) struct Fnv(pub(crate) u64);

impl Fnv {
    pub(crate) fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn eat(&mut self, x: u64) {
        for b in x.to_le_bytes() {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The order in which epoch `epoch` visits the training windows: a function
/// of `(seed, epoch)` only.
fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch as u64);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    order
}

/// The RNG [`ModelConfig::training_batch`] draws from in epoch `epoch`: a
/// function of `(seed, epoch)` only, independent of the batch order's RNG.
pub fn batch_rng(seed: u64, epoch: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6261_7463_685f_726e); // "batch_rn"
    rng.set_stream(epoch as u64);
    rng
}

/// The RNG the sampled loss draws its negatives from in epoch `epoch`: a
/// function of `(seed, epoch)` only, independent of the batch order's and
/// of [`batch_rng`] (so a model's own draws do not shift the negatives).
pub fn negative_rng(seed: u64, epoch: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6e65_6761_7469_7665); // "negative"
    rng.set_stream(epoch as u64);
    rng
}

/// The sorted distinct items of each sequence [`training_windows`] keeps
/// (those with at least two items), in its order: what the sampled loss's
/// negatives avoid, as the SASRec authors' sampler avoids the user's
/// training items.
pub fn training_items(seqs: &[Vec<i64>]) -> Vec<Vec<i64>> {
    seqs.iter()
        .filter(|s| s.len() >= 2)
        .map(|s| {
            let mut items = s.clone();
            items.sort_unstable();
            items.dedup();
            items
        })
        .collect()
}

/// One negative for the target item `positive`: uniform over the items
/// `1..=num_items` that are not in `avoid` (sorted, distinct, within
/// `1..=num_items`, and holding `positive`), with one draw from `rng`. When
/// `avoid` holds every item (a user who has seen the whole catalogue), it
/// is uniform over every item but `positive` instead. Needs `num_items >= 2`.
pub fn draw_negative(rng: &mut ChaCha8Rng, num_items: i64, avoid: &[i64], positive: i64) -> i64 {
    let free = num_items - avoid.len() as i64;
    if free <= 0 {
        let k = rng.gen_range(1..num_items);
        return if k >= positive { k + 1 } else { k };
    }
    // The k-th (0-based) item missing from `avoid`: k + 1 plus the number
    // of avoided items below it, i.e. those `avoid[j]` with
    // `avoid[j] - j - 1 <= k` (non-decreasing in j, so a binary search).
    let k = rng.gen_range(0..free);
    let (mut lo, mut hi) = (0usize, avoid.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if avoid[mid] - mid as i64 - 1 <= k {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    k + 1 + lo as i64
}

/// The negatives of a batch built on the CPU: [T, negatives] int64 columns
/// (item minus one, as `batch.targets`), row `t` drawn for the target
/// `batch.targets[t]` of batch row `r` (the one holding position `t`),
/// avoiding `avoid[r]`. Draws `T * negatives` times from `rng`, in
/// position order.
pub fn batch_negatives(
    batch: &TrainBatch,
    avoid: &[&[i64]],
    num_items: i64,
    negatives: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Tensor> {
    let width = batch.inputs.size()[1].max(1);
    let positions = Vec::<i64>::try_from(&batch.positions.to_device(Device::Cpu))?;
    let targets = Vec::<i64>::try_from(&batch.targets.to_device(Device::Cpu))?;
    let mut out = Vec::with_capacity(targets.len() * negatives);
    for (&p, &t) in positions.iter().zip(&targets) {
        let row = avoid
            .get((p / width) as usize)
            .with_context(|| format!("batch position {p} lies past the batch's rows"))?;
        for _ in 0..negatives {
            out.push(draw_negative(rng, num_items, row, t + 1) - 1);
        }
    }
    Ok(Tensor::from_slice(&out).view([targets.len() as i64, negatives as i64]))
}

/// The hidden states of a batch's predicted positions: [T, D].
fn predicted_states<M: SequenceModel>(model: &M, batch: &TrainBatch, train: bool) -> Tensor {
    let hidden = model.encode(&batch.inputs, train); // [B, L, D]
    let dim = hidden.size()[2];
    hidden.view([-1, dim]).index_select(0, &batch.positions)
}

/// Mean full-softmax cross-entropy of a batch's targets (`train`: dropout on).
pub fn cross_entropy_batch_loss<M: SequenceModel>(
    model: &M,
    batch: &TrainBatch,
    train: bool,
) -> Tensor {
    let logits = model.item_logits(&predicted_states(model, batch, train)); // [T, num_items]
    logits.cross_entropy_loss::<Tensor>(&batch.targets, None, Reduction::Mean, -100, 0.0)
}

/// The binary cross-entropy of a batch's targets against every other item
/// ([`full_bce_loss`]; `train`: dropout on). Only the batch's predicted
/// positions enter, so padding contributes nothing.
pub fn full_bce_batch_loss<M: SequenceModel>(model: &M, batch: &TrainBatch, train: bool) -> Tensor {
    let logits = model.item_logits(&predicted_states(model, batch, train)); // [T, num_items]
    full_bce_loss(&logits, &batch.targets)
}

/// `BCEWithLogits(logits, one_hot(targets))` summed over the items and
/// averaged over the rows: `logits` [T, N], `targets` [T] (columns). Per
/// row that is `-log σ(x_t) - Σ_{j≠t} log(1 - σ(x_j))`, computed as `Σ_j
/// softplus(x_j) - x_t` (the same value, stable for any logit, and without
/// a [T, N] one-hot). Summed rather than averaged over items (PyTorch's
/// default) so the value reads like [`bce_loss`] with every item a
/// negative; Adam's normalisation absorbs most of the factor N (the
/// `clip_norm` clipping then acts at another scale). bf16 logits are
/// summed in fp32.
pub fn full_bce_loss(logits: &Tensor, targets: &Tensor) -> Tensor {
    let x = match logits.kind() {
        Kind::BFloat16 | Kind::Half => logits.to_kind(Kind::Float),
        _ => logits.shallow_clone(),
    };
    let all = x.softplus().sum_dim_intlist(-1, false, None::<Kind>);
    let target = x.gather(-1, &targets.unsqueeze(-1), false).squeeze_dim(-1);
    (all - target).mean(None::<Kind>)
}

/// The sampled binary cross-entropy of a batch ([`bce_loss`]): `negatives`
/// [T, K] columns (from [`batch_negatives`]) against each position's target,
/// scored with [`SequenceModel::item_scores`]. Only the batch's predicted
/// positions enter, so padding contributes nothing.
pub fn sampled_bce_batch_loss<M: SequenceModel>(
    model: &M,
    batch: &TrainBatch,
    negatives: &Tensor,
    train: bool,
) -> Tensor {
    let columns = Tensor::cat(&[batch.targets.unsqueeze(1), negatives.shallow_clone()], 1);
    let scores = model.item_scores(&predicted_states(model, batch, train), &columns); // [T, 1 + K]
    let k = scores.size()[1] - 1;
    bce_loss(&scores.select(1, 0), &scores.narrow(1, 1, k))
}

/// `mean_t [-log σ(pos[t]) - Σ_k log(1 - σ(neg[t, k]))]` for target scores
/// `pos` [T] and negative scores `neg` [T, K], in the numerically stable
/// form `-log σ(x)` = `-logsigmoid(x)`, `-log(1 - σ(x))` = `-logsigmoid(-x)`.
pub fn bce_loss(pos: &Tensor, neg: &Tensor) -> Tensor {
    let pos_term = -pos.log_sigmoid();
    let neg_term = -(-neg)
        .log_sigmoid()
        .sum_dim_intlist(-1, false, None::<Kind>);
    (pos_term + neg_term).mean(None::<Kind>)
}

/// One training step's data.
pub struct TrainBatch {
    /// [B, L] int64, left-padded, L = longest input in the batch.
    pub inputs: Tensor,
    /// [T] flat indices into the [B * L] positions that have a target.
    pub positions: Tensor,
    /// [T] target item minus one (column in `item_logits`).
    pub targets: Tensor,
    /// T.
    pub count: usize,
}

impl TrainBatch {
    /// The same batch with its tensors on `device`.
    pub fn to_device(&self, device: Device) -> TrainBatch {
        TrainBatch {
            inputs: self.inputs.to_device(device),
            positions: self.positions.to_device(device),
            targets: self.targets.to_device(device),
            count: self.count,
        }
    }
}

/// Next-item batch: input `w[..n-1]`, target `w[t+1]` at every position `t`.
pub fn next_item_batch(windows: &[&[i64]], device: Device) -> TrainBatch {
    next_item_batch_last(windows, usize::MAX, device)
}

/// [`next_item_batch`] predicting only the last `keep` positions of each
/// row; the earlier ones are still read as inputs.
pub fn next_item_batch_last(windows: &[&[i64]], keep: usize, device: Device) -> TrainBatch {
    let l = windows.iter().map(|w| w.len() - 1).max().unwrap_or(0);
    let b = windows.len();
    let mut inputs = vec![0i64; b * l];
    let mut positions = Vec::new();
    let mut targets = Vec::new();
    for (r, &w) in windows.iter().enumerate() {
        let k = w.len() - 1;
        let off = r * l + (l - k);
        let first = k.saturating_sub(keep);
        for j in 0..k {
            inputs[off + j] = w[j];
            if j >= first {
                positions.push((off + j) as i64);
                targets.push(w[j + 1] - 1);
            }
        }
    }
    let count = positions.len();
    TrainBatch {
        inputs: Tensor::from_slice(&inputs)
            .view([b as i64, l as i64])
            .to_device(device),
        positions: Tensor::from_slice(&positions).to_device(device),
        targets: Tensor::from_slice(&targets).to_device(device),
        count,
    }
}

/// Every variable of `vs`, sorted by name, detached, contiguous, on the CPU,
/// with `prefix` prepended to the name.
fn cpu_vars(vs: &VarStore, prefix: &str) -> Vec<(String, Tensor)> {
    let mut named: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| {
            (
                format!("{prefix}{n}"),
                t.detach().to_device(Device::Cpu).contiguous(),
            )
        })
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// Copies `tensors` into the variables of `vs` with the same names; every
/// variable must be given exactly once, with its shape.
fn load_vars(vs: &VarStore, tensors: Vec<(String, Tensor)>) -> Result<()> {
    let mut vars = vs.variables();
    for (name, src) in tensors {
        let mut dst = vars
            .remove(&name)
            .ok_or_else(|| anyhow::anyhow!("unexpected tensor `{name}`"))?;
        ensure!(
            src.size() == dst.size(),
            "tensor `{name}` has shape {:?}, the model expects {:?}",
            src.size(),
            dst.size()
        );
        tch::no_grad(|| dst.f_copy_(&src))?;
    }
    if let Some(missing) = vars.keys().next() {
        bail!("missing tensor `{missing}`");
    }
    Ok(())
}

/// The tensor file name of the checkpoint after `epochs_done` epochs.
pub(crate) fn checkpoint_tensors_name(epochs_done: usize) -> String {
    format!("checkpoint-epoch{epochs_done:05}.safetensors")
}

/// Commits a checkpoint in `dir`: the variables of `vs` (`model.<var>`) and
/// the state of `opt` (`optim.<state>`) into `tensors`, then `meta` into
/// `checkpoint.json` (the commit point), then removes older tensor files.
pub(crate) fn write_checkpoint(
    dir: &Path,
    vs: &VarStore,
    opt: &AdamW,
    tensors: &str,
    meta: &impl Serialize,
) -> Result<()> {
    write_checkpoint_with(dir, vs, opt, &[], tensors, meta)
}

/// [`write_checkpoint`], with `extra` (already named, e.g. `best.<var>`,
/// on the CPU) in the tensor file too.
fn write_checkpoint_with(
    dir: &Path,
    vs: &VarStore,
    opt: &AdamW,
    extra: &[(String, Tensor)],
    tensors: &str,
    meta: &impl Serialize,
) -> Result<()> {
    let mut named = cpu_vars(vs, "model.");
    for (n, t) in opt.state_tensors() {
        named.push((
            format!("optim.{n}"),
            t.detach().to_device(Device::Cpu).contiguous(),
        ));
    }
    named.extend(extra.iter().map(|(n, t)| (n.clone(), t.shallow_clone())));
    write_atomic(dir, tensors, |tmp| {
        Tensor::write_safetensors(&named, tmp)?;
        Ok(())
    })?;
    let json = serde_json::to_vec_pretty(meta)?;
    write_atomic(dir, CHECKPOINT_META, |tmp| Ok(fs::write(tmp, &json)?))?;
    // The new checkpoint is committed: drop older tensor files.
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("checkpoint-epoch") && name.ends_with(".safetensors") && name != tensors
        {
            let _ = fs::remove_file(dir.join(name.as_ref()));
        }
    }
    Ok(())
}

/// How many epochs the checkpoint in `dir` holds (0 when there is none or it
/// cannot be read; [`train`] reports the latter properly).
pub fn checkpointed_epochs(dir: &Path) -> usize {
    read_meta::<CheckpointMeta>(dir)
        .ok()
        .flatten()
        .map_or(0, |m| m.epochs_done)
}

/// Loads the tensor file `tensors` of a checkpoint in `dir` into `vs` and
/// `opt`; every variable and optimiser state must be there, and nothing else.
pub(crate) fn restore_checkpoint(
    dir: &Path,
    tensors: &str,
    vs: &VarStore,
    opt: &mut AdamW,
) -> Result<()> {
    let best = restore_checkpoint_with_best(dir, tensors, vs, opt)?;
    if let Some((name, _)) = best.first() {
        bail!(
            "unexpected tensor `best.{name}` in {}",
            dir.join(tensors).display()
        );
    }
    Ok(())
}

/// [`restore_checkpoint`] that also accepts the best epoch's weights
/// (`best.<var>`) and returns them, prefix removed, on the CPU.
fn restore_checkpoint_with_best(
    dir: &Path,
    tensors: &str,
    vs: &VarStore,
    opt: &mut AdamW,
) -> Result<Vec<(String, Tensor)>> {
    let path = dir.join(tensors);
    let tensors =
        Tensor::read_safetensors(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut model_t = Vec::new();
    let mut optim_t = Vec::new();
    let mut best_t = Vec::new();
    for (name, t) in tensors {
        if let Some(n) = name.strip_prefix("model.") {
            model_t.push((n.to_string(), t));
        } else if let Some(n) = name.strip_prefix("optim.") {
            optim_t.push((n.to_string(), t));
        } else if let Some(n) = name.strip_prefix("best.") {
            best_t.push((n.to_string(), t));
        } else {
            bail!("unexpected tensor `{name}` in {}", path.display());
        }
    }
    load_vars(vs, model_t).with_context(|| format!("loading {}", path.display()))?;
    opt.load_state(optim_t)
        .with_context(|| format!("loading {}", path.display()))?;
    best_t.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(best_t)
}

/// The `checkpoint.json` in `dir`, or `None` when there is none.
pub(crate) fn read_meta<M: DeserializeOwned>(dir: &Path) -> Result<Option<M>> {
    let path = dir.join(CHECKPOINT_META);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let meta =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    Ok(Some(meta))
}

/// Writes `dir/name` by way of a temporary file in `dir`, synced then renamed.
fn write_atomic(dir: &Path, name: &str, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let dst = dir.join(name);
    write(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", tmp.display()))?;
    fs::rename(&tmp, &dst).with_context(|| format!("renaming to {}", dst.display()))?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

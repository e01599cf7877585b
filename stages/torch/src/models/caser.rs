//! Caser: convolutional sequence embedding.
//!
//! Tang & Wang, "Personalized Top-N Sequential Recommendation via
//! Convolutional Sequence Embedding", WSDM 2018 (arXiv:1809.07426). The
//! embeddings of the last `L` items form an `L × d` "image"; horizontal
//! filters of every height `h` in `1..=L` (`h × d`, ReLU, max-pooled over
//! the `L - h + 1` positions) catch union-level and skip patterns, vertical
//! filters (`L × 1`, no activation) take weighted sums of the `L` rows;
//! both are concatenated, dropped out, and a fully connected layer with
//! ReLU gives `z`. An item's score is `W'_j · z + b'_j`, with output item
//! embeddings `W'` separate from the input table.
//!
//! Where this implementation deviates from the paper:
//!
//! * **No user embedding.** The paper concatenates a user embedding `P_u`
//!   to `z` before the output layer. Our models score histories without
//!   user ids (and evaluation holds users the model may not have seen), so
//!   it is omitted: `W'` is `num_items × d`, not `num_items × 2d`.
//! * **Training.** The paper slides a window over each sequence, each `L`
//!   consecutive items predicting the next `T` with sampled negatives (3)
//!   and binary cross-entropy. Here every position of a training sequence is
//!   one such window with `T = 1`: the state at position `t` is Caser's `z`
//!   for the `L` items ending at `t` (zero rows before the sequence starts,
//!   as RecBole pads short histories), computed for all positions at once by
//!   running the horizontal filters as 1-D convolutions over time followed by
//!   a sliding max-pool of width `L - h + 1`, and the vertical filters on
//!   the same sliding windows. So the shared trainer's loss at every
//!   position is exactly Caser's loss over all windows, with full-softmax
//!   cross-entropy by default (as our other models, and as RecBole's Caser
//!   with `CE`), or the paper's binary cross-entropy with `loss = "bce"`
//!   (`negatives = 3` for the paper's setting).
//!   Each sequence contributes its last `train_len` positions (the stage
//!   param, 200 by default): the trainer cuts each sequence to its last
//!   [`ModelConfig::max_len`] = `max(train_len, max_len)` inputs, and when
//!   those are more than `train_len` (a window `L` above `train_len`) only
//!   the last `train_len` positions are predicted, the earlier items
//!   serving as their windows' context. A window of the kept part that
//!   reaches back past it sees zero rows there, as at a sequence's start.
//!   The model itself reads only the last `max_len` items.
//! * **Initialisation.** Item embeddings are drawn from N(0, 1/d²) (as
//!   RecBole's and the authors' code); convolutions and linear layers as
//!   PyTorch's defaults (uniform in ±1/sqrt(fan_in)).
//!
//! Conventions: items are `1..=num_items`, `0` is padding. Input sequences are
//! `[B, T]` int64, LEFT-padded with 0 (padding embeds to zero rows).

use serde::{Deserialize, Serialize};
use tch::nn::{self, Init};
use tch::{Device, Tensor};

use rand_chacha::ChaCha8Rng;

use super::dropout::ChaChaDropout;
use super::layers::{with_padding_column, Linear};
use super::param;
use super::trainer::{next_item_batch_last, ModelConfig, SequenceModel, TrainBatch};

/// Hyper-parameters of a Caser model. Serialised next to the weights.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CaserConfig {
    /// Number of real items; items are `1..=num_items`, 0 is padding.
    pub num_items: i64,
    /// The window `L`: how many most recent items one prediction reads, and
    /// the tallest horizontal filter.
    #[serde(default = "default_max_len")]
    pub max_len: i64,
    /// Item embedding width `d` (and the width of `z`).
    #[serde(default = "default_dim")]
    pub dim: i64,
    /// Horizontal filters per height (`n` in the paper).
    #[serde(default = "default_h_filters")]
    pub h_filters: i64,
    /// Vertical filters (`ñ` in the paper).
    #[serde(default = "default_v_filters")]
    pub v_filters: i64,
    /// Dropout rate on the concatenated convolution outputs.
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    /// Training predicts the last `train_len` positions of each sequence
    /// (one window each).
    #[serde(default = "default_train_len")]
    pub train_len: i64,
}

fn default_max_len() -> i64 {
    5
}
fn default_dim() -> i64 {
    64
}
fn default_h_filters() -> i64 {
    16
}
fn default_v_filters() -> i64 {
    4
}
fn default_dropout() -> f64 {
    0.5
}
/// The `train` stage's default `train_len` too.
pub const DEFAULT_TRAIN_LEN: i64 = 200;

fn default_train_len() -> i64 {
    DEFAULT_TRAIN_LEN
}

impl CaserConfig {
    /// A config with the given catalogue size and every other field at its default.
    pub fn new(num_items: i64) -> Self {
        CaserConfig {
            num_items,
            max_len: default_max_len(),
            dim: default_dim(),
            h_filters: default_h_filters(),
            v_filters: default_v_filters(),
            dropout: default_dropout(),
            train_len: default_train_len(),
        }
    }

    /// Width of the concatenated convolution outputs: `L` heights of
    /// `h_filters` each, plus `v_filters` vectors of width `dim`.
    pub fn conv_width(&self) -> i64 {
        self.max_len * self.h_filters + self.v_filters * self.dim
    }

    /// Checks that the hyper-parameters are usable.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.num_items >= 1, "num_items must be >= 1");
        anyhow::ensure!(self.max_len >= 1, "max_len must be >= 1");
        anyhow::ensure!(self.dim >= 1, "dim must be >= 1");
        anyhow::ensure!(self.h_filters >= 1, "h_filters must be >= 1");
        anyhow::ensure!(self.v_filters >= 1, "v_filters must be >= 1");
        anyhow::ensure!(self.train_len >= 1, "train_len must be >= 1");
        anyhow::ensure!(
            (0.0..1.0).contains(&self.dropout),
            "dropout must be in [0, 1)"
        );
        Ok(())
    }
}

/// PyTorch's default initialisation for a layer with `fan_in` inputs (or
/// zeros for a model about to be loaded).
fn fan_in_init(fan_in: i64, random: bool) -> Init {
    if random {
        let bound = 1.0 / (fan_in as f64).sqrt();
        Init::Uniform {
            lo: -bound,
            up: bound,
        }
    } else {
        Init::Const(0.0)
    }
}

/// The horizontal filters of one height `h`: `weight` [n, d, h] (a 1-D
/// convolution over time with the `d` embedding columns as channels, which
/// is the paper's `h × d` 2-D filter), `bias` [n].
struct Horizontal {
    ws: Tensor,
    bs: Tensor,
    height: i64,
}

impl Horizontal {
    fn new(p: nn::Path, cfg: &CaserConfig, height: i64, random: bool) -> Self {
        let init = fan_in_init(cfg.dim * height, random);
        Horizontal {
            ws: param(&p, "weight", &[cfg.h_filters, cfg.dim, height], init),
            bs: param(&p, "bias", &[cfg.h_filters], init),
            height,
        }
    }

    /// `xs`: [B, d, T + L - 1], the embeddings over time with `L - 1` zero
    /// columns in front. Returns [B, T, n]: at position `t`, the maximum
    /// over the window `t - L + 1 ..= t` of each filter's ReLU output.
    fn forward(&self, xs: &Tensor, window: i64) -> Tensor {
        xs.conv1d(&self.ws, Some(&self.bs), [1], [0], [1], 1)
            .relu() // [B, n, T + L - h]
            .max_pool1d([window - self.height + 1], [1], [0], [1], false) // [B, n, T]
            .transpose(1, 2)
    }
}

/// The vertical filters: `weight` [ñ, L], `bias` [ñ]; filter `k` maps a
/// window to `Σ_l weight[k, l] · E_l + bias[k]` (a `d`-vector).
struct Vertical {
    ws: Tensor,
    bs: Tensor,
}

impl Vertical {
    fn new(p: nn::Path, cfg: &CaserConfig, random: bool) -> Self {
        let init = fan_in_init(cfg.max_len, random);
        Vertical {
            ws: param(&p, "weight", &[cfg.v_filters, cfg.max_len], init),
            bs: param(&p, "bias", &[cfg.v_filters], init),
        }
    }

    /// `xs`: [B, T + L - 1, d] as for [`Horizontal::forward`]. Returns
    /// [B, T, ñ * d], filter-major.
    fn forward(&self, xs: &Tensor, window: i64) -> Tensor {
        let (b, _, d) = xs.size3().expect("vertical input must be [B, T, d]");
        let windows = xs.unfold(1, window, 1); // [B, T, d, L], row l = E_{t-L+1+l}
        let t = windows.size()[1];
        let filters = self.ws.size()[0];
        let ys = windows.matmul(&self.ws.tr()) + &self.bs; // [B, T, d, ñ]
        ys.transpose(2, 3).reshape([b, t, filters * d])
    }
}

/// The Caser model. Variables (names as in the var store): `item_emb`
/// [num_items+1, dim], `h_conv.{h}.{weight,bias}` for `h` in `1..=max_len`,
/// `v_conv.{weight,bias}`, `fc.{weight,bias}` [dim, conv_width],
/// `out.{weight,bias}` [num_items, dim] (row `k` scoring item `k + 1`).
pub struct Caser {
    item_emb: Tensor,
    horizontal: Vec<Horizontal>,
    vertical: Vertical,
    fc: Linear,
    out: Linear,
    cfg: CaserConfig,
}

impl Caser {
    /// Builds the model under `p`. Variables that already exist in the var
    /// store under the same names are reused without any RNG draw; missing
    /// ones are initialised from torch's global RNG (seed it first for
    /// reproducible weights).
    ///
    /// Panics if `cfg` is invalid (see [`CaserConfig::validate`]).
    pub fn new(p: &nn::Path, cfg: &CaserConfig) -> Caser {
        Self::build(p, cfg, true)
    }

    /// Like [`Caser::new`] but missing variables are created zero-filled,
    /// without drawing from torch's global RNG (for loading weights next).
    pub fn new_uninit(p: &nn::Path, cfg: &CaserConfig) -> Caser {
        Self::build(p, cfg, false)
    }

    fn build(p: &nn::Path, cfg: &CaserConfig, random: bool) -> Caser {
        cfg.validate().expect("invalid CaserConfig");
        let emb_init = if random {
            Init::Randn {
                mean: 0.0,
                stdev: 1.0 / cfg.dim as f64,
            }
        } else {
            Init::Const(0.0)
        };
        let item_emb = param(p, "item_emb", &[cfg.num_items + 1, cfg.dim], emb_init);
        let horizontal = (1..=cfg.max_len)
            .map(|h| Horizontal::new(p / "h_conv" / h, cfg, h, random))
            .collect();
        let vertical = Vertical::new(p / "v_conv", cfg, random);
        let fc = Linear::new(p / "fc", cfg.conv_width(), cfg.dim, random);
        let out = Linear::new(p / "out", cfg.dim, cfg.num_items, random);
        Caser {
            item_emb,
            horizontal,
            vertical,
            fc,
            out,
            cfg: cfg.clone(),
        }
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &CaserConfig {
        &self.cfg
    }

    /// The device the item table lives on.
    pub fn device(&self) -> Device {
        self.item_emb.device()
    }

    /// Encodes left-padded histories: `seqs` [B, T] int64 (any `T`) →
    /// [B, T, dim], where position `t` holds `z` for the window of the
    /// `max_len` items ending at `t` (missing ones as zero rows). Padded
    /// positions come out as zeros. `train` switches dropout on.
    pub fn encode(&self, seqs: &Tensor, train: bool) -> Tensor {
        let window = self.cfg.max_len;
        let seqs = seqs.to_device(self.device());
        let keep = seqs.gt(0).unsqueeze(-1).to_kind(self.item_emb.kind()); // [B, T, 1]
        let xs = Tensor::embedding(&self.item_emb, &seqs, 0, false, false) * &keep;
        // L - 1 zero rows in front: the window of position t is rows t..t+L-1.
        let xs = xs.constant_pad_nd([0, 0, window - 1, 0]); // [B, T + L - 1, d]
        let over_time = xs.transpose(1, 2); // [B, d, T + L - 1]
        let mut parts: Vec<Tensor> = self
            .horizontal
            .iter()
            .map(|h| h.forward(&over_time, window))
            .collect();
        parts.push(self.vertical.forward(&xs, window));
        let conv = Tensor::cat(&parts, 2).chacha_dropout(self.cfg.dropout, train);
        self.fc.forward(&conv).relu() * keep
    }

    /// Scores of items `1..=num_items` for states [..., dim]: returns
    /// [..., num_items], column `k` holding item `k + 1`.
    pub fn item_logits(&self, hidden: &Tensor) -> Tensor {
        self.out.forward(hidden)
    }

    /// Next-item scores after the last `max_len` items of each left-padded
    /// history, in eval mode and without recording gradients:
    /// [B, num_items + 1] float, column `i` scoring item `i`, column 0
    /// (padding) `-inf`.
    pub fn score_last(&self, seqs: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let t = seqs.size()[1];
            let recent = seqs.narrow(1, (t - self.cfg.max_len).max(0), t.min(self.cfg.max_len));
            let last = self.encode(&recent, false).select(1, -1); // [B, d]
            with_padding_column(&self.item_logits(&last))
        })
    }
}

impl ModelConfig for CaserConfig {
    type Model = Caser;
    const NAME: &'static str = "caser";

    fn check(&self) -> anyhow::Result<()> {
        self.validate()
    }

    fn num_items(&self) -> i64 {
        self.num_items
    }

    /// The training horizon, not the window: see the module doc.
    fn max_len(&self) -> i64 {
        self.train_len.max(self.max_len)
    }

    fn build(&self, p: &nn::Path) -> Caser {
        Caser::new(p, self)
    }

    fn build_uninit(&self, p: &nn::Path) -> Caser {
        Caser::new_uninit(p, self)
    }

    /// Next-item prediction at the last `train_len` positions of each
    /// window (all of them unless the window `L` exceeds `train_len`).
    fn training_batch(
        &self,
        windows: &[&[i64]],
        rng: &mut ChaCha8Rng,
        device: Device,
    ) -> TrainBatch {
        let _ = rng;
        next_item_batch_last(windows, self.train_len.max(1) as usize, device)
    }
}

impl SequenceModel for Caser {
    fn encode(&self, seqs: &Tensor, train: bool) -> Tensor {
        Caser::encode(self, seqs, train)
    }

    fn item_logits(&self, hidden: &Tensor) -> Tensor {
        Caser::item_logits(self, hidden)
    }

    fn item_scores(&self, hidden: &Tensor, columns: &Tensor) -> Tensor {
        self.out.forward_rows(hidden, columns)
    }

    fn score_last(&self, seqs: &Tensor) -> Tensor {
        Caser::score_last(self, seqs)
    }

    fn device(&self) -> Device {
        Caser::device(self)
    }
}

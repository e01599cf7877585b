//! GRU4Rec: session-based recommendation with recurrent neural networks.
//!
//! Hidasi, Karatzoglou, Baltrunas & Tikk, "Session-based Recommendations with
//! Recurrent Neural Networks", ICLR 2016 (arXiv:1511.06939), and Hidasi &
//! Karatzoglou, "Recurrent Neural Networks with Top-k Gains for Session-based
//! Recommendations", CIKM 2018. Items are embedded, a (multi-layer) GRU reads
//! the history left to right, and the hidden state at position `t` is scored
//! against every item to predict the item at `t + 1`.
//!
//! Where this implementation deviates from the papers:
//!
//! * **Training.** The papers train on session-parallel mini-batches (the GRU
//!   state carried across batches, reset when a session ends) with sampled
//!   negatives and a ranking loss (BPR, TOP1, later BPR-max). Here each user's
//!   whole (last `max_len + 1` items of their) sequence is one row of a
//!   left-padded batch and the shared trainer (`trainer.rs`) applies
//!   full-softmax cross-entropy at every real position — the same objective
//!   as our SASRec, so the two compare on architecture alone. Full-softmax
//!   cross-entropy is also what the CIKM 2018 paper found strongest when the
//!   catalogue is small enough to score whole. `loss = "bce"` trains with
//!   binary cross-entropy against `negatives` uniform negatives per position
//!   instead (SASRec's sampled loss, not the papers' popularity-sampled
//!   BPR / TOP1 rankings).
//! * **Input.** An item embedding table (`dim` wide, row 0 = padding) instead
//!   of one-hot inputs.
//! * **Output.** When `hidden == dim` the scores are dot products with the
//!   input embedding table (weights tied, as in GRU4Rec's "constrained
//!   embeddings" option); otherwise a separate linear layer (`out`, with a
//!   bias) maps the hidden state to item scores, as in the original output
//!   layer.
//! * **Dropout.** One rate, `dropout`, on the embeddings, between GRU layers
//!   and on the last GRU layer's output (the papers' `dropout_p_embed` and
//!   `dropout_p_hidden`).
//!
//! Implementation notes. The GRU is LibTorch's fused multi-layer kernel, the
//! one `tch::nn::gru` wraps (`Tensor::gru`, variables named like PyTorch's
//! `nn.GRU`: `gru.weight_ih_l{k}` …), called directly for two reasons:
//! `nn::GRU` fixes train/eval mode when it is built, and it cannot bind to a
//! var store that already holds its variables (which [`Gru4Rec::new`] must do
//! to rebuild a trained model without drawing from the RNG). A GRU reading a
//! LEFT-padded row would run over the padding first and start the real items
//! from a state that depends on how much padding there is; so each row is
//! rotated to be right-padded before the GRU (padding at the end never
//! reaches real positions) and rotated back after, with padded positions
//! zeroed. Outputs are therefore independent of left padding.
//!
//! Conventions: items are `1..=num_items`, `0` is padding. Input sequences are
//! `[B, L]` int64, LEFT-padded with 0 (padding only at the start of a row).

use serde::{Deserialize, Serialize};
use tch::nn::{self, Init};
use tch::{Device, Tensor};

use super::dropout::ChaChaDropout;
use super::layers::{dot_rows, with_padding_column, Gru, Linear, Padding};
use super::param;
use super::trainer::{ModelConfig, SequenceModel};

/// Hyper-parameters of a GRU4Rec model. Serialised next to the weights.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Gru4RecConfig {
    /// Number of real items; items are `1..=num_items`, 0 is padding.
    pub num_items: i64,
    /// Longest history the model reads.
    #[serde(default = "default_max_len")]
    pub max_len: i64,
    /// Item embedding width.
    #[serde(default = "default_dim")]
    pub dim: i64,
    /// GRU hidden size; 0 means `dim` (then the output is tied to the
    /// embedding table).
    #[serde(default)]
    pub hidden: i64,
    /// Number of stacked GRU layers.
    #[serde(default = "default_layers")]
    pub layers: i64,
    /// Dropout rate (embeddings, between GRU layers, GRU output).
    #[serde(default = "default_dropout")]
    pub dropout: f64,
}

fn default_max_len() -> i64 {
    50
}
fn default_dim() -> i64 {
    64
}
fn default_layers() -> i64 {
    1
}
fn default_dropout() -> f64 {
    0.2
}

impl Gru4RecConfig {
    /// A config with the given catalogue size and every other field at its default.
    pub fn new(num_items: i64) -> Self {
        Gru4RecConfig {
            num_items,
            max_len: default_max_len(),
            dim: default_dim(),
            hidden: 0,
            layers: default_layers(),
            dropout: default_dropout(),
        }
    }

    /// The effective GRU hidden size (`hidden`, or `dim` when 0).
    pub fn hidden_size(&self) -> i64 {
        if self.hidden > 0 {
            self.hidden
        } else {
            self.dim
        }
    }

    /// Whether item scores are dot products with the embedding table.
    pub fn tied(&self) -> bool {
        self.hidden_size() == self.dim
    }

    /// Checks that the hyper-parameters are usable.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.num_items >= 1, "num_items must be >= 1");
        anyhow::ensure!(self.max_len >= 1, "max_len must be >= 1");
        anyhow::ensure!(self.dim >= 1, "dim must be >= 1");
        anyhow::ensure!(self.hidden >= 0, "hidden must be >= 0 (0 = dim)");
        anyhow::ensure!(self.layers >= 1, "layers must be >= 1");
        anyhow::ensure!(
            (0.0..1.0).contains(&self.dropout),
            "dropout must be in [0, 1)"
        );
        Ok(())
    }
}

/// The GRU4Rec model. Variables (names as in the var store): `item_emb`
/// [num_items+1, dim], `gru.{weight_ih,weight_hh,bias_ih,bias_hh}_l{k}`, and,
/// when `hidden != dim`, `out.weight` [num_items, hidden] and `out.bias`
/// [num_items] (row `k` scoring item `k + 1`).
pub struct Gru4Rec {
    item_emb: Tensor,
    gru: Gru,
    /// Untied output layer, when `hidden != dim`.
    out: Option<Linear>,
    cfg: Gru4RecConfig,
}

impl Gru4Rec {
    /// Builds the model under `p`. Variables that already exist in the var
    /// store under the same names are reused without any RNG draw; missing
    /// ones are initialised from torch's global RNG (seed it first for
    /// reproducible weights).
    ///
    /// Panics if `cfg` is invalid (see [`Gru4RecConfig::validate`]).
    pub fn new(p: &nn::Path, cfg: &Gru4RecConfig) -> Gru4Rec {
        Self::build(p, cfg, true)
    }

    /// Like [`Gru4Rec::new`] but missing variables are created zero-filled,
    /// without drawing from torch's global RNG (for loading weights next).
    pub fn new_uninit(p: &nn::Path, cfg: &Gru4RecConfig) -> Gru4Rec {
        Self::build(p, cfg, false)
    }

    fn build(p: &nn::Path, cfg: &Gru4RecConfig, random: bool) -> Gru4Rec {
        cfg.validate().expect("invalid Gru4RecConfig");
        let ini = |init: Init| if random { init } else { Init::Const(0.0) };
        // N(0, 1), as PyTorch's nn.Embedding. With tied output weights the
        // logits are (tanh-bounded GRU state) · (item row), so the rows must
        // be large for the softmax to sharpen: at N(0, 1/dim) the same model
        // ended 15 % lower in NDCG@10 after the same epochs (0.363 vs 0.425
        // on examples/python-stage, matched by a PyTorch GRU given our old
        // init: 0.356).
        let item_emb = param(
            p,
            "item_emb",
            &[cfg.num_items + 1, cfg.dim],
            ini(Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            }),
        );
        let gru = Gru::new(
            p / "gru",
            cfg.dim,
            cfg.hidden_size(),
            cfg.layers,
            cfg.dropout,
            random,
        );
        let out =
            (!cfg.tied()).then(|| Linear::new(p / "out", cfg.hidden_size(), cfg.num_items, random));
        Gru4Rec {
            item_emb,
            gru,
            out,
            cfg: cfg.clone(),
        }
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &Gru4RecConfig {
        &self.cfg
    }

    /// The device the item table lives on.
    pub fn device(&self) -> Device {
        self.item_emb.device()
    }

    /// Encodes left-padded histories: `seqs` [B, L] int64 (`L <= max_len`) →
    /// [B, L, hidden]. The state at position `t` depends only on the row's
    /// real items at positions `<= t`; padded positions come out as zeros.
    /// `train` switches dropout on.
    pub fn encode(&self, seqs: &Tensor, train: bool) -> Tensor {
        let (_b, l) = seqs.size2().expect("seqs must be [B, L]");
        assert!(
            l <= self.cfg.max_len,
            "sequence length {l} exceeds max_len {}",
            self.cfg.max_len
        );
        let seqs = seqs.to_device(self.device());
        let padding = Padding::of(&seqs);
        let ids = padding.right_ids(&seqs);
        let xs = Tensor::embedding(&self.item_emb, &ids, 0, false, false)
            .chacha_dropout(self.cfg.dropout, train);
        // Last layer's states [B, L, H], right-padded.
        let hs = self
            .gru
            .forward_t(&xs, train)
            .chacha_dropout(self.cfg.dropout, train);
        padding.left(&hs)
    }

    /// Scores of items `1..=num_items` for hidden states [..., hidden]:
    /// returns [..., num_items], column `k` holding item `k + 1`.
    pub fn item_logits(&self, hidden: &Tensor) -> Tensor {
        match &self.out {
            Some(out) => out.forward(hidden),
            None => hidden.matmul(&self.item_emb.narrow(0, 1, self.cfg.num_items).tr()),
        }
    }

    /// The scores of items `columns + 1` ([T, K]) for hidden states
    /// [T, hidden]: [T, K], what [`Gru4Rec::item_logits`] holds at those
    /// columns, computed for the K items only.
    pub fn item_scores(&self, hidden: &Tensor, columns: &Tensor) -> Tensor {
        match &self.out {
            Some(out) => out.forward_rows(hidden, columns),
            None => dot_rows(&self.item_emb, hidden, &(columns + 1)),
        }
    }

    /// Next-item scores after the last position of each left-padded history,
    /// in eval mode and without recording gradients: [B, num_items + 1]
    /// float, column `i` scoring item `i`, column 0 (padding) `-inf`.
    pub fn score_last(&self, seqs: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let last = self.encode(seqs, false).select(1, -1); // [B, H]
            with_padding_column(&self.item_logits(&last))
        })
    }
}

impl ModelConfig for Gru4RecConfig {
    type Model = Gru4Rec;
    const NAME: &'static str = "gru4rec";

    fn check(&self) -> anyhow::Result<()> {
        self.validate()
    }

    fn num_items(&self) -> i64 {
        self.num_items
    }

    fn max_len(&self) -> i64 {
        self.max_len
    }

    fn build(&self, p: &nn::Path) -> Gru4Rec {
        Gru4Rec::new(p, self)
    }

    fn build_uninit(&self, p: &nn::Path) -> Gru4Rec {
        Gru4Rec::new_uninit(p, self)
    }
}

impl SequenceModel for Gru4Rec {
    fn encode(&self, seqs: &Tensor, train: bool) -> Tensor {
        Gru4Rec::encode(self, seqs, train)
    }

    fn item_logits(&self, hidden: &Tensor) -> Tensor {
        Gru4Rec::item_logits(self, hidden)
    }

    fn item_scores(&self, hidden: &Tensor, columns: &Tensor) -> Tensor {
        Gru4Rec::item_scores(self, hidden, columns)
    }

    fn score_last(&self, seqs: &Tensor) -> Tensor {
        Gru4Rec::score_last(self, seqs)
    }

    fn device(&self) -> Device {
        Gru4Rec::device(self)
    }
}

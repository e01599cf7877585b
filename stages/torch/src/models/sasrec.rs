//! SASRec: self-attentive sequential recommendation.
//!
//! Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018
//! (arXiv:1808.09781). A stack of causal (left-to-right) transformer blocks
//! reads a user's item history; the hidden state at position `t` is scored
//! against the item-embedding table (weights tied between input and output)
//! to predict the item at `t + 1`.
//!
//! Where this implementation deviates from the paper:
//!
//! * **Loss.** The paper trains with binary cross-entropy against one sampled
//!   negative per position. The shared training loop in `trainer.rs` uses
//!   full-softmax cross-entropy over the whole catalogue at every position by
//!   default, the "strong" variant (SASRec+ / SASRec-CE, cf. Klenitskiy &
//!   Vasilev, RecSys 2023), which is markedly better and is what modern
//!   comparisons expect. The paper's loss is `loss = "bce"` (`negatives`
//!   per position, 1 as in the paper, drawn uniformly from the items the
//!   user's training sequence lacks, as the authors' sampler does; scored by
//!   dot product with the item table, [`SasRec::item_scores`]);
//!   `loss = "bce_full"` makes every item but the target a negative.
//! * **Normalisation.** `pre_norm = true` (the default) uses the usual pre-LN
//!   transformer block (`x + Drop(Attn(LN(x)))`, `x + Drop(FFN(LN(x)))`, final
//!   LN). `pre_norm = false` gives the post-LN block (`LN(x + Drop(Attn(x)))`).
//!   Neither is exactly the paper's hybrid (queries from `LN(x)`, keys and
//!   values from `x`).
//! * **Feed-forward.** Two linear layers with GELU (the paper: ReLU, via 1x1
//!   convolutions). Hidden width `ffn_dim`, which defaults (0) to `dim` as in
//!   the paper.
//! * **Multi-head.** `heads` may exceed 1 (the paper uses a single head).
//! * **Positions.** Learnable positional embeddings anchored at the *end* of the
//!   sequence: for an input of length `L <= max_len`, column `j` gets position
//!   `max_len - L + j`, so the most recent item always has position
//!   `max_len - 1`. This equals the paper's scheme (left padding to exactly
//!   `max_len`) and makes outputs independent of how much left padding a batch
//!   carries.
//!
//! Conventions: items are `1..=num_items`, `0` is padding. Input sequences are
//! `[B, L]` int64, LEFT-padded with 0. Padded positions never influence real
//! ones (they are masked as attention keys and their hidden states are zeroed
//! after every block), and row 0 of the item table never contributes (its input
//! embedding is masked and its output score is `-inf`).

use serde::{Deserialize, Serialize};
use tch::nn::{self, Init};
use tch::{Device, Kind, Tensor};

use super::dropout::ChaChaDropout;
use super::layers::{
    causal_mask, dot_rows, encode_blocks, encode_blocks_diagnosed, Activation, AttentionBlock,
    BlockShape, Embedded, FeedForwardBlock, LayerNorm, TransformerBlock,
};
use super::trainer::{ModelConfig, SequenceModel};
use super::{param, AttentionBatch, Attentive};

/// Hyper-parameters of a SasRec model. Serialised next to the weights.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SasRecConfig {
    /// Number of real items; items are `1..=num_items`, 0 is padding.
    pub num_items: i64,
    /// Longest history the model reads (size of the positional table).
    #[serde(default = "default_max_len")]
    pub max_len: i64,
    /// Embedding / hidden width.
    #[serde(default = "default_dim")]
    pub dim: i64,
    /// Number of transformer blocks.
    #[serde(default = "default_layers")]
    pub layers: i64,
    /// Attention heads; must divide `dim`.
    #[serde(default = "default_heads")]
    pub heads: i64,
    /// Feed-forward hidden width; 0 means `dim` (as in the paper).
    #[serde(default)]
    pub ffn_dim: i64,
    /// Dropout rate (embeddings, attention weights, block outputs, FFN).
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    /// Pre-LN blocks (default) instead of post-LN.
    #[serde(default = "default_pre_norm")]
    pub pre_norm: bool,
    /// The feed-forward non-linearity (GELU; the paper's ReLU on request).
    /// Left out of config.json when GELU, so models saved before it existed
    /// keep their bytes.
    #[serde(default, skip_serializing_if = "Activation::is_gelu")]
    pub activation: Activation,
}

fn default_max_len() -> i64 {
    50
}
fn default_dim() -> i64 {
    64
}
fn default_layers() -> i64 {
    2
}
fn default_heads() -> i64 {
    1
}
fn default_dropout() -> f64 {
    0.2
}
fn default_pre_norm() -> bool {
    true
}

impl SasRecConfig {
    /// A config with the given catalogue size and every other field at its default.
    pub fn new(num_items: i64) -> Self {
        SasRecConfig {
            num_items,
            max_len: default_max_len(),
            dim: default_dim(),
            layers: default_layers(),
            heads: default_heads(),
            ffn_dim: 0,
            dropout: default_dropout(),
            pre_norm: default_pre_norm(),
            activation: Activation::Gelu,
        }
    }

    /// The effective feed-forward width (`ffn_dim`, or `dim` when 0).
    pub fn ffn_hidden(&self) -> i64 {
        if self.ffn_dim > 0 {
            self.ffn_dim
        } else {
            self.dim
        }
    }

    /// The shape of its transformer blocks.
    pub(crate) fn block_shape(&self) -> BlockShape {
        BlockShape {
            dim: self.dim,
            heads: self.heads,
            dropout: self.dropout,
            pre_norm: self.pre_norm,
            activation: self.activation,
        }
    }

    /// Checks that the hyper-parameters are usable.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.num_items >= 1, "num_items must be >= 1");
        anyhow::ensure!(self.max_len >= 1, "max_len must be >= 1");
        anyhow::ensure!(self.dim >= 1, "dim must be >= 1");
        anyhow::ensure!(self.layers >= 0, "layers must be >= 0");
        anyhow::ensure!(self.heads >= 1, "heads must be >= 1");
        anyhow::ensure!(
            self.dim % self.heads == 0,
            "dim ({}) must be divisible by heads ({})",
            self.dim,
            self.heads
        );
        anyhow::ensure!(self.ffn_dim >= 0, "ffn_dim must be >= 0");
        anyhow::ensure!(
            (0.0..1.0).contains(&self.dropout),
            "dropout must be in [0, 1)"
        );
        Ok(())
    }
}

/// The SASRec model. Variables (names as in the var store):
/// `item_emb` [num_items+1, dim], `pos_emb` [max_len, dim],
/// `blocks.{i}.attn.{norm,q,k,v,out}.*`, `blocks.{i}.ffn.{norm,fc1,fc2}.*`,
/// and `last_norm.*` when `pre_norm`.
pub struct SasRec {
    item_emb: Tensor,
    pos_emb: Tensor,
    blocks: Vec<TransformerBlock>,
    last_norm: Option<LayerNorm>,
    cfg: SasRecConfig,
}

impl SasRec {
    /// Builds the model under `p`. Variables that already exist in the var
    /// store under the same names are reused without any RNG draw (so
    /// `SasRec::new(&vs.root(), cfg)` on the var store returned by
    /// [`trainer::train`](super::trainer::train) gives the trained model);
    /// missing ones are created and initialised from torch's global RNG (seed
    /// it with `tch::manual_seed` first for reproducible weights).
    ///
    /// Panics if `cfg` is invalid (see [`SasRecConfig::validate`]).
    pub fn new(p: &nn::Path, cfg: &SasRecConfig) -> SasRec {
        Self::build(p, cfg, true)
    }

    /// Like [`SasRec::new`] but missing variables are created zero-filled,
    /// without drawing from torch's global RNG: for building a model whose
    /// weights are loaded right after (see [`super::trainer::load_model`]), so
    /// that doing so cannot disturb a seeded training run elsewhere in the
    /// process.
    pub fn new_uninit(p: &nn::Path, cfg: &SasRecConfig) -> SasRec {
        Self::build(p, cfg, false)
    }

    fn build(p: &nn::Path, cfg: &SasRecConfig, random: bool) -> SasRec {
        cfg.validate().expect("invalid SasRecConfig");
        let ini = |init: Init| if random { init } else { Init::Const(0.0) };
        let emb_init = ini(Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        });
        let item_emb = param(p, "item_emb", &[cfg.num_items + 1, cfg.dim], emb_init);
        let pos_emb = param(p, "pos_emb", &[cfg.max_len, cfg.dim], emb_init);
        let shape = cfg.block_shape();
        let blocks = (0..cfg.layers)
            .map(|i| {
                let bp = p / "blocks" / i;
                TransformerBlock {
                    attn: AttentionBlock::new(&bp / "attn", &shape, random),
                    ffn: Some(FeedForwardBlock::new(
                        &bp / "ffn",
                        &shape,
                        cfg.ffn_hidden(),
                        random,
                    )),
                }
            })
            .collect();
        let last_norm = cfg
            .pre_norm
            .then(|| LayerNorm::new(p / "last_norm", cfg.dim));
        SasRec {
            item_emb,
            pos_emb,
            blocks,
            last_norm,
            cfg: cfg.clone(),
        }
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &SasRecConfig {
        &self.cfg
    }

    /// The device the item table lives on.
    pub fn device(&self) -> Device {
        self.item_emb.device()
    }

    /// Encodes left-padded histories.
    ///
    /// `seqs`: [B, L] int64 with `L <= max_len`, items in `1..=num_items`, 0 =
    /// padding (left). Returns [B, L, dim]; the state at position `t` depends
    /// only on items at positions `<= t` and is the representation used to
    /// predict the item at `t + 1`. Padded positions come out as zeros.
    /// `train` switches dropout on.
    pub fn encode(&self, seqs: &Tensor, train: bool) -> Tensor {
        let embedded = self.embed(seqs, train);
        encode_blocks(&self.blocks, self.last_norm.as_ref(), embedded, train)
    }

    /// What the blocks read (see [`Embedded`]), under a causal attention
    /// mask.
    fn embed(&self, seqs: &Tensor, train: bool) -> Embedded {
        let (_b, l) = seqs.size2().expect("seqs must be [B, L]");
        assert!(
            l <= self.cfg.max_len,
            "sequence length {l} exceeds max_len {}",
            self.cfg.max_len
        );
        let device = self.device();
        let seqs = seqs.to_device(device);
        let valid = seqs.gt(0); // [B, L]
        let keep = valid.unsqueeze(-1).to_kind(self.item_emb.kind()); // [B, L, 1]

        let items = Tensor::embedding(&self.item_emb, &seqs, 0, false, false);
        let positions = Tensor::arange_start(
            self.cfg.max_len - l,
            self.cfg.max_len,
            (Kind::Int64, device),
        );
        let pos = self.pos_emb.index_select(0, &positions); // [L, D]
        let xs = (items * (self.cfg.dim as f64).sqrt() + pos)
            .chacha_dropout(self.cfg.dropout, train)
            * &keep;

        (xs, keep, causal_mask(&valid))
    }

    /// Scores of items `1..=num_items` for hidden states `hidden` [..., dim]:
    /// returns [..., num_items], column `k` holding item `k + 1`. The training
    /// loop uses this (targets shifted by one), so that the padding row never
    /// enters the softmax.
    pub fn item_logits(&self, hidden: &Tensor) -> Tensor {
        let table = self.item_emb.narrow(0, 1, self.cfg.num_items);
        hidden.matmul(&table.tr())
    }

    /// The scores of items `columns + 1` ([T, K]) for hidden states [T, dim]:
    /// [T, K], the dot products [`SasRec::item_logits`] holds at those columns,
    /// computed for the K items only.
    pub fn item_scores(&self, hidden: &Tensor, columns: &Tensor) -> Tensor {
        dot_rows(&self.item_emb, hidden, &(columns + 1))
    }

    /// Next-item scores after the last position of each left-padded history,
    /// in eval mode (no dropout) and without recording gradients.
    ///
    /// Returns [B, num_items + 1] float: column `i` scores item `i`; column 0
    /// (padding) is `-inf`. The last column of `seqs` should hold a real item
    /// (a row of pure padding yields 0 for every item).
    pub fn score_last(&self, seqs: &Tensor) -> Tensor {
        tch::no_grad(|| self.scores_after(&self.encode(seqs, false)))
    }

    /// [`SasRec::score_last`] and the attention diagnostic of the scored
    /// position, from one pass through the blocks.
    pub fn score_last_with_attention(&self, seqs: &Tensor) -> (Tensor, AttentionBatch) {
        tch::no_grad(|| {
            let embedded = self.embed(seqs, false);
            let (h, attention) =
                encode_blocks_diagnosed(&self.blocks, self.last_norm.as_ref(), embedded);
            (self.scores_after(&h), attention)
        })
    }

    /// Scores [B, N + 1] after the last position of encoded histories `h`
    /// [B, L, D], column 0 (padding) `-inf`.
    fn scores_after(&self, h: &Tensor) -> Tensor {
        let last = h.select(1, -1); // [B, D]
        let scores = last.matmul(&self.item_emb.tr()); // [B, N + 1]
        let _ = scores.narrow(1, 0, 1).fill_(f64::NEG_INFINITY);
        scores
    }
}

impl ModelConfig for SasRecConfig {
    type Model = SasRec;
    const NAME: &'static str = "sasrec";

    fn check(&self) -> anyhow::Result<()> {
        self.validate()
    }

    fn num_items(&self) -> i64 {
        self.num_items
    }

    fn max_len(&self) -> i64 {
        self.max_len
    }

    fn build(&self, p: &nn::Path) -> SasRec {
        SasRec::new(p, self)
    }

    fn build_uninit(&self, p: &nn::Path) -> SasRec {
        SasRec::new_uninit(p, self)
    }
}

impl SequenceModel for SasRec {
    fn encode(&self, seqs: &Tensor, train: bool) -> Tensor {
        SasRec::encode(self, seqs, train)
    }

    fn item_logits(&self, hidden: &Tensor) -> Tensor {
        SasRec::item_logits(self, hidden)
    }

    fn item_scores(&self, hidden: &Tensor, columns: &Tensor) -> Tensor {
        SasRec::item_scores(self, hidden, columns)
    }

    fn score_last(&self, seqs: &Tensor) -> Tensor {
        SasRec::score_last(self, seqs)
    }

    fn device(&self) -> Device {
        SasRec::device(self)
    }
}

impl Attentive for SasRec {
    fn score_last_with_attention(&self, seqs: &Tensor) -> (Tensor, AttentionBatch) {
        SasRec::score_last_with_attention(self, seqs)
    }
}

//! GSRec: self-attention feeding a GRU — the SASRec→GRU hybrid.
//!
//! Item embeddings plus learnable positions go through causal self-attention
//! blocks (as in SASRec, but without the feed-forward layer, as the hybrid
//! proposes: the GRU that follows supplies the non-linearity), and the
//! attended sequence is read by a GRU, whose state at position `t` goes
//! through a linear layer over all items to predict the item at `t + 1`.
//! Attention lets every position look back at any earlier item; the GRU
//! then adds an explicit notion of order and recency on top.
//!
//! Flags for the variants the thesis leaves as future work: `ffn = true`
//! adds SASRec's feed-forward layer to each attention block, and
//! `gru_layers > 1` stacks GRUs.
//!
//! Where this implementation deviates from the thesis:
//!
//! * **Loss.** The thesis trains the last hidden state's linear layer over
//!   all items with binary cross-entropy with logits against the one-hot
//!   next item: that is `loss = "bce_full"` (every item but the target a
//!   negative; summed over items where PyTorch's default averages, a
//!   constant factor). With `training = "sliding"` each example is scored
//!   at its last hidden state only, as in the thesis; the default
//!   `training = "sequence"` scores every position of a sequence at once,
//!   which for this causal model is every prefix's last hidden state.
//!   `loss = "bce"` is the SASRec paper's sampled variant (`negatives` per
//!   position, drawn uniformly from the items the user's training sequence
//!   lacks, scored by the output layer's rows for just those items). The
//!   default is the shared trainer's full-softmax cross-entropy at every
//!   position, as for every model here, so that GSRec compares with SASRec
//!   and GRU4Rec on architecture alone.
//! * **Blocks.** The attention blocks are SASRec's (pre-LN by default,
//!   `pre_norm = false` for post-LN), sharing its code in `layers.rs`.
//!
//! Conventions as everywhere: items `1..=num_items`, 0 = padding, inputs
//! `[B, L]` LEFT-padded. Padded positions are masked as attention keys and
//! zeroed after every block, and the GRU reads each row rotated to be
//! right-padded (see [`Padding`]), so outputs do not depend on how much
//! left padding a row carries.

use serde::{Deserialize, Serialize};
use tch::nn::{self, Init};
use tch::{Device, Kind, Tensor};

use super::dropout::ChaChaDropout;
use super::layers::{
    causal_mask, encode_blocks, encode_blocks_diagnosed, with_padding_column, Activation,
    AttentionBlock, BlockShape, Embedded, FeedForwardBlock, Gru, LayerNorm, Linear, Padding,
    TransformerBlock,
};
use super::trainer::{ModelConfig, SequenceModel};
use super::{param, AttentionBatch, Attentive};

/// Hyper-parameters of a GSRec model. Serialised next to the weights.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct GsRecConfig {
    /// Number of real items; items are `1..=num_items`, 0 is padding.
    pub num_items: i64,
    /// Longest history the model reads (size of the positional table).
    pub max_len: i64,
    /// Embedding and attention width.
    pub dim: i64,
    /// Attention blocks.
    pub layers: i64,
    /// Attention heads; must divide `dim`.
    pub heads: i64,
    /// Adds a feed-forward layer (width `ffn_dim`, 0 = dim) to every block.
    pub ffn: bool,
    pub ffn_dim: i64,
    /// Stacked GRU layers after the attention.
    pub gru_layers: i64,
    /// GRU hidden size; 0 means `dim`.
    pub hidden: i64,
    /// Dropout (embeddings, attention, block outputs, between and after GRUs).
    pub dropout: f64,
    /// Pre-LN attention blocks (default) instead of post-LN.
    pub pre_norm: bool,
}

impl GsRecConfig {
    /// A config with the given catalogue size and the defaults `train` uses.
    pub fn new(num_items: i64) -> Self {
        GsRecConfig {
            num_items,
            max_len: 50,
            dim: 64,
            layers: 1,
            heads: 1,
            ffn: false,
            ffn_dim: 0,
            gru_layers: 1,
            hidden: 0,
            dropout: 0.2,
            pre_norm: true,
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

    fn block_shape(&self) -> BlockShape {
        BlockShape {
            dim: self.dim,
            heads: self.heads,
            dropout: self.dropout,
            pre_norm: self.pre_norm,
            activation: Activation::Gelu,
        }
    }

    /// Checks that the hyper-parameters are usable.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.num_items >= 1, "num_items must be >= 1");
        anyhow::ensure!(self.max_len >= 1, "max_len must be >= 1");
        anyhow::ensure!(self.dim >= 1, "dim must be >= 1");
        anyhow::ensure!(self.layers >= 1, "layers must be >= 1");
        anyhow::ensure!(self.heads >= 1, "heads must be >= 1");
        anyhow::ensure!(
            self.dim % self.heads == 0,
            "dim ({}) must be divisible by heads ({})",
            self.dim,
            self.heads
        );
        anyhow::ensure!(self.ffn_dim >= 0, "ffn_dim must be >= 0");
        anyhow::ensure!(self.gru_layers >= 1, "gru_layers must be >= 1");
        anyhow::ensure!(self.hidden >= 0, "hidden must be >= 0 (0 = dim)");
        anyhow::ensure!(
            (0.0..1.0).contains(&self.dropout),
            "dropout must be in [0, 1)"
        );
        Ok(())
    }
}

/// The GSRec model. Variables: `item_emb` [num_items+1, dim], `pos_emb`
/// [max_len, dim], `blocks.{i}.attn.*` (and `blocks.{i}.ffn.*` with
/// `ffn`), `last_norm.*` when `pre_norm`, `gru.*` (PyTorch's `nn.GRU`
/// names), `out.weight` [num_items, hidden] and `out.bias` (row `k` scoring
/// item `k + 1`).
pub struct GsRec {
    item_emb: Tensor,
    pos_emb: Tensor,
    blocks: Vec<TransformerBlock>,
    last_norm: Option<LayerNorm>,
    gru: Gru,
    out: Linear,
    cfg: GsRecConfig,
}

impl GsRec {
    /// Builds the model under `p`, reusing variables the var store already
    /// holds and drawing missing ones from torch's global RNG (when
    /// `random`; zero-filled otherwise, for a model loaded right after).
    /// Panics if `cfg` is invalid.
    fn build(p: &nn::Path, cfg: &GsRecConfig, random: bool) -> GsRec {
        cfg.validate().expect("invalid GsRecConfig");
        let emb_init = if random {
            Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            }
        } else {
            Init::Const(0.0)
        };
        let item_emb = param(p, "item_emb", &[cfg.num_items + 1, cfg.dim], emb_init);
        let pos_emb = param(p, "pos_emb", &[cfg.max_len, cfg.dim], emb_init);
        let shape = cfg.block_shape();
        let ffn_hidden = if cfg.ffn_dim > 0 {
            cfg.ffn_dim
        } else {
            cfg.dim
        };
        let blocks = (0..cfg.layers)
            .map(|i| {
                let bp = p / "blocks" / i;
                TransformerBlock {
                    attn: AttentionBlock::new(&bp / "attn", &shape, random),
                    ffn: cfg
                        .ffn
                        .then(|| FeedForwardBlock::new(&bp / "ffn", &shape, ffn_hidden, random)),
                }
            })
            .collect();
        let last_norm = cfg
            .pre_norm
            .then(|| LayerNorm::new(p / "last_norm", cfg.dim));
        let h = cfg.hidden_size();
        let gru = Gru::new(p / "gru", cfg.dim, h, cfg.gru_layers, cfg.dropout, random);
        let out = Linear::new(p / "out", h, cfg.num_items, random);
        GsRec {
            item_emb,
            pos_emb,
            blocks,
            last_norm,
            gru,
            out,
            cfg: cfg.clone(),
        }
    }

    fn device(&self) -> Device {
        self.item_emb.device()
    }

    /// Left-padded histories [B, L] → GRU states [B, L, hidden]; the state
    /// at `t` depends only on the row's items at positions `<= t`, padded
    /// positions are zeros.
    fn encode(&self, seqs: &Tensor, train: bool) -> Tensor {
        let embedded = self.embed(seqs, train);
        let xs = encode_blocks(&self.blocks, self.last_norm.as_ref(), embedded, train);
        self.gru_states(seqs, &xs, train)
    }

    /// The attention half's output `xs` [B, L, D] of histories `seqs`
    /// through the GRU: states [B, L, hidden].
    fn gru_states(&self, seqs: &Tensor, xs: &Tensor, train: bool) -> Tensor {
        let padding = Padding::of(&seqs.to_device(self.device()));
        let hs = self
            .gru
            .forward_t(&padding.right(xs), train)
            .chacha_dropout(self.cfg.dropout, train);
        padding.left(&hs)
    }

    /// What the attention blocks read (see [`Embedded`]), under a causal
    /// attention mask.
    fn embed(&self, seqs: &Tensor, train: bool) -> Embedded {
        let (_b, l) = seqs.size2().expect("seqs must be [B, L]");
        assert!(
            l <= self.cfg.max_len,
            "sequence length {l} exceeds max_len {}",
            self.cfg.max_len
        );
        let device = self.device();
        let seqs = seqs.to_device(device);
        let valid = seqs.gt(0);
        let keep = valid.unsqueeze(-1).to_kind(self.item_emb.kind());
        let items = Tensor::embedding(&self.item_emb, &seqs, 0, false, false);
        // Positions anchored at the end, as SASRec's: the most recent item
        // always has position max_len - 1.
        let positions = Tensor::arange_start(
            self.cfg.max_len - l,
            self.cfg.max_len,
            (Kind::Int64, device),
        );
        let pos = self.pos_emb.index_select(0, &positions);
        let xs = (items * (self.cfg.dim as f64).sqrt() + pos)
            .chacha_dropout(self.cfg.dropout, train)
            * &keep;
        (xs, keep, causal_mask(&valid))
    }

    fn item_logits(&self, hidden: &Tensor) -> Tensor {
        self.out.forward(hidden)
    }

    fn item_scores(&self, hidden: &Tensor, columns: &Tensor) -> Tensor {
        self.out.forward_rows(hidden, columns)
    }

    fn score_last(&self, seqs: &Tensor) -> Tensor {
        tch::no_grad(|| self.scores_after(&self.encode(seqs, false)))
    }

    /// `score_last` and the attention diagnostic of the scored position,
    /// from one pass through the blocks.
    pub fn score_last_with_attention(&self, seqs: &Tensor) -> (Tensor, AttentionBatch) {
        tch::no_grad(|| {
            let embedded = self.embed(seqs, false);
            let (xs, attention) =
                encode_blocks_diagnosed(&self.blocks, self.last_norm.as_ref(), embedded);
            let hs = self.gru_states(seqs, &xs, false);
            (self.scores_after(&hs), attention)
        })
    }

    /// Scores [B, N + 1] after the last GRU state of `hs` [B, L, hidden],
    /// column 0 (padding) `-inf`.
    fn scores_after(&self, hs: &Tensor) -> Tensor {
        with_padding_column(&self.item_logits(&hs.select(1, -1)))
    }
}

impl ModelConfig for GsRecConfig {
    type Model = GsRec;
    const NAME: &'static str = "gsrec";

    fn check(&self) -> anyhow::Result<()> {
        self.validate()
    }

    fn num_items(&self) -> i64 {
        self.num_items
    }

    fn max_len(&self) -> i64 {
        self.max_len
    }

    fn build(&self, p: &nn::Path) -> GsRec {
        GsRec::build(p, self, true)
    }

    fn build_uninit(&self, p: &nn::Path) -> GsRec {
        GsRec::build(p, self, false)
    }
}

impl SequenceModel for GsRec {
    fn encode(&self, seqs: &Tensor, train: bool) -> Tensor {
        GsRec::encode(self, seqs, train)
    }

    fn item_logits(&self, hidden: &Tensor) -> Tensor {
        GsRec::item_logits(self, hidden)
    }

    fn item_scores(&self, hidden: &Tensor, columns: &Tensor) -> Tensor {
        GsRec::item_scores(self, hidden, columns)
    }

    fn score_last(&self, seqs: &Tensor) -> Tensor {
        GsRec::score_last(self, seqs)
    }

    fn device(&self) -> Device {
        GsRec::device(self)
    }
}

impl Attentive for GsRec {
    fn score_last_with_attention(&self, seqs: &Tensor) -> (Tensor, AttentionBatch) {
        GsRec::score_last_with_attention(self, seqs)
    }
}

//! BERT4Rec: sequential recommendation with a bidirectional transformer.
//!
//! Sun et al., "BERT4Rec: Sequential Recommendation with Bidirectional
//! Encoder Representations from Transformer", CIKM 2019 (arXiv:1904.06690).
//! A stack of non-causal transformer blocks reads a user's item history in
//! which some items were replaced by a `[MASK]` token, and is trained to
//! recover the masked items (the cloze task). To recommend, `[MASK]` is
//! appended after the history and the state at that position is scored
//! against the item-embedding table.
//!
//! Where this implementation deviates from the paper:
//!
//! * **Masking.** The paper replaces every chosen position by `[MASK]`. We
//!   use BERT's 80/10/10 rule: of the positions chosen (each real position
//!   with probability `mask_prob`), 80% become `[MASK]`, 10% a uniformly
//!   random item and 10% stay unchanged. A sequence where no position was
//!   chosen gets its last item chosen, so every sequence teaches something
//!   (and the last position, where `[MASK]` sits at inference, is trained).
//!   The paper's extra samples that mask only the last item are not added.
//! * **Loss.** Full-softmax cross-entropy over the whole catalogue at the
//!   masked positions (as the paper), through the shared trainer.
//! * **Normalisation.** `pre_norm = true` (the default) uses pre-LN blocks
//!   with a final LN, which train more stably; `pre_norm = false` gives the
//!   paper's post-LN blocks (`LN(x + Drop(Sublayer(x)))`).
//! * **Positions.** Learnable positional embeddings anchored at the *end* of
//!   the sequence (column `j` of an input of length `L` gets position
//!   `max_len - L + j`), so the last item, or the `[MASK]` appended at
//!   inference, always has position `max_len - 1`, and outputs do not depend
//!   on left padding. The paper pads on the left to exactly `max_len`, which
//!   is the same thing.
//! * **Output.** As the paper: `GELU(h W + b)` scored against the tied item
//!   table plus a per-item bias, over real items only (`[MASK]` and padding
//!   are never candidates).
//! * **Batches.** Sequences are cut to their last `max_len` items (the paper
//!   also slides windows over longer ones).
//!
//! Conventions: items are `1..=num_items`, `0` is padding, `num_items + 1`
//! is `[MASK]`. Input sequences are `[B, L]` int64, LEFT-padded with 0.
//! Padded positions never influence real ones (they are masked as attention
//! keys and their hidden states are zeroed after every block).

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::nn::{self, Init};
use tch::{Device, Kind, Tensor};

use super::dropout::ChaChaDropout;
use super::layers::{
    encode_blocks, encode_blocks_diagnosed, with_padding_column, Activation, AttentionBlock,
    BlockShape, Embedded, FeedForwardBlock, LayerNorm, Linear, TransformerBlock,
};
use super::trainer::{ModelConfig, SequenceModel, TrainBatch};
use super::{param, AttentionBatch, Attentive};

/// Hyper-parameters of a BERT4Rec model. Serialised next to the weights.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Bert4RecConfig {
    /// Number of real items; items are `1..=num_items`, 0 is padding,
    /// `num_items + 1` is `[MASK]`.
    pub num_items: i64,
    /// Longest sequence the model reads, `[MASK]` included at inference
    /// (size of the positional table).
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
    /// Feed-forward hidden width; 0 means `4 * dim` (as in the paper).
    #[serde(default)]
    pub ffn_dim: i64,
    /// Dropout rate (embeddings, attention weights, block outputs, FFN).
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    /// Pre-LN blocks (default) instead of the paper's post-LN.
    #[serde(default = "default_pre_norm")]
    pub pre_norm: bool,
    /// Probability that a real position is chosen for the cloze task.
    #[serde(default = "default_mask_prob")]
    pub mask_prob: f64,
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
    2
}
fn default_dropout() -> f64 {
    0.1
}
fn default_pre_norm() -> bool {
    true
}
fn default_mask_prob() -> f64 {
    0.2
}

impl Bert4RecConfig {
    /// A config with the given catalogue size and every other field at its default.
    pub fn new(num_items: i64) -> Self {
        Bert4RecConfig {
            num_items,
            max_len: default_max_len(),
            dim: default_dim(),
            layers: default_layers(),
            heads: default_heads(),
            ffn_dim: 0,
            dropout: default_dropout(),
            pre_norm: default_pre_norm(),
            mask_prob: default_mask_prob(),
        }
    }

    /// The `[MASK]` token's id.
    pub fn mask_token(&self) -> i64 {
        self.num_items + 1
    }

    /// The effective feed-forward width (`ffn_dim`, or `4 * dim` when 0).
    pub fn ffn_hidden(&self) -> i64 {
        if self.ffn_dim > 0 {
            self.ffn_dim
        } else {
            4 * self.dim
        }
    }

    /// The shape of its transformer blocks.
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
        anyhow::ensure!(self.max_len >= 2, "max_len must be >= 2");
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
        anyhow::ensure!(
            self.mask_prob > 0.0 && self.mask_prob < 1.0,
            "mask_prob must be in (0, 1)"
        );
        Ok(())
    }

    /// The cloze batch for `windows`: each cut to its last `max_len` items
    /// and left-padded; every real position is chosen with probability
    /// `mask_prob` (the last one when none was), and a chosen position's
    /// input becomes `[MASK]` (80%), a uniformly random item (10%) or stays
    /// (10%). Targets are the original items at the chosen positions.
    pub fn cloze_batch(
        &self,
        windows: &[&[i64]],
        rng: &mut ChaCha8Rng,
        device: Device,
    ) -> TrainBatch {
        let max_len = self.max_len as usize;
        let cut = |w: &[i64]| w.len().min(max_len);
        let l = windows.iter().map(|w| cut(w)).max().unwrap_or(0);
        let b = windows.len();
        let mut inputs = vec![0i64; b * l];
        let mut positions = Vec::new();
        let mut targets = Vec::new();
        for (r, &w) in windows.iter().enumerate() {
            let k = cut(w);
            let seq = &w[w.len() - k..];
            let off = r * l + (l - k);
            inputs[off..off + k].copy_from_slice(seq);
            let chosen: Vec<usize> = (0..k)
                .filter(|_| rng.gen::<f64>() < self.mask_prob)
                .collect();
            let chosen = if chosen.is_empty() && k > 0 {
                vec![k - 1]
            } else {
                chosen
            };
            for j in chosen {
                let u: f64 = rng.gen();
                if u < 0.8 {
                    inputs[off + j] = self.mask_token();
                } else if u < 0.9 {
                    inputs[off + j] = rng.gen_range(1..=self.num_items);
                }
                positions.push((off + j) as i64);
                targets.push(seq[j] - 1);
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
}

/// The BERT4Rec model. Variables (names as in the var store):
/// `item_emb` [num_items+2, dim] (row 0 padding, row num_items+1 `[MASK]`),
/// `pos_emb` [max_len, dim], `emb_norm.*`,
/// `blocks.{i}.attn.{norm,q,k,v,out}.*`, `blocks.{i}.ffn.{norm,fc1,fc2}.*`,
/// `last_norm.*` when `pre_norm`, and the output head `head.*` and
/// `out_bias` [num_items].
pub struct Bert4Rec {
    item_emb: Tensor,
    pos_emb: Tensor,
    emb_norm: LayerNorm,
    blocks: Vec<TransformerBlock>,
    last_norm: Option<LayerNorm>,
    head: Linear,
    out_bias: Tensor,
    cfg: Bert4RecConfig,
}

impl Bert4Rec {
    /// Builds the model under `p`, reusing variables the var store already
    /// holds (no RNG draw for those) and initialising missing ones from
    /// torch's global RNG. Panics if `cfg` is invalid.
    pub fn new(p: &nn::Path, cfg: &Bert4RecConfig) -> Bert4Rec {
        Self::build(p, cfg, true)
    }

    /// Like [`Bert4Rec::new`] but missing variables are zero-filled without
    /// drawing from torch's RNG (for weights loaded right after).
    pub fn new_uninit(p: &nn::Path, cfg: &Bert4RecConfig) -> Bert4Rec {
        Self::build(p, cfg, false)
    }

    fn build(p: &nn::Path, cfg: &Bert4RecConfig, random: bool) -> Bert4Rec {
        cfg.validate().expect("invalid Bert4RecConfig");
        let emb_init = if random {
            Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            }
        } else {
            Init::Const(0.0)
        };
        let item_emb = param(p, "item_emb", &[cfg.num_items + 2, cfg.dim], emb_init);
        let pos_emb = param(p, "pos_emb", &[cfg.max_len, cfg.dim], emb_init);
        let emb_norm = LayerNorm::new(p / "emb_norm", cfg.dim);
        let shape = cfg.block_shape();
        let blocks = (0..cfg.layers)
            .map(|i| {
                let bp = p / "blocks" / i;
                // SASRec's blocks, under a mask that is not causal.
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
        let head = Linear::new(p / "head", cfg.dim, cfg.dim, random);
        let out_bias = param(p, "out_bias", &[cfg.num_items], Init::Const(0.0));
        Bert4Rec {
            item_emb,
            pos_emb,
            emb_norm,
            blocks,
            last_norm,
            head,
            out_bias,
            cfg: cfg.clone(),
        }
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &Bert4RecConfig {
        &self.cfg
    }

    /// The device the item table lives on.
    pub fn device(&self) -> Device {
        self.item_emb.device()
    }

    /// Encodes left-padded sequences (items, `[MASK]`, 0 = padding) into
    /// [B, L, dim]. Every real position sees every real position (no causal
    /// mask); padded positions come out as zeros and never influence others.
    /// `train` switches dropout on.
    pub fn encode(&self, seqs: &Tensor, train: bool) -> Tensor {
        let embedded = self.embed(seqs, train);
        encode_blocks(&self.blocks, self.last_norm.as_ref(), embedded, train)
    }

    /// What the blocks read (see [`Embedded`]), every real key visible to
    /// every query.
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
        let xs = self
            .emb_norm
            .forward(&(items + pos))
            .chacha_dropout(self.cfg.dropout, train)
            * &keep;

        // Key-is-real; every query may also attend to itself so that rows of
        // padded queries are never fully masked (no NaN); those rows are
        // zeroed right after each block.
        let eye = Tensor::eye(l, (Kind::Bool, device));
        let mask = valid
            .unsqueeze(1)
            .unsqueeze(1) // [B, 1, 1, L]
            .logical_or(&eye); // [B, 1, L, L]
        (xs, keep, mask)
    }

    /// Scores of items `1..=num_items` for hidden states [..., dim]: returns
    /// [..., num_items], column `k` holding item `k + 1` (padding and
    /// `[MASK]` are never candidates).
    pub fn item_logits(&self, hidden: &Tensor) -> Tensor {
        let table = self.item_emb.narrow(0, 1, self.cfg.num_items);
        self.head.forward(hidden).gelu("none").matmul(&table.tr()) + &self.out_bias
    }

    /// Next-item scores for left-padded histories: `[MASK]` is appended after
    /// each history (dropping the oldest column when the input already has
    /// `max_len` columns) and its position is scored, in eval mode and
    /// without gradients. Returns [B, num_items + 1] float: column `i` scores
    /// item `i`; column 0 (padding) is `-inf`.
    pub fn score_last(&self, seqs: &Tensor) -> Tensor {
        tch::no_grad(|| self.scores_after(&self.encode(&self.with_mask(seqs), false)))
    }

    /// Scores [B, N + 1] at the last position of encoded inputs `h`
    /// [B, L, D] (the appended `[MASK]`), column 0 (padding) `-inf`.
    fn scores_after(&self, h: &Tensor) -> Tensor {
        with_padding_column(&self.item_logits(&h.select(1, -1)))
    }

    /// Left-padded histories [B, L] with `[MASK]` appended, the oldest
    /// column dropped when that makes them longer than `max_len`.
    fn with_mask(&self, seqs: &Tensor) -> Tensor {
        let (b, l) = seqs.size2().expect("seqs must be [B, L]");
        let device = self.device();
        let mask = Tensor::full([b, 1], self.cfg.mask_token(), (Kind::Int64, device));
        let input = Tensor::cat(&[seqs.to_device(device), mask], 1);
        if l + 1 > self.cfg.max_len {
            input.narrow(1, l + 1 - self.cfg.max_len, self.cfg.max_len)
        } else {
            input
        }
    }

    /// [`Bert4Rec::score_last`] and the attention diagnostic of the
    /// appended `[MASK]` (the scored position), from one pass through the
    /// blocks. Its keys are the history's items and `[MASK]` itself.
    pub fn score_last_with_attention(&self, seqs: &Tensor) -> (Tensor, AttentionBatch) {
        tch::no_grad(|| {
            let embedded = self.embed(&self.with_mask(seqs), false);
            let (h, attention) =
                encode_blocks_diagnosed(&self.blocks, self.last_norm.as_ref(), embedded);
            (self.scores_after(&h), attention)
        })
    }
}

impl ModelConfig for Bert4RecConfig {
    type Model = Bert4Rec;
    const NAME: &'static str = "bert4rec";

    fn check(&self) -> anyhow::Result<()> {
        self.validate()
    }

    fn num_items(&self) -> i64 {
        self.num_items
    }

    fn max_len(&self) -> i64 {
        self.max_len
    }

    fn build(&self, p: &nn::Path) -> Bert4Rec {
        Bert4Rec::new(p, self)
    }

    fn build_uninit(&self, p: &nn::Path) -> Bert4Rec {
        Bert4Rec::new_uninit(p, self)
    }

    fn training_batch(
        &self,
        windows: &[&[i64]],
        rng: &mut ChaCha8Rng,
        device: Device,
    ) -> TrainBatch {
        self.cloze_batch(windows, rng, device)
    }
}

impl SequenceModel for Bert4Rec {
    fn encode(&self, seqs: &Tensor, train: bool) -> Tensor {
        Bert4Rec::encode(self, seqs, train)
    }

    fn item_logits(&self, hidden: &Tensor) -> Tensor {
        Bert4Rec::item_logits(self, hidden)
    }

    fn score_last(&self, seqs: &Tensor) -> Tensor {
        Bert4Rec::score_last(self, seqs)
    }

    fn device(&self) -> Device {
        Bert4Rec::device(self)
    }
}

impl Attentive for Bert4Rec {
    fn score_last_with_attention(&self, seqs: &Tensor) -> (Tensor, AttentionBatch) {
        Bert4Rec::score_last_with_attention(self, seqs)
    }
}

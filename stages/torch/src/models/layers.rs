//! Building blocks shared by the models: layers whose variables are made
//! with [`param`](super::param), so that building a model on a var store
//! that already holds them binds to them instead of creating duplicates
//! (how a checkpoint is restored without drawing from the RNG).

use serde::{Deserialize, Serialize};
use tch::nn::{self, Init};
use tch::{Device, Kind, Tensor};

use super::dropout::ChaChaDropout;
use super::param;

/// A linear layer, initialised like PyTorch's `nn.Linear` (or all zeros
/// when `random` is false, for a model about to be loaded).
pub(crate) struct Linear {
    ws: Tensor,
    bs: Tensor,
}

impl Linear {
    pub(crate) fn new(p: nn::Path, in_dim: i64, out_dim: i64, random: bool) -> Self {
        let bound = 1.0 / (in_dim as f64).sqrt();
        let init = if random {
            Init::Uniform {
                lo: -bound,
                up: bound,
            }
        } else {
            Init::Const(0.0)
        };
        let ws = param(&p, "weight", &[out_dim, in_dim], init);
        let bs = param(&p, "bias", &[out_dim], init);
        Linear { ws, bs }
    }

    pub(crate) fn forward(&self, xs: &Tensor) -> Tensor {
        xs.linear(&self.ws, Some(&self.bs))
    }

    /// Some outputs only: `xs` [T, in] and `rows` [T, K] → [T, K], entry
    /// `[t, k]` being output `rows[t, k]` of `forward(xs[t])` (the sampled
    /// loss scores K items instead of all).
    pub(crate) fn forward_rows(&self, xs: &Tensor, rows: &Tensor) -> Tensor {
        let ws = gather_rows(&self.ws, rows); // [T, K, in]
        let bs = self.bs.index_select(0, &rows.flatten(0, -1)).view_as(rows);
        ws.matmul(&xs.unsqueeze(-1)).squeeze_dim(-1) + bs
    }
}

/// Rows `rows` [T, K] of `table` [N, D] → [T, K, D].
pub(crate) fn gather_rows(table: &Tensor, rows: &Tensor) -> Tensor {
    let (t, k) = rows.size2().expect("rows must be [T, K]");
    table
        .index_select(0, &rows.flatten(0, -1))
        .view([t, k, table.size()[1]])
}

/// Dot products of `hidden` [T, D] with rows `rows` [T, K] of `table`
/// [N, D] → [T, K]: the scores of K items against an embedding table.
pub(crate) fn dot_rows(table: &Tensor, hidden: &Tensor, rows: &Tensor) -> Tensor {
    gather_rows(table, rows)
        .matmul(&hidden.unsqueeze(-1))
        .squeeze_dim(-1)
}

/// Layer normalisation over the last dimension (weight 1, bias 0 at init).
pub(crate) struct LayerNorm {
    ws: Tensor,
    bs: Tensor,
    dim: i64,
}

impl LayerNorm {
    pub(crate) fn new(p: nn::Path, dim: i64) -> Self {
        let ws = param(&p, "weight", &[dim], Init::Const(1.0));
        let bs = param(&p, "bias", &[dim], Init::Const(0.0));
        LayerNorm { ws, bs, dim }
    }

    pub(crate) fn forward(&self, xs: &Tensor) -> Tensor {
        xs.layer_norm([self.dim], Some(&self.ws), Some(&self.bs), 1e-5, false)
    }
}

/// What the transformer blocks share: width, heads, dropout, norm
/// placement, the feed-forward activation.
pub(crate) struct BlockShape {
    pub dim: i64,
    pub heads: i64,
    pub dropout: f64,
    pub pre_norm: bool,
    pub activation: Activation,
}

/// The feed-forward layer's non-linearity: GELU (BERT's, the default) or
/// ReLU (the SASRec paper's).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Activation {
    #[default]
    #[serde(rename = "gelu")]
    Gelu,
    #[serde(rename = "relu")]
    Relu,
}

impl Activation {
    pub fn is_gelu(&self) -> bool {
        *self == Activation::Gelu
    }

    fn apply(&self, xs: &Tensor) -> Tensor {
        match self {
            Activation::Gelu => xs.gelu("none"),
            Activation::Relu => xs.relu(),
        }
    }
}

/// Multi-head self-attention with its residual connection and norm (pre-
/// or post-LN); the caller's mask decides what may attend to what (causal
/// for SASRec and GSRec).
pub(crate) struct AttentionBlock {
    norm: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: i64,
    dropout: f64,
    pre_norm: bool,
}

impl AttentionBlock {
    /// Variables under `p`: `norm`, `q`, `k`, `v`, `out`.
    pub(crate) fn new(p: nn::Path, s: &BlockShape, random: bool) -> Self {
        AttentionBlock {
            norm: LayerNorm::new(&p / "norm", s.dim),
            q: Linear::new(&p / "q", s.dim, s.dim, random),
            k: Linear::new(&p / "k", s.dim, s.dim, random),
            v: Linear::new(&p / "v", s.dim, s.dim, random),
            out: Linear::new(&p / "out", s.dim, s.dim, random),
            heads: s.heads,
            dropout: s.dropout,
            pre_norm: s.pre_norm,
        }
    }

    /// `xs`: [B, L, D]; `mask`: bool [B, 1, L, L], true = may attend.
    pub(crate) fn forward_t(&self, xs: &Tensor, mask: &Tensor, train: bool) -> Tensor {
        let (b, l, d) = xs.size3().expect("attention input must be [B, L, D]");
        let h = if self.pre_norm {
            self.norm.forward(xs)
        } else {
            xs.shallow_clone()
        };
        let split = |t: Tensor| t.view([b, l, self.heads, d / self.heads]).transpose(1, 2);
        let q = split(self.q.forward(&h));
        let k = split(self.k.forward(&h));
        let v = split(self.v.forward(&h));
        let ctx = if train && self.dropout > 0.0 && q.device() == Device::Cpu {
            attend_with_dropout(&q, &k, &v, mask, self.dropout)
        } else {
            let attn_dropout = if train { self.dropout } else { 0.0 };
            Tensor::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                Some(mask),
                attn_dropout,
                false,
                None,
                false,
            )
        };
        let ctx = ctx.transpose(1, 2).contiguous().view([b, l, d]);
        let ys = self.out.forward(&ctx).chacha_dropout(self.dropout, train);
        if self.pre_norm {
            xs + ys
        } else {
            self.norm.forward(&(xs + ys))
        }
    }
}

/// softmax(QKᵀ/√d under `mask`) with dropout on the weights, times V: what
/// LibTorch's `scaled_dot_product_attention` computes on CPU when dropout
/// is on (its fused kernels need dropout 0, so it materialises the weights
/// too), written out so the weights' mask is drawn by [`ChaChaDropout`]:
/// the [B, H, L, L] mask is the largest one a transformer draws.
fn attend_with_dropout(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor, p: f64) -> Tensor {
    attention_weights(q, k, mask, q.kind())
        .chacha_dropout(p, true)
        .matmul(v)
}

/// softmax(QKᵀ/√d) over the keys `mask` allows (exactly 0 on the others),
/// the softmax taken in `kind`: queries `q` [B, H, Q, d], keys `k`
/// [B, H, L, d], `mask` bool [B, 1, Q, L] → [B, H, Q, L].
fn attention_weights(q: &Tensor, k: &Tensor, mask: &Tensor, kind: Kind) -> Tensor {
    let scale = (*q.size().last().expect("heads have a width") as f64).sqrt();
    (q.matmul(&k.transpose(-2, -1)) / scale)
        .masked_fill(&mask.logical_not(), f64::NEG_INFINITY)
        .softmax(-1, kind)
}

impl AttentionBlock {
    // The attention diagnostic (evaluate's `attention`). It recomputes the
    // weights by an explicit softmax(QKᵀ/√d + mask) instead of reading them
    // out of `forward_t`, whose fused scaled_dot_product_attention never
    // materialises them: training and scoring keep the fast path and their
    // bytes. A test checks that the explicit path gives `forward_t`'s
    // output, so the weights are those of the real model.

    /// The per-head queries, keys and values [B, H, L, D/H] of `xs`
    /// [B, L, D], projected as `forward_t` projects them.
    fn heads_of(&self, xs: &Tensor) -> (Tensor, Tensor, Tensor) {
        let (b, l, d) = xs.size3().expect("attention input must be [B, L, D]");
        let h = if self.pre_norm {
            self.norm.forward(xs)
        } else {
            xs.shallow_clone()
        };
        let split = |t: Tensor| t.view([b, l, self.heads, d / self.heads]).transpose(1, 2);
        (
            split(self.q.forward(&h)),
            split(self.k.forward(&h)),
            split(self.v.forward(&h)),
        )
    }

    /// Attention weights (eval mode) of the `len` queries from position
    /// `start` over every key: [B, H, len, L] float, rows summing to 1,
    /// exactly 0 on keys `mask` [B, 1, L, L] forbids.
    pub(crate) fn weights(&self, xs: &Tensor, mask: &Tensor, start: i64, len: i64) -> Tensor {
        let (q, k, _v) = self.heads_of(xs);
        let q = q.narrow(2, start, len);
        let mask = if mask.size()[2] == 1 {
            mask.shallow_clone()
        } else {
            mask.narrow(2, start, len)
        };
        attention_weights(&q, &k, &mask, Kind::Float)
    }

    /// The last query's weights over the keys, averaged over heads: [B, L].
    pub(crate) fn last_query_weights(&self, xs: &Tensor, mask: &Tensor) -> Tensor {
        let l = xs.size()[1];
        self.weights(xs, mask, l - 1, 1)
            .select(2, 0)
            .mean_dim(1, false, Kind::Float)
    }

    /// `forward_t` in eval mode through the explicit weights (what the
    /// tests compare with the fused path).
    #[cfg(test)]
    fn forward_explicit(&self, xs: &Tensor, mask: &Tensor) -> Tensor {
        let (b, l, d) = xs.size3().expect("attention input must be [B, L, D]");
        let (_q, _k, v) = self.heads_of(xs);
        let w = self.weights(xs, mask, 0, l).to_kind(v.kind());
        let ctx = w.matmul(&v).transpose(1, 2).contiguous().view([b, l, d]);
        let ys = self.out.forward(&ctx);
        if self.pre_norm {
            xs + ys
        } else {
            self.norm.forward(&(xs + ys))
        }
    }
}

/// One transformer block: attention, then the feed-forward layer when
/// there is one (SASRec and BERT4Rec always have it, GSRec by its `ffn`).
/// Variables under `attn.*` and `ffn.*`.
pub(crate) struct TransformerBlock {
    pub attn: AttentionBlock,
    pub ffn: Option<FeedForwardBlock>,
}

impl TransformerBlock {
    /// `xs` [B, L, D] through attention under `mask` and the feed-forward
    /// layer, padded positions zeroed by `keep` [B, L, 1] after each.
    pub fn forward_t(&self, xs: &Tensor, mask: &Tensor, keep: &Tensor, train: bool) -> Tensor {
        let xs = self.attn.forward_t(xs, mask, train) * keep;
        match &self.ffn {
            Some(ffn) => ffn.forward_t(&xs, train) * keep,
            None => xs,
        }
    }
}

/// `xs` through every block in turn.
pub(crate) fn forward_blocks(
    blocks: &[TransformerBlock],
    xs: Tensor,
    mask: &Tensor,
    keep: &Tensor,
    train: bool,
) -> Tensor {
    blocks
        .iter()
        .fold(xs, |xs, block| block.forward_t(&xs, mask, keep, train))
}

/// What a transformer model's embedding step hands its blocks: the inputs
/// [B, L, D], the mask zeroing padded positions [B, L, 1] and the
/// attention mask [B, 1, L, L] (true = may attend).
pub(crate) type Embedded = (Tensor, Tensor, Tensor);

/// The encoder SASRec, BERT4Rec and GSRec share: embedded inputs through
/// every block, then the final norm of pre-LN blocks (`norm`).
pub(crate) fn encode_blocks(
    blocks: &[TransformerBlock],
    norm: Option<&LayerNorm>,
    (xs, keep, mask): Embedded,
    train: bool,
) -> Tensor {
    let xs = forward_blocks(blocks, xs, &mask, &keep, train);
    final_norm(norm, xs, &keep)
}

/// [`encode_blocks`] in eval mode, with the attention diagnostic of the
/// last query taken from the same pass ([`forward_blocks_recording`]).
pub(crate) fn encode_blocks_diagnosed(
    blocks: &[TransformerBlock],
    norm: Option<&LayerNorm>,
    (xs, keep, mask): Embedded,
) -> (Tensor, super::AttentionBatch) {
    let (xs, weights) = forward_blocks_recording(blocks, xs, &mask, &keep);
    (final_norm(norm, xs, &keep), entropies(&weights, &mask))
}

/// The blocks' output through the final norm of pre-LN blocks (`norm`;
/// post-LN blocks have none), padded positions kept at zero by `keep`.
fn final_norm(norm: Option<&LayerNorm>, xs: Tensor, keep: &Tensor) -> Tensor {
    match norm {
        Some(norm) => norm.forward(&xs) * keep,
        None => xs,
    }
}

/// [`forward_blocks`] in eval mode that also records, per block, the last
/// query's head-averaged weights over the input that block reads: the
/// attention diagnostic taken from the scoring pass itself, so evaluate
/// runs the blocks once (the weights cost one Q·K row per block). Returns
/// the blocks' output and the weights, first block first, for
/// [`entropies`].
pub(crate) fn forward_blocks_recording(
    blocks: &[TransformerBlock],
    xs: Tensor,
    mask: &Tensor,
    keep: &Tensor,
) -> (Tensor, Vec<Tensor>) {
    let mut weights = Vec::with_capacity(blocks.len());
    let xs = blocks.iter().fold(xs, |xs, block| {
        weights.push(block.attn.last_query_weights(&xs, mask));
        block.forward_t(&xs, mask, keep, false)
    });
    (xs, weights)
}

/// The mask of a causal self-attention over left-padded items: query `t`
/// may attend to real keys at positions `<= t`, and every query to itself,
/// so that rows of padded queries are never fully masked (no NaN; those
/// rows are zeroed after each block). `valid` [B, L] (true = real item);
/// returns [B, 1, L, L], true = may attend.
pub(crate) fn causal_mask(valid: &Tensor) -> Tensor {
    let l = valid.size()[1];
    let device = valid.device();
    let causal = Tensor::ones([l, l], (Kind::Bool, device)).tril(0);
    let eye = Tensor::eye(l, (Kind::Bool, device));
    causal
        .logical_and(&valid.unsqueeze(1).unsqueeze(1)) // [B, 1, 1, L]
        .logical_or(&eye)
}

/// The attention diagnostic of a batch from each layer's head-averaged
/// weights of the scored query, `weights` [B, L] per layer, and the mask
/// [B, 1, L, L] (or [B, 1, 1, L]) they were computed under: per example the
/// number of keys that query may attend to, and per layer the entropy
/// H = −Σ p ln p (nats) and H / ln(keys) (1 = uniform over the keys, 0 =
/// all on one; NaN with a single key, where both describe the same thing).
pub(crate) fn entropies(weights: &[Tensor], mask: &Tensor) -> super::AttentionBatch {
    let keys = mask
        .select(1, 0)
        .select(1, -1)
        .sum_dim_intlist(-1, false, Kind::Int64); // [B]
    let b = keys.size()[0];
    let entropy = if weights.is_empty() {
        Tensor::zeros([b, 0], (Kind::Float, keys.device()))
    } else {
        let p = Tensor::stack(weights, 1).to_kind(Kind::Float); // [B, layers, L]
                                                                // 0 · ln 0 = 0: masked keys hold exactly 0 and add nothing.
        -(&p * p.clamp_min(1e-30).log()).sum_dim_intlist(-1, false, Kind::Float)
    };
    let several = keys.gt(1).unsqueeze(1);
    let log_keys = keys.to_kind(Kind::Float).clamp_min(2.0).log().unsqueeze(1);
    let normalised = (&entropy / log_keys).where_self(&several, &entropy.full_like(f64::NAN));
    super::AttentionBatch {
        entropy,
        normalised,
        keys,
    }
}

/// Position-wise feed-forward network (GELU or ReLU) with its residual
/// connection and norm.
pub(crate) struct FeedForwardBlock {
    norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    dropout: f64,
    pre_norm: bool,
    activation: Activation,
}

impl FeedForwardBlock {
    /// Variables under `p`: `norm`, `fc1` (dim → `hidden`), `fc2`.
    pub(crate) fn new(p: nn::Path, s: &BlockShape, hidden: i64, random: bool) -> Self {
        FeedForwardBlock {
            norm: LayerNorm::new(&p / "norm", s.dim),
            fc1: Linear::new(&p / "fc1", s.dim, hidden, random),
            fc2: Linear::new(&p / "fc2", hidden, s.dim, random),
            dropout: s.dropout,
            pre_norm: s.pre_norm,
            activation: s.activation,
        }
    }

    pub(crate) fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let h = if self.pre_norm {
            self.norm.forward(xs)
        } else {
            xs.shallow_clone()
        };
        let ys = self
            .activation
            .apply(&self.fc1.forward(&h))
            .chacha_dropout(self.dropout, train);
        let ys = self.fc2.forward(&ys).chacha_dropout(self.dropout, train);
        if self.pre_norm {
            xs + ys
        } else {
            self.norm.forward(&(xs + ys))
        }
    }
}

/// The stacked GRU: per layer `weight_ih` [3H, in], `weight_hh` [3H, H],
/// `bias_ih` [3H], `bias_hh` [3H] (PyTorch's layout and gate order r, z, n),
/// initialised like PyTorch's `nn.GRU`: uniform in ±1/sqrt(H).
pub(crate) struct Gru {
    /// Flat in the order `Tensor::gru` expects: layer by layer, w_ih, w_hh,
    /// b_ih, b_hh.
    weights: Vec<Tensor>,
    layers: i64,
    hidden: i64,
    dropout: f64,
}

impl Gru {
    /// `layers` stacked GRUs reading `in_dim` inputs into `h` states, with
    /// `dropout` between layers.
    pub(crate) fn new(
        p: nn::Path,
        in_dim: i64,
        h: i64,
        layers: i64,
        dropout: f64,
        random: bool,
    ) -> Gru {
        let bound = 1.0 / (h as f64).sqrt();
        let init = if random {
            Init::Uniform {
                lo: -bound,
                up: bound,
            }
        } else {
            Init::Const(0.0)
        };
        let mut weights = Vec::with_capacity(4 * layers as usize);
        for k in 0..layers {
            let in_dim = if k == 0 { in_dim } else { h };
            weights.push(param(
                &p,
                &format!("weight_ih_l{k}"),
                &[3 * h, in_dim],
                init,
            ));
            weights.push(param(&p, &format!("weight_hh_l{k}"), &[3 * h, h], init));
            weights.push(param(&p, &format!("bias_ih_l{k}"), &[3 * h], init));
            weights.push(param(&p, &format!("bias_hh_l{k}"), &[3 * h], init));
        }
        Gru {
            weights,
            layers,
            hidden: h,
            dropout,
        }
    }

    /// `xs`: [B, L, in], RIGHT-padded (the GRU starts every row from a zero
    /// state at column 0). Returns the last layer's states [B, L, H].
    pub(crate) fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let b = xs.size()[0];
        let h0 = Tensor::zeros([self.layers, b, self.hidden], (xs.kind(), xs.device()));
        let (out, _h) = xs.gru(
            &h0,
            &self.weights,
            true,
            self.layers,
            self.dropout,
            train,
            false,
            true,
        );
        out
    }
}

/// Moves each row of a LEFT-padded batch to a RIGHT-padded layout and back.
/// A GRU reading a left-padded row would run over the padding first and
/// start the real items from a state that depends on how much padding there
/// is; rotated right-padded, padding comes last and never reaches a real
/// position. (Rotating is a gather per row: column `i` of the right-padded
/// row holds the row's `i`-th real item.)
pub(crate) struct Padding {
    /// [B, L]: right-padded column i reads left-padded column to_right[i].
    to_right: Tensor,
    /// [B, L]: left-padded column j reads right-padded column to_left[j].
    to_left: Tensor,
    /// [B, L] bool: real (non-padding) positions of the left-padded rows.
    valid: Tensor,
}

impl Padding {
    /// The rotations of left-padded item ids `seqs` [B, L] (0 = padding).
    pub(crate) fn of(seqs: &Tensor) -> Padding {
        let l = seqs.size()[1];
        let valid = seqs.gt(0);
        let real = valid.sum_dim_intlist(1, true, Kind::Int64); // [B, 1]
        let cols = Tensor::arange(l, (Kind::Int64, seqs.device())).unsqueeze(0); // [1, L]
        Padding {
            to_right: (&cols + (l - &real)).remainder(l),
            to_left: (&cols + &real).remainder(l),
            valid,
        }
    }

    /// Ids [B, L] in the right-padded layout.
    pub(crate) fn right_ids(&self, seqs: &Tensor) -> Tensor {
        seqs.gather(1, &self.to_right, false)
    }

    /// States [B, L, D] in the right-padded layout.
    pub(crate) fn right(&self, xs: &Tensor) -> Tensor {
        let index = self.to_right.unsqueeze(-1).expand(xs.size(), false);
        xs.gather(1, &index, false)
    }

    /// Right-padded states [B, L, H] back in the left-padded layout, padded
    /// positions zeroed.
    pub(crate) fn left(&self, hs: &Tensor) -> Tensor {
        let index = self.to_left.unsqueeze(-1).expand(hs.size(), false);
        let keep = self.valid.unsqueeze(-1).to_kind(hs.kind());
        hs.gather(1, &index, false) * keep
    }
}

/// Item scores [B, num_items] (column `k` = item `k + 1`, as
/// `item_logits` returns them) as float scores [B, num_items + 1] indexed
/// by item, with the padding column 0 at `-inf` so it never ranks.
pub(crate) fn with_padding_column(logits: &Tensor) -> Tensor {
    let scores = logits.to_kind(Kind::Float);
    let pad = Tensor::full(
        [scores.size()[0], 1],
        f64::NEG_INFINITY,
        (Kind::Float, scores.device()),
    );
    Tensor::cat(&[pad, scores], 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: i64 = 8;

    fn block(random: bool, pre_norm: bool, heads: i64) -> (nn::VarStore, AttentionBlock) {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let shape = BlockShape {
            dim: D,
            heads,
            dropout: 0.3,
            pre_norm,
            activation: Activation::Gelu,
        };
        let b = AttentionBlock::new(vs.root() / "attn", &shape, random);
        (vs, b)
    }

    /// SASRec's mask for left-padded rows with `real[i]` real positions
    /// out of `l`: causal, real keys only, each query on itself.
    fn causal_mask(real: &[i64], l: i64) -> Tensor {
        let cols = Tensor::arange(l, (Kind::Int64, tch::Device::Cpu)).unsqueeze(0);
        let starts = Tensor::from_slice(real).unsqueeze(1).neg() + l;
        let valid = cols.ge_tensor(&starts); // [B, L]
        let causal = Tensor::ones([l, l], (Kind::Bool, tch::Device::Cpu)).tril(0);
        causal
            .logical_and(&valid.unsqueeze(1).unsqueeze(1))
            .logical_or(&Tensor::eye(l, (Kind::Bool, tch::Device::Cpu)))
    }

    fn floats(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
    }

    #[test]
    fn equal_logits_give_ln_n_and_normalised_one() {
        // Zero Q and K weights: every logit is 0, so the weights are
        // uniform over exactly the keys the mask allows.
        let (_vs, b) = block(false, true, 2);
        let real = [1i64, 2, 5, 7];
        let l = 7;
        let xs = Tensor::randn([4, l, D], (Kind::Float, tch::Device::Cpu));
        let mask = causal_mask(&real, l);
        let w = b.last_query_weights(&xs, &mask);
        let got = entropies(&[w.shallow_clone(), w], &mask);
        assert_eq!(Vec::<i64>::try_from(&got.keys).unwrap(), real);
        let (h, n) = (floats(&got.entropy), floats(&got.normalised));
        for (i, &k) in real.iter().enumerate() {
            for layer in 0..2 {
                let j = i * 2 + layer;
                assert!(
                    (h[j] - (k as f64).ln()).abs() < 1e-5,
                    "keys {k}: H {}",
                    h[j]
                );
                if k == 1 {
                    assert!(n[j].is_nan(), "one key: normalised is undefined");
                } else {
                    assert!((n[j] - 1.0).abs() < 1e-5, "keys {k}: H/ln n {}", n[j]);
                }
            }
        }
    }

    /// Two random blocks (attention + feed-forward) over `D` wide inputs.
    fn stack(vs: &nn::VarStore) -> Vec<TransformerBlock> {
        let shape = BlockShape {
            dim: D,
            heads: 2,
            dropout: 0.3,
            pre_norm: true,
            activation: Activation::Gelu,
        };
        (0..2)
            .map(|i| TransformerBlock {
                attn: AttentionBlock::new(vs.root() / i / "attn", &shape, true),
                ffn: Some(FeedForwardBlock::new(
                    vs.root() / i / "ffn",
                    &shape,
                    2 * D,
                    true,
                )),
            })
            .collect()
    }

    #[test]
    fn recording_pass_is_the_plain_pass_plus_each_blocks_input_weights() {
        tch::manual_seed(5);
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let blocks = stack(&vs);
        let real = [1i64, 3, 6];
        let l = 6;
        let mask = causal_mask(&real, l);
        let keep = mask
            .select(1, 0)
            .select(1, l - 1)
            .unsqueeze(-1)
            .to_kind(Kind::Float);
        let xs = Tensor::randn([3, l, D], (Kind::Float, tch::Device::Cpu)) * &keep;
        let (out, weights) =
            tch::no_grad(|| forward_blocks_recording(&blocks, xs.shallow_clone(), &mask, &keep));
        let plain =
            tch::no_grad(|| forward_blocks(&blocks, xs.shallow_clone(), &mask, &keep, false));
        assert!(out.equal(&plain), "recording changed the blocks' output");
        // What the diagnostic computed before it shared the scoring pass:
        // each block's weights from its input, recomputed block by block.
        let first = blocks[0].attn.last_query_weights(&xs, &mask);
        let second_input = blocks[0].forward_t(&xs, &mask, &keep, false);
        let second = blocks[1].attn.last_query_weights(&second_input, &mask);
        assert_eq!(weights.len(), 2);
        assert!(weights[0].equal(&first));
        assert!(weights[1].equal(&second));
    }

    #[test]
    fn all_weight_on_one_key_gives_zero() {
        let w = Tensor::from_slice(&[0f32, 0.0, 1.0, 0.0]).view([1, 4]);
        let mask = Tensor::ones([1, 1, 4, 4], (Kind::Bool, tch::Device::Cpu));
        let got = entropies(&[w], &mask);
        assert_eq!(floats(&got.entropy), [0.0]);
        assert_eq!(floats(&got.normalised), [0.0]);
    }

    #[test]
    fn padding_keys_are_excluded() {
        // The same history alone and left-padded by 3 in a wider batch.
        let (_vs, b) = block(true, true, 2);
        let real = Tensor::randn([1, 4, D], (Kind::Float, tch::Device::Cpu));
        let junk = Tensor::randn([1, 3, D], (Kind::Float, tch::Device::Cpu)) * 5.0;
        let padded = Tensor::cat(&[junk, real.shallow_clone()], 1);
        let alone = b.last_query_weights(&real, &causal_mask(&[4], 4));
        let in_batch = b.last_query_weights(&padded, &causal_mask(&[4], 7));
        let pad = floats(&in_batch.narrow(1, 0, 3));
        assert!(pad.iter().all(|&p| p == 0.0), "padding got weight: {pad:?}");
        let diff = (in_batch.narrow(1, 3, 4) - &alone)
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-6, "weights differ by {diff}");
        let a = entropies(&[alone], &causal_mask(&[4], 4));
        let p = entropies(&[in_batch], &causal_mask(&[4], 7));
        assert_eq!(Vec::<i64>::try_from(&p.keys).unwrap(), [4]);
        assert!((floats(&a.entropy)[0] - floats(&p.entropy)[0]).abs() < 1e-6);
        assert!((floats(&a.normalised)[0] - floats(&p.normalised)[0]).abs() < 1e-6);
    }

    #[test]
    fn explicit_path_gives_the_fused_output() {
        for (pre_norm, heads) in [(true, 1), (true, 2), (false, 4)] {
            let (_vs, b) = block(true, pre_norm, heads);
            let xs = Tensor::randn([3, 6, D], (Kind::Float, tch::Device::Cpu));
            let mask = causal_mask(&[6, 3, 1], 6);
            let fused = b.forward_t(&xs, &mask, false);
            let explicit = b.forward_explicit(&xs, &mask);
            let diff = (&fused - &explicit).abs().max().double_value(&[]);
            assert!(
                diff < 1e-5,
                "pre_norm {pre_norm}, heads {heads}: differ by {diff}"
            );
            // and the weights really vary: not a uniform-attention block
            let w = floats(&b.last_query_weights(&xs, &mask).get(0));
            let spread =
                w.iter().cloned().fold(0.0, f64::max) - w.iter().cloned().fold(1.0, f64::min);
            assert!(spread > 1e-3, "weights {w:?}");
        }
    }

    #[test]
    fn training_attention_is_the_fused_attention_with_dropped_weights() {
        let _guard = crate::models::trainer::torch_rng_lock();
        let (_vs, b) = block(true, true, 2);
        let xs = Tensor::randn([3, 6, D], (Kind::Float, tch::Device::Cpu));
        let mask = causal_mask(&[6, 3, 1], 6);
        let (q, k, v) = b.heads_of(&xs);
        let fused =
            Tensor::scaled_dot_product_attention(&q, &k, &v, Some(&mask), 0.0, false, None, false);
        // A vanishing rate keeps every weight (scaled by ~1): the fused output.
        let kept = attend_with_dropout(&q, &k, &v, &mask, 1e-12);
        let diff = (&fused - &kept).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "differ by {diff}");
        // At 0.5 about half the weights are dropped: the output moves, and
        // the same torch seed draws the same mask.
        tch::manual_seed(4);
        let dropped = attend_with_dropout(&q, &k, &v, &mask, 0.5);
        tch::manual_seed(4);
        assert!(dropped.equal(&attend_with_dropout(&q, &k, &v, &mask, 0.5)));
        assert!((&fused - &dropped).abs().max().double_value(&[]) > 1e-3);
    }
}

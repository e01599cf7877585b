//! Building blocks shared by the models: layers whose variables are made
//! with [`param`](super::param), so that building a model on a var store
//! that already holds them binds to them instead of creating duplicates
//! (how a checkpoint is restored without drawing from the RNG).

use tch::nn::{self, Init};
use tch::{Kind, Tensor};

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

/// What the transformer blocks share: width, heads, dropout, norm placement.
pub(crate) struct BlockShape {
    pub dim: i64,
    pub heads: i64,
    pub dropout: f64,
    pub pre_norm: bool,
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
        let attn_dropout = if train { self.dropout } else { 0.0 };
        let ctx = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            Some(mask),
            attn_dropout,
            false,
            None,
            false,
        );
        let ctx = ctx.transpose(1, 2).contiguous().view([b, l, d]);
        let ys = self.out.forward(&ctx).dropout(self.dropout, train);
        if self.pre_norm {
            xs + ys
        } else {
            self.norm.forward(&(xs + ys))
        }
    }
}

/// Position-wise feed-forward network (GELU) with its residual connection
/// and norm.
pub(crate) struct FeedForwardBlock {
    norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    dropout: f64,
    pre_norm: bool,
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
        }
    }

    pub(crate) fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let h = if self.pre_norm {
            self.norm.forward(xs)
        } else {
            xs.shallow_clone()
        };
        let ys = self
            .fc1
            .forward(&h)
            .gelu("none")
            .dropout(self.dropout, train);
        let ys = self.fc2.forward(&ys).dropout(self.dropout, train);
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

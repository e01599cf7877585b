//! Building blocks shared by the models: layers whose variables are made
//! with [`param`](super::param), so that building a model on a var store
//! that already holds them binds to them instead of creating duplicates
//! (how a checkpoint is restored without drawing from the RNG).

use tch::nn::{self, Init};
use tch::Tensor;

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

//! Contrastive item embeddings (`embed.infonce`): the item tower, the
//! symmetric InfoNCE loss with in-batch negatives, and the plateau
//! learning-rate schedule the training uses.
//!
//! InfoNCE: van den Oord, Li & Vinyals, "Representation Learning with
//! Contrastive Predictive Coding", 2018 (arXiv:1807.03748); the symmetric,
//! in-batch form is CLIP's (Radford et al. 2021) with one tower shared by
//! both ends of a pair, as the items on both sides come from one catalogue.
//!
//! Where this implementation deviates from the plain in-batch loss: a batch
//! drawn from a co-occurrence graph often holds one popular item in several
//! pairs, and would then ask the model to score an item above itself. So
//! in-batch copies of the positive item, and the anchor item itself, are
//! masked out of each softmax (TensorFlow's `remove_accidental_hits` does
//! the same for sampled softmax).

use serde::{Deserialize, Serialize};
use tch::nn::{self, Init};
use tch::{Device, Kind, Reduction, Tensor};

use super::layers::Linear;
use super::param;

/// The tower's shape. Rows `1..=num_items` are items; row 0 is padding,
/// never trained, and exported as zeros.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct InfoNceConfig {
    pub num_items: i64,
    /// Width of the item table and of the output.
    pub dim: i64,
    /// Width of the projection's hidden layer.
    pub hidden: i64,
}

/// The item tower: `item_emb` [num_items + 1, dim] (N(0, 1), as PyTorch's
/// `nn.Embedding`) → `proj_in` (dim → hidden) → ReLU → `proj_out` (hidden →
/// dim) → L2 normalisation.
pub struct InfoNce {
    item_emb: Tensor,
    proj_in: Linear,
    proj_out: Linear,
}

impl InfoNce {
    /// Builds the tower under `p`, drawing the initial weights from torch's
    /// global RNG (hold `trainer::torch_rng_lock` and seed it first).
    pub fn new(p: &nn::Path, cfg: &InfoNceConfig) -> InfoNce {
        let randn = Init::Randn {
            mean: 0.0,
            stdev: 1.0,
        };
        InfoNce {
            item_emb: param(p, "item_emb", &[cfg.num_items + 1, cfg.dim], randn),
            proj_in: Linear::new(p / "proj_in", cfg.dim, cfg.hidden, true),
            proj_out: Linear::new(p / "proj_out", cfg.hidden, cfg.dim, true),
        }
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.item_emb.device()
    }

    /// Unit-norm representations [N, dim] of item rows `rows` [N] (int64).
    pub fn encode(&self, rows: &Tensor) -> Tensor {
        let x = self.item_emb.index_select(0, rows);
        let z = self.proj_out.forward(&self.proj_in.forward(&x).relu());
        let norm = z.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12);
        z / norm
    }

    /// [`InfoNce::encode`] of rows `1..=num_items` without gradients, in
    /// chunks of `chunk` rows so that the hidden layer never holds more:
    /// [num_items, dim], row `k` for item row `k + 1`.
    pub fn encode_all(&self, chunk: i64) -> Tensor {
        let items = self.item_emb.size()[0] - 1;
        tch::no_grad(|| {
            let parts: Vec<Tensor> = (1..=items)
                .step_by(chunk.max(1) as usize)
                .map(|start| {
                    let end = (start + chunk).min(items + 1);
                    self.encode(&Tensor::arange_start(
                        start,
                        end,
                        (Kind::Int64, self.device()),
                    ))
                })
                .collect();
            Tensor::cat(&parts, 0)
        })
    }
}

/// Symmetric InfoNCE for the pairs `(a_i, b_i)` of a batch: `za`, `zb`
/// [B, D] unit-norm representations of item rows `a`, `b` [B]. The logits
/// `za · zbᵀ / temperature` are scored by rows (each `a_i` picks `b_i`
/// among the batch's `b`) and by columns (each `b_i` picks `a_i`); the loss
/// is the mean of the two mean cross-entropies. Copies of the positive and
/// of the anchor among the candidates are masked out (see the module docs).
pub fn symmetric_infonce(
    za: &Tensor,
    zb: &Tensor,
    a: &Tensor,
    b: &Tensor,
    temperature: f64,
) -> Tensor {
    let n = a.size()[0];
    let logits = za.matmul(&zb.tr()) / temperature; // [B, B]: a_i (row) vs b_j
    let off_diagonal = Tensor::eye(n, (Kind::Bool, za.device())).logical_not();
    // Row i's candidates are b_j: not negatives when b_j is b_i or a_i.
    let b_row = b.unsqueeze(0);
    let rows_mask = b_row
        .eq_tensor(&b.unsqueeze(1))
        .logical_or(&b_row.eq_tensor(&a.unsqueeze(1)))
        .logical_and(&off_diagonal);
    // Column j's candidates are a_i: not negatives when a_i is a_j or b_j.
    let a_col = a.unsqueeze(1);
    let cols_mask = a_col
        .eq_tensor(&a.unsqueeze(0))
        .logical_or(&a_col.eq_tensor(&b.unsqueeze(0)))
        .logical_and(&off_diagonal);
    let targets = Tensor::arange(n, (Kind::Int64, za.device()));
    let ce = |scores: Tensor| {
        scores.cross_entropy_loss::<Tensor>(&targets, None, Reduction::Mean, -100, 0.0)
    };
    let by_rows = ce(logits.masked_fill(&rows_mask, f64::NEG_INFINITY));
    let by_cols = ce(logits.masked_fill(&cols_mask, f64::NEG_INFINITY).tr());
    (by_rows + by_cols) / 2.0
}

/// Score-matrix entries one chunk of [`chunked_infonce`] holds (16 MiB of
/// f32): rows per chunk are this over the batch size.
pub const CHUNK_ELEMENTS: i64 = 1 << 22;

/// [`symmetric_infonce`] computed a block of rows at a time, with its
/// gradient written out, so that no `B × B` matrix is ever held: the
/// autograd version keeps two masked `B × B` score matrices, their log
/// softmaxes and masks (about 2 GB at `B` = 8192), this one a
/// [`CHUNK_ELEMENTS`] block. Returns the loss (a 0-dim double) and, when
/// `with_grad`, its gradient with respect to `za` and `zb`, to be pushed
/// through the tower with [`InfoNceLoss::surrogate`]. The same loss as
/// [`symmetric_infonce`] up to float rounding (sums run in another order).
pub fn chunked_infonce(
    za: &Tensor,
    zb: &Tensor,
    a: &Tensor,
    b: &Tensor,
    temperature: f64,
    with_grad: bool,
) -> InfoNceLoss {
    infonce_in_blocks(za, zb, a, b, temperature, with_grad, CHUNK_ELEMENTS)
}

/// [`chunked_infonce`] with blocks of about `chunk_elements` scores.
fn infonce_in_blocks(
    za: &Tensor,
    zb: &Tensor,
    a: &Tensor,
    b: &Tensor,
    temperature: f64,
    with_grad: bool,
    chunk_elements: i64,
) -> InfoNceLoss {
    tch::no_grad(|| {
        let n = a.size()[0];
        // Each direction is a mean over n rows; the loss is their mean.
        let scale = 1.0 / (2.0 * n as f64);
        // Rows: a_i picks b_i among the b_j; b_j is no negative when it is
        // b_i or a_i.
        let rows = Direction {
            queries: za,
            candidates: zb,
            candidate_ids: b,
            positive_ids: b,
            own_ids: a,
        };
        // Columns: b_j picks a_j among the a_i; a_i is no negative when it
        // is a_j or b_j.
        let cols = Direction {
            queries: zb,
            candidates: za,
            candidate_ids: a,
            positive_ids: a,
            own_ids: b,
        };
        let (loss_rows, ga_rows, gb_rows) = rows.run(temperature, scale, with_grad, chunk_elements);
        let (loss_cols, gb_cols, ga_cols) = cols.run(temperature, scale, with_grad, chunk_elements);
        let loss = (loss_rows + loss_cols) * scale;
        let grad = match (ga_rows, gb_rows, gb_cols, ga_cols) {
            (Some(ga1), Some(gb1), Some(gb2), Some(ga2)) => Some((ga1 + ga2, gb1 + gb2)),
            _ => None,
        };
        InfoNceLoss { loss, grad }
    })
}

/// What [`chunked_infonce`] returns.
pub struct InfoNceLoss {
    /// The symmetric InfoNCE, a 0-dim double.
    pub loss: Tensor,
    /// d loss / d za and d loss / d zb, when asked for.
    pub grad: Option<(Tensor, Tensor)>,
}

impl InfoNceLoss {
    /// A scalar whose gradient with respect to `z` (the tower's output for
    /// `[a; b]`, with autograd) is the loss's: `sum(z * dz)`; calling
    /// `backward` on it trains the tower as the loss's own backward would.
    pub fn surrogate(&self, z: &Tensor) -> Tensor {
        let (ga, gb) = self
            .grad
            .as_ref()
            .expect("surrogate needs the gradient (with_grad)");
        let dz = Tensor::cat(&[ga, gb], 0).to_kind(z.kind());
        (z * dz).sum(z.kind())
    }
}

/// One direction of the symmetric loss: query `r` scores every candidate,
/// its positive is candidate `r`, and candidates carrying its positive's
/// or its own id (other than candidate `r`) are masked out.
struct Direction<'a> {
    queries: &'a Tensor,
    candidates: &'a Tensor,
    candidate_ids: &'a Tensor,
    positive_ids: &'a Tensor,
    own_ids: &'a Tensor,
}

impl Direction<'_> {
    /// The sum over queries of `logsumexp - positive score`, and (when
    /// `with_grad`) `scale` × its gradient for the queries and candidates.
    fn run(
        &self,
        temperature: f64,
        scale: f64,
        with_grad: bool,
        chunk_elements: i64,
    ) -> (Tensor, Option<Tensor>, Option<Tensor>) {
        let n = self.queries.size()[0];
        let step = (chunk_elements / n.max(1)).max(1);
        let device = self.queries.device();
        let mut sum = Tensor::zeros([], (Kind::Double, device));
        let mut grad_q = with_grad.then(|| self.queries.zeros_like());
        let mut grad_c = with_grad.then(|| self.candidates.zeros_like());
        let cand = self.candidate_ids.unsqueeze(0);
        for start in (0..n).step_by(step as usize) {
            let len = step.min(n - start);
            let q = self.queries.narrow(0, start, len);
            let mut s = q.matmul(&self.candidates.tr()) / temperature; // [len, n]
            let mask = cand
                .eq_tensor(&self.positive_ids.narrow(0, start, len).unsqueeze(1))
                .logical_or(&cand.eq_tensor(&self.own_ids.narrow(0, start, len).unsqueeze(1)));
            // The positive itself (query r's diagonal entry) stays.
            let _ = mask.diagonal(start, 0, 1).fill_(0);
            let _ = s.masked_fill_(&mask, f64::NEG_INFINITY);
            let lse = s.logsumexp([1], true); // [len, 1]
            let positive = s.diagonal(start, 0, 1);
            sum += (lse.squeeze_dim(1) - &positive).sum(Kind::Double);
            if let (Some(gq), Some(gc)) = (grad_q.as_mut(), grad_c.as_mut()) {
                // d/ds of (lse - s_rr) is softmax - one-hot; s = q·c / τ.
                let p = (s - lse).exp();
                let _ = p.diagonal(start, 0, 1).g_sub_scalar_(1.0);
                let p = p * (scale / temperature);
                gq.narrow(0, start, len).copy_(&p.matmul(self.candidates));
                let _ = gc.addmm_(&p.tr(), &q);
            }
        }
        (sum, grad_q, grad_c)
    }
}

/// Reduce-on-plateau learning rate, as PyTorch's `ReduceLROnPlateau` with
/// its defaults (mode `min`, relative threshold 1e-4, no cooldown, no
/// minimum): an epoch improves when its loss is below `best * (1 - 1e-4)`;
/// after more than `patience` epochs in a row without improvement the rate
/// is multiplied by `factor` and the count starts again.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Plateau {
    pub factor: f64,
    pub patience: usize,
    /// The lowest loss so far, as exact bits (None before the first epoch).
    pub best_bits: Option<u64>,
    /// Epochs in a row without improvement.
    pub bad_epochs: usize,
}

/// PyTorch's default `threshold` (relative).
const THRESHOLD: f64 = 1e-4;

impl Plateau {
    pub fn new(factor: f64, patience: usize) -> Plateau {
        Plateau {
            factor,
            patience,
            best_bits: None,
            bad_epochs: 0,
        }
    }

    /// Records an epoch's `loss`; returns the learning rate for the next
    /// epoch, given the current one.
    pub fn step(&mut self, loss: f64, lr: f64) -> f64 {
        let best = self.best_bits.map(f64::from_bits);
        if best.is_none_or(|best| loss < best * (1.0 - THRESHOLD)) {
            self.best_bits = Some(loss.to_bits());
            self.bad_epochs = 0;
        } else {
            self.bad_epochs += 1;
        }
        if self.bad_epochs > self.patience {
            self.bad_epochs = 0;
            lr * self.factor
        } else {
            lr
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plateau_drops_after_more_than_patience_bad_epochs() {
        let mut p = Plateau::new(0.5, 1);
        assert_eq!(p.step(1.0, 0.1), 0.1); // first: best
        assert_eq!(p.step(0.9, 0.1), 0.1); // better
        assert_eq!(p.step(0.95, 0.1), 0.1); // 1 bad: within patience
        assert_eq!(p.step(0.90, 0.1), 0.05); // 2 bad (0.9 is no gain): drop
        assert_eq!(p.bad_epochs, 0);
        assert_eq!(p.step(0.8, 0.05), 0.05);
        // A gain below the relative threshold is no gain.
        assert_eq!(p.step(0.8 * (1.0 - 1e-5), 0.05), 0.05);
        assert_eq!(p.bad_epochs, 1);
        let mut zero = Plateau::new(0.1, 0);
        assert_eq!(zero.step(1.0, 1.0), 1.0);
        assert_eq!(zero.step(2.0, 1.0), 0.1);
    }

    #[test]
    fn infonce_matches_hand_computed_value() {
        // Two pairs of orthogonal unit vectors: za = zb = I (2 x 2). With
        // τ = 0.5 the logits are [[2, 0], [0, 2]], each direction's loss is
        // ln(1 + e^-2), and so is their mean.
        let z = Tensor::eye(2, (Kind::Float, Device::Cpu));
        let a = Tensor::from_slice(&[1i64, 2]);
        let b = Tensor::from_slice(&[3i64, 4]);
        let loss = symmetric_infonce(&z, &z, &a, &b, 0.5).double_value(&[]);
        let want = (1.0 + (-2.0f64).exp()).ln();
        assert!((loss - want).abs() < 1e-6, "{loss} vs {want}");
    }

    #[test]
    fn infonce_masks_copies_of_the_positive() {
        // Pairs (1, 3) and (2, 3): item 3 ends both, so neither row has a
        // negative left: the row loss is 0 whatever the vectors. The
        // columns (anchor 3 twice) keep a_j as a negative: a_1 = 1, a_2 = 2.
        let za = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0]).view([2, 2]);
        let zb = Tensor::from_slice(&[0.6f32, 0.8, 0.6, 0.8]).view([2, 2]);
        let a = Tensor::from_slice(&[1i64, 2]);
        let b = Tensor::from_slice(&[3i64, 3]);
        let loss = symmetric_infonce(&za, &zb, &a, &b, 1.0).double_value(&[]);
        // Column 0: logits (a_1·b_1, a_2·b_1) = (0.6, 0.8), target 0;
        // column 1: (0.6, 0.8), target 1.
        let lse = (0.6f64.exp() + 0.8f64.exp()).ln();
        let cols = ((lse - 0.6) + (lse - 0.8)) / 2.0;
        let want = (0.0 + cols) / 2.0;
        assert!((loss - want).abs() < 1e-6, "{loss} vs {want}");
    }

    #[test]
    fn chunked_infonce_matches_the_autograd_loss_and_gradient() {
        // 13 pairs over 6 items, so that the masks have work to do (items
        // repeat on both sides, and some pairs are (x, x)-free copies).
        let a = Tensor::from_slice(&[1i64, 2, 3, 1, 4, 5, 2, 6, 3, 1, 4, 6, 5]);
        let b = Tensor::from_slice(&[2i64, 3, 1, 2, 5, 6, 4, 1, 3, 5, 2, 2, 1]);
        tch::manual_seed(3);
        let n = a.size()[0];
        let raw = Tensor::randn([2 * n, 4], (Kind::Double, Device::Cpu));
        let z = (&raw / raw.norm_scalaropt_dim(2, [-1], true)).set_requires_grad(true);
        let (za, zb) = (z.narrow(0, 0, n), z.narrow(0, n, n));
        let want = symmetric_infonce(&za, &zb, &a, &b, 0.2);
        want.backward();
        let want_grad = z.grad().copy();
        // Blocks of 1, 3 and 5 rows (the last one short), and one block.
        for rows in [1, 3, 5, 13] {
            let zd = z.detach();
            let got = infonce_in_blocks(
                &zd.narrow(0, 0, n),
                &zd.narrow(0, n, n),
                &a,
                &b,
                0.2,
                true,
                rows * n,
            );
            let diff = (got.loss.double_value(&[]) - want.double_value(&[])).abs();
            assert!(diff < 1e-12, "{rows} rows: loss off by {diff}");
            // The surrogate carries exactly that gradient back to z.
            let z2 = z.detach().copy().set_requires_grad(true);
            got.surrogate(&z2).backward();
            let grad_diff = (z2.grad() - &want_grad).abs().max().double_value(&[]);
            assert!(
                grad_diff < 1e-12,
                "{rows} rows: gradient off by {grad_diff}"
            );
        }
    }
}

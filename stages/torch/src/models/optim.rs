//! AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", 2019)
//! written out on tensors.
//!
//! tch's built-in optimisers keep their state inside LibTorch where it cannot
//! be saved or restored, which breaks resumable training. This one keeps the
//! first and second moments and the step count as plain tensors, exposes them
//! through [`AdamW::state_tensors`] / [`AdamW::load_state`], and follows
//! `torch.optim.AdamW` (decoupled decay `p *= 1 - lr * wd`, bias-corrected
//! moments, `eps` added after the bias correction of `sqrt(v)`).
//!
//! Weight decay applies only to parameters with two or more dimensions
//! (matrices and embedding tables); biases and LayerNorm gains are not decayed.
//! With `coupled_decay` the same optimiser is Adam with L2 regularisation
//! (`torch.optim.Adam`'s `weight_decay`): `wd * p` is added to the gradient
//! before the moments, instead of shrinking the weights apart from them.
//! Without weight decay the two are the same.
//!
//! [`LrScheduler`] sets the optimiser's rate batch by batch from a
//! [`Schedule`]: constant, cosine with linear warm-up (a function of the
//! batch's position in the whole training, so it needs no saved state), or
//! reduce-on-plateau on the validation loss (whose state a checkpoint saves
//! through [`SchedulerState`]).

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::infonce::Plateau;

/// Hyper-parameters of [`AdamW`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay (applied to parameters with `dim() >= 2`).
    pub weight_decay: f64,
    /// Clip the global L2 norm of all gradients to this value before each
    /// step; `<= 0` disables clipping.
    pub clip_norm: f64,
    /// Adam with L2 in the gradient instead of AdamW's decoupled decay.
    #[serde(default, skip_serializing_if = "is_false")]
    pub coupled_decay: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            clip_norm: 0.0,
            coupled_decay: false,
        }
    }
}

struct Param {
    name: String,
    tensor: Tensor,
    m: Tensor,
    v: Tensor,
    decay: bool,
}

/// AdamW over a fixed, named list of parameters.
pub struct AdamW {
    cfg: AdamWConfig,
    params: Vec<Param>,
    step: i64,
}

impl AdamW {
    /// Optimises `params` (name, tensor); the tensors must require grad. The
    /// names key the saved state, so they must be stable across runs.
    pub fn new(params: Vec<(String, Tensor)>, cfg: AdamWConfig) -> AdamW {
        let params = params
            .into_iter()
            .map(|(name, tensor)| {
                let m = tensor.zeros_like();
                let v = tensor.zeros_like();
                let decay = tensor.dim() >= 2;
                Param {
                    name,
                    tensor,
                    m,
                    v,
                    decay,
                }
            })
            .collect();
        AdamW {
            cfg,
            params,
            step: 0,
        }
    }

    /// Optimises every trainable variable of `vs`, in name order.
    pub fn from_var_store(vs: &tch::nn::VarStore, cfg: AdamWConfig) -> AdamW {
        let mut named: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        AdamW::new(named, cfg)
    }

    pub fn config(&self) -> &AdamWConfig {
        &self.cfg
    }

    pub fn lr(&self) -> f64 {
        self.cfg.lr
    }

    /// Changes the learning rate (for schedules); takes effect at the next step.
    pub fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    /// Number of steps taken so far (restored by [`AdamW::load_state`]).
    pub fn step_count(&self) -> i64 {
        self.step
    }

    /// Zeroes the gradients of all parameters.
    pub fn zero_grad(&mut self) {
        for p in &self.params {
            let mut g = p.tensor.grad();
            if g.defined() {
                tch::no_grad(|| {
                    let _ = g.zero_();
                });
            }
        }
    }

    /// Scales all gradients so that their global L2 norm is at most
    /// `max_norm`. Returns the norm before clipping as a 0-dim f32 tensor on
    /// the parameters' device (no host synchronisation).
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> Tensor {
        tch::no_grad(|| {
            let grads: Vec<Tensor> = self
                .params
                .iter()
                .map(|p| p.tensor.grad())
                .filter(|g| g.defined())
                .collect();
            if grads.is_empty() {
                return Tensor::zeros([], (Kind::Float, tch::Device::Cpu));
            }
            let norms: Vec<Tensor> = grads
                .iter()
                .map(|g| g.to_kind(Kind::Float).square().sum(Kind::Float))
                .collect();
            let total = Tensor::stack(&norms, 0).sum(Kind::Float).sqrt();
            let coef = (max_norm / (&total + 1e-6)).clamp_max(1.0);
            for mut g in grads {
                let c = coef.to_kind(g.kind());
                let _ = g.g_mul_(&c);
            }
            total
        })
    }

    /// One AdamW update from the current gradients (clipping first when
    /// `clip_norm > 0`). Parameters without a gradient are left untouched.
    pub fn step(&mut self) {
        if self.cfg.clip_norm > 0.0 {
            let _ = self.clip_grad_norm(self.cfg.clip_norm);
        }
        self.step += 1;
        let AdamWConfig {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
            coupled_decay,
            ..
        } = self.cfg;
        let t = self.step as i32;
        let bias1 = 1.0 - beta1.powi(t);
        let bias2 = 1.0 - beta2.powi(t);
        let step_size = lr / bias1;
        let bias2_sqrt = bias2.sqrt();
        tch::no_grad(|| {
            for p in &mut self.params {
                let mut g = p.tensor.grad();
                if !g.defined() {
                    continue;
                }
                let mut w = p.tensor.shallow_clone();
                if p.decay && weight_decay != 0.0 {
                    if coupled_decay {
                        g = &g + &w * weight_decay;
                    } else {
                        let _ = w.g_mul_scalar_(1.0 - lr * weight_decay);
                    }
                }
                // m = beta1 * m + (1 - beta1) * g
                let _ = p.m.lerp_(&g, 1.0 - beta1);
                // v = beta2 * v + (1 - beta2) * g^2
                let _ = p.v.g_mul_scalar_(beta2);
                let _ = p.v.addcmul_(&g, &(&g * (1.0 - beta2)));
                let denom = p.v.sqrt().g_div_scalar(bias2_sqrt).g_add_scalar(eps);
                let _ = w.addcdiv_(&(&p.m * (-step_size)), &denom);
            }
        });
    }

    /// Zeroes gradients, back-propagates `loss`, and steps.
    pub fn backward_step(&mut self, loss: &Tensor) {
        self.zero_grad();
        loss.backward();
        self.step();
    }

    /// The optimiser state: `step` (0-dim int64), `m.<param>` and `v.<param>`
    /// for every parameter. The tensors are shallow copies of the live state;
    /// write them out before the next step.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(1 + 2 * self.params.len());
        out.push((
            "step".to_string(),
            Tensor::scalar_tensor(self.step, (Kind::Int64, tch::Device::Cpu)),
        ));
        for p in &self.params {
            out.push((format!("m.{}", p.name), p.m.shallow_clone()));
            out.push((format!("v.{}", p.name), p.v.shallow_clone()));
        }
        out
    }

    /// Restores state written by [`AdamW::state_tensors`] (from any device;
    /// values are copied onto the parameters' device). Every parameter's
    /// moments must be present with matching shapes; unknown names are an
    /// error too, as they mean the parameter lists differ.
    pub fn load_state(&mut self, named: Vec<(String, Tensor)>) -> anyhow::Result<()> {
        let mut map: std::collections::HashMap<String, Tensor> = named.into_iter().collect();
        let step = map
            .remove("step")
            .ok_or_else(|| anyhow::anyhow!("optimizer state lacks `step`"))?;
        anyhow::ensure!(step.numel() == 1, "optimizer `step` must be a scalar");
        let step = step.int64_value(&[]);
        for p in &mut self.params {
            for (prefix, dst) in [("m", &mut p.m), ("v", &mut p.v)] {
                let key = format!("{prefix}.{}", p.name);
                let src = map
                    .remove(&key)
                    .ok_or_else(|| anyhow::anyhow!("optimizer state lacks `{key}`"))?;
                anyhow::ensure!(
                    src.size() == dst.size(),
                    "optimizer state `{key}` has shape {:?}, expected {:?}",
                    src.size(),
                    dst.size()
                );
                tch::no_grad(|| dst.f_copy_(&src))?;
            }
        }
        if let Some(extra) = map.keys().next() {
            anyhow::bail!("optimizer state has unknown tensor `{extra}`");
        }
        self.step = step;
        Ok(())
    }
}

/// How the learning rate moves over a training.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Schedule {
    /// The base rate throughout.
    #[default]
    Constant,
    /// Per batch: linear warm-up over the first `warmup_epochs` epochs'
    /// batches, then half a cosine from the base rate down to `min_lr` over
    /// the remaining ones ([`cosine_lr`]).
    Cosine { warmup_epochs: usize, min_lr: f64 },
    /// Per epoch: the rate is multiplied by `factor` after more than
    /// `patience` epochs without a better validation loss (PyTorch's
    /// `ReduceLROnPlateau` with its defaults, see [`Plateau`]).
    Plateau { factor: f64, patience: usize },
}

impl Schedule {
    /// Whether the schedule reads the validation loss.
    pub fn needs_validation(&self) -> bool {
        matches!(self, Schedule::Plateau { .. })
    }

    /// Checks the schedule's settings against the training's `epochs` and
    /// base rate `lr`.
    pub fn validate(&self, epochs: usize, lr: f64) -> anyhow::Result<()> {
        match *self {
            Schedule::Constant => {}
            Schedule::Cosine {
                warmup_epochs,
                min_lr,
            } => {
                anyhow::ensure!(
                    warmup_epochs < epochs.max(1),
                    "warmup_epochs must be below epochs ({epochs}), not {warmup_epochs}"
                );
                anyhow::ensure!(
                    (0.0..lr).contains(&min_lr),
                    "min_lr must be in [0, lr = {lr}), not {min_lr}"
                );
            }
            Schedule::Plateau { factor, .. } => anyhow::ensure!(
                factor > 0.0 && factor < 1.0,
                "plateau_factor must be in (0, 1), not {factor}"
            ),
        }
        Ok(())
    }
}

/// The cosine schedule's rate for batch `step` (0-based, counted over the
/// whole training) of `total`, the first `warmup` of which warm up:
///
/// - `step < warmup`: `base * (step + 1) / warmup`, rising linearly to the
///   base rate at the last warm-up batch (never 0, which would waste a step);
/// - after: `min_lr + (base - min_lr) * (1 + cos(pi * p)) / 2` with
///   `p = (step - warmup) / (total - warmup)`, from the base rate at the
///   first batch after warm-up towards `min_lr` (reached just after the last
///   batch), as Hugging Face's `get_cosine_schedule_with_warmup`.
pub fn cosine_lr(base: f64, min_lr: f64, step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let progress = (step - warmup) as f64 / (total - warmup).max(1) as f64;
    min_lr + (base - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// A [`Schedule`] applied to one training: the rate of every batch.
pub struct LrScheduler {
    schedule: Schedule,
    base: f64,
    epochs: usize,
    batches_per_epoch: usize,
    state: SchedulerState,
}

/// What a checkpoint saves of an [`LrScheduler`]: the epoch-level rate
/// (the base rate, lowered by plateau drops) as exact bits, and the
/// plateau's tracking.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SchedulerState {
    lr_bits: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plateau: Option<Plateau>,
}

impl LrScheduler {
    /// `schedule` from base rate `base` over `epochs` epochs of
    /// `batches_per_epoch` batches each.
    pub fn new(schedule: &Schedule, base: f64, epochs: usize, batches_per_epoch: usize) -> Self {
        let plateau = match *schedule {
            Schedule::Plateau { factor, patience } => Some(Plateau::new(factor, patience)),
            _ => None,
        };
        LrScheduler {
            schedule: schedule.clone(),
            base,
            epochs,
            batches_per_epoch,
            state: SchedulerState {
                lr_bits: base.to_bits(),
                plateau,
            },
        }
    }

    /// The rate for batch `batch` of epoch `epoch` (both 0-based).
    pub fn lr(&self, epoch: usize, batch: usize) -> f64 {
        match self.schedule {
            Schedule::Constant | Schedule::Plateau { .. } => f64::from_bits(self.state.lr_bits),
            Schedule::Cosine {
                warmup_epochs,
                min_lr,
            } => cosine_lr(
                self.base,
                min_lr,
                epoch * self.batches_per_epoch + batch,
                warmup_epochs * self.batches_per_epoch,
                self.epochs * self.batches_per_epoch,
            ),
        }
    }

    /// Ends an epoch: a plateau schedule records its validation loss (and
    /// may lower the rate of the following epochs); the others ignore it.
    pub fn end_epoch(&mut self, valid_loss: Option<f64>) -> anyhow::Result<()> {
        if let Some(plateau) = &mut self.state.plateau {
            let loss = valid_loss.ok_or_else(|| {
                anyhow::anyhow!("the plateau schedule needs a validation loss every epoch")
            })?;
            let lr = plateau.step(loss, f64::from_bits(self.state.lr_bits));
            self.state.lr_bits = lr.to_bits();
        }
        Ok(())
    }

    pub fn state(&self) -> &SchedulerState {
        &self.state
    }

    /// Continues from a checkpoint's state; it must come from the same
    /// schedule.
    pub fn restore(&mut self, state: SchedulerState) -> anyhow::Result<()> {
        anyhow::ensure!(
            state.plateau.is_some() == self.state.plateau.is_some(),
            "the checkpoint's learning-rate schedule state is not a {:?} schedule's",
            self.schedule
        );
        self.state = state;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// One step on the 1×1 matrix p = 1 with loss 0.5 p (gradient 0.5), lr
    /// 0.1, weight decay 0.1. The first step's bias-corrected update is
    /// lr · g / (|g| + eps) ≈ lr · sign(g).
    fn one_step(coupled_decay: bool, weight_decay: f64) -> f64 {
        let p = Tensor::ones([1, 1], (Kind::Double, Device::Cpu)).set_requires_grad(true);
        let mut opt = AdamW::new(
            vec![("p".into(), p.shallow_clone())],
            AdamWConfig {
                lr: 0.1,
                weight_decay,
                coupled_decay,
                ..AdamWConfig::default()
            },
        );
        opt.backward_step(&(&p * 0.5).sum(Kind::Double));
        p.double_value(&[0, 0])
    }

    #[test]
    fn adam_puts_the_decay_in_the_gradient_adamw_beside_it() {
        // AdamW: p (1 - lr wd) - lr = 0.99 - 0.1
        assert!((one_step(false, 0.1) - 0.89).abs() < 1e-6);
        // Adam: the decay joins the gradient (0.5 + 0.1), whose sign alone
        // sets the first step: 1 - 0.1
        assert!((one_step(true, 0.1) - 0.9).abs() < 1e-6);
        // without decay they are the same optimiser
        assert_eq!(one_step(true, 0.0), one_step(false, 0.0));
    }
}

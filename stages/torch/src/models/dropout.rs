//! Dropout whose CPU masks are drawn by ChaCha8 instead of LibTorch's
//! generator.
//!
//! Why: on CPU, LibTorch's `dropout` fills its mask with `bernoulli_`, a
//! serial loop that draws one mt19937 number per element. Profiled on
//! SASRec at 1 thread (docs/benchmarks.md) that loop was about a quarter of
//! an epoch: as much as PyTorch itself spends, so no amount of overhead
//! saved elsewhere could pull ahead of a plain PyTorch loop. ChaCha8 fills
//! a buffer of 32-bit words several times faster, and a mask is one
//! comparison per word.
//!
//! Determinism and resume: each call takes ONE 63-bit seed from torch's
//! generator (`random_` on a one-element tensor) and derives the whole mask
//! from it, element `i` from the `i`-th word of the ChaCha8 stream. So the
//! masks still depend only on torch's generator state, which the trainer
//! re-seeds per epoch: a resumed run draws the same masks as an
//! uninterrupted one, and the same seed gives the same bytes. The mask does
//! not depend on the thread count either: chunks seek to their first word.
//!
//! On other devices (CUDA) LibTorch's own dropout is already fast and runs
//! where the tensor lives, so it is used unchanged.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

/// `xs` with each element zeroed with probability `p` and the rest scaled
/// by 1 / (1 − p), in training; `xs` itself otherwise (or when `p` is 0).
pub(crate) fn dropout(xs: &Tensor, p: f64, train: bool) -> Tensor {
    if !train || p <= 0.0 {
        return xs.shallow_clone();
    }
    if xs.device() != Device::Cpu || p >= 1.0 {
        return xs.dropout(p, train);
    }
    let seed = draw_seed();
    let mask = keep_mask(&xs.size(), p, seed);
    if xs.kind() == Kind::Float {
        xs * mask
    } else {
        xs * mask.to_kind(xs.kind())
    }
}

/// [`dropout`] as a method, so model code reads as a chain like LibTorch's
/// `.dropout(p, train)`.
pub(crate) trait ChaChaDropout {
    fn chacha_dropout(&self, p: f64, train: bool) -> Tensor;
}

impl ChaChaDropout for Tensor {
    fn chacha_dropout(&self, p: f64, train: bool) -> Tensor {
        dropout(self, p, train)
    }
}

/// One seed from torch's (process-global, per-epoch re-seeded) generator.
fn draw_seed() -> u64 {
    let t = Tensor::empty([1], (Kind::Int64, Device::Cpu)).random_();
    t.int64_value(&[0]) as u64
}

/// Elements per chunk: the unit a thread fills.
const CHUNK: usize = 1 << 16;

/// Below this many elements one thread fills the whole mask (spawning
/// threads would cost more than it saves).
const PARALLEL_FROM: usize = 1 << 19;

/// A float mask of `shape`: 1 / (1 − p) where kept, 0 where dropped.
fn keep_mask(shape: &[i64], p: f64, seed: u64) -> Tensor {
    let mask = Tensor::empty(shape, (Kind::Float, Device::Cpu));
    let n = mask.numel();
    // SAFETY: `mask` was just allocated by `empty` as a contiguous CPU
    // float tensor of `n` elements; nothing else refers to it until this
    // slice is gone.
    let values = unsafe { std::slice::from_raw_parts_mut(mask.data_ptr() as *mut f32, n) };
    fill_keep_mask(values, p, seed);
    mask
}

/// Fills `values` with the keep mask of stream `seed`, several threads at
/// once when it is large (the result does not depend on how many).
fn fill_keep_mask(values: &mut [f32], p: f64, seed: u64) {
    let threads = tch::get_num_threads().max(1) as usize;
    if threads == 1 || values.len() < PARALLEL_FROM {
        fill_chunks(values, 0, p, seed);
        return;
    }
    let per_thread = values.len().div_ceil(threads).div_ceil(CHUNK) * CHUNK;
    std::thread::scope(|scope| {
        for (t, part) in values.chunks_mut(per_thread).enumerate() {
            scope.spawn(move || fill_chunks(part, t * per_thread, p, seed));
        }
    });
}

/// Fills `values`, the mask's elements from index `first` on.
fn fill_chunks(values: &mut [f32], first: usize, p: f64, seed: u64) {
    // Keep when the word is below (1 − p)·2³²: probability 1 − p to 2⁻³².
    let threshold = ((1.0 - p) * 4_294_967_296.0).round() as u64;
    let scale = (1.0 / (1.0 - p)) as f32;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_word_pos(first as u128);
    let mut words = [0u32; 256];
    for chunk in values.chunks_mut(words.len()) {
        let words = &mut words[..chunk.len()];
        rng.fill(words);
        for (v, w) in chunk.iter_mut().zip(words.iter()) {
            *v = if u64::from(*w) < threshold {
                scale
            } else {
                0.0
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(n: usize, p: f64, seed: u64) -> Vec<f32> {
        let mut values = vec![f32::NAN; n];
        fill_keep_mask(&mut values, p, seed);
        values
    }

    #[test]
    fn keeps_one_minus_p_of_the_elements_scaled() {
        let values = mask(200_000, 0.2, 11);
        let kept = values.iter().filter(|v| **v != 0.0).count();
        assert!(values.iter().all(|v| *v == 0.0 || *v == 1.25));
        // Binomial(200000, 0.8): sd ≈ 179; 5 sd either side.
        assert!((kept as f64 - 160_000.0).abs() < 900.0, "{kept}");
    }

    #[test]
    fn the_mask_depends_on_the_seed_not_on_the_threads() {
        let _guard = crate::models::trainer::torch_rng_lock();
        let n = PARALLEL_FROM * 3 + 12_345;
        let before = tch::get_num_threads();
        tch::set_num_threads(1);
        let serial = mask(n, 0.3, 5);
        tch::set_num_threads(3);
        let parallel = mask(n, 0.3, 5);
        tch::set_num_threads(before);
        assert!(serial == parallel, "thread count changed the mask");
        assert!(serial != mask(n, 0.3, 6), "seed did not change the mask");
    }

    #[test]
    fn same_torch_seed_same_dropout_and_gradient_is_the_mask() {
        let _guard = crate::models::trainer::torch_rng_lock();
        let xs = Tensor::ones([64, 33], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        tch::manual_seed(9);
        let a = dropout(&xs, 0.5, true);
        tch::manual_seed(9);
        let b = dropout(&xs, 0.5, true);
        assert!(a.equal(&b));
        let c = dropout(&xs, 0.5, true);
        assert!(!a.equal(&c), "the next call must draw a new mask");
        a.sum(Kind::Float).backward();
        // d(sum)/dx is the mask itself, equal to the output for x = 1.
        assert!(xs.grad().equal(&a.detach()));
        // Outside training, and at p = 0, nothing changes.
        assert!(dropout(&xs, 0.5, false).equal(&xs));
        assert!(dropout(&xs, 0.0, true).equal(&xs));
    }
}

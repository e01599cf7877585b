//! Helpers shared by the model tests: batches, tensor comparison, and
//! sequences with a planted rule a model must learn.
#![allow(dead_code)] // each test binary uses its own subset

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

/// Left-pads each sequence with 0 to length `l` and stacks them into [B, l].
pub fn left_padded(seqs: &[Vec<i64>], l: usize) -> Tensor {
    let mut flat = Vec::with_capacity(seqs.len() * l);
    for s in seqs {
        assert!(s.len() <= l);
        flat.extend(std::iter::repeat_n(0, l - s.len()));
        flat.extend_from_slice(s);
    }
    Tensor::from_slice(&flat).view([seqs.len() as i64, l as i64])
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// Sequences following the planted rule "item i is followed by i % n + 1".
pub fn successor_data(
    rng: &mut ChaCha8Rng,
    n: i64,
    count: usize,
    len: (usize, usize),
) -> Vec<Vec<i64>> {
    (0..count)
        .map(|_| {
            let l = rng.gen_range(len.0..=len.1);
            let start = rng.gen_range(1..=n);
            (0..l as i64).map(|k| (start - 1 + k) % n + 1).collect()
        })
        .collect()
}

//! Randomness: the independent seeded streams, per-user hashed traits,
//! normal draws, weighted draws (`Cdf`) and rounding prices to cents.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Independent random streams, so that (say) the catalogue does not change
/// when the session logic draws one more number.
#[derive(Clone, Copy)]
pub(super) enum Stream {
    Catalogue = 1,
    Users = 2,
    Brands = 3,
    Sessions = 4,
    Defects = 5,
}

/// The generator of one stream of the seed.
pub(super) fn stream_rng(seed: u64, stream: Stream) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream as u64);
    rng
}

/// A uniform number in [0, 1) fixed by (seed, a, b): a per-user trait that
/// costs no memory (splitmix64).
pub(super) fn hashed_unit(seed: u64, a: u64, b: u64) -> f64 {
    let mut z =
        seed ^ a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// A standard normal draw (Box–Muller).
pub(super) fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u: f64 = 1.0 - rng.gen::<f64>();
    let v: f64 = rng.gen();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

pub(super) fn cents(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Draws indices in proportion to fixed weights (inverse CDF).
pub(super) struct Cdf {
    cumulative: Vec<f64>,
    /// The last index with a positive weight (what rounding may land on).
    last: usize,
}

impl Cdf {
    pub(super) fn new(weights: impl IntoIterator<Item = f64>) -> Cdf {
        let mut acc = 0.0;
        let mut last = 0;
        let cumulative = weights
            .into_iter()
            .enumerate()
            .map(|(i, w)| {
                if w > 0.0 {
                    last = i;
                }
                acc += w;
                acc
            })
            .collect();
        Cdf { cumulative, last }
    }

    /// Weights 1 / rank^s over `n` ranks, in a shuffled order.
    pub(super) fn zipf_shuffled(n: usize, s: f64, rng: &mut ChaCha8Rng) -> Cdf {
        let mut w: Vec<f64> = (1..=n).map(|r| 1.0 / (r as f64).powf(s)).collect();
        w.shuffle(rng);
        Cdf::new(w)
    }

    /// The index at quantile `u` in [0, 1).
    pub(super) fn at(&self, u: f64) -> usize {
        let x = u * self.cumulative.last().copied().unwrap_or(0.0);
        self.cumulative.partition_point(|&c| c <= x).min(self.last)
    }

    pub(super) fn sample(&self, rng: &mut ChaCha8Rng) -> usize {
        self.at(rng.gen())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdf_never_draws_a_zero_weight() {
        let cdf = Cdf::new([0.0, 2.0, 0.0, 1.0, 0.0]);
        assert_eq!(cdf.at(0.0), 1);
        assert_eq!(cdf.at(0.66), 1);
        assert_eq!(cdf.at(0.67), 3);
        assert_eq!(cdf.at(0.999_999_999), 3);
    }
}

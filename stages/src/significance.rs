//! Is model A really better than model B on these users? A paired test on
//! per-example values (e.g. NDCG@10 of the same held-out items).
//!
//! The test is a two-sided paired randomization (sign-flip) test of the mean
//! difference, the one Smucker, Allan & Carterette ("A Comparison of
//! Statistical Significance Tests for Information Retrieval Evaluation",
//! CIKM 2007) recommend for IR metrics: under the null hypothesis the two
//! systems are exchangeable on each example, so each difference is equally
//! likely to have either sign. The p-value is the share of `resamples`
//! random sign assignments (plus the observed one, so it is never 0) whose
//! absolute mean difference reaches the observed one. It assumes nothing
//! about the distribution of the differences, which for rank metrics is far
//! from normal (most are 0).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// The outcome of [`paired_test`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairedTest {
    /// Examples compared.
    pub n: usize,
    /// mean(a) - mean(b)
    pub mean_diff: f64,
    /// Two-sided p-value of "no difference".
    pub p_value: f64,
}

/// Paired sign-flip test of `a` against `b` (same examples, same order).
/// `None` when they differ in length or are empty.
pub fn paired_test(a: &[f64], b: &[f64], resamples: usize, seed: u64) -> Option<PairedTest> {
    if a.len() != b.len() || a.is_empty() {
        return None;
    }
    let diffs: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let n = diffs.len() as f64;
    let observed = diffs.iter().sum::<f64>() / n;
    // Compare with a small tolerance so that sign assignments giving the
    // same mean up to rounding count as reaching it.
    let threshold = observed.abs() - 1e-12;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut at_least = 1usize; // the observed assignment itself
    for _ in 0..resamples {
        let flipped: f64 = diffs
            .iter()
            .map(|d| if rng.gen::<bool>() { *d } else { -*d })
            .sum();
        if (flipped / n).abs() >= threshold {
            at_least += 1;
        }
    }
    Some(PairedTest {
        n: diffs.len(),
        mean_diff: observed,
        p_value: at_least as f64 / (resamples + 1) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_systems_are_not_different() {
        let a = [1.0, 0.0, 0.5, 0.3];
        let t = paired_test(&a, &a, 999, 1).unwrap();
        assert_eq!(t.mean_diff, 0.0);
        assert_eq!(t.p_value, 1.0);
    }

    #[test]
    fn a_consistent_win_is_significant() {
        // A beats B by 0.1 on each of 30 examples: the chance that random
        // signs reach a mean of 0.1 is 2 / 2^30, so only the observed
        // assignment counts.
        let a: Vec<f64> = (0..30).map(|i| 0.5 + i as f64 * 0.01).collect();
        let b: Vec<f64> = a.iter().map(|x| x - 0.1).collect();
        let t = paired_test(&a, &b, 999, 2).unwrap();
        assert!((t.mean_diff - 0.1).abs() < 1e-12);
        assert_eq!(t.p_value, 1.0 / 1000.0);
        assert_eq!(t.n, 30);
    }

    #[test]
    fn exact_p_value_of_a_tiny_case() {
        // Differences (1, 1): of the 4 sign assignments, (+,+) and (-,-)
        // reach |mean| = 1, so p = 1/2; the estimate converges to it.
        let t = paired_test(&[1.0, 1.0], &[0.0, 0.0], 20_000, 3).unwrap();
        assert!((t.p_value - 0.5).abs() < 0.02, "{t:?}");
    }

    #[test]
    fn mismatched_or_empty_inputs_give_none() {
        assert!(paired_test(&[1.0], &[1.0, 2.0], 10, 1).is_none());
        assert!(paired_test(&[], &[], 10, 1).is_none());
    }
}

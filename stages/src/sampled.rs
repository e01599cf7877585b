//! Sampled ranking: the target ranked against N sampled negatives instead of
//! the whole catalogue — the protocol many papers used before Krichene &
//! Rendle ("On Sampled Metrics for Item Recommendation", KDD 2020) showed
//! that it inflates metrics and can even reorder models. `evaluate` offers
//! it so users can see that inflation next to the full-ranking numbers.
//!
//! Negatives are drawn without replacement from the items that are not the
//! target (nor excluded, e.g. already seen), either uniformly or in
//! proportion to their training popularity (items never seen in training
//! are then never drawn). When fewer candidates exist than asked for, all
//! of them are used. Each example draws from its own `ChaCha8Rng` stream,
//! a function of (seed, split, example index), so the negatives do not depend
//! on the batch size or on other examples.

use std::collections::HashSet;

use rand::distributions::{Distribution, WeightedIndex};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How negatives are drawn.
#[derive(Debug, Clone)]
pub enum Sampler {
    /// Every non-target item equally likely.
    Uniform,
    /// In proportion to training occurrences (`counts[i]` for item `i`).
    Popularity {
        counts: Vec<u64>,
        index: WeightedIndex<f64>,
    },
}

impl Sampler {
    /// `name` is `uniform` or `popularity`; `popularity[i]` counts item `i`
    /// in training (index 0, padding, is never drawn).
    pub fn new(name: &str, popularity: &[u64]) -> anyhow::Result<Sampler> {
        match name {
            "uniform" => Ok(Sampler::Uniform),
            "popularity" => {
                let weights: Vec<f64> = popularity
                    .iter()
                    .enumerate()
                    .map(|(i, &c)| if i == 0 { 0.0 } else { c as f64 })
                    .collect();
                let index = WeightedIndex::new(weights).map_err(|e| {
                    anyhow::anyhow!("sampler: no item has a training occurrence to weight by ({e})")
                })?;
                Ok(Sampler::Popularity {
                    counts: popularity.to_vec(),
                    index,
                })
            }
            other => anyhow::bail!("sampler: unknown sampler {other:?} (uniform, popularity)"),
        }
    }
}

/// The random stream of example `index` of split `split` (0 = valid,
/// 1 = test).
pub fn example_rng(seed: u64, split: u64, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5a3b_1ed0);
    rng.set_stream(split << 40 | index);
    rng
}

/// `n` distinct negatives from items `1..=num_items`, never `target` nor an
/// item of the sorted list `exclude`; fewer when fewer exist.
pub fn negatives(
    rng: &mut ChaCha8Rng,
    sampler: &Sampler,
    num_items: usize,
    target: usize,
    exclude: &[usize],
    n: usize,
) -> Vec<usize> {
    let allowed = |j: usize| j != 0 && j != target && exclude.binary_search(&j).is_err();
    match sampler {
        Sampler::Uniform => {
            let candidates: Vec<usize> = (1..=num_items).filter(|&j| allowed(j)).collect();
            draw_distinct(candidates, n, || rng.gen_range(1..=num_items), &allowed)
        }
        Sampler::Popularity { counts, index } => {
            let drawable = |j: usize| allowed(j) && counts.get(j).is_some_and(|&c| c > 0);
            let candidates: Vec<usize> = (1..=num_items).filter(|&j| drawable(j)).collect();
            draw_distinct(candidates, n, || index.sample(rng), &drawable)
        }
    }
}

/// All of `candidates` when there are at most `n`, else `n` distinct items
/// from `draw`, keeping only those `keep` accepts (rejection sampling: the
/// candidates are the whole catalogue but a few items, so it ends fast).
fn draw_distinct(
    candidates: Vec<usize>,
    n: usize,
    mut draw: impl FnMut() -> usize,
    keep: &dyn Fn(usize) -> bool,
) -> Vec<usize> {
    if candidates.len() <= n {
        return candidates;
    }
    let mut picked = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let j = draw();
        if keep(j) && picked.insert(j) {
            out.push(j);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negatives_are_distinct_and_avoid_target_and_excluded() {
        let sampler = Sampler::new("uniform", &[0; 101]).unwrap();
        let mut rng = example_rng(7, 1, 3);
        let neg = negatives(&mut rng, &sampler, 100, 10, &[3, 20], 50);
        assert_eq!(neg.len(), 50);
        let set: HashSet<_> = neg.iter().collect();
        assert_eq!(set.len(), 50);
        assert!(neg
            .iter()
            .all(|&j| (1..=100).contains(&j) && ![10, 3, 20].contains(&j)));
        // the same stream gives the same negatives; another example others
        let again = negatives(&mut example_rng(7, 1, 3), &sampler, 100, 10, &[3, 20], 50);
        assert_eq!(neg, again);
        let other = negatives(&mut example_rng(7, 1, 4), &sampler, 100, 10, &[3, 20], 50);
        assert_ne!(neg, other);
    }

    #[test]
    fn too_few_candidates_gives_them_all() {
        let sampler = Sampler::new("uniform", &[0; 6]).unwrap();
        let neg = negatives(&mut example_rng(1, 0, 0), &sampler, 5, 2, &[4], 100);
        assert_eq!(neg, vec![1, 3, 5]);
    }

    #[test]
    fn popularity_sampler_draws_only_seen_items_and_favours_popular_ones() {
        // item 1: 900 occurrences, 2: 100, 3: 0 (never drawn), 4..=20: 1 each
        let mut counts = vec![0u64, 900, 100, 0];
        counts.extend(std::iter::repeat_n(1, 17));
        let sampler = Sampler::new("popularity", &counts).unwrap();
        let mut first = [0usize; 21];
        for i in 0..400 {
            let neg = negatives(&mut example_rng(3, 0, i), &sampler, 20, 5, &[], 1);
            assert_ne!(neg[0], 3);
            first[neg[0]] += 1;
        }
        // 900 / 1016 of the mass: item 1 is nearly always the one drawn
        assert!(first[1] > 300, "{first:?}");
        let few = negatives(&mut example_rng(3, 0, 0), &sampler, 3, 1, &[], 10);
        assert_eq!(few, vec![2]);
        assert!(Sampler::new("popularity", &[0, 0, 0]).is_err());
        assert!(Sampler::new("zipf", &[0, 1]).is_err());
    }
}

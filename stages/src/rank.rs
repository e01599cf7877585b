//! Where a held-out target stands among its candidates, and how ties count.
//!
//! A scorer gives every candidate a score; the target's standing is
//! [`Rank`]: `above` candidates scored strictly higher and `tied` others
//! scored exactly the same. Ties are frequent — a popularity model gives
//! every item with the same training count one score, a constant model
//! ties the whole catalogue, a trained model can saturate — so how they are
//! ranked decides numbers. Breaking them by item index (as seqpipe did up to
//! evaluate version 4) is not neutral: vocabularies are sorted by raw id,
//! and on real data id order correlates with popularity (ml-100k: Spearman
//! −0.71), so low-id targets gain.
//!
//! [`Ties`] says how a tie counts:
//! - `expected` (the default): the expectation over all orderings of the
//!   tied items (McSherry & Najork, ECIR 2008). The target's rank is uniform
//!   on `above + 1 ..= above + tied + 1`, and every rank metric is its exact
//!   mean over those positions ([`Rank::metric`]; closed forms, no sampling).
//!   A constant-score model gets HR@K = K / candidates.
//! - `pessimistic`: the target ranks after every item it ties with.
//! - `optimistic`: before every item it ties with.
//!
//! Top-K lists (coverage, popularity bias, served recommendations) need one
//! order, not an expectation: [`top_k`] puts a higher score first and breaks
//! equal scores by a seeded hash of the item ([`tie_order`]), never by
//! index, so which tied item is listed does not follow the id order.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use serde::{Deserialize, Serialize};

/// How a tie between the target and other candidates is ranked (see the
/// module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ties {
    /// The mean over all orderings of the tied items.
    #[default]
    Expected,
    /// The target after every item it ties with.
    Pessimistic,
    /// The target before every item it ties with.
    Optimistic,
}

impl Ties {
    pub fn as_str(self) -> &'static str {
        match self {
            Ties::Expected => "expected",
            Ties::Pessimistic => "pessimistic",
            Ties::Optimistic => "optimistic",
        }
    }
}

/// A rank metric of one example at a cut-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankMetric {
    /// Hit rate (= recall with one relevant item): [r ≤ K].
    Hr,
    /// [r ≤ K] / log2(r + 1) (the ideal DCG is 1).
    Ndcg,
    /// [r ≤ K] / r.
    Mrr,
    /// HR@K / K.
    Precision,
}

impl RankMetric {
    pub const ALL: [RankMetric; 4] = [
        RankMetric::Hr,
        RankMetric::Ndcg,
        RankMetric::Mrr,
        RankMetric::Precision,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RankMetric::Hr => "hr",
            RankMetric::Ndcg => "ndcg",
            RankMetric::Mrr => "mrr",
            RankMetric::Precision => "precision",
        }
    }

    pub fn parse(name: &str) -> Option<RankMetric> {
        RankMetric::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The metric at cut-off `k` of a target at exactly 1-based rank `r`.
    fn at(self, k: usize, r: usize) -> f64 {
        if r > k {
            return 0.0;
        }
        match self {
            RankMetric::Hr => 1.0,
            RankMetric::Ndcg => 1.0 / ((r + 1) as f64).log2(),
            RankMetric::Mrr => 1.0 / r as f64,
            RankMetric::Precision => 1.0 / k as f64,
        }
    }
}

/// Where a target stands among its candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rank {
    /// Candidates scored strictly higher than the target.
    pub above: usize,
    /// Other candidates scored the same as the target.
    pub tied: usize,
}

impl Rank {
    /// A target at exactly 1-based rank `r`, tied with nothing.
    pub fn exact(r: usize) -> Rank {
        Rank {
            above: r.saturating_sub(1),
            tied: 0,
        }
    }

    /// The best 1-based position the target can take.
    pub fn first(self) -> usize {
        self.above + 1
    }

    /// The worst 1-based position the target can take.
    pub fn last(self) -> usize {
        self.above + self.tied + 1
    }

    /// The standing once `ties` has decided the tied items' side: a single
    /// position (`tied` = 0) when pessimistic or optimistic, unchanged when
    /// expected.
    pub fn under(self, ties: Ties) -> Rank {
        match ties {
            Ties::Expected => self,
            Ties::Pessimistic => Rank::exact(self.last()),
            Ties::Optimistic => Rank::exact(self.first()),
        }
    }

    /// The mean position over the orderings of the tied items.
    pub fn expected_position(self) -> f64 {
        self.above as f64 + 1.0 + self.tied as f64 / 2.0
    }

    /// `metric`@`k`, averaged over the target's equally likely positions
    /// `first ..= last` (exact; at most `k` terms are non-zero).
    pub fn metric(self, metric: RankMetric, k: usize) -> f64 {
        let end = self.last().min(k);
        if end < self.first() {
            return 0.0;
        }
        let sum: f64 = (self.first()..=end).map(|r| metric.at(k, r)).sum();
        sum / (self.tied + 1) as f64
    }

    /// The mean reciprocal position over the whole ranking (MRR without a
    /// cut-off): (H(last) − H(first − 1)) / (tied + 1).
    pub fn reciprocal(self) -> f64 {
        if self.tied == 0 {
            return 1.0 / self.first() as f64;
        }
        (harmonic(self.last()) - harmonic(self.above)) / (self.tied + 1) as f64
    }
}

/// The n-th harmonic number H(n) = Σ_{i=1..n} 1/i: summed exactly for
/// small n, from its asymptotic expansion (error below 1e-17 relative for
/// n ≥ 64) above.
fn harmonic(n: usize) -> f64 {
    if n < 64 {
        return (1..=n).map(|i| 1.0 / i as f64).sum();
    }
    const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;
    let x = n as f64;
    let x2 = x * x;
    x.ln() + EULER_GAMMA + 1.0 / (2.0 * x) - 1.0 / (12.0 * x2) + 1.0 / (120.0 * x2 * x2)
        - 1.0 / (252.0 * x2 * x2 * x2)
}

/// The standing of `target` in `scores` (index 0, the padding item, is
/// never a candidate). `exclude` lists items removed from the candidates
/// (the target itself never is).
pub fn rank_of(scores: &[f32], target: usize, exclude: &[usize]) -> Rank {
    let t = scores[target];
    let (mut above, mut tied) = (0usize, 0usize);
    for (j, &s) in scores.iter().enumerate().skip(1) {
        if s > t {
            above += 1;
        } else if s == t && j != target {
            tied += 1;
        }
    }
    // Excluded items no longer count.
    for &j in exclude {
        if j != 0 && j != target && j < scores.len() {
            let s = scores[j];
            if s > t {
                above -= 1;
            } else if s == t {
                tied -= 1;
            }
        }
    }
    Rank { above, tied }
}

/// The standing of `target` among itself and `negatives` by `scores`
/// (sampled ranking; `negatives` never holds the target).
pub fn rank_among(scores: &[f32], target: usize, negatives: &[usize]) -> Rank {
    let t = scores[target];
    let (mut above, mut tied) = (0usize, 0usize);
    for &j in negatives {
        let s = scores[j];
        if s > t {
            above += 1;
        } else if s == t {
            tied += 1;
        }
    }
    Rank { above, tied }
}

/// The position of `item` among items of equal score in top-K lists: a
/// hash of the item under `seed` (splitmix64's finaliser), so equal scores
/// are listed in an order that is fixed for a seed and unrelated to ids.
pub fn tie_order(seed: u64, item: usize) -> u64 {
    let mut z = seed ^ (item as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A candidate in the top-K heap; `Ord` puts the *worse* item first, so the
/// max-heap's top is the one to evict.
#[derive(PartialEq)]
struct Cand {
    score: f32,
    order: u64,
    item: usize,
}

impl Eq for Cand {}

impl Ord for Cand {
    fn cmp(&self, o: &Self) -> Ordering {
        // worse = lower score, or the same score and a later tie order
        o.score
            .total_cmp(&self.score)
            .then(self.order.cmp(&o.order))
            .then(self.item.cmp(&o.item))
    }
}

impl PartialOrd for Cand {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// The `k` best items of `scores`, best first (higher score, then the
/// earlier [`tie_order`] under `seed`), leaving out padding (0) and the
/// sorted list `exclude`. Holds only `k` candidates at a time.
pub fn top_k(scores: &[f32], k: usize, exclude: &[usize], seed: u64) -> Vec<usize> {
    if k == 0 {
        return vec![];
    }
    let mut heap: BinaryHeap<Cand> = BinaryHeap::with_capacity(k + 1);
    for (j, &s) in scores.iter().enumerate().skip(1) {
        if heap.len() == k {
            let worst = heap.peek().expect("k > 0");
            // below the worst kept: cannot enter (an equal score may, by
            // its tie order)
            if s.total_cmp(&worst.score) == Ordering::Less {
                continue;
            }
        }
        if exclude.binary_search(&j).is_ok() {
            continue;
        }
        heap.push(Cand {
            score: s,
            order: tie_order(seed, j),
            item: j,
        });
        if heap.len() > k {
            heap.pop();
        }
    }
    heap.into_sorted_vec().into_iter().map(|c| c.item).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    #[test]
    fn counts_higher_and_tied_scores_apart_from_the_index() {
        // index:        0    1    2    3    4
        let scores = [9.0, 0.5, 0.9, 0.5, 0.1];
        assert_eq!(rank_of(&scores, 1, &[]), Rank { above: 1, tied: 1 });
        assert_eq!(rank_of(&scores, 3, &[]), Rank { above: 1, tied: 1 });
        assert_eq!(rank_of(&scores, 2, &[]), Rank { above: 0, tied: 0 });
        // excluding the tied item and the one above
        assert_eq!(rank_of(&scores, 3, &[1, 2]), Rank { above: 0, tied: 0 });
        assert_eq!(rank_among(&scores, 3, &[1, 4]), Rank { above: 0, tied: 1 });
    }

    #[test]
    fn a_constant_model_gets_k_over_candidates_when_expected() {
        // 50 candidates all tied: the target is uniform on 1..=50
        let r = Rank { above: 0, tied: 49 };
        close(r.metric(RankMetric::Hr, 10), 10.0 / 50.0);
        close(r.under(Ties::Pessimistic).metric(RankMetric::Hr, 10), 0.0);
        close(r.under(Ties::Optimistic).metric(RankMetric::Hr, 10), 1.0);
        let ndcg: f64 = (1..=10).map(|p| 1.0 / ((p + 1) as f64).log2()).sum::<f64>() / 50.0;
        close(r.metric(RankMetric::Ndcg, 10), ndcg);
        let mrr10: f64 = (1..=10).map(|p| 1.0 / p as f64).sum::<f64>() / 50.0;
        close(r.metric(RankMetric::Mrr, 10), mrr10);
        close(r.metric(RankMetric::Precision, 10), 0.2 / 10.0);
        let mrr: f64 = (1..=50).map(|p| 1.0 / p as f64).sum::<f64>() / 50.0;
        close(r.reciprocal(), mrr);
    }

    #[test]
    fn partial_overlap_of_the_tie_with_the_cut_off() {
        // 8 above, tied with 4: positions 9..=13, K = 10 sees two of five
        let r = Rank { above: 8, tied: 4 };
        close(r.metric(RankMetric::Hr, 10), 2.0 / 5.0);
        let want = (1.0 / 10f64.log2() + 1.0 / 11f64.log2()) / 5.0;
        close(r.metric(RankMetric::Ndcg, 10), want);
        close(r.expected_position(), 11.0);
        assert_eq!(r.under(Ties::Pessimistic), Rank::exact(13));
        assert_eq!(r.under(Ties::Optimistic), Rank::exact(9));
        // no tie: the plain metric
        close(Rank::exact(3).metric(RankMetric::Ndcg, 5), 0.5);
        close(Rank::exact(6).metric(RankMetric::Hr, 5), 0.0);
    }

    #[test]
    fn harmonic_numbers_switch_to_the_expansion_seamlessly() {
        for n in [63usize, 64, 65, 100, 1000, 2_600_000] {
            let exact: f64 = (1..=n).map(|i| 1.0 / i as f64).sum();
            assert!((harmonic(n) - exact).abs() < 1e-11, "H({n})");
        }
        let big = Rank {
            above: 3,
            tied: 999_996,
        };
        let exact: f64 = (4..=1_000_000).map(|i| 1.0 / i as f64).sum::<f64>() / 999_997.0;
        assert!((big.reciprocal() - exact).abs() < 1e-15);
    }

    #[test]
    fn top_k_breaks_ties_by_seeded_hash_and_skips_excluded() {
        let scores = [9.0, 0.5, 0.9, 0.5, 0.1, 0.5];
        assert_eq!(top_k(&scores, 0, &[], 1), Vec::<usize>::new());
        let top = top_k(&scores, 3, &[], 1);
        assert_eq!(top[0], 2);
        let mut tied = top[1..].to_vec();
        tied.sort();
        assert!(tied.iter().all(|i| [1, 3, 5].contains(i)), "{top:?}");
        // the tie order is the hash order
        let mut want = vec![1usize, 3, 5];
        want.sort_by_key(|&i| tie_order(1, i));
        assert_eq!(top_k(&scores, 4, &[], 1), [vec![2], want.clone()].concat());
        assert_eq!(
            top_k(&scores, 10, &[2, 3], 1)[0..2],
            want.iter().copied().filter(|&i| i != 3).collect::<Vec<_>>()[..]
        );
        // over many seeds, the lowest index is not always listed first
        let firsts: std::collections::BTreeSet<usize> = (0..32)
            .map(|seed| top_k(&scores, 2, &[2], seed)[0])
            .collect();
        assert_eq!(firsts.len(), 3, "{firsts:?}");
    }
}

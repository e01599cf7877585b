//! Ranking metrics from the rank of the one held-out item.
//!
//! With one relevant item per example and its 1-based rank `r` among all
//! candidates: HR@K = [r ≤ K] (equal to Recall@K), NDCG@K = [r ≤ K] / log2(r + 1)
//! (the ideal DCG is 1), MRR@K = [r ≤ K] / r. Averages are over examples.
//!
//! Ties are broken by item index: an item with the same score as the target
//! ranks ahead of it when its index is lower — the order a stable top-K over
//! the catalogue would give, so metrics neither reward nor punish ties at
//! random.

use std::collections::BTreeMap;

/// The 1-based rank of `target` in `scores` (index 0, the padding item, is
/// never a candidate). `exclude` lists items removed from the candidates.
pub fn rank_of(scores: &[f32], target: usize, exclude: &[usize]) -> usize {
    let t = scores[target];
    let mut ahead = 0usize;
    for (j, &s) in scores.iter().enumerate().skip(1) {
        if j != target && (s > t || (s == t && j < target)) {
            ahead += 1;
        }
    }
    // Excluded items that were ahead no longer count.
    for &j in exclude {
        if j != 0 && j != target && j < scores.len() {
            let s = scores[j];
            if s > t || (s == t && j < target) {
                ahead -= 1;
            }
        }
    }
    ahead + 1
}

/// Averages of HR/NDCG/MRR at each K over the given ranks, named `hr@10`…;
/// plus `mrr` over the full ranking and `examples`.
pub fn summarize(ranks: &[usize], ks: &[usize], which: &[String]) -> BTreeMap<String, f64> {
    let n = ranks.len().max(1) as f64;
    let mut out = BTreeMap::new();
    for &k in ks {
        let (mut hr, mut ndcg, mut mrr) = (0.0, 0.0, 0.0);
        for &r in ranks {
            if r <= k {
                hr += 1.0;
                ndcg += 1.0 / ((r + 1) as f64).log2();
                mrr += 1.0 / r as f64;
            }
        }
        for (name, total) in [("hr", hr), ("ndcg", ndcg), ("mrr", mrr)] {
            if which.iter().any(|w| w == name) {
                out.insert(format!("{name}@{k}"), total / n);
            }
        }
    }
    if which.iter().any(|w| w == "mrr") {
        out.insert(
            "mrr".into(),
            ranks.iter().map(|r| 1.0 / *r as f64).sum::<f64>() / n,
        );
    }
    out.insert("examples".into(), ranks.len() as f64);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<String> {
        vec!["hr".into(), "ndcg".into(), "mrr".into()]
    }

    #[test]
    fn rank_counts_higher_scores_and_lower_index_ties() {
        // index:        0(pad) 1    2    3    4
        let scores = [9.0, 0.5, 0.9, 0.5, 0.1];
        assert_eq!(rank_of(&scores, 2, &[]), 1);
        assert_eq!(rank_of(&scores, 1, &[]), 2); // behind 2; ties with 3 but 1 < 3
        assert_eq!(rank_of(&scores, 3, &[]), 3); // behind 2 and the tie at 1
        assert_eq!(rank_of(&scores, 4, &[]), 4);
        assert_eq!(rank_of(&scores, 4, &[2, 3]), 2);
    }

    #[test]
    fn hand_computed_metrics() {
        // ranks 1, 3, 11 with K = 1, 5, 10
        let m = summarize(&[1, 3, 11], &[1, 5, 10], &all());
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        close(m["hr@1"], 1.0 / 3.0);
        close(m["hr@5"], 2.0 / 3.0);
        close(m["hr@10"], 2.0 / 3.0);
        close(m["ndcg@5"], (1.0 + 1.0 / 4f64.log2()) / 3.0); // 1/log2(2) + 1/log2(4)
        close(m["ndcg@5"], 0.5);
        close(m["mrr@5"], (1.0 + 1.0 / 3.0) / 3.0);
        close(m["mrr"], (1.0 + 1.0 / 3.0 + 1.0 / 11.0) / 3.0);
        close(m["examples"], 3.0);
    }

    #[test]
    fn k_larger_than_catalogue_and_one_item() {
        let m = summarize(&[1], &[100], &all());
        assert_eq!(m["hr@100"], 1.0);
        assert_eq!(m["ndcg@100"], 1.0);
        // one-item catalogue: the target is always first
        assert_eq!(rank_of(&[0.0, 3.0], 1, &[]), 1);
    }
}

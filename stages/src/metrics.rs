//! Ranking metrics from the rank of the one held-out item and the top-K list.
//!
//! With one relevant item per example and its 1-based rank `r` among all
//! candidates: HR@K = [r ≤ K] (equal to Recall@K), NDCG@K = [r ≤ K] / log2(r + 1)
//! (the ideal DCG is 1), MRR@K = [r ≤ K] / r, Precision@K = HR@K / K.
//! Averages are over examples.
//!
//! Two metrics look at the recommended lists rather than the target:
//! `coverage@K` is the number of distinct items in all the top-K lists over
//! the catalogue size (a corpus-level value, so it has no per-example
//! confidence interval), and `avg_pop@K` the mean training popularity
//! (occurrences in `train.parquet`) of the recommended items, averaged per
//! list and then over examples. When fewer than K items are candidates the
//! list is shorter; precision still divides by K.
//!
//! Three treat the model as a classifier whose prediction is its top-1
//! item (`accuracy`): `accuracy` is the share of examples whose top item
//! is the target (HR@1; it gets an interval), and `macro_precision` /
//! `macro_recall` average over items the per-item precision (of the
//! examples where the item was predicted, the share where it was the
//! target) and recall (of the examples where it was the target, the share
//! where it was predicted) — over the items that occur as a target or a
//! prediction, an item never predicted having precision 0 (scikit-learn's
//! `average="macro"`, `zero_division=0`).
//!
//! Each example's target arrives as a [`Rank`] (candidates above it, and
//! tied with it) already resolved under the evaluation's [`Ties`] rule, and
//! every rank metric is the exact mean over the positions a tie leaves
//! open — see [`crate::rank`]. Top-K lists break equal scores by a seeded
//! hash of the item ([`top_k`]), never by index.
//!
//! Confidence intervals: percentile bootstrap over examples (resampled with
//! replacement, `ChaCha8` seeded), 2.5 % and 97.5 % quantiles of the resampled
//! means, linearly interpolated.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value};

pub use crate::rank::{rank_among, rank_of, top_k, Rank, RankMetric, Ties};

/// Averages of HR/NDCG/MRR at each K over the given ranks, named `hr@10`…;
/// plus `mrr` over the full ranking and `examples`.
pub fn summarize(ranks: &[Rank], ks: &[usize], which: &[String]) -> BTreeMap<String, f64> {
    let n = ranks.len().max(1) as f64;
    let mut out = BTreeMap::new();
    for &k in ks {
        for metric in RankMetric::ALL {
            if which.iter().any(|w| w == metric.name()) {
                let total: f64 = ranks.iter().map(|r| r.metric(metric, k)).sum();
                out.insert(format!("{}@{k}", metric.name()), total / n);
            }
        }
    }
    if which.iter().any(|w| w == "mrr") {
        out.insert(
            "mrr".into(),
            ranks.iter().map(|r| r.reciprocal()).sum::<f64>() / n,
        );
    }
    out.insert("examples".into(), ranks.len() as f64);
    out
}

/// The 2.5 % and 97.5 % percentile-bootstrap bounds of the mean of each
/// column of `values` (`values[i]` is example i's row), from `resamples`
/// resamples drawn with `seed`. Empty when there are no examples or
/// `resamples` is 0.
pub fn bootstrap_ci(values: &[Vec<f64>], resamples: usize, seed: u64) -> Vec<(f64, f64)> {
    let n = values.len();
    let m = values.first().map_or(0, Vec::len);
    if n == 0 || resamples == 0 {
        return vec![];
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut means = vec![Vec::with_capacity(resamples); m];
    let mut sums = vec![0.0; m];
    for _ in 0..resamples {
        sums.iter_mut().for_each(|s| *s = 0.0);
        for _ in 0..n {
            let row = &values[rng.gen_range(0..n)];
            for (s, v) in sums.iter_mut().zip(row) {
                *s += v;
            }
        }
        for (col, s) in means.iter_mut().zip(&sums) {
            col.push(s / n as f64);
        }
    }
    means
        .into_iter()
        .map(|mut col| {
            col.sort_by(f64::total_cmp);
            (quantile(&col, 0.025), quantile(&col, 0.975))
        })
        .collect()
}

/// Linear-interpolated quantile of sorted, non-empty `xs`.
fn quantile(xs: &[f64], q: f64) -> f64 {
    let pos = q * (xs.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    xs[lo] + (xs[hi] - xs[lo]) * (pos - lo as f64)
}

/// History-length buckets of the breakdown: (label, lower bound inclusive).
///
/// `<3` holds the cold-start users; 100+ the long histories where attention
/// was seen to collapse (T-ECD study).
pub const HISTORY_BUCKETS: [(&str, usize); 7] = [
    ("<3", 0),
    ("3-9", 3),
    ("10-19", 10),
    ("20-49", 20),
    ("50-99", 50),
    ("100-199", 100),
    (">=200", 200),
];

/// The index in [`HISTORY_BUCKETS`] of the bucket a history of `len`
/// items falls in (the breakdown's buckets; evaluate's attention entropies
/// use the same).
pub fn history_bucket(len: usize) -> usize {
    HISTORY_BUCKETS
        .iter()
        .rposition(|&(_, lo)| len >= lo)
        .unwrap_or(0)
}

/// The cut-off the breakdowns report.
pub const BREAKDOWN_K: usize = 10;

/// One per-example metric column.
type Getter<'a> = Box<dyn Fn(&Record) -> f64 + 'a>;

struct Record {
    rank: Rank,
    /// The top-1 item (0 when the list is empty).
    top1: usize,
    history_len: usize,
    target: usize,
    /// per K: mean training popularity of the top-K list
    avg_pop: Vec<f64>,
}

/// Collects per-example results as they stream from the scorer (a rank and
/// a top-K list per example: only a few numbers per example are kept, and a
/// catalogue-sized "seen" flag per K for coverage) and turns them into the
/// split's metrics.
pub struct Accumulator {
    ks: Vec<usize>,
    /// training occurrences by item index (index 0 unused)
    popularity: Vec<u64>,
    covered: Vec<Vec<bool>>,
    records: Vec<Record>,
    /// Extra breakdowns: (name, a label per example in push order).
    groups: Vec<(String, Vec<String>)>,
}

/// What [`Accumulator::finish`] computes.
#[derive(Debug, Clone)]
pub struct Options {
    /// metric families: hr, ndcg, mrr, precision, coverage, popularity
    pub metrics: Vec<String>,
    /// bootstrap resamples, 0 = no confidence intervals
    pub bootstrap: usize,
    pub seed: u64,
    /// targets with fewer training occurrences are "tail"
    pub long_tail: u64,
}

impl Accumulator {
    /// `popularity[i]`: training occurrences of item `i` (the catalogue is
    /// items `1..popularity.len()`).
    pub fn new(ks: &[usize], popularity: Vec<u64>) -> Accumulator {
        let items = popularity.len();
        Accumulator {
            ks: ks.to_vec(),
            covered: vec![vec![false; items]; ks.len()],
            popularity,
            records: vec![],
            groups: vec![],
        }
    }

    /// Adds a breakdown `name` by `labels`, one per example in the order
    /// they are (or will be) pushed: the breakdown gets a bucket per
    /// distinct label, in label order.
    pub fn group_by(&mut self, name: &str, labels: Vec<String>) {
        self.groups.push((name.to_string(), labels));
    }

    /// The largest K: how long the top lists passed to [`push`](Self::push)
    /// must be (shorter when the catalogue has fewer candidates).
    pub fn max_k(&self) -> usize {
        self.ks.iter().copied().max().unwrap_or(0)
    }

    /// Training popularity of an item (0 when out of range).
    pub fn popularity(&self, item: usize) -> u64 {
        self.popularity.get(item).copied().unwrap_or(0)
    }

    /// Adds one example: its target's rank, its top-`max_k` list (best
    /// first), its history length and its target.
    pub fn push(&mut self, rank: Rank, top: &[usize], history_len: usize, target: usize) {
        let mut avg_pop = Vec::with_capacity(self.ks.len());
        for (i, &k) in self.ks.iter().enumerate() {
            let list = &top[..k.min(top.len())];
            for &item in list {
                if let Some(c) = self.covered[i].get_mut(item) {
                    *c = true;
                }
            }
            let pop: u64 = list.iter().map(|&it| self.popularity(it)).sum();
            avg_pop.push(if list.is_empty() {
                0.0
            } else {
                pop as f64 / list.len() as f64
            });
        }
        self.records.push(Record {
            rank,
            top1: top.first().copied().unwrap_or(0),
            history_len,
            target,
            avg_pop,
        });
    }

    /// The split's metrics: `hr@K`… (as [`summarize`]), `precision@K`,
    /// `coverage@K`, `avg_pop@K` as asked, `examples`, a `<name>_ci`
    /// `[lo, hi]` per example-averaged metric when bootstrapping, and
    /// `breakdown` (by history length and by target popularity).
    pub fn finish(&self, o: &Options) -> Map<String, Value> {
        let has = |m: &str| o.metrics.iter().any(|w| w == m);
        // per-example columns: (name, value per record)
        let mut names: Vec<String> = vec![];
        let mut getters: Vec<Getter<'_>> = vec![];
        for (i, &k) in self.ks.iter().enumerate() {
            for metric in RankMetric::ALL {
                if has(metric.name()) {
                    names.push(format!("{}@{k}", metric.name()));
                    getters.push(Box::new(move |r: &Record| r.rank.metric(metric, k)));
                }
            }
            if has("popularity") {
                names.push(format!("avg_pop@{k}"));
                getters.push(Box::new(move |r: &Record| r.avg_pop[i]));
            }
        }
        if has("mrr") {
            names.push("mrr".into());
            getters.push(Box::new(|r: &Record| r.rank.reciprocal()));
        }
        if has("accuracy") {
            names.push("accuracy".into());
            getters.push(Box::new(|r: &Record| r.rank.metric(RankMetric::Hr, 1)));
        }
        let rows: Vec<Vec<f64>> = self
            .records
            .iter()
            .map(|r| getters.iter().map(|g| g(r)).collect())
            .collect();
        let n = rows.len().max(1) as f64;
        let mut out = Map::new();
        for (c, name) in names.iter().enumerate() {
            out.insert(
                name.clone(),
                json!(rows.iter().map(|r| r[c]).fold(0.0, |a, b| a + b) / n),
            );
        }
        if has("coverage") {
            let catalogue = self.popularity.len().saturating_sub(1).max(1) as f64;
            for (i, &k) in self.ks.iter().enumerate() {
                let distinct = self.covered[i].iter().skip(1).filter(|c| **c).count();
                out.insert(format!("coverage@{k}"), json!(distinct as f64 / catalogue));
            }
        }
        if has("accuracy") {
            let (precision, recall) = self.macro_precision_recall();
            out.insert("macro_precision".into(), json!(precision));
            out.insert("macro_recall".into(), json!(recall));
        }
        out.insert("examples".into(), json!(self.records.len()));
        for (name, (lo, hi)) in names.iter().zip(bootstrap_ci(&rows, o.bootstrap, o.seed)) {
            out.insert(format!("{name}_ci"), json!([lo, hi]));
        }
        out.insert("breakdown".into(), self.breakdown(o.long_tail));
        out
    }

    /// Macro-averaged precision and recall of the top-1 predictions over
    /// the items that are a target or a prediction (see the module docs).
    fn macro_precision_recall(&self) -> (f64, f64) {
        // item → (predicted, target, both)
        let mut counts: BTreeMap<usize, (u64, u64, u64)> = BTreeMap::new();
        for r in &self.records {
            if r.top1 != 0 {
                counts.entry(r.top1).or_default().0 += 1;
            }
            let c = counts.entry(r.target).or_default();
            c.1 += 1;
            c.2 += u64::from(r.top1 == r.target);
        }
        if counts.is_empty() {
            return (0.0, 0.0);
        }
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let n = counts.len() as f64;
        let precision = counts.values().map(|c| ratio(c.2, c.0)).sum::<f64>() / n;
        let recall = counts.values().map(|c| ratio(c.2, c.1)).sum::<f64>() / n;
        (precision, recall)
    }

    fn breakdown(&self, long_tail: u64) -> Value {
        let k = BREAKDOWN_K;
        let group = |label: String, keep: &dyn Fn(&Record) -> bool| {
            let ranks: Vec<Rank> = self
                .records
                .iter()
                .filter(|r| keep(r))
                .map(|r| r.rank)
                .collect();
            bucket(&label, &ranks, k)
        };
        let history: Vec<Value> = HISTORY_BUCKETS
            .iter()
            .enumerate()
            .map(|(i, &(label, _))| group(label.into(), &|r| history_bucket(r.history_len) == i))
            .collect();
        let pop = |r: &Record| self.popularity(r.target);
        let target = vec![
            group(format!("tail (<{long_tail})"), &|r| pop(r) < long_tail),
            group(format!("head (>={long_tail})"), &|r| pop(r) >= long_tail),
        ];
        let mut out = json!({
            "k": k,
            "long_tail": long_tail,
            "history_length": history,
            "target_popularity": target,
        });
        for (name, labels) in &self.groups {
            let by_label = self.grouped(labels);
            let buckets: Vec<Value> = by_label
                .iter()
                .map(|(label, ranks)| bucket(label, ranks, k))
                .collect();
            out[name.as_str()] = Value::Array(buckets);
        }
        out
    }

    /// The ranks of the examples under each distinct label.
    fn grouped<'l>(&self, labels: &'l [String]) -> BTreeMap<&'l str, Vec<Rank>> {
        let mut by_label: BTreeMap<&str, Vec<Rank>> = Default::default();
        for (r, label) in self.records.iter().zip(labels) {
            by_label.entry(label.as_str()).or_default().push(r.rank);
        }
        by_label
    }
}

/// One breakdown bucket: its examples and HR@k / NDCG@k over their ranks.
fn bucket(label: &str, ranks: &[Rank], k: usize) -> Value {
    let n = ranks.len().max(1) as f64;
    // fold from +0.0: an empty bucket reads 0, not -0
    let mean = |metric: RankMetric| {
        ranks
            .iter()
            .map(|r| r.metric(metric, k))
            .fold(0.0, |a, b| a + b)
            / n
    };
    json!({
        "bucket": label,
        "examples": ranks.len(),
        format!("hr@{k}"): mean(RankMetric::Hr),
        format!("ndcg@{k}"): mean(RankMetric::Ndcg),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<String> {
        vec!["hr".into(), "ndcg".into(), "mrr".into()]
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    /// A target at exactly rank `n`.
    fn r(n: usize) -> Rank {
        Rank::exact(n)
    }

    fn ranks(ns: &[usize]) -> Vec<Rank> {
        ns.iter().map(|&n| r(n)).collect()
    }

    #[test]
    fn tied_targets_average_over_their_positions_in_every_metric() {
        // a constant model over 20 candidates: every example tied with 19
        let mut acc = Accumulator::new(&[5, 10], vec![3; 21]);
        acc.group_by("g", vec!["a".into(); 4]);
        for i in 0..4 {
            let tied = Rank { above: 0, tied: 19 };
            acc.push(tied, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 5, 1 + i);
        }
        let o = Options {
            metrics: ["hr", "ndcg", "mrr", "precision", "accuracy"]
                .map(String::from)
                .to_vec(),
            ..opts(0)
        };
        let m = acc.finish(&o);
        let f = |k: &str| m[k].as_f64().unwrap();
        close(f("hr@5"), 5.0 / 20.0);
        close(f("hr@10"), 10.0 / 20.0);
        close(f("precision@10"), 0.5 / 10.0);
        close(f("accuracy"), 1.0 / 20.0);
        let h20: f64 = (1..=20).map(|p| 1.0 / p as f64).sum();
        close(f("mrr"), h20 / 20.0);
        let ndcg10: f64 = (1..=10).map(|p| 1.0 / ((p + 1) as f64).log2()).sum::<f64>() / 20.0;
        close(f("ndcg@10"), ndcg10);
        // breakdowns use the same rule
        let g = &m["breakdown"]["g"][0];
        close(g["hr@10"].as_f64().unwrap(), 0.5);
        close(
            m["breakdown"]["history_length"][1]["ndcg@10"]
                .as_f64()
                .unwrap(),
            ndcg10,
        );
    }

    #[test]
    fn hand_computed_metrics() {
        // ranks 1, 3, 11 with K = 1, 5, 10
        let m = summarize(&ranks(&[1, 3, 11]), &[1, 5, 10], &all());
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
    fn precision_is_hr_over_k() {
        let which = vec!["hr".into(), "precision".into()];
        let m = summarize(&ranks(&[1, 3, 11]), &[1, 5, 10], &which);
        close(m["precision@1"], 1.0 / 3.0);
        close(m["precision@5"], 2.0 / 3.0 / 5.0);
        close(m["precision@10"], 2.0 / 3.0 / 10.0);
        assert!(!m.contains_key("ndcg@5"));
    }

    #[test]
    fn k_larger_than_catalogue_and_one_item() {
        let m = summarize(&ranks(&[1]), &[100], &all());
        assert_eq!(m["hr@100"], 1.0);
        assert_eq!(m["ndcg@100"], 1.0);
        // one-item catalogue: the target is always first
        assert_eq!(rank_of(&[0.0, 3.0], 1, &[]), Rank::exact(1));
        assert_eq!(top_k(&[0.0, 3.0], 5, &[], 0), vec![1]);
        let mut acc = Accumulator::new(&[5], vec![0, 7]);
        acc.push(r(1), &[1], 0, 1);
        let m = acc.finish(&opts(0));
        assert_eq!(m["coverage@5"], 1.0);
        assert_eq!(m["precision@5"], 0.2);
        assert_eq!(m["avg_pop@5"], 7.0);
        assert_eq!(m["hr@5"], 1.0);
        assert!(!m.contains_key("hr@5_ci"));
    }

    #[test]
    fn accuracy_and_macro_precision_recall_hand_computed() {
        let mut acc = Accumulator::new(&[2], vec![0, 5, 5, 5]);
        acc.push(r(1), &[1, 2], 3, 1); // predicts 1, right
        acc.push(r(2), &[2, 1], 3, 1); // predicts 2, target 1
        acc.push(r(1), &[2, 3], 3, 2); // predicts 2, right
        acc.push(r(5), &[2, 1], 3, 3); // predicts 2, target 3 (never predicted)
        let o = Options {
            metrics: vec!["accuracy".into()],
            ..opts(0)
        };
        let m = acc.finish(&o);
        let f = |k: &str| m[k].as_f64().unwrap();
        close(f("accuracy"), 0.5);
        // item 1: P 1/1, R 1/2; item 2: P 1/3, R 1/1; item 3: P 0, R 0/1
        close(f("macro_precision"), (1.0 + 1.0 / 3.0) / 3.0);
        close(f("macro_recall"), (0.5 + 1.0) / 3.0);
        assert!(m.get("hr@2").is_none(), "only the asked family: {m:?}");
        // an empty split gives zeros, not NaN
        let empty = Accumulator::new(&[2], vec![0, 5]).finish(&o);
        assert_eq!(empty["macro_precision"], 0.0);
    }

    fn opts(bootstrap: usize) -> Options {
        Options {
            metrics: ["hr", "ndcg", "mrr", "precision", "coverage", "popularity"]
                .map(String::from)
                .to_vec(),
            bootstrap,
            seed: 7,
            long_tail: 50,
        }
    }

    #[test]
    fn coverage_popularity_and_breakdown_hand_computed() {
        // items 1..=4 with training popularity 10, 60, 0, 5
        let mut acc = Accumulator::new(&[1, 2, 10], vec![0, 10, 60, 0, 5]);
        acc.push(r(1), &[2, 1, 3, 4], 3, 2); // head target, history 3-9
        acc.push(r(3), &[1, 4, 2, 3], 12, 1); // tail, 10-19
        acc.push(r(4), &[4, 3, 1, 2], 60, 4); // tail, 50-99
        let m = acc.finish(&opts(0));
        let f = |k: &str| m[k].as_f64().unwrap();
        close(f("hr@1"), 1.0 / 3.0);
        close(f("hr@2"), 1.0 / 3.0);
        close(f("hr@10"), 1.0);
        close(f("precision@1"), 1.0 / 3.0);
        close(f("precision@2"), 1.0 / 6.0);
        close(f("precision@10"), 0.1);
        close(f("ndcg@10"), (1.0 + 0.5 + 1.0 / 5f64.log2()) / 3.0);
        close(f("coverage@1"), 0.75); // {2, 1, 4} of 4
        close(f("coverage@2"), 1.0);
        close(f("coverage@10"), 1.0);
        close(f("avg_pop@1"), (60.0 + 10.0 + 5.0) / 3.0);
        close(f("avg_pop@2"), (35.0 + 7.5 + 2.5) / 3.0);
        close(f("avg_pop@10"), 18.75);
        close(f("examples"), 3.0);
        let b = &m["breakdown"];
        let h = b["history_length"].as_array().unwrap();
        let cell = |v: &Value, k: &str| v[k].as_f64().unwrap();
        assert_eq!(h.len(), 7);
        assert_eq!(h[0]["bucket"], "<3");
        assert_eq!(h[0]["examples"], 0);
        assert_eq!(h[1]["bucket"], "3-9");
        assert_eq!(h[1]["examples"], 1);
        close(cell(&h[2], "ndcg@10"), 0.5);
        assert_eq!(h[3]["examples"], 0);
        assert!(
            cell(&h[3], "hr@10").is_sign_positive(),
            "empty bucket is +0"
        );
        close(cell(&h[4], "ndcg@10"), 1.0 / 5f64.log2());
        assert_eq!(h[6]["bucket"], ">=200");
        let t = b["target_popularity"].as_array().unwrap();
        assert_eq!(t[0]["examples"], 2);
        close(cell(&t[0], "ndcg@10"), (0.5 + 1.0 / 5f64.log2()) / 2.0);
        assert_eq!(t[1]["examples"], 1);
        close(cell(&t[1], "hr@10"), 1.0);
    }

    #[test]
    fn label_breakdowns_bucket_examples_by_label_in_label_order() {
        let mut acc = Accumulator::new(&[10], vec![0, 1, 1, 1]);
        acc.group_by(
            "target_event_type",
            vec!["view".into(), "purchase".into(), "view".into()],
        );
        acc.push(r(1), &[1], 3, 1);
        acc.push(r(3), &[2], 3, 2);
        acc.push(r(11), &[3], 3, 3);
        let m = acc.finish(&opts(0));
        let b = m["breakdown"]["target_event_type"].as_array().unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[0]["bucket"], "purchase");
        assert_eq!(b[0]["examples"], 1);
        close(b[0]["ndcg@10"].as_f64().unwrap(), 0.5); // rank 3: 1/log2(4)
        assert_eq!(b[1]["bucket"], "view");
        assert_eq!(b[1]["examples"], 2);
        close(b[1]["hr@10"].as_f64().unwrap(), 0.5); // ranks 1 and 11
        close(b[1]["ndcg@10"].as_f64().unwrap(), 0.5);
    }

    #[test]
    fn bootstrap_is_seeded_and_brackets_the_estimate() {
        let mut acc = Accumulator::new(&[5, 10], vec![1; 101]);
        for i in 0..200usize {
            let rank = 1 + (i * 37) % 23;
            acc.push(
                r(rank),
                &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
                i % 60,
                1 + i % 100,
            );
        }
        let a = acc.finish(&opts(1000));
        let b = acc.finish(&opts(1000));
        assert_eq!(a, b, "same seed, same intervals");
        let mut other = opts(1000);
        other.seed = 8;
        let c = acc.finish(&other);
        assert_ne!(a["ndcg@10_ci"], c["ndcg@10_ci"]);
        for name in [
            "hr@5",
            "ndcg@10",
            "mrr@10",
            "precision@5",
            "mrr",
            "avg_pop@10",
        ] {
            let ci = a[&format!("{name}_ci")].as_array().unwrap();
            let (lo, hi) = (ci[0].as_f64().unwrap(), ci[1].as_f64().unwrap());
            let v = a[name].as_f64().unwrap();
            assert!(lo <= v && v <= hi, "{name}: {v} not in [{lo}, {hi}]");
            if name != "avg_pop@10" {
                assert!(lo < hi, "{name}: degenerate interval");
            } else {
                assert_eq!((lo, hi), (1.0, 1.0)); // every item has popularity 1
            }
        }
        assert!(!a.contains_key("coverage@10_ci"));
    }

    #[test]
    fn quantiles_interpolate() {
        let xs: Vec<f64> = (0..=100).map(f64::from).collect();
        close(quantile(&xs, 0.025), 2.5);
        close(quantile(&xs, 0.975), 97.5);
        assert!(bootstrap_ci(&[], 100, 1).is_empty());
        assert!(bootstrap_ci(&[vec![1.0]], 0, 1).is_empty());
        assert_eq!(
            bootstrap_ci(&[vec![1.0, 2.0]], 10, 1),
            vec![(1.0, 1.0), (2.0, 2.0)]
        );
    }

    #[test]
    fn history_bucket_follows_the_bucket_bounds() {
        let cases = [
            (0, 0),
            (2, 0),
            (3, 1),
            (9, 1),
            (10, 2),
            (19, 2),
            (20, 3),
            (49, 3),
            (50, 4),
            (99, 4),
            (100, 5),
            (199, 5),
            (200, 6),
            (10_000, 6),
        ];
        for (len, want) in cases {
            assert_eq!(history_bucket(len), want, "length {len}");
        }
    }
}

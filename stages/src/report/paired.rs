//! The report's paired comparisons: each model against the baseline on the
//! same held-out examples (a sign-flip test on per-example values, see
//! [`crate::significance`]), read from evaluate's `ranks.parquet`.

use std::collections::BTreeMap;
use std::path::Path;

use arrow::array::{Array, Int64Array, StringArray};

use crate::metrics::{Rank, RankMetric};
use crate::significance::{paired_test, PairedTest};
use crate::table;

/// (user, target) → the target's standing in one split.
pub type SplitRanks = BTreeMap<(i64, i64), Rank>;

/// The ranks of `split` in `dir/ranks.parquet`: the `rank` and `tied`
/// columns, or `sampled_rank` and `sampled_tied` for a `<split>_sampled`
/// split (a file without the tie column, from before evaluate version 5,
/// reads as untied). `None` when the file is absent (metrics from before
/// evaluate version 3) or holds no such ranks.
pub fn read_ranks(dir: &Path, split: &str) -> anyhow::Result<Option<SplitRanks>> {
    let path = dir.join("ranks.parquet");
    if !path.exists() {
        return Ok(None);
    }
    let (base, column, tied_column) = match split.strip_suffix("_sampled") {
        Some(base) => (base, "sampled_rank", "sampled_tied"),
        None => (split, "rank", "tied"),
    };
    let batch = table::read(&path)?;
    let col = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| anyhow::anyhow!("{}: no column `{name}`", path.display()))
    };
    let splits = col("split")?
        .as_any()
        .downcast_ref::<StringArray>()
        .cloned();
    let int = |name: &str| -> anyhow::Result<Int64Array> {
        col(name)?
            .as_any()
            .downcast_ref::<Int64Array>()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("{}: `{name}` is not int64", path.display()))
    };
    let (users, targets, ranks) = (int("user")?, int("target")?, int(column)?);
    let tied = match batch.column_by_name(tied_column) {
        Some(_) => Some(int(tied_column)?),
        None => None,
    };
    let Some(splits) = splits else {
        anyhow::bail!("{}: `split` is not a string column", path.display());
    };
    let mut out = SplitRanks::new();
    for i in 0..batch.num_rows() {
        if splits.value(i) == base && ranks.is_valid(i) {
            let rank = Rank {
                above: (ranks.value(i) as usize).saturating_sub(1),
                tied: tied
                    .as_ref()
                    .filter(|t| t.is_valid(i))
                    .map_or(0, |t| t.value(i) as usize),
            };
            out.insert((users.value(i), targets.value(i)), rank);
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

/// `metric` (`ndcg@10`, `hr@5`, `mrr@20`, `precision@10`) as (metric, K).
pub fn parse_metric(metric: &str) -> Option<(RankMetric, usize)> {
    let (name, k) = metric.split_once('@')?;
    let k: usize = k.parse().ok().filter(|k| *k > 0)?;
    Some((RankMetric::parse(name)?, k))
}

/// `metric` of `model` against `baseline` on the examples both ranked.
pub fn compare(
    model: &SplitRanks,
    baseline: &SplitRanks,
    metric: &str,
    permutations: usize,
    seed: u64,
) -> Option<PairedTest> {
    let (metric, k) = parse_metric(metric)?;
    let (a, b): (Vec<f64>, Vec<f64>) = model
        .iter()
        .filter_map(|(key, &r)| {
            let rb = *baseline.get(key)?;
            Some((r.metric(metric, k), rb.metric(metric, k)))
        })
        .unzip();
    paired_test(&a, &b, permutations, seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_on_shared_examples_only() {
        // model: ranks 1, 1, 20 on users 1..=3; baseline: 5, 1, 20 and a
        // fourth user the model lacks. NDCG@10 differences: 1 - 1/log2(6),
        // 0, 0.
        let r = Rank::exact;
        let model = SplitRanks::from([((1, 7), r(1)), ((2, 8), r(1)), ((3, 9), r(20))]);
        let base = SplitRanks::from([
            ((1, 7), r(5)),
            ((2, 8), r(1)),
            ((3, 9), r(20)),
            ((4, 1), r(1)),
        ]);
        let t = compare(&model, &base, "ndcg@10", 999, 1).unwrap();
        assert_eq!(t.n, 3);
        let want = (1.0 - 1.0 / 6f64.log2()) / 3.0;
        assert!((t.mean_diff - want).abs() < 1e-12, "{t:?}");
        // one non-zero difference: every sign assignment has the same
        // |mean|, so nothing tells the models apart (two-sided p = 1)
        assert_eq!(t.p_value, 1.0, "{t:?}");
        assert!(compare(&model, &base, "coverage@10", 9, 1).is_none());
    }

    #[test]
    fn tied_ranks_compare_by_their_expected_values() {
        // the model ties its target with 9 others at the top (HR@5 = 5/10),
        // the baseline ranks it 1st: the difference is -0.5 on that example
        let model = SplitRanks::from([
            ((1, 7), Rank { above: 0, tied: 9 }),
            ((2, 8), Rank::exact(1)),
        ]);
        let base = SplitRanks::from([((1, 7), Rank::exact(1)), ((2, 8), Rank::exact(1))]);
        let t = compare(&model, &base, "hr@5", 99, 1).unwrap();
        assert!((t.mean_diff + 0.25).abs() < 1e-12, "{t:?}");
    }

    #[test]
    fn metric_names_parse() {
        assert_eq!(parse_metric("ndcg@10"), Some((RankMetric::Ndcg, 10)));
        assert_eq!(parse_metric("hr@0"), None);
        assert_eq!(parse_metric("avg_pop@10"), None);
        assert_eq!(parse_metric("mrr"), None);
    }
}

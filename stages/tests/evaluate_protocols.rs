//! `evaluate`'s ranking protocols through the real binary: full and sampled
//! ranking side by side, `ranks.parquet` consistent with `metrics.json`,
//! sampled ranks never worse than full ones, and sampling every other item
//! giving back the full ranking exactly.

mod common;

use std::path::Path;

use arrow::array::{Array, Int64Array, StringArray};
use common::{artifact_dir, run_ok, setup};
use seqpipe_stages::table;

const SPEC: &str = r#"
[pipeline]
name = "protocols"
seed = 5
device = "cpu"

[stages.synth]
kind = "synth"
params = { users = 80, items = 40, min_len = 5, max_len = 12 }

[stages.sequences]
kind = "sequences"
inputs = { events = "synth.events" }

[stages.train]
kind = "train"
inputs = { data = "sequences.data" }
params = { model = "markov" }

[stages.eval_both]
kind = "evaluate"
inputs = { model = "train.model", data = "sequences.data" }
params = { ranking = "both", negatives = 10, k = [1, 5, 10], bootstrap = 0 }

[stages.eval_all_negatives]
kind = "evaluate"
inputs = { model = "train.model", data = "sequences.data" }
params = { ranking = "both", negatives = 1000, sampler = "uniform", k = [10], bootstrap = 0 }

[stages.eval_popular_negatives]
kind = "evaluate"
inputs = { model = "train.model", data = "sequences.data" }
params = { ranking = "sampled", negatives = 10, sampler = "popularity", splits = ["test"], k = [10], bootstrap = 0 }
"#;

/// (split, full rank, sampled rank) per row of ranks.parquet.
fn ranks(dir: &Path) -> Vec<(String, Option<i64>, Option<i64>)> {
    let batch = table::read(&dir.join("ranks.parquet")).unwrap();
    let col = |n: &str| batch.column_by_name(n).unwrap().clone();
    let split = col("split");
    let split = split.as_any().downcast_ref::<StringArray>().unwrap();
    let full = col("rank");
    let full = full.as_any().downcast_ref::<Int64Array>().unwrap();
    let sampled = col("sampled_rank");
    let sampled = sampled.as_any().downcast_ref::<Int64Array>().unwrap();
    let opt = |a: &Int64Array, i: usize| a.is_valid(i).then(|| a.value(i));
    (0..batch.num_rows())
        .map(|i| (split.value(i).to_string(), opt(full, i), opt(sampled, i)))
        .collect()
}

fn metrics(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("metrics.json")).unwrap()).unwrap()
}

#[test]
fn sampled_ranking_sits_beside_full_ranking_and_agrees_with_the_ranks() {
    let (dir, _) = setup(SPEC);
    let d = dir.path();
    run_ok(d, &[]);

    let both = artifact_dir(d, "eval_both", "metrics");
    let m = metrics(&both);
    for split in ["valid", "test", "valid_sampled", "test_sampled"] {
        assert!(m[split].is_object(), "{split} missing: {m}");
    }
    assert!(
        m["test_sampled"].get("coverage@10").is_none(),
        "no list metrics when sampled"
    );
    let rows = ranks(&both);
    let test: Vec<_> = rows.iter().filter(|r| r.0 == "test").collect();
    assert_eq!(test.len() as f64, m["test"]["examples"].as_f64().unwrap());
    // metrics.json is the mean over ranks.parquet's rows
    for (name, column) in [("test", 1), ("test_sampled", 2)] {
        for k in [1i64, 5, 10] {
            let hits = test
                .iter()
                .filter(|r| if column == 1 { r.1 } else { r.2 }.unwrap() <= k)
                .count();
            let want = hits as f64 / test.len() as f64;
            let got = m[name][format!("hr@{k}")].as_f64().unwrap();
            assert!((got - want).abs() < 1e-12, "{name} hr@{k}: {got} vs {want}");
        }
    }
    // 10 negatives out of ~40 items: a sampled rank is never worse than
    // the full one, and here it is better somewhere (the inflation)
    assert!(test.iter().all(|r| r.2.unwrap() <= r.1.unwrap()));
    assert!(test.iter().any(|r| r.2.unwrap() < r.1.unwrap()));
    assert!(test.iter().all(|r| r.2.unwrap() <= 11));
    let (full, sampled) = (
        m["test"]["ndcg@10"].as_f64().unwrap(),
        m["test_sampled"]["ndcg@10"].as_f64().unwrap(),
    );
    assert!(sampled > full, "sampled NDCG@10 {sampled} vs full {full}");

    // the run manifest states the scoring work: valid + test examples,
    // each against the whole catalogue
    let notes = &common::stage_record(d, "eval_both")["notes"];
    let examples =
        m["valid"]["examples"].as_u64().unwrap() + m["test"]["examples"].as_u64().unwrap();
    let items = m["num_items"].as_u64().unwrap();
    assert_eq!(
        notes["rows_scored"],
        (examples * items).to_string(),
        "{notes}"
    );
    assert!(notes["rows_per_second"].as_str().is_some(), "{notes}");

    // more negatives than items: every other item is a negative, so the
    // sampled ranking is the full ranking
    let all = ranks(&artifact_dir(d, "eval_all_negatives", "metrics"));
    assert!(all.iter().all(|r| r.1 == r.2), "{all:?}");

    // sampled only: no full-ranking split, no full ranks
    let popular = artifact_dir(d, "eval_popular_negatives", "metrics");
    let m = metrics(&popular);
    assert!(m.get("test").is_none() && m["test_sampled"].is_object());
    assert!(ranks(&popular)
        .iter()
        .all(|r| r.1.is_none() && r.2.is_some()));
}

const EXCLUDE_SPEC: &str = r#"
[pipeline]
name = "exclude-seen"
seed = 5
device = "cpu"

[stages.synth]
kind = "synth"
params = { users = 80, items = 40, min_len = 8, max_len = 16 }

[stages.whole]
kind = "sequences"
inputs = { events = "synth.events" }
params = { max_len = 0 }

[stages.cut]
kind = "sequences"
inputs = { events = "synth.events" }
params = { max_len = 2 }

[stages.pop]
kind = "train"
inputs = { data = "whole.data" }
params = { model = "pop" }

[stages.eval_whole]
kind = "evaluate"
inputs = { model = "pop.model", data = "whole.data" }
params = { exclude_seen = true, bootstrap = 0 }

[stages.eval_cut]
kind = "evaluate"
inputs = { model = "pop.model", data = "cut.data" }
params = { exclude_seen = true, bootstrap = 0 }

[stages.eval_kept]
kind = "evaluate"
inputs = { model = "pop.model", data = "cut.data" }
params = { bootstrap = 0 }
"#;

/// `exclude_seen` removes every item of the user's training sequence, not
/// only the items of the (cut) history the example keeps: popularity
/// ignores the history, so ranks with histories cut to 2 items must equal
/// ranks with whole histories — and be no worse than without exclusion.
#[test]
fn exclude_seen_removes_the_whole_training_sequence_not_only_the_kept_history() {
    let (dir, _) = setup(EXCLUDE_SPEC);
    let d = dir.path();
    run_ok(d, &[]);
    let whole = ranks(&artifact_dir(d, "eval_whole", "metrics"));
    let cut = ranks(&artifact_dir(d, "eval_cut", "metrics"));
    let kept = ranks(&artifact_dir(d, "eval_kept", "metrics"));
    assert_eq!(whole.len(), 160);
    assert_eq!(cut, whole, "cutting the history changed what was excluded");
    let mut improved = 0;
    for (c, k) in cut.iter().zip(&kept) {
        let (c, k) = (c.1.unwrap(), k.1.unwrap());
        assert!(c <= k, "excluding items made a rank worse: {c} > {k}");
        improved += usize::from(c < k);
    }
    assert!(
        improved > 80,
        "exclusion changed only {improved} of 160 ranks"
    );
}

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

/// (full, sampled) `tied` counts per row of ranks.parquet.
fn tie_counts(dir: &Path) -> Vec<(Option<i64>, Option<i64>)> {
    let batch = table::read(&dir.join("ranks.parquet")).unwrap();
    let col = |n: &str| batch.column_by_name(n).unwrap().clone();
    let (full, sampled) = (col("tied"), col("sampled_tied"));
    let full = full.as_any().downcast_ref::<Int64Array>().unwrap();
    let sampled = sampled.as_any().downcast_ref::<Int64Array>().unwrap();
    let opt = |a: &Int64Array, i: usize| a.is_valid(i).then(|| a.value(i));
    (0..batch.num_rows())
        .map(|i| (opt(full, i), opt(sampled, i)))
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
    // metrics.json is the mean over ranks.parquet's rows: a target tied
    // with `t` others at best position `r` is a hit at K with chance
    // (min(K, r + t) - r + 1) / (t + 1)
    let tied = tie_counts(&both);
    for (name, column) in [("test", 1), ("test_sampled", 2)] {
        for k in [1i64, 5, 10] {
            let hits: f64 = rows
                .iter()
                .zip(&tied)
                .filter(|(r, _)| r.0 == "test")
                .map(|(r, t)| {
                    let (first, t) = if column == 1 {
                        (r.1.unwrap(), t.0.unwrap())
                    } else {
                        (r.2.unwrap(), t.1.unwrap())
                    };
                    ((k.min(first + t) - first + 1).max(0)) as f64 / (t + 1) as f64
                })
                .sum();
            let want = hits / test.len() as f64;
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

/// Events as `user,timestamp,item` lines for `load.csv`: 100 users, 50
/// items; user `u` meets items `(5u + j) % 50 + 1` at times `j` = 0..12, so
/// after leave-one-out every item has exactly 20 training occurrences and
/// popularity ties the whole catalogue. `relabel` maps each item id.
fn uniform_events(relabel: &dyn Fn(i64) -> i64) -> String {
    let mut out = String::new();
    for u in 0..100i64 {
        for j in 0..12i64 {
            let item = (5 * u + j) % 50 + 1;
            out.push_str(&format!("{},{},{}\n", u + 1, j, relabel(item)));
        }
    }
    out
}

const CSV_SPEC: &str = r#"
[pipeline]
name = "ties"
seed = 3
device = "cpu"

[stages.load]
kind = "load.csv"
inputs = { source = "./events.csv" }
params = { columns = ["session", "timestamp", "item"], timestamp_format = "unix_s" }

[stages.sequences]
kind = "sequences"
inputs = { events = "load.events" }

[stages.pop]
kind = "train"
inputs = { data = "sequences.data" }
params = { model = "pop" }

[stages.markov]
kind = "train"
inputs = { data = "sequences.data" }
params = { model = "markov" }

[stages.itemknn]
kind = "train"
inputs = { data = "sequences.data" }
params = { model = "itemknn" }
"#;

fn eval_stage(name: &str, model: &str, params: &str) -> String {
    format!(
        "\n[stages.{name}]\nkind = \"evaluate\"\ninputs = {{ model = \"{model}.model\", data = \"sequences.data\" }}\nparams = {{ bootstrap = 0, k = [1, 5, 10], {params} }}\n"
    )
}

/// A constant-score model — popularity on a catalogue where every item has
/// the same training count — gets exactly K / candidates for HR@K with
/// ties expected, 0 pessimistic and 1 optimistic, whatever the targets' ids.
#[test]
fn a_constant_model_scores_k_over_candidates_whatever_the_ids() {
    let mut spec = CSV_SPEC.to_string();
    for ties in ["expected", "pessimistic", "optimistic"] {
        spec += &eval_stage(
            &format!("eval_{ties}"),
            "pop",
            &format!("ties = \"{ties}\""),
        );
    }
    spec += &eval_stage("eval_unseen", "pop", "exclude_seen = true");
    let (dir, _) = setup(&spec);
    let d = dir.path();
    std::fs::write(d.join("events.csv"), uniform_events(&|i| i)).unwrap();
    run_ok(d, &[]);
    let hr = |stage: &str, k: usize| {
        metrics(&artifact_dir(d, stage, "metrics"))["test"][format!("hr@{k}")]
            .as_f64()
            .unwrap()
    };
    for k in [1usize, 5, 10] {
        let want = k as f64 / 50.0;
        assert!((hr("eval_expected", k) - want).abs() < 1e-12, "hr@{k}");
        assert_eq!(hr("eval_pessimistic", k), 0.0, "hr@{k}");
        assert_eq!(hr("eval_optimistic", k), 1.0, "hr@{k}");
    }
    // with the 11 seen items excluded, 39 candidates remain
    assert!((hr("eval_unseen", 10) - 10.0 / 39.0).abs() < 1e-12);
    let m = metrics(&artifact_dir(d, "eval_expected", "metrics"));
    let mrr: f64 = (1..=50).map(|p| 1.0 / p as f64).sum::<f64>() / 50.0;
    assert!((m["test"]["mrr"].as_f64().unwrap() - mrr).abs() < 1e-12);
}

/// Relabelling the item ids by a permutation changes nothing a rank metric
/// says, for every model that does not learn an embedding per index: the
/// metrics of both runs agree to 1e-12 (coverage and popularity describe
/// top-K lists, whose tie order is a hash of the item index, so they are
/// left out).
#[test]
fn relabelling_item_ids_leaves_every_rank_metric_unchanged() {
    let models = ["pop", "markov", "itemknn"];
    let mut spec = CSV_SPEC.to_string();
    for model in models {
        spec += &eval_stage(&format!("eval_{model}"), model, "");
        spec += &eval_stage(
            &format!("eval_{model}_unseen"),
            model,
            "exclude_seen = true",
        );
    }
    // skewed data where popularity ties are common and id order follows
    // popularity: user u meets item (u * j * 7) % 30 + 1, small ids often
    let events = |relabel: &dyn Fn(i64) -> i64| {
        let mut out = String::new();
        for u in 0..90i64 {
            for j in 0..10i64 {
                let item = ((u * 7 + j * j * 3 + u * j) % 31).min(29 - (u + j) % 5) + 1;
                out.push_str(&format!("{},{},{}\n", u + 1, j, relabel(item)));
            }
        }
        out
    };
    let mut runs = vec![];
    for relabel in [&(|i: i64| i) as &dyn Fn(i64) -> i64, &|i: i64| {
        (i * 17) % 31 + 100
    }] {
        let (dir, _) = setup(&spec);
        std::fs::write(dir.path().join("events.csv"), events(relabel)).unwrap();
        run_ok(dir.path(), &[]);
        runs.push(dir);
    }
    let mut compared = 0;
    for model in models {
        for stage in [format!("eval_{model}"), format!("eval_{model}_unseen")] {
            let a = metrics(&artifact_dir(runs[0].path(), &stage, "metrics"));
            let b = metrics(&artifact_dir(runs[1].path(), &stage, "metrics"));
            for split in ["valid", "test"] {
                for (name, va) in a[split].as_object().unwrap() {
                    if name.starts_with("coverage")
                        || name.starts_with("avg_pop")
                        || name.starts_with("macro")
                    {
                        continue;
                    }
                    let Some(va) = va.as_f64() else { continue };
                    let vb = b[split][name].as_f64().unwrap();
                    assert!(
                        (va - vb).abs() < 1e-12,
                        "{stage} {split} {name}: {va} vs {vb}"
                    );
                    compared += 1;
                }
                let (ba, bb) = (&a[split]["breakdown"], &b[split]["breakdown"]);
                assert_eq!(ba["history_length"], bb["history_length"], "{stage}");
                assert_eq!(ba["target_popularity"], bb["target_popularity"], "{stage}");
            }
        }
    }
    assert!(compared >= 6 * 2 * 12, "compared only {compared} values");
}

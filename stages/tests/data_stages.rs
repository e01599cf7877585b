//! The data stages without the engine: `load.atomic` on small hand-written
//! RecBole atomic files, and `sequences`' interaction-count filters (k-core)
//! on hand-made logs with hand-computed results. Stages run through the
//! registry with a hand-built `StageContext`, as the engine would run them.

mod common;

use std::collections::BTreeMap;

use arrow::array::{Array, Float64Array, Int64Array, ListArray, StringArray};
use arrow::datatypes::DataType;
use common::in_process::{run_stage, write};
use seqpipe_stages::load_atomic::{self, AtomicError, ReadOptions};
use seqpipe_stages::seqdata::{Counts, SequenceData};
use seqpipe_stages::sequences::{self, Params};
use seqpipe_stages::table;

const INTER: &str = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n\
                     1\t10\t5\t100\n\
                     1\t20\t3\t101\n\
                     1\t30\t4\t102\n\
                     2\t10\t4\t200\n\
                     2\t30\t2\t201.5\n\
                     2\t20\t5\t201.25\n\
                     2\t40\t4.5\t202\n";

#[test]
fn parses_every_atomic_type_into_the_documented_column_types() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "t.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\ttags:token_seq\temb:float_seq\tzip:token\r\n\
         1\t10\t5\t881250949\tan old film\t0.5 1\t85711\r\n\
         -2\tB00X\t\t881250950\t\t\t01002\r\n\
         \r\n\
         3\t7\t2.5\t881250951\tx\t-1e3\t\r\n",
    );
    let (batch, total) = load_atomic::read_atomic(&file, &ReadOptions::default()).unwrap();
    assert_eq!((batch.num_rows(), total), (3, 3));
    let types: Vec<(String, DataType)> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    assert_eq!(types[0], ("user_id".into(), DataType::Int64));
    // One non-integer id turns the whole column into text, spelled as written.
    assert_eq!(types[1], ("item_id".into(), DataType::Utf8));
    assert_eq!(types[2].1, DataType::Float64);
    assert_eq!(types[3].1, DataType::Float64);
    assert!(matches!(&types[4].1, DataType::List(f) if f.data_type() == &DataType::Utf8));
    assert!(matches!(&types[5].1, DataType::List(f) if f.data_type() == &DataType::Float64));
    // `01002` is not a canonical integer, so zip codes stay text.
    assert_eq!(types[6].1, DataType::Utf8);

    let col = |i: usize| batch.column(i).clone();
    let users = col(0);
    let users = users.as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(users.values().to_vec(), [1, -2, 3]);
    let items = col(1);
    let items = items.as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(
        items.iter().collect::<Vec<_>>(),
        [Some("10"), Some("B00X"), Some("7")]
    );
    let ratings = col(2);
    let ratings = ratings.as_any().downcast_ref::<Float64Array>().unwrap();
    assert_eq!(
        ratings.iter().collect::<Vec<_>>(),
        [Some(5.0), None, Some(2.5)]
    );
    let tags = col(4);
    let tags = tags.as_any().downcast_ref::<ListArray>().unwrap();
    assert_eq!(tags.value_length(0), 3);
    assert_eq!(tags.value_length(1), 0);
    let emb = col(5);
    let emb = emb.as_any().downcast_ref::<ListArray>().unwrap();
    let last = emb.value(2);
    let last = last.as_any().downcast_ref::<Float64Array>().unwrap();
    assert_eq!(last.values().to_vec(), [-1000.0]);
    let zips = col(6);
    let zips = zips.as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(
        zips.iter().collect::<Vec<_>>(),
        [Some("85711"), Some("01002"), None]
    );
}

#[test]
fn min_rating_and_columns_select_rows_and_columns() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "d.inter", INTER);
    let opts = ReadOptions {
        required: vec!["user_id".into(), "item_id".into()],
        keep: Some(vec!["timestamp".into()]),
        at_least: Some(("rating".into(), 4.0)),
    };
    let (batch, total) = load_atomic::read_atomic(&file, &opts).unwrap();
    assert_eq!(total, 7);
    // Kept: ratings 5, 4, 4, 5, 4.5 → five rows, in file order.
    assert_eq!(batch.num_rows(), 5);
    let names: Vec<String> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["user_id", "item_id", "timestamp"]);
    let items = table::int64(&batch, "item_id", &file).unwrap();
    assert_eq!(items.values().to_vec(), [10, 30, 10, 20, 40]);
}

#[test]
fn the_stage_reads_a_folder_and_sequences_consumes_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("mini");
    std::fs::create_dir(&source).unwrap();
    write(&source, "mini.inter", INTER);
    write(
        &source,
        "mini.item",
        "item_id:token\ttitle:token_seq\n10\tA\n20\tB b\n30\tC\n40\tD\n",
    );
    let out = run_stage(
        dir.path(),
        "load.atomic",
        "load.atomic",
        "",
        &[("source", &source)],
    )
    .unwrap();
    let events = table::read(&out["events"].join("events.parquet")).unwrap();
    assert_eq!(events.num_rows(), 7);
    assert_eq!(events.num_columns(), 4);
    let summary = std::fs::read_to_string(out["events"].join("summary.txt")).unwrap();
    assert_eq!(
        summary.trim(),
        "mini.inter: 7 of 7 rows kept, 2 users, 4 items"
    );
    let items = table::read(&out["items"].join("items.parquet")).unwrap();
    assert_eq!(items.num_rows(), 4);
    // No mini.user: the users artifact is an empty folder.
    assert_eq!(std::fs::read_dir(&out["users"]).unwrap().count(), 0);

    // float timestamps order events: user 2 is 10 (200), 20 (201.25), 30
    // (201.5), 40 (202), not the file order.
    let seq = run_stage(
        dir.path(),
        "sequences",
        "sequences",
        "",
        &[("events", &out["events"])],
    )
    .unwrap();
    let data = SequenceData::read(&seq["data"]).unwrap();
    assert_eq!(data.meta.num_users, 2);
    assert_eq!(data.meta.num_items, 4);
    assert!(data.meta.filtering.is_none());
    let u2 = data.test.iter().find(|e| e.user == 2).unwrap();
    assert_eq!((u2.history.clone(), u2.target), (vec![1, 2, 3], 4));
    let meta = std::fs::read_to_string(seq["data"].join("meta.json")).unwrap();
    assert!(!meta.contains("filtering"), "{meta}");

    // Pointing at the .inter file itself works too, and min_rating filters.
    let file = source.join("mini.inter");
    let out = run_stage(
        &dir.path().join("again"),
        "load.atomic",
        "load.atomic",
        "min_rating = 4",
        &[("source", &file)],
    )
    .unwrap();
    let events = table::read(&out["events"].join("events.parquet")).unwrap();
    assert_eq!(events.num_rows(), 5);
}

fn error_of(result: anyhow::Result<impl std::fmt::Debug>) -> String {
    let err = result.expect_err("should fail");
    assert!(
        err.downcast_ref::<AtomicError>().is_some(),
        "not an AtomicError: {err:#}"
    );
    format!("{err:#}")
}

#[test]
fn malformed_files_give_errors_that_name_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let read = |name: &str, text: &str| {
        let file = write(dir.path(), name, text);
        let opts = ReadOptions {
            required: vec!["user_id".into(), "item_id".into(), "timestamp".into()],
            ..ReadOptions::default()
        };
        load_atomic::read_atomic(&file, &opts).map_err(anyhow::Error::from)
    };

    let e = error_of(read("a.inter", "1\t10\t881250949\n"));
    assert!(
        e.contains("a.inter:1: column 1:") && e.contains("`1` is not `name:type`"),
        "{e}"
    );

    let e = error_of(read(
        "b.inter",
        "user_id:token\titem_id:token\ttimestamp:flaot\n",
    ));
    assert!(e.contains("b.inter:1: column 3:"), "{e}");
    assert!(
        e.contains("unknown type `flaot` (did you mean `float`?)"),
        "{e}"
    );

    let e = error_of(read(
        "c.inter",
        "userid:token\titem_id:token\ttimestamp:float\n1\t2\t3\n",
    ));
    assert!(
        e.contains("c.inter:1: no column `user_id` (did you mean `userid`?)"),
        "{e}"
    );

    let e = error_of(read(
        "d.inter",
        "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n1\t3\t4,5\n",
    ));
    assert!(
        e.contains("d.inter:3: column 3 `timestamp`: cannot parse `4,5` as float"),
        "{e}"
    );

    let e = error_of(read(
        "e.inter",
        "user_id:token\titem_id:token\ttimestamp:float\n1\t2\n",
    ));
    assert!(
        e.contains("e.inter:2: 2 tab-separated fields, the header has 3"),
        "{e}"
    );

    let e = error_of(read("f.inter", ""));
    assert!(e.contains("f.inter:1:") && e.contains("empty"), "{e}");

    let e = error_of(read(
        "g.inter",
        "user_id:token\titem_id:token\ttimestamp:float\temb:float_seq\n1\t2\t3\t0.1 x\n",
    ));
    assert!(
        e.contains("g.inter:2: column 4 `emb`: cannot parse `0.1 x` as float_seq"),
        "{e}"
    );
}

#[test]
fn missing_or_ambiguous_datasets_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("data");
    std::fs::create_dir(&source).unwrap();

    let e = error_of(run_stage(
        dir.path(),
        "load.atomic",
        "load.atomic",
        "",
        &[("source", &source)],
    ));
    assert!(e.contains("the folder holds no .inter file"), "{e}");

    write(&source, "ml-100k.inter", INTER);
    write(&source, "ml-1m.inter", INTER);
    let e = error_of(run_stage(
        dir.path(),
        "load.atomic",
        "load.atomic",
        "",
        &[("source", &source)],
    ));
    assert!(e.contains("2 .inter files (ml-100k, ml-1m)"), "{e}");

    let e = error_of(run_stage(
        dir.path(),
        "load.atomic",
        "load.atomic",
        "dataset = \"ml-100\"",
        &[("source", &source)],
    ));
    assert!(
        e.contains("no `ml-100.inter` file (did you mean `ml-100k`?)"),
        "{e}"
    );

    let e = error_of(run_stage(
        dir.path(),
        "load.atomic",
        "load.atomic",
        "",
        &[("source", &dir.path().join("nowhere"))],
    ));
    assert!(e.contains("nowhere: no such file or folder"), "{e}");

    let e = error_of(run_stage(
        dir.path(),
        "load.atomic",
        "load.atomic",
        "dataset = \"ml-1m\"\nuser_column = \"uid\"",
        &[("source", &source)],
    ));
    assert!(e.contains("ml-1m.inter:1: no column `uid`"), "{e}");

    let e = error_of(run_stage(
        dir.path(),
        "load.atomic",
        "load.atomic",
        "dataset = \"ml-1m\"\nmin_rating = 9",
        &[("source", &source)],
    ));
    assert!(e.contains("ml-1m.inter: no row has `rating` ≥ 9"), "{e}");
}

// --- sequences: interaction-count filters -------------------------------

const A: i64 = 10;
const B: i64 = 20;
const C: i64 = 30;
const D: i64 = 40;
const E: i64 = 50;
const G: i64 = 70;

/// Hand-made log (user, item, time). With users ≥ 3 and items ≥ 2:
/// round 1 drops user 4 (two rows) and the once-seen items d, e;
/// round 2 drops user 3 (one row left) and item g (its other user, 4, is
/// gone); round 3 drops user 6 (two rows left); round 4 changes nothing.
fn kcore_log() -> Vec<(i64, i64, i64)> {
    let mut log = Vec::new();
    let mut t = 0;
    for (user, items) in [
        (1, vec![A, B, C]),
        (2, vec![A, B, C]),
        (3, vec![A, D, E]),
        (4, vec![B, G]),
        (6, vec![G, A, B]),
    ] {
        for item in items {
            t += 1;
            log.push((user, item, t));
        }
    }
    log
}

fn users_items(data: &SequenceData, vocab: &[i64]) -> (Vec<i64>, Vec<i64>) {
    (data.train.iter().map(|(u, _)| *u).collect(), vocab.to_vec())
}

#[test]
fn k_core_iterates_until_every_user_and_item_meets_its_threshold() {
    let p = Params {
        min_user_interactions: 3,
        min_item_interactions: 2,
        k_core: true,
        ..Params::default()
    };
    let (rows, rounds) = sequences::filter_interactions(&kcore_log(), &p);
    assert_eq!(rounds, 3);
    assert_eq!(
        rows,
        [
            (1, A, 1),
            (1, B, 2),
            (1, C, 3),
            (2, A, 4),
            (2, B, 5),
            (2, C, 6)
        ]
    );
    let (data, vocab) = sequences::build(&kcore_log(), &p).unwrap();
    assert_eq!(users_items(&data, &vocab), (vec![1, 2], vec![A, B, C]));
    let f = data.meta.filtering.as_ref().expect("filtering recorded");
    assert_eq!(f.rounds, 3);
    assert_eq!(
        f.before,
        Counts {
            rows: 14,
            users: 5,
            items: 6
        }
    );
    assert_eq!(
        f.after,
        Counts {
            rows: 6,
            users: 2,
            items: 3
        }
    );
}

#[test]
fn one_pass_without_k_core_leaves_what_later_falls_under() {
    // The same thresholds in one pass: d, e and user 4 go; user 3 (one row
    // left) then fails min_len, but user 6 keeps g, a, b, so g (now seen
    // once) stays.
    let p = Params {
        min_user_interactions: 3,
        min_item_interactions: 2,
        ..Params::default()
    };
    let (data, vocab) = sequences::build(&kcore_log(), &p).unwrap();
    assert_eq!(
        users_items(&data, &vocab),
        (vec![1, 2, 6], vec![A, B, C, G])
    );
    let f = data.meta.filtering.unwrap();
    assert_eq!((f.rounds, f.after.rows), (1, 9));
}

#[test]
fn item_filter_alone_with_min_len_in_the_core() {
    // Items ≥ 2 only, k-core: min_len (3) becomes the user threshold.
    // Round 1: user 4 (2 rows), d, e go; round 2: user 3 (a only) and g
    // (left with user 6 only) go; round 3: user 6 (a, b) goes.
    let p = Params {
        min_item_interactions: 2,
        k_core: true,
        ..Params::default()
    };
    let (data, vocab) = sequences::build(&kcore_log(), &p).unwrap();
    assert_eq!(users_items(&data, &vocab), (vec![1, 2], vec![A, B, C]));
}

#[test]
fn filters_that_remove_everything_say_so() {
    let p = Params {
        min_user_interactions: 10,
        ..Params::default()
    };
    let err = sequences::build(&kcore_log(), &p).unwrap_err().to_string();
    assert!(
        err.contains("no interactions are left after filtering"),
        "{err}"
    );
}

#[test]
fn default_filter_params_keep_the_old_key_and_bad_combinations_are_rejected() {
    let registry = seqpipe_stages::registry();
    let stage = registry.get("sequences").unwrap();
    let canonical = stage.canonical_params(&BTreeMap::new()).unwrap();
    let keys: Vec<&String> = canonical.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "item_column",
            "max_len",
            "min_len",
            "time_column",
            "user_column"
        ]
    );
    let set: BTreeMap<String, toml::Value> =
        BTreeMap::from([("min_item_interactions".into(), toml::Value::Integer(5))]);
    let canonical = stage.canonical_params(&set).unwrap();
    assert_eq!(canonical["min_item_interactions"], 5);
    let bad: BTreeMap<String, toml::Value> =
        BTreeMap::from([("k_core".into(), toml::Value::Boolean(true))]);
    let err = stage.canonical_params(&bad).unwrap_err();
    assert!(err.starts_with("k_core:"), "{err}");
}

//! The `sql` stage (Apache DataFusion) on hand-made tables: a join and a
//! group-by over tables split across files with hand-computed results,
//! plain `Utf8` strings out, the same bytes on every single-threaded run,
//! a sort that spills under a small memory pool and still gives the
//! unbounded result, errors that list the input tables, and — through the
//! engine — a cached rerun and a stage that reads the query's output.
#![cfg(feature = "sql")]

mod common;

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, StringArray};
use common::in_process::run_stage;
use seqpipe_stages::table;

fn i64s(v: &[i64]) -> ArrayRef {
    Arc::new(Int64Array::from(v.to_vec()))
}

fn put(dir: &Path, name: &str, columns: Vec<(&str, ArrayRef)>) {
    std::fs::create_dir_all(dir).unwrap();
    table::write(&dir.join(name), &table::batch(columns).unwrap()).unwrap();
}

/// events (two files): user, item, price; items: item → genre.
fn shop(root: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let events = root.join("events");
    put(
        &events,
        "a.parquet",
        vec![
            ("user_id", i64s(&[1, 1, 2])),
            ("item_id", i64s(&[10, 11, 10])),
            ("price", Arc::new(Float64Array::from(vec![2.0, 3.0, 2.0]))),
        ],
    );
    put(
        &events,
        "b.parquet",
        vec![
            ("user_id", i64s(&[2, 3, 3, 3])),
            ("item_id", i64s(&[12, 12, 12, 10])),
            (
                "price",
                Arc::new(Float64Array::from(vec![5.0, 5.0, 5.0, 2.0])),
            ),
        ],
    );
    let items = root.join("items");
    put(
        &items,
        "items.parquet",
        vec![
            ("item_id", i64s(&[10, 11, 12])),
            (
                "genre",
                Arc::new(StringArray::from(vec!["drama", "comedy", "drama"])),
            ),
        ],
    );
    (events, items)
}

#[test]
fn a_join_and_group_by_over_split_tables_gives_the_hand_computed_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (events, items) = shop(dir.path());
    let out = run_stage(
        dir.path(),
        "genres",
        "sql",
        r#"query = """
            SELECT i.genre, COUNT(*) AS events, COUNT(DISTINCT e.user_id) AS users,
                   SUM(e.price) AS revenue
            FROM events e JOIN items i ON e.item_id = i.item_id
            GROUP BY i.genre ORDER BY revenue DESC"""
           output = "genres""#,
        &[("events", &events), ("items", &items)],
    )
    .unwrap();
    let folder = &out["table"];
    let batch = table::read(&folder.join("genres.parquet")).unwrap();
    // drama: items 10 and 12 → events (1,10,2) (2,10,2) (2,12,5) (3,12,5)
    // (3,12,5) (3,10,2): 6 events, users {1,2,3}, revenue 21; comedy: one.
    let genre = batch
        .column_by_name("genre")
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("strings come out as plain Utf8");
    assert_eq!(genre.value(0), "drama");
    assert_eq!(genre.value(1), "comedy");
    let ints = |name: &str| {
        let c = batch.column_by_name(name).unwrap();
        let c = c.as_any().downcast_ref::<Int64Array>().unwrap();
        (0..c.len()).map(|i| c.value(i)).collect::<Vec<_>>()
    };
    assert_eq!(ints("events"), vec![6, 1]);
    assert_eq!(ints("users"), vec![3, 1]);
    let revenue = batch.column_by_name("revenue").unwrap();
    let revenue = revenue.as_any().downcast_ref::<Float64Array>().unwrap();
    assert_eq!(revenue.values().to_vec(), vec![21.0, 3.0]);
    let plan = std::fs::read_to_string(folder.join("plan.txt")).unwrap();
    assert!(
        plan.contains("# physical plan") && plan.contains("HashJoinExec"),
        "{plan}"
    );
    let summary = std::fs::read_to_string(folder.join("summary.txt")).unwrap();
    assert!(
        summary.starts_with("2 rows from 2 input table(s)"),
        "{summary}"
    );
}

#[test]
fn one_thread_gives_the_same_bytes_on_every_run_and_keeps_file_order() {
    let dir = tempfile::tempdir().unwrap();
    let (events, _) = shop(dir.path());
    let query = r#"query = "SELECT user_id, item_id FROM events WHERE price > 1.5""#;
    let first = run_stage(dir.path(), "one", "sql", query, &[("events", &events)]).unwrap();
    // The same input at another path (as in another cache): every file of
    // the artifact has the same bytes, plan and summary included.
    let elsewhere = dir.path().join("moved");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let moved = elsewhere.join("events");
    std::fs::create_dir_all(&moved).unwrap();
    for f in ["a.parquet", "b.parquet"] {
        std::fs::copy(events.join(f), moved.join(f)).unwrap();
    }
    let second = run_stage(&elsewhere, "two", "sql", query, &[("events", &moved)]).unwrap();
    for file in ["events.parquet", "plan.txt", "summary.txt"] {
        let bytes = |o: &std::collections::BTreeMap<String, std::path::PathBuf>| {
            std::fs::read(o["table"].join(file)).unwrap()
        };
        assert_eq!(bytes(&first), bytes(&second), "{file} differs");
    }
    // No ORDER BY: rows in file order (a.parquet, then b.parquet).
    let batch = table::read(&first["table"].join("events.parquet")).unwrap();
    let users = table::int64(&batch, "user_id", Path::new("x")).unwrap();
    assert_eq!(users.values().to_vec(), vec![1, 1, 2, 2, 3, 3, 3]);
}

#[test]
fn a_sort_larger_than_the_memory_pool_spills_and_gives_the_unbounded_rows() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    let n = 1_500_000i64;
    // A permutation of 0..n (multiplication by a unit mod n) with a
    // payload, ~24 MB in memory (16 MiB pool, of which 10 MiB is held back
    // for merging).
    let keys: Vec<i64> = (0..n).map(|i| (i * 7_919) % n).collect();
    put(
        &big,
        "t.parquet",
        vec![
            ("key", i64s(&keys)),
            ("payload", i64s(&(0..n).collect::<Vec<_>>())),
        ],
    );
    let query = r#"query = "SELECT key, payload FROM big ORDER BY key""#;
    let bounded = run_stage(
        dir.path(),
        "bounded",
        "sql",
        &format!("{query}\nmemory_mb = 16"),
        &[("big", &big)],
    )
    .unwrap();
    let summary = std::fs::read_to_string(bounded["table"].join("summary.txt")).unwrap();
    assert!(!summary.contains(" 0 spill(s)"), "no spill: {summary}");
    let unbounded = run_stage(dir.path(), "unbounded", "sql", query, &[("big", &big)]).unwrap();
    let summary = std::fs::read_to_string(unbounded["table"].join("summary.txt")).unwrap();
    assert!(summary.contains(" 0 spill(s)"), "{summary}");
    let read = |o: &std::collections::BTreeMap<String, std::path::PathBuf>| {
        let b = table::read(&o["table"].join("events.parquet")).unwrap();
        (
            table::int64(&b, "key", Path::new("x"))
                .unwrap()
                .values()
                .to_vec(),
            table::int64(&b, "payload", Path::new("x"))
                .unwrap()
                .values()
                .to_vec(),
        )
    };
    let (keys_b, payload_b) = read(&bounded);
    assert_eq!(keys_b, (0..n).collect::<Vec<_>>());
    assert_eq!((keys_b, payload_b), read(&unbounded));
    assert!(
        !dir.path().join("checkpoint/spill").exists(),
        "spill files are removed"
    );
}

#[test]
fn an_unknown_column_is_reported_with_the_input_tables_and_their_columns() {
    let dir = tempfile::tempdir().unwrap();
    let (events, items) = shop(dir.path());
    let e = run_stage(
        dir.path(),
        "bad",
        "sql",
        r#"query = "SELECT usr FROM events""#,
        &[("events", &events), ("items", &items)],
    )
    .unwrap_err();
    let text = format!("{e:#}");
    assert!(text.contains("the query does not plan"), "{text}");
    assert!(
        text.contains("`events` (user_id, item_id, price)")
            && text.contains("`items` (item_id, genre)"),
        "{text}"
    );
}

#[test]
fn through_the_engine_a_query_feeds_the_next_stage_and_a_rerun_is_cached() {
    let (dir, _) = common::setup(
        r#"
[pipeline]
name = "sql"
seed = 3

[stages.synth]
kind = "synth"
params = { users = 40, items = 30, min_len = 5, max_len = 10 }

# Keep users with at least 6 events, then build sequences from them.
[stages.active]
kind = "sql"
inputs = { events = "synth.events" }
params.query = """
SELECT e.* FROM events e
JOIN (SELECT user_id FROM events GROUP BY user_id HAVING COUNT(*) >= 6) a
  ON e.user_id = a.user_id
ORDER BY e.user_id, e.timestamp, e.item_id"""

[stages.sequences]
kind = "sequences"
inputs = { events = "active.table" }
"#,
    );
    common::run_ok(dir.path(), &[]);
    assert_eq!(
        common::ran(dir.path()),
        vec!["synth", "active", "sequences"]
    );
    let folder = common::artifact_dir(dir.path(), "active", "table");
    let kept = table::read(&folder.join("events.parquet")).unwrap();
    let synth = common::artifact_dir(dir.path(), "synth", "events");
    let all = table::read(&synth.join("events.parquet")).unwrap();
    let users = table::int64(&all, "user_id", Path::new("synth")).unwrap();
    let mut counts = std::collections::HashMap::<i64, usize>::new();
    for u in users.values() {
        *counts.entry(*u).or_default() += 1;
    }
    let expected: usize = counts.values().filter(|c| **c >= 6).sum();
    assert_eq!(kept.num_rows(), expected);
    common::run_ok(dir.path(), &[]);
    assert!(common::ran(dir.path()).is_empty(), "a rerun is all hits");
}

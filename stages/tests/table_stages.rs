//! The tabular stages without the engine: `load.parquet` on small nested
//! Parquet partitions (selection by match, day range and limit; projection;
//! a column whose type differs across partitions; a column that cannot be
//! read as its declared type; a file that is not Parquet), `clean` (casts,
//! fills, required columns, dedup first/last across files, the numbers in
//! validation.json) and `profile` (nulls, distinct values, statistics, top
//! values, duplicate rows, reproducible bytes), all with hand-computed
//! expectations. Stages run through the registry with a hand-built
//! `StageContext`, as the engine would run them.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, Float64Array, Int32Array, Int64Array,
    ListArray, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Float32Type, Schema};
use common::in_process::run_stage;
use parquet::arrow::arrow_writer::{ArrowWriter, ArrowWriterOptions};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use seqpipe_stages::table;

fn i64s(v: &[Option<i64>]) -> ArrayRef {
    Arc::new(Int64Array::from(v.to_vec()))
}

fn strs(v: &[Option<&str>]) -> ArrayRef {
    Arc::new(StringArray::from(v.to_vec()))
}

/// A FixedSizeList<float32> column of `size`, one list per row.
fn embedding(rows: usize, size: i32) -> ArrayRef {
    let values = Float32Array::from(
        (0..rows * size as usize)
            .map(|i| i as f32)
            .collect::<Vec<_>>(),
    );
    Arc::new(
        FixedSizeListArray::try_new(
            Arc::new(Field::new("item", DataType::Float32, true)),
            size,
            Arc::new(values),
            None,
        )
        .unwrap(),
    )
}

fn put(root: &Path, rel: &str, columns: Vec<(&str, ArrayRef)>) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    table::write(&path, &table::batch(columns).unwrap()).unwrap();
}

/// The partition tree used by the `load.parquet` tests:
///
/// | relative path                         | rows | columns |
/// |---------------------------------------|-----:|---------|
/// | clicks/2024-01-01.parquet              | 3 | user_id, item_id, timestamp, category (int32), embedding (fixed 2) |
/// | clicks/2024-01-02.parquet              | 2 | same, category int64, embedding fixed 3 |
/// | clicks/2024-01-03.parquet              | 4 | same as 01-01 |
/// | views/day=2024-01-02/part-0.parquet    | 1 | user_id, item_id, timestamp |
/// | views/undated.parquet                  | 2 | user_id, item_id, timestamp |
///
/// plus README.md (ignored), `_SUCCESS` and `.hidden/x.parquet` (skipped).
fn partitions(root: &Path) {
    let clicks = |rel: &str, users: &[i64], first_ts: i64, wide_category: bool, emb: i32| {
        let n = users.len();
        let category: ArrayRef = if wide_category {
            Arc::new(Int64Array::from(
                (0..n as i64).map(Some).collect::<Vec<_>>(),
            ))
        } else {
            Arc::new(Int32Array::from(
                (0..n as i32).map(Some).collect::<Vec<_>>(),
            ))
        };
        put(
            root,
            rel,
            vec![
                (
                    "user_id",
                    i64s(&users.iter().map(|u| Some(*u)).collect::<Vec<_>>()),
                ),
                (
                    "item_id",
                    i64s(&(0..n as i64).map(|i| Some(100 + i)).collect::<Vec<_>>()),
                ),
                (
                    "timestamp",
                    i64s(
                        &(0..n as i64)
                            .map(|i| Some(first_ts + i))
                            .collect::<Vec<_>>(),
                    ),
                ),
                ("category", category),
                ("embedding", embedding(n, emb)),
            ],
        );
    };
    clicks("clicks/2024-01-01.parquet", &[1, 2, 3], 1000, false, 2);
    clicks("clicks/2024-01-02.parquet", &[1, 2], 2000, true, 3);
    clicks("clicks/2024-01-03.parquet", &[1, 2, 3, 4], 3000, false, 2);
    let views = |rel: &str, users: &[i64]| {
        let n = users.len() as i64;
        put(
            root,
            rel,
            vec![
                (
                    "user_id",
                    i64s(&users.iter().map(|u| Some(*u)).collect::<Vec<_>>()),
                ),
                (
                    "item_id",
                    i64s(&(0..n).map(|i| Some(200 + i)).collect::<Vec<_>>()),
                ),
                (
                    "timestamp",
                    i64s(&(0..n).map(|i| Some(5000 + i)).collect::<Vec<_>>()),
                ),
            ],
        );
    };
    views("views/day=2024-01-02/part-0.parquet", &[9]);
    views("views/undated.parquet", &[7, 8]);
    std::fs::write(root.join("README.md"), "not data").unwrap();
    std::fs::write(root.join("_SUCCESS"), "").unwrap();
    std::fs::create_dir_all(root.join(".hidden")).unwrap();
    std::fs::write(root.join(".hidden/x.parquet"), "not parquet either").unwrap();
}

fn names(batch: &RecordBatch) -> Vec<String> {
    batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Loads with `params`; returns the table and partitions.json.
fn load(dir: &Path, tag: &str, source: &Path, params: &str) -> (RecordBatch, serde_json::Value) {
    let out = run_stage(dir, tag, "load.parquet", params, &[("source", source)])
        .unwrap_or_else(|e| panic!("{params}: {e:#}"));
    let events = table::read(&out["events"].join("events.parquet")).unwrap();
    (events, json(&out["events"].join("partitions.json")))
}

fn selected(partitions: &serde_json::Value) -> Vec<(String, u64)> {
    partitions["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["path"].as_str().unwrap().to_string(),
                p["rows"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn load_err(dir: &Path, source: &Path, params: &str) -> String {
    let e = run_stage(dir, "err", "load.parquet", params, &[("source", source)])
        .expect_err("must fail");
    format!("{e:#}")
}

#[test]
fn load_parquet_selects_partitions_by_match_day_range_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    partitions(&src);

    // Everything: 3 + 2 + 4 + 1 + 2 rows, in relative-path order.
    let (events, parts) = load(dir.path(), "all", &src, "");
    assert_eq!(events.num_rows(), 12);
    assert_eq!(
        selected(&parts),
        [
            ("clicks/2024-01-01.parquet".to_string(), 3),
            ("clicks/2024-01-02.parquet".to_string(), 2),
            ("clicks/2024-01-03.parquet".to_string(), 4),
            ("views/day=2024-01-02/part-0.parquet".to_string(), 1),
            ("views/undated.parquet".to_string(), 2),
        ]
    );
    assert_eq!(parts["files_total"], 5);
    assert_eq!(
        parts["other_files"], 1,
        "README.md; _SUCCESS and .hidden are skipped"
    );
    assert_eq!(parts["partitions"][3]["day"], "2024-01-02");
    assert!(parts["partitions"][4]["day"].is_null());
    let users = table::int64(&events, "user_id", Path::new("e")).unwrap();
    assert_eq!(
        users.values().to_vec(),
        [1, 2, 3, 1, 2, 1, 2, 3, 4, 9, 7, 8]
    );

    let (events, parts) = load(dir.path(), "match", &src, "match = \"clicks\"");
    assert_eq!((events.num_rows(), selected(&parts).len()), (9, 3));

    // One day: the clicks of 01-02 and the hive-style views partition;
    // the undated file is left out once a range is given.
    let (events, parts) = load(
        dir.path(),
        "day",
        &src,
        "day_from = \"2024-01-02\"\nday_to = \"2024-01-02\"",
    );
    assert_eq!(events.num_rows(), 3);
    assert_eq!(
        selected(&parts),
        [
            ("clicks/2024-01-02.parquet".to_string(), 2),
            ("views/day=2024-01-02/part-0.parquet".to_string(), 1),
        ]
    );

    // From 01-02 on, the first two by relative path.
    let (events, parts) = load(
        dir.path(),
        "limit",
        &src,
        "day_from = \"2024-01-02\"\nlimit = 2",
    );
    assert_eq!(events.num_rows(), 6);
    assert_eq!(
        selected(&parts)
            .iter()
            .map(|p| p.0.as_str())
            .collect::<Vec<_>>(),
        ["clicks/2024-01-02.parquet", "clicks/2024-01-03.parquet"]
    );

    // A glob matches the whole relative path.
    let (events, parts) = load(
        dir.path(),
        "glob",
        &src,
        "match = \"views/*/part-?.parquet\"",
    );
    assert_eq!(events.num_rows(), 1);
    assert_eq!(selected(&parts).len(), 1);

    // Nothing selected: the folder, the filters and the file count.
    let e = load_err(
        dir.path(),
        &src,
        "match = \"purchases\"\nday_to = \"2023-12-31\"",
    );
    assert!(e.contains(&src.display().to_string()), "{e}");
    assert!(e.contains("match `purchases`"), "{e}");
    assert!(e.contains("days open..2023-12-31"), "{e}");
    assert!(e.contains("holds 5 Parquet file(s)"), "{e}");
    assert!(e.contains("1 other file(s)"), "{e}");
}

#[test]
fn load_parquet_projects_widens_fills_and_drops_conflicting_columns() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    partitions(&src);

    // embedding is fixed-size 2 in two partitions and 3 in one: dropped and
    // reported; category is int32 and int64: widened; views lack category:
    // null there.
    let (events, parts) = load(dir.path(), "all", &src, "");
    assert_eq!(
        names(&events),
        ["user_id", "item_id", "timestamp", "category"]
    );
    let category = events.column_by_name("category").unwrap();
    assert_eq!(category.data_type(), &DataType::Int64);
    assert_eq!(category.null_count(), 3);
    let dropped = parts["dropped"].as_array().unwrap();
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0]["name"], "embedding");
    let reason = dropped[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("type differs across partitions"),
        "{reason}"
    );
    assert!(
        reason.contains("clicks/2024-01-01.parquet")
            && reason.contains("clicks/2024-01-02.parquet"),
        "{reason}"
    );
    assert_eq!(parts["columns"][3]["widened_from"][0], "Int32");
    let summary = std::fs::read_to_string(dir.path().join("all/events/summary.txt")).unwrap();
    assert!(summary.starts_with("load.parquet: 5 of 5 partition files selected (match: all); 12 rows; 4 columns kept (user_id, item_id, timestamp, category)"), "{summary}");
    assert!(
        summary.contains("1 dropped: embedding (type differs"),
        "{summary}"
    );

    // Without the 01-02 partition nothing conflicts: embedding stays.
    let (events, _) = load(
        dir.path(),
        "noconflict",
        &src,
        "match = \"clicks/2024-01-0*\"\nday_to = \"2024-01-01\"",
    );
    assert_eq!(events.num_rows(), 3);
    assert_eq!(
        names(&events),
        ["user_id", "item_id", "timestamp", "category", "embedding"]
    );
    assert!(matches!(
        events.column(4).data_type(),
        DataType::FixedSizeList(_, 2)
    ));

    // columns: exactly these, in this order; exclude drops.
    let (events, parts) = load(
        dir.path(),
        "cols",
        &src,
        "columns = [\"item_id\", \"user_id\"]",
    );
    assert_eq!(names(&events), ["item_id", "user_id"]);
    assert_eq!(events.num_rows(), 12);
    assert!(parts["dropped"].as_array().unwrap().is_empty());
    let (events, parts) = load(
        dir.path(),
        "excl",
        &src,
        "exclude = [\"embedding\", \"timestamp\"]",
    );
    assert_eq!(names(&events), ["user_id", "item_id", "category"]);
    assert!(
        parts["dropped"].as_array().unwrap().is_empty(),
        "excluded is not dropped"
    );

    // A misspelt column: did-you-mean, the folder and the partition count.
    let e = load_err(dir.path(), &src, "columns = [\"usr_id\"]");
    assert!(
        e.contains("columns: no column `usr_id` in the 5 selected partition(s)"),
        "{e}"
    );
    assert!(e.contains("did you mean `user_id`?"), "{e}");
    assert!(e.contains(&src.display().to_string()), "{e}");
    let e = load_err(dir.path(), &src, "exclude = [\"embeding\"]");
    assert!(
        e.contains("exclude: no column `embeding`") && e.contains("did you mean `embedding`?"),
        "{e}"
    );

    // Asked for by name, or with skip_unreadable_columns = false, a
    // conflict is an error naming both files and types.
    let e = load_err(dir.path(), &src, "columns = [\"user_id\", \"embedding\"]");
    assert!(e.contains("column `embedding` is FixedSizeList"), "{e}");
    assert!(
        e.contains("in clicks/2024-01-01.parquet but")
            && e.contains("in clicks/2024-01-02.parquet"),
        "{e}"
    );
    let e = load_err(dir.path(), &src, "skip_unreadable_columns = false");
    assert!(
        e.contains("column `embedding`") && e.contains("add it to `exclude`"),
        "{e}"
    );
    run_stage(
        dir.path(),
        "ok",
        "load.parquet",
        "skip_unreadable_columns = false\nexclude = [\"embedding\"]",
        &[("source", &src)],
    )
    .unwrap();

    // Plan-time checks.
    for (params, needle) in [
        (
            "day_from = \"2024-13-01\"",
            "day_from: `2024-13-01` is not a day",
        ),
        (
            "day_to = \"2023-02-29\"",
            "day_to: `2023-02-29` is not a day",
        ),
        (
            "day_from = \"2024-02-01\"\nday_to = \"2024-01-01\"",
            "day_from: 2024-02-01 is after day_to",
        ),
        ("columns = [\"a\", \"a\"]", "columns: `a` is listed twice"),
        (
            "columns = [\"a\"]\nexclude = [\"a\"]",
            "exclude: `a` is also in columns",
        ),
        ("mach = \"x\"", "unknown field `mach`"),
    ] {
        let e = load_err(dir.path(), &src, params);
        assert!(
            e.contains("params: ") && e.contains(needle),
            "{params}: {e}"
        );
    }
}

/// Writes `rel` whose `embedding` holds lists of 2 and 3 floats but whose
/// embedded Arrow schema declares a fixed size of 2, as a buggy writer
/// might: the footer reads, the data does not.
fn lying_partition(root: &Path, rel: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    let real = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, true),
        Field::new("embedding", DataType::List(item.clone()), true),
    ]));
    let declared = Schema::new(vec![
        Field::new("user_id", DataType::Int64, true),
        Field::new("embedding", DataType::FixedSizeList(item, 2), true),
    ]);
    let lists = ListArray::from_iter_primitive::<Float32Type, _, _>(vec![
        Some(vec![Some(1.0), Some(2.0)]),
        Some(vec![Some(1.0), Some(2.0), Some(3.0)]),
    ]);
    let batch = RecordBatch::try_new(
        real.clone(),
        vec![i64s(&[Some(1), Some(2)]), Arc::new(lists)],
    )
    .unwrap();
    let props = WriterProperties::builder()
        .set_key_value_metadata(Some(vec![KeyValue::new(
            "ARROW:schema".to_string(),
            parquet::arrow::encode_arrow_schema(&declared),
        )]))
        .build();
    let options = ArrowWriterOptions::new()
        .with_properties(props)
        .with_skip_arrow_metadata(true);
    let mut writer =
        ArrowWriter::try_new_with_options(std::fs::File::create(&path).unwrap(), real, options)
            .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

#[test]
fn load_parquet_drops_an_unreadable_column_and_names_a_non_parquet_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    put(
        &src,
        "a/2024-01-01.parquet",
        vec![("user_id", i64s(&[Some(5)]))],
    );
    lying_partition(&src, "b/2024-01-02.parquet");

    // The declared fixed-size list cannot be read: the stream restarts
    // without it and every row still arrives.
    let (events, parts) = load(dir.path(), "lying", &src, "");
    assert_eq!(names(&events), ["user_id"]);
    let users = table::int64(&events, "user_id", Path::new("e")).unwrap();
    assert_eq!(users.values().to_vec(), [5, 1, 2]);
    assert_eq!(parts["dropped"][0]["name"], "embedding");
    let reason = parts["dropped"][0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("cannot be read in b/2024-01-02.parquet"),
        "{reason}"
    );
    let e = load_err(dir.path(), &src, "columns = [\"user_id\", \"embedding\"]");
    assert!(
        e.contains("b/2024-01-02.parquet: column `embedding` cannot be read"),
        "{e}"
    );

    // A .parquet file that is not Parquet, named; outside the selection it
    // is never opened.
    std::fs::write(src.join("b/2024-01-03.parquet"), "user_id\n1\n").unwrap();
    let e = load_err(dir.path(), &src, "");
    assert!(
        e.contains(&format!(
            "{}: not a Parquet file",
            src.join("b/2024-01-03.parquet").display()
        )),
        "{e}"
    );
    let (events, _) = load(
        dir.path(),
        "before",
        &src,
        "day_to = \"2024-01-02\"\nexclude = [\"embedding\"]",
    );
    assert_eq!(events.num_rows(), 3);
}

/// The clean test table, in two files (rows 0–3 and 4–7):
///
/// | row | user_id | item_id | ts    | category | region |
/// |----:|--------:|--------:|-------|---------:|--------|
/// | 0   | 1       | 10      | "100" | null     | a      |
/// | 1   | 1       | 10      | "101" | 5        | null   |
/// | 2   | 2       | 20      | "102" | null     | b      |
/// | 3   | 2       | 21      | "x"   | 7        | b      |
/// | 4   | null    | 30      | "104" | 8        | null   |
/// | 5   | 3       | 30      | "105" | null     | c      |
/// | 6   | 3       | 31      | "106" | 9        | c      |
/// | 7   | 1       | 10      | "107" | 5        | a      |
fn dirty_table(dir: &Path) -> PathBuf {
    let folder = dir.join("dirty");
    std::fs::create_dir_all(&folder).unwrap();
    let part = |name: &str, r: std::ops::Range<usize>| {
        let users = [
            Some(1),
            Some(1),
            Some(2),
            Some(2),
            None,
            Some(3),
            Some(3),
            Some(1),
        ];
        let items = [10, 10, 20, 21, 30, 30, 31, 10].map(Some);
        let ts = ["100", "101", "102", "x", "104", "105", "106", "107"].map(Some);
        let category = [
            None,
            Some(5),
            None,
            Some(7),
            Some(8),
            None,
            Some(9),
            Some(5),
        ];
        let region = [
            Some("a"),
            None,
            Some("b"),
            Some("b"),
            None,
            Some("c"),
            Some("c"),
            Some("a"),
        ];
        put(
            &folder,
            name,
            vec![
                ("user_id", i64s(&users[r.clone()])),
                ("item_id", i64s(&items[r.clone()])),
                ("ts", strs(&ts[r.clone()])),
                ("category", i64s(&category[r.clone()])),
                ("region", strs(&region[r])),
            ],
        );
    };
    part("part-0.parquet", 0..4);
    part("part-1.parquet", 4..8);
    folder
}

fn col_i64(batch: &RecordBatch, name: &str) -> Vec<Option<i64>> {
    table::int64(batch, name, Path::new("out"))
        .unwrap()
        .iter()
        .collect()
}

fn col_str(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
    batch
        .column_by_name(name)
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap()
        .iter()
        .map(|s| s.map(str::to_string))
        .collect()
}

const CLEAN: &str = r#"
cast = { ts = "int64" }
fill = { category = -1, region = "unknown" }
required = ["user_id", "ts"]
dedup = ["user_id", "item_id"]
"#;

#[test]
fn clean_casts_fills_drops_incomplete_rows_and_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let input = dirty_table(dir.path());

    // cast: "x" fails (row 3 → null ts); fill: category rows 0, 2, 5 and
    // region rows 1, 4; required: row 3 (ts) and row 4 (user) dropped;
    // dedup on (user, item) over rows 0 1 2 5 6 7 keeps 0 2 5 6.
    let out = run_stage(dir.path(), "first", "clean", CLEAN, &[("table", &input)]).unwrap();
    let t = table::read(&out["table"].join("events.parquet")).unwrap();
    assert_eq!(col_i64(&t, "user_id"), [1, 2, 3, 3].map(Some));
    assert_eq!(col_i64(&t, "item_id"), [10, 20, 30, 31].map(Some));
    assert_eq!(
        t.column_by_name("ts").unwrap().data_type(),
        &DataType::Int64
    );
    assert_eq!(col_i64(&t, "ts"), [100, 102, 105, 106].map(Some));
    assert_eq!(col_i64(&t, "category"), [-1, -1, -1, 9].map(Some));
    assert_eq!(
        col_str(&t, "region"),
        ["a", "b", "c", "c"].map(|s| Some(s.to_string()))
    );

    let v = json(&out["table"].join("validation.json"));
    assert_eq!(
        v["input_files"],
        serde_json::json!(["part-0.parquet", "part-1.parquet"])
    );
    assert_eq!(
        (v["rows_in"].as_u64(), v["rows_out"].as_u64()),
        (Some(8), Some(4))
    );
    assert_eq!(v["retention_pct"], 50.0);
    assert_eq!(
        v["cast"]["ts"],
        serde_json::json!({"from": "Utf8", "to": "Int64", "failed": 1})
    );
    assert_eq!(v["filled"], serde_json::json!({"category": 3, "region": 2}));
    assert_eq!(v["dropped_missing_required"], 2);
    assert_eq!(
        v["missing_required"],
        serde_json::json!({"ts": 1, "user_id": 1})
    );
    assert_eq!(v["duplicates_removed"], 2);
    assert_eq!(v["keep"], "first");
    assert_eq!(
        v["nulls_before"],
        serde_json::json!({"category": 3, "item_id": 0, "region": 2, "ts": 0, "user_id": 1})
    );
    assert_eq!(
        v["nulls_after"],
        serde_json::json!({"category": 0, "item_id": 0, "region": 0, "ts": 0, "user_id": 0})
    );
    let summary = std::fs::read_to_string(out["table"].join("summary.txt")).unwrap();
    assert_eq!(
        summary.trim(),
        "clean: 4 of 8 rows kept (50%); cast ts Utf8 → Int64 (1 values did not convert, now null); \
         filled nulls: 3 in category, 2 in region; dropped 2 rows missing a required value (ts, user_id); \
         removed 2 duplicates of (user_id, item_id), keeping the first; no nulls left."
    );

    // keep = "last" (across the two files): rows 2 5 6 7.
    let out = run_stage(
        dir.path(),
        "last",
        "clean",
        &format!("{CLEAN}keep = \"last\""),
        &[("table", &input)],
    )
    .unwrap();
    let t = table::read(&out["table"].join("events.parquet")).unwrap();
    assert_eq!(col_i64(&t, "user_id"), [2, 3, 3, 1].map(Some));
    assert_eq!(col_i64(&t, "ts"), [102, 105, 106, 107].map(Some));
    assert_eq!(col_i64(&t, "category"), [-1, -1, 9, 5].map(Some));
    let v = json(&out["table"].join("validation.json"));
    assert_eq!(
        (v["rows_out"].as_u64(), v["duplicates_removed"].as_u64()),
        (Some(4), Some(2))
    );

    // Only a fill: nothing dropped, nulls left elsewhere are reported.
    let out = run_stage(
        dir.path(),
        "fill",
        "clean",
        "fill = { region = \"?\" }",
        &[("table", &input)],
    )
    .unwrap();
    let v = json(&out["table"].join("validation.json"));
    assert_eq!(
        (v["rows_out"].as_u64(), v["retention_pct"].as_f64()),
        (Some(8), Some(100.0))
    );
    assert_eq!(v["nulls_after"]["category"], 3);
    assert_eq!(v["nulls_after"]["region"], 0);
    assert!(v["keep"].is_null());

    // Two casts; only ts is required (row 3's "x" drops it).
    let out = run_stage(
        dir.path(),
        "ts",
        "clean",
        "cast = { ts = \"int64\", user_id = \"utf8\" }\nrequired = [\"ts\"]",
        &[("table", &input)],
    )
    .unwrap();
    let t = table::read(&out["table"].join("events.parquet")).unwrap();
    assert_eq!(t.num_rows(), 7);
    assert_eq!(col_str(&t, "user_id")[0].as_deref(), Some("1"));
}

#[test]
fn clean_names_bad_columns_values_and_params() {
    let dir = tempfile::tempdir().unwrap();
    let input = dirty_table(dir.path());
    let err = |params: &str| {
        let e =
            run_stage(dir.path(), "err", "clean", params, &[("table", &input)]).expect_err(params);
        format!("{e:#}")
    };
    let e = err("fill = { categroy = -1 }");
    assert!(
        e.contains("fill: no column `categroy`") && e.contains("did you mean `category`?"),
        "{e}"
    );
    assert!(
        e.contains(&input.display().to_string()) && e.contains("2 Parquet files"),
        "{e}"
    );
    let e = err("dedup = [\"user\"]");
    assert!(e.contains("dedup: no column `user`"), "{e}");
    let e = err("required = [\"regoin\"]");
    assert!(e.contains("did you mean `region`?"), "{e}");
    let e = err("fill = { category = \"unknown\" }");
    assert!(
        e.contains("fill.category: \"unknown\" does not fit a Int64 column"),
        "{e}"
    );
    let e = err("fill = { category = 1.5 }");
    assert!(e.contains("fill.category: 1.5 does not fit"), "{e}");
    // Plan-time (params) errors.
    let e = err("keep = \"middle\"");
    assert!(e.starts_with("params: keep: `middle` is neither"), "{e}");
    let e = err("cast = { ts = \"int46\" }");
    assert!(
        e.contains("cast.ts: unknown type `int46` (did you mean `int64`?)"),
        "{e}"
    );
    let e = err("required = [\"a\", \"a\"]");
    assert!(e.contains("required: `a` is listed twice"), "{e}");
}

/// The profile test table:
///
/// | row | x    | cat  | n    |
/// |----:|-----:|------|-----:|
/// | 0   | 1    | b    | 5    |
/// | 1   | 2    | a    | 5    |
/// | 2   | 3    | b    | 7    |
/// | 3   | 4    | null | null |
/// | 4   | null | c    | null |
/// | 5   | 2    | a    | 5    |  (= row 1: one duplicate row)
fn profile_table(dir: &Path) -> PathBuf {
    let folder = dir.join("t");
    put(
        &folder,
        "events.parquet",
        vec![
            (
                "x",
                Arc::new(Float64Array::from(vec![
                    Some(1.0),
                    Some(2.0),
                    Some(3.0),
                    Some(4.0),
                    None,
                    Some(2.0),
                ])) as ArrayRef,
            ),
            (
                "cat",
                strs(&[Some("b"), Some("a"), Some("b"), None, Some("c"), Some("a")]),
            ),
            ("n", i64s(&[Some(5), Some(5), Some(7), None, None, Some(5)])),
        ],
    );
    folder
}

#[test]
fn profile_counts_nulls_distinct_values_statistics_and_top_values() {
    let dir = tempfile::tempdir().unwrap();
    let input = profile_table(dir.path());
    let out = run_stage(dir.path(), "p", "profile", "", &[("table", &input)]).unwrap();
    let p = json(&out["profile"].join("profile.json"));
    assert_eq!(p["rows"], 6);
    assert_eq!(p["num_columns"], 3);
    assert_eq!(p["duplicate_rows"], 1);
    let x = &p["columns"][0];
    assert_eq!(
        (x["name"].as_str(), x["type"].as_str()),
        (Some("x"), Some("Float64"))
    );
    assert_eq!(
        (x["nulls"].as_u64(), x["null_pct"].as_f64()),
        (Some(1), Some(16.67))
    );
    assert_eq!(x["distinct"], 4);
    let s = &x["numeric"];
    // mean 12/5; squared deviations 1.96 .16 .36 2.56 .16 = 5.2, /4 → 1.3
    assert_eq!(
        (s["count"].as_u64(), s["min"].as_f64(), s["max"].as_f64()),
        (Some(5), Some(1.0), Some(4.0))
    );
    assert!((s["mean"].as_f64().unwrap() - 2.4).abs() < 1e-12);
    assert!((s["std"].as_f64().unwrap() - 1.3f64.sqrt()).abs() < 1e-12);
    // sorted 1 2 2 3 4: positions 1, 2, 3
    assert_eq!(
        (s["p25"].as_f64(), s["p50"].as_f64(), s["p75"].as_f64()),
        (Some(2.0), Some(2.0), Some(3.0))
    );
    assert!(x.get("top").is_none(), "floats have no top values");

    let cat = &p["columns"][1];
    assert_eq!(
        (cat["nulls"].as_u64(), cat["distinct"].as_u64()),
        (Some(1), Some(3))
    );
    assert!(cat.get("numeric").is_none());
    // a and b tie at 2: a first.
    assert_eq!(
        cat["top"],
        serde_json::json!([{"value": "a", "count": 2}, {"value": "b", "count": 2}, {"value": "c", "count": 1}])
    );
    let n = &p["columns"][2];
    assert_eq!(
        (
            n["nulls"].as_u64(),
            n["null_pct"].as_f64(),
            n["distinct"].as_u64()
        ),
        (Some(2), Some(33.33), Some(2))
    );
    assert_eq!(
        n["top"],
        serde_json::json!([{"value": 5, "count": 3}, {"value": 7, "count": 1}])
    );
    assert_eq!(
        (n["numeric"]["mean"].as_f64(), n["numeric"]["p50"].as_f64()),
        (Some(5.5), Some(5.0))
    );

    let md = std::fs::read_to_string(out["profile"].join("profile.md")).unwrap();
    assert!(
        md.contains("| x | Float64 | 1 | 16.67 | 4 | 1 | 4 | 2.4 | 1.1402 | 2 | 2 | 3 |"),
        "{md}"
    );
    assert!(
        md.contains("### cat\n\n| value | count |\n|---|---:|\n| a | 2 |\n| b | 2 |\n| c | 1 |\n"),
        "{md}"
    );
    let summary = std::fs::read_to_string(out["profile"].join("summary.txt")).unwrap();
    assert_eq!(
        summary.trim(),
        "profile: 6 rows × 3 columns, 1 duplicate rows; nulls: x 1 (16.67%), cat 1 (16.67%), n 2 (33.33%)."
    );

    // top = 1 keeps one value; the same input gives the same bytes.
    let out2 = run_stage(dir.path(), "p2", "profile", "top = 1", &[("table", &input)]).unwrap();
    let p2 = json(&out2["profile"].join("profile.json"));
    assert_eq!(
        p2["columns"][1]["top"],
        serde_json::json!([{"value": "a", "count": 2}])
    );
    let out3 = run_stage(dir.path(), "p3", "profile", "", &[("table", &input)]).unwrap();
    for f in ["profile.json", "profile.md", "summary.txt"] {
        assert_eq!(
            std::fs::read(out["profile"].join(f)).unwrap(),
            std::fs::read(out3["profile"].join(f)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn load_clean_profile_chain_on_hand_counted_keys() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    partitions(&src);
    let load = run_stage(
        dir.path(),
        "load",
        "load.parquet",
        "match = \"clicks\"",
        &[("source", &src)],
    )
    .unwrap();
    let clean = run_stage(
        dir.path(),
        "clean",
        "clean",
        "dedup = [\"user_id\", \"item_id\"]",
        &[("table", &load["events"])],
    )
    .unwrap();
    // clicks: users 1 2 3 / 1 2 / 1 2 3 4 with items 100+i per file:
    // (1,100) ×3, (2,101) ×3, (3,102) ×2, (4,103) → 4 distinct keys.
    let v = json(&clean["table"].join("validation.json"));
    assert_eq!(
        (
            v["rows_in"].as_u64(),
            v["rows_out"].as_u64(),
            v["duplicates_removed"].as_u64()
        ),
        (Some(9), Some(4), Some(5))
    );
    let profile = run_stage(
        dir.path(),
        "profile",
        "profile",
        "",
        &[("table", &clean["table"])],
    )
    .unwrap();
    let p = json(&profile["profile"].join("profile.json"));
    assert_eq!(p["rows"], 4);
    assert_eq!(p["columns"][0]["distinct"], 4);
    // The embedding (fixed 2 in 01-01/01-03, 3 in 01-02) was dropped by load.
    assert_eq!(p["num_columns"], 4);
}

//! The tabular stages end to end through the real `seqpipe` binary:
//! Parquet partitions on disk → `load.parquet` → `clean` → `profile` and
//! `sequences`; the second run is all cache hits, and a misspelt column
//! (a data-level check the planner cannot make) fails the run with exit 1
//! naming the column.

mod common;

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array};
use common::{artifact_dir, outcomes, ran, run_ok, seqpipe, setup};
use seqpipe_stages::table;

const SPEC: &str = r#"
[pipeline]
name = "tables"
seed = 1
device = "cpu"

[stages.load]
kind = "load.parquet"
inputs = { source = "./data" }
params = { day_from = "2024-01-01" }

[stages.clean]
kind = "clean"
inputs = { table = "load.events" }
params = { fill = { category = -1 }, dedup = ["user_id", "item_id", "timestamp"] }

[stages.profile]
kind = "profile"
inputs = { table = "clean.table" }

[stages.sequences]
kind = "sequences"
inputs = { events = "clean.table" }
"#;

/// (user_id, item_id, timestamp, category).
type Row = (i64, i64, i64, Option<i64>);

fn i64s(v: Vec<Option<i64>>) -> ArrayRef {
    Arc::new(Int64Array::from(v))
}

/// Two days of clicks for users 1–3 (4 events each once deduplicated),
/// one row repeated across the days, `category` null in two rows, and an
/// undated file that the day range leaves out.
fn write_partitions(root: &Path) {
    let day = |rel: &str, rows: &[Row]| {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let col = |f: fn(&Row) -> Option<i64>| i64s(rows.iter().map(f).collect());
        let batch = table::batch(vec![
            ("user_id", col(|r| Some(r.0))),
            ("item_id", col(|r| Some(r.1))),
            ("timestamp", col(|r| Some(r.2))),
            ("category", col(|r| r.3)),
        ])
        .unwrap();
        table::write(&path, &batch).unwrap();
    };
    day(
        "clicks/2024-01-01.parquet",
        &[
            (1, 10, 100, Some(1)),
            (1, 11, 101, None),
            (2, 10, 102, Some(1)),
            (2, 12, 103, Some(2)),
            (3, 13, 104, Some(3)),
            (3, 10, 105, Some(1)),
        ],
    );
    day(
        "clicks/2024-01-02.parquet",
        &[
            (3, 10, 105, Some(1)), // the same event again
            (1, 12, 200, Some(2)),
            (1, 13, 201, Some(3)),
            (2, 11, 202, None),
            (2, 13, 203, Some(3)),
            (3, 11, 204, Some(1)),
            (3, 12, 205, Some(2)),
        ],
    );
    day("clicks/undated.parquet", &[(9, 99, 1, Some(9))]);
}

#[test]
fn load_clean_profile_sequences_runs_then_hits() {
    let (dir, _) = setup(SPEC);
    let d = dir.path();
    write_partitions(&d.join("data"));
    run_ok(d, &[]);
    assert_eq!(ran(d), ["load", "clean", "profile", "sequences"]);

    let load = artifact_dir(d, "load", "events");
    let parts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(load.join("partitions.json")).unwrap())
            .unwrap();
    assert_eq!(parts["rows"], 13);
    assert_eq!(parts["partitions"].as_array().unwrap().len(), 2);

    let clean = artifact_dir(d, "clean", "table");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(clean.join("validation.json")).unwrap())
            .unwrap();
    assert_eq!(
        (v["rows_in"].as_u64(), v["rows_out"].as_u64()),
        (Some(13), Some(12))
    );
    assert_eq!(
        (
            v["duplicates_removed"].as_u64(),
            v["filled"]["category"].as_u64()
        ),
        (Some(1), Some(2))
    );

    let profile = artifact_dir(d, "profile", "profile");
    let p: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(profile.join("profile.json")).unwrap())
            .unwrap();
    assert_eq!(
        (p["rows"].as_u64(), p["duplicate_rows"].as_u64()),
        (Some(12), Some(0))
    );
    assert_eq!(
        p["columns"][3]["top"][0],
        serde_json::json!({"value": 1, "count": 4})
    );

    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(artifact_dir(d, "sequences", "data").join("meta.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (meta["num_users"].as_u64(), meta["num_items"].as_u64()),
        (Some(3), Some(4))
    );

    run_ok(d, &[]);
    assert!(
        ran(d).is_empty(),
        "second run is all hits: {:?}",
        outcomes(d)
    );
}

#[test]
fn a_misspelt_column_fails_the_run_naming_it() {
    let spec = SPEC.replace(
        "params = { day_from = \"2024-01-01\" }",
        "params = { columns = [\"usr_id\"] }",
    );
    let (dir, _) = setup(&spec);
    let d = dir.path();
    write_partitions(&d.join("data"));
    let out = seqpipe(d, &["run", "p.toml", "--quiet"]);
    let err = String::from_utf8_lossy(&out.stderr);
    // The planner cannot see the data: the stage fails (1), not the spec (2).
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no column `usr_id`"), "{err}");
    assert!(err.contains("did you mean `user_id`?"), "{err}");
    assert!(ran(d).is_empty());

    // A bad param shape is a spec error: exit 2 at the stage's line.
    let spec = SPEC.replace("day_from = \"2024-01-01\"", "day_from = \"2024-1-1\"");
    let (dir, _) = setup(&spec);
    let out = seqpipe(dir.path(), &["run", "p.toml", "--quiet"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("p.toml:") && err.contains("day_from: `2024-1-1` is not a day"),
        "{err}"
    );
}

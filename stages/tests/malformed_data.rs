//! Bad data files through the real binary: each fails its stage with exit
//! code 1 and a message naming the stage and the file or column at fault,
//! and the failed stage publishes nothing (a fixed rerun computes it).

mod common;

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Int64Array, StringArray};
use common::{seqpipe, setup};
use seqpipe_stages::table;

/// A pipeline loading `./data` with `loader` (and `params`) into sequences.
fn spec(loader: &str, params: &str, sequences: &str) -> String {
    format!(
        "[pipeline]\nname = \"bad\"\n\n[stages.load]\nkind = \"{loader}\"\n\
         inputs = {{ source = \"./data\" }}\nparams = {{ {params} }}\n\n\
         [stages.sequences]\nkind = \"sequences\"\ninputs = {{ events = \"load.events\" }}\n\
         params = {{ {sequences} }}\n"
    )
}

fn events(path: &Path, users: Vec<i64>) {
    let n = users.len();
    table::write(
        path,
        &table::batch(vec![
            ("user_id", Arc::new(Int64Array::from(users))),
            (
                "item_id",
                Arc::new(Int64Array::from_iter_values(0..n as i64)),
            ),
            (
                "timestamp",
                Arc::new(Int64Array::from_iter_values(0..n as i64)),
            ),
        ])
        .unwrap(),
    )
    .unwrap();
}

/// Runs `spec` over `./data` made by `make`; expects exit 1 and every
/// needle in stderr, and nothing published by the failing stage.
fn expect_failure(name: &str, spec: &str, make: &dyn Fn(&Path), needles: &[&str]) {
    let (dir, _) = setup(spec);
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    make(&data);
    let out = seqpipe(dir.path(), &["run", "p.toml", "--quiet"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{name}: {err}");
    for needle in needles {
        assert!(err.contains(needle), "{name}: {needle:?} not in: {err}");
    }
    let tmp: Vec<_> = std::fs::read_dir(dir.path().join("cache/tmp"))
        .unwrap()
        .collect();
    assert!(tmp.is_empty(), "{name}: staging left behind");
}

#[test]
fn bad_data_files_fail_their_stage_naming_the_file_or_column() {
    let parquet = spec("load.parquet", "", "");
    expect_failure(
        "truncated parquet",
        &parquet,
        &|d| {
            events(&d.join("day=2024-01-01.parquet"), vec![1, 1, 1, 2]);
            let bytes = std::fs::read(d.join("day=2024-01-01.parquet")).unwrap();
            std::fs::write(d.join("day=2024-01-02.parquet"), &bytes[..bytes.len() / 2]).unwrap();
        },
        &["`load`", "day=2024-01-02.parquet"],
    );
    expect_failure(
        "not parquet at all",
        &parquet,
        &|d| std::fs::write(d.join("part-0.parquet"), "user,item\n1,2\n").unwrap(),
        &["`load`", "part-0.parquet", "not a Parquet file"],
    );
    expect_failure(
        "no partition",
        &parquet,
        &|d| std::fs::write(d.join("README.txt"), "nothing here").unwrap(),
        &["`load`"],
    );
    expect_failure(
        "a column named in params is missing",
        &spec("load.parquet", "", "user_column = \"customer\""),
        &|d| events(&d.join("part-0.parquet"), vec![1, 1, 1]),
        &["`sequences`", "customer"],
    );
    expect_failure(
        "user ids of the wrong type",
        &parquet,
        &|d| {
            table::write(
                &d.join("part-0.parquet"),
                &table::batch(vec![
                    ("user_id", Arc::new(StringArray::from(vec!["a", "a", "a"]))),
                    ("item_id", Arc::new(Int64Array::from(vec![1, 2, 3]))),
                    ("timestamp", Arc::new(Int64Array::from(vec![1, 2, 3]))),
                ])
                .unwrap(),
            )
            .unwrap()
        },
        &["`sequences`", "user_id"],
    );
    expect_failure(
        "too few interactions",
        &parquet,
        &|d| events(&d.join("part-0.parquet"), vec![1, 2, 3]),
        &["`sequences`", "no user has 3 or more interactions"],
    );
    expect_failure(
        "csv with a time that is not a time",
        &spec(
            "load.csv",
            "",
            "user_column = \"session\", item_column = \"item\"",
        ),
        &|d| {
            std::fs::write(
                d.join("clicks.csv"),
                "1,2014-04-07T10:51:09.277Z,214536502,0\n1,yesterday,214536500,0\n",
            )
            .unwrap()
        },
        &["`load`", "clicks.csv", "yesterday"],
    );
}

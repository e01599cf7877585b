//! `sequences` with `attributes`: each held-out example's target event and
//! the event before it are traced back to their rows of the input — through
//! time sorting across files, interaction filters, sessions and the
//! temporal split — and their attribute values written beside the examples;
//! `evaluate`'s breakdowns (see metrics.rs) and the report read them.

mod common;

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringArray};
use common::in_process::run_stage;
use seqpipe_stages::attributes;
use seqpipe_stages::table;

/// (user, item, time, event type, domain)
type Row<'a> = (i64, i64, i64, &'a str, Option<&'a str>);

fn put(dir: &Path, name: &str, rows: &[Row<'_>]) {
    std::fs::create_dir_all(dir).unwrap();
    let col = |f: &dyn Fn(&Row<'_>) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from(rows.iter().map(f).collect::<Vec<_>>()))
    };
    let batch = table::batch(vec![
        ("user_id", col(&|r| r.0)),
        ("item_id", col(&|r| r.1)),
        ("timestamp", col(&|r| r.2)),
        (
            "event_type",
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.3).collect::<Vec<_>>(),
            )),
        ),
        (
            "domain",
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.4).collect::<Vec<_>>(),
            )),
        ),
    ])
    .unwrap();
    table::write(&dir.join(name), &batch).unwrap();
}

/// Two files, out of time order. User 1: view(a) t1, view(a) t2, cart(b)
/// t3, purchase(b) t4. User 2: view(a) t5, search(missing) t6, view(b) t7.
/// With `rare`, a first row of user 1 at t0 on item 99 (seen once).
fn log(root: &Path, rare: bool) -> std::path::PathBuf {
    let events = root.join(if rare { "events_rare" } else { "events" });
    let rare_row = [(1, 99, 0, "search", Some("z"))];
    let first: &[Row<'_>] = if rare { &rare_row } else { &[] };
    put(
        &events,
        "a.parquet",
        &[
            first,
            &[
                (1, 12, 4, "purchase", Some("b")),
                (2, 10, 5, "view", Some("a")),
                (1, 10, 1, "view", Some("a")),
            ],
        ]
        .concat(),
    );
    put(
        &events,
        "b.parquet",
        &[
            (1, 11, 2, "view", Some("a")),
            (2, 11, 6, "search", None),
            (1, 12, 3, "cart", Some("b")),
            (2, 12, 7, "view", Some("b")),
        ],
    );
    events
}

fn split_attributes(out: &Path, split: &str) -> Vec<(String, Vec<String>)> {
    attributes::read_split(out, split).unwrap()
}

#[test]
fn leave_one_out_examples_carry_their_target_and_previous_events() {
    let dir = tempfile::tempdir().unwrap();
    let events = log(dir.path(), false);
    let out = run_stage(
        dir.path(),
        "loo",
        "sequences",
        r#"attributes = ["event_type", "domain"]"#,
        &[("events", &events)],
    )
    .unwrap();
    let data = &out["data"];
    let test = split_attributes(data, "test");
    let names: Vec<&str> = test.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "target_event_type",
            "previous_event_type",
            "target_domain",
            "previous_domain"
        ]
    );
    // users in id order: user 1 then user 2
    assert_eq!(test[0].1, ["purchase", "view"]);
    assert_eq!(test[1].1, ["cart", "search"]);
    assert_eq!(test[2].1, ["b", "b"]);
    assert_eq!(test[3].1, ["b", attributes::MISSING]);
    let valid = split_attributes(data, "valid");
    assert_eq!(valid[0].1, ["cart", "search"]);
    assert_eq!(valid[1].1, ["view", "view"]);
    assert_eq!(valid[2].1, ["b", attributes::MISSING]);
    assert_eq!(valid[3].1, ["a", "a"]);
    let b = attributes::breakdowns(&valid);
    let change = b.iter().find(|(n, _)| n == "domain_change").unwrap();
    assert_eq!(change.1, ["changed", "changed"]);
}

#[test]
fn filtered_examples_trace_to_the_rows_of_the_unfiltered_input() {
    let dir = tempfile::tempdir().unwrap();
    let events = log(dir.path(), true);
    // Item 99 occurs once: min_item_interactions = 2 drops its row (the
    // input's first), so kept rows are numbered one less than input rows.
    let out = run_stage(
        dir.path(),
        "filtered",
        "sequences",
        "attributes = [\"event_type\", \"domain\"]\nmin_item_interactions = 2",
        &[("events", &events)],
    )
    .unwrap();
    let test = split_attributes(&out["data"], "test");
    assert_eq!(test[0].1, ["purchase", "view"]);
    assert_eq!(test[1].1, ["cart", "search"]);
    let valid = split_attributes(&out["data"], "valid");
    assert_eq!(valid[0].1, ["cart", "search"]);
    assert_eq!(valid[1].1, ["view", "view"]);
    assert_eq!(valid[3].1, ["a", "a"]);
    let events = log(dir.path(), false);
    // No attributes asked: no attribute files (default bytes unchanged).
    let plain = run_stage(dir.path(), "plain", "sequences", "", &[("events", &events)]).unwrap();
    assert!(split_attributes(&plain["data"], "test").is_empty());
}

#[test]
fn a_missing_attribute_column_fails_naming_the_file_and_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let events = log(dir.path(), false);
    let e = run_stage(
        dir.path(),
        "bad",
        "sequences",
        r#"attributes = ["event_typ"]"#,
        &[("events", &events)],
    )
    .unwrap_err();
    let text = format!("{e:#}");
    assert!(
        text.contains("a.parquet: no attribute column `event_typ`") && text.contains("event_type"),
        "{text}"
    );
}

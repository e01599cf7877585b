//! `graph.cooccurrence` without the engine, on hand-made logs with
//! hand-computed pairs: co-purchase baskets (a repeated item counted once,
//! an oversize basket dropped), co-view sessions (the gap boundary, the
//! window, dedup and truncation of long sessions), item domains and
//! cross-domain counts, `min_count` and log weights, string ids, the same
//! bytes from shuffled rows, an empty input, and the errors for a missing
//! column and bad params.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Int64Array, StringArray};
use arrow::datatypes::{Float64Type, Int64Type};
use common::in_process::run_stage;
use seqpipe_stages::graph_cooccurrence::Summary;
use seqpipe_stages::table;

const KIND: &str = "graph.cooccurrence";
const MIN: i64 = 60_000;
const T0: i64 = 1_700_000_000_000;

/// One event of a hand-made log.
#[derive(Clone, Copy)]
struct Row {
    user: Option<i64>,
    item: Option<i64>,
    time: i64,
    domain: &'static str,
    receipt: Option<i64>,
    event: &'static str,
}

fn buy(user: i64, item: i64, receipt: i64, time: i64, domain: &'static str) -> Row {
    Row {
        user: Some(user),
        item: Some(item),
        time,
        domain,
        receipt: Some(receipt),
        event: "purchase",
    }
}

fn view(user: i64, item: i64, time: i64, domain: &'static str) -> Row {
    Row {
        user: Some(user),
        item: Some(item),
        time,
        domain,
        receipt: None,
        event: "view",
    }
}

/// The toy log. Items 1, 2, 3 are food (3 has one `books` row: 2 votes to
/// 1), 10 is books, 11 has one `books` and one `apps` row (a tie: `apps`).
///
/// Baskets (max_basket = 3): 100 = {1, 2, 10}; 101 = {1, 2, 2} → {1, 2};
/// 102 = {1, 2, 3, 11}: 4 items, dropped.
/// → co_purchase (1,2)×2 food–food, (1,10)×1 and (2,10)×1 food–books.
///
/// Views: user 1 sees 1, 2, 3 a minute apart, then 31 minutes later 10, 1
/// → sessions [1, 2, 3] and [10, 1]; user 2 sees 2, 3, 2 ten seconds apart,
/// then 40 minutes later 11 → sessions [2, 3] and [11].
/// → co_view (1,2), (1,3), (1,10), (2,3)×2; 4 sessions.
///
/// Plus a row with a null user and one with a null item: skipped.
fn toy_log() -> Vec<Row> {
    let h = 60 * MIN;
    let after = T0 + 2 * MIN + 31 * MIN;
    vec![
        buy(1, 1, 100, T0 + 10 * h, "food"),
        buy(1, 2, 100, T0 + 10 * h, "food"),
        buy(1, 10, 100, T0 + 10 * h, "books"),
        buy(2, 1, 101, T0 + 11 * h, "food"),
        buy(2, 2, 101, T0 + 11 * h, "food"),
        buy(2, 2, 101, T0 + 11 * h, "food"),
        buy(2, 1, 102, T0 + 12 * h, "food"),
        buy(2, 2, 102, T0 + 12 * h, "food"),
        buy(2, 3, 102, T0 + 12 * h, "food"),
        buy(2, 11, 102, T0 + 12 * h, "books"),
        view(1, 1, T0, "food"),
        view(1, 2, T0 + MIN, "food"),
        view(1, 3, T0 + 2 * MIN, "food"),
        view(1, 10, after, "books"),
        view(1, 1, after + MIN, "food"),
        view(2, 2, T0, "food"),
        view(2, 3, T0 + 10_000, "books"),
        view(2, 2, T0 + 20_000, "food"),
        view(2, 11, T0 + 20_000 + 40 * MIN, "apps"),
        Row {
            user: None,
            ..view(3, 1, T0, "food")
        },
        Row {
            item: None,
            ..view(3, 1, T0, "food")
        },
    ]
}

const TOY_PARAMS: &str = "max_basket = 3\nview_event_types = [\"view\"]";

/// Writes `rows` as Parquet files in a fresh folder `dir/name`, spread
/// round-robin over `files` files; user and receipt ids as strings
/// (`u1`, `r100`) when `string_ids`.
fn write_log(dir: &Path, name: &str, rows: &[Row], files: usize, string_ids: bool) -> PathBuf {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    for f in 0..files {
        let part: Vec<Row> = rows.iter().skip(f).step_by(files).copied().collect();
        let ids = |prefix: &str, v: Vec<Option<i64>>| -> ArrayRef {
            if string_ids {
                let s: Vec<Option<String>> = v
                    .iter()
                    .map(|x| x.map(|x| format!("{prefix}{x}")))
                    .collect();
                Arc::new(StringArray::from(s))
            } else {
                Arc::new(Int64Array::from(v))
            }
        };
        let batch = table::batch(vec![
            ("user_id", ids("u", part.iter().map(|r| r.user).collect())),
            (
                "item_id",
                Arc::new(Int64Array::from(
                    part.iter().map(|r| r.item).collect::<Vec<_>>(),
                )),
            ),
            (
                "timestamp",
                Arc::new(Int64Array::from_iter_values(part.iter().map(|r| r.time))),
            ),
            (
                "domain",
                Arc::new(StringArray::from_iter_values(part.iter().map(|r| r.domain))),
            ),
            (
                "receipt_id",
                ids("r", part.iter().map(|r| r.receipt).collect()),
            ),
            (
                "event_type",
                Arc::new(StringArray::from_iter_values(part.iter().map(|r| r.event))),
            ),
        ])
        .unwrap();
        table::write(&folder.join(format!("part-{f}.parquet")), &batch).unwrap();
    }
    folder
}

/// An edge as (edge_type, item_a, item_b, domain_a, domain_b, count).
type Edge = (String, i64, i64, String, String, i64);

fn edge(ty: &str, a: i64, b: i64, da: &str, db: &str, count: i64) -> Edge {
    (ty.into(), a, b, da.into(), db.into(), count)
}

fn ints(batch: &arrow::array::RecordBatch, name: &str) -> Vec<i64> {
    let column = batch.column_by_name(name).unwrap();
    column.as_primitive::<Int64Type>().values().to_vec()
}

fn texts(batch: &arrow::array::RecordBatch, name: &str) -> Vec<String> {
    let column = batch.column_by_name(name).unwrap();
    column
        .as_string::<i32>()
        .iter()
        .map(|s| s.unwrap().to_string())
        .collect()
}

fn edges(graph: &Path) -> Vec<Edge> {
    let batch = table::read(&graph.join("edges.parquet")).unwrap();
    let (a, b, n) = (
        ints(&batch, "item_a"),
        ints(&batch, "item_b"),
        ints(&batch, "count"),
    );
    let (ty, da, db) = (
        texts(&batch, "edge_type"),
        texts(&batch, "domain_a"),
        texts(&batch, "domain_b"),
    );
    (0..batch.num_rows())
        .map(|i| {
            (
                ty[i].clone(),
                a[i],
                b[i],
                da[i].clone(),
                db[i].clone(),
                n[i],
            )
        })
        .collect()
}

fn weights(graph: &Path) -> Vec<f64> {
    let batch = table::read(&graph.join("edges.parquet")).unwrap();
    let column = batch.column_by_name("weight").unwrap();
    column.as_primitive::<Float64Type>().values().to_vec()
}

fn summary(graph: &Path) -> Summary {
    serde_json::from_str(&std::fs::read_to_string(graph.join("summary.json")).unwrap()).unwrap()
}

fn run(dir: &Path, tag: &str, params: &str, events: &Path) -> PathBuf {
    let out = run_stage(dir, tag, KIND, params, &[("events", events)]).unwrap();
    out["graph"].clone()
}

fn run_err(dir: &Path, params: &str, events: &Path) -> String {
    let err = run_stage(dir, "err", KIND, params, &[("events", events)]).expect_err("should fail");
    format!("{err:#}")
}

#[test]
fn toy_log_gives_the_hand_computed_edges_items_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let events = write_log(dir.path(), "events", &toy_log(), 1, false);
    let graph = run(dir.path(), "toy", TOY_PARAMS, &events);
    assert_eq!(
        edges(&graph),
        [
            edge("co_purchase", 1, 2, "food", "food", 2),
            edge("co_purchase", 1, 10, "food", "books", 1),
            edge("co_purchase", 2, 10, "food", "books", 1),
            edge("co_view", 1, 2, "food", "food", 1),
            edge("co_view", 1, 3, "food", "food", 1),
            edge("co_view", 1, 10, "food", "books", 1),
            edge("co_view", 2, 3, "food", "food", 2),
        ]
    );
    // weighting = "count": the weight is the count.
    assert_eq!(weights(&graph), [2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0]);

    let items = table::read(&graph.join("items.parquet")).unwrap();
    assert_eq!(ints(&items, "item_id"), [1, 2, 3, 10, 11]);
    assert_eq!(
        texts(&items, "domain"),
        ["food", "food", "food", "books", "apps"]
    );
    assert_eq!(ints(&items, "occurrences"), [5, 7, 3, 2, 2]);
    assert_eq!(ints(&items, "degree"), [5, 4, 2, 3, 0]);

    let s = summary(&graph);
    assert_eq!(
        (s.rows, s.skipped_null_user_or_item, s.views_without_time),
        (21, 2, 0)
    );
    assert_eq!((s.baskets_kept, s.baskets_dropped), (2, 1));
    assert_eq!((s.sessions, s.sessions_truncated), (4, 0));
    assert_eq!((s.vocabulary, s.items_with_edges), (5, 4));
    assert_eq!(s.item_coverage_pct, Some(80.0));
    let cp = &s.edges["co_purchase"];
    assert_eq!(
        (
            cp.pairs,
            cp.same_domain,
            cp.cross_domain,
            cp.below_min_count
        ),
        (3, 1, 2, 0)
    );
    let cv = &s.edges["co_view"];
    assert_eq!(
        (
            cv.pairs,
            cv.same_domain,
            cv.cross_domain,
            cv.below_min_count
        ),
        (4, 3, 1, 0)
    );
    let pairs =
        |e: &seqpipe_stages::graph_cooccurrence::EdgeSummary| -> Vec<(String, String, u64)> {
            e.domain_pairs
                .iter()
                .map(|d| (d.domain_a.clone(), d.domain_b.clone(), d.pairs))
                .collect()
        };
    assert_eq!(
        pairs(cp),
        [
            ("books".into(), "food".into(), 2),
            ("food".into(), "food".into(), 1)
        ]
    );
    assert_eq!(
        pairs(cv),
        [
            ("books".into(), "food".into(), 1),
            ("food".into(), "food".into(), 3)
        ]
    );
    let md = std::fs::read_to_string(graph.join("summary.md")).unwrap();
    assert!(md.contains("| co_purchase | 3 | 1 | 2 | 0 |"), "{md}");
    assert!(md.contains("Baskets: 2 kept, 1 dropped"), "{md}");
}

#[test]
fn min_count_drops_rare_pairs_and_log_weights_are_ln_1_plus_count() {
    let dir = tempfile::tempdir().unwrap();
    let events = write_log(dir.path(), "events", &toy_log(), 1, false);
    let params = format!("{TOY_PARAMS}\nmin_count = 2\nweighting = \"log\"");
    let graph = run(dir.path(), "rare", &params, &events);
    assert_eq!(
        edges(&graph),
        [
            edge("co_purchase", 1, 2, "food", "food", 2),
            edge("co_view", 2, 3, "food", "food", 2),
        ]
    );
    for w in weights(&graph) {
        assert!((w - 3f64.ln()).abs() < 1e-12, "{w} is not ln 3");
    }
    let s = summary(&graph);
    assert_eq!(s.edges["co_purchase"].below_min_count, 2);
    assert_eq!(s.edges["co_view"].below_min_count, 3);
    // Item 10 loses all its edges; 3 keeps (2,3).
    let items = table::read(&graph.join("items.parquet")).unwrap();
    assert_eq!(ints(&items, "degree"), [1, 2, 1, 0, 0]);
    assert_eq!(s.items_with_edges, 3);
}

#[test]
fn string_user_and_basket_ids_give_the_same_graph_as_integers() {
    let dir = tempfile::tempdir().unwrap();
    let ints = write_log(dir.path(), "ints", &toy_log(), 1, false);
    let strings = write_log(dir.path(), "strings", &toy_log(), 1, true);
    let a = run(dir.path(), "ints", TOY_PARAMS, &ints);
    let b = run(dir.path(), "strings", TOY_PARAMS, &strings);
    assert_eq!(edges(&a), edges(&b));
    assert_eq!(summary(&a), summary(&b));
}

#[test]
fn shuffled_rows_in_several_files_give_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let rows = toy_log();
    // A fixed permutation: 21 rows, stride 8 (coprime with 21).
    let shuffled: Vec<Row> = (0..rows.len()).map(|i| rows[i * 8 % rows.len()]).collect();
    let a = write_log(dir.path(), "a", &rows, 1, false);
    let b = write_log(dir.path(), "b", &shuffled, 3, false);
    let ga = run(dir.path(), "a", TOY_PARAMS, &a);
    let gb = run(dir.path(), "b", TOY_PARAMS, &b);
    for file in [
        "edges.parquet",
        "items.parquet",
        "summary.json",
        "summary.md",
    ] {
        let (x, y) = (
            std::fs::read(ga.join(file)).unwrap(),
            std::fs::read(gb.join(file)).unwrap(),
        );
        assert!(x == y, "{file} differs");
    }
}

/// Views only: columns user_id, item_id, timestamp.
fn views_only(dir: &Path, name: &str, views: &[(i64, i64, i64)]) -> PathBuf {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    let col = |f: fn(&(i64, i64, i64)) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(views.iter().map(f)))
    };
    let batch = table::batch(vec![
        ("user_id", col(|v| v.0)),
        ("item_id", col(|v| v.1)),
        ("timestamp", col(|v| v.2)),
    ])
    .unwrap();
    table::write(&folder.join("views.parquet"), &batch).unwrap();
    folder
}

const VIEWS_ONLY: &str = "edge_types = [\"co_view\"]\ndomain_column = \"\"";

/// (item_a, item_b, count) of co-view edges.
fn view_pairs(graph: &Path) -> Vec<(i64, i64, i64)> {
    edges(graph)
        .into_iter()
        .map(|(ty, a, b, da, db, n)| {
            assert_eq!(
                (ty.as_str(), da.as_str(), db.as_str()),
                ("co_view", "all", "all")
            );
            (a, b, n)
        })
        .collect()
}

#[test]
fn a_gap_of_exactly_session_gap_minutes_stays_in_the_session_one_ms_more_splits() {
    let dir = tempfile::tempdir().unwrap();
    let gap = 30 * MIN;
    let events = views_only(
        dir.path(),
        "ms",
        &[
            (1, 1, T0),
            (1, 2, T0 + gap),
            (2, 3, T0),
            (2, 4, T0 + gap + 1),
        ],
    );
    let graph = run(dir.path(), "ms", VIEWS_ONLY, &events);
    assert_eq!(view_pairs(&graph), [(1, 2, 1)]);
    assert_eq!(summary(&graph).sessions, 3);

    // In seconds: 1800 s is the gap, 1801 s is over it.
    let events = views_only(
        dir.path(),
        "s",
        &[(1, 1, 0), (1, 2, 1800), (2, 3, 0), (2, 4, 1801)],
    );
    let params = format!("{VIEWS_ONLY}\ntime_unit = \"s\"");
    assert_eq!(
        view_pairs(&run(dir.path(), "s", &params, &events)),
        [(1, 2, 1)]
    );
}

#[test]
fn window_limits_co_view_pairs_to_items_that_many_positions_apart() {
    let dir = tempfile::tempdir().unwrap();
    // One session: items 4, 1, 3, 2 a minute apart (order is by time).
    let events = views_only(
        dir.path(),
        "events",
        &[
            (7, 2, T0 + 3 * MIN),
            (7, 4, T0),
            (7, 1, T0 + MIN),
            (7, 3, T0 + 2 * MIN),
        ],
    );
    let with = |tag: &str, window: i64| {
        let params = format!("{VIEWS_ONLY}\nwindow = {window}");
        view_pairs(&run(dir.path(), tag, &params, &events))
    };
    // Neighbours 4–1, 1–3, 3–2.
    assert_eq!(with("w1", 1), [(1, 3, 1), (1, 4, 1), (2, 3, 1)]);
    // Plus two apart: 4–3, 1–2.
    assert_eq!(
        with("w2", 2),
        [(1, 2, 1), (1, 3, 1), (1, 4, 1), (2, 3, 1), (3, 4, 1)]
    );
    // 0 = all six pairs.
    assert_eq!(
        with("w0", 0),
        [
            (1, 2, 1),
            (1, 3, 1),
            (1, 4, 1),
            (2, 3, 1),
            (2, 4, 1),
            (3, 4, 1)
        ]
    );
}

#[test]
fn a_long_session_keeps_its_last_distinct_items_each_at_its_first_view() {
    let dir = tempfile::tempdir().unwrap();
    // Views 1, 2, 1, 3, 4, 5 → distinct in order [1, 2, 3, 4, 5]; max 3
    // keeps [3, 4, 5].
    let items = [1, 2, 1, 3, 4, 5];
    let views: Vec<(i64, i64, i64)> = items
        .iter()
        .enumerate()
        .map(|(i, &item)| (1, item, T0 + i as i64 * MIN))
        .collect();
    let events = views_only(dir.path(), "events", &views);
    let params = format!("{VIEWS_ONLY}\nmax_session = 3\nwindow = 0");
    let graph = run(dir.path(), "long", &params, &events);
    assert_eq!(view_pairs(&graph), [(3, 4, 1), (3, 5, 1), (4, 5, 1)]);
    let s = summary(&graph);
    assert_eq!((s.sessions, s.sessions_truncated), (1, 1));
}

#[test]
fn an_empty_input_gives_an_empty_graph() {
    let dir = tempfile::tempdir().unwrap();
    let events = write_log(dir.path(), "events", &[], 1, false);
    let graph = run(dir.path(), "empty", TOY_PARAMS, &events);
    assert_eq!(edges(&graph), []);
    let items = table::read(&graph.join("items.parquet")).unwrap();
    assert_eq!(items.num_rows(), 0);
    let s = summary(&graph);
    assert_eq!((s.rows, s.vocabulary, s.item_coverage_pct), (0, 0, None));
    assert_eq!(s.edges["co_purchase"].pairs, 0);
    assert_eq!(s.edges["co_view"].pairs, 0);
}

#[test]
fn a_missing_column_is_named_with_the_stage_and_a_did_you_mean() {
    let dir = tempfile::tempdir().unwrap();
    let events = write_log(dir.path(), "events", &toy_log(), 1, false);
    let e = run_err(dir.path(), "basket_column = \"reciept_id\"", &events);
    assert!(
        e.contains("stage `graph.cooccurrence`: basket_column: no column `reciept_id`"),
        "{e}"
    );
    assert!(e.contains("did you mean `receipt_id`?"), "{e}");
    assert!(
        e.contains("basket_column = \"\" builds no co-purchase pairs"),
        "{e}"
    );

    // Under the default params a log needs a basket column (the fix is in
    // the message above); an item column of strings is refused by type.
    let views = views_only(dir.path(), "views", &[(1, 1, T0)]);
    let e = run_err(dir.path(), "domain_column = \"\"", &views);
    assert!(e.contains("basket_column: no column `receipt_id`"), "{e}");
    let e = run_err(dir.path(), "item_column = \"domain\"", &events);
    assert!(
        e.contains("item_column: column `domain`") && e.contains("expected integer ids"),
        "{e}"
    );
}

#[test]
fn bad_params_are_rejected_naming_the_param() {
    let dir = tempfile::tempdir().unwrap();
    let events = write_log(dir.path(), "events", &toy_log(), 1, false);
    for (params, start) in [
        ("max_basket = 1", "params: max_basket: 1 is below 2"),
        ("window = -1", "params: window: -1 is negative"),
        ("max_session = 0", "params: max_session:"),
        ("min_count = 0", "params: min_count:"),
        ("weighting = \"pmi\"", "params: weighting:"),
        ("time_unit = \"us\"", "params: time_unit:"),
        (
            "edge_types = [\"co_veiw\"]",
            "params: edge_types: unknown edge type \"co_veiw\" (did you mean `co_view`?)",
        ),
        ("edge_types = []", "params: edge_types: empty"),
        (
            "event_type_column = \"\"\nview_event_types = [\"view\"]",
            "params: view_event_types:",
        ),
    ] {
        let e = run_err(dir.path(), params, &events);
        assert!(e.starts_with(start), "{params}: {e}");
    }
}

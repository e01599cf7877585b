//! `load.text` and `load.csv` without the engine, on tiny hand-written
//! files with hand-computed rows, ids and timestamps, and a chain of each
//! into `sequences`. Stages run through the registry with a hand-built
//! `StageContext`, as the engine would run them.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use common::in_process::{run_stage, write};
use seqpipe_stages::seqdata::SequenceData;
use seqpipe_stages::table;

fn events(out: &BTreeMap<String, PathBuf>) -> RecordBatch {
    table::read(&out["events"].join("events.parquet")).unwrap()
}

fn summary(out: &BTreeMap<String, PathBuf>) -> String {
    std::fs::read_to_string(out["events"].join("summary.txt"))
        .unwrap()
        .trim()
        .to_string()
}

fn names(batch: &RecordBatch) -> Vec<String> {
    batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

fn ints(batch: &RecordBatch, name: &str) -> Vec<i64> {
    let col = batch.column_by_name(name).unwrap();
    let col = col.as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(col.null_count(), 0);
    col.values().to_vec()
}

fn strs(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let col = batch.column_by_name(name).unwrap();
    let col = col.as_any().downcast_ref::<StringArray>().unwrap();
    col.iter().map(|s| s.map(String::from)).collect()
}

fn some(v: &[&str]) -> Vec<Option<String>> {
    v.iter().map(|s| Some(s.to_string())).collect()
}

/// The stage's error, displayed.
fn error(r: anyhow::Result<BTreeMap<String, PathBuf>>) -> String {
    format!("{:#}", r.expect_err("the stage should fail"))
}

// ---------------------------------------------------------------- load.text

#[test]
fn text_pairs_from_a_folder_in_file_then_line_order() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    // b.txt sorts after a.txt; notes.md and .hidden.txt are not read; the
    // blank line is skipped; tabs and runs of spaces separate alike.
    write(&src, "b.txt", "1 30\n2\t40\n");
    write(&src, "a.txt", "\u{feff}1 10\n1  20\n\n2 10\r\n");
    write(&src, "notes.md", "not data\n");
    write(&src, ".hidden.txt", "x\n");
    let out = run_stage(dir.path(), "t", "load.text", "", &[("source", &src)]).unwrap();
    let e = events(&out);
    assert_eq!(names(&e), ["user_id", "item_id", "timestamp"]);
    assert_eq!(ints(&e, "user_id"), [1, 1, 2, 1, 2]);
    assert_eq!(ints(&e, "item_id"), [10, 20, 10, 30, 40]);
    // The position over the whole input: a.txt's three events, then b.txt's.
    assert_eq!(ints(&e, "timestamp"), [0, 1, 2, 3, 4]);
    assert_eq!(
        summary(&out),
        "load.text (pairs): 2 file(s), 5 lines, 5 events, 2 users, 4 items."
    );
}

#[test]
fn text_sequence_lines_expand_left_to_right() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "seq.data", "1 5 3 9\n2 3\n1 4\n");
    let out = run_stage(
        dir.path(),
        "t",
        "load.text",
        "format = \"sequence\"",
        &[("source", &file)],
    )
    .unwrap();
    let e = events(&out);
    assert_eq!(ints(&e, "user_id"), [1, 1, 1, 2, 1]);
    assert_eq!(ints(&e, "item_id"), [5, 3, 9, 3, 4]);
    assert_eq!(ints(&e, "timestamp"), [0, 1, 2, 3, 4]);
    assert_eq!(
        summary(&out),
        "load.text (sequence): 1 file(s), 3 lines, 5 events, 2 users, 4 items."
    );
}

#[test]
fn text_tokens_get_ids_by_first_appearance_and_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    // Users are text (alice), and so are items (B00X): every token of the
    // column is numbered by first appearance — `7` and `007` apart.
    let file = write(dir.path(), "s.txt", "alice B00X 7 B00X\nbob 007 7\n");
    let out = run_stage(
        dir.path(),
        "both",
        "load.text",
        "format = \"sequence\"",
        &[("source", &file)],
    )
    .unwrap();
    let e = events(&out);
    assert_eq!(
        names(&e),
        [
            "user_id",
            "item_id",
            "timestamp",
            "user_token",
            "item_token"
        ]
    );
    // alice=1, bob=2; B00X=1, 7=2, 007=3.
    assert_eq!(ints(&e, "user_id"), [1, 1, 1, 2, 2]);
    assert_eq!(ints(&e, "item_id"), [1, 2, 1, 3, 2]);
    assert_eq!(ints(&e, "timestamp"), [0, 1, 2, 3, 4]);
    assert_eq!(
        strs(&e, "user_token"),
        some(&["alice", "alice", "alice", "bob", "bob"])
    );
    assert_eq!(
        strs(&e, "item_token"),
        some(&["B00X", "7", "B00X", "007", "7"])
    );
    assert_eq!(
        summary(&out),
        "load.text (sequence): 1 file(s), 2 lines, 5 events, 2 users, 3 items; \
         user ids by first appearance (tokens in user_token); \
         item ids by first appearance (tokens in item_token)."
    );

    // Integer users stay as written; only the item column turns to text,
    // even though its first tokens (10, 11) were integers.
    let file = write(dir.path(), "p.txt", "3 10\n3 11\n4 B\n4 10\n");
    let out = run_stage(dir.path(), "items", "load.text", "", &[("source", &file)]).unwrap();
    let e = events(&out);
    assert_eq!(names(&e), ["user_id", "item_id", "timestamp", "item_token"]);
    assert_eq!(ints(&e, "user_id"), [3, 3, 4, 4]);
    assert_eq!(ints(&e, "item_id"), [1, 2, 3, 1]);
    assert_eq!(strs(&e, "item_token"), some(&["10", "11", "B", "10"]));
}

#[test]
fn text_errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let one = write(d, "one.txt", "1 10\n\n2\n");
    let msg = error(run_stage(d, "a", "load.text", "", &[("source", &one)]));
    assert!(
        msg.contains(&format!("{}:3: one field (`2`)", one.display())),
        "{msg}"
    );
    assert!(
        msg.contains("format = \"pairs\" expects `user item`"),
        "{msg}"
    );

    let three = write(d, "three.txt", "1 10 20\n");
    let msg = error(run_stage(d, "b", "load.text", "", &[("source", &three)]));
    assert!(
        msg.contains(&format!("{}:1: 3 fields", three.display())),
        "{msg}"
    );
    assert!(msg.contains("set format = \"sequence\""), "{msg}");

    let lonely = write(d, "lonely.txt", "1 10 11\n2\n");
    let msg = error(run_stage(
        d,
        "c",
        "load.text",
        "format = \"sequence\"",
        &[("source", &lonely)],
    ));
    assert!(
        msg.contains(&format!("{}:2: only a user (`2`)", lonely.display())),
        "{msg}"
    );

    let latin1 = d.join("latin1.txt");
    std::fs::write(&latin1, b"1 10\n2 caf\xe9\n").unwrap();
    let msg = error(run_stage(d, "d", "load.text", "", &[("source", &latin1)]));
    assert!(
        msg.contains(&format!("{}:2: not UTF-8 text", latin1.display())),
        "{msg}"
    );

    let blank = write(d, "blank.txt", "\n  \n");
    let msg = error(run_stage(d, "e", "load.text", "", &[("source", &blank)]));
    assert!(msg.contains("no events"), "{msg}");

    let empty = d.join("empty");
    std::fs::create_dir(&empty).unwrap();
    write(&empty, "data.csv", "1,2\n");
    let msg = error(run_stage(d, "f", "load.text", "", &[("source", &empty)]));
    assert!(
        msg.contains("no *.txt file in the folder (1 other file(s)"),
        "{msg}"
    );

    // A misspelt format is a plan-time params error.
    let msg = error(run_stage(
        d,
        "g",
        "load.text",
        "format = \"sequences\"",
        &[("source", &one)],
    ));
    assert!(
        msg.contains("format: unknown format `sequences` (did you mean `sequence`?)"),
        "{msg}"
    );
}

// ----------------------------------------------------------------- load.csv

/// The first clicks of YooChoose's yoochoose-clicks.dat (session,
/// timestamp, item, category; no header), with one category changed to `S`.
const CLICKS: &str = "1,2014-04-07T10:51:09.277Z,214536502,0\n\
                      1,2014-04-07T10:54:09.868Z,214536500,0\n\
                      1,2014-04-07T10:54:46.998Z,214536506,0\n\
                      1,2014-04-07T10:57:00.306Z,214577561,0\n\
                      2,2014-04-07T13:56:37.614Z,214662742,S\n\
                      2,2014-04-07T13:57:19.373Z,214662742,0\n";

/// By hand: 1970-01-01 → 2014-01-01 is 44 years, 11 of them leap (1972,
/// 1976, …, 2012): 44·365 + 11 = 16071 days; + January 31 + February 28 +
/// March 31 + 6 = 16167 days to 2014-04-07, × 86 400 = 1 396 828 800 s.
/// 10:51:09 = 36 000 + 3 060 + 9 = 39 069 s, so 10:51:09.277 is
/// 1 396 867 869 277 ms. Likewise 10:54:09 = 39 249 s, 10:54:46 =
/// 39 286 s, 10:57:00 = 39 420 s, 13:56:37 = 46 800 + 3 360 + 37 =
/// 50 197 s and 13:57:19 = 50 239 s after 1 396 828 800, each × 1000 plus
/// its milliseconds.
const CLICK_MS: [i64; 6] = [
    1_396_867_869_277,
    1_396_868_049_868,
    1_396_868_086_998,
    1_396_868_220_306,
    1_396_878_997_614,
    1_396_879_039_373,
];

#[test]
fn csv_reads_yoochoose_clicks_with_iso_times_in_epoch_ms() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "yoochoose-clicks.dat", CLICKS);
    let out = run_stage(dir.path(), "c", "load.csv", "", &[("source", &file)]).unwrap();
    let e = events(&out);
    assert_eq!(names(&e), ["user_id", "item_id", "timestamp", "category"]);
    assert_eq!(ints(&e, "user_id"), [1, 1, 1, 1, 2, 2]);
    assert_eq!(
        ints(&e, "item_id"),
        [214536502, 214536500, 214536506, 214577561, 214662742, 214662742]
    );
    assert_eq!(ints(&e, "timestamp"), CLICK_MS);
    assert_eq!(strs(&e, "category"), some(&["0", "0", "0", "0", "S", "0"]));
    assert_eq!(
        summary(&out),
        "load.csv: 1 file(s), 6 rows, 2 users, 5 items, time iso8601 → epoch ms; kept category."
    );
}

#[test]
fn csv_header_delimiter_names_and_unix_times() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    // Two files, each with a header line that is skipped (its names are not
    // read: `columns` names the fields); a.csv before b.csv; x.dat ignored.
    write(&src, "b.csv", "u;i;r;t\n8;100;3;1396867871\n");
    write(
        &src,
        "a.csv",
        "u;i;r;t\n7;100;4.5;1396867869.2779\n7;101;;1396867870\n",
    );
    write(&src, "x.dat", "junk\n");
    let params = r#"
        header = true
        delimiter = ";"
        columns = ["user", "item", "rating", "ts"]
        user_column = "user"
        time_column = "ts"
        timestamp_format = "unix_s"
    "#;
    let out = run_stage(dir.path(), "a", "load.csv", params, &[("source", &src)]).unwrap();
    let e = events(&out);
    assert_eq!(names(&e), ["user_id", "item_id", "timestamp", "rating"]);
    assert_eq!(ints(&e, "user_id"), [7, 7, 8]);
    assert_eq!(ints(&e, "item_id"), [100, 101, 100]);
    // unix_s → ms; digits past the millisecond dropped (.2779 → 277).
    assert_eq!(
        ints(&e, "timestamp"),
        [1_396_867_869_277, 1_396_867_870_000, 1_396_867_871_000]
    );
    // An empty field is a null.
    assert_eq!(
        strs(&e, "rating"),
        [Some("4.5".to_string()), None, Some("3".to_string())]
    );

    // Tabs, an ignored field (""), unix_ms, text sessions (s1 = 1, s2 = 2,
    // kept in user_token), a quoted field.
    let file = write(
        dir.path(),
        "tabs.tsv",
        "s1\t9\tjunk\t1000\ns2\t9\t\"x\ty\"\t999\ns1\t10\t\t1001\n",
    );
    let params = r#"
        delimiter = "\t"
        columns = ["session", "item", "", "timestamp"]
        timestamp_format = "unix_ms"
    "#;
    let out = run_stage(dir.path(), "b", "load.csv", params, &[("source", &file)]).unwrap();
    let e = events(&out);
    assert_eq!(names(&e), ["user_id", "item_id", "timestamp", "user_token"]);
    assert_eq!(ints(&e, "user_id"), [1, 2, 1]);
    assert_eq!(ints(&e, "item_id"), [9, 9, 10]);
    assert_eq!(ints(&e, "timestamp"), [1000, 999, 1001]);
    assert_eq!(strs(&e, "user_token"), some(&["s1", "s2", "s1"]));
    assert_eq!(
        summary(&out),
        "load.csv: 1 file(s), 3 rows, 2 users, 2 items, time unix_ms → epoch ms; \
         user ids by first appearance (tokens in user_token)."
    );
}

#[test]
fn csv_errors_name_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A bad time on the third line.
    let bad = CLICKS.replace("10:54:46.998Z", "10:54:46.998Q");
    let file = write(d, "bad.dat", &bad);
    let msg = error(run_stage(d, "a", "load.csv", "", &[("source", &file)]));
    assert!(
        msg.contains(&format!(
            "{}:3: column 2 `timestamp`: `2014-04-07T10:54:46.998Q` is not an ISO 8601 time",
            file.display()
        )),
        "{msg}"
    );

    // With a header, lines still count from the file's first.
    let file = write(
        d,
        "header.csv",
        "session,timestamp,item,category\n1,1396867869,5,0\n1,soon,6,0\n",
    );
    let msg = error(run_stage(
        d,
        "b",
        "load.csv",
        "header = true\ntimestamp_format = \"unix_s\"",
        &[("source", &file)],
    ));
    assert!(
        msg.contains(&format!(
            "{}:3: column 2 `timestamp`: `soon` is not unix seconds",
            file.display()
        )),
        "{msg}"
    );

    // A short row, and a file that uses another delimiter.
    let file = write(d, "short.dat", "1,2014-04-07T10:51:09.277Z,214536502\n");
    let msg = error(run_stage(d, "c", "load.csv", "", &[("source", &file)]));
    assert!(
        msg.contains(&format!(
            "{}:1: 3 field(s), but `columns` names 4 (session, timestamp, item, category)",
            file.display()
        )),
        "{msg}"
    );
    let file = write(d, "semi.dat", "1;2014-04-07T10:51:09.277Z;214536502;0\n");
    let msg = error(run_stage(d, "d", "load.csv", "", &[("source", &file)]));
    assert!(msg.contains("is the delimiter `;`?"), "{msg}");

    // An empty session.
    let file = write(d, "nosession.dat", ",2014-04-07T10:51:09.277Z,5,0\n");
    let msg = error(run_stage(d, "e", "load.csv", "", &[("source", &file)]));
    assert!(
        msg.contains(&format!(
            "{}:1: column 1 `session`: `` is not a value (it is empty)",
            file.display()
        )),
        "{msg}"
    );

    // Plan-time params errors.
    for (params, expected) in [
        (
            "timestamp_format = \"unix\"",
            "timestamp_format: unknown format `unix`",
        ),
        (
            "delimiter = \";;\"",
            "delimiter: `;;` must be one ASCII character",
        ),
        (
            "columns = [\"user\", \"timestamp\", \"item\"]",
            "user_column: `session` is not in columns",
        ),
        (
            "columns = [\"session\", \"timestamp\", \"item\", \"user_id\"]",
            "columns: `user_id` is a column the stage writes itself",
        ),
        (
            "columns = [\"session\", \"timestamp\", \"item\", \"item\"]",
            "columns: `item` is listed twice",
        ),
    ] {
        let msg = error(run_stage(d, "f", "load.csv", params, &[("source", &file)]));
        assert!(msg.contains(expected), "{params}: {msg}");
    }
}

// ----------------------------------------------------------- into sequences

#[test]
fn both_loaders_feed_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Text tokens: alice = 1, bob = 2; B00X = 1, C7 = 2, D9 = 3, E1 = 4.
    let file = write(d, "s.txt", "alice B00X C7 D9 E1\nbob C7 B00X D9\n");
    let out = run_stage(
        d,
        "text",
        "load.text",
        "format = \"sequence\"",
        &[("source", &file)],
    )
    .unwrap();
    let seq = run_stage(
        d,
        "text-seq",
        "sequences",
        "",
        &[("events", &out["events"])],
    )
    .unwrap();
    let data = SequenceData::read(&seq["data"]).unwrap();
    assert_eq!((data.meta.num_users, data.meta.num_items), (2, 4));
    // Items remap by ascending id, 1..4 → 1..4; time is the line order.
    let alice = data.test.iter().find(|e| e.user == 1).unwrap();
    assert_eq!((alice.history.clone(), alice.target), (vec![1, 2, 3], 4));
    let bob = data.test.iter().find(|e| e.user == 2).unwrap();
    assert_eq!((bob.history.clone(), bob.target), (vec![2, 1], 3));

    // YooChoose: session 2 has two clicks (< min_len 3) and is dropped;
    // session 1's items 214536500 < …502 < …506 < 214577561 become 1..4,
    // clicked in the order …502, …500, …506, …561 → [2, 1, 3, 4].
    let file = write(d, "clicks.dat", CLICKS);
    let out = run_stage(d, "csv", "load.csv", "", &[("source", &file)]).unwrap();
    let seq = run_stage(d, "csv-seq", "sequences", "", &[("events", &out["events"])]).unwrap();
    let data = SequenceData::read(&seq["data"]).unwrap();
    assert_eq!((data.meta.num_users, data.meta.num_items), (1, 4));
    let s1 = &data.test[0];
    assert_eq!(
        (s1.user, s1.history.clone(), s1.target),
        (1, vec![2, 1, 3], 4)
    );
}

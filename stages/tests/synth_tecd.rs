//! `synth.tecd` in process: the partition layout and schemas, determinism,
//! the planted defect rates (recounted from the files, not taken from the
//! manifest), the event count at small and large scale, `load.parquet`
//! reading the dataset, and the sequential structure of the sessions.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use common::in_process::run_stage;
use seqpipe_stages::synth_tecd::{self, Params};
use seqpipe_stages::table;

/// Runs `synth.tecd` (seed 1) with `params`; returns the dataset folder.
fn synth(dir: &Path, tag: &str, params: &str) -> PathBuf {
    run_stage(dir, tag, "synth.tecd", params, &[]).unwrap()["dataset"].clone()
}

/// Every `*.parquet` under `dir`, relative, sorted.
fn parquet_files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The rows of every Parquet file in folder `dir` (one table/domain).
fn read_folder(dir: &Path) -> RecordBatch {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    let batches: Vec<RecordBatch> = files.iter().map(|f| table::read(f).unwrap()).collect();
    arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

fn columns(batch: &RecordBatch) -> Vec<(String, DataType, bool)> {
    batch
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable()))
        .collect()
}

fn col(name: &str, ty: DataType, nullable: bool) -> (String, DataType, bool) {
    (name.to_string(), ty, nullable)
}

fn ints(batch: &RecordBatch, name: &str) -> Vec<Option<i64>> {
    batch
        .column_by_name(name)
        .unwrap()
        .as_primitive::<Int64Type>()
        .iter()
        .collect()
}

fn strings(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
    batch
        .column_by_name(name)
        .unwrap()
        .as_string::<i32>()
        .iter()
        .map(|s| s.map(str::to_string))
        .collect()
}

fn manifest(dataset: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dataset.join("manifest.json")).unwrap()).unwrap()
}

fn event_rows(dataset: &Path, domain: &str) -> u64 {
    manifest(dataset)["rows"][format!("events/{domain}")]
        .as_u64()
        .unwrap()
}

#[test]
fn writes_one_partition_per_day_and_domain_with_the_documented_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(
        dir.path(),
        "a",
        "events = 20000\ndays = 3\nstart_day = \"2024-02-28\"",
    );
    let days = ["2024-02-28", "2024-02-29", "2024-03-01"];
    let mut expected: Vec<String> = Vec::new();
    for (table, domains) in [
        ("events", &["marketplace", "payments", "retail"][..]),
        ("receipts", &["marketplace", "retail"][..]),
    ] {
        for domain in domains {
            expected.extend(days.iter().map(|d| format!("{table}/{domain}/{d}.parquet")));
        }
    }
    expected.extend([
        "brands/brands.parquet".to_string(),
        "items/marketplace/items.parquet".into(),
        "items/retail/items.parquet".into(),
        "users/users.parquet".into(),
    ]);
    expected.sort();
    assert_eq!(parquet_files(&data), expected);
    assert!(data.join("manifest.json").is_file());

    use DataType::{Float64, Int64, Utf8};
    let events = read_folder(&data.join("events/marketplace"));
    assert_eq!(
        columns(&events),
        [
            col("user_id", Int64, false),
            col("item_id", Int64, false),
            col("timestamp", Int64, false),
            col("event_type", Utf8, false),
            col("domain", Utf8, false),
            col("subdomain", Utf8, true),
            col("receipt_id", Int64, true),
        ]
    );
    assert_eq!(
        columns(&read_folder(&data.join("events/retail"))),
        columns(&events)
    );
    // Timestamps fall inside their partition's day (UTC).
    let first = table::read(&data.join("events/retail/2024-02-29.parquet")).unwrap();
    let day_start = 1_709_164_800_000i64; // 2024-02-29T00:00:00Z
    assert!(ints(&first, "timestamp")
        .iter()
        .all(|t| (day_start..day_start + 86_400_000).contains(&t.unwrap())));
    assert_eq!(
        columns(&read_folder(&data.join("events/payments"))),
        [
            col("user_id", Int64, false),
            col("brand_id", Int64, true),
            col("timestamp", Int64, false),
            col("price", Float64, true),
            col("domain", Utf8, false),
        ]
    );
    assert_eq!(
        columns(&read_folder(&data.join("receipts/retail"))),
        [
            col("receipt_id", Int64, false),
            col("user_id", Int64, false),
            col("item_id", Int64, false),
            col("timestamp", Int64, false),
            col("brand_id", Int64, true),
            col("price", Float64, true),
            col("domain", Utf8, false),
        ]
    );
    let items = read_folder(&data.join("items/retail"));
    let item_types: Vec<DataType> = columns(&items).into_iter().map(|c| c.1).collect();
    assert_eq!(item_types, [Int64, Utf8, Utf8, Float64, Int64, Utf8]);
    let users = read_folder(&data.join("users"));
    let user_types: Vec<DataType> = columns(&users).into_iter().map(|c| c.1).collect();
    assert_eq!(user_types, [Int64, Utf8, Int64]);
    let brands = read_folder(&data.join("brands"));
    assert!(
        matches!(&columns(&brands)[2], (name, DataType::List(f), _) if name == "embedding" && f.data_type() == &DataType::Float32)
    );

    // Item ids never collide across domains; events only name known items.
    let retail_ids: BTreeSet<i64> = ints(&items, "item_id").into_iter().flatten().collect();
    let market_ids: BTreeSet<i64> = ints(&read_folder(&data.join("items/marketplace")), "item_id")
        .into_iter()
        .flatten()
        .collect();
    assert!(retail_ids.is_disjoint(&market_ids));
    assert!(ints(&events, "item_id")
        .iter()
        .all(|i| market_ids.contains(&i.unwrap())));

    // Receipts are exactly the purchase rows of the events.
    for domain in ["retail", "marketplace"] {
        let events = read_folder(&data.join("events").join(domain));
        let kinds = strings(&events, "event_type");
        let purchases: Vec<(i64, i64, i64, i64)> = (0..events.num_rows())
            .filter(|&r| kinds[r].as_deref() == Some("purchase"))
            .map(|r| {
                let get = |c| ints(&events, c)[r].unwrap();
                (
                    get("receipt_id"),
                    get("user_id"),
                    get("item_id"),
                    get("timestamp"),
                )
            })
            .collect();
        assert!(ints(&events, "receipt_id")
            .iter()
            .zip(&kinds)
            .all(|(id, k)| id.is_some() == (k.as_deref() == Some("purchase"))));
        let receipts = read_folder(&data.join("receipts").join(domain));
        let rows: Vec<(i64, i64, i64, i64)> = (0..receipts.num_rows())
            .map(|r| {
                let get = |c| ints(&receipts, c)[r].unwrap();
                (
                    get("receipt_id"),
                    get("user_id"),
                    get("item_id"),
                    get("timestamp"),
                )
            })
            .collect();
        assert!(!rows.is_empty());
        assert_eq!(rows, purchases, "{domain}");
    }
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let params = "events = 5000\ndays = 2";
    let a = synth(dir.path(), "a", params);
    let b = synth(dir.path(), "b", params);
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let p = Params {
        events: 5000,
        days: 2,
        ..Params::default()
    };
    synth_tecd::generate(&p, 2, &other, &|| {}).unwrap();
    let files = parquet_files(&a);
    assert_eq!(files, parquet_files(&other));
    let bytes = |root: &Path, f: &str| std::fs::read(root.join(f)).unwrap();
    for f in files.iter().chain([&"manifest.json".to_string()]) {
        assert!(
            bytes(&a, f) == bytes(&b, f),
            "{f} differs under the same seed"
        );
        assert!(
            bytes(&a, f) != bytes(&other, f),
            "{f} is the same under another seed"
        );
    }
}

/// Nulls / rows of column `column` over a folder's files, in percent.
fn null_percent(data: &Path, folder: &str, column: &str) -> f64 {
    let batch = read_folder(&data.join(folder));
    let c = batch.column_by_name(column).unwrap();
    c.null_count() as f64 * 100.0 / c.len() as f64
}

#[test]
fn planted_defects_hit_their_target_rates() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), "a", "events = 200000");
    let targets = [
        ("events/marketplace", "subdomain", 0.04),
        ("events/payments", "brand_id", 48.4),
        ("events/payments", "price", 0.0002),
        ("receipts/retail", "brand_id", 85.8),
        ("receipts/marketplace", "brand_id", 85.8),
        ("receipts/retail", "price", 1.4),
        ("receipts/marketplace", "price", 1.4),
        ("items/retail", "category", 3.8),
        ("items/marketplace", "category", 41.6),
        ("items/marketplace", "subcategory", 53.0),
        ("items/retail", "price", 10.6),
        ("items/marketplace", "price", 0.1),
        ("users", "region", 1.7),
        ("users", "socdem_cluster", 0.15),
    ];
    let m = manifest(&data);
    for (folder, column, target) in targets {
        let realised = null_percent(&data, folder, column);
        assert!(
            (realised - target).abs() <= 0.2,
            "{folder}.{column}: {realised:.3}% null, target {target}%"
        );
        // The manifest reports the same count.
        let (table, domain) = folder.split_once('/').unwrap_or((folder, ""));
        let entry = m["defects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["table"] == table && d["domain"] == domain && d["column"] == column)
            .unwrap_or_else(|| panic!("no manifest entry for {folder}.{column}"));
        assert!((entry["realised_percent"].as_f64().unwrap() - realised).abs() < 1e-9);
    }
    // Retail's subdomain is always null; its subcategory never.
    assert_eq!(null_percent(&data, "events/retail", "subdomain"), 100.0);
    assert_eq!(null_percent(&data, "items/retail", "subcategory"), 0.0);
    // Prices are positive where set.
    let receipts = read_folder(&data.join("receipts/retail"));
    let prices = receipts
        .column_by_name("price")
        .unwrap()
        .as_primitive::<Float64Type>();
    assert!(prices.iter().flatten().all(|p| p > 0.0));

    // Brands: 46 ids duplicated, one of them 7 times, the rest twice;
    // embeddings 300 long, 312 on the duplicate rows.
    let brands = read_folder(&data.join("brands"));
    let mut per_id: BTreeMap<i64, usize> = BTreeMap::new();
    for id in ints(&brands, "brand_id").into_iter().flatten() {
        *per_id.entry(id).or_default() += 1;
    }
    let mut repeats: Vec<usize> = per_id.values().copied().filter(|&n| n > 1).collect();
    repeats.sort();
    assert_eq!(repeats.len(), 46);
    assert_eq!(repeats[45], 7);
    assert!(repeats[..45].iter().all(|&n| n == 2));
    let embedding = brands.column_by_name("embedding").unwrap().as_list::<i32>();
    let mut lengths: BTreeMap<usize, usize> = BTreeMap::new();
    for i in 0..embedding.len() {
        *lengths
            .entry(embedding.value_length(i) as usize)
            .or_default() += 1;
    }
    assert_eq!(lengths, BTreeMap::from([(300, per_id.len()), (312, 51)]));

    // A wholesale receipt over 50 items exists; most baskets are small.
    let mut basket: HashMap<i64, usize> = HashMap::new();
    for id in ints(&receipts, "receipt_id").into_iter().flatten() {
        *basket.entry(id).or_default() += 1;
    }
    assert!(basket.values().any(|&n| n > 50));
    let small = basket.values().filter(|&&n| n <= 10).count();
    assert!(small as f64 > 0.98 * basket.len() as f64);
    assert!(basket.values().any(|&n| n >= 3));
}

#[test]
fn event_count_scales_within_one_percent() {
    let dir = tempfile::tempdir().unwrap();
    for (tag, events) in [("small", 10_000u64), ("large", 400_000)] {
        let data = synth(dir.path(), tag, &format!("events = {events}"));
        let total = event_rows(&data, "retail") + event_rows(&data, "marketplace");
        let off = (total as f64 - events as f64).abs() / events as f64;
        assert!(off <= 0.01, "{events} asked, {total} written");
        // The files agree with the manifest, and the split with the share.
        let files: usize = ["retail", "marketplace"]
            .iter()
            .map(|d| read_folder(&data.join("events").join(d)).num_rows())
            .sum();
        assert_eq!(files as u64, total);
        let market = event_rows(&data, "marketplace") as f64 / total as f64;
        assert!((market - 0.4).abs() < 0.01, "marketplace share {market}");
    }
}

#[test]
fn load_parquet_reads_the_events_and_keeps_the_ragged_embeddings() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), "a", "events = 10000\ndays = 4");
    let loaded = run_stage(
        dir.path(),
        "load",
        "load.parquet",
        "match = \"events/retail\"",
        &[("source", &data)],
    )
    .unwrap();
    let events = table::read(&loaded["events"].join("events.parquet")).unwrap();
    assert_eq!(events.num_rows() as u64, event_rows(&data, "retail"));
    // A variable-length list is a plain list<float32>: it loads, nothing
    // is dropped (only a fixed-size list with ragged rows would be).
    let loaded = run_stage(
        dir.path(),
        "brands",
        "load.parquet",
        "match = \"brands/\"",
        &[("source", &data)],
    )
    .unwrap();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(loaded["events"].join("partitions.json")).unwrap())
            .unwrap();
    assert_eq!(record["dropped"], serde_json::json!([]));
    let brands = table::read(&loaded["events"].join("events.parquet")).unwrap();
    assert!(matches!(
        brands.column_by_name("embedding").unwrap().data_type(),
        DataType::List(_)
    ));
    assert_eq!(
        brands.num_rows() as u64,
        manifest(&data)["rows"]["brands"].as_u64().unwrap()
    );
}

/// One domain's events sorted by (user, time), as (user, item, time, type).
fn sorted_events(data: &Path, domain: &str) -> Vec<(i64, i64, i64, String)> {
    let events = read_folder(&data.join("events").join(domain));
    let (u, i, t) = (
        ints(&events, "user_id"),
        ints(&events, "item_id"),
        ints(&events, "timestamp"),
    );
    let k = strings(&events, "event_type");
    let mut rows: Vec<_> = (0..events.num_rows())
        .map(|r| {
            (
                u[r].unwrap(),
                i[r].unwrap(),
                t[r].unwrap(),
                k[r].clone().unwrap(),
            )
        })
        .collect();
    rows.sort_by_key(|r| (r.0, r.2));
    rows
}

#[test]
fn sessions_follow_related_items_and_buy_what_was_carted() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), "a", "events = 100000\ndays = 7");
    let related = synth_tecd::related_items(
        &Params {
            events: 100_000,
            days: 7,
            ..Params::default()
        },
        1,
    );
    const SESSION_GAP_MS: i64 = 30 * 60 * 1000;
    for domain in ["retail", "marketplace"] {
        let rows = sorted_events(&data, domain);
        // Consecutive events of one session whose second is a u2i view:
        // the share landing on a planted related item, against the share
        // when each u2i item is paired with the item before another pair
        // half the list away (another user's session: chance).
        let pairs: Vec<(i64, i64)> = rows
            .windows(2)
            .filter(|w| w[0].0 == w[1].0 && w[1].2 - w[0].2 <= SESSION_GAP_MS && w[1].3 == "u2i")
            .map(|w| (w[0].1, w[1].1))
            .collect();
        assert!(pairs.len() > 5000, "{domain}: {} u2i pairs", pairs.len());
        let hit = |from: i64, to: i64| related[&from].contains(&to);
        let planted = pairs.iter().filter(|(a, b)| hit(*a, *b)).count() as f64 / pairs.len() as f64;
        let half = pairs.len() / 2;
        let chance = (0..pairs.len())
            .filter(|&k| hit(pairs[(k + half) % pairs.len()].0, pairs[k].1))
            .count() as f64
            / pairs.len() as f64;
        assert!(
            planted > 0.75,
            "{domain}: {planted:.3} of u2i views follow a related item"
        );
        assert!(chance < 0.1, "{domain}: chance level {chance:.3}");

        // A purchased item was carted earlier by the same user, except in
        // wholesale orders (none of whose items were carted).
        let mut carted: BTreeSet<(i64, i64)> = BTreeSet::new();
        let (mut bought, mut after_cart) = (0, 0);
        for (user, item, _, kind) in &rows {
            match kind.as_str() {
                "cart" => {
                    carted.insert((*user, *item));
                }
                "purchase" => {
                    bought += 1;
                    after_cart += usize::from(carted.contains(&(*user, *item)));
                }
                _ => {}
            }
        }
        let share = after_cart as f64 / bought as f64;
        assert!(
            share > 0.9,
            "{domain}: {share:.3} of purchases were carted first"
        );

        // The event mix is near catalog 35, u2i 30, search 15, cart 12,
        // purchase 8 (percent).
        let mut mix: BTreeMap<&str, f64> = BTreeMap::new();
        for r in &rows {
            *mix.entry(r.3.as_str()).or_default() += 100.0 / rows.len() as f64;
        }
        for (kind, target) in [
            ("catalog", 35.0),
            ("u2i", 30.0),
            ("search", 15.0),
            ("cart", 12.0),
            ("purchase", 8.0),
        ] {
            assert!(
                (mix[kind] - target).abs() < 3.0,
                "{domain}: {kind} is {:.1}% of events, about {target}% expected ({mix:?})",
                mix[kind]
            );
        }
    }
}

#[test]
fn users_come_back_rebuy_and_buy_complements_across_domains() {
    let dir = tempfile::tempdir().unwrap();
    let data = synth(dir.path(), "a", "events = 50000");
    // Days on which each user was active, and their purchases as (user,
    // time, domain, item), both domains.
    let mut days: HashMap<i64, BTreeSet<i64>> = HashMap::new();
    let mut purchases: Vec<(i64, i64, &str, i64)> = Vec::new();
    for domain in ["retail", "marketplace"] {
        for (user, item, time, kind) in sorted_events(&data, domain) {
            days.entry(user).or_default().insert(time / 86_400_000);
            if kind == "purchase" {
                purchases.push((user, time, domain, item));
            }
        }
    }
    let several = days.values().filter(|d| d.len() >= 3).count();
    assert!(
        several as f64 > 0.5 * days.len() as f64,
        "{several} of {} users active on 3+ days",
        days.len()
    );
    purchases.sort();

    // Repeat purchases: an item the same user bought in an earlier receipt.
    let mut repeats = 0;
    for (k, &(user, time, _, item)) in purchases.iter().enumerate() {
        let earlier = purchases[..k]
            .iter()
            .rev()
            .take_while(|p| p.0 == user)
            .any(|p| p.3 == item && p.1 < time);
        repeats += usize::from(earlier);
    }
    let share = repeats as f64 / purchases.len() as f64;
    assert!(share > 0.05, "{share:.3} of purchases are repeats");

    // Cross-domain complements: purchases in one domain within 30 min
    // after the same user's purchase in the other (a user's sessions are
    // over 30 min apart, so only the planted follow-up does this), paired
    // with each item of that earlier receipt. The planted pairs recur
    // across users, so a cross-domain graph gets links of weight > 1.
    let mut follow_ups = 0;
    let mut pairs: HashMap<(i64, i64), BTreeSet<i64>> = HashMap::new();
    for (k, &(user, time, domain, item)) in purchases.iter().enumerate() {
        let before = purchases[..k].iter().rev().take_while(|p| p.0 == user);
        let mut found = false;
        for &(_, t, _, a) in before.filter(|p| p.2 != domain && p.1 < time) {
            if time - t <= 30 * 60 * 1000 {
                pairs.entry((a, item)).or_default().insert(user);
                found = true;
            }
        }
        follow_ups += usize::from(found);
    }
    let shared = pairs.values().filter(|users| users.len() >= 2).count();
    assert!(
        follow_ups > 200,
        "{follow_ups} cross-domain follow-up purchases"
    );
    assert!(
        shared > 10,
        "{shared} cross-domain pairs bought by 2+ users"
    );
}

#[test]
fn bad_params_name_their_key() {
    let dir = tempfile::tempdir().unwrap();
    for (params, message) in [
        ("events = 999", "events: must be at least 1000"),
        (
            "start_day = \"2024-02-30\"",
            "start_day: `2024-02-30` is not a day",
        ),
        ("days = 0", "days: must be between 1 and 366"),
        (
            "items = 50",
            "items: must be 0 (derived from events) or between 200",
        ),
        (
            "marketplace_share = 1.0",
            "marketplace_share: must be between 0.05 and 0.95",
        ),
        ("zipf = -1.0", "zipf: must be between 0 and 3"),
        ("evnets = 1000", "unknown field `evnets`"),
    ] {
        let err = run_stage(dir.path(), "bad", "synth.tecd", params, &[]).unwrap_err();
        assert!(err.to_string().contains(message), "{params}: {err}");
    }
}

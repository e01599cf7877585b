//! `embed.infonce` run in this process (as the worker runs it) on a toy
//! co-occurrence graph with planted clusters: what it learns, what it
//! writes, that it is deterministic and resumes bit for bit, and which
//! params and inputs it refuses.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, StringArray};
use seqpipe_stages::embed::Params;
use seqpipe_stages::table;
use tch::Tensor;

/// The toy graph's clusters: cluster `c` (0..6) holds items `4c + 1..=4c +
/// 4` of domain `a` and `4c + 101..=4c + 104` of domain `b`; each four-item
/// clique is fully co-viewed, and each `a` item is co-purchased with its `b`
/// twin (`i` with `i + 100`). Six clusters, so that most of a batch's
/// negatives come from other clusters, as in a real catalogue.
const CLUSTERS: i64 = 6;

fn cluster_of(item: i64) -> i64 {
    (item % 100 - 1) / 4
}

fn domain_of(item: i64) -> &'static str {
    if item < 100 {
        "a"
    } else {
        "b"
    }
}

/// Every item id, ascending: 1..=24 then 101..=124.
fn toy_items() -> Vec<i64> {
    (1..=4 * CLUSTERS).chain(101..=100 + 4 * CLUSTERS).collect()
}

/// Writes the toy graph as `graph.cooccurrence` would into `dir`:
/// `edges.parquet` (sorted by type, item_a, item_b) and `items.parquet`.
fn write_toy_graph(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut edges: Vec<(&'static str, i64, i64)> = Vec::new();
    for first in (0..CLUSTERS).flat_map(|c| [4 * c + 1, 4 * c + 101]) {
        for i in first..first + 4 {
            for j in i + 1..first + 4 {
                edges.push(("co_view", i, j));
            }
        }
    }
    for i in 1..=4 * CLUSTERS {
        edges.push(("co_purchase", i, i + 100));
    }
    edges.sort();
    let ints = |f: &dyn Fn(&(&str, i64, i64)) -> i64| -> Arc<Int64Array> {
        Arc::new(Int64Array::from(edges.iter().map(f).collect::<Vec<_>>()))
    };
    let text = |f: &dyn Fn(&(&'static str, i64, i64)) -> &'static str| -> Arc<StringArray> {
        Arc::new(StringArray::from(edges.iter().map(f).collect::<Vec<_>>()))
    };
    let views = |e: &(&str, i64, i64)| if e.0 == "co_view" { 3 } else { 1 };
    let batch = table::batch(vec![
        ("item_a", ints(&|e| e.1)),
        ("item_b", ints(&|e| e.2)),
        ("edge_type", text(&|e| e.0)),
        ("domain_a", text(&|e| domain_of(e.1))),
        ("domain_b", text(&|e| domain_of(e.2))),
        ("count", ints(&views)),
        (
            "weight",
            Arc::new(Float64Array::from(
                edges.iter().map(|e| views(e) as f64).collect::<Vec<_>>(),
            )),
        ),
    ])
    .unwrap();
    table::write(&dir.join("edges.parquet"), &batch).unwrap();
    let ids = toy_items();
    // Occurrences fall with the id inside each domain, except that the
    // fourth item is the most frequent: the default queries are 4, 1, 2 and
    // 104, 101, 102.
    let occurrences: Vec<i64> = ids
        .iter()
        .map(|&i| if i % 100 == 4 { 5000 } else { 1000 - i % 100 })
        .collect();
    let domains: Vec<&str> = ids.iter().map(|&i| domain_of(i)).collect();
    let items = table::batch(vec![
        ("item_id", Arc::new(Int64Array::from(ids.clone()))),
        ("domain", Arc::new(StringArray::from(domains))),
        ("occurrences", Arc::new(Int64Array::from(occurrences))),
        ("degree", Arc::new(Int64Array::from(vec![4i64; ids.len()]))),
    ])
    .unwrap();
    table::write(&dir.join("items.parquet"), &items).unwrap();
}

/// Params that train the toy graph in well under a second.
fn toy_params() -> Params {
    Params {
        dim: 16,
        epochs: 30,
        batch_size: 16,
        lr: 0.05,
        temperature: 0.5,
        plateau_patience: 5,
        valid_share: 0.1,
        ..Params::default()
    }
}

fn json(p: &Params) -> serde_json::Value {
    serde_json::to_value(p).unwrap()
}

/// A run of `embed.infonce` on the toy graph in `tmp/tag`.
fn embed(tmp: &Path, tag: &str, p: &Params, seed: u64) -> anyhow::Result<PathBuf> {
    let graph = tmp.join("graph");
    if !graph.exists() {
        write_toy_graph(&graph);
    }
    let (outputs, _) = common::run_kind(
        "embed.infonce",
        json(p),
        &[("graph", &graph)],
        &tmp.join(tag),
        &tmp.join(tag).join("checkpoint"),
        seed,
    )?;
    Ok(outputs["embeddings"].clone())
}

fn read_matrix(dir: &Path) -> Tensor {
    let tensors = Tensor::read_safetensors(dir.join("embeddings.safetensors")).unwrap();
    assert_eq!(tensors.len(), 1);
    assert_eq!(tensors[0].0, "embeddings");
    tensors[0].1.shallow_clone()
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Every file of an output folder, by name.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

#[test]
fn clusters_come_out_as_nearest_neighbours_in_unit_norm_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let out = embed(tmp.path(), "run", &toy_params(), 7).unwrap();
    let z = read_matrix(&out);
    assert_eq!(z.size(), vec![49, 16]);
    assert_eq!(z.kind(), tch::Kind::Float);
    assert_eq!(z.get(0).abs().sum(tch::Kind::Float).double_value(&[]), 0.0);
    let norms = z.narrow(0, 1, 48).norm_scalaropt_dim(2, [1], false);
    let off = (norms - 1.0).abs().max().double_value(&[]);
    assert!(off < 1e-5, "rows are off unit norm by {off}");

    // items.parquet: row r is the r-th item in id order, with its domain.
    let path = out.join("items.parquet");
    let items = table::read(&path).unwrap();
    let column = |name: &str| table::int64(&items, name, &path).unwrap().values().to_vec();
    assert_eq!(column("row"), (1..=48).collect::<Vec<i64>>());
    let ids = column("item_id");
    assert_eq!(ids, toy_items());
    let row_of = |id: i64| ids.iter().position(|&i| i == id).unwrap() as i64 + 1;

    // Cosine (= dot product) is higher with every item of one's own cluster
    // than with any item of another.
    let cos = |x: i64, y: i64| z.get(row_of(x)).dot(&z.get(row_of(y))).double_value(&[]);
    for &x in &ids {
        let others = ids.iter().filter(|&&y| y != x);
        let (mates, outsiders): (Vec<i64>, Vec<i64>) =
            others.partition(|&&y| cluster_of(y) == cluster_of(x));
        assert_eq!(mates.len(), 7);
        let farthest_mate = mates
            .iter()
            .map(|&y| cos(x, y))
            .fold(f64::INFINITY, f64::min);
        let nearest_outsider = outsiders
            .iter()
            .map(|&y| cos(x, y))
            .fold(f64::NEG_INFINITY, f64::max);
        assert!(
            farthest_mate > nearest_outsider,
            "item {x}: nearest outsider {nearest_outsider:.3} >= farthest mate {farthest_mate:.3}"
        );
    }

    // Default queries: the 3 most frequent items of each domain, by domain.
    let neighbours = read_json(&out.join("neighbours.json"));
    let queries = neighbours["queries"].as_array().unwrap();
    let query_ids: Vec<i64> = queries
        .iter()
        .map(|q| q["item_id"].as_i64().unwrap())
        .collect();
    assert_eq!(query_ids, [4, 1, 2, 104, 101, 102]);
    for q in queries {
        let id = q["item_id"].as_i64().unwrap();
        let list = q["neighbours"].as_array().unwrap();
        assert_eq!(list.len(), 10);
        // The 7 nearest are the cluster's other items, in falling cosine.
        let nearest: Vec<i64> = list[..7]
            .iter()
            .map(|n| n["item_id"].as_i64().unwrap())
            .collect();
        assert!(
            nearest.iter().all(|&y| cluster_of(y) == cluster_of(id)),
            "query {id}: {nearest:?}"
        );
        let scores: Vec<f64> = list.iter().map(|n| n["score"].as_f64().unwrap()).collect();
        assert!(
            scores.windows(2).all(|w| w[0] >= w[1]),
            "query {id}: {scores:?}"
        );
        for n in list {
            let other = n["item_id"].as_i64().unwrap();
            assert_eq!(n["domain"], domain_of(other));
            assert_eq!(
                n["cross_domain"].as_bool().unwrap(),
                domain_of(id) != domain_of(other)
            );
        }
    }
    let md = std::fs::read_to_string(out.join("neighbours.md")).unwrap();
    assert!(md.contains("## Item 4 (a)"), "{md}");
    assert!(md.contains("| cross-domain |"), "{md}");

    // training.json: every epoch with validation; the loss falls.
    let log = read_json(&out.join("training.json"));
    let epochs = log["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 30);
    let first = epochs[0]["train_loss"].as_f64().unwrap();
    let last = epochs[29]["train_loss"].as_f64().unwrap();
    assert!(last < first * 0.8, "loss {first} -> {last}");
    assert_eq!(epochs[0]["lr"].as_f64().unwrap(), 0.05);
    for e in epochs {
        let recall = e["valid_recall_at_10"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&recall));
        assert!(e["valid_loss"].as_f64().unwrap().is_finite());
    }
    // A held-out edge links two items of one cluster, so a trained tower
    // ranks its other end among the 7 cluster mates: recall@10 is 1.
    assert_eq!(epochs[29]["valid_recall_at_10"].as_f64().unwrap(), 1.0);
    // 12 cliques x 6 co-views + 24 co-purchases = 96 edges; round(9.6) = 10
    // held out.
    let config = read_json(&out.join("config.json"));
    assert_eq!(config["train_edges"], 86);
    assert_eq!(config["valid_edges"], 10);
    assert_eq!(config["items"], 48);
    assert_eq!(
        config["edge_types"],
        serde_json::json!(["co_purchase", "co_view"])
    );
}

#[test]
fn npy_holds_the_same_matrix_with_a_numpy_header() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Params {
        epochs: 2,
        ..toy_params()
    };
    let out = embed(tmp.path(), "run", &p, 3).unwrap();
    let bytes = std::fs::read(out.join("embeddings.npy")).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + header_len) % 64, 0, "data must start 64-byte aligned");
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert_eq!(
        header.trim_end(),
        "{'descr': '<f4', 'fortran_order': False, 'shape': (49, 16), }"
    );
    assert!(header.ends_with('\n'));
    let data = &bytes[10 + header_len..];
    assert_eq!(data.len(), 49 * 16 * 4);
    let at = |r: usize, c: usize| {
        let o = (r * 16 + c) * 4;
        f32::from_le_bytes(data[o..o + 4].try_into().unwrap())
    };
    let z = read_matrix(&out);
    assert_eq!(at(0, 0), 0.0);
    assert_eq!(at(5, 3), z.double_value(&[5, 3]) as f32);
    assert_eq!(at(48, 15), z.double_value(&[48, 15]) as f32);
}

#[test]
fn the_same_seed_gives_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Params {
        epochs: 3,
        ..toy_params()
    };
    let a = embed(tmp.path(), "a", &p, 5).unwrap();
    let b = embed(tmp.path(), "b", &p, 5).unwrap();
    let c = embed(tmp.path(), "c", &p, 6).unwrap();
    let (fa, fb, fc) = (files(&a), files(&b), files(&c));
    assert_eq!(
        fa.keys().collect::<Vec<_>>(),
        [
            "config.json",
            "embeddings.npy",
            "embeddings.safetensors",
            "items.parquet",
            "neighbours.json",
            "neighbours.md",
            "training.json",
        ]
    );
    assert!(fa == fb, "two runs with seed 5 differ");
    assert_ne!(fa["embeddings.safetensors"], fc["embeddings.safetensors"]);
}

#[test]
fn a_killed_run_resumes_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let graph = tmp.path().join("graph");
    write_toy_graph(&graph);
    // A low temperature overfits the few pairs: the validation loss stalls
    // after epoch 6 and the plateau halves the rate for epoch 8. Killed
    // after epoch 7, the rerun must restore the halved rate and the
    // plateau's state from the checkpoint.
    let full = Params {
        epochs: 10,
        temperature: 0.1,
        plateau_patience: 0,
        ..toy_params()
    };
    let run = |p: &Params, tag: &str, checkpoint: &str| {
        common::run_kind(
            "embed.infonce",
            json(p),
            &[("graph", &graph)],
            &tmp.path().join(tag),
            &tmp.path().join(checkpoint),
            9,
        )
        .unwrap()
    };
    let (straight, _) = run(&full, "straight", "ckpt-straight");
    let log = read_json(&straight["embeddings"].join("training.json"));
    let lrs: Vec<f64> = log["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["lr"].as_f64().unwrap())
        .collect();
    assert_eq!(lrs[..7], [0.05; 7], "{lrs:?}");
    assert_eq!(lrs[7], 0.025, "{lrs:?}");

    // "Killed" after epoch 7: the first attempt ends there, the second
    // resumes from its checkpoint.
    let killed = Params {
        epochs: 7,
        ..full.clone()
    };
    let (_, first_notes) = run(&killed, "first", "ckpt-resumed");
    assert!(!first_notes.contains_key("resumed_after_epoch"));
    let (resumed, notes) = run(&full, "resumed", "ckpt-resumed");
    assert_eq!(notes["resumed_after_epoch"], "7");
    assert_eq!(notes["epoch_seconds"].split(", ").count(), 3);
    let (a, b) = (
        files(&straight["embeddings"]),
        files(&resumed["embeddings"]),
    );
    assert!(
        a == b,
        "resumed outputs differ from the uninterrupted run's"
    );

    // A checkpoint is refused by a run with other params.
    let other = Params {
        temperature: 0.2,
        ..full
    };
    let e = common::run_kind(
        "embed.infonce",
        json(&other),
        &[("graph", &graph)],
        &tmp.path().join("other"),
        &tmp.path().join("ckpt-resumed"),
        9,
    )
    .unwrap_err();
    assert!(
        format!("{e:#}").contains("was written with other params"),
        "{e:#}"
    );
}

#[test]
fn edge_types_and_weighted_sampling() {
    let tmp = tempfile::tempdir().unwrap();
    let purchases = Params {
        epochs: 2,
        edge_types: vec!["co_purchase".into()],
        valid_share: 0.0,
        ..toy_params()
    };
    let out = embed(tmp.path(), "purchase", &purchases, 1).unwrap();
    let config = read_json(&out.join("config.json"));
    assert_eq!(config["edge_types"], serde_json::json!(["co_purchase"]));
    assert_eq!(config["train_edges"], 24);
    assert_eq!(config["valid_edges"], 0);
    let log = read_json(&out.join("training.json"));
    assert!(log["epochs"][0]["valid_loss"].is_null());
    assert!(log["epochs"][0]["valid_recall_at_10"].is_null());

    let weighted = Params {
        epochs: 2,
        weighted: true,
        ..toy_params()
    };
    let a = embed(tmp.path(), "w1", &weighted, 1).unwrap();
    let b = embed(tmp.path(), "w2", &weighted, 1).unwrap();
    let plain = embed(
        tmp.path(),
        "plain",
        &Params {
            weighted: false,
            ..weighted
        },
        1,
    )
    .unwrap();
    assert!(
        files(&a) == files(&b),
        "weighted sampling is not deterministic"
    );
    assert_ne!(
        files(&a)["embeddings.safetensors"],
        files(&plain)["embeddings.safetensors"]
    );
}

#[test]
fn bad_params_and_inputs_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let error = |p: Params| format!("{:#}", embed(tmp.path(), "bad", &p, 1).unwrap_err());
    let d = toy_params;
    assert_eq!(
        error(Params { dim: 1, ..d() }),
        "params.dim: must be 2 or above, not 1"
    );
    assert_eq!(
        error(Params {
            temperature: 0.0,
            ..d()
        }),
        "params.temperature: must be above 0, not 0"
    );
    assert_eq!(
        error(Params {
            valid_share: 1.0,
            ..d()
        }),
        "params.valid_share: 1 is not in [0, 1)"
    );
    assert!(error(Params {
        batch_size: 1,
        ..d()
    })
    .starts_with("params.batch_size: must be 2 or above"));
    assert_eq!(
        error(Params {
            query_items: vec![4, 99],
            ..d()
        }),
        "params.query_items: item 99 is not in the graph's items.parquet"
    );
    // 24 purchase edges cannot spare 23 (round(0.95 * 24)) for validation and keep 2 to train.
    let e = error(Params {
        edge_types: vec!["co_purchase".into()],
        valid_share: 0.95,
        ..d()
    });
    assert!(
        e.starts_with("graph: 24 edge(s) of type co_purchase; training needs at least 2 besides the 23 held out"),
        "{e}"
    );
    // An edge whose item is missing from the vocabulary names the item.
    let broken = tmp.path().join("broken");
    write_toy_graph(&broken);
    let batch = table::read(&broken.join("items.parquet")).unwrap();
    table::write(&broken.join("items.parquet"), &batch.slice(0, 47)).unwrap();
    let e = common::run_kind(
        "embed.infonce",
        json(&d()),
        &[("graph", &broken)],
        &tmp.path().join("b"),
        &tmp.path().join("bc"),
        1,
    )
    .unwrap_err();
    assert!(
        format!("{e:#}").ends_with("edge item 124 is not in the graph's items.parquet"),
        "{e:#}"
    );
}

#[test]
fn the_embeddings_initialise_train_by_item_id() {
    let tmp = tempfile::tempdir().unwrap();
    let p = Params {
        epochs: 2,
        ..toy_params()
    };
    let embeddings = embed(tmp.path(), "embed", &p, 1).unwrap();
    // Sequences over items 1..=6 and 1000, which the graph has not seen.
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let vocab = [1, 2, 3, 4, 5, 6, 1000];
    let train: Vec<(i64, Vec<i64>)> = (0..8)
        .map(|u| (u + 1, (0..5).map(|k| (u + k) % 7 + 1).collect()))
        .collect();
    let sequences = seqpipe_stages::seqdata::SequenceData {
        meta: serde_json::from_value(serde_json::json!({
            "num_items": 7, "num_users": 8, "split": "leave_one_out", "interactions": 40,
        }))
        .unwrap(),
        train,
        valid: vec![],
        test: vec![],
    };
    sequences.write(&data, &vocab).unwrap();
    let params = serde_json::to_value(seqpipe_stages::train::Params {
        model: "sasrec".into(),
        dim: 16,
        max_len: 5,
        epochs: 1,
        batch_size: 4,
        ..Default::default()
    })
    .unwrap();
    let (outputs, notes) = common::run_kind(
        "train",
        params,
        &[("data", &data), ("init", &embeddings)],
        &tmp.path().join("train"),
        &tmp.path().join("train-checkpoint"),
        1,
    )
    .unwrap();
    assert_eq!(notes["init_items"], "6 of 7 items (85.7%)");
    assert!(outputs["model"].join("model.safetensors").exists());
}

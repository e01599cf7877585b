//! `train`'s optional `init` input: pretrained item embeddings matched by
//! original item id into the neural models' item tables, once, on a fresh
//! start — and nothing else changed.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::Int64Array;
use seqpipe_stages::seqdata::{Meta, SequenceData};
use seqpipe_stages::table;
use seqpipe_torch::models::bert4rec::Bert4RecConfig;
use seqpipe_torch::models::caser::CaserConfig;
use seqpipe_torch::models::gru4rec::Gru4RecConfig;
use seqpipe_torch::models::gsrec::GsRecConfig;
use seqpipe_torch::models::sasrec::SasRecConfig;
use seqpipe_torch::models::trainer::{train, train_from, ItemInit, ModelConfig, TrainConfig};
use seqpipe_torch::train::pretrained_rows;
use tch::{Device, Tensor};

/// Runs `kind` in-process with seed 1 and checkpoint folder
/// `out/checkpoint` (see [`common::run_kind`]).
fn run_kind(
    kind: &str,
    params: serde_json::Value,
    inputs: &[(&str, &Path)],
    out: &Path,
) -> anyhow::Result<(BTreeMap<String, PathBuf>, BTreeMap<String, String>)> {
    common::run_kind(kind, params, inputs, out, &out.join("checkpoint"), 1)
}

/// The sequences' items: index `i` (1-based) is original item `VOCAB[i-1]`.
const VOCAB: [i64; 5] = [10, 20, 30, 40, 50];

/// The embeddings' items: row `r` (1-based) is item `EMBEDDED[r-1]`. Items
/// 20, 40 and 50 are in both (indices 2, 4, 5); 10 and 30 only in the
/// sequences; 99 only in the embeddings.
const EMBEDDED: [i64; 4] = [50, 20, 99, 40];

const DIM: i64 = 8;

/// Training sequences over indices 1..=5.
fn sequences() -> Vec<Vec<i64>> {
    (0..12)
        .map(|u| (0..6).map(|k| (u + k) % 5 + 1).collect())
        .collect()
}

/// A `sequences` artifact over [`VOCAB`] in `dir`.
fn write_sequences(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let train: Vec<(i64, Vec<i64>)> = sequences()
        .into_iter()
        .enumerate()
        .map(|(u, s)| (u as i64 + 1, s))
        .collect();
    let data = SequenceData {
        // From JSON, so that fields added to `Meta` later keep their defaults.
        meta: serde_json::from_value::<Meta>(serde_json::json!({
            "num_items": VOCAB.len(),
            "num_users": train.len(),
            "split": "leave_one_out",
            "interactions": 72,
        }))
        .unwrap(),
        train,
        valid: vec![],
        test: vec![],
    };
    data.write(dir, &VOCAB).unwrap();
}

/// Row `r` of the embedding table: `r + c / 100` in column `c`, so every
/// value says where it came from.
fn embedding_row(r: i64, dim: i64) -> Vec<f32> {
    (0..dim).map(|c| r as f32 + c as f32 / 100.0).collect()
}

/// An `embed.infonce`-shaped output over [`EMBEDDED`], `dim` wide, in `dir`.
fn write_embeddings(dir: &Path, dim: i64) {
    std::fs::create_dir_all(dir).unwrap();
    let rows = EMBEDDED.len() as i64 + 1;
    let values: Vec<f32> = (0..rows).flat_map(|r| embedding_row(r, dim)).collect();
    let table = Tensor::from_slice(&values).view([rows, dim]);
    Tensor::write_safetensors(
        &[("embeddings", &table)],
        dir.join("embeddings.safetensors"),
    )
    .unwrap();
    table::write(
        &dir.join("items.parquet"),
        &table::batch(vec![
            ("row", Arc::new(Int64Array::from_iter_values(1..rows))),
            ("item_id", Arc::new(Int64Array::from(EMBEDDED.to_vec()))),
        ])
        .unwrap(),
    )
    .unwrap();
}

/// Folders `data` (sequences) and `init` (8-d embeddings) under `tmp`.
fn fixtures(tmp: &Path) -> (PathBuf, PathBuf) {
    let (data, init) = (tmp.join("data"), tmp.join("init"));
    write_sequences(&data);
    write_embeddings(&init, DIM);
    (data, init)
}

/// A model's variables as built by the trainer (0 epochs: nothing trained).
fn initial_vars<C: ModelConfig>(
    cfg: &C,
    init: Option<&ItemInit>,
    dir: &Path,
) -> BTreeMap<String, Tensor> {
    let tcfg = TrainConfig {
        epochs: 0,
        ..TrainConfig::default()
    };
    let (vs, stats) = train_from(
        cfg,
        &tcfg,
        &sequences(),
        3,
        Device::Cpu,
        dir,
        init,
        &mut |_| {},
    )
    .unwrap();
    assert!(stats.is_empty());
    vs.variables().into_iter().collect()
}

/// With `init`, a model's item rows for indices 2, 4 and 5 are the
/// embeddings of items 20, 40 and 50; every other row and variable is what
/// it is without `init`.
fn check_init<C: ModelConfig>(cfg: &C, tmp: &Path) {
    let (data, init_dir) = fixtures(tmp);
    let init = pretrained_rows(&init_dir, &data, DIM, Device::Cpu).unwrap();
    assert_eq!(init.coverage(), "3 of 5 items (60.0%)");
    let with = initial_vars(
        cfg,
        Some(&init.rows),
        &tmp.join(format!("{}-with", C::NAME)),
    );
    let without = initial_vars(cfg, None, &tmp.join(format!("{}-without", C::NAME)));
    assert_eq!(
        with.keys().collect::<Vec<_>>(),
        without.keys().collect::<Vec<_>>()
    );
    for (name, t) in &with {
        if name != "item_emb" {
            assert!(t.equal(&without[name]), "{}: `{name}` moved", C::NAME);
        }
    }
    let table = &with["item_emb"];
    // Index 2 = item 20 = embedding row 2; 4 = 40 = row 4; 5 = 50 = row 1.
    for (index, row) in [(2, 2), (4, 4), (5, 1)] {
        let want = Tensor::from_slice(&embedding_row(row, DIM));
        assert!(table.get(index).equal(&want), "{}: row {index}", C::NAME);
    }
    // Padding, uncovered items (10, 30) and BERT4Rec's [MASK] row keep the
    // model's own initialisation, which is not an embedding row.
    let rows = table.size()[0];
    for index in [0, 1, 3].into_iter().chain(6..rows) {
        assert!(
            table.get(index).equal(&without["item_emb"].get(index)),
            "{}: row {index}",
            C::NAME
        );
        for row in 1..=4 {
            let embedded = Tensor::from_slice(&embedding_row(row, DIM));
            assert!(!table.get(index).equal(&embedded));
        }
    }
}

#[test]
fn covered_rows_start_from_the_embeddings_and_nothing_else_moves() {
    let tmp = tempfile::tempdir().unwrap();
    let n = VOCAB.len() as i64;
    check_init(
        &Gru4RecConfig {
            dim: DIM,
            max_len: 6,
            ..Gru4RecConfig::new(n)
        },
        tmp.path(),
    );
    check_init(
        &SasRecConfig {
            dim: DIM,
            max_len: 6,
            ..SasRecConfig::new(n)
        },
        tmp.path(),
    );
    check_init(
        &Bert4RecConfig {
            dim: DIM,
            max_len: 6,
            ..Bert4RecConfig::new(n)
        },
        tmp.path(),
    );
    check_init(
        &CaserConfig {
            dim: DIM,
            ..CaserConfig::new(n)
        },
        tmp.path(),
    );
    check_init(
        &GsRecConfig {
            dim: DIM,
            max_len: 6,
            ..GsRecConfig::new(n)
        },
        tmp.path(),
    );
}

/// `train` params for a small GRU4Rec, as JSON.
fn gru4rec(dim: i64) -> serde_json::Value {
    serde_json::to_value(seqpipe_stages::train::Params {
        model: "gru4rec".into(),
        dim,
        layers: 1,
        max_len: 6,
        epochs: 2,
        batch_size: 4,
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn training_with_init_is_deterministic_and_differs_from_without() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, init) = fixtures(tmp.path());
    let inputs = [("data", data.as_path()), ("init", init.as_path())];
    let run = |tag: &str, inputs: &[(&str, &Path)]| {
        let (outputs, notes) =
            run_kind("train", gru4rec(DIM), inputs, &tmp.path().join(tag)).unwrap();
        (
            std::fs::read(outputs["model"].join("model.safetensors")).unwrap(),
            notes,
        )
    };
    let (a, notes) = run("a", &inputs);
    assert_eq!(notes["init_items"], "3 of 5 items (60.0%)");
    let (b, _) = run("b", &inputs);
    assert!(a == b, "two runs with the same init differ");
    let (plain, plain_notes) = run("plain", &inputs[..1]);
    assert!(!plain_notes.contains_key("init_items"));
    assert!(a != plain, "init changed nothing");

    // The trained table has moved on from the embeddings, but started there.
    let trained = Tensor::read_safetensors(tmp.path().join("a/model/model.safetensors")).unwrap();
    let table = &trained.iter().find(|(n, _)| n == "item_emb").unwrap().1;
    assert_eq!(table.size(), [6, DIM]);
    let start = Tensor::from_slice(&embedding_row(2, DIM));
    let moved = (table.get(2) - &start).abs().max().double_value(&[]);
    assert!(
        moved > 0.0 && moved < 0.1,
        "row 2 moved {moved} from its embedding"
    );
}

#[test]
fn embeddings_of_another_width_are_refused_naming_both() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, init) = fixtures(tmp.path());
    let e = run_kind(
        "train",
        gru4rec(16),
        &[("data", &data), ("init", &init)],
        &tmp.path().join("x"),
    )
    .unwrap_err();
    assert_eq!(
        format!("{e:#}"),
        "init: embeddings are 8-d but dim = 16; set dim = 8"
    );
}

#[test]
fn init_on_a_model_without_item_embeddings_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, init) = fixtures(tmp.path());
    for model in ["pop", "markov", "itemknn"] {
        let params = serde_json::json!({ "model": model });
        let e = run_kind(
            "train",
            params,
            &[("data", &data), ("init", &init)],
            &tmp.path().join(model),
        )
        .unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            format!(
                "init: model `{model}` has no item embeddings to initialise; init works with \
                 sasrec, gru4rec, bert4rec, caser, gsrec"
            )
        );
    }
}

#[test]
fn a_checkpoint_remembers_the_rows_it_started_from() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, init_dir) = fixtures(tmp.path());
    let init = pretrained_rows(&init_dir, &data, DIM, Device::Cpu)
        .unwrap()
        .rows;
    let cfg = Gru4RecConfig {
        dim: DIM,
        max_len: 6,
        ..Gru4RecConfig::new(5)
    };
    let one = TrainConfig {
        epochs: 1,
        batch_size: 4,
        ..TrainConfig::default()
    };
    let two = TrainConfig {
        epochs: 2,
        ..one.clone()
    };
    let dir = tmp.path().join("ckpt");
    let seqs = sequences();
    train_from(
        &cfg,
        &one,
        &seqs,
        3,
        Device::Cpu,
        &dir,
        Some(&init),
        &mut |_| {},
    )
    .unwrap();
    // Resuming without the rows (or with others) is refused...
    let e = train(&cfg, &two, &seqs, 3, Device::Cpu, &dir, &mut |_| {}).unwrap_err();
    assert!(
        format!("{e:#}").contains("was written from other pretrained item embeddings"),
        "{e:#}"
    );
    let other = ItemInit {
        rows: init.rows.shallow_clone(),
        values: init.values.ones_like(),
    };
    assert!(train_from(
        &cfg,
        &two,
        &seqs,
        3,
        Device::Cpu,
        &dir,
        Some(&other),
        &mut |_| {}
    )
    .is_err());
    // ...with the same rows it resumes, without copying them in again: it
    // ends bit for bit where an uninterrupted run with them does.
    let mut trained = Vec::new();
    let (vs, stats) = train_from(
        &cfg,
        &two,
        &seqs,
        3,
        Device::Cpu,
        &dir,
        Some(&init),
        &mut |s| trained.push(s.epoch),
    )
    .unwrap();
    assert_eq!(trained, [1]);
    assert_eq!(stats.len(), 2);
    let straight_dir = tmp.path().join("straight");
    let (straight, _) = train_from(
        &cfg,
        &two,
        &seqs,
        3,
        Device::Cpu,
        &straight_dir,
        Some(&init),
        &mut |_| {},
    )
    .unwrap();
    for (name, t) in straight.variables() {
        assert!(
            t.equal(&vs.variables()[&name]),
            "`{name}` differs after resume"
        );
    }
}

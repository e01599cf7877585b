//! The `loss` param (full-softmax cross-entropy or the SASRec paper's binary
//! cross-entropy on sampled negatives) and Caser's `train_len` (CPU): the
//! loss's value, its negatives, that padding adds nothing, that SASRec and
//! GSRec learn with it, that it resumes bit for bit, that models without it
//! refuse it at plan time, and how many windows `train_len` makes.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{
    assert_loss_refused_for, assert_plans, built, hr_at_1, loss_bits, plan, run_kind, sigmoid,
    successor_data, train_and_score, train_spec, write_sequences, HeldOut,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use seqpipe_torch::models::bert4rec::Bert4RecConfig;
use seqpipe_torch::models::caser::CaserConfig;
use seqpipe_torch::models::gru4rec::Gru4RecConfig;
use seqpipe_torch::models::gsrec::GsRecConfig;
use seqpipe_torch::models::left_pad_batch;
use seqpipe_torch::models::sasrec::SasRecConfig;
use seqpipe_torch::models::trainer::{
    batch_negatives, batch_rng, bce_loss, cross_entropy_batch_loss, draw_negative, next_item_batch,
    sampled_bce_batch_loss, train, training_items, training_windows, Loss, ModelConfig,
    SequenceModel, TrainBatch, TrainConfig,
};
use tch::{Device, Kind, Tensor};

#[test]
fn bce_loss_is_the_hand_computed_value() {
    // Logits 0 give σ = 1/2: each term is ln 2, so one positive and one
    // negative per position make 2 ln 2 whatever the positions.
    let zero = bce_loss(
        &Tensor::zeros([3], (Kind::Double, Device::Cpu)),
        &Tensor::zeros([3, 1], (Kind::Double, Device::Cpu)),
    );
    assert!((zero.double_value(&[]) - 2.0 * 2f64.ln()).abs() < 1e-12);

    // Two positions, two negatives each: the mean over positions of
    // -ln σ(pos) - Σ ln(1 - σ(neg)).
    let pos = [0.5, -2.0];
    let neg = [[1.0, -3.0], [0.0, 4.0]];
    let want = (0..2)
        .map(|t| {
            -sigmoid(pos[t]).ln() - neg[t].iter().map(|&n| (1.0 - sigmoid(n)).ln()).sum::<f64>()
        })
        .sum::<f64>()
        / 2.0;
    let got = bce_loss(
        &Tensor::from_slice(&pos),
        &Tensor::from_slice(&neg.concat()).view([2, 2]),
    )
    .double_value(&[]);
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    // Stable where the naive formula is not: σ(-200) underflows in f32.
    let far = bce_loss(
        &Tensor::from_slice(&[-200f32]),
        &Tensor::from_slice(&[200f32]).view([1, 1]),
    )
    .double_value(&[]);
    assert!((far - 400.0).abs() < 1e-3, "{far}");
}

#[test]
fn negatives_avoid_padding_the_target_and_the_users_items() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let avoid = [2, 3, 7, 10];
    let mut counts = [0usize; 11];
    let draws = 21_000;
    for _ in 0..draws {
        let item = draw_negative(&mut rng, 10, &avoid, 3);
        assert!((1..=10).contains(&item), "{item}");
        counts[item as usize] += 1;
    }
    for item in 1..=10 {
        if avoid.contains(&item) {
            assert_eq!(counts[item as usize], 0, "avoided item {item} drawn");
        } else {
            // Uniform over the 6 free items: 3500 each.
            let c = counts[item as usize];
            assert!((3200..3800).contains(&c), "item {item} drawn {c} times");
        }
    }
    // A user who has seen every item: anything but the target.
    let all: Vec<i64> = (1..=5).collect();
    let mut seen = BTreeSet::new();
    for _ in 0..2000 {
        let item = draw_negative(&mut rng, 5, &all, 4);
        assert!((1..=5).contains(&item) && item != 4, "{item}");
        seen.insert(item);
    }
    assert_eq!(seen, BTreeSet::from([1, 2, 3, 5]));
    // Two items, both seen: always the other one.
    for _ in 0..50 {
        assert_eq!(draw_negative(&mut rng, 2, &[1, 2], 1), 2);
        assert_eq!(draw_negative(&mut rng, 2, &[1, 2], 2), 1);
    }
}

#[test]
fn a_batchs_negatives_avoid_each_users_items() {
    let n = 30;
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let seqs: Vec<Vec<i64>> = (0..40)
        .map(|_| {
            let l = rng.gen_range(1..=25);
            (0..l).map(|_| rng.gen_range(1..=n)).collect()
        })
        .collect();
    let windows = training_windows(&seqs, n, 8).unwrap();
    let items = training_items(&seqs);
    assert_eq!(windows.len(), items.len());
    let batch = next_item_batch(&windows, Device::Cpu);
    let avoid: Vec<&[i64]> = items.iter().map(Vec::as_slice).collect();
    let neg = batch_negatives(&batch, &avoid, n, 3, &mut rng).unwrap();
    assert_eq!(neg.size(), vec![batch.count as i64, 3]);
    let width = batch.inputs.size()[1];
    let positions = Vec::<i64>::try_from(&batch.positions).unwrap();
    let neg = Vec::<i64>::try_from(neg.flatten(0, -1)).unwrap();
    for (t, &p) in positions.iter().enumerate() {
        let user = &items[(p / width) as usize];
        for &column in &neg[3 * t..3 * t + 3] {
            let item = column + 1;
            assert!((1..=n).contains(&item), "negative {item}");
            assert!(
                user.binary_search(&item).is_err(),
                "negative {item} is in the user's sequence {user:?}"
            );
        }
    }
}

/// `item_scores` is `item_logits` at the asked columns, whichever way a
/// model computes it.
fn assert_item_scores_pick_logits<C: ModelConfig>(cfg: &C) {
    let (_vs, model) = built(cfg, 3);
    let n = cfg.num_items();
    let hidden = model.encode(&left_pad_batch(&[vec![1, 2, 3], vec![4]], 3), false);
    let hidden = hidden.view([-1, hidden.size()[2]]); // [6, D], padding rows included
    let columns = Tensor::from_slice(&[0i64, n - 1, 5, 5, 1, 0, 2, 3, 4, 6, 7, n - 2]).view([6, 2]);
    let picked = model.item_logits(&hidden).gather(-1, &columns, false);
    let scores = model.item_scores(&hidden, &columns);
    assert_eq!(scores.size(), vec![6, 2]);
    assert!(
        scores.allclose(&picked, 1e-5, 1e-6, false),
        "{}: item_scores differs from item_logits",
        C::NAME
    );
}

#[test]
fn item_scores_are_item_logits_at_the_columns() {
    let n = 12;
    assert_item_scores_pick_logits(&SasRecConfig {
        max_len: 3,
        dim: 8,
        ..SasRecConfig::new(n)
    });
    assert_item_scores_pick_logits(&GsRecConfig {
        max_len: 3,
        dim: 8,
        ..GsRecConfig::new(n)
    });
    for hidden in [0, 6] {
        // Tied to the item table, and a separate output layer.
        assert_item_scores_pick_logits(&Gru4RecConfig {
            max_len: 3,
            dim: 8,
            hidden,
            ..Gru4RecConfig::new(n)
        });
    }
    assert_item_scores_pick_logits(&CaserConfig {
        max_len: 3,
        dim: 8,
        ..CaserConfig::new(n)
    });
    // BERT4Rec keeps the default (every logit, then the columns).
    assert_item_scores_pick_logits(&Bert4RecConfig {
        max_len: 4,
        dim: 8,
        ..Bert4RecConfig::new(n)
    });
}

/// The sampled loss of `rows` of `windows` with their rows of `neg`.
fn loss_of<M: SequenceModel>(
    model: &M,
    windows: &[&[i64]],
    neg: &[Vec<i64>],
) -> (f64, usize, TrainBatch) {
    let batch = next_item_batch(windows, Device::Cpu);
    let k = neg[0].len() as i64;
    let neg = Tensor::from_slice(&neg.concat()).view([-1, k]);
    let loss = sampled_bce_batch_loss(model, &batch, &neg, false).double_value(&[]);
    let count = batch.count;
    (loss, count, batch)
}

/// A batch with a short (left-padded) and a long row scores as the two
/// rows alone, weighted by their positions: the padding adds no term.
fn assert_padding_adds_nothing<C: ModelConfig>(cfg: &C) {
    let (_vs, model) = built(cfg, 4);
    let short: &[i64] = &[4, 9, 2];
    let long: &[i64] = &[1, 5, 7, 3, 8, 2, 6, 11, 10];
    // One row of negatives per predicted position (2 + 8), 2 each.
    let neg: Vec<Vec<i64>> = (0..10).map(|t| vec![t % 12, (t * 5 + 3) % 12]).collect();
    let (both, count, batch) = loss_of(&model, &[short, long], &neg);
    assert_eq!(count, 10);
    assert_eq!(batch.inputs.size(), vec![2, 8]);
    // The short row is padded: 6 zeros in front.
    assert_eq!(
        Vec::<i64>::try_from(batch.inputs.get(0)).unwrap(),
        [0, 0, 0, 0, 0, 0, 4, 9]
    );
    let (a, na, _) = loss_of(&model, &[short], &neg[..2]);
    let (b, nb, _) = loss_of(&model, &[long], &neg[2..]);
    assert_eq!((na, nb), (2, 8));
    let weighted = (a * na as f64 + b * nb as f64) / 10.0;
    assert!(
        (both - weighted).abs() < 1e-5,
        "{}: batch loss {both} vs per-row {weighted}",
        C::NAME
    );
    // And the cross-entropy path agrees in the same way.
    let ce = |w: &[&[i64]]| {
        cross_entropy_batch_loss(&model, &next_item_batch(w, Device::Cpu), false).double_value(&[])
    };
    let weighted = (ce(&[short]) * 2.0 + ce(&[long]) * 8.0) / 10.0;
    assert!((ce(&[short, long]) - weighted).abs() < 1e-5);
}

#[test]
fn padding_positions_contribute_nothing() {
    let n = 12;
    assert_padding_adds_nothing(&SasRecConfig {
        max_len: 8,
        dim: 16,
        heads: 2,
        ..SasRecConfig::new(n)
    });
    assert_padding_adds_nothing(&GsRecConfig {
        max_len: 8,
        dim: 16,
        ..GsRecConfig::new(n)
    });
}

fn bce(negatives: usize) -> Loss {
    Loss::SampledBce { negatives }
}

/// Trains `mcfg` with the sampled loss on the planted successor rule and
/// returns HR@1 of the held-out next items among the items the history
/// lacks — the paper's protocol (`evaluate`'s `exclude_seen`): negatives
/// are never the user's own items, so the loss never pushes those down,
/// and on this data they are the target's neighbours in the chain.
fn bce_hit_rate<C: ModelConfig>(mcfg: &C, n: i64, epochs: usize) -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    // Short chains: in long ones the items a few steps ahead are always
    // the user's own, never a negative, so nothing would rank the next
    // item above them.
    let train_seqs = successor_data(&mut rng, n, 800, (4, 8));
    let held_out = successor_data(&mut rng, n, 200, (3, 8));
    let tcfg = TrainConfig {
        epochs,
        batch_size: 32,
        lr: 5e-3,
        loss: bce(1),
        ..TrainConfig::default()
    };
    let HeldOut {
        stats,
        inputs,
        scores,
        targets,
        ..
    } = train_and_score(mcfg, &tcfg, &train_seqs, &held_out);
    for s in &stats {
        eprintln!("{} epoch {} bce {:.4}", C::NAME, s.epoch, s.train_loss);
    }
    // One positive and one negative at σ = 1/2 cost 2 ln 2; it must fall well below.
    assert!(stats[0].train_loss < 2.0 * 2f64.ln() + 0.1);
    assert!(stats[epochs - 1].train_loss < 0.5 * stats[0].train_loss);
    let unseen = scores.scatter_value(1, &inputs, f64::NEG_INFINITY);
    let hits = hr_at_1(&unseen, &targets);
    eprintln!(
        "{} bce HR@1 = {hits:.3} among unseen items, {:.3} among all",
        C::NAME,
        hr_at_1(&scores, &targets)
    );
    hits
}

#[test]
fn sasrec_learns_the_planted_rule_with_bce() {
    let n = 50;
    let mcfg = SasRecConfig {
        max_len: 20,
        dim: 32,
        layers: 1,
        dropout: 0.1,
        ..SasRecConfig::new(n)
    };
    let hits = bce_hit_rate(&mcfg, n, 8);
    assert!(hits > 0.9, "HR@1 {hits} <= 0.9");
}

#[test]
fn gsrec_learns_the_planted_rule_with_bce() {
    let n = 40;
    let mcfg = GsRecConfig {
        max_len: 20,
        dim: 32,
        heads: 2,
        dropout: 0.1,
        ..GsRecConfig::new(n)
    };
    let hits = bce_hit_rate(&mcfg, n, 8);
    assert!(hits > 0.9, "HR@1 {hits} <= 0.9");
}

/// Trains 3 epochs straight, and for every k in 1..3 k epochs then 3 from
/// the same folder: every resumed run ends bit for bit as the straight one.
/// The sampled loss must also train differently from the cross-entropy, and
/// a cross-entropy checkpoint is not resumed by it.
fn assert_bce_resumes_after_each_epoch<C: ModelConfig>(mcfg: &C, data: &[Vec<i64>]) {
    let tcfg = TrainConfig {
        epochs: 3,
        batch_size: 16,
        lr: 3e-3,
        loss: bce(2),
        ..TrainConfig::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    let (vs_a, stats_a) = train(
        mcfg,
        &tcfg,
        data,
        11,
        Device::Cpu,
        &tmp.path().join("a"),
        &mut |_| {},
    )
    .unwrap();
    for k in 1..3 {
        let dir = tmp.path().join(format!("b{k}"));
        let first = TrainConfig {
            epochs: k,
            ..tcfg.clone()
        };
        train(mcfg, &first, data, 11, Device::Cpu, &dir, &mut |_| {}).unwrap();
        let mut trained = Vec::new();
        let (vs_b, stats_b) = train(mcfg, &tcfg, data, 11, Device::Cpu, &dir, &mut |s| {
            trained.push(s.epoch)
        })
        .unwrap();
        assert_eq!(
            trained,
            (k..3).collect::<Vec<_>>(),
            "{}: not resumed",
            C::NAME
        );
        assert_eq!(loss_bits(&stats_a), loss_bits(&stats_b), "{}", C::NAME);
        for (name, a) in vs_a.variables() {
            assert!(
                a.equal(&vs_b.variables()[&name]),
                "{}: {name} differs after resuming at epoch {k}",
                C::NAME
            );
        }
    }
    let ce = TrainConfig {
        loss: Loss::CrossEntropy,
        ..tcfg.clone()
    };
    let dir_ce = tmp.path().join("ce");
    let (vs_ce, _) = train(mcfg, &ce, data, 11, Device::Cpu, &dir_ce, &mut |_| {}).unwrap();
    assert!(!vs_ce.variables()["item_emb"].equal(&vs_a.variables()["item_emb"]));
    let Err(err) = train(mcfg, &tcfg, data, 11, Device::Cpu, &dir_ce, &mut |_| {}) else {
        panic!("a cross-entropy checkpoint resumed under bce");
    };
    assert!(
        format!("{err:#}").contains("another training config"),
        "{err:#}"
    );
}

#[test]
fn bce_resume_after_each_epoch_is_bit_exact() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let data = successor_data(&mut rng, 30, 64, (2, 24));
    assert_bce_resumes_after_each_epoch(
        &SasRecConfig {
            max_len: 16,
            dim: 16,
            ..SasRecConfig::new(30)
        },
        &data,
    );
    assert_bce_resumes_after_each_epoch(
        &GsRecConfig {
            max_len: 16,
            dim: 16,
            ..GsRecConfig::new(30)
        },
        &data,
    );
    assert_bce_resumes_after_each_epoch(
        &Gru4RecConfig {
            max_len: 16,
            dim: 16,
            ..Gru4RecConfig::new(30)
        },
        &data,
    );
    assert_bce_resumes_after_each_epoch(
        &CaserConfig {
            max_len: 3,
            dim: 16,
            train_len: 10,
            ..CaserConfig::new(30)
        },
        &data,
    );
}

#[test]
fn bce_on_a_model_without_it_is_refused_at_plan_time_naming_the_param() {
    assert_loss_refused_for("bce", &["bert4rec", "pop", "itemknn"]);
    assert_plans(&[
        "model = \"sasrec\", loss = \"bce\"",
        "model = \"gsrec\", loss = \"bce\", negatives = 3",
        "model = \"gru4rec\", loss = \"bce\"",
        "model = \"caser\", loss = \"bce\", max_len = 5, train_len = 20",
        "model = \"bert4rec\", loss = \"ce\"",
    ]);
    let err = plan(&train_spec(
        "loss",
        "model = \"sasrec\", loss = \"bce\", negatives = 0",
    ))
    .unwrap_err();
    assert!(err.contains("negatives: must be above 0"), "{err}");
    let err = plan(&train_spec("loss", "model = \"caser\", train_len = 0")).unwrap_err();
    assert!(err.contains("train_len: must be above 0"), "{err}");
}

/// Caser's training batch for `seqs` as the trainer builds it.
fn caser_batch(cfg: &CaserConfig, seqs: &[Vec<i64>]) -> TrainBatch {
    let windows = training_windows(seqs, cfg.num_items, cfg.max_len()).unwrap();
    cfg.training_batch(&windows, &mut batch_rng(1, 0), Device::Cpu)
}

/// The targets (items) of a batch, row by row.
fn targets_by_row(batch: &TrainBatch) -> Vec<Vec<i64>> {
    let width = batch.inputs.size()[1];
    let rows = batch.inputs.size()[0] as usize;
    let positions = Vec::<i64>::try_from(&batch.positions).unwrap();
    let targets = Vec::<i64>::try_from(&batch.targets).unwrap();
    let mut out = vec![Vec::new(); rows];
    for (p, t) in positions.iter().zip(targets) {
        out[(p / width) as usize].push(t + 1);
    }
    out
}

#[test]
fn caser_train_len_sets_the_number_of_training_windows() {
    let n = 50;
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let seqs: Vec<Vec<i64>> = [2usize, 5, 30, 250, 300]
        .iter()
        .map(|&l| (0..l).map(|_| rng.gen_range(1..=n)).collect())
        .collect();
    let window = |train_len| CaserConfig {
        max_len: 5,
        dim: 8,
        train_len,
        ..CaserConfig::new(n)
    };
    let default = CaserConfig {
        max_len: 5,
        dim: 8,
        ..CaserConfig::new(n)
    };
    assert_eq!(default.train_len, 200);
    // The default: every position of the last 200 items, exactly the
    // batch the trainer built before train_len was a param (next-item
    // prediction at every input position of the last 201 items).
    let batch = caser_batch(&default, &seqs);
    assert_eq!(batch.count, 1 + 4 + 29 + 200 + 200);
    let windows = training_windows(&seqs, n, 200).unwrap();
    let before = next_item_batch(&windows, Device::Cpu);
    assert!(batch.inputs.equal(&before.inputs));
    assert!(batch.positions.equal(&before.positions));
    assert!(batch.targets.equal(&before.targets));

    // Fewer: the last 10 positions of each sequence.
    let ten = caser_batch(&window(10), &seqs);
    assert_eq!(ten.count, 1 + 4 + 10 + 10 + 10);
    for (row, s) in targets_by_row(&ten).iter().zip(&seqs) {
        let k = (s.len() - 1).min(10);
        assert_eq!(row.as_slice(), &s[s.len() - k..]);
    }
    // Fewer than the window L = 5: the last 2 positions, each still
    // reading the items before it (5 inputs per long row).
    let two = caser_batch(&window(2), &seqs);
    assert_eq!(two.count, 1 + 2 + 2 + 2 + 2);
    assert_eq!(two.inputs.size(), vec![5, 5]);
    let last_inputs = Vec::<i64>::try_from(two.inputs.get(4)).unwrap();
    assert_eq!(last_inputs.as_slice(), &seqs[4][294..299]);
    for (row, s) in targets_by_row(&two).iter().zip(&seqs) {
        let k = (s.len() - 1).min(2);
        assert_eq!(row.as_slice(), &s[s.len() - k..]);
    }
}

/// Runs the `train` kind with `params` on `data`; returns the model folder.
fn train_stage(
    tmp: &Path,
    tag: &str,
    params: serde_json::Value,
    data: &Path,
) -> std::path::PathBuf {
    let (out, _) = run_kind(
        "train",
        params,
        &[("data", data)],
        &tmp.join(tag),
        &tmp.join(format!("{tag}.ckpt")),
        9,
    )
    .unwrap();
    out["model"].clone()
}

#[test]
fn the_stage_trains_with_bce_reproducibly_and_passes_train_len_to_caser() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let n = 20;
    let data = tmp.path().join("data");
    write_sequences(&data, &successor_data(&mut rng, n, 40, (6, 14)), n, true);
    let sasrec = |loss: &str| {
        serde_json::json!({ "model": "sasrec", "dim": 8, "layers": 1, "max_len": 12,
            "epochs": 2, "batch_size": 16, "loss": loss, "negatives": 2 })
    };
    let read = |dir: &Path, file: &str| std::fs::read(dir.join(file)).unwrap();
    let a = train_stage(tmp.path(), "a", sasrec("bce"), &data);
    let b = train_stage(tmp.path(), "b", sasrec("bce"), &data);
    let c = train_stage(tmp.path(), "c", sasrec("ce"), &data);
    assert_eq!(read(&a, "model.safetensors"), read(&b, "model.safetensors"));
    assert_eq!(read(&a, "training.json"), read(&b, "training.json"));
    assert_ne!(read(&a, "model.safetensors"), read(&c, "model.safetensors"));
    // train_loss is the sampled loss, valid_loss the full-softmax one.
    let log: serde_json::Value = serde_json::from_slice(&read(&a, "training.json")).unwrap();
    let first = &log["epochs"][0];
    let (train_loss, valid_loss) = (
        first["train_loss"].as_f64().unwrap(),
        first["valid_loss"].as_f64().unwrap(),
    );
    // Near 3 ln 2 (one positive, two negatives, σ near 1/2) against near
    // ln 20 (a softmax over 20 items).
    assert!(
        train_loss < 2.3 && valid_loss > 2.5,
        "{train_loss} {valid_loss}"
    );

    let caser = |train_len: Option<i64>| {
        let mut p = serde_json::json!({ "model": "caser", "dim": 8, "max_len": 3,
            "epochs": 1, "batch_size": 16 });
        if let Some(t) = train_len {
            p["train_len"] = t.into();
        }
        p
    };
    for (tag, train_len, want) in [("d", None, 200), ("e", Some(4), 4)] {
        let dir = train_stage(tmp.path(), tag, caser(train_len), &data);
        let config: serde_json::Value = serde_json::from_slice(&read(&dir, "config.json")).unwrap();
        assert_eq!(config["train_len"], want);
    }
}

//! `loss = "bce_full"` (CPU): binary cross-entropy with logits over the
//! whole catalogue with a one-hot target, the GSRec thesis' loss. Its value
//! and gradient on hand-computed cases, that padding adds nothing, that
//! SASRec and GSRec learn with it (GSRec also on sliding windows, the
//! thesis' last-hidden-state training), that it resumes bit for bit, that
//! the stage maps it and plans refuse it where it does not apply. (The
//! sampled `loss = "bce"` and Caser's `train_len` are tested in loss_sampled_bce.rs.)

mod common;

use std::path::Path;

use common::{
    assert_loss_refused_for, assert_plans, assert_resume_is_bit_exact_with, built, hr_at_1, plan,
    run_kind, sigmoid, successor_data, train_and_score, train_spec, write_sequences, HeldOut,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use seqpipe_torch::models::gsrec::GsRecConfig;
use seqpipe_torch::models::sasrec::SasRecConfig;
use seqpipe_torch::models::trainer::{
    cross_entropy_batch_loss, full_bce_batch_loss, full_bce_loss, next_item_batch, Loss,
    ModelConfig, TrainConfig,
};
use tch::{Device, Kind, Reduction, Tensor};

fn doubles(rows: &[&[f64]]) -> Tensor {
    let width = rows[0].len() as i64;
    Tensor::from_slice(&rows.concat()).view([-1, width])
}

#[test]
fn full_bce_is_the_hand_computed_value() {
    // All logits 0: every one of the 3 items costs ln 2, whatever the target.
    let zero = full_bce_loss(
        &Tensor::zeros([2, 3], (Kind::Double, Device::Cpu)),
        &Tensor::from_slice(&[0i64, 2]),
    );
    assert!((zero.double_value(&[]) - 3.0 * 2f64.ln()).abs() < 1e-12);

    // Two rows: -ln σ(x_target) - Σ_other ln(1 - σ(x)), averaged over rows.
    let logits = [[0.5, -1.0, 2.0], [3.0, 0.25, -4.0]];
    let targets = [2usize, 0];
    let want = (0..2)
        .map(|r| {
            (0..3)
                .map(|j| {
                    let p = sigmoid(logits[r][j]);
                    if j == targets[r] {
                        -p.ln()
                    } else {
                        -(1.0 - p).ln()
                    }
                })
                .sum::<f64>()
        })
        .sum::<f64>()
        / 2.0;
    let x = doubles(&[&logits[0], &logits[1]]).set_requires_grad(true);
    let t = Tensor::from_slice(&[2i64, 0]);
    let got = full_bce_loss(&x, &t);
    assert!(
        (got.double_value(&[]) - want).abs() < 1e-12,
        "{} vs {want}",
        got.double_value(&[])
    );

    // It is PyTorch's BCEWithLogits on the one-hot target, summed over the
    // items and averaged over the rows.
    let one_hot = x.zeros_like().scatter_value(1, &t.unsqueeze(1), 1.0);
    let torch =
        x.detach()
            .binary_cross_entropy_with_logits::<Tensor>(&one_hot, None, None, Reduction::Sum)
            / 2.0;
    assert!((torch.double_value(&[]) - want).abs() < 1e-12);

    // Its gradient: (σ(x) - one_hot) / rows.
    got.backward();
    let want_grad = (x.detach().sigmoid() - &one_hot) / 2.0;
    let diff = (x.grad() - want_grad).abs().max().double_value(&[]);
    assert!(diff < 1e-12, "gradient off by {diff}");
}

#[test]
fn full_bce_is_finite_at_extreme_logits_and_sums_bf16_in_fp32() {
    // σ(±200) saturates in f32: a naive ln σ would give -inf.
    let x = Tensor::from_slice(&[200f32, -200.0, 200.0]).view([1, 3]);
    let loss = full_bce_loss(&x, &Tensor::from_slice(&[1i64])).double_value(&[]);
    // Target at -200 costs 200, the other 200 costs 200, the last 200 too.
    assert!((loss - 600.0).abs() < 1e-3, "{loss}");

    let x = Tensor::from_slice(&[0.3f32, -1.2, 2.5, 0.0]).view([1, 4]);
    let t = Tensor::from_slice(&[3i64]);
    let fp32 = full_bce_loss(&x, &t);
    let bf16 = full_bce_loss(&x.to_kind(Kind::BFloat16), &t);
    assert_eq!(bf16.kind(), Kind::Float);
    assert!((fp32.double_value(&[]) - bf16.double_value(&[])).abs() < 0.05);
}

/// A batch with a short (left-padded) and a long row has the two rows'
/// losses weighted by their positions, and differs from the cross-entropy.
fn assert_padding_adds_nothing<C: ModelConfig>(cfg: &C) {
    let (_vs, model) = built(cfg, 4);
    let short: &[i64] = &[4, 9, 2];
    let long: &[i64] = &[1, 5, 7, 3, 8, 2, 6, 11, 10];
    let loss = |w: &[&[i64]]| {
        full_bce_batch_loss(&model, &next_item_batch(w, Device::Cpu), false).double_value(&[])
    };
    let both = loss(&[short, long]);
    let weighted = (loss(&[short]) * 2.0 + loss(&[long]) * 8.0) / 10.0;
    assert!(
        (both - weighted).abs() < 1e-5,
        "{}: batch loss {both} vs per-row {weighted}",
        C::NAME
    );
    let ce = cross_entropy_batch_loss(&model, &next_item_batch(&[short, long], Device::Cpu), false)
        .double_value(&[]);
    assert!((both - ce).abs() > 1e-3, "{}: {both} is the CE", C::NAME);
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

/// Trains `mcfg` with the full BCE on the planted successor rule and
/// returns HR@1 of the held-out next items among ALL items: every other
/// item is a negative, the user's own included, so no `exclude_seen` is
/// needed (unlike the sampled loss). The loss first sits on a plateau
/// where every logit is pushed down (the N - 1 negatives outweigh the
/// target) and needs some hundreds of steps to leave it: small batches.
fn full_bce_hit_rate<C: ModelConfig>(
    mcfg: &C,
    n: i64,
    (epochs, batch_size): (usize, usize),
    sliding: bool,
) -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let train_seqs = successor_data(&mut rng, n, 800, (4, 16));
    let held_out = successor_data(&mut rng, n, 200, (3, 16));
    let tcfg = TrainConfig {
        epochs,
        batch_size,
        lr: 5e-3,
        loss: Loss::FullBce,
        sliding,
        ..TrainConfig::default()
    };
    let HeldOut {
        stats,
        scores,
        targets,
        ..
    } = train_and_score(mcfg, &tcfg, &train_seqs, &held_out);
    for s in &stats {
        eprintln!("{} epoch {} bce_full {:.4}", C::NAME, s.epoch, s.train_loss);
    }
    // n items at σ = 1/2 cost n ln 2 per position; it must fall far below.
    let start = n as f64 * 2f64.ln();
    assert!(stats[0].train_loss < start + 0.5, "{}", stats[0].train_loss);
    assert!(stats[epochs - 1].train_loss < 0.1 * start);
    let hits = hr_at_1(&scores, &targets);
    eprintln!("{} bce_full HR@1 = {hits:.3} (sliding {sliding})", C::NAME);
    hits
}

fn small_gsrec(n: i64) -> GsRecConfig {
    GsRecConfig {
        max_len: 20,
        dim: 32,
        heads: 2,
        dropout: 0.1,
        ..GsRecConfig::new(n)
    }
}

#[test]
fn sasrec_learns_the_planted_rule_with_full_bce() {
    let n = 50;
    let mcfg = SasRecConfig {
        max_len: 20,
        dim: 32,
        layers: 1,
        dropout: 0.1,
        ..SasRecConfig::new(n)
    };
    let hits = full_bce_hit_rate(&mcfg, n, (6, 8), false);
    assert!(hits > 0.9, "HR@1 {hits} <= 0.9");
}

#[test]
fn gsrec_learns_the_planted_rule_with_full_bce() {
    let n = 40;
    let hits = full_bce_hit_rate(&small_gsrec(n), n, (8, 8), false);
    assert!(hits > 0.9, "HR@1 {hits} <= 0.9");
}

#[test]
fn gsrec_learns_the_planted_rule_with_full_bce_on_sliding_windows() {
    // The thesis' setup: each prefix scored at its last hidden state only.
    let n = 40;
    let hits = full_bce_hit_rate(&small_gsrec(n), n, (4, 32), true);
    assert!(hits > 0.9, "HR@1 {hits} <= 0.9");
}

#[test]
fn full_bce_resume_is_bit_exact_and_differs_from_ce() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let data = successor_data(&mut rng, 30, 64, (2, 24));
    let base = TrainConfig {
        loss: Loss::FullBce,
        ..TrainConfig::default()
    };
    let sasrec = SasRecConfig {
        max_len: 16,
        dim: 16,
        ..SasRecConfig::new(30)
    };
    let gsrec = GsRecConfig {
        max_len: 16,
        dim: 16,
        ..GsRecConfig::new(30)
    };
    let full = assert_resume_is_bit_exact_with(&sasrec, &data, base.clone());
    let ce = assert_resume_is_bit_exact_with(&sasrec, &data, TrainConfig::default());
    assert!(!full.vs_a.variables()["item_emb"].equal(&ce.vs_a.variables()["item_emb"]));
    assert_resume_is_bit_exact_with(&gsrec, &data, base.clone());
    assert_resume_is_bit_exact_with(
        &gsrec,
        &data,
        TrainConfig {
            sliding: true,
            ..base
        },
    );
}

#[test]
fn the_stage_trains_gsrec_with_full_bce() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let n = 20;
    let data = tmp.path().join("data");
    write_sequences(&data, &successor_data(&mut rng, n, 40, (6, 14)), n, true);
    let gsrec = |loss: &str, tag: &str| {
        let params = serde_json::json!({ "model": "gsrec", "dim": 8, "layers": 1,
            "max_len": 12, "epochs": 1, "batch_size": 16, "loss": loss });
        let (out, _) = run_kind(
            "train",
            params,
            &[("data", data.as_path())],
            &tmp.path().join(tag),
            &tmp.path().join(format!("{tag}.ckpt")),
            9,
        )
        .unwrap();
        out["model"].clone()
    };
    let read = |dir: &Path, file: &str| std::fs::read(dir.join(file)).unwrap();
    let full = gsrec("bce_full", "a");
    let ce = gsrec("ce", "b");
    assert_ne!(
        read(&full, "model.safetensors"),
        read(&ce, "model.safetensors")
    );
    // train_loss is the full BCE (near n ln 2 = 13.9 at the start), while
    // valid_loss stays the softmax cross-entropy (near ln n = 3.0).
    let log: serde_json::Value = serde_json::from_slice(&read(&full, "training.json")).unwrap();
    let first = &log["epochs"][0];
    let (train_loss, valid_loss) = (
        first["train_loss"].as_f64().unwrap(),
        first["valid_loss"].as_f64().unwrap(),
    );
    assert!(
        train_loss > 5.0 && valid_loss < 4.0,
        "{train_loss} {valid_loss}"
    );
}

#[test]
fn full_bce_on_a_model_without_it_is_refused_at_plan_time_naming_the_param() {
    assert_loss_refused_for("bce_full", &["bert4rec", "pop", "markov"]);
    assert_plans(&[
        "model = \"sasrec\", loss = \"bce_full\"",
        "model = \"gsrec\", loss = \"bce_full\", training = \"sliding\"",
        "model = \"gru4rec\", loss = \"bce_full\"",
        "model = \"caser\", loss = \"bce_full\", max_len = 5",
    ]);
    // Sliding windows keep refusing the sampled loss.
    let err = plan(&train_spec(
        "losses",
        "model = \"gsrec\", loss = \"bce\", training = \"sliding\"",
    ))
    .unwrap_err();
    assert!(err.contains("training: \"sliding\" takes loss"), "{err}");
    let err = plan(&train_spec("losses", "model = \"sasrec\", loss = \"bpr\"")).unwrap_err();
    assert!(
        err.contains("loss: unknown loss \"bpr\" (ce, bce, bce_full)"),
        "{err}"
    );
}

//! Per-epoch validation, learning-rate schedules (cosine with warm-up,
//! reduce-on-plateau) and early stopping with best-epoch restore in the
//! shared trainer and the `train` stage — and that a killed run resumed
//! ends bit for bit where an uninterrupted one does (CPU).

mod common;

use std::f64::consts::PI;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use common::{leave_one_out, run_kind, successor_data, write_sequences};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use seqpipe_stages::seqdata::Example;
use seqpipe_torch::models::gru4rec::Gru4RecConfig;
use seqpipe_torch::models::infonce::Plateau;
use seqpipe_torch::models::optim::{cosine_lr, LrScheduler, Schedule};
use seqpipe_torch::models::trainer::{
    fit, torch_rng_lock, train, validate, EarlyStopping, EpochStats, ModelConfig, StopMetric,
    TrainConfig, TrainData, Trained, ValidProtocol, Validation,
};
use tch::nn::VarStore;
use tch::Device;

fn gru(num_items: i64) -> Gru4RecConfig {
    Gru4RecConfig {
        num_items,
        max_len: 16,
        dim: 16,
        hidden: 0,
        layers: 1,
        dropout: 0.2,
    }
}

/// Sequences of uniformly random items: nothing to learn, so a model
/// trained hard on them overfits and its validation numbers turn.
fn random_data(rng: &mut ChaCha8Rng, n: i64, count: usize, len: (usize, usize)) -> Vec<Vec<i64>> {
    (0..count)
        .map(|_| {
            let l = rng.gen_range(len.0..=len.1);
            (0..l).map(|_| rng.gen_range(1..=n)).collect()
        })
        .collect()
}

/// Trains `mcfg` with `cfg` on `train`, validating on `valid`, seed 3.
fn fit_on(
    mcfg: &Gru4RecConfig,
    cfg: &TrainConfig,
    train: &[Vec<i64>],
    valid: &[Example],
    dir: &Path,
    on_epoch: &mut dyn FnMut(&EpochStats),
) -> anyhow::Result<Trained> {
    let data = TrainData {
        train,
        valid,
        valid_seen: &[],
        init: None,
    };
    fit(mcfg, cfg, &data, 3, Device::Cpu, dir, on_epoch)
}

/// The trained model in `vs` on `valid`, as the trainer validates.
fn revalidate(mcfg: &Gru4RecConfig, vs: &VarStore, valid: &[Example], batch: usize) -> Validation {
    let model = {
        let _g = torch_rng_lock();
        mcfg.build(&vs.root()) // every variable exists: draws nothing
    };
    validate(
        &model,
        valid,
        &ValidProtocol::default(),
        mcfg.max_len(),
        batch,
    )
    .unwrap()
}

/// Every float of every epoch, as bits: what a resumed run must reproduce.
fn stat_bits(stats: &[EpochStats]) -> Vec<(usize, u64, u64, Option<[u64; 3]>)> {
    stats
        .iter()
        .map(|s| {
            let v = s.valid.map(|v| {
                [
                    v.loss.to_bits(),
                    v.hr_at_10.to_bits(),
                    v.ndcg_at_10.to_bits(),
                ]
            });
            (s.epoch, s.train_loss.to_bits(), s.lr.to_bits(), v)
        })
        .collect()
}

fn assert_same_vars(a: &VarStore, b: &VarStore, what: &str) {
    let (va, vb) = (a.variables(), b.variables());
    assert_eq!(va.len(), vb.len());
    for (name, t) in &va {
        assert!(t.equal(&vb[name]), "{what}: variable {name} differs");
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-15 * b.abs().max(1.0)
}

#[test]
fn cosine_rates_match_hand_computed_values() {
    // 2 warm-up batches of 6: 1/2, 2/2, then (1 + cos(pi * p)) / 2 for
    // p = 0, 1/4, 2/4, 3/4.
    let want = [
        0.5,
        1.0,
        1.0,
        (1.0 + (PI / 4.0).cos()) / 2.0, // 0.853553...
        0.5,
        (1.0 - (PI / 4.0).cos()) / 2.0, // 0.146446...
    ];
    for (step, w) in want.iter().enumerate() {
        let got = cosine_lr(1.0, 0.0, step, 2, 6);
        assert!(close(got, *w), "step {step}: {got} vs {w}");
        // With a floor, the same shape between min_lr and the base rate.
        let floored = cosine_lr(2.0, 0.2, step, 2, 6);
        let expected = if step < 2 { 2.0 * w } else { 0.2 + 1.8 * w };
        assert!(
            close(floored, expected),
            "step {step}: {floored} vs {expected}"
        );
    }
    // The same rates through the scheduler: 3 epochs of 2 batches, 1 of
    // them warming up; every rate is its batch's, whatever the epoch.
    let schedule = Schedule::Cosine {
        warmup_epochs: 1,
        min_lr: 0.0,
    };
    let mut s = LrScheduler::new(&schedule, 1.0, 3, 2);
    for epoch in 0..3 {
        for batch in 0..2 {
            let got = s.lr(epoch, batch);
            assert!(
                close(got, want[epoch * 2 + batch]),
                "{epoch}/{batch}: {got}"
            );
        }
        s.end_epoch(None).unwrap(); // cosine needs no validation
    }
    // Without warm-up the first batch gets the full rate.
    assert_eq!(cosine_lr(0.1, 0.0, 0, 0, 10), 0.1);
}

#[test]
fn plateau_rate_drops_after_more_than_patience_bad_epochs() {
    let schedule = Schedule::Plateau {
        factor: 0.5,
        patience: 1,
    };
    let mut s = LrScheduler::new(&schedule, 0.01, 10, 7);
    let mut rates = Vec::new();
    // best 1.0, better 0.9, then 1 bad (tolerated), 2 bad: halve; 0.8
    // is a new best, 0.8 * (1 - 1e-5) is below the relative threshold (bad),
    // then another bad: halve again.
    for loss in [1.0, 0.9, 0.95, 0.97, 0.8, 0.8 * (1.0 - 1e-5), 0.85, 0.7] {
        rates.push(s.lr(0, 3)); // the rate holds for the whole epoch
        s.end_epoch(Some(loss)).unwrap();
    }
    rates.push(s.lr(0, 0));
    assert_eq!(
        rates,
        [0.01, 0.01, 0.01, 0.01, 0.005, 0.005, 0.005, 0.0025, 0.0025]
    );
    let err = s.end_epoch(None).unwrap_err().to_string();
    assert!(err.contains("validation loss"), "{err}");
}

#[test]
fn each_epoch_records_its_cosine_rate() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let seqs = successor_data(&mut rng, 20, 40, (5, 10));
    let (train_seqs, valid, _) = leave_one_out(&seqs);
    // 40 sequences in batches of 16: 3 batches an epoch, 12 in all, the
    // first 3 warming up. First batches: steps 0, 3, 6 and 9.
    let cfg = TrainConfig {
        epochs: 4,
        batch_size: 16,
        lr: 0.01,
        schedule: Schedule::Cosine {
            warmup_epochs: 1,
            min_lr: 0.0,
        },
        ..TrainConfig::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    let trained = fit_on(&gru(20), &cfg, &train_seqs, &valid, tmp.path(), &mut |_| {}).unwrap();
    let want = [
        0.01 / 3.0,                                  // warm-up batch 1 of 3
        0.01,                                        // p = 0
        0.01 * (1.0 + (PI / 3.0).cos()) / 2.0,       // p = 3/9: 0.0075
        0.01 * (1.0 + (2.0 * PI / 3.0).cos()) / 2.0, // p = 6/9: 0.0025
    ];
    let got: Vec<f64> = trained.stats.iter().map(|s| s.lr).collect();
    for (g, w) in got.iter().zip(want) {
        assert!(close(*g, w), "{got:?} vs {want:?}");
    }
    assert!(close(got[2], 0.0075) && close(got[3], 0.0025), "{got:?}");
    // Validation ran after every epoch and the model learnt the rule.
    let v: Vec<Validation> = trained.stats.iter().map(|s| s.valid.unwrap()).collect();
    assert!(
        v[3].loss < v[0].loss && v[3].ndcg_at_10 > v[0].ndcg_at_10,
        "{v:?}"
    );
}

/// Random data trained hard: the validation loss rises after an epoch or
/// two (the model memorises the training sequences).
fn overfitting() -> (Vec<Vec<i64>>, Vec<Example>, Gru4RecConfig) {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let seqs = random_data(&mut rng, 30, 48, (8, 14));
    let (train_seqs, valid, _) = leave_one_out(&seqs);
    (train_seqs, valid, gru(30))
}

fn hard(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 16,
        lr: 0.02,
        ..TrainConfig::default()
    }
}

#[test]
fn plateau_drops_follow_the_validation_loss() {
    // Without dropout the memorising starts early enough to see drops in
    // 8 epochs whatever the draws (with it, the turn may come later).
    let (train_seqs, valid, mcfg) = overfitting();
    let mcfg = Gru4RecConfig {
        dropout: 0.0,
        ..mcfg
    };
    let cfg = TrainConfig {
        schedule: Schedule::Plateau {
            factor: 0.5,
            patience: 1,
        },
        ..hard(8)
    };
    let tmp = tempfile::tempdir().unwrap();
    let trained = fit_on(&mcfg, &cfg, &train_seqs, &valid, tmp.path(), &mut |_| {}).unwrap();
    // Replaying PyTorch's rule on the recorded validation losses gives the
    // recorded rates, epoch by epoch.
    let mut plateau = Plateau::new(0.5, 1);
    let mut lr = cfg.lr;
    for s in &trained.stats {
        assert_eq!(s.lr, lr, "epoch {}", s.epoch);
        lr = plateau.step(s.valid.unwrap().loss, lr);
    }
    let rates: Vec<f64> = trained.stats.iter().map(|s| s.lr).collect();
    assert!(
        rates.contains(&0.01),
        "the rate never halved: {rates:?}, valid losses {:?}",
        trained
            .stats
            .iter()
            .map(|s| s.valid.unwrap().loss)
            .collect::<Vec<_>>()
    );
}

#[test]
fn early_stopping_ends_training_and_keeps_the_best_epoch() {
    let (train_seqs, valid, mcfg) = overfitting();
    for metric in [StopMetric::ValidLoss, StopMetric::NdcgAt10] {
        let cfg = TrainConfig {
            early_stopping: Some(EarlyStopping {
                patience: 1,
                metric,
            }),
            ..hard(30)
        };
        let tmp = tempfile::tempdir().unwrap();
        let trained = fit_on(&mcfg, &cfg, &train_seqs, &valid, tmp.path(), &mut |_| {}).unwrap();
        let stats = &trained.stats;
        assert!(
            trained.stopped_early,
            "{metric:?}: ran all {} epochs",
            stats.len()
        );
        assert!(stats.len() < 30);
        let value = |s: &EpochStats| {
            let v = s.valid.unwrap();
            match metric {
                StopMetric::ValidLoss => -v.loss,
                _ => v.ndcg_at_10,
            }
        };
        // The best epoch is the first with the best value; with patience 1
        // the epoch after it was the first not to improve, and the last.
        let best = trained.best_epoch.unwrap();
        let top = stats.iter().map(value).fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(best, stats.iter().position(|s| value(s) == top).unwrap());
        assert_eq!(stats.len(), best + 2, "{metric:?}");
        // The saved weights are the best epoch's: validating them again
        // gives that epoch's numbers exactly, not the last epoch's.
        let again = revalidate(&mcfg, &trained.vs, &valid, cfg.batch_size);
        assert_eq!(again, stats[best].valid.unwrap(), "{metric:?}");
        assert_ne!(again, stats.last().unwrap().valid.unwrap());
    }
}

#[test]
fn validation_changes_no_weight() {
    // The default path: validating after every epoch (fit with examples)
    // ends with the very weights and losses of training without them, and
    // so does validating every other epoch or never.
    let (train_seqs, valid, mcfg) = overfitting();
    let tmp = tempfile::tempdir().unwrap();
    let (vs, stats) = train(
        &mcfg,
        &hard(3),
        &train_seqs,
        3,
        Device::Cpu,
        &tmp.path().join("without"),
        &mut |_| {},
    )
    .unwrap();
    assert!(stats.iter().all(|s| s.valid.is_none()));
    let losses = |s: &[EpochStats]| s.iter().map(|e| e.train_loss.to_bits()).collect::<Vec<_>>();
    for (every, validated) in [
        (1, [true, true, true]),
        (2, [false, true, true]),
        (0, [false; 3]),
    ] {
        let cfg = TrainConfig {
            valid_every: every,
            ..hard(3)
        };
        let dir = tmp.path().join(format!("every-{every}"));
        let with = fit_on(&mcfg, &cfg, &train_seqs, &valid, &dir, &mut |_| {}).unwrap();
        assert_same_vars(&with.vs, &vs, &format!("valid_every {every}"));
        assert_eq!(losses(&with.stats), losses(&stats));
        let got: Vec<bool> = with.stats.iter().map(|s| s.valid.is_some()).collect();
        assert_eq!(got, validated, "valid_every {every}");
        assert!(with.stats.iter().all(|s| s.lr == 0.02));
        assert_eq!((with.best_epoch, with.stopped_early), (None, false));
    }
}

/// Runs `cfg` straight, and again killed right after each epoch but the
/// last is committed (a panic in `on_epoch`, which runs once the
/// checkpoint is on disk) then rerun on the same folder; every rerun must
/// end exactly as the straight run: stats, best epoch, stop and weights.
/// Returns the straight run.
fn assert_kills_resume_exactly(cfg: &TrainConfig) -> Trained {
    let (train_seqs, valid, mcfg) = overfitting();
    let tmp = tempfile::tempdir().unwrap();
    let straight = fit_on(
        &mcfg,
        cfg,
        &train_seqs,
        &valid,
        &tmp.path().join("straight"),
        &mut |_| {},
    )
    .unwrap();
    for k in 1..straight.stats.len() {
        let dir = tmp.path().join(format!("killed-{k}"));
        let killed = catch_unwind(AssertUnwindSafe(|| {
            fit_on(&mcfg, cfg, &train_seqs, &valid, &dir, &mut |s| {
                if s.epoch + 1 == k {
                    panic!("(deliberate) killed after epoch {k}");
                }
            })
        }));
        assert!(killed.is_err(), "the run was not killed after epoch {k}");
        let mut trained_again = Vec::new();
        let resumed = fit_on(&mcfg, cfg, &train_seqs, &valid, &dir, &mut |s| {
            trained_again.push(s.epoch)
        })
        .unwrap();
        assert_eq!(
            trained_again.first(),
            Some(&k),
            "kill {k}: did not resume at epoch {k}"
        );
        assert_eq!(
            stat_bits(&resumed.stats),
            stat_bits(&straight.stats),
            "kill {k}"
        );
        assert_eq!(resumed.best_epoch, straight.best_epoch, "kill {k}");
        assert_eq!(resumed.stopped_early, straight.stopped_early, "kill {k}");
        assert_same_vars(&resumed.vs, &straight.vs, &format!("kill {k}"));
    }
    straight
}

#[test]
fn resume_is_bit_exact_with_cosine_and_early_stopping() {
    let cfg = TrainConfig {
        schedule: Schedule::Cosine {
            warmup_epochs: 1,
            min_lr: 1e-4,
        },
        early_stopping: Some(EarlyStopping {
            patience: 2,
            metric: StopMetric::ValidLoss,
        }),
        ..hard(12)
    };
    let straight = assert_kills_resume_exactly(&cfg);
    // The kills fell before the best epoch, between it and the stop, and
    // during the warm-up.
    let best = straight.best_epoch.unwrap();
    assert!(straight.stopped_early && best >= 2, "best {best}");
}

#[test]
fn resume_is_bit_exact_across_plateau_drops() {
    let cfg = TrainConfig {
        schedule: Schedule::Plateau {
            factor: 0.5,
            patience: 0,
        },
        early_stopping: Some(EarlyStopping {
            patience: 3,
            metric: StopMetric::ValidLoss,
        }),
        ..hard(12)
    };
    let straight = assert_kills_resume_exactly(&cfg);
    let rates: Vec<f64> = straight.stats.iter().map(|s| s.lr).collect();
    let drop = rates.iter().position(|&r| r < 0.02);
    assert!(
        drop.is_some_and(|d| d + 1 < rates.len()),
        "no drop with epochs after it to resume across: {rates:?}"
    );
}

#[test]
fn a_stopped_run_reruns_to_its_best_epoch_without_training() {
    let (train_seqs, valid, mcfg) = overfitting();
    let cfg = TrainConfig {
        early_stopping: Some(EarlyStopping {
            patience: 1,
            metric: StopMetric::ValidLoss,
        }),
        ..hard(30)
    };
    let tmp = tempfile::tempdir().unwrap();
    let first = fit_on(&mcfg, &cfg, &train_seqs, &valid, tmp.path(), &mut |_| {}).unwrap();
    assert!(first.stopped_early);
    let mut trained = 0;
    let again = fit_on(&mcfg, &cfg, &train_seqs, &valid, tmp.path(), &mut |_| {
        trained += 1
    })
    .unwrap();
    assert_eq!(trained, 0, "a stopped run trained again");
    assert_eq!(stat_bits(&again.stats), stat_bits(&first.stats));
    assert_eq!(
        (again.best_epoch, again.stopped_early),
        (first.best_epoch, true)
    );
    assert_same_vars(&again.vs, &first.vs, "rerun");
}

#[test]
fn checkpoints_refuse_another_cosine_length_or_validation_data() {
    let (train_seqs, valid, mcfg) = overfitting();
    let cosine = TrainConfig {
        schedule: Schedule::Cosine {
            warmup_epochs: 0,
            min_lr: 0.0,
        },
        ..hard(2)
    };
    let tmp = tempfile::tempdir().unwrap();
    fit_on(&mcfg, &cosine, &train_seqs, &valid, tmp.path(), &mut |_| {}).unwrap();
    // Every rate depends on the total: 2 epochs of a 4-epoch cosine are
    // not these 2 epochs.
    let longer = TrainConfig {
        epochs: 4,
        ..cosine.clone()
    };
    let err = fit_on(&mcfg, &longer, &train_seqs, &valid, tmp.path(), &mut |_| {})
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("another training config"), "{err}");
    let other_valid: Vec<Example> = valid[1..].to_vec();
    let err = fit_on(
        &mcfg,
        &cosine,
        &train_seqs,
        &other_valid,
        tmp.path(),
        &mut |_| {},
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("other validation examples"), "{err}");
    // The constant rate still resumes with more epochs.
    let dir = tmp.path().join("constant");
    fit_on(&mcfg, &hard(1), &train_seqs, &valid, &dir, &mut |_| {}).unwrap();
    let more = fit_on(&mcfg, &hard(2), &train_seqs, &valid, &dir, &mut |_| {}).unwrap();
    assert_eq!(more.stats.len(), 2);
}

#[test]
fn plateau_and_early_stopping_need_validation_examples() {
    let (train_seqs, _, mcfg) = overfitting();
    let tmp = tempfile::tempdir().unwrap();
    let stop = TrainConfig {
        early_stopping: Some(EarlyStopping {
            patience: 1,
            metric: StopMetric::NdcgAt10,
        }),
        ..hard(2)
    };
    let err = fit_on(&mcfg, &stop, &train_seqs, &[], tmp.path(), &mut |_| {})
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        err,
        "early stopping needs validation examples, and there are none"
    );

    // Through the stage, naming the param.
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let seqs = random_data(&mut rng, 10, 12, (4, 6));
    let data = tmp.path().join("data");
    write_sequences(&data, &seqs, 10, false);
    for (params, param) in [
        (serde_json::json!({"schedule": "plateau"}), "schedule"),
        (serde_json::json!({"early_stopping": 2}), "early_stopping"),
    ] {
        let mut params = params;
        params["model"] = "gru4rec".into();
        params["epochs"] = 2.into();
        let out = tmp.path().join(param);
        let err = run_kind(
            "train",
            params,
            &[("data", &data)],
            &out,
            &out.join("ck"),
            1,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.starts_with(&format!("params.{param}: ")) && err.contains("no validation examples"),
            "{err}"
        );
    }
}

/// `training.json`'s epochs.
fn curve(model_dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(model_dir.join("training.json")).unwrap()).unwrap()
}

#[test]
fn stage_curve_matches_evaluate_and_saves_the_best_epoch() {
    assert_curve_matches_evaluate(false);
}

/// With `exclude_seen` on both, the validation inside training is the
/// evaluation's exclude-seen ranking, to the bit.
#[test]
fn stage_curve_under_exclude_seen_matches_evaluate_under_exclude_seen() {
    assert_curve_matches_evaluate(true);
}

fn assert_curve_matches_evaluate(exclude_seen: bool) {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let seqs = random_data(&mut rng, 30, 48, (8, 14));
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_sequences(&data, &seqs, 30, true);
    let params = serde_json::json!({
        "model": "gru4rec",
        "dim": 16,
        "max_len": 16,
        "epochs": 30,
        "batch_size": 16,
        "lr": 0.02,
        "early_stopping": 1,
        "exclude_seen": exclude_seen,
    });
    let out = tmp.path().join("train");
    let (outputs, notes) = run_kind(
        "train",
        params,
        &[("data", &data)],
        &out,
        &out.join("ck"),
        1,
    )
    .unwrap();
    let model = &outputs["model"];
    let log = curve(model);
    let epochs = log["epochs"].as_array().unwrap();
    let best = log["best_epoch"].as_u64().unwrap() as usize; // 1-based
    assert!(epochs.len() < 30, "did not stop early");
    assert_eq!(notes["best_epoch"], best.to_string());
    assert_eq!(notes["stopped_after_epoch"], epochs.len().to_string());
    assert!(notes.contains_key("valid_seconds") && notes.contains_key("train_seconds"));
    for (i, e) in epochs.iter().enumerate() {
        assert_eq!(e["epoch"], i + 1);
        assert_eq!(e["lr"], 0.02);
        for key in ["train_loss", "valid_loss", "valid_hr@10", "valid_ndcg@10"] {
            assert!(e[key].is_f64(), "epoch {}: {key} = {}", i + 1, e[key]);
        }
        assert!(
            e.get("seconds").is_none(),
            "timings must stay out of the artifact"
        );
    }
    // Evaluating the saved model on the valid split (same batches, ranks
    // over the whole catalogue) gives the best epoch's recorded numbers:
    // the validation is evaluate's, and the saved weights are the best.
    let eval = serde_json::json!({
        "splits": ["valid"],
        "k": [10],
        "metrics": ["hr", "ndcg"],
        "bootstrap": 0,
        "batch_size": 16,
        "exclude_seen": exclude_seen,
    });
    let eout = tmp.path().join("evaluate");
    let (eval_out, _) = run_kind(
        "evaluate",
        eval,
        &[("data", &data), ("model", model)],
        &eout,
        &eout.join("ck"),
        1,
    )
    .unwrap();
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(eval_out["metrics"].join("metrics.json")).unwrap())
            .unwrap();
    let recorded = &epochs[best - 1];
    assert_eq!(metrics["valid"]["hr@10"], recorded["valid_hr@10"]);
    assert_eq!(metrics["valid"]["ndcg@10"], recorded["valid_ndcg@10"]);
    let last = epochs.last().unwrap();
    assert_ne!(metrics["valid"]["ndcg@10"], last["valid_ndcg@10"]);
}

#[test]
fn stage_default_curve_has_validation_and_no_best_epoch() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let seqs = successor_data(&mut rng, 20, 30, (5, 10));
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_sequences(&data, &seqs, 20, true);
    let params = serde_json::json!({"model": "gru4rec", "dim": 8, "epochs": 2});
    let out = tmp.path().join("train");
    let (outputs, notes) = run_kind(
        "train",
        params,
        &[("data", &data)],
        &out,
        &out.join("ck"),
        1,
    )
    .unwrap();
    let log = curve(&outputs["model"]);
    assert!(log.get("best_epoch").is_none());
    assert!(!notes.contains_key("best_epoch") && !notes.contains_key("stopped_after_epoch"));
    let epochs = log["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 2);
    assert!(epochs
        .iter()
        .all(|e| e["valid_ndcg@10"].is_f64() && e["lr"] == 0.001));
    // Without validation examples the numbers are null, and training runs.
    let data = tmp.path().join("data-no-valid");
    write_sequences(&data, &seqs, 20, false);
    let out = tmp.path().join("train-no-valid");
    let params = serde_json::json!({"model": "gru4rec", "dim": 8, "epochs": 1});
    let (outputs, _) = run_kind(
        "train",
        params,
        &[("data", &data)],
        &out,
        &out.join("ck"),
        1,
    )
    .unwrap();
    let log = curve(&outputs["model"]);
    assert!(log["epochs"][0]["valid_loss"].is_null());
    assert!(log["epochs"][0]["train_loss"].is_f64());
}

/// Per validation example, its sorted distinct history items: what
/// `exclude_seen` takes out when the history is the training sequence.
fn seen_of(valid: &[Example]) -> Vec<Vec<usize>> {
    valid
        .iter()
        .map(|e| {
            let mut s: Vec<usize> = e.history.iter().map(|&i| i as usize).collect();
            s.sort_unstable();
            s.dedup();
            s
        })
        .collect()
}

/// Early stopping follows the validation protocol: the weights of every
/// epoch are the same whether validation excludes seen items or not (it
/// changes no weight), but the curves differ, each run keeps the epoch
/// that is best by its own protocol, and on some data the two choose
/// different epochs.
#[test]
fn early_stopping_picks_the_best_epoch_by_the_validation_protocol() {
    let mcfg = gru(30);
    let cfg = TrainConfig {
        early_stopping: Some(EarlyStopping {
            patience: 12,
            metric: StopMetric::NdcgAt10,
        }),
        ..hard(12)
    };
    let mut differed = 0;
    for seed in 0..6u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(100 + seed);
        // repeats are common: 30 items, sequences of 8-14
        let seqs = random_data(&mut rng, 30, 48, (8, 14));
        let (train_seqs, valid, _) = leave_one_out(&seqs);
        let seen = seen_of(&valid);
        let tmp = tempfile::tempdir().unwrap();
        let run = |valid_seen: &[Vec<usize>], name: &str| {
            let data = TrainData {
                train: &train_seqs,
                valid: &valid,
                valid_seen,
                init: None,
            };
            fit(
                &mcfg,
                &cfg,
                &data,
                3,
                Device::Cpu,
                &tmp.path().join(name),
                &mut |_| {},
            )
            .unwrap()
        };
        let (all, unseen) = (run(&[], "all"), run(&seen, "unseen"));
        let losses = |t: &Trained| {
            t.stats
                .iter()
                .map(|s| s.train_loss.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(losses(&all), losses(&unseen), "validation changed training");
        let ndcg = |t: &Trained| {
            t.stats
                .iter()
                .map(|s| s.valid.unwrap().ndcg_at_10)
                .collect::<Vec<_>>()
        };
        let argmax = |c: &[f64]| {
            let top = c.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            c.iter().position(|&x| x == top).unwrap()
        };
        let (ca, cu) = (ndcg(&all), ndcg(&unseen));
        assert_ne!(ca, cu, "excluding seen items changed no validation number");
        assert_eq!(all.best_epoch, Some(argmax(&ca)));
        assert_eq!(unseen.best_epoch, Some(argmax(&cu)));
        // the kept weights validate, under the same protocol, to the best
        // epoch's recorded numbers
        let model = {
            let _g = torch_rng_lock();
            mcfg.build(&unseen.vs.root())
        };
        let protocol = ValidProtocol {
            seen: &seen,
            ..ValidProtocol::default()
        };
        let again = validate(&model, &valid, &protocol, mcfg.max_len(), cfg.batch_size).unwrap();
        assert_eq!(again, unseen.stats[argmax(&cu)].valid.unwrap());
        differed += usize::from(all.best_epoch != unseen.best_epoch);
    }
    assert!(differed > 0, "the protocol never changed the chosen epoch");
}

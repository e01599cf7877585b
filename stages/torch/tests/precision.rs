//! `precision = "bf16"`: autocast around training's forward passes (run
//! here on the CPU, whose autocast takes the same dtype switch as CUDA's):
//! it changes the arithmetic (the losses differ from fp32's), the weights
//! stay fp32, the models still learn, and resume stays bit-exact.

mod common;

use common::{
    assert_resume_is_bit_exact_with, hr_at_1, loss_bits, successor_data, train_and_score,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use seqpipe_torch::autocast::Precision;
use seqpipe_torch::models::gru4rec::Gru4RecConfig;
use seqpipe_torch::models::sasrec::SasRecConfig;
use seqpipe_torch::models::trainer::{ModelConfig, TrainConfig};
use tch::Kind;

/// Trains `mcfg` on the planted successor rule at `precision`; returns the
/// per-epoch loss bits and HR@1 on held-out sequences.
fn fit<C: ModelConfig>(mcfg: &C, n: i64, precision: Precision) -> (Vec<u64>, f64) {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let train_seqs = successor_data(&mut rng, n, 600, (5, 12));
    let held_out = successor_data(&mut rng, n, 200, (3, 10));
    let tcfg = TrainConfig {
        epochs: 6,
        batch_size: 32,
        lr: 5e-3,
        precision,
        ..TrainConfig::default()
    };
    let run = train_and_score(mcfg, &tcfg, &train_seqs, &held_out);
    for (name, v) in run.vs.variables() {
        assert_eq!(v.kind(), Kind::Float, "{name} is not fp32 master weight");
    }
    (loss_bits(&run.stats), hr_at_1(&run.scores, &run.targets))
}

#[test]
fn sasrec_learns_under_bf16_with_other_arithmetic_than_fp32() {
    let n = 40;
    let mcfg = SasRecConfig {
        max_len: 16,
        dim: 32,
        layers: 1,
        dropout: 0.1,
        ..SasRecConfig::new(n)
    };
    let (fp32_losses, fp32_hits) = fit(&mcfg, n, Precision::Fp32);
    let (bf16_losses, bf16_hits) = fit(&mcfg, n, Precision::Bf16);
    eprintln!("SASRec HR@1 fp32 {fp32_hits:.3}, bf16 {bf16_hits:.3}");
    assert_ne!(fp32_losses, bf16_losses, "bf16 changed no arithmetic");
    assert!(bf16_hits > 0.9, "HR@1 under bf16 {bf16_hits} <= 0.9");
}

#[test]
fn gru4rec_learns_under_bf16() {
    let n = 40;
    let mcfg = Gru4RecConfig {
        max_len: 16,
        dim: 32,
        ..Gru4RecConfig::new(n)
    };
    let (_, hits) = fit(&mcfg, n, Precision::Bf16);
    assert!(hits > 0.9, "HR@1 under bf16 {hits} <= 0.9");
}

#[test]
fn bf16_training_resumes_bit_for_bit() {
    let n = 30;
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let data = successor_data(&mut rng, n, 120, (4, 10));
    let mcfg = SasRecConfig {
        max_len: 12,
        dim: 16,
        layers: 1,
        ..SasRecConfig::new(n)
    };
    let base = TrainConfig {
        precision: Precision::Bf16,
        ..TrainConfig::default()
    };
    assert_resume_is_bit_exact_with(&mcfg, &data, base);
}

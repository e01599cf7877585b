//! SasRec model and training-loop tests (CPU).

mod common;

use common::{
    assert_reloads_identically, assert_resume_is_bit_exact, hr_at_1, left_padded, loss_bits,
    max_abs_diff, successor_data,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use seqpipe_torch::models::sasrec::{SasRec, SasRecConfig};
use seqpipe_torch::models::trainer::{torch_rng_lock, train as train_sasrec, TrainConfig};
use seqpipe_torch::models::{left_pad_batch, Activation};
use tch::nn::VarStore;
use tch::{Device, Kind};

fn small_cfg(num_items: i64, pre_norm: bool) -> SasRecConfig {
    SasRecConfig {
        num_items,
        max_len: 16,
        dim: 32,
        layers: 2,
        heads: 2,
        ffn_dim: 0,
        dropout: 0.2,
        pre_norm,
        activation: Activation::Gelu,
    }
}

#[test]
fn causal_masking() {
    let _g = torch_rng_lock();
    for pre_norm in [true, false] {
        tch::manual_seed(1);
        let vs = VarStore::new(Device::Cpu);
        let model = SasRec::new(&vs.root(), &small_cfg(30, pre_norm));
        let seqs = vec![
            vec![3, 7, 1, 9, 4, 4, 12, 30, 2, 5],
            vec![8, 8, 21, 6, 17, 11, 2],
            vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        ];
        let base_in = left_padded(&seqs, 10);
        let base = model.encode(&base_in, false);
        assert_eq!(base.size(), vec![3, 10, 32]);
        assert!(base.isfinite().all().int64_value(&[]) == 1);
        for t in [3i64, 6, 9] {
            let changed = base_in.copy();
            // Position t holds a real item in every row (padding is at most 3).
            let _ = changed.select(1, t).fill_(29);
            let out = model.encode(&changed, false);
            let d_before = max_abs_diff(&out.narrow(1, 0, t), &base.narrow(1, 0, t));
            assert!(d_before <= 1e-6, "t={t}: positions < t moved by {d_before}");
            let d_at = max_abs_diff(&out.select(1, t), &base.select(1, t));
            assert!(d_at > 1e-4, "t={t}: position t did not react ({d_at})");
        }
    }
}

#[test]
fn padding_invariance() {
    let _g = torch_rng_lock();
    for pre_norm in [true, false] {
        tch::manual_seed(2);
        let vs = VarStore::new(Device::Cpu);
        let cfg = small_cfg(40, pre_norm);
        let model = SasRec::new(&vs.root(), &cfg);
        let seqs = vec![
            vec![5, 9, 13],
            vec![1, 2, 3, 4, 5, 6, 7, 8],
            vec![40],
            vec![22, 17, 3, 3, 38, 1],
        ];
        let s8 = model.score_last(&left_padded(&seqs, 8));
        let s12 = model.score_last(&left_padded(&seqs, 12));
        assert_eq!(s8.size(), vec![4, 41]);
        assert_eq!(s8.kind(), Kind::Float);
        // Column 0 (padding) is -inf, the rest finite.
        let col0 = s8.select(1, 0);
        assert!(col0.isneginf().all().int64_value(&[]) == 1);
        let rest8 = s8.narrow(1, 1, 40);
        let rest12 = s12.narrow(1, 1, 40);
        assert!(rest8.isfinite().all().int64_value(&[]) == 1);
        assert!(
            rest8.allclose(&rest12, 1e-5, 1e-5, false),
            "pre_norm={pre_norm}: padding changed scores by {}",
            max_abs_diff(&rest8, &rest12)
        );
        // An unpadded batch agrees too.
        let alone = model.score_last(&left_padded(&seqs[1..2], 8));
        assert!(alone
            .narrow(1, 1, 40)
            .allclose(&rest8.narrow(0, 1, 1), 1e-5, 1e-5, false));
    }
}

#[test]
fn resume_is_bit_exact() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let data = successor_data(&mut rng, 30, 64, (2, 24));
    let mcfg = small_cfg(30, true);
    let r = assert_resume_is_bit_exact(&mcfg, &data);

    // Only the latest checkpoint's tensors are kept.
    let files: Vec<String> = std::fs::read_dir(&r.dir_b)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    assert_eq!(files, vec!["checkpoint-epoch00004.safetensors".to_string()]);

    // A finished run is returned as is; mismatches are refused.
    let (vs_c, stats_c) = train_sasrec(
        &mcfg,
        &r.tcfg,
        &data,
        11,
        Device::Cpu,
        &r.dir_b,
        &mut |_| panic!("trained"),
    )
    .unwrap();
    assert_eq!(loss_bits(&stats_c), loss_bits(&r.stats_a));
    assert!(vs_c.variables()["item_emb"].equal(&r.vs_a.variables()["item_emb"]));
    let fewer = TrainConfig {
        epochs: 3,
        ..r.tcfg.clone()
    };
    assert!(train_sasrec(&mcfg, &fewer, &data, 11, Device::Cpu, &r.dir_b, &mut |_| {}).is_err());
    let other_lr = TrainConfig {
        lr: 1e-3,
        ..r.tcfg.clone()
    };
    assert!(train_sasrec(
        &mcfg,
        &other_lr,
        &data,
        11,
        Device::Cpu,
        &r.dir_b,
        &mut |_| {}
    )
    .is_err());
    assert!(train_sasrec(
        &mcfg,
        &r.tcfg,
        &data,
        12,
        Device::Cpu,
        &r.dir_b,
        &mut |_| {}
    )
    .is_err());
}

#[test]
fn learns_planted_successor_rule() {
    let n = 50;
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let train = successor_data(&mut rng, n, 400, (20, 20));
    let held_out = successor_data(&mut rng, n, 200, (3, 20));
    let mcfg = SasRecConfig {
        num_items: n,
        max_len: 20,
        dim: 32,
        layers: 1,
        heads: 1,
        ffn_dim: 0,
        dropout: 0.1,
        pre_norm: true,
        activation: Activation::Gelu,
    };
    let tcfg = TrainConfig {
        epochs: 8,
        batch_size: 32,
        lr: 5e-3,
        ..TrainConfig::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    let (vs, stats) = train_sasrec(
        &mcfg,
        &tcfg,
        &train,
        5,
        Device::Cpu,
        &tmp.path().join("ckpt"),
        &mut |_| {},
    )
    .unwrap();
    for s in &stats {
        eprintln!(
            "epoch {} loss {:.4} ({:.2}s, {:.0} seq/s)",
            s.epoch, s.train_loss, s.seconds, s.samples_per_sec
        );
    }
    let model = SasRec::new(&vs.root(), &mcfg);
    assert_eq!(vs.variables().len(), model_var_count(&mcfg));

    let inputs: Vec<Vec<i64>> = held_out.iter().map(|s| s[..s.len() - 1].to_vec()).collect();
    let targets: Vec<i64> = held_out.iter().map(|s| s[s.len() - 1]).collect();
    let x = left_pad_batch(&inputs, mcfg.max_len);
    assert_eq!(x.size(), vec![200, 19]);
    assert!(x.equal(&left_padded(&inputs, 19)));
    let scores = model.score_last(&x);
    let hits = hr_at_1(&scores, &targets);
    eprintln!("HR@1 = {hits:.3}");
    assert!(hits > 0.9, "HR@1 {hits} <= 0.9");

    let out = tmp.path().join("model");
    assert_reloads_identically(&vs, &mcfg, &out, &x, &scores, &inputs);
}

fn model_var_count(cfg: &SasRecConfig) -> usize {
    // item_emb, pos_emb; per block: attn (norm 2 + 4 linears x 2) + ffn (norm 2 + 2 x 2); last_norm 2.
    2 + cfg.layers as usize * (10 + 6) + if cfg.pre_norm { 2 } else { 0 }
}

/// The paper's ReLU feed-forward: a different function of the same
/// weights, saved in config.json only when chosen (GELU configs keep their
/// bytes).
#[test]
fn relu_feed_forward_is_another_function_of_the_same_weights() {
    let n = 30;
    let gelu = small_cfg(n, true);
    let relu = SasRecConfig {
        activation: Activation::Relu,
        ..gelu.clone()
    };
    assert!(!serde_json::to_string(&gelu).unwrap().contains("activation"));
    assert!(serde_json::to_string(&relu)
        .unwrap()
        .contains(r#""activation":"relu""#));
    // Building draws from LibTorch's global generator, which the resume
    // tests in this binary need to themselves.
    let _rng = torch_rng_lock();
    let vs = VarStore::new(Device::Cpu);
    let a = SasRec::new(&vs.root(), &gelu);
    let b = SasRec::new(&(vs.root() / "other"), &relu);
    // b's weights copied from a: only the activation differs
    tch::no_grad(|| {
        for (name, t) in vs.variables() {
            if let Some(own) = name.strip_prefix("other.") {
                let mut t = t;
                t.copy_(&vs.variables()[own]);
            }
        }
    });
    let x = left_pad_batch(&[vec![1, 2, 3, 4], vec![5, 6]], 16);
    let diff = max_abs_diff(&a.encode(&x, false), &b.encode(&x, false));
    assert!(diff > 1e-4, "ReLU and GELU gave the same states ({diff})");
}

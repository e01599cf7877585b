//! GSRec (self-attention feeding a GRU) on the shared trainer (CPU):
//! causal and padding-independent encodings, the planted rules learnt,
//! bit-exact resume, and the `ffn` / stacked-GRU variants' variables.

mod common;

use common::{
    assert_reloads_identically, assert_resume_is_bit_exact, hr_at_1, left_padded, max_abs_diff,
    pop_hr_at_1, skip_data, successor_data,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use seqpipe_torch::models::gsrec::GsRecConfig;
use seqpipe_torch::models::left_pad_batch;
use seqpipe_torch::models::trainer::{
    torch_rng_lock, train, ModelConfig, SequenceModel, TrainConfig,
};
use tch::nn::VarStore;
use tch::Device;

fn small_cfg(num_items: i64) -> GsRecConfig {
    GsRecConfig {
        max_len: 20,
        dim: 32,
        heads: 2,
        dropout: 0.1,
        ..GsRecConfig::new(num_items)
    }
}

#[test]
fn states_are_causal_and_ignore_left_padding() {
    let _g = torch_rng_lock();
    tch::manual_seed(1);
    let vs = VarStore::new(Device::Cpu);
    let cfg = small_cfg(30);
    let model = cfg.build(&vs.root());
    let seqs = vec![vec![3, 7, 1, 9, 4, 4, 12, 30], vec![8, 21, 6], vec![5]];
    let base_in = left_padded(&seqs, 8);
    let base = model.encode(&base_in, false);
    assert_eq!(base.size(), vec![3, 8, 32]);
    // padded positions are zeros
    let pad = base.narrow(0, 1, 1).narrow(1, 0, 5);
    assert_eq!(pad.abs().max().double_value(&[]), 0.0);
    // changing position 5 of row 0 moves nothing before it, everything after
    let changed = base_in.copy();
    let _ = changed.get(0).get(5).fill_(29);
    let out = model.encode(&changed, false);
    assert_eq!(
        max_abs_diff(&out.get(0).narrow(0, 0, 5), &base.get(0).narrow(0, 0, 5)),
        0.0
    );
    for t in 5..8 {
        assert!(
            max_abs_diff(&out.get(0).get(t), &base.get(0).get(t)) > 1e-6,
            "position {t}"
        );
    }
    // more left padding gives the same scores
    let s8 = model.score_last(&left_padded(&seqs, 8));
    let s14 = model.score_last(&left_padded(&seqs, 14));
    assert_eq!(s8.size(), vec![3, 31]);
    assert!(s8.select(1, 0).isneginf().all().int64_value(&[]) == 1);
    assert!(s8
        .narrow(1, 1, 30)
        .allclose(&s14.narrow(1, 1, 30), 1e-5, 1e-5, false));
}

#[test]
fn variants_add_the_feed_forward_layer_and_stacked_grus() {
    let _g = torch_rng_lock();
    let count = |cfg: &GsRecConfig| {
        let vs = VarStore::new(Device::Cpu);
        let _ = cfg.build(&vs.root());
        vs.variables().len()
    };
    let plain = small_cfg(30);
    // item_emb, pos_emb, attn (norm 2 + q, k, v, out 2 each = 10),
    // last_norm 2, one GRU layer 4, out 2
    assert_eq!(count(&plain), 2 + 10 + 2 + 4 + 2);
    let ffn = GsRecConfig {
        ffn: true,
        ..plain.clone()
    };
    assert_eq!(count(&ffn), count(&plain) + 6, "norm, fc1, fc2");
    let stacked = GsRecConfig {
        gru_layers: 3,
        ..plain.clone()
    };
    assert_eq!(count(&stacked), count(&plain) + 8, "two more GRU layers");
    assert!(GsRecConfig {
        heads: 3,
        ..plain.clone()
    }
    .validate()
    .is_err());
    assert!(GsRecConfig {
        gru_layers: 0,
        ..plain
    }
    .validate()
    .is_err());
}

#[test]
fn resume_is_bit_exact() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let data = successor_data(&mut rng, 30, 64, (2, 30));
    let r = assert_resume_is_bit_exact(&small_cfg(30), &data);
    assert_eq!(r.vs_a.variables().len(), 20);
}

fn fit_and_hit(rule: &str) -> f64 {
    let n = 40;
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let make = |rng: &mut ChaCha8Rng, count, len| match rule {
        "successor" => successor_data(rng, n, count, len),
        _ => skip_data(rng, n, count, len),
    };
    let train_seqs = make(&mut rng, 400, (20, 20));
    let held_out = make(&mut rng, 200, (4, 20));
    let mcfg = small_cfg(n);
    let tcfg = TrainConfig {
        epochs: 8,
        batch_size: 32,
        lr: 5e-3,
        ..TrainConfig::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    let (vs, _) = train(
        &mcfg,
        &tcfg,
        &train_seqs,
        5,
        Device::Cpu,
        &tmp.path().join("ckpt"),
        &mut |_| {},
    )
    .unwrap();
    let model = mcfg.build(&vs.root());
    let inputs: Vec<Vec<i64>> = held_out.iter().map(|s| s[..s.len() - 1].to_vec()).collect();
    let targets: Vec<i64> = held_out.iter().map(|s| s[s.len() - 1]).collect();
    let x = left_pad_batch(&inputs, mcfg.max_len);
    let scores = model.score_last(&x);
    let pop = pop_hr_at_1(&train_seqs, n, &inputs, &targets);
    assert!(pop < 0.2, "pop HR@1 {pop}");
    assert_reloads_identically(&vs, &mcfg, &tmp.path().join("model"), &x, &scores, &inputs);
    hr_at_1(&scores, &targets)
}

#[test]
fn learns_the_planted_rules() {
    let hits = fit_and_hit("successor");
    assert!(hits > 0.9, "successor HR@1 {hits}");
    // the next item follows the one two steps back: the last item alone
    // says nothing
    let hits = fit_and_hit("skip");
    assert!(hits > 0.9, "skip HR@1 {hits}");
}

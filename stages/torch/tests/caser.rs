//! Caser model tests on the shared trainer (CPU).

mod common;

use common::{
    assert_reloads_identically, assert_resume_is_bit_exact, hr_at_1, left_padded, max_abs_diff,
    pop_hr_at_1, skip_data, successor_data,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use seqpipe_torch::models::caser::{Caser, CaserConfig};
use seqpipe_torch::models::left_pad_batch;
use seqpipe_torch::models::trainer::{torch_rng_lock, train, TrainConfig};
use tch::nn::VarStore;
use tch::{Device, Kind};

fn small_cfg(num_items: i64, window: i64) -> CaserConfig {
    CaserConfig {
        num_items,
        max_len: window,
        dim: 32,
        h_filters: 8,
        v_filters: 4,
        dropout: 0.2,
        train_len: 24,
    }
}

#[test]
fn each_position_reads_its_window() {
    let _g = torch_rng_lock();
    tch::manual_seed(1);
    let vs = VarStore::new(Device::Cpu);
    let cfg = small_cfg(30, 3);
    let model = Caser::new(&vs.root(), &cfg);
    let seqs = vec![
        vec![3, 7, 1, 9, 4, 4, 12, 30, 2, 5],
        vec![8, 8, 21, 6, 17, 11, 2],
        vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
    ];
    let base_in = left_padded(&seqs, 10);
    let base = model.encode(&base_in, false);
    assert_eq!(base.size(), vec![3, 10, 32]);
    assert!(base.isfinite().all().int64_value(&[]) == 1);
    // Padded positions are zeros.
    assert_eq!(
        base.narrow(0, 1, 1)
            .narrow(1, 0, 3)
            .abs()
            .max()
            .double_value(&[]),
        0.0
    );
    for t in [3i64, 5] {
        let changed = base_in.copy();
        // Position t holds a real item in every row (padding is at most 3).
        let _ = changed.select(1, t).fill_(29);
        let out = model.encode(&changed, false);
        // Before t: untouched (causal). t..t+L-1: the windows holding t
        // react. From t+L on: the windows no longer reach t.
        let d_before = max_abs_diff(&out.narrow(1, 0, t), &base.narrow(1, 0, t));
        assert_eq!(d_before, 0.0, "t={t}: positions < t moved");
        for s in t..t + cfg.max_len {
            let d = max_abs_diff(&out.select(1, s), &base.select(1, s));
            assert!(d > 1e-6, "t={t}: position {s} did not react ({d})");
        }
        let after = t + cfg.max_len;
        let d_after = max_abs_diff(
            &out.narrow(1, after, 10 - after),
            &base.narrow(1, after, 10 - after),
        );
        assert_eq!(d_after, 0.0, "t={t}: positions >= {after} moved");
    }
}

#[test]
fn scores_ignore_padding_and_older_items() {
    let _g = torch_rng_lock();
    tch::manual_seed(2);
    let vs = VarStore::new(Device::Cpu);
    let cfg = small_cfg(40, 4);
    let model = Caser::new(&vs.root(), &cfg);
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
    assert!(s8.select(1, 0).isneginf().all().int64_value(&[]) == 1);
    let rest8 = s8.narrow(1, 1, 40);
    assert!(rest8.isfinite().all().int64_value(&[]) == 1);
    assert!(rest8.allclose(&s12.narrow(1, 1, 40), 1e-5, 1e-5, false));
    // Only the last L = 4 items count: older ones change nothing.
    let older: Vec<Vec<i64>> = seqs
        .iter()
        .map(|s| {
            let mut o = vec![11, 12];
            o.extend(s);
            o
        })
        .collect();
    let cut: Vec<Vec<i64>> = older
        .iter()
        .map(|s| s[s.len().saturating_sub(4)..].to_vec())
        .collect();
    let full = model.score_last(&left_padded(&older, 10));
    let last4 = model.score_last(&left_padded(&cut, 4));
    assert!(full.allclose(&last4, 1e-5, 1e-5, false));
    // The rows with fewer than L items did see the two older ones.
    assert!(max_abs_diff(&full.narrow(1, 1, 40), &rest8) > 1e-6);
}

#[test]
fn resume_is_bit_exact() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let data = successor_data(&mut rng, 30, 64, (2, 30));
    let mcfg = small_cfg(30, 3);
    let r = assert_resume_is_bit_exact(&mcfg, &data);
    // item_emb, 3 heights × (weight, bias), v_conv, fc and out (2 each).
    assert_eq!(r.vs_a.variables().len(), 1 + 3 * 2 + 2 + 2 + 2);

    // A checkpoint of another model is refused, not silently loaded.
    let wider = CaserConfig {
        h_filters: 9,
        ..mcfg
    };
    assert!(train(
        &wider,
        &r.tcfg,
        &data,
        11,
        Device::Cpu,
        &r.dir_b,
        &mut |_| {}
    )
    .is_err());
}

/// Trains `mcfg` on `train_seqs` and returns the HR@1 of the next item on
/// `held_out`, with the model and what the reload check needs.
fn fit_and_hit(
    mcfg: &CaserConfig,
    epochs: usize,
    train_seqs: &[Vec<i64>],
    held_out: &[Vec<i64>],
    dir: &std::path::Path,
) -> f64 {
    let tcfg = TrainConfig {
        epochs,
        batch_size: 32,
        lr: 1e-2,
        ..TrainConfig::default()
    };
    let (vs, stats) = train(
        mcfg,
        &tcfg,
        train_seqs,
        5,
        Device::Cpu,
        &dir.join("ckpt"),
        &mut |_| {},
    )
    .unwrap();
    for s in &stats {
        eprintln!(
            "epoch {} loss {:.4} ({:.2}s, {:.0} seq/s)",
            s.epoch, s.train_loss, s.seconds, s.samples_per_sec
        );
    }
    let model = Caser::new(&vs.root(), mcfg);
    let inputs: Vec<Vec<i64>> = held_out.iter().map(|s| s[..s.len() - 1].to_vec()).collect();
    let targets: Vec<i64> = held_out.iter().map(|s| s[s.len() - 1]).collect();
    let x = left_pad_batch(&inputs, mcfg.train_len);
    let scores = model.score_last(&x);
    let hits = hr_at_1(&scores, &targets);
    let pop_hits = pop_hr_at_1(train_seqs, mcfg.num_items, &inputs, &targets);
    eprintln!("Caser HR@1 = {hits:.3}, pop HR@1 = {pop_hits:.3}");
    // Popularity cannot know the rule: its HR@1 stays near 1/n.
    assert!(pop_hits < 0.2, "pop HR@1 {pop_hits} is not low");
    assert_reloads_identically(&vs, mcfg, &dir.join("model"), &x, &scores, &inputs);
    hits
}

#[test]
fn learns_planted_successor_rule() {
    let n = 50;
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let train_seqs = successor_data(&mut rng, n, 400, (20, 20));
    let held_out = successor_data(&mut rng, n, 200, (3, 20));
    let tmp = tempfile::tempdir().unwrap();
    let hits = fit_and_hit(&small_cfg(n, 3), 6, &train_seqs, &held_out, tmp.path());
    assert!(hits > 0.9, "HR@1 {hits} <= 0.9");
}

/// "The next item follows the one two steps back": the last item alone says
/// nothing, so only a model that reads its window can learn it.
#[test]
fn learns_a_rule_beyond_the_last_item() {
    let n = 40;
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let train_seqs = skip_data(&mut rng, n, 400, (20, 20));
    let held_out = skip_data(&mut rng, n, 200, (4, 20));
    let tmp = tempfile::tempdir().unwrap();
    let hits = fit_and_hit(&small_cfg(n, 3), 8, &train_seqs, &held_out, tmp.path());
    assert!(hits > 0.9, "HR@1 {hits} <= 0.9");
}

//! GRU4Rec model and shared-trainer tests (CPU).

mod common;

use common::{
    assert_reloads_identically, assert_resume_is_bit_exact, hr_at_1, left_padded, max_abs_diff,
    pop_hr_at_1, successor_data,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use seqpipe_torch::models::gru4rec::{Gru4Rec, Gru4RecConfig};
use seqpipe_torch::models::left_pad_batch;
use seqpipe_torch::models::trainer::{torch_rng_lock, train, TrainConfig};
use tch::nn::VarStore;
use tch::{Device, Kind};

/// `hidden = 0` ties the output to the embeddings; any other value gets a
/// linear output layer, so the tests run both heads.
fn small_cfg(num_items: i64, hidden: i64, layers: i64) -> Gru4RecConfig {
    Gru4RecConfig {
        num_items,
        max_len: 16,
        dim: 32,
        hidden,
        layers,
        dropout: 0.2,
    }
}

#[test]
fn causal() {
    let _g = torch_rng_lock();
    for (hidden, layers) in [(0, 1), (24, 2)] {
        tch::manual_seed(1);
        let vs = VarStore::new(Device::Cpu);
        let cfg = small_cfg(30, hidden, layers);
        let model = Gru4Rec::new(&vs.root(), &cfg);
        let seqs = vec![
            vec![3, 7, 1, 9, 4, 4, 12, 30, 2, 5],
            vec![8, 8, 21, 6, 17, 11, 2],
            vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        ];
        let base_in = left_padded(&seqs, 10);
        let base = model.encode(&base_in, false);
        assert_eq!(base.size(), vec![3, 10, cfg.hidden_size()]);
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
        for t in [3i64, 6, 9] {
            let changed = base_in.copy();
            // Position t holds a real item in every row (padding is at most 3).
            let _ = changed.select(1, t).fill_(29);
            let out = model.encode(&changed, false);
            let d_before = max_abs_diff(&out.narrow(1, 0, t), &base.narrow(1, 0, t));
            assert!(
                d_before == 0.0,
                "hidden={hidden}: t={t}: positions < t moved by {d_before}"
            );
            let d_at = max_abs_diff(&out.select(1, t), &base.select(1, t));
            assert!(d_at > 1e-4, "t={t}: position t did not react ({d_at})");
        }
    }
}

#[test]
fn left_padding_invariance() {
    let _g = torch_rng_lock();
    for (hidden, layers) in [(0, 1), (24, 2)] {
        tch::manual_seed(2);
        let vs = VarStore::new(Device::Cpu);
        let cfg = small_cfg(40, hidden, layers);
        let model = Gru4Rec::new(&vs.root(), &cfg);
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
        assert!(s8.select(1, 0).isneginf().all().int64_value(&[]) == 1);
        let rest8 = s8.narrow(1, 1, 40);
        let rest12 = s12.narrow(1, 1, 40);
        assert!(rest8.isfinite().all().int64_value(&[]) == 1);
        assert!(
            rest8.allclose(&rest12, 1e-5, 1e-5, false),
            "hidden={hidden}: padding changed scores by {}",
            max_abs_diff(&rest8, &rest12)
        );
        // An unpadded batch of one agrees too.
        let alone = model.score_last(&left_padded(&seqs[1..2], 8));
        assert!(alone
            .narrow(1, 1, 40)
            .allclose(&rest8.narrow(0, 1, 1), 1e-5, 1e-5, false));
        // The full-sequence outputs agree at every real position as well.
        let e8 = model.encode(&left_padded(&seqs, 8), false);
        let e12 = model.encode(&left_padded(&seqs, 12), false);
        assert!(e8.allclose(&e12.narrow(1, 4, 8), 1e-5, 1e-5, false));
    }
}

#[test]
fn resume_is_bit_exact() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let data = successor_data(&mut rng, 30, 64, (2, 24));
    // Two layers with dropout between them, and an untied output layer: every
    // kind of variable and RNG use the model has.
    let mcfg = small_cfg(30, 24, 2);
    let r = assert_resume_is_bit_exact(&mcfg, &data);
    assert_eq!(r.vs_a.variables().len(), 1 + 4 * 2 + 2);

    // A checkpoint of another model is refused, not silently loaded.
    let tied = small_cfg(30, 0, 2);
    assert!(train(
        &tied,
        &r.tcfg,
        &data,
        11,
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
    let train_seqs = successor_data(&mut rng, n, 400, (20, 20));
    let held_out = successor_data(&mut rng, n, 200, (3, 20));
    let mcfg = Gru4RecConfig {
        num_items: n,
        max_len: 20,
        dim: 32,
        hidden: 0,
        layers: 1,
        dropout: 0.1,
    };
    let tcfg = TrainConfig {
        epochs: 8,
        batch_size: 32,
        lr: 5e-3,
        ..TrainConfig::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    let (vs, stats) = train(
        &mcfg,
        &tcfg,
        &train_seqs,
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
    let model = Gru4Rec::new(&vs.root(), &mcfg);
    // item_emb + 4 GRU tensors; tied output adds none.
    assert_eq!(vs.variables().len(), 5);

    let inputs: Vec<Vec<i64>> = held_out.iter().map(|s| s[..s.len() - 1].to_vec()).collect();
    let targets: Vec<i64> = held_out.iter().map(|s| s[s.len() - 1]).collect();
    let x = left_pad_batch(&inputs, mcfg.max_len);
    let scores = model.score_last(&x);
    let hits = hr_at_1(&scores, &targets);
    eprintln!("GRU4Rec HR@1 = {hits:.3}");
    assert!(hits > 0.9, "HR@1 {hits} <= 0.9");

    // Popularity cannot know the rule: its HR@1 stays near 1/n.
    let pop_hits = pop_hr_at_1(&train_seqs, n, &inputs, &targets);
    eprintln!("pop HR@1 = {pop_hits:.3}");
    assert!(pop_hits < 0.2, "pop HR@1 {pop_hits} is not low");

    let out = tmp.path().join("model");
    assert_reloads_identically(&vs, &mcfg, &out, &x, &scores, &inputs);
}

#[test]
fn a_diverging_loss_stops_naming_epoch_and_batch_and_saves_nothing() {
    // `train` takes the torch RNG lock itself.
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let data = successor_data(&mut rng, 30, 64, (2, 24));
    let tcfg = TrainConfig {
        epochs: 3,
        batch_size: 16,
        lr: 3e38,
        clip_norm: 0.0,
        ..TrainConfig::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    let result = train(
        &small_cfg(30, 0, 1),
        &tcfg,
        &data,
        1,
        Device::Cpu,
        tmp.path(),
        &mut |_| {},
    );
    let Err(error) = result else {
        panic!("a learning rate of 3e38 overflows")
    };
    let message = format!("{error:#}");
    assert!(
        message.starts_with("training diverged in epoch 1 of 3, batch "),
        "{message}"
    );
    assert!(
        message.contains("of 4: the loss is not finite"),
        "{message}"
    );
    assert_eq!(
        seqpipe_torch::models::trainer::checkpointed_epochs(tmp.path()),
        0
    );
}

//! BERT4Rec model, cloze masking and training tests (CPU).

mod common;

use common::{
    assert_reloads_identically, assert_resume_is_bit_exact, hr_at_1, left_padded, max_abs_diff,
    pop_hr_at_1, successor_data,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use seqpipe_torch::models::bert4rec::{Bert4Rec, Bert4RecConfig};
use seqpipe_torch::models::left_pad_batch;
use seqpipe_torch::models::trainer::{batch_rng, torch_rng_lock, train, ModelConfig, TrainConfig};
use tch::nn::VarStore;
use tch::{Device, Kind};

fn small_cfg(num_items: i64, pre_norm: bool) -> Bert4RecConfig {
    Bert4RecConfig {
        num_items,
        max_len: 16,
        dim: 32,
        layers: 2,
        heads: 2,
        ffn_dim: 0,
        dropout: 0.2,
        pre_norm,
        mask_prob: 0.2,
    }
}

#[test]
fn cloze_masking_rates() {
    let n = 1000;
    let cfg = Bert4RecConfig {
        max_len: 20,
        mask_prob: 0.2,
        ..Bert4RecConfig::new(n)
    };
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    // 2000 full-length windows (one item longer than max_len, as the trainer
    // hands them) and 200 of two items.
    let mut seqs: Vec<Vec<i64>> = (0..2000)
        .map(|_| (0..21).map(|_| rng.gen_range(1..=n)).collect())
        .collect();
    seqs.extend((0..200).map(|_| vec![rng.gen_range(1..=n), rng.gen_range(1..=n)]));
    let windows: Vec<&[i64]> = seqs.iter().map(Vec::as_slice).collect();
    let mut brng = batch_rng(7, 0);
    let batch = cfg.training_batch(&windows, &mut brng, Device::Cpu);
    assert_eq!(batch.inputs.size(), vec![2200, 20]);
    let inputs = Vec::<i64>::try_from(batch.inputs.flatten(0, -1)).unwrap();
    let positions = Vec::<i64>::try_from(&batch.positions).unwrap();
    let targets = Vec::<i64>::try_from(&batch.targets).unwrap();
    assert_eq!(positions.len(), batch.count);
    assert_eq!(targets.len(), batch.count);

    // The originals, laid out like the inputs.
    let mut orig = vec![0i64; 2200 * 20];
    for (r, s) in seqs.iter().enumerate() {
        let k = s.len().min(20);
        orig[r * 20 + 20 - k..(r + 1) * 20].copy_from_slice(&s[s.len() - k..]);
    }
    let (mut masked, mut random, mut kept) = (0usize, 0usize, 0usize);
    let mut per_row = vec![0usize; 2200];
    for (&p, &t) in positions.iter().zip(&targets) {
        let p = p as usize;
        assert!(orig[p] > 0, "padding position {p} chosen");
        assert_eq!(t, orig[p] - 1, "target is the original item minus one");
        per_row[p / 20] += 1;
        match inputs[p] {
            x if x == cfg.mask_token() => masked += 1,
            x if x == orig[p] => kept += 1,
            x => {
                assert!((1..=n).contains(&x));
                random += 1
            }
        }
    }
    // Unchosen positions are untouched.
    let chosen: std::collections::HashSet<usize> = positions.iter().map(|&p| p as usize).collect();
    for (p, (&x, &o)) in inputs.iter().zip(&orig).enumerate() {
        if !chosen.contains(&p) {
            assert_eq!(x, o);
        }
    }
    assert!(
        per_row.iter().all(|&c| c >= 1),
        "a row has no masked position"
    );

    let full: usize = per_row[..2000].iter().sum();
    let rate = full as f64 / (2000.0 * 20.0);
    eprintln!("masked share {rate:.4} (+ forced last items)");
    // mask_prob plus the rows where none was chosen (0.8^20 ≈ 1%, 1 of 20).
    assert!((rate - 0.2).abs() < 0.01, "masked share {rate}");
    let total = (masked + random + kept) as f64;
    let (fm, fr, fk) = (
        masked as f64 / total,
        random as f64 / total,
        kept as f64 / total,
    );
    eprintln!("split mask {fm:.3} random {fr:.3} kept {fk:.3} of {total}");
    assert!((fm - 0.8).abs() < 0.02, "[MASK] share {fm}");
    assert!((fr - 0.1).abs() < 0.015, "random share {fr}");
    assert!((fk - 0.1).abs() < 0.015, "kept share {fk}");
}

#[test]
fn bidirectional_and_padding_invariant() {
    let _g = torch_rng_lock();
    for pre_norm in [true, false] {
        tch::manual_seed(2);
        let vs = VarStore::new(Device::Cpu);
        let cfg = small_cfg(40, pre_norm);
        let model = Bert4Rec::new(&vs.root(), &cfg);

        // Non-causal: a later item changes the state at earlier positions.
        let x = left_padded(&[vec![3, 7, 1, 9, 4, 4, 12, 30]], 8);
        let base = model.encode(&x, false);
        let changed = x.copy();
        let _ = changed.select(1, 7).fill_(29);
        let out = model.encode(&changed, false);
        let d = max_abs_diff(&out.narrow(1, 0, 7), &base.narrow(1, 0, 7));
        assert!(d > 1e-4, "earlier positions did not see the change ({d})");

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
        let rest12 = s12.narrow(1, 1, 40);
        assert!(rest8.isfinite().all().int64_value(&[]) == 1);
        assert!(
            rest8.allclose(&rest12, 1e-5, 1e-5, false),
            "pre_norm={pre_norm}: padding changed scores by {}",
            max_abs_diff(&rest8, &rest12)
        );
        let alone = model.score_last(&left_padded(&seqs[1..2], 8));
        assert!(alone
            .narrow(1, 1, 40)
            .allclose(&rest8.narrow(0, 1, 1), 1e-5, 1e-5, false));
        // Encoder outputs agree at every real position too.
        let e8 = model.encode(&left_padded(&seqs, 8), false);
        let e12 = model.encode(&left_padded(&seqs, 12), false);
        assert!(e8.allclose(&e12.narrow(1, 4, 8), 1e-5, 1e-5, false));

        // A history of max_len items drops its oldest to make room for [MASK].
        let long: Vec<i64> = (1..=16).collect();
        let full = model.score_last(&left_padded(std::slice::from_ref(&long), 16));
        let cut = model.score_last(&left_padded(&[long[1..].to_vec()], 15));
        assert!(full
            .narrow(1, 1, 40)
            .allclose(&cut.narrow(1, 1, 40), 1e-5, 1e-5, false));
    }
}

#[test]
fn resume_is_bit_exact() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let data = successor_data(&mut rng, 30, 64, (2, 24));
    let mcfg = small_cfg(30, true);
    let r = assert_resume_is_bit_exact(&mcfg, &data);
    // item_emb, pos_emb, emb_norm 2; per block attn 10 + ffn 6; last_norm 2;
    // head 2, out_bias.
    assert_eq!(r.vs_a.variables().len(), 2 + 2 + 2 * 16 + 2 + 2 + 1);

    // Another mask_prob is another model config: its checkpoint is refused.
    let other = Bert4RecConfig {
        mask_prob: 0.3,
        ..mcfg
    };
    assert!(train(
        &other,
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
    // Short windows of varied length: the cloze task must learn which
    // position is "the one before", which takes fewer steps over few
    // positions, and scoring sees short histories, so training must too
    // (with all-full windows HR@1 stalled near 0.5).
    let train_seqs = successor_data(&mut rng, n, 1000, (3, 8));
    let held_out = successor_data(&mut rng, n, 200, (3, 8));
    let mcfg = Bert4RecConfig {
        num_items: n,
        max_len: 8,
        dim: 32,
        layers: 2,
        heads: 2,
        ffn_dim: 64,
        dropout: 0.0,
        pre_norm: true,
        mask_prob: 0.4,
    };
    let tcfg = TrainConfig {
        epochs: 28,
        batch_size: 64,
        lr: 1e-2,
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
    let model = Bert4Rec::new(&vs.root(), &mcfg);

    let inputs: Vec<Vec<i64>> = held_out.iter().map(|s| s[..s.len() - 1].to_vec()).collect();
    let targets: Vec<i64> = held_out.iter().map(|s| s[s.len() - 1]).collect();
    let x = left_pad_batch(&inputs, mcfg.max_len);
    let scores = model.score_last(&x);
    assert_eq!(scores.size(), vec![200, n + 1]);
    let hits = hr_at_1(&scores, &targets);
    eprintln!("BERT4Rec HR@1 = {hits:.3}");
    assert!(hits > 0.9, "HR@1 {hits} <= 0.9");

    // Popularity cannot know the rule: its HR@1 stays near 1/n.
    let pop_hits = pop_hr_at_1(&train_seqs, n, &inputs, &targets);
    eprintln!("pop HR@1 = {pop_hits:.3}");
    assert!(pop_hits < 0.2, "pop HR@1 {pop_hits} is not low");

    let out = tmp.path().join("model");
    assert_reloads_identically(&vs, &mcfg, &out, &x, &scores, &inputs);
}

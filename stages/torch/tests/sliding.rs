//! Sliding-window training (`training = "sliding"`): every prefix predicts
//! its next item — the windows by hand, that GRU4Rec learns the planted
//! rule from them, that a long sequence's early items now count, and that
//! resume stays bit-exact.

mod common;

use common::{assert_resume_is_bit_exact_with, hr_at_1, successor_data, train_and_score};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use seqpipe_torch::models::gru4rec::Gru4RecConfig;
use seqpipe_torch::models::trainer::{sliding_windows, training_windows, TrainConfig};

#[test]
fn windows_are_every_prefix_cut_to_max_len() {
    let seqs = vec![vec![1, 2, 3, 4, 5], vec![6], vec![7, 8]];
    let w = sliding_windows(&seqs, 10, 2).unwrap();
    let want: Vec<&[i64]> = vec![
        &[1, 2],
        &[1, 2, 3],
        &[2, 3, 4],
        &[3, 4, 5],
        // [6] alone has no next item
        &[7, 8],
    ];
    assert_eq!(w, want);
    // the default: one window per sequence, its last max_len + 1 items
    let last = training_windows(&seqs, 10, 2).unwrap();
    assert_eq!(last, vec![&[3, 4, 5][..], &[7, 8]]);
    assert!(sliding_windows(&[vec![1, 11]], 10, 2)
        .unwrap_err()
        .to_string()
        .contains("outside 1..=10"));
}

fn gru(n: i64) -> Gru4RecConfig {
    Gru4RecConfig {
        max_len: 8,
        dim: 32,
        ..Gru4RecConfig::new(n)
    }
}

#[test]
fn gru4rec_learns_the_planted_rule_from_sliding_windows() {
    let n = 40;
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let train = successor_data(&mut rng, n, 300, (5, 12));
    let held_out = successor_data(&mut rng, n, 200, (3, 8));
    let tcfg = TrainConfig {
        epochs: 4,
        batch_size: 64,
        lr: 5e-3,
        sliding: true,
        ..TrainConfig::default()
    };
    let run = train_and_score(&gru(n), &tcfg, &train, &held_out);
    let hits = hr_at_1(&run.scores, &run.targets);
    assert!(hits > 0.9, "HR@1 {hits} <= 0.9");
}

/// A rule that only the start of each (long) sequence shows: "sequence"
/// training sees each sequence's last max_len + 1 items only and cannot
/// learn it; "sliding" sees every position.
#[test]
fn sliding_windows_train_on_the_early_items_too() {
    let n = 40;
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    // successor chains of 6 items, then 30 repeats of item 1
    let train: Vec<Vec<i64>> = successor_data(&mut rng, n, 300, (6, 6))
        .into_iter()
        .map(|mut s| {
            s.extend(std::iter::repeat_n(1, 30));
            s
        })
        .collect();
    let held_out = successor_data(&mut rng, n, 200, (3, 6));
    let hits = |sliding| {
        let tcfg = TrainConfig {
            epochs: 4,
            batch_size: 64,
            lr: 5e-3,
            sliding,
            ..TrainConfig::default()
        };
        let run = train_and_score(&gru(n), &tcfg, &train, &held_out);
        hr_at_1(&run.scores, &run.targets)
    };
    let (sequence, sliding) = (hits(false), hits(true));
    eprintln!("HR@1 sequence {sequence:.3}, sliding {sliding:.3}");
    assert!(sliding > 0.8, "sliding HR@1 {sliding}");
    assert!(
        sequence < 0.3,
        "sequence training saw the early items: {sequence}"
    );
}

#[test]
fn sliding_training_resumes_bit_for_bit() {
    let n = 30;
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let data = successor_data(&mut rng, n, 60, (4, 10));
    let base = TrainConfig {
        sliding: true,
        ..TrainConfig::default()
    };
    assert_resume_is_bit_exact_with(&gru(n), &data, base);
}

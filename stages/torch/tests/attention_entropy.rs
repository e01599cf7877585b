//! evaluate's attention diagnostic on the three attention models (CPU,
//! random weights): per history the number of keys the scored query sees,
//! entropies within [0, ln keys], and the same numbers whether a history
//! is scored alone or left-padded inside a batch of longer ones. The
//! diagnostic comes from the scoring pass itself: its scores must be
//! exactly `score_last`'s.

use seqpipe_torch::models::bert4rec::Bert4RecConfig;
use seqpipe_torch::models::gsrec::GsRecConfig;
use seqpipe_torch::models::sasrec::SasRecConfig;
use seqpipe_torch::models::trainer::{torch_rng_lock, ModelConfig, SequenceModel};
use seqpipe_torch::models::{left_pad_batch, AttentionEntropy, Attentive};
use tch::nn::VarStore;
use tch::Device;

const MAX_LEN: i64 = 8;
const LAYERS: usize = 2;

/// Histories of 1 to 12 items (the longest cut to `MAX_LEN`).
fn histories() -> Vec<Vec<i64>> {
    [1usize, 2, 3, 7, 8, 12]
        .iter()
        .map(|&n| (0..n).map(|i| 1 + (i as i64 * 7 + n as i64) % 30).collect())
        .collect()
}

fn diagnose<M: Attentive>(model: &M, seqs: &[Vec<i64>]) -> Vec<AttentionEntropy> {
    let (_scores, attention) = model.score_last_with_attention(&left_pad_batch(seqs, MAX_LEN));
    attention.rows().unwrap()
}

/// Builds `cfg`'s model and checks the diagnostic; `extra_key` is 1 when
/// the scored query is an appended token that is itself a key.
fn check<C: ModelConfig>(cfg: &C, extra_key: usize)
where
    C::Model: Attentive + SequenceModel,
{
    let _g = torch_rng_lock();
    tch::manual_seed(11);
    let vs = VarStore::new(Device::Cpu);
    let model = cfg.build(&vs.root());
    let seqs = histories();
    let batch = left_pad_batch(&seqs, MAX_LEN);
    let scores_before = model.score_last(&batch);
    let together = diagnose(&model, &seqs);
    assert_eq!(together.len(), seqs.len());
    let mut spread = 0.0f64;
    for (s, got) in seqs.iter().zip(&together) {
        let keys = (s.len().min(MAX_LEN as usize - extra_key)) + extra_key;
        assert_eq!(got.keys, keys, "history of {}", s.len());
        assert_eq!(got.entropy.len(), LAYERS);
        let ln = (keys as f64).ln();
        for &h in &got.entropy {
            assert!((-1e-6..=ln + 1e-5).contains(&h), "H {h} outside [0, {ln}]");
        }
        match &got.normalised {
            None => assert_eq!(keys, 1, "normalised missing with {keys} keys"),
            Some(n) => {
                assert!(keys > 1);
                for (&x, &h) in n.iter().zip(&got.entropy) {
                    assert!(
                        (x - h / ln).abs() < 1e-5,
                        "normalised {x} vs H/ln n {}",
                        h / ln
                    );
                    spread = spread.max(1.0 - x);
                }
            }
        }
        // Alone, without the padding a batch of longer histories adds.
        let alone = &diagnose(&model, std::slice::from_ref(s))[0];
        assert_eq!(alone.keys, got.keys);
        for (a, b) in alone.entropy.iter().zip(&got.entropy) {
            assert!((a - b).abs() < 1e-5, "alone {a} vs padded {b}");
        }
    }
    // Random weights do not attend uniformly: the test sees real weights.
    assert!(spread > 1e-4, "every head-averaged distribution is uniform");
    let (scores_with, _) = model.score_last_with_attention(&batch);
    assert!(
        scores_before.equal(&scores_with),
        "scoring with the diagnostic gave other scores than score_last"
    );
    let scores_after = model.score_last(&batch);
    assert!(
        scores_before.equal(&scores_after),
        "the diagnostic changed the scores"
    );
}

#[test]
fn sasrec_last_position() {
    let cfg = SasRecConfig {
        max_len: MAX_LEN,
        dim: 16,
        heads: 2,
        layers: LAYERS as i64,
        ..SasRecConfig::new(30)
    };
    check(&cfg, 0);
    check(
        &SasRecConfig {
            pre_norm: false,
            ..cfg
        },
        0,
    );
}

#[test]
fn bert4rec_appended_mask() {
    let cfg = Bert4RecConfig {
        max_len: MAX_LEN,
        dim: 16,
        heads: 2,
        layers: LAYERS as i64,
        ..Bert4RecConfig::new(30)
    };
    check(&cfg, 1);
}

#[test]
fn gsrec_last_position() {
    let cfg = GsRecConfig {
        max_len: MAX_LEN,
        dim: 16,
        heads: 2,
        layers: LAYERS as i64,
        ffn: true,
        ..GsRecConfig::new(30)
    };
    check(&cfg, 0);
}

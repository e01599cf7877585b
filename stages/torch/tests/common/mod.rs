//! Helpers shared by the model tests: batches, tensor comparison, and
//! sequences with a planted rule a model must learn.
#![allow(dead_code)] // each test binary uses its own subset

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use seqpipe::progress::Progress;
use seqpipe::stage::StageContext;
use seqpipe_torch::models::pop::Pop;
use seqpipe_torch::models::trainer::{
    load_model, save_model, train, EpochStats, ModelConfig, SequenceModel, TrainConfig,
};
use seqpipe_torch::models::{Scorer, SeqScorer};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// Left-pads each sequence with 0 to length `l` and stacks them into [B, l].
pub fn left_padded(seqs: &[Vec<i64>], l: usize) -> Tensor {
    let mut flat = Vec::with_capacity(seqs.len() * l);
    for s in seqs {
        assert!(s.len() <= l);
        flat.extend(std::iter::repeat_n(0, l - s.len()));
        flat.extend_from_slice(s);
    }
    Tensor::from_slice(&flat).view([seqs.len() as i64, l as i64])
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// Sequences following the planted rule "item i is followed by i % n + 1".
pub fn successor_data(
    rng: &mut ChaCha8Rng,
    n: i64,
    count: usize,
    len: (usize, usize),
) -> Vec<Vec<i64>> {
    (0..count)
        .map(|_| {
            let l = rng.gen_range(len.0..=len.1);
            let start = rng.gen_range(1..=n);
            (0..l as i64).map(|k| (start - 1 + k) % n + 1).collect()
        })
        .collect()
}

/// Sequences following the planted rule "an item is followed, two steps
/// later, by its successor" (`s[k + 2] = s[k] % n + 1`): two interleaved
/// successor chains with independent starts, so the last item alone says
/// nothing about the next one.
pub fn skip_data(rng: &mut ChaCha8Rng, n: i64, count: usize, len: (usize, usize)) -> Vec<Vec<i64>> {
    (0..count)
        .map(|_| {
            let l = rng.gen_range(len.0..=len.1);
            let starts = [rng.gen_range(1..=n), rng.gen_range(1..=n)];
            (0..l as i64)
                .map(|k| (starts[(k % 2) as usize] - 1 + k / 2) % n + 1)
                .collect()
        })
        .collect()
}

/// The share of rows of `scores` [B, n + 1] whose best item is the target.
pub fn hr_at_1(scores: &Tensor, targets: &[i64]) -> f64 {
    scores
        .argmax(1, false)
        .eq_tensor(&Tensor::from_slice(targets))
        .to_kind(Kind::Float)
        .mean(Kind::Float)
        .double_value(&[])
}

/// HR@1 of popularity fitted on `train`: it cannot know a sequential rule,
/// so a model that learnt one must beat it.
pub fn pop_hr_at_1(train: &[Vec<i64>], n: i64, inputs: &[Vec<i64>], targets: &[i64]) -> f64 {
    let users: Vec<(i64, Vec<i64>)> = train.iter().cloned().map(|s| (0, s)).collect();
    let pop = Pop::fit(&users, n).score(inputs).unwrap();
    let scores = Tensor::from_slice(&pop.concat()).view([inputs.len() as i64, n + 1]);
    hr_at_1(&scores, targets)
}

/// Saves a trained model into `dir` and checks that every way of loading it
/// back — `load_model`, `models::load` and `SeqScorer` — gives the config it
/// was trained with and scores exactly as the trained model did (`scores`
/// for the left-padded batch `x` of `inputs`).
pub fn assert_reloads_identically<C: ModelConfig>(
    vs: &VarStore,
    cfg: &C,
    dir: &Path,
    x: &Tensor,
    scores: &Tensor,
    inputs: &[Vec<i64>],
) {
    save_model(vs, cfg, dir).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model"], C::NAME);
    let saved: C = serde_json::from_value(config).unwrap();
    assert!(
        saved == *cfg,
        "config.json does not hold the trained config"
    );
    let (_vs, model) = load_model::<C>(dir, Device::Cpu).unwrap();
    assert!(model.score_last(x).equal(scores));
    let rows = seqpipe_torch::models::load(dir, Device::Cpu)
        .unwrap()
        .score(&inputs[..3])
        .unwrap();
    let direct = SeqScorer::<C>::load(dir, Device::Cpu)
        .unwrap()
        .score(&inputs[..3])
        .unwrap();
    assert_eq!(rows, direct);
    let n = scores.size()[1] as usize;
    assert_eq!(rows[0].len(), n);
    assert_eq!(rows[0][0], f32::NEG_INFINITY);
}

/// The two trainings [`assert_resume_is_bit_exact`] compared, for checks
/// of a model's own (its variable count, the checkpoints it refuses).
pub struct Resumed {
    /// The training config both used (4 epochs).
    pub tcfg: TrainConfig,
    /// The uninterrupted training's variables and per-epoch stats.
    pub vs_a: VarStore,
    pub stats_a: Vec<EpochStats>,
    /// The interrupted training's checkpoint folder (holding epoch 4).
    pub dir_b: PathBuf,
    _tmp: tempfile::TempDir,
}

/// Trains `mcfg` on `data` for 4 epochs straight, and again for 2 epochs
/// then 4 from the same checkpoint folder, and asserts that the second call
/// resumed at epoch 2 and that both end bit for bit alike: every epoch's
/// loss bits and every variable. The loss must also fall.
pub fn assert_resume_is_bit_exact<C: ModelConfig>(mcfg: &C, data: &[Vec<i64>]) -> Resumed {
    assert_resume_is_bit_exact_with(mcfg, data, TrainConfig::default())
}

/// [`assert_resume_is_bit_exact`] with the other settings of `base`.
pub fn assert_resume_is_bit_exact_with<C: ModelConfig>(
    mcfg: &C,
    data: &[Vec<i64>],
    base: TrainConfig,
) -> Resumed {
    let tcfg = TrainConfig {
        epochs: 4,
        batch_size: 16,
        lr: 3e-3,
        weight_decay: 0.01,
        clip_norm: 1.0,
        ..base
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir_a = tmp.path().join("a");
    let dir_b = tmp.path().join("b");
    let mut seen_a = Vec::new();
    let (vs_a, stats_a) = train(mcfg, &tcfg, data, 11, Device::Cpu, &dir_a, &mut |s| {
        seen_a.push(s.epoch)
    })
    .unwrap();
    assert_eq!(seen_a, vec![0, 1, 2, 3]);

    let first = TrainConfig {
        epochs: 2,
        ..tcfg.clone()
    };
    let mut seen_b = Vec::new();
    let (_, stats_b2) = train(mcfg, &first, data, 11, Device::Cpu, &dir_b, &mut |s| {
        seen_b.push(s.epoch)
    })
    .unwrap();
    assert_eq!(stats_b2.len(), 2);
    let (vs_b, stats_b) = train(mcfg, &tcfg, data, 11, Device::Cpu, &dir_b, &mut |s| {
        seen_b.push(s.epoch)
    })
    .unwrap();
    assert_eq!(
        seen_b,
        vec![0, 1, 2, 3],
        "second call must resume at epoch 2"
    );

    assert_eq!(loss_bits(&stats_a), loss_bits(&stats_b));
    assert!(stats_a[3].train_loss < stats_a[0].train_loss);
    let va = vs_a.variables();
    let vb = vs_b.variables();
    assert_eq!(va.len(), vb.len());
    for (name, a) in &va {
        assert!(a.equal(&vb[name]), "variable {name} differs after resume");
    }
    Resumed {
        tcfg,
        vs_a,
        stats_a,
        dir_b,
        _tmp: tmp,
    }
}

/// Each epoch's loss as exact bits (decimal printing may round).
pub fn loss_bits(stats: &[EpochStats]) -> Vec<u64> {
    stats.iter().map(|e| e.train_loss.to_bits()).collect()
}

/// Runs `kind` from the worker's registry on `inputs` with `params`, seed
/// `seed` and checkpoint folder `checkpoint`; outputs go to fresh folders
/// under `out`. Returns the output folders and the run-manifest notes.
pub fn run_kind(
    kind: &str,
    params: serde_json::Value,
    inputs: &[(&str, &Path)],
    out: &Path,
    checkpoint: &Path,
    seed: u64,
) -> anyhow::Result<(BTreeMap<String, PathBuf>, BTreeMap<String, String>)> {
    let registry = seqpipe_torch::registry();
    let stage = registry.get(kind).expect("registered kind");
    let outputs: BTreeMap<String, PathBuf> = stage
        .info()
        .outputs
        .iter()
        .map(|p| {
            let path = out.join(p.name);
            std::fs::create_dir_all(&path).unwrap();
            (p.name.to_string(), path)
        })
        .collect();
    let progress = Progress::hidden();
    let mut ctx = StageContext {
        stage: kind,
        params,
        seed,
        device: "cpu",
        inputs: inputs
            .iter()
            .map(|(n, p)| (n.to_string(), p.to_path_buf()))
            .collect(),
        outputs: outputs.clone(),
        checkpoint_dir: checkpoint.to_path_buf(),
        progress: &progress,
        notes: BTreeMap::new(),
    };
    stage.run(&mut ctx)?;
    Ok((outputs, ctx.notes))
}

/// A model trained on planted-rule sequences and scored on held-out ones.
pub struct HeldOut {
    pub vs: VarStore,
    pub stats: Vec<EpochStats>,
    /// The held-out histories (all but each sequence's last item),
    /// left-padded to the model's `max_len`: [N, max_len].
    pub inputs: Tensor,
    /// `score_last` of `inputs`: [N, num_items + 1].
    pub scores: Tensor,
    /// Each held-out sequence's last item.
    pub targets: Vec<i64>,
}

/// Trains `mcfg` with `tcfg` on `train_seqs` (seed 5, CPU) and scores the
/// last item of every `held_out` sequence from the items before it.
pub fn train_and_score<C: ModelConfig>(
    mcfg: &C,
    tcfg: &TrainConfig,
    train_seqs: &[Vec<i64>],
    held_out: &[Vec<i64>],
) -> HeldOut {
    let tmp = tempfile::tempdir().unwrap();
    let (vs, stats) = train(
        mcfg,
        tcfg,
        train_seqs,
        5,
        Device::Cpu,
        tmp.path(),
        &mut |_| {},
    )
    .unwrap();
    let model = mcfg.build(&vs.root());
    let histories: Vec<Vec<i64>> = held_out.iter().map(|s| s[..s.len() - 1].to_vec()).collect();
    let targets = held_out.iter().map(|s| s[s.len() - 1]).collect();
    let inputs = seqpipe_torch::models::left_pad_batch(&histories, mcfg.max_len());
    let scores = model.score_last(&inputs);
    HeldOut {
        vs,
        stats,
        inputs,
        scores,
        targets,
    }
}

/// A spec named `name`: sequences from a tiny `synth`, then `train` with
/// `params` (for plan-time checks of train params).
pub fn train_spec(name: &str, params: &str) -> String {
    format!(
        r#"[pipeline]
name = "{name}"

[stages.synth]
kind = "synth"
params = {{ users = 20, items = 10 }}

[stages.sequences]
kind = "sequences"
inputs = {{ events = "synth.events" }}

[stages.train]
kind = "train"
inputs = {{ data = "sequences.data" }}
params = {{ {params} }}
"#
    )
}

/// Plans `text` as `seqpipe run` does, with the built-in stage kinds.
pub fn plan(text: &str) -> Result<(), String> {
    let source = seqpipe::spec::Source {
        path: "p.toml".into(),
        text: text.to_string(),
    };
    let spec = seqpipe::spec::parse(source, &[]).map_err(|e| e.to_string())?;
    seqpipe::graph::resolve(spec, &seqpipe_stages::registry())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The logistic function, for hand-computed binary cross-entropies.
pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `cfg`'s model with every variable drawn from seed `seed` (dropout may be
/// on: callers check in eval mode).
pub fn built<C: ModelConfig>(cfg: &C, seed: i64) -> (VarStore, C::Model) {
    let _guard = seqpipe_torch::models::trainer::torch_rng_lock();
    tch::manual_seed(seed);
    let vs = VarStore::new(Device::Cpu);
    let model = cfg.build(&vs.root());
    (vs, model)
}

/// Leave-one-out of `seqs` (users 1, 2, … in order): training sequences
/// without their last two items, validation examples predicting the
/// second-to-last from them, test examples the last from the rest.
pub fn leave_one_out(
    seqs: &[Vec<i64>],
) -> (
    Vec<Vec<i64>>,
    Vec<seqpipe_stages::seqdata::Example>,
    Vec<seqpipe_stages::seqdata::Example>,
) {
    use seqpipe_stages::seqdata::Example;
    let (mut train, mut valid, mut test) = (Vec::new(), Vec::new(), Vec::new());
    for (u, s) in seqs.iter().enumerate() {
        let (user, k) = (u as i64 + 1, s.len());
        train.push(s[..k - 2].to_vec());
        valid.push(Example {
            user,
            history: s[..k - 2].to_vec(),
            target: s[k - 2],
        });
        test.push(Example {
            user,
            history: s[..k - 1].to_vec(),
            target: s[k - 1],
        });
    }
    (train, valid, test)
}

/// A `sequences` artifact of `seqs` over items `1..=n` in `dir`, split by
/// [`leave_one_out`]; without validation examples when `with_valid` is
/// false.
pub fn write_sequences(dir: &Path, seqs: &[Vec<i64>], n: i64, with_valid: bool) {
    use seqpipe_stages::seqdata::{Meta, SequenceData};
    std::fs::create_dir_all(dir).unwrap();
    let (train, valid, test) = leave_one_out(seqs);
    let data = SequenceData {
        // From JSON, so that fields added to `Meta` later keep their defaults.
        meta: serde_json::from_value::<Meta>(serde_json::json!({
            "num_items": n,
            "num_users": seqs.len(),
            "split": "leave_one_out",
            "interactions": seqs.iter().map(Vec::len).sum::<usize>(),
        }))
        .unwrap(),
        train: train
            .into_iter()
            .enumerate()
            .map(|(u, s)| (u as i64 + 1, s))
            .collect(),
        valid: if with_valid { valid } else { vec![] },
        test,
    };
    let vocab: Vec<i64> = (1..=n).map(|i| 100 + i).collect();
    data.write(dir, &vocab).unwrap();
}

/// Each of `models` with `loss = "<loss>"` must be refused when the spec is
/// planned, by an error naming the params table, the loss and the model.
pub fn assert_loss_refused_for(loss: &str, models: &[&str]) {
    for model in models {
        let err = plan(&train_spec(
            "losses",
            &format!("model = \"{model}\", loss = \"{loss}\""),
        ))
        .expect_err("the loss was planned");
        assert!(
            err.contains("stages.train.params")
                && err.contains(&format!(
                    "loss: \"{loss}\" is not available for model `{model}`"
                )),
            "{err}"
        );
    }
}

/// Each of these `train` params (TOML inline-table bodies) must plan.
pub fn assert_plans(params: &[&str]) {
    for ok in params {
        plan(&train_spec("losses", ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
}

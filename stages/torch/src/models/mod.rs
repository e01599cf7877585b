//! The recommendation models. Each model file follows one order: a module
//! doc (paper, where we deviate), its config, its building blocks bottom-up,
//! then the public model. Every trained model is a folder with `config.json`
//! (always holding `model` and `num_items`) and `model.safetensors`, which
//! Python's `safetensors` opens; [`load`] turns such a folder into a
//! [`Scorer`] for evaluation.
//!
//! - [`pop`]: most popular items in training.
//! - [`markov`]: transitions from the last `order` items, backing off to
//!   shorter contexts, then popularity.
//! - [`itemknn`]: item-based k-nearest neighbours on co-occurrence cosine
//!   (Sarwar et al. 2001).
//! - [`sasrec`]: self-attentive sequential recommendation (Kang & McAuley 2018).
//! - [`gru4rec`]: session-based recommendation with a GRU (Hidasi et al. 2016).
//! - [`bert4rec`]: bidirectional transformer trained on a cloze task (Sun et al. 2019).
//! - [`gsrec`]: causal self-attention feeding a GRU (the SASRec→GRU
//!   hybrid).
//! - [`caser`]: horizontal and vertical convolutions over the last `L` item
//!   embeddings (Tang & Wang 2018).
//! - [`infonce`]: contrastive item embeddings on co-occurrence pairs (the
//!   `embed.infonce` kind; not a next-item model).
//!
//! The neural models share [`trainer`] (batching, the loss — full-softmax
//! cross-entropy, or binary cross-entropy on sampled negatives or on every
//! item — [`optim`]'s
//! AdamW, checkpoints and resume) through its two traits, and one scorer,
//! [`SeqScorer`].

pub mod bert4rec;
pub mod caser;
mod dropout;
pub mod gru4rec;
pub mod gsrec;
pub mod infonce;
pub mod itemknn;
mod layers;
pub mod markov;
pub mod optim;
pub mod pop;
pub mod sasrec;
pub mod trainer;

pub use layers::Activation;

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;
use tch::nn::{self, Init};
use tch::Tensor;

use trainer::{ModelConfig, SequenceModel};

/// Scores every item (index 0 = padding, scored −∞) as the next item after
/// each history.
pub trait Scorer {
    fn score(&self, histories: &[Vec<i64>]) -> anyhow::Result<Vec<Vec<f32>>>;

    /// [`Scorer::score`] and, for models with attention layers, per
    /// history how the query the model scores from spreads its attention
    /// over the history, layer by layer (see [`AttentionEntropy`]), from
    /// the same forward pass; `None` (the default) for models without
    /// attention. Eval mode, no gradients, no RNG draw.
    fn score_with_attention(&self, histories: &[Vec<i64>]) -> anyhow::Result<ScoredBatch> {
        Ok((self.score(histories)?, None))
    }
}

/// A batch's scores (one row per history, as [`Scorer::score`] gives them)
/// and, for attention models, its attention diagnostic.
pub type ScoredBatch = (Vec<Vec<f32>>, Option<Vec<AttentionEntropy>>);

/// One history's attention diagnostic. The weights are those of the query
/// the model scores from — the last position for SASRec and GSRec, the
/// `[MASK]` appended after the history for BERT4Rec — over the keys it may
/// attend to (the history's items within `max_len`, plus `[MASK]` itself
/// for BERT4Rec; never padding), averaged over heads.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionEntropy {
    /// The number of keys.
    pub keys: usize,
    /// Per layer, first to last: H = −Σ p ln p in nats, in [0, ln keys].
    pub entropy: Vec<f64>,
    /// Per layer: H / ln(keys), in [0, 1] (1 = uniform over the keys, 0 =
    /// all on one); `None` with a single key, where it is undefined.
    pub normalised: Option<Vec<f64>>,
}

/// The attention diagnostic of a batch of histories, as the attention
/// models compute it (`layers::entropies`).
pub struct AttentionBatch {
    /// [B, layers] float: per layer the entropy H in nats.
    pub entropy: Tensor,
    /// [B, layers] float: H / ln(keys), NaN where keys = 1.
    pub normalised: Tensor,
    /// [B] int64: the keys the scored query may attend to.
    pub keys: Tensor,
}

impl AttentionBatch {
    /// One [`AttentionEntropy`] per row.
    pub fn rows(&self) -> anyhow::Result<Vec<AttentionEntropy>> {
        let cpu = |t: &Tensor| t.to_kind(tch::Kind::Double).to_device(tch::Device::Cpu);
        let layers = self.entropy.size()[1] as usize;
        let keys = Vec::<i64>::try_from(self.keys.to_device(tch::Device::Cpu))?;
        let entropy = Vec::<f64>::try_from(cpu(&self.entropy).flatten(0, -1))?;
        let normalised = Vec::<f64>::try_from(cpu(&self.normalised).flatten(0, -1))?;
        Ok(keys
            .iter()
            .enumerate()
            .map(|(r, &k)| {
                let row = r * layers..(r + 1) * layers;
                AttentionEntropy {
                    keys: k as usize,
                    entropy: entropy[row.clone()].to_vec(),
                    normalised: (k > 1).then(|| normalised[row].to_vec()),
                }
            })
            .collect())
    }
}

/// A model with attention layers whose weights
/// [`Scorer::score_with_attention`] summarises.
pub trait Attentive {
    /// `score_last` of left-padded histories `seqs` [B, L] (`L <=
    /// max_len`) — the same tensor — and the attention diagnostic of the
    /// scored query, taken from that pass.
    fn score_last_with_attention(&self, seqs: &Tensor) -> (Tensor, AttentionBatch);
}

#[derive(Deserialize)]
struct Header {
    model: String,
}

/// Loads a model folder written by the `train` stage.
pub fn load(dir: &Path, device: tch::Device) -> anyhow::Result<Box<dyn Scorer>> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let header: Header = serde_json::from_str(&text)
        .with_context(|| format!("{} has no `model` field", path.display()))?;
    match header.model.as_str() {
        "pop" => Ok(Box::new(pop::Pop::load(dir)?)),
        "markov" => Ok(Box::new(markov::Markov::load(dir)?)),
        "itemknn" => Ok(Box::new(itemknn::ItemKnn::load(dir)?)),
        "sasrec" => Ok(Box::new(
            SeqScorer::<sasrec::SasRecConfig>::load(dir, device)?.with_attention(),
        )),
        "gru4rec" => Ok(Box::new(SeqScorer::<gru4rec::Gru4RecConfig>::load(
            dir, device,
        )?)),
        "bert4rec" => Ok(Box::new(
            SeqScorer::<bert4rec::Bert4RecConfig>::load(dir, device)?.with_attention(),
        )),
        "caser" => Ok(Box::new(SeqScorer::<caser::CaserConfig>::load(
            dir, device,
        )?)),
        "gsrec" => Ok(Box::new(
            SeqScorer::<gsrec::GsRecConfig>::load(dir, device)?.with_attention(),
        )),
        other => anyhow::bail!("{}: unknown model `{other}`", path.display()),
    }
}

/// Writes `config.json`.
pub fn write_config(dir: &Path, config: &serde_json::Value) -> anyhow::Result<()> {
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(config)?)?;
    Ok(())
}

/// Reads named tensors from `model.safetensors`.
pub fn read_tensors(dir: &Path) -> anyhow::Result<Vec<(String, tch::Tensor)>> {
    let path = dir.join("model.safetensors");
    tch::Tensor::read_safetensors(&path).with_context(|| format!("cannot read {}", path.display()))
}

/// Finds a tensor by name.
pub fn take(
    tensors: &mut Vec<(String, tch::Tensor)>,
    name: &str,
    dir: &Path,
) -> anyhow::Result<tch::Tensor> {
    let i = tensors
        .iter()
        .position(|(n, _)| n == name)
        .with_context(|| format!("{}/model.safetensors has no tensor `{name}`", dir.display()))?;
    Ok(tensors.swap_remove(i).1)
}

/// Item counts over training sequences, index 0 unused.
pub fn item_counts(train: &[(i64, Vec<i64>)], num_items: i64) -> Vec<f32> {
    let mut counts = vec![0f32; num_items as usize + 1];
    for (_, seq) in train {
        for &item in seq {
            counts[item as usize] += 1.0;
        }
    }
    counts
}

/// [`Attentive::score_last_with_attention`] of a model type `M`, kept by a
/// [`SeqScorer`] whose model has attention layers.
type ScoreWithAttention<M> = fn(&M, &Tensor) -> (Tensor, AttentionBatch);

/// A trained neural model as a [`Scorer`]: histories are cut to the model's
/// last `max_len` items and left-padded.
pub struct SeqScorer<C: ModelConfig> {
    // Owns the variables the model's tensors point into.
    _vs: nn::VarStore,
    model: C::Model,
    max_len: i64,
    /// The model's attention diagnostic, for models that have one (see
    /// [`SeqScorer::with_attention`]).
    attention: Option<ScoreWithAttention<C::Model>>,
}

impl<C: ModelConfig> SeqScorer<C> {
    pub fn load(dir: &Path, device: tch::Device) -> anyhow::Result<SeqScorer<C>> {
        let cfg_path = dir.join("config.json");
        let cfg: C = serde_json::from_slice(
            &std::fs::read(&cfg_path)
                .with_context(|| format!("cannot read {}", cfg_path.display()))?,
        )
        .with_context(|| format!("cannot parse {}", cfg_path.display()))?;
        let (vs, model) = trainer::load_model::<C>(dir, device)?;
        Ok(SeqScorer {
            _vs: vs,
            model,
            max_len: cfg.max_len(),
            attention: None,
        })
    }

    /// The scorer with the model's attention diagnostic switched on.
    pub fn with_attention(self) -> SeqScorer<C>
    where
        C::Model: Attentive,
    {
        SeqScorer {
            attention: Some(<C::Model as Attentive>::score_last_with_attention),
            ..self
        }
    }
}

impl<C: ModelConfig> Scorer for SeqScorer<C> {
    fn score(&self, histories: &[Vec<i64>]) -> anyhow::Result<Vec<Vec<f32>>> {
        let batch = left_pad_batch(histories, self.max_len).to_device(self.model.device());
        score_rows(&self.model.score_last(&batch))
    }

    fn score_with_attention(&self, histories: &[Vec<i64>]) -> anyhow::Result<ScoredBatch> {
        let Some(score_and_diagnose) = self.attention else {
            return Ok((self.score(histories)?, None));
        };
        let batch = left_pad_batch(histories, self.max_len).to_device(self.model.device());
        let (scores, stats) = score_and_diagnose(&self.model, &batch);
        Ok((score_rows(&scores)?, Some(stats.rows()?)))
    }
}

/// `score_last`'s [B, N + 1] tensor as one row of f32 per history.
fn score_rows(scores: &Tensor) -> anyhow::Result<Vec<Vec<f32>>> {
    let scores = scores.to_kind(tch::Kind::Float).to_device(tch::Device::Cpu);
    let width = scores.size()[1] as usize;
    let flat = Vec::<f32>::try_from(scores.flatten(0, -1))?;
    Ok(flat.chunks(width).map(<[f32]>::to_vec).collect())
}

/// Stacks histories into the models' input layout: each sequence cut to its
/// last `max_len` items and LEFT-padded with 0 to the longest of them (at
/// least 1 column). Returns [B, L] int64 on the CPU.
pub fn left_pad_batch<S: AsRef<[i64]>>(seqs: &[S], max_len: i64) -> Tensor {
    let max_len = max_len.max(1) as usize;
    let cut = |s: &[i64]| s.len().min(max_len);
    let l = seqs
        .iter()
        .map(|s| cut(s.as_ref()))
        .max()
        .unwrap_or(0)
        .max(1);
    let mut flat = vec![0i64; seqs.len() * l];
    for (r, s) in seqs.iter().enumerate() {
        let s = s.as_ref();
        let k = cut(s);
        flat[r * l + (l - k)..(r + 1) * l].copy_from_slice(&s[s.len() - k..]);
    }
    Tensor::from_slice(&flat).view([seqs.len() as i64, l as i64])
}

/// Returns the variable `name` under `p` if the var store already holds it
/// (checking its shape), otherwise creates it with `init`. Unlike
/// `Entry::or_var`, an existing variable costs no RNG draw, which is what lets
/// [`ModelConfig::build`] rebind a trained var store without disturbing a
/// seeded run.
pub(crate) fn param(p: &nn::Path, name: &str, dims: &[i64], init: Init) -> Tensor {
    match p.get(name) {
        Some(t) => {
            assert_eq!(
                t.size(),
                dims,
                "existing variable {} has the wrong shape",
                p.path(name)
            );
            t
        }
        None => p.var(name, dims, init),
    }
}

//! The recommendation models. Each model file follows one order: a module
//! doc (paper, where we deviate), its config, its building blocks bottom-up,
//! then the public model. Every trained model is a folder with `config.json`
//! (always holding `model` and `num_items`) and `model.safetensors`, which
//! Python's `safetensors` opens; [`load`] turns such a folder into a
//! [`Scorer`] for evaluation.
//!
//! - [`pop`]: most popular items in training.
//! - [`markov`]: first-order transitions, backing off to popularity.
//! - [`sasrec`]: self-attentive sequential recommendation (Kang & McAuley 2018).

pub mod markov;
pub mod optim;
pub mod pop;
pub mod sasrec;
pub mod sasrec_train;

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

/// Scores every item (index 0 = padding, scored −∞) as the next item after
/// each history.
pub trait Scorer {
    fn score(&self, histories: &[Vec<i64>]) -> anyhow::Result<Vec<Vec<f32>>>;
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
        "sasrec" => Ok(Box::new(SasRecScorer::load(dir, device)?)),
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

/// A trained SASRec as a [`Scorer`]: histories are cut to the model's last
/// `max_len` items and left-padded.
pub struct SasRecScorer {
    _vs: tch::nn::VarStore,
    model: sasrec::SasRec,
}

impl SasRecScorer {
    pub fn load(dir: &Path, device: tch::Device) -> anyhow::Result<SasRecScorer> {
        let (vs, model) = sasrec_train::load_model(dir, device)?;
        Ok(SasRecScorer { _vs: vs, model })
    }
}

impl Scorer for SasRecScorer {
    fn score(&self, histories: &[Vec<i64>]) -> anyhow::Result<Vec<Vec<f32>>> {
        let max_len = self.model.config().max_len;
        let batch = sasrec::left_pad_batch(histories, max_len).to_device(self.model.device());
        let scores = self
            .model
            .score_last(&batch)
            .to_kind(tch::Kind::Float)
            .to_device(tch::Device::Cpu);
        let width = scores.size()[1] as usize;
        let flat = Vec::<f32>::try_from(scores.flatten(0, -1))?;
        Ok(flat.chunks(width).map(<[f32]>::to_vec).collect())
    }
}

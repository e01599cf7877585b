//! Most-popular baseline: every history gets the same scores, the number of
//! times each item occurs in the training sequences.

use std::path::Path;

use tch::Tensor;

use super::Scorer;

pub struct Pop {
    counts: Vec<f32>,
}

impl Pop {
    pub fn fit(train: &[(i64, Vec<i64>)], num_items: i64) -> Pop {
        Pop {
            counts: super::item_counts(train, num_items),
        }
    }

    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let counts = Tensor::from_slice(&self.counts);
        Tensor::write_safetensors(&[("counts", &counts)], dir.join("model.safetensors"))?;
        super::write_config(
            dir,
            &serde_json::json!({ "model": "pop", "num_items": self.counts.len() - 1 }),
        )
    }

    pub fn load(dir: &Path) -> anyhow::Result<Pop> {
        let mut tensors = super::read_tensors(dir)?;
        let counts = super::take(&mut tensors, "counts", dir)?;
        Ok(Pop {
            counts: Vec::<f32>::try_from(&counts)?,
        })
    }
}

impl Scorer for Pop {
    fn score(&self, histories: &[Vec<i64>]) -> anyhow::Result<Vec<Vec<f32>>> {
        let mut row = self.counts.clone();
        row[0] = f32::NEG_INFINITY;
        Ok(vec![row; histories.len()])
    }
}

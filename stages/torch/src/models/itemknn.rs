//! Item-based k-nearest neighbours.
//!
//! Sarwar, Karypis, Konstan & Riedl, "Item-Based Collaborative Filtering
//! Recommendation Algorithms", WWW 2001, in the form RecBole's `ItemKNN`
//! implements: each user's training sequence is read as a set of items
//! (implicit feedback: order and repeats ignored), two items are as similar
//! as the cosine of their user columns,
//!
//! `sim(i, j) = |U_i ∩ U_j| / (sqrt(|U_i|) · sqrt(|U_j|) + shrink)`,
//!
//! each item `j` keeps its `knn_k` most similar other items `N(j)` (ties to
//! the smaller id), and the score of `j` after a history `H` (the distinct
//! items of the input sequence) is `Σ_{i ∈ H ∩ N(j)} sim(i, j)`: the
//! neighbourhood is the candidate's, as in Sarwar et al. and RecBole.
//!
//! Where this implementation deviates: RecBole adds 1e-6 to the denominator
//! (a pair that co-occurs never has a zero one, so we do not), and we add a
//! popularity back-off as [`markov`](super::markov) does: items that no
//! history item is a neighbour of score their popularity scaled into
//! `[-1, 0)`, below every item with kNN evidence (scores > 0), so an empty or
//! unseen history ranks by popularity; items with evidence get popularity ×
//! 1e-6 on top of their sum to break exact ties (which are common in sparse
//! data) toward popular items.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Context;
use tch::Tensor;

use super::Scorer;

/// How much of the (scaled) popularity breaks ties between items with kNN
/// evidence.
const TIE_BREAK: f64 = 1e-6;

pub struct ItemKnn {
    /// `neighbours[j]`: `(i, sim(i, j))` for `i` in `N(j)`, most similar first.
    neighbours: Vec<Vec<(i64, f32)>>,
    /// `reverse[i]`: `(j, sim(i, j))` for every `j` with `i` in `N(j)`.
    reverse: Vec<Vec<(i64, f32)>>,
    /// Popularity scaled into [0, 1).
    backoff: Vec<f32>,
    knn_k: usize,
    shrink: f64,
}

impl ItemKnn {
    /// Fits the similarities on the training sequences. Panics if `knn_k`
    /// is 0 or `shrink` negative.
    pub fn fit(train: &[(i64, Vec<i64>)], num_items: i64, knn_k: usize, shrink: f64) -> ItemKnn {
        assert!(knn_k >= 1, "knn_k must be >= 1");
        assert!(shrink >= 0.0, "shrink must be >= 0");
        let n = num_items as usize;
        let sets: Vec<Vec<usize>> = train
            .iter()
            .map(|(_, seq)| {
                let set: BTreeSet<usize> = seq.iter().map(|&i| i as usize).collect();
                set.into_iter().collect()
            })
            .collect();
        let mut users_of: Vec<Vec<usize>> = vec![Vec::new(); n + 1];
        for (u, set) in sets.iter().enumerate() {
            for &i in set {
                users_of[i].push(u);
            }
        }
        let norm: Vec<f64> = users_of.iter().map(|u| (u.len() as f64).sqrt()).collect();
        // Co-occurrence counts of one item with every other, reset per item.
        let mut together = vec![0u32; n + 1];
        let mut touched: Vec<usize> = Vec::new();
        let mut neighbours = vec![Vec::new(); n + 1];
        for i in 1..=n {
            for &u in &users_of[i] {
                for &j in &sets[u] {
                    if j != i {
                        if together[j] == 0 {
                            touched.push(j);
                        }
                        together[j] += 1;
                    }
                }
            }
            let mut row: Vec<(i64, f32)> = touched
                .iter()
                .map(|&j| {
                    let sim = together[j] as f64 / (norm[i] * norm[j] + shrink);
                    (j as i64, sim as f32)
                })
                .collect();
            row.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            row.truncate(knn_k);
            neighbours[i] = row;
            for &j in &touched {
                together[j] = 0;
            }
            touched.clear();
        }
        Self::from_parts(
            neighbours,
            backoff(super::item_counts(train, num_items)),
            knn_k,
            shrink,
        )
    }

    fn from_parts(
        neighbours: Vec<Vec<(i64, f32)>>,
        backoff: Vec<f32>,
        knn_k: usize,
        shrink: f64,
    ) -> ItemKnn {
        let mut reverse = vec![Vec::new(); neighbours.len()];
        for (j, row) in neighbours.iter().enumerate() {
            for &(i, sim) in row {
                reverse[i as usize].push((j as i64, sim));
            }
        }
        ItemKnn {
            neighbours,
            reverse,
            backoff,
            knn_k,
            shrink,
        }
    }

    /// `N(j)` with similarities, most similar first.
    pub fn neighbours(&self, j: i64) -> &[(i64, f32)] {
        &self.neighbours[j as usize]
    }

    /// `model.safetensors`: `item`, `neighbour`, `sim` (one entry per kept
    /// pair: `neighbour` is in `N(item)`) and `backoff`.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let (mut item, mut neighbour, mut sim) = (vec![], vec![], vec![]);
        for (j, row) in self.neighbours.iter().enumerate() {
            for &(i, s) in row {
                item.push(j as i64);
                neighbour.push(i);
                sim.push(s);
            }
        }
        let tensors = [
            ("item", Tensor::from_slice(&item)),
            ("neighbour", Tensor::from_slice(&neighbour)),
            ("sim", Tensor::from_slice(&sim)),
            ("backoff", Tensor::from_slice(&self.backoff)),
        ];
        let named: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
        Tensor::write_safetensors(&named, dir.join("model.safetensors"))?;
        super::write_config(
            dir,
            &serde_json::json!({
                "model": "itemknn",
                "num_items": self.backoff.len() - 1,
                "knn_k": self.knn_k,
                "shrink": self.shrink,
            }),
        )
    }

    pub fn load(dir: &Path) -> anyhow::Result<ItemKnn> {
        let path = dir.join("config.json");
        let config: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?,
        )
        .with_context(|| format!("cannot parse {}", path.display()))?;
        let knn_k = config["knn_k"].as_u64().unwrap_or(0) as usize;
        let shrink = config["shrink"].as_f64().unwrap_or(0.0);
        let mut t = super::read_tensors(dir)?;
        let item = Vec::<i64>::try_from(&super::take(&mut t, "item", dir)?)?;
        let neighbour = Vec::<i64>::try_from(&super::take(&mut t, "neighbour", dir)?)?;
        let sim = Vec::<f32>::try_from(&super::take(&mut t, "sim", dir)?)?;
        let backoff = Vec::<f32>::try_from(&super::take(&mut t, "backoff", dir)?)?;
        let n = backoff.len();
        anyhow::ensure!(
            neighbour.len() == item.len() && sim.len() == item.len(),
            "{}/model.safetensors: item, neighbour and sim disagree in length",
            dir.display()
        );
        let mut neighbours = vec![Vec::new(); n];
        for ((j, i), s) in item.into_iter().zip(neighbour).zip(sim) {
            anyhow::ensure!(
                (1..n as i64).contains(&j) && (1..n as i64).contains(&i),
                "{}/model.safetensors: item pair ({j}, {i}) outside 1..{n}",
                dir.display()
            );
            neighbours[j as usize].push((i, s));
        }
        Ok(Self::from_parts(neighbours, backoff, knn_k, shrink))
    }

    fn score_one(&self, history: &[i64]) -> Vec<f32> {
        let n = self.backoff.len();
        let mut sum = vec![0f64; n];
        let mut evidence = vec![false; n];
        let distinct: BTreeSet<usize> = history
            .iter()
            .map(|&i| i as usize)
            .filter(|&i| i < n)
            .collect();
        for i in distinct {
            for &(j, s) in &self.reverse[i] {
                sum[j as usize] += s as f64;
                evidence[j as usize] = true;
            }
        }
        let mut row: Vec<f32> = (0..n)
            .map(|j| {
                let b = self.backoff[j] as f64;
                let s = if evidence[j] {
                    sum[j] + TIE_BREAK * b
                } else {
                    b - 1.0
                };
                s as f32
            })
            .collect();
        row[0] = f32::NEG_INFINITY;
        row
    }
}

fn backoff(counts: Vec<f32>) -> Vec<f32> {
    let max = counts.iter().copied().fold(0f32, f32::max);
    counts.into_iter().map(|c| c / (max + 1.0)).collect()
}

impl Scorer for ItemKnn {
    fn score(&self, histories: &[Vec<i64>]) -> anyhow::Result<Vec<Vec<f32>>> {
        Ok(histories.iter().map(|h| self.score_one(h)).collect())
    }
}

//! Markov chain of order `k` with back-off: the score of item j after a
//! history is the number of times j followed the history's last `k` items
//! in training, then, scaled below one such count, the same for the last
//! `k - 1` items, and so on down to the last item, then popularity. So
//! evidence from a longer context always ranks first, a shorter one breaks
//! its ties, and popularity ranks what no context has seen. An empty history
//! or unseen contexts fall back to popularity alone. (A k-gram model with
//! strict back-off instead of smoothed probabilities: only the ranking
//! matters here. `k = 1` is the classic first-order chain.)
//!
//! Scaling: with `v_0` the popularity of j divided by (largest count + 1),
//! in `[0, 1)`, and `c_o(j)` the count of j after the last `o` items,
//! `v_o(j) = c_o(j) + v_{o-1}(j) / (M_{o-1} + 1)` where `M_{o-1}` is the
//! largest `c_{o-1}` of this history (0 for `v_0`, already below one). Every
//! `v_{o-1}` is below `M_{o-1} + 1`, so each lower level adds less than one
//! count of the level above. For `k = 1` this is count + popularity, the
//! chain as it was before `order` existed (same file bytes, same scores).
//! Scores are summed in f64 and returned as f32, whose rounding can tie
//! items only at extreme count ratios.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use tch::Tensor;

use super::Scorer;

/// Context (the last `o` items, oldest first) → (next, count), sorted by next.
type Level = BTreeMap<Vec<i64>, Vec<(i64, f32)>>;

pub struct Markov {
    /// `levels[o - 1]` holds the transitions from contexts of `o` items.
    levels: Vec<Level>,
    /// Popularity scaled into [0, 1).
    backoff: Vec<f32>,
}

impl Markov {
    /// The first-order chain.
    pub fn fit(train: &[(i64, Vec<i64>)], num_items: i64) -> Markov {
        Self::fit_order(train, num_items, 1)
    }

    /// The chain of order `order` (>= 1): transitions from every context of
    /// 1 to `order` consecutive items.
    pub fn fit_order(train: &[(i64, Vec<i64>)], num_items: i64, order: usize) -> Markov {
        assert!(order >= 1, "order must be >= 1");
        let levels = (1..=order)
            .map(|o| {
                let mut counts: BTreeMap<(&[i64], i64), f32> = BTreeMap::new();
                for (_, seq) in train {
                    for w in seq.windows(o + 1) {
                        *counts.entry((&w[..o], w[o])).or_default() += 1.0;
                    }
                }
                let mut level = Level::new();
                for ((context, next), c) in counts {
                    level.entry(context.to_vec()).or_default().push((next, c));
                }
                level
            })
            .collect();
        Markov {
            levels,
            backoff: backoff(super::item_counts(train, num_items)),
        }
    }

    /// The chain's order.
    pub fn order(&self) -> usize {
        self.levels.len()
    }

    /// `model.safetensors`: `prev`, `next`, `count` (first order, one entry
    /// per transition), `backoff`, and for each order `o >= 2` `prev_o`
    /// ([n, o] contexts), `next_o`, `count_o`.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let mut tensors = Vec::new();
        for (o, level) in (1..).zip(&self.levels) {
            let (mut prev, mut next, mut count) = (vec![], vec![], vec![]);
            for (context, row) in level {
                for (n, c) in row {
                    prev.extend_from_slice(context);
                    next.push(*n);
                    count.push(*c);
                }
            }
            let suffix = if o == 1 {
                String::new()
            } else {
                format!("_{o}")
            };
            let mut prev = Tensor::from_slice(&prev);
            if o > 1 {
                prev = prev.view([-1, o as i64]);
            }
            tensors.push((format!("prev{suffix}"), prev));
            tensors.push((format!("next{suffix}"), Tensor::from_slice(&next)));
            tensors.push((format!("count{suffix}"), Tensor::from_slice(&count)));
            if o == 1 {
                tensors.push(("backoff".into(), Tensor::from_slice(&self.backoff)));
            }
        }
        let named: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        Tensor::write_safetensors(&named, dir.join("model.safetensors"))?;
        super::write_config(
            dir,
            &serde_json::json!({ "model": "markov", "order": self.order(), "num_items": self.backoff.len() - 1 }),
        )
    }

    pub fn load(dir: &Path) -> anyhow::Result<Markov> {
        let path = dir.join("config.json");
        let config: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?,
        )
        .with_context(|| format!("cannot parse {}", path.display()))?;
        let order = config["order"].as_u64().unwrap_or(1) as usize;
        anyhow::ensure!(order >= 1, "{}: order must be >= 1", path.display());
        let mut t = super::read_tensors(dir)?;
        let backoff = Vec::<f32>::try_from(&super::take(&mut t, "backoff", dir)?)?;
        let mut levels = Vec::with_capacity(order);
        for o in 1..=order {
            let suffix = if o == 1 {
                String::new()
            } else {
                format!("_{o}")
            };
            let prev = super::take(&mut t, &format!("prev{suffix}"), dir)?;
            let prev = Vec::<i64>::try_from(&prev.flatten(0, -1))?;
            let next = Vec::<i64>::try_from(&super::take(&mut t, &format!("next{suffix}"), dir)?)?;
            let count =
                Vec::<f32>::try_from(&super::take(&mut t, &format!("count{suffix}"), dir)?)?;
            anyhow::ensure!(
                prev.len() == next.len() * o && count.len() == next.len(),
                "{}/model.safetensors: order-{o} tensors disagree in length",
                dir.display()
            );
            let mut level = Level::new();
            for ((context, n), c) in prev.chunks(o).zip(next).zip(count) {
                level.entry(context.to_vec()).or_default().push((n, c));
            }
            levels.push(level);
        }
        Ok(Markov { levels, backoff })
    }

    fn score_one(&self, history: &[i64]) -> Vec<f32> {
        let mut v: Vec<f64> = self.backoff.iter().map(|&b| b as f64).collect();
        // Largest count of the level below; the popularity is already < 1.
        let mut below_max = 0f32;
        for (o, level) in (1..).zip(&self.levels) {
            if below_max > 0.0 {
                let scale = below_max as f64 + 1.0;
                v.iter_mut().for_each(|x| *x /= scale);
            }
            below_max = 0.0;
            let row = history
                .len()
                .checked_sub(o)
                .and_then(|start| level.get(&history[start..]));
            for (next, c) in row.into_iter().flatten() {
                v[*next as usize] += *c as f64;
                below_max = below_max.max(*c);
            }
        }
        let mut row: Vec<f32> = v.into_iter().map(|x| x as f32).collect();
        row[0] = f32::NEG_INFINITY;
        row
    }
}

fn backoff(counts: Vec<f32>) -> Vec<f32> {
    let max = counts.iter().copied().fold(0f32, f32::max);
    counts.into_iter().map(|c| c / (max + 1.0)).collect()
}

impl Scorer for Markov {
    fn score(&self, histories: &[Vec<i64>]) -> anyhow::Result<Vec<Vec<f32>>> {
        Ok(histories.iter().map(|h| self.score_one(h)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_first_then_popularity() {
        // 1→2 twice, 1→3 once; item 4 is the most popular overall.
        let train = vec![
            (1, vec![1, 2, 4, 4]),
            (2, vec![1, 2, 4]),
            (3, vec![1, 3, 4]),
        ];
        let m = Markov::fit(&train, 4);
        let s = &m.score(&[vec![1]]).unwrap()[0];
        assert!(s[2] > s[3] && s[3] > s[4], "{s:?}");
        let unseen = &m.score(&[vec![]]).unwrap()[0];
        assert!(unseen[4] > unseen[1] && unseen[1] > unseen[3], "{unseen:?}");
    }
}

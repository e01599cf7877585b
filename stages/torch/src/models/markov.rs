//! First-order Markov chain: the score of item j after a history ending in i
//! is the number of i → j transitions in training, plus the popularity of j
//! scaled below one transition — so transitions seen in training come first
//! and the rest is ranked by popularity (back-off). An empty history or an
//! unseen last item falls back to popularity alone.

use std::collections::BTreeMap;
use std::path::Path;

use tch::Tensor;

use super::Scorer;

pub struct Markov {
    /// prev → (next, count), sorted by next.
    transitions: BTreeMap<i64, Vec<(i64, f32)>>,
    /// Popularity scaled into [0, 1).
    backoff: Vec<f32>,
}

impl Markov {
    pub fn fit(train: &[(i64, Vec<i64>)], num_items: i64) -> Markov {
        let mut counts: BTreeMap<(i64, i64), f32> = BTreeMap::new();
        for (_, seq) in train {
            for w in seq.windows(2) {
                *counts.entry((w[0], w[1])).or_default() += 1.0;
            }
        }
        let mut transitions: BTreeMap<i64, Vec<(i64, f32)>> = BTreeMap::new();
        for ((prev, next), c) in counts {
            transitions.entry(prev).or_default().push((next, c));
        }
        Markov {
            transitions,
            backoff: backoff(super::item_counts(train, num_items)),
        }
    }

    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let (mut prev, mut next, mut count) = (vec![], vec![], vec![]);
        for (p, row) in &self.transitions {
            for (n, c) in row {
                prev.push(*p);
                next.push(*n);
                count.push(*c);
            }
        }
        let tensors = [
            ("prev", Tensor::from_slice(&prev)),
            ("next", Tensor::from_slice(&next)),
            ("count", Tensor::from_slice(&count)),
            ("backoff", Tensor::from_slice(&self.backoff)),
        ];
        let named: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
        Tensor::write_safetensors(&named, dir.join("model.safetensors"))?;
        super::write_config(
            dir,
            &serde_json::json!({ "model": "markov", "order": 1, "num_items": self.backoff.len() - 1 }),
        )
    }

    pub fn load(dir: &Path) -> anyhow::Result<Markov> {
        let mut t = super::read_tensors(dir)?;
        let prev = Vec::<i64>::try_from(&super::take(&mut t, "prev", dir)?)?;
        let next = Vec::<i64>::try_from(&super::take(&mut t, "next", dir)?)?;
        let count = Vec::<f32>::try_from(&super::take(&mut t, "count", dir)?)?;
        let backoff = Vec::<f32>::try_from(&super::take(&mut t, "backoff", dir)?)?;
        let mut transitions: BTreeMap<i64, Vec<(i64, f32)>> = BTreeMap::new();
        for ((p, n), c) in prev.into_iter().zip(next).zip(count) {
            transitions.entry(p).or_default().push((n, c));
        }
        Ok(Markov {
            transitions,
            backoff,
        })
    }
}

fn backoff(counts: Vec<f32>) -> Vec<f32> {
    let max = counts.iter().copied().fold(0f32, f32::max);
    counts.into_iter().map(|c| c / (max + 1.0)).collect()
}

impl Scorer for Markov {
    fn score(&self, histories: &[Vec<i64>]) -> anyhow::Result<Vec<Vec<f32>>> {
        Ok(histories
            .iter()
            .map(|h| {
                let mut row = self.backoff.clone();
                row[0] = f32::NEG_INFINITY;
                if let Some(row_t) = h.last().and_then(|last| self.transitions.get(last)) {
                    for (next, c) in row_t {
                        row[*next as usize] += c;
                    }
                }
                row
            })
            .collect())
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

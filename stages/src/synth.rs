//! `synth` — a deterministic synthetic interaction log.
//!
//! Params (defaults): `users` (2000), `items` (1000), `min_len` (10),
//! `max_len` (40) interactions per user, `zipf` (1.0) popularity exponent,
//! `follow` (0.6) probability that the next item is one of the current
//! item's `successors` (3) rather than a popularity draw, `second_order`
//! (0.0) probability that it is instead one of the successors of the item
//! *before* the current one, `taste` (0.0) probability that it is instead drawn from the
//! user's own taste — one of `clusters` (20) groups of items, fixed per
//! user, drawn by popularity within the group.
//! Inputs: none. Outputs: `events` (table: `events.parquet` with `user_id`,
//! `item_id`, `timestamp`, all int64).
//!
//! Popularity is Zipf-like, and every item has a few fixed successor items,
//! so a sequence model that learns "what follows what" beats popularity.
//! That alone is first-order structure, which a Markov chain captures as
//! well as any network. `second_order` and `taste` plant what only a
//! sequence model sees: which item follows depends on the item before the
//! last one (two interleaved chains, so the last item says nothing of the
//! next), and on the user's long-range taste, which the whole history
//! reveals and the last item does not. With both at 0 the
//! log is the one from before they existed, byte for byte (and they stay
//! out of the key). The same seed gives the same bytes.

use std::sync::Arc;

use arrow::array::Int64Array;
use rand::distributions::{Distribution, WeightedIndex};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use seqpipe::stage::{KindInfo, ParamDoc, Port, Resource, StageContext, TypedStage};
use serde::{Deserialize, Serialize};

use crate::table;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    pub users: u64,
    pub items: u64,
    pub min_len: u64,
    pub max_len: u64,
    pub zipf: f64,
    pub follow: f64,
    pub successors: u64,
    pub second_order: f64,
    pub taste: f64,
    pub clusters: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            users: 2000,
            items: 1000,
            min_len: 10,
            max_len: 40,
            zipf: 1.0,
            follow: 0.6,
            successors: 3,
            second_order: 0.0,
            taste: 0.0,
            clusters: 20,
        }
    }
}

pub struct Synth;

pub const VERSION: u32 = 1;

impl TypedStage for Synth {
    type Params = Params;

    fn info(&self) -> KindInfo {
        KindInfo {
            kind: "synth",
            version: VERSION,
            summary: "Generates a seeded interaction log with Zipf popularity and planted item-to-item transitions.",
            inputs: vec![],
            extra_inputs: None,
            outputs: vec![Port { optional: false, name: "events", ty: "table", doc: "events.parquet: user_id, item_id, timestamp (int64)" }],
            params: vec![
                ParamDoc { name: "users", doc: "number of users" },
                ParamDoc { name: "items", doc: "catalogue size" },
                ParamDoc { name: "min_len", doc: "fewest interactions per user" },
                ParamDoc { name: "max_len", doc: "most interactions per user" },
                ParamDoc { name: "zipf", doc: "popularity exponent (0 = uniform)" },
                ParamDoc { name: "follow", doc: "probability the next item follows the current one's successors" },
                ParamDoc { name: "successors", doc: "successor items per item" },
                ParamDoc { name: "second_order", doc: "probability the next item is one of the successors of the item before the current one (structure a first-order Markov chain cannot see)" },
                ParamDoc { name: "taste", doc: "probability the next item is drawn from the user's own taste cluster (long-range structure)" },
                ParamDoc { name: "clusters", doc: "taste clusters the items are split into" },
            ],
            resource: Resource::Cpu,
        }
    }

    /// The new structure's params enter the key only when used, so logs
    /// from before they existed keep their keys.
    fn canonical(&self, p: &Params) -> serde_json::Value {
        let mut v = serde_json::to_value(p).unwrap_or_default();
        if let Some(map) = v.as_object_mut() {
            if p.second_order == 0.0 {
                map.remove("second_order");
            }
            if p.taste == 0.0 {
                map.remove("taste");
                map.remove("clusters");
            }
        }
        v
    }

    fn validate(&self, p: &Params) -> Result<(), String> {
        let probability = |name: &str, x: f64| {
            if (0.0..=1.0).contains(&x) {
                Ok(())
            } else {
                Err(format!("{name}: {x} is not a probability in [0, 1]"))
            }
        };
        probability("follow", p.follow)?;
        probability("second_order", p.second_order)?;
        probability("taste", p.taste)?;
        if p.follow + p.second_order + p.taste > 1.0 + 1e-12 {
            return Err(format!(
                "follow + second_order + taste is {}: they are shares of one draw and must sum to at most 1",
                p.follow + p.second_order + p.taste
            ));
        }
        if p.taste > 0.0 && !(1..=p.items).contains(&p.clusters) {
            return Err(format!(
                "clusters: {} is not between 1 and items ({})",
                p.clusters, p.items
            ));
        }
        Ok(())
    }

    fn run(&self, p: Params, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        anyhow::ensure!(p.items >= 2, "params.items must be at least 2");
        anyhow::ensure!(p.users >= 1, "params.users must be at least 1");
        anyhow::ensure!(
            p.min_len >= 1 && p.min_len <= p.max_len,
            "params.min_len must be between 1 and max_len"
        );
        self.validate(&p)
            .map_err(|e| anyhow::anyhow!("params.{e}"))?;
        let (users, items, ts) = generate(&p, ctx.seed);
        let bar = ctx.progress.bar(ctx.stage, "write", 1);
        table::write(
            &ctx.output("events")?.join("events.parquet"),
            &table::batch(vec![
                ("user_id", Arc::new(Int64Array::from(users))),
                ("item_id", Arc::new(Int64Array::from(items))),
                ("timestamp", Arc::new(Int64Array::from(ts))),
            ])?,
        )?;
        bar.finish_and_clear();
        Ok(())
    }
}

/// The log as three columns, users in order, each user's events in time order.
pub fn generate(p: &Params, seed: u64) -> (Vec<i64>, Vec<i64>, Vec<i64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_5eed);
    let weights: Vec<f64> = (1..=p.items)
        .map(|r| 1.0 / (r as f64).powf(p.zipf))
        .collect();
    let popularity = WeightedIndex::new(&weights).expect("positive weights");
    // Item ids are a shuffled range so that id order says nothing about popularity.
    let mut ids: Vec<i64> = (0..p.items as i64).map(|i| 1000 + i * 7).collect();
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.gen_range(0..=i));
    }
    let successors: Vec<Vec<usize>> = (0..p.items)
        .map(|_| {
            (0..p.successors.max(1))
                .map(|_| popularity.sample(&mut rng))
                .collect()
        })
        .collect();
    let structured = p.second_order > 0.0 || p.taste > 0.0;
    // Taste clusters: item rank r is in cluster r % clusters, so every
    // cluster has head and tail items; each is drawn by popularity.
    let clusters = p.clusters.clamp(1, p.items) as usize;
    let taste_clusters = if p.taste > 0.0 { clusters } else { 0 };
    let by_cluster: Vec<WeightedIndex<f64>> = (0..taste_clusters)
        .map(|c| {
            let w: Vec<f64> = (0..p.items as usize)
                .map(|r| if r % clusters == c { weights[r] } else { 0.0 })
                .collect();
            WeightedIndex::new(&w).expect("every cluster holds an item")
        })
        .collect();
    let (mut users, mut items, mut ts) = (Vec::new(), Vec::new(), Vec::new());
    for user in 0..p.users {
        let len = rng.gen_range(p.min_len..=p.max_len);
        let mut t: i64 = 1_700_000_000 + rng.gen_range(0..86_400 * 30);
        let taste = if structured {
            rng.gen_range(0..clusters)
        } else {
            0
        };
        let mut current = popularity.sample(&mut rng);
        let mut previous: Option<usize> = None;
        for _ in 0..len {
            users.push(user as i64 + 1);
            items.push(ids[current]);
            ts.push(t);
            t += rng.gen_range(30..3_600);
            let next = if !structured {
                // the draws of the log from before `second_order` and `taste`
                if rng.gen_bool(p.follow) {
                    let s = &successors[current];
                    s[rng.gen_range(0..s.len())]
                } else {
                    popularity.sample(&mut rng)
                }
            } else {
                let u: f64 = rng.gen();
                match previous {
                    Some(before) if u < p.second_order => {
                        let s = &successors[before];
                        s[rng.gen_range(0..s.len())]
                    }
                    _ if u < p.second_order + p.follow => {
                        let s = &successors[current];
                        s[rng.gen_range(0..s.len())]
                    }
                    _ if u < p.second_order + p.follow + p.taste => {
                        by_cluster[taste].sample(&mut rng)
                    }
                    _ => popularity.sample(&mut rng),
                }
            };
            previous = Some(current);
            current = next;
        }
    }
    (users, items, ts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_log_other_seed_other_log() {
        let p = Params {
            users: 20,
            items: 50,
            ..Params::default()
        };
        assert_eq!(generate(&p, 1), generate(&p, 1));
        assert_ne!(generate(&p, 1).1, generate(&p, 2).1);
    }

    #[test]
    fn structure_off_is_the_old_log_and_second_order_follows_the_item_two_back() {
        // with second_order = taste = 0 the new fields change nothing
        let old = Params {
            users: 30,
            items: 60,
            ..Params::default()
        };
        let with_clusters = Params {
            clusters: 7,
            ..old.clone()
        };
        assert_eq!(generate(&old, 4), generate(&with_clusters, 4));
        // all second order with one successor: after the first two items,
        // each item is fixed by the one two steps back
        let p = Params {
            users: 200,
            items: 40,
            follow: 0.0,
            second_order: 1.0,
            successors: 1,
            ..Params::default()
        };
        let (users, items, _) = generate(&p, 9);
        let mut next: std::collections::HashMap<i64, i64> = Default::default();
        let mut checked = 0;
        for w in 1..items.len().saturating_sub(2) {
            // the second item of a user is a popularity draw
            if users[w - 1] == users[w + 2] {
                let seen = *next.entry(items[w]).or_insert(items[w + 2]);
                assert_eq!(
                    seen,
                    items[w + 2],
                    "the successor two steps on is not fixed"
                );
                checked += 1;
            }
        }
        assert!(checked > 1000);
        // all taste: a user's items come from one cluster of 5
        let p = Params {
            users: 50,
            items: 100,
            follow: 0.0,
            taste: 1.0,
            clusters: 5,
            ..Params::default()
        };
        let (users, items, _) = generate(&p, 2);
        let distinct = |u: i64| {
            let mut v: Vec<i64> = users
                .iter()
                .zip(&items)
                .filter(|(x, _)| **x == u)
                .map(|(_, i)| *i)
                .collect();
            v.sort();
            v.dedup();
            v.len()
        };
        assert!((1..=50).map(distinct).sum::<usize>() < 50 * 25);
    }

    #[test]
    fn shares_above_one_are_refused_and_unused_params_stay_out_of_the_key() {
        let bad = Params {
            follow: 0.6,
            second_order: 0.3,
            taste: 0.2,
            ..Params::default()
        };
        assert!(Synth.validate(&bad).unwrap_err().contains("at most 1"));
        let key = Synth.canonical(&Params::default());
        assert!(key.get("taste").is_none() && key.get("second_order").is_none());
        let used = Synth.canonical(&Params {
            taste: 0.2,
            ..Params::default()
        });
        assert_eq!(used["clusters"], 20);
    }

    #[test]
    fn lengths_respect_bounds() {
        let p = Params {
            users: 30,
            items: 50,
            min_len: 3,
            max_len: 5,
            ..Params::default()
        };
        let (users, _, _) = generate(&p, 7);
        for u in 1..=30 {
            let n = users.iter().filter(|x| **x == u).count();
            assert!((3..=5).contains(&n), "user {u} has {n}");
        }
    }
}

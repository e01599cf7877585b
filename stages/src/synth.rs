//! `synth` — a deterministic synthetic interaction log.
//!
//! Params (defaults): `users` (2000), `items` (1000), `min_len` (10),
//! `max_len` (40) interactions per user, `zipf` (1.0) popularity exponent,
//! `follow` (0.6) probability that the next item is one of the current
//! item's `successors` (3) rather than a popularity draw.
//! Inputs: none. Outputs: `events` (table: `events.parquet` with `user_id`,
//! `item_id`, `timestamp`, all int64).
//!
//! Popularity is Zipf-like, and every item has a few fixed successor items,
//! so a sequence model that learns "what follows what" beats popularity —
//! the structure a quickstart needs to show the models apart. The same seed
//! gives the same bytes.

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
            ],
            resource: Resource::Cpu,
        }
    }

    fn run(&self, p: Params, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        anyhow::ensure!(p.items >= 2, "params.items must be at least 2");
        anyhow::ensure!(p.users >= 1, "params.users must be at least 1");
        anyhow::ensure!(
            p.min_len >= 1 && p.min_len <= p.max_len,
            "params.min_len must be between 1 and max_len"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&p.follow),
            "params.follow must be in [0, 1]"
        );
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
    let (mut users, mut items, mut ts) = (Vec::new(), Vec::new(), Vec::new());
    for user in 0..p.users {
        let len = rng.gen_range(p.min_len..=p.max_len);
        let mut t: i64 = 1_700_000_000 + rng.gen_range(0..86_400 * 30);
        let mut current = popularity.sample(&mut rng);
        for _ in 0..len {
            users.push(user as i64 + 1);
            items.push(ids[current]);
            ts.push(t);
            t += rng.gen_range(30..3_600);
            current = if rng.gen_bool(p.follow) {
                let s = &successors[current];
                s[rng.gen_range(0..s.len())]
            } else {
                popularity.sample(&mut rng)
            };
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

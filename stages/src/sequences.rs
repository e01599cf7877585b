//! `sequences` — per-user chronological sequences with a leave-one-out split.
//!
//! Params (defaults): `min_len` (3) interactions a user needs to be kept
//! (leave-one-out needs three: train, valid, test), `max_len` (50) most
//! recent history items kept in the valid/test examples (0 = all),
//! `user_column` ("user_id"), `item_column` ("item_id"), `time_column`
//! ("timestamp").
//! Inputs: `events` (table: one Parquet file or more in the artifact).
//! Outputs: `data` (sequences: see [`crate::seqdata`] for the files).
//!
//! Events are ordered by (timestamp, original row) per user, so ties keep
//! the log's order. Items are remapped to `1..=n` by ascending original id.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use seqpipe::stage::{KindInfo, ParamDoc, Port, Resource, StageContext, TypedStage};
use serde::{Deserialize, Serialize};

use crate::seqdata::{Example, Meta, SequenceData};
use crate::table;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    pub min_len: usize,
    pub max_len: usize,
    pub user_column: String,
    pub item_column: String,
    pub time_column: String,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            min_len: 3,
            max_len: 50,
            user_column: "user_id".into(),
            item_column: "item_id".into(),
            time_column: "timestamp".into(),
        }
    }
}

pub struct Sequences;

pub const VERSION: u32 = 1;

impl TypedStage for Sequences {
    type Params = Params;

    fn info(&self) -> KindInfo {
        KindInfo {
            kind: "sequences",
            version: VERSION,
            summary: "Builds per-user chronological item sequences and a leave-one-out train/valid/test split.",
            inputs: vec![Port { name: "events", ty: "table", doc: "interactions with user, item and time columns" }],
            extra_inputs: None,
            outputs: vec![Port { name: "data", ty: "sequences", doc: "train/valid/test Parquet files, vocab and meta.json" }],
            params: vec![
                ParamDoc { name: "min_len", doc: "drop users with fewer interactions (at least 3)" },
                ParamDoc { name: "max_len", doc: "keep this many most recent history items in valid/test (0 = all)" },
                ParamDoc { name: "user_column", doc: "user id column (int64)" },
                ParamDoc { name: "item_column", doc: "item id column (int64)" },
                ParamDoc { name: "time_column", doc: "timestamp column (int64)" },
            ],
            resource: Resource::Cpu,
        }
    }

    fn run(&self, p: Params, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        anyhow::ensure!(
            p.min_len >= 3,
            "params.min_len must be at least 3 for a leave-one-out split"
        );
        let events = read_events(ctx.input("events")?, &p)?;
        let data = build(&events, &p)?;
        data.0.write(ctx.output("data")?, &data.1)?;
        Ok(())
    }
}

/// (user, item, time) rows from every Parquet file in the artifact.
fn read_events(dir: &std::path::Path, p: &Params) -> anyhow::Result<Vec<(i64, i64, i64)>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    anyhow::ensure!(
        !files.is_empty(),
        "{}: the input table has no Parquet file",
        dir.display()
    );
    let mut rows = Vec::new();
    for file in files {
        let batch = table::read(&file)?;
        let users = table::int64(&batch, &p.user_column, &file)?;
        let items = table::int64(&batch, &p.item_column, &file)?;
        let times = table::int64(&batch, &p.time_column, &file)?;
        anyhow::ensure!(
            users.null_count() + items.null_count() + times.null_count() == 0,
            "{}: user, item and time columns must have no missing values",
            file.display()
        );
        for i in 0..batch.num_rows() {
            rows.push((users.value(i), items.value(i), times.value(i)));
        }
    }
    anyhow::ensure!(
        !rows.is_empty(),
        "{}: the input table is empty",
        dir.display()
    );
    Ok(rows)
}

use arrow::array::Array;

/// Builds the split; returns it with the vocabulary (index − 1 → item id).
pub fn build(events: &[(i64, i64, i64)], p: &Params) -> anyhow::Result<(SequenceData, Vec<i64>)> {
    let mut per_user: BTreeMap<i64, Vec<(i64, usize, i64)>> = BTreeMap::new();
    for (row, &(user, item, time)) in events.iter().enumerate() {
        per_user.entry(user).or_default().push((time, row, item));
    }
    per_user.retain(|_, seq| seq.len() >= p.min_len);
    anyhow::ensure!(
        !per_user.is_empty(),
        "no user has {} or more interactions",
        p.min_len
    );
    let vocab: Vec<i64> = per_user
        .values()
        .flatten()
        .map(|(_, _, item)| *item)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let index: BTreeMap<i64, i64> = vocab
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, i as i64 + 1))
        .collect();
    let truncate = |h: &[i64]| -> Vec<i64> {
        if p.max_len > 0 && h.len() > p.max_len {
            h[h.len() - p.max_len..].to_vec()
        } else {
            h.to_vec()
        }
    };
    let (mut train, mut valid, mut test) = (Vec::new(), Vec::new(), Vec::new());
    let mut interactions = 0u64;
    for (user, mut seq) in per_user {
        seq.sort();
        let items: Vec<i64> = seq.iter().map(|(_, _, item)| index[item]).collect();
        interactions += items.len() as u64;
        let n = items.len();
        train.push((user, items[..n - 2].to_vec()));
        valid.push(Example {
            user,
            history: truncate(&items[..n - 2]),
            target: items[n - 2],
        });
        test.push(Example {
            user,
            history: truncate(&items[..n - 1]),
            target: items[n - 1],
        });
    }
    let meta = Meta {
        num_items: vocab.len() as i64,
        num_users: train.len() as i64,
        split: "leave_one_out".into(),
        interactions,
    };
    Ok((
        SequenceData {
            meta,
            train,
            valid,
            test,
        },
        vocab,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leave_one_out_in_time_order_with_remapping() {
        // user 1: items 30, 10, 20 at times 3, 1, 2 → chronological 10, 20, 30
        // user 2 has only two events and is dropped.
        let events = [(1, 30, 3), (1, 10, 1), (1, 20, 2), (2, 10, 1), (2, 40, 2)];
        let (data, vocab) = build(&events, &Params::default()).unwrap();
        assert_eq!(vocab, [10, 20, 30]);
        assert_eq!(data.train, [(1, vec![1])]);
        assert_eq!(
            data.valid[0],
            Example {
                user: 1,
                history: vec![1],
                target: 2
            }
        );
        assert_eq!(
            data.test[0],
            Example {
                user: 1,
                history: vec![1, 2],
                target: 3
            }
        );
        assert_eq!(data.meta.num_items, 3);
    }

    #[test]
    fn ties_keep_log_order_and_histories_truncate() {
        let events = [(1, 5, 1), (1, 6, 1), (1, 7, 1), (1, 8, 1)];
        let p = Params {
            max_len: 2,
            ..Params::default()
        };
        let (data, _) = build(&events, &p).unwrap();
        assert_eq!(data.test[0].history, [2, 3]);
        assert_eq!(data.test[0].target, 4);
    }
}

//! `sequences` — per-user chronological sequences with a leave-one-out split.
//!
//! Params (defaults): `min_len` (3) interactions a user needs to be kept
//! (leave-one-out needs three: train, valid, test), `max_len` (50) most
//! recent history items kept in the valid/test examples (0 = all),
//! `user_column` ("user_id"), `item_column` ("item_id"), `time_column`
//! ("timestamp"), `min_user_interactions` (0 = off),
//! `min_item_interactions` (0 = off), `k_core` (false).
//! Inputs: `events` (table: one Parquet file or more in the artifact; user
//! and item ids int64, time int64 or float64 — what `synth` and
//! `load.atomic` write).
//! Outputs: `data` (sequences: see [`crate::seqdata`] for the files).
//!
//! Filtering comes first, on interaction rows (repeats of a user–item pair
//! count each time): a row is dropped when its user has fewer than
//! `min_user_interactions` rows or its item fewer than
//! `min_item_interactions`, both counted on the same input (one pass).
//! With `k_core = true` the pass repeats until nothing changes — dropping
//! a rare item can push a user under the threshold and so on — and
//! `min_len` joins the user threshold, so the result is a true k-core in
//! which every kept user and item meets its threshold. Then users with
//! fewer than `min_len` rows are dropped, items are remapped, and the split
//! is made. meta.json's `filtering` records rows/users/items before and
//! after when a filter is on (and is absent otherwise, so default params
//! give the same bytes as before the filters existed).
//!
//! Events are ordered by (timestamp, original row) per user, so ties keep
//! the log's order. Items are remapped to `1..=n` by ascending original id.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use anyhow::Context;
use seqpipe::stage::{KindInfo, ParamDoc, Port, Resource, StageContext, TypedStage};
use serde::{Deserialize, Serialize};

use crate::seqdata::{Counts, Example, Filtering, Meta, SequenceData};
use crate::table;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    pub min_len: usize,
    pub max_len: usize,
    pub user_column: String,
    pub item_column: String,
    pub time_column: String,
    pub min_user_interactions: usize,
    pub min_item_interactions: usize,
    pub k_core: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            min_len: 3,
            max_len: 50,
            user_column: "user_id".into(),
            item_column: "item_id".into(),
            time_column: "timestamp".into(),
            min_user_interactions: 0,
            min_item_interactions: 0,
            k_core: false,
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
            inputs: vec![Port { optional: false, name: "events", ty: "table", doc: "interactions with user, item and time columns" }],
            extra_inputs: None,
            outputs: vec![Port { optional: false, name: "data", ty: "sequences", doc: "train/valid/test Parquet files, vocab and meta.json" }],
            params: vec![
                ParamDoc { name: "min_len", doc: "drop users with fewer interactions (at least 3)" },
                ParamDoc { name: "max_len", doc: "keep this many most recent history items in valid/test (0 = all)" },
                ParamDoc { name: "user_column", doc: "user id column (int64)" },
                ParamDoc { name: "item_column", doc: "item id column (int64)" },
                ParamDoc { name: "time_column", doc: "timestamp column (int64 or float64)" },
                ParamDoc { name: "min_user_interactions", doc: "drop rows of users with fewer interactions, before the split (0 = off)" },
                ParamDoc { name: "min_item_interactions", doc: "drop rows of items with fewer interactions, before the split (0 = off)" },
                ParamDoc { name: "k_core", doc: "repeat both filters (with min_len) until every user and item meets them" },
            ],
            resource: Resource::Cpu,
        }
    }

    /// The filter params enter the key only when set, so the keys of
    /// pipelines written before they existed stay the same (their outputs
    /// do too).
    fn canonical(&self, p: &Params) -> serde_json::Value {
        let mut value = serde_json::to_value(p).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            if p.min_user_interactions == 0 {
                map.remove("min_user_interactions");
            }
            if p.min_item_interactions == 0 {
                map.remove("min_item_interactions");
            }
            if !p.k_core {
                map.remove("k_core");
            }
        }
        value
    }

    fn validate(&self, p: &Params) -> Result<(), String> {
        if p.min_len < 3 {
            return Err("min_len: must be at least 3 for a leave-one-out split".into());
        }
        if p.k_core && p.min_user_interactions == 0 && p.min_item_interactions == 0 {
            return Err(
                "k_core: needs min_user_interactions or min_item_interactions above 0".into(),
            );
        }
        Ok(())
    }

    fn run(&self, p: Params, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        anyhow::ensure!(
            p.min_len >= 3,
            "params.min_len must be at least 3 for a leave-one-out split"
        );
        let events = read_events(ctx.input("events")?, &p)?;
        let data = build(&events, &p)?;
        if let Some(f) = &data.0.meta.filtering {
            let c = |c: &Counts| format!("{} rows, {} users, {} items", c.rows, c.users, c.items);
            ctx.note(
                "filtering",
                format!("{} → {} in {} rounds", c(&f.before), c(&f.after), f.rounds),
            );
        }
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
        let times = time_keys(&batch, &p.time_column, &file)?;
        anyhow::ensure!(
            users.null_count() + items.null_count() == 0 && times.len() == batch.num_rows(),
            "{}: user, item and time columns must have no missing values",
            file.display()
        );
        for (i, time) in times.into_iter().enumerate() {
            rows.push((users.value(i), items.value(i), time));
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

/// The time column as int64 sort keys: int64 as is, float64 (RecBole's
/// `timestamp:float`) mapped to integers in the same order. Returns fewer
/// keys than rows when a value is missing.
fn time_keys(
    batch: &arrow::array::RecordBatch,
    name: &str,
    file: &std::path::Path,
) -> anyhow::Result<Vec<i64>> {
    if let Some(floats) = batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<arrow::array::Float64Array>())
    {
        anyhow::ensure!(
            floats.null_count() == 0 && !floats.values().iter().any(|v| v.is_nan()),
            "{}: time column `{name}` has missing or NaN values",
            file.display()
        );
        // Time only orders events, so any order-preserving map will do; the
        // same one for every file keeps multi-file tables consistent.
        return Ok(floats
            .values()
            .iter()
            .map(|&v| float_order_key(v))
            .collect());
    }
    let ints = table::int64(batch, name, file)?;
    Ok(ints.iter().flatten().collect())
}

/// An i64 that sorts like the float (the same trick as `f64::total_cmp`).
fn float_order_key(v: f64) -> i64 {
    let bits = v.to_bits() as i64;
    bits ^ (((bits >> 63) as u64) >> 1) as i64
}

/// Builds the split; returns it with the vocabulary (index − 1 → item id).
pub fn build(events: &[(i64, i64, i64)], p: &Params) -> anyhow::Result<(SequenceData, Vec<i64>)> {
    let kept;
    let (events, mut filtering) = if filters_on(p) {
        let filtering;
        (kept, filtering) = apply_filters(events, p)?;
        (kept.as_slice(), Some(filtering))
    } else {
        (events, None)
    };
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
    if let Some(f) = &mut filtering {
        f.after = Counts {
            rows: interactions,
            users: train.len() as u64,
            items: vocab.len() as u64,
        };
    }
    let meta = Meta {
        num_items: vocab.len() as i64,
        num_users: train.len() as i64,
        split: "leave_one_out".into(),
        interactions,
        filtering,
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

/// (user, item, time) — one interaction row.
pub type Event = (i64, i64, i64);

fn filters_on(p: &Params) -> bool {
    p.min_user_interactions > 0 || p.min_item_interactions > 0 || p.k_core
}

/// The kept rows and the record of what the filters did (`after` is filled
/// in once the split is made).
fn apply_filters(
    events: &[(i64, i64, i64)],
    p: &Params,
) -> anyhow::Result<(Vec<Event>, Filtering)> {
    let (kept, rounds) = filter_interactions(events, p);
    anyhow::ensure!(
        !kept.is_empty(),
        "no interactions are left after filtering (min_user_interactions = {}, \
         min_item_interactions = {}, k_core = {})",
        p.min_user_interactions,
        p.min_item_interactions,
        p.k_core
    );
    let filtering = Filtering {
        min_user_interactions: p.min_user_interactions,
        min_item_interactions: p.min_item_interactions,
        k_core: p.k_core,
        rounds,
        before: counts(events),
        after: Counts::default(),
    };
    Ok((kept, filtering))
}

/// Rows, distinct users and distinct items of a log.
pub fn counts(events: &[(i64, i64, i64)]) -> Counts {
    let users: HashSet<i64> = events.iter().map(|e| e.0).collect();
    let items: HashSet<i64> = events.iter().map(|e| e.1).collect();
    Counts {
        rows: events.len() as u64,
        users: users.len() as u64,
        items: items.len() as u64,
    }
}

/// The interaction-count filters (see the module doc), keeping row order.
/// Returns the kept rows and the number of passes that removed any.
pub fn filter_interactions(events: &[(i64, i64, i64)], p: &Params) -> (Vec<(i64, i64, i64)>, u32) {
    // In a k-core, min_len is part of the user threshold: dropping short
    // users after the loop could otherwise push items under theirs again.
    let user_min = if p.k_core {
        p.min_user_interactions.max(p.min_len)
    } else {
        p.min_user_interactions
    };
    let item_min = p.min_item_interactions;
    let mut rows = events.to_vec();
    let mut rounds = 0;
    loop {
        let mut per_user: HashMap<i64, usize> = HashMap::new();
        let mut per_item: HashMap<i64, usize> = HashMap::new();
        for &(user, item, _) in &rows {
            *per_user.entry(user).or_default() += 1;
            *per_item.entry(item).or_default() += 1;
        }
        let before = rows.len();
        rows.retain(|(user, item, _)| per_user[user] >= user_min && per_item[item] >= item_min);
        if rows.len() == before {
            break;
        }
        rounds += 1;
        if !p.k_core {
            break;
        }
    }
    (rows, rounds)
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

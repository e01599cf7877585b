//! The `sequences` artifact: per-user item sequences with a leave-one-out
//! split, as Parquet files Python opens with pyarrow, polars or pandas.
//!
//! | file            | columns                                   | meaning |
//! |-----------------|-------------------------------------------|---------|
//! | `train.parquet` | `user` int64, `items` list<int64>         | all but the last two items, oldest first |
//! | `valid.parquet` | `user`, `history` list<int64>, `target` int64 | predict the second-to-last item |
//! | `test.parquet`  | `user`, `history` list<int64>, `target` int64 | predict the last item |
//! | `vocab.parquet` | `index` int64, `item_id` int64            | remapped index → original item id |
//! | `meta.json`     | `num_items`, `num_users`, `split`, …      | |
//!
//! Items are remapped to `1..=num_items` in order of their original id; `0`
//! is padding and is never a target.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use arrow::array::Int64Array;
use serde::{Deserialize, Serialize};

use crate::table;

/// `meta.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub num_items: i64,
    pub num_users: i64,
    pub split: String,
    pub interactions: u64,
    /// What the interaction-count filters removed; absent when they are off
    /// (so meta.json for default params is unchanged, and older files read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filtering: Option<Filtering>,
    /// How a temporal or ratio split was made; absent for leave-one-out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_detail: Option<crate::splits::SplitDetail>,
}

/// The `sequences` interaction-count filters and their effect.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Filtering {
    pub min_user_interactions: usize,
    pub min_item_interactions: usize,
    pub k_core: bool,
    /// Passes over the data that removed something.
    pub rounds: u32,
    /// The input table.
    pub before: Counts,
    /// What went into the split (after the filters and `min_len`).
    pub after: Counts,
}

/// Size of an interaction log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counts {
    pub rows: u64,
    pub users: u64,
    pub items: u64,
}

/// One evaluation example: the history and the item that came next.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub user: i64,
    pub history: Vec<i64>,
    pub target: i64,
}

/// The whole artifact in memory.
#[derive(Debug, Clone)]
pub struct SequenceData {
    pub meta: Meta,
    pub train: Vec<(i64, Vec<i64>)>,
    pub valid: Vec<Example>,
    pub test: Vec<Example>,
}

/// The splits are ids only (users, item lists, targets): no dictionary
/// (see [`table::Dictionary::StringsOnly`]).
const SPLIT_DICTIONARY: table::Dictionary = table::Dictionary::StringsOnly;

impl SequenceData {
    pub fn write(&self, dir: &Path, vocab: &[i64]) -> anyhow::Result<()> {
        // One after another: written side by side they took no less time
        // on two busy cores and held every split's arrays at once (3.7 →
        // 4.6 GB at 60M events).
        // The three splits are independent files, each encoded and
        // compressed on one core: train on a second thread while valid and
        // test are written here (at 60M events the writes were half of the
        // stage's wall time). Each file's bytes do not depend on it.
        std::thread::scope(|scope| {
            let train = scope.spawn(|| self.write_train(&dir.join("train.parquet")));
            write_examples(&dir.join("valid.parquet"), &self.valid)?;
            write_examples(&dir.join("test.parquet"), &self.test)?;
            train.join().expect("the train.parquet writer panicked")
        })?;
        let index: Vec<i64> = (1..=vocab.len() as i64).collect();
        table::write(
            &dir.join("vocab.parquet"),
            &table::batch(vec![
                ("index", Arc::new(Int64Array::from(index))),
                ("item_id", Arc::new(Int64Array::from(vocab.to_vec()))),
            ])?,
        )?;
        std::fs::write(
            dir.join("meta.json"),
            serde_json::to_vec_pretty(&self.meta)?,
        )?;
        Ok(())
    }

    fn write_train(&self, path: &Path) -> anyhow::Result<()> {
        let users: Vec<i64> = self.train.iter().map(|(u, _)| *u).collect();
        let items = self.train.iter().map(|(_, s)| s.as_slice());
        table::write_with(
            path,
            &table::batch(vec![
                ("user", Arc::new(Int64Array::from(users))),
                ("items", table::lists_array(items)),
            ])?,
            SPLIT_DICTIONARY,
        )
    }

    pub fn read(dir: &Path) -> anyhow::Result<SequenceData> {
        let meta_path = dir.join("meta.json");
        let meta: Meta = serde_json::from_slice(
            &std::fs::read(&meta_path)
                .with_context(|| format!("cannot read {}", meta_path.display()))?,
        )
        .with_context(|| format!("{} is not valid sequence metadata", meta_path.display()))?;
        let path = dir.join("train.parquet");
        let batch = table::read(&path)?;
        let users = table::int64(&batch, "user", &path)?;
        let items = table::int64_lists(&batch, "items", &path)?;
        let train = users.values().iter().copied().zip(items).collect();
        Ok(SequenceData {
            meta,
            train,
            valid: read_examples(&dir.join("valid.parquet"))?,
            test: read_examples(&dir.join("test.parquet"))?,
        })
    }
}

fn write_examples(path: &Path, examples: &[Example]) -> anyhow::Result<()> {
    let users: Vec<i64> = examples.iter().map(|e| e.user).collect();
    let histories = examples.iter().map(|e| e.history.as_slice());
    let targets: Vec<i64> = examples.iter().map(|e| e.target).collect();
    table::write_with(
        path,
        &table::batch(vec![
            ("user", Arc::new(Int64Array::from(users))),
            ("history", table::lists_array(histories)),
            ("target", Arc::new(Int64Array::from(targets))),
        ])?,
        SPLIT_DICTIONARY,
    )
}

fn read_examples(path: &Path) -> anyhow::Result<Vec<Example>> {
    let batch = table::read(path)?;
    let users = table::int64(&batch, "user", path)?;
    let histories = table::int64_lists(&batch, "history", path)?;
    let targets = table::int64(&batch, "target", path)?;
    Ok(histories
        .into_iter()
        .enumerate()
        .map(|(i, history)| Example {
            user: users.value(i),
            history,
            target: targets.value(i),
        })
        .collect())
}

//! `sequences` — per-user (or per-session) chronological sequences and a
//! split: leave-one-out, temporal or ratio.
//!
//! Params (defaults): `min_len` (3) interactions a user needs to be kept
//! (leave-one-out needs three: train, valid, test), `max_len` (50) most
//! recent history items kept in the valid/test examples (0 = all),
//! `user_column` ("user_id"), `item_column` ("item_id"), `time_column`
//! ("timestamp"), `min_user_interactions` (0 = off),
//! `min_item_interactions` (0 = off), `k_core` (false), `split`
//! ("leave_one_out" | "temporal" | "ratio"), `valid_share` (0.1) and
//! `test_share` (0.2) for the temporal and ratio splits, `session_gap` (0 =
//! off: the longest pause inside a session, in the time column's unit —
//! 1800 for 30 minutes of unix seconds), `unit` ("user" | "session": what a
//! sequence is; "session" needs `session_gap`), `targets` ("one" | "all":
//! held-out examples per unit and period in the temporal and ratio splits,
//! see [`crate::splits`]), `attributes` ([]: columns of the events table
//! — e.g. `["event_type", "domain"]` — recorded for each held-out
//! example's target event and the event before it, in
//! `valid_attributes.parquet` / `test_attributes.parquet`, so `evaluate`
//! breaks its metrics down by them; see [`crate::attributes`]).
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
//! the log's order and a log whose times are out of order needs no
//! sorting first. Exact duplicate rows stay separate interactions (a repeat
//! purchase looks the same); `clean`'s `dedup` removes them when they are
//! not. Items are remapped to `1..=n` by ascending original id.
//!
//! Leave-one-out (the default) holds out each unit's last item for test
//! and the one before for validation, and its vocabulary is every item of
//! the kept units. The temporal and ratio splits ([`crate::splits`]) train
//! on the training period only, so their vocabulary is the training items
//! and held-out items never seen in training are removed (and counted in
//! meta.json's `split_detail`, with the cut times). With `unit = "session"`
//! each session is its own sequence and reported under its own id
//! (`user` = the session's 1-based number in (user, start time) order),
//! and histories never cross sessions — the session-based protocol. A
//! float time column works for ordering but not for `session_gap` unless
//! its values are whole numbers.
//! The split params enter the key only when they differ from the
//! defaults, so leave-one-out pipelines keep their keys and bytes.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::Context;
use arrow::array::Array;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use seqpipe::stage::{KindInfo, ParamDoc, Port, Resource, StageContext, TypedStage};
use serde::{Deserialize, Serialize};

use crate::attributes;
use crate::seqdata::{Counts, Example, Filtering, Meta, SequenceData};
use crate::splits::{self, EventRows, SplitDetail, Unit};
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
    pub split: String,
    pub valid_share: f64,
    pub test_share: f64,
    pub session_gap: i64,
    pub unit: String,
    pub targets: String,
    pub attributes: Vec<String>,
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
            split: "leave_one_out".into(),
            valid_share: 0.1,
            test_share: 0.2,
            session_gap: 0,
            unit: "user".into(),
            targets: "one".into(),
            attributes: vec![],
        }
    }
}

pub struct Sequences;

/// 2: ids and times written without Parquet dictionaries
/// (`table::Dictionary::StringsOnly`): same rows, other bytes.
pub const VERSION: u32 = 2;

/// What `split`, `unit` and `targets` may be.
pub const SPLITS: [&str; 3] = ["leave_one_out", "temporal", "ratio"];
pub const UNITS: [&str; 2] = ["user", "session"];
pub const TARGETS: [&str; 2] = ["one", "all"];

impl TypedStage for Sequences {
    type Params = Params;

    fn info(&self) -> KindInfo {
        KindInfo {
            kind: "sequences",
            version: VERSION,
            summary: "Builds per-user or per-session chronological item sequences and a leave-one-out, temporal or ratio train/valid/test split.",
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
                ParamDoc { name: "split", doc: "leave_one_out, temporal (global time cuts) or ratio (per unit)" },
                ParamDoc { name: "valid_share", doc: "share of events validating (temporal, ratio)" },
                ParamDoc { name: "test_share", doc: "share of events testing (temporal, ratio)" },
                ParamDoc { name: "session_gap", doc: "longest pause inside a session, in time-column units (0 = no sessions)" },
                ParamDoc { name: "unit", doc: "user or session: what one sequence is" },
                ParamDoc { name: "targets", doc: "one or all held-out examples per unit and period (temporal, ratio)" },
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
            let defaults = Params::default();
            if p.split == defaults.split {
                // shares and targets mean nothing to leave-one-out
                map.remove("split");
                map.remove("valid_share");
                map.remove("test_share");
                map.remove("targets");
            }
            if p.session_gap == 0 {
                map.remove("session_gap");
            }
            if p.unit == defaults.unit {
                map.remove("unit");
            }
            if p.attributes.is_empty() {
                map.remove("attributes");
            }
        }
        value
    }

    fn validate(&self, p: &Params) -> Result<(), String> {
        if p.min_len < 3 && p.split == "leave_one_out" {
            return Err("min_len: must be at least 3 for a leave-one-out split".into());
        }
        for (key, value, allowed) in [
            ("split", &p.split, &SPLITS[..]),
            ("unit", &p.unit, &UNITS[..]),
            ("targets", &p.targets, &TARGETS[..]),
        ] {
            if !allowed.contains(&value.as_str()) {
                return Err(format!(
                    "{key}: {value:?} is not one of {}",
                    allowed.join(", ")
                ));
            }
        }
        if p.split != "leave_one_out" {
            let share = |x: f64| x > 0.0 && x < 1.0;
            if !share(p.valid_share) || !share(p.test_share) || p.valid_share + p.test_share >= 1.0
            {
                return Err(format!(
                    "valid_share: valid_share ({}) and test_share ({}) must be in (0, 1) and leave a training share",
                    p.valid_share, p.test_share
                ));
            }
        }
        if p.session_gap < 0 {
            return Err("session_gap: must be 0 (off) or positive".into());
        }
        if p.unit == "session" && p.session_gap == 0 {
            return Err("unit: \"session\" needs session_gap above 0 (e.g. 1800 for 30 minutes of unix seconds)".into());
        }
        let mut seen = HashSet::new();
        for a in &p.attributes {
            if a.is_empty() || [&p.user_column, &p.item_column, &p.time_column].contains(&a) {
                return Err(format!(
                    "attributes: `{a}` must name a column other than the user, item and time columns"
                ));
            }
            if !seen.insert(a) {
                return Err(format!("attributes: `{a}` is listed twice"));
            }
        }
        if p.k_core && p.min_user_interactions == 0 && p.min_item_interactions == 0 {
            return Err(
                "k_core: needs min_user_interactions or min_item_interactions above 0".into(),
            );
        }
        Ok(())
    }

    fn run(&self, p: Params, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        self.validate(&p)
            .map_err(|e| anyhow::anyhow!("params.{e}"))?;
        let events = read_events(ctx.input("events")?, &p)?;
        let (data, trace) = build_traced(&events, &p)?;
        let rows = events.len();
        drop(events);
        if let Some(f) = &data.0.meta.filtering {
            let c = |c: &Counts| format!("{} rows, {} users, {} items", c.rows, c.users, c.items);
            ctx.note(
                "filtering",
                format!("{} → {} in {} rounds", c(&f.before), c(&f.after), f.rounds),
            );
        }
        data.0.write(ctx.output("data")?, &data.1)?;
        if !p.attributes.is_empty() {
            let columns = attributes::read(ctx.input("events")?, &p.attributes, rows)?;
            let out = ctx.output("data")?;
            for (split, rows) in [("valid", &trace.valid), ("test", &trace.test)] {
                let path = out.join(format!("{split}_attributes.parquet"));
                attributes::write(&path, &columns, rows)?;
            }
        }
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
        read_file(&file, p, &mut rows)?;
    }
    anyhow::ensure!(
        !rows.is_empty(),
        "{}: the input table is empty",
        dir.display()
    );
    Ok(rows)
}

/// Appends a file's (user, item, time) rows to `rows`, reading only those
/// three columns.
fn read_file(
    file: &std::path::Path,
    p: &Params,
    rows: &mut Vec<(i64, i64, i64)>,
) -> anyhow::Result<()> {
    let reader =
        std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(reader)
        .with_context(|| format!("{} is not a readable Parquet file", file.display()))?;
    let schema = builder.schema().clone();
    // The columns' presence and types, checked even when the file has no
    // row (the errors name the file and suggest a column).
    let empty = arrow::array::RecordBatch::new_empty(schema.clone());
    table::int64(&empty, &p.user_column, file)?;
    table::int64(&empty, &p.item_column, file)?;
    TimeColumn::default().extend(&empty, &p.time_column, file)?;
    let roots = [&p.user_column, &p.item_column, &p.time_column]
        .iter()
        .map(|name| schema.index_of(name))
        .collect::<Result<Vec<usize>, _>>()?;
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let total = builder.metadata().file_metadata().num_rows().max(0) as usize;
    rows.reserve(total);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(64 * 1024)
        .build()?;
    // Float times are mapped file by file (see `TimeColumn::keys`): they
    // wait for the whole file; int64 rows go straight in.
    let (mut users, mut items) = (Vec::new(), Vec::new());
    let mut times = TimeColumn::default();
    let mut missing = 0;
    // Decoding runs a few batches ahead on another thread.
    for batch in table::prefetched(reader.map(|b| b.map_err(anyhow::Error::from))) {
        let batch = batch.with_context(|| format!("cannot read {}", file.display()))?;
        let u = table::int64(&batch, &p.user_column, file)?;
        let i = table::int64(&batch, &p.item_column, file)?;
        missing += u.null_count() + i.null_count();
        let direct = batch
            .column_by_name(&p.time_column)
            .and_then(|c| c.as_any().downcast_ref::<arrow::array::Int64Array>())
            .filter(|t| t.null_count() == 0 && times.floats.is_none());
        match direct {
            Some(t) => rows.extend(
                u.values()
                    .iter()
                    .zip(i.values().iter())
                    .zip(t.values().iter())
                    .map(|((&user, &item), &time)| (user, item, time)),
            ),
            None => {
                users.extend_from_slice(u.values());
                items.extend_from_slice(i.values());
                times.extend(&batch, &p.time_column, file)?;
            }
        }
    }
    let (times, exact) = times.keys();
    anyhow::ensure!(
        exact || p.session_gap == 0,
        "{}: session_gap needs times that are whole numbers, but `{}` holds fractions",
        file.display(),
        p.time_column
    );
    anyhow::ensure!(
        missing == 0 && times.len() == users.len(),
        "{}: user, item and time columns must have no missing values",
        file.display()
    );
    rows.extend(
        users
            .into_iter()
            .zip(items)
            .zip(times)
            .map(|((user, item), time)| (user, item, time)),
    );
    Ok(())
}

/// A file's time column as read: int64 (without its missing values) or
/// float64.
#[derive(Default)]
struct TimeColumn {
    ints: Vec<i64>,
    floats: Option<Vec<f64>>,
}

impl TimeColumn {
    fn extend(
        &mut self,
        batch: &arrow::array::RecordBatch,
        name: &str,
        file: &std::path::Path,
    ) -> anyhow::Result<()> {
        if let Some(floats) = batch
            .column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<arrow::array::Float64Array>())
        {
            anyhow::ensure!(
                floats.null_count() == 0 && !floats.values().iter().any(|v| v.is_nan()),
                "{}: time column `{name}` has missing or NaN values",
                file.display()
            );
            self.floats
                .get_or_insert_with(Vec::new)
                .extend_from_slice(floats.values());
            return Ok(());
        }
        let ints = table::int64(batch, name, file)?;
        if ints.null_count() == 0 {
            self.ints.extend_from_slice(ints.values());
        } else {
            self.ints.extend(ints.iter().flatten());
        }
        Ok(())
    }

    /// The time column as int64 keys: int64 as is, float64 (RecBole's
    /// `timestamp:float`) cast when every value of the file is a whole
    /// number (so time differences, e.g. for sessions, keep their meaning),
    /// else mapped to integers in the same order. The flag says whether the
    /// keys are times (true) or only an order. Returns fewer keys than rows
    /// when a value is missing.
    fn keys(self) -> (Vec<i64>, bool) {
        let Some(floats) = self.floats else {
            return (self.ints, true);
        };
        let whole = |v: f64| v.fract() == 0.0 && v.abs() < 9.0e15;
        if floats.iter().all(|&v| whole(v)) {
            return (floats.iter().map(|&v| v as i64).collect(), true);
        }
        // Time only orders events here, so any order-preserving map will
        // do; the same one for every file keeps multi-file tables consistent.
        (floats.iter().map(|&v| float_order_key(v)).collect(), false)
    }
}

/// An i64 that sorts like the float (the same trick as `f64::total_cmp`).
fn float_order_key(v: f64) -> i64 {
    let bits = v.to_bits() as i64;
    bits ^ (((bits >> 63) as u64) >> 1) as i64
}

/// Builds the split; returns it with the vocabulary (index − 1 → item id).
pub fn build(events: &[(i64, i64, i64)], p: &Params) -> anyhow::Result<(SequenceData, Vec<i64>)> {
    Ok(build_traced(events, p)?.0)
}

/// Where each held-out example came from: per valid and test example, the
/// rows of `events` holding its target and the event before it.
#[derive(Debug, Default, PartialEq)]
pub struct Trace {
    pub valid: Vec<EventRows>,
    pub test: Vec<EventRows>,
}

/// [`build`], and the [`Trace`] of the held-out examples.
pub fn build_traced(
    events: &[(i64, i64, i64)],
    p: &Params,
) -> anyhow::Result<((SequenceData, Vec<i64>), Trace)> {
    let kept;
    let (events, mut filtering, original) = if filters_on(p) {
        let (filtering, rows);
        (kept, filtering, rows) = apply_filters(events, p)?;
        (kept.as_slice(), Some(filtering), Some(rows))
    } else {
        (events, None, None)
    };
    let timelines = Timelines::by_user(events)?;
    let (mut data, vocab, mut trace) = match (p.split.as_str(), p.unit.as_str()) {
        ("leave_one_out", "user") => leave_one_out(timelines, p)?,
        ("leave_one_out", _) => leave_one_out(Timelines::from_units(timelines.units(p))?, p)?,
        _ => held_out(&timelines.units(p), p)?,
    };
    // Rows of the filtered log → rows of the input.
    if let Some(original) = original {
        for (target, previous) in trace.valid.iter_mut().chain(trace.test.iter_mut()) {
            (*target, *previous) = (original[*target], original[*previous]);
        }
    }
    if let Some(f) = &mut filtering {
        f.after = Counts {
            rows: data.meta.interactions,
            users: data.train.len() as u64,
            items: vocab.len() as u64,
        };
    }
    data.meta.filtering = filtering;
    Ok(((data, vocab), trace))
}

/// One event of a timeline: its time, its item (a slot of
/// [`Timelines::item_ids`]) and its row in the log.
#[derive(Clone, Copy, Default)]
struct TimedEvent {
    time: i64,
    item: u32,
    row: u32,
}

/// Timelines one after another in flat arrays: unit `u` (reported as
/// `ids[u]`) is `events[starts[u]..starts[u + 1]]`, in (time, log row)
/// order. Items are dense slots, so remapping them is an array lookup.
struct Timelines {
    ids: Vec<i64>,
    starts: Vec<usize>,
    events: Vec<TimedEvent>,
    /// Slot → raw item id.
    item_ids: Vec<i64>,
}

/// Dense slots for i64 ids, in order of first sight.
#[derive(Default)]
struct Slots {
    of: HashMap<i64, u32, foldhash::fast::FixedState>,
    ids: Vec<i64>,
}

impl Slots {
    fn slot(&mut self, id: i64) -> u32 {
        let next = self.ids.len() as u32;
        let slot = *self.of.entry(id).or_insert(next);
        if slot == next {
            self.ids.push(id);
        }
        slot
    }
}

impl Timelines {
    /// Each user's events in (time, log row) order, users by ascending id:
    /// users get dense slots, rows are scattered into their user's range
    /// (staying in log order), and each range is sorted by time, stably.
    fn by_user(events: &[Event]) -> anyhow::Result<Timelines> {
        anyhow::ensure!(
            u32::try_from(events.len()).is_ok(),
            "sequences: more than 4 billion interactions"
        );
        // Users and items get their slots on two threads (two passes over
        // the log, each with its own table); the result does not depend on
        // the threads.
        let ((users, counts, user_slots), (items, item_slots)) = std::thread::scope(|scope| {
            let items = scope.spawn(|| {
                let mut items = Slots::default();
                let slots: Vec<u32> = events.iter().map(|e| items.slot(e.1)).collect();
                (items, slots)
            });
            let mut users = Slots::default();
            let mut counts: Vec<usize> = Vec::new();
            let slots: Vec<u32> = events
                .iter()
                .map(|e| {
                    let u = users.slot(e.0);
                    if u as usize == counts.len() {
                        counts.push(0);
                    }
                    counts[u as usize] += 1;
                    u
                })
                .collect();
            let items = items.join().expect("the item slot thread panicked");
            ((users, counts, slots), items)
        });
        drop(users.of);
        let mut order: Vec<u32> = (0..users.ids.len() as u32).collect();
        order.sort_unstable_by_key(|&u| users.ids[u as usize]);
        let mut next = vec![0usize; users.ids.len()];
        let mut starts = Vec::with_capacity(order.len() + 1);
        let mut end = 0;
        for &u in &order {
            starts.push(end);
            next[u as usize] = end;
            end += counts[u as usize];
        }
        starts.push(end);
        let mut grouped = vec![TimedEvent::default(); events.len()];
        for (row, (&(_, _, time), (&u, &item))) in events
            .iter()
            .zip(user_slots.iter().zip(&item_slots))
            .enumerate()
        {
            let at = &mut next[u as usize];
            grouped[*at] = TimedEvent {
                time,
                item,
                row: row as u32,
            };
            *at += 1;
        }
        drop((user_slots, item_slots));
        sort_timelines(&mut grouped, &starts);
        Ok(Timelines {
            ids: order.iter().map(|&u| users.ids[u as usize]).collect(),
            starts,
            events: grouped,
            item_ids: items.ids,
        })
    }

    /// Timelines of the given units (e.g. sessions), in their order.
    fn from_units(units: Vec<Unit>) -> anyhow::Result<Timelines> {
        let mut items = Slots::default();
        let mut t = Timelines {
            ids: Vec::with_capacity(units.len()),
            starts: vec![0],
            events: Vec::new(),
            item_ids: Vec::new(),
        };
        for unit in units {
            t.ids.push(unit.id);
            for (&(time, item), &row) in unit.events.iter().zip(&unit.rows) {
                t.events.push(TimedEvent {
                    time,
                    item: items.slot(item),
                    row: u32::try_from(row)?,
                });
            }
            t.starts.push(t.events.len());
        }
        t.item_ids = items.ids;
        Ok(t)
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn unit(&self, u: usize) -> &[TimedEvent] {
        &self.events[self.starts[u]..self.starts[u + 1]]
    }

    /// The timelines a sequence is made from: each user's, or those cut
    /// into sessions by `session_gap` when `unit` is "session" (numbered
    /// from 1 in (user, start) order).
    fn units(&self, p: &Params) -> Vec<Unit> {
        let mut units = Vec::with_capacity(self.len());
        for u in 0..self.len() {
            let seq = self.unit(u);
            let timeline: Vec<(i64, i64)> = seq
                .iter()
                .map(|e| (e.time, self.item_ids[e.item as usize]))
                .collect();
            let rows: Vec<usize> = seq.iter().map(|e| e.row as usize).collect();
            if p.unit == "session" {
                // Sessions are consecutive runs of the timeline.
                let mut start = 0;
                for session in splits::sessions(&timeline, p.session_gap) {
                    let end = start + session.len();
                    units.push(Unit {
                        id: units.len() as i64 + 1,
                        events: session,
                        rows: rows[start..end].to_vec(),
                    });
                    start = end;
                }
            } else {
                units.push(Unit {
                    id: self.ids[u],
                    events: timeline,
                    rows,
                });
            }
        }
        units
    }
}

/// Sorts each range `starts[u]..starts[u + 1]` of `events` by time,
/// stably (ties keep the log's order, which the ranges are in). The two
/// halves of the users go to two threads; a sort's result does not depend
/// on which thread does it.
fn sort_timelines(events: &mut [TimedEvent], starts: &[usize]) {
    let sort = |events: &mut [TimedEvent], starts: &[usize], base: usize| {
        for range in starts.windows(2) {
            events[range[0] - base..range[1] - base].sort_by_key(|e| e.time);
        }
    };
    let middle = starts.len() / 2;
    let (first, second) = events.split_at_mut(starts[middle]);
    std::thread::scope(|scope| {
        scope.spawn(|| sort(first, &starts[..=middle], 0));
        sort(second, &starts[middle..], starts[middle]);
    });
}

/// Leave-one-out: each unit's last item tests, the one before validates.
fn leave_one_out(t: Timelines, p: &Params) -> anyhow::Result<(SequenceData, Vec<i64>, Trace)> {
    let kept: Vec<usize> = (0..t.len())
        .filter(|&u| t.unit(u).len() >= p.min_len)
        .collect();
    anyhow::ensure!(
        !kept.is_empty(),
        "no {} has {} or more interactions",
        p.unit,
        p.min_len
    );
    // The vocabulary: the kept units' items by ascending id.
    let mut used = vec![false; t.item_ids.len()];
    for &u in &kept {
        for e in t.unit(u) {
            used[e.item as usize] = true;
        }
    }
    let mut vocab_slots: Vec<u32> = (0..used.len() as u32)
        .filter(|&s| used[s as usize])
        .collect();
    vocab_slots.sort_unstable_by_key(|&s| t.item_ids[s as usize]);
    let mut index = vec![0i64; t.item_ids.len()];
    for (i, &s) in vocab_slots.iter().enumerate() {
        index[s as usize] = i as i64 + 1;
    }
    let vocab: Vec<i64> = vocab_slots
        .iter()
        .map(|&s| t.item_ids[s as usize])
        .collect();
    let (mut train, mut valid, mut test) = (
        Vec::with_capacity(kept.len()),
        Vec::with_capacity(kept.len()),
        Vec::with_capacity(kept.len()),
    );
    let mut interactions = 0u64;
    let mut trace = Trace {
        valid: Vec::with_capacity(kept.len()),
        test: Vec::with_capacity(kept.len()),
    };
    for u in kept {
        let events = t.unit(u);
        let items: Vec<i64> = events.iter().map(|e| index[e.item as usize]).collect();
        let rows = |i: usize| events[i].row as usize;
        interactions += items.len() as u64;
        let n = items.len();
        trace.valid.push((rows(n - 2), rows(n - 3)));
        trace.test.push((rows(n - 1), rows(n - 2)));
        let id = t.ids[u];
        valid.push(Example {
            user: id,
            history: truncate(&items[..n - 2], p.max_len),
            target: items[n - 2],
        });
        test.push(Example {
            user: id,
            history: truncate(&items[..n - 1], p.max_len),
            target: items[n - 1],
        });
        let mut items = items;
        items.truncate(n - 2);
        train.push((id, items));
    }
    let meta = Meta {
        num_items: vocab.len() as i64,
        num_users: train.len() as i64,
        split: "leave_one_out".into(),
        interactions,
        filtering: None,
        split_detail: None,
    };
    let data = SequenceData {
        meta,
        train,
        valid,
        test,
    };
    Ok((data, vocab, trace))
}

/// The temporal and ratio splits (see [`crate::splits`]).
fn held_out(units: &[Unit], p: &Params) -> anyhow::Result<(SequenceData, Vec<i64>, Trace)> {
    let all = p.targets == "all";
    let raw = if p.split == "temporal" {
        splits::temporal(units, p.valid_share, p.test_share, p.unit == "session", all)
    } else {
        splits::ratio(units, p.valid_share, p.test_share, all)
    };
    let vocab = splits::training_vocabulary(&raw);
    anyhow::ensure!(
        !vocab.is_empty(),
        "the {} split left no {} with two or more training events",
        p.split,
        p.unit
    );
    let index = index_of(&vocab);
    let mut detail = SplitDetail {
        unit: p.unit.clone(),
        units: units.len() as u64,
        dropped_units: raw.dropped_units,
        targets: p.targets.clone(),
        valid_from: raw.cuts.map(|c| c.0),
        test_from: raw.cuts.map(|c| c.1),
        ..SplitDetail::default()
    };
    let mut examples = |held: &[splits::RawExample], rows: &[EventRows]| {
        held.iter()
            .zip(rows)
            .filter_map(|(e, rows)| {
                let (history, target) = splits::remap_example(e, &index, &mut detail)?;
                let example = Example {
                    user: e.unit,
                    history: truncate(&history, p.max_len),
                    target,
                };
                Some((example, *rows))
            })
            .unzip::<_, _, Vec<Example>, Vec<EventRows>>()
    };
    let ((valid, valid_rows), (test, test_rows)) = (
        examples(&raw.valid, &raw.valid_rows),
        examples(&raw.test, &raw.test_rows),
    );
    let train: Vec<(i64, Vec<i64>)> = raw
        .train
        .iter()
        .map(|(id, items)| (*id, items.iter().map(|i| index[i]).collect()))
        .collect();
    anyhow::ensure!(
        !test.is_empty(),
        "the {} split left no test example (test_share = {}); are the held-out items all unseen in training?",
        p.split,
        p.test_share
    );
    let interactions =
        train.iter().map(|(_, s)| s.len() as u64).sum::<u64>() + (valid.len() + test.len()) as u64;
    let meta = Meta {
        num_items: vocab.len() as i64,
        num_users: train.len() as i64,
        split: p.split.clone(),
        interactions,
        filtering: None,
        split_detail: Some(detail),
    };
    let data = SequenceData {
        meta,
        train,
        valid,
        test,
    };
    let trace = Trace {
        valid: valid_rows,
        test: test_rows,
    };
    Ok((data, vocab, trace))
}

/// Raw item id → 1-based index, in vocabulary order.
fn index_of(vocab: &[i64]) -> BTreeMap<i64, i64> {
    vocab
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, i as i64 + 1))
        .collect()
}

/// The last `max_len` items (all when `max_len` is 0).
fn truncate(h: &[i64], max_len: usize) -> Vec<i64> {
    if max_len > 0 && h.len() > max_len {
        h[h.len() - max_len..].to_vec()
    } else {
        h.to_vec()
    }
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
) -> anyhow::Result<(Vec<Event>, Filtering, Vec<usize>)> {
    let (rows, rounds) = filter_rows(events, p);
    let kept: Vec<Event> = rows.iter().map(|&r| events[r]).collect();
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
    Ok((kept, filtering, rows))
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
    let (rows, rounds) = filter_rows(events, p);
    (rows.iter().map(|&r| events[r]).collect(), rounds)
}

/// [`filter_interactions`] as the indices of the kept rows.
fn filter_rows(events: &[(i64, i64, i64)], p: &Params) -> (Vec<usize>, u32) {
    // In a k-core, min_len is part of the user threshold: dropping short
    // users after the loop could otherwise push items under theirs again.
    let user_min = if p.k_core {
        p.min_user_interactions.max(p.min_len)
    } else {
        p.min_user_interactions
    };
    let item_min = p.min_item_interactions;
    let mut rows: Vec<usize> = (0..events.len()).collect();
    let mut rounds = 0;
    loop {
        let mut per_user: HashMap<i64, usize> = HashMap::new();
        let mut per_item: HashMap<i64, usize> = HashMap::new();
        for &r in &rows {
            let (user, item, _) = events[r];
            *per_user.entry(user).or_default() += 1;
            *per_item.entry(item).or_default() += 1;
        }
        let before = rows.len();
        rows.retain(|&r| {
            let (user, item, _) = events[r];
            per_user[&user] >= user_min && per_item[&item] >= item_min
        });
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

    /// Documented behaviour for logs that are not clean: timestamps out of
    /// order are sorted per user (the log's order only breaks ties), and
    /// exact duplicate rows are separate interactions (a repeat purchase
    /// looks the same) — `clean`'s `dedup` removes them when they are not.
    #[test]
    fn unordered_times_are_sorted_and_duplicate_rows_are_kept() {
        let ordered = [(1, 10, 1), (1, 20, 2), (1, 30, 3), (1, 40, 4)];
        let shuffled = [(1, 30, 3), (1, 10, 1), (1, 40, 4), (1, 20, 2)];
        let p = Params::default();
        let (a, _) = build(&ordered, &p).unwrap();
        let (b, _) = build(&shuffled, &p).unwrap();
        assert_eq!((a.train, a.valid, a.test), (b.train, b.valid, b.test));
        let duplicated = [(1, 10, 1), (1, 20, 2), (1, 20, 2), (1, 30, 3)];
        let (d, _) = build(&duplicated, &p).unwrap();
        assert_eq!(d.meta.interactions, 4);
        assert_eq!(d.train[0].1, [1, 2]); // 10, 20 | valid 20 | test 30
        assert_eq!((d.valid[0].target, d.test[0].target), (2, 3));
    }

    #[test]
    fn leave_one_out_keys_do_not_see_the_split_params() {
        let keys = |p: &Params| -> Vec<String> {
            let v = Sequences.canonical(p);
            v.as_object().unwrap().keys().cloned().collect()
        };
        let before_splits = [
            "item_column",
            "max_len",
            "min_len",
            "time_column",
            "user_column",
        ];
        assert_eq!(keys(&Params::default()), before_splits);
        let temporal = Params {
            split: "temporal".into(),
            ..Params::default()
        };
        let k = keys(&temporal);
        for key in ["split", "valid_share", "test_share", "targets"] {
            assert!(k.contains(&key.to_string()), "{key} in {k:?}");
        }
        let sessions = Params {
            session_gap: 1800,
            unit: "session".into(),
            ..Params::default()
        };
        let k = keys(&sessions);
        assert!(k.contains(&"session_gap".into()) && k.contains(&"unit".into()));
    }

    #[test]
    fn session_units_with_leave_one_out_and_bad_params() {
        // user 1: two sessions (gap 100 > 50) of 3 and 2 events; user 2: one of 3
        let events = [
            (1, 10, 0),
            (1, 11, 10),
            (1, 12, 20),
            (1, 13, 120),
            (1, 14, 130),
            (2, 10, 5),
            (2, 12, 6),
            (2, 11, 7),
        ];
        let p = Params {
            session_gap: 50,
            unit: "session".into(),
            ..Params::default()
        };
        let (data, vocab) = build(&events, &p).unwrap();
        // sessions 1 (user 1, first), 3 (user 2); session 2 is too short
        assert_eq!(data.test.iter().map(|e| e.user).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(
            vocab,
            [10, 11, 12],
            "items of dropped sessions are not in it"
        );
        assert!(Sequences
            .validate(&Params {
                unit: "session".into(),
                ..Params::default()
            })
            .is_err());
        let err = Sequences
            .validate(&Params {
                split: "random".into(),
                ..Params::default()
            })
            .unwrap_err();
        assert!(err.starts_with("split:"), "{err}");
        let err = Sequences
            .validate(&Params {
                split: "ratio".into(),
                valid_share: 0.5,
                test_share: 0.5,
                ..Params::default()
            })
            .unwrap_err();
        assert!(err.starts_with("valid_share:"), "{err}");
    }

    /// Train sequences, test examples, vocabulary, trace.
    type Reference = (Vec<(i64, Vec<i64>)>, Vec<Example>, Vec<i64>, Trace);

    /// The grouping as it was first written: a map of users to their
    /// (time, row, item) events, sorted; items by ascending id.
    fn reference(events: &[Event], p: &Params) -> Reference {
        let mut per_user: BTreeMap<i64, Vec<(i64, usize, i64)>> = BTreeMap::new();
        for (row, &(user, item, time)) in events.iter().enumerate() {
            per_user.entry(user).or_default().push((time, row, item));
        }
        per_user.retain(|_, seq| seq.len() >= p.min_len);
        let vocab: Vec<i64> = per_user
            .values()
            .flat_map(|seq| seq.iter().map(|e| e.2))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let index = index_of(&vocab);
        let (mut train, mut test, mut trace) = (Vec::new(), Vec::new(), Trace::default());
        for (user, mut seq) in per_user {
            seq.sort();
            let items: Vec<i64> = seq.iter().map(|e| index[&e.2]).collect();
            let n = items.len();
            trace.valid.push((seq[n - 2].1, seq[n - 3].1));
            trace.test.push((seq[n - 1].1, seq[n - 2].1));
            train.push((user, items[..n - 2].to_vec()));
            test.push(Example {
                user,
                history: truncate(&items[..n - 1], p.max_len),
                target: items[n - 1],
            });
        }
        (train, test, vocab, trace)
    }

    #[test]
    fn flat_timelines_match_the_per_user_map() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        // Users and items with sparse, negative and huge ids; few distinct
        // times, so many ties that only the row order breaks.
        let events: Vec<Event> = (0..20_000)
            .map(|_| {
                let user =
                    [-5, 0, 7, i64::MAX, 1 << 40][rng.gen_range(0..5)] + rng.gen_range(0..300);
                let item = rng.gen_range(-50..400) * 1_000_003;
                (user, item, rng.gen_range(0..20))
            })
            .collect();
        let p = Params {
            min_len: 40,
            max_len: 7,
            ..Params::default()
        };
        let ((data, vocab), trace) = build_traced(&events, &p).unwrap();
        let (train, test, ref_vocab, ref_trace) = reference(&events, &p);
        assert!(
            train.len() > 100 && train.len() < 1500,
            "some users are dropped: {}",
            train.len()
        );
        assert_eq!(vocab, ref_vocab);
        assert_eq!(data.train, train);
        assert_eq!(data.test, test);
        assert_eq!(trace, ref_trace);
    }

    #[test]
    fn float_times_are_mapped_per_file_not_per_batch() {
        // 70 000 rows: the first 64 Ki (one batch) whole numbers, a later
        // one a fraction — the whole file is then ordered, not cast.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.parquet");
        let n = 70_000;
        let mut times: Vec<f64> = (0..n).map(|i| i as f64).collect();
        times[n - 1] = 0.5;
        let batch = table::batch(vec![
            (
                "user_id",
                std::sync::Arc::new(arrow::array::Int64Array::from(vec![1i64; n])),
            ),
            (
                "item_id",
                std::sync::Arc::new(arrow::array::Int64Array::from(
                    (0..n as i64).collect::<Vec<_>>(),
                )),
            ),
            (
                "timestamp",
                std::sync::Arc::new(arrow::array::Float64Array::from(times.clone())),
            ),
        ])
        .unwrap();
        table::write(&path, &batch).unwrap();
        let mut rows = Vec::new();
        read_file(&path, &Params::default(), &mut rows).unwrap();
        assert_eq!(rows.len(), n);
        assert_eq!(rows[3], (1, 3, float_order_key(3.0)));
        assert_eq!(rows[n - 1].2, float_order_key(0.5));
        // session_gap needs whole numbers.
        let p = Params {
            session_gap: 10,
            ..Params::default()
        };
        let err = read_file(&path, &p, &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds fractions"), "{err}");
        // All whole: cast, in time units.
        times[n - 1] = 5.0;
        let whole = table::batch(vec![
            ("user_id", batch.column(0).clone()),
            ("item_id", batch.column(1).clone()),
            (
                "timestamp",
                std::sync::Arc::new(arrow::array::Float64Array::from(times)),
            ),
        ])
        .unwrap();
        table::write(&path, &whole).unwrap();
        let mut rows = Vec::new();
        read_file(&path, &p, &mut rows).unwrap();
        assert_eq!((rows[3].2, rows[n - 1].2), (3, 5));
    }
}

//! `clean` — fill, cast, drop incomplete rows and duplicates, with a
//! validation report.
//!
//! Params (defaults): `cast` ({}) column → type name, one of `int32`,
//! `int64`, `float32`, `float64`, `utf8`, `boolean`, `date32`,
//! `timestamp_s`, `timestamp_ms`, `timestamp_us`, `timestamp_ns`
//! (a value that does not convert becomes null and is counted); `fill` ({})
//! column → value put in place of nulls (`{ category = -1, region =
//! "unknown" }`; the value must convert exactly to the column's type);
//! `required` ([]) columns that must not be null: rows with a null in any
//! of them are dropped; `dedup` ([] = off) key columns: rows whose key was
//! already seen are dropped; `keep` ("first") which of a key's rows to
//! keep, "first" or "last" in file order.
//! Inputs: `table` (table: every `*.parquet` in the folder, sorted by name,
//! one schema).
//! Outputs: `table` (table: `events.parquet` + `validation.json` +
//! `summary.txt`).
//!
//! The steps run in this order on each row: cast, fill, required, dedup —
//! so a fill can repair a value that failed its cast, and a row dropped as
//! incomplete never counts as a key's first occurrence. Nulls in key
//! columns compare equal. Rows keep their order; the output schema is the
//! input's with cast columns retyped.
//!
//! `validation.json` records rows in and out, retention %, nulls per column
//! before (as read) and after (as written), cast failures and fills per
//! column, rows dropped for a missing required value (in total and per
//! column: a row missing two counts once in the total) and duplicates
//! removed. Keys are sorted, so the same input gives the same bytes.
//!
//! The input is streamed batch by batch; memory holds the dedup keys seen
//! (with `keep = "last"` the input is read twice: once to find each key's
//! last row). Param shapes (`keep`, type names) are checked at plan time;
//! column names against the data when the stage runs, with a did-you-mean
//! naming the input file.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBufferBuilder, Float64Array, Int64Array,
    RecordBatch, Scalar, StringArray,
};
use arrow::buffer::BooleanBuffer;
use arrow::compute::kernels::zip::zip;
use arrow::compute::{and, cast_with_options, filter_record_batch, is_not_null, CastOptions};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::row::{RowConverter, SortField};
use seqpipe::stage::{KindInfo, ParamDoc, Port, Resource, StageContext, TypedStage};
use serde::{Deserialize, Serialize};
use std::hash::BuildHasher;

use crate::table;

mod keys;

use keys::{KeyEncoder, KeySet};

/// A fill value as written in TOML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FillValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl std::fmt::Display for FillValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FillValue::Bool(b) => write!(f, "{b}"),
            FillValue::Int(i) => write!(f, "{i}"),
            FillValue::Float(x) => write!(f, "{x}"),
            FillValue::Str(s) => write!(f, "{s:?}"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    pub cast: BTreeMap<String, String>,
    pub fill: BTreeMap<String, FillValue>,
    pub required: Vec<String>,
    pub dedup: Vec<String>,
    pub keep: String,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            cast: BTreeMap::new(),
            fill: BTreeMap::new(),
            required: Vec::new(),
            dedup: Vec::new(),
            keep: "first".into(),
        }
    }
}

pub struct Clean;

/// 2: ids and times written without Parquet dictionaries
/// (`table::Dictionary::StringsOnly`): same rows, other bytes.
pub const VERSION: u32 = 2;

/// The type names `cast` accepts.
pub const TYPE_NAMES: [&str; 11] = [
    "int32",
    "int64",
    "float32",
    "float64",
    "utf8",
    "boolean",
    "date32",
    "timestamp_s",
    "timestamp_ms",
    "timestamp_us",
    "timestamp_ns",
];

/// The Arrow type of a `cast` type name.
pub fn type_of(name: &str) -> Option<DataType> {
    Some(match name {
        "int32" => DataType::Int32,
        "int64" => DataType::Int64,
        "float32" => DataType::Float32,
        "float64" => DataType::Float64,
        "utf8" => DataType::Utf8,
        "boolean" => DataType::Boolean,
        "date32" => DataType::Date32,
        "timestamp_s" => DataType::Timestamp(TimeUnit::Second, None),
        "timestamp_ms" => DataType::Timestamp(TimeUnit::Millisecond, None),
        "timestamp_us" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "timestamp_ns" => DataType::Timestamp(TimeUnit::Nanosecond, None),
        _ => return None,
    })
}

impl TypedStage for Clean {
    type Params = Params;

    fn info(&self) -> KindInfo {
        KindInfo {
            kind: "clean",
            version: VERSION,
            summary: "Casts columns, fills nulls, drops rows missing required values and duplicate keys; reports what changed.",
            inputs: vec![Port { optional: false, name: "table", ty: "table", doc: "the table to clean (every *.parquet in it)" }],
            extra_inputs: None,
            outputs: vec![Port {
                optional: false,
                name: "table",
                ty: "table",
                doc: "events.parquet (the cleaned rows), validation.json, summary.txt",
            }],
            params: vec![
                ParamDoc { name: "cast", doc: "column → int32|int64|float32|float64|utf8|boolean|date32|timestamp_s|_ms|_us|_ns" },
                ParamDoc { name: "fill", doc: "column → value that replaces its nulls" },
                ParamDoc { name: "required", doc: "drop rows with a null in any of these columns (after fill)" },
                ParamDoc { name: "dedup", doc: "key columns: drop rows whose key was seen ([] = off)" },
                ParamDoc { name: "keep", doc: "which duplicate to keep: \"first\" or \"last\" in file order" },
            ],
            resource: Resource::Cpu,
        }
    }

    /// `keep` enters the key only when `dedup` is on.
    fn canonical(&self, p: &Params) -> serde_json::Value {
        let mut value = serde_json::to_value(p).unwrap_or_default();
        if p.dedup.is_empty() {
            if let Some(map) = value.as_object_mut() {
                map.remove("keep");
            }
        }
        value
    }

    fn validate(&self, p: &Params) -> Result<(), String> {
        if p.keep != "first" && p.keep != "last" {
            return Err(format!(
                "keep: `{}` is neither \"first\" nor \"last\"",
                p.keep
            ));
        }
        for (column, ty) in &p.cast {
            if type_of(ty).is_none() {
                let hint = seqpipe::spec::did_you_mean(ty, TYPE_NAMES)
                    .unwrap_or_else(|| format!("types: {}", TYPE_NAMES.join(", ")));
                return Err(format!("cast.{column}: unknown type `{ty}` ({hint})"));
            }
        }
        for (column, value) in &p.fill {
            if let FillValue::Float(x) = value {
                if !x.is_finite() {
                    return Err(format!("fill.{column}: {x} is not a finite number"));
                }
            }
        }
        for (key, list) in [("required", &p.required), ("dedup", &p.dedup)] {
            let mut seen = HashSet::new();
            for name in list {
                if name.is_empty() {
                    return Err(format!("{key}: a column name is empty"));
                }
                if !seen.insert(name) {
                    return Err(format!("{key}: `{name}` is listed twice"));
                }
            }
        }
        Ok(())
    }

    fn run(&self, p: Params, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        let input = table::open_table(ctx.input("table")?)?;
        let plan = Plan::new(&input, &p)?;
        let total: u64 = input
            .files
            .iter()
            .map(|f| table::file_rows(f).unwrap_or(0))
            .sum();
        let passes = if plan.keep_last() { 2 } else { 1 };
        let bar = ctx.progress.bar(ctx.stage, "clean", total * passes);
        let mut dedup = match plan.dedup_keys() {
            None => Dedup::Off,
            Some(_) if !plan.keep_last() => Dedup::First(KeySet::new(plan.key_encoder()?, total)),
            Some(_) => Dedup::Last(last_rows(&input, &plan, total, &bar)?),
        };
        let out = ctx.output("table")?;
        let stats = write_clean(&input, &plan, &mut dedup, &out.join("events.parquet"), &bar)?;
        drop(dedup);
        bar.finish_and_clear();

        let report = Validation::new(&input, &plan, &p, stats);
        std::fs::write(
            out.join("validation.json"),
            serde_json::to_string_pretty(&report)? + "\n",
        )?;
        let summary = report.summary();
        std::fs::write(out.join("summary.txt"), format!("{summary}\n"))?;
        ctx.note(
            "rows",
            format!(
                "{} of {} kept ({}%)",
                report.rows_out, report.rows_in, report.retention_pct
            ),
        );
        Ok(())
    }
}

enum Dedup {
    Off,
    /// The keys seen so far.
    First(KeySet),
    /// Whether each surviving row (numbered across files) is its key's last.
    Last(BooleanBuffer),
}

impl Dedup {
    /// Which rows of `batch` to keep; `index` is the number of surviving
    /// rows before it (across files).
    fn keep(&mut self, batch: &RecordBatch, index: u64) -> anyhow::Result<Option<BooleanArray>> {
        Ok(match self {
            Dedup::Off => None,
            Dedup::First(seen) => {
                let mut keep = BooleanBufferBuilder::new(batch.num_rows());
                for id in seen.insert_batch(batch)? {
                    keep.append(id.1);
                }
                Some(BooleanArray::new(keep.finish(), None))
            }
            Dedup::Last(last) => {
                let keep = last.slice(index as usize, batch.num_rows());
                Some(BooleanArray::new(keep, None))
            }
        })
    }
}

/// keep = "last": reads the input once, numbering the surviving rows, and
/// marks each key's last row. Only a key id per row and the last row per
/// key are kept once the keys are numbered.
fn last_rows(
    input: &table::TableFiles,
    plan: &Plan,
    total: u64,
    bar: &seqpipe::progress::Bar,
) -> anyhow::Result<BooleanBuffer> {
    let mut keys = KeySet::new(plan.key_encoder()?, total);
    let mut ids: Vec<u32> = Vec::with_capacity(total as usize);
    for file in &input.files {
        for batch in table::prefetched(table::batches(file)?) {
            let batch = batch?;
            bar.inc(batch.num_rows() as u64);
            let batch = plan.transform(&batch, &mut Stats::default())?;
            ids.extend(keys.insert_batch(&batch)?.into_iter().map(|(id, _)| id));
        }
    }
    let mut last = vec![0usize; keys.len()];
    drop(keys);
    for (row, &id) in ids.iter().enumerate() {
        last[id as usize] = row;
    }
    Ok(ids
        .iter()
        .enumerate()
        .map(|(row, &id)| last[id as usize] == row)
        .collect())
}

/// The second (or only) pass: transforms, dedups and writes every batch
/// in file order; returns the counts for the report. Reading and writing
/// run on their own threads; the batches the writer gets (and so the
/// file's bytes) are the same as when one thread does everything.
fn write_clean(
    input: &table::TableFiles,
    plan: &Plan,
    dedup: &mut Dedup,
    path: &Path,
    bar: &seqpipe::progress::Bar,
) -> anyhow::Result<Stats> {
    let mut writer =
        table::ThreadedWriter::create(path, plan.schema.clone(), table::Dictionary::StringsOnly)?;
    let mut stats = Stats::default();
    let mut index = 0u64;
    for file in &input.files {
        for batch in table::prefetched(table::batches(file)?) {
            let batch = batch?;
            bar.inc(batch.num_rows() as u64);
            let batch = plan.transform(&batch, &mut stats)?;
            let before = batch.num_rows() as u64;
            let batch = match dedup.keep(&batch, index)? {
                Some(keep) => filter_record_batch(&batch, &keep)?,
                None => batch,
            };
            index += before;
            stats.duplicates_removed += before - batch.num_rows() as u64;
            stats.rows_out += batch.num_rows() as u64;
            for (i, f) in plan.schema.fields().iter().enumerate() {
                *stats.nulls_after.entry(f.name().clone()).or_default() +=
                    batch.column(i).null_count() as u64;
            }
            writer.write(batch)?;
        }
    }
    writer.close()?;
    Ok(stats)
}

/// The params resolved against the input's schema.
struct Plan {
    /// Output schema: the input's with cast columns retyped.
    schema: SchemaRef,
    /// (column index, target type).
    casts: Vec<(usize, DataType)>,
    /// (column index, a one-element array of the fill value, in the output type).
    fills: Vec<(usize, ArrayRef)>,
    required: Vec<usize>,
    /// Key column indices.
    dedup: Option<Vec<usize>>,
    keep: String,
}

impl Plan {
    fn new(input: &table::TableFiles, p: &Params) -> anyhow::Result<Plan> {
        let schema = &input.schema;
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let place = if input.files.len() == 1 {
            input.files[0].display().to_string()
        } else {
            format!(
                "{} ({} Parquet files)",
                input.files[0].parent().unwrap_or(Path::new("")).display(),
                input.files.len()
            )
        };
        let find = |param: &str, name: &str| -> anyhow::Result<usize> {
            names.iter().position(|n| *n == name).ok_or_else(|| {
                anyhow::anyhow!(
                    "{param}: no column `{name}` in {place} ({})",
                    table::column_hint(name, names.iter().copied())
                )
            })
        };
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        let mut casts = Vec::new();
        for (column, ty) in &p.cast {
            let i = find("cast", column)?;
            let ty =
                type_of(ty).ok_or_else(|| anyhow::anyhow!("cast.{column}: unknown type `{ty}`"))?;
            anyhow::ensure!(
                arrow::compute::can_cast_types(fields[i].data_type(), &ty),
                "cast.{column}: cannot cast {} to {ty} (column `{column}` in {place})",
                fields[i].data_type()
            );
            fields[i] = Field::new(column, ty.clone(), true);
            casts.push((i, ty));
        }
        let mut fills = Vec::new();
        for (column, value) in &p.fill {
            let i = find("fill", column)?;
            let value = fill_array(value, fields[i].data_type()).map_err(|e| {
                anyhow::anyhow!("fill.{column}: {e} (column `{column}` in {place})")
            })?;
            fills.push((i, value));
        }
        let required = p
            .required
            .iter()
            .map(|c| find("required", c))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let dedup = if p.dedup.is_empty() {
            None
        } else {
            let keys = p
                .dedup
                .iter()
                .map(|c| find("dedup", c))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let types: Vec<DataType> = keys
                .iter()
                .map(|&i| fields[i].data_type().clone())
                .collect();
            KeyEncoder::new(&keys, &types)
                .map_err(|e| anyhow::anyhow!("dedup: these key columns cannot be compared: {e}"))?;
            Some(keys)
        };
        Ok(Plan {
            schema: Arc::new(Schema::new(fields)),
            casts,
            fills,
            required,
            dedup,
            keep: p.keep.clone(),
        })
    }

    fn keep_last(&self) -> bool {
        self.dedup.is_some() && self.keep == "last"
    }

    /// Cast, fill, drop incomplete rows; counts into `stats`. Returns the
    /// batch in the output schema.
    fn transform(&self, batch: &RecordBatch, stats: &mut Stats) -> anyhow::Result<RecordBatch> {
        let n = batch.num_rows() as u64;
        stats.rows_in += n;
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        for (i, c) in columns.iter().enumerate() {
            *stats
                .nulls_before
                .entry(self.schema.field(i).name().clone())
                .or_default() += c.null_count() as u64;
        }
        let safe = CastOptions {
            safe: true,
            ..Default::default()
        };
        for (i, ty) in &self.casts {
            let before = columns[*i].null_count();
            columns[*i] = cast_with_options(&columns[*i], ty, &safe)?;
            *stats
                .cast_failed
                .entry(self.schema.field(*i).name().clone())
                .or_default() += (columns[*i].null_count() - before) as u64;
        }
        for (i, value) in &self.fills {
            let nulls = columns[*i].null_count();
            *stats
                .filled
                .entry(self.schema.field(*i).name().clone())
                .or_default() += nulls as u64;
            if nulls > 0 {
                let present = is_not_null(&columns[*i])?;
                columns[*i] = zip(&present, &columns[*i], &Scalar::new(value.clone()))?;
            }
        }
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        if self.required.is_empty() {
            return Ok(batch);
        }
        let mut mask: Option<BooleanArray> = None;
        for &i in &self.required {
            let column = batch.column(i);
            *stats
                .missing_required
                .entry(self.schema.field(i).name().clone())
                .or_default() += column.null_count() as u64;
            let present = is_not_null(column)?;
            mask = Some(match mask {
                None => present,
                Some(m) => and(&m, &present)?,
            });
        }
        let batch = match mask {
            Some(mask) => filter_record_batch(&batch, &mask)?,
            None => batch,
        };
        stats.dropped_required += n - batch.num_rows() as u64;
        Ok(batch)
    }

    fn dedup_keys(&self) -> Option<&[usize]> {
        self.dedup.as_deref()
    }

    /// A fresh encoder of the dedup key columns (empty interners).
    fn key_encoder(&self) -> anyhow::Result<KeyEncoder> {
        let keys = self.dedup.as_deref().unwrap_or_default();
        let types: Vec<DataType> = keys
            .iter()
            .map(|&i| self.schema.field(i).data_type().clone())
            .collect();
        KeyEncoder::new(keys, &types)
    }
}

/// A one-element array of `value` in type `ty`; `Err` when the value does
/// not convert exactly (e.g. "unknown" into an int64 column, or 1.5 into
/// one).
fn fill_array(value: &FillValue, ty: &DataType) -> Result<ArrayRef, String> {
    let natural: ArrayRef = match value {
        FillValue::Bool(b) => Arc::new(BooleanArray::from(vec![*b])),
        FillValue::Int(i) => Arc::new(Int64Array::from(vec![*i])),
        FillValue::Float(x) => Arc::new(Float64Array::from(vec![*x])),
        FillValue::Str(s) => Arc::new(StringArray::from(vec![s.as_str()])),
    };
    let strict = CastOptions {
        safe: false,
        ..Default::default()
    };
    let converted = cast_with_options(&natural, ty, &strict)
        .ok()
        .filter(|c| c.null_count() == 0);
    let exact = converted.filter(|c| {
        // Numbers must come back unchanged (no 1.5 → 1).
        matches!(value, FillValue::Bool(_) | FillValue::Str(_))
            || cast_with_options(c, natural.data_type(), &strict)
                .is_ok_and(|back| back.as_ref() == natural.as_ref())
    });
    exact.ok_or_else(|| format!("{value} does not fit a {ty} column"))
}

#[derive(Debug, Default)]
struct Stats {
    rows_in: u64,
    rows_out: u64,
    nulls_before: BTreeMap<String, u64>,
    nulls_after: BTreeMap<String, u64>,
    cast_failed: BTreeMap<String, u64>,
    filled: BTreeMap<String, u64>,
    missing_required: BTreeMap<String, u64>,
    dropped_required: u64,
    duplicates_removed: u64,
}

/// `validation.json`.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Validation {
    /// File names in the input artifact.
    pub input_files: Vec<String>,
    pub rows_in: u64,
    pub rows_out: u64,
    /// rows_out / rows_in in %, two decimals (100 for an empty input).
    pub retention_pct: f64,
    pub cast: BTreeMap<String, CastRecord>,
    /// Nulls replaced per filled column.
    pub filled: BTreeMap<String, u64>,
    /// Rows dropped because a required column was null.
    pub dropped_missing_required: u64,
    /// Nulls per required column among the rows checked.
    pub missing_required: BTreeMap<String, u64>,
    pub dedup_keys: Vec<String>,
    pub keep: Option<String>,
    pub duplicates_removed: u64,
    pub nulls_before: BTreeMap<String, u64>,
    pub nulls_after: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct CastRecord {
    pub from: String,
    pub to: String,
    /// Non-null values that did not convert and became null.
    pub failed: u64,
}

impl Validation {
    fn new(input: &table::TableFiles, plan: &Plan, p: &Params, stats: Stats) -> Validation {
        let retention_pct = table::percent(stats.rows_out, stats.rows_in).unwrap_or(100.0);
        let all = |mut m: BTreeMap<String, u64>| {
            for f in input.schema.fields() {
                m.entry(f.name().clone()).or_default();
            }
            m
        };
        Validation {
            input_files: input
                .files
                .iter()
                .map(|f| {
                    f.file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect(),
            rows_in: stats.rows_in,
            rows_out: stats.rows_out,
            retention_pct,
            cast: plan
                .casts
                .iter()
                .map(|(i, ty)| {
                    let name = input.schema.field(*i).name().clone();
                    let failed = stats.cast_failed.get(&name).copied().unwrap_or(0);
                    (
                        name,
                        CastRecord {
                            from: input.schema.field(*i).data_type().to_string(),
                            to: ty.to_string(),
                            failed,
                        },
                    )
                })
                .collect(),
            filled: p
                .fill
                .keys()
                .map(|c| (c.clone(), stats.filled.get(c).copied().unwrap_or(0)))
                .collect(),
            dropped_missing_required: stats.dropped_required,
            missing_required: p
                .required
                .iter()
                .map(|c| {
                    (
                        c.clone(),
                        stats.missing_required.get(c).copied().unwrap_or(0),
                    )
                })
                .collect(),
            dedup_keys: p.dedup.clone(),
            keep: (!p.dedup.is_empty()).then(|| p.keep.clone()),
            duplicates_removed: stats.duplicates_removed,
            nulls_before: all(stats.nulls_before),
            nulls_after: all(stats.nulls_after),
        }
    }

    /// One paragraph for `summary.txt`.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "clean: {} of {} rows kept ({}%)",
            self.rows_out, self.rows_in, self.retention_pct
        );
        for (column, c) in &self.cast {
            s += &format!("; cast {column} {} → {}", c.from, c.to);
            if c.failed > 0 {
                s += &format!(" ({} values did not convert, now null)", c.failed);
            }
        }
        let filled: Vec<String> = self
            .filled
            .iter()
            .map(|(c, n)| format!("{n} in {c}"))
            .collect();
        if !filled.is_empty() {
            s += &format!("; filled nulls: {}", filled.join(", "));
        }
        if !self.missing_required.is_empty() {
            let names: Vec<&str> = self.missing_required.keys().map(String::as_str).collect();
            s += &format!(
                "; dropped {} rows missing a required value ({})",
                self.dropped_missing_required,
                names.join(", ")
            );
        }
        if !self.dedup_keys.is_empty() {
            s += &format!(
                "; removed {} duplicates of ({}), keeping the {}",
                self.duplicates_removed,
                self.dedup_keys.join(", "),
                self.keep.as_deref().unwrap_or("first")
            );
        }
        let nulls: Vec<String> = self
            .nulls_after
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        if nulls.is_empty() {
            s += "; no nulls left.";
        } else {
            s += &format!("; nulls left: {}.", nulls.join(", "));
        }
        s
    }
}

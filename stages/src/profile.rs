//! `profile` — what a table holds, column by column.
//!
//! Params (defaults): `top` (10) most frequent values listed per
//! categorical column (0 = none).
//! Inputs: `table` (table: every `*.parquet` in the folder, one schema).
//! Outputs: `profile` (profile: `profile.json`, `profile.md`,
//! `summary.txt`).
//!
//! Per table: rows, columns, duplicate rows (rows equal to an earlier row
//! in every column, nulls equal; absent when a column type cannot be
//! compared). Per column, in schema order: Arrow type, nulls (count and %,
//! two decimals), exact distinct non-null values (absent when the type
//! cannot be compared); for numeric columns (integers, floats, decimals;
//! dates and timestamps in their raw unit, e.g. days or seconds) the count
//! of values, NaNs (excluded from the rest), min, max, mean, sample
//! standard deviation (n − 1; absent below two values) and the quartiles
//! p25/p50/p75 (linear interpolation between order statistics, as numpy's
//! default); for categorical columns (strings, integers, booleans) the
//! `top` most frequent values with their counts, ties broken by the value
//! (ascending). The same table gives the same bytes: maps have sorted
//! keys, lists a fixed order, and sums run in file order.
//!
//! The input is read batch by batch; memory holds the numeric values (for
//! the quartiles), a count per distinct value and one encoded row per
//! distinct row.

use std::collections::{HashMap, HashSet};

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, UInt64Array,
};
use arrow::compute::{can_cast_types, cast};
use arrow::datatypes::DataType;
use arrow::row::{OwnedRow, RowConverter, SortField};
use seqpipe::stage::{KindInfo, ParamDoc, Port, Resource, StageContext, TypedStage};
use serde::{Deserialize, Serialize};

use crate::table;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    pub top: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params { top: 10 }
    }
}

pub struct ProfileStage;

pub const VERSION: u32 = 1;

impl TypedStage for ProfileStage {
    type Params = Params;

    fn info(&self) -> KindInfo {
        KindInfo {
            kind: "profile",
            version: VERSION,
            summary: "Profiles a table: per column type, nulls, distinct values, numeric statistics and top values.",
            inputs: vec![Port { optional: false, name: "table", ty: "table", doc: "the table to profile (every *.parquet in it)" }],
            extra_inputs: None,
            outputs: vec![Port {
                optional: false,
                name: "profile",
                ty: "profile",
                doc: "profile.json, profile.md, summary.txt",
            }],
            params: vec![ParamDoc {
                name: "top",
                doc: "most frequent values listed per string/integer/boolean column (0 = none)",
            }],
            resource: Resource::Cpu,
        }
    }

    fn validate(&self, p: &Params) -> Result<(), String> {
        if p.top > 10_000 {
            return Err(format!("top: {} is more than 10000", p.top));
        }
        Ok(())
    }

    fn run(&self, p: Params, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        let input = table::open_table(ctx.input("table")?)?;
        let total: u64 = input
            .files
            .iter()
            .map(|f| table::file_rows(f).unwrap_or(0))
            .sum();
        let bar = ctx.progress.bar(ctx.stage, "profile", total);
        let mut profiler = Profiler::new(&input.schema);
        for file in &input.files {
            for batch in table::batches(file)? {
                let batch = batch?;
                bar.inc(batch.num_rows() as u64);
                profiler.add(&batch)?;
            }
        }
        bar.finish_and_clear();
        let profile = profiler.finish(p.top);
        let out = ctx.output("profile")?;
        std::fs::write(
            out.join("profile.json"),
            serde_json::to_string_pretty(&profile)? + "\n",
        )?;
        std::fs::write(out.join("profile.md"), profile.markdown())?;
        let summary = profile.summary();
        std::fs::write(out.join("summary.txt"), format!("{summary}\n"))?;
        ctx.note("profile", summary);
        Ok(())
    }
}

/// `profile.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Profile {
    pub rows: u64,
    pub num_columns: usize,
    pub duplicate_rows: Option<u64>,
    pub columns: Vec<ColumnProfile>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ColumnProfile {
    pub name: String,
    pub r#type: String,
    pub nulls: u64,
    pub null_pct: f64,
    pub distinct: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub numeric: Option<Numeric>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub top: Vec<TopValue>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Numeric {
    /// Non-null, non-NaN values.
    pub count: u64,
    pub nan: u64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
    pub std: Option<f64>,
    pub p25: Option<f64>,
    pub p50: Option<f64>,
    pub p75: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopValue {
    pub value: serde_json::Value,
    pub count: u64,
}

/// A categorical value; the derived order breaks count ties.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Cat {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Str(String),
}

impl Cat {
    fn json(&self) -> serde_json::Value {
        match self {
            Cat::Bool(b) => (*b).into(),
            Cat::Int(i) => (*i).into(),
            Cat::UInt(u) => (*u).into(),
            Cat::Str(s) => s.clone().into(),
        }
    }
}

/// How a column's values are counted.
enum Kind {
    /// Counted per value (distinct = number of keys, top values).
    Cat(HashMap<Cat, u64>),
    /// Distinct via the row format.
    Rows(RowConverter, HashSet<OwnedRow>),
    /// Not comparable: no distinct count.
    None,
}

struct ColumnAcc {
    name: String,
    ty: DataType,
    nulls: u64,
    kind: Kind,
    /// Numeric values in file order (NaNs left out) when numeric.
    values: Option<Vec<f64>>,
    nan: u64,
}

struct Profiler {
    rows: u64,
    columns: Vec<ColumnAcc>,
    all_rows: Option<(RowConverter, HashSet<OwnedRow>)>,
}

fn categorical(ty: &DataType) -> bool {
    use DataType::*;
    matches!(
        ty,
        Utf8 | LargeUtf8
            | Utf8View
            | Boolean
            | Int8
            | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
    ) || matches!(ty, Dictionary(_, v) if matches!(v.as_ref(), Utf8 | LargeUtf8))
}

fn numeric(ty: &DataType) -> bool {
    ty.is_numeric() || ty.is_temporal()
}

impl Profiler {
    fn new(schema: &arrow::datatypes::Schema) -> Profiler {
        let columns = schema
            .fields()
            .iter()
            .map(|f| {
                let ty = f.data_type().clone();
                let kind = if categorical(&ty) {
                    Kind::Cat(HashMap::new())
                } else {
                    match RowConverter::new(vec![SortField::new(ty.clone())]) {
                        Ok(c) => Kind::Rows(c, HashSet::new()),
                        Err(_) => Kind::None,
                    }
                };
                ColumnAcc {
                    name: f.name().clone(),
                    values: numeric(&ty).then(Vec::new),
                    ty,
                    nulls: 0,
                    kind,
                    nan: 0,
                }
            })
            .collect();
        let fields: Vec<SortField> = schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        let all_rows = RowConverter::new(fields).ok().map(|c| (c, HashSet::new()));
        Profiler {
            rows: 0,
            columns,
            all_rows,
        }
    }

    fn add(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        self.rows += batch.num_rows() as u64;
        if let Some((converter, seen)) = &mut self.all_rows {
            let rows = converter.convert_columns(batch.columns())?;
            seen.extend(rows.iter().map(|r| r.owned()));
        }
        for (acc, column) in self.columns.iter_mut().zip(batch.columns()) {
            acc.nulls += column.null_count() as u64;
            match &mut acc.kind {
                Kind::Cat(counts) => count_values(column, counts)?,
                Kind::Rows(converter, seen) => {
                    let rows = converter.convert_columns(std::slice::from_ref(column))?;
                    for (i, row) in rows.iter().enumerate() {
                        if column.is_valid(i) {
                            seen.insert(row.owned());
                        }
                    }
                }
                Kind::None => {}
            }
            if let Some(values) = &mut acc.values {
                let floats = as_f64(column)?;
                for v in floats.iter().flatten() {
                    if v.is_nan() {
                        acc.nan += 1;
                    } else {
                        values.push(v);
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(self, top: usize) -> Profile {
        let rows = self.rows;
        let pct = |n: u64| table::percent(n, rows).unwrap_or(0.0);
        let columns = self
            .columns
            .into_iter()
            .map(|acc| {
                let (distinct, top) = match acc.kind {
                    Kind::Cat(counts) => {
                        let mut values: Vec<(Cat, u64)> = counts.into_iter().collect();
                        let distinct = values.len() as u64;
                        values.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                        values.truncate(top);
                        let top = values
                            .into_iter()
                            .map(|(v, count)| TopValue {
                                value: v.json(),
                                count,
                            })
                            .collect();
                        (Some(distinct), top)
                    }
                    Kind::Rows(_, seen) => (Some(seen.len() as u64), Vec::new()),
                    Kind::None => (None, Vec::new()),
                };
                ColumnProfile {
                    r#type: acc.ty.to_string(),
                    nulls: acc.nulls,
                    null_pct: pct(acc.nulls),
                    distinct,
                    numeric: acc.values.map(|v| stats(v, acc.nan)),
                    top,
                    name: acc.name,
                }
            })
            .collect::<Vec<_>>();
        Profile {
            rows,
            num_columns: columns.len(),
            duplicate_rows: self.all_rows.map(|(_, seen)| rows - seen.len() as u64),
            columns,
        }
    }
}

/// Adds a categorical column's non-null values to `counts`.
fn count_values(column: &ArrayRef, counts: &mut HashMap<Cat, u64>) -> anyhow::Result<()> {
    let ty = column.data_type();
    if *ty == DataType::Boolean {
        let a = column
            .as_any()
            .downcast_ref::<BooleanArray>()
            .expect("bool");
        for v in a.iter().flatten() {
            *counts.entry(Cat::Bool(v)).or_default() += 1;
        }
    } else if *ty == DataType::UInt64 {
        let a = column.as_any().downcast_ref::<UInt64Array>().expect("u64");
        for v in a.iter().flatten() {
            *counts.entry(Cat::UInt(v)).or_default() += 1;
        }
    } else if ty.is_integer() {
        let ints = cast(column, &DataType::Int64)?;
        let a = ints.as_any().downcast_ref::<Int64Array>().expect("i64");
        for v in a.iter().flatten() {
            *counts.entry(Cat::Int(v)).or_default() += 1;
        }
    } else {
        let strs = cast(column, &DataType::Utf8)?;
        let a = strs.as_any().downcast_ref::<StringArray>().expect("utf8");
        for v in a.iter().flatten() {
            *counts.entry(Cat::Str(v.to_string())).or_default() += 1;
        }
    }
    Ok(())
}

/// A numeric or temporal column as float64 (temporal through its raw
/// integer value).
fn as_f64(column: &ArrayRef) -> anyhow::Result<Float64Array> {
    let ty = column.data_type();
    let floats = if can_cast_types(ty, &DataType::Float64) && !ty.is_temporal() {
        cast(column, &DataType::Float64)?
    } else {
        let raw = if matches!(ty, DataType::Date32 | DataType::Time32(_)) {
            DataType::Int32
        } else {
            DataType::Int64
        };
        cast(&cast(column, &raw)?, &DataType::Float64)?
    };
    Ok(floats
        .as_any()
        .downcast_ref::<Float64Array>()
        .expect("float64")
        .clone())
}

/// Summary statistics of `values` (file order; NaNs already removed).
fn stats(values: Vec<f64>, nan: u64) -> Numeric {
    let n = values.len();
    let mean = (n > 0).then(|| values.iter().sum::<f64>() / n as f64);
    let std = mean
        .filter(|_| n > 1)
        .map(|m| (values.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (n - 1) as f64).sqrt());
    let mut sorted = values;
    sorted.sort_by(f64::total_cmp);
    let q = |q: f64| quantile(&sorted, q);
    Numeric {
        count: n as u64,
        nan,
        min: sorted.first().copied(),
        max: sorted.last().copied(),
        mean,
        std,
        p25: q(0.25),
        p50: q(0.5),
        p75: q(0.75),
    }
}

/// The `q` quantile of sorted values, interpolating linearly.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64))
}

/// A number for the Markdown table: integers exactly, others to four
/// decimals without trailing zeros.
fn num(x: Option<f64>) -> String {
    match x {
        None => String::new(),
        Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{}", x as i64),
        Some(x) => {
            let s = format!("{x:.4}");
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        }
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

impl Profile {
    /// `profile.md`: one table of columns, then the top values.
    pub fn markdown(&self) -> String {
        let mut md = format!(
            "# Profile\n\n{} rows, {} columns{}.\n\n",
            self.rows,
            self.num_columns,
            match self.duplicate_rows {
                Some(d) => format!(", {d} duplicate rows"),
                None => String::new(),
            }
        );
        md += "| column | type | nulls | null % | distinct | min | max | mean | std | p25 | p50 | p75 |\n";
        md += "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
        for c in &self.columns {
            let n = c.numeric.as_ref();
            let f = |get: fn(&Numeric) -> Option<f64>| num(n.and_then(get));
            md += &format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                cell(&c.name),
                cell(&c.r#type),
                c.nulls,
                c.null_pct,
                c.distinct.map(|d| d.to_string()).unwrap_or_default(),
                f(|n| n.min),
                f(|n| n.max),
                f(|n| n.mean),
                f(|n| n.std),
                f(|n| n.p25),
                f(|n| n.p50),
                f(|n| n.p75),
            );
        }
        let with_top: Vec<&ColumnProfile> =
            self.columns.iter().filter(|c| !c.top.is_empty()).collect();
        if !with_top.is_empty() {
            md += "\n## Top values\n";
            for c in with_top {
                md += &format!("\n### {}\n\n| value | count |\n|---|---:|\n", cell(&c.name));
                for t in &c.top {
                    let v = match &t.value {
                        serde_json::Value::String(s) => s.clone(),
                        v => v.to_string(),
                    };
                    md += &format!("| {} | {} |\n", cell(&v), t.count);
                }
            }
        }
        md
    }

    /// One line: size, duplicates, the columns with nulls.
    pub fn summary(&self) -> String {
        let mut s = format!("profile: {} rows × {} columns", self.rows, self.num_columns);
        if let Some(d) = self.duplicate_rows {
            s += &format!(", {d} duplicate rows");
        }
        let nulls: Vec<String> = self
            .columns
            .iter()
            .filter(|c| c.nulls > 0)
            .map(|c| format!("{} {} ({}%)", c.name, c.nulls, c.null_pct))
            .collect();
        if nulls.is_empty() {
            s += "; no nulls.";
        } else {
            s += &format!("; nulls: {}.", nulls.join(", "));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quartiles_interpolate_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        // numpy.quantile([1,2,3,4], [.25,.5,.75]) = 1.75, 2.5, 3.25
        assert_eq!(quantile(&v, 0.25), Some(1.75));
        assert_eq!(quantile(&v, 0.5), Some(2.5));
        assert_eq!(quantile(&v, 0.75), Some(3.25));
        assert_eq!(quantile(&[7.0], 0.25), Some(7.0));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(num(Some(2.5)), "2.5");
        assert_eq!(num(Some(3.0)), "3");
        assert_eq!(num(Some(1.0 / 3.0)), "0.3333");
    }
}

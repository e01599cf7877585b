//! `load.parquet` — one table from a folder of Parquet partition files.
//!
//! Params (defaults): `match` ("" = every file) keep files whose path
//! relative to the source contains this text, or, when it holds `*`, `?` or
//! `[`, whose whole relative path matches it as a glob (`*` any run of
//! characters, `/` included; `?` one character; `[abc]` one of them; the
//! `glob` crate's patterns); a list keeps a file any of its terms keeps
//! (`match = ["events/retail/", "events/marketplace/"]`), `day_from` / `day_to`
//! ("" = open) an inclusive range of days `YYYY-MM-DD`, `limit` (0 = all)
//! partitions kept after sorting by relative path, `columns` ([] = all)
//! columns to keep, in this order, `exclude` ([]) columns to drop,
//! `skip_unreadable_columns` (true) drop a column that cannot be read
//! instead of failing.
//! Inputs: `source` (path: a folder of `*.parquet` files, searched
//! recursively: `<table>/<domain>/<day>.parquet`, hive-style
//! `day=2024-01-03/part-0.parquet`…).
//! Outputs: `events` (table: `events.parquet`, `partitions.json` — the
//! selected relative paths, their days and rows, the columns kept and
//! dropped — and `summary.txt`).
//!
//! Selection: files and folders whose names start with `.` or `_` (Spark's
//! `_SUCCESS`, `.crc`, `_temporary/`) are skipped, and files not named
//! `*.parquet` are ignored (and counted in `partitions.json`). A file's
//! day is the first `YYYY-MM-DD` in its relative path (`2024/…` folders
//! without dashes do not count); when `day_from` or `day_to` is set, files
//! without a day are left out. `match`, then the day range, then `limit`.
//! Partition keys in folder names (`day=…`) are not added as columns.
//!
//! Columns: the output holds every column seen in any selected partition,
//! in the order first seen (or the order of `columns`); a column missing
//! from a partition is null there. Integer widths (int32 in one partition,
//! int64 in another) and float widths are widened to the wider type; any
//! other type difference across partitions (e.g. an `embedding`
//! fixed-size list of 4 in one partition and of 8 in another) drops the
//! column with a note, and so does a column whose data cannot be read as
//! its declared Arrow type (e.g. a list declared fixed-size whose rows vary
//! in length) — the stream then restarts without it. With
//! `skip_unreadable_columns = false`, or when the column is named in
//! `columns`, either is an error naming the column and the files.
//!
//! Memory stays bounded: partitions are read one at a time, batch by batch,
//! and appended to `events.parquet` as they come (one row group in memory).
//! Rows keep the order of (relative path, row in file).
//!
//! Errors ([`LoadParquetError`]) name the source folder, the filters and
//! how many files exist when nothing is selected; the file when it is not
//! Parquet; the column (with a did-you-mean) when `columns` or `exclude`
//! names one that no selected partition has — a data-level check, so it
//! fails the run (exit 1), not the plan.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, RecordBatch, RecordBatchOptions};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;
use seqpipe::stage::{KindInfo, ParamDoc, Port, Resource, StageContext, TypedStage};
use serde::{Deserialize, Serialize};

use crate::table;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    #[serde(rename = "match")]
    pub pattern: Match,
    pub day_from: String,
    pub day_to: String,
    pub limit: usize,
    pub columns: Vec<String>,
    pub exclude: Vec<String>,
    pub skip_unreadable_columns: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            pattern: Match::One(String::new()),
            day_from: String::new(),
            day_to: String::new(),
            limit: 0,
            columns: Vec::new(),
            exclude: Vec::new(),
            skip_unreadable_columns: true,
        }
    }
}

pub struct LoadParquet;

/// 2: ids and times written without Parquet dictionaries
/// (`table::Dictionary::StringsOnly`): same rows, other bytes.
pub const VERSION: u32 = 2;

/// Rows per batch read from a partition.
const BATCH_ROWS: usize = 64 * 1024;

impl TypedStage for LoadParquet {
    type Params = Params;

    fn info(&self) -> KindInfo {
        KindInfo {
            kind: "load.parquet",
            version: VERSION,
            summary: "Streams a folder of Parquet partition files (filtered by path, day and count) into one table.",
            inputs: vec![Port {
                optional: false,
                name: "source",
                ty: "path",
                doc: "a folder of *.parquet partition files, searched recursively",
            }],
            extra_inputs: None,
            outputs: vec![Port {
                optional: false,
                name: "events",
                ty: "table",
                doc: "events.parquet (the selected partitions' rows), partitions.json, summary.txt",
            }],
            params: vec![
                ParamDoc { name: "match", doc: "keep files whose relative path contains this (a glob when it has *, ? or [; \"\" = all); a list keeps a file any of its terms keeps" },
                ParamDoc { name: "day_from", doc: "first day kept, YYYY-MM-DD, from the first date in the path (\"\" = open)" },
                ParamDoc { name: "day_to", doc: "last day kept, inclusive (\"\" = open)" },
                ParamDoc { name: "limit", doc: "keep the first N partitions by relative path (0 = all)" },
                ParamDoc { name: "columns", doc: "columns to keep, in this order ([] = all)" },
                ParamDoc { name: "exclude", doc: "columns to drop" },
                ParamDoc { name: "skip_unreadable_columns", doc: "drop (and report) a column whose type differs across partitions or cannot be read, instead of failing" },
            ],
            resource: Resource::Cpu,
        }
    }

    fn validate(&self, p: &Params) -> Result<(), String> {
        if let Some(problem) = p.pattern.invalid() {
            return Err(format!("match: {problem}"));
        }
        if p.pattern.terms().is_empty() {
            return Err(
                "match: an empty list keeps no file (leave `match` out to keep all)".into(),
            );
        }
        for (key, day) in [("day_from", &p.day_from), ("day_to", &p.day_to)] {
            if !day.is_empty() && !is_day(day) {
                return Err(format!(
                    "{key}: `{day}` is not a day of the form YYYY-MM-DD (e.g. 2024-01-31)"
                ));
            }
        }
        if !p.day_from.is_empty() && !p.day_to.is_empty() && p.day_from > p.day_to {
            return Err(format!(
                "day_from: {} is after day_to {}",
                p.day_from, p.day_to
            ));
        }
        for (key, list) in [("columns", &p.columns), ("exclude", &p.exclude)] {
            let mut seen = BTreeSet::new();
            for name in list {
                if name.is_empty() {
                    return Err(format!("{key}: a column name is empty"));
                }
                if !seen.insert(name) {
                    return Err(format!("{key}: `{name}` is listed twice"));
                }
            }
        }
        if let Some(both) = p.columns.iter().find(|c| p.exclude.contains(c)) {
            return Err(format!("exclude: `{both}` is also in columns"));
        }
        Ok(())
    }

    fn run(&self, p: Params, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        let source = ctx.input("source")?.to_path_buf();
        let listing = list_partitions(&source)?;
        let selected = select(&listing.files, &p);
        if selected.is_empty() {
            return Err(LoadParquetError::NoPartitions {
                source_dir: source,
                filters: describe_filters(&p),
                total: listing.files.len(),
                others: listing.others,
                examples: listing
                    .files
                    .iter()
                    .take(3)
                    .map(|f| f.rel.clone())
                    .collect(),
            }
            .into());
        }
        let metas = selected
            .iter()
            .map(|part| open_meta(&part.path))
            .collect::<Result<Vec<_>, _>>()?;
        let mut plan = plan_columns(&source, &selected, &metas, &p)?;
        let total_rows: u64 = metas.iter().map(|m| m.rows).sum();
        let out = ctx.output("events")?.to_path_buf();
        let bar = ctx.progress.bar(ctx.stage, "read", total_rows);
        let rows = loop {
            anyhow::ensure!(
                !plan.kept.is_empty(),
                "{}: no column left to load ({})",
                source.display(),
                plan.dropped_text()
            );
            bar.set_position(0);
            match stream(&selected, &metas, &plan, &out.join("events.parquet"), &bar) {
                Ok(rows) => break rows,
                Err(StreamError::Column {
                    file,
                    column,
                    message,
                }) if p.skip_unreadable_columns && !p.columns.contains(&column) => {
                    plan.kept.retain(|c| c.name != column);
                    plan.dropped.push(Dropped {
                        name: column,
                        reason: format!("cannot be read in {file}: {message}"),
                    });
                }
                Err(StreamError::Column {
                    file,
                    column,
                    message,
                }) => {
                    return Err(LoadParquetError::UnreadableColumn {
                        file: source.join(&file),
                        column,
                        message,
                    }
                    .into())
                }
                Err(StreamError::Other(e)) => return Err(e),
            }
        };
        bar.finish_and_clear();

        let record = PartitionsRecord {
            files_total: listing.files.len(),
            other_files: listing.others,
            rows: rows.iter().sum(),
            partitions: selected
                .iter()
                .zip(&rows)
                .map(|(part, rows)| SelectedPartition {
                    path: part.rel.clone(),
                    day: part.day.clone(),
                    rows: *rows,
                })
                .collect(),
            columns: plan
                .kept
                .iter()
                .map(|c| KeptColumn {
                    name: c.name.clone(),
                    r#type: c.ty.to_string(),
                    widened_from: c.widened_from.iter().map(|t| t.to_string()).collect(),
                })
                .collect(),
            dropped: plan.dropped.clone(),
        };
        std::fs::write(
            out.join("partitions.json"),
            serde_json::to_string_pretty(&record)? + "\n",
        )?;
        let summary = summary(&record, &p);
        std::fs::write(out.join("summary.txt"), format!("{summary}\n"))?;
        ctx.note("rows", record.rows);
        ctx.note(
            "partitions",
            format!("{} of {}", record.partitions.len(), record.files_total),
        );
        if !record.dropped.is_empty() {
            ctx.note("dropped_columns", plan.dropped_text());
        }
        Ok(())
    }
}

/// What `load.parquet` refuses, naming the folder, file or column.
#[derive(Debug, thiserror::Error)]
pub enum LoadParquetError {
    #[error("{}: not a folder", .path.display())]
    NoSource { path: PathBuf },
    #[error("{}: no partition selected ({filters}); the folder holds {total} Parquet file(s){}{}", .source_dir.display(),
        if .examples.is_empty() { String::new() } else { format!(", e.g. {}", .examples.join(", ")) },
        if *.others > 0 { format!(", and {} other file(s), ignored", .others) } else { String::new() })]
    NoPartitions {
        source_dir: PathBuf,
        filters: String,
        total: usize,
        others: usize,
        examples: Vec<String>,
    },
    #[error("{}: not a Parquet file (no PAR1 magic); remove it or narrow `match`", .file.display())]
    NotParquet { file: PathBuf },
    #[error("{}: a damaged Parquet file: {message}", .file.display())]
    Damaged { file: PathBuf, message: String },
    #[error("{param}: no column `{name}` in the {partitions} selected partition(s) of {} ({hint})", .source_dir.display())]
    UnknownColumn {
        param: &'static str,
        name: String,
        source_dir: PathBuf,
        partitions: usize,
        hint: String,
    },
    #[error(
        "column `{name}` is {first_type} in {first_file} but {other_type} in {other_file}; {help}"
    )]
    TypeConflict {
        name: String,
        first_type: String,
        first_file: String,
        other_type: String,
        other_file: String,
        help: &'static str,
    },
    #[error("{}: column `{column}` cannot be read ({message}); add it to `exclude`", .file.display())]
    UnreadableColumn {
        file: PathBuf,
        column: String,
        message: String,
    },
}

/// A Parquet file under the source folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Partition {
    pub path: PathBuf,
    /// Relative to the source, `/`-separated.
    pub rel: String,
    /// The first `YYYY-MM-DD` in `rel`.
    pub day: Option<String>,
}

/// The Parquet files under a folder, sorted by relative path, and how
/// many other (non-hidden) files it holds.
#[derive(Debug, Clone)]
pub struct Listing {
    pub files: Vec<Partition>,
    pub others: usize,
}

/// Walks `source` recursively (skipping names starting with `.` or `_`).
pub fn list_partitions(source: &Path) -> anyhow::Result<Listing> {
    if !source.is_dir() {
        return Err(LoadParquetError::NoSource {
            path: source.to_path_buf(),
        }
        .into());
    }
    let mut listing = Listing {
        files: Vec::new(),
        others: 0,
    };
    walk(source, "", 0, &mut listing)?;
    listing.files.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(listing)
}

fn walk(dir: &Path, prefix: &str, depth: usize, out: &mut Listing) -> anyhow::Result<()> {
    use anyhow::Context;
    anyhow::ensure!(
        depth < 64,
        "{}: folders nested over 64 deep (a symlink loop?)",
        dir.display()
    );
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let path = entry.path();
        let rel = format!("{prefix}{name}");
        if path.is_dir() {
            walk(&path, &format!("{rel}/"), depth + 1, out)?;
        } else if name.to_ascii_lowercase().ends_with(".parquet") {
            let day = day_of(&rel);
            out.files.push(Partition { path, rel, day });
        } else {
            out.others += 1;
        }
    }
    Ok(())
}

/// The partitions that `match`, the day range and `limit` keep, in order.
pub fn select(files: &[Partition], p: &Params) -> Vec<Partition> {
    let ranged = !p.day_from.is_empty() || !p.day_to.is_empty();
    let mut kept: Vec<Partition> = files
        .iter()
        .filter(|f| p.pattern.keeps(&f.rel))
        .filter(|f| {
            if !ranged {
                return true;
            }
            let Some(day) = &f.day else { return false };
            (p.day_from.is_empty() || day.as_str() >= p.day_from.as_str())
                && (p.day_to.is_empty() || day.as_str() <= p.day_to.as_str())
        })
        .cloned()
        .collect();
    if p.limit > 0 {
        kept.truncate(p.limit);
    }
    kept
}

/// `match`: one term, or a list of terms of which any may keep a file. A
/// single term serialises as the plain string it was, so specs written
/// before lists existed keep their keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Match {
    One(String),
    Any(Vec<String>),
}

impl Match {
    pub fn terms(&self) -> &[String] {
        match self {
            Match::One(term) => std::slice::from_ref(term),
            Match::Any(terms) => terms,
        }
    }

    /// Whether some term keeps the file at `rel` (an empty list keeps none).
    pub fn keeps(&self, rel: &str) -> bool {
        self.terms().iter().any(|t| matches(t, rel))
    }

    /// The first term that is not a valid glob, with the reason.
    fn invalid(&self) -> Option<String> {
        self.terms().iter().find_map(|t| {
            let error = is_glob(t).then(|| glob::Pattern::new(t).err()).flatten()?;
            Some(format!("`{t}` is not a valid glob: {error}"))
        })
    }
}

/// `match` semantics for one term: "" matches everything; text without
/// `*`, `?` or `[` is a substring test; otherwise a glob over the whole
/// relative path, where `*` crosses `/`.
pub fn matches(pattern: &str, rel: &str) -> bool {
    if pattern.is_empty() {
        true
    } else if is_glob(pattern) {
        let options = glob::MatchOptions {
            require_literal_separator: false,
            ..glob::MatchOptions::new()
        };
        glob::Pattern::new(pattern).is_ok_and(|g| g.matches_with(rel, options))
    } else {
        rel.contains(pattern)
    }
}

fn is_glob(term: &str) -> bool {
    term.contains(['*', '?', '['])
}

/// The first `YYYY-MM-DD` (a valid date, not touching other digits) in a
/// relative path.
pub fn day_of(rel: &str) -> Option<String> {
    let b = rel.as_bytes();
    (0..b.len().saturating_sub(9)).find_map(|i| {
        let w = &rel[i..i + 10];
        let before = i > 0 && b[i - 1].is_ascii_digit();
        let after = b.get(i + 10).is_some_and(|c| c.is_ascii_digit());
        (!before && !after && is_day(w)).then(|| w.to_string())
    })
}

/// `YYYY-MM-DD` with a real month and day (leap years included).
pub fn is_day(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        if b[r.clone()].iter().all(u8::is_ascii_digit) {
            s[r].parse().ok()
        } else {
            None
        }
    };
    let (Some(y), Some(m), Some(d)) = (digits(0..4), digits(5..7), digits(8..10)) else {
        return false;
    };
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

fn describe_filters(p: &Params) -> String {
    let mut parts = vec![if p.pattern.terms().iter().all(|t| t.is_empty()) {
        "match: all".to_string()
    } else {
        let terms: Vec<String> = p.pattern.terms().iter().map(|t| format!("`{t}`")).collect();
        format!("match {}", terms.join(" or "))
    }];
    if !p.day_from.is_empty() || !p.day_to.is_empty() {
        let open = |d: &str| {
            if d.is_empty() {
                "open".to_string()
            } else {
                d.to_string()
            }
        };
        parts.push(format!(
            "days {}..{} (files without a YYYY-MM-DD in their path are left out)",
            open(&p.day_from),
            open(&p.day_to)
        ));
    }
    if p.limit > 0 {
        parts.push(format!("limit {}", p.limit));
    }
    parts.join(", ")
}

/// A partition's footer, read as Arrow.
struct FileMeta {
    meta: ArrowReaderMetadata,
    rows: u64,
}

fn open_meta(path: &Path) -> anyhow::Result<FileMeta> {
    use anyhow::Context;
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let meta = match ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()) {
        Ok(meta) => meta,
        Err(err) => {
            if !has_magic(path) {
                return Err(LoadParquetError::NotParquet {
                    file: path.to_path_buf(),
                }
                .into());
            }
            // The embedded Arrow schema may be what fails; the Parquet
            // schema alone often still reads.
            ArrowReaderMetadata::load(
                &file,
                ArrowReaderOptions::new().with_skip_arrow_metadata(true),
            )
            .map_err(|_| LoadParquetError::Damaged {
                file: path.to_path_buf(),
                message: err.to_string(),
            })?
        }
    };
    let rows = meta.metadata().file_metadata().num_rows().max(0) as u64;
    Ok(FileMeta { meta, rows })
}

/// Whether the file starts and ends with `PAR1`.
fn has_magic(path: &Path) -> bool {
    let check = || -> std::io::Result<bool> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        if len < 12 {
            return Ok(false);
        }
        let (mut head, mut tail) = ([0u8; 4], [0u8; 4]);
        f.read_exact(&mut head)?;
        f.seek(SeekFrom::End(-4))?;
        f.read_exact(&mut tail)?;
        Ok(&head == b"PAR1" && &tail == b"PAR1")
    };
    check().unwrap_or(false)
}

/// An output column.
#[derive(Debug, Clone)]
struct Column {
    name: String,
    ty: DataType,
    nullable: bool,
    /// Narrower types seen in some partitions, cast to `ty`.
    widened_from: Vec<DataType>,
}

/// A column left out, and why.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Dropped {
    pub name: String,
    pub reason: String,
}

struct Plan {
    kept: Vec<Column>,
    dropped: Vec<Dropped>,
}

impl Plan {
    fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.kept
                .iter()
                .map(|c| Field::new(&c.name, c.ty.clone(), c.nullable))
                .collect::<Vec<_>>(),
        ))
    }

    fn dropped_text(&self) -> String {
        if self.dropped.is_empty() {
            return "none dropped".into();
        }
        self.dropped
            .iter()
            .map(|d| format!("{}: {}", d.name, d.reason))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Decides the output columns and their types from the partitions' schemas.
fn plan_columns(
    source: &Path,
    parts: &[Partition],
    metas: &[FileMeta],
    p: &Params,
) -> anyhow::Result<Plan> {
    // name → (file index, type, nullable) per partition holding it, in order
    // of first appearance.
    let mut order: Vec<String> = Vec::new();
    let mut seen: HashMap<String, Vec<(usize, DataType, bool)>> = HashMap::new();
    for (i, m) in metas.iter().enumerate() {
        for f in m.meta.schema().fields() {
            let entry = seen.entry(f.name().clone()).or_insert_with(|| {
                order.push(f.name().clone());
                Vec::new()
            });
            entry.push((i, f.data_type().clone(), f.is_nullable()));
        }
    }
    let unknown = |param: &'static str, name: &str| LoadParquetError::UnknownColumn {
        param,
        name: name.to_string(),
        source_dir: source.to_path_buf(),
        partitions: parts.len(),
        hint: table::column_hint(name, order.iter().map(String::as_str)),
    };
    for (param, list) in [("columns", &p.columns), ("exclude", &p.exclude)] {
        if let Some(name) = list.iter().find(|n| !seen.contains_key(*n)) {
            return Err(unknown(param, name).into());
        }
    }
    let wanted: Vec<&String> = if p.columns.is_empty() {
        order.iter().filter(|n| !p.exclude.contains(n)).collect()
    } else {
        p.columns.iter().collect()
    };
    let mut plan = Plan {
        kept: Vec::new(),
        dropped: Vec::new(),
    };
    for name in wanted {
        let found = &seen[name];
        let (first, ty0, _) = &found[0];
        let mut ty = ty0.clone();
        let mut conflict = None;
        for (i, t, _) in &found[1..] {
            match widen(&ty, t) {
                Some(w) => ty = w,
                None => {
                    conflict = Some((*i, t.clone()));
                    break;
                }
            }
        }
        if let Some((other, other_ty)) = conflict {
            let named = p.columns.contains(name);
            if named || !p.skip_unreadable_columns {
                return Err(LoadParquetError::TypeConflict {
                    name: name.clone(),
                    first_type: ty0.to_string(),
                    first_file: parts[*first].rel.clone(),
                    other_type: other_ty.to_string(),
                    other_file: parts[other].rel.clone(),
                    help: if named {
                        "remove it from `columns` to load the rest"
                    } else {
                        "add it to `exclude`, or set skip_unreadable_columns = true to drop it"
                    },
                }
                .into());
            }
            plan.dropped.push(Dropped {
                name: name.clone(),
                reason: format!(
                    "type differs across partitions: {ty0} in {}, {other_ty} in {}",
                    parts[*first].rel, parts[other].rel
                ),
            });
            continue;
        }
        let mut widened_from: Vec<DataType> = Vec::new();
        for (_, t, _) in found {
            if *t != ty && !widened_from.contains(t) {
                widened_from.push(t.clone());
            }
        }
        plan.kept.push(Column {
            name: name.clone(),
            nullable: found.len() < metas.len() || found.iter().any(|(_, _, n)| *n),
            ty,
            widened_from,
        });
    }
    Ok(plan)
}

/// The common type of two partitions' column types, when one holds the
/// other's values exactly: integer widths (same signedness) and float
/// widths.
fn widen(a: &DataType, b: &DataType) -> Option<DataType> {
    use DataType::*;
    if a == b {
        return Some(a.clone());
    }
    let rank = |t: &DataType| -> Option<(u8, u8)> {
        Some(match t {
            Int8 => (0, 0),
            Int16 => (0, 1),
            Int32 => (0, 2),
            Int64 => (0, 3),
            UInt8 => (1, 0),
            UInt16 => (1, 1),
            UInt32 => (1, 2),
            UInt64 => (1, 3),
            Float16 => (2, 0),
            Float32 => (2, 1),
            Float64 => (2, 2),
            _ => return None,
        })
    };
    let (ra, rb) = (rank(a)?, rank(b)?);
    (ra.0 == rb.0).then(|| if ra.1 >= rb.1 { a.clone() } else { b.clone() })
}

enum StreamError {
    /// A column cannot be read in partition `file` (relative path).
    Column {
        file: String,
        column: String,
        message: String,
    },
    Other(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for StreamError {
    fn from(e: E) -> Self {
        StreamError::Other(e.into())
    }
}

/// Streams the kept columns of every selected partition into `out`;
/// returns the rows per partition.
fn stream(
    parts: &[Partition],
    metas: &[FileMeta],
    plan: &Plan,
    out: &Path,
    bar: &seqpipe::progress::Bar,
) -> Result<Vec<u64>, StreamError> {
    let schema = plan.schema();
    // Encoding runs on its own thread, and each partition is decoded a
    // few batches ahead on another: the writer gets the same batches in
    // the same order, so the file's bytes do not change.
    let mut writer =
        table::ThreadedWriter::create(out, schema.clone(), table::Dictionary::StringsOnly)?;
    let mut rows = Vec::with_capacity(parts.len());
    for (part, m) in parts.iter().zip(metas) {
        let file_schema = m.meta.schema();
        let roots: Vec<usize> = file_schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| plan.kept.iter().any(|c| c.name == *f.name()))
            .map(|(i, _)| i)
            .collect();
        let reader = |roots: Vec<usize>| -> anyhow::Result<_> {
            let file = File::open(&part.path)?;
            let mask = ProjectionMask::roots(m.meta.parquet_schema(), roots);
            Ok(
                ParquetRecordBatchReaderBuilder::new_with_metadata(file, m.meta.clone())
                    .with_projection(mask)
                    .with_batch_size(BATCH_ROWS)
                    .build()?,
            )
        };
        let mut here = 0u64;
        let batches = reader(roots.clone())?.map(|b| b.map_err(anyhow::Error::from));
        for batch in table::prefetched(batches) {
            let batch = match batch {
                Ok(b) => b,
                Err(err) => {
                    // Find the column at fault by reading each alone.
                    for &root in &roots {
                        for b in reader(vec![root])? {
                            if let Err(e) = b {
                                return Err(StreamError::Column {
                                    file: part.rel.clone(),
                                    column: file_schema.field(root).name().clone(),
                                    message: e.to_string(),
                                });
                            }
                        }
                    }
                    return Err(StreamError::Other(anyhow::anyhow!(
                        "{}: cannot read: {err}",
                        part.path.display()
                    )));
                }
            };
            let n = batch.num_rows();
            let columns = schema
                .fields()
                .iter()
                .map(|f| -> anyhow::Result<ArrayRef> {
                    Ok(match batch.column_by_name(f.name()) {
                        Some(c) if c.data_type() == f.data_type() => c.clone(),
                        Some(c) => arrow::compute::cast(c, f.data_type())?,
                        None => new_null_array(f.data_type(), n),
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let batch = RecordBatch::try_new_with_options(
                schema.clone(),
                columns,
                &RecordBatchOptions::new().with_row_count(Some(n)),
            )?;
            writer.write(batch)?;
            here += n as u64;
            bar.inc(n as u64);
        }
        rows.push(here);
    }
    writer.close()?;
    Ok(rows)
}

#[derive(Serialize)]
struct PartitionsRecord {
    files_total: usize,
    other_files: usize,
    rows: u64,
    partitions: Vec<SelectedPartition>,
    columns: Vec<KeptColumn>,
    dropped: Vec<Dropped>,
}

#[derive(Serialize)]
struct SelectedPartition {
    path: String,
    day: Option<String>,
    rows: u64,
}

#[derive(Serialize)]
struct KeptColumn {
    name: String,
    r#type: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    widened_from: Vec<String>,
}

/// One paragraph: files selected of total, filters, rows, columns kept and
/// dropped.
fn summary(r: &PartitionsRecord, p: &Params) -> String {
    let kept: Vec<&str> = r.columns.iter().map(|c| c.name.as_str()).collect();
    let mut s = format!(
        "load.parquet: {} of {} partition files selected ({}); {} rows; {} columns kept ({})",
        r.partitions.len(),
        r.files_total,
        describe_filters(p).replace(
            " (files without a YYYY-MM-DD in their path are left out)",
            ""
        ),
        r.rows,
        kept.len(),
        kept.join(", ")
    );
    let widened: Vec<String> = r
        .columns
        .iter()
        .filter(|c| !c.widened_from.is_empty())
        .map(|c| format!("{} ({} → {})", c.name, c.widened_from.join(", "), c.r#type))
        .collect();
    if !widened.is_empty() {
        s += &format!("; widened {}", widened.join(", "));
    }
    if !p.exclude.is_empty() {
        s += &format!("; excluded {}", p.exclude.join(", "));
    }
    if r.dropped.is_empty() {
        s += "; none dropped.";
    } else {
        let dropped: Vec<String> = r
            .dropped
            .iter()
            .map(|d| format!("{} ({})", d.name, d.reason))
            .collect();
        s += &format!("; {} dropped: {}.", r.dropped.len(), dropped.join("; "));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_globs() {
        assert_eq!(
            day_of("clicks/day=2024-01-03/part-0.parquet").as_deref(),
            Some("2024-01-03")
        );
        assert_eq!(day_of("a/2024-02-30.parquet"), None);
        assert_eq!(day_of("a/12024-02-03.parquet"), None);
        assert_eq!(
            day_of("x2024-02-29/2023-01-01.parquet").as_deref(),
            Some("2024-02-29")
        );
        assert!(!is_day("2023-02-29"));
        assert!(is_day("2000-02-29"));
        assert!(matches("", "a/b.parquet"));
        assert!(matches("clicks", "t/clicks/x.parquet"));
        assert!(!matches("views", "t/clicks/x.parquet"));
        assert!(matches("*/clicks/*.parquet", "t/clicks/x.parquet"));
        assert!(matches("t/clicks/?.parquet", "t/clicks/x.parquet"));
        assert!(!matches("t/clicks/?.parquet", "t/clicks/xy.parquet"));
        assert!(!matches("clicks/*", "t/clicks/x.parquet"));
        assert!(matches("*é?.parquet", "aé1.parquet"));
        assert!(matches("events/[rm]*/*.parquet", "events/retail/d.parquet"));
        assert!(!matches(
            "events/[rm]*/*.parquet",
            "events/payments/d.parquet"
        ));
    }

    #[test]
    fn a_match_list_keeps_what_any_term_keeps_and_one_term_keeps_its_key() {
        let p: Params =
            toml::from_str(r#"match = ["events/retail/", "events/marketplace/*.parquet"]"#)
                .unwrap();
        let kept: Vec<&str> = [
            "events/retail/a.parquet",
            "events/marketplace/b.parquet",
            "events/payments/c.parquet",
        ]
        .into_iter()
        .filter(|rel| p.pattern.keeps(rel))
        .collect();
        assert_eq!(
            kept,
            ["events/retail/a.parquet", "events/marketplace/b.parquet"]
        );
        assert_eq!(
            describe_filters(&p),
            "match `events/retail/` or `events/marketplace/*.parquet`"
        );
        // A single term is the same JSON as before lists, so the same key.
        let one: Params = toml::from_str(r#"match = "events/*r*/*.parquet""#).unwrap();
        let json = serde_json::to_value(&one).unwrap();
        assert_eq!(json["match"], serde_json::json!("events/*r*/*.parquet"));
        // Refused at plan time, naming the term.
        let bad: Params = toml::from_str(r#"match = ["ok", "events/[retail"]"#).unwrap();
        let err = LoadParquet.validate(&bad).unwrap_err();
        assert!(
            err.starts_with("match: `events/[retail` is not a valid glob"),
            "{err}"
        );
        let empty: Params = toml::from_str("match = []").unwrap();
        assert!(LoadParquet
            .validate(&empty)
            .unwrap_err()
            .contains("empty list"));
    }

    #[test]
    fn widening() {
        use DataType::*;
        assert_eq!(widen(&Int32, &Int64), Some(Int64));
        assert_eq!(widen(&Float64, &Float32), Some(Float64));
        assert_eq!(widen(&Int64, &Float64), None);
        assert_eq!(widen(&Int64, &UInt64), None);
        assert_eq!(widen(&Utf8, &LargeUtf8), None);
    }
}

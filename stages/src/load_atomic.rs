//! `load.atomic` — interactions (and item/user features) from RecBole atomic
//! files.
//!
//! Params (defaults): `dataset` ("" = the single `.inter` file in the
//! folder) file stem to read, `min_rating` (none) drop interactions whose
//! rating is below it (or missing), `columns` ([] = all) interaction columns
//! to keep besides the user, item and time columns, `user_column`
//! ("user_id"), `item_column` ("item_id"), `time_column` ("timestamp"),
//! `rating_column` ("rating", only read when `min_rating` is set).
//! Inputs: `source` (path: a folder holding `<dataset>.inter` and optionally
//! `<dataset>.item` / `<dataset>.user`, or an `.inter` file itself).
//! Outputs: `events` (table: `events.parquet` + `summary.txt`), `items` and
//! `users` (table: `items.parquet` / `users.parquet` when the source has
//! those files, else empty).
//!
//! The format: tab-separated, first line `name:type` per column, types
//! `token`, `token_seq`, `float`, `float_seq` (RecBole's). Column types in
//! Parquet:
//!
//! | atomic type | Parquet |
//! |---|---|
//! | `token`     | int64 when every value in the column is a canonical decimal integer (`42`, `-7`; not `007` or `+7`), else utf8 |
//! | `float`     | float64 |
//! | `token_seq` | list<utf8>, split on spaces |
//! | `float_seq` | list<float64>, split on spaces |
//!
//! Numeric ids become int64 because `sequences` reads int64 user and item
//! ids (and remaps items by their numeric order); the "canonical" rule keeps
//! ids like zip code `01002` as text instead of silently turning them into
//! `1002`. An empty `token` or `float` field is a null; an empty `*_seq`
//! field is an empty list. Rows keep the file's order, which `sequences`
//! uses to break timestamp ties. Only the kept columns (and the rating
//! column when filtering) are parsed, so junk in an unused column is not an
//! error.
//!
//! Errors ([`AtomicError`]) name the file, the line and the column.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
};
use seqpipe::stage::{KindInfo, ParamDoc, Port, Resource, StageContext, TypedStage};
use serde::{Deserialize, Serialize};

use crate::table;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    pub dataset: String,
    pub min_rating: Option<f64>,
    pub columns: Vec<String>,
    pub user_column: String,
    pub item_column: String,
    pub time_column: String,
    pub rating_column: String,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            dataset: String::new(),
            min_rating: None,
            columns: Vec::new(),
            user_column: "user_id".into(),
            item_column: "item_id".into(),
            time_column: "timestamp".into(),
            rating_column: "rating".into(),
        }
    }
}

pub struct LoadAtomic;

pub const VERSION: u32 = 1;

impl TypedStage for LoadAtomic {
    type Params = Params;

    fn info(&self) -> KindInfo {
        KindInfo {
            kind: "load.atomic",
            version: VERSION,
            summary:
                "Reads RecBole atomic files (.inter, optional .item/.user) into Parquet tables.",
            inputs: vec![Port {
                optional: false,
                name: "source",
                ty: "path",
                doc: "a folder with <dataset>.inter (+ .item, .user), or an .inter file",
            }],
            extra_inputs: None,
            outputs: vec![
                Port {
                    optional: false,
                    name: "events",
                    ty: "table",
                    doc: "events.parquet: the .inter rows (token ids → int64 when numeric)",
                },
                Port {
                    optional: false,
                    name: "items",
                    ty: "table",
                    doc: "items.parquet from <dataset>.item (empty when absent)",
                },
                Port {
                    optional: false,
                    name: "users",
                    ty: "table",
                    doc: "users.parquet from <dataset>.user (empty when absent)",
                },
            ],
            params: vec![
                ParamDoc {
                    name: "dataset",
                    doc:
                        "file stem, e.g. \"ml-100k\" (\"\" = the single .inter file in the folder)",
                },
                ParamDoc {
                    name: "min_rating",
                    doc: "drop interactions rated below this (unset = keep all)",
                },
                ParamDoc {
                    name: "columns",
                    doc: "interaction columns to keep besides user/item/time ([] = all)",
                },
                ParamDoc {
                    name: "user_column",
                    doc: "user id column (required)",
                },
                ParamDoc {
                    name: "item_column",
                    doc: "item id column (required)",
                },
                ParamDoc {
                    name: "time_column",
                    doc: "timestamp column (required)",
                },
                ParamDoc {
                    name: "rating_column",
                    doc: "rating column, read when min_rating is set",
                },
            ],
            resource: Resource::Cpu,
        }
    }

    fn validate(&self, p: &Params) -> Result<(), String> {
        if p.dataset.contains(['/', '\\']) {
            return Err(format!(
                "dataset: `{}` is a file stem, not a path (point inputs.source at the folder)",
                p.dataset
            ));
        }
        if let Some(r) = p.min_rating {
            if !r.is_finite() {
                return Err(format!("min_rating: {r} is not a finite number"));
            }
        }
        Ok(())
    }

    fn run(&self, p: Params, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        let files = locate(ctx.input("source")?, &p.dataset)?;
        let bar = ctx.progress.bar(ctx.stage, "read", 3);
        let read = ReadOptions::for_events(&p);
        let (events, total) = read_atomic(&files.inter, &read)?;
        if events.num_rows() == 0 {
            return Err(AtomicError::Empty {
                file: files.inter.clone(),
                why: match p.min_rating {
                    Some(r) => format!("no row has `{}` ≥ {r}", p.rating_column),
                    None => "no data rows".into(),
                },
            }
            .into());
        }
        let out = ctx.output("events")?;
        table::write(&out.join("events.parquet"), &events)?;
        let summary = summary(&files.inter, &events, total, &p);
        std::fs::write(out.join("summary.txt"), format!("{summary}\n"))?;
        ctx.note("events", summary);
        bar.inc(1);
        for (side, name, file) in [
            ("items", "items.parquet", &files.item),
            ("users", "users.parquet", &files.user),
        ] {
            if let Some(file) = file {
                let (batch, _) = read_atomic(file, &ReadOptions::default())?;
                table::write(&ctx.output(side)?.join(name), &batch)?;
                ctx.note(
                    side,
                    format!("{}: {} rows", file.display(), batch.num_rows()),
                );
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(())
    }
}

/// "ml-100k.inter: 100000 rows kept of 100000, 943 users, 1682 items".
fn summary(file: &Path, events: &RecordBatch, total: usize, p: &Params) -> String {
    let distinct = |name: &str| -> usize {
        let Some(col) = events.column_by_name(name) else {
            return 0;
        };
        if let Some(a) = col.as_any().downcast_ref::<Int64Array>() {
            a.iter().collect::<std::collections::HashSet<_>>().len()
        } else if let Some(a) = col.as_any().downcast_ref::<StringArray>() {
            a.iter().collect::<std::collections::HashSet<_>>().len()
        } else {
            0
        }
    };
    let name = file.file_name().unwrap_or_default().to_string_lossy();
    format!(
        "{name}: {} of {total} rows kept, {} users, {} items",
        events.num_rows(),
        distinct(&p.user_column),
        distinct(&p.item_column)
    )
}

/// What went wrong reading atomic files; every variant names the file, and
/// the line and column where there is one (lines count from 1, the header
/// is line 1).
#[derive(Debug, thiserror::Error)]
pub enum AtomicError {
    #[error("{path}: no such file or folder")]
    NoSource { path: PathBuf },
    #[error("{folder}: no `{stem}.inter` file ({hint})")]
    MissingFile {
        folder: PathBuf,
        stem: String,
        hint: String,
    },
    #[error("{folder}: {} .inter files ({}); set params.dataset to one of their stems", .stems.len(), .stems.join(", "))]
    Ambiguous { folder: PathBuf, stems: Vec<String> },
    #[error("{file}: not an .inter file; set inputs.source to it or to its folder")]
    NotInter { file: PathBuf },
    #[error("{file}:1: column {column}: {message}")]
    BadHeader {
        file: PathBuf,
        column: usize,
        message: String,
    },
    #[error("{file}:1: no column `{name}` ({hint})")]
    MissingColumn {
        file: PathBuf,
        name: String,
        hint: String,
    },
    #[error("{file}:{line}: {found} tab-separated fields, the header has {expected}")]
    FieldCount {
        file: PathBuf,
        line: usize,
        found: usize,
        expected: usize,
    },
    #[error("{file}:{line}: column {column} `{name}`: cannot parse `{value}` as {ty}")]
    BadValue {
        file: PathBuf,
        line: usize,
        column: usize,
        name: String,
        value: String,
        ty: &'static str,
    },
    #[error("{file}: {why}")]
    Empty { file: PathBuf, why: String },
    #[error("{file}:{line}: {source}")]
    Io {
        file: PathBuf,
        line: usize,
        source: std::io::Error,
    },
}

/// The files of one atomic dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Files {
    pub inter: PathBuf,
    pub item: Option<PathBuf>,
    pub user: Option<PathBuf>,
}

/// Finds `<dataset>.inter` (and its `.item`/`.user` siblings) in `source`,
/// a folder or an `.inter` file.
pub fn locate(source: &Path, dataset: &str) -> Result<Files, AtomicError> {
    let (folder, stem) = if source.is_file() {
        if source.extension().is_none_or(|e| e != "inter") {
            return Err(AtomicError::NotInter {
                file: source.to_path_buf(),
            });
        }
        let stem = source
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if !dataset.is_empty() && dataset != stem {
            return Err(AtomicError::MissingFile {
                folder: source.parent().unwrap_or(Path::new(".")).to_path_buf(),
                stem: dataset.to_string(),
                hint: format!("inputs.source is the file `{stem}.inter`; drop params.dataset or point source at the folder"),
            });
        }
        (
            source.parent().unwrap_or(Path::new(".")).to_path_buf(),
            stem,
        )
    } else if source.is_dir() {
        let stems = inter_stems(source)?;
        let stem = if dataset.is_empty() {
            match stems.as_slice() {
                [one] => one.clone(),
                [] => {
                    return Err(AtomicError::MissingFile {
                        folder: source.to_path_buf(),
                        stem: "*".into(),
                        hint: "the folder holds no .inter file".into(),
                    })
                }
                _ => {
                    return Err(AtomicError::Ambiguous {
                        folder: source.to_path_buf(),
                        stems,
                    })
                }
            }
        } else if stems.iter().any(|s| s == dataset) {
            dataset.to_string()
        } else {
            let hint = seqpipe::spec::did_you_mean(dataset, stems.iter().map(String::as_str))
                .unwrap_or_else(|| {
                    if stems.is_empty() {
                        "the folder holds no .inter file".into()
                    } else {
                        format!("its datasets are: {}", stems.join(", "))
                    }
                });
            return Err(AtomicError::MissingFile {
                folder: source.to_path_buf(),
                stem: dataset.to_string(),
                hint,
            });
        };
        (source.to_path_buf(), stem)
    } else {
        return Err(AtomicError::NoSource {
            path: source.to_path_buf(),
        });
    };
    let sibling = |ext: &str| Some(folder.join(format!("{stem}.{ext}"))).filter(|p| p.is_file());
    Ok(Files {
        inter: folder.join(format!("{stem}.inter")),
        item: sibling("item"),
        user: sibling("user"),
    })
}

/// Stems of the `.inter` files in a folder, sorted.
fn inter_stems(folder: &Path) -> Result<Vec<String>, AtomicError> {
    let io = |source| AtomicError::Io {
        file: folder.to_path_buf(),
        line: 0,
        source,
    };
    let mut stems = Vec::new();
    for entry in std::fs::read_dir(folder).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "inter") {
            stems.push(
                path.file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    stems.sort();
    Ok(stems)
}

/// Which columns to read and which rows to keep.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Columns that must exist (always kept).
    pub required: Vec<String>,
    /// Further columns to keep; `None` keeps every column.
    pub keep: Option<Vec<String>>,
    /// Keep only rows whose float column is ≥ the threshold (nulls dropped).
    pub at_least: Option<(String, f64)>,
}

impl ReadOptions {
    fn for_events(p: &Params) -> ReadOptions {
        ReadOptions {
            required: vec![
                p.user_column.clone(),
                p.item_column.clone(),
                p.time_column.clone(),
            ],
            keep: (!p.columns.is_empty()).then(|| p.columns.clone()),
            at_least: p.min_rating.map(|r| (p.rating_column.clone(), r)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum AtomicType {
    Token,
    TokenSeq,
    Float,
    FloatSeq,
}

const TYPES: [&str; 4] = ["token", "token_seq", "float", "float_seq"];

impl AtomicType {
    fn parse(s: &str) -> Option<AtomicType> {
        Some(match s {
            "token" => AtomicType::Token,
            "token_seq" => AtomicType::TokenSeq,
            "float" => AtomicType::Float,
            "float_seq" => AtomicType::FloatSeq,
            _ => return None,
        })
    }
}

/// A column being filled, row by row.
enum Column {
    /// Token column whose values so far are all canonical integers.
    TokenInt(Vec<Option<i64>>),
    TokenStr(StringBuilder),
    Float(Float64Builder),
    TokenSeq(ListBuilder<StringBuilder>),
    FloatSeq(ListBuilder<Float64Builder>),
}

impl Column {
    fn new(ty: AtomicType) -> Column {
        match ty {
            AtomicType::Token => Column::TokenInt(Vec::new()),
            AtomicType::Float => Column::Float(Float64Builder::new()),
            AtomicType::TokenSeq => Column::TokenSeq(ListBuilder::new(StringBuilder::new())),
            AtomicType::FloatSeq => Column::FloatSeq(ListBuilder::new(Float64Builder::new())),
        }
    }

    /// Appends one field; `Err` names the type it failed to parse as.
    fn push(&mut self, value: &str) -> Result<(), &'static str> {
        match self {
            Column::TokenInt(ints) => {
                if value.is_empty() {
                    ints.push(None);
                } else if let Some(v) = canonical_int(value) {
                    ints.push(Some(v));
                } else {
                    // The first non-integer id turns the whole column into
                    // text; the integers so far print back to their exact
                    // original spelling because they were canonical.
                    let mut strs = StringBuilder::new();
                    for v in ints.iter() {
                        strs.append_option(v.map(|v| v.to_string()));
                    }
                    strs.append_value(value);
                    *self = Column::TokenStr(strs);
                }
            }
            Column::TokenStr(b) => {
                if value.is_empty() {
                    b.append_null()
                } else {
                    b.append_value(value)
                }
            }
            Column::Float(b) => b.append_option(parse_float(value)?),
            Column::TokenSeq(b) => {
                for t in value.split(' ').filter(|t| !t.is_empty()) {
                    b.values().append_value(t);
                }
                b.append(true);
            }
            Column::FloatSeq(b) => {
                // Parse first so that a bad element leaves no half-pushed list.
                let values = value
                    .split(' ')
                    .filter(|t| !t.is_empty())
                    .map(|t| t.parse::<f64>().map_err(|_| "float_seq"))
                    .collect::<Result<Vec<_>, _>>()?;
                b.values().append_slice(&values);
                b.append(true);
            }
        }
        Ok(())
    }

    fn finish(self) -> ArrayRef {
        match self {
            Column::TokenInt(ints) => Arc::new(Int64Array::from(ints)),
            Column::TokenStr(mut b) => Arc::new(b.finish()),
            Column::Float(mut b) => Arc::new(b.finish()),
            Column::TokenSeq(mut b) => Arc::new(b.finish()),
            Column::FloatSeq(mut b) => Arc::new(b.finish()),
        }
    }
}

fn parse_float(value: &str) -> Result<Option<f64>, &'static str> {
    if value.is_empty() {
        return Ok(None);
    }
    value.parse::<f64>().map(Some).map_err(|_| "float")
}

/// `Some` for `0`, `42`, `-7`; `None` for `007`, `+7`, `-0`, `4.0`, `x`, or
/// anything outside i64.
fn canonical_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let ok = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" && digits.len() == s.len() || !digits.starts_with('0'));
    if ok {
        s.parse().ok()
    } else {
        None
    }
}

/// Reads one atomic file into a batch of the kept columns (header order),
/// and returns it with the number of data rows in the file (before
/// filtering).
pub fn read_atomic(path: &Path, opts: &ReadOptions) -> Result<(RecordBatch, usize), AtomicError> {
    let io = |line, source| AtomicError::Io {
        file: path.to_path_buf(),
        line,
        source,
    };
    let file = File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            AtomicError::NoSource {
                path: path.to_path_buf(),
            }
        } else {
            io(0, e)
        }
    })?;
    let mut lines = BufReader::new(file).lines();
    let header = match lines.next() {
        Some(line) => line.map_err(|e| io(1, e))?,
        None => {
            return Err(AtomicError::BadHeader {
                file: path.to_path_buf(),
                column: 1,
                message: "the file is empty; expected a header of `name:type` fields".into(),
            })
        }
    };
    let fields = parse_header(path, &header)?;
    let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
    let find = |name: &str| -> Result<usize, AtomicError> {
        names
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| AtomicError::MissingColumn {
                file: path.to_path_buf(),
                name: name.to_string(),
                hint: seqpipe::spec::did_you_mean(name, names.iter().copied())
                    .unwrap_or_else(|| format!("its columns are: {}", names.join(", "))),
            })
    };
    let mut kept = vec![opts.keep.is_none(); fields.len()];
    for name in opts.required.iter().chain(opts.keep.iter().flatten()) {
        kept[find(name)?] = true;
    }
    let filter = match &opts.at_least {
        Some((name, min)) => {
            let i = find(name)?;
            if fields[i].1 != AtomicType::Float {
                return Err(AtomicError::BadHeader {
                    file: path.to_path_buf(),
                    column: i + 1,
                    message: format!("`{name}` must be a float column to filter on it"),
                });
            }
            Some((i, *min))
        }
        None => None,
    };
    let mut columns: Vec<Option<Column>> = fields
        .iter()
        .zip(&kept)
        .map(|((_, ty), k)| k.then(|| Column::new(*ty)))
        .collect();
    let mut total = 0;
    for (n, line) in lines.enumerate() {
        let line_no = n + 2;
        let line = line.map_err(|e| io(line_no, e))?;
        let line = line.strip_suffix('\r').unwrap_or(&line);
        if line.is_empty() {
            continue;
        }
        total += 1;
        let values: Vec<&str> = line.split('\t').collect();
        if values.len() != fields.len() {
            return Err(AtomicError::FieldCount {
                file: path.to_path_buf(),
                line: line_no,
                found: values.len(),
                expected: fields.len(),
            });
        }
        let bad = |i: usize, ty: &'static str| AtomicError::BadValue {
            file: path.to_path_buf(),
            line: line_no,
            column: i + 1,
            name: fields[i].0.clone(),
            value: values[i].to_string(),
            ty,
        };
        if let Some((i, min)) = filter {
            match parse_float(values[i]).map_err(|ty| bad(i, ty))? {
                Some(v) if v >= min => {}
                _ => continue,
            }
        }
        for (i, column) in columns.iter_mut().enumerate() {
            if let Some(column) = column {
                column.push(values[i]).map_err(|ty| bad(i, ty))?;
            }
        }
    }
    let arrays: Vec<(&str, ArrayRef)> = fields
        .iter()
        .zip(columns)
        .filter_map(|((name, _), c)| c.map(|c| (name.as_str(), c.finish())))
        .collect();
    let batch = table::batch(arrays).map_err(|e| AtomicError::Io {
        file: path.to_path_buf(),
        line: 0,
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok((batch, total))
}

/// `name:type` fields of the header line.
fn parse_header(path: &Path, header: &str) -> Result<Vec<(String, AtomicType)>, AtomicError> {
    let header = header.strip_prefix('\u{feff}').unwrap_or(header);
    let header = header.strip_suffix('\r').unwrap_or(header);
    let bad = |column: usize, message: String| AtomicError::BadHeader {
        file: path.to_path_buf(),
        column,
        message,
    };
    let mut fields: Vec<(String, AtomicType)> = Vec::new();
    for (i, field) in header.split('\t').enumerate() {
        let Some((name, ty)) = field.rsplit_once(':') else {
            return Err(bad(
                i + 1,
                format!(
                    "`{field}` is not `name:type` (is the first line a header? types: {})",
                    TYPES.join(", ")
                ),
            ));
        };
        let Some(ty) = AtomicType::parse(ty) else {
            let hint = seqpipe::spec::did_you_mean(ty, TYPES)
                .unwrap_or_else(|| format!("types: {}", TYPES.join(", ")));
            return Err(bad(
                i + 1,
                format!("`{field}` has unknown type `{ty}` ({hint})"),
            ));
        };
        if name.is_empty() {
            return Err(bad(i + 1, format!("`{field}` has an empty name")));
        }
        if fields.iter().any(|(n, _)| n == name) {
            return Err(bad(i + 1, format!("column `{name}` appears twice")));
        }
        fields.push((name.to_string(), ty));
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_integers_only() {
        assert_eq!(canonical_int("0"), Some(0));
        assert_eq!(canonical_int("42"), Some(42));
        assert_eq!(canonical_int("-7"), Some(-7));
        for s in [
            "007",
            "+7",
            "-0",
            "4.0",
            "x",
            "",
            "-",
            "99999999999999999999",
        ] {
            assert_eq!(canonical_int(s), None, "{s}");
        }
    }
}

//! `load.text` — interactions from whitespace-separated text files, the
//! "one user per line, items in chronological order" format of SASRec's
//! data files.
//!
//! Params (defaults): `format` ("pairs") `"pairs"`: one `user item` pair per
//! line, a user's order is the line order; `"sequence"`: a user followed by
//! all their items, `user item item …`, oldest first.
//! Inputs: `source` (path: a file, or a folder whose `*.txt` files — not
//! its subfolders, not names starting with `.` — are read in sorted name
//! order).
//! Outputs: `events` (table: `events.parquet` + `summary.txt`).
//!
//! Lines split on any whitespace; blank lines are skipped and a leading
//! byte-order mark is ignored. The format has no time, so time is the
//! order: `timestamp` (int64) is the event's 0-based position in the whole
//! input — files in order, lines in order, a line's items left to right —
//! which is what `sequences` sorts on.
//!
//! Columns of `events.parquet`:
//!
//! | column | type | |
//! |---|---|---|
//! | `user_id`    | int64 | the user token, or its text id (below) |
//! | `item_id`    | int64 | the item token, or its text id |
//! | `timestamp`  | int64 | position, from 0 |
//! | `user_token` | utf8  | only when user ids are text: the token as written |
//! | `item_token` | utf8  | only when item ids are text: the token as written |
//!
//! Ids: when every token of a column (users, or items) is a canonical
//! decimal integer (`42`, `-7`; not `007` or `+7`, as in `load.atomic`),
//! the id is that integer and no token column is written. Otherwise the
//! column's ids are text: every distinct token — numeric-looking ones too,
//! so `7` and `007` stay apart — gets an id by first appearance in reading
//! order (1, 2, 3, …), and the token itself is kept in `user_token` /
//! `item_token`, so the mapping is deterministic and recoverable from the
//! table. The file is read assuming integers and read again from the start
//! on the first text token, so integer data is read once.
//!
//! Memory stays bounded by the vocabulary: rows go to `events.parquet` in
//! batches of 64 Ki through [`table::TableWriter`].
//!
//! Errors ([`TextError`]) name the file and the line (from 1): a line with
//! only one token, a `pairs` line with more than two, text that is not
//! UTF-8.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use seqpipe::stage::{KindInfo, ParamDoc, Port, Resource, StageContext, TypedStage};
use serde::{Deserialize, Serialize};

use crate::table;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    pub format: String,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            format: "pairs".into(),
        }
    }
}

const FORMATS: [&str; 2] = ["pairs", "sequence"];

pub struct LoadText;

pub const VERSION: u32 = 1;

/// Rows per batch written to Parquet.
pub(crate) const BATCH_ROWS: usize = 64 * 1024;

impl TypedStage for LoadText {
    type Params = Params;

    fn info(&self) -> KindInfo {
        KindInfo {
            kind: "load.text",
            version: VERSION,
            summary: "Reads whitespace-separated `user item` text files (SASRec's format) into an events table; time is the line order.",
            inputs: vec![Port {
                optional: false,
                name: "source",
                ty: "path",
                doc: "a text file, or a folder whose *.txt files are read in sorted order",
            }],
            extra_inputs: None,
            outputs: vec![Port {
                optional: false,
                name: "events",
                ty: "table",
                doc: "events.parquet (user_id, item_id, timestamp = position; user_token/item_token when ids are text), summary.txt",
            }],
            params: vec![ParamDoc {
                name: "format",
                doc: "\"pairs\": `user item` per line; \"sequence\": `user item item …` per line",
            }],
            resource: Resource::Cpu,
        }
    }

    fn validate(&self, p: &Params) -> Result<(), String> {
        if !FORMATS.contains(&p.format.as_str()) {
            let hint = seqpipe::spec::did_you_mean(&p.format, FORMATS)
                .unwrap_or_else(|| "expected \"pairs\" or \"sequence\"".into());
            return Err(format!("format: unknown format `{}` ({hint})", p.format));
        }
        Ok(())
    }

    fn run(&self, p: Params, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        let sequence = p.format == "sequence";
        let source = ctx.input("source")?.to_path_buf();
        let files = source_files(&source, &["txt"])?;
        let bytes = files
            .iter()
            .map(|f| f.metadata().map(|m| m.len()).unwrap_or(0))
            .sum();
        let out = ctx.output("events")?.to_path_buf();
        let bar = ctx.progress.bar(ctx.stage, "read", bytes);
        let mut text = [false; 2];
        let mut reasons = Vec::new();
        let stats = loop {
            bar.set_position(0);
            match stream(&files, sequence, text, &out.join("events.parquet"), &bar) {
                Ok(stats) => break stats,
                Err(Stop::NotInteger(side, why)) => {
                    text[side as usize] = true;
                    reasons.push(why);
                }
                Err(Stop::Fail(e)) => return Err(e),
            }
        };
        bar.finish_and_clear();
        if stats.events == 0 {
            return Err(TextError::Empty { path: source }.into());
        }
        let mut summary = format!(
            "load.text ({}): {} file(s), {} lines, {} events, {} users, {} items",
            p.format,
            files.len(),
            stats.lines,
            stats.events,
            stats.users,
            stats.items
        );
        for (side, name) in [(Side::User, "user"), (Side::Item, "item")] {
            if text[side as usize] {
                summary += &format!("; {name} ids by first appearance (tokens in {name}_token)");
            }
        }
        std::fs::write(out.join("summary.txt"), format!("{summary}.\n"))?;
        ctx.note("events", stats.events);
        for why in reasons {
            ctx.note("text_ids", why);
        }
        Ok(())
    }
}

/// What `load.text` refuses; names the file and the line (from 1).
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("{}: no such file or folder", .path.display())]
    NoSource { path: PathBuf },
    #[error("{}: no {} file in the folder{}", .folder.display(), .wanted, if *.others > 0 { format!(" ({} other file(s); point inputs.source at one of them)", .others) } else { String::new() })]
    NoFiles {
        folder: PathBuf,
        wanted: String,
        others: usize,
    },
    #[error("{}:{line}: {message}", .file.display())]
    BadLine {
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: no events (no non-blank line)", .path.display())]
    Empty { path: PathBuf },
    #[error("{}:{line}: {error}", .file.display())]
    Io {
        file: PathBuf,
        line: usize,
        error: std::io::Error,
    },
}

/// The input files: `source` itself when it is a file, else the files of
/// the folder whose extension is one of `exts` (any case), sorted by name;
/// names starting with `.` are skipped.
pub(crate) fn source_files(source: &Path, exts: &[&str]) -> Result<Vec<PathBuf>, TextError> {
    if source.is_file() {
        return Ok(vec![source.to_path_buf()]);
    }
    if !source.is_dir() {
        return Err(TextError::NoSource {
            path: source.to_path_buf(),
        });
    }
    let io = |error| TextError::Io {
        file: source.to_path_buf(),
        line: 0,
        error,
    };
    let mut files = Vec::new();
    let mut others = 0;
    for entry in std::fs::read_dir(source).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with('.') || !path.is_file() {
            continue;
        }
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        if ext.is_some_and(|e| exts.contains(&e.as_str())) {
            files.push(path);
        } else {
            others += 1;
        }
    }
    if files.is_empty() {
        return Err(TextError::NoFiles {
            folder: source.to_path_buf(),
            wanted: exts
                .iter()
                .map(|e| format!("*.{e}"))
                .collect::<Vec<_>>()
                .join(" or "),
            others,
        });
    }
    files.sort();
    Ok(files)
}

/// `Some` for `0`, `42`, `-7`; `None` for `007`, `+7`, `-0`, `4.0`, `x`, or
/// anything outside i64 (the rule of `load.atomic`).
pub(crate) fn canonical_int(s: &str) -> Option<i64> {
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

/// Users or items.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Side {
    User = 0,
    Item = 1,
}

/// The ids of one column: integers as written, or text tokens numbered by
/// first appearance from 1.
pub(crate) struct Ids {
    text: bool,
    tokens: HashMap<String, i64>,
    ints: HashSet<i64>,
}

impl Ids {
    pub(crate) fn new(text: bool) -> Ids {
        Ids {
            text,
            tokens: HashMap::new(),
            ints: HashSet::new(),
        }
    }

    /// The id of `token`; `None` when the ids are integers and it is not a
    /// canonical one.
    pub(crate) fn id(&mut self, token: &str) -> Option<i64> {
        if self.text {
            if let Some(&id) = self.tokens.get(token) {
                return Some(id);
            }
            let id = self.tokens.len() as i64 + 1;
            self.tokens.insert(token.to_string(), id);
            Some(id)
        } else {
            let v = canonical_int(token)?;
            self.ints.insert(v);
            Some(v)
        }
    }

    /// Distinct ids seen.
    pub(crate) fn distinct(&self) -> usize {
        if self.text {
            self.tokens.len()
        } else {
            self.ints.len()
        }
    }
}

/// Streams rows into `events.parquet`: user_id, item_id, timestamp,
/// user_token / item_token when those ids are text, then `extras` (utf8,
/// nullable), in batches of [`BATCH_ROWS`].
pub(crate) struct EventsWriter {
    writer: table::TableWriter,
    schema: SchemaRef,
    users: Vec<i64>,
    items: Vec<i64>,
    times: Vec<i64>,
    user_tokens: Option<StringBuilder>,
    item_tokens: Option<StringBuilder>,
    extras: Vec<StringBuilder>,
}

impl EventsWriter {
    pub(crate) fn create(
        path: &Path,
        user_text: bool,
        item_text: bool,
        extras: &[&str],
    ) -> anyhow::Result<EventsWriter> {
        let mut fields = vec![
            Field::new("user_id", DataType::Int64, false),
            Field::new("item_id", DataType::Int64, false),
            Field::new("timestamp", DataType::Int64, false),
        ];
        if user_text {
            fields.push(Field::new("user_token", DataType::Utf8, false));
        }
        if item_text {
            fields.push(Field::new("item_token", DataType::Utf8, false));
        }
        for name in extras {
            fields.push(Field::new(*name, DataType::Utf8, true));
        }
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        Ok(EventsWriter {
            writer: table::TableWriter::create(path, schema.clone(), table::Dictionary::All)?,
            schema,
            users: Vec::new(),
            items: Vec::new(),
            times: Vec::new(),
            user_tokens: user_text.then(StringBuilder::new),
            item_tokens: item_text.then(StringBuilder::new),
            extras: extras.iter().map(|_| StringBuilder::new()).collect(),
        })
    }

    /// Sets extra column `i` of the row being built (call before
    /// [`EventsWriter::push`]); an empty value is a null.
    pub(crate) fn extra(&mut self, i: usize, value: &str) {
        if value.is_empty() {
            self.extras[i].append_null();
        } else {
            self.extras[i].append_value(value);
        }
    }

    /// Ends a row.
    pub(crate) fn push(
        &mut self,
        (user, user_token): (i64, &str),
        (item, item_token): (i64, &str),
        time: i64,
    ) -> anyhow::Result<()> {
        self.users.push(user);
        self.items.push(item);
        self.times.push(time);
        if let Some(b) = &mut self.user_tokens {
            b.append_value(user_token);
        }
        if let Some(b) = &mut self.item_tokens {
            b.append_value(item_token);
        }
        if self.users.len() >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if self.users.is_empty() {
            return Ok(());
        }
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(std::mem::take(&mut self.users))),
            Arc::new(Int64Array::from(std::mem::take(&mut self.items))),
            Arc::new(Int64Array::from(std::mem::take(&mut self.times))),
        ];
        for b in [&mut self.user_tokens, &mut self.item_tokens]
            .into_iter()
            .flatten()
        {
            columns.push(Arc::new(b.finish()));
        }
        for b in &mut self.extras {
            columns.push(Arc::new(b.finish()));
        }
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        self.writer.write(&batch)
    }

    /// Writes the last batch and finishes the file; returns the rows.
    pub(crate) fn close(mut self) -> anyhow::Result<usize> {
        self.flush()?;
        self.writer.close()
    }
}

/// Why a pass over the input stopped.
pub(crate) enum Stop {
    /// Integer ids met a text token: read again with text ids on that side.
    /// The string says where.
    NotInteger(Side, String),
    Fail(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Stop {
    fn from(e: E) -> Self {
        Stop::Fail(e.into())
    }
}

struct Stats {
    lines: usize,
    events: usize,
    users: usize,
    items: usize,
}

/// One pass: every file into `out`, ids per `text` ([user, item]).
fn stream(
    files: &[PathBuf],
    sequence: bool,
    text: [bool; 2],
    out: &Path,
    bar: &seqpipe::progress::Bar,
) -> Result<Stats, Stop> {
    let mut writer = EventsWriter::create(out, text[0], text[1], &[])?;
    let mut ids = [Ids::new(text[0]), Ids::new(text[1])];
    let mut position: i64 = 0;
    let mut lines = 0;
    let mut buf = String::new();
    for file in files {
        let io = |line, error| TextError::Io {
            file: file.clone(),
            line,
            error,
        };
        let mut reader = BufReader::new(File::open(file).map_err(|e| io(0, e))?);
        let mut line_no = 0;
        loop {
            buf.clear();
            line_no += 1;
            let n = reader.read_line(&mut buf).map_err(|e| {
                if e.kind() == std::io::ErrorKind::InvalidData {
                    TextError::BadLine {
                        file: file.clone(),
                        line: line_no,
                        message: "not UTF-8 text".into(),
                    }
                } else {
                    io(line_no, e)
                }
            })?;
            if n == 0 {
                break;
            }
            bar.inc(n as u64);
            let line = if line_no == 1 {
                buf.strip_prefix('\u{feff}').unwrap_or(&buf)
            } else {
                &buf
            };
            let mut tokens = line.split_whitespace();
            let Some(user) = tokens.next() else {
                continue;
            };
            lines += 1;
            let bad = |message: String| TextError::BadLine {
                file: file.clone(),
                line: line_no,
                message,
            };
            let items: Vec<&str> = tokens.collect();
            if items.is_empty() {
                return Err(bad(if sequence {
                    format!("only a user (`{user}`); format = \"sequence\" expects `user item [item …]`")
                } else {
                    format!("one field (`{user}`); format = \"pairs\" expects `user item`")
                })
                .into());
            }
            if !sequence && items.len() > 1 {
                return Err(bad(format!(
                    "{} fields; format = \"pairs\" expects `user item` (for `user item item …` lines set format = \"sequence\")",
                    items.len() + 1
                ))
                .into());
            }
            let not_int = |side: Side, token: &str| {
                let name = if side == Side::User { "user" } else { "item" };
                Stop::NotInteger(
                    side,
                    format!(
                        "{name} ids are text (first non-integer `{token}` at {}:{line_no})",
                        file.display()
                    ),
                )
            };
            let [users, item_ids] = &mut ids;
            let u = users.id(user).ok_or_else(|| not_int(Side::User, user))?;
            for item in items {
                let i = item_ids.id(item).ok_or_else(|| not_int(Side::Item, item))?;
                writer.push((u, user), (i, item), position)?;
                position += 1;
            }
        }
    }
    writer.close()?;
    Ok(Stats {
        lines,
        events: position as usize,
        users: ids[0].distinct(),
        items: ids[1].distinct(),
    })
}

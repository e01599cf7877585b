//! `load.csv` — interactions from delimited text, YooChoose-style clicks
//! (`session,timestamp,item,category`, no header) by default.
//!
//! Params (defaults): `header` (false) skip each file's first line,
//! `columns` (["session", "timestamp", "item", "category"]) names of the
//! fields in order (`""` = ignore that field), `delimiter` (",") one ASCII
//! character (`"\t"` for tabs), `timestamp_format` ("iso8601") how the time
//! field is written: `"iso8601"` (`2014-04-07T10:51:09.277Z`), `"unix_s"`
//! (`1396867869` or `1396867869.277`) or `"unix_ms"` (`1396867869277`),
//! `user_column` ("session"), `item_column` ("item"), `time_column`
//! ("timestamp") which of `columns` hold the user, the item and the time.
//! Inputs: `source` (path: a file of any name — YooChoose's are `.dat` —
//! or a folder whose `*.csv` files, not names starting with `.`, are read
//! in sorted name order).
//! Outputs: `events` (table: `events.parquet` + `summary.txt`).
//!
//! Columns of `events.parquet`, rows in file order:
//!
//! | column | type | |
//! |---|---|---|
//! | `user_id`    | int64 | the user field (the session), or its text id |
//! | `item_id`    | int64 | the item field, or its text id |
//! | `timestamp`  | int64 | **epoch milliseconds**, whatever `timestamp_format` |
//! | `user_token` | utf8  | only when user ids are text: the field as written |
//! | `item_token` | utf8  | only when item ids are text |
//! | every other named field (`category`) | utf8 | as written; empty = null |
//!
//! Time: one unit for every format, milliseconds, because YooChoose's clicks
//! within a second need their milliseconds to keep their order. ISO 8601
//! reads `YYYY-MM-DD`, optionally followed by `T` (or a space) and
//! `HH:MM[:SS[.fraction]]`, optionally followed by `Z` or an offset
//! `±HH:MM` / `±HHMM`; no offset means UTC. Digits past the millisecond
//! are dropped (`.2779` → 277 ms), as are those of `unix_s`.
//!
//! Ids follow `load.text`'s rule: integers as written when every value of
//! the column is a canonical decimal integer, otherwise ids by first
//! appearance (1, 2, …) with the value kept in `user_token` / `item_token`
//! (see [`crate::load_text`]). Fields are parsed by the `csv` crate
//! (quotes as in RFC 4180, blank lines skipped); `header = true` skips the
//! first line of every file without reading names from it — `columns`
//! always names the fields. Rows go to Parquet in batches of 64 Ki, so
//! memory stays at a batch plus the id vocabulary.
//!
//! Errors ([`CsvError`]) name the file, the line (from 1, the header
//! included) and, for a bad value, the column (from 1) and its name.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use seqpipe::stage::{KindInfo, ParamDoc, Port, Resource, StageContext, TypedStage};
use serde::{Deserialize, Serialize};

use crate::load_text::{source_files, EventsWriter, Ids, Side, Stop};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    pub header: bool,
    pub columns: Vec<String>,
    pub delimiter: String,
    pub timestamp_format: String,
    pub user_column: String,
    pub item_column: String,
    pub time_column: String,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            header: false,
            columns: ["session", "timestamp", "item", "category"]
                .map(String::from)
                .to_vec(),
            delimiter: ",".into(),
            timestamp_format: "iso8601".into(),
            user_column: "session".into(),
            item_column: "item".into(),
            time_column: "timestamp".into(),
        }
    }
}

const TIME_FORMATS: [&str; 3] = ["iso8601", "unix_s", "unix_ms"];

/// Output column names an extra field may not take.
const RESERVED: [&str; 5] = [
    "user_id",
    "item_id",
    "timestamp",
    "user_token",
    "item_token",
];

pub struct LoadCsv;

pub const VERSION: u32 = 1;

impl TypedStage for LoadCsv {
    type Params = Params;

    fn info(&self) -> KindInfo {
        KindInfo {
            kind: "load.csv",
            version: VERSION,
            summary: "Reads delimited interaction logs (YooChoose clicks: session,timestamp,item,category) into an events table.",
            inputs: vec![Port {
                optional: false,
                name: "source",
                ty: "path",
                doc: "a CSV file (any name), or a folder whose *.csv files are read in sorted order",
            }],
            extra_inputs: None,
            outputs: vec![Port {
                optional: false,
                name: "events",
                ty: "table",
                doc: "events.parquet (user_id, item_id, timestamp in epoch ms, other fields as text), summary.txt",
            }],
            params: vec![
                ParamDoc { name: "header", doc: "skip the first line of each file (names still come from `columns`)" },
                ParamDoc { name: "columns", doc: "names of the fields in order (\"\" = ignore the field)" },
                ParamDoc { name: "delimiter", doc: "field separator, one ASCII character (\"\\t\" for tabs)" },
                ParamDoc { name: "timestamp_format", doc: "\"iso8601\" | \"unix_s\" | \"unix_ms\"; always stored as epoch milliseconds" },
                ParamDoc { name: "user_column", doc: "the field holding the user (YooChoose: the session)" },
                ParamDoc { name: "item_column", doc: "the field holding the item" },
                ParamDoc { name: "time_column", doc: "the field holding the time" },
            ],
            resource: Resource::Cpu,
        }
    }

    fn validate(&self, p: &Params) -> Result<(), String> {
        if p.columns.iter().all(String::is_empty) {
            return Err("columns: names no field".into());
        }
        for (i, name) in p.columns.iter().enumerate() {
            if !name.is_empty() && p.columns[..i].contains(name) {
                return Err(format!("columns: `{name}` is listed twice"));
            }
        }
        let roles = [
            ("user_column", &p.user_column),
            ("item_column", &p.item_column),
            ("time_column", &p.time_column),
        ];
        for (i, (key, name)) in roles.iter().enumerate() {
            if name.is_empty() {
                return Err(format!("{key}: is empty"));
            }
            if !p.columns.contains(name) {
                let hint = seqpipe::spec::did_you_mean(name, p.columns.iter().map(String::as_str))
                    .unwrap_or_else(|| format!("columns are: {}", p.columns.join(", ")));
                return Err(format!("{key}: `{name}` is not in columns ({hint})"));
            }
            if let Some((other, _)) = roles[..i].iter().find(|(_, n)| n == name) {
                return Err(format!("{key}: `{name}` is also {other}"));
            }
        }
        for name in extra_names(p) {
            if RESERVED.contains(&name) {
                return Err(format!(
                    "columns: `{name}` is a column the stage writes itself; rename the field"
                ));
            }
        }
        delimiter(&p.delimiter)?;
        if !TIME_FORMATS.contains(&p.timestamp_format.as_str()) {
            let hint = seqpipe::spec::did_you_mean(&p.timestamp_format, TIME_FORMATS)
                .unwrap_or_else(|| format!("expected one of {}", TIME_FORMATS.join(", ")));
            return Err(format!(
                "timestamp_format: unknown format `{}` ({hint})",
                p.timestamp_format
            ));
        }
        Ok(())
    }

    fn run(&self, p: Params, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        self.validate(&p)
            .map_err(|e| anyhow::anyhow!("params.{e}"))?;
        let source = ctx.input("source")?.to_path_buf();
        let files = source_files(&source, &["csv"])?;
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
            match stream(&files, &p, text, &out.join("events.parquet"), &bar) {
                Ok(stats) => break stats,
                Err(Stop::NotInteger(side, why)) => {
                    text[side as usize] = true;
                    reasons.push(why);
                }
                Err(Stop::Fail(e)) => return Err(e),
            }
        };
        bar.finish_and_clear();
        if stats.rows == 0 {
            return Err(CsvError::Empty { path: source }.into());
        }
        let mut summary = format!(
            "load.csv: {} file(s), {} rows, {} users, {} items, time {} → epoch ms",
            files.len(),
            stats.rows,
            stats.users,
            stats.items,
            p.timestamp_format
        );
        for (side, name) in [(Side::User, "user"), (Side::Item, "item")] {
            if text[side as usize] {
                summary += &format!("; {name} ids by first appearance (tokens in {name}_token)");
            }
        }
        let extras = extra_names(&p);
        if !extras.is_empty() {
            summary += &format!("; kept {}", extras.join(", "));
        }
        std::fs::write(out.join("summary.txt"), format!("{summary}.\n"))?;
        ctx.note("rows", stats.rows);
        for why in reasons {
            ctx.note("text_ids", why);
        }
        Ok(())
    }
}

/// What `load.csv` refuses; names the file, the line and the column.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("{}:{line}: {found} field(s), but `columns` names {expected} ({names}){hint}", .file.display())]
    FieldCount {
        file: PathBuf,
        line: u64,
        found: usize,
        expected: usize,
        names: String,
        hint: String,
    },
    #[error("{}:{line}: column {column} `{name}`: `{value}` is not {expected}", .file.display())]
    BadValue {
        file: PathBuf,
        line: u64,
        column: usize,
        name: String,
        value: String,
        expected: String,
    },
    #[error("{}:{line}: {message}", .file.display())]
    Read {
        file: PathBuf,
        line: u64,
        message: String,
    },
    #[error("{}: no rows", .path.display())]
    Empty { path: PathBuf },
}

/// The fields kept as text columns, in order.
fn extra_names(p: &Params) -> Vec<&str> {
    p.columns
        .iter()
        .map(String::as_str)
        .filter(|n| {
            !n.is_empty() && *n != p.user_column && *n != p.item_column && *n != p.time_column
        })
        .collect()
}

fn delimiter(d: &str) -> Result<u8, String> {
    match d.as_bytes() {
        [b] if b.is_ascii() && !matches!(b, b'"' | b'\n' | b'\r') => Ok(*b),
        _ => Err(format!(
            "delimiter: `{}` must be one ASCII character other than a quote or a line break (e.g. \",\", \";\", \"\\t\")",
            d.escape_default()
        )),
    }
}

/// Epoch milliseconds of an ISO 8601 time (see the module docs for the
/// accepted forms); `None` when it is not one. Parsing is chrono's; a time
/// without an offset is UTC.
pub fn iso8601_ms(s: &str) -> Option<i64> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime};
    // chrono's %Y takes any number of digits; ISO dates have four.
    let b = s.as_bytes();
    if b.len() < 10 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return None;
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
        "%Y-%m-%dT%H:%M%z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(s, format) {
            return Some(t.timestamp_millis());
        }
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    let day = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(day.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

/// Milliseconds from unix seconds, `1396867869` or `1396867869.277`
/// (digits past the millisecond dropped).
pub fn unix_s_ms(s: &str) -> Option<i64> {
    let (neg, rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (whole, frac) = match rest.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (rest, None),
    };
    if whole.is_empty() || !whole.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut ms = whole.parse::<i64>().ok()?.checked_mul(1000)?;
    if let Some(f) = frac {
        if f.is_empty() || !f.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let mut millis = 0;
        for i in 0..3 {
            millis = millis * 10 + f.as_bytes().get(i).map_or(0, |d| i64::from(d - b'0'));
        }
        ms = ms.checked_add(millis)?;
    }
    Some(if neg { -ms } else { ms })
}

/// Milliseconds from unix milliseconds (an integer).
pub fn unix_ms(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

struct Stats {
    rows: usize,
    users: usize,
    items: usize,
}

/// One pass over every file into `out`, ids per `text` ([user, item]).
fn stream(
    files: &[PathBuf],
    p: &Params,
    text: [bool; 2],
    out: &Path,
    bar: &seqpipe::progress::Bar,
) -> Result<Stats, Stop> {
    let col = |name: &str| p.columns.iter().position(|c| c == name).unwrap_or(0);
    let (ucol, icol, tcol) = (
        col(&p.user_column),
        col(&p.item_column),
        col(&p.time_column),
    );
    let extras = extra_names(p);
    let extra_cols: Vec<usize> = extras.iter().map(|n| col(n)).collect();
    let (parse_time, expected): (fn(&str) -> Option<i64>, &str) = match p.timestamp_format.as_str()
    {
        "unix_s" => (
            unix_s_ms,
            "unix seconds (e.g. 1396867869 or 1396867869.277)",
        ),
        "unix_ms" => (unix_ms, "unix milliseconds (e.g. 1396867869277)"),
        _ => (
            iso8601_ms,
            "an ISO 8601 time (e.g. 2014-04-07T10:51:09.277Z)",
        ),
    };
    let delim = delimiter(&p.delimiter).map_err(|e| anyhow::anyhow!("params.{e}"))?;
    let mut writer = EventsWriter::create(out, text[0], text[1], &extras)?;
    let mut ids = [Ids::new(text[0]), Ids::new(text[1])];
    let mut rows = 0usize;
    let mut record = csv::StringRecord::new();
    for file in files {
        let read_error = |line: u64, message: String| CsvError::Read {
            file: file.clone(),
            line,
            message,
        };
        let handle = File::open(file).map_err(|e| read_error(0, e.to_string()))?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(p.header)
            .delimiter(delim)
            .flexible(true)
            .from_reader(BufReader::with_capacity(1 << 16, handle));
        let mut shown = 0u64;
        loop {
            let more = reader.read_record(&mut record).map_err(|e| {
                let line = e.position().map_or(0, |p| p.line());
                let message = match e.kind() {
                    csv::ErrorKind::Utf8 { err, .. } => {
                        format!("field {} is not UTF-8 text", err.field() + 1)
                    }
                    _ => e.to_string(),
                };
                read_error(line, message)
            })?;
            if !more {
                break;
            }
            let pos = record
                .position()
                .cloned()
                .unwrap_or_else(csv::Position::new);
            let line = pos.line();
            if record.len() != p.columns.len() {
                let only = record.get(0).unwrap_or("");
                let hint = [b';', b'\t', b',', b'|']
                    .into_iter()
                    .filter(|&c| c != delim)
                    .find(|&c| record.len() == 1 && only.as_bytes().contains(&c))
                    .map(|c| format!("; is the delimiter `{}`?", (c as char).escape_default()))
                    .unwrap_or_default();
                return Err(CsvError::FieldCount {
                    file: file.clone(),
                    line,
                    found: record.len(),
                    expected: p.columns.len(),
                    names: p.columns.join(", "),
                    hint,
                }
                .into());
            }
            let bad = |column: usize, expected: &str| CsvError::BadValue {
                file: file.clone(),
                line,
                column: column + 1,
                name: p.columns[column].clone(),
                value: record[column].to_string(),
                expected: expected.to_string(),
            };
            let mut id = |side: Side, column: usize| -> Result<i64, Stop> {
                let value = &record[column];
                if value.is_empty() {
                    return Err(bad(column, "a value (it is empty)").into());
                }
                let ids = &mut ids[side as usize];
                ids.id(value).ok_or_else(|| {
                    let name = if side == Side::User { "user" } else { "item" };
                    Stop::NotInteger(
                        side,
                        format!(
                            "{name} ids are text (first non-integer `{value}` at {}:{line}, column {})",
                            file.display(),
                            column + 1
                        ),
                    )
                })
            };
            let user = id(Side::User, ucol)?;
            let item = id(Side::Item, icol)?;
            let time = parse_time(&record[tcol]).ok_or_else(|| bad(tcol, expected))?;
            for (i, &c) in extra_cols.iter().enumerate() {
                writer.extra(i, &record[c]);
            }
            writer.push((user, &record[ucol]), (item, &record[icol]), time)?;
            rows += 1;
            if rows.is_multiple_of(4096) {
                bar.inc(pos.byte() - shown);
                shown = pos.byte();
            }
        }
        let size = file.metadata().map(|m| m.len()).unwrap_or(shown);
        bar.inc(size.saturating_sub(shown));
    }
    writer.close()?;
    Ok(Stats {
        rows,
        users: ids[0].distinct(),
        items: ids[1].distinct(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(iso8601_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(iso8601_ms("1970-01-01"), Some(0));
        assert_eq!(iso8601_ms("1969-12-31T23:59:59.999Z"), Some(-1));
        // 2000-03-01 is day 11017: 30 years of 365 days + 7 leap days
        // (1972…1996) = 10957 to 2000-01-01, + 31 + 29.
        assert_eq!(iso8601_ms("2000-03-01 00:00"), Some(11_017 * 86_400_000));
        assert_eq!(
            iso8601_ms("2014-04-07T12:51:09.2779+02:00"),
            iso8601_ms("2014-04-07T10:51:09.277Z")
        );
        assert_eq!(
            iso8601_ms("2014-04-07T08:51:09.277-0200"),
            iso8601_ms("2014-04-07T10:51:09.277")
        );
        for bad in [
            "",
            "2014-04-07T",
            "2014-02-29",
            "2014-13-01",
            "2014-04-07T24:00:00Z",
            "2014-04-07T10:51:09.Z",
            "2014-04-07T10:51:09ZZ",
            "14-04-07",
            "1396867869",
        ] {
            assert_eq!(iso8601_ms(bad), None, "{bad}");
        }
        assert_eq!(unix_s_ms("1396867869"), Some(1_396_867_869_000));
        assert_eq!(unix_s_ms("1396867869.2779"), Some(1_396_867_869_277));
        assert_eq!(unix_s_ms("-1.5"), Some(-1500));
        for bad in ["", "1.", ".5", "1e9", "x", "99999999999999999999"] {
            assert_eq!(unix_s_ms(bad), None, "{bad}");
        }
        assert_eq!(unix_ms("1396867869277"), Some(1_396_867_869_277));
        assert_eq!(unix_ms("1.5"), None);
        assert_eq!(unix_ms("+5"), None);
    }
}

//! `graph.cooccurrence` — positive item pairs for contrastive item
//! embeddings: items bought together (co-purchase baskets) and items viewed
//! together (co-view sessions), within and across domains, with counts and
//! weights (as in the T-ECD study).
//!
//! Params (defaults): `user_column` ("user_id"), `item_column` ("item_id";
//! integer ids), `time_column` ("timestamp"; integers in `time_unit`, or an
//! Arrow timestamp, which carries its own unit), `time_unit` ("ms" or "s"),
//! `domain_column` ("domain"; "" = every item in one domain, `all`),
//! `basket_column` ("receipt_id"; "" = no co-purchase pairs),
//! `event_type_column` ("event_type") and `view_event_types` ([] = every
//! row is a view; e.g. ["catalog", "u2i", "search"] = only rows of those
//! event types are), `max_basket` (50), `session_gap_minutes` (30),
//! `max_session` (50), `window` (5), `min_count` (1), `weighting` ("count" =
//! the count; "log" = ln(1 + count)), `edge_types` (["co_purchase",
//! "co_view"]). User and basket ids may be integers or strings.
//! Inputs: `events` (table: every `*.parquet` in the folder, one schema).
//! Outputs: `graph` (table: `edges.parquet`, `items.parquet`,
//! `summary.json`, `summary.md`).
//!
//! Co-purchase: the rows that share a basket id (a receipt, whoever the
//! user; a null basket = in no basket) make one basket of their distinct
//! items. A basket with more than `max_basket` distinct items is dropped as
//! noise (counted); every other basket counts each pair of its items once.
//!
//! Co-view: a user's views, in time order with ties by item id, split into
//! sessions wherever two consecutive views are more than
//! `session_gap_minutes` apart (exactly the gap stays in one session). A
//! session's items are deduplicated, each at its first view; a session with
//! more than `max_session` distinct items keeps its last `max_session`
//! (counted as truncated). Items within `window` positions of each other in
//! that order pair up (0 = every pair in the session); each pair counts
//! once per session. Views with a null time are left out (counted).
//!
//! `edges.parquet`: `item_a`, `item_b` (int64, item_a < item_b, no
//! self-pairs), `edge_type` (`co_purchase` | `co_view`), `domain_a`,
//! `domain_b` (the items' domains, from `items.parquet`: an edge is
//! cross-domain when they differ), `count` (int64: baskets or sessions that
//! held the pair), `weight` (float64, per `weighting`); pairs seen fewer
//! than `min_count` times are left out (counted); sorted by (edge_type,
//! item_a, item_b). `items.parquet`, the vocabulary sorted by `item_id`
//! (int64): `domain` (the item's most frequent domain among its rows, ties
//! to the smallest name; `unknown` when all its rows have a null domain),
//! `occurrences` (its rows) and `degree` (edges of any type touching it).
//! `summary.json` / `summary.md`: rows read and skipped, baskets kept and
//! dropped, sessions and truncated sessions, the vocabulary size and the
//! share of it with at least one edge, and per edge type the pairs, pairs
//! below `min_count`, same- and cross-domain pairs and pairs per (unordered)
//! domain pair. The same rows in any order and any split into files give
//! the same bytes.
//!
//! Rows with a null user or item are skipped and counted. A column is read
//! only when needed: time for co-view, basket for co-purchase, event type
//! when `view_event_types` is set. A named column the table lacks fails the
//! run, naming the stage and the param, with a did-you-mean. An input
//! without rows gives an empty graph (no edges, no items) rather than an
//! error, as does one whose baskets and sessions hold no pair; a folder
//! without Parquet files is an error.
//!
//! Memory: the input is read batch by batch and no string is kept but the
//! distinct domains (and distinct user or basket ids when they are
//! strings). Per row, 8 bytes when it is in a basket (basket and item as
//! 32-bit indices) and 16 when it is a view (user, item, time), sorted in
//! place to group baskets and sessions; per distinct item, user or basket
//! one hash entry; per distinct (item, domain) a vote counter; per distinct
//! pair a 16-byte count. Files are written 64 Ki rows at a time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::compute::{can_cast_types, cast_with_options, CastOptions};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit};
use seqpipe::stage::{KindInfo, ParamDoc, Port, Resource, StageContext, TypedStage};
use serde::{Deserialize, Serialize};

use crate::table;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    pub user_column: String,
    pub item_column: String,
    pub time_column: String,
    pub time_unit: String,
    pub domain_column: String,
    pub basket_column: String,
    pub event_type_column: String,
    pub view_event_types: Vec<String>,
    pub max_basket: usize,
    pub session_gap_minutes: u64,
    pub max_session: usize,
    pub window: i64,
    pub min_count: u64,
    pub weighting: String,
    pub edge_types: Vec<String>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            user_column: "user_id".into(),
            item_column: "item_id".into(),
            time_column: "timestamp".into(),
            time_unit: "ms".into(),
            domain_column: "domain".into(),
            basket_column: "receipt_id".into(),
            event_type_column: "event_type".into(),
            view_event_types: Vec::new(),
            max_basket: 50,
            session_gap_minutes: 30,
            max_session: 50,
            window: 5,
            min_count: 1,
            weighting: "count".into(),
            edge_types: vec!["co_purchase".into(), "co_view".into()],
        }
    }
}

impl Params {
    fn wants(&self, ty: EdgeType) -> bool {
        self.edge_types.iter().any(|t| t == ty.name())
    }
}

pub struct GraphCooccurrence;

pub const VERSION: u32 = 1;

/// The kinds of positive pair, in output order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeType {
    CoPurchase,
    CoView,
}

impl EdgeType {
    pub const ALL: [EdgeType; 2] = [EdgeType::CoPurchase, EdgeType::CoView];

    pub fn name(self) -> &'static str {
        match self {
            EdgeType::CoPurchase => "co_purchase",
            EdgeType::CoView => "co_view",
        }
    }
}

/// A domain name for every item when `domain_column` is "".
const ONE_DOMAIN: &str = "all";
/// The domain of an item whose rows all have a null domain.
const UNKNOWN_DOMAIN: &str = "unknown";
/// Rows per batch written to Parquet.
const CHUNK: usize = 64 * 1024;

impl TypedStage for GraphCooccurrence {
    type Params = Params;

    fn info(&self) -> KindInfo {
        KindInfo {
            kind: "graph.cooccurrence",
            version: VERSION,
            summary: "Positive item pairs from co-purchase baskets and co-view sessions, per and across domains, with counts and weights.",
            inputs: vec![Port { optional: false, name: "events", ty: "table", doc: "the event log (every *.parquet in it)" }],
            extra_inputs: None,
            outputs: vec![Port {
                optional: false,
                name: "graph",
                ty: "table",
                doc: "edges.parquet (item_a, item_b, edge_type, domain_a, domain_b, count, weight), items.parquet, summary.json, summary.md",
            }],
            params: vec![
                ParamDoc { name: "user_column", doc: "user ids (integers or strings)" },
                ParamDoc { name: "item_column", doc: "item ids (integers)" },
                ParamDoc { name: "time_column", doc: "event time: integers in time_unit or an Arrow timestamp (read for co_view)" },
                ParamDoc { name: "time_unit", doc: "unit of an integer time column: \"ms\" or \"s\"" },
                ParamDoc { name: "domain_column", doc: "item domain (\"\" = one domain, `all`)" },
                ParamDoc { name: "basket_column", doc: "basket / receipt id; null = in no basket (\"\" = no co-purchase pairs)" },
                ParamDoc { name: "event_type_column", doc: "event type, read when view_event_types is set" },
                ParamDoc { name: "view_event_types", doc: "event types that count as views ([] = every row)" },
                ParamDoc { name: "max_basket", doc: "baskets with more distinct items are dropped as noise (at least 2)" },
                ParamDoc { name: "session_gap_minutes", doc: "a longer gap between two views starts a new session" },
                ParamDoc { name: "max_session", doc: "a session keeps at most its last this many distinct items (at least 2)" },
                ParamDoc { name: "window", doc: "co-view pairs are at most this many positions apart (0 = all pairs in a session)" },
                ParamDoc { name: "min_count", doc: "pairs seen fewer times are dropped" },
                ParamDoc { name: "weighting", doc: "\"count\" (weight = count) or \"log\" (ln(1 + count))" },
                ParamDoc { name: "edge_types", doc: "which pairs to build: co_purchase, co_view" },
            ],
            resource: Resource::Cpu,
        }
    }

    fn validate(&self, p: &Params) -> Result<(), String> {
        if p.user_column.is_empty() {
            return Err("user_column: must name a column".into());
        }
        if p.item_column.is_empty() {
            return Err("item_column: must name a column".into());
        }
        if p.wants(EdgeType::CoView) && p.time_column.is_empty() {
            return Err("time_column: must name a column when edge_types has co_view".into());
        }
        if !["ms", "s"].contains(&p.time_unit.as_str()) {
            return Err(format!(
                "time_unit: {:?} is not \"ms\" or \"s\"",
                p.time_unit
            ));
        }
        if !p.view_event_types.is_empty() && p.event_type_column.is_empty() {
            return Err("view_event_types: set event_type_column to the column they are in".into());
        }
        if p.max_basket < 2 {
            return Err(format!(
                "max_basket: {} is below 2; a basket needs two items to make a pair",
                p.max_basket
            ));
        }
        if p.max_session < 2 {
            return Err(format!(
                "max_session: {} is below 2; a session needs two items to make a pair",
                p.max_session
            ));
        }
        if p.session_gap_minutes == 0 {
            return Err("session_gap_minutes: must be at least 1".into());
        }
        if p.window < 0 {
            return Err(format!(
                "window: {} is negative; use 0 to pair every item of a session",
                p.window
            ));
        }
        if p.min_count == 0 {
            return Err("min_count: must be at least 1".into());
        }
        if !["count", "log"].contains(&p.weighting.as_str()) {
            return Err(format!(
                "weighting: {:?} is not \"count\" or \"log\"",
                p.weighting
            ));
        }
        validate_edge_types(&p.edge_types)
    }

    fn run(&self, p: Params, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        let input = table::open_table(ctx.input("events")?)?;
        let columns = Columns::resolve(ctx.stage, &input, &p)?;
        let events = read_events(ctx, &input, &columns, &p)?;
        let (pairs, baskets, sessions) = count_pairs(ctx, events.baskets, events.views, &p);
        let out = ctx.output("graph")?;
        let mut degree = vec![0u64; events.items.ids.len()];
        let edges = write_edges(
            &out.join("edges.parquet"),
            &events.items,
            pairs,
            &p,
            &mut degree,
        )?;
        write_items(&out.join("items.parquet"), &events.items, &degree)?;
        let covered = degree.iter().filter(|d| **d > 0).count() as u64;
        let summary = Summary {
            rows: events.rows.read,
            skipped_null_user_or_item: events.rows.skipped,
            views_without_time: events.rows.views_without_time,
            vocabulary: degree.len() as u64,
            items_with_edges: covered,
            item_coverage_pct: table::percent(covered, degree.len() as u64),
            baskets_kept: baskets.kept,
            baskets_dropped: baskets.dropped,
            sessions: sessions.sessions,
            sessions_truncated: sessions.truncated,
            edges,
        };
        std::fs::write(
            out.join("summary.json"),
            serde_json::to_string_pretty(&summary)? + "\n",
        )?;
        std::fs::write(out.join("summary.md"), summary.markdown())?;
        ctx.note("graph", summary.line());
        Ok(())
    }
}

fn validate_edge_types(types: &[String]) -> Result<(), String> {
    if types.is_empty() {
        return Err("edge_types: empty; list co_purchase, co_view or both".into());
    }
    let names = EdgeType::ALL.map(EdgeType::name);
    for (i, t) in types.iter().enumerate() {
        if !names.contains(&t.as_str()) {
            let hint = seqpipe::spec::did_you_mean(t, names)
                .unwrap_or_else(|| "expected co_purchase or co_view".into());
            return Err(format!("edge_types: unknown edge type {t:?} ({hint})"));
        }
        if types[..i].contains(t) {
            return Err(format!("edge_types: {t} is listed twice"));
        }
    }
    Ok(())
}

/// Errors about the input table, naming the stage, the param and the column.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("stage `{stage}`: {param}: no column `{column}` in {place} ({hint}){fix}")]
    MissingColumn {
        stage: String,
        param: &'static str,
        column: String,
        place: String,
        hint: String,
        /// How to do without the column, when the param allows it.
        fix: &'static str,
    },
    #[error(
        "stage `{stage}`: {param}: column `{column}` in {place} is {found}; expected {expected}"
    )]
    ColumnType {
        stage: String,
        param: &'static str,
        column: String,
        place: String,
        found: String,
        expected: &'static str,
    },
    #[error(
        "stage `{stage}`: more than {} distinct {what}; they are indexed with 32 bits",
        u32::MAX
    )]
    TooMany { stage: String, what: &'static str },
    #[error("stage `{stage}`: {}: {message}", .file.display())]
    Unreadable {
        stage: String,
        file: std::path::PathBuf,
        message: String,
    },
}

// ---------------------------------------------------------------------------
// Which columns are read, and how
// ---------------------------------------------------------------------------

/// What a column must hold to serve a param.
#[derive(Clone, Copy)]
enum Want {
    /// Item ids: integers (the output's ids are int64).
    Integer,
    /// User or basket ids: integers or strings.
    Id,
    /// Integers in `time_unit` or a timestamp.
    Time,
    /// Anything that reads as text (domains, event types).
    Text,
}

impl Want {
    fn accepts(self, ty: &DataType) -> bool {
        match self {
            Want::Integer => ty.is_integer(),
            Want::Id => ty.is_integer() || is_text(ty),
            Want::Time => ty.is_integer() || matches!(ty, DataType::Timestamp(..)),
            Want::Text => can_cast_types(ty, &DataType::Utf8),
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Want::Integer => "integer ids",
            Want::Id => "integer or string ids",
            Want::Time => "integer times or a timestamp",
            Want::Text => "values that read as text",
        }
    }
}

fn is_text(ty: &DataType) -> bool {
    match ty {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, values) => is_text(values),
        _ => false,
    }
}

/// Positions of the columns the stage reads; `None` = not needed.
struct Columns {
    user: usize,
    item: usize,
    /// The time column and the milliseconds in one unit of an integer time.
    time: Option<(usize, i64)>,
    domain: Option<usize>,
    basket: Option<usize>,
    /// The event-type column and the types that count as views.
    views: Option<(usize, HashSet<String>)>,
}

impl Columns {
    /// Finds the params' columns in the input schema, checking their types.
    fn resolve(stage: &str, input: &table::TableFiles, p: &Params) -> anyhow::Result<Columns> {
        let place = if input.files.len() == 1 {
            input.files[0].display().to_string()
        } else {
            format!(
                "{} ({} Parquet files)",
                input.files[0].parent().unwrap_or(Path::new("")).display(),
                input.files.len()
            )
        };
        let fields = input.schema.fields();
        let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
        let find = |param: &'static str, column: &str, want: Want, fix: &'static str| {
            let Some(i) = names.iter().position(|n| *n == column) else {
                return Err(anyhow::Error::from(GraphError::MissingColumn {
                    stage: stage.to_string(),
                    param,
                    column: column.to_string(),
                    place: place.clone(),
                    hint: table::column_hint(column, names.iter().copied()),
                    fix,
                }));
            };
            let ty = fields[i].data_type();
            if !want.accepts(ty) {
                return Err(anyhow::Error::from(GraphError::ColumnType {
                    stage: stage.to_string(),
                    param,
                    column: column.to_string(),
                    place: place.clone(),
                    found: ty.to_string(),
                    expected: want.expected(),
                }));
            }
            Ok(i)
        };
        let co_view = p.wants(EdgeType::CoView);
        let ms_per_unit = if p.time_unit == "s" { 1000 } else { 1 };
        Ok(Columns {
            user: find("user_column", &p.user_column, Want::Id, "")?,
            item: find("item_column", &p.item_column, Want::Integer, "")?,
            time: co_view
                .then(|| find("time_column", &p.time_column, Want::Time, ""))
                .transpose()?
                .map(|i| (i, ms_per_unit)),
            domain: (!p.domain_column.is_empty())
                .then(|| {
                    let fix = "; domain_column = \"\" puts every item in one domain";
                    find("domain_column", &p.domain_column, Want::Text, fix)
                })
                .transpose()?,
            basket: (p.wants(EdgeType::CoPurchase) && !p.basket_column.is_empty())
                .then(|| {
                    let fix = "; basket_column = \"\" builds no co-purchase pairs";
                    find("basket_column", &p.basket_column, Want::Id, fix)
                })
                .transpose()?,
            views: (co_view && !p.view_event_types.is_empty())
                .then(|| find("event_type_column", &p.event_type_column, Want::Text, ""))
                .transpose()?
                .map(|i| (i, p.view_event_types.iter().cloned().collect())),
        })
    }
}

/// The values of a user or basket id column in one batch.
enum Ids {
    Int(Int64Array),
    Text(StringArray),
}

impl Ids {
    fn read(column: &ArrayRef) -> anyhow::Result<Ids> {
        Ok(if column.data_type().is_integer() {
            Ids::Int(int64(column)?)
        } else {
            Ids::Text(utf8(column)?)
        })
    }

    fn is_null(&self, row: usize) -> bool {
        match self {
            Ids::Int(a) => a.is_null(row),
            Ids::Text(a) => a.is_null(row),
        }
    }
}

/// One batch's columns, converted for reading row by row.
struct BatchColumns {
    user: Ids,
    item: Int64Array,
    /// Epoch milliseconds.
    time: Option<Int64Array>,
    domain: Option<StringArray>,
    basket: Option<Ids>,
    event_type: Option<StringArray>,
}

impl BatchColumns {
    fn read(columns: &Columns, batch: &RecordBatch) -> anyhow::Result<BatchColumns> {
        let column = |i: usize| batch.column(i);
        Ok(BatchColumns {
            user: Ids::read(column(columns.user))?,
            item: int64(column(columns.item))?,
            time: columns
                .time
                .map(|(i, ms)| time_ms(column(i), ms))
                .transpose()?,
            domain: columns.domain.map(|i| utf8(column(i))).transpose()?,
            basket: columns.basket.map(|i| Ids::read(column(i))).transpose()?,
            event_type: columns
                .views
                .as_ref()
                .map(|(i, _)| utf8(column(*i)))
                .transpose()?,
        })
    }
}

/// A cast that fails on a value that does not fit rather than making it
/// null (a null id would be skipped silently).
fn strict_cast(column: &ArrayRef, ty: &DataType) -> anyhow::Result<ArrayRef> {
    let options = CastOptions {
        safe: false,
        ..CastOptions::default()
    };
    Ok(cast_with_options(column, ty, &options)?)
}

fn int64(column: &ArrayRef) -> anyhow::Result<Int64Array> {
    Ok(strict_cast(column, &DataType::Int64)?
        .as_primitive::<Int64Type>()
        .clone())
}

fn utf8(column: &ArrayRef) -> anyhow::Result<StringArray> {
    Ok(strict_cast(column, &DataType::Utf8)?
        .as_string::<i32>()
        .clone())
}

/// A time column in epoch milliseconds. A timestamp keeps its time zone
/// through the cast, so the instants (not local wall times) are compared.
fn time_ms(column: &ArrayRef, ms_per_unit: i64) -> anyhow::Result<Int64Array> {
    if let DataType::Timestamp(_, tz) = column.data_type() {
        let ms = strict_cast(
            column,
            &DataType::Timestamp(TimeUnit::Millisecond, tz.clone()),
        )?;
        return int64(&ms);
    }
    let raw = int64(column)?;
    Ok(if ms_per_unit == 1 {
        raw
    } else {
        raw.unary(|t: i64| t.saturating_mul(ms_per_unit))
    })
}

// ---------------------------------------------------------------------------
// Reading the events into compact indices
// ---------------------------------------------------------------------------

/// Returned when an index would pass `u32::MAX`: which ids ran out.
struct Full(&'static str);

/// Dense 32-bit indices for the distinct values of a user or basket id
/// column, so that the per-row records stay small.
#[derive(Default)]
struct Interner {
    ints: HashMap<i64, u32>,
    texts: HashMap<Box<str>, u32>,
}

impl Interner {
    /// The index of the (non-null) id at `row`, given a new one if unseen;
    /// `None` when no index is left.
    fn index(&mut self, ids: &Ids, row: usize) -> Option<u32> {
        let next = u32::try_from(self.ints.len() + self.texts.len()).ok()?;
        Some(match ids {
            Ids::Int(a) => *self.ints.entry(a.value(row)).or_insert(next),
            Ids::Text(a) => {
                let id = a.value(row);
                match self.texts.get(id) {
                    Some(&i) => i,
                    None => {
                        self.texts.insert(id.into(), next);
                        next
                    }
                }
            }
        })
    }
}

/// Domain names, interned: each row refers to its domain by index.
#[derive(Default)]
struct Domains {
    names: Vec<String>,
    index: HashMap<String, u32>,
}

impl Domains {
    fn index(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        // 2^32 distinct names would not fit in memory long before this
        // overflows.
        let i = self.names.len() as u32;
        self.names.push(name.to_string());
        self.index.insert(name.to_string(), i);
        i
    }
}

/// The items seen, in order of first appearance, with their rows and
/// domain votes.
#[derive(Default)]
struct Vocabulary {
    index: HashMap<i64, u32>,
    ids: Vec<i64>,
    occurrences: Vec<u64>,
    /// (item, domain) → rows.
    votes: HashMap<(u32, u32), u64>,
}

impl Vocabulary {
    /// Counts a row of item `id`; returns its index (`None` when no index
    /// is left).
    fn add(&mut self, id: i64, domain: Option<u32>) -> Option<u32> {
        let next = u32::try_from(self.ids.len()).ok()?;
        let item = *self.index.entry(id).or_insert(next);
        if item == next {
            self.ids.push(id);
            self.occurrences.push(0);
        }
        self.occurrences[item as usize] += 1;
        if let Some(d) = domain {
            *self.votes.entry((item, d)).or_default() += 1;
        }
        Some(item)
    }
}

/// A view: user and item indices and the time in epoch milliseconds.
#[derive(Debug, Clone, Copy)]
struct View {
    user: u32,
    item: u32,
    time: i64,
}

/// Row counts for the summary.
#[derive(Default)]
struct RowCounts {
    read: u64,
    skipped: u64,
    views_without_time: u64,
}

/// The items, with their index order being id order.
struct Items {
    ids: Vec<i64>,
    occurrences: Vec<u64>,
    /// Index into `domains` per item.
    domain: Vec<u32>,
    domains: Vec<String>,
}

/// What the stage keeps of the events.
struct Events {
    items: Items,
    /// `basket << 32 | item` per row in a basket.
    baskets: Vec<u64>,
    views: Vec<View>,
    rows: RowCounts,
}

fn pack(hi: u32, lo: u32) -> u64 {
    (u64::from(hi) << 32) | u64::from(lo)
}

fn unpack(x: u64) -> (u32, u32) {
    ((x >> 32) as u32, x as u32)
}

/// Accumulates the events batch by batch.
#[derive(Default)]
struct Reader {
    vocabulary: Vocabulary,
    domains: Domains,
    users: Interner,
    basket_ids: Interner,
    baskets: Vec<u64>,
    views: Vec<View>,
    rows: RowCounts,
}

impl Reader {
    fn add(&mut self, b: &BatchColumns, views: Option<&HashSet<String>>) -> Result<(), Full> {
        for row in 0..b.item.len() {
            self.rows.read += 1;
            if b.user.is_null(row) || b.item.is_null(row) {
                self.rows.skipped += 1;
                continue;
            }
            let domain = b
                .domain
                .as_ref()
                .filter(|d| d.is_valid(row))
                .map(|d| self.domains.index(d.value(row)));
            let item = self
                .vocabulary
                .add(b.item.value(row), domain)
                .ok_or(Full("items"))?;
            if let Some(ids) = b.basket.as_ref().filter(|ids| !ids.is_null(row)) {
                let basket = self.basket_ids.index(ids, row).ok_or(Full("baskets"))?;
                self.baskets.push(pack(basket, item));
            }
            // The time column is read exactly when co-view pairs are asked for.
            let Some(times) = &b.time else { continue };
            if !is_view(b.event_type.as_ref(), views, row) {
                continue;
            }
            if times.is_null(row) {
                self.rows.views_without_time += 1;
                continue;
            }
            let user = self.users.index(&b.user, row).ok_or(Full("users"))?;
            self.views.push(View {
                user,
                item,
                time: times.value(row),
            });
        }
        Ok(())
    }

    /// Renumbers the items in id order, so that index order is id order:
    /// pairs then sort and canonicalise by id whatever order the rows came
    /// in. Picks each item's domain.
    fn finish(mut self, one_domain: bool) -> Events {
        let n = self.vocabulary.ids.len();
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_unstable_by_key(|&i| self.vocabulary.ids[i as usize]);
        let mut new_of = vec![0u32; n];
        for (new, &old) in order.iter().enumerate() {
            new_of[old as usize] = new as u32;
        }
        for b in &mut self.baskets {
            let (basket, item) = unpack(*b);
            *b = pack(basket, new_of[item as usize]);
        }
        for v in &mut self.views {
            v.item = new_of[v.item as usize];
        }
        let votes = std::mem::take(&mut self.vocabulary.votes)
            .into_iter()
            .map(|((item, d), c)| ((new_of[item as usize], d), c));
        let domain = if one_domain {
            vec![self.domains.index(ONE_DOMAIN); n]
        } else {
            pick_domains(n, votes, &mut self.domains)
        };
        let v = &self.vocabulary;
        Events {
            items: Items {
                ids: order.iter().map(|&i| v.ids[i as usize]).collect(),
                occurrences: order.iter().map(|&i| v.occurrences[i as usize]).collect(),
                domain,
                domains: self.domains.names,
            },
            baskets: self.baskets,
            views: self.views,
            rows: self.rows,
        }
    }
}

/// Whether a row is a view: every row is when no event types are listed.
fn is_view(types: Option<&StringArray>, views: Option<&HashSet<String>>, row: usize) -> bool {
    match (types, views) {
        (Some(types), Some(views)) => types.is_valid(row) && views.contains(types.value(row)),
        _ => true,
    }
}

/// Each item's most frequent domain, ties to the smallest name; `unknown`
/// for an item without a vote.
fn pick_domains(
    n: usize,
    votes: impl Iterator<Item = ((u32, u32), u64)>,
    domains: &mut Domains,
) -> Vec<u32> {
    let mut best: Vec<Option<(u64, u32)>> = vec![None; n];
    for ((item, d), count) in votes {
        let slot = &mut best[item as usize];
        let better = match *slot {
            None => true,
            Some((c, b)) => {
                count > c || (count == c && domains.names[d as usize] < domains.names[b as usize])
            }
        };
        if better {
            *slot = Some((count, d));
        }
    }
    let mut unknown = None;
    best.into_iter()
        .map(|b| match b {
            Some((_, d)) => d,
            None => *unknown.get_or_insert_with(|| domains.index(UNKNOWN_DOMAIN)),
        })
        .collect()
}

fn read_events(
    ctx: &StageContext<'_>,
    input: &table::TableFiles,
    columns: &Columns,
    p: &Params,
) -> anyhow::Result<Events> {
    let total: u64 = input
        .files
        .iter()
        .map(|f| table::file_rows(f).unwrap_or(0))
        .sum();
    let bar = ctx.progress.bar(ctx.stage, "read", total);
    let views = columns.views.as_ref().map(|(_, types)| types);
    let mut reader = Reader::default();
    for file in &input.files {
        for batch in table::batches(file)? {
            let batch = batch?;
            let unreadable = |e: anyhow::Error| GraphError::Unreadable {
                stage: ctx.stage.to_string(),
                file: file.clone(),
                message: format!("{e:#}"),
            };
            let b = BatchColumns::read(columns, &batch).map_err(unreadable)?;
            reader
                .add(&b, views)
                .map_err(|Full(what)| GraphError::TooMany {
                    stage: ctx.stage.to_string(),
                    what,
                })?;
            bar.inc(batch.num_rows() as u64);
        }
    }
    bar.finish_and_clear();
    Ok(reader.finish(p.domain_column.is_empty()))
}

// ---------------------------------------------------------------------------
// Counting pairs
// ---------------------------------------------------------------------------

/// Distinct item pairs (smaller index first, packed) → how many baskets or
/// sessions held them.
#[derive(Default)]
struct PairCounts(HashMap<u64, u64>);

impl PairCounts {
    fn add(&mut self, a: u32, b: u32) {
        debug_assert_ne!(a, b, "baskets and sessions are deduplicated");
        *self.0.entry(pack(a.min(b), a.max(b))).or_default() += 1;
    }
}

#[derive(Default)]
struct BasketCounts {
    kept: u64,
    dropped: u64,
}

#[derive(Default)]
struct SessionCounts {
    sessions: u64,
    truncated: u64,
}

fn count_pairs(
    ctx: &StageContext<'_>,
    mut baskets: Vec<u64>,
    mut views: Vec<View>,
    p: &Params,
) -> (Vec<(EdgeType, PairCounts)>, BasketCounts, SessionCounts) {
    let (basket_rows, view_rows) = (baskets.len() as u64, views.len() as u64);
    let bar = ctx
        .progress
        .bar(ctx.stage, "pairs", basket_rows + view_rows);
    let mut counted = Vec::new();
    let mut basket_counts = BasketCounts::default();
    let mut session_counts = SessionCounts::default();
    if p.wants(EdgeType::CoPurchase) {
        let mut pairs = PairCounts::default();
        basket_counts = co_purchase(&mut baskets, p.max_basket, &mut pairs);
        counted.push((EdgeType::CoPurchase, pairs));
    }
    bar.inc(basket_rows);
    drop(baskets);
    if p.wants(EdgeType::CoView) {
        let mut pairs = PairCounts::default();
        let gap_ms =
            i64::try_from(p.session_gap_minutes.saturating_mul(60_000)).unwrap_or(i64::MAX);
        let rules = SessionRules {
            gap_ms,
            max_items: p.max_session,
            window: p.window as usize,
        };
        session_counts = co_view(&mut views, &rules, &mut pairs);
        counted.push((EdgeType::CoView, pairs));
    }
    bar.inc(view_rows);
    bar.finish_and_clear();
    (counted, basket_counts, session_counts)
}

/// Counts every pair of each basket of at most `max_items` distinct items.
/// `rows` holds `basket << 32 | item`: sorting groups the baskets, with
/// their items in index order, and deduplicating counts a repeated item once.
fn co_purchase(rows: &mut Vec<u64>, max_items: usize, pairs: &mut PairCounts) -> BasketCounts {
    rows.sort_unstable();
    rows.dedup();
    let mut counts = BasketCounts::default();
    for basket in rows.chunk_by(|a, b| unpack(*a).0 == unpack(*b).0) {
        if basket.len() > max_items {
            counts.dropped += 1;
            continue;
        }
        counts.kept += 1;
        for (i, &a) in basket.iter().enumerate() {
            for &b in &basket[i + 1..] {
                pairs.add(unpack(a).1, unpack(b).1);
            }
        }
    }
    counts
}

/// How views become sessions and sessions become pairs.
struct SessionRules {
    /// A longer gap between two views starts a new session.
    gap_ms: i64,
    max_items: usize,
    /// 0 = every pair in the session.
    window: usize,
}

/// Splits each user's views into sessions and counts the pairs within
/// `window` positions of each session's deduplicated item order.
fn co_view(views: &mut [View], rules: &SessionRules, pairs: &mut PairCounts) -> SessionCounts {
    // Ties in time go by item index (= id order), not by row order, so that
    // shuffled rows give the same sessions.
    views.sort_unstable_by_key(|v| (v.user, v.time, v.item));
    let mut counts = SessionCounts::default();
    let mut seen = HashSet::new();
    let mut order: Vec<u32> = Vec::new();
    for user in views.chunk_by(|a, b| a.user == b.user) {
        for session in user.chunk_by(|a, b| b.time.saturating_sub(a.time) <= rules.gap_ms) {
            counts.sessions += 1;
            seen.clear();
            order.clear();
            order.extend(session.iter().map(|v| v.item).filter(|i| seen.insert(*i)));
            if order.len() > rules.max_items {
                counts.truncated += 1;
                order.drain(..order.len() - rules.max_items);
            }
            pair_within(&order, rules.window, pairs);
        }
    }
    counts
}

/// Counts the pairs of distinct items at most `window` positions apart
/// (0 = all pairs).
fn pair_within(order: &[u32], window: usize, pairs: &mut PairCounts) {
    for (i, &a) in order.iter().enumerate() {
        let end = if window == 0 {
            order.len()
        } else {
            (i + 1 + window).min(order.len())
        };
        for &b in &order[i + 1..end] {
            pairs.add(a, b);
        }
    }
}

// ---------------------------------------------------------------------------
// Writing the graph
// ---------------------------------------------------------------------------

fn edge_schema() -> SchemaRef {
    let text = |name: &str| Field::new(name, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        Field::new("item_a", DataType::Int64, false),
        Field::new("item_b", DataType::Int64, false),
        text("edge_type"),
        text("domain_a"),
        text("domain_b"),
        Field::new("count", DataType::Int64, false),
        Field::new("weight", DataType::Float64, false),
    ]))
}

/// Writes `edges.parquet` — each type's pairs of at least `min_count`, in
/// (edge_type, item_a, item_b) order — adds to each item's degree, and
/// returns the per-type summaries.
fn write_edges(
    path: &Path,
    items: &Items,
    counted: Vec<(EdgeType, PairCounts)>,
    p: &Params,
    degree: &mut [u64],
) -> anyhow::Result<BTreeMap<String, EdgeSummary>> {
    let schema = edge_schema();
    let mut writer = table::TableWriter::create(path, schema.clone())?;
    let mut summaries = BTreeMap::new();
    for (ty, pairs) in counted {
        let total = pairs.0.len() as u64;
        let mut kept: Vec<(u64, u64)> = pairs
            .0
            .into_iter()
            .filter(|(_, count)| *count >= p.min_count)
            .collect();
        kept.sort_unstable();
        let mut tally = Tally::default();
        for chunk in kept.chunks(CHUNK) {
            for &(pair, _) in chunk {
                let (a, b) = unpack(pair);
                degree[a as usize] += 1;
                degree[b as usize] += 1;
                tally.add(items, a, b);
            }
            writer.write(&edge_batch(&schema, ty, chunk, items, &p.weighting)?)?;
        }
        let summary = tally.finish(items, total - kept.len() as u64);
        summaries.insert(ty.name().to_string(), summary);
    }
    writer.close()?;
    Ok(summaries)
}

fn edge_batch(
    schema: &SchemaRef,
    ty: EdgeType,
    edges: &[(u64, u64)],
    items: &Items,
    weighting: &str,
) -> anyhow::Result<RecordBatch> {
    let ends = || edges.iter().map(|(pair, _)| unpack(*pair));
    let id = |i: u32| items.ids[i as usize];
    let domain = |i: u32| items.domains[items.domain[i as usize] as usize].as_str();
    let weight = |count: u64| match weighting {
        "log" => (count as f64).ln_1p(),
        _ => count as f64,
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(ends().map(|(a, _)| id(a)))),
        Arc::new(Int64Array::from_iter_values(ends().map(|(_, b)| id(b)))),
        Arc::new(StringArray::from_iter_values(
            edges.iter().map(|_| ty.name()),
        )),
        Arc::new(StringArray::from_iter_values(
            ends().map(|(a, _)| domain(a)),
        )),
        Arc::new(StringArray::from_iter_values(
            ends().map(|(_, b)| domain(b)),
        )),
        Arc::new(Int64Array::from_iter_values(
            edges.iter().map(|(_, c)| *c as i64),
        )),
        Arc::new(Float64Array::from_iter_values(
            edges.iter().map(|(_, c)| weight(*c)),
        )),
    ];
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Writes `items.parquet`: the vocabulary in id order.
fn write_items(path: &Path, items: &Items, degree: &[u64]) -> anyhow::Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("item_id", DataType::Int64, false),
        Field::new("domain", DataType::Utf8, false),
        Field::new("occurrences", DataType::Int64, false),
        Field::new("degree", DataType::Int64, false),
    ]));
    let mut writer = table::TableWriter::create(path, schema.clone())?;
    let n = items.ids.len();
    for start in (0..n).step_by(CHUNK) {
        let range = start..(start + CHUNK).min(n);
        let domain = |i: usize| items.domains[items.domain[i] as usize].as_str();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(items.ids[range.clone()].to_vec())),
            Arc::new(StringArray::from_iter_values(range.clone().map(domain))),
            Arc::new(Int64Array::from_iter_values(
                items.occurrences[range.clone()].iter().map(|c| *c as i64),
            )),
            Arc::new(Int64Array::from_iter_values(
                degree[range].iter().map(|d| *d as i64),
            )),
        ];
        writer.write(&RecordBatch::try_new(schema.clone(), columns)?)?;
    }
    writer.close()?;
    Ok(())
}

// ---------------------------------------------------------------------------
// The summary
// ---------------------------------------------------------------------------

/// `summary.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub rows: u64,
    pub skipped_null_user_or_item: u64,
    pub views_without_time: u64,
    /// Distinct items in the rows kept.
    pub vocabulary: u64,
    pub items_with_edges: u64,
    /// `items_with_edges` in % of the vocabulary; null without items.
    pub item_coverage_pct: Option<f64>,
    pub baskets_kept: u64,
    /// Baskets over `max_basket` distinct items.
    pub baskets_dropped: u64,
    pub sessions: u64,
    /// Sessions over `max_session` distinct items, cut to their last ones.
    pub sessions_truncated: u64,
    /// Per edge type asked for, by name.
    pub edges: BTreeMap<String, EdgeSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EdgeSummary {
    /// Pairs written (count ≥ `min_count`).
    pub pairs: u64,
    pub below_min_count: u64,
    pub same_domain: u64,
    pub cross_domain: u64,
    /// Pairs per unordered domain pair, `domain_a` ≤ `domain_b`, sorted.
    pub domain_pairs: Vec<DomainPair>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DomainPair {
    pub domain_a: String,
    pub domain_b: String,
    pub pairs: u64,
}

/// Pairs per (unordered) pair of domain indices, for one edge type.
#[derive(Default)]
struct Tally(HashMap<(u32, u32), u64>);

impl Tally {
    fn add(&mut self, items: &Items, a: u32, b: u32) {
        let (da, db) = (items.domain[a as usize], items.domain[b as usize]);
        let by_name = |d: u32| &items.domains[d as usize];
        let key = if by_name(da) <= by_name(db) {
            (da, db)
        } else {
            (db, da)
        };
        *self.0.entry(key).or_default() += 1;
    }

    fn finish(self, items: &Items, below_min_count: u64) -> EdgeSummary {
        let name = |d: u32| items.domains[d as usize].clone();
        let mut domain_pairs: Vec<DomainPair> = self
            .0
            .iter()
            .map(|(&(a, b), &pairs)| DomainPair {
                domain_a: name(a),
                domain_b: name(b),
                pairs,
            })
            .collect();
        domain_pairs.sort_by(|x, y| (&x.domain_a, &x.domain_b).cmp(&(&y.domain_a, &y.domain_b)));
        let count = |same: bool| {
            self.0
                .iter()
                .filter(|((a, b), _)| (a == b) == same)
                .map(|(_, n)| n)
                .sum()
        };
        EdgeSummary {
            pairs: self.0.values().sum(),
            below_min_count,
            same_domain: count(true),
            cross_domain: count(false),
            domain_pairs,
        }
    }
}

impl Summary {
    /// `summary.md`.
    pub fn markdown(&self) -> String {
        let coverage = match self.item_coverage_pct {
            Some(pct) => format!(" ({pct}%)"),
            None => String::new(),
        };
        let mut md = format!(
            "# Co-occurrence graph\n\n\
             {} rows read, {} skipped (null user or item), {} views without a time.\n\n\
             Vocabulary: {} items, {}{coverage} with at least one edge.\n\n\
             Baskets: {} kept, {} dropped (over max_basket). \
             Sessions: {}, {} truncated (over max_session).\n\n",
            self.rows,
            self.skipped_null_user_or_item,
            self.views_without_time,
            self.vocabulary,
            self.items_with_edges,
            self.baskets_kept,
            self.baskets_dropped,
            self.sessions,
            self.sessions_truncated,
        );
        md += "| edge type | pairs | same domain | cross domain | below min_count |\n";
        md += "|---|---:|---:|---:|---:|\n";
        for (ty, e) in &self.edges {
            md += &format!(
                "| {ty} | {} | {} | {} | {} |\n",
                e.pairs, e.same_domain, e.cross_domain, e.below_min_count
            );
        }
        md += "\n## Pairs per domain pair\n\n| edge type | domain a | domain b | pairs |\n";
        md += "|---|---|---|---:|\n";
        for (ty, e) in &self.edges {
            for d in &e.domain_pairs {
                md += &format!(
                    "| {ty} | {} | {} | {} |\n",
                    cell(&d.domain_a),
                    cell(&d.domain_b),
                    d.pairs
                );
            }
        }
        md
    }

    /// One line for the run manifest.
    pub fn line(&self) -> String {
        let pairs: Vec<String> = self
            .edges
            .iter()
            .map(|(ty, e)| format!("{} {ty} ({} cross-domain)", e.pairs, e.cross_domain))
            .collect();
        format!(
            "graph: {} pairs over {} of {} items; {} baskets dropped, {} sessions truncated",
            pairs.join(" + "),
            self.items_with_edges,
            self.vocabulary,
            self.baskets_dropped,
            self.sessions_truncated
        )
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &PairCounts) -> Vec<((u32, u32), u64)> {
        let mut v: Vec<_> = pairs.0.iter().map(|(k, c)| (unpack(*k), *c)).collect();
        v.sort();
        v
    }

    #[test]
    fn window_pairs_items_at_most_that_many_positions_apart() {
        let mut pairs = PairCounts::default();
        pair_within(&[4, 1, 3], 1, &mut pairs);
        assert_eq!(counts(&pairs), [((1, 3), 1), ((1, 4), 1)]);
        let mut pairs = PairCounts::default();
        pair_within(&[4, 1, 3], 0, &mut pairs);
        assert_eq!(counts(&pairs), [((1, 3), 1), ((1, 4), 1), ((3, 4), 1)]);
    }

    #[test]
    fn a_basket_counts_a_repeated_item_once_and_oversize_baskets_are_dropped() {
        // basket 7: items 2, 5, 5; basket 9: items 1, 2, 3 (over a cap of 2).
        let mut rows = vec![
            pack(7, 5),
            pack(9, 1),
            pack(7, 2),
            pack(9, 2),
            pack(7, 5),
            pack(9, 3),
        ];
        let mut pairs = PairCounts::default();
        let c = co_purchase(&mut rows, 2, &mut pairs);
        assert_eq!((c.kept, c.dropped), (1, 1));
        assert_eq!(counts(&pairs), [((2, 5), 1)]);
    }

    #[test]
    fn ties_in_domain_votes_go_to_the_smallest_name() {
        let mut domains = Domains::default();
        let (b, a) = (domains.index("b"), domains.index("a"));
        let votes = [((0, b), 2), ((0, a), 2), ((1, b), 3), ((1, a), 1)];
        let picked = pick_domains(3, votes.into_iter(), &mut domains);
        let names: Vec<&str> = picked
            .iter()
            .map(|d| domains.names[*d as usize].as_str())
            .collect();
        assert_eq!(names, ["a", "b", UNKNOWN_DOMAIN]);
    }
}

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

mod columns;
mod pairs;
mod read;
mod summary;
mod write;

use seqpipe::stage::{KindInfo, ParamDoc, Port, Resource, StageContext, TypedStage};
use serde::{Deserialize, Serialize};

use crate::table;
use columns::Columns;
use pairs::count_pairs;
use read::read_events;
pub use summary::{DomainPair, EdgeSummary, Summary};
use write::{write_edges, write_items};

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

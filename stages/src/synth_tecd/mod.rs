//! `synth.tecd` — a seeded synthetic cross-domain e-commerce dataset shaped
//! like T-ECD (users, brands, retail and marketplace catalogues, retail /
//! marketplace / payments events and receipts), one Parquet partition per
//! day, with T-ECD's defects planted at T-ECD's rates.
//!
//! Params (defaults): `events` (200000) retail + marketplace events in all,
//! `days` (14) days, one partition each, `start_day` ("2024-01-01") the
//! first day, `users` (0 = events / 50, within 100..10000000), `items`
//! (0 = events / 20, within 500..100000) items of both catalogues together,
//! `marketplace_share` (0.4) of the events and of the items that are the
//! marketplace's, `payments_per_user` (10.0) payment rows per user over the
//! whole period, `zipf` (1.0) item popularity exponent (0 = uniform).
//! Inputs: none. Outputs: `dataset` (dir: the layout below and
//! `manifest.json` — params, seed, sizes, rows per table and domain, event
//! type counts, receipts, and each planted defect's target and realised
//! rate).
//!
//! Layout (`<table>/<domain>/<day>.parquet`, days `YYYY-MM-DD`, every day
//! written for every domain, empty or not):
//! - `events/{retail,marketplace}/<day>.parquet`: `user_id`, `item_id`,
//!   `timestamp` (epoch ms, UTC; rows are in generation order, not sorted),
//!   `event_type` (`catalog`, `u2i`, `search`, `cart`, `purchase`),
//!   `domain`, `subdomain` (marketplace: the storefront of the item's
//!   category, null 0.04%; retail: always null), `receipt_id` (set on
//!   `purchase` rows only; a receipt's rows share it).
//! - `events/payments/<day>.parquet`: `user_id`, `brand_id` (null 48.4%),
//!   `timestamp`, `price` (null 0.0002%), `domain` (`payments`).
//! - `receipts/{retail,marketplace}/<day>.parquet`: the `purchase` rows of
//!   the events, same order: `receipt_id`, `user_id`, `item_id`,
//!   `timestamp`, `brand_id` (null 85.8%), `price` (null 1.4%), `domain`.
//! - `items/{retail,marketplace}/items.parquet`: `item_id` (retail
//!   1000000000 + k, marketplace 2000000000 + k: never colliding),
//!   `category` (null retail 3.8%, marketplace 41.6%), `subcategory`
//!   (marketplace null 53.0%, retail never null), `price` (null retail
//!   10.6%, marketplace 0.1%), `brand_id`, `domain`.
//! - `users/users.parquet`: `user_id` (1..=users), `region` (null 1.7%),
//!   `socdem_cluster` (0..=29, null 0.15%).
//! - `brands/brands.parquet`: `brand_id`, `name`, `embedding`
//!   (`list<float32>`). Ids 1..=B appear once each (B = items / 20 within
//!   100..5000), then 51 duplicate rows re-imported from "a second source":
//!   46 distinct seeded ids get one extra row each, the first of them six
//!   (so it appears 7 times); the duplicates spell the name in capitals and
//!   carry 312-long embeddings where the originals carry 300 — the defect
//!   that breaks a fixed-size-list schema (as a plain list, `load.parquet`
//!   reads it).
//!
//! Behaviour: items have Zipf popularity within their domain, a category
//! (category sizes Zipf 0.7), 4 fixed related items in their category, one
//! complement in a fixed complementary category and, for 30% of items, a
//! complement in the other domain. Users (activity Zipf 0.5, so most are
//! active on several days) shop in sessions: events 3 s..10 min apart,
//! sessions of one user over 30 min apart. A session opens with `catalog`
//! or `search` (60% in the user's preferred category), or, 20% of the time
//! when the user bought in the domain before, by re-finding a bought item
//! and carting it (repeat purchases); then a browsing run of `catalog`,
//! `search` (half of them jump category) and `u2i` views (85% one of the
//! current item's related items). Viewed items are carted at a per-session
//! rate; 70% of sessions with a cart check out: each carted item with
//! probability 0.8 (at least one) plus, 15% per item, its complement
//! (carted first) form a receipt, all rows at the checkout time. One
//! checkout in 1000 of a domain (the first at or after its 251st receipt,
//! then at or after the 1251st…) also holds 51..80 random items of the
//! domain, bought without a cart (a wholesale order: a basket over any sane
//! cap). After a checkout holding an item with a cross-domain complement,
//! half the time the user finds (`search`), carts and buys that complement
//! in the other domain 2..20 min later. The realised mix is about catalog
//! 35%, u2i 30%, search 15%, cart 12%, purchase 8% (written to the
//! manifest). Payments are card transactions at brands: 35% at the brand
//! of an item the user bought, the rest Zipf over brands. Events per day
//! follow the weekday (weekend days weigh 1.2) and add up to `events`: a
//! session stops browsing when its domain's count for the day is reached,
//! a day's excess is taken off the next, and the total overshoots by at
//! most the rows of the last checkout.
//!
//! Defects are drawn so each realised rate is the target almost exactly: in
//! every block of 1000 rows of a table (and domain) exactly the target's
//! share of rows is chosen at random (the fraction carried to the next
//! block, starting at one half), so n rows hold round(rate · n) defects
//! up to the last partial block — a 0.0002% rate shows its first null at
//! 250000 rows.
//!
//! Memory stays bounded by the catalogues and per-user state (32 bytes a
//! user), not by `events`: days are generated and written one after the
//! other, and rows reach Parquet in chunks of 64 Ki. The same seed gives
//! the same bytes.

// The generator, in the order it runs: `sizes` and `calendar` resolve the
// params, `world` (over `catalogue` and `random`) fixes what precedes the
// first event and writes `items`, `users` and `brands` write their tables,
// then each day `sessions` streams events and receipts through `sinks`
// (`rows` the buffers) and `payments` its payments, `tally` counting and
// holding the streamed tables' `defect`s for `manifest`.
mod brands;
mod calendar;
mod catalogue;
mod defect;
mod manifest;
mod payments;
mod random;
mod rows;
mod sessions;
mod sinks;
mod sizes;
mod tally;
mod users;
mod world;

use std::path::Path;

use seqpipe::stage::{KindInfo, ParamDoc, Port, Resource, StageContext, TypedStage};
use serde::{Deserialize, Serialize};

use brands::write_brands;
use calendar::{parse_day, Calendar};
use catalogue::Domain;
use manifest::write_manifest;
use payments::write_payments;
use random::{stream_rng, Stream};
use sessions::{generate_day, UserState};
use sinks::DaySinks;
pub use sizes::Sizes;
use tally::Tally;
use users::write_users;
use world::World;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    pub events: u64,
    pub days: u32,
    pub start_day: String,
    pub users: u64,
    pub items: u64,
    pub marketplace_share: f64,
    pub payments_per_user: f64,
    pub zipf: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            events: 200_000,
            days: 14,
            start_day: "2024-01-01".into(),
            users: 0,
            items: 0,
            marketplace_share: 0.4,
            payments_per_user: 10.0,
            zipf: 1.0,
        }
    }
}

pub struct SynthTecd;

pub const VERSION: u32 = 1;

impl TypedStage for SynthTecd {
    type Params = Params;

    fn info(&self) -> KindInfo {
        KindInfo {
            kind: "synth.tecd",
            version: VERSION,
            summary: "Generates a seeded T-ECD-shaped cross-domain e-commerce dataset (events, receipts, payments, items, users, brands) as daily Parquet partitions, defects included.",
            inputs: vec![],
            extra_inputs: None,
            outputs: vec![Port {
                optional: false,
                name: "dataset",
                ty: "dir",
                doc: "<table>/<domain>/<day>.parquet for events and receipts, items/, users/, brands/, manifest.json",
            }],
            params: vec![
                ParamDoc { name: "events", doc: "retail + marketplace events in all (at least 1000)" },
                ParamDoc { name: "days", doc: "days, one partition each" },
                ParamDoc { name: "start_day", doc: "the first day, YYYY-MM-DD" },
                ParamDoc { name: "users", doc: "users (0 = events / 50, within 100..10000000)" },
                ParamDoc { name: "items", doc: "items of both catalogues (0 = events / 20, within 500..100000)" },
                ParamDoc { name: "marketplace_share", doc: "share of the events and items that are the marketplace's" },
                ParamDoc { name: "payments_per_user", doc: "payment rows per user over the whole period" },
                ParamDoc { name: "zipf", doc: "item popularity exponent (0 = uniform)" },
            ],
            resource: Resource::Cpu,
        }
    }

    fn validate(&self, p: &Params) -> Result<(), String> {
        if p.events < 1000 {
            return Err("events: must be at least 1000".into());
        }
        if p.events > 10_000_000_000 {
            return Err("events: must be at most 10000000000".into());
        }
        if !(1..=366).contains(&p.days) {
            return Err("days: must be between 1 and 366".into());
        }
        if parse_day(&p.start_day).is_none() {
            return Err(format!(
                "start_day: `{}` is not a day of the form YYYY-MM-DD (e.g. 2024-01-01)",
                p.start_day
            ));
        }
        if p.users != 0 && !(10..=50_000_000).contains(&p.users) {
            return Err("users: must be 0 (derived from events) or between 10 and 50000000".into());
        }
        if p.items != 0 && !(200..=10_000_000).contains(&p.items) {
            return Err(
                "items: must be 0 (derived from events) or between 200 and 10000000".into(),
            );
        }
        if !(0.05..=0.95).contains(&p.marketplace_share) {
            return Err("marketplace_share: must be between 0.05 and 0.95".into());
        }
        if !(0.0..=1000.0).contains(&p.payments_per_user) {
            return Err("payments_per_user: must be between 0 and 1000".into());
        }
        if !(0.0..=3.0).contains(&p.zipf) {
            return Err("zipf: must be between 0 and 3".into());
        }
        Ok(())
    }

    fn run(&self, p: Params, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        let out = ctx.output("dataset")?.to_path_buf();
        let bar = ctx.progress.bar(ctx.stage, "days", u64::from(p.days));
        let summary = generate(&p, ctx.seed, &out, &|| bar.inc(1))?;
        bar.finish_and_clear();
        ctx.note("events", summary.events);
        ctx.note("receipts", summary.receipts);
        ctx.note("payments", summary.payments);
        Ok(())
    }
}

/// The headline counts of a generated dataset.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// Retail + marketplace event rows.
    pub events: u64,
    /// Distinct receipts of both domains.
    pub receipts: u64,
    pub payments: u64,
}

/// Writes the whole dataset under `out` (an existing, empty folder) and its
/// `manifest.json`; `on_day` is called after each day.
pub fn generate(p: &Params, seed: u64, out: &Path, on_day: &dyn Fn()) -> anyhow::Result<Summary> {
    let sizes = Sizes::of(p);
    let world = World::build(p, &sizes, seed);
    let mut tally = Tally::new(seed);
    world.write_items(out, &mut tally)?;
    write_users(out, &sizes, seed, &mut tally)?;
    let brands = write_brands(out, sizes.brands, seed)?;
    let calendar = Calendar::new(p);
    let mut state = UserState::new(sizes.users as usize);
    let mut rng = stream_rng(seed, Stream::Sessions);
    for (d, day) in calendar.days.iter().enumerate() {
        let targets = Domain::BOTH.map(|dom| {
            calendar.cumulative(d, calendar.domain_events(p, dom)) as i64
                - tally.event_rows(dom) as i64
        });
        let mut sinks = DaySinks::create(out, &day.name)?;
        generate_day(
            &world, day, targets, &mut sinks, &mut state, &mut tally, &mut rng,
        )?;
        sinks.close()?;
        let payments = calendar.cumulative(d, sizes.payments) - tally.payments;
        write_payments(out, &world, day, payments, &state, &mut tally, &mut rng)?;
        on_day();
    }
    let summary = Summary {
        events: Domain::BOTH.iter().map(|&d| tally.event_rows(d)).sum(),
        receipts: tally.receipts.iter().sum(),
        payments: tally.payments,
    };
    write_manifest(out, p, seed, &sizes, &calendar, &tally, &brands)?;
    Ok(summary)
}

/// Item id → its planted related items (ids), for every item of both
/// domains: what the `u2i` views follow. For tests and analyses.
pub fn related_items(p: &Params, seed: u64) -> std::collections::HashMap<i64, Vec<i64>> {
    let world = World::build(p, &Sizes::of(p), seed);
    let mut map = std::collections::HashMap::new();
    for cat in &world.catalogues {
        for (i, rel) in cat.related.iter().enumerate() {
            map.insert(
                cat.ids[i],
                rel.iter().map(|&r| cat.ids[r as usize]).collect(),
            );
        }
    }
    map
}

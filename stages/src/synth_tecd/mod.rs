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
//!   (list<float32>). Ids 1..=B appear once each (B = items / 20 within
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

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use arrow::array::{
    ArrayRef, Float32Builder, Float64Array, Int64Array, ListBuilder, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use chrono::{Datelike, NaiveDate, Weekday};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use seqpipe::stage::{KindInfo, ParamDoc, Port, Resource, StageContext, TypedStage};
use serde::{Deserialize, Serialize};

use crate::table::TableWriter;

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

// ---------------------------------------------------------------------------
// Sizes, days and randomness
// ---------------------------------------------------------------------------

/// Related items per item (what `u2i` views follow).
const RELATED: usize = 4;
/// Share of items with a complement in the other domain.
const CROSS_SHARE: f64 = 0.3;
/// One checkout in `LARGE_EVERY` of a domain, from receipt number
/// `LARGE_FIRST` (0-based) on, is a wholesale order of 51..=80 extra items.
const LARGE_EVERY: u64 = 1000;
const LARGE_FIRST: u64 = 250;
/// Rows per chunk handed to the Parquet writer.
const FLUSH_ROWS: usize = 64 * 1024;
const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 24 * 60 * MINUTE_MS;

/// The resolved table sizes (params with 0 = derived filled in).
#[derive(Debug, Clone, Serialize)]
pub struct Sizes {
    pub users: u64,
    /// Retail, marketplace.
    pub items: [usize; 2],
    /// Distinct brand ids.
    pub brands: usize,
    pub payments: u64,
}

impl Sizes {
    pub fn of(p: &Params) -> Sizes {
        let users = if p.users > 0 {
            p.users
        } else {
            (p.events / 50).clamp(100, 10_000_000)
        };
        let total = if p.items > 0 {
            p.items as usize
        } else {
            (p.events / 20).clamp(500, 100_000) as usize
        };
        let market = ((total as f64 * p.marketplace_share).round() as usize).max(100);
        let retail = total.saturating_sub(market).max(100);
        Sizes {
            users,
            items: [retail, market],
            brands: (total / 20).clamp(100, 5000),
            payments: (users as f64 * p.payments_per_user).round() as u64,
        }
    }
}

fn parse_day(s: &str) -> Option<NaiveDate> {
    (s.len() == 10)
        .then(|| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
        .flatten()
}

/// One day: its partition name and where it starts.
struct Day {
    name: String,
    start_ms: i64,
}

/// The days and how the totals are spread over them (weekends weigh more).
struct Calendar {
    days: Vec<Day>,
    /// Cumulative day weights, normalised to end at 1.
    cumulative: Vec<f64>,
}

impl Calendar {
    fn new(p: &Params) -> Calendar {
        let first = parse_day(&p.start_day).expect("validated start_day");
        let mut days = Vec::new();
        let mut weights = Vec::new();
        for d in 0..p.days {
            let date = first + chrono::Days::new(u64::from(d));
            let start = date.and_hms_opt(0, 0, 0).expect("midnight exists");
            days.push(Day {
                name: date.format("%Y-%m-%d").to_string(),
                start_ms: start.and_utc().timestamp_millis(),
            });
            let weekend = matches!(date.weekday(), Weekday::Sat | Weekday::Sun);
            weights.push(if weekend { 1.2 } else { 1.0 });
        }
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let cumulative = weights
            .iter()
            .map(|w| {
                acc += w;
                acc / total
            })
            .collect();
        Calendar { days, cumulative }
    }

    /// How much of `total` is due by the end of day `d`.
    fn cumulative(&self, d: usize, total: u64) -> u64 {
        (self.cumulative[d] * total as f64).round() as u64
    }

    /// The events of domain `dom` over the whole period.
    fn domain_events(&self, p: &Params, dom: Domain) -> u64 {
        let market = (p.events as f64 * p.marketplace_share).round() as u64;
        match dom {
            Domain::Retail => p.events - market,
            Domain::Marketplace => market,
        }
    }
}

/// Independent random streams, so that (say) the catalogue does not change
/// when the session logic draws one more number.
#[derive(Clone, Copy)]
enum Stream {
    Catalogue = 1,
    Users = 2,
    Brands = 3,
    Sessions = 4,
    Defects = 5,
}

fn stream_rng(seed: u64, stream: Stream) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream as u64);
    rng
}

/// A uniform number in [0, 1) fixed by (seed, a, b): a per-user trait that
/// costs no memory (splitmix64).
fn hashed_unit(seed: u64, a: u64, b: u64) -> f64 {
    let mut z =
        seed ^ a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u: f64 = 1.0 - rng.gen::<f64>();
    let v: f64 = rng.gen();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

fn cents(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Draws indices in proportion to fixed weights (inverse CDF).
struct Cdf {
    cumulative: Vec<f64>,
    /// The last index with a positive weight (what rounding may land on).
    last: usize,
}

impl Cdf {
    fn new(weights: impl IntoIterator<Item = f64>) -> Cdf {
        let mut acc = 0.0;
        let mut last = 0;
        let cumulative = weights
            .into_iter()
            .enumerate()
            .map(|(i, w)| {
                if w > 0.0 {
                    last = i;
                }
                acc += w;
                acc
            })
            .collect();
        Cdf { cumulative, last }
    }

    /// Weights 1 / rank^s over `n` ranks, in a shuffled order.
    fn zipf_shuffled(n: usize, s: f64, rng: &mut ChaCha8Rng) -> Cdf {
        let mut w: Vec<f64> = (1..=n).map(|r| 1.0 / (r as f64).powf(s)).collect();
        w.shuffle(rng);
        Cdf::new(w)
    }

    /// The index at quantile `u` in [0, 1).
    fn at(&self, u: f64) -> usize {
        let x = u * self.cumulative.last().copied().unwrap_or(0.0);
        self.cumulative.partition_point(|&c| c <= x).min(self.last)
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> usize {
        self.at(rng.gen())
    }
}

/// One planted defect (nulls in a column of a table and domain), drawn so
/// that every block of [`Defect::BLOCK`] rows holds exactly the target's
/// share, the fraction carried on: the realised rate is the target up to
/// one row plus the last partial block's sampling.
struct Defect {
    table: &'static str,
    domain: &'static str,
    column: &'static str,
    /// The target, in percent (as documented and reported).
    percent: f64,
    rng: ChaCha8Rng,
    carry: f64,
    quota: u64,
    left: u64,
    rows: u64,
    hits: u64,
}

impl Defect {
    const BLOCK: u64 = 1000;

    fn new(
        seed: u64,
        table: &'static str,
        domain: &'static str,
        column: &'static str,
        percent: f64,
    ) -> Defect {
        // Each defect its own stream, keyed by its name, so defects do not
        // shift one another.
        let key = format!("{table}/{domain}/{column}")
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
        Defect {
            table,
            domain,
            column,
            percent,
            rng: stream_rng(seed ^ key, Stream::Defects),
            carry: 0.5,
            quota: 0,
            left: 0,
            rows: 0,
            hits: 0,
        }
    }

    /// Whether the next row is defective.
    fn next(&mut self) -> bool {
        if self.left == 0 {
            let due = self.carry + self.percent / 100.0 * Self::BLOCK as f64;
            self.quota = due.floor() as u64;
            self.carry = due - due.floor();
            self.left = Self::BLOCK;
        }
        // Selection sampling: exactly `quota` of the block's rows, at random.
        let hit = self.rng.gen_range(0..self.left) < self.quota;
        self.quota -= u64::from(hit);
        self.left -= 1;
        self.rows += 1;
        self.hits += u64::from(hit);
        hit
    }

    /// `value` unless this row is defective.
    fn keep<T>(&mut self, value: T) -> Option<T> {
        (!self.next()).then_some(value)
    }
}

// ---------------------------------------------------------------------------
// Catalogues
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Domain {
    Retail = 0,
    Marketplace = 1,
}

impl Domain {
    const BOTH: [Domain; 2] = [Domain::Retail, Domain::Marketplace];

    fn name(self) -> &'static str {
        match self {
            Domain::Retail => "retail",
            Domain::Marketplace => "marketplace",
        }
    }

    fn other(self) -> Domain {
        match self {
            Domain::Retail => Domain::Marketplace,
            Domain::Marketplace => Domain::Retail,
        }
    }

    fn ix(self) -> usize {
        self as usize
    }

    /// Item ids of the domain are `id_base + k`: the domains never collide.
    fn id_base(self) -> i64 {
        match self {
            Domain::Retail => 1_000_000_000,
            Domain::Marketplace => 2_000_000_000,
        }
    }

    /// Short prefix of category names (`r017`, `m017`).
    fn prefix(self) -> char {
        match self {
            Domain::Retail => 'r',
            Domain::Marketplace => 'm',
        }
    }
}

/// Marketplace storefronts; each marketplace category belongs to one.
const SUBDOMAINS: [&str; 6] = ["goods", "fashion", "electronics", "home", "beauty", "kids"];

/// One domain's items and their fixed relations.
struct Catalogue {
    domain: Domain,
    /// Item index → item id.
    ids: Vec<i64>,
    category: Vec<u32>,
    subcategory: Vec<u8>,
    price: Vec<f64>,
    /// Brand index (brand id − 1).
    brand: Vec<u32>,
    related: Vec<[u32; RELATED]>,
    /// A complement in the complementary category of the item's category.
    complement: Vec<u32>,
    /// A complement in the other domain's catalogue (its item index).
    cross: Vec<Option<u32>>,
    /// Category → its items, and a popularity draw among them.
    members: Vec<Vec<u32>>,
    in_category: Vec<Cdf>,
    /// Categories by total popularity.
    categories: Cdf,
    /// Category → its storefront (marketplace).
    subdomain: Vec<&'static str>,
}

impl Catalogue {
    fn build(domain: Domain, n: usize, zipf: f64, brands: &Cdf, rng: &mut ChaCha8Rng) -> Catalogue {
        let k = (n / 40).clamp(3, 400);
        let popularity: Vec<f64> = {
            let mut w: Vec<f64> = (1..=n).map(|r| 1.0 / (r as f64).powf(zipf)).collect();
            w.shuffle(rng);
            w
        };
        let mut positions: Vec<i64> = (0..n as i64).collect();
        positions.shuffle(rng);
        let ids = positions.iter().map(|pos| domain.id_base() + pos).collect();
        // The first k items seed one category each, so none is empty.
        let sizes = Cdf::zipf_shuffled(k, 0.7, rng);
        let category: Vec<u32> = (0..n)
            .map(|i| (if i < k { i } else { sizes.sample(rng) }) as u32)
            .collect();
        let mut members = vec![Vec::new(); k];
        for (i, &c) in category.iter().enumerate() {
            members[c as usize].push(i as u32);
        }
        let in_category: Vec<Cdf> = members
            .iter()
            .map(|m| Cdf::new(m.iter().map(|&i| popularity[i as usize])))
            .collect();
        let categories = Cdf::new(
            members
                .iter()
                .map(|m| m.iter().map(|&i| popularity[i as usize]).sum::<f64>()),
        );
        let base_price: Vec<f64> = (0..k).map(|_| (5.0 + normal(rng)).exp()).collect();
        let mut cat = Catalogue {
            domain,
            ids,
            subcategory: (0..n).map(|_| rng.gen_range(0..4u8)).collect(),
            price: category
                .iter()
                .map(|&c| cents(base_price[c as usize] * (0.4 * normal(rng)).exp()).max(0.01))
                .collect(),
            brand: (0..n).map(|_| brands.sample(rng) as u32).collect(),
            related: Vec::new(),
            complement: Vec::new(),
            cross: vec![None; n],
            subdomain: (0..k)
                .map(|_| *SUBDOMAINS.choose(rng).expect("non-empty"))
                .collect(),
            category,
            members,
            in_category,
            categories,
        };
        cat.related = (0..n).map(|i| cat.draw_related(i as u32, rng)).collect();
        // Each category's complementary category is another fixed one.
        let partner: Vec<u32> = (0..k)
            .map(|c| ((c + rng.gen_range(1..k)) % k) as u32)
            .collect();
        cat.complement = (0..n)
            .map(|i| cat.popular_in(partner[cat.category[i] as usize], rng))
            .collect();
        cat
    }

    /// `RELATED` popular items of `item`'s category other than `item`
    /// (any popular item when the category holds nothing else).
    fn draw_related(&self, item: u32, rng: &mut ChaCha8Rng) -> [u32; RELATED] {
        let c = self.category[item as usize];
        std::array::from_fn(|_| {
            for _ in 0..16 {
                let other = self.popular_in(c, rng);
                if other != item {
                    return other;
                }
            }
            self.popular(rng)
        })
    }

    /// An item of category `c`, by popularity.
    fn popular_in(&self, c: u32, rng: &mut ChaCha8Rng) -> u32 {
        let c = c as usize;
        self.members[c][self.in_category[c].sample(rng)]
    }

    /// An item of the domain, by popularity.
    fn popular(&self, rng: &mut ChaCha8Rng) -> u32 {
        let c = self.categories.sample(rng) as u32;
        self.popular_in(c, rng)
    }

    fn len(&self) -> usize {
        self.ids.len()
    }
}

/// For `CROSS_SHARE` of `from`'s items, a complement in `to`: each category
/// of `from` maps to one category of `to`, its items to popular ones there.
fn cross_links(from: &Catalogue, to: &Catalogue, rng: &mut ChaCha8Rng) -> Vec<Option<u32>> {
    let target: Vec<u32> = (0..from.members.len())
        .map(|_| to.categories.sample(rng) as u32)
        .collect();
    (0..from.len())
        .map(|i| {
            rng.gen_bool(CROSS_SHARE)
                .then(|| to.popular_in(target[from.category[i] as usize], rng))
        })
        .collect()
}

/// Everything fixed before the first event: catalogues, brand and user
/// popularity.
struct World {
    seed: u64,
    catalogues: [Catalogue; 2],
    brands: Cdf,
    users: Cdf,
}

impl World {
    fn build(p: &Params, sizes: &Sizes, seed: u64) -> World {
        let mut rng = stream_rng(seed, Stream::Catalogue);
        let brands = Cdf::zipf_shuffled(sizes.brands, 1.0, &mut rng);
        let mut retail =
            Catalogue::build(Domain::Retail, sizes.items[0], p.zipf, &brands, &mut rng);
        let mut market = Catalogue::build(
            Domain::Marketplace,
            sizes.items[1],
            p.zipf,
            &brands,
            &mut rng,
        );
        retail.cross = cross_links(&retail, &market, &mut rng);
        market.cross = cross_links(&market, &retail, &mut rng);
        let users = Cdf::zipf_shuffled(sizes.users as usize, 0.5, &mut rng);
        World {
            seed,
            catalogues: [retail, market],
            brands,
            users,
        }
    }

    fn catalogue(&self, d: Domain) -> &Catalogue {
        &self.catalogues[d.ix()]
    }

    /// The category a user starts most sessions of domain `d` in (fixed).
    fn preferred_category(&self, user: usize, d: Domain) -> u32 {
        let u = hashed_unit(self.seed, user as u64, d as u64);
        self.catalogue(d).categories.at(u) as u32
    }

    /// `items/<domain>/items.parquet` for both domains.
    fn write_items(&self, out: &Path, tally: &mut Tally) -> anyhow::Result<()> {
        for cat in &self.catalogues {
            let d = cat.domain;
            let pct = |retail: f64, market: f64| match d {
                Domain::Retail => retail,
                Domain::Marketplace => market,
            };
            let seed = self.seed;
            let mut null_category =
                Defect::new(seed, "items", d.name(), "category", pct(3.8, 41.6));
            let mut null_sub = Defect::new(seed, "items", d.name(), "subcategory", pct(0.0, 53.0));
            let mut null_price = Defect::new(seed, "items", d.name(), "price", pct(10.6, 0.1));
            let category_name = |i: usize| format!("{}{:03}", d.prefix(), cat.category[i]);
            let batch = crate::table::batch(vec![
                (
                    "item_id",
                    Arc::new(Int64Array::from(cat.ids.clone())) as ArrayRef,
                ),
                (
                    "category",
                    Arc::new(StringArray::from_iter(
                        (0..cat.len()).map(|i| null_category.keep(category_name(i))),
                    )),
                ),
                (
                    "subcategory",
                    Arc::new(StringArray::from_iter((0..cat.len()).map(|i| {
                        null_sub.keep(format!("{}s{}", category_name(i), cat.subcategory[i]))
                    }))),
                ),
                (
                    "price",
                    Arc::new(Float64Array::from_iter(
                        cat.price.iter().map(|&x| null_price.keep(x)),
                    )),
                ),
                (
                    "brand_id",
                    Arc::new(Int64Array::from_iter_values(
                        cat.brand.iter().map(|&b| i64::from(b) + 1),
                    )),
                ),
                ("domain", constant_strings(d.name(), cat.len())),
            ])?;
            let path = partition_dir(out, "items", d.name())?.join("items.parquet");
            crate::table::write(&path, &batch)?;
            tally
                .rows
                .push((format!("items/{}", d.name()), cat.len() as u64));
            if d == Domain::Retail {
                // Retail subcategories are never null; no defect to report.
                tally.defects.extend([null_category, null_price]);
            } else {
                tally.defects.extend([null_category, null_sub, null_price]);
            }
        }
        Ok(())
    }
}

fn constant_strings(value: &str, n: usize) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(std::iter::repeat_n(value, n)))
}

/// Creates (if needed) `out/<table>/<domain>` and returns it.
fn partition_dir(out: &Path, table: &str, domain: &str) -> anyhow::Result<std::path::PathBuf> {
    let dir = out.join(table).join(domain);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

// ---------------------------------------------------------------------------
// Users and brands
// ---------------------------------------------------------------------------

fn write_users(out: &Path, sizes: &Sizes, seed: u64, tally: &mut Tally) -> anyhow::Result<()> {
    let n = sizes.users as usize;
    let mut rng = stream_rng(seed, Stream::Users);
    let regions = Cdf::zipf_shuffled(85, 1.0, &mut rng);
    let mut null_region = Defect::new(seed, "users", "", "region", 1.7);
    let mut null_socdem = Defect::new(seed, "users", "", "socdem_cluster", 0.15);
    let region: Vec<Option<String>> = (0..n)
        .map(|_| {
            let r = regions.sample(&mut rng);
            null_region.keep(format!("region_{:02}", r + 1))
        })
        .collect();
    let socdem: Vec<Option<i64>> = (0..n)
        .map(|_| null_socdem.keep(rng.gen_range(0..30)))
        .collect();
    let batch = crate::table::batch(vec![
        (
            "user_id",
            Arc::new(Int64Array::from_iter_values(1..=n as i64)) as ArrayRef,
        ),
        ("region", Arc::new(StringArray::from(region))),
        ("socdem_cluster", Arc::new(Int64Array::from(socdem))),
    ])?;
    let dir = out.join("users");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    crate::table::write(&dir.join("users.parquet"), &batch)?;
    tally.rows.push(("users".into(), n as u64));
    tally.defects.extend([null_region, null_socdem]);
    Ok(())
}

/// What the manifest says about the brands table's planted defects.
#[derive(Debug, Serialize)]
struct BrandFacts {
    distinct_ids: usize,
    rows: usize,
    duplicated_ids: usize,
    /// The id that appears 7 times.
    most_repeated_id: i64,
    /// Embedding length → rows.
    embedding_lengths: std::collections::BTreeMap<usize, usize>,
}

/// `brands/brands.parquet`: ids 1..=n once each with 300-long embeddings,
/// then the 51 duplicate rows (46 ids; the first 7 times in all) with
/// capitalised names and 312-long embeddings.
fn write_brands(out: &Path, n: usize, seed: u64) -> anyhow::Result<BrandFacts> {
    const DUPLICATED: usize = 46;
    const ORIGINAL_DIM: usize = 300;
    const REIMPORT_DIM: usize = 312;
    let mut rng = stream_rng(seed, Stream::Brands);
    let names: Vec<String> = (0..n).map(|_| brand_name(&mut rng)).collect();
    let dup: Vec<usize> = rand::seq::index::sample(&mut rng, n, DUPLICATED).into_vec();
    // The first duplicated id gets 6 extra rows, the others one.
    let extra: Vec<usize> = std::iter::repeat_n(dup[0], 6)
        .chain(dup[1..].iter().copied())
        .collect();
    let rows: Vec<(usize, String, usize)> = (0..n)
        .map(|b| (b, names[b].clone(), ORIGINAL_DIM))
        .chain(
            extra
                .iter()
                .map(|&b| (b, names[b].to_uppercase(), REIMPORT_DIM)),
        )
        .collect();
    let mut embedding = ListBuilder::new(Float32Builder::new());
    for (_, _, dim) in &rows {
        for _ in 0..*dim {
            embedding.values().append_value(rng.gen_range(-1.0f32..1.0));
        }
        embedding.append(true);
    }
    let batch = crate::table::batch(vec![
        (
            "brand_id",
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.0 as i64 + 1),
            )) as ArrayRef,
        ),
        (
            "name",
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.1.as_str()),
            )),
        ),
        ("embedding", Arc::new(embedding.finish())),
    ])?;
    let dir = out.join("brands");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    crate::table::write(&dir.join("brands.parquet"), &batch)?;
    Ok(BrandFacts {
        distinct_ids: n,
        rows: rows.len(),
        duplicated_ids: DUPLICATED,
        most_repeated_id: dup[0] as i64 + 1,
        embedding_lengths: [(ORIGINAL_DIM, n), (REIMPORT_DIM, extra.len())].into(),
    })
}

fn brand_name(rng: &mut ChaCha8Rng) -> String {
    const SYLLABLES: [&str; 20] = [
        "al", "be", "co", "da", "el", "fi", "go", "ha", "in", "jo", "ka", "lu", "mo", "ne", "or",
        "pa", "ri", "so", "ta", "vi",
    ];
    let len = rng.gen_range(2..=3);
    let word: String = (0..len)
        .map(|_| *SYLLABLES.choose(rng).expect("non-empty"))
        .collect();
    let mut chars = word.chars();
    let first = chars.next().expect("non-empty").to_ascii_uppercase();
    std::iter::once(first).chain(chars).collect()
}

// ---------------------------------------------------------------------------
// Row buffers and the per-day writers
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventType {
    Catalog = 0,
    U2i = 1,
    Search = 2,
    Cart = 3,
    Purchase = 4,
}

impl EventType {
    const ALL: [EventType; 5] = [
        EventType::Catalog,
        EventType::U2i,
        EventType::Search,
        EventType::Cart,
        EventType::Purchase,
    ];

    fn name(self) -> &'static str {
        match self {
            EventType::Catalog => "catalog",
            EventType::U2i => "u2i",
            EventType::Search => "search",
            EventType::Cart => "cart",
            EventType::Purchase => "purchase",
        }
    }
}

/// Rows waiting to be written, column by column.
trait Rows {
    /// The partition's columns; [`Rows::take`] returns them in this order.
    fn schema() -> SchemaRef;
    fn len(&self) -> usize;
    /// The buffered rows' columns; the buffer is left empty.
    fn take(&mut self) -> Vec<ArrayRef>;
}

fn field(name: &str, ty: DataType, nullable: bool) -> Field {
    Field::new(name, ty, nullable)
}

#[derive(Default)]
struct EventRows {
    domain: &'static str,
    user: Vec<i64>,
    item: Vec<i64>,
    time: Vec<i64>,
    kind: Vec<&'static str>,
    subdomain: Vec<Option<&'static str>>,
    receipt: Vec<Option<i64>>,
}

impl Rows for EventRows {
    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            field("user_id", DataType::Int64, false),
            field("item_id", DataType::Int64, false),
            field("timestamp", DataType::Int64, false),
            field("event_type", DataType::Utf8, false),
            field("domain", DataType::Utf8, false),
            field("subdomain", DataType::Utf8, true),
            field("receipt_id", DataType::Int64, true),
        ]))
    }

    fn len(&self) -> usize {
        self.user.len()
    }

    fn take(&mut self) -> Vec<ArrayRef> {
        let n = self.len();
        vec![
            Arc::new(Int64Array::from(std::mem::take(&mut self.user))),
            Arc::new(Int64Array::from(std::mem::take(&mut self.item))),
            Arc::new(Int64Array::from(std::mem::take(&mut self.time))),
            Arc::new(StringArray::from(std::mem::take(&mut self.kind))),
            constant_strings(self.domain, n),
            Arc::new(StringArray::from(std::mem::take(&mut self.subdomain))),
            Arc::new(Int64Array::from(std::mem::take(&mut self.receipt))),
        ]
    }
}

#[derive(Default)]
struct ReceiptRows {
    domain: &'static str,
    receipt: Vec<i64>,
    user: Vec<i64>,
    item: Vec<i64>,
    time: Vec<i64>,
    brand: Vec<Option<i64>>,
    price: Vec<Option<f64>>,
}

impl Rows for ReceiptRows {
    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            field("receipt_id", DataType::Int64, false),
            field("user_id", DataType::Int64, false),
            field("item_id", DataType::Int64, false),
            field("timestamp", DataType::Int64, false),
            field("brand_id", DataType::Int64, true),
            field("price", DataType::Float64, true),
            field("domain", DataType::Utf8, false),
        ]))
    }

    fn len(&self) -> usize {
        self.receipt.len()
    }

    fn take(&mut self) -> Vec<ArrayRef> {
        let n = self.len();
        vec![
            Arc::new(Int64Array::from(std::mem::take(&mut self.receipt))),
            Arc::new(Int64Array::from(std::mem::take(&mut self.user))),
            Arc::new(Int64Array::from(std::mem::take(&mut self.item))),
            Arc::new(Int64Array::from(std::mem::take(&mut self.time))),
            Arc::new(Int64Array::from(std::mem::take(&mut self.brand))),
            Arc::new(Float64Array::from(std::mem::take(&mut self.price))),
            constant_strings(self.domain, n),
        ]
    }
}

#[derive(Default)]
struct PaymentRows {
    user: Vec<i64>,
    brand: Vec<Option<i64>>,
    time: Vec<i64>,
    price: Vec<Option<f64>>,
}

impl Rows for PaymentRows {
    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            field("user_id", DataType::Int64, false),
            field("brand_id", DataType::Int64, true),
            field("timestamp", DataType::Int64, false),
            field("price", DataType::Float64, true),
            field("domain", DataType::Utf8, false),
        ]))
    }

    fn len(&self) -> usize {
        self.user.len()
    }

    fn take(&mut self) -> Vec<ArrayRef> {
        let n = self.len();
        vec![
            Arc::new(Int64Array::from(std::mem::take(&mut self.user))),
            Arc::new(Int64Array::from(std::mem::take(&mut self.brand))),
            Arc::new(Int64Array::from(std::mem::take(&mut self.time))),
            Arc::new(Float64Array::from(std::mem::take(&mut self.price))),
            constant_strings("payments", n),
        ]
    }
}

/// One partition file being written: rows buffer up and go to Parquet in
/// chunks of [`FLUSH_ROWS`].
struct Sink<R: Rows> {
    rows: R,
    schema: SchemaRef,
    writer: TableWriter,
}

impl<R: Rows> Sink<R> {
    fn create(path: &Path, rows: R) -> anyhow::Result<Sink<R>> {
        let schema = R::schema();
        Ok(Sink {
            writer: TableWriter::create(path, schema.clone())?,
            rows,
            schema,
        })
    }

    /// Call after pushing a row.
    fn pushed(&mut self) -> anyhow::Result<()> {
        if self.rows.len() >= FLUSH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if self.rows.len() > 0 {
            let batch = RecordBatch::try_new(self.schema.clone(), self.rows.take())?;
            self.writer.write(&batch)?;
        }
        Ok(())
    }

    fn close(mut self) -> anyhow::Result<usize> {
        self.flush()?;
        self.writer.close()
    }
}

/// The event and receipt partitions of one day, per domain.
struct DaySinks {
    events: [Sink<EventRows>; 2],
    receipts: [Sink<ReceiptRows>; 2],
}

impl DaySinks {
    fn create(out: &Path, day: &str) -> anyhow::Result<DaySinks> {
        let file = format!("{day}.parquet");
        let events = |d: Domain| -> anyhow::Result<Sink<EventRows>> {
            let rows = EventRows {
                domain: d.name(),
                ..EventRows::default()
            };
            Sink::create(&partition_dir(out, "events", d.name())?.join(&file), rows)
        };
        let receipts = |d: Domain| -> anyhow::Result<Sink<ReceiptRows>> {
            let rows = ReceiptRows {
                domain: d.name(),
                ..ReceiptRows::default()
            };
            Sink::create(&partition_dir(out, "receipts", d.name())?.join(&file), rows)
        };
        Ok(DaySinks {
            events: [events(Domain::Retail)?, events(Domain::Marketplace)?],
            receipts: [receipts(Domain::Retail)?, receipts(Domain::Marketplace)?],
        })
    }

    fn close(self) -> anyhow::Result<()> {
        for sink in self.events {
            sink.close()?;
        }
        for sink in self.receipts {
            sink.close()?;
        }
        Ok(())
    }
}

/// Counts kept across days: rows, receipts, event types and the defects of
/// the streamed tables (whose rates hold over the whole table).
struct Tally {
    /// Domain → event type → rows.
    event_types: [[u64; 5]; 2],
    /// Distinct receipts per domain, and how many were wholesale orders.
    receipts: [u64; 2],
    large_baskets: [u64; 2],
    receipt_rows: [u64; 2],
    next_receipt_id: i64,
    payments: u64,
    /// Static tables' rows, by `<table>/<domain>`.
    rows: Vec<(String, u64)>,
    null_subdomain: Defect,
    null_receipt_brand: [Defect; 2],
    null_receipt_price: [Defect; 2],
    null_payment_brand: Defect,
    null_payment_price: Defect,
    /// The static tables' defects, once written.
    defects: Vec<Defect>,
}

impl Tally {
    fn new(seed: u64) -> Tally {
        let per_domain = |column, pct| {
            Domain::BOTH.map(|d| Defect::new(seed, "receipts", d.name(), column, pct))
        };
        Tally {
            event_types: [[0; 5]; 2],
            receipts: [0; 2],
            large_baskets: [0; 2],
            receipt_rows: [0; 2],
            next_receipt_id: 1,
            payments: 0,
            rows: Vec::new(),
            null_subdomain: Defect::new(seed, "events", "marketplace", "subdomain", 0.04),
            null_receipt_brand: per_domain("brand_id", 85.8),
            null_receipt_price: per_domain("price", 1.4),
            null_payment_brand: Defect::new(seed, "events", "payments", "brand_id", 48.4),
            null_payment_price: Defect::new(seed, "events", "payments", "price", 0.0002),
            defects: Vec::new(),
        }
    }

    fn event_rows(&self, d: Domain) -> u64 {
        self.event_types[d.ix()].iter().sum()
    }

    /// Every defect, static tables first.
    fn all_defects(&self) -> impl Iterator<Item = &Defect> {
        self.defects
            .iter()
            .chain([&self.null_subdomain])
            .chain(&self.null_receipt_brand)
            .chain(&self.null_receipt_price)
            .chain([&self.null_payment_brand, &self.null_payment_price])
    }
}

// ---------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------

/// What a user carries from session to session: the last two items bought
/// per domain (for repeat purchases and payments at their brands) and when
/// their last session ended (so sessions do not overlap).
struct UserState {
    bought: Vec<[[u32; 2]; 2]>,
    busy_until: Vec<i64>,
}

impl UserState {
    const NONE: u32 = u32::MAX;

    fn new(users: usize) -> UserState {
        UserState {
            bought: vec![[[Self::NONE; 2]; 2]; users],
            busy_until: vec![i64::MIN; users],
        }
    }

    fn remember(&mut self, user: usize, d: Domain, item: u32) {
        let slots = &mut self.bought[user][d.ix()];
        if slots[0] != item {
            slots[1] = slots[0];
            slots[0] = item;
        }
    }

    /// One of the user's recent purchases in `d`, if any.
    fn recent(&self, user: usize, d: Domain, rng: &mut ChaCha8Rng) -> Option<u32> {
        let slots = self.bought[user][d.ix()];
        let pick = slots[rng.gen_range(0..2)];
        [pick, slots[0]].into_iter().find(|&i| i != Self::NONE)
    }
}

/// Session start weights by hour of day (quiet nights, evening peak).
const HOURS: [f64; 24] = [
    1.0, 0.5, 0.3, 0.2, 0.2, 0.4, 1.0, 2.0, 3.0, 4.0, 4.5, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.5, 6.0,
    6.5, 6.0, 5.0, 3.5, 2.0,
];

/// A time of day (ms) with the diurnal profile.
fn time_of_day(hours: &Cdf, rng: &mut ChaCha8Rng) -> i64 {
    hours.sample(rng) as i64 * 60 * MINUTE_MS + rng.gen_range(0..60 * MINUTE_MS)
}

/// Generates day `day`'s sessions until both domains reach their targets.
fn generate_day(
    world: &World,
    day: &Day,
    targets: [i64; 2],
    sinks: &mut DaySinks,
    state: &mut UserState,
    tally: &mut Tally,
    rng: &mut ChaCha8Rng,
) -> anyhow::Result<()> {
    let hours = Cdf::new(HOURS);
    let mut shop = Shop {
        world,
        sinks,
        state,
        tally,
        left: targets,
        day_end: day.start_ms + DAY_MS - 1,
    };
    let mut refused = 0u32;
    while shop.left.iter().any(|&l| l > 0) {
        let domain = shop.pick_domain(rng);
        let user = world.users.sample(rng);
        let wanted = day.start_ms + time_of_day(&hours, rng);
        // A user's sessions are over 30 min apart; one still busy starts
        // later, or (near midnight) makes way for another user — unless
        // too many have been turned away in a row (a tiny user base).
        let after_last =
            shop.state.busy_until[user].saturating_add(rng.gen_range(31..=180) * MINUTE_MS);
        let start = wanted.max(after_last);
        if start > shop.day_end - 45 * MINUTE_MS && refused < 64 {
            refused += 1;
            continue;
        }
        refused = 0;
        let start = start.min(shop.day_end - 45 * MINUTE_MS);
        shop.session(domain, user, start, rng)?;
    }
    Ok(())
}

/// The session generator of one day.
struct Shop<'a> {
    world: &'a World,
    sinks: &'a mut DaySinks,
    state: &'a mut UserState,
    tally: &'a mut Tally,
    /// Events still due today, per domain.
    left: [i64; 2],
    day_end: i64,
}

/// A user's visit to one domain as it unfolds.
struct Visit {
    domain: Domain,
    user: usize,
    time: i64,
    /// The item last looked at, and its category.
    current: u32,
    category: u32,
    cart: Vec<u32>,
}

impl Shop<'_> {
    /// A domain with events left, in proportion to what is left.
    fn pick_domain(&self, rng: &mut ChaCha8Rng) -> Domain {
        let [r, m] = self.left.map(|l| l.max(0) as f64);
        if rng.gen::<f64>() * (r + m) < r {
            Domain::Retail
        } else {
            Domain::Marketplace
        }
    }

    fn session(
        &mut self,
        d: Domain,
        user: usize,
        start: i64,
        rng: &mut ChaCha8Rng,
    ) -> anyhow::Result<()> {
        let world = self.world;
        let cat = world.catalogue(d);
        let mut v = Visit {
            domain: d,
            user,
            time: start,
            current: 0,
            category: 0,
            cart: Vec::new(),
        };
        let repeat = rng
            .gen_bool(0.2)
            .then(|| self.state.recent(user, d, rng))
            .flatten();
        let mut last = if let Some(item) = repeat {
            // Re-finding something bought before, straight into the cart.
            self.view(&mut v, EventType::Search, item, rng)?;
            self.add_to_cart(&mut v, item, rng)?;
            EventType::Search
        } else {
            v.category = if rng.gen_bool(0.6) {
                world.preferred_category(user, d)
            } else {
                cat.categories.sample(rng) as u32
            };
            let first = if rng.gen_bool(0.65) {
                EventType::Catalog
            } else {
                EventType::Search
            };
            let item = cat.popular_in(v.category, rng);
            self.view(&mut v, first, item, rng)?;
            first
        };
        let cart_rate = rng.gen_range(0.0..0.3);
        while rng.gen_bool(5.0 / 6.0) && self.left[d.ix()] > 0 {
            let kind = next_view(last, rng);
            let item = self.browse(&mut v, kind, rng);
            self.view(&mut v, kind, item, rng)?;
            if rng.gen_bool(cart_rate) && !v.cart.contains(&item) {
                self.add_to_cart(&mut v, item, rng)?;
            }
            last = kind;
        }
        if !v.cart.is_empty() && rng.gen_bool(0.7) {
            self.checkout(&mut v, rng)?;
        }
        self.state.busy_until[user] = v.time;
        Ok(())
    }

    /// The item a view of `kind` lands on from the visit's current item.
    fn browse(&self, v: &mut Visit, kind: EventType, rng: &mut ChaCha8Rng) -> u32 {
        let cat = self.world.catalogue(v.domain);
        match kind {
            EventType::U2i if rng.gen_bool(0.85) => {
                cat.related[v.current as usize][rng.gen_range(0..RELATED)]
            }
            EventType::Search if rng.gen_bool(0.5) => {
                v.category = cat.categories.sample(rng) as u32;
                cat.popular_in(v.category, rng)
            }
            _ => cat.popular_in(v.category, rng),
        }
    }

    /// Moves the clock on by a within-session gap (3 s..10 min, mostly
    /// under a minute), never past the end of the day.
    fn tick(&self, v: &mut Visit, rng: &mut ChaCha8Rng) {
        let gap = (-rng.gen::<f64>().max(1e-12).ln() * 40_000.0) as i64;
        v.time = (v.time + gap.clamp(3_000, 10 * MINUTE_MS)).min(self.day_end);
    }

    fn view(
        &mut self,
        v: &mut Visit,
        kind: EventType,
        item: u32,
        rng: &mut ChaCha8Rng,
    ) -> anyhow::Result<()> {
        self.tick(v, rng);
        v.current = item;
        v.category = self.world.catalogue(v.domain).category[item as usize];
        self.event(v, kind, item, None)
    }

    fn add_to_cart(
        &mut self,
        v: &mut Visit,
        item: u32,
        rng: &mut ChaCha8Rng,
    ) -> anyhow::Result<()> {
        self.tick(v, rng);
        v.cart.push(item);
        self.event(v, EventType::Cart, item, None)
    }

    /// Buys most of the cart plus some complements (carted first), and
    /// maybe a complement in the other domain right after.
    fn checkout(&mut self, v: &mut Visit, rng: &mut ChaCha8Rng) -> anyhow::Result<()> {
        let world = self.world;
        let cat = world.catalogue(v.domain);
        let mut basket: Vec<u32> = v
            .cart
            .iter()
            .copied()
            .filter(|_| rng.gen_bool(0.8))
            .collect();
        if basket.is_empty() {
            basket.push(v.cart[0]);
        }
        for i in 0..basket.len() {
            let complement = cat.complement[basket[i] as usize];
            if rng.gen_bool(0.15) && !basket.contains(&complement) && !v.cart.contains(&complement)
            {
                self.add_to_cart(v, complement, rng)?;
                basket.push(complement);
            }
        }
        let d = v.domain.ix();
        // Counted as due rather than on the exact receipt number, since a
        // cross-domain purchase may take that number.
        let due = LARGE_FIRST + LARGE_EVERY * self.tally.large_baskets[d];
        if self.tally.receipts[d] >= due {
            let size = rng.gen_range(51..=80).min(cat.len());
            for i in rand::seq::index::sample(rng, cat.len(), size) {
                if !basket.contains(&(i as u32)) {
                    basket.push(i as u32);
                }
            }
            self.tally.large_baskets[d] += 1;
        }
        self.tick(v, rng);
        self.purchase(v, &basket, rng)?;
        let cross = basket.iter().find_map(|&i| cat.cross[i as usize]);
        if let Some(item) = cross.filter(|_| rng.gen_bool(0.5)) {
            self.cross_purchase(v, item, rng)?;
        }
        Ok(())
    }

    /// The other domain, 2..20 min after a checkout: find, cart and buy the
    /// complement of something just bought.
    fn cross_purchase(
        &mut self,
        v: &mut Visit,
        item: u32,
        rng: &mut ChaCha8Rng,
    ) -> anyhow::Result<()> {
        let other = v.domain.other();
        if self.left[other.ix()] <= 0 {
            return Ok(());
        }
        let mut w = Visit {
            domain: other,
            user: v.user,
            time: (v.time + rng.gen_range(2..=20) * MINUTE_MS).min(self.day_end),
            current: item,
            category: 0,
            cart: Vec::new(),
        };
        self.view(&mut w, EventType::Search, item, rng)?;
        self.add_to_cart(&mut w, item, rng)?;
        self.tick(&mut w, rng);
        self.purchase(&mut w, &[item], rng)?;
        v.time = w.time;
        Ok(())
    }

    /// One receipt: a `purchase` event and a receipt row per item, all at
    /// the visit's time.
    fn purchase(
        &mut self,
        v: &mut Visit,
        basket: &[u32],
        rng: &mut ChaCha8Rng,
    ) -> anyhow::Result<()> {
        let d = v.domain;
        let world = self.world;
        let cat = world.catalogue(d);
        let id = self.tally.next_receipt_id;
        self.tally.next_receipt_id += 1;
        self.tally.receipts[d.ix()] += 1;
        for &item in basket {
            self.event(v, EventType::Purchase, item, Some(id))?;
            let discount = *[0.0, 0.0, 0.0, 0.1, 0.2, 0.3]
                .choose(rng)
                .expect("non-empty");
            let price = cents(cat.price[item as usize] * (1.0 - discount));
            let brand = i64::from(cat.brand[item as usize]) + 1;
            let sink = &mut self.sinks.receipts[d.ix()];
            let rows = &mut sink.rows;
            rows.receipt.push(id);
            rows.user.push(v.user as i64 + 1);
            rows.item.push(cat.ids[item as usize]);
            rows.time.push(v.time);
            rows.brand
                .push(self.tally.null_receipt_brand[d.ix()].keep(brand));
            rows.price
                .push(self.tally.null_receipt_price[d.ix()].keep(price));
            sink.pushed()?;
            self.tally.receipt_rows[d.ix()] += 1;
            self.state.remember(v.user, d, item);
        }
        Ok(())
    }

    fn event(
        &mut self,
        v: &Visit,
        kind: EventType,
        item: u32,
        receipt: Option<i64>,
    ) -> anyhow::Result<()> {
        let d = v.domain;
        let world = self.world;
        let cat = world.catalogue(d);
        let subdomain = match d {
            Domain::Retail => None,
            Domain::Marketplace => {
                let s = cat.subdomain[cat.category[item as usize] as usize];
                self.tally.null_subdomain.keep(s)
            }
        };
        let sink = &mut self.sinks.events[d.ix()];
        let rows = &mut sink.rows;
        rows.user.push(v.user as i64 + 1);
        rows.item.push(cat.ids[item as usize]);
        rows.time.push(v.time);
        rows.kind.push(kind.name());
        rows.subdomain.push(subdomain);
        rows.receipt.push(receipt);
        sink.pushed()?;
        self.tally.event_types[d.ix()][kind as usize] += 1;
        self.left[d.ix()] -= 1;
        Ok(())
    }
}

/// The next view's type after a view of type `last`: `u2i` runs follow a
/// `catalog` or `search` entry.
fn next_view(last: EventType, rng: &mut ChaCha8Rng) -> EventType {
    let (u2i, catalog) = match last {
        EventType::U2i => (0.42, 0.44),
        _ => (0.48, 0.38),
    };
    let x: f64 = rng.gen();
    if x < u2i {
        EventType::U2i
    } else if x < u2i + catalog {
        EventType::Catalog
    } else {
        EventType::Search
    }
}

// ---------------------------------------------------------------------------
// Payments and the manifest
// ---------------------------------------------------------------------------

/// `events/payments/<day>.parquet`: `count` card payments at brands, 35% at
/// the brand of an item the user bought recently.
fn write_payments(
    out: &Path,
    world: &World,
    day: &Day,
    count: u64,
    state: &UserState,
    tally: &mut Tally,
    rng: &mut ChaCha8Rng,
) -> anyhow::Result<()> {
    let hours = Cdf::new(HOURS);
    let path = partition_dir(out, "events", "payments")?.join(format!("{}.parquet", day.name));
    let mut sink = Sink::create(&path, PaymentRows::default())?;
    for _ in 0..count {
        let user = world.users.sample(rng);
        let d = if rng.gen_bool(0.5) {
            Domain::Retail
        } else {
            Domain::Marketplace
        };
        let bought = rng
            .gen_bool(0.35)
            .then(|| state.recent(user, d, rng))
            .flatten();
        let brand = match bought {
            Some(item) => world.catalogue(d).brand[item as usize] as usize,
            None => world.brands.sample(rng),
        };
        let price = cents((4.5 + 1.1 * normal(rng)).exp()).max(0.01);
        let rows = &mut sink.rows;
        rows.user.push(user as i64 + 1);
        rows.brand
            .push(tally.null_payment_brand.keep(brand as i64 + 1));
        rows.time.push(day.start_ms + time_of_day(&hours, rng));
        rows.price.push(tally.null_payment_price.keep(price));
        sink.pushed()?;
    }
    tally.payments += count;
    sink.close()?;
    Ok(())
}

fn write_manifest(
    out: &Path,
    p: &Params,
    seed: u64,
    sizes: &Sizes,
    calendar: &Calendar,
    tally: &Tally,
    brands: &BrandFacts,
) -> anyhow::Result<()> {
    use serde_json::{json, Map, Value};
    let mut rows = Map::new();
    for d in Domain::BOTH {
        rows.insert(format!("events/{}", d.name()), json!(tally.event_rows(d)));
        rows.insert(
            format!("receipts/{}", d.name()),
            json!(tally.receipt_rows[d.ix()]),
        );
    }
    rows.insert("events/payments".into(), json!(tally.payments));
    rows.insert("brands".into(), json!(brands.rows));
    for (name, n) in &tally.rows {
        rows.insert(name.clone(), json!(n));
    }
    let per_domain = |f: &dyn Fn(Domain) -> Value| -> Value {
        Domain::BOTH
            .iter()
            .map(|&d| (d.name().to_string(), f(d)))
            .collect::<Map<_, _>>()
            .into()
    };
    let defects: Vec<Value> = tally
        .all_defects()
        .map(|x| {
            json!({
                "table": x.table,
                "domain": x.domain,
                "column": x.column,
                "target_percent": x.percent,
                "rows": x.rows,
                "nulls": x.hits,
                "realised_percent": if x.rows == 0 { 0.0 } else { x.hits as f64 * 100.0 / x.rows as f64 },
            })
        })
        .collect();
    let manifest = json!({
        "kind": "synth.tecd",
        "version": VERSION,
        "seed": seed,
        "params": p,
        "sizes": sizes,
        "days": calendar.days.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        "rows": rows,
        "receipts": per_domain(&|d| json!(tally.receipts[d.ix()])),
        "large_baskets": per_domain(&|d| json!(tally.large_baskets[d.ix()])),
        "event_types": per_domain(&|d| {
            EventType::ALL
                .iter()
                .map(|t| (t.name().to_string(), json!(tally.event_types[d.ix()][*t as usize])))
                .collect::<Map<_, _>>()
                .into()
        }),
        "brands": brands,
        "defects": defects,
    });
    let path = out.join("manifest.json");
    std::fs::write(&path, serde_json::to_string_pretty(&manifest)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defects_hit_the_rate_per_block_with_the_fraction_carried() {
        let mut d = Defect::new(7, "t", "d", "c", 48.4);
        let hits = (0..10_000).filter(|_| d.next()).count();
        assert_eq!(hits, 4840);
        // 0.0002%: the carried half plus 0.002 a block reaches 1 after 250
        // blocks, not before.
        let mut tiny = Defect::new(7, "t", "d", "c", 0.0002);
        assert_eq!((0..249_000).filter(|_| tiny.next()).count(), 0);
        assert_eq!((0..1_000).filter(|_| tiny.next()).count(), 1);
    }

    #[test]
    fn cdf_never_draws_a_zero_weight() {
        let cdf = Cdf::new([0.0, 2.0, 0.0, 1.0, 0.0]);
        assert_eq!(cdf.at(0.0), 1);
        assert_eq!(cdf.at(0.66), 1);
        assert_eq!(cdf.at(0.67), 3);
        assert_eq!(cdf.at(0.999_999_999), 3);
    }

    #[test]
    fn sizes_derive_from_events_within_bounds() {
        let s = Sizes::of(&Params::default());
        assert_eq!(
            (s.users, s.items, s.brands, s.payments),
            (4000, [6000, 4000], 500, 40_000)
        );
        let big = Sizes::of(&Params {
            events: 100_000_000,
            ..Params::default()
        });
        assert_eq!(
            (big.users, big.items, big.brands),
            (2_000_000, [60_000, 40_000], 5000)
        );
    }

    #[test]
    fn days_spread_the_total_and_weekends_weigh_more() {
        // 2024-01-06 and 07 are a Saturday and a Sunday.
        let c = Calendar::new(&Params {
            days: 7,
            ..Params::default()
        });
        let per_day: Vec<u64> = (0..7)
            .map(|d| c.cumulative(d, 7400) - if d == 0 { 0 } else { c.cumulative(d - 1, 7400) })
            .collect();
        assert_eq!(per_day, [1000, 1000, 1000, 1000, 1000, 1200, 1200]);
        assert_eq!(c.days[0].start_ms, 1_704_067_200_000);
        assert_eq!(c.days[6].name, "2024-01-07");
    }
}

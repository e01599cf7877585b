//! `manifest.json`: params, seed, sizes, days, rows per table and domain,
//! receipts, event types, the brands' facts and every defect's target and
//! realised rate.

use std::path::Path;

use anyhow::Context;

use super::brands::BrandFacts;
use super::calendar::Calendar;
use super::catalogue::Domain;
use super::rows::EventType;
use super::sizes::Sizes;
use super::tally::Tally;
use super::{Params, VERSION};

/// Writes `out/manifest.json` (pretty-printed) from what the generation
/// counted.
pub(super) fn write_manifest(
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

//! Writing the graph: `edges.parquet` (each edge type's pairs of at least
//! `min_count`, weighted, in id order) and `items.parquet` (the vocabulary
//! with domains, occurrences and degrees).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::pairs::PairCounts;
use super::read::{unpack, Items};
use super::summary::{EdgeSummary, Tally};
use super::{EdgeType, Params};
use crate::table;

/// Rows per batch written to Parquet.
const CHUNK: usize = 64 * 1024;

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
pub(super) fn write_edges(
    path: &Path,
    items: &Items,
    counted: Vec<(EdgeType, PairCounts)>,
    p: &Params,
    degree: &mut [u64],
) -> anyhow::Result<BTreeMap<String, EdgeSummary>> {
    let schema = edge_schema();
    let mut writer = table::TableWriter::create(path, schema.clone(), table::Dictionary::All)?;
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
pub(super) fn write_items(path: &Path, items: &Items, degree: &[u64]) -> anyhow::Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("item_id", DataType::Int64, false),
        Field::new("domain", DataType::Utf8, false),
        Field::new("occurrences", DataType::Int64, false),
        Field::new("degree", DataType::Int64, false),
    ]));
    let mut writer = table::TableWriter::create(path, schema.clone(), table::Dictionary::All)?;
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

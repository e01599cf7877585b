//! The `brands` table: names and embeddings, with the re-imported duplicate
//! rows (capitalised names, longer embeddings) that T-ECD carries.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use arrow::array::{ArrayRef, Float32Builder, Int64Array, ListBuilder, StringArray};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::random::{stream_rng, Stream};

/// What the manifest says about the brands table's planted defects.
#[derive(Debug, Serialize)]
pub(super) struct BrandFacts {
    distinct_ids: usize,
    pub(super) rows: usize,
    duplicated_ids: usize,
    /// The id that appears 7 times.
    most_repeated_id: i64,
    /// Embedding length → rows.
    embedding_lengths: std::collections::BTreeMap<usize, usize>,
}

/// `brands/brands.parquet`: ids 1..=n once each with 300-long embeddings,
/// then the 51 duplicate rows (46 ids; the first 7 times in all) with
/// capitalised names and 312-long embeddings.
pub(super) fn write_brands(out: &Path, n: usize, seed: u64) -> anyhow::Result<BrandFacts> {
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

//! The `users` table: ids, regions and socio-demographic clusters, with
//! their planted nulls.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use arrow::array::{ArrayRef, Int64Array, StringArray};
use rand::Rng;

use super::defect::Defect;
use super::random::{stream_rng, Cdf, Stream};
use super::sizes::Sizes;
use super::tally::Tally;

/// `users/users.parquet`: ids 1..=users, a Zipf-distributed region and a
/// uniform socio-demographic cluster, each nulled at its T-ECD rate.
pub(super) fn write_users(
    out: &Path,
    sizes: &Sizes,
    seed: u64,
    tally: &mut Tally,
) -> anyhow::Result<()> {
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

//! The world fixed before the first event (both catalogues, brand and user
//! popularity) and the `items` tables written from it.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};

use super::catalogue::{cross_links, Catalogue, Domain};
use super::defect::Defect;
use super::random::{hashed_unit, stream_rng, Cdf, Stream};
use super::rows::constant_strings;
use super::sinks::partition_dir;
use super::sizes::Sizes;
use super::tally::Tally;
use super::Params;

/// Everything fixed before the first event: catalogues, brand and user
/// popularity.
pub(super) struct World {
    seed: u64,
    pub(super) catalogues: [Catalogue; 2],
    pub(super) brands: Cdf,
    pub(super) users: Cdf,
}

impl World {
    pub(super) fn build(p: &Params, sizes: &Sizes, seed: u64) -> World {
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

    pub(super) fn catalogue(&self, d: Domain) -> &Catalogue {
        &self.catalogues[d.ix()]
    }

    /// The category a user starts most sessions of domain `d` in (fixed).
    pub(super) fn preferred_category(&self, user: usize, d: Domain) -> u32 {
        let u = hashed_unit(self.seed, user as u64, d as u64);
        self.catalogue(d).categories.at(u) as u32
    }

    /// `items/<domain>/items.parquet` for both domains.
    pub(super) fn write_items(&self, out: &Path, tally: &mut Tally) -> anyhow::Result<()> {
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

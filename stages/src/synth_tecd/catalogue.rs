//! The two domains and their catalogues: items with popularity, category,
//! price, brand, related items and complements (in-domain and cross-domain).

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::random::{cents, normal, Cdf};

/// Related items per item (what `u2i` views follow).
pub(super) const RELATED: usize = 4;
/// Share of items with a complement in the other domain.
const CROSS_SHARE: f64 = 0.3;

/// The two shops whose events and receipts are generated (payments are a
/// third `domain` value of their own, not a shop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Domain {
    Retail = 0,
    Marketplace = 1,
}

impl Domain {
    pub(super) const BOTH: [Domain; 2] = [Domain::Retail, Domain::Marketplace];

    pub(super) fn name(self) -> &'static str {
        match self {
            Domain::Retail => "retail",
            Domain::Marketplace => "marketplace",
        }
    }

    pub(super) fn other(self) -> Domain {
        match self {
            Domain::Retail => Domain::Marketplace,
            Domain::Marketplace => Domain::Retail,
        }
    }

    pub(super) fn ix(self) -> usize {
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
    pub(super) fn prefix(self) -> char {
        match self {
            Domain::Retail => 'r',
            Domain::Marketplace => 'm',
        }
    }
}

/// Marketplace storefronts; each marketplace category belongs to one.
const SUBDOMAINS: [&str; 6] = ["goods", "fashion", "electronics", "home", "beauty", "kids"];

/// One domain's items and their fixed relations.
pub(super) struct Catalogue {
    pub(super) domain: Domain,
    /// Item index → item id.
    pub(super) ids: Vec<i64>,
    pub(super) category: Vec<u32>,
    pub(super) subcategory: Vec<u8>,
    pub(super) price: Vec<f64>,
    /// Brand index (brand id − 1).
    pub(super) brand: Vec<u32>,
    pub(super) related: Vec<[u32; RELATED]>,
    /// A complement in the complementary category of the item's category.
    pub(super) complement: Vec<u32>,
    /// A complement in the other domain's catalogue (its item index).
    pub(super) cross: Vec<Option<u32>>,
    /// Category → its items, and a popularity draw among them.
    members: Vec<Vec<u32>>,
    in_category: Vec<Cdf>,
    /// Categories by total popularity.
    pub(super) categories: Cdf,
    /// Category → its storefront (marketplace).
    pub(super) subdomain: Vec<&'static str>,
}

impl Catalogue {
    pub(super) fn build(
        domain: Domain,
        n: usize,
        zipf: f64,
        brands: &Cdf,
        rng: &mut ChaCha8Rng,
    ) -> Catalogue {
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
    pub(super) fn popular_in(&self, c: u32, rng: &mut ChaCha8Rng) -> u32 {
        let c = c as usize;
        self.members[c][self.in_category[c].sample(rng)]
    }

    /// An item of the domain, by popularity.
    fn popular(&self, rng: &mut ChaCha8Rng) -> u32 {
        let c = self.categories.sample(rng) as u32;
        self.popular_in(c, rng)
    }

    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }
}

/// For `CROSS_SHARE` of `from`'s items, a complement in `to`: each category
/// of `from` maps to one category of `to`, its items to popular ones there.
pub(super) fn cross_links(
    from: &Catalogue,
    to: &Catalogue,
    rng: &mut ChaCha8Rng,
) -> Vec<Option<u32>> {
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

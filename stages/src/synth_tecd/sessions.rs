//! Sessions: per-user state across sessions, one day's session loop, and
//! the visit logic (views, carts, checkouts, cross-domain purchases) that
//! writes the event and receipt rows.

use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::calendar::{Day, DAY_MS, MINUTE_MS};
use super::catalogue::{Domain, RELATED};
use super::random::{cents, Cdf};
use super::rows::EventType;
use super::sinks::DaySinks;
use super::tally::Tally;
use super::world::World;

/// One checkout in `LARGE_EVERY` of a domain, from receipt number
/// `LARGE_FIRST` (0-based) on, is a wholesale order of 51..=80 extra items.
const LARGE_EVERY: u64 = 1000;
const LARGE_FIRST: u64 = 250;

/// What a user carries from session to session: the last two items bought
/// per domain (for repeat purchases and payments at their brands) and when
/// their last session ended (so sessions do not overlap).
pub(super) struct UserState {
    bought: Vec<[[u32; 2]; 2]>,
    busy_until: Vec<i64>,
}

impl UserState {
    const NONE: u32 = u32::MAX;

    pub(super) fn new(users: usize) -> UserState {
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
    pub(super) fn recent(&self, user: usize, d: Domain, rng: &mut ChaCha8Rng) -> Option<u32> {
        let slots = self.bought[user][d.ix()];
        let pick = slots[rng.gen_range(0..2)];
        [pick, slots[0]].into_iter().find(|&i| i != Self::NONE)
    }
}

/// Session start weights by hour of day (quiet nights, evening peak).
pub(super) const HOURS: [f64; 24] = [
    1.0, 0.5, 0.3, 0.2, 0.2, 0.4, 1.0, 2.0, 3.0, 4.0, 4.5, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 5.5, 6.0,
    6.5, 6.0, 5.0, 3.5, 2.0,
];

/// A time of day (ms) with the diurnal profile.
pub(super) fn time_of_day(hours: &Cdf, rng: &mut ChaCha8Rng) -> i64 {
    hours.sample(rng) as i64 * 60 * MINUTE_MS + rng.gen_range(0..60 * MINUTE_MS)
}

/// Generates day `day`'s sessions until both domains reach their targets.
pub(super) fn generate_day(
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

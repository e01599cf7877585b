//! The `events/payments` partitions: card payments at brands, some at the
//! brands of items the user bought.

use std::path::Path;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::calendar::Day;
use super::catalogue::Domain;
use super::random::{cents, normal, Cdf};
use super::rows::PaymentRows;
use super::sessions::{time_of_day, UserState, HOURS};
use super::sinks::{partition_dir, Sink};
use super::tally::Tally;
use super::world::World;

/// `events/payments/<day>.parquet`: `count` card payments at brands, 35% at
/// the brand of an item the user bought recently.
pub(super) fn write_payments(
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

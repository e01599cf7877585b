//! A planted defect: nulls in one column of one table and domain at an
//! exact target rate, drawn block by block.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::random::{stream_rng, Stream};

/// One planted defect (nulls in a column of a table and domain), drawn so
/// that every block of [`Defect::BLOCK`] rows holds exactly the target's
/// share, the fraction carried on: the realised rate is the target up to
/// one row plus the last partial block's sampling.
pub(super) struct Defect {
    pub(super) table: &'static str,
    pub(super) domain: &'static str,
    pub(super) column: &'static str,
    /// The target, in percent (as documented and reported).
    pub(super) percent: f64,
    rng: ChaCha8Rng,
    carry: f64,
    quota: u64,
    left: u64,
    pub(super) rows: u64,
    pub(super) hits: u64,
}

impl Defect {
    const BLOCK: u64 = 1000;

    pub(super) fn new(
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
    pub(super) fn keep<T>(&mut self, value: T) -> Option<T> {
        (!self.next()).then_some(value)
    }
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
}

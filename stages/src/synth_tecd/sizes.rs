//! The resolved table sizes: users, items per domain, brands and payments,
//! with the params' 0 = derived filled in.

use serde::Serialize;

use super::Params;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}

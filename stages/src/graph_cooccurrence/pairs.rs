//! Counting pairs: co-purchase pairs from baskets (oversize ones dropped)
//! and co-view pairs from gap-split, deduplicated, windowed sessions.

use std::collections::{HashMap, HashSet};

use seqpipe::stage::StageContext;

use super::read::{pack, unpack, View};
use super::{EdgeType, Params};

/// Distinct item pairs (smaller index first, packed) → how many baskets or
/// sessions held them.
#[derive(Default)]
pub(super) struct PairCounts(pub(super) HashMap<u64, u64>);

impl PairCounts {
    fn add(&mut self, a: u32, b: u32) {
        debug_assert_ne!(a, b, "baskets and sessions are deduplicated");
        *self.0.entry(pack(a.min(b), a.max(b))).or_default() += 1;
    }
}

#[derive(Default)]
pub(super) struct BasketCounts {
    pub(super) kept: u64,
    pub(super) dropped: u64,
}

#[derive(Default)]
pub(super) struct SessionCounts {
    pub(super) sessions: u64,
    pub(super) truncated: u64,
}

pub(super) fn count_pairs(
    ctx: &StageContext<'_>,
    mut baskets: Vec<u64>,
    mut views: Vec<View>,
    p: &Params,
) -> (Vec<(EdgeType, PairCounts)>, BasketCounts, SessionCounts) {
    let (basket_rows, view_rows) = (baskets.len() as u64, views.len() as u64);
    let bar = ctx
        .progress
        .bar(ctx.stage, "pairs", basket_rows + view_rows);
    let mut counted = Vec::new();
    let mut basket_counts = BasketCounts::default();
    let mut session_counts = SessionCounts::default();
    if p.wants(EdgeType::CoPurchase) {
        let mut pairs = PairCounts::default();
        basket_counts = co_purchase(&mut baskets, p.max_basket, &mut pairs);
        counted.push((EdgeType::CoPurchase, pairs));
    }
    bar.inc(basket_rows);
    drop(baskets);
    if p.wants(EdgeType::CoView) {
        let mut pairs = PairCounts::default();
        let gap_ms =
            i64::try_from(p.session_gap_minutes.saturating_mul(60_000)).unwrap_or(i64::MAX);
        let rules = SessionRules {
            gap_ms,
            max_items: p.max_session,
            window: p.window as usize,
        };
        session_counts = co_view(&mut views, &rules, &mut pairs);
        counted.push((EdgeType::CoView, pairs));
    }
    bar.inc(view_rows);
    bar.finish_and_clear();
    (counted, basket_counts, session_counts)
}

/// Counts every pair of each basket of at most `max_items` distinct items.
/// `rows` holds `basket << 32 | item`: sorting groups the baskets, with
/// their items in index order, and deduplicating counts a repeated item once.
fn co_purchase(rows: &mut Vec<u64>, max_items: usize, pairs: &mut PairCounts) -> BasketCounts {
    rows.sort_unstable();
    rows.dedup();
    let mut counts = BasketCounts::default();
    for basket in rows.chunk_by(|a, b| unpack(*a).0 == unpack(*b).0) {
        if basket.len() > max_items {
            counts.dropped += 1;
            continue;
        }
        counts.kept += 1;
        for (i, &a) in basket.iter().enumerate() {
            for &b in &basket[i + 1..] {
                pairs.add(unpack(a).1, unpack(b).1);
            }
        }
    }
    counts
}

/// How views become sessions and sessions become pairs.
struct SessionRules {
    /// A longer gap between two views starts a new session.
    gap_ms: i64,
    max_items: usize,
    /// 0 = every pair in the session.
    window: usize,
}

/// Splits each user's views into sessions and counts the pairs within
/// `window` positions of each session's deduplicated item order.
fn co_view(views: &mut [View], rules: &SessionRules, pairs: &mut PairCounts) -> SessionCounts {
    // Ties in time go by item index (= id order), not by row order, so that
    // shuffled rows give the same sessions.
    views.sort_unstable_by_key(|v| (v.user, v.time, v.item));
    let mut counts = SessionCounts::default();
    let mut seen = HashSet::new();
    let mut order: Vec<u32> = Vec::new();
    for user in views.chunk_by(|a, b| a.user == b.user) {
        for session in user.chunk_by(|a, b| b.time.saturating_sub(a.time) <= rules.gap_ms) {
            counts.sessions += 1;
            seen.clear();
            order.clear();
            order.extend(session.iter().map(|v| v.item).filter(|i| seen.insert(*i)));
            if order.len() > rules.max_items {
                counts.truncated += 1;
                order.drain(..order.len() - rules.max_items);
            }
            pair_within(&order, rules.window, pairs);
        }
    }
    counts
}

/// Counts the pairs of distinct items at most `window` positions apart
/// (0 = all pairs).
fn pair_within(order: &[u32], window: usize, pairs: &mut PairCounts) {
    for (i, &a) in order.iter().enumerate() {
        let end = if window == 0 {
            order.len()
        } else {
            (i + 1 + window).min(order.len())
        };
        for &b in &order[i + 1..end] {
            pairs.add(a, b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &PairCounts) -> Vec<((u32, u32), u64)> {
        let mut v: Vec<_> = pairs.0.iter().map(|(k, c)| (unpack(*k), *c)).collect();
        v.sort();
        v
    }

    #[test]
    fn window_pairs_items_at_most_that_many_positions_apart() {
        let mut pairs = PairCounts::default();
        pair_within(&[4, 1, 3], 1, &mut pairs);
        assert_eq!(counts(&pairs), [((1, 3), 1), ((1, 4), 1)]);
        let mut pairs = PairCounts::default();
        pair_within(&[4, 1, 3], 0, &mut pairs);
        assert_eq!(counts(&pairs), [((1, 3), 1), ((1, 4), 1), ((3, 4), 1)]);
    }

    #[test]
    fn a_basket_counts_a_repeated_item_once_and_oversize_baskets_are_dropped() {
        // basket 7: items 2, 5, 5; basket 9: items 1, 2, 3 (over a cap of 2).
        let mut rows = vec![
            pack(7, 5),
            pack(9, 1),
            pack(7, 2),
            pack(9, 2),
            pack(7, 5),
            pack(9, 3),
        ];
        let mut pairs = PairCounts::default();
        let c = co_purchase(&mut rows, 2, &mut pairs);
        assert_eq!((c.kept, c.dropped), (1, 1));
        assert_eq!(counts(&pairs), [((2, 5), 1)]);
    }
}

//! The days of the dataset (partition names, start times) and how totals
//! are spread over them, weekends weighing more.

use chrono::{Datelike, NaiveDate, Weekday};

use super::catalogue::Domain;
use super::Params;

/// Milliseconds, the unit of every `timestamp`.
pub(super) const MINUTE_MS: i64 = 60_000;
pub(super) const DAY_MS: i64 = 24 * 60 * MINUTE_MS;

/// A `YYYY-MM-DD` day (exactly ten characters, so a short form such as
/// `2024-1-1` is refused).
pub(super) fn parse_day(s: &str) -> Option<NaiveDate> {
    (s.len() == 10)
        .then(|| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
        .flatten()
}

/// One day: its partition name and where it starts.
pub(super) struct Day {
    pub(super) name: String,
    pub(super) start_ms: i64,
}

/// The days and how the totals are spread over them (weekends weigh more).
pub(super) struct Calendar {
    pub(super) days: Vec<Day>,
    /// Cumulative day weights, normalised to end at 1.
    cumulative: Vec<f64>,
}

impl Calendar {
    pub(super) fn new(p: &Params) -> Calendar {
        let first = parse_day(&p.start_day).expect("validated start_day");
        let mut days = Vec::new();
        let mut weights = Vec::new();
        for d in 0..p.days {
            let date = first + chrono::Days::new(u64::from(d));
            let start = date.and_hms_opt(0, 0, 0).expect("midnight exists");
            days.push(Day {
                name: date.format("%Y-%m-%d").to_string(),
                start_ms: start.and_utc().timestamp_millis(),
            });
            let weekend = matches!(date.weekday(), Weekday::Sat | Weekday::Sun);
            weights.push(if weekend { 1.2 } else { 1.0 });
        }
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let cumulative = weights
            .iter()
            .map(|w| {
                acc += w;
                acc / total
            })
            .collect();
        Calendar { days, cumulative }
    }

    /// How much of `total` is due by the end of day `d`.
    pub(super) fn cumulative(&self, d: usize, total: u64) -> u64 {
        (self.cumulative[d] * total as f64).round() as u64
    }

    /// The events of domain `dom` over the whole period.
    pub(super) fn domain_events(&self, p: &Params, dom: Domain) -> u64 {
        let market = (p.events as f64 * p.marketplace_share).round() as u64;
        match dom {
            Domain::Retail => p.events - market,
            Domain::Marketplace => market,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_spread_the_total_and_weekends_weigh_more() {
        // 2024-01-06 and 07 are a Saturday and a Sunday.
        let c = Calendar::new(&Params {
            days: 7,
            ..Params::default()
        });
        let per_day: Vec<u64> = (0..7)
            .map(|d| c.cumulative(d, 7400) - if d == 0 { 0 } else { c.cumulative(d - 1, 7400) })
            .collect();
        assert_eq!(per_day, [1000, 1000, 1000, 1000, 1000, 1200, 1200]);
        assert_eq!(c.days[0].start_ms, 1_704_067_200_000);
        assert_eq!(c.days[6].name, "2024-01-07");
    }
}

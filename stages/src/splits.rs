//! How `sequences` holds data out: the temporal and ratio splits, over
//! per-user or per-session timelines (leave-one-out stays in
//! [`crate::sequences`], where it always was).
//!
//! - **Temporal**: one global time cut for the test period (the latest
//!   `test_share` of events) and one before it for validation (the
//!   `valid_share` before that). A timeline *unit* — a user's events, or a
//!   session (a run of one user's events with no gap longer than
//!   `session_gap`) — goes wholly into the period its *last* event falls in
//!   when units are sessions, so a session is never cut in two; user
//!   timelines are cut at the boundaries. Training sees only events before
//!   the validation cut, so nothing from the held-out periods leaks into
//!   training.
//! - **Ratio**: each unit's own first `1 - valid_share - test_share` of
//!   events train, the next `valid_share` validate and the last
//!   `test_share` test (at least one event each; shorter units are dropped).
//!
//! Held-out examples: with `targets = "one"`, one per unit and period (a
//! user's first event of the period, whose history is everything before
//! it; a session's last event, whose history is the session before it);
//! with `targets = "all"`, one per held-out event, its history everything
//! of the unit before it (for sessions: within the session only — the
//! session-based protocol). The vocabulary is the training items: held-out
//! targets whose item never occurs in training are removed (counted), and
//! so are such items in histories, since no model has a representation of
//! them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// One timeline: a user's events or one session, (time, raw item id) in
/// time order, under the id it is reported with.
pub struct Unit {
    pub id: i64,
    pub events: Vec<(i64, i64)>,
    /// Each event's row in the log the units were built from (so a
    /// held-out example can be traced back to its event's other columns).
    pub rows: Vec<usize>,
}

/// An example with raw item ids.
#[derive(Debug, Clone, PartialEq)]
pub struct RawExample {
    pub unit: i64,
    pub history: Vec<i64>,
    pub target: i64,
}

/// A split with raw item ids, before remapping.
#[derive(Default)]
pub struct RawSplit {
    pub train: Vec<(i64, Vec<i64>)>,
    pub valid: Vec<RawExample>,
    pub test: Vec<RawExample>,
    /// The cuts of a temporal split: (validation start, test start).
    pub cuts: Option<(i64, i64)>,
    /// Units too short to contribute anything.
    pub dropped_units: u64,
    /// Per held-out example, in the same order: the log rows of its target
    /// event and of the event before it in the unit.
    pub valid_rows: Vec<EventRows>,
    pub test_rows: Vec<EventRows>,
}

/// The log rows of a held-out example's target and of the unit's event
/// just before it (always present: a target never opens its unit).
pub type EventRows = (usize, usize);

/// What meta.json records about a temporal or ratio split.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SplitDetail {
    /// "user" or "session".
    pub unit: String,
    pub units: u64,
    pub dropped_units: u64,
    pub targets: String,
    /// First time of the validation and test periods (temporal only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_from: Option<i64>,
    /// Held-out targets removed because training never saw their item.
    pub unseen_targets_removed: u64,
    /// History items removed for the same reason.
    pub unseen_history_items_removed: u64,
}

/// A user's time-sorted events cut into sessions wherever two consecutive
/// events are more than `gap` apart (same time unit as the events).
pub fn sessions(events: &[(i64, i64)], gap: i64) -> Vec<Vec<(i64, i64)>> {
    let mut out: Vec<Vec<(i64, i64)>> = vec![];
    for &e in events {
        match out.last_mut() {
            Some(s) if e.0 - s.last().expect("sessions are non-empty").0 <= gap => s.push(e),
            _ => out.push(vec![e]),
        }
    }
    out
}

/// The time at quantile `q` of `times` (sorted in place): events at or after
/// it are the latest `1 - q` share.
fn time_quantile(times: &mut [i64], q: f64) -> i64 {
    times.sort_unstable();
    let i = ((times.len() as f64) * q).floor() as usize;
    times[i.min(times.len() - 1)]
}

/// The temporal split; `whole` keeps units whole (sessions), assigning each
/// to the period of its last event.
pub fn temporal(
    units: &[Unit],
    valid_share: f64,
    test_share: f64,
    whole: bool,
    all: bool,
) -> RawSplit {
    let mut times: Vec<i64> = if whole {
        units
            .iter()
            .filter_map(|u| u.events.last())
            .map(|e| e.0)
            .collect()
    } else {
        units
            .iter()
            .flat_map(|u| u.events.iter().map(|e| e.0))
            .collect()
    };
    let test_from = time_quantile(&mut times, 1.0 - test_share);
    let valid_from = time_quantile(&mut times, 1.0 - test_share - valid_share);
    let mut out = RawSplit {
        cuts: Some((valid_from, test_from)),
        ..RawSplit::default()
    };
    for u in units {
        let period = |t: i64| usize::from(t >= valid_from) + usize::from(t >= test_from);
        if whole {
            // A session: all of it in one period.
            let end = u.events.last().map_or(0, |e| e.0);
            let items: Vec<i64> = u.events.iter().map(|e| e.1).collect();
            match period(end) {
                0 if items.len() >= 2 => out.train.push((u.id, items)),
                0 => out.dropped_units += 1,
                p => {
                    let examples = session_examples(u.id, &items, all);
                    if examples.is_empty() {
                        out.dropped_units += 1;
                    }
                    // A session example's target is its history's length.
                    let rows = examples.iter().map(|e| {
                        let t = e.history.len();
                        (u.rows[t], u.rows[t - 1])
                    });
                    if p == 1 {
                        out.valid_rows.extend(rows);
                        out.valid.extend(examples);
                    } else {
                        out.test_rows.extend(rows);
                        out.test.extend(examples);
                    }
                }
            }
        } else {
            let periods: Vec<usize> = u.events.iter().map(|e| period(e.0)).collect();
            held_out_by_period(u, &periods, all, &mut out);
        }
    }
    out
}

/// The ratio split: each unit's own first events train, the next validate,
/// the last test.
pub fn ratio(units: &[Unit], valid_share: f64, test_share: f64, all: bool) -> RawSplit {
    let mut out = RawSplit::default();
    for u in units {
        let n = u.events.len();
        let n_test = ((n as f64 * test_share).round() as usize).max(1);
        let n_valid = ((n as f64 * valid_share).round() as usize).max(1);
        if n < n_test + n_valid + 1 {
            out.dropped_units += 1;
            continue;
        }
        let periods: Vec<usize> = (0..n)
            .map(|i| usize::from(i >= n - n_test - n_valid) + usize::from(i >= n - n_test))
            .collect();
        held_out_by_period(u, &periods, all, &mut out);
    }
    out
}

/// Splits a user timeline whose events are labelled with periods (0 train,
/// 1 valid, 2 test; non-decreasing) into its training sequence and
/// held-out examples.
fn held_out_by_period(u: &Unit, periods: &[usize], all: bool, out: &mut RawSplit) {
    let items: Vec<i64> = u.events.iter().map(|e| e.1).collect();
    let n_train = periods.iter().filter(|p| **p == 0).count();
    if n_train >= 2 {
        out.train.push((u.id, items[..n_train].to_vec()));
    }
    let mut any = n_train >= 2;
    for (period, examples, rows) in [
        (1, &mut out.valid, &mut out.valid_rows),
        (2, &mut out.test, &mut out.test_rows),
    ] {
        let positions = periods.iter().enumerate().filter(|(_, p)| **p == period);
        for (i, (t, _)) in positions.enumerate() {
            if t == 0 || (!all && i > 0) {
                continue;
            }
            examples.push(RawExample {
                unit: u.id,
                history: items[..t].to_vec(),
                target: items[t],
            });
            rows.push((u.rows[t], u.rows[t - 1]));
            any = true;
        }
    }
    if !any {
        out.dropped_units += 1;
    }
}

/// A held-out session's examples: its last item (or every position from the
/// second on), history within the session.
fn session_examples(id: i64, items: &[i64], all: bool) -> Vec<RawExample> {
    let first = if all { 1 } else { items.len().max(1) - 1 };
    (first.max(1)..items.len())
        .map(|t| RawExample {
            unit: id,
            history: items[..t].to_vec(),
            target: items[t],
        })
        .collect()
}

/// Item ids in training, sorted: the vocabulary of a temporal or ratio
/// split.
pub fn training_vocabulary(split: &RawSplit) -> Vec<i64> {
    split
        .train
        .iter()
        .flat_map(|(_, items)| items.iter().copied())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Maps an example's items through `index` (raw id → 1-based index),
/// dropping unknown history items; `None` when the target is unknown or
/// nothing of the history is left. Counts what it removed.
pub fn remap_example(
    e: &RawExample,
    index: &BTreeMap<i64, i64>,
    detail: &mut SplitDetail,
) -> Option<(Vec<i64>, i64)> {
    let Some(&target) = index.get(&e.target) else {
        detail.unseen_targets_removed += 1;
        return None;
    };
    let history: Vec<i64> = e
        .history
        .iter()
        .filter_map(|i| index.get(i).copied())
        .collect();
    detail.unseen_history_items_removed += (e.history.len() - history.len()) as u64;
    if history.is_empty() {
        return None;
    }
    Some((history, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(id: i64, events: &[(i64, i64)]) -> Unit {
        Unit {
            id,
            events: events.to_vec(),
            rows: (0..events.len()).collect(),
        }
    }

    #[test]
    fn sessions_break_at_gaps_longer_than_the_limit() {
        let s = sessions(&[(0, 1), (10, 2), (20, 3), (31, 4), (40, 5)], 10);
        assert_eq!(
            s,
            vec![vec![(0, 1), (10, 2), (20, 3)], vec![(31, 4), (40, 5)]]
        );
    }

    #[test]
    fn temporal_user_split_cuts_at_global_times_without_leakage() {
        // 10 events at times 0..10: test = the last 20 % (t >= 8), valid
        // the 20 % before (t >= 6).
        let a = unit(1, &[(0, 10), (2, 11), (6, 12), (8, 13), (9, 14)]);
        let b = unit(2, &[(1, 20), (3, 21), (4, 22), (5, 23), (7, 24)]);
        let s = temporal(&[a, b], 0.2, 0.2, false, false);
        assert_eq!(s.cuts, Some((6, 8)));
        assert_eq!(s.train, vec![(1, vec![10, 11]), (2, vec![20, 21, 22, 23])]);
        // (target row, previous row) in each unit's own log order
        assert_eq!(s.valid_rows, vec![(2, 1), (4, 3)]);
        assert_eq!(s.test_rows, vec![(3, 2)]);
        assert_eq!(
            s.valid,
            vec![
                RawExample {
                    unit: 1,
                    history: vec![10, 11],
                    target: 12
                },
                RawExample {
                    unit: 2,
                    history: vec![20, 21, 22, 23],
                    target: 24
                },
            ]
        );
        // one target per user: user 1's first test event
        assert_eq!(
            s.test,
            vec![RawExample {
                unit: 1,
                history: vec![10, 11, 12],
                target: 13
            }]
        );
        let all = temporal(
            &[
                unit(1, &[(0, 10), (2, 11), (6, 12), (8, 13), (9, 14)]),
                unit(2, &[(1, 20), (3, 21), (4, 22), (5, 23), (7, 24)]),
            ],
            0.2,
            0.2,
            false,
            true,
        );
        assert_eq!(all.test.len(), 2);
        assert_eq!(all.test[1].history, vec![10, 11, 12, 13]);
    }

    #[test]
    fn temporal_session_split_keeps_sessions_whole() {
        // Session ends: 2, 5, 9, 12; test from the last quarter (12),
        // valid from the quarter before (9).
        let units = [
            unit(1, &[(0, 1), (2, 2)]),
            unit(2, &[(3, 3), (5, 4)]),
            unit(3, &[(7, 5), (8, 6), (9, 7)]),
            unit(4, &[(10, 8), (12, 9)]),
        ];
        let s = temporal(&units, 0.25, 0.25, true, false);
        assert_eq!(s.cuts, Some((9, 12)));
        assert_eq!(s.train, vec![(1, vec![1, 2]), (2, vec![3, 4])]);
        // session 3 starts before the valid cut but ends after it: whole
        assert_eq!(
            s.valid,
            vec![RawExample {
                unit: 3,
                history: vec![5, 6],
                target: 7
            }]
        );
        assert_eq!(
            s.test,
            vec![RawExample {
                unit: 4,
                history: vec![8],
                target: 9
            }]
        );
        let all = temporal(&units, 0.25, 0.25, true, true);
        assert_eq!(all.valid.len(), 2, "positions 2 and 3 of session 3");
    }

    #[test]
    fn ratio_split_per_user() {
        let events: Vec<(i64, i64)> = (0..10).map(|t| (t, 100 + t)).collect();
        let s = ratio(&[unit(1, &events), unit(2, &events[..2])], 0.1, 0.2, true);
        assert_eq!(s.train, vec![(1, (100..107).collect::<Vec<_>>())]);
        assert_eq!(s.valid.len(), 1);
        assert_eq!(s.valid[0].target, 107);
        assert_eq!(
            s.test.iter().map(|e| e.target).collect::<Vec<_>>(),
            vec![108, 109]
        );
        assert_eq!(s.test[1].history.len(), 9);
        assert_eq!(s.dropped_units, 1, "two events cannot fill three parts");
    }

    #[test]
    fn unseen_items_are_removed_and_counted() {
        let index = BTreeMap::from([(10, 1), (11, 2)]);
        let mut d = SplitDetail::default();
        let e = RawExample {
            unit: 1,
            history: vec![10, 99, 11],
            target: 11,
        };
        assert_eq!(remap_example(&e, &index, &mut d), Some((vec![1, 2], 2)));
        let unseen = RawExample {
            unit: 1,
            history: vec![10],
            target: 98,
        };
        assert_eq!(remap_example(&unseen, &index, &mut d), None);
        assert_eq!(
            (d.unseen_targets_removed, d.unseen_history_items_removed),
            (1, 1)
        );
    }
}

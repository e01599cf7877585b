//! Reading the events into compact indices: items, users, baskets and
//! domains become dense 32-bit indices, rows become packed basket entries
//! and views, and each item gets its domain.

use std::collections::{HashMap, HashSet};

use arrow::array::{Array, StringArray};
use seqpipe::stage::StageContext;

use super::columns::{BatchColumns, Columns, Ids};
use super::{GraphError, Params};
use crate::table;

/// A domain name for every item when `domain_column` is "".
const ONE_DOMAIN: &str = "all";
/// The domain of an item whose rows all have a null domain.
const UNKNOWN_DOMAIN: &str = "unknown";

/// Returned when an index would pass `u32::MAX`: which ids ran out.
struct Full(&'static str);

/// Dense 32-bit indices for the distinct values of a user or basket id
/// column, so that the per-row records stay small.
#[derive(Default)]
struct Interner {
    ints: HashMap<i64, u32>,
    texts: HashMap<Box<str>, u32>,
}

impl Interner {
    /// The index of the (non-null) id at `row`, given a new one if unseen;
    /// `None` when no index is left.
    fn index(&mut self, ids: &Ids, row: usize) -> Option<u32> {
        let next = u32::try_from(self.ints.len() + self.texts.len()).ok()?;
        Some(match ids {
            Ids::Int(a) => *self.ints.entry(a.value(row)).or_insert(next),
            Ids::Text(a) => {
                let id = a.value(row);
                match self.texts.get(id) {
                    Some(&i) => i,
                    None => {
                        self.texts.insert(id.into(), next);
                        next
                    }
                }
            }
        })
    }
}

/// Domain names, interned: each row refers to its domain by index.
#[derive(Default)]
struct Domains {
    names: Vec<String>,
    index: HashMap<String, u32>,
}

impl Domains {
    fn index(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        // 2^32 distinct names would not fit in memory long before this
        // overflows.
        let i = self.names.len() as u32;
        self.names.push(name.to_string());
        self.index.insert(name.to_string(), i);
        i
    }
}

/// The items seen, in order of first appearance, with their rows and
/// domain votes.
#[derive(Default)]
struct Vocabulary {
    index: HashMap<i64, u32>,
    ids: Vec<i64>,
    occurrences: Vec<u64>,
    /// (item, domain) → rows.
    votes: HashMap<(u32, u32), u64>,
}

impl Vocabulary {
    /// Counts a row of item `id`; returns its index (`None` when no index
    /// is left).
    fn add(&mut self, id: i64, domain: Option<u32>) -> Option<u32> {
        let next = u32::try_from(self.ids.len()).ok()?;
        let item = *self.index.entry(id).or_insert(next);
        if item == next {
            self.ids.push(id);
            self.occurrences.push(0);
        }
        self.occurrences[item as usize] += 1;
        if let Some(d) = domain {
            *self.votes.entry((item, d)).or_default() += 1;
        }
        Some(item)
    }
}

/// A view: user and item indices and the time in epoch milliseconds.
#[derive(Debug, Clone, Copy)]
pub(super) struct View {
    pub(super) user: u32,
    pub(super) item: u32,
    pub(super) time: i64,
}

/// Row counts for the summary.
#[derive(Default)]
pub(super) struct RowCounts {
    pub(super) read: u64,
    pub(super) skipped: u64,
    pub(super) views_without_time: u64,
}

/// The items, with their index order being id order.
pub(super) struct Items {
    pub(super) ids: Vec<i64>,
    pub(super) occurrences: Vec<u64>,
    /// Index into `domains` per item.
    pub(super) domain: Vec<u32>,
    pub(super) domains: Vec<String>,
}

/// What the stage keeps of the events.
pub(super) struct Events {
    pub(super) items: Items,
    /// `basket << 32 | item` per row in a basket.
    pub(super) baskets: Vec<u64>,
    pub(super) views: Vec<View>,
    pub(super) rows: RowCounts,
}

pub(super) fn pack(hi: u32, lo: u32) -> u64 {
    (u64::from(hi) << 32) | u64::from(lo)
}

pub(super) fn unpack(x: u64) -> (u32, u32) {
    ((x >> 32) as u32, x as u32)
}

/// Accumulates the events batch by batch.
#[derive(Default)]
struct Reader {
    vocabulary: Vocabulary,
    domains: Domains,
    users: Interner,
    basket_ids: Interner,
    baskets: Vec<u64>,
    views: Vec<View>,
    rows: RowCounts,
}

impl Reader {
    fn add(&mut self, b: &BatchColumns, views: Option<&HashSet<String>>) -> Result<(), Full> {
        for row in 0..b.item.len() {
            self.rows.read += 1;
            if b.user.is_null(row) || b.item.is_null(row) {
                self.rows.skipped += 1;
                continue;
            }
            let domain = b
                .domain
                .as_ref()
                .filter(|d| d.is_valid(row))
                .map(|d| self.domains.index(d.value(row)));
            let item = self
                .vocabulary
                .add(b.item.value(row), domain)
                .ok_or(Full("items"))?;
            if let Some(ids) = b.basket.as_ref().filter(|ids| !ids.is_null(row)) {
                let basket = self.basket_ids.index(ids, row).ok_or(Full("baskets"))?;
                self.baskets.push(pack(basket, item));
            }
            // The time column is read exactly when co-view pairs are asked for.
            let Some(times) = &b.time else { continue };
            if !is_view(b.event_type.as_ref(), views, row) {
                continue;
            }
            if times.is_null(row) {
                self.rows.views_without_time += 1;
                continue;
            }
            let user = self.users.index(&b.user, row).ok_or(Full("users"))?;
            self.views.push(View {
                user,
                item,
                time: times.value(row),
            });
        }
        Ok(())
    }

    /// Renumbers the items in id order, so that index order is id order:
    /// pairs then sort and canonicalise by id whatever order the rows came
    /// in. Picks each item's domain.
    fn finish(mut self, one_domain: bool) -> Events {
        let n = self.vocabulary.ids.len();
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_unstable_by_key(|&i| self.vocabulary.ids[i as usize]);
        let mut new_of = vec![0u32; n];
        for (new, &old) in order.iter().enumerate() {
            new_of[old as usize] = new as u32;
        }
        for b in &mut self.baskets {
            let (basket, item) = unpack(*b);
            *b = pack(basket, new_of[item as usize]);
        }
        for v in &mut self.views {
            v.item = new_of[v.item as usize];
        }
        let votes = std::mem::take(&mut self.vocabulary.votes)
            .into_iter()
            .map(|((item, d), c)| ((new_of[item as usize], d), c));
        let domain = if one_domain {
            vec![self.domains.index(ONE_DOMAIN); n]
        } else {
            pick_domains(n, votes, &mut self.domains)
        };
        let v = &self.vocabulary;
        Events {
            items: Items {
                ids: order.iter().map(|&i| v.ids[i as usize]).collect(),
                occurrences: order.iter().map(|&i| v.occurrences[i as usize]).collect(),
                domain,
                domains: self.domains.names,
            },
            baskets: self.baskets,
            views: self.views,
            rows: self.rows,
        }
    }
}

/// Whether a row is a view: every row is when no event types are listed.
fn is_view(types: Option<&StringArray>, views: Option<&HashSet<String>>, row: usize) -> bool {
    match (types, views) {
        (Some(types), Some(views)) => types.is_valid(row) && views.contains(types.value(row)),
        _ => true,
    }
}

/// Each item's most frequent domain, ties to the smallest name; `unknown`
/// for an item without a vote.
fn pick_domains(
    n: usize,
    votes: impl Iterator<Item = ((u32, u32), u64)>,
    domains: &mut Domains,
) -> Vec<u32> {
    let mut best: Vec<Option<(u64, u32)>> = vec![None; n];
    for ((item, d), count) in votes {
        let slot = &mut best[item as usize];
        let better = match *slot {
            None => true,
            Some((c, b)) => {
                count > c || (count == c && domains.names[d as usize] < domains.names[b as usize])
            }
        };
        if better {
            *slot = Some((count, d));
        }
    }
    let mut unknown = None;
    best.into_iter()
        .map(|b| match b {
            Some((_, d)) => d,
            None => *unknown.get_or_insert_with(|| domains.index(UNKNOWN_DOMAIN)),
        })
        .collect()
}

pub(super) fn read_events(
    ctx: &StageContext<'_>,
    input: &table::TableFiles,
    columns: &Columns,
    p: &Params,
) -> anyhow::Result<Events> {
    let total: u64 = input
        .files
        .iter()
        .map(|f| table::file_rows(f).unwrap_or(0))
        .sum();
    let bar = ctx.progress.bar(ctx.stage, "read", total);
    let views = columns.views.as_ref().map(|(_, types)| types);
    let mut reader = Reader::default();
    for file in &input.files {
        for batch in table::batches(file)? {
            let batch = batch?;
            let unreadable = |e: anyhow::Error| GraphError::Unreadable {
                stage: ctx.stage.to_string(),
                file: file.clone(),
                message: format!("{e:#}"),
            };
            let b = BatchColumns::read(columns, &batch).map_err(unreadable)?;
            reader
                .add(&b, views)
                .map_err(|Full(what)| GraphError::TooMany {
                    stage: ctx.stage.to_string(),
                    what,
                })?;
            bar.inc(batch.num_rows() as u64);
        }
    }
    bar.finish_and_clear();
    Ok(reader.finish(p.domain_column.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_in_domain_votes_go_to_the_smallest_name() {
        let mut domains = Domains::default();
        let (b, a) = (domains.index("b"), domains.index("a"));
        let votes = [((0, b), 2), ((0, a), 2), ((1, b), 3), ((1, a), 1)];
        let picked = pick_domains(3, votes.into_iter(), &mut domains);
        let names: Vec<&str> = picked
            .iter()
            .map(|d| domains.names[*d as usize].as_str())
            .collect();
        assert_eq!(names, ["a", "b", UNKNOWN_DOMAIN]);
    }
}

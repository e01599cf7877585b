//! The summary: `summary.json` (per edge type, pairs and their same- and
//! cross-domain split), its Markdown rendering and the run-manifest line.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::read::Items;

/// `summary.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub rows: u64,
    pub skipped_null_user_or_item: u64,
    pub views_without_time: u64,
    /// Distinct items in the rows kept.
    pub vocabulary: u64,
    pub items_with_edges: u64,
    /// `items_with_edges` in % of the vocabulary; null without items.
    pub item_coverage_pct: Option<f64>,
    pub baskets_kept: u64,
    /// Baskets over `max_basket` distinct items.
    pub baskets_dropped: u64,
    pub sessions: u64,
    /// Sessions over `max_session` distinct items, cut to their last ones.
    pub sessions_truncated: u64,
    /// Per edge type asked for, by name.
    pub edges: BTreeMap<String, EdgeSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EdgeSummary {
    /// Pairs written (count ≥ `min_count`).
    pub pairs: u64,
    pub below_min_count: u64,
    pub same_domain: u64,
    pub cross_domain: u64,
    /// Pairs per unordered domain pair, `domain_a` ≤ `domain_b`, sorted.
    pub domain_pairs: Vec<DomainPair>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DomainPair {
    pub domain_a: String,
    pub domain_b: String,
    pub pairs: u64,
}

/// Pairs per (unordered) pair of domain indices, for one edge type.
#[derive(Default)]
pub(super) struct Tally(HashMap<(u32, u32), u64>);

impl Tally {
    pub(super) fn add(&mut self, items: &Items, a: u32, b: u32) {
        let (da, db) = (items.domain[a as usize], items.domain[b as usize]);
        let by_name = |d: u32| &items.domains[d as usize];
        let key = if by_name(da) <= by_name(db) {
            (da, db)
        } else {
            (db, da)
        };
        *self.0.entry(key).or_default() += 1;
    }

    pub(super) fn finish(self, items: &Items, below_min_count: u64) -> EdgeSummary {
        let name = |d: u32| items.domains[d as usize].clone();
        let mut domain_pairs: Vec<DomainPair> = self
            .0
            .iter()
            .map(|(&(a, b), &pairs)| DomainPair {
                domain_a: name(a),
                domain_b: name(b),
                pairs,
            })
            .collect();
        domain_pairs.sort_by(|x, y| (&x.domain_a, &x.domain_b).cmp(&(&y.domain_a, &y.domain_b)));
        let count = |same: bool| {
            self.0
                .iter()
                .filter(|((a, b), _)| (a == b) == same)
                .map(|(_, n)| n)
                .sum()
        };
        EdgeSummary {
            pairs: self.0.values().sum(),
            below_min_count,
            same_domain: count(true),
            cross_domain: count(false),
            domain_pairs,
        }
    }
}

impl Summary {
    /// `summary.md`.
    pub fn markdown(&self) -> String {
        let coverage = match self.item_coverage_pct {
            Some(pct) => format!(" ({pct}%)"),
            None => String::new(),
        };
        let mut md = format!(
            "# Co-occurrence graph\n\n\
             {} rows read, {} skipped (null user or item), {} views without a time.\n\n\
             Vocabulary: {} items, {}{coverage} with at least one edge.\n\n\
             Baskets: {} kept, {} dropped (over max_basket). \
             Sessions: {}, {} truncated (over max_session).\n\n",
            self.rows,
            self.skipped_null_user_or_item,
            self.views_without_time,
            self.vocabulary,
            self.items_with_edges,
            self.baskets_kept,
            self.baskets_dropped,
            self.sessions,
            self.sessions_truncated,
        );
        md += "| edge type | pairs | same domain | cross domain | below min_count |\n";
        md += "|---|---:|---:|---:|---:|\n";
        for (ty, e) in &self.edges {
            md += &format!(
                "| {ty} | {} | {} | {} | {} |\n",
                e.pairs, e.same_domain, e.cross_domain, e.below_min_count
            );
        }
        md += "\n## Pairs per domain pair\n\n| edge type | domain a | domain b | pairs |\n";
        md += "|---|---|---|---:|\n";
        for (ty, e) in &self.edges {
            for d in &e.domain_pairs {
                md += &format!(
                    "| {ty} | {} | {} | {} |\n",
                    cell(&d.domain_a),
                    cell(&d.domain_b),
                    d.pairs
                );
            }
        }
        md
    }

    /// One line for the run manifest.
    pub fn line(&self) -> String {
        let pairs: Vec<String> = self
            .edges
            .iter()
            .map(|(ty, e)| format!("{} {ty} ({} cross-domain)", e.pairs, e.cross_domain))
            .collect();
        format!(
            "graph: {} pairs over {} of {} items; {} baskets dropped, {} sessions truncated",
            pairs.join(" + "),
            self.items_with_edges,
            self.vocabulary,
            self.baskets_dropped,
            self.sessions_truncated
        )
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

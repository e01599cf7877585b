//! The counts kept across days (rows, receipts, event types) and the
//! defects whose rates hold over a whole streamed table.

use super::catalogue::Domain;
use super::defect::Defect;

/// Counts kept across days: rows, receipts, event types and the defects of
/// the streamed tables (whose rates hold over the whole table).
pub(super) struct Tally {
    /// Domain → event type → rows.
    pub(super) event_types: [[u64; 5]; 2],
    /// Distinct receipts per domain, and how many were wholesale orders.
    pub(super) receipts: [u64; 2],
    pub(super) large_baskets: [u64; 2],
    pub(super) receipt_rows: [u64; 2],
    pub(super) next_receipt_id: i64,
    pub(super) payments: u64,
    /// Static tables' rows, by `<table>/<domain>`.
    pub(super) rows: Vec<(String, u64)>,
    pub(super) null_subdomain: Defect,
    pub(super) null_receipt_brand: [Defect; 2],
    pub(super) null_receipt_price: [Defect; 2],
    pub(super) null_payment_brand: Defect,
    pub(super) null_payment_price: Defect,
    /// The static tables' defects, once written.
    pub(super) defects: Vec<Defect>,
}

impl Tally {
    pub(super) fn new(seed: u64) -> Tally {
        let per_domain = |column, pct| {
            Domain::BOTH.map(|d| Defect::new(seed, "receipts", d.name(), column, pct))
        };
        Tally {
            event_types: [[0; 5]; 2],
            receipts: [0; 2],
            large_baskets: [0; 2],
            receipt_rows: [0; 2],
            next_receipt_id: 1,
            payments: 0,
            rows: Vec::new(),
            null_subdomain: Defect::new(seed, "events", "marketplace", "subdomain", 0.04),
            null_receipt_brand: per_domain("brand_id", 85.8),
            null_receipt_price: per_domain("price", 1.4),
            null_payment_brand: Defect::new(seed, "events", "payments", "brand_id", 48.4),
            null_payment_price: Defect::new(seed, "events", "payments", "price", 0.0002),
            defects: Vec::new(),
        }
    }

    pub(super) fn event_rows(&self, d: Domain) -> u64 {
        self.event_types[d.ix()].iter().sum()
    }

    /// Every defect, static tables first.
    pub(super) fn all_defects(&self) -> impl Iterator<Item = &Defect> {
        self.defects
            .iter()
            .chain([&self.null_subdomain])
            .chain(&self.null_receipt_brand)
            .chain(&self.null_receipt_price)
            .chain([&self.null_payment_brand, &self.null_payment_price])
    }
}

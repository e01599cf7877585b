//! The rows of the streamed tables (events, receipts, payments) buffered
//! column by column, and the event types they hold.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

/// The `event_type` values; the discriminant indexes [`Tally`]'s counts.
///
/// [`Tally`]: super::tally::Tally
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EventType {
    Catalog = 0,
    U2i = 1,
    Search = 2,
    Cart = 3,
    Purchase = 4,
}

impl EventType {
    pub(super) const ALL: [EventType; 5] = [
        EventType::Catalog,
        EventType::U2i,
        EventType::Search,
        EventType::Cart,
        EventType::Purchase,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            EventType::Catalog => "catalog",
            EventType::U2i => "u2i",
            EventType::Search => "search",
            EventType::Cart => "cart",
            EventType::Purchase => "purchase",
        }
    }
}

/// Rows waiting to be written, column by column.
pub(super) trait Rows {
    /// The partition's columns; [`Rows::take`] returns them in this order.
    fn schema() -> SchemaRef;
    fn len(&self) -> usize;
    /// The buffered rows' columns; the buffer is left empty.
    fn take(&mut self) -> Vec<ArrayRef>;
}

fn field(name: &str, ty: DataType, nullable: bool) -> Field {
    Field::new(name, ty, nullable)
}

#[derive(Default)]
pub(super) struct EventRows {
    pub(super) domain: &'static str,
    pub(super) user: Vec<i64>,
    pub(super) item: Vec<i64>,
    pub(super) time: Vec<i64>,
    pub(super) kind: Vec<&'static str>,
    pub(super) subdomain: Vec<Option<&'static str>>,
    pub(super) receipt: Vec<Option<i64>>,
}

impl Rows for EventRows {
    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            field("user_id", DataType::Int64, false),
            field("item_id", DataType::Int64, false),
            field("timestamp", DataType::Int64, false),
            field("event_type", DataType::Utf8, false),
            field("domain", DataType::Utf8, false),
            field("subdomain", DataType::Utf8, true),
            field("receipt_id", DataType::Int64, true),
        ]))
    }

    fn len(&self) -> usize {
        self.user.len()
    }

    fn take(&mut self) -> Vec<ArrayRef> {
        let n = self.len();
        vec![
            Arc::new(Int64Array::from(std::mem::take(&mut self.user))),
            Arc::new(Int64Array::from(std::mem::take(&mut self.item))),
            Arc::new(Int64Array::from(std::mem::take(&mut self.time))),
            Arc::new(StringArray::from(std::mem::take(&mut self.kind))),
            constant_strings(self.domain, n),
            Arc::new(StringArray::from(std::mem::take(&mut self.subdomain))),
            Arc::new(Int64Array::from(std::mem::take(&mut self.receipt))),
        ]
    }
}

#[derive(Default)]
pub(super) struct ReceiptRows {
    pub(super) domain: &'static str,
    pub(super) receipt: Vec<i64>,
    pub(super) user: Vec<i64>,
    pub(super) item: Vec<i64>,
    pub(super) time: Vec<i64>,
    pub(super) brand: Vec<Option<i64>>,
    pub(super) price: Vec<Option<f64>>,
}

impl Rows for ReceiptRows {
    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            field("receipt_id", DataType::Int64, false),
            field("user_id", DataType::Int64, false),
            field("item_id", DataType::Int64, false),
            field("timestamp", DataType::Int64, false),
            field("brand_id", DataType::Int64, true),
            field("price", DataType::Float64, true),
            field("domain", DataType::Utf8, false),
        ]))
    }

    fn len(&self) -> usize {
        self.receipt.len()
    }

    fn take(&mut self) -> Vec<ArrayRef> {
        let n = self.len();
        vec![
            Arc::new(Int64Array::from(std::mem::take(&mut self.receipt))),
            Arc::new(Int64Array::from(std::mem::take(&mut self.user))),
            Arc::new(Int64Array::from(std::mem::take(&mut self.item))),
            Arc::new(Int64Array::from(std::mem::take(&mut self.time))),
            Arc::new(Int64Array::from(std::mem::take(&mut self.brand))),
            Arc::new(Float64Array::from(std::mem::take(&mut self.price))),
            constant_strings(self.domain, n),
        ]
    }
}

#[derive(Default)]
pub(super) struct PaymentRows {
    pub(super) user: Vec<i64>,
    pub(super) brand: Vec<Option<i64>>,
    pub(super) time: Vec<i64>,
    pub(super) price: Vec<Option<f64>>,
}

impl Rows for PaymentRows {
    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            field("user_id", DataType::Int64, false),
            field("brand_id", DataType::Int64, true),
            field("timestamp", DataType::Int64, false),
            field("price", DataType::Float64, true),
            field("domain", DataType::Utf8, false),
        ]))
    }

    fn len(&self) -> usize {
        self.user.len()
    }

    fn take(&mut self) -> Vec<ArrayRef> {
        let n = self.len();
        vec![
            Arc::new(Int64Array::from(std::mem::take(&mut self.user))),
            Arc::new(Int64Array::from(std::mem::take(&mut self.brand))),
            Arc::new(Int64Array::from(std::mem::take(&mut self.time))),
            Arc::new(Float64Array::from(std::mem::take(&mut self.price))),
            constant_strings("payments", n),
        ]
    }
}

/// A string column holding `value` in each of its `n` rows.
pub(super) fn constant_strings(value: &str, n: usize) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(std::iter::repeat_n(value, n)))
}

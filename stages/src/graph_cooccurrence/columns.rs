//! Which columns of the input the stage reads, and how: finding the
//! params' columns in the schema (with typed errors naming the param), and
//! converting one batch's columns for reading row by row.

use std::collections::HashSet;
use std::path::Path;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::compute::{can_cast_types, cast_with_options, CastOptions};
use arrow::datatypes::{DataType, Int64Type, TimeUnit};

use super::{EdgeType, GraphError, Params};
use crate::table;

/// What a column must hold to serve a param.
#[derive(Clone, Copy)]
enum Want {
    /// Item ids: integers (the output's ids are int64).
    Integer,
    /// User or basket ids: integers or strings.
    Id,
    /// Integers in `time_unit` or a timestamp.
    Time,
    /// Anything that reads as text (domains, event types).
    Text,
}

impl Want {
    fn accepts(self, ty: &DataType) -> bool {
        match self {
            Want::Integer => ty.is_integer(),
            Want::Id => ty.is_integer() || is_text(ty),
            Want::Time => ty.is_integer() || matches!(ty, DataType::Timestamp(..)),
            Want::Text => can_cast_types(ty, &DataType::Utf8),
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Want::Integer => "integer ids",
            Want::Id => "integer or string ids",
            Want::Time => "integer times or a timestamp",
            Want::Text => "values that read as text",
        }
    }
}

fn is_text(ty: &DataType) -> bool {
    match ty {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, values) => is_text(values),
        _ => false,
    }
}

/// Positions of the columns the stage reads; `None` = not needed.
pub(super) struct Columns {
    user: usize,
    item: usize,
    /// The time column and the milliseconds in one unit of an integer time.
    time: Option<(usize, i64)>,
    domain: Option<usize>,
    basket: Option<usize>,
    /// The event-type column and the types that count as views.
    pub(super) views: Option<(usize, HashSet<String>)>,
}

impl Columns {
    /// Finds the params' columns in the input schema, checking their types.
    pub(super) fn resolve(
        stage: &str,
        input: &table::TableFiles,
        p: &Params,
    ) -> anyhow::Result<Columns> {
        let place = if input.files.len() == 1 {
            input.files[0].display().to_string()
        } else {
            format!(
                "{} ({} Parquet files)",
                input.files[0].parent().unwrap_or(Path::new("")).display(),
                input.files.len()
            )
        };
        let fields = input.schema.fields();
        let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
        let find = |param: &'static str, column: &str, want: Want, fix: &'static str| {
            let Some(i) = names.iter().position(|n| *n == column) else {
                return Err(anyhow::Error::from(GraphError::MissingColumn {
                    stage: stage.to_string(),
                    param,
                    column: column.to_string(),
                    place: place.clone(),
                    hint: table::column_hint(column, names.iter().copied()),
                    fix,
                }));
            };
            let ty = fields[i].data_type();
            if !want.accepts(ty) {
                return Err(anyhow::Error::from(GraphError::ColumnType {
                    stage: stage.to_string(),
                    param,
                    column: column.to_string(),
                    place: place.clone(),
                    found: ty.to_string(),
                    expected: want.expected(),
                }));
            }
            Ok(i)
        };
        let co_view = p.wants(EdgeType::CoView);
        let ms_per_unit = if p.time_unit == "s" { 1000 } else { 1 };
        Ok(Columns {
            user: find("user_column", &p.user_column, Want::Id, "")?,
            item: find("item_column", &p.item_column, Want::Integer, "")?,
            time: co_view
                .then(|| find("time_column", &p.time_column, Want::Time, ""))
                .transpose()?
                .map(|i| (i, ms_per_unit)),
            domain: (!p.domain_column.is_empty())
                .then(|| {
                    let fix = "; domain_column = \"\" puts every item in one domain";
                    find("domain_column", &p.domain_column, Want::Text, fix)
                })
                .transpose()?,
            basket: (p.wants(EdgeType::CoPurchase) && !p.basket_column.is_empty())
                .then(|| {
                    let fix = "; basket_column = \"\" builds no co-purchase pairs";
                    find("basket_column", &p.basket_column, Want::Id, fix)
                })
                .transpose()?,
            views: (co_view && !p.view_event_types.is_empty())
                .then(|| find("event_type_column", &p.event_type_column, Want::Text, ""))
                .transpose()?
                .map(|i| (i, p.view_event_types.iter().cloned().collect())),
        })
    }
}

/// The values of a user or basket id column in one batch.
pub(super) enum Ids {
    Int(Int64Array),
    Text(StringArray),
}

impl Ids {
    fn read(column: &ArrayRef) -> anyhow::Result<Ids> {
        Ok(if column.data_type().is_integer() {
            Ids::Int(int64(column)?)
        } else {
            Ids::Text(utf8(column)?)
        })
    }

    pub(super) fn is_null(&self, row: usize) -> bool {
        match self {
            Ids::Int(a) => a.is_null(row),
            Ids::Text(a) => a.is_null(row),
        }
    }
}

/// One batch's columns, converted for reading row by row.
pub(super) struct BatchColumns {
    pub(super) user: Ids,
    pub(super) item: Int64Array,
    /// Epoch milliseconds.
    pub(super) time: Option<Int64Array>,
    pub(super) domain: Option<StringArray>,
    pub(super) basket: Option<Ids>,
    pub(super) event_type: Option<StringArray>,
}

impl BatchColumns {
    pub(super) fn read(columns: &Columns, batch: &RecordBatch) -> anyhow::Result<BatchColumns> {
        let column = |i: usize| batch.column(i);
        Ok(BatchColumns {
            user: Ids::read(column(columns.user))?,
            item: int64(column(columns.item))?,
            time: columns
                .time
                .map(|(i, ms)| time_ms(column(i), ms))
                .transpose()?,
            domain: columns.domain.map(|i| utf8(column(i))).transpose()?,
            basket: columns.basket.map(|i| Ids::read(column(i))).transpose()?,
            event_type: columns
                .views
                .as_ref()
                .map(|(i, _)| utf8(column(*i)))
                .transpose()?,
        })
    }
}

/// A cast that fails on a value that does not fit rather than making it
/// null (a null id would be skipped silently).
fn strict_cast(column: &ArrayRef, ty: &DataType) -> anyhow::Result<ArrayRef> {
    let options = CastOptions {
        safe: false,
        ..CastOptions::default()
    };
    Ok(cast_with_options(column, ty, &options)?)
}

fn int64(column: &ArrayRef) -> anyhow::Result<Int64Array> {
    Ok(strict_cast(column, &DataType::Int64)?
        .as_primitive::<Int64Type>()
        .clone())
}

fn utf8(column: &ArrayRef) -> anyhow::Result<StringArray> {
    Ok(strict_cast(column, &DataType::Utf8)?
        .as_string::<i32>()
        .clone())
}

/// A time column in epoch milliseconds. A timestamp keeps its time zone
/// through the cast, so the instants (not local wall times) are compared.
fn time_ms(column: &ArrayRef, ms_per_unit: i64) -> anyhow::Result<Int64Array> {
    if let DataType::Timestamp(_, tz) = column.data_type() {
        let ms = strict_cast(
            column,
            &DataType::Timestamp(TimeUnit::Millisecond, tz.clone()),
        )?;
        return int64(&ms);
    }
    let raw = int64(column)?;
    Ok(if ms_per_unit == 1 {
        raw
    } else {
        raw.unary(|t: i64| t.saturating_mul(ms_per_unit))
    })
}

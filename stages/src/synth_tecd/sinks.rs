//! The partition files being written: a buffered Parquet writer per file,
//! the event and receipt files of one day, and the partition folders.

use std::path::Path;

use anyhow::Context;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use super::catalogue::Domain;
use super::rows::{EventRows, ReceiptRows, Rows};
use crate::table::TableWriter;

/// Rows per chunk handed to the Parquet writer.
const FLUSH_ROWS: usize = 64 * 1024;

/// One partition file being written: rows buffer up and go to Parquet in
/// chunks of [`FLUSH_ROWS`].
pub(super) struct Sink<R: Rows> {
    pub(super) rows: R,
    schema: SchemaRef,
    writer: TableWriter,
}

impl<R: Rows> Sink<R> {
    pub(super) fn create(path: &Path, rows: R) -> anyhow::Result<Sink<R>> {
        let schema = R::schema();
        Ok(Sink {
            writer: TableWriter::create(path, schema.clone(), crate::table::Dictionary::All)?,
            rows,
            schema,
        })
    }

    /// Call after pushing a row.
    pub(super) fn pushed(&mut self) -> anyhow::Result<()> {
        if self.rows.len() >= FLUSH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if self.rows.len() > 0 {
            let batch = RecordBatch::try_new(self.schema.clone(), self.rows.take())?;
            self.writer.write(&batch)?;
        }
        Ok(())
    }

    pub(super) fn close(mut self) -> anyhow::Result<usize> {
        self.flush()?;
        self.writer.close()
    }
}

/// The event and receipt partitions of one day, per domain.
pub(super) struct DaySinks {
    pub(super) events: [Sink<EventRows>; 2],
    pub(super) receipts: [Sink<ReceiptRows>; 2],
}

impl DaySinks {
    pub(super) fn create(out: &Path, day: &str) -> anyhow::Result<DaySinks> {
        let file = format!("{day}.parquet");
        let events = |d: Domain| -> anyhow::Result<Sink<EventRows>> {
            let rows = EventRows {
                domain: d.name(),
                ..EventRows::default()
            };
            Sink::create(&partition_dir(out, "events", d.name())?.join(&file), rows)
        };
        let receipts = |d: Domain| -> anyhow::Result<Sink<ReceiptRows>> {
            let rows = ReceiptRows {
                domain: d.name(),
                ..ReceiptRows::default()
            };
            Sink::create(&partition_dir(out, "receipts", d.name())?.join(&file), rows)
        };
        Ok(DaySinks {
            events: [events(Domain::Retail)?, events(Domain::Marketplace)?],
            receipts: [receipts(Domain::Retail)?, receipts(Domain::Marketplace)?],
        })
    }

    pub(super) fn close(self) -> anyhow::Result<()> {
        for sink in self.events {
            sink.close()?;
        }
        for sink in self.receipts {
            sink.close()?;
        }
        Ok(())
    }
}

/// Creates (if needed) `out/<table>/<domain>` and returns it.
pub(super) fn partition_dir(
    out: &Path,
    table: &str,
    domain: &str,
) -> anyhow::Result<std::path::PathBuf> {
    let dir = out.join(table).join(domain);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

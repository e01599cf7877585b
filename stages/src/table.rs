//! Parquet in and out, and typed column access with errors that name the
//! file and the column.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use arrow::array::{Array, ArrayRef, Int64Array, ListArray, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

/// Writes one batch to a Parquet file (snappy-compressed).
pub fn write(path: &Path, batch: &RecordBatch) -> anyhow::Result<()> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(())
}

/// Reads a whole Parquet file into one batch.
pub fn read(path: &Path) -> anyhow::Result<RecordBatch> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{} is not a readable Parquet file", path.display()))?;
    let schema = builder.schema().clone();
    let reader = builder.with_batch_size(64 * 1024).build()?;
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(arrow::compute::concat_batches(&schema, &batches)?)
}

/// Builds a batch from named columns.
pub fn batch(columns: Vec<(&str, ArrayRef)>) -> anyhow::Result<RecordBatch> {
    Ok(RecordBatch::try_from_iter(
        columns.into_iter().map(|(n, a)| (n, a as ArrayRef)),
    )?)
}

/// An Int64 column, by name; the error names the file and suggests a column.
pub fn int64<'a>(
    batch: &'a RecordBatch,
    name: &str,
    file: &Path,
) -> anyhow::Result<&'a Int64Array> {
    let column = column(batch, name, file)?;
    column.as_any().downcast_ref::<Int64Array>().ok_or_else(|| {
        anyhow!(
            "{}: column `{name}` is {}, expected int64",
            file.display(),
            column.data_type()
        )
    })
}

/// A List<Int64> column as one Vec per row.
pub fn int64_lists(batch: &RecordBatch, name: &str, file: &Path) -> anyhow::Result<Vec<Vec<i64>>> {
    let column = column(batch, name, file)?;
    let list = column.as_any().downcast_ref::<ListArray>().ok_or_else(|| {
        anyhow!(
            "{}: column `{name}` is {}, expected list<int64>",
            file.display(),
            column.data_type()
        )
    })?;
    let values = list
        .values()
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| anyhow!("{}: column `{name}` must hold int64 values", file.display()))?;
    let offsets = list.value_offsets();
    Ok((0..list.len())
        .map(|i| values.values()[offsets[i] as usize..offsets[i + 1] as usize].to_vec())
        .collect())
}

/// A List<Int64> array from rows.
pub fn lists_array(rows: &[Vec<i64>]) -> ArrayRef {
    let mut builder = arrow::array::ListBuilder::new(arrow::array::Int64Builder::new());
    for row in rows {
        builder.values().append_slice(row);
        builder.append(true);
    }
    Arc::new(builder.finish())
}

fn column<'a>(batch: &'a RecordBatch, name: &str, file: &Path) -> anyhow::Result<&'a ArrayRef> {
    batch.column_by_name(name).ok_or_else(|| {
        let schema = batch.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let hint = seqpipe::spec::did_you_mean(name, names.iter().copied())
            .unwrap_or_else(|| format!("its columns are: {}", names.join(", ")));
        anyhow!("{}: no column `{name}` ({hint})", file.display())
    })
}

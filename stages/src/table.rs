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

/// Which columns the Parquet writer dictionary-encodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dictionary {
    /// Every column (the parquet crate's default).
    All,
    /// Top-level string columns only. Ids and times are high-cardinality
    /// (1.2M users, a distinct timestamp per event): their dictionary
    /// overflows and falls back to plain after the writer has hashed every
    /// value — a third of `clean`'s CPU at 60M events — for files snappy
    /// already shrinks. Strings (event types, domains) repeat.
    StringsOnly,
}

/// Snappy pages, dictionary encoding as `dictionary` says.
fn writer_props(schema: &arrow::datatypes::Schema, dictionary: Dictionary) -> WriterProperties {
    use arrow::datatypes::DataType;
    let mut props = WriterProperties::builder().set_compression(Compression::SNAPPY);
    if dictionary == Dictionary::StringsOnly {
        props = props.set_dictionary_enabled(false);
        for field in schema.fields() {
            if matches!(field.data_type(), DataType::Utf8 | DataType::LargeUtf8) {
                let path = parquet::schema::types::ColumnPath::from(field.name().as_str());
                props = props.set_column_dictionary_enabled(path, true);
            }
        }
    }
    props.build()
}

/// Writes one batch to a Parquet file (snappy, every column
/// dictionary-encoded).
pub fn write(path: &Path, batch: &RecordBatch) -> anyhow::Result<()> {
    write_with(path, batch, Dictionary::All)
}

/// [`write`] with a choice of dictionary encoding.
pub fn write_with(path: &Path, batch: &RecordBatch, dictionary: Dictionary) -> anyhow::Result<()> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let props = writer_props(&batch.schema(), dictionary);
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

/// A List<Int64> array from rows (the array a `ListBuilder` of
/// `Int64Builder` gives, built in one allocation per buffer). Takes slices,
/// so callers need not copy their rows into a `Vec<Vec<i64>>` first.
pub fn lists_array<'a>(rows: impl Iterator<Item = &'a [i64]> + Clone) -> ArrayRef {
    let total: usize = rows.clone().map(<[i64]>::len).sum();
    let mut values = Vec::with_capacity(total);
    for row in rows.clone() {
        values.extend_from_slice(row);
    }
    let offsets = arrow::buffer::OffsetBuffer::from_lengths(rows.map(<[i64]>::len));
    let field = Arc::new(arrow::datatypes::Field::new_list_field(
        arrow::datatypes::DataType::Int64,
        true,
    ));
    Arc::new(ListArray::new(
        field,
        offsets,
        Arc::new(Int64Array::from(values)),
        None,
    ))
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

/// Writes a Parquet file batch by batch (snappy-compressed, like [`write`]),
/// so a table larger than memory can be written as it is produced: only the
/// row group being filled is held.
pub struct TableWriter {
    writer: ArrowWriter<File>,
    path: std::path::PathBuf,
    rows: usize,
}

impl TableWriter {
    /// Creates `path` for batches of `schema`.
    pub fn create(
        path: &Path,
        schema: arrow::datatypes::SchemaRef,
        dictionary: Dictionary,
    ) -> anyhow::Result<TableWriter> {
        let file =
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        let props = writer_props(&schema, dictionary);
        Ok(TableWriter {
            writer: ArrowWriter::try_new(file, schema, Some(props))?,
            path: path.to_path_buf(),
            rows: 0,
        })
    }

    /// Appends one batch (its schema must be the writer's).
    pub fn write(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        self.writer
            .write(batch)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        self.rows += batch.num_rows();
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Finishes the file; returns the number of rows written.
    pub fn close(self) -> anyhow::Result<usize> {
        self.writer
            .close()
            .with_context(|| format!("cannot finish {}", self.path.display()))?;
        Ok(self.rows)
    }
}

/// The Parquet files of a table artifact and their common schema.
#[derive(Debug, Clone)]
pub struct TableFiles {
    /// Every `*.parquet` file in the folder, sorted by name.
    pub files: Vec<std::path::PathBuf>,
    /// Column names and types (shared by all files); a column is nullable
    /// when it is in any file. No metadata.
    pub schema: arrow::datatypes::SchemaRef,
}

/// Lists the Parquet files of a table artifact (folder `dir`) and checks
/// that they share one schema; the error names the folder (no file) or the
/// file whose columns differ from the first one's.
pub fn open_table(dir: &Path) -> anyhow::Result<TableFiles> {
    use arrow::datatypes::{Field, Schema};
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    anyhow::ensure!(
        !files.is_empty(),
        "{}: the input table has no Parquet file",
        dir.display()
    );
    let mut fields: Vec<Field> = Vec::new();
    for (n, file) in files.iter().enumerate() {
        let schema = file_schema(file)?;
        if n == 0 {
            fields = schema
                .fields()
                .iter()
                .map(|f| Field::new(f.name(), f.data_type().clone(), f.is_nullable()))
                .collect();
            continue;
        }
        let describe = |fs: &mut dyn Iterator<Item = (&String, &arrow::datatypes::DataType)>| {
            fs.map(|(n, t)| format!("{n}: {t}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let same = schema.fields().len() == fields.len()
            && schema
                .fields()
                .iter()
                .zip(&fields)
                .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
        anyhow::ensure!(
            same,
            "{}: its columns ({}) differ from those of {} ({}); a table's files must share one schema",
            file.display(),
            describe(&mut schema.fields().iter().map(|f| (f.name(), f.data_type()))),
            files[0].display(),
            describe(&mut fields.iter().map(|f| (f.name(), f.data_type()))),
        );
        for (field, other) in fields.iter_mut().zip(schema.fields()) {
            if other.is_nullable() && !field.is_nullable() {
                *field = field.clone().with_nullable(true);
            }
        }
    }
    Ok(TableFiles {
        files,
        schema: Arc::new(Schema::new(fields)),
    })
}

/// The Arrow schema of a Parquet file (read from its footer only).
pub fn file_schema(path: &Path) -> anyhow::Result<arrow::datatypes::SchemaRef> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{} is not a readable Parquet file", path.display()))?;
    Ok(builder.schema().clone())
}

/// Reads a Parquet file batch by batch (64 Ki rows at most each); read
/// errors name the file.
pub fn batches(path: &Path) -> anyhow::Result<impl Iterator<Item = anyhow::Result<RecordBatch>>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{} is not a readable Parquet file", path.display()))?
        .with_batch_size(64 * 1024)
        .build()?;
    let path = path.to_path_buf();
    Ok(reader.map(move |b| b.with_context(|| format!("cannot read {}", path.display()))))
}

/// Column `name` of `batch` (read from `file`) as Utf8 strings, cast from
/// whatever converts to text (large or dictionary strings, numbers). The
/// errors name the file, the column as `what` calls it ("column",
/// "attribute column") and, for a missing one, suggest a column.
pub fn utf8_column(
    batch: &RecordBatch,
    name: &str,
    file: &Path,
    what: &str,
) -> anyhow::Result<arrow::array::StringArray> {
    let schema = batch.schema();
    let column = batch.column_by_name(name).with_context(|| {
        let names = schema.fields().iter().map(|f| f.name().as_str());
        format!(
            "{}: no {what} `{name}` ({})",
            file.display(),
            column_hint(name, names)
        )
    })?;
    let cast =
        arrow::compute::cast(column, &arrow::datatypes::DataType::Utf8).with_context(|| {
            format!(
                "{}: {what} `{name}` is {}, which does not convert to text",
                file.display(),
                column.data_type()
            )
        })?;
    Ok(cast
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .expect("cast to Utf8 gives a StringArray")
        .clone())
}

/// "did you mean `x`?" for a misspelt column, else the list of columns.
pub fn column_hint<'a>(name: &str, names: impl IntoIterator<Item = &'a str> + Clone) -> String {
    seqpipe::spec::did_you_mean(name, names.clone()).unwrap_or_else(|| {
        format!(
            "its columns are: {}",
            names.into_iter().collect::<Vec<_>>().join(", ")
        )
    })
}

/// The number of rows of a Parquet file, from its footer.
pub fn file_rows(path: &Path) -> anyhow::Result<u64> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{} is not a readable Parquet file", path.display()))?;
    Ok(builder.metadata().file_metadata().num_rows().max(0) as u64)
}

/// `part / whole` in percent, rounded half up to two decimals (`None` when
/// `whole` is 0); integer arithmetic, so the same counts print the same.
pub fn percent(part: u64, whole: u64) -> Option<f64> {
    (part * 10_000 + whole / 2)
        .checked_div(whole)
        .map(|x| x as f64 / 100.0)
}

/// Runs a batch iterator (e.g. [`batches`]) on its own thread, a couple of
/// batches ahead of the caller, so that decoding overlaps the caller's
/// work. The batches and their order are the iterator's.
pub fn prefetched<I>(batches: I) -> impl Iterator<Item = anyhow::Result<RecordBatch>>
where
    I: Iterator<Item = anyhow::Result<RecordBatch>> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(2);
    std::thread::spawn(move || {
        for batch in batches {
            // The receiver is gone: the caller stopped early.
            if tx.send(batch).is_err() {
                break;
            }
        }
    });
    rx.into_iter()
}

/// A [`TableWriter`] on its own thread: encoding and compressing overlap
/// the caller's work. It writes the batches it is given, in order, so the
/// file has the same bytes as one written by [`TableWriter`] directly.
/// Dropped without [`ThreadedWriter::close`] (an error on the way), it
/// waits for its thread and leaves the file unfinished, as a dropped
/// [`TableWriter`] does.
pub struct ThreadedWriter {
    /// `None` asks the thread to finish the file.
    tx: Option<std::sync::mpsc::SyncSender<Option<RecordBatch>>>,
    worker: Option<std::thread::JoinHandle<anyhow::Result<usize>>>,
}

impl ThreadedWriter {
    /// Creates `path` for batches of `schema`.
    pub fn create(
        path: &Path,
        schema: arrow::datatypes::SchemaRef,
        dictionary: Dictionary,
    ) -> anyhow::Result<ThreadedWriter> {
        let mut writer = TableWriter::create(path, schema, dictionary)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Option<RecordBatch>>(2);
        let worker = std::thread::spawn(move || {
            for message in rx {
                match message {
                    Some(batch) => writer.write(&batch)?,
                    None => return writer.close(),
                }
            }
            anyhow::bail!("the table writer was dropped before it was closed")
        });
        Ok(ThreadedWriter {
            tx: Some(tx),
            worker: Some(worker),
        })
    }

    /// Appends one batch; an error of an earlier write comes back here.
    pub fn write(&mut self, batch: RecordBatch) -> anyhow::Result<()> {
        let sent = self.tx.as_ref().map(|tx| tx.send(Some(batch)).is_ok());
        if sent == Some(true) {
            return Ok(());
        }
        // The worker stopped: its error says why.
        self.join()?;
        anyhow::bail!("the table writer stopped early")
    }

    /// Finishes the file; returns the number of rows written.
    pub fn close(mut self) -> anyhow::Result<usize> {
        if let Some(tx) = &self.tx {
            // A send fails only when the worker stopped on an error,
            // which `join` returns.
            let _ = tx.send(None);
        }
        self.join()
    }

    fn join(&mut self) -> anyhow::Result<usize> {
        self.tx.take();
        match self.worker.take() {
            Some(worker) => worker
                .join()
                .map_err(|_| anyhow!("the table writer thread panicked"))?,
            None => anyhow::bail!("the table writer was already closed"),
        }
    }
}

impl Drop for ThreadedWriter {
    fn drop(&mut self) {
        // The file may be created again at once (load.parquet restarts
        // without an unreadable column): the thread must be done with it.
        let _ = self.join();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn strings_only_leaves_ids_without_a_dictionary() {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<i64> = (0..1000).map(|i| i % 7).collect();
        let kinds: Vec<&str> = (0..1000).map(|i| ["cart", "view"][i % 2]).collect();
        let data = batch(vec![
            ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
            ("kind", Arc::new(arrow::array::StringArray::from(kinds))),
        ])
        .unwrap();
        let dictionary_pages = |dictionary: Dictionary| -> Vec<bool> {
            let path = dir.path().join(format!("{dictionary:?}.parquet"));
            write_with(&path, &data, dictionary).unwrap();
            let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
            let group = reader.metadata().row_group(0).clone();
            let columns = group.columns().iter();
            let pages = columns
                .map(|c| c.dictionary_page_offset().is_some())
                .collect();
            // Same rows either way.
            assert_eq!(read(&path).unwrap(), data);
            pages
        };
        assert_eq!(dictionary_pages(Dictionary::All), [true, true]);
        assert_eq!(dictionary_pages(Dictionary::StringsOnly), [false, true]);
    }

    use super::*;
    use arrow::array::StringArray;

    fn batches() -> Vec<RecordBatch> {
        (0..5)
            .map(|b| {
                let n = 1000 + 700 * b;
                batch(vec![
                    (
                        "id",
                        Arc::new(Int64Array::from(
                            (0..n as i64).map(|i| i * 7919 % 1013).collect::<Vec<_>>(),
                        )),
                    ),
                    (
                        "s",
                        Arc::new(StringArray::from(
                            (0..n).map(|i| format!("v{}", i % 37)).collect::<Vec<_>>(),
                        )),
                    ),
                ])
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn lists_array_equals_the_builders_array() {
        let rows = vec![vec![3, 1], vec![], vec![7; 100], vec![-1]];
        let mut builder = arrow::array::ListBuilder::new(arrow::array::Int64Builder::new());
        for row in &rows {
            builder.values().append_slice(row);
            builder.append(true);
        }
        let built: ArrayRef = Arc::new(builder.finish());
        let ours = lists_array(rows.iter().map(Vec::as_slice));
        assert_eq!(ours.to_data(), built.to_data());
        assert_eq!(ours.data_type(), built.data_type());
        assert_eq!(lists_array(std::iter::empty::<&[i64]>()).len(), 0);
    }

    #[test]
    fn threaded_writer_and_prefetched_reader_keep_the_bytes_and_batches() {
        let dir = tempfile::tempdir().unwrap();
        let data = batches();
        let (direct, threaded) = (
            dir.path().join("direct.parquet"),
            dir.path().join("threaded.parquet"),
        );
        let mut w =
            TableWriter::create(&direct, data[0].schema(), Dictionary::StringsOnly).unwrap();
        for b in &data {
            w.write(b).unwrap();
        }
        assert_eq!(w.close().unwrap(), 12000);
        let mut w =
            ThreadedWriter::create(&threaded, data[0].schema(), Dictionary::StringsOnly).unwrap();
        for b in &data {
            w.write(b.clone()).unwrap();
        }
        assert_eq!(w.close().unwrap(), 12000);
        assert_eq!(
            std::fs::read(&direct).unwrap(),
            std::fs::read(&threaded).unwrap()
        );
        let plain: Vec<RecordBatch> = batches_of(&direct);
        let ahead: Vec<RecordBatch> = prefetched(super::batches(&direct).unwrap())
            .collect::<anyhow::Result<_>>()
            .unwrap();
        assert_eq!(plain, ahead);
        assert_eq!(ahead.iter().map(|b| b.num_rows()).sum::<usize>(), 12000);
    }

    fn batches_of(path: &Path) -> Vec<RecordBatch> {
        super::batches(path)
            .unwrap()
            .collect::<anyhow::Result<_>>()
            .unwrap()
    }

    #[test]
    fn threaded_writer_reports_a_bad_batch_and_a_dropped_one_leaves_no_footer() {
        let dir = tempfile::tempdir().unwrap();
        let data = batches();
        let path = dir.path().join("t.parquet");
        let mut w =
            ThreadedWriter::create(&path, data[0].schema(), Dictionary::StringsOnly).unwrap();
        let other = batch(vec![("x", Arc::new(Int64Array::from(vec![1])) as ArrayRef)]).unwrap();
        // The error surfaces at a later write or at close, naming the file.
        let err = match (
            w.write(other),
            w.write(data[0].clone()),
            w.write(data[1].clone()),
        ) {
            (Ok(()), Ok(()), Ok(())) => w.close().unwrap_err(),
            (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => e,
        };
        assert!(format!("{err:#}").contains("t.parquet"), "{err:#}");
        let mut w =
            ThreadedWriter::create(&path, data[0].schema(), Dictionary::StringsOnly).unwrap();
        w.write(data[0].clone()).unwrap();
        drop(w);
        assert!(
            read(&path).is_err(),
            "an unfinished file is not readable Parquet"
        );
    }
}

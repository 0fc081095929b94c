//! Native Parquet encoding behind the `parquet-encoder` host resource.
//!
//! A plugin hands over one Arrow batch at a time and gets back whatever encoded bytes are
//! ready; the encoding itself runs off the plugin's thread. Each open file has one
//! background thread that owns the Parquet writer, encodes every batch and closes row
//! groups as they fill. The plugin's call returns as soon as its batch is queued, so the
//! sink, the transforms and the source keep going while earlier batches are compressed.
//! (Encoding the columns of a batch in parallel as well was measured slower on two cores,
//! where the stages already keep both busy.)
//!
//! Order is kept: batches are encoded in the order they were written, and the bytes a
//! `write` returns are always the next bytes of the file. A batch is checked against the
//! file's schema before it is queued, so a wrong batch fails the `write` that carried it;
//! an encoding failure in the background (rare: a null in a non-nullable column) is
//! reported by the next `write` or by `finish`. At most [`QUEUED_BATCHES`] batches wait
//! for the encoder: a plugin that writes faster than the encoder keeps up waits in `write`.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_writer::{
    compute_leaves, ArrowColumnWriter, ArrowRowGroupWriterFactory, ArrowWriter,
};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;

/// Batches queued for the encoder thread of one file, beyond the one it is encoding.
pub const QUEUED_BATCHES: usize = 2;

/// Files open at once in this process: each has a thread, so a plugin that opens files
/// without end is refused instead of exhausting the host.
pub const MAX_OPEN_FILES: usize = 1024;

static OPEN_FILES: AtomicUsize = AtomicUsize::new(0);

/// One Parquet file being encoded.
pub struct Encoder {
    schema: SchemaRef,
    queue: Option<SyncSender<RecordBatch>>,
    worker: Option<JoinHandle<Result<(), String>>>,
    output: Output,
}

impl Encoder {
    /// Start a file of `schema` with `props`; `row_group_rows` rows per row group. The
    /// Parquet writer itself is created with the first batch, which decides which columns
    /// get a dictionary (see [`tune_dictionaries`]); `open` checks that one can be created.
    pub fn open(
        schema: SchemaRef,
        props: WriterProperties,
        row_group_rows: usize,
    ) -> Result<Self, String> {
        ArrowWriter::try_new(std::io::sink(), schema.clone(), Some(props.clone()))
            .map_err(|e| e.to_string())?;
        if OPEN_FILES.fetch_add(1, Ordering::SeqCst) >= MAX_OPEN_FILES {
            OPEN_FILES.fetch_sub(1, Ordering::SeqCst);
            return Err(format!(
                "{MAX_OPEN_FILES} Parquet files are already open; finish some before opening more"
            ));
        }
        let output = Output::default();
        let (queue, batches) = sync_channel(QUEUED_BATCHES);
        let state = FileState {
            output: output.clone(),
            props,
            writer: None,
            schema: schema.clone(),
            row_group_rows: row_group_rows.max(1),
            group: None,
            groups: 0,
        };
        let worker = std::thread::Builder::new()
            .name("parquet-encoder".into())
            .spawn(move || state.run(batches))
            .map_err(|e| {
                OPEN_FILES.fetch_sub(1, Ordering::SeqCst);
                format!("cannot start an encoder thread: {e}")
            })?;
        Ok(Encoder {
            schema,
            queue: Some(queue),
            worker: Some(worker),
            output,
        })
    }

    /// Queue `batch`; returns the bytes encoded so far that were not yet returned.
    pub fn write(&mut self, batch: RecordBatch) -> Result<Vec<u8>, String> {
        let Some(queue) = &self.queue else {
            return Err("write after finish".into());
        };
        if batch.schema().fields() != self.schema.fields() {
            return Err(format!(
                "the batch's columns [{}] are not the file's [{}]",
                crate::batch::describe(&batch.schema()),
                crate::batch::describe(&self.schema)
            ));
        }
        if batch.num_rows() == 0 {
            return Ok(self.output.take());
        }
        if queue.send(batch).is_err() {
            // The encoder stopped: its error says why.
            return Err(self
                .join()
                .err()
                .unwrap_or_else(|| "the encoder stopped before the end of the file".to_string()));
        }
        Ok(self.output.take())
    }

    /// Finish the file: waits for every queued batch, writes the footer, and returns the
    /// remaining bytes.
    pub fn finish(&mut self) -> Result<Vec<u8>, String> {
        if self.queue.is_none() {
            return Err("finish called twice".into());
        }
        self.join()?;
        Ok(self.output.take())
    }

    /// Close the queue and wait for the encoder thread's outcome.
    fn join(&mut self) -> Result<(), String> {
        self.queue = None;
        match self.worker.take() {
            Some(worker) => worker
                .join()
                .unwrap_or_else(|_| Err("the encoder thread panicked".into())),
            None => Err("the encoder already stopped".into()),
        }
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        // An abandoned file: stop the thread without waiting for it to encode the rest.
        self.queue = None;
        OPEN_FILES.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The encoder thread's side: the file and the row group being filled.
struct FileState {
    output: Output,
    /// The file's properties before [`tune_dictionaries`] sees the first batch.
    props: WriterProperties,
    /// Created with the first batch (or at the end, for a file without rows).
    writer: Option<(SerializedFileWriter<Output>, ArrowRowGroupWriterFactory)>,
    schema: SchemaRef,
    row_group_rows: usize,
    /// Column writers of the open row group and the rows it holds.
    group: Option<(Vec<ArrowColumnWriter>, usize)>,
    groups: usize,
}

impl FileState {
    fn run(mut self, batches: Receiver<RecordBatch>) -> Result<(), String> {
        for batch in batches {
            self.write(&batch).map_err(|e| e.to_string())?;
        }
        self.close_group().map_err(|e| e.to_string())?;
        let (file, _) = self.writer(None).map_err(|e| e.to_string())?;
        file.finish().map_err(|e| e.to_string())?;
        Ok(())
    }

    /// The file's writer, created on first use with dictionaries chosen from `first`.
    fn writer(
        &mut self,
        first: Option<&RecordBatch>,
    ) -> parquet::errors::Result<&mut (SerializedFileWriter<Output>, ArrowRowGroupWriterFactory)>
    {
        if self.writer.is_none() {
            let props = match first {
                Some(batch) => tune_dictionaries(self.props.clone(), batch),
                None => self.props.clone(),
            };
            let writer =
                ArrowWriter::try_new(self.output.clone(), self.schema.clone(), Some(props))?;
            self.writer = Some(writer.into_serialized_writer()?);
        }
        Ok(self.writer.as_mut().expect("created above"))
    }

    fn write(&mut self, batch: &RecordBatch) -> parquet::errors::Result<()> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            if self.group.is_none() {
                let groups = self.groups;
                let (_, factory) = self.writer(Some(batch))?;
                let writers = factory.create_column_writers(groups)?;
                self.group = Some((writers, 0));
            }
            let (writers, rows) = self.group.as_mut().expect("opened above");
            let take = (self.row_group_rows - *rows).min(batch.num_rows() - offset);
            let part = batch.slice(offset, take);
            encode_columns(&self.schema, writers, &part)?;
            *rows += take;
            offset += take;
            if *rows >= self.row_group_rows {
                self.close_group()?;
            }
        }
        Ok(())
    }

    /// Close the open row group, if any: its columns are finished and written to the file
    /// in schema order.
    fn close_group(&mut self) -> parquet::errors::Result<()> {
        let Some((writers, _)) = self.group.take() else {
            return Ok(());
        };
        let chunks = writers
            .into_iter()
            .map(ArrowColumnWriter::close)
            .collect::<parquet::errors::Result<Vec<_>>>()?;
        let (file, _) = self.writer(None)?;
        let mut group = file.next_row_group()?;
        for chunk in chunks {
            chunk.append_to_row_group(&mut group)?;
        }
        group.close()?;
        self.groups += 1;
        Ok(())
    }
}

/// Rows of the first batch looked at to judge a column's cardinality.
const SAMPLE_ROWS: usize = 8192;

/// Turn dictionary encoding off for the columns whose values in the first batch are nearly
/// all distinct (identifiers, e-mail addresses, hashes, timestamps): a dictionary cannot
/// shrink them, and building one costs a hash-table insert per value until the dictionary
/// outgrows its page and the writer falls back to plain encoding (for an integer column
/// that is never, within a row group: the whole column is written twice over). Columns
/// with repeats keep the default. Only flat columns are judged.
pub fn tune_dictionaries(props: WriterProperties, first: &RecordBatch) -> WriterProperties {
    let mut builder = None;
    for (field, column) in first.schema().fields().iter().zip(first.columns()) {
        if !props.dictionary_enabled(&ColumnPath::from(field.name().as_str())) {
            continue;
        }
        if let Some(ratio) = distinct_ratio(column.as_ref()) {
            if ratio > 0.9 {
                builder = Some(
                    builder
                        .unwrap_or_else(|| props.clone().into_builder())
                        .set_column_dictionary_enabled(
                            ColumnPath::from(field.name().as_str()),
                            false,
                        ),
                );
            }
        }
    }
    builder.map(|b| b.build()).unwrap_or(props)
}

/// Distinct values ÷ non-null values among the first [`SAMPLE_ROWS`] rows of a flat
/// column; `None` for nested types and for samples too small to judge.
fn distinct_ratio(column: &dyn Array) -> Option<f64> {
    use std::collections::HashSet;
    use std::hash::{BuildHasher, RandomState};

    let sample = column.slice(0, column.len().min(SAMPLE_ROWS));
    let hasher = RandomState::new();
    let mut seen = HashSet::with_capacity(sample.len());
    let mut values = 0usize;
    let mut add = |bytes: &[u8]| {
        values += 1;
        seen.insert(hasher.hash_one(bytes));
    };
    let valid = |i: usize| sample.is_valid(i);
    match sample.data_type() {
        DataType::Utf8 => sample
            .as_string::<i32>()
            .iter()
            .flatten()
            .for_each(|v| add(v.as_bytes())),
        DataType::LargeUtf8 => sample
            .as_string::<i64>()
            .iter()
            .flatten()
            .for_each(|v| add(v.as_bytes())),
        DataType::Utf8View => sample
            .as_string_view()
            .iter()
            .flatten()
            .for_each(|v| add(v.as_bytes())),
        DataType::Binary => sample
            .as_binary::<i32>()
            .iter()
            .flatten()
            .for_each(&mut add),
        DataType::LargeBinary => sample
            .as_binary::<i64>()
            .iter()
            .flatten()
            .for_each(&mut add),
        DataType::BinaryView => sample.as_binary_view().iter().flatten().for_each(&mut add),
        t if t.is_primitive() => {
            let width = t.primitive_width()?;
            let data = sample.to_data();
            let bytes = &data.buffers()[0].as_slice()[data.offset() * width..];
            for i in (0..sample.len()).filter(|&i| valid(i)) {
                add(&bytes[i * width..(i + 1) * width]);
            }
        }
        _ => return None,
    }
    (values >= 1024).then(|| seen.len() as f64 / values as f64)
}

/// Encode every column of `batch` into its writer.
fn encode_columns(
    schema: &SchemaRef,
    writers: &mut [ArrowColumnWriter],
    batch: &RecordBatch,
) -> parquet::errors::Result<()> {
    let mut leaves = Vec::with_capacity(writers.len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        leaves.extend(compute_leaves(field, column)?);
    }
    writers
        .iter_mut()
        .zip(&leaves)
        .try_for_each(|(writer, leaf)| writer.write(leaf))
}

/// The file's bytes as the encoder produces them, drained by every call.
#[derive(Clone, Default)]
struct Output(Arc<Mutex<Vec<u8>>>);

impl Output {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().expect("encoder output lock"))
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("encoder output lock")
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use bytes::Bytes;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::basic::{Compression, ZstdLevel};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]))
    }

    fn batch(from: i64, rows: i64) -> RecordBatch {
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(from..from + rows));
        let names: ArrayRef = Arc::new(StringArray::from_iter(
            (from..from + rows).map(|i| (i % 7 != 0).then(|| format!("name-{i}"))),
        ));
        RecordBatch::try_new(schema(), vec![ids, names]).unwrap()
    }

    fn props() -> WriterProperties {
        WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap()))
            .build()
    }

    #[test]
    fn batches_come_back_in_order_across_row_groups() {
        let mut encoder = Encoder::open(schema(), props(), 1000).unwrap();
        let mut file = Vec::new();
        let mut from = 0;
        for rows in [1, 999, 1500, 2500, 7, 0, 3000] {
            file.extend(encoder.write(batch(from, rows)).unwrap());
            from += rows;
        }
        file.extend(encoder.finish().unwrap());

        let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(file)).unwrap();
        let groups: Vec<i64> = reader
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect();
        assert_eq!(groups, [1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 7]);
        let mut expected = 0;
        for b in reader.build().unwrap() {
            let b = b.unwrap();
            assert_eq!(b, batch(expected, b.num_rows() as i64));
            expected += b.num_rows() as i64;
        }
        assert_eq!(expected, from);
    }

    #[test]
    fn a_batch_of_other_columns_fails_the_write_that_carried_it() {
        let mut encoder = Encoder::open(schema(), props(), 1000).unwrap();
        let other = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let wrong =
            RecordBatch::try_new(other, vec![Arc::new(Int64Array::from(vec![1])) as ArrayRef])
                .unwrap();
        let error = encoder.write(wrong).unwrap_err();
        assert!(error.contains("are not the file's"), "{error}");
        // The file itself is still good.
        encoder.write(batch(0, 10)).unwrap();
        encoder.finish().unwrap();
        assert_eq!(encoder.finish().unwrap_err(), "finish called twice");
    }
}

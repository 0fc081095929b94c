//! Native Parquet encoding behind the `parquet-encoder` host resource.
//!
//! A plugin hands over one Arrow batch at a time and gets back whatever encoded bytes are
//! ready; the encoding itself runs off the plugin's thread. Each open file has one
//! background thread that owns the Parquet writer, encodes every batch and closes row
//! groups as they fill. The plugin's call returns as soon as its batch is queued, so the
//! sink, the transforms and the source keep going while earlier batches are compressed.
//! A thread whose file is done waits for the next file (up to [`IDLE_THREADS`] wait), so a
//! run that writes file after file encodes them on the same few threads.
//! (Encoding the columns of a batch in parallel as well was measured slower on two cores,
//! where the stages already keep both busy.)
//!
//! Order is kept: batches are encoded in the order they were written, and the bytes a
//! `write` returns are always the next bytes of the file. A batch is checked against the
//! file's schema before it is queued, so a wrong batch fails the `write` that carried it;
//! an encoding failure in the background (rare: a null in a non-nullable column) is
//! reported by the next `write` or by `finish`. At most [`QUEUED_BATCHES`] batches wait
//! for the encoder: a plugin that writes faster than the encoder keeps up waits in `write`.

use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float32Type, Float64Type, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use parquet::arrow::arrow_writer::{
    compute_leaves, ArrowColumnWriter, ArrowRowGroupWriterFactory, ArrowWriter,
};
use parquet::arrow::ArrowSchemaConverter;
use parquet::basic::{Compression, Encoding, Type as PhysicalType, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;

/// Batches queued for the encoder thread of one file, beyond the one it is encoding.
pub const QUEUED_BATCHES: usize = 2;

/// Files open at once in this process: each has a thread, so a plugin that opens files
/// without end is refused instead of exhausting the host.
pub const MAX_OPEN_FILES: usize = 1024;

static OPEN_FILES: AtomicUsize = AtomicUsize::new(0);

/// One of the [`MAX_OPEN_FILES`] places, given back when dropped.
struct OpenFile;

impl OpenFile {
    fn take() -> Result<Self, String> {
        if OPEN_FILES.fetch_add(1, Ordering::SeqCst) >= MAX_OPEN_FILES {
            OPEN_FILES.fetch_sub(1, Ordering::SeqCst);
            return Err(format!(
                "{MAX_OPEN_FILES} Parquet files are already open; finish some before opening more"
            ));
        }
        Ok(OpenFile)
    }
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        OPEN_FILES.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Encoder threads kept waiting for a next file once theirs is done.
///
/// A new thread for every file spread the run's memory: jemalloc binds each new thread to
/// one of its arenas, and the pages a finished file's thread freed waited out their decay
/// in its arena while the next file filled another. R1 at 50M rows (a file per epoch) crept
/// from 160 to 195–245 MiB; with the same threads kept, it stays flat (decision 0008).
pub const IDLE_THREADS: usize = 8;

/// Work for an encoder thread: one file, from its first batch to its footer.
type Job = Box<dyn FnOnce() + Send>;

/// The job queues of the encoder threads waiting for work.
static IDLE: Mutex<Vec<SyncSender<Job>>> = Mutex::new(Vec::new());

/// Run `job` on a waiting encoder thread, or on a new one when none waits. (A waiting
/// thread holds its own queue's sender, so it is there to take the job.)
fn run_on_encoder_thread(job: Job) -> Result<(), String> {
    let waiting = IDLE.lock().unwrap_or_else(|p| p.into_inner()).pop();
    let job = match waiting {
        Some(thread) => match thread.send(job) {
            Ok(()) => return Ok(()),
            Err(std::sync::mpsc::SendError(job)) => job,
        },
        None => job,
    };
    let (queue, jobs) = sync_channel::<Job>(1);
    std::thread::Builder::new()
        .name("parquet-encoder".into())
        .spawn(move || {
            let mut job = job;
            loop {
                job();
                {
                    let mut idle = IDLE.lock().unwrap_or_else(|p| p.into_inner());
                    if idle.len() >= IDLE_THREADS {
                        return;
                    }
                    idle.push(queue.clone());
                }
                match jobs.recv() {
                    Ok(next) => job = next,
                    Err(_) => return,
                }
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start an encoder thread: {e}"))
}

/// One Parquet file being encoded. Dropping it abandons the file: its thread stops
/// encoding once it has seen the closed queue, without anyone waiting for it.
pub struct Encoder {
    schema: SchemaRef,
    queue: Option<SyncSender<RecordBatch>>,
    /// The file's outcome, sent by its thread when the file is done.
    outcome: Option<Receiver<Result<(), String>>>,
    output: Output,
    _open: OpenFile,
}

impl Encoder {
    /// Start a file of `schema` as `options` say. The Parquet writer itself is created
    /// with the first batch, which decides which columns get a dictionary (see
    /// [`tune_dictionaries`]) and, when the level is left to the host, which zstd level
    /// each column gets (see [`tune_zstd_levels`]); `open` checks that the schema can be
    /// written as Parquet.
    pub fn open(schema: SchemaRef, options: FileOptions) -> Result<Self, String> {
        ArrowSchemaConverter::new()
            .with_coerce_types(options.props.coerce_types())
            .convert(&schema)
            .map_err(|e| e.to_string())?;
        let open = OpenFile::take()?;
        let output = Output::default();
        let (queue, batches) = sync_channel(QUEUED_BATCHES);
        let (file_schema, file_output) = (schema.clone(), output.clone());
        let (report, outcome) = sync_channel(1);
        run_on_encoder_thread(Box::new(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                encode(batches, file_schema, options, file_output)
            }))
            .unwrap_or_else(|_| Err("the encoder thread panicked".into()));
            let _ = report.send(result);
        }))?;
        Ok(Encoder {
            schema,
            queue: Some(queue),
            outcome: Some(outcome),
            output,
            _open: open,
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

    /// Close the queue and wait for the file's outcome from its encoder thread.
    fn join(&mut self) -> Result<(), String> {
        self.queue = None;
        match self.outcome.take() {
            Some(outcome) => outcome
                .recv()
                .unwrap_or_else(|_| Err("the encoder thread stopped without an outcome".into())),
            None => Err("the encoder already stopped".into()),
        }
    }
}

/// How one file is written.
pub struct FileOptions {
    /// The writer's properties as the plugin asked for them.
    pub props: WriterProperties,
    /// Rows per row group (at least 1).
    pub row_group_rows: usize,
    /// The plugin asked for zstd without a level, so the host may pick one per column
    /// (see [`tune_zstd_levels`]).
    pub zstd_level_per_column: bool,
    /// Where the choices made from a first batch are kept for the files that share them
    /// (see [`Tuning`]); `None`: this file chooses for itself.
    pub tuning: Option<Tuning>,
}

/// The properties chosen from the first batch of the first file (dictionaries, zstd
/// levels), shared by the later files a plugin instance opens with the same schema and
/// options. A partitioned lake opens a file per partition and epoch, hundreds at a time,
/// each with a first batch of a few thousand rows: judging every one again cost more than
/// encoding it, and partitions of one stream share their columns' nature.
pub type Tuning = Arc<OnceLock<WriterProperties>>;

/// The encoder thread: creates the writer with dictionaries (and zstd levels) chosen from
/// the first batch, encodes every batch in order, and finishes the file when the queue
/// closes.
fn encode(
    batches: Receiver<RecordBatch>,
    schema: SchemaRef,
    options: FileOptions,
    output: Output,
) -> Result<(), String> {
    let mut batches = batches.into_iter().peekable();
    let FileOptions {
        props,
        row_group_rows,
        zstd_level_per_column,
        tuning,
    } = options;
    let row_group_rows = row_group_rows.max(1);
    let tune = |props: WriterProperties, first: &RecordBatch| {
        let props = tune_dictionaries(props, first);
        if zstd_level_per_column {
            tune_zstd_levels(props, first)
        } else {
            props
        }
    };
    let props = match (batches.peek(), tuning) {
        (Some(first), Some(shared)) => shared.get_or_init(|| tune(props, first)).clone(),
        (Some(first), None) => tune(props, first),
        (None, _) => props,
    };
    let writer =
        ArrowWriter::try_new(output, schema.clone(), Some(props)).map_err(|e| e.to_string())?;
    let (file, factory) = writer.into_serialized_writer().map_err(|e| e.to_string())?;
    let mut state = FileState {
        file,
        factory,
        schema,
        row_group_rows,
        group: None,
        groups: 0,
    };
    for batch in batches {
        state.write(&batch).map_err(|e| e.to_string())?;
    }
    state.close_group().map_err(|e| e.to_string())?;
    state.file.finish().map_err(|e| e.to_string())?;
    Ok(())
}

/// The encoder thread's side: the file and the row group being filled.
struct FileState {
    file: SerializedFileWriter<Output>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    row_group_rows: usize,
    /// Column writers of the open row group and the rows it holds.
    group: Option<(Vec<ArrowColumnWriter>, usize)>,
    groups: usize,
}

impl FileState {
    fn write(&mut self, batch: &RecordBatch) -> parquet::errors::Result<()> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let (writers, rows) = match &mut self.group {
                Some(group) => group,
                None => self
                    .group
                    .insert((self.factory.create_column_writers(self.groups)?, 0)),
            };
            let take = (self.row_group_rows - *rows).min(batch.num_rows() - offset);
            encode_columns(&self.schema, writers, &batch.slice(offset, take))?;
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
        let mut group = self.file.next_row_group()?;
        for writer in writers {
            writer.close()?.append_to_row_group(&mut group)?;
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
///
/// Such a column that Parquet stores as INT32 or INT64 (ids, dates, timestamps) is
/// delta-encoded instead of plain: sequences and clustered values pack into a few bits
/// each, which leaves the codec far fewer bytes to compress. Readers that know only the
/// original encodings cannot read it (decision 0004).
pub fn tune_dictionaries(props: WriterProperties, first: &RecordBatch) -> WriterProperties {
    let parquet = ArrowSchemaConverter::new()
        .with_coerce_types(props.coerce_types())
        .convert(first.schema_ref())
        .ok();
    let stored_as_integers = |path: &ColumnPath| {
        parquet.as_ref().is_some_and(|schema| {
            schema.columns().iter().any(|column| {
                column.path() == path
                    && matches!(
                        column.physical_type(),
                        PhysicalType::INT32 | PhysicalType::INT64
                    )
            })
        })
    };
    let distinct: Vec<(ColumnPath, bool)> = first
        .schema()
        .fields()
        .iter()
        .zip(first.columns())
        .map(|(field, column)| (ColumnPath::from(field.name().as_str()), column))
        .filter(|(path, column)| {
            props.dictionary_enabled(path)
                && distinct_ratio(column.as_ref()).is_some_and(|ratio| ratio > 0.9)
        })
        .map(|(path, _)| {
            let integers = stored_as_integers(&path);
            (path, integers)
        })
        .collect();
    if distinct.is_empty() {
        return props;
    }
    distinct
        .into_iter()
        .fold(props.into_builder(), |builder, (path, integer)| {
            let builder = builder.set_column_dictionary_enabled(path.clone(), false);
            if integer {
                builder.set_column_encoding(path, Encoding::DELTA_BINARY_PACKED)
            } else {
                builder
            }
        })
        .build()
}

/// Distinct values ÷ non-null values among the first [`SAMPLE_ROWS`] rows of a flat
/// (primitive, string or binary) column; `None` for other types and for samples too small
/// to judge. Values are compared in Arrow's row format, one byte string per value.
fn distinct_ratio(column: &dyn Array) -> Option<f64> {
    let flat = column.data_type().is_primitive()
        || matches!(
            column.data_type(),
            DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Binary
                | DataType::LargeBinary
                | DataType::BinaryView
        );
    if !flat {
        return None;
    }
    let sample = column.slice(0, column.len().min(SAMPLE_ROWS));
    let converter = RowConverter::new(vec![SortField::new(sample.data_type().clone())]).ok()?;
    let rows = converter
        .convert_columns(std::slice::from_ref(&sample))
        .ok()?;
    let values: Vec<&[u8]> = (0..sample.len())
        .filter(|&i| sample.is_valid(i))
        .map(|i| rows.row(i).data())
        .collect();
    let distinct: HashSet<&[u8]> = values.iter().copied().collect();
    (values.len() >= 1024).then(|| distinct.len() as f64 / values.len() as f64)
}

/// The zstd level tried against the plugin's default for plain-encoded columns.
const ZSTD_FAST_LEVEL: i32 = 1;

/// A sample smaller than this says too little about how a column compresses.
const MIN_LEVEL_SAMPLE_BYTES: usize = 16 << 10;

/// Give the plain-encoded columns (strings, binaries and floats whose dictionary was
/// turned off; [`plain_sample`] knows their layout) zstd level 1 when their sample
/// compresses at least as small at level 1 as at the file's level. High-entropy values such as hashes and random tokens are the
/// case: level 3 spends most of zstd's time searching for matches that are not there and
/// comes out no smaller (on SHA-256 hex, 2.6× slower and 4% larger). Columns that do
/// compress better at the higher level keep it, so no file grows. Used only when the
/// plugin left the level to the host.
pub fn tune_zstd_levels(props: WriterProperties, first: &RecordBatch) -> WriterProperties {
    let fast = match ZstdLevel::try_new(ZSTD_FAST_LEVEL) {
        Ok(level) => level,
        Err(_) => return props,
    };
    let faster: Vec<ColumnPath> = first
        .schema()
        .fields()
        .iter()
        .zip(first.columns())
        .filter_map(|(field, column)| {
            let path = ColumnPath::from(field.name().as_str());
            let Compression::ZSTD(level) = props.compression(&path) else {
                return None;
            };
            let plain = !props.dictionary_enabled(&path) && props.encoding(&path).is_none();
            if !plain || level.compression_level() <= ZSTD_FAST_LEVEL {
                return None;
            }
            let sample = plain_sample(column.as_ref())?;
            let size = |level: i32| zstd::bulk::compress(&sample, level).map(|c| c.len()).ok();
            let at_fast = size(ZSTD_FAST_LEVEL)?;
            let at_default = size(level.compression_level())?;
            (at_fast <= at_default).then_some(path)
        })
        .collect();
    if faster.is_empty() {
        return props;
    }
    let names: Vec<String> = faster.iter().map(ColumnPath::string).collect();
    tracing::debug!(columns = ?names, "zstd level {ZSTD_FAST_LEVEL} for high-entropy columns");
    faster
        .into_iter()
        .fold(props.into_builder(), |builder, path| {
            builder.set_column_compression(path, Compression::ZSTD(fast))
        })
        .build()
}

/// The first [`SAMPLE_ROWS`] values of a string, binary or float column as Parquet's
/// plain encoding lays them out (each byte string after its 4-byte length; floats as
/// their little-endian bytes); `None` for other types and for samples too small to judge.
fn plain_sample(column: &dyn Array) -> Option<Vec<u8>> {
    fn lengths_and_bytes<'a>(values: impl Iterator<Item = Option<&'a [u8]>>) -> Vec<u8> {
        let mut out = Vec::new();
        for value in values.flatten() {
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(value);
        }
        out
    }
    let sample = column.slice(0, column.len().min(SAMPLE_ROWS));
    let sample = sample.as_ref();
    let out = match sample.data_type() {
        DataType::Utf8 => lengths_and_bytes(sample.as_string::<i32>().iter().map(bytes)),
        DataType::LargeUtf8 => lengths_and_bytes(sample.as_string::<i64>().iter().map(bytes)),
        DataType::Utf8View => lengths_and_bytes(sample.as_string_view().iter().map(bytes)),
        DataType::Binary => lengths_and_bytes(sample.as_binary::<i32>().iter()),
        DataType::LargeBinary => lengths_and_bytes(sample.as_binary::<i64>().iter()),
        DataType::BinaryView => lengths_and_bytes(sample.as_binary_view().iter()),
        DataType::Float32 => sample
            .as_primitive::<Float32Type>()
            .values()
            .inner()
            .to_vec(),
        DataType::Float64 => sample
            .as_primitive::<Float64Type>()
            .values()
            .inner()
            .to_vec(),
        _ => return None,
    };
    (out.len() >= MIN_LEVEL_SAMPLE_BYTES).then_some(out)
}

fn bytes(value: Option<&str>) -> Option<&[u8]> {
    value.map(str::as_bytes)
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

    fn options(row_group_rows: usize) -> FileOptions {
        FileOptions {
            props: props(),
            row_group_rows,
            zstd_level_per_column: true,
            tuning: None,
        }
    }

    #[test]
    fn batches_come_back_in_order_across_row_groups() {
        let mut encoder = Encoder::open(schema(), options(1000)).unwrap();
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
        let mut encoder = Encoder::open(schema(), options(1000)).unwrap();
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

    #[test]
    fn only_columns_of_nearly_distinct_values_lose_their_dictionary() {
        let tuned = tune_dictionaries(props(), &batch(0, 5000));
        assert!(!tuned.dictionary_enabled(&ColumnPath::from("id")));
        assert!(!tuned.dictionary_enabled(&ColumnPath::from("name")));
        assert_eq!(
            tuned.encoding(&ColumnPath::from("id")),
            Some(Encoding::DELTA_BINARY_PACKED),
            "distinct integers are delta-encoded"
        );
        assert_eq!(tuned.encoding(&ColumnPath::from("name")), None);

        let repeats: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..5000).map(|i| format!("country-{}", i % 50)),
        ));
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..5000));
        let few = RecordBatch::try_new(schema(), vec![ids, repeats]).unwrap();
        let tuned = tune_dictionaries(props(), &few);
        assert!(!tuned.dictionary_enabled(&ColumnPath::from("id")));
        assert!(tuned.dictionary_enabled(&ColumnPath::from("name")));

        // Too few rows to judge: the defaults stay.
        let tuned = tune_dictionaries(props(), &batch(0, 100));
        assert!(tuned.dictionary_enabled(&ColumnPath::from("id")));
    }

    /// A string column named `name` of 5,000 hex digests (high entropy) or of sentences
    /// drawn from a small vocabulary (compressible), next to distinct ids.
    fn texts(hashed: bool) -> RecordBatch {
        use sha2::{Digest, Sha256};
        const WORDS: [&str; 16] = [
            "the",
            "order",
            "was",
            "shipped",
            "to",
            "customer",
            "on",
            "time",
            "as",
            "promised",
            "and",
            "delivered",
            "with",
            "care",
            "by",
            "our",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut word = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            WORDS[(seed % 16) as usize]
        };
        let names: ArrayRef = Arc::new(StringArray::from_iter_values((0..5000).map(|i| {
            if hashed {
                hex::encode(Sha256::digest(format!("user{i}@example.com")))
            } else {
                let sentence: Vec<&str> = (0..12).map(|_| word()).collect();
                format!("{} #{i}", sentence.join(" "))
            }
        })));
        let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..5000));
        RecordBatch::try_new(schema(), vec![ids, names]).unwrap()
    }

    #[test]
    fn high_entropy_text_gets_the_fast_zstd_level_and_compressible_text_keeps_its_own() {
        let level = |props: &WriterProperties| props.compression(&ColumnPath::from("name"));
        let fast = Compression::ZSTD(ZstdLevel::try_new(1).unwrap());
        let default = Compression::ZSTD(ZstdLevel::try_new(3).unwrap());

        let hashed = texts(true);
        let tuned = tune_zstd_levels(tune_dictionaries(props(), &hashed), &hashed);
        assert_eq!(level(&tuned), fast);
        assert_eq!(
            tuned.compression(&ColumnPath::from("id")),
            default,
            "delta-encoded integers keep the file's level"
        );

        let prose = texts(false);
        let tuned = tune_zstd_levels(tune_dictionaries(props(), &prose), &prose);
        assert_eq!(level(&tuned), default);
    }

    #[test]
    fn the_file_uses_the_chosen_levels_only_when_the_level_was_left_to_the_host() {
        let file = |zstd_level_per_column: bool| {
            let options = FileOptions {
                zstd_level_per_column,
                ..options(10_000)
            };
            let mut encoder = Encoder::open(schema(), options).unwrap();
            let mut file = encoder.write(texts(true)).unwrap();
            file.extend(encoder.finish().unwrap());
            let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(file.clone()));
            let mut batches = reader.unwrap().with_batch_size(10_000).build().unwrap();
            let batch = batches.next().unwrap().unwrap();
            assert_eq!(batch, texts(true));
            file.len()
        };
        let (chosen, given) = (file(true), file(false));
        assert!(
            chosen < given,
            "hex digests at level 1 ({chosen} bytes) should be smaller than at level 3 ({given})"
        );
    }

    #[test]
    fn files_sharing_a_tuning_take_the_first_files_choices() {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        // Whether the `name` column has a dictionary in a file whose first batch is `first`.
        let dictionary = |first: RecordBatch, tuning: &Tuning| {
            let options = FileOptions {
                tuning: Some(tuning.clone()),
                ..options(10_000)
            };
            let mut encoder = Encoder::open(schema(), options).unwrap();
            let mut file = encoder.write(first).unwrap();
            file.extend(encoder.finish().unwrap());
            let reader = SerializedFileReader::new(Bytes::from(file)).unwrap();
            let column = reader.metadata().row_group(0).column(1).clone();
            column.dictionary_page_offset().is_some()
        };
        // Names drawn from four values.
        let repeats = {
            let names: ArrayRef = Arc::new(StringArray::from_iter_values(
                (0..5000).map(|i| ["eu", "us", "jp", "br"][i % 4]),
            ));
            let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..5000));
            RecordBatch::try_new(schema(), vec![ids, names]).unwrap()
        };
        // Distinct digests lose the dictionary, repeated names keep it.
        assert!(!dictionary(texts(true), &Tuning::default()));
        assert!(dictionary(repeats.clone(), &Tuning::default()));
        let shared = Tuning::default();
        assert!(!dictionary(texts(true), &shared));
        assert!(
            !dictionary(repeats, &shared),
            "a later file keeps the first file's choice"
        );
    }
}

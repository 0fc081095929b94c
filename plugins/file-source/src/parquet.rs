//! Parquet: the schema of a file, the codecs this build can decode, and the reader that
//! returns a file's rows in batches from any row group and row onwards.
//!
//! Only pure-Rust codecs are compiled in: snappy, gzip, brotli, lz4 and zstd. zstd is the
//! pure-Rust stand-in for the `zstd` crate in `plugins/zstd-shim` (the real one needs a C
//! library that does not build for wasm32-wasip2). The one codec left, LZO, is refused up
//! front with a message that says so rather than failing halfway through.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use arrow_array::{RecordBatch, RecordBatchOptions};
use arrow_schema::{Field, Schema, SchemaRef};
use bytes::Bytes;
use ingest_sdk::source::Chunk;
use ingest_sdk::{Error, Result};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::basic::Compression;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::reader::{ChunkReader, Length};

use crate::files;
use crate::position::{self, ParquetPosition};

/// The bytes of a Parquet file, read by range: a local file, or an object elsewhere (the
/// s3 source reads objects by ranged GETs).
pub trait Ranges: Send + Sync {
    /// The file's size in bytes.
    fn size(&self) -> u64;
    /// `length` bytes from `start`.
    fn bytes(&self, start: u64, length: usize) -> io::Result<Bytes>;
    /// The byte ranges of the row groups about to be read, in order: a remote input fetches
    /// each whole when it is first touched instead of page by page.
    fn plan(&self, _row_groups: Vec<Range<u64>>) {}
}

/// A Parquet file as parquet reads it, through [`Ranges`].
#[derive(Clone)]
pub struct Input {
    ranges: Arc<dyn Ranges>,
    /// The row groups planned, so that no stream reads across a row group's end.
    row_groups: Arc<Mutex<Vec<Range<u64>>>>,
}

impl Input {
    pub fn new(ranges: Arc<dyn Ranges>) -> Input {
        Input {
            ranges,
            row_groups: Arc::default(),
        }
    }

    fn plan(&self, row_groups: Vec<Range<u64>>) {
        *self.row_groups.lock().unwrap_or_else(|p| p.into_inner()) = row_groups.clone();
        self.ranges.plan(row_groups);
    }

    /// Where a stream reading from `pos` stops: the end of its row group, or of the file.
    fn stop(&self, pos: u64) -> u64 {
        let groups = self.row_groups.lock().unwrap_or_else(|p| p.into_inner());
        groups
            .iter()
            .find(|g| g.contains(&pos))
            .map_or(self.ranges.size(), |g| g.end)
    }
}

impl Length for Input {
    fn len(&self) -> u64 {
        self.ranges.size()
    }
}

/// Block size of the streams parquet reads page headers from.
const READ_BLOCK: usize = 64 * 1024;

/// Reads an [`Input`] from an offset onwards, a block at a time.
pub struct InputReader {
    input: Input,
    pos: u64,
    block: Bytes,
}

impl Read for InputReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.block.is_empty() {
            let left = self.input.stop(self.pos).saturating_sub(self.pos);
            if left == 0 {
                return Ok(0);
            }
            let n = (READ_BLOCK as u64).min(left) as usize;
            self.block = self.input.ranges.bytes(self.pos, n)?;
            self.pos += self.block.len() as u64;
        }
        let n = buf.len().min(self.block.len());
        buf[..n].copy_from_slice(&self.block.split_to(n));
        Ok(n)
    }
}

impl ChunkReader for Input {
    type T = InputReader;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(InputReader {
            input: self.clone(),
            pos: start,
            block: Bytes::new(),
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        Ok(self.ranges.bytes(start, length)?)
    }
}

/// A local file. `std::fs::File`'s own `ChunkReader` clones the handle, which WASI does not
/// support; this shares one handle and seeks instead.
struct SharedFile {
    file: Mutex<File>,
    len: u64,
}

impl SharedFile {
    fn open(path: &str) -> Result<Input> {
        let file = File::open(path).map_err(|e| files::io_error(path, "open", e))?;
        let len = file
            .metadata()
            .map_err(|e| files::io_error(path, "read", e))?
            .len();
        Ok(Input::new(Arc::new(SharedFile {
            file: Mutex::new(file),
            len,
        })))
    }
}

impl Ranges for SharedFile {
    fn size(&self) -> u64 {
        self.len
    }

    fn bytes(&self, start: u64, length: usize) -> io::Result<Bytes> {
        let mut buffer = vec![0; length];
        // A panic cannot leave a File in a state worth refusing.
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buffer)?;
        Ok(buffer.into())
    }
}

fn builder(input: Input, name: &str) -> Result<ParquetRecordBatchReaderBuilder<Input>> {
    ParquetRecordBatchReaderBuilder::try_new(input)
        .map_err(|e| Error::data(format!("`{name}` is not a readable Parquet file: {e}")))
}

/// Whether `path` ends with a Parquet footer's magic bytes: a file still being written
/// has none yet.
pub fn has_footer(path: &str) -> Result<bool> {
    let mut file = File::open(path).map_err(|e| files::io_error(path, "open", e))?;
    let len = file
        .metadata()
        .map_err(|e| files::io_error(path, "read", e))?
        .len();
    // The smallest Parquet file: magic, footer length, magic.
    if len < 12 {
        return Ok(false);
    }
    let mut magic = [0u8; 4];
    file.seek(SeekFrom::End(-4))
        .and_then(|_| file.read_exact(&mut magic))
        .map_err(|e| files::io_error(path, "read", e))?;
    Ok(&magic == b"PAR1")
}

/// The Arrow schema of a Parquet file, without the metadata the writer attached.
pub fn schema(path: &str) -> Result<SchemaRef> {
    schema_of(SharedFile::open(path)?, path)
}

/// The Arrow schema of the Parquet file `input` (called `name` in errors).
pub fn schema_of(input: Input, name: &str) -> Result<SchemaRef> {
    Ok(plain(builder(input, name)?.schema()))
}

fn plain(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            f.as_ref()
                .clone()
                .with_metadata(std::collections::HashMap::<String, String>::new())
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// The codecs this build decodes, as `Compression` names them.
const SUPPORTED_CODECS: &str = "UNCOMPRESSED, SNAPPY, GZIP, BROTLI, LZ4, LZ4_RAW, ZSTD";

/// Refuse a file that uses a codec this build cannot decode, naming it.
fn check_codecs(path: &str, metadata: &ParquetMetaData) -> Result<()> {
    for group in metadata.row_groups() {
        for column in group.columns() {
            codec_supported(path, &column.column_path().string(), column.compression())?;
        }
    }
    Ok(())
}

fn codec_supported(path: &str, column: &str, codec: Compression) -> Result<()> {
    match codec {
        Compression::UNCOMPRESSED
        | Compression::SNAPPY
        | Compression::GZIP(_)
        | Compression::BROTLI(_)
        | Compression::LZ4
        | Compression::LZ4_RAW
        | Compression::ZSTD(_) => Ok(()),
        Compression::LZO => {
            let name = codec.to_string();
            let name = name.split('(').next().unwrap_or(&name);
            Err(Error::data(format!(
                "`{path}`: column `{column}` is compressed with {name}, which the file source \
                 cannot decode (supported: {SUPPORTED_CODECS}); rewrite the file with another \
                 codec"
            )))
        }
    }
}

/// Reads one Parquet file into batches of the stream's schema.
pub struct ParquetReader {
    path: String,
    schema: SchemaRef,
    /// Set up to start at the saved position; built into `reader` on the first `next`,
    /// once the batch size is known.
    pending_builder: Option<ParquetRecordBatchReaderBuilder<Input>>,
    reader: Option<ParquetRecordBatchReader>,
    /// Rows decoded but not yet returned, when a batch was larger than asked for.
    held: Option<RecordBatch>,
    group_rows: Vec<usize>,
    at: ParquetPosition,
}

impl ParquetReader {
    /// Open `path` for the stream of `schema`, resuming after `position` when given.
    pub fn open(path: &str, schema: SchemaRef, position: Option<&[u8]>) -> Result<Self> {
        Self::open_input(SharedFile::open(path)?, path, Some(schema), position)
    }

    /// Open the Parquet file `input` (called `path` in errors and positions) for the stream
    /// of `schema`, resuming after `position` when given.
    /// Without `schema`, the stream's schema is the file's own.
    pub fn open_input(
        input: Input,
        path: &str,
        schema: Option<SchemaRef>,
        position: Option<&[u8]>,
    ) -> Result<Self> {
        crate::use_host_zstd();
        let builder = builder(input.clone(), path)?;
        check_codecs(path, builder.metadata())?;
        let file_schema = plain(builder.schema());
        let schema = schema.unwrap_or_else(|| file_schema.clone());
        if file_schema.fields() != schema.fields() {
            return Err(Error::data(format!(
                "`{path}` has the schema {} but the stream's schema, from the first file, is \
                 {}; every file of the stream needs the same columns and types",
                ingest_sdk::describe_schema(&file_schema),
                ingest_sdk::describe_schema(&schema)
            )));
        }
        let group_rows: Vec<usize> = builder
            .metadata()
            .row_groups()
            .iter()
            .map(|g| usize::try_from(g.num_rows()).unwrap_or(0))
            .collect();
        let mut at = match position {
            Some(bytes) => position::decode::<ParquetPosition>(bytes, path)?,
            None => ParquetPosition {
                row_group: 0,
                row: 0,
                rows: 0,
            },
        };
        let fits = match group_rows.get(at.row_group) {
            Some(&rows) => at.row <= rows,
            None => at.row_group == group_rows.len() && at.row == 0,
        };
        if !fits {
            return Err(Error::data(format!(
                "`{path}` has {} row groups of {:?} rows but the saved position is row {} of \
                 row group {}: the file was replaced since; reset the stream's state to read \
                 it again from the start",
                group_rows.len(),
                group_rows,
                at.row,
                at.row_group
            )));
        }
        normalize(&mut at, &group_rows);
        input.plan(
            builder.metadata().row_groups()[at.row_group.min(group_rows.len())..]
                .iter()
                .map(|g| {
                    let ranges = g.columns().iter().map(|c| {
                        let (start, length) = c.byte_range();
                        start..start + length
                    });
                    ranges
                        .reduce(|a, b| a.start.min(b.start)..a.end.max(b.end))
                        .unwrap_or(0..0)
                })
                .collect(),
        );
        let builder = builder
            .with_row_groups((at.row_group..group_rows.len()).collect())
            .with_offset(at.row);
        Ok(ParquetReader {
            path: path.to_string(),
            schema,
            pending_builder: Some(builder),
            reader: None,
            held: None,
            group_rows,
            at,
        })
    }

    /// The stream's schema, which the batches have.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The share of the file's rows read so far, from 0 to 1.
    pub fn read_share(&self) -> f64 {
        let total: usize = self.group_rows.iter().sum();
        if total == 0 {
            return 1.0;
        }
        let before: usize = self.group_rows.iter().take(self.at.row_group).sum();
        (before + self.at.row) as f64 / total as f64
    }

    /// Up to `max_rows` rows with the position after them; `None` at the end.
    pub fn next_chunk(&mut self, max_rows: usize) -> Result<Option<Chunk>> {
        if let Some(builder) = self.pending_builder.take() {
            let reader = builder
                .with_batch_size(max_rows)
                .build()
                .map_err(|e| Error::data(format!("`{}`: {e}", self.path)))?;
            self.reader = Some(reader);
        }
        let batch = match self.held.take() {
            Some(batch) => batch,
            None => match self.reader.as_mut().and_then(Iterator::next) {
                Some(Ok(batch)) => batch,
                Some(Err(e)) => return Err(Error::data(format!("`{}`: {e}", self.path))),
                None => return Ok(None),
            },
        };
        let batch = if batch.num_rows() > max_rows {
            self.held = Some(batch.slice(max_rows, batch.num_rows() - max_rows));
            batch.slice(0, max_rows)
        } else {
            batch
        };
        let rows = batch.num_rows();
        self.at.row += rows;
        self.at.rows += rows as u64;
        normalize(&mut self.at, &self.group_rows);
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        let batch = RecordBatch::try_new_with_options(
            self.schema.clone(),
            batch.columns().to_vec(),
            &options,
        )
        .map_err(|e| Error::data(format!("`{}`: {e}", self.path)))?;
        Ok(Some(Chunk {
            batch,
            position: position::encode(&self.at),
            rejects: Vec::new(),
        }))
    }
}

/// Move a position that points past the end of its row group to the next group's start.
fn normalize(at: &mut ParquetPosition, group_rows: &[usize]) {
    while let Some(&rows) = group_rows.get(at.row_group) {
        if at.row < rows {
            break;
        }
        at.row -= rows;
        at.row_group += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use arrow_array::{Array, Int64Array, StringArray};
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    /// A Parquet file of `rows` rows (`id` 0.., `name`) in row groups of `group` rows.
    fn write_file(
        dir: &TempDir,
        name: &str,
        rows: i64,
        group: usize,
        codec: Compression,
    ) -> String {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", arrow_schema::DataType::Int64, false),
            Field::new("name", arrow_schema::DataType::Utf8, true),
        ]));
        let ids = Int64Array::from_iter_values(0..rows);
        let names = StringArray::from_iter((0..rows).map(|i| Some(format!("n{i}"))));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(names)]).unwrap();
        let path = dir.file(name);
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(group))
            .set_compression(codec)
            .build();
        let mut writer =
            ArrowWriter::try_new(File::create(&path).unwrap(), schema, Some(props)).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        path
    }

    fn ids(chunk: &Chunk) -> Vec<i64> {
        let col = chunk.batch.column(0);
        let col = col.as_any().downcast_ref::<Int64Array>().unwrap();
        (0..col.len()).map(|i| col.value(i)).collect()
    }

    #[test]
    fn reading_resumes_exactly_across_row_groups() {
        let dir = TempDir::new("pq-resume");
        let path = write_file(&dir, "t.parquet", 25, 10, Compression::SNAPPY);
        let schema = schema(&path).unwrap();
        let mut reader = ParquetReader::open(&path, schema.clone(), None).unwrap();
        let first = reader.next_chunk(7).unwrap().unwrap();
        let second = reader.next_chunk(7).unwrap().unwrap();
        assert_eq!(ids(&first), (0..7).collect::<Vec<_>>());
        assert_eq!(ids(&second), (7..14).collect::<Vec<_>>());
        let at: ParquetPosition = position::decode(&second.position, &path).unwrap();
        assert_eq!(
            at,
            ParquetPosition {
                row_group: 1,
                row: 4,
                rows: 14
            }
        );
        let mut resumed = ParquetReader::open(&path, schema, Some(&second.position)).unwrap();
        let mut rest = Vec::new();
        while let Some(chunk) = resumed.next_chunk(100).unwrap() {
            rest.extend(ids(&chunk));
        }
        assert_eq!(rest, (14..25).collect::<Vec<_>>());
    }

    /// A file in memory that records the ranges read and the row groups planned.
    struct Recorded {
        bytes: Bytes,
        reads: Mutex<Vec<(u64, usize)>>,
        planned: Mutex<Vec<Range<u64>>>,
    }

    impl Ranges for Recorded {
        fn size(&self) -> u64 {
            self.bytes.len() as u64
        }

        fn bytes(&self, start: u64, length: usize) -> io::Result<Bytes> {
            self.reads.lock().unwrap().push((start, length));
            Ok(self.bytes.slice(start as usize..start as usize + length))
        }

        fn plan(&self, row_groups: Vec<Range<u64>>) {
            *self.planned.lock().unwrap() = row_groups;
        }
    }

    #[test]
    fn an_input_read_by_ranges_is_told_the_row_groups_left_and_read_within_them() {
        let dir = TempDir::new("pq-ranges");
        let path = write_file(
            &dir,
            "t.parquet",
            25,
            10,
            Compression::ZSTD(Default::default()),
        );
        let recorded = Arc::new(Recorded {
            bytes: std::fs::read(&path).unwrap().into(),
            reads: Mutex::default(),
            planned: Mutex::default(),
        });
        let input = Input::new(recorded.clone());
        let schema = schema_of(input.clone(), "remote").unwrap();
        // Resuming in the second of three row groups: the first is not planned.
        let at = position::encode(&ParquetPosition {
            row_group: 1,
            row: 4,
            rows: 14,
        });
        let mut reader =
            ParquetReader::open_input(input, "remote", Some(schema), Some(&at)).unwrap();
        let planned = recorded.planned.lock().unwrap().clone();
        assert_eq!(planned.len(), 2);
        assert!(planned[0].end <= planned[1].start);
        recorded.reads.lock().unwrap().clear();
        let mut rest = Vec::new();
        while let Some(chunk) = reader.next_chunk(100).unwrap() {
            rest.extend(ids(&chunk));
        }
        assert_eq!(rest, (14..25).collect::<Vec<_>>());
        // Every read lies within a planned row group.
        for &(start, length) in recorded.reads.lock().unwrap().iter() {
            let end = start + length as u64;
            assert!(
                planned.iter().any(|g| g.start <= start && end <= g.end),
                "{start}..{end} outside {planned:?}"
            );
        }
    }

    #[test]
    fn an_lzo_column_is_refused_naming_the_file_codec_and_the_supported_ones() {
        match codec_supported("t.parquet", "amount", Compression::LZO) {
            Err(Error::Data(m)) => {
                assert!(m.starts_with("`t.parquet`: column `amount`"), "{m}");
                assert!(m.contains("compressed with LZO,"), "{m}");
                assert!(m.contains(SUPPORTED_CODECS), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn zstd_is_accepted_at_any_level() {
        for level in [1, 3, 19, 22] {
            let level = parquet::basic::ZstdLevel::try_new(level).unwrap();
            assert!(codec_supported("t.parquet", "c", Compression::ZSTD(level)).is_ok());
        }
    }

    /// `region(i)` of tests/fixtures/make_zstd_parquet.py.
    fn fixture_region(i: u32) -> &'static str {
        let mut h = i;
        h ^= h >> 16;
        h = h.wrapping_mul(0x85EB_CA6B);
        h ^= h >> 13;
        h = h.wrapping_mul(0xC2B2_AE35);
        h ^= h >> 16;
        ["northern", "southern", "eastern", "western"][(h & 3) as usize]
    }

    /// A file written by pyarrow, so by the C zstd library, at levels 1, 3 and 19; see
    /// tests/fixtures/make_zstd_parquet.py for what it holds.
    #[test]
    fn zstd_parquet_from_a_real_writer_reads_row_for_row() {
        use arrow_array::{BooleanArray, Float64Array};
        use arrow_schema::DataType;

        let path = format!("{}/tests/fixtures/zstd.parquet", env!("CARGO_MANIFEST_DIR"));
        let metadata = builder(SharedFile::open(&path).unwrap(), &path)
            .unwrap()
            .metadata()
            .clone();
        assert_eq!(metadata.num_row_groups(), 2);
        for group in metadata.row_groups() {
            for column in group.columns() {
                assert!(
                    matches!(column.compression(), Compression::ZSTD(_)),
                    "{}: {}",
                    column.column_path().string(),
                    column.compression()
                );
            }
        }
        // The first group's `region` page is over 128 KiB, so its frame has several blocks.
        assert!(metadata.row_group(0).column(1).uncompressed_size() > 128 * 1024);

        let schema = schema(&path).unwrap();
        let types: Vec<(&str, DataType, bool)> = schema
            .fields()
            .iter()
            .map(|f| (f.name().as_str(), f.data_type().clone(), f.is_nullable()))
            .collect();
        assert_eq!(
            types,
            vec![
                ("id", DataType::Int64, false),
                ("region", DataType::Utf8, false),
                ("amount", DataType::Float64, true),
                ("name", DataType::Utf8, true),
                ("flag", DataType::Boolean, false),
            ]
        );

        let mut reader = ParquetReader::open(&path, schema, None).unwrap();
        let mut row = 0u32;
        while let Some(chunk) = reader.next_chunk(4096).unwrap() {
            let batch = &chunk.batch;
            let col = |i: usize| batch.column(i).as_any();
            let id = col(0).downcast_ref::<Int64Array>().unwrap();
            let region = col(1).downcast_ref::<StringArray>().unwrap();
            let amount = col(2).downcast_ref::<Float64Array>().unwrap();
            let name = col(3).downcast_ref::<StringArray>().unwrap();
            let flag = col(4).downcast_ref::<BooleanArray>().unwrap();
            for r in 0..batch.num_rows() {
                let i = row;
                assert_eq!(id.value(r), i64::from(i));
                assert_eq!(region.value(r), fixture_region(i), "row {i}");
                if i % 7 == 3 {
                    assert!(amount.is_null(r), "row {i}");
                } else {
                    assert_eq!(amount.value(r), f64::from(i % 100) * 0.5, "row {i}");
                }
                if i % 11 == 5 {
                    assert!(name.is_null(r), "row {i}");
                } else {
                    assert_eq!(name.value(r), format!("name-{}", i % 50), "row {i}");
                }
                assert_eq!(flag.value(r), i.is_multiple_of(3), "row {i}");
                row += 1;
            }
        }
        assert_eq!(row, 20_000);

        // Resuming inside the second row group reads on from the right row.
        let schema = super::schema(&path).unwrap();
        let position = position::encode(&ParquetPosition {
            row_group: 1,
            row: 4_990,
            rows: 19_990,
        });
        let mut resumed = ParquetReader::open(&path, schema, Some(&position)).unwrap();
        let chunk = resumed.next_chunk(100).unwrap().unwrap();
        assert_eq!(ids(&chunk), (19_990..20_000).collect::<Vec<_>>());
        assert!(resumed.next_chunk(100).unwrap().is_none());
    }

    #[test]
    fn every_compiled_in_codec_reads_back() {
        let dir = TempDir::new("pq-codecs");
        for (name, codec) in [
            ("none", Compression::UNCOMPRESSED),
            ("snappy", Compression::SNAPPY),
            ("gzip", Compression::GZIP(Default::default())),
            ("brotli", Compression::BROTLI(Default::default())),
            ("lz4", Compression::LZ4),
            ("lz4raw", Compression::LZ4_RAW),
            // Written by the zstd shim's own (basic) encoder here.
            ("zstd", Compression::ZSTD(Default::default())),
        ] {
            let path = write_file(&dir, &format!("{name}.parquet"), 5, 10, codec);
            let mut reader = ParquetReader::open(&path, schema(&path).unwrap(), None).unwrap();
            let chunk = reader.next_chunk(100).unwrap().unwrap();
            assert_eq!(ids(&chunk), vec![0, 1, 2, 3, 4], "{name}");
            assert!(reader.next_chunk(100).unwrap().is_none());
        }
    }
}

//! The epoch protocol of one stream: stage, prepare, commit, abort (see `sink.writer` in
//! wit/plugin.wit).
//!
//! - `write` appends rows to one staged file per partition under
//!   `.staging/<stream>/current/`, created on the first row of the epoch (a `current` left by
//!   a dead instance is discarded then: nothing in it was ever prepared). A partition's rows
//!   wait in memory until there are enough of them to write in one piece; when the rows
//!   waiting across partitions pass a memory bound, every partition's are written out. At
//!   most [`MAX_OPEN_FILES`] files are open at once: a partition that finds them all taken
//!   appends its rows to the epoch's spill file in `current` instead, in arrival order, and
//!   is written into its one file at `prepare`. A file is rolled (finished, and the
//!   partition's later rows start the next) once it has reached `target_file_size`, so an
//!   epoch writes one file per partition below that size, however its rows interleave.
//! - `prepare(E)` writes what waits or was spilled, finishes and fsyncs every file, removes
//!   the spill file, writes `_manifest.json` (staged path →
//!   published path, rows, bytes) into `current`, fsyncs it, and renames `current` to
//!   `epoch-E` in one atomic step. The token it returns is that manifest: it names the output
//!   root, so `commit` needs nothing from the writer that prepared it.
//! - `commit(E, token)` checks every entry first (staged and not yet published, or already
//!   published), then renames each staged file to its published name, fsyncs the directories
//!   and removes `epoch-E`. A file already published is skipped, so a repeat, from this
//!   writer or a fresh one, changes nothing.
//! - `abort(E)` drops the open files and removes `current` and `epoch-E`.
//!
//! One writer per stream and output directory at a time: `current` is per stream, not per
//! instance. Under scale-out (`host.writer-tag` set) several writers share a stream: each
//! stages its open epoch in `current-<tag>`, and epoch numbers are unique across them, so
//! `epoch-E` and the published names stay apart too.
//!
//! Fencing under scale-out: a writer tag `<holder>-<claim>` names one claim of one split
//! (the holder) by a number that grows with every claim. On open the writer records its
//! claim in `.fences/<stream>/<holder>/`; `commit` refuses to publish when a later
//! claim of the same split is recorded there: this writer's split was taken over (its
//! lease ran out) and the new holder publishes from now on. The host refuses such a
//! writer's state writes first; this check is the sink's own, for a writer that resumes
//! between the host's write and its commit. A commit that checked the fence just before a
//! later claim was recorded can still publish: it publishes an epoch the host recorded,
//! which the new holder would publish too, under the same names.

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use arrow_array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow_schema::{Field, Schema, SchemaRef};
use arrow_select::concat::concat_batches;
use arrow_select::take::take_record_batch;
use ingest_sdk::host::{ParquetEncoder, ParquetOptions};
use ingest_sdk::{ipc, Error, Result};
use serde::{Deserialize, Serialize};

use crate::config::{Format, SinkConfig};
use crate::layout::{text_safe, text_safe_type, Partitioner, StreamLayout, MANIFEST};

/// Version of the manifest (and token) format.
const MANIFEST_VERSION: u32 = 1;

/// Most files open at once per writer while an epoch is read (each Parquet file has an
/// encoder thread and a row group in memory in the host). A partition that finds them all
/// taken spills its rows until `prepare`.
pub const MAX_OPEN_FILES: usize = 32;

/// Rows of one partition gathered in memory before they are written to its file (or spill)
/// in one piece: fewer, larger writes than one per batch and partition.
const FLUSH_ROWS: usize = 16_384;

/// Memory held by rows waiting across every partition at most (the Arrow buffers of the
/// batches they are slices of); past it, every partition's waiting rows are written out.
const PENDING_BYTES: usize = 64 << 20;

/// The epoch's spill file, in `current`.
const SPILL_FILE: &str = "spill.arrows";

/// Spilled rows read back and written to a file in one piece (a row group's worth by
/// default).
const UNSPILL_ROWS: usize = 131_072;

/// Files encoded at once at `prepare`, from rows that waited or were spilled (the host
/// encodes each file on its own thread).
const FINISHING_AT_ONCE: usize = 4;

/// The bounds a writer keeps; the tests shrink them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub open_files: usize,
    pub flush_rows: usize,
    pub pending_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            open_files: MAX_OPEN_FILES,
            flush_rows: FLUSH_ROWS,
            pending_bytes: PENDING_BYTES,
        }
    }
}

/// What `prepare(E)` staged and `commit(E)` publishes; also the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub version: u32,
    /// The stream's name, as given to `open`.
    pub stream: String,
    pub epoch: u64,
    /// The output directory (`path` in the config) the paths below are relative to.
    pub root: String,
    /// The epoch's staging directory, removed once everything is published.
    pub staging: String,
    pub files: Vec<ManifestEntry>,
}

/// One staged file and where it is published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestEntry {
    pub staged: String,
    pub published: String,
    pub rows: u64,
    pub bytes: u64,
}

/// Writes one stream into `<path>`.
pub struct FileWriter {
    root: PathBuf,
    stream: String,
    format: Format,
    parquet: ParquetOptions,
    schema: SchemaRef,
    /// For JSON Lines and CSV, when the schema has timestamps in named time zones: the
    /// schema they are written in (see [`text_safe_type`]).
    text_schema: Option<SchemaRef>,
    layout: StreamLayout,
    partitioner: Option<Partitioner>,
    /// A file is rolled once this many bytes were written to it.
    target_file_size: u64,
    limits: Limits,
    open: OpenEpoch,
    /// Under scale-out: the split this writer's claim holds, and the claim's number.
    fence: Option<Fence>,
}

/// One claim of one split, from the writer tag `<holder>-<claim>`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fence {
    holder: String,
    claim: u64,
}

impl Fence {
    /// The fence a writer tag names; a tag without a trailing claim number names none.
    fn of_tag(tag: &str) -> Option<Fence> {
        let (holder, claim) = tag.rsplit_once('-')?;
        let claim = claim.parse().ok()?;
        (!holder.is_empty()).then(|| Fence {
            holder: holder.to_string(),
            claim,
        })
    }
}

/// The files of the epoch being written.
#[derive(Default)]
struct OpenEpoch {
    /// `current` was cleared and created for this epoch.
    started: bool,
    /// Every file of the epoch, finished or open, in the order they were started.
    files: Vec<StagedFile>,
    /// Partition directory (None: unpartitioned) → where its rows are.
    parts: HashMap<Option<String>, Part>,
    /// Bytes of the batches that rows waiting in any partition are slices of.
    waiting: Rc<Cell<usize>>,
    /// Files in `files` still open.
    open_files: usize,
    /// The spill file once a partition has spilled, and its length.
    spill: Option<(File, u64)>,
    /// Why a file of this epoch may hold a partial batch: the epoch can only be aborted.
    failed: Option<String>,
}

/// Where one partition's rows of the open epoch are: written to its open file, spilled, or
/// waiting in memory, in that order.
#[derive(Default)]
struct Part {
    /// Index into `OpenEpoch::files` of the partition's open file.
    file: Option<usize>,
    /// Rows spilled because every file was taken when they were written out, as pieces of
    /// the spill file in order; the partition's later rows follow them there.
    spilled: Vec<Piece>,
    /// Rows not yet written, in arrival order.
    pending: Vec<Waiting>,
    pending_rows: usize,
}

/// Rows of one partition in the spill file: a one-batch IPC stream at `offset`.
struct Piece {
    offset: u64,
    len: u64,
    rows: usize,
}

/// Rows waiting, with a share in the batch they are a slice of.
struct Waiting {
    rows: RecordBatch,
    _held: Rc<Held>,
}

/// A batch that waiting rows are slices of: its bytes count against
/// [`Limits::pending_bytes`] until its last slice is written out.
struct Held {
    bytes: usize,
    total: Rc<Cell<usize>>,
}

impl Held {
    fn new(batch: &RecordBatch, total: &Rc<Cell<usize>>) -> Rc<Held> {
        let bytes = batch_bytes(batch);
        total.set(total.get() + bytes);
        Rc::new(Held {
            bytes,
            total: total.clone(),
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.total.set(self.total.get() - self.bytes);
    }
}

struct StagedFile {
    seq: u32,
    partition: Option<String>,
    /// File name inside `current` (and later `epoch-E`).
    name: String,
    rows: u64,
    /// `None` once the file is finished and synced.
    encoder: Option<Encoder>,
    /// Size once finished.
    bytes: u64,
}

impl StagedFile {
    /// Finish the file (the Parquet footer, the JSON end) and fsync it; a finished file is
    /// left as it is.
    fn finish(&mut self) -> Result<(), String> {
        let Some(encoder) = self.encoder.take() else {
            return Ok(());
        };
        let file = encoder.finish()?;
        file.sync_all().map_err(|e| format!("fsync: {e}"))?;
        self.bytes = file
            .metadata()
            .map_err(|e| format!("reading its size: {e}"))?
            .len();
        Ok(())
    }
}

/// A file that counts the bytes written to it, in a counter its encoder keeps too (the CSV
/// writer does not lend its file back until it is done).
struct Counted {
    file: File,
    written: Rc<Cell<u64>>,
}

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written.set(self.written.get() + n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Rows to append to a file.
#[derive(Clone, Copy)]
enum Rows<'a> {
    Batch(&'a RecordBatch),
    /// A one-batch IPC stream of the stream's schema and its row count, for Parquet: the
    /// host's encoder takes the bytes as they came, with no decode and encode in between.
    Ipc(&'a [u8], usize),
}

impl Rows<'_> {
    fn len(&self) -> usize {
        match self {
            Rows::Batch(batch) => batch.num_rows(),
            Rows::Ipc(_, rows) => *rows,
        }
    }
}

/// An open output file and what turns batches into its bytes.
struct Encoder {
    format: Formatter,
    /// Bytes written to the file so far.
    written: Rc<Cell<u64>>,
}

/// What turns batches into a file's bytes.
enum Formatter {
    /// The host encodes; the writer appends what it returns.
    Parquet {
        encoder: ParquetEncoder,
        file: Counted,
    },
    Jsonl(arrow_json::LineDelimitedWriter<Counted>),
    /// Boxed: the CSV writer carries its formatting options inline.
    Csv(Box<arrow_csv::Writer<Counted>>),
}

impl Encoder {
    fn open(
        format: Format,
        file: File,
        schema: &SchemaRef,
        options: &ParquetOptions,
    ) -> Result<Self> {
        let written = Rc::new(Cell::new(0));
        let file = Counted {
            file,
            written: written.clone(),
        };
        let format = match format {
            Format::Parquet => Formatter::Parquet {
                encoder: ParquetEncoder::open(schema, options)?,
                file,
            },
            Format::Jsonl => Formatter::Jsonl(
                arrow_json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, arrow_json::writer::LineDelimited>(file),
            ),
            Format::Csv => Formatter::Csv(Box::new(
                arrow_csv::WriterBuilder::new()
                    .with_header(true)
                    .build(file),
            )),
        };
        Ok(Encoder { format, written })
    }

    /// Append one batch; the error is the encoder's or the file's, without context.
    fn write(&mut self, rows: Rows) -> Result<(), String> {
        match (&mut self.format, rows) {
            (Formatter::Parquet { encoder, file }, rows) => {
                let bytes = match rows {
                    Rows::Batch(batch) => encoder.write(batch),
                    Rows::Ipc(ipc, _) => encoder.write_ipc(ipc),
                }
                .map_err(|e| e.to_string())?;
                file.write_all(&bytes).map_err(|e| e.to_string())
            }
            (Formatter::Jsonl(w), Rows::Batch(batch)) => w.write(batch).map_err(|e| e.to_string()),
            (Formatter::Csv(w), Rows::Batch(batch)) => w.write(batch).map_err(|e| e.to_string()),
            (_, Rows::Ipc(..)) => Err("a text format needs decoded batches".to_string()),
        }
    }

    /// Bytes written to the file so far.
    fn written(&self) -> u64 {
        self.written.get()
    }

    /// Write whatever is left (the Parquet footer, the JSON stream end) and hand back the
    /// file, complete but not yet synced.
    fn finish(self) -> Result<File, String> {
        match self.format {
            Formatter::Parquet { encoder, mut file } => {
                let bytes = encoder.finish().map_err(|e| e.to_string())?;
                file.write_all(&bytes).map_err(|e| e.to_string())?;
                Ok(file.file)
            }
            Formatter::Jsonl(mut w) => {
                w.finish().map_err(|e| e.to_string())?;
                Ok(w.into_inner().file)
            }
            // The CSV writer flushes after every batch.
            Formatter::Csv(w) => Ok(w.into_inner().file),
        }
    }
}

impl FileWriter {
    /// A writer for `stream` of `schema`. Touches no file: the first row of an epoch does.
    pub fn new(config: SinkConfig, stream: &str, schema: SchemaRef) -> Result<Self> {
        if stream.is_empty() {
            return Err(Error::config(
                "file sink: the stream has an empty name; it would have no directory",
            ));
        }
        let partitioner = match &config.partitioning {
            Some(spec) => Some(Partitioner::new(spec, &schema, stream)?),
            None => None,
        };
        let text_schema = match config.format {
            Format::Parquet => None,
            Format::Jsonl | Format::Csv => {
                let fields: Vec<Field> = schema
                    .fields()
                    .iter()
                    .map(|f| {
                        f.as_ref()
                            .clone()
                            .with_data_type(text_safe_type(f.data_type()))
                    })
                    .collect();
                let text = Schema::new_with_metadata(fields, schema.metadata().clone());
                (text != *schema).then(|| SchemaRef::new(text))
            }
        };
        Ok(FileWriter {
            text_schema,
            root: config.root,
            stream: stream.to_string(),
            format: config.format,
            parquet: config.parquet,
            layout: StreamLayout::new(stream),
            schema,
            partitioner,
            target_file_size: config.target_file_size,
            limits: Limits::default(),
            open: OpenEpoch::default(),
            fence: None,
        })
    }

    /// The same writer with other bounds (for tests).
    #[cfg(test)]
    pub(crate) fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Stage the open epoch under `tag` (`host.writer-tag`), when several writers share
    /// the stream, and fence by the claim it names (see [`FileWriter::claim_fence`]).
    pub fn with_writer_tag(mut self, tag: Option<&str>) -> Self {
        self.layout = self.layout.with_writer_tag(tag);
        self.fence = tag.and_then(Fence::of_tag);
        self
    }

    /// Record this writer's claim in the split's fences, so that writers of earlier
    /// claims can no longer commit. Nothing to do without a writer tag.
    pub fn claim_fence(&self) -> Result<()> {
        let Some(fence) = &self.fence else {
            return Ok(());
        };
        let dir = self.root.join(self.layout.fences(&fence.holder));
        fs::create_dir_all(&dir).map_err(|e| self.io("create", &dir, e))?;
        let mark = dir.join(format!("{:020}", fence.claim));
        File::create(&mark).map_err(|e| self.io("create", &mark, e))?;
        sync_dir(&dir).map_err(|e| self.io("fsync", &dir, e))
    }

    /// Refuse to publish `epoch` when a later claim of this writer's split is recorded.
    fn check_fence(&self, epoch: u64) -> Result<()> {
        let Some(fence) = &self.fence else {
            return Ok(());
        };
        let dir = self.root.join(self.layout.fences(&fence.holder));
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io("list", &dir, e)),
        };
        let latest = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()))
            .max()
            .unwrap_or(0);
        if latest > fence.claim {
            return Err(Error::fatal(format!(
                "file sink, stream `{}`, epoch {epoch}: fenced: this writer holds claim {} of \
                 its split, and claim {latest} was taken since (`{}`): the split's new holder \
                 publishes it; this writer publishes nothing",
                self.stream,
                fence.claim,
                dir.display()
            )));
        }
        Ok(())
    }

    /// Stage one batch in the open epoch.
    pub fn write(&mut self, batch: RecordBatch) -> Result<()> {
        self.refuse_if_failed()?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let batch = self.conform(batch)?;
        let batch = self.for_text(batch)?;
        self.start_epoch()?;
        // Past this point a failure may leave part of the batch in the files.
        let staged = self.stage(&batch);
        if let Err(e) = &staged {
            self.open.failed.get_or_insert_with(|| e.to_string());
        }
        staged
    }

    /// Stage one batch given as the IPC stream the host sent. Unpartitioned Parquet of the
    /// stream's schema needs no per-row work here: the bytes go to the host's encoder as
    /// they are. Everything else is decoded and takes [`FileWriter::write`].
    pub fn write_ipc(&mut self, ipc: Vec<u8>) -> Result<()> {
        let direct = self.format == Format::Parquet && self.partitioner.is_none();
        let peeked = direct.then(|| ipc::peek(&ipc)).flatten();
        let Some((_, rows)) = peeked.filter(|(schema, _)| *schema == self.schema) else {
            return self.write(ipc::decode_batch(&ipc)?);
        };
        self.refuse_if_failed()?;
        if rows == 0 {
            return Ok(());
        }
        self.start_epoch()?;
        let staged = self
            .flush_part(&None)
            .and_then(|()| self.write_rows(&None, Rows::Ipc(&ipc, rows)));
        if let Err(e) = &staged {
            self.open.failed.get_or_insert_with(|| e.to_string());
        }
        staged
    }

    /// Add the rows of `batch` to their partitions, then keep the rows waiting within
    /// their memory bound.
    fn stage(&mut self, batch: &RecordBatch) -> Result<()> {
        let groups = match &self.partitioner {
            None => vec![],
            Some(p) => p.split(batch)?,
        };
        if groups.len() <= 1 {
            let key = groups.into_iter().next().map(|g| g.dir);
            self.add(key, batch.clone(), None)?;
        } else {
            // One take puts the rows in partition order; each partition gets a slice.
            let order: Vec<u32> = groups.iter().flat_map(|g| g.rows.iter().copied()).collect();
            let sorted = take_record_batch(batch, &UInt32Array::from(order)).map_err(|e| {
                Error::fatal(format!(
                    "file sink, stream `{}`: ordering a batch by partition: {e}",
                    self.stream
                ))
            })?;
            let held = Held::new(&sorted, &self.open.waiting);
            let mut start = 0;
            for group in groups {
                let len = group.rows.len();
                self.add(
                    Some(group.dir),
                    sorted.slice(start, len),
                    Some(held.clone()),
                )?;
                start += len;
            }
        }
        self.bound_pending()
    }

    /// Queue `rows` (a slice of `held`, or a batch of its own when `None`) for `key`'s
    /// partition, writing them out once it has [`Limits::flush_rows`]; a large batch with
    /// nothing waiting before it is written at once.
    fn add(
        &mut self,
        key: Option<String>,
        rows: RecordBatch,
        held: Option<Rc<Held>>,
    ) -> Result<()> {
        let flush_rows = self.limits.flush_rows;
        let waiting = &self.open.waiting;
        let part = self.open.parts.entry(key.clone()).or_default();
        if part.pending.is_empty() && rows.num_rows() >= flush_rows {
            return self.write_rows(&key, Rows::Batch(&rows));
        }
        let held = held.unwrap_or_else(|| Held::new(&rows, waiting));
        part.pending_rows += rows.num_rows();
        part.pending.push(Waiting { rows, _held: held });
        if part.pending_rows >= flush_rows {
            self.flush_part(&key)?;
        }
        Ok(())
    }

    /// Past [`Limits::pending_bytes`] held by waiting rows, write out every partition's.
    /// (Partitions share the batches their rows are slices of: a batch is freed only once
    /// every partition has written its slice.)
    fn bound_pending(&mut self) -> Result<()> {
        if self.open.waiting.get() <= self.limits.pending_bytes {
            return Ok(());
        }
        let mut keys: Vec<Option<String>> = self
            .open
            .parts
            .iter()
            .filter(|(_, part)| !part.pending.is_empty())
            .map(|(key, _)| key.clone())
            .collect();
        keys.sort_unstable();
        for key in keys {
            self.flush_part(&key)?;
        }
        Ok(())
    }

    /// Write out the rows waiting in `key`'s partition, as one batch.
    fn flush_part(&mut self, key: &Option<String>) -> Result<()> {
        let Some(part) = self.open.parts.get_mut(key) else {
            return Ok(());
        };
        if part.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut part.pending);
        part.pending_rows = 0;
        let batches: Vec<RecordBatch> = pending.iter().map(|w| w.rows.clone()).collect();
        let rows = self.gather(key, &batches, "waiting")?;
        drop((batches, pending));
        self.write_rows(key, Rows::Batch(&rows))
    }

    /// Write `rows` where `key`'s partition writes now: to its spill when it has spilled,
    /// else to its open file, opening one while fewer than [`Limits::open_files`] are
    /// open, else to a new spill. A file that reaches `target_file_size` is finished.
    fn write_rows(&mut self, key: &Option<String>, rows: Rows) -> Result<()> {
        let part = self.open.parts.entry(key.clone()).or_default();
        if !part.spilled.is_empty() {
            return self.spill(key, rows);
        }
        let at = match part.file {
            Some(at) => at,
            None if self.open.open_files < self.limits.open_files => self.open_file(key)?,
            None => return self.spill(key, rows),
        };
        let file = &mut self.open.files[at];
        let written = match &mut file.encoder {
            Some(encoder) => encoder.write(rows),
            None => Err("the file is already finished".to_string()),
        };
        if let Err(e) = written {
            let path = self.root.join(self.layout.current()).join(&file.name);
            return Err(Error::data(format!(
                "file sink, stream `{}`: writing {} rows to `{}`: {e}",
                self.stream,
                rows.len(),
                path.display()
            )));
        }
        file.rows += rows.len() as u64;
        let full = file
            .encoder
            .as_ref()
            .is_some_and(|e| e.written() >= self.target_file_size);
        if full {
            self.finish_file(key, at)?;
        }
        Ok(())
    }

    /// Start the next file of `key`'s partition; its index in `OpenEpoch::files`.
    fn open_file(&mut self, key: &Option<String>) -> Result<usize> {
        let seq = self.open.files.len() as u32;
        let name = StreamLayout::staged_name(seq, self.format.extension());
        let path = self.root.join(self.layout.current()).join(&name);
        let file = File::create_new(&path).map_err(|e| self.io("create", &path, e))?;
        let encoder =
            Encoder::open(self.format, file, &self.schema, &self.parquet).map_err(|e| {
                e.context(format!(
                    "file sink, stream `{}`, file `{}`",
                    self.stream,
                    path.display()
                ))
            })?;
        self.open.files.push(StagedFile {
            seq,
            partition: key.clone(),
            name,
            rows: 0,
            encoder: Some(encoder),
            bytes: 0,
        });
        let at = self.open.files.len() - 1;
        self.open.open_files += 1;
        self.open.parts.entry(key.clone()).or_default().file = Some(at);
        Ok(at)
    }

    /// Finish `key`'s open file `at`: its partition's later rows go to a new file.
    fn finish_file(&mut self, key: &Option<String>, at: usize) -> Result<()> {
        if let Some(part) = self.open.parts.get_mut(key) {
            part.file = None;
        }
        self.open.open_files -= 1;
        let finished = self.open.files[at].finish();
        finished.map_err(|e| self.finish_error(&self.open.files[at], e))
    }

    /// Append `rows` to the epoch's spill file (started on first use) as a piece of
    /// `key`'s partition.
    fn spill(&mut self, key: &Option<String>, rows: Rows) -> Result<()> {
        let encoded;
        let ipc = match rows {
            Rows::Ipc(ipc, _) => ipc,
            Rows::Batch(batch) => {
                encoded = ipc::encode_batch(batch)?;
                &encoded
            }
        };
        let path = self.root.join(self.layout.current()).join(SPILL_FILE);
        if self.open.spill.is_none() {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| self.io("create", &path, e))?;
            self.open.spill = Some((file, 0));
        }
        let (file, len) = self.open.spill.as_mut().expect("just opened");
        let offset = *len;
        let appended = file.write_all(ipc);
        *len += ipc.len() as u64;
        appended.map_err(|e| self.io("append to", &path, e))?;
        let piece = Piece {
            offset,
            len: ipc.len() as u64,
            rows: rows.len(),
        };
        self.open
            .parts
            .entry(key.clone())
            .or_default()
            .spilled
            .push(piece);
        Ok(())
    }

    /// At `prepare`: write what every partition has spilled and what waits into files, and
    /// finish every file.
    fn finish_all(&mut self) -> Result<()> {
        // Partitions with an open file take their waiting rows first, so that their
        // encoders work while the others are read back.
        let mut keys: Vec<Option<String>> = self.open.parts.keys().cloned().collect();
        keys.sort_unstable();
        for key in &keys {
            if self.open.parts[key].file.is_some() {
                self.flush_part(key)?;
            }
        }
        let open: Vec<(Option<String>, usize)> = keys
            .iter()
            .filter_map(|key| self.open.parts[key].file.map(|at| (key.clone(), at)))
            .collect();
        for (key, at) in open {
            self.finish_file(&key, at)?;
        }
        // The others, a few files at a time.
        let mut finishing: VecDeque<(Option<String>, usize)> = VecDeque::new();
        for key in &keys {
            let part = &self.open.parts[key];
            if part.spilled.is_empty() && part.pending.is_empty() {
                continue;
            }
            self.open_file(key)?;
            let spilled = std::mem::take(&mut self.open.parts.get_mut(key).expect("a key").spilled);
            self.unspill(key, &spilled)?;
            self.flush_part(key)?;
            if let Some(at) = self.open.parts[key].file {
                finishing.push_back((key.clone(), at));
            }
            while finishing.len() >= FINISHING_AT_ONCE {
                let (key, at) = finishing.pop_front().expect("not empty");
                self.finish_file(&key, at)?;
            }
        }
        for (key, at) in finishing {
            self.finish_file(&key, at)?;
        }
        if self.open.spill.take().is_some() {
            let path = self.root.join(self.layout.current()).join(SPILL_FILE);
            fs::remove_file(&path).map_err(|e| self.io("remove", &path, e))?;
        }
        Ok(())
    }

    /// `batches` of `key`'s partition (its `what` rows, for the message) as one batch.
    fn gather(
        &self,
        key: &Option<String>,
        batches: &[RecordBatch],
        what: &str,
    ) -> Result<RecordBatch> {
        let gathered = match batches {
            [] => Err("no rows".to_string()),
            [one] => Ok(one.clone()),
            _ => concat_batches(batches[0].schema_ref(), batches).map_err(|e| e.to_string()),
        };
        gathered.map_err(|e| {
            Error::fatal(format!(
                "file sink, stream `{}`: gathering the {what} rows of {}: {e}",
                self.stream,
                describe_part(key)
            ))
        })
    }

    /// Write `key`'s spilled `pieces` into its open file (rolling it as it fills), a row
    /// group's worth at a time.
    fn unspill(&mut self, key: &Option<String>, pieces: &[Piece]) -> Result<()> {
        let path = self.root.join(self.layout.current()).join(SPILL_FILE);
        let (mut gathered, mut gathered_rows) = (Vec::new(), 0);
        for (i, piece) in pieces.iter().enumerate() {
            let Some((file, _)) = self.open.spill.as_mut() else {
                return Err(Error::fatal(format!(
                    "file sink, stream `{}`: {} has spilled rows but the spill file `{}` is \
                     not open",
                    self.stream,
                    describe_part(key),
                    path.display()
                )));
            };
            let mut ipc = vec![0u8; piece.len as usize];
            let read = file
                .seek(SeekFrom::Start(piece.offset))
                .and_then(|_| file.read_exact(&mut ipc));
            read.map_err(|e| self.io("read", &path, e))?;
            let batch = ipc::decode_owned(ipc)?;
            if batch.num_rows() != piece.rows {
                return Err(Error::fatal(format!(
                    "file sink, stream `{}`: the spill file `{}` holds {} rows at {} for {}, \
                     {} were written there",
                    self.stream,
                    path.display(),
                    batch.num_rows(),
                    piece.offset,
                    describe_part(key),
                    piece.rows
                )));
            }
            gathered_rows += batch.num_rows();
            gathered.push(batch);
            if gathered_rows >= UNSPILL_ROWS || i + 1 == pieces.len() {
                let rows = self.gather(key, &gathered, "spilled")?;
                gathered.clear();
                gathered_rows = 0;
                self.write_rows(key, Rows::Batch(&rows))?;
            }
        }
        Ok(())
    }

    /// Finish, fsync and move the epoch's files into `epoch-E` with their manifest. The
    /// token is the manifest, or empty when the epoch has no rows.
    pub fn prepare(&mut self, epoch: u64) -> Result<Vec<u8>> {
        self.refuse_if_failed()?;
        let prepared = self.finish_all().and_then(|()| {
            let open = std::mem::take(&mut self.open);
            self.prepare_files(epoch, open)
        });
        if let Err(e) = &prepared {
            // The files are gone from memory but not published: only abort may follow.
            self.open = OpenEpoch::default();
            self.open.failed = Some(format!("prepare({epoch}) failed: {e}"));
        }
        prepared
    }

    fn prepare_files(&self, epoch: u64, open: OpenEpoch) -> Result<Vec<u8>> {
        let current = self.root.join(self.layout.current());
        if open.files.is_empty() {
            if open.started {
                remove_dir_if_exists(&current).map_err(|e| self.io("remove", &current, e))?;
            }
            return Ok(Vec::new());
        }

        let epoch_dir = self.layout.epoch(epoch);
        let ext = self.format.extension();
        let mut files = Vec::with_capacity(open.files.len());
        for mut staged in open.files {
            staged.finish().map_err(|e| self.finish_error(&staged, e))?;
            files.push(ManifestEntry {
                staged: format!("{epoch_dir}/{}", staged.name),
                published: self.layout.published(
                    staged.partition.as_deref(),
                    epoch,
                    staged.seq,
                    ext,
                ),
                rows: staged.rows,
                bytes: staged.bytes,
            });
        }
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            stream: self.stream.clone(),
            epoch,
            root: self.root.to_string_lossy().into_owned(),
            staging: epoch_dir.clone(),
            files,
        };
        let token = serde_json::to_vec(&manifest)
            .map_err(|e| Error::fatal(format!("file sink: encoding the manifest: {e}")))?;

        let manifest_path = current.join(MANIFEST);
        write_durably(&manifest_path, &token).map_err(|e| self.io("write", &manifest_path, e))?;
        sync_dir(&current).map_err(|e| self.io("fsync", &current, e))?;
        // An `epoch-E` already there is an earlier attempt at E whose token was never
        // recorded (the host aborts such epochs, but may not have reached it).
        let target = self.root.join(&epoch_dir);
        remove_dir_if_exists(&target).map_err(|e| self.io("remove", &target, e))?;
        fs::rename(&current, &target)
            .map_err(|e| self.io(&format!("rename `{}` to", current.display()), &target, e))?;
        let staging = self.root.join(self.layout.staging());
        sync_dir(&staging).map_err(|e| self.io("fsync", &staging, e))?;
        Ok(token)
    }

    /// Publish what `prepare(epoch)` staged; idempotent.
    pub fn commit(&mut self, epoch: u64, token: &[u8]) -> Result<Vec<String>> {
        if token.is_empty() {
            let dir = self.root.join(self.layout.epoch(epoch));
            remove_dir_if_exists(&dir).map_err(|e| self.io("remove", &dir, e))?;
            return Ok(Vec::new());
        }
        let manifest = self.read_token(epoch, token)?;
        self.check_fence(epoch)?;
        let root = PathBuf::from(&manifest.root);

        // Check everything before moving anything, so a refused commit publishes nothing.
        let mut moves = Vec::new();
        for entry in &manifest.files {
            let staged = root.join(&entry.staged);
            let published = root.join(&entry.published);
            let staged_exists = exists(&staged).map_err(|e| self.io("stat", &staged, e))?;
            let published_exists =
                exists(&published).map_err(|e| self.io("stat", &published, e))?;
            match (staged_exists, published_exists) {
                (true, false) => moves.push((staged, published)),
                (false, true) => {}
                (true, true) => {
                    return Err(Error::fatal(format!(
                        "file sink, stream `{}`, epoch {epoch}: `{}` is already published, and \
                         `{}` was staged under the same name by another run (was the state \
                         store reset while `{}` kept its files?); refusing to overwrite it: \
                         move the published files away or point `path` at a fresh directory",
                        self.stream,
                        published.display(),
                        staged.display(),
                        root.display()
                    )))
                }
                (false, false) => {
                    return Err(Error::fatal(format!(
                        "file sink, stream `{}`, epoch {epoch}: cannot publish `{}`: neither it \
                         nor its staged file `{}` exists; the staging area `{}` was changed \
                         outside the sink, and this epoch's rows are lost from the output",
                        self.stream,
                        published.display(),
                        staged.display(),
                        root.join(&manifest.staging).display()
                    )))
                }
            }
        }

        let mut dirs = BTreeSet::new();
        for (staged, published) in &moves {
            if let Some(parent) = published.parent() {
                fs::create_dir_all(parent).map_err(|e| self.io("create", parent, e))?;
            }
            fs::rename(staged, published).map_err(|e| {
                self.io(&format!("publish `{}` as", staged.display()), published, e)
            })?;
            // Every directory from the file's up to the root: some were just created.
            let mut dir = published.parent();
            while let Some(d) = dir {
                if !dirs.insert(d.to_path_buf()) || d == root || d.as_os_str().is_empty() {
                    break;
                }
                dir = d.parent();
            }
        }
        for dir in &dirs {
            sync_dir(dir).map_err(|e| self.io("fsync", dir, e))?;
        }

        let staging = root.join(&manifest.staging);
        remove_dir_if_exists(&staging).map_err(|e| self.io("remove", &staging, e))?;
        if let Some(parent) = staging.parent() {
            sync_dir_if_exists(parent).map_err(|e| self.io("fsync", parent, e))?;
        }
        Ok(manifest
            .files
            .iter()
            .map(|entry| root.join(&entry.published).display().to_string())
            .collect())
    }

    /// Discard the open epoch's files and whatever was staged for `epoch`.
    pub fn abort(&mut self, epoch: u64) -> Result<()> {
        self.open = OpenEpoch::default();
        for dir in [self.layout.current(), self.layout.epoch(epoch)] {
            let dir = self.root.join(dir);
            remove_dir_if_exists(&dir).map_err(|e| self.io("remove", &dir, e))?;
        }
        let staging = self.root.join(self.layout.staging());
        sync_dir_if_exists(&staging).map_err(|e| self.io("fsync", &staging, e))
    }

    fn read_token(&self, epoch: u64, token: &[u8]) -> Result<Manifest> {
        let bad = |why: String| {
            Error::fatal(format!(
                "file sink, stream `{}`: the commit token of epoch {epoch} is not one this sink \
                 wrote for it: {why}",
                self.stream
            ))
        };
        let manifest: Manifest =
            serde_json::from_slice(token).map_err(|e| bad(format!("not a manifest ({e})")))?;
        if manifest.version != MANIFEST_VERSION {
            return Err(bad(format!(
                "manifest version {}, this sink reads version {MANIFEST_VERSION}",
                manifest.version
            )));
        }
        if manifest.epoch != epoch || manifest.stream != self.stream {
            return Err(bad(format!(
                "it is for stream `{}`, epoch {}",
                manifest.stream, manifest.epoch
            )));
        }
        let paths = std::iter::once(&manifest.staging).chain(
            manifest
                .files
                .iter()
                .flat_map(|f| [&f.staged, &f.published]),
        );
        for path in paths {
            if !is_plain_relative(path) {
                return Err(bad(format!("path `{path}` is not a plain relative path")));
            }
        }
        Ok(manifest)
    }

    /// The batch with the schema the writer was opened with, so every file has one schema.
    fn conform(&self, batch: RecordBatch) -> Result<RecordBatch> {
        if batch.schema_ref() == &self.schema {
            return Ok(batch);
        }
        let fits = batch.schema_ref().fields().len() == self.schema.fields().len()
            && batch
                .schema_ref()
                .fields()
                .iter()
                .zip(self.schema.fields())
                .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
        if !fits {
            return Err(Error::data(format!(
                "file sink, stream `{}`: a batch with columns {} does not fit the stream's \
                 schema {}",
                self.stream,
                ingest_sdk::describe_schema(batch.schema_ref()),
                ingest_sdk::describe_schema(&self.schema)
            )));
        }
        RecordBatch::try_new(self.schema.clone(), batch.columns().to_vec()).map_err(|e| {
            Error::data(format!(
                "file sink, stream `{}`: a batch does not fit the stream's schema: {e}",
                self.stream
            ))
        })
    }

    fn refuse_if_failed(&self) -> Result<()> {
        match &self.open.failed {
            None => Ok(()),
            Some(why) => Err(Error::fatal(format!(
                "file sink, stream `{}`: the open epoch cannot go on after an earlier failure \
                 ({why}); its files may hold part of a batch, so it can only be aborted",
                self.stream
            ))),
        }
    }

    /// For the text formats, the batch in [`Self::text_schema`].
    fn for_text(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let Some(schema) = &self.text_schema else {
            return Ok(batch);
        };
        let columns = batch
            .columns()
            .iter()
            .map(text_safe)
            .collect::<std::result::Result<Vec<ArrayRef>, String>>()
            .and_then(|columns| {
                RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())
            })
            .map_err(|e| {
                Error::fatal(format!(
                    "file sink, stream `{}`: preparing timestamps for text: {e}",
                    self.stream
                ))
            })?;
        Ok(columns)
    }

    /// Clear a `current` left by a dead instance and create it, once per epoch.
    fn start_epoch(&mut self) -> Result<()> {
        if self.open.started {
            return Ok(());
        }
        let current = self.root.join(self.layout.current());
        remove_dir_if_exists(&current).map_err(|e| self.io("remove", &current, e))?;
        fs::create_dir_all(&current).map_err(|e| self.io("create", &current, e))?;
        self.open.started = true;
        Ok(())
    }

    fn finish_error(&self, file: &StagedFile, e: String) -> Error {
        Error::fatal(format!(
            "file sink, stream `{}`: finishing `{}`: {e}",
            self.stream,
            self.root
                .join(self.layout.current())
                .join(&file.name)
                .display()
        ))
    }

    /// An I/O error with the stream and file; denied access says which grant is missing.
    fn io(&self, action: &str, path: &Path, e: io::Error) -> Error {
        let message = format!(
            "file sink, stream `{}`: cannot {action} `{}`: {e}",
            self.stream,
            path.display()
        );
        if is_access_error(&e) {
            Error::AccessDenied(format!(
                "{message}; `{}` must be granted read-write in the sink's `fs` grants",
                self.root.display()
            ))
        } else {
            Error::fatal(message)
        }
    }
}

/// The bytes of a batch's columns (of the slices it holds, not of buffers it shares).
fn batch_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
        .sum()
}

/// A partition for messages: `partition `<dir>`` or `the stream`.
fn describe_part(key: &Option<String>) -> String {
    match key {
        Some(dir) => format!("partition `{dir}`"),
        None => "the stream".to_string(),
    }
}

/// Whether `e` means the sandbox (or the file system) refused access, rather than a failure.
pub fn is_access_error(e: &io::Error) -> bool {
    // wasi-libc's errno for a path outside every preopened directory.
    const ENOTCAPABLE: i32 = 76;
    matches!(
        e.kind(),
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
    ) || (cfg!(target_os = "wasi") && e.raw_os_error() == Some(ENOTCAPABLE))
        // Rust's std on WASI reports a path outside every preopen with this message.
        || e.to_string().contains("pre-opened")
}

/// A relative path with only normal components: no root, no `..`, no `.`.
fn is_plain_relative(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

fn exists(path: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn remove_dir_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Make a directory's entries (created, renamed, removed files) durable. Platforms that
/// cannot sync a directory say so with these kinds; there is nothing more to do there.
fn sync_dir(path: &Path) -> io::Result<()> {
    let synced = File::open(path).and_then(|dir| dir.sync_all());
    match synced {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::Unsupported
                    | io::ErrorKind::InvalidInput
                    | io::ErrorKind::IsADirectory
            ) =>
        {
            Ok(())
        }
        other => other,
    }
}

fn sync_dir_if_exists(path: &Path) -> io::Result<()> {
    match sync_dir(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

//! The built-in `file` source: reads CSV, JSON Lines or Parquet files named by a path or a
//! glob as one stream, one split per file (or per part of a file, with `split_bytes`:
//! see [`parts`]), resumable at any chunk boundary.
//!
//! Every call starts from the config: [`config`] parses and validates it, [`files`] finds
//! the files, the format module ([`csv`], [`jsonl`], [`parquet`]) infers the schema from
//! the first file, and [`plan`] applies the `[schema]` overrides. The readers return
//! chunks whose positions ([`position`]) resume exactly after their last row.

pub mod config;
pub mod csv;
pub mod files;
#[cfg(any(test, fuzzing))]
pub mod fuzzing;
pub mod json_object;
pub mod jsonl;
pub mod parquet;
pub mod parts;
pub mod position;
pub mod scan;
pub mod types;

/// Most input bytes one chunk covers, whatever `max_rows` allows: wide rows make smaller
/// chunks, so a batch (and every plugin's linear memory, which grows to the largest batch
/// it sees) stays a few MiB. 4 MiB of CSV is ~25k rows of the R1 orders; it measured less
/// CPU and ~40% less peak RSS than 65536-row chunks on R1 (1M rows).
pub(crate) const MAX_CHUNK_BYTES: u64 = 4 << 20;

#[cfg(test)]
mod testutil;

/// Decompresses zstd (Parquet pages, `.zst` objects) with the host's native decoder from
/// now on, instead of the `zstd` stand-in's own, which took about six times as long compiled
/// to Wasm (decision 0018). Call it where reading starts; calls after the first
/// change nothing. Natively (the unit tests) there is no host: the stand-in decodes.
pub fn use_host_zstd() {
    #[cfg(target_family = "wasm")]
    zstd::set_native_decompressor(ingest_sdk::host::zstd_decompress);
}

use std::sync::Arc;

use arrow_array::{RecordBatch, RecordBatchOptions};
use arrow_schema::{Field, Schema, SchemaRef};
use ingest_sdk::source::{Chunk, Reader, Replayed, Source, Split, StreamInfo, SyncMode};
use ingest_sdk::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::config::{Format, LastRecord, Settings};
use crate::parts::Part;
use crate::types::{ColumnBuilder, ColumnType};

/// A column of a CSV or JSON Lines stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
}

/// What a config resolves to: the files, and the one stream's schema.
#[derive(Clone)]
pub struct Plan {
    pub settings: Settings,
    /// The matched files, sorted by path.
    pub files: Vec<String>,
    /// Columns and their types (CSV and JSON Lines; empty for Parquet).
    pub columns: Vec<Column>,
    pub schema: SchemaRef,
}

/// Resolve `config`: validate it, match the files, infer the schema from the first file
/// and apply the overrides.
pub fn plan(config: &str) -> Result<Plan> {
    let settings = Settings::parse(config)?;
    let files = files::expand(&settings.path)?;
    let Some(mut first) = files.first() else {
        return Err(Error::config(format!(
            "no file matches `{}`",
            settings.path
        )));
    };
    if waits_for_footers(&settings) {
        // The schema comes from the first Parquet file that can be read.
        first = first_with_footer(&files)?.ok_or_else(|| {
            Error::data(format!(
                "no Parquet file matching `{}` is complete yet: none ends with its footer",
                settings.path
            ))
        })?;
    }
    let (columns, schema) = match settings.format {
        Format::Csv => typed(csv::infer(first, &settings)?, &settings, first)?,
        Format::Jsonl => typed(jsonl::infer(first, settings.infer_rows)?, &settings, first)?,
        Format::Parquet => (Vec::new(), parquet::schema(first)?),
    };
    Ok(Plan {
        settings,
        files,
        columns,
        schema,
    })
}

/// Whether Parquet files without their footer are left for a later run: a Parquet file is
/// readable only once its footer is written, at its very end.
fn waits_for_footers(settings: &Settings) -> bool {
    settings.format == Format::Parquet && settings.last_record == LastRecord::Wait
}

/// The first of `files` whose Parquet footer is written.
fn first_with_footer(files: &[String]) -> Result<Option<&String>> {
    for path in files {
        if parquet::has_footer(path)? {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

thread_local! {
    /// The plan `open` made last, with its config. The host opens every split of a stream
    /// with the same config; planning samples the first file, so a file read in many parts
    /// would otherwise sample it once per part. An instance lives for one attempt of one
    /// run, so the plan is as fresh as the stream's discovered schema.
    static OPENED: std::cell::RefCell<Option<(String, Plan)>> = const { std::cell::RefCell::new(None) };
}

/// [`plan`] for `open`: the plan made for the same config earlier in this instance, if any.
fn plan_for_open(config: &str) -> Result<Plan> {
    if let Some(plan) = OPENED.with_borrow(|last| {
        last.as_ref()
            .filter(|(c, _)| c == config)
            .map(|(_, p)| p.clone())
    }) {
        return Ok(plan);
    }
    let plan = plan(config)?;
    OPENED.set(Some((config.to_string(), plan.clone())));
    Ok(plan)
}

/// The inferred `columns` with the `[schema]` overrides applied, and their Arrow schema.
/// Every column `[schema]` names must exist in `first`, the file the columns came from.
fn typed(
    mut columns: Vec<Column>,
    settings: &Settings,
    first: &str,
) -> Result<(Vec<Column>, SchemaRef)> {
    let mut problems = Vec::new();
    for (name, ty) in &settings.overrides {
        match columns.iter_mut().find(|c| &c.name == name) {
            Some(column) => column.ty = *ty,
            None => problems.push(format!(
                "`schema.{name}`: `{first}` has no column `{name}`; its columns are [{}]",
                columns
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
    if !problems.is_empty() {
        return Err(Error::config(problems.join("; ")));
    }
    let fields: Vec<Field> = columns
        .iter()
        .map(|c| Field::new(&c.name, c.ty.data_type(), true))
        .collect();
    Ok((columns, Arc::new(Schema::new(fields))))
}

impl Plan {
    fn check_stream(&self, stream: &str) -> Result<()> {
        if stream == self.settings.stream {
            Ok(())
        } else {
            Err(Error::config(format!(
                "unknown stream `{stream}`; this file source offers `{}`",
                self.settings.stream
            )))
        }
    }
}

/// What a split's descriptor holds: the file, how to read it, and for a part of the file
/// its byte range.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Descriptor {
    path: String,
    format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    part: Option<PartDescriptor>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartDescriptor {
    start: u64,
    line: u64,
    end: Option<u64>,
    split_bytes: u64,
}

impl Descriptor {
    fn part(&self) -> Part {
        match &self.part {
            None => Part::WHOLE,
            Some(p) => Part {
                start: p.start,
                line: p.line,
                end: p.end,
                split_bytes: Some(p.split_bytes),
            },
        }
    }
}

/// The split of `part` of `path`: the first part is named by the path, the others by the
/// path and the offset they start at (`data/orders.csv@67108864`).
fn split_of(path: &str, format: Format, part: Part) -> Split {
    let id = if part.start == 0 {
        path.to_string()
    } else {
        format!("{path}@{}", part.start)
    };
    let descriptor = Descriptor {
        path: path.to_string(),
        format: format.name().to_string(),
        part: part.split_bytes.map(|split_bytes| PartDescriptor {
            start: part.start,
            line: part.line,
            end: part.end,
            split_bytes,
        }),
    };
    Split {
        id,
        // Serializing strings and integers cannot fail.
        descriptor: serde_json::to_vec(&descriptor).unwrap_or_default(),
    }
}

/// The `file` source.
pub struct FileSource;

impl Source for FileSource {
    type Reader = FileReader;

    fn spec() -> String {
        config::json_schema()
    }

    fn check(config: &str) -> Result<()> {
        plan(config).map(|_| ())
    }

    fn discover(config: &str) -> Result<Vec<StreamInfo>> {
        let plan = plan(config)?;
        Ok(vec![StreamInfo {
            name: plan.settings.stream,
            schema: plan.schema,
            primary_key: Vec::new(),
            cursor_field: None,
            sync_modes: vec![SyncMode::FullRefresh, SyncMode::Incremental],
        }])
    }

    fn splits(config: &str, stream: &str) -> Result<Vec<Split>> {
        let plan = plan(config)?;
        plan.check_stream(stream)?;
        let format = plan.settings.format;
        let wait_for_footers = waits_for_footers(&plan.settings);
        let mut splits = Vec::with_capacity(plan.files.len());
        // Each split's size goes to the host as it is planned, for the progress line.
        let mut add = |path: &str, part: Part| -> Result<()> {
            let split = split_of(path, format, part);
            report_progress(stream, &split.id, 0, part_size(path, &part)?);
            splits.push(split);
            Ok(())
        };
        for path in &plan.files {
            if wait_for_footers && !parquet::has_footer(path)? {
                note(&format!(
                    "`{path}` has no Parquet footer yet; it is left for a later run (set \
                     `last_record = \"read\"` when files are complete)"
                ));
                continue;
            }
            match plan.settings.split_bytes {
                Some(bytes) => {
                    for part in parts::plan(path, &plan.settings, bytes)? {
                        add(path, part)?;
                    }
                }
                None => add(path, Part::WHOLE)?,
            }
        }
        Ok(splits)
    }

    fn open(
        config: &str,
        stream: &str,
        split: Split,
        position: Option<Vec<u8>>,
    ) -> Result<FileReader> {
        // Planning here (rather than trusting state from `splits`) keeps `open` correct in a
        // fresh instance after a restart; it costs one sample of the first file per instance.
        let plan = plan_for_open(config)?;
        plan.check_stream(stream)?;
        let descriptor: Descriptor = serde_json::from_slice(&split.descriptor).map_err(|e| {
            Error::fatal(format!(
                "split `{}` has a descriptor the file source did not write: {e}",
                split.id
            ))
        })?;
        let path = descriptor.path.as_str();
        let part = descriptor.part();
        if part.split_bytes != plan.settings.split_bytes {
            return Err(Error::fatal(format!(
                "split `{}` was planned with another `split_bytes` than the config has now",
                split.id
            )));
        }
        let position = position.as_deref();
        let reading = match plan.settings.format {
            Format::Csv => Reading::Csv(Box::new(csv::CsvReader::open(
                path,
                &plan.settings,
                plan.columns,
                plan.schema,
                part,
                position,
            )?)),
            Format::Jsonl => Reading::Jsonl(Box::new(jsonl::JsonlReader::open(
                path,
                plan.columns,
                plan.schema,
                part,
                position,
                plan.settings.last_record,
            )?)),
            Format::Parquet => Reading::Parquet(Box::new(parquet::ParquetReader::open(
                path,
                plan.schema,
                position,
            )?)),
        };
        let reader = FileReader {
            reading,
            stream: stream.to_string(),
            split: split.id,
            start: part.start,
            size: part_size(path, &part)?,
        };
        reader.report(position);
        Ok(reader)
    }

    fn replay(config: &str, stream: &str, records: Vec<String>) -> Result<Replayed> {
        FileSource::replay_records(config, stream, records)
    }
}

impl FileSource {
    /// Records rejected earlier, parsed again with the current config.
    fn replay_records(config: &str, stream: &str, records: Vec<String>) -> Result<Replayed> {
        let plan = plan(config)?;
        plan.check_stream(stream)?;
        match plan.settings.format {
            Format::Csv => csv::replay(&plan.settings, plan.columns, plan.schema, records),
            Format::Jsonl => jsonl::replay(plan.columns, plan.schema, records),
            Format::Parquet => Err(Error::fatal(
                "Parquet files have no records to parse again: the file source rejects none",
            )),
        }
    }
}

/// Reads one split of the stream (a file, or a part of one), and tells the host how far
/// it got after each chunk.
pub struct FileReader {
    reading: Reading,
    stream: String,
    split: String,
    /// Where the split starts in its file, and its size in bytes.
    start: u64,
    size: u64,
}

/// The reader of a file's format.
enum Reading {
    Csv(Box<csv::CsvReader>),
    Jsonl(Box<jsonl::JsonlReader>),
    Parquet(Box<parquet::ParquetReader>),
}

impl FileReader {
    /// Report how far the split is read, at `position` (the one just returned; for text
    /// files its byte offset, for Parquet the reader's share of rows).
    fn report(&self, position: Option<&[u8]>) {
        let read = match &self.reading {
            Reading::Parquet(r) => (r.read_share() * self.size as f64) as u64,
            _ => position
                .and_then(|p| serde_json::from_slice::<position::TextPosition>(p).ok())
                .map_or(0, |at| at.offset.saturating_sub(self.start)),
        };
        report_progress(&self.stream, &self.split, read, self.size);
    }
}

impl Reader for FileReader {
    fn next(&mut self, max_rows: usize) -> Result<Option<Chunk>> {
        let max_rows = max_rows.max(1);
        let chunk = match &mut self.reading {
            Reading::Csv(r) => r.next_chunk(max_rows),
            Reading::Jsonl(r) => r.next_chunk(max_rows),
            Reading::Parquet(r) => r.next_chunk(max_rows),
        }?;
        if let Some(chunk) = &chunk {
            self.report(Some(&chunk.position));
        }
        Ok(chunk)
    }
}

/// The size in bytes of `part` of `path` (a whole file's last part reaches its end).
fn part_size(path: &str, part: &Part) -> Result<u64> {
    let end = match part.end {
        Some(end) => end,
        None => std::fs::metadata(path)
            .map_err(|e| files::io_error(path, "read the size of", e))?
            .len(),
    };
    Ok(end.saturating_sub(part.start))
}

/// Tell the host how far a split is read (natively, in unit tests: nowhere).
fn report_progress(stream: &str, split: &str, read: u64, total: u64) {
    #[cfg(target_family = "wasm")]
    ingest_sdk::host::progress(stream, split, read, total);
    #[cfg(not(target_family = "wasm"))]
    let _ = (stream, split, read, total);
}

/// A batch of `rows` rows from `builders`, which start over empty.
pub(crate) fn finish_batch(
    schema: &SchemaRef,
    builders: &mut [ColumnBuilder],
    rows: usize,
) -> Result<RecordBatch> {
    let columns = builders.iter_mut().map(ColumnBuilder::finish).collect();
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &options,
    )?)
}

/// Tell the user something through the host log (natively, in unit tests: on stderr).
pub(crate) fn note(message: &str) {
    #[cfg(target_family = "wasm")]
    ingest_sdk::host::log(ingest_sdk::host::Level::Info, message);
    #[cfg(not(target_family = "wasm"))]
    eprintln!("{message}");
}

/// A value for a message: as text, cut short when long.
pub(crate) fn show(value: &[u8]) -> String {
    const MAX: usize = 64;
    let text = String::from_utf8_lossy(value);
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.into_owned(),
    }
}

/// "an int64", "a date (YYYY-MM-DD)": what a value failed to be.
pub(crate) fn type_phrase(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Int64 => "an int64",
        ColumnType::Float64 => "a float64",
        ColumnType::Boolean => "a boolean (true or false)",
        ColumnType::Utf8 => "text",
        ColumnType::Date => "a date (YYYY-MM-DD)",
        ColumnType::Timestamp => "a timestamp (ISO 8601, e.g. 2024-05-01T12:00:00Z)",
    }
}

#[cfg(test)]
mod tests;

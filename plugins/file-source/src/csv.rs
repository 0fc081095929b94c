//! CSV: record framing over `csv-core` (the `csv` crate's parser) with exact byte offsets,
//! line numbers and the raw text of every record; schema inference from a sample; and the
//! reader that turns records into Arrow batches and rejects.
//!
//! The framing keeps its own buffer rather than going through `csv::Reader` because a
//! reject carries the record's original bytes and a position must name the byte where the
//! next record starts; both fall out of owning the buffer.
//!
//! Most records take a fast path that finds field ends 16 bytes at a time
//! ([`crate::scan`]) and copies whole runs. It handles unquoted fields, quoted fields
//! (with doubled quotes and line breaks inside) and LF or CRLF line ends. Anything else —
//! a blank or comment line, the start of the file, a quote inside an unquoted field,
//! text after a closing quote, a lone CR, an escape byte in the dialect, the end of the
//! input — goes to `csv-core` for that record, so both paths frame every file the same.

use std::fs::File;
use std::io::{self, Read};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use csv_core::ReadRecordResult;
use ingest_sdk::source::{Chunk, Replayed};
use ingest_sdk::{Reject, Result};

use crate::config::{CsvDialect, LastRecord, Settings};
use crate::parts::Part;
use crate::position::{self, TextPosition};
use crate::scan::{put, ByteSet};
use crate::types::{ColumnBuilder, ColumnType, Inference};
use crate::{files, finish_batch, show, type_phrase, Column};

const READ_BUFFER: usize = 1 << 20;
const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

/// The longest record read. A longer one is almost always an unbalanced quote swallowing
/// the rest of the file; stopping here fails the read cleanly instead of exhausting the
/// instance's memory.
pub const MAX_RECORD: usize = 64 << 20;

/// Why a record could not be framed.
#[derive(Debug)]
pub enum FrameError {
    Io(io::Error),
    /// The record starting on `line` is longer than [`MAX_RECORD`].
    TooLong {
        line: u64,
    },
}

impl FrameError {
    /// The error the host acts on, naming the file (and line).
    pub fn into_error(self, path: &str, quote: u8) -> ingest_sdk::Error {
        match self {
            FrameError::Io(e) => files::io_error(path, "read", e),
            FrameError::TooLong { line } => ingest_sdk::Error::data(format!(
                "`{path}:{line}`: the record starting here runs past {} MiB without ending; \
                 a `{}` quote is probably unbalanced",
                MAX_RECORD >> 20,
                quote as char
            )),
        }
    }
}

/// What the fast path of the framer stops at.
#[derive(Debug, Clone, Copy)]
struct FastPath {
    delimiter: u8,
    quote: u8,
    /// Ends of an unquoted field: delimiter, quote, LF, CR.
    unquoted: ByteSet,
    /// Stops inside a quoted field: quote, LF (to count lines).
    quoted: ByteSet,
}

impl FastPath {
    /// The fast path for `dialect`, unless it needs `csv-core` throughout (an escape
    /// byte, or a delimiter or quote that is a line end).
    fn new(dialect: &CsvDialect) -> Option<Self> {
        let (d, q) = (dialect.delimiter, dialect.quote);
        let plain = |b: u8| b != b'\n' && b != b'\r';
        (dialect.escape.is_none() && d != q && plain(d) && plain(q)).then(|| FastPath {
            delimiter: d,
            quote: q,
            unquoted: ByteSet::new([d, q, b'\n', b'\r']),
            quoted: ByteSet::new([q, b'\n', q, q]),
        })
    }
}

/// What the fast path made of the bytes at the framer's offset.
enum Fast {
    /// A record was framed.
    Record,
    /// The record runs past the bytes read so far.
    NeedMore,
    /// `csv-core` frames this record.
    Slow,
}

/// Splits a byte stream into CSV records, tracking where each starts.
pub struct Framer<R> {
    src: R,
    core: csv_core::Reader,
    fast: Option<FastPath>,
    comment: Option<u8>,
    buf: Vec<u8>,
    /// First byte of `buf` not yet consumed.
    lo: usize,
    /// End of the bytes read into `buf`.
    hi: usize,
    /// File offset of `buf[0]`.
    base: u64,
    eof: bool,
    /// Line feeds consumed outside `core` (the LF of a CRLF right after a record).
    extra_lines: u64,
    /// The last record: unescaped field bytes, field ends, raw bytes in `buf`, start line.
    out: Vec<u8>,
    ends: Vec<usize>,
    fields: usize,
    raw: (usize, usize),
    record_line: u64,
    /// The last record was ended by the end of the input, not by a line end.
    closed_by_end: bool,
}

impl<R: Read> Framer<R> {
    /// Frame records from `src`, whose first byte is at `offset` on line `line` of the file.
    pub fn new(src: R, dialect: &CsvDialect, offset: u64, line: u64) -> Self {
        Self::with_buffer(src, dialect, offset, line, READ_BUFFER)
    }

    /// As [`Framer::new`], reading `buffer` bytes at a time (the buffer grows for longer
    /// records).
    pub fn with_buffer(
        src: R,
        dialect: &CsvDialect,
        offset: u64,
        line: u64,
        buffer: usize,
    ) -> Self {
        let mut core = csv_core::ReaderBuilder::new()
            .delimiter(dialect.delimiter)
            .quote(dialect.quote)
            .escape(dialect.escape)
            .comment(dialect.comment)
            .build();
        core.set_line(line);
        Framer {
            src,
            core,
            fast: FastPath::new(dialect),
            comment: dialect.comment,
            buf: vec![0; buffer.max(64)],
            lo: 0,
            hi: 0,
            base: offset,
            eof: false,
            extra_lines: 0,
            out: vec![0; 64 * 1024],
            ends: vec![0; 64],
            fields: 0,
            raw: (0, 0),
            record_line: line,
            closed_by_end: false,
        }
    }

    /// Byte offset of the first byte not yet consumed: where the next record starts.
    pub fn offset(&self) -> u64 {
        self.base + self.lo as u64
    }

    /// The line `offset()` lies on.
    pub fn line(&self) -> u64 {
        self.core.line() + self.extra_lines
    }

    /// Read the next record; `false` at the end of the input.
    pub fn read(&mut self) -> Result<bool, FrameError> {
        if let Some(fast) = self.fast {
            loop {
                match self.read_fast(&fast) {
                    Fast::Record => return Ok(true),
                    Fast::Slow => break,
                    Fast::NeedMore => {
                        // Make room by dropping consumed bytes; a record that fills the
                        // whole buffer, and the end of the input, are left to `csv-core`.
                        if self.eof || (self.lo == 0 && self.hi == self.buf.len()) {
                            break;
                        }
                        self.drop_consumed();
                        self.fill()?;
                    }
                }
            }
        }
        self.read_slow()
    }

    /// Move the bytes not yet consumed (from `lo`) to the front of `buf`; returns how far
    /// they moved.
    fn drop_consumed(&mut self) -> usize {
        let moved = self.lo;
        if moved > 0 {
            self.buf.copy_within(moved..self.hi, 0);
            self.base += moved as u64;
            self.hi -= moved;
            self.lo = 0;
        }
        moved
    }

    /// Read more input after `hi`; at the end of the input, set `eof`.
    fn fill(&mut self) -> Result<(), FrameError> {
        files::read_more(&mut self.src, &mut self.buf, &mut self.hi, &mut self.eof)
            .map_err(FrameError::Io)
    }

    /// Frame the record at `lo` if it is an ordinary one (see the module's docs), without
    /// changing anything when it is not.
    #[inline]
    fn read_fast(&mut self, fast: &FastPath) -> Fast {
        let Framer {
            buf,
            out,
            ends,
            lo,
            hi,
            base,
            comment,
            ..
        } = self;
        let buf = &buf[..*hi];
        let start = *lo;
        match buf.get(start) {
            None => return Fast::NeedMore,
            Some(&b) if b == b'\n' || b == b'\r' || Some(b) == *comment => return Fast::Slow,
            // The first byte of the file may open a byte-order mark.
            Some(_) if *base + start as u64 == 0 => return Fast::Slow,
            Some(_) => {}
        }
        let (mut i, mut outlen, mut nend, mut lines) = (start, 0, 0, 0);
        // One field per turn; `i` ends at the byte after the field.
        let terminator = loop {
            let Some(&first) = buf.get(i) else {
                return Fast::NeedMore;
            };
            let after = if first == fast.quote {
                i += 1;
                loop {
                    let Some(k) = fast.quoted.find(&buf[i..]) else {
                        return Fast::NeedMore;
                    };
                    let j = i + k;
                    outlen = put(out, outlen, &buf[i..j]);
                    if buf[j] == b'\n' {
                        lines += 1;
                        outlen = put(out, outlen, b"\n");
                        i = j + 1;
                        continue;
                    }
                    match buf.get(j + 1) {
                        None => return Fast::NeedMore,
                        Some(&c) if c == fast.quote => {
                            outlen = put(out, outlen, &[c]);
                            i = j + 2;
                        }
                        Some(&c) if c == fast.delimiter || c == b'\n' || c == b'\r' => {
                            i = j + 1;
                            break c;
                        }
                        // Text after the closing quote.
                        Some(_) => return Fast::Slow,
                    }
                }
            } else {
                let Some(k) = fast.unquoted.find(&buf[i..]) else {
                    return Fast::NeedMore;
                };
                let j = i + k;
                if buf[j] == fast.quote {
                    return Fast::Slow;
                }
                outlen = put(out, outlen, &buf[i..j]);
                i = j;
                buf[j]
            };
            if nend == ends.len() {
                ends.resize(nend * 2, 0);
            }
            ends[nend] = outlen;
            nend += 1;
            if after != fast.delimiter {
                break after;
            }
            i += 1;
        };
        let record_end = i;
        if terminator == b'\r' {
            match buf.get(i + 1) {
                None => return Fast::NeedMore,
                Some(b'\n') => i += 1,
                // A lone CR ends a record too; `csv-core` knows how to count it.
                Some(_) => return Fast::Slow,
            }
        }
        i += 1;
        lines += 1;
        self.record_line = self.line();
        self.extra_lines += lines;
        self.fields = nend;
        self.raw = (start, record_end);
        self.lo = i;
        self.closed_by_end = false;
        Fast::Record
    }

    /// Frame the next record with `csv-core`.
    fn read_slow(&mut self) -> Result<bool, FrameError> {
        let line_before = self.line();
        let mut start = self.lo;
        let mut pos = self.lo;
        let (mut outlen, mut endlen) = (0, 0);
        loop {
            if pos == self.hi && !self.eof {
                // Keep the bytes of the record in progress; make room after them.
                let moved = self.drop_consumed();
                pos -= moved;
                start -= moved;
                if self.hi == self.buf.len() {
                    if self.hi >= MAX_RECORD {
                        self.locate(start, pos, line_before);
                        return Err(FrameError::TooLong {
                            line: self.record_line,
                        });
                    }
                    self.buf.resize(self.buf.len() * 2, 0);
                }
                self.fill()?;
                continue;
            }
            let input = &self.buf[pos..self.hi];
            let (res, nin, nout, nend) =
                self.core
                    .read_record(input, &mut self.out[outlen..], &mut self.ends[endlen..]);
            let input_was_empty = input.is_empty();
            pos += nin;
            outlen += nout;
            endlen += nend;
            match res {
                ReadRecordResult::InputEmpty if input_was_empty => {
                    self.lo = pos;
                    return Ok(false);
                }
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => {
                    let len = self.out.len();
                    self.out.resize(len * 2, 0);
                }
                ReadRecordResult::OutputEndsFull => {
                    let len = self.ends.len();
                    self.ends.resize(len * 2, 0);
                }
                ReadRecordResult::Record => {
                    self.fields = endlen;
                    self.lo = pos;
                    // `csv-core` ends a record on empty input only at the end of the input.
                    self.closed_by_end = input_was_empty;
                    // csv-core ends a CRLF record at the CR; take the LF too when it is
                    // here, so the offset after a record is where the next one starts.
                    if pos > 0
                        && self.buf[pos - 1] == b'\r'
                        && self.buf.get(pos..self.hi).and_then(|b| b.first()) == Some(&b'\n')
                    {
                        self.lo += 1;
                        self.extra_lines += 1;
                    }
                    self.locate(start, pos, line_before);
                    return Ok(true);
                }
                ReadRecordResult::End => {
                    self.lo = pos;
                    return Ok(false);
                }
            }
        }
    }

    /// Find where the record read from `buf[start..end]` really starts (past blank lines,
    /// comment lines and a byte-order mark) and on which line.
    fn locate(&mut self, start: usize, end: usize, line_before: u64) {
        let mut s = start;
        let mut line = line_before;
        if self.base + s as u64 == 0 && self.buf[s..end].starts_with(UTF8_BOM) {
            s += UTF8_BOM.len();
        }
        while s < end {
            match self.buf[s] {
                b'\n' => {
                    line += 1;
                    s += 1;
                }
                b'\r' => s += 1,
                c if Some(c) == self.comment => {
                    match self.buf[s..end].iter().position(|&b| b == b'\n') {
                        Some(nl) => {
                            s += nl + 1;
                            line += 1;
                        }
                        None => break,
                    }
                }
                _ => break,
            }
        }
        let mut e = end;
        while e > s && matches!(self.buf[e - 1], b'\n' | b'\r') {
            e -= 1;
        }
        self.raw = (s, e);
        self.record_line = line;
    }

    /// Number of fields in the last record.
    pub fn fields(&self) -> usize {
        self.fields
    }

    /// Byte range of field `i` within [`Framer::record_bytes`].
    pub fn range(&self, i: usize) -> (usize, usize) {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        (start, self.ends[i])
    }

    /// The unescaped bytes of field `i`.
    pub fn field(&self, i: usize) -> &[u8] {
        let (s, e) = self.range(i);
        &self.out[s..e]
    }

    /// The unescaped bytes of all fields, back to back.
    pub fn record_bytes(&self) -> &[u8] {
        let end = if self.fields == 0 {
            0
        } else {
            self.ends[self.fields - 1]
        };
        &self.out[..end]
    }

    /// The record as it is written in the file, without its line terminator.
    pub fn raw(&self) -> &[u8] {
        &self.buf[self.raw.0..self.raw.1]
    }

    /// The line the last record starts on.
    pub fn record_line(&self) -> u64 {
        self.record_line
    }

    /// Whether the last record was ended by the end of the input rather than by a line
    /// end: in a file still being written, its writer may not have finished it.
    pub fn closed_by_end(&self) -> bool {
        self.closed_by_end
    }

    /// The first line of the last record, without its line end.
    pub fn first_line(&self) -> &[u8] {
        let raw = self.raw();
        let line = match raw.iter().position(|&b| b == b'\n') {
            Some(nl) => &raw[..nl],
            None => raw,
        };
        line.strip_suffix(b"\r").unwrap_or(line)
    }

    /// Forget the last record and frame again from the line after its first: for a record
    /// whose quote never closes, so that the lines it took in are read as records of their
    /// own.
    pub fn restart_after_first_line(&mut self) {
        let (start, end) = self.raw;
        if let Some(nl) = self.buf[start..end].iter().position(|&b| b == b'\n') {
            self.lo = start + nl + 1;
            self.core.reset();
            self.core.set_line(self.record_line + 1);
            self.extra_lines = 0;
        }
        self.closed_by_end = false;
    }
}

/// Whether `raw`, one record as written in `dialect`, ends inside a quoted field. As
/// `csv-core` reads it, a quote opens a quoted field only as a field's first byte; inside
/// one, a doubled quote (or the escape byte) stands for a quote and the next lone quote
/// closes it.
fn quote_left_open(raw: &[u8], dialect: &CsvDialect) -> bool {
    let CsvDialect {
        quote,
        escape,
        delimiter,
        ..
    } = *dialect;
    let (mut open, mut field_start, mut i) = (false, true, 0);
    while i < raw.len() {
        let b = raw[i];
        if open {
            if Some(b) == escape {
                i += 1;
            } else if b == quote {
                if raw.get(i + 1) == Some(&quote) {
                    i += 1;
                } else {
                    open = false;
                }
            }
        } else if field_start && b == quote {
            open = true;
            field_start = false;
        } else {
            field_start = b == delimiter || b == b'\n' || b == b'\r';
        }
        i += 1;
    }
    open
}

/// The column names a header (or, without one, the first record) gives: empty names
/// become `column_N` and repeated ones get a `_2`, `_3`… suffix.
fn column_names<R: Read>(framer: &Framer<R>, header: bool) -> Vec<String> {
    let mut names: Vec<String> = Vec::with_capacity(framer.fields());
    for i in 0..framer.fields() {
        let raw = if header {
            String::from_utf8_lossy(framer.field(i)).into_owned()
        } else {
            String::new()
        };
        let base = if raw.is_empty() {
            format!("column_{}", i + 1)
        } else {
            raw
        };
        let mut name = base.clone();
        let mut n = 2;
        while names.contains(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        names.push(name);
    }
    names
}

/// The columns of a CSV file: names from the header (or `column_N`), types inferred from
/// up to `infer_rows` records.
pub fn infer(path: &str, settings: &Settings) -> Result<Vec<Column>> {
    let file = File::open(path).map_err(|e| files::io_error(path, "open", e))?;
    let mut framer = Framer::new(file, &settings.csv, 0, 1);
    let read = |framer: &mut Framer<File>| {
        framer
            .read()
            .map_err(|e| e.into_error(path, settings.csv.quote))
    };
    let mut names = Vec::new();
    if settings.csv.header {
        if !read(&mut framer)? {
            return Ok(Vec::new());
        }
        names = column_names(&framer, true);
    }
    let mut inferred: Vec<Inference> = Vec::new();
    let mut sampled = 0;
    while sampled < settings.infer_rows && read(&mut framer)? {
        if !settings.csv.header && sampled == 0 && names.is_empty() {
            names = column_names(&framer, false);
        }
        // A record of the wrong width is rejected when it is read; it says nothing here.
        if framer.fields() != names.len() {
            continue;
        }
        inferred.resize_with(names.len(), Inference::default);
        for (i, inference) in inferred.iter_mut().enumerate() {
            let value = framer.field(i);
            if !settings.is_null(value) {
                inference.text(value);
            }
        }
        sampled += 1;
    }
    inferred.resize_with(names.len(), Inference::default);
    Ok(names
        .into_iter()
        .zip(inferred)
        .map(|(name, inference)| Column {
            name,
            ty: inference.column_type(),
        })
        .collect())
}

/// Reads one CSV file (or, for a replay, records held in memory) into batches of the
/// stream's schema.
pub struct CsvReader<R: Read = File> {
    path: String,
    settings: Settings,
    columns: Vec<Column>,
    schema: SchemaRef,
    framer: Framer<R>,
    /// The part of the file this reader reads.
    part: Part,
    rows: u64,
    done: bool,
    has_text: bool,
}

impl CsvReader {
    /// Open `part` of `path` for the stream of `columns`, resuming after `position` when
    /// given.
    pub fn open(
        path: &str,
        settings: &Settings,
        columns: Vec<Column>,
        schema: SchemaRef,
        part: Part,
        position: Option<&[u8]>,
    ) -> Result<Self> {
        let at = TextPosition::resume(path, position, &part)?;
        let file = files::open_at(path, at.offset)?;
        let framer = Framer::new(file, &settings.csv, at.offset, at.line);
        let has_text = columns.iter().any(|c| c.ty == ColumnType::Utf8);
        let mut reader = CsvReader {
            path: path.to_string(),
            settings: settings.clone(),
            columns,
            schema,
            framer,
            part,
            rows: at.rows,
            done: false,
            has_text,
        };
        if settings.csv.header && at.offset == 0 {
            reader.read_header()?;
        }
        Ok(reader)
    }
}

/// Parse again records rejected earlier, each on its own: the rows that parse now, and the
/// records that still fail with their index in `records`.
pub fn replay(
    settings: &Settings,
    columns: Vec<Column>,
    schema: SchemaRef,
    records: Vec<String>,
) -> Result<Replayed> {
    let mut builders: Vec<ColumnBuilder> = columns
        .iter()
        .map(|c| ColumnBuilder::new(c.ty, records.len()))
        .collect();
    let has_text = columns.iter().any(|c| c.ty == ColumnType::Utf8);
    let mut reader = CsvReader {
        path: "dead-letter queue".to_string(),
        settings: settings.clone(),
        columns,
        schema,
        framer: Framer::with_buffer(io::Cursor::new(Vec::new()), &settings.csv, 0, 1, 64),
        part: Part::WHOLE,
        rows: 0,
        done: false,
        has_text,
    };
    let mut rows = 0;
    let mut rejects = Vec::new();
    for (i, record) in records.into_iter().enumerate() {
        let mut bytes = record.clone().into_bytes();
        if !bytes.ends_with(b"\n") {
            bytes.push(b'\n');
        }
        let len = bytes.len();
        reader.framer = Framer::with_buffer(io::Cursor::new(bytes), &settings.csv, 0, 1, len);
        let parsed = match reader.read_record() {
            Ok(true) => reader.append_row(&mut builders),
            Ok(false) => Err("the record is empty".to_string()),
            Err(e) => Err(e.to_string()),
        };
        match parsed {
            Ok(()) => rows += 1,
            Err(reason) => rejects.push(Reject {
                row: Some(i as u32),
                original: Some(record),
                location: None,
                reason,
            }),
        }
    }
    let batch = finish_batch(&reader.schema, &mut builders, rows)?;
    Ok(Replayed { batch, rejects })
}

impl<R: Read> CsvReader<R> {
    fn read_record(&mut self) -> Result<bool> {
        let (path, quote) = (&self.path, self.settings.csv.quote);
        self.framer.read().map_err(|e| e.into_error(path, quote))
    }

    /// Skip the header, checking it names the stream's columns in order.
    fn read_header(&mut self) -> Result<()> {
        if !self.read_record()? {
            self.done = true;
            return Ok(());
        }
        if self.framer.closed_by_end() && self.settings.last_record == LastRecord::Wait {
            // Not even the header is whole yet: nothing to read before the writer goes on.
            self.wait_for_the_rest();
            self.done = true;
            return Ok(());
        }
        let names = column_names(&self.framer, true);
        if names
            .iter()
            .map(String::as_str)
            .ne(self.columns.iter().map(|c| c.name.as_str()))
        {
            return Err(ingest_sdk::Error::data(format!(
                "`{}:{}`: the header has columns [{}] but the stream's schema, inferred from \
                 the first file, has [{}]; every file of the stream needs the same columns in \
                 the same order",
                self.path,
                self.framer.record_line(),
                names.join(", "),
                self.columns
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(())
    }

    /// Up to `max_rows` rows (and rejects) with the position after them; `None` at the end.
    pub fn next_chunk(&mut self, max_rows: usize) -> Result<Option<Chunk>> {
        if self.done {
            return Ok(None);
        }
        let mut builders: Vec<ColumnBuilder> = self
            .columns
            .iter()
            .map(|c| ColumnBuilder::new(c.ty, max_rows))
            .collect();
        let mut rows = 0;
        let mut rejects = Vec::new();
        let start = self.framer.offset();
        // Where to resume when reading stops before an unfinished last record.
        let mut before_unfinished = None;
        while rows + rejects.len() < max_rows
            && self.framer.offset() - start < crate::MAX_CHUNK_BYTES
        {
            let before = (self.framer.offset(), self.framer.line());
            if self.part.is_past(before.0) || !self.read_record()? {
                self.done = true;
                break;
            }
            if self.framer.closed_by_end() {
                match self.settings.last_record {
                    LastRecord::Wait => {
                        self.wait_for_the_rest();
                        before_unfinished = Some(before);
                        self.done = true;
                        break;
                    }
                    LastRecord::Read if self.quote_open() => {
                        rejects.push(Reject::record(
                            String::from_utf8_lossy(self.framer.first_line()),
                            format!("{}:{}", self.path, self.framer.record_line()),
                            format!(
                                "a `{}` quote opened in this record is never closed before the \
                                 end of the file; the lines after this one are read as \
                                 records of their own",
                                self.settings.csv.quote as char
                            ),
                        ));
                        self.framer.restart_after_first_line();
                        continue;
                    }
                    LastRecord::Read => {}
                }
            }
            match self.append_row(&mut builders) {
                Ok(()) => rows += 1,
                Err(reason) => rejects.push(Reject::record(
                    String::from_utf8_lossy(self.framer.raw()),
                    format!("{}:{}", self.path, self.framer.record_line()),
                    reason,
                )),
            }
        }
        if rows == 0 && rejects.is_empty() {
            return Ok(None);
        }
        self.rows += rows as u64;
        let batch: RecordBatch = finish_batch(&self.schema, &mut builders, rows)?;
        let (offset, line) =
            before_unfinished.unwrap_or((self.framer.offset(), self.framer.line()));
        let position = position::encode(&TextPosition {
            offset,
            line,
            rows: self.rows,
            split_bytes: self.part.split_bytes,
        });
        Ok(Some(Chunk {
            batch,
            position,
            rejects,
        }))
    }

    /// Whether the last record was ended by the end of the input inside a quoted field: a
    /// quote opened in it was never closed, so it took in every line up to the end.
    fn quote_open(&self) -> bool {
        self.framer.closed_by_end() && quote_left_open(self.framer.raw(), &self.settings.csv)
    }

    /// Say that reading stops before the last record, which the file's writer may not have
    /// finished (`last_record = "wait"`).
    fn wait_for_the_rest(&self) {
        let why = if self.quote_open() {
            format!(
                "a `{}` quote is still open at the end of the file",
                self.settings.csv.quote as char
            )
        } else {
            "the last line has no line end yet".to_string()
        };
        crate::note(&format!(
            "`{}:{}`: {why}; the record is left for a later run (set `last_record = \"read\"` \
             when files are complete)",
            self.path,
            self.framer.record_line()
        ));
    }

    /// Parse the current record into `builders`, all or nothing; the reason when it does
    /// not fit.
    fn append_row(&mut self, builders: &mut [ColumnBuilder]) -> Result<(), String> {
        let framer = &self.framer;
        if framer.fields() != self.columns.len() {
            let mut reason = format!(
                "expected {} fields, found {}",
                self.columns.len(),
                framer.fields()
            );
            if (0..framer.fields()).any(|i| framer.field(i).contains(&b'\n')) {
                reason.push_str("; a field spans lines, so a quote may be unbalanced");
            }
            return Err(reason);
        }
        let text = if self.has_text {
            match std::str::from_utf8(framer.record_bytes()) {
                Ok(text) => text,
                Err(_) => return Err(self.invalid_utf8()),
            }
        } else {
            ""
        };
        let rows = builders.first().map_or(0, ColumnBuilder::rows);
        for (i, column) in self.columns.iter().enumerate() {
            let value = framer.field(i);
            if self.settings.is_null(value) {
                builders[i].append_null();
                continue;
            }
            let (s, e) = framer.range(i);
            if !builders[i].append_parsed(value, || text.get(s..e)) {
                // All or nothing: take back the values of this row appended so far.
                for builder in &mut builders[..i] {
                    builder.truncate(rows);
                }
                return Err(if column.ty == ColumnType::Utf8 {
                    format!("column `{}`: the value is not valid UTF-8", column.name)
                } else {
                    format!(
                        "column `{}`: `{}` is not {}",
                        column.name,
                        show(value),
                        type_phrase(column.ty)
                    )
                });
            }
        }
        Ok(())
    }

    /// The reason for a record whose bytes are not UTF-8: the first column at fault.
    fn invalid_utf8(&self) -> String {
        (0..self.framer.fields())
            .find(|&i| std::str::from_utf8(self.framer.field(i)).is_err())
            .map(|i| {
                format!(
                    "column `{}`: the value is not valid UTF-8",
                    self.columns[i].name
                )
            })
            .unwrap_or_else(|| "the record is not valid UTF-8".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn frame(text: &str) -> Vec<(u64, Vec<String>, String, u64)> {
        let mut f = Framer::new(text.as_bytes(), &CsvDialect::default(), 0, 1);
        let mut out = Vec::new();
        while f.read().unwrap() {
            let fields = (0..f.fields())
                .map(|i| String::from_utf8(f.field(i).to_vec()).unwrap())
                .collect();
            out.push((
                f.record_line(),
                fields,
                String::from_utf8(f.raw().to_vec()).unwrap(),
                f.offset(),
            ));
        }
        out
    }

    /// Every record of `text` as (line, fields, raw, offset after, line after), framed
    /// `buffer` bytes at a time with or without the fast path.
    type Framed = Vec<(u64, Vec<Vec<u8>>, Vec<u8>, u64, u64)>;
    fn frame_with(text: &[u8], dialect: &CsvDialect, buffer: usize, fast: bool) -> Framed {
        let mut f = Framer::with_buffer(text, dialect, 0, 1, buffer);
        if !fast {
            f.fast = None;
        }
        let mut out = Vec::new();
        while f.read().unwrap() {
            let fields = (0..f.fields()).map(|i| f.field(i).to_vec()).collect();
            out.push((
                f.record_line(),
                fields,
                f.raw().to_vec(),
                f.offset(),
                f.line(),
            ));
        }
        out
    }

    #[test]
    fn the_fast_path_frames_exactly_as_csv_core_does() {
        let texts: &[&[u8]] = &[
            b"a,b,c\n1,2,3\n,,\n\"x,1\",\"say \"\"hi\"\"\",\"\"\n",
            b"h\r\n\"multi\r\nline\",2\r\n\r\nlast,3",
            b"a,b\n\"closed\"after,1\nmid\"quote,2\n\"\",\"\"\"\"\"\n",
            b"a,b\nlone\rcr,1\n\n\n3,4\n# not a comment here,5\n",
            b"\xef\xbb\xbfa,b\n1,2\n\"unterminated,3\n4,5\n",
            "k,v\nChlo\u{e9},\"D\u{fc}bois, \"\"\u{e9}\"\"\nnext\"\n".as_bytes(),
        ];
        let mut long = b"id,notes\n".to_vec();
        for i in 0..500 {
            let notes = match i % 4 {
                0 => String::new(),
                1 => format!("\"note {i}, with \"\"quotes\"\"\nand a line\""),
                2 => "x".repeat(i),
                _ => format!("plain {i}"),
            };
            long.extend_from_slice(format!("{i},{notes}\n").as_bytes());
        }
        let comment = CsvDialect {
            comment: Some(b'#'),
            ..CsvDialect::default()
        };
        let semicolon = CsvDialect {
            delimiter: b';',
            quote: b'\'',
            ..CsvDialect::default()
        };
        for dialect in [&CsvDialect::default(), &comment, &semicolon] {
            for text in texts.iter().copied().chain([long.as_slice()]) {
                let expected = frame_with(text, dialect, 1 << 16, false);
                for buffer in [64, 67, 100, 1 << 16] {
                    let got = frame_with(text, dialect, buffer, true);
                    assert_eq!(
                        got,
                        expected,
                        "{:?} with a {buffer}-byte buffer",
                        String::from_utf8_lossy(text)
                    );
                }
            }
        }
        assert!(FastPath::new(&CsvDialect {
            escape: Some(b'\\'),
            ..CsvDialect::default()
        })
        .is_none());
    }

    #[test]
    fn quoted_fields_hold_delimiters_quotes_and_newlines() {
        let records = frame("a,b\n\"x,1\",\"say \"\"hi\"\"\"\n\"multi\nline\",2\nlast,3");
        assert_eq!(records[1].1, vec!["x,1", "say \"hi\""]);
        assert_eq!(records[2].1, vec!["multi\nline", "2"]);
        assert_eq!(
            records[2].0, 3,
            "a record starts on the line of its first byte"
        );
        assert_eq!(records[3].0, 5);
        assert_eq!(records[3].1, vec!["last", "3"]);
        assert_eq!(records[2].2, "\"multi\nline\",2");
    }

    #[test]
    fn crlf_records_end_after_the_line_feed() {
        let text = "a,b\r\n1,2\r\n\r\n3,4\r\n";
        let records = frame(text);
        assert_eq!(records.len(), 3);
        assert_eq!(records[1].1, vec!["1", "2"]);
        assert_eq!(records[1].3, 10, "the offset after `1,2\\r\\n`");
        assert_eq!(records[2].0, 4, "the blank line is counted");
        assert_eq!(records[2].2, "3,4");
        assert_eq!(records[2].3, text.len() as u64);
    }

    #[test]
    fn comments_blank_lines_and_a_bom_are_skipped() {
        let dialect = CsvDialect {
            comment: Some(b'#'),
            ..CsvDialect::default()
        };
        let text = "\u{feff}a,b\n# note\n\n1,2\n";
        let mut f = Framer::new(text.as_bytes(), &dialect, 0, 1);
        assert!(f.read().unwrap());
        assert_eq!(f.raw(), b"a,b");
        assert!(f.read().unwrap());
        assert_eq!((f.record_line(), f.raw()), (4, &b"1,2"[..]));
        assert!(!f.read().unwrap());
    }

    #[test]
    fn records_larger_than_the_buffer_are_framed_whole() {
        let big = "x".repeat(READ_BUFFER * 2 + 17);
        let text = format!("a,b\n{big},1\n2,3\n");
        let records = frame(&text);
        assert_eq!(records[1].1[0].len(), big.len());
        assert_eq!(records[2].1, vec!["2", "3"]);
        assert_eq!(records[2].0, 3);
    }

    #[test]
    fn an_unbalanced_quote_fails_cleanly_instead_of_reading_the_whole_file() {
        let mut text = String::from("a,b\n1,\"oops\n");
        let line = "x".repeat(1023) + "\n";
        while text.len() <= MAX_RECORD + 4096 {
            text.push_str(&line);
        }
        let mut f = Framer::new(text.as_bytes(), &CsvDialect::default(), 0, 1);
        assert!(f.read().unwrap());
        match f.read() {
            Err(e @ FrameError::TooLong { line: 2 }) => {
                let m = e.into_error("t.csv", b'"').to_string();
                assert!(m.contains("`t.csv:2`") && m.contains("unbalanced"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn inference_reads_the_header_and_samples_rows() {
        let dir = TempDir::new("csv-infer");
        let path = dir.write(
            "t.csv",
            "id,price,ok,name,empty,\n1,2.5,true,a,,x\n2,3,FALSE,b,,y\nbad,row\n",
        );
        let settings = Settings::parse(&format!(r#"{{"path": "{path}"}}"#)).unwrap();
        let columns = infer(&path, &settings).unwrap();
        let got: Vec<(&str, ColumnType)> =
            columns.iter().map(|c| (c.name.as_str(), c.ty)).collect();
        assert_eq!(
            got,
            vec![
                ("id", ColumnType::Int64),
                ("price", ColumnType::Float64),
                ("ok", ColumnType::Boolean),
                ("name", ColumnType::Utf8),
                ("empty", ColumnType::Utf8),
                ("column_6", ColumnType::Utf8),
            ]
        );
    }

    #[test]
    fn without_a_header_columns_are_numbered() {
        let dir = TempDir::new("csv-noheader");
        let path = dir.write("t.csv", "1;x\n2;y\n");
        let settings = Settings::parse(&format!(
            r#"{{"path": "{path}", "csv": {{"header": false, "delimiter": ";"}}}}"#
        ))
        .unwrap();
        let columns = infer(&path, &settings).unwrap();
        assert_eq!(columns[0].name, "column_1");
        assert_eq!(columns[0].ty, ColumnType::Int64);
        assert_eq!(columns[1].name, "column_2");
    }

    #[test]
    fn duplicate_header_names_get_a_suffix() {
        let mut f = Framer::new(&b"a,a,,a\n"[..], &CsvDialect::default(), 0, 1);
        assert!(f.read().unwrap());
        assert_eq!(column_names(&f, true), vec!["a", "a_2", "column_3", "a_3"]);
    }
}

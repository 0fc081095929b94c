//! JSON Lines: one JSON object per line. Schema inference from a sample (the union of the
//! top-level keys in first-seen order) and the reader that turns lines into Arrow batches
//! and rejects. Blank lines are skipped; nested values are kept as their JSON text.
//!
//! A flat object (the common row) is read by the fast path of [`crate::json_object`];
//! every other line by serde_json, which reads the same keys and values from any line both
//! can read.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::Read;

use arrow_schema::SchemaRef;
use ingest_sdk::source::{Chunk, Replayed};
use ingest_sdk::{Error, Reject, Result};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::config::LastRecord;
use crate::json_object;
use crate::parts::Part;
use crate::position::{self, TextPosition};
use crate::scan::ByteSet;
use crate::types::{parse_bool, parse_date, parse_f64, parse_i64, parse_timestamp};
use crate::types::{Cell, ColumnBuilder, ColumnType, Inference};
use crate::{files, finish_batch, show, type_phrase, Column};

const READ_BUFFER: usize = 1 << 20;

/// The longest line read; a longer one fails the read instead of exhausting memory.
const MAX_LINE: usize = 64 << 20;

/// A JSON object as written on its line: the keys, and the raw text of each value, in
/// the order they are written (serde_json's own map sorts them, and inference must keep
/// first-seen order). Reading a row this way allocates nothing per value unless a string
/// holds escapes.
pub(crate) struct RawObject<'a>(pub(crate) Vec<(Text<'a>, &'a RawValue)>);

impl<'de> Deserialize<'de> for RawObject<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = RawObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(entry) = map.next_entry::<Text<'de>, &'de RawValue>()? {
                    entries.push(entry);
                }
                Ok(RawObject(entries))
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// A JSON string, borrowed from the line unless it holds escapes.
pub(crate) struct Text<'a>(pub(crate) Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// A line's content without its terminator, or `None` when it is blank.
fn content(line: &[u8]) -> Option<&[u8]> {
    let trimmed = line.trim_ascii();
    (!trimmed.is_empty()).then_some(trimmed)
}

/// Reads lines with their byte offsets and line numbers. Lines are found 16 bytes at a
/// time ([`crate::scan`]) and read where they lie in the buffer, without a copy.
struct Lines<R = File> {
    src: R,
    buf: Vec<u8>,
    /// The last line read is `buf[start..end]`, with its line feed when it has one.
    start: usize,
    end: usize,
    /// End of the bytes read into `buf`.
    hi: usize,
    eof: bool,
    /// Byte offset in the file and number of the line after the last one read.
    offset: u64,
    number: u64,
}

impl<R: Read> Lines<R> {
    fn new(src: R, offset: u64, number: u64) -> Self {
        Self::with_buffer(src, offset, number, READ_BUFFER)
    }

    /// As [`Lines::new`], reading `buffer` bytes at a time (the buffer grows for longer
    /// lines, up to [`MAX_LINE`]).
    fn with_buffer(src: R, offset: u64, number: u64, buffer: usize) -> Self {
        Lines {
            src,
            buf: vec![0; buffer.clamp(16, MAX_LINE + 1)],
            start: 0,
            end: 0,
            hi: 0,
            eof: false,
            offset,
            number,
        }
    }

    /// The last line read, with its line feed when it has one.
    fn line(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Read the next line; its number, or `None` at the end of the file.
    fn next(&mut self, path: &str) -> Result<Option<u64>> {
        let newline = ByteSet::new([b'\n'; 4]);
        let mut lo = self.end;
        let mut scanned = lo;
        let end = loop {
            if let Some(k) = newline.find(&self.buf[scanned..self.hi]) {
                break scanned + k + 1;
            }
            scanned = self.hi;
            if self.eof {
                if lo == self.hi {
                    return Ok(None);
                }
                break self.hi;
            }
            if self.hi - lo > MAX_LINE {
                break self.hi;
            }
            if lo > 0 {
                // Keep the line in progress; make room after it.
                self.buf.copy_within(lo..self.hi, 0);
                self.hi -= lo;
                scanned -= lo;
                lo = 0;
            }
            if self.hi == self.buf.len() {
                let len = (self.buf.len() * 2).min(MAX_LINE + 1);
                self.buf.resize(len, 0);
            }
            files::read_more(&mut self.src, &mut self.buf, &mut self.hi, &mut self.eof)
                .map_err(|e| files::io_error(path, "read", e))?;
        };
        if end - lo > MAX_LINE {
            return Err(Error::data(format!(
                "`{path}:{}`: the line is longer than {} MiB; JSON Lines needs one object \
                 per line",
                self.number,
                MAX_LINE >> 20
            )));
        }
        let number = self.number;
        (self.start, self.end) = (lo, end);
        self.offset += (end - lo) as u64;
        self.number += 1;
        Ok(Some(number))
    }

    /// Whether the last line read ends without a line feed: the last line of the file,
    /// which its writer may not have finished.
    fn unfinished(&self) -> bool {
        !self.line().ends_with(b"\n")
    }

    /// Give the last line back: the next [`Lines::next`] reads it again, and `offset` and
    /// `number` are where it starts.
    fn unread(&mut self) {
        self.offset -= (self.end - self.start) as u64;
        self.number -= 1;
        self.end = self.start;
    }
}

/// The columns of a JSON Lines file: keys in first-seen order over up to `infer_rows`
/// objects, with the narrowest type that fits every value.
pub fn infer(path: &str, infer_rows: usize) -> Result<Vec<Column>> {
    let file = File::open(path).map_err(|e| files::io_error(path, "open", e))?;
    let mut lines = Lines::new(file, 0, 1);
    let mut names: Vec<String> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut inferred: Vec<Inference> = Vec::new();
    let mut sampled = 0;
    while sampled < infer_rows && lines.next(path)?.is_some() {
        let Some(text) = content(lines.line()) else {
            continue;
        };
        // A line that is not an object is rejected when it is read; it says nothing here.
        let Ok(RawObject(entries)) = serde_json::from_slice::<RawObject>(text) else {
            continue;
        };
        for (Text(key), raw) in entries {
            let i = *index.entry(key.to_string()).or_insert_with(|| {
                names.push(key.into_owned());
                inferred.push(Inference::default());
                names.len() - 1
            });
            let value = serde_json::from_str::<Value>(raw.get()).unwrap_or(Value::Null);
            if !value.is_null() {
                inferred[i].json(&value);
            }
        }
        sampled += 1;
    }
    Ok(names
        .into_iter()
        .zip(inferred)
        .map(|(name, inference)| Column {
            name,
            ty: inference.column_type(),
        })
        .collect())
}

/// Reads one JSON Lines file into batches of the stream's schema.
pub struct JsonlReader {
    path: String,
    columns: Vec<Column>,
    index: HashMap<String, usize>,
    schema: SchemaRef,
    lines: Lines,
    /// Room for the entries of a line, kept from line to line.
    entries: Vec<json_object::Entry>,
    /// The part of the file this reader reads.
    part: Part,
    rows: u64,
    done: bool,
    last_record: LastRecord,
}

impl JsonlReader {
    /// Open `part` of `path` for the stream of `columns`, resuming after `position` when
    /// given.
    pub fn open(
        path: &str,
        columns: Vec<Column>,
        schema: SchemaRef,
        part: Part,
        position: Option<&[u8]>,
        last_record: LastRecord,
    ) -> Result<Self> {
        let at = TextPosition::resume(path, position, &part)?;
        let file = files::open_at(path, at.offset)?;
        let index = column_index(&columns);
        Ok(JsonlReader {
            path: path.to_string(),
            columns,
            index,
            schema,
            lines: Lines::new(file, at.offset, at.line),
            entries: Vec::new(),
            part,
            rows: at.rows,
            done: false,
            last_record,
        })
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
        let start = self.lines.offset;
        while rows + rejects.len() < max_rows && self.lines.offset - start < crate::MAX_CHUNK_BYTES
        {
            if self.part.is_past(self.lines.offset) {
                self.done = true;
                break;
            }
            let Some(number) = self.lines.next(&self.path)? else {
                self.done = true;
                break;
            };
            if self.last_record == LastRecord::Wait && self.lines.unfinished() {
                crate::note(&format!(
                    "`{}:{number}`: the last line has no line end yet; it is left for a later \
                     run (set `last_record = \"read\"` when files are complete)",
                    self.path
                ));
                self.lines.unread();
                self.done = true;
                break;
            }
            let Some(text) = content(self.lines.line()) else {
                continue;
            };
            match append_row(
                &self.columns,
                &self.index,
                text,
                &mut builders,
                &mut self.entries,
            ) {
                Ok(()) => rows += 1,
                Err(reason) => rejects.push(Reject::record(
                    String::from_utf8_lossy(text),
                    format!("{}:{number}", self.path),
                    reason,
                )),
            }
        }
        if rows == 0 && rejects.is_empty() {
            return Ok(None);
        }
        self.rows += rows as u64;
        let batch = finish_batch(&self.schema, &mut builders, rows)?;
        let position = position::encode(&TextPosition {
            offset: self.lines.offset,
            line: self.lines.number,
            rows: self.rows,
            split_bytes: self.part.split_bytes,
        });
        Ok(Some(Chunk {
            batch,
            position,
            rejects,
        }))
    }
}

/// Parse again lines rejected earlier, each on its own: the rows that parse now, and the
/// lines that still fail with their index in `records`.
pub fn replay(columns: Vec<Column>, schema: SchemaRef, records: Vec<String>) -> Result<Replayed> {
    let index = column_index(&columns);
    let mut builders: Vec<ColumnBuilder> = columns
        .iter()
        .map(|c| ColumnBuilder::new(c.ty, records.len()))
        .collect();
    let mut rows = 0;
    let mut rejects = Vec::new();
    let mut entries = Vec::new();
    for (i, record) in records.into_iter().enumerate() {
        let parsed = match content(record.as_bytes()) {
            Some(text) => append_row(&columns, &index, text, &mut builders, &mut entries),
            None => Err("the line is empty".to_string()),
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
    let batch = finish_batch(&schema, &mut builders, rows)?;
    Ok(Replayed { batch, rejects })
}

/// Each column's position by name, for keys that do not come in the columns' order.
fn column_index(columns: &[Column]) -> HashMap<String, usize> {
    columns
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.clone(), i))
        .collect()
}

/// Parse one line into `builders`, all or nothing; the reason when it does not fit.
/// `entries` is room for the fast path ([`json_object`]) to use from line to line.
fn append_row(
    columns: &[Column],
    index: &HashMap<String, usize>,
    text: &[u8],
    builders: &mut [ColumnBuilder],
    entries: &mut Vec<json_object::Entry>,
) -> Result<(), String> {
    if let Some(line) = json_object::scan(text, entries) {
        let entries = entries.iter().map(|e| {
            let (key, value) = (&line[e.key.0..e.key.1], &line[e.value.0..e.value.1]);
            (Cow::Borrowed(key), value, e.escaped)
        });
        return append_entries(columns, index, entries, builders);
    }
    let RawObject(entries) =
        serde_json::from_slice::<RawObject>(text).map_err(|e| format!("not a JSON object: {e}"))?;
    let backslash = ByteSet::new([b'\\'; 4]);
    let entries = entries.into_iter().map(|(Text(key), value)| {
        let raw = value.get();
        (key, raw, backslash.find(raw.as_bytes()).is_some())
    });
    append_entries(columns, index, entries, builders)
}

/// Append a row of `entries` (key, value as written, whether it holds escapes) to
/// `builders`, all or nothing.
fn append_entries<'a>(
    columns: &[Column],
    index: &HashMap<String, usize>,
    entries: impl Iterator<Item = (Cow<'a, str>, &'a str, bool)>,
    builders: &mut [ColumnBuilder],
) -> Result<(), String> {
    let rows = builders.first().map_or(0, ColumnBuilder::rows);
    let appended = append_values(columns, index, entries, builders, rows);
    for builder in builders.iter_mut() {
        match appended {
            // A column the line does not name is null.
            Ok(()) if builder.rows() == rows => builder.append_null(),
            Ok(()) => {}
            // All or nothing: take back the values of this row appended so far.
            Err(_) => builder.truncate(rows),
        }
    }
    appended
}

/// Append each of `entries` to the builder of its column, which holds `rows` rows before
/// the line; a key given twice keeps its last value.
fn append_values<'a>(
    columns: &[Column],
    index: &HashMap<String, usize>,
    entries: impl Iterator<Item = (Cow<'a, str>, &'a str, bool)>,
    builders: &mut [ColumnBuilder],
    rows: usize,
) -> Result<(), String> {
    for (k, (key, value, escaped)) in entries.enumerate() {
        // Keys usually come in the order of the columns; look them up only when not.
        let at = columns
            .get(k)
            .filter(|c| same_text(c.name.as_bytes(), key.as_bytes()))
            .map(|_| k);
        let Some(i) = at.or_else(|| index.get(key.as_ref()).copied()) else {
            return Err(format!(
                "key `{key}` is not a column of the stream (columns: {}); raise \
                 `infer_rows` if it appears only later in the first file",
                columns
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        let column = &columns[i];
        let value = cell(column.ty, value, escaped).ok_or_else(|| {
            format!(
                "column `{}`: `{}` is not {}",
                column.name,
                show(compact(value).as_bytes()),
                type_phrase(column.ty)
            )
        })?;
        if builders[i].rows() > rows {
            builders[i].truncate(rows);
        }
        builders[i].append(value);
    }
    Ok(())
}

/// `a == b`, eight bytes at a time, for short texts such as keys: `==` on slices calls
/// `memcmp`, which compiled to Wasm compares a byte at a time behind a call (4% of the
/// samples of a JSON Lines job, comparing every key of every line with its column's name).
fn same_text(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut a, mut b) = (a, b);
    while let (Some((x, rest_a)), Some((y, rest_b))) =
        (a.split_first_chunk::<8>(), b.split_first_chunk::<8>())
    {
        if u64::from_ne_bytes(*x) != u64::from_ne_bytes(*y) {
            return false;
        }
        (a, b) = (rest_a, rest_b);
    }
    a.iter().zip(b).all(|(x, y)| x == y)
}

/// A value as compact JSON (`{"k":[1]}`, `1.5` for `1.50`): how a value other than a
/// string is stored in a text column, and shown in errors.
fn compact(raw: &str) -> String {
    serde_json::from_str::<Value>(raw)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| raw.to_string())
}

/// `raw` (a value as written, `escaped` when it is a string with escapes) as a value of a
/// column of type `ty`, or `None` when it does not fit. Strings that spell a value of the
/// type are accepted for every type; a value other than a string in a text column is kept
/// as compact JSON.
fn cell(ty: ColumnType, raw: &str, escaped: bool) -> Option<Cell<'_>> {
    if raw == "null" {
        return Some(Cell::Null);
    }
    // A string is read as its unescaped text. Without escapes that is the text between the
    // quotes as written: reading the line has already checked the string.
    let text = if let Some(quoted) = raw.strip_prefix('"') {
        match quoted.strip_suffix('"') {
            Some(plain) if !escaped => Cow::Borrowed(plain),
            _ => serde_json::from_str::<Text>(raw).ok()?.0,
        }
    } else {
        match ty {
            ColumnType::Utf8 => Cow::Owned(compact(raw)),
            ColumnType::Boolean => {
                return matches!(raw, "true" | "false").then(|| Cell::Bool(raw == "true"))
            }
            ColumnType::Date | ColumnType::Timestamp => return None,
            // A number as written; `true`, `false`, objects and arrays do not parse.
            ColumnType::Int64 | ColumnType::Float64 => Cow::Borrowed(raw),
        }
    };
    let bytes = text.as_bytes();
    Some(match ty {
        ColumnType::Utf8 => Cell::Text(text),
        ColumnType::Int64 => Cell::Int(parse_i64(bytes)?),
        ColumnType::Float64 => Cell::Float(parse_f64(bytes)?),
        ColumnType::Boolean => Cell::Bool(parse_bool(bytes)?),
        ColumnType::Date => Cell::Date(parse_date(bytes)?),
        ColumnType::Timestamp => Cell::Timestamp(parse_timestamp(bytes)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    /// Every line of `text` read through a buffer of `buffer` bytes: (number, offset after
    /// it, text).
    fn read_lines(text: &[u8], buffer: usize) -> Vec<(u64, u64, Vec<u8>)> {
        let mut lines = Lines::with_buffer(text, 0, 1, buffer);
        let mut out = Vec::new();
        while let Some(number) = lines.next("t.jsonl").unwrap() {
            out.push((number, lines.offset, lines.line().to_vec()));
        }
        out
    }

    #[test]
    fn lines_are_read_whole_with_their_offsets_whatever_the_buffer() {
        let text = b"{\"a\": 1}\n\n{\"a\": \"x y z, a longer line than the buffer\"}\r\n{\"a\": 3}";
        let expected: Vec<(u64, u64, Vec<u8>)> = text
            .split_inclusive(|&b| b == b'\n')
            .scan((0u64, 0u64), |(n, at), line| {
                *n += 1;
                *at += line.len() as u64;
                Some((*n, *at, line.to_vec()))
            })
            .collect();
        assert_eq!(expected.len(), 4);
        for buffer in [16, 17, 31, 64, 1 << 20] {
            assert_eq!(
                read_lines(text, buffer),
                expected,
                "buffer of {buffer} bytes"
            );
        }
        assert!(read_lines(b"", 16).is_empty());
        assert_eq!(read_lines(b"\n", 16), [(1, 1, b"\n".to_vec())]);
    }

    #[test]
    fn a_line_longer_than_the_limit_fails_the_read_and_names_the_line() {
        let mut text = b"{}\n".to_vec();
        text.resize(text.len() + MAX_LINE + 1, b' ');
        let mut lines = Lines::with_buffer(text.as_slice(), 0, 1, 1 << 20);
        assert_eq!(lines.next("big.jsonl").unwrap(), Some(1));
        let error = lines.next("big.jsonl").unwrap_err().to_string();
        assert!(
            error.contains("`big.jsonl:2`") && error.contains("longer than 64 MiB"),
            "{error}"
        );
        // A line of exactly the limit, line feed included, is read.
        let mut text = vec![b' '; MAX_LINE - 1];
        text.push(b'\n');
        let mut lines = Lines::with_buffer(text.as_slice(), 0, 1, 1 << 20);
        assert_eq!(lines.next("t.jsonl").unwrap(), Some(1));
        assert_eq!(lines.line().len(), MAX_LINE);
        assert_eq!(lines.next("t.jsonl").unwrap(), None);
    }

    #[test]
    fn inference_takes_keys_in_first_seen_order_and_widens_types() {
        let dir = TempDir::new("jsonl-infer");
        let path = dir.write(
            "e.jsonl",
            concat!(
                "{\"z\": 1, \"a\": 1, \"s\": \"x\", \"nested\": {\"k\": [1]}}\n",
                "\n",
                "not json\n",
                "{\"a\": 2.5, \"b\": true, \"z\": null, \"mixed\": 1}\n",
                "{\"mixed\": \"one\", \"n\": null}\n",
            ),
        );
        let columns = infer(&path, 100).unwrap();
        let got: Vec<(&str, ColumnType)> =
            columns.iter().map(|c| (c.name.as_str(), c.ty)).collect();
        assert_eq!(
            got,
            vec![
                ("z", ColumnType::Int64),
                ("a", ColumnType::Float64),
                ("s", ColumnType::Utf8),
                ("nested", ColumnType::Utf8),
                ("b", ColumnType::Boolean),
                ("mixed", ColumnType::Utf8),
                ("n", ColumnType::Utf8),
            ]
        );
    }

    #[test]
    fn a_row_is_appended_whole_or_not_at_all_with_absent_keys_null_and_the_last_of_twins() {
        let columns = vec![
            Column {
                name: "id".into(),
                ty: ColumnType::Int64,
            },
            Column {
                name: "name".into(),
                ty: ColumnType::Utf8,
            },
        ];
        let index = column_index(&columns);
        let mut builders: Vec<ColumnBuilder> = columns
            .iter()
            .map(|c| ColumnBuilder::new(c.ty, 8))
            .collect();
        let mut entries = Vec::new();
        let mut append = |line: &str| {
            append_row(
                &columns,
                &index,
                line.as_bytes(),
                &mut builders,
                &mut entries,
            )
        };
        append(r#"{"id": 1, "name": "a"}"#).unwrap();
        // Fails at its second value, after the first was appended: nothing stays.
        let error = append(r#"{"name": "b", "id": "x"}"#).unwrap_err();
        assert!(error.contains("column `id`"), "{error}");
        assert!(append(r#"{"name": "c", "other": 1}"#)
            .unwrap_err()
            .contains("`other`"));
        append(r#"{"name": "d"}"#).unwrap();
        append(r#"{"id": 5, "id": 6, "name": "e", "name": "f"}"#).unwrap();
        // The same rows through serde_json (a nested value sends the line there).
        append(r#"{"id": 7, "id": 8, "name": "g", "name": {"h": 1}}"#).unwrap();
        assert!(append(r#"{"id": 9, "name": {"h": 1}, "id": [1]}"#).is_err());

        let arrays: Vec<_> = builders.iter_mut().map(ColumnBuilder::finish).collect();
        let ids = arrays[0]
            .as_any()
            .downcast_ref::<arrow_array::Int64Array>()
            .unwrap();
        let names = arrays[1]
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .unwrap();
        assert_eq!(
            ids.iter().collect::<Vec<_>>(),
            [Some(1), None, Some(6), Some(8)]
        );
        assert_eq!(
            names.iter().collect::<Vec<_>>(),
            [Some("a"), Some("d"), Some("f"), Some(r#"{"h":1}"#)]
        );
    }

    #[test]
    fn values_fit_their_column_or_are_refused() {
        let fits = |ty, v: Value| cell(ty, &v.to_string(), false).is_some();
        assert!(fits(ColumnType::Int64, serde_json::json!(3)));
        assert!(fits(ColumnType::Int64, serde_json::json!("3")));
        assert!(!fits(ColumnType::Int64, serde_json::json!(3.5)));
        assert!(fits(ColumnType::Float64, serde_json::json!(3)));
        assert!(!fits(ColumnType::Boolean, serde_json::json!(1)));
        assert!(fits(ColumnType::Utf8, serde_json::json!({"a": 1})));
        assert!(fits(ColumnType::Date, serde_json::json!("2024-01-31")));
        assert!(!fits(ColumnType::Date, serde_json::json!(20240131)));
    }

    #[test]
    fn keys_compare_equal_exactly_when_their_bytes_do() {
        let texts: Vec<Vec<u8>> = (0..20)
            .map(|n| (0..n).map(|i| b'a' + (i % 26) as u8).collect())
            .collect();
        for a in &texts {
            for b in &texts {
                assert_eq!(same_text(a, b), a == b);
            }
            for at in 0..a.len() {
                let mut other = a.clone();
                other[at] ^= 1;
                assert!(!same_text(a, &other), "{a:?} differs at {at}");
            }
        }
    }

    #[test]
    fn strings_are_read_as_their_text_with_escapes_resolved() {
        let text = |line: &str| {
            let RawObject(entries) = serde_json::from_str::<RawObject>(line).unwrap();
            let raw = entries[0].1.get();
            match cell(ColumnType::Utf8, raw, raw.contains('\\')) {
                Some(Cell::Text(t)) => t.into_owned(),
                _ => panic!("{line}: not read as text"),
            }
        };
        assert_eq!(
            text(r#"{"s": "plain, with 'quotes' and é"}"#),
            "plain, with 'quotes' and é"
        );
        assert_eq!(
            text(r#"{"s":"a \"quoted\" word\nand a line"}"#),
            "a \"quoted\" word\nand a line"
        );
        assert_eq!(text(r#"{"s": "tab\tend", "t": 1}"#), "tab\tend");
        assert_eq!(text(r#"{"s": "\u00e9t\u00e9"}"#), "été");
        assert_eq!(text(r#"{"s": ""}"#), "");
        assert_eq!(
            text(r#"{"s": "ends with a backslash \\"}"#),
            "ends with a backslash \\"
        );
        // Invalid strings never reach `cell`: reading the line refuses them.
        assert!(serde_json::from_str::<RawObject>("{\"s\": \"raw\tcontrol\"}").is_err());
        assert!(serde_json::from_str::<RawObject>(r#"{"s": "bad \q escape"}"#).is_err());
    }
}

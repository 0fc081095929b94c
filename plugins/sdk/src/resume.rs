//! Resuming table reads, for database sources: where a keyed or cursored read stands
//! ([`Position`]), how a chunk moves it on ([`Shape::advance`]) and how the rows a read
//! delivered before are told apart when it re-reads a cursor value ([`Shape::drop_delivered`]).
//!
//! - A full refresh with a key is read in key order: its position is the key of the last
//!   row delivered, and a resumed read starts after it.
//! - An incremental read is in cursor order: its position is the greatest cursor value
//!   delivered and the keys of the rows delivered at exactly that value. A resumed read
//!   reads that value again (more rows may have arrived at it) and drops those keys, so
//!   many rows sharing a cursor value, and a read interrupted among them, lose and repeat
//!   nothing.
//!
//! Key and cursor values are kept as the text Arrow formats them in (time stamps without
//! their zone: sources read them in UTC sessions); each source turns that text into its
//! own SQL literals.

use std::collections::HashSet;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, TimeUnit};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Separates key values in a seen-row key (a control character no key text holds).
const KEY_SEPARATOR: char = '\u{1f}';

/// The position after a chunk. Stored by the host as JSON bytes it does not read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Full refresh: the primary-key values (as text) of the last row delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Vec<String>>,
    /// Full refresh: the plan of splits this read belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// Full refresh: the whole split was delivered. A later plan reads it again; its
    /// own plan (a resumed run) reads nothing more of it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub done: bool,
    /// Rows delivered in this read (full refresh).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rows: u64,
    /// Incremental: the greatest cursor value delivered, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Incremental: the keys of the rows delivered at exactly `cursor`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Position {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a position serialises")
    }

    pub fn decode(bytes: &[u8]) -> std::result::Result<Position, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// Where a read of `stream` starts from this stored position. A finished full refresh
    /// starts over (every run reads the whole stream), and so does an interrupted one
    /// without a key to resume by (with a warning); other reads go on from here.
    pub fn start_of(self, stream: &str, full_refresh: bool) -> Position {
        if !full_refresh {
            return self;
        }
        if self.done {
            return Position::default();
        }
        if self.after.is_none() && self.rows > 0 {
            crate::host::log(
                crate::host::Level::Warn,
                &format!(
                    "stream `{stream}` has no primary key to resume by: reading it again from the first row"
                ),
            );
            return Position::default();
        }
        self
    }
}

/// How a stream's rows are told apart and ordered, as column indices of its batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// The stream, for messages.
    pub stream: String,
    /// Incremental: the cursor column. None: a full refresh.
    pub cursor: Option<usize>,
    /// The primary key's columns; empty without one.
    pub key: Vec<usize>,
    /// Every column of the stream (what tells rows apart without a key).
    pub width: usize,
}

impl Shape {
    /// The columns that tell rows apart at one cursor value: the key, else every column.
    fn identity(&self) -> Vec<usize> {
        if self.key.is_empty() {
            (0..self.width).collect()
        } else {
            self.key.clone()
        }
    }

    /// Drop from the front of `batch` the rows delivered before at the position's cursor
    /// value (incremental reads re-read that value in case more rows arrived at it).
    pub fn drop_delivered(&self, batch: RecordBatch, from: &Position) -> Result<RecordBatch> {
        let (Some(c), Some(cursor), false) =
            (self.cursor, from.cursor.as_ref(), from.seen.is_empty())
        else {
            return Ok(batch);
        };
        let cursor_arrays = columns(&batch, &[c]);
        let cursors = Texts::new(&cursor_arrays)?;
        let key_arrays = columns(&batch, &self.identity());
        let keys = Texts::new(&key_arrays)?;
        let seen: HashSet<&str> = from.seen.iter().map(String::as_str).collect();
        let mut keep = vec![true; batch.num_rows()];
        let mut dropped = 0;
        for (row, k) in keep.iter_mut().enumerate() {
            if cursors.first(row) != *cursor {
                break; // rows come in cursor order: past the tie, nothing was delivered
            }
            if seen.contains(keys.key(row).as_str()) {
                *k = false;
                dropped += 1;
            }
        }
        if dropped == 0 {
            return Ok(batch);
        }
        arrow_select::filter::filter_record_batch(&batch, &BooleanArray::from(keep))
            .map_err(|e| Error::fatal(format!("stream `{}`: {e}", self.stream)))
    }

    /// The position after `batch`, which was read from `from`.
    pub fn advance(&self, from: &Position, batch: &RecordBatch) -> Result<Position> {
        let mut next = from.clone();
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(next);
        }
        match self.cursor {
            None => {
                next.rows += rows as u64;
                if !self.key.is_empty() {
                    let key_arrays = columns(batch, &self.key);
                    next.after = Some(Texts::new(&key_arrays)?.values(rows - 1));
                }
            }
            Some(c) => {
                let cursor_arrays = columns(batch, &[c]);
                let cursors = Texts::new(&cursor_arrays)?;
                let key_arrays = columns(batch, &self.identity());
                let keys = Texts::new(&key_arrays)?;
                let last = cursors.first(rows - 1);
                let mut tie = Vec::new();
                for row in (0..rows).rev() {
                    if cursors.first(row) != last {
                        break;
                    }
                    tie.push(keys.key(row));
                }
                if next.cursor.as_deref() != Some(last.as_str()) {
                    next.seen.clear();
                }
                next.seen.extend(tie);
                next.cursor = Some(last);
            }
        }
        Ok(next)
    }
}

/// Column `column` of `batch`, ready to be formatted as the text a SQL literal of its type
/// reads back. Time stamps with a zone are UTC instants and sources read them in UTC
/// sessions, so the naive text of the instant reads back as the same instant (and
/// formatting it needs no time-zone database).
fn formattable(batch: &RecordBatch, column: usize) -> ArrayRef {
    let array = batch.column(column).clone();
    match array.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => Arc::new(
            array
                .as_primitive::<TimestampMicrosecondType>()
                .clone()
                .with_timezone_opt(None::<String>),
        ),
        _ => array,
    }
}

fn columns(batch: &RecordBatch, indices: &[usize]) -> Vec<ArrayRef> {
    indices.iter().map(|i| formattable(batch, *i)).collect()
}

/// Text of the values of the arrays `formattable` returns.
struct Texts<'a> {
    formatters: Vec<ArrayFormatter<'a>>,
    arrays: &'a [ArrayRef],
}

impl<'a> Texts<'a> {
    fn new(arrays: &'a [ArrayRef]) -> Result<Texts<'a>> {
        let formatters = arrays
            .iter()
            .map(|a| {
                ArrayFormatter::try_new(a.as_ref(), &FormatOptions::default())
                    .map_err(|e| Error::fatal(format!("cannot format a key or cursor value: {e}")))
            })
            .collect::<Result<_>>()?;
        Ok(Texts { formatters, arrays })
    }

    /// The text of the first array's value at `row`.
    fn first(&self, row: usize) -> String {
        self.formatters[0].value(row).to_string()
    }

    /// The values at `row` joined into one key (NULL as a NUL character).
    fn key(&self, row: usize) -> String {
        let mut key = String::new();
        for (i, (f, a)) in self.formatters.iter().zip(self.arrays).enumerate() {
            if i > 0 {
                key.push(KEY_SEPARATOR);
            }
            if a.is_null(row) {
                key.push('\u{0}');
            } else {
                key.push_str(&f.value(row).to_string());
            }
        }
        key
    }

    /// Each value at `row`, as text.
    fn values(&self, row: usize) -> Vec<String> {
        self.formatters
            .iter()
            .map(|f| f.value(row).to_string())
            .collect()
    }
}

/// Check the streams a database source resolved, `names` in order (`changes` marks the
/// ones read by change data capture), against the per-stream options the config gives for
/// `configured` names: no two streams share a name, a change stream is its source's only
/// stream (streams are read one after another and a change stream never ends, so the ones
/// after it would never be read), and every configured name is a stream.
pub fn check_streams(names: &[(&str, bool)], configured: &[&str]) -> Result<()> {
    let mut seen = HashSet::new();
    for (name, _) in names {
        if !seen.insert(*name) {
            return Err(Error::config(format!(
                "two streams are named `{name}`; rename the query"
            )));
        }
    }
    let list = |skip: &str| {
        names
            .iter()
            .filter(|(n, _)| *n != skip)
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some((cdc, _)) = names.iter().find(|(_, changes)| *changes) {
        if names.len() > 1 {
            return Err(Error::config(format!(
                "stream `{cdc}` is read by CDC, which never ends, and this source has other streams too ({}); a source with a `cdc` stream must have only that one: give the other tables a pipeline of their own",
                list(cdc)
            )));
        }
    }
    for name in configured {
        if !seen.contains(name) {
            return Err(Error::config(format!(
                "`streams.{name}` names no stream; the streams are: {}",
                list("")
            )));
        }
    }
    Ok(())
}

/// Whether `text` matches `glob` (`*` any run of characters, `?` one character).
pub fn glob_match(glob: &str, text: &str) -> bool {
    let g: Vec<char> = glob.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut gi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if gi < g.len() && (g[gi] == '?' || g[gi] == t[ti]) {
            gi += 1;
            ti += 1;
        } else if gi < g.len() && g[gi] == '*' {
            star = Some(gi);
            mark = ti;
            gi += 1;
        } else if let Some(s) = star {
            gi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while gi < g.len() && g[gi] == '*' {
        gi += 1;
    }
    gi == g.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int32Array, StringArray};
    use arrow_schema::{Field, Schema};

    #[test]
    fn a_change_stream_stands_alone_and_every_configured_stream_exists() {
        assert!(check_streams(&[("a", false), ("b", false)], &["a"]).is_ok());
        let e = check_streams(&[("a", true), ("b", false)], &[]).unwrap_err();
        assert!(e.to_string().contains("must have only that one") && e.to_string().contains("(b)"));
        let e = check_streams(&[("a", false)], &["c"]).unwrap_err();
        assert!(e
            .to_string()
            .contains("`streams.c` names no stream; the streams are: a"));
        let e = check_streams(&[("a", false), ("a", false)], &[]).unwrap_err();
        assert!(e.to_string().contains("two streams are named `a`"));
    }

    #[test]
    fn globs_match_schema_dot_table() {
        assert!(glob_match("public.*", "public.orders"));
        assert!(glob_match("*.ord?rs", "sales.orders"));
        assert!(!glob_match("public.*", "sales.orders"));
        assert!(glob_match("public.orders", "public.orders"));
    }

    fn batch(ids: &[i32], cursors: &[&str]) -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int32, false),
                Field::new("at", DataType::Utf8, false),
            ])),
            vec![
                Arc::new(Int32Array::from(ids.to_vec())),
                Arc::new(StringArray::from(cursors.to_vec())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn rows_delivered_at_the_last_cursor_value_are_dropped_when_it_is_read_again() {
        let shape = Shape {
            stream: "s".into(),
            cursor: Some(1),
            key: vec![0],
            width: 2,
        };
        let first = batch(&[1, 2, 3], &["a", "b", "b"]);
        let at = shape.advance(&Position::default(), &first).unwrap();
        assert_eq!(at.cursor.as_deref(), Some("b"));
        assert_eq!(at.seen.len(), 2);
        // Read again from `b`: 2 and 3 were delivered, 4 arrived since.
        let again = batch(&[2, 3, 4, 5], &["b", "b", "b", "c"]);
        let kept = shape.drop_delivered(again, &at).unwrap();
        let ids: Vec<i32> = kept
            .column(0)
            .as_primitive::<arrow_array::types::Int32Type>()
            .values()
            .to_vec();
        assert_eq!(ids, [4, 5]);
    }

    #[test]
    fn a_full_refresh_position_is_the_last_key() {
        let shape = Shape {
            stream: "s".into(),
            cursor: None,
            key: vec![0],
            width: 2,
        };
        let at = shape
            .advance(&Position::default(), &batch(&[7, 9], &["x", "y"]))
            .unwrap();
        assert_eq!(at.after, Some(vec!["9".to_string()]));
        assert_eq!(at.rows, 2);
    }
}

//! Column types of CSV and JSON Lines streams: their names in the config, their Arrow
//! types, how a text value parses into each, and the builders that collect a batch.
//!
//! Parsing works on bytes so the CSV reader never allocates per value; every parser
//! returns `None` for a value that does not fit, and the caller turns that into a reject.

use std::borrow::Cow;
use std::sync::Arc;

use arrow_array::builder::{BooleanBufferBuilder, NullBufferBuilder};
use arrow_array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, Int64Array, StringArray,
    TimestampMicrosecondArray,
};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{DataType, TimeUnit};

/// The type of one column, as `[schema]` names it (the JSON Schema of the config lists
/// these names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    Int64,
    Float64,
    Boolean,
    Utf8,
    Date,
    Timestamp,
}

/// The names `[schema]` accepts, for error messages.
pub const TYPE_NAMES: &str = "int64, float64, boolean, utf8, date, timestamp";

impl ColumnType {
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "int64" => ColumnType::Int64,
            "float64" => ColumnType::Float64,
            "boolean" => ColumnType::Boolean,
            "utf8" => ColumnType::Utf8,
            "date" => ColumnType::Date,
            "timestamp" => ColumnType::Timestamp,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Int64 => "int64",
            ColumnType::Float64 => "float64",
            ColumnType::Boolean => "boolean",
            ColumnType::Utf8 => "utf8",
            ColumnType::Date => "date",
            ColumnType::Timestamp => "timestamp",
        }
    }

    pub fn data_type(self) -> DataType {
        match self {
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Utf8 => DataType::Utf8,
            ColumnType::Date => DataType::Date32,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }
}

/// What a sample told about one column: which types every non-null value fits.
#[derive(Debug, Clone)]
pub struct Inference {
    seen: bool,
    int: bool,
    float: bool,
    boolean: bool,
}

impl Default for Inference {
    fn default() -> Self {
        Inference {
            seen: false,
            int: true,
            float: true,
            boolean: true,
        }
    }
}

impl Inference {
    /// Account for one non-null text value.
    pub fn text(&mut self, value: &[u8]) {
        self.seen = true;
        if self.int && parse_i64(value).is_none() {
            self.int = false;
        }
        if self.float && !self.int && parse_f64(value).is_none() {
            self.float = false;
        }
        if self.boolean && parse_bool(value).is_none() {
            self.boolean = false;
        }
    }

    /// Account for one non-null JSON value.
    pub fn json(&mut self, value: &serde_json::Value) {
        use serde_json::Value;
        self.seen = true;
        match value {
            Value::Null => {}
            Value::Number(n) => {
                self.boolean = false;
                if n.as_i64().is_none() {
                    self.int = false;
                }
            }
            Value::Bool(_) => {
                self.int = false;
                self.float = false;
            }
            Value::String(_) | Value::Array(_) | Value::Object(_) => {
                self.int = false;
                self.float = false;
                self.boolean = false;
            }
        }
    }

    /// The narrowest type every value seen fits; utf8 when nothing was seen.
    pub fn column_type(&self) -> ColumnType {
        if !self.seen {
            ColumnType::Utf8
        } else if self.int {
            ColumnType::Int64
        } else if self.float {
            ColumnType::Float64
        } else if self.boolean {
            ColumnType::Boolean
        } else {
            ColumnType::Utf8
        }
    }
}

pub use ingest_sdk::parse::{parse_date, parse_timestamp};

fn trim(value: &[u8]) -> &[u8] {
    value.trim_ascii()
}

/// A decimal integer with an optional sign; surrounding spaces are ignored.
pub fn parse_i64(value: &[u8]) -> Option<i64> {
    let v = trim(value);
    let (negative, digits) = match v.first()? {
        b'-' => (true, &v[1..]),
        b'+' => (false, &v[1..]),
        _ => (false, v),
    };
    if digits.is_empty() {
        return None;
    }
    // Up to 18 digits cannot overflow, so skip the checked arithmetic (which costs a
    // 128-bit multiply per digit on wasm32).
    if digits.len() <= 18 {
        let mut acc: i64 = 0;
        for &b in digits {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            acc = acc * 10 + i64::from(d);
        }
        return Some(if negative { -acc } else { acc });
    }
    // Accumulate negatively so i64::MIN parses without overflow.
    let mut acc: i64 = 0;
    for &b in digits {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        acc = acc.checked_mul(10)?.checked_sub(i64::from(d))?;
    }
    if negative {
        Some(acc)
    } else {
        acc.checked_neg()
    }
}

/// A decimal or scientific float (Rust's float syntax, which includes `NaN` and `inf`);
/// surrounding spaces are ignored.
pub fn parse_f64(value: &[u8]) -> Option<f64> {
    let v = trim(value);
    match plain_decimal(v) {
        Some(f) => Some(f),
        None => std::str::from_utf8(v).ok()?.parse().ok(),
    }
}

/// The common case, `-123.45`, without the general parser: with at most 15 digits both
/// the digits and the power of ten are exact doubles, so one division rounds correctly
/// (Clinger's fast path). `None` sends anything else to the general parser.
fn plain_decimal(v: &[u8]) -> Option<f64> {
    const POW10: [f64; 16] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    ];
    let (negative, body) = match v.first()? {
        b'-' => (true, &v[1..]),
        b'+' => (false, &v[1..]),
        _ => (false, v),
    };
    let (mut mantissa, mut digits, mut fraction) = (0u64, 0usize, 0usize);
    let mut dot = false;
    for &b in body {
        match b {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(b - b'0');
                digits += 1;
                fraction += usize::from(dot);
                if digits > 15 {
                    return None;
                }
            }
            b'.' if !dot => dot = true,
            _ => return None,
        }
    }
    if digits == 0 {
        return None;
    }
    let value = mantissa as f64 / POW10[fraction];
    Some(if negative { -value } else { value })
}

/// `true` or `false` in any case; surrounding spaces are ignored.
pub fn parse_bool(value: &[u8]) -> Option<bool> {
    let v = trim(value);
    if v.eq_ignore_ascii_case(b"true") {
        Some(true)
    } else if v.eq_ignore_ascii_case(b"false") {
        Some(false)
    } else {
        None
    }
}

/// One parsed value of a JSON Lines row, held until the whole row is known to be good so
/// a bad value never leaves a half-appended row behind.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Date(i32),
    Timestamp(i64),
    /// Text, borrowed from the line unless it had to be unescaped or rendered.
    Text(Cow<'a, str>),
}

/// Collects one column of a batch in plain buffers. A row is appended value by value and
/// can be taken back ([`ColumnBuilder::truncate`]) when a later value of it fails to parse.
pub struct ColumnBuilder {
    ty: ColumnType,
    data: Data,
    nulls: NullBufferBuilder,
}

enum Data {
    /// Int64 and timestamps (microseconds).
    I64(Vec<i64>),
    F64(Vec<f64>),
    Bool(BooleanBufferBuilder),
    /// Dates (days since the epoch).
    I32(Vec<i32>),
    /// Text: value `i` is `values[offsets[i]..offsets[i + 1]]`. Only `&str`s are appended,
    /// so the values are UTF-8 and the offsets ascending.
    Utf8 {
        offsets: Vec<i32>,
        values: Vec<u8>,
    },
}

impl ColumnBuilder {
    /// A builder for about `rows` rows; capacity is capped so a huge `max_rows` from the
    /// host cannot make one allocation fail, and the builder grows past it if needed.
    pub fn new(ty: ColumnType, rows: usize) -> Self {
        let rows = rows.min(1 << 16);
        let data = match ty {
            ColumnType::Int64 | ColumnType::Timestamp => Data::I64(Vec::with_capacity(rows)),
            ColumnType::Float64 => Data::F64(Vec::with_capacity(rows)),
            ColumnType::Boolean => Data::Bool(BooleanBufferBuilder::new(rows)),
            ColumnType::Date => Data::I32(Vec::with_capacity(rows)),
            ColumnType::Utf8 => {
                let mut offsets = Vec::with_capacity(rows + 1);
                offsets.push(0);
                Data::Utf8 {
                    offsets,
                    values: Vec::with_capacity(rows * 16),
                }
            }
        };
        ColumnBuilder {
            ty,
            data,
            nulls: NullBufferBuilder::new(rows),
        }
    }

    /// Parse `value` as the column's type and append it; `false` (and nothing appended)
    /// when it does not fit. Text is appended from `text`, the value as validated UTF-8.
    #[inline]
    pub fn append_parsed<'a>(
        &mut self,
        value: &[u8],
        text: impl FnOnce() -> Option<&'a str>,
    ) -> bool {
        let ok = match &mut self.data {
            Data::I64(v) => match self.ty {
                ColumnType::Timestamp => parse_timestamp(value).map(|x| v.push(x)).is_some(),
                _ => parse_i64(value).map(|x| v.push(x)).is_some(),
            },
            Data::F64(v) => parse_f64(value).map(|x| v.push(x)).is_some(),
            Data::Bool(b) => parse_bool(value).map(|x| b.append(x)).is_some(),
            Data::I32(v) => parse_date(value).map(|x| v.push(x)).is_some(),
            Data::Utf8 { offsets, values } => match text() {
                Some(s) => {
                    push_str(offsets, values, s);
                    true
                }
                None => false,
            },
        };
        if ok {
            self.nulls.append_non_null();
        }
        ok
    }

    /// Append one cell. A cell of another type than the column's is a bug in the caller,
    /// appended as null.
    pub fn append(&mut self, cell: Cell) {
        match (&mut self.data, cell) {
            (Data::I64(v), Cell::Int(x)) if self.ty == ColumnType::Int64 => v.push(x),
            (Data::I64(v), Cell::Timestamp(x)) if self.ty == ColumnType::Timestamp => v.push(x),
            (Data::F64(v), Cell::Float(x)) => v.push(x),
            (Data::Bool(b), Cell::Bool(x)) => b.append(x),
            (Data::I32(v), Cell::Date(x)) => v.push(x),
            (Data::Utf8 { offsets, values }, Cell::Text(s)) => push_str(offsets, values, &s),
            _ => return self.append_null(),
        }
        self.nulls.append_non_null();
    }

    pub fn append_null(&mut self) {
        match &mut self.data {
            Data::I64(v) => v.push(0),
            Data::F64(v) => v.push(0.0),
            Data::Bool(b) => b.append(false),
            Data::I32(v) => v.push(0),
            Data::Utf8 { offsets, values } => offsets.push(offset(values.len())),
        }
        self.nulls.append_null();
    }

    /// Number of values (rows) appended.
    pub fn rows(&self) -> usize {
        self.nulls.len()
    }

    /// Keep only the first `len` values.
    pub fn truncate(&mut self, len: usize) {
        match &mut self.data {
            Data::I64(v) => v.truncate(len),
            Data::F64(v) => v.truncate(len),
            Data::Bool(b) => b.truncate(len),
            Data::I32(v) => v.truncate(len),
            Data::Utf8 { offsets, values } => {
                offsets.truncate(len + 1);
                values.truncate(offsets[len] as usize);
            }
        }
        self.nulls.truncate(len);
    }

    /// The column so far; the builder starts over empty.
    pub fn finish(&mut self) -> ArrayRef {
        let fresh = ColumnBuilder::new(self.ty, 0);
        let ColumnBuilder {
            data, mut nulls, ..
        } = std::mem::replace(self, fresh);
        let nulls = nulls.finish();
        match data {
            Data::I64(v) if self.ty == ColumnType::Timestamp => {
                Arc::new(TimestampMicrosecondArray::new(v.into(), nulls).with_timezone("UTC"))
            }
            Data::I64(v) => Arc::new(Int64Array::new(v.into(), nulls)),
            Data::F64(v) => Arc::new(Float64Array::new(v.into(), nulls)),
            Data::Bool(mut b) => Arc::new(BooleanArray::new(b.finish(), nulls)),
            Data::I32(v) => Arc::new(Date32Array::new(v.into(), nulls)),
            Data::Utf8 { offsets, values } => {
                // SAFETY: offsets start at 0, never decrease and end at `values.len()`
                // (push_str and append_null are the only writers; truncate cuts both
                // together), and every value appended was a `&str`.
                let offsets = unsafe { OffsetBuffer::new_unchecked(offsets.into()) };
                Arc::new(unsafe { StringArray::new_unchecked(offsets, values.into(), nulls) })
            }
        }
    }
}

/// The offset of the end of `len` bytes of values. A batch is a few MiB (the source caps
/// chunks), far below `i32::MAX`; going past it is a bug, so it panics.
fn offset(len: usize) -> i32 {
    i32::try_from(len).expect("a batch's text stays below 2 GiB")
}

#[inline]
fn push_str(offsets: &mut Vec<i32>, values: &mut Vec<u8>, s: &str) {
    crate::scan::extend(values, s.as_bytes());
    offsets.push(offset(values.len()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;

    #[test]
    fn a_builder_takes_back_values_and_keeps_nulls_in_step() {
        let mut text = ColumnBuilder::new(ColumnType::Utf8, 4);
        let mut ints = ColumnBuilder::new(ColumnType::Int64, 4);
        assert!(text.append_parsed(b"a", || Some("a")));
        ints.append_null();
        assert!(text.append_parsed(b"bc", || Some("bc")));
        assert!(!ints.append_parsed(b"x", || None), "not a number");
        text.truncate(1);
        assert_eq!(ints.rows(), 1, "a failed parse appends nothing");
        text.append_null();
        assert!(ints.append_parsed(b"7", || None));
        let text = text.finish();
        let text = text.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(text.len(), 2);
        assert_eq!(text.value(0), "a");
        assert!(text.is_null(1));
        let ints = ints.finish();
        let ints = ints.as_any().downcast_ref::<Int64Array>().unwrap();
        assert!(ints.is_null(0));
        assert_eq!(ints.value(1), 7);
    }

    #[test]
    fn integers_parse_with_sign_and_spaces_and_reject_overflow() {
        assert_eq!(parse_i64(b"42"), Some(42));
        assert_eq!(parse_i64(b" -7 "), Some(-7));
        assert_eq!(parse_i64(b"+3"), Some(3));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(
            parse_i64(b"-999999999999999999"),
            Some(-999_999_999_999_999_999)
        );
        assert_eq!(parse_i64(b"99999999999999999999"), None);
        assert_eq!(parse_i64(b""), None);
        assert_eq!(parse_i64(b"-"), None);
        assert_eq!(parse_i64(b"1.0"), None);
        assert_eq!(parse_i64(b"1e3"), None);
    }

    #[test]
    fn floats_and_booleans_parse() {
        assert_eq!(parse_f64(b"1.5"), Some(1.5));
        assert_eq!(parse_f64(b"-2e3"), Some(-2000.0));
        assert_eq!(parse_f64(b"abc"), None);
        assert_eq!(parse_f64(b"."), None);
        assert_eq!(parse_f64(b"1.2.3"), None);
        assert_eq!(parse_f64(b"NaN").map(f64::is_nan), Some(true));
        assert_eq!(parse_bool(b"TRUE"), Some(true));
        assert_eq!(parse_bool(b"False"), Some(false));
        assert_eq!(parse_bool(b"yes"), None);
    }

    #[test]
    fn the_decimal_fast_path_agrees_with_the_general_parser() {
        for text in [
            "0",
            "-0",
            "0.1",
            "0.3",
            "-2.675",
            "123456789012345",
            "1234567.89012345",
            "99999999999999.9",
            ".5",
            "5.",
            "+7.25",
            "0.000000000000001",
            "1234567890123456",
            "3.14159265358979",
            "12345678901234567890",
        ] {
            let general: f64 = text.parse().unwrap();
            let got = parse_f64(text.as_bytes()).unwrap();
            assert_eq!(got.to_bits(), general.to_bits(), "{text}");
        }
    }

    #[test]
    fn inference_picks_the_narrowest_type_that_fits_every_value() {
        let infer = |values: &[&str]| {
            let mut i = Inference::default();
            for v in values {
                i.text(v.as_bytes());
            }
            i.column_type()
        };
        assert_eq!(infer(&["1", "2", "-3"]), ColumnType::Int64);
        assert_eq!(infer(&["1", "2.5"]), ColumnType::Float64);
        assert_eq!(infer(&["true", "FALSE"]), ColumnType::Boolean);
        assert_eq!(infer(&["1", "x"]), ColumnType::Utf8);
        assert_eq!(infer(&["2024-01-01T00:00:00Z"]), ColumnType::Utf8);
        assert_eq!(infer(&[]), ColumnType::Utf8);
    }
}

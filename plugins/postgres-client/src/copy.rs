//! Binary `COPY` and Arrow: [`Decoder`] turns the bytes of `COPY … TO STDOUT (FORMAT
//! binary)` straight into Arrow arrays, one builder per column, with no intermediate rows;
//! [`Encoder`] writes Arrow batches as the bytes `COPY … FROM STDIN (FORMAT binary)` reads.
//!
//! The format: an 11-byte signature, a flags word and a header extension; then per row a
//! 16-bit field count and per field a 32-bit length (-1 for NULL) and the value in the
//! type's binary send format; a field count of -1 ends the data.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, FixedSizeBinaryBuilder,
    Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type,
    Time64MicrosecondType, TimestampMicrosecondType,
};
use arrow_array::{Array, ArrayRef, ListArray, RecordBatch};
use arrow_buffer::{NullBuffer, NullBufferBuilder, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, SchemaRef};

use crate::interval;
use crate::types::PgKind;

/// The signature, flags and (empty) extension that open binary COPY data.
pub const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The field count that ends binary COPY data.
pub const TRAILER: &[u8] = &[0xff, 0xff];

/// Days from 1970-01-01 (Arrow's epoch) to 2000-01-01 (Postgres's).
const EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const EPOCH_MICROS: i64 = 946_684_800_000_000;

/// Decodes binary COPY data into Arrow arrays.
pub struct Decoder {
    names: Vec<String>,
    columns: Vec<ColumnBuilder>,
    /// Bytes of a row not complete yet.
    pending: Vec<u8>,
    header_done: bool,
    finished: bool,
    rows: usize,
    /// Rows decoded since the COPY started, for error messages.
    total_rows: u64,
}

/// A value the decoder could not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// The column, when the error is in a value.
    pub column: Option<String>,
    /// The 1-based row of the COPY.
    pub row: u64,
    pub message: String,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.column {
            Some(c) => write!(f, "row {}, column `{c}`: {}", self.row, self.message),
            None => write!(f, "row {}: {}", self.row, self.message),
        }
    }
}

impl Decoder {
    /// A decoder for rows of `columns` (name and kind), in that order.
    pub fn new(columns: &[(String, PgKind)]) -> Decoder {
        Decoder {
            names: columns.iter().map(|(n, _)| n.clone()).collect(),
            columns: columns.iter().map(|(_, k)| ColumnBuilder::new(k)).collect(),
            pending: Vec::new(),
            header_done: false,
            finished: false,
            rows: 0,
            total_rows: 0,
        }
    }

    /// Rows decoded and not yet taken by [`Decoder::finish`].
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The trailer was seen: the COPY data is complete.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Decode every complete row in `data` (the next bytes of the COPY data, split
    /// anywhere), keeping an incomplete tail for the next call.
    pub fn push(&mut self, data: &[u8]) -> Result<(), DecodeError> {
        if self.pending.is_empty() {
            let used = self.decode(data)?;
            self.pending.extend_from_slice(&data[used..]);
        } else {
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(data);
            let used = self.decode(&pending)?;
            pending.drain(..used);
            self.pending = pending;
        }
        Ok(())
    }

    /// Append one row given as binary values (`None` for NULL), in the columns' order.
    pub fn append_row(&mut self, values: &[Option<&[u8]>]) -> Result<(), DecodeError> {
        if values.len() != self.columns.len() {
            return Err(self.error(
                None,
                &format!(
                    "a row has {} values, expected {}",
                    values.len(),
                    self.columns.len()
                ),
            ));
        }
        for (c, value) in values.iter().enumerate() {
            if let Err(message) = self.columns[c].append(*value) {
                return Err(self.error(Some(c), &message));
            }
        }
        self.rows += 1;
        self.total_rows += 1;
        Ok(())
    }

    /// Decode complete rows from the front of `data`; returns the bytes used.
    fn decode(&mut self, data: &[u8]) -> Result<usize, DecodeError> {
        let mut at = 0;
        if !self.header_done {
            if data.len() < 19 {
                return Ok(0);
            }
            if &data[..11] != b"PGCOPY\n\xff\r\n\0" {
                return Err(self.error(
                    None,
                    "the COPY data does not start with the binary signature",
                ));
            }
            let ext = be_u32(&data[15..19]) as usize;
            if data.len() < 19 + ext {
                return Ok(0);
            }
            at = 19 + ext;
            self.header_done = true;
        }
        while at + 2 <= data.len() && !self.finished {
            let count = i16::from_be_bytes([data[at], data[at + 1]]);
            if count == -1 {
                self.finished = true;
                at += 2;
                break;
            }
            if count as usize != self.columns.len() {
                return Err(self.error(
                    None,
                    &format!("a row has {count} fields, expected {}", self.columns.len()),
                ));
            }
            // Find the row's end before appending anything, so that a row split across
            // two calls is decoded whole.
            let mut end = at + 2;
            let mut complete = true;
            for _ in 0..count {
                if end + 4 > data.len() {
                    complete = false;
                    break;
                }
                let len =
                    i32::from_be_bytes([data[end], data[end + 1], data[end + 2], data[end + 3]]);
                end += 4 + len.max(0) as usize;
                if end > data.len() {
                    complete = false;
                    break;
                }
            }
            if !complete {
                break;
            }
            let mut p = at + 2;
            for c in 0..self.columns.len() {
                let len = i32::from_be_bytes([data[p], data[p + 1], data[p + 2], data[p + 3]]);
                p += 4;
                let value = if len < 0 {
                    None
                } else {
                    let v = &data[p..p + len as usize];
                    p += len as usize;
                    Some(v)
                };
                if let Err(message) = self.columns[c].append(value) {
                    return Err(self.error(Some(c), &message));
                }
            }
            at = end;
            self.rows += 1;
            self.total_rows += 1;
        }
        Ok(at)
    }

    fn error(&self, column: Option<usize>, message: &str) -> DecodeError {
        DecodeError {
            column: column.map(|c| self.names[c].clone()),
            row: self.total_rows + 1,
            message: message.to_string(),
        }
    }

    /// The rows decoded so far as one batch of `schema` (whose fields are the columns'
    /// kinds, in order); the decoder starts a new batch.
    pub fn finish(&mut self, schema: SchemaRef) -> Result<RecordBatch, arrow_schema::ArrowError> {
        let arrays: Vec<ArrayRef> = self.columns.iter_mut().map(ColumnBuilder::finish).collect();
        self.rows = 0;
        if arrays.is_empty() {
            return Ok(RecordBatch::new_empty(schema));
        }
        RecordBatch::try_new(schema, arrays)
    }
}

/// Move a day number between the epochs; ±infinity (the ends of the range) stay put.
fn shift_days(days: i32, by: i32) -> i32 {
    if days == i32::MAX || days == i32::MIN {
        days
    } else {
        days.saturating_add(by)
    }
}

/// Move a microsecond timestamp between the epochs; ±infinity stay put.
fn shift_micros(micros: i64, by: i64) -> i64 {
    if micros == i64::MAX || micros == i64::MIN {
        micros
    } else {
        micros.saturating_add(by)
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn fixed<const N: usize>(v: &[u8], what: &str) -> Result<[u8; N], String> {
    v.try_into()
        .map_err(|_| format!("a {what} value of {} bytes, expected {N}", v.len()))
}

/// The builder of one column.
enum ColumnBuilder {
    Bool(BooleanBuilder),
    Int2(Int16Builder),
    Int4(Int32Builder),
    Int8(Int64Builder),
    Oid(Int64Builder),
    Float4(Float32Builder),
    Float8(Float64Builder),
    Numeric(Decimal128Builder, i8),
    NumericText(StringBuilder),
    Text(StringBuilder),
    Char(StringBuilder),
    Jsonb(StringBuilder),
    Bytea(BinaryBuilder),
    Date(Date32Builder),
    Time(Time64MicrosecondBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    Timestamptz(TimestampMicrosecondBuilder),
    Interval(StringBuilder),
    Uuid(FixedSizeBinaryBuilder),
    Array {
        field: Arc<Field>,
        values: Box<ColumnBuilder>,
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
    },
}

impl ColumnBuilder {
    fn new(kind: &PgKind) -> ColumnBuilder {
        match kind {
            PgKind::Bool => ColumnBuilder::Bool(BooleanBuilder::new()),
            PgKind::Int2 => ColumnBuilder::Int2(Int16Builder::new()),
            PgKind::Int4 => ColumnBuilder::Int4(Int32Builder::new()),
            PgKind::Int8 => ColumnBuilder::Int8(Int64Builder::new()),
            PgKind::Oid => ColumnBuilder::Oid(Int64Builder::new()),
            PgKind::Float4 => ColumnBuilder::Float4(Float32Builder::new()),
            PgKind::Float8 => ColumnBuilder::Float8(Float64Builder::new()),
            PgKind::Numeric { precision, scale } => ColumnBuilder::Numeric(
                Decimal128Builder::new()
                    .with_precision_and_scale(*precision, *scale)
                    .expect("precision 1-38 and scale within it, checked by types"),
                *scale,
            ),
            PgKind::NumericText => ColumnBuilder::NumericText(StringBuilder::new()),
            PgKind::Text | PgKind::Json => ColumnBuilder::Text(StringBuilder::new()),
            PgKind::Char => ColumnBuilder::Char(StringBuilder::new()),
            PgKind::Jsonb => ColumnBuilder::Jsonb(StringBuilder::new()),
            PgKind::Bytea => ColumnBuilder::Bytea(BinaryBuilder::new()),
            PgKind::Date => ColumnBuilder::Date(Date32Builder::new()),
            PgKind::Time => ColumnBuilder::Time(Time64MicrosecondBuilder::new()),
            PgKind::Timestamp => ColumnBuilder::Timestamp(TimestampMicrosecondBuilder::new()),
            PgKind::Timestamptz => ColumnBuilder::Timestamptz(
                TimestampMicrosecondBuilder::new().with_timezone(crate::types::UTC),
            ),
            PgKind::Interval => ColumnBuilder::Interval(StringBuilder::new()),
            PgKind::Uuid => ColumnBuilder::Uuid(FixedSizeBinaryBuilder::new(16)),
            PgKind::Array { elem, .. } => ColumnBuilder::Array {
                field: Arc::new(elem.field("item")),
                values: Box::new(ColumnBuilder::new(elem)),
                offsets: vec![0],
                nulls: NullBufferBuilder::new(0),
            },
        }
    }

    fn append(&mut self, value: Option<&[u8]>) -> Result<(), String> {
        let Some(v) = value else {
            self.append_null();
            return Ok(());
        };
        match self {
            ColumnBuilder::Bool(b) => b.append_value(fixed::<1>(v, "bool")?[0] != 0),
            ColumnBuilder::Int2(b) => b.append_value(i16::from_be_bytes(fixed(v, "int2")?)),
            ColumnBuilder::Int4(b) => b.append_value(i32::from_be_bytes(fixed(v, "int4")?)),
            ColumnBuilder::Int8(b) => b.append_value(i64::from_be_bytes(fixed(v, "int8")?)),
            ColumnBuilder::Oid(b) => b.append_value(u32::from_be_bytes(fixed(v, "oid")?) as i64),
            ColumnBuilder::Float4(b) => b.append_value(f32::from_be_bytes(fixed(v, "float4")?)),
            ColumnBuilder::Float8(b) => b.append_value(f64::from_be_bytes(fixed(v, "float8")?)),
            ColumnBuilder::Numeric(b, scale) => b.append_value(numeric_to_i128(v, *scale)?),
            ColumnBuilder::NumericText(b) => b.append_value(Numeric::read(v)?.to_text()),
            ColumnBuilder::Text(b) => b.append_value(utf8(v)?),
            ColumnBuilder::Char(b) => {
                let c = fixed::<1>(v, "\"char\"")?[0];
                b.append_value(char::from(c).to_string())
            }
            ColumnBuilder::Jsonb(b) => match v.split_first() {
                Some((1, json)) => b.append_value(utf8(json)?),
                _ => return Err("a jsonb value of an unknown version".into()),
            },
            ColumnBuilder::Bytea(b) => b.append_value(v),
            ColumnBuilder::Date(b) => b.append_value(shift_days(
                i32::from_be_bytes(fixed(v, "date")?),
                EPOCH_DAYS,
            )),
            ColumnBuilder::Time(b) => b.append_value(i64::from_be_bytes(fixed(v, "time")?)),
            ColumnBuilder::Timestamp(b) | ColumnBuilder::Timestamptz(b) => b.append_value(
                shift_micros(i64::from_be_bytes(fixed(v, "timestamp")?), EPOCH_MICROS),
            ),
            ColumnBuilder::Interval(b) => {
                let v: [u8; 16] = fixed(v, "interval")?;
                let micros = i64::from_be_bytes(v[0..8].try_into().expect("8 bytes"));
                let days = i32::from_be_bytes(v[8..12].try_into().expect("4 bytes"));
                let months = i32::from_be_bytes(v[12..16].try_into().expect("4 bytes"));
                b.append_value(interval::format(months, days, micros))
            }
            ColumnBuilder::Uuid(b) => b
                .append_value(fixed::<16>(v, "uuid")?)
                .map_err(|e| e.to_string())?,
            ColumnBuilder::Array {
                values,
                offsets,
                nulls,
                ..
            } => {
                let count = read_array(v, values)?;
                let last = *offsets.last().expect("offsets start with 0");
                offsets.push(last + count as i32);
                nulls.append_non_null();
            }
        }
        Ok(())
    }

    fn append_null(&mut self) {
        match self {
            ColumnBuilder::Bool(b) => b.append_null(),
            ColumnBuilder::Int2(b) => b.append_null(),
            ColumnBuilder::Int4(b) => b.append_null(),
            ColumnBuilder::Int8(b) | ColumnBuilder::Oid(b) => b.append_null(),
            ColumnBuilder::Float4(b) => b.append_null(),
            ColumnBuilder::Float8(b) => b.append_null(),
            ColumnBuilder::Numeric(b, _) => b.append_null(),
            ColumnBuilder::NumericText(b)
            | ColumnBuilder::Text(b)
            | ColumnBuilder::Char(b)
            | ColumnBuilder::Jsonb(b) => b.append_null(),
            ColumnBuilder::Bytea(b) => b.append_null(),
            ColumnBuilder::Date(b) => b.append_null(),
            ColumnBuilder::Time(b) => b.append_null(),
            ColumnBuilder::Timestamp(b) | ColumnBuilder::Timestamptz(b) => b.append_null(),
            ColumnBuilder::Interval(b) => b.append_null(),
            ColumnBuilder::Uuid(b) => b.append_null(),
            ColumnBuilder::Array { offsets, nulls, .. } => {
                let last = *offsets.last().expect("offsets start with 0");
                offsets.push(last);
                nulls.append_null();
            }
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Bool(b) => Arc::new(b.finish()),
            ColumnBuilder::Int2(b) => Arc::new(b.finish()),
            ColumnBuilder::Int4(b) => Arc::new(b.finish()),
            ColumnBuilder::Int8(b) | ColumnBuilder::Oid(b) => Arc::new(b.finish()),
            ColumnBuilder::Float4(b) => Arc::new(b.finish()),
            ColumnBuilder::Float8(b) => Arc::new(b.finish()),
            ColumnBuilder::Numeric(b, _) => Arc::new(b.finish()),
            ColumnBuilder::NumericText(b)
            | ColumnBuilder::Text(b)
            | ColumnBuilder::Char(b)
            | ColumnBuilder::Jsonb(b) => Arc::new(b.finish()),
            ColumnBuilder::Bytea(b) => Arc::new(b.finish()),
            ColumnBuilder::Date(b) => Arc::new(b.finish()),
            ColumnBuilder::Time(b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(b) | ColumnBuilder::Timestamptz(b) => Arc::new(b.finish()),
            ColumnBuilder::Interval(b) => Arc::new(b.finish()),
            ColumnBuilder::Uuid(b) => Arc::new(b.finish()),
            ColumnBuilder::Array {
                field,
                values,
                offsets,
                nulls,
            } => {
                let values = values.finish();
                let offsets = std::mem::replace(offsets, vec![0]);
                let nulls = nulls.finish();
                Arc::new(ListArray::new(
                    field.clone(),
                    OffsetBuffer::new(ScalarBuffer::from(offsets)),
                    values,
                    nulls,
                ))
            }
        }
    }
}

fn utf8(v: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(v).map_err(|e| format!("text that is not UTF-8: {e}"))
}

/// Append the elements of a binary array value to `values`; returns how many.
fn read_array(v: &[u8], values: &mut ColumnBuilder) -> Result<usize, String> {
    if v.len() < 12 {
        return Err("an array value shorter than its header".into());
    }
    let ndim = i32::from_be_bytes(v[0..4].try_into().expect("4 bytes"));
    if ndim == 0 {
        return Ok(0);
    }
    if ndim != 1 {
        return Err(format!(
            "a {ndim}-dimensional array; only one-dimensional arrays are read as lists (cast the column to text to read it as text)"
        ));
    }
    if v.len() < 20 {
        return Err("an array value shorter than its header".into());
    }
    let count = i32::from_be_bytes(v[12..16].try_into().expect("4 bytes")).max(0) as usize;
    let mut p = 20;
    for _ in 0..count {
        if p + 4 > v.len() {
            return Err("an array value cut short".into());
        }
        let len = i32::from_be_bytes(v[p..p + 4].try_into().expect("4 bytes"));
        p += 4;
        if len < 0 {
            values.append(None)?;
        } else {
            let end = p + len as usize;
            if end > v.len() {
                return Err("an array element runs past the value".into());
            }
            values.append(Some(&v[p..end]))?;
            p = end;
        }
    }
    Ok(count)
}

/// The binary numeric `v` as a Decimal128 value of `scale`, without allocating (the
/// common case; NaN and infinities, which no decimal holds, go through [`Numeric`] for
/// their message).
fn numeric_to_i128(v: &[u8], scale: i8) -> Result<i128, String> {
    if v.len() < 8 {
        return Err("a numeric value shorter than its header".into());
    }
    let n = i16::from_be_bytes([v[0], v[1]]).max(0) as usize;
    let weight = i16::from_be_bytes([v[2], v[3]]) as i32;
    let sign = u16::from_be_bytes([v[4], v[5]]);
    if v.len() != 8 + 2 * n {
        return Err("a numeric value of the wrong length".into());
    }
    if sign != NUMERIC_POS && sign != NUMERIC_NEG {
        return Numeric::read(v)?.to_i128(scale);
    }
    let overflow = || "a numeric value beyond 38 digits".to_string();
    let mut acc: i128 = 0;
    for i in 0..n {
        let d = i16::from_be_bytes([v[8 + 2 * i], v[9 + 2 * i]]) as i128;
        acc = acc
            .checked_mul(10_000)
            .and_then(|a| a.checked_add(d))
            .ok_or_else(overflow)?;
    }
    let exp = 4 * (weight - n as i32 + 1) + scale as i32;
    let value = if exp >= 0 {
        acc.checked_mul(10i128.checked_pow(exp as u32).ok_or_else(overflow)?)
            .ok_or_else(overflow)?
    } else {
        match 10i128.checked_pow((-exp) as u32) {
            Some(div) => acc / div,
            None => 0,
        }
    };
    Ok(if sign == NUMERIC_NEG { -value } else { value })
}

/// Write a Decimal128 value of `scale` as a binary numeric field (length included),
/// without allocating: base-10000 digits from the scaled integer.
fn write_decimal(value: i128, scale: i8, out: &mut Vec<u8>) {
    let scale = scale.max(0) as u32;
    let mut magnitude = value.unsigned_abs();
    // Align the fraction to whole base-10000 digits: scale it up to a multiple of 4.
    let pad = (4 - scale % 4) % 4;
    magnitude *= 10u128.pow(pad);
    let fraction_digits = (scale + pad) / 4;
    // Digits, least significant first; at most 11 for 38 decimal digits plus padding.
    let mut digits = [0i16; 12];
    let mut count = 0;
    while magnitude > 0 {
        digits[count] = (magnitude % 10_000) as i16;
        magnitude /= 10_000;
        count += 1;
    }
    // Drop trailing zero digits (least significant) and leading ones (none by
    // construction); the weight is the exponent of the most significant digit.
    let mut low = 0;
    while low < count && digits[low] == 0 {
        low += 1;
    }
    let weight = count as i32 - 1 - fraction_digits as i32;
    let used = count - low;
    out.extend_from_slice(&((8 + 2 * used) as i32).to_be_bytes());
    out.extend_from_slice(&(used as i16).to_be_bytes());
    out.extend_from_slice(&(if used == 0 { 0 } else { weight as i16 }).to_be_bytes());
    let sign = if value < 0 { NUMERIC_NEG } else { NUMERIC_POS };
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&(scale as u16).to_be_bytes());
    for i in (low..count).rev() {
        out.extend_from_slice(&digits[i].to_be_bytes());
    }
}

/// A numeric value in Postgres's binary form: base-10000 digits with a weight.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Numeric {
    weight: i16,
    sign: u16,
    dscale: u16,
    digits: Vec<i16>,
}

const NUMERIC_POS: u16 = 0x0000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;

impl Numeric {
    fn read(v: &[u8]) -> Result<Numeric, String> {
        if v.len() < 8 {
            return Err("a numeric value shorter than its header".into());
        }
        let n = i16::from_be_bytes([v[0], v[1]]).max(0) as usize;
        if v.len() != 8 + 2 * n {
            return Err("a numeric value of the wrong length".into());
        }
        Ok(Numeric {
            weight: i16::from_be_bytes([v[2], v[3]]),
            sign: u16::from_be_bytes([v[4], v[5]]),
            dscale: u16::from_be_bytes([v[6], v[7]]),
            digits: (0..n)
                .map(|i| i16::from_be_bytes([v[8 + 2 * i], v[9 + 2 * i]]))
                .collect(),
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&((8 + 2 * self.digits.len()) as i32).to_be_bytes());
        out.extend_from_slice(&(self.digits.len() as i16).to_be_bytes());
        out.extend_from_slice(&self.weight.to_be_bytes());
        out.extend_from_slice(&self.sign.to_be_bytes());
        out.extend_from_slice(&self.dscale.to_be_bytes());
        for d in &self.digits {
            out.extend_from_slice(&d.to_be_bytes());
        }
    }

    /// The value times 10^scale, as Decimal128 keeps it.
    fn to_i128(&self, scale: i8) -> Result<i128, String> {
        match self.sign {
            NUMERIC_NAN | NUMERIC_PINF | NUMERIC_NINF => {
                return Err(format!(
                    "{} does not fit a decimal column (read the column as text to keep it)",
                    self.to_text()
                ))
            }
            _ => {}
        }
        let overflow = || "a numeric value beyond 38 digits".to_string();
        let mut acc: i128 = 0;
        for d in &self.digits {
            acc = acc
                .checked_mul(10_000)
                .and_then(|a| a.checked_add(*d as i128))
                .ok_or_else(overflow)?;
        }
        // acc holds the digits; the last one has weight `weight - ndigits + 1`.
        let exp = 4 * (self.weight as i32 - self.digits.len() as i32 + 1) + scale as i32;
        let value = if exp >= 0 {
            acc.checked_mul(10i128.checked_pow(exp as u32).ok_or_else(overflow)?)
                .ok_or_else(overflow)?
        } else {
            match 10i128.checked_pow((-exp) as u32) {
                Some(div) => acc / div,
                None => 0,
            }
        };
        Ok(if self.sign == NUMERIC_NEG {
            -value
        } else {
            value
        })
    }

    fn to_text(&self) -> String {
        match self.sign {
            NUMERIC_NAN => return "NaN".into(),
            NUMERIC_PINF => return "Infinity".into(),
            NUMERIC_NINF => return "-Infinity".into(),
            _ => {}
        }
        let digit = |i: i32| -> i16 {
            if i >= 0 && (i as usize) < self.digits.len() {
                self.digits[i as usize]
            } else {
                0
            }
        };
        let mut s = String::new();
        if self.sign == NUMERIC_NEG {
            s.push('-');
        }
        if self.weight < 0 {
            s.push('0');
        } else {
            for i in 0..=self.weight as i32 {
                if i == 0 {
                    s.push_str(&digit(0).to_string());
                } else {
                    s.push_str(&format!("{:04}", digit(i)));
                }
            }
        }
        if self.dscale > 0 {
            s.push('.');
            let mut frac = String::new();
            let mut i = self.weight as i32 + 1;
            while frac.len() < self.dscale as usize {
                frac.push_str(&format!("{:04}", digit(i)));
                i += 1;
            }
            frac.truncate(self.dscale as usize);
            s.push_str(&frac);
        }
        s
    }

    /// A decimal with `scale` digits after the point from its scaled integer: the plain
    /// reference [`write_decimal`] is checked against.
    #[cfg(test)]
    fn from_i128(value: i128, scale: i8) -> Numeric {
        let scale = scale.max(0) as usize;
        let mut text = value.unsigned_abs().to_string();
        if text.len() <= scale {
            text = format!("{}{text}", "0".repeat(scale + 1 - text.len()));
        }
        let (int, frac) = text.split_at(text.len() - scale);
        Numeric::from_parts(value < 0, int, frac, scale as u16)
    }

    /// Parse decimal text (`-12.50`, `1e3` is not accepted, `NaN`, `Infinity`).
    fn parse(text: &str) -> Result<Numeric, String> {
        let t = text.trim();
        match t.to_ascii_lowercase().as_str() {
            "nan" => return Ok(Numeric::special(NUMERIC_NAN)),
            "infinity" | "+infinity" | "inf" => return Ok(Numeric::special(NUMERIC_PINF)),
            "-infinity" | "-inf" => return Ok(Numeric::special(NUMERIC_NINF)),
            _ => {}
        }
        let (negative, body) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t.strip_prefix('+').unwrap_or(t)),
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        if int.is_empty() && frac.is_empty()
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(format!("{text:?} is not a decimal number"));
        }
        let int = if int.is_empty() { "0" } else { int };
        Ok(Numeric::from_parts(negative, int, frac, frac.len() as u16))
    }

    fn special(sign: u16) -> Numeric {
        Numeric {
            weight: 0,
            sign,
            dscale: 0,
            digits: Vec::new(),
        }
    }

    fn from_parts(negative: bool, int: &str, frac: &str, dscale: u16) -> Numeric {
        let int = int.trim_start_matches('0');
        let pad_int = (4 - int.len() % 4) % 4;
        let int_padded = format!("{}{int}", "0".repeat(pad_int));
        let pad_frac = (4 - frac.len() % 4) % 4;
        let frac_padded = format!("{frac}{}", "0".repeat(pad_frac));
        let group = |s: &str| -> Vec<i16> {
            s.as_bytes()
                .chunks(4)
                .map(|c| {
                    std::str::from_utf8(c)
                        .expect("ascii")
                        .parse()
                        .expect("digits")
                })
                .collect()
        };
        let mut digits = group(&int_padded);
        let mut weight = digits.len() as i32 - 1;
        digits.extend(group(&frac_padded));
        while digits.first() == Some(&0) {
            digits.remove(0);
            weight -= 1;
        }
        while digits.last() == Some(&0) {
            digits.pop();
        }
        if digits.is_empty() {
            weight = 0;
        }
        Numeric {
            weight: weight as i16,
            sign: if negative && !digits.is_empty() {
                NUMERIC_NEG
            } else {
                NUMERIC_POS
            },
            dscale,
            digits,
        }
    }
}

/// Writes Arrow batches as binary COPY data for columns of known kinds.
#[derive(Debug, Clone)]
pub struct Encoder {
    kinds: Vec<PgKind>,
}

/// A value the encoder could not write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeError {
    pub column: String,
    pub message: String,
}

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "column `{}`: {}", self.column, self.message)
    }
}

impl Encoder {
    /// An encoder of rows whose columns have `kinds`, in order.
    pub fn new(kinds: Vec<PgKind>) -> Encoder {
        Encoder { kinds }
    }

    /// Append the rows of `columns` (each already of its kind's Arrow type, see
    /// [`PgKind::arrow_type`]) to `out`, plus `extra` trailing int8 values per row when
    /// given (a row number, say). The header and trailer are the caller's.
    pub fn encode(
        &self,
        names: &[String],
        columns: &[ArrayRef],
        extra: Option<&[i64]>,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let rows = columns.first().map(|c| c.len()).unwrap_or(0);
        let writers: Vec<(Option<&NullBuffer>, Writer<'_>)> = columns
            .iter()
            .zip(&self.kinds)
            .zip(names)
            .map(|((c, k), name)| {
                let w = Writer::new(c, k).map_err(|message| EncodeError {
                    column: name.clone(),
                    message,
                })?;
                Ok((c.nulls(), w))
            })
            .collect::<Result<_, _>>()?;
        let fields = (writers.len() + usize::from(extra.is_some())) as i16;
        out.reserve(rows * (2 + writers.len() * 12));
        for row in 0..rows {
            out.extend_from_slice(&fields.to_be_bytes());
            for ((nulls, w), name) in writers.iter().zip(names) {
                if nulls.is_some_and(|n| n.is_null(row)) {
                    out.extend_from_slice(&(-1i32).to_be_bytes());
                    continue;
                }
                w.write_value(row, out).map_err(|message| EncodeError {
                    column: name.clone(),
                    message,
                })?;
            }
            if let Some(extra) = extra {
                out.extend_from_slice(&8i32.to_be_bytes());
                out.extend_from_slice(&extra[row].to_be_bytes());
            }
        }
        Ok(())
    }
}

/// One column, downcast once, written value by value.
enum Writer<'a> {
    Bool(&'a arrow_array::BooleanArray),
    Int2(&'a arrow_array::PrimitiveArray<Int16Type>),
    Int4(&'a arrow_array::PrimitiveArray<Int32Type>),
    Int8(&'a arrow_array::PrimitiveArray<Int64Type>),
    Oid(&'a arrow_array::PrimitiveArray<Int64Type>),
    Float4(&'a arrow_array::PrimitiveArray<Float32Type>),
    Float8(&'a arrow_array::PrimitiveArray<Float64Type>),
    Numeric(&'a arrow_array::PrimitiveArray<Decimal128Type>, i8),
    NumericText(&'a arrow_array::StringArray),
    Text(&'a arrow_array::StringArray),
    Char(&'a arrow_array::StringArray),
    Jsonb(&'a arrow_array::StringArray),
    Bytea(&'a arrow_array::BinaryArray),
    Date(&'a arrow_array::PrimitiveArray<Date32Type>),
    Time(&'a arrow_array::PrimitiveArray<Time64MicrosecondType>),
    Timestamp(&'a arrow_array::PrimitiveArray<TimestampMicrosecondType>),
    Interval(&'a arrow_array::StringArray),
    Uuid(&'a arrow_array::FixedSizeBinaryArray),
    Array(&'a ListArray, u32, Box<Writer<'a>>),
}

impl<'a> Writer<'a> {
    fn new(array: &'a ArrayRef, kind: &PgKind) -> Result<Writer<'a>, String> {
        let expected = kind.arrow_type();
        let same = match (&expected, array.data_type()) {
            (DataType::List(_), DataType::List(_)) => true,
            (DataType::Timestamp(u1, _), DataType::Timestamp(u2, _)) => u1 == u2,
            (a, b) => a == b,
        };
        if !same {
            return Err(format!(
                "holds {}, expected {expected} for a {} column",
                array.data_type(),
                kind.ddl()
            ));
        }
        Ok(match kind {
            PgKind::Bool => Writer::Bool(array.as_boolean()),
            PgKind::Int2 => Writer::Int2(array.as_primitive()),
            PgKind::Int4 => Writer::Int4(array.as_primitive()),
            PgKind::Int8 => Writer::Int8(array.as_primitive()),
            PgKind::Oid => Writer::Oid(array.as_primitive()),
            PgKind::Float4 => Writer::Float4(array.as_primitive()),
            PgKind::Float8 => Writer::Float8(array.as_primitive()),
            PgKind::Numeric { scale, .. } => Writer::Numeric(array.as_primitive(), *scale),
            PgKind::NumericText => Writer::NumericText(array.as_string()),
            PgKind::Text | PgKind::Json => Writer::Text(array.as_string()),
            PgKind::Char => Writer::Char(array.as_string()),
            PgKind::Jsonb => Writer::Jsonb(array.as_string()),
            PgKind::Bytea => Writer::Bytea(array.as_binary()),
            PgKind::Date => Writer::Date(array.as_primitive()),
            PgKind::Time => Writer::Time(array.as_primitive()),
            PgKind::Timestamp | PgKind::Timestamptz => Writer::Timestamp(array.as_primitive()),
            PgKind::Interval => Writer::Interval(array.as_string()),
            PgKind::Uuid => Writer::Uuid(array.as_fixed_size_binary()),
            PgKind::Array { elem, elem_oid } => {
                let list = array.as_list::<i32>();
                let values: &'a ArrayRef = list.values();
                Writer::Array(list, *elem_oid, Box::new(Writer::new(values, elem)?))
            }
        })
    }

    fn is_null(&self, row: usize) -> bool {
        match self {
            Writer::Bool(a) => a.is_null(row),
            Writer::Int2(a) => a.is_null(row),
            Writer::Int4(a) => a.is_null(row),
            Writer::Int8(a) | Writer::Oid(a) => a.is_null(row),
            Writer::Float4(a) => a.is_null(row),
            Writer::Float8(a) => a.is_null(row),
            Writer::Numeric(a, _) => a.is_null(row),
            Writer::NumericText(a) | Writer::Text(a) | Writer::Char(a) | Writer::Jsonb(a) => {
                a.is_null(row)
            }
            Writer::Bytea(a) => a.is_null(row),
            Writer::Date(a) => a.is_null(row),
            Writer::Time(a) => a.is_null(row),
            Writer::Timestamp(a) => a.is_null(row),
            Writer::Interval(a) => a.is_null(row),
            Writer::Uuid(a) => a.is_null(row),
            Writer::Array(a, _, _) => a.is_null(row),
        }
    }

    fn write(&self, row: usize, out: &mut Vec<u8>) -> Result<(), String> {
        if self.is_null(row) {
            out.extend_from_slice(&(-1i32).to_be_bytes());
            return Ok(());
        }
        self.write_value(row, out)
    }

    /// Write the value at `row`, which is not NULL.
    fn write_value(&self, row: usize, out: &mut Vec<u8>) -> Result<(), String> {
        fn put(out: &mut Vec<u8>, bytes: &[u8]) {
            out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
            out.extend_from_slice(bytes);
        }
        match self {
            Writer::Bool(a) => put(out, &[a.value(row) as u8]),
            Writer::Int2(a) => put(out, &a.value(row).to_be_bytes()),
            Writer::Int4(a) => put(out, &a.value(row).to_be_bytes()),
            Writer::Int8(a) => put(out, &a.value(row).to_be_bytes()),
            Writer::Oid(a) => {
                let v = u32::try_from(a.value(row))
                    .map_err(|_| format!("{} is not an oid", a.value(row)))?;
                put(out, &v.to_be_bytes())
            }
            Writer::Float4(a) => put(out, &a.value(row).to_be_bytes()),
            Writer::Float8(a) => put(out, &a.value(row).to_be_bytes()),
            Writer::Numeric(a, scale) => write_decimal(a.value(row), *scale, out),
            Writer::NumericText(a) => Numeric::parse(a.value(row))?.write(out),
            Writer::Text(a) => put(out, a.value(row).as_bytes()),
            Writer::Char(a) => {
                let v = a.value(row).as_bytes();
                put(out, &v[..v.len().min(1)])
            }
            Writer::Jsonb(a) => {
                let v = a.value(row).as_bytes();
                out.extend_from_slice(&((v.len() + 1) as i32).to_be_bytes());
                out.push(1);
                out.extend_from_slice(v);
            }
            Writer::Bytea(a) => put(out, a.value(row)),
            Writer::Date(a) => put(out, &shift_days(a.value(row), -EPOCH_DAYS).to_be_bytes()),
            Writer::Time(a) => put(out, &a.value(row).to_be_bytes()),
            Writer::Timestamp(a) => put(
                out,
                &shift_micros(a.value(row), -EPOCH_MICROS).to_be_bytes(),
            ),
            Writer::Interval(a) => {
                let (months, days, micros) = interval::parse(a.value(row))?;
                out.extend_from_slice(&16i32.to_be_bytes());
                out.extend_from_slice(&micros.to_be_bytes());
                out.extend_from_slice(&days.to_be_bytes());
                out.extend_from_slice(&months.to_be_bytes());
            }
            Writer::Uuid(a) => put(out, a.value(row)),
            Writer::Array(a, elem_oid, values) => {
                let start = a.value_offsets()[row] as usize;
                let end = a.value_offsets()[row + 1] as usize;
                if start == end {
                    // An empty array has no dimensions, as the server sends it.
                    out.extend_from_slice(&12i32.to_be_bytes());
                    out.extend_from_slice(&0i32.to_be_bytes());
                    out.extend_from_slice(&0i32.to_be_bytes());
                    out.extend_from_slice(&elem_oid.to_be_bytes());
                    return Ok(());
                }
                let at = out.len();
                out.extend_from_slice(&0i32.to_be_bytes()); // length, filled in below
                let has_null = (start..end).any(|i| values.is_null(i));
                out.extend_from_slice(&1i32.to_be_bytes()); // dimensions
                out.extend_from_slice(&(has_null as i32).to_be_bytes());
                out.extend_from_slice(&elem_oid.to_be_bytes());
                out.extend_from_slice(&((end - start) as i32).to_be_bytes());
                out.extend_from_slice(&1i32.to_be_bytes()); // lower bound
                for i in start..end {
                    values.write(i, out)?;
                }
                let len = (out.len() - at - 4) as i32;
                out[at..at + 4].copy_from_slice(&len.to_be_bytes());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric_bytes(n: &Numeric) -> Vec<u8> {
        let mut out = Vec::new();
        n.write(&mut out);
        out[4..].to_vec()
    }

    #[test]
    fn numerics_round_trip_through_the_binary_form() {
        for (text, scale) in [
            ("0.00", 2),
            ("12.50", 2),
            ("-12345678.9012", 4),
            ("99999999999999999999999999999999999999", 0),
            ("0.0001", 4),
            ("10000", 0),
            ("-0.50", 2),
            ("123.45000", 5),
            ("1.000", 3),
        ] {
            let n = Numeric::parse(text).unwrap();
            assert_eq!(n.to_text(), text, "text of {text}");
            let back = Numeric::read(&numeric_bytes(&n)).unwrap();
            assert_eq!(back, n);
            let scaled = n.to_i128(scale).unwrap();
            assert_eq!(Numeric::from_i128(scaled, scale).to_text(), text);
            assert_eq!(numeric_to_i128(&numeric_bytes(&n), scale), Ok(scaled));
            let mut fast = Vec::new();
            write_decimal(scaled, scale, &mut fast);
            let mut slow = Vec::new();
            Numeric::from_i128(scaled, scale).write(&mut slow);
            assert_eq!(fast, slow, "{text}");
        }
        assert_eq!(Numeric::parse("NaN").unwrap().to_text(), "NaN");
        assert!(Numeric::parse("NaN").unwrap().to_i128(2).is_err());
        assert!(Numeric::parse("1.2.3").is_err());
    }

    #[test]
    fn rows_split_anywhere_decode_the_same() {
        let kinds = vec![
            PgKind::Int4,
            PgKind::Text,
            PgKind::Numeric {
                precision: 10,
                scale: 2,
            },
        ];
        let names: Vec<String> = ["id", "name", "amount"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let schema = Arc::new(arrow_schema::Schema::new(
            names
                .iter()
                .zip(&kinds)
                .map(|(n, k)| k.field(n))
                .collect::<Vec<_>>(),
        ));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(arrow_array::Int32Array::from(vec![Some(1), None, Some(3)])),
                Arc::new(arrow_array::StringArray::from(vec![
                    Some("ä"),
                    Some(""),
                    None,
                ])),
                Arc::new(
                    arrow_array::Decimal128Array::from(vec![Some(1250), Some(-1), None])
                        .with_precision_and_scale(10, 2)
                        .unwrap(),
                ),
            ],
        )
        .unwrap();
        let mut data = HEADER.to_vec();
        Encoder::new(kinds.clone())
            .encode(&names, batch.columns(), None, &mut data)
            .unwrap();
        data.extend_from_slice(TRAILER);
        for cut in 0..data.len() {
            let columns: Vec<(String, PgKind)> =
                names.iter().cloned().zip(kinds.iter().cloned()).collect();
            let mut d = Decoder::new(&columns);
            d.push(&data[..cut]).unwrap();
            d.push(&data[cut..]).unwrap();
            assert!(d.is_finished());
            assert_eq!(d.finish(schema.clone()).unwrap(), batch, "cut at {cut}");
        }
    }
}

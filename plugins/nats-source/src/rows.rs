//! Messages into Arrow rows: the metadata columns every stream has, then the payload as
//! the config says (bytes, text, or the declared fields of a JSON object).

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use ingest_sdk::{Error, Result};
use nats_client::Delivered;
use serde_json::Value;

use crate::config::{ColumnType, Payload};

/// The stream's schema for `payload`.
pub fn schema(payload: &Payload) -> SchemaRef {
    let mut fields = vec![
        Field::new("_subject", DataType::Utf8, false),
        Field::new("_seq", DataType::Int64, false),
        Field::new(
            "_commit_ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("_headers", DataType::Utf8, true),
    ];
    match payload {
        Payload::Binary => fields.push(Field::new("payload", DataType::Binary, true)),
        Payload::Text => fields.push(Field::new("payload", DataType::Utf8, true)),
        Payload::Json(columns) => {
            for (name, ty) in columns {
                fields.push(Field::new(name, data_type(*ty), true));
            }
        }
    }
    Arc::new(Schema::new(fields))
}

fn data_type(ty: ColumnType) -> DataType {
    match ty {
        ColumnType::Int64 => DataType::Int64,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::Boolean => DataType::Boolean,
        ColumnType::Utf8 => DataType::Utf8,
        ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    }
}

/// A column of the payload being built.
enum Column {
    Binary(BinaryBuilder),
    Text(StringBuilder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Boolean(BooleanBuilder),
    Timestamp(TimestampMicrosecondBuilder),
}

/// Rows being built for one chunk.
pub struct Rows {
    schema: SchemaRef,
    payload: Payload,
    subject: StringBuilder,
    seq: Int64Builder,
    timestamp: TimestampMicrosecondBuilder,
    headers: StringBuilder,
    columns: Vec<Column>,
    len: usize,
}

impl Rows {
    pub fn new(payload: &Payload, _stream: &str) -> Rows {
        let columns = match payload {
            Payload::Binary => vec![Column::Binary(BinaryBuilder::new())],
            Payload::Text => vec![Column::Text(StringBuilder::new())],
            Payload::Json(columns) => columns.iter().map(|(_, ty)| new_column(*ty)).collect(),
        };
        Rows {
            schema: schema(payload),
            payload: payload.clone(),
            subject: StringBuilder::new(),
            seq: Int64Builder::new(),
            timestamp: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            headers: StringBuilder::new(),
            columns,
            len: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Add message `d` as a row, or say why it cannot be one (nothing is added then).
    pub fn push(&mut self, d: &Delivered) -> std::result::Result<(), String> {
        let payload = &d.message.payload;
        // Check the payload before anything is appended, so a rejected message leaves no
        // partial row.
        match &self.payload {
            Payload::Binary => {}
            Payload::Text => {
                std::str::from_utf8(payload)
                    .map_err(|e| format!("the payload is not UTF-8 text: {e}"))?;
            }
            Payload::Json(declared) => {
                let object = parse_object(payload)?;
                let mut values = Vec::with_capacity(declared.len());
                for (name, ty) in declared {
                    values.push(
                        convert(object.get(name), *ty)
                            .map_err(|why| format!("field `{name}`: {why}"))?,
                    );
                }
                for (column, value) in self.columns.iter_mut().zip(values) {
                    append(column, value);
                }
            }
        }
        match (&self.payload, self.columns.first_mut()) {
            (Payload::Binary, Some(Column::Binary(b))) => b.append_value(payload),
            (Payload::Text, Some(Column::Text(b))) => {
                b.append_value(std::str::from_utf8(payload).unwrap_or_default())
            }
            _ => {}
        }
        self.subject.append_value(&d.message.subject);
        self.seq.append_value(d.stream_seq as i64);
        self.timestamp.append_value(d.timestamp_ns / 1000);
        if d.message.headers.is_empty() {
            self.headers.append_null();
        } else {
            let map: serde_json::Map<String, Value> = d
                .message
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            self.headers.append_value(Value::Object(map).to_string());
        }
        self.len += 1;
        Ok(())
    }

    /// The rows so far as a batch; the builders start over.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(self.subject.finish()),
            Arc::new(self.seq.finish()),
            Arc::new(self.timestamp.finish()),
            Arc::new(self.headers.finish()),
        ];
        for column in &mut self.columns {
            arrays.push(match column {
                Column::Binary(b) => Arc::new(b.finish()),
                Column::Text(b) => Arc::new(b.finish()),
                Column::Int64(b) => Arc::new(b.finish()),
                Column::Float64(b) => Arc::new(b.finish()),
                Column::Boolean(b) => Arc::new(b.finish()),
                Column::Timestamp(b) => Arc::new(b.finish()),
            });
        }
        self.len = 0;
        RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|e| Error::fatal(format!("building a batch: {e}")))
    }
}

fn new_column(ty: ColumnType) -> Column {
    match ty {
        ColumnType::Int64 => Column::Int64(Int64Builder::new()),
        ColumnType::Float64 => Column::Float64(Float64Builder::new()),
        ColumnType::Boolean => Column::Boolean(BooleanBuilder::new()),
        ColumnType::Utf8 => Column::Text(StringBuilder::new()),
        ColumnType::Timestamp => {
            Column::Timestamp(TimestampMicrosecondBuilder::new().with_timezone("UTC"))
        }
    }
}

/// A JSON field's value, converted.
enum Cell {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(String),
    Micros(i64),
}

fn parse_object(payload: &[u8]) -> std::result::Result<serde_json::Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(format!(
            "the payload is JSON but not an object (it is {})",
            match other {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            }
        )),
        Err(e) => Err(format!("the payload is not JSON: {e}")),
    }
}

fn convert(value: Option<&Value>, ty: ColumnType) -> std::result::Result<Cell, String> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(Cell::Null);
    };
    let wrong = || format!("{value} is not {}", phrase(ty));
    Ok(match ty {
        ColumnType::Int64 => Cell::Int(value.as_i64().ok_or_else(wrong)?),
        ColumnType::Float64 => Cell::Float(value.as_f64().ok_or_else(wrong)?),
        ColumnType::Boolean => Cell::Bool(value.as_bool().ok_or_else(wrong)?),
        ColumnType::Utf8 => Cell::Text(match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }),
        ColumnType::Timestamp => {
            let text = value.as_str().ok_or_else(wrong)?;
            Cell::Micros(parse_rfc3339_micros(text).ok_or_else(wrong)?)
        }
    })
}

/// Microseconds since 1970 of an RFC 3339 timestamp (`2024-05-01T12:00:00Z`,
/// `…+02:00`, with or without fractions).
fn parse_rfc3339_micros(text: &str) -> Option<i64> {
    let (date, rest) = text.split_once(['T', ' '])?;
    let mut d = date.splitn(3, '-');
    let (y, m, day): (i64, u32, u32) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let (time, offset_secs) = if let Some(t) = rest.strip_suffix(['Z', 'z']) {
        (t, 0i64)
    } else {
        let at = rest.rfind(['+', '-'])?;
        let (t, off) = rest.split_at(at);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':')?;
        (
            t,
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60),
        )
    };
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut parts = hms.splitn(3, ':');
    let (h, mi, s): (i64, i64, i64) = (
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let micros: i64 = if frac.is_empty() {
        0
    } else {
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let six: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
        six.parse().ok()?
    };
    let days = days_from_civil(y, m, day);
    Some(((days * 86_400 + h * 3600 + mi * 60 + s) - offset_secs) * 1_000_000 + micros)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn phrase(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Int64 => "an int64",
        ColumnType::Float64 => "a float64",
        ColumnType::Boolean => "a boolean",
        ColumnType::Utf8 => "text",
        ColumnType::Timestamp => "an RFC 3339 timestamp (e.g. 2024-05-01T12:00:00Z)",
    }
}

fn append(column: &mut Column, cell: Cell) {
    match (column, cell) {
        (Column::Int64(b), Cell::Int(v)) => b.append_value(v),
        (Column::Float64(b), Cell::Float(v)) => b.append_value(v),
        (Column::Boolean(b), Cell::Bool(v)) => b.append_value(v),
        (Column::Text(b), Cell::Text(v)) => b.append_value(v),
        (Column::Timestamp(b), Cell::Micros(v)) => b.append_value(v),
        (Column::Int64(b), _) => b.append_null(),
        (Column::Float64(b), _) => b.append_null(),
        (Column::Boolean(b), _) => b.append_null(),
        (Column::Text(b), _) => b.append_null(),
        (Column::Timestamp(b), _) => b.append_null(),
        (Column::Binary(b), _) => b.append_null(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nats_client::Message;

    fn delivered(seq: u64, payload: &str) -> Delivered {
        Delivered {
            message: Message {
                subject: "orders.eu".into(),
                payload: payload.as_bytes().to_vec(),
                headers: vec![("Trace".into(), "t1".into())],
                ..Default::default()
            },
            stream_seq: seq,
            delivered: 1,
            timestamp_ns: 1_700_000_000_123_456_789,
            pending: 0,
        }
    }

    #[test]
    fn json_payloads_fill_their_declared_columns_and_bad_ones_are_refused_whole() {
        let payload = Payload::Json(vec![
            ("id".into(), ColumnType::Int64),
            ("at".into(), ColumnType::Timestamp),
            ("ok".into(), ColumnType::Boolean),
        ]);
        let mut rows = Rows::new(&payload, "orders");
        rows.push(&delivered(
            1,
            r#"{"id":7,"at":"2024-05-01T12:00:00.5+02:00","ok":true,"x":1}"#,
        ))
        .unwrap();
        let why = rows.push(&delivered(2, r#"{"id":"seven"}"#)).unwrap_err();
        assert!(why.contains("field `id`") && why.contains("int64"), "{why}");
        assert!(rows
            .push(&delivered(3, "[1]"))
            .unwrap_err()
            .contains("not an object"));
        assert!(rows
            .push(&delivered(4, "{"))
            .unwrap_err()
            .contains("not JSON"));
        rows.push(&delivered(5, "{}")).unwrap();
        let batch = rows.finish().unwrap();
        assert_eq!(batch.num_rows(), 2);
        let column = |name: &str| batch.column_by_name(name).unwrap().clone();
        use arrow_array::cast::AsArray;
        use arrow_array::types::{Int64Type, TimestampMicrosecondType};
        use arrow_array::Array as _;
        let ids = column("id");
        assert_eq!(ids.as_primitive::<Int64Type>().value(0), 7);
        assert!(ids.is_null(1), "a missing field is null");
        assert_eq!(column("_seq").as_primitive::<Int64Type>().values(), &[1, 5]);
        assert_eq!(column("_subject").as_string::<i32>().value(0), "orders.eu");
        assert_eq!(
            column("_headers").as_string::<i32>().value(0),
            r#"{"Trace":"t1"}"#
        );
        assert_eq!(
            column("_commit_ts")
                .as_primitive::<TimestampMicrosecondType>()
                .value(0),
            1_700_000_000_123_456
        );
        assert_eq!(
            column("at")
                .as_primitive::<TimestampMicrosecondType>()
                .value(0),
            1_714_557_600_500_000
        );
    }

    #[test]
    fn text_payloads_must_be_utf8() {
        let mut rows = Rows::new(&Payload::Text, "s");
        let mut bad = delivered(1, "");
        bad.message.payload = vec![0xff, 0xfe];
        assert!(rows.push(&bad).unwrap_err().contains("UTF-8"));
        rows.push(&delivered(2, "hello")).unwrap();
        assert_eq!(rows.finish().unwrap().num_rows(), 1);
    }
}

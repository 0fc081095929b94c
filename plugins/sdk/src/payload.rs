//! Message payloads into Arrow columns, for stream and webhook sources: the payload as
//! bytes, as UTF-8 text, or as the declared fields of a JSON object. A source puts its own
//! metadata columns first and the payload's after them.
//!
//! ```
//! use std::collections::BTreeMap;
//! use ingest_sdk::payload::{Payload, PayloadColumns};
//!
//! let mut problems = Vec::new();
//! let columns = BTreeMap::from([("id".to_string(), "int64".to_string())]);
//! let payload = Payload::from_config(Some("json"), &columns, &["_seq"], &mut problems);
//! assert!(problems.is_empty());
//! let mut rows = PayloadColumns::new(&payload);
//! rows.push(br#"{"id": 7, "other": true}"#).unwrap();
//! assert!(rows.push(b"[1]").unwrap_err().contains("not an object"));
//! assert_eq!(rows.finish()[0].len(), 1);
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::ArrayRef;
use arrow_schema::{DataType, Field, TimeUnit};
use serde_json::Value;

/// The type of a declared JSON column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Int64,
    Float64,
    Boolean,
    Utf8,
    Timestamp,
}

/// What a payload becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// A `payload` column of bytes.
    Binary,
    /// A `payload` column of UTF-8 text.
    Text,
    /// The declared fields of a JSON object, each a column of its own.
    Json(Vec<(String, ColumnType)>),
}

impl Payload {
    /// The payload a config asks for: `payload` is `binary` (the default), `text` or
    /// `json`, and `columns` names each JSON field to keep with its type (`int64`,
    /// `float64`, `boolean`, `utf8`, `timestamp`). Names starting with `_` are the
    /// source's own (`own` lists them for the message). Problems are added to `problems`.
    pub fn from_config(
        payload: Option<&str>,
        columns: &BTreeMap<String, String>,
        own: &[&str],
        problems: &mut Vec<String>,
    ) -> Payload {
        let payload = match payload.unwrap_or("binary") {
            "binary" => Payload::Binary,
            "text" => Payload::Text,
            "json" => {
                let mut declared = Vec::new();
                for (name, ty) in columns {
                    let ty = match ty.as_str() {
                        "int64" => ColumnType::Int64,
                        "float64" => ColumnType::Float64,
                        "boolean" => ColumnType::Boolean,
                        "utf8" => ColumnType::Utf8,
                        "timestamp" => ColumnType::Timestamp,
                        other => {
                            problems.push(format!("`columns.{name} = {other:?}`; accepted: int64, float64, boolean, utf8, timestamp"));
                            continue;
                        }
                    };
                    if name.starts_with('_') {
                        problems.push(format!(
                            "`columns.{name}`: names starting with `_` are the source's own ({})",
                            own.join(", ")
                        ));
                    }
                    declared.push((name.clone(), ty));
                }
                if columns.is_empty() {
                    problems.push(
                        "`payload = \"json\"` needs `columns`: each field to keep and its type"
                            .into(),
                    );
                }
                Payload::Json(declared)
            }
            other => {
                problems.push(format!(
                    "`payload = {other:?}`; accepted: binary, text, json"
                ));
                Payload::Binary
            }
        };
        if !matches!(payload, Payload::Json(_)) && !columns.is_empty() {
            problems.push("`columns` is for `payload = \"json\"`".into());
        }
        payload
    }

    /// The payload's columns, all nullable.
    pub fn fields(&self) -> Vec<Field> {
        match self {
            Payload::Binary => vec![Field::new("payload", DataType::Binary, true)],
            Payload::Text => vec![Field::new("payload", DataType::Utf8, true)],
            Payload::Json(columns) => columns
                .iter()
                .map(|(name, ty)| Field::new(name, data_type(*ty), true))
                .collect(),
        }
    }
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

/// The payload columns of the rows being built.
pub struct PayloadColumns {
    payload: Payload,
    columns: Vec<Column>,
}

impl PayloadColumns {
    pub fn new(payload: &Payload) -> PayloadColumns {
        let columns = match payload {
            Payload::Binary => vec![Column::Binary(BinaryBuilder::new())],
            Payload::Text => vec![Column::Text(StringBuilder::new())],
            Payload::Json(columns) => columns.iter().map(|(_, ty)| new_column(*ty)).collect(),
        };
        PayloadColumns {
            payload: payload.clone(),
            columns,
        }
    }

    /// Add `bytes` as a row's payload, or say why it cannot be one: then nothing is added.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), String> {
        match &self.payload {
            Payload::Binary => {
                if let Some(Column::Binary(b)) = self.columns.first_mut() {
                    b.append_value(bytes);
                }
            }
            Payload::Text => {
                let text = std::str::from_utf8(bytes)
                    .map_err(|e| format!("the payload is not UTF-8 text: {e}"))?;
                if let Some(Column::Text(b)) = self.columns.first_mut() {
                    b.append_value(text);
                }
            }
            Payload::Json(_) => {
                let object = parse_object(bytes)?;
                self.push_object(&object)?;
            }
        }
        Ok(())
    }

    /// Add the declared fields of a parsed JSON object as a row (for a source that parses
    /// its records itself), or say why it cannot be one: then nothing is added. For a
    /// `binary` or `text` payload the object is the payload, as JSON text.
    pub fn push_object(&mut self, object: &serde_json::Map<String, Value>) -> Result<(), String> {
        let Payload::Json(declared) = &self.payload else {
            return self.push(Value::Object(object.clone()).to_string().as_bytes());
        };
        // Every field is converted before anything is appended, so a refused record
        // leaves no partial row.
        let mut values = Vec::with_capacity(declared.len());
        for (name, ty) in declared {
            values.push(
                convert(object.get(name), *ty).map_err(|why| format!("field `{name}`: {why}"))?,
            );
        }
        for (column, value) in self.columns.iter_mut().zip(values) {
            append(column, value);
        }
        Ok(())
    }

    /// Add a row without a payload (a Kafka tombstone, say): every payload column null.
    pub fn push_null(&mut self) {
        for column in &mut self.columns {
            append(column, Cell::Null);
        }
    }

    /// The columns so far, in the order of [`Payload::fields`]; the builders start over.
    pub fn finish(&mut self) -> Vec<ArrayRef> {
        self.columns
            .iter_mut()
            .map(|column| -> ArrayRef {
                match column {
                    Column::Binary(b) => Arc::new(b.finish()),
                    Column::Text(b) => Arc::new(b.finish()),
                    Column::Int64(b) => Arc::new(b.finish()),
                    Column::Float64(b) => Arc::new(b.finish()),
                    Column::Boolean(b) => Arc::new(b.finish()),
                    Column::Timestamp(b) => Arc::new(b.finish()),
                }
            })
            .collect()
    }
}

/// Append a message's headers to a `_headers` column: a JSON object of each name and its
/// value (null for a header without one), or null when there are none.
pub fn append_headers<'a>(
    column: &mut StringBuilder,
    headers: impl IntoIterator<Item = (&'a str, Option<std::borrow::Cow<'a, str>>)>,
) {
    let map: serde_json::Map<String, Value> = headers
        .into_iter()
        .map(|(k, v)| {
            let v = v.map_or(Value::Null, |v| Value::String(v.into_owned()));
            (k.to_string(), v)
        })
        .collect();
    if map.is_empty() {
        column.append_null();
    } else {
        column.append_value(Value::Object(map).to_string());
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

fn parse_object(payload: &[u8]) -> Result<serde_json::Map<String, Value>, String> {
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

fn convert(value: Option<&Value>, ty: ColumnType) -> Result<Cell, String> {
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
            Cell::Micros(crate::parse::parse_timestamp(text.as_bytes()).ok_or_else(wrong)?)
        }
    })
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
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int64Type, TimestampMicrosecondType};
    use arrow_array::Array as _;

    #[test]
    fn json_payloads_fill_their_declared_columns_and_bad_ones_are_refused_whole() {
        let payload = Payload::Json(vec![
            ("id".into(), ColumnType::Int64),
            ("at".into(), ColumnType::Timestamp),
            ("ok".into(), ColumnType::Boolean),
        ]);
        let mut rows = PayloadColumns::new(&payload);
        rows.push(br#"{"id":7,"at":"2024-05-01T12:00:00.5+02:00","ok":true,"x":1}"#)
            .unwrap();
        let why = rows.push(br#"{"id":"seven"}"#).unwrap_err();
        assert!(why.contains("field `id`") && why.contains("int64"), "{why}");
        assert!(rows.push(b"[1]").unwrap_err().contains("not an object"));
        assert!(rows.push(b"{").unwrap_err().contains("not JSON"));
        rows.push(b"{}").unwrap();
        let columns = rows.finish();
        assert_eq!(columns[0].len(), 2);
        assert_eq!(columns[0].as_primitive::<Int64Type>().value(0), 7);
        assert!(columns[0].is_null(1), "a missing field is null");
        assert_eq!(
            columns[1]
                .as_primitive::<TimestampMicrosecondType>()
                .value(0),
            1_714_557_600_500_000
        );
    }

    #[test]
    fn text_payloads_must_be_utf8() {
        let mut rows = PayloadColumns::new(&Payload::Text);
        assert!(rows.push(&[0xff, 0xfe]).unwrap_err().contains("UTF-8"));
        rows.push(b"hello").unwrap();
        assert_eq!(rows.finish()[0].as_string::<i32>().value(0), "hello");
    }

    #[test]
    fn every_config_problem_is_named() {
        let mut problems = Vec::new();
        let columns = BTreeMap::from([
            ("a".to_string(), "int32".to_string()),
            ("_seq".to_string(), "int64".to_string()),
        ]);
        Payload::from_config(Some("json"), &columns, &["_seq"], &mut problems);
        let all = problems.join("; ");
        assert!(
            all.contains("`columns.a = \"int32\"`") && all.contains("`columns._seq`"),
            "{all}"
        );
        problems.clear();
        Payload::from_config(Some("json"), &BTreeMap::new(), &[], &mut problems);
        assert!(problems[0].contains("needs `columns`"));
        problems.clear();
        Payload::from_config(Some("csv"), &BTreeMap::new(), &[], &mut problems);
        assert!(problems[0].contains("accepted: binary, text, json"));
    }
}

//! Records into Arrow rows: the columns, inferred from the first page's records and
//! overridden by those declared, and each record's fields converted into them.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Schema, SchemaRef};
use ingest_sdk::payload::{self, Payload, PayloadColumns};
use ingest_sdk::{Error, Result};
use serde_json::Value;

/// A column's type, as declared in `columns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Int64,
    Float64,
    Boolean,
    Utf8,
    Timestamp,
    /// Any JSON value, kept as its JSON text (utf8).
    Json,
}

impl ColumnType {
    pub fn parse(name: &str) -> Option<ColumnType> {
        Some(match name {
            "int64" => ColumnType::Int64,
            "float64" => ColumnType::Float64,
            "boolean" => ColumnType::Boolean,
            "utf8" => ColumnType::Utf8,
            "timestamp" => ColumnType::Timestamp,
            "json" => ColumnType::Json,
            _ => return None,
        })
    }

    fn converted(self) -> payload::ColumnType {
        match self {
            ColumnType::Int64 => payload::ColumnType::Int64,
            ColumnType::Float64 => payload::ColumnType::Float64,
            ColumnType::Boolean => payload::ColumnType::Boolean,
            // A string is kept as it is; any other value as its JSON text.
            ColumnType::Utf8 | ColumnType::Json => payload::ColumnType::Utf8,
            ColumnType::Timestamp => payload::ColumnType::Timestamp,
        }
    }
}

/// The type a JSON value suggests (`None` for null).
fn suggested(v: &Value) -> Option<ColumnType> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(_) => ColumnType::Boolean,
        Value::Number(n) if n.is_i64() => ColumnType::Int64,
        Value::Number(_) => ColumnType::Float64,
        Value::String(_) => ColumnType::Utf8,
        Value::Array(_) | Value::Object(_) => ColumnType::Json,
    })
}

/// The type that holds values of both `a` and `b`.
fn widened(a: ColumnType, b: ColumnType) -> ColumnType {
    use ColumnType::*;
    match (a, b) {
        (a, b) if a == b => a,
        (Int64, Float64) | (Float64, Int64) => Float64,
        _ => Json,
    }
}

/// The columns: inferred from `sample` when `infer` (the fields of the first record in name
/// order, then fields first seen in later records; a field always null is utf8), then
/// `declared` overriding or adding.
pub fn columns(
    sample: &[Value],
    declared: &[(String, ColumnType)],
    infer: bool,
) -> Vec<(String, ColumnType)> {
    let mut out: Vec<(String, Option<ColumnType>)> = Vec::new();
    if infer {
        for record in sample {
            let Value::Object(fields) = record else {
                continue;
            };
            for (name, value) in fields {
                let ty = suggested(value);
                match out.iter_mut().find(|(n, _)| n == name) {
                    Some((_, seen)) => {
                        *seen = match (*seen, ty) {
                            (Some(a), Some(b)) => Some(widened(a, b)),
                            (a, b) => a.or(b),
                        }
                    }
                    None => out.push((name.clone(), ty)),
                }
            }
        }
    }
    let mut out: Vec<(String, ColumnType)> = out
        .into_iter()
        .map(|(n, t)| (n, t.unwrap_or(ColumnType::Utf8)))
        .collect();
    for (name, ty) in declared {
        match out.iter_mut().find(|(n, _)| n == name) {
            Some(column) => column.1 = *ty,
            None => out.push((name.clone(), *ty)),
        }
    }
    out
}

/// Rows being built for one chunk.
pub struct Rows {
    schema: SchemaRef,
    values: PayloadColumns,
    len: usize,
}

impl Rows {
    pub fn new(columns: &[(String, ColumnType)]) -> Rows {
        let payload = Payload::Json(
            columns
                .iter()
                .map(|(n, t)| (n.clone(), t.converted()))
                .collect(),
        );
        Rows {
            schema: Arc::new(Schema::new(payload.fields())),
            values: PayloadColumns::new(&payload),
            len: 0,
        }
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Add `record` as a row, or say why it cannot be one (nothing is added then). Fields
    /// that are not columns are left out.
    pub fn push(&mut self, record: &Value) -> std::result::Result<(), String> {
        let Value::Object(fields) = record else {
            return Err(format!(
                "the record is not a JSON object: {}",
                shortened(&record.to_string())
            ));
        };
        self.values.push_object(fields)?;
        self.len += 1;
        Ok(())
    }

    /// The rows so far as a batch; the builders start over.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        self.len = 0;
        RecordBatch::try_new(self.schema.clone(), self.values.finish())
            .map_err(|e| Error::fatal(format!("building a batch: {e}")))
    }
}

/// At most 200 characters of `text`, for messages.
pub fn shortened(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type};
    use arrow_array::Array as _;
    use serde_json::json;

    #[test]
    fn columns_are_inferred_in_order_widened_and_overridden() {
        let sample = vec![
            json!({"id": 1, "price": 2, "tags": ["a"], "note": null}),
            json!({"id": 2, "price": 2.5, "at": "2024-05-01T00:00:00Z", "odd": 1}),
            json!({"odd": "x"}),
        ];
        let declared = vec![
            ("at".to_string(), ColumnType::Timestamp),
            ("extra".to_string(), ColumnType::Boolean),
        ];
        assert_eq!(
            columns(&sample, &declared, true),
            [
                ("id".to_string(), ColumnType::Int64),
                ("note".to_string(), ColumnType::Utf8),
                ("price".to_string(), ColumnType::Float64),
                ("tags".to_string(), ColumnType::Json),
                ("at".to_string(), ColumnType::Timestamp),
                ("odd".to_string(), ColumnType::Json),
                ("extra".to_string(), ColumnType::Boolean),
            ]
        );
        assert_eq!(columns(&sample, &declared, false), declared);
    }

    #[test]
    fn records_become_rows_and_bad_ones_are_refused_whole() {
        let cols = columns(&[json!({"id": 1, "price": 1.5, "tags": [1]})], &[], true);
        let mut rows = Rows::new(&cols);
        rows.push(&json!({"id": 7, "price": 3, "tags": {"a": 1}, "other": true}))
            .unwrap();
        let why = rows.push(&json!({"id": "seven"})).unwrap_err();
        assert!(why.contains("field `id`"), "{why}");
        assert!(rows
            .push(&json!([1]))
            .unwrap_err()
            .contains("not a JSON object"));
        let batch = rows.finish().unwrap();
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.column(0).as_primitive::<Int64Type>().value(0), 7);
        assert_eq!(batch.column(1).as_primitive::<Float64Type>().value(0), 3.0);
        assert_eq!(batch.column(2).as_string::<i32>().value(0), r#"{"a":1}"#);
        assert!(!batch.column(2).is_null(0));
    }
}

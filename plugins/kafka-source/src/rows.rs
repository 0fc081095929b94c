//! Records into Arrow rows: the columns every topic has, then the value as the config says
//! (bytes, text, or the declared fields of a JSON object).

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use ingest_sdk::payload::{self, Payload, PayloadColumns};
use ingest_sdk::{Error, Result};
use kafka_client::Record;

/// The source's own columns, before the payload's.
pub const OWN_COLUMNS: [&str; 5] = ["_partition", "_offset", "_commit_ts", "_key", "_headers"];

/// The stream's schema.
pub fn schema(payload: &Payload, key_binary: bool) -> SchemaRef {
    let mut fields = vec![
        Field::new("_partition", DataType::Int32, false),
        Field::new("_offset", DataType::Int64, false),
        Field::new(
            "_commit_ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new(
            "_key",
            if key_binary {
                DataType::Binary
            } else {
                DataType::Utf8
            },
            true,
        ),
        Field::new("_headers", DataType::Utf8, true),
    ];
    fields.extend(payload.fields());
    Arc::new(Schema::new(fields))
}

enum Key {
    Text(StringBuilder),
    Binary(BinaryBuilder),
}

/// Rows being built for one chunk.
pub struct Rows {
    schema: SchemaRef,
    partition: Int32Builder,
    offset: Int64Builder,
    timestamp: TimestampMicrosecondBuilder,
    key: Key,
    headers: StringBuilder,
    payload: PayloadColumns,
    len: usize,
}

impl Rows {
    pub fn new(payload: &Payload, key_binary: bool) -> Rows {
        Rows {
            schema: schema(payload, key_binary),
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            timestamp: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            key: if key_binary {
                Key::Binary(BinaryBuilder::new())
            } else {
                Key::Text(StringBuilder::new())
            },
            headers: StringBuilder::new(),
            payload: PayloadColumns::new(payload),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Add record `r` of `partition` as a row, or say why it cannot be one (nothing is
    /// added then).
    pub fn push(&mut self, partition: i32, r: &Record) -> std::result::Result<(), String> {
        let key = match (&self.key, &r.key) {
            (Key::Text(_), Some(k)) => Some(
                std::str::from_utf8(k).map_err(|e| format!("the key is not UTF-8 text: {e}"))?,
            ),
            _ => None,
        };
        match &r.value {
            Some(v) => self.payload.push(v)?,
            None => self.payload.push_null(),
        }
        match (&mut self.key, &r.key) {
            (Key::Text(b), _) => b.append_option(key),
            (Key::Binary(b), k) => b.append_option(k.as_deref()),
        }
        self.partition.append_value(partition);
        self.offset.append_value(r.offset);
        self.timestamp
            .append_value(r.timestamp_ms.saturating_mul(1000));
        // Header values are bytes; they are kept as text (invalid UTF-8 replaced).
        payload::append_headers(
            &mut self.headers,
            r.headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_deref().map(String::from_utf8_lossy))),
        );
        self.len += 1;
        Ok(())
    }

    /// The rows so far as a batch; the builders start over.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
            Arc::new(self.timestamp.finish()),
            match &mut self.key {
                Key::Text(b) => Arc::new(b.finish()),
                Key::Binary(b) => Arc::new(b.finish()),
            },
            Arc::new(self.headers.finish()),
        ];
        arrays.extend(self.payload.finish());
        self.len = 0;
        RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|e| Error::fatal(format!("building a batch: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int32Type, Int64Type, TimestampMicrosecondType};
    use arrow_array::Array as _;
    use ingest_sdk::payload::ColumnType;

    fn record(offset: i64, key: Option<&[u8]>, value: Option<&str>) -> Record {
        Record {
            offset,
            timestamp_ms: 1_700_000_000_123,
            key: key.map(<[u8]>::to_vec),
            value: value.map(|v| v.as_bytes().to_vec()),
            headers: vec![
                ("trace".into(), Some(b"t1".to_vec())),
                ("empty".into(), None),
            ],
            batch_end: None,
        }
    }

    #[test]
    fn records_become_rows_and_tombstones_have_null_payloads() {
        let payload = Payload::Json(vec![("id".into(), ColumnType::Int64)]);
        let mut rows = Rows::new(&payload, false);
        rows.push(2, &record(40, Some(b"k1"), Some(r#"{"id":7}"#)))
            .unwrap();
        rows.push(2, &record(41, Some(b"k1"), None)).unwrap();
        let why = rows
            .push(2, &record(42, Some(&[0xff]), Some("{}")))
            .unwrap_err();
        assert!(why.contains("key is not UTF-8"), "{why}");
        assert!(rows
            .push(2, &record(43, None, Some("nope")))
            .unwrap_err()
            .contains("not JSON"));
        let batch = rows.finish().unwrap();
        assert_eq!(batch.num_rows(), 2);
        let column = |name: &str| batch.column_by_name(name).unwrap().clone();
        assert_eq!(
            column("_partition").as_primitive::<Int32Type>().values(),
            &[2, 2]
        );
        assert_eq!(
            column("_offset").as_primitive::<Int64Type>().values(),
            &[40, 41]
        );
        assert_eq!(column("_key").as_string::<i32>().value(1), "k1");
        assert_eq!(column("id").as_primitive::<Int64Type>().value(0), 7);
        assert!(column("id").is_null(1), "a tombstone's payload is null");
        assert_eq!(
            column("_headers").as_string::<i32>().value(0),
            r#"{"empty":null,"trace":"t1"}"#
        );
        assert_eq!(
            column("_commit_ts")
                .as_primitive::<TimestampMicrosecondType>()
                .value(0),
            1_700_000_000_123_000
        );
    }

    #[test]
    fn binary_keys_are_kept_as_bytes() {
        let mut rows = Rows::new(&Payload::Binary, true);
        rows.push(0, &record(1, Some(&[0xff, 0]), Some("x")))
            .unwrap();
        rows.push(0, &record(2, None, Some("y"))).unwrap();
        let batch = rows.finish().unwrap();
        let keys = batch
            .column_by_name("_key")
            .unwrap()
            .as_binary::<i32>()
            .clone();
        assert_eq!(keys.value(0), &[0xff, 0]);
        assert!(keys.is_null(1));
    }
}

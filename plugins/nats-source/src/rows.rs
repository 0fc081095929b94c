//! Messages into Arrow rows: the metadata columns every stream has, then the payload as
//! the config says (bytes, text, or the declared fields of a JSON object).

use std::sync::Arc;

use arrow_array::builder::{Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use ingest_sdk::payload::{self, Payload, PayloadColumns};
use ingest_sdk::{Error, Result};
use nats_client::Delivered;

/// The source's own columns, before the payload's.
pub const OWN_COLUMNS: [&str; 4] = ["_subject", "_seq", "_commit_ts", "_headers"];

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
    fields.extend(payload.fields());
    Arc::new(Schema::new(fields))
}

/// Rows being built for one chunk.
pub struct Rows {
    schema: SchemaRef,
    subject: StringBuilder,
    seq: Int64Builder,
    timestamp: TimestampMicrosecondBuilder,
    headers: StringBuilder,
    payload: PayloadColumns,
    len: usize,
}

impl Rows {
    pub fn new(payload: &Payload) -> Rows {
        Rows {
            schema: schema(payload),
            subject: StringBuilder::new(),
            seq: Int64Builder::new(),
            timestamp: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            headers: StringBuilder::new(),
            payload: PayloadColumns::new(payload),
            len: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Add message `d` as a row, or say why it cannot be one (nothing is added then).
    pub fn push(&mut self, d: &Delivered) -> std::result::Result<(), String> {
        self.payload.push(&d.message.payload)?;
        self.subject.append_value(&d.message.subject);
        self.seq.append_value(d.stream_seq as i64);
        self.timestamp.append_value(d.timestamp_ns / 1000);
        payload::append_headers(
            &mut self.headers,
            d.message
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), Some(v.as_str().into()))),
        );
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
        arrays.extend(self.payload.finish());
        self.len = 0;
        RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|e| Error::fatal(format!("building a batch: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingest_sdk::payload::ColumnType;
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
        let mut rows = Rows::new(&payload);
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
        let mut rows = Rows::new(&Payload::Text);
        let mut bad = delivered(1, "");
        bad.message.payload = vec![0xff, 0xfe];
        assert!(rows.push(&bad).unwrap_err().contains("UTF-8"));
        rows.push(&delivered(2, "hello")).unwrap();
        assert_eq!(rows.finish().unwrap().num_rows(), 1);
    }
}

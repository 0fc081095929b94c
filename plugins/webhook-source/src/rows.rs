//! Requests into Arrow rows: the source's own columns (`_path`, `_delivery_id`,
//! `_commit_ts` when the host received the request, `_query`, `_headers`), then the body as
//! the config says.

use std::sync::Arc;

use arrow_array::builder::{StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use ingest_sdk::payload::PayloadColumns;
use ingest_sdk::webhook::Request;
use ingest_sdk::{Error, Result};

use crate::auth::header;
use crate::config::SourceConfig;

/// The source's own columns, before the body's.
pub const OWN_COLUMNS: [&str; 5] = ["_path", "_delivery_id", "_commit_ts", "_query", "_headers"];

/// The stream's schema.
pub fn schema(cfg: &SourceConfig) -> SchemaRef {
    let mut fields = vec![
        Field::new("_path", DataType::Utf8, false),
        Field::new("_delivery_id", DataType::Utf8, true),
        Field::new(
            "_commit_ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("_query", DataType::Utf8, true),
        Field::new("_headers", DataType::Utf8, true),
    ];
    fields.extend(cfg.payload.fields());
    Arc::new(Schema::new(fields))
}

/// Rows being built for one chunk.
pub struct Rows {
    schema: SchemaRef,
    path: StringBuilder,
    delivery_id: StringBuilder,
    received: TimestampMicrosecondBuilder,
    query: StringBuilder,
    headers: StringBuilder,
    body: PayloadColumns,
    len: usize,
}

impl Rows {
    pub fn new(cfg: &SourceConfig) -> Rows {
        Rows {
            schema: schema(cfg),
            path: StringBuilder::new(),
            delivery_id: StringBuilder::new(),
            received: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            query: StringBuilder::new(),
            headers: StringBuilder::new(),
            body: PayloadColumns::new(&cfg.payload),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Add `request` as a row, or say why it cannot be one (nothing is added then).
    pub fn push(
        &mut self,
        cfg: &SourceConfig,
        request: &Request,
    ) -> std::result::Result<(), String> {
        let delivery_id = cfg
            .delivery_id_headers
            .iter()
            .find_map(|name| header(request, name));
        if cfg.require_delivery_id && delivery_id.is_none() {
            return Err(format!(
                "no delivery id: the request has no `{}` header",
                cfg.delivery_id_headers.join("` or `")
            ));
        }
        if cfg.json_text {
            if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&request.body) {
                return Err(format!("the body is not JSON: {e}"));
            }
        }
        self.body.push(&request.body)?;
        self.path.append_value(&request.path);
        self.delivery_id.append_option(delivery_id);
        self.received.append_value(request.received_us);
        self.query
            .append_option((!request.query.is_empty()).then_some(request.query.as_str()));
        ingest_sdk::payload::append_headers(
            &mut self.headers,
            request
                .headers
                .iter()
                .filter(|(k, _)| cfg.keep_headers.contains(k))
                .map(|(k, v)| (k.as_str(), Some(v.as_str().into()))),
        );
        self.len += 1;
        Ok(())
    }

    /// The rows so far as a batch; the builders start over.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(self.path.finish()),
            Arc::new(self.delivery_id.finish()),
            Arc::new(self.received.finish()),
            Arc::new(self.query.finish()),
            Arc::new(self.headers.finish()),
        ];
        arrays.extend(self.body.finish());
        self.len = 0;
        RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|e| Error::fatal(format!("building a batch: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_array::Array as _;

    fn request(headers: &[(&str, &str)], body: &str) -> Request {
        crate::test_request(headers, body)
    }

    #[test]
    fn a_request_becomes_a_row_with_its_delivery_id_and_kept_headers() {
        let cfg = SourceConfig::parse(
            r#"{"paths":["/hooks"],"columns":{"id":"int64"},"keep_headers":["Content-Type"]}"#,
        )
        .unwrap();
        let mut rows = Rows::new(&cfg);
        let headers = [
            ("content-type", "application/json"),
            ("x-github-delivery", "d-1"),
            ("authorization", "Bearer secret"),
        ];
        rows.push(&cfg, &request(&headers, r#"{"id":5}"#)).unwrap();
        assert!(rows
            .push(&cfg, &request(&headers, "not json"))
            .unwrap_err()
            .contains("not JSON"));
        let batch = rows.finish().unwrap();
        assert_eq!(batch.num_rows(), 1);
        let column = |name: &str| batch.column_by_name(name).unwrap().clone();
        assert_eq!(column("_delivery_id").as_string::<i32>().value(0), "d-1");
        assert_eq!(column("_query").as_string::<i32>().value(0), "source=test");
        assert_eq!(
            column("_headers").as_string::<i32>().value(0),
            r#"{"content-type":"application/json"}"#
        );
        assert_eq!(column("id").as_primitive::<Int64Type>().value(0), 5);
    }

    #[test]
    fn json_bodies_without_columns_are_kept_whole_once_they_parse() {
        let cfg = SourceConfig::parse(r#"{"paths":["/h"],"require_delivery_id":true}"#).unwrap();
        let mut rows = Rows::new(&cfg);
        let why = rows.push(&cfg, &request(&[], "{}")).unwrap_err();
        assert!(why.contains("no delivery id"), "{why}");
        rows.push(&cfg, &request(&[("webhook-id", "w1")], r#"{"a": [1, 2]}"#))
            .unwrap();
        assert!(rows
            .push(&cfg, &request(&[("webhook-id", "w2")], r#"{"a": "#))
            .is_err());
        let batch = rows.finish().unwrap();
        assert_eq!(batch.num_rows(), 1);
        let payload = batch.column_by_name("payload").unwrap();
        assert_eq!(payload.as_string::<i32>().value(0), r#"{"a": [1, 2]}"#);
        assert!(batch.column_by_name("_headers").unwrap().is_null(0));
    }
}

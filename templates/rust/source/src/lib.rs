//! {{name}}: a source that generates `rows` numbered rows in one stream, resumable: its
//! position is the number of the next row, so a restarted run goes on where the committed
//! output ends.
//!
//! Build with `./build.sh`; test the logic natively with `cargo test`.

use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use ingest_sdk::source::{Chunk, Reader, Source, Split, StreamInfo, SyncMode};
use ingest_sdk::{config, Error, Result};
use schemars::JsonSchema;
use serde::Deserialize;

/// The plugin's `[source.config]` table.
/// Its JSON Schema, derived from this struct (doc comments become descriptions), is the
/// plugin's `spec()`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How many rows to generate.
    pub rows: u64,
    /// The stream's name.
    #[serde(default = "default_stream")]
    pub stream: String,
}

fn default_stream() -> String {
    "numbers".to_string()
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("label", DataType::Utf8, false),
    ]))
}

fn settings(config: &str, stream: Option<&str>) -> Result<Config> {
    let config: Config = config::parse(config)?;
    match stream {
        Some(s) if s != config.stream => Err(Error::config(format!(
            "unknown stream `{s}`; this source offers `{}`",
            config.stream
        ))),
        _ => Ok(config),
    }
}

pub struct Numbers;

impl Source for Numbers {
    type Reader = NumbersReader;

    fn spec() -> String {
        config::spec::<Config>()
    }

    fn check(config: &str) -> Result<()> {
        settings(config, None).map(|_| ())
    }

    fn discover(config: &str) -> Result<Vec<StreamInfo>> {
        let config = settings(config, None)?;
        Ok(vec![StreamInfo {
            name: config.stream,
            schema: schema(),
            primary_key: vec!["id".into()],
            cursor_field: None,
            sync_modes: vec![SyncMode::FullRefresh, SyncMode::Incremental],
        }])
    }

    fn splits(config: &str, stream: &str) -> Result<Vec<Split>> {
        settings(config, Some(stream))?;
        Ok(vec![Split {
            id: "all".into(),
            descriptor: Vec::new(),
        }])
    }

    fn open(
        config: &str,
        stream: &str,
        _split: Split,
        position: Option<Vec<u8>>,
    ) -> Result<NumbersReader> {
        let config = settings(config, Some(stream))?;
        let next = match position {
            None => 0,
            Some(bytes) => u64::from_le_bytes(bytes.try_into().map_err(|_| {
                Error::fatal("the stored position is not the 8 bytes this source writes")
            })?),
        };
        Ok(NumbersReader {
            next,
            end: config.rows,
        })
    }
}

pub struct NumbersReader {
    next: u64,
    end: u64,
}

impl Reader for NumbersReader {
    fn next(&mut self, max_rows: usize) -> Result<Option<Chunk>> {
        if self.next >= self.end {
            return Ok(None);
        }
        let stop = self.end.min(self.next + max_rows as u64);
        let ids: Vec<i64> = (self.next..stop).map(|i| i as i64).collect();
        let labels: Vec<String> = ids.iter().map(|i| format!("row {i}")).collect();
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(labels)),
            ],
        )?;
        self.next = stop;
        Ok(Some(Chunk {
            batch,
            position: self.next.to_le_bytes().to_vec(),
            rejects: Vec::new(),
        }))
    }
}

// Exported only in the component; the native build is for `cargo test`.
#[cfg(target_arch = "wasm32")]
ingest_sdk::export_source!(Numbers);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumes_after_its_position() {
        let config = r#"{"rows": 10}"#;
        let split = Numbers::splits(config, "numbers").unwrap().remove(0);
        let mut reader = Numbers::open(config, "numbers", split.clone(), None).unwrap();
        let first = reader.next(4).unwrap().unwrap();
        assert_eq!(first.batch.num_rows(), 4);
        let mut resumed = Numbers::open(config, "numbers", split, Some(first.position)).unwrap();
        let rest = resumed.next(100).unwrap().unwrap();
        assert_eq!(rest.batch.num_rows(), 6);
        assert!(resumed.next(100).unwrap().is_none());
    }
}

//! {{name}}: a transform that keeps the rows whose `column` contains `contains`, and rejects
//! the rows where `column` is empty, with a reason (the host routes rejects by `on_error`).
//!
//! Build with `./build.sh`; test the logic natively with `cargo test`.

use arrow_array::{Array, BooleanArray, RecordBatch, StringArray};
use arrow_schema::{DataType, SchemaRef};
use arrow_select::filter::filter_record_batch;
use ingest_sdk::transform::{Output, Transform};
use ingest_sdk::{config, Error, Reject, Result};
use schemars::JsonSchema;
use serde::Deserialize;

/// The plugin's `[transform.config]` table.
/// Its JSON Schema, derived from this struct (doc comments become descriptions), is the
/// plugin's `spec()`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The text column to look at.
    pub column: String,
    /// Keep rows whose `column` contains this.
    pub contains: String,
}

pub struct Filter {
    config: Config,
    index: usize,
}

impl Transform for Filter {
    fn spec() -> String {
        config::spec::<Config>()
    }

    fn check(config: &str) -> Result<()> {
        config::parse::<Config>(config).map(|_| ())
    }

    fn open(config: &str, schema: SchemaRef) -> Result<Self> {
        let config: Config = config::parse(config)?;
        let (index, field) = schema.column_with_name(&config.column).ok_or_else(|| {
            Error::config(format!(
                "`column`: the stream has no column `{}`; its columns are [{}]",
                config.column,
                schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        if field.data_type() != &DataType::Utf8 {
            return Err(Error::config(format!(
                "`column`: `{}` is {}, not text",
                config.column,
                field.data_type()
            )));
        }
        Ok(Filter { config, index })
    }

    fn process(&mut self, batch: RecordBatch) -> Result<Output> {
        let column = batch
            .column(self.index)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| Error::fatal("the column is not Utf8"))?;
        let mut rejects = Vec::new();
        let keep: BooleanArray = (0..batch.num_rows())
            .map(|row| {
                if column.is_null(row) || column.value(row).is_empty() {
                    rejects.push(Reject::row(
                        row,
                        format!("`{}` is empty", self.config.column),
                    ));
                    return Some(false);
                }
                Some(column.value(row).contains(&self.config.contains))
            })
            .collect();
        let kept = filter_record_batch(&batch, &keep)?;
        Ok(Output {
            batches: vec![kept],
            rejects,
        })
    }
}

// Exported only in the component; the native build is for `cargo test`.
#[cfg(target_arch = "wasm32")]
ingest_sdk::export_transform!(Filter);

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::{Field, Schema};
    use std::sync::Arc;

    fn open() -> Filter {
        let schema = Arc::new(Schema::new(vec![Field::new("city", DataType::Utf8, true)]));
        Filter::open(r#"{"column": "city", "contains": "o"}"#, schema).unwrap()
    }

    #[test]
    fn keeps_matching_rows_and_rejects_empty_ones() {
        let mut filter = open();
        let schema = Arc::new(Schema::new(vec![Field::new("city", DataType::Utf8, true)]));
        let cities = StringArray::from(vec![Some("Oslo"), Some("Rome"), None, Some("Paris")]);
        let batch = RecordBatch::try_new(schema, vec![Arc::new(cities)]).unwrap();
        let out = filter.process(batch).unwrap();
        assert_eq!(out.batches[0].num_rows(), 2);
        assert_eq!(out.rejects.len(), 1);
        assert_eq!(out.rejects[0].row, Some(2));
    }

    #[test]
    fn a_missing_column_is_a_config_error() {
        let schema = Arc::new(Schema::new(vec![Field::new("town", DataType::Utf8, true)]));
        let err = Filter::open(r#"{"column": "city", "contains": "o"}"#, schema)
            .err()
            .unwrap();
        assert!(matches!(err, Error::InvalidConfig(m) if m.contains("town")));
    }
}

//! The config of the file sink: the serde model of what the user wrote ([`RawConfig`]) and
//! the validated form ([`SinkConfig`]). Validation collects every problem and reports them
//! together; it needs neither the stream's schema nor the file system (`check` adds the file
//! system, `open` the schema).

use std::path::PathBuf;

use ingest_sdk::host::ParquetOptions;
use ingest_sdk::{config, Error, Result};
use schemars::JsonSchema;
use serde::Deserialize;

/// Rows per Parquet row group when the config says nothing.
pub const DEFAULT_ROW_GROUP_ROWS: u32 = 131_072;

/// The size a file is rolled at when the config says nothing: 128 MiB.
pub const DEFAULT_TARGET_FILE_SIZE: u64 = 128 << 20;

/// The config as written in pipeline.toml (rendered to JSON by the host). Its JSON Schema
/// (the sink's `spec`) is derived from it, descriptions from these comments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "file sink config")]
pub struct RawConfig {
    /// Output directory; grant it read-write in the sink's `fs` grants. Files land in
    /// `<path>/<stream>/[<partition>/]part-<epoch>-<seq>.<ext>`; `<path>/.staging` holds
    /// what is not yet committed.
    #[schemars(length(min = 1))]
    pub path: String,
    /// The file format: parquet (default), jsonl or csv.
    #[serde(default)]
    #[schemars(extend("enum" = ["parquet", "jsonl", "csv"], "default" = "parquet"))]
    pub format: Option<String>,
    /// Parquet only: the codec.
    #[serde(default)]
    #[schemars(extend("enum" = COMPRESSIONS, "default" = "zstd"))]
    pub compression: Option<String>,
    /// Parquet only: zstd 1-22, gzip 0-9. Unset, zstd uses 3, and 1 for columns of
    /// high-entropy values such as hashes, where level 1 compresses at least as small.
    #[serde(default)]
    pub compression_level: Option<i64>,
    /// Parquet only: rows per row group.
    #[serde(default)]
    #[schemars(range(min = 1, max = u32::MAX), extend("default" = DEFAULT_ROW_GROUP_ROWS))]
    pub row_group_rows: Option<u64>,
    /// Column for Hive-style partition directories.
    #[serde(default)]
    #[schemars(length(min = 1))]
    pub partition_by: Option<String>,
    /// Default: `day` for date and timestamp columns, else `value`. day/month/year also
    /// accept text columns holding ISO 8601 dates.
    #[serde(default)]
    #[schemars(extend("enum" = ["day", "month", "year", "value"]))]
    pub partition_granularity: Option<String>,
    /// The size a file is rolled at: once this much is written to it (for Parquet, at the
    /// end of the row group that passes it), the partition's later rows of the epoch start
    /// the next file. A size ("128MiB", "1GB") or a number of bytes; default 128MiB.
    #[serde(default)]
    #[schemars(extend("type" = ["string", "integer"], "default" = "128MiB"))]
    pub target_file_size: Option<serde_json::Value>,
}

/// The file format written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Parquet,
    Jsonl,
    Csv,
}

impl Format {
    /// The file name extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
        }
    }
}

/// How partition values are derived from the `partition_by` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Day,
    Month,
    Year,
    /// The column's value as text.
    Value,
}

impl Granularity {
    pub fn name(self) -> &'static str {
        match self {
            Granularity::Day => "day",
            Granularity::Month => "month",
            Granularity::Year => "year",
            Granularity::Value => "value",
        }
    }
}

/// Hive-style partitioning by one column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitioning {
    pub column: String,
    /// `None`: derived from the column's type at open (day for dates and timestamps, value
    /// otherwise).
    pub granularity: Option<Granularity>,
}

/// A validated config.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// The output directory, as written (the host preopens it).
    pub root: PathBuf,
    pub format: Format,
    /// Used when `format` is Parquet.
    pub parquet: ParquetOptions,
    pub partitioning: Option<Partitioning>,
    /// Bytes written to a file before it is rolled.
    pub target_file_size: u64,
}

const COMPRESSIONS: &[&str] = &["zstd", "snappy", "lz4", "gzip", "none"];

impl SinkConfig {
    /// Parse and validate the host's JSON config; every problem in one `invalid-config`.
    pub fn from_json(json: &str) -> Result<Self> {
        let raw: RawConfig = config::parse(json).map_err(|e| match e {
            Error::InvalidConfig(_) => e.context("file sink config"),
            other => other,
        })?;
        Self::validate(raw)
    }

    pub fn validate(raw: RawConfig) -> Result<Self> {
        let mut problems: Vec<String> = Vec::new();

        if raw.path.trim().is_empty() {
            problems.push(
                "`path` is empty; set it to the output directory, e.g. `path = \"out\"`, and \
                 grant it read-write in the sink's `fs` grants"
                    .into(),
            );
        }

        let format = match raw.format.as_deref().unwrap_or("parquet") {
            "parquet" => Some(Format::Parquet),
            "jsonl" => Some(Format::Jsonl),
            "csv" => Some(Format::Csv),
            other => {
                problems.push(format!(
                    "`format = \"{other}\"` is not a format this sink writes; accepted: \
                     `parquet`, `jsonl`, `csv`"
                ));
                None
            }
        };
        let is_parquet = format.is_none_or(|f| f == Format::Parquet);
        if !is_parquet {
            for (key, set) in [
                ("compression", raw.compression.is_some()),
                ("compression_level", raw.compression_level.is_some()),
                ("row_group_rows", raw.row_group_rows.is_some()),
            ] {
                if set {
                    problems.push(format!(
                        "`{key}` applies to `format = \"parquet\"` only; remove it"
                    ));
                }
            }
        }

        let compression = raw.compression.as_deref().unwrap_or("zstd");
        if !COMPRESSIONS.contains(&compression) {
            problems.push(format!(
                "`compression = \"{compression}\"` is unknown; accepted: `zstd`, `snappy`, \
                 `lz4`, `gzip`, `none`"
            ));
        }
        let level = match raw.compression_level {
            None => None,
            Some(level) => {
                let range = match compression {
                    "zstd" => Some(1..=22),
                    "gzip" => Some(0..=9),
                    _ => None,
                };
                match range {
                    Some(range) if range.contains(&level) => i32::try_from(level).ok(),
                    Some(range) => {
                        problems.push(format!(
                            "`compression_level = {level}` is out of range for `{compression}`; \
                             accepted: {} to {}",
                            range.start(),
                            range.end()
                        ));
                        None
                    }
                    None if COMPRESSIONS.contains(&compression) => {
                        problems.push(format!(
                            "`compression_level` does not apply to `compression = \
                             \"{compression}\"`; only `zstd` (1 to 22) and `gzip` (0 to 9) have \
                             levels"
                        ));
                        None
                    }
                    None => None,
                }
            }
        };
        let row_group_rows = match raw.row_group_rows {
            None => DEFAULT_ROW_GROUP_ROWS,
            Some(n) => match u32::try_from(n) {
                Ok(n) if n > 0 => n,
                _ => {
                    problems.push(format!(
                        "`row_group_rows = {n}` is out of range; accepted: 1 to {}",
                        u32::MAX
                    ));
                    DEFAULT_ROW_GROUP_ROWS
                }
            },
        };

        let granularity = match raw.partition_granularity.as_deref() {
            None => None,
            Some("day") => Some(Granularity::Day),
            Some("month") => Some(Granularity::Month),
            Some("year") => Some(Granularity::Year),
            Some("value") => Some(Granularity::Value),
            Some(other) => {
                problems.push(format!(
                    "`partition_granularity = \"{other}\"` is unknown; accepted: `day`, \
                     `month`, `year`, `value`"
                ));
                None
            }
        };
        let partitioning = match raw.partition_by {
            Some(column) if column.is_empty() => {
                problems.push(
                    "`partition_by` is empty; name a column of the stream, or remove the key"
                        .into(),
                );
                None
            }
            Some(column) => Some(Partitioning {
                column,
                granularity,
            }),
            None => {
                if let Some(g) = raw.partition_granularity {
                    problems.push(format!(
                        "`partition_granularity = \"{g}\"` needs `partition_by` (the column to \
                         partition by)"
                    ));
                }
                None
            }
        };

        let target_file_size = match &raw.target_file_size {
            None => DEFAULT_TARGET_FILE_SIZE,
            Some(value) => match config::byte_size(value) {
                Some(n) if n > 0 => n,
                _ => {
                    problems.push(format!(
                        "`target_file_size = {value}` is not a size above 0; give bytes (an \
                         integer) or a size such as \"128MiB\" or \"1GB\""
                    ));
                    DEFAULT_TARGET_FILE_SIZE
                }
            },
        };

        match (format, problems.is_empty()) {
            (Some(format), true) => Ok(SinkConfig {
                root: PathBuf::from(raw.path),
                format,
                parquet: ParquetOptions {
                    compression: compression.to_string(),
                    level,
                    row_group_rows,
                },
                partitioning,
                target_file_size,
            }),
            _ => Err(Error::config(format!(
                "file sink config: {}",
                problems.join("; ")
            ))),
        }
    }
}

/// JSON Schema of the config, as `spec()` reports it.
pub fn json_schema() -> String {
    ingest_sdk::config::spec::<RawConfig>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        match SinkConfig::from_json(json) {
            Err(Error::InvalidConfig(m)) => m,
            other => panic!("expected invalid-config, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = SinkConfig::from_json(r#"{"path":"out"}"#).unwrap();
        assert_eq!(c.root, PathBuf::from("out"));
        assert_eq!(c.format, Format::Parquet);
        assert_eq!(c.parquet.compression, "zstd");
        assert_eq!(c.parquet.level, None);
        assert_eq!(c.parquet.row_group_rows, DEFAULT_ROW_GROUP_ROWS);
        assert!(c.partitioning.is_none());
    }

    #[test]
    fn full_config() {
        let c = SinkConfig::from_json(
            r#"{"path":"out","format":"parquet","compression":"gzip","compression_level":6,
                "row_group_rows":1000,"partition_by":"created_at","partition_granularity":"month"}"#,
        )
        .unwrap();
        assert_eq!(c.parquet.compression, "gzip");
        assert_eq!(c.parquet.level, Some(6));
        assert_eq!(c.parquet.row_group_rows, 1000);
        assert_eq!(
            c.partitioning,
            Some(Partitioning {
                column: "created_at".into(),
                granularity: Some(Granularity::Month)
            })
        );
    }

    #[test]
    fn every_problem_is_reported_together() {
        let m = err(
            r#"{"path":"","format":"xml","compression":"brotli","row_group_rows":0,
                "partition_granularity":"week"}"#,
        );
        for needle in [
            "`path` is empty",
            "`format = \"xml\"`",
            "`parquet`, `jsonl`, `csv`",
            "`compression = \"brotli\"`",
            "`row_group_rows = 0`",
            "`partition_granularity = \"week\"`",
        ] {
            assert!(m.contains(needle), "{needle} missing from {m}");
        }
    }

    #[test]
    fn parquet_options_are_refused_for_text_formats() {
        let m = err(r#"{"path":"out","format":"csv","compression":"zstd","row_group_rows":5}"#);
        assert!(
            m.contains("`compression` applies to `format = \"parquet\"` only"),
            "{m}"
        );
        assert!(m.contains("`row_group_rows` applies"), "{m}");
    }

    #[test]
    fn compression_levels_are_checked_per_codec() {
        assert!(err(r#"{"path":"o","compression_level":23}"#).contains("1 to 22"));
        assert!(
            err(r#"{"path":"o","compression":"gzip","compression_level":10}"#).contains("0 to 9")
        );
        assert!(
            err(r#"{"path":"o","compression":"snappy","compression_level":1}"#)
                .contains("does not apply")
        );
    }

    #[test]
    fn granularity_needs_a_column_and_unknown_keys_fail() {
        assert!(err(r#"{"path":"o","partition_granularity":"day"}"#).contains("needs"));
        assert!(err(r#"{"path":"o","partition_by":""}"#).contains("`partition_by` is empty"));
        assert!(err(r#"{"path":"o","mode":"append"}"#).contains("mode"));
        assert!(err(r#"{"format":"csv"}"#).contains("path"));
    }

    #[test]
    fn target_file_size_takes_sizes_or_bytes() {
        let size = |v: &str| {
            SinkConfig::from_json(&format!(r#"{{"path":"out","target_file_size":{v}}}"#))
                .map(|c| c.target_file_size)
        };
        assert_eq!(
            SinkConfig::from_json(r#"{"path":"out"}"#)
                .unwrap()
                .target_file_size,
            128 << 20
        );
        assert_eq!(size(r#""64MiB""#).unwrap(), 64 << 20);
        assert_eq!(size("1000").unwrap(), 1000);
        for bad in ["0", r#""lots""#, "-5"] {
            let m = err(&format!(r#"{{"path":"out","target_file_size":{bad}}}"#));
            assert!(m.contains("`target_file_size"), "{bad}: {m}");
        }
    }

    #[test]
    fn spec_is_json() {
        let v: serde_json::Value = serde_json::from_str(&json_schema()).unwrap();
        assert_eq!(v["title"], "file sink config");
        assert_eq!(v["required"], serde_json::json!(["path"]));
        assert_eq!(v["additionalProperties"], false, "unknown keys are refused");
        let keys: Vec<&String> = v["properties"].as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 8, "{keys:?}");
        assert_eq!(
            v["properties"]["target_file_size"]["default"],
            serde_json::json!("128MiB")
        );
        assert_eq!(v["properties"]["format"]["enum"][0], "parquet");
        assert_eq!(
            v["properties"]["compression"]["enum"],
            serde_json::json!(COMPRESSIONS)
        );
        assert_eq!(v["properties"]["row_group_rows"]["minimum"], 1);
        assert!(v["properties"]["path"]["description"]
            .as_str()
            .unwrap()
            .starts_with("Output directory"));
    }
}

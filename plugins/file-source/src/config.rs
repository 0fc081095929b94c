//! The source's configuration: the serde model of the `config` table as the host hands it
//! over (JSON), its validation into [`Settings`], and the JSON Schema `spec()` returns.
//!
//! Validation collects every problem before failing, so one run of `check` lists them all.

use std::collections::BTreeMap;

use ingest_sdk::{config, Error, Result};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::files;
use crate::types::{ColumnType, TYPE_NAMES};

/// The file format of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Jsonl,
    Parquet,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
            Format::Parquet => "parquet",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "csv" => Some(Format::Csv),
            "jsonl" => Some(Format::Jsonl),
            "parquet" => Some(Format::Parquet),
            _ => None,
        }
    }

    /// The format a file name's extension implies.
    fn from_extension(path: &str) -> Option<Self> {
        let name = path.rsplit('/').next().unwrap_or(path);
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "csv" => Some(Format::Csv),
            "jsonl" | "ndjson" | "json" => Some(Format::Jsonl),
            "parquet" => Some(Format::Parquet),
            _ => None,
        }
    }
}

/// How CSV records are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvDialect {
    pub header: bool,
    pub delimiter: u8,
    pub quote: u8,
    pub escape: Option<u8>,
    pub comment: Option<u8>,
}

impl Default for CsvDialect {
    fn default() -> Self {
        CsvDialect {
            header: true,
            delimiter: b',',
            quote: b'"',
            escape: None,
            comment: None,
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The file path or glob, as written.
    pub path: String,
    pub format: Format,
    /// The one stream's name.
    pub stream: String,
    /// Rows of the first file sampled to infer the schema.
    pub infer_rows: usize,
    /// Field values read as null (CSV).
    pub null_values: Vec<Vec<u8>>,
    pub csv: CsvDialect,
    /// Column type overrides, by column name.
    pub overrides: Vec<(String, ColumnType)>,
    /// Read each CSV or JSON Lines file as parts of about this many bytes (one split each),
    /// so that several readers can share a large file; `None`: one split per file.
    pub split_bytes: Option<u64>,
    /// What to do with a last record the file may not hold whole yet.
    pub last_record: LastRecord,
}

/// What the source does with the last record of a file when it may still be being written:
/// a last line without a line end, a quoted field still open at the end of the file, a
/// Parquet file without its footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastRecord {
    /// Leave it for a later run: the position stays before it, and once the writer has
    /// finished the record it is read whole, once. A Parquet file without its footer is
    /// skipped until it has one.
    Wait,
    /// The files are complete: a last line without a line end is a record, and a quote
    /// left open at the end of the file is one rejected record (the line it opened on),
    /// with the lines after it read as records of their own.
    Read,
}

/// The smallest `split_bytes`: smaller parts cost more in positions than they gain.
pub const MIN_SPLIT_BYTES: u64 = 1 << 20;

/// The config as written in pipeline.toml (rendered to JSON by the host). The JSON Schema
/// (the source's `spec`) is derived from it, descriptions from these comments.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "file source",
    description = "Reads CSV, JSON Lines or Parquet files as one stream: one split per file, or per part of a file with `split_bytes`."
)]
struct RawConfig {
    /// A file path or a glob (`*`, `?` within a name, `**` for any number of
    /// directories), inside a directory granted in the plugin's `fs` list.
    path: String,
    /// Default: from the extension (.csv; .jsonl, .ndjson, .json; .parquet).
    #[serde(default)]
    #[schemars(extend("enum" = ["csv", "jsonl", "parquet"]))]
    format: Option<String>,
    /// Stream name. Default: the file stem of `path`, or for a glob the literal start of
    /// its last part, or `default`.
    #[serde(default)]
    stream: Option<String>,
    /// Rows of the first file sampled to infer column types.
    #[serde(default)]
    #[schemars(range(min = 1), extend("default" = DEFAULT_INFER_ROWS))]
    infer_rows: Option<u64>,
    /// CSV field values read as null.
    #[serde(default)]
    #[schemars(extend("default" = [""]))]
    null_values: Option<Vec<String>>,
    /// The CSV dialect.
    #[serde(default)]
    csv: Option<RawCsv>,
    /// Column type overrides for csv and jsonl, by column name.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, crate::types::ColumnType>")]
    schema: BTreeMap<String, String>,
    /// Read each CSV or JSON Lines file as parts of about this many bytes (at least 1MiB;
    /// bytes, or a string such as "64MiB"), one split each, cut exactly where a record
    /// starts, so that a source with `readers` > 1 reads a large file on several cores.
    /// Default: one split per file. Positions saved under one value are refused under
    /// another.
    #[serde(default)]
    #[schemars(extend("type" = ["integer", "string"]))]
    split_bytes: Option<serde_json::Value>,
    /// `wait`: files may still be being written, so a last line without a line end, a
    /// quoted field still open at the end of a file, or a Parquet file without its footer
    /// is left for a later run, which reads it whole, once. `read`: files are complete; a
    /// last line without a line end is a record, and a quote left open at the end of a
    /// file is one rejected record naming the line it opened on, with the lines after it
    /// read as records.
    #[serde(default)]
    #[schemars(extend("enum" = ["wait", "read"], "default" = "wait"))]
    last_record: Option<String>,
}

/// The CSV dialect as written.
#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawCsv {
    /// Whether the first record names the columns.
    #[serde(default)]
    #[schemars(extend("default" = true))]
    header: Option<bool>,
    /// The field delimiter: one ASCII character.
    #[serde(default)]
    #[schemars(length(min = 1, max = 1), extend("default" = ","))]
    delimiter: Option<String>,
    /// The quote character: one ASCII character.
    #[serde(default)]
    #[schemars(length(min = 1, max = 1), extend("default" = "\""))]
    quote: Option<String>,
    /// An escape character inside quotes, if any: one ASCII character.
    #[serde(default)]
    #[schemars(length(min = 1, max = 1))]
    escape: Option<String>,
    /// A comment character: lines starting with it are skipped.
    #[serde(default)]
    #[schemars(length(min = 1, max = 1))]
    comment: Option<String>,
}

const DEFAULT_INFER_ROWS: usize = 1000;

impl Settings {
    /// Parse and validate the host's JSON rendering of the `config` table.
    pub fn parse(json: &str) -> Result<Settings> {
        let raw: RawConfig = config::parse(json)?;
        let mut problems = Vec::new();

        if raw.path.trim().is_empty() {
            problems.push("`path` is empty; name a file or a glob such as `data/*.csv`".into());
        }
        let format = match &raw.format {
            Some(name) => Format::from_name(name).unwrap_or_else(|| {
                problems.push(format!(
                    "`format` = \"{name}\" is not supported; use \"csv\", \"jsonl\" or \"parquet\""
                ));
                Format::Csv
            }),
            None => Format::from_extension(&raw.path).unwrap_or_else(|| {
                problems.push(format!(
                    "`format` is not set and the extension of `{}` does not imply one \
                     (.csv, .jsonl, .ndjson, .json, .parquet); set `format` to \"csv\", \
                     \"jsonl\" or \"parquet\"",
                    raw.path
                ));
                Format::Csv
            }),
        };

        let stream = raw
            .stream
            .clone()
            .unwrap_or_else(|| files::default_stream_name(&raw.path));
        if stream.is_empty() {
            problems.push("`stream` is empty; give the stream a name".into());
        }

        let infer_rows = match raw.infer_rows {
            None => DEFAULT_INFER_ROWS,
            Some(0) => {
                problems.push("`infer_rows` = 0: sample at least 1 row".into());
                DEFAULT_INFER_ROWS
            }
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        };

        if raw.null_values.is_some() && format != Format::Csv {
            problems.push(format!(
                "`null_values` applies to format = \"csv\" only; this source reads \"{}\"",
                format.name()
            ));
        }
        let null_values = raw
            .null_values
            .unwrap_or_else(|| vec![String::new()])
            .into_iter()
            .map(String::into_bytes)
            .collect();

        if raw.csv.is_some() && format != Format::Csv {
            problems.push(format!(
                "`csv` options apply to format = \"csv\" only; this source reads \"{}\"",
                format.name()
            ));
        }
        let raw_csv = raw.csv.unwrap_or_default();
        let mut csv = CsvDialect::default();
        if let Some(header) = raw_csv.header {
            csv.header = header;
        }
        if let Some(d) = &raw_csv.delimiter {
            csv.delimiter = single_byte("csv.delimiter", d, &mut problems).unwrap_or(b',');
        }
        if let Some(q) = &raw_csv.quote {
            csv.quote = single_byte("csv.quote", q, &mut problems).unwrap_or(b'"');
        }
        if let Some(e) = &raw_csv.escape {
            csv.escape = single_byte("csv.escape", e, &mut problems);
        }
        if let Some(c) = &raw_csv.comment {
            csv.comment = single_byte("csv.comment", c, &mut problems);
        }
        if csv.delimiter == csv.quote {
            problems.push(format!(
                "`csv.delimiter` and `csv.quote` are both `{}`; they must differ",
                csv.delimiter as char
            ));
        }

        if !raw.schema.is_empty() && format == Format::Parquet {
            problems.push(
                "`schema` overrides apply to csv and jsonl; Parquet files carry their own \
                 column types"
                    .into(),
            );
        }
        let mut overrides = Vec::new();
        for (column, type_name) in &raw.schema {
            match ColumnType::from_name(type_name) {
                Some(ty) => overrides.push((column.clone(), ty)),
                None => problems.push(format!(
                    "`schema.{column}` = \"{type_name}\" is not a type; use one of {TYPE_NAMES}"
                )),
            }
        }

        let split_bytes = raw
            .split_bytes
            .as_ref()
            .and_then(|v| match config::byte_size(v) {
                Some(n) if n >= MIN_SPLIT_BYTES => Some(n),
                _ => {
                    problems.push(format!(
                        "`split_bytes` = {v} is not a size of at least 1MiB; give bytes (an \
                         integer) or a string such as \"64MiB\""
                    ));
                    None
                }
            });
        if split_bytes.is_some() && format == Format::Parquet {
            problems.push(
                "`split_bytes` applies to csv and jsonl; a Parquet file is read as one split"
                    .into(),
            );
        }

        let last_record = match raw.last_record.as_deref() {
            None | Some("wait") => LastRecord::Wait,
            Some("read") => LastRecord::Read,
            Some(other) => {
                problems.push(format!(
                    "`last_record` = {other:?}: give \"wait\" (files may still be being \
                     written: leave an unfinished last record for a later run) or \"read\" \
                     (files are complete)"
                ));
                LastRecord::Wait
            }
        };
        if !problems.is_empty() {
            return Err(Error::config(problems.join("; ")));
        }
        Ok(Settings {
            path: raw.path,
            format,
            stream,
            infer_rows,
            null_values,
            csv,
            overrides,
            split_bytes,
            last_record,
        })
    }

    /// Whether a CSV field's raw bytes stand for null.
    #[inline]
    pub fn is_null(&self, value: &[u8]) -> bool {
        match self.null_values.as_slice() {
            [only] => only.as_slice() == value,
            all => all.iter().any(|n| n == value),
        }
    }
}

/// One ASCII character, as the CSV options need.
fn single_byte(key: &str, value: &str, problems: &mut Vec<String>) -> Option<u8> {
    match value.as_bytes() {
        [b] if b.is_ascii() => Some(*b),
        _ => {
            problems.push(format!(
                "`{key}` = {value:?} must be exactly one ASCII character, such as \",\", \";\" \
                 or \"\\t\""
            ));
            None
        }
    }
}

/// The JSON Schema of the configuration, as `spec()` reports it.
pub fn json_schema() -> String {
    ingest_sdk::config::spec::<RawConfig>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(json: &str) -> String {
        match Settings::parse(json) {
            Err(Error::InvalidConfig(m)) => m,
            other => panic!("expected invalid-config, got {other:?}"),
        }
    }

    #[test]
    fn defaults_come_from_the_path() {
        let s = Settings::parse(r#"{"path": "data/orders.csv"}"#).unwrap();
        assert_eq!(s.format, Format::Csv);
        assert_eq!(s.stream, "orders");
        assert_eq!(s.infer_rows, 1000);
        assert_eq!(s.null_values, vec![Vec::<u8>::new()]);
        assert_eq!(s.csv, CsvDialect::default());
        let s = Settings::parse(r#"{"path": "logs/*.NDJSON"}"#).unwrap();
        assert_eq!(s.format, Format::Jsonl);
        assert_eq!(s.stream, "default");
    }

    #[test]
    fn csv_options_and_overrides_are_read() {
        let s = Settings::parse(
            r##"{"path": "x.txt", "format": "csv", "stream": "s",
                "csv": {"header": false, "delimiter": "\t", "quote": "'", "escape": "\\", "comment": "#"},
                "null_values": ["NA", ""], "schema": {"amount": "float64"}}"##,
        )
        .unwrap();
        assert_eq!(
            s.csv,
            CsvDialect {
                header: false,
                delimiter: b'\t',
                quote: b'\'',
                escape: Some(b'\\'),
                comment: Some(b'#'),
            }
        );
        assert!(s.is_null(b"NA") && s.is_null(b"") && !s.is_null(b"0"));
        assert_eq!(
            s.overrides,
            vec![("amount".to_string(), ColumnType::Float64)]
        );
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        assert!(problems(r#"{"path": "a.csv", "pth": 1}"#).contains("pth"));
        assert!(problems(r#"{"path": "a.csv", "csv": {"sep": ";"}}"#).contains("sep"));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let m = problems(
            r#"{"path": "a.xlsx", "csv": {"delimiter": ";;"}, "schema": {"x": "decimal"}}"#,
        );
        assert!(m.contains("`format` is not set"), "{m}");
        assert!(m.contains("\"csv\", \"jsonl\" or \"parquet\""), "{m}");
        assert!(m.contains("`csv.delimiter`"), "{m}");
        assert!(m.contains("`schema.x` = \"decimal\""), "{m}");
        assert!(m.contains(TYPE_NAMES), "{m}");
    }

    #[test]
    fn an_unknown_format_names_the_accepted_ones() {
        let m = problems(r#"{"path": "a.csv", "format": "xml"}"#);
        assert!(m.contains("\"xml\"") && m.contains("\"parquet\""), "{m}");
    }

    #[test]
    fn options_for_another_format_are_reported() {
        let m =
            problems(r#"{"path": "a.parquet", "csv": {"header": false}, "schema": {"a": "utf8"}}"#);
        assert!(m.contains("`csv` options apply"), "{m}");
        assert!(m.contains("`schema` overrides"), "{m}");
    }

    #[test]
    fn the_spec_is_json() {
        let spec: serde_json::Value = serde_json::from_str(&json_schema()).unwrap();
        assert_eq!(spec["required"], serde_json::json!(["path"]));
        assert_eq!(spec["additionalProperties"], false);
        let keys: Vec<&String> = spec["properties"].as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 9, "{keys:?}");
        assert_eq!(spec["properties"]["last_record"]["default"], "wait");
        assert_eq!(spec["properties"]["infer_rows"]["minimum"], 1);
        let text = spec.to_string();
        for wanted in ["\"timestamp\"", "\"delimiter\"", "A file path or a glob"] {
            assert!(text.contains(wanted), "{wanted} in {text}");
        }
    }
}

//! The config of the S3 source: where the objects are ([`RawConfig`]), and how to read them,
//! which is the file source's (`format`, `schema`, CSV options), written in the same table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ingest_sdk::{config, Error, Result};
use s3_client::Bucket;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

/// The S3 keys of the config; every other key is the file source's (`format`, `schema`,
/// `delimiter`, `header`, `null_values`, `infer_rows`, …).
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(title = "s3 source config")]
pub struct RawConfig {
    /// The bucket and how to reach it.
    #[serde(flatten)]
    pub at: s3_client::BucketConfig,
    /// Only keys under this prefix are listed (`drops/orders/`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// The keys to read, relative to `prefix`: `*` within a segment, `**` across.
    #[serde(default)]
    #[schemars(extend("default" = "**"))]
    pub glob: Option<String>,
    /// A local directory (granted read-write in `fs`) for the copies being read.
    pub staging: String,
    /// The longest byte range one GET asks for, in bytes, from 1 MiB to 64 MiB. By
    /// default a CSV or JSON Lines object is fetched in one GET, streamed to its local
    /// copy, and Parquet row groups in GETs of up to 64 MiB.
    #[serde(default)]
    pub range_bytes: Option<u64>,
    /// `csv`, `jsonl` or `parquet`. Keys ending `.gz` or `.zst` are inflated first.
    pub format: String,
    /// The stream's name.
    pub stream: String,
    /// How the objects are read, as the file source's config has it.
    #[serde(flatten)]
    pub reading: BTreeMap<String, Value>,
}

/// How an object's bytes are compressed, by its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    Gzip,
    Zstd,
}

impl Codec {
    pub fn of(key: &str) -> Codec {
        if key.ends_with(".gz") {
            Codec::Gzip
        } else if key.ends_with(".zst") || key.ends_with(".zstd") {
            Codec::Zstd
        } else {
            Codec::None
        }
    }
}

/// The validated config.
#[derive(Debug)]
pub struct SourceConfig {
    pub at: s3_client::BucketConfig,
    pub prefix: String,
    pub glob: String,
    pub staging: PathBuf,
    pub stream: String,
    /// The longest byte range one GET asks for, when given.
    pub range_bytes: Option<u64>,
    /// The local copies' extension: the format's.
    pub extension: &'static str,
    /// The file source's keys, without `path`.
    reading: serde_json::Map<String, Value>,
}

impl SourceConfig {
    pub fn parse(json: &str) -> Result<SourceConfig> {
        let raw: RawConfig = config::parse(json)?;
        let mut problems = Vec::new();
        raw.at.check(&mut problems);
        let extension = match raw.format.as_str() {
            "csv" => "csv",
            "jsonl" => "jsonl",
            "parquet" => "parquet",
            other => {
                problems.push(format!(
                    "`format = {other:?}`; accepted: csv, jsonl, parquet"
                ));
                "csv"
            }
        };
        let range_bytes = raw.range_bytes;
        if let Some(range_bytes) =
            range_bytes.filter(|n| !(1 << 20..=s3_client::RANGE_BYTES).contains(n))
        {
            problems.push(format!(
                "`range_bytes = {range_bytes}`: give from 1 MiB (1048576) to 64 MiB (67108864)"
            ));
        }
        for key in ["path", "split_bytes", "last_record"] {
            if raw.reading.contains_key(key) {
                problems.push(format!(
                    "`{key}` is the file source's; the s3 source reads whole objects named by `bucket`, `prefix` and `glob`"
                ));
            }
        }
        // The flattened map sees every key; the bucket's are not the file source's.
        let mut reading: serde_json::Map<String, Value> = raw
            .reading
            .into_iter()
            .filter(|(k, _)| !s3_client::BucketConfig::KEYS.contains(&k.as_str()))
            .collect();
        reading.insert("format".into(), Value::String(raw.format.clone()));
        reading.insert("stream".into(), Value::String(raw.stream.clone()));
        if !problems.is_empty() {
            return Err(Error::config(format!(
                "s3 source config: {}",
                problems.join("; ")
            )));
        }
        Ok(SourceConfig {
            at: raw.at,
            prefix: raw.prefix.unwrap_or_default(),
            glob: raw.glob.unwrap_or_else(|| "**".into()),
            staging: PathBuf::from(raw.staging),
            stream: raw.stream,
            range_bytes,
            extension,
            reading,
        })
    }

    /// The longest GET of a Parquet row group's bytes.
    pub fn group_range_bytes(&self) -> u64 {
        self.range_bytes.unwrap_or(s3_client::RANGE_BYTES)
    }

    /// The bucket, with the credentials from the granted secrets.
    pub fn bucket(&self) -> Result<Bucket> {
        self.at.bucket()
    }

    /// The file source's config reading the local copy at `path`.
    pub fn file_config(&self, path: &Path) -> String {
        let mut reading = self.reading.clone();
        reading.insert(
            "path".into(),
            Value::String(path.to_string_lossy().into_owned()),
        );
        Value::Object(reading).to_string()
    }
}

/// The JSON Schema of the config.
pub fn spec() -> String {
    config::spec::<RawConfig>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_keys_go_to_the_file_source_with_the_local_path() {
        let c = SourceConfig::parse(
            r#"{"endpoint":"http://127.0.0.1:5010","bucket":"drops","prefix":"in/","glob":"*.csv",
                "access_key_id_secret":"k","secret_access_key_secret":"s","staging":"st",
                "format":"csv","stream":"orders","schema":{"amount":"utf8"}}"#,
        )
        .unwrap();
        let file: Value =
            serde_json::from_str(&c.file_config(Path::new("st/objects/x.csv"))).unwrap();
        assert_eq!(file["path"], "st/objects/x.csv");
        assert_eq!(file["format"], "csv");
        assert_eq!(file["stream"], "orders");
        assert_eq!(file["schema"]["amount"], "utf8");
        assert_eq!(Codec::of("a/b.csv.gz"), Codec::Gzip);
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let m = SourceConfig::parse(
            r#"{"endpoint":"s3://x","bucket":"B","access_key_id_secret":"k","secret_access_key_secret":"s",
                "staging":"st","format":"xml","stream":"o","path":"x"}"#,
        )
        .unwrap_err()
        .to_string();
        for part in [
            "`endpoint = \"s3://x\"`",
            "`bucket = \"B\"`",
            "`format = \"xml\"`",
            "`path` is the file source's",
        ] {
            assert!(m.contains(part), "{part} missing from: {m}");
        }
    }
}

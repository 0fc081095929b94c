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
    /// The endpoint, `https://s3.<region>.amazonaws.com` or a local server's
    /// `http://host:port`; grant it in the source's `http`.
    pub endpoint: String,
    /// The bucket's region (signed into every request).
    #[serde(default)]
    #[schemars(extend("default" = "us-east-1"))]
    pub region: Option<String>,
    pub bucket: String,
    /// Only keys under this prefix are listed (`drops/orders/`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// The keys to read, relative to `prefix`: `*` within a segment, `**` across.
    #[serde(default)]
    #[schemars(extend("default" = "**"))]
    pub glob: Option<String>,
    /// Address the bucket in the path (`endpoint/bucket/key`), as local servers want.
    #[serde(default)]
    pub path_style: Option<bool>,
    /// The granted secret holding the access key id.
    pub access_key_id_secret: String,
    /// The granted secret holding the secret access key.
    pub secret_access_key_secret: String,
    /// The granted secret holding a session token, for temporary credentials.
    #[serde(default)]
    pub session_token_secret: Option<String>,
    /// A local directory (granted read-write in `fs`) for the copies being read.
    pub staging: String,
    /// `csv`, `jsonl` or `parquet`. Keys ending `.gz` or `.zst` are inflated first.
    pub format: String,
    /// The stream's name.
    pub stream: String,
    /// Milliseconds a request may take to connect, to its first byte, and between bytes.
    #[serde(default)]
    #[schemars(range(min = 100), extend("default" = 60000))]
    pub timeout_ms: Option<u64>,
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
    pub scheme: String,
    pub authority: String,
    pub region: String,
    pub bucket_name: String,
    pub prefix: String,
    pub glob: String,
    pub path_style: bool,
    access_key_id_secret: String,
    secret_access_key_secret: String,
    session_token_secret: Option<String>,
    pub staging: PathBuf,
    pub stream: String,
    /// The local copies' extension: the format's.
    pub extension: &'static str,
    pub timeout_ms: u64,
    /// The file source's keys, without `path`.
    reading: serde_json::Map<String, Value>,
}

impl SourceConfig {
    pub fn parse(json: &str) -> Result<SourceConfig> {
        let raw: RawConfig = config::parse(json)?;
        let mut problems = Vec::new();
        let (scheme, authority) = s3_client::split_endpoint(&raw.endpoint).unwrap_or_else(|why| {
            problems.push(why);
            ("https".into(), "invalid".into())
        });
        if let Err(why) = s3_client::check_bucket_name(&raw.bucket) {
            problems.push(why);
        }
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
        for key in ["path", "split_bytes", "last_record"] {
            if raw.reading.contains_key(key) {
                problems.push(format!(
                    "`{key}` is the file source's; the s3 source reads whole objects named by `bucket`, `prefix` and `glob`"
                ));
            }
        }
        let mut reading: serde_json::Map<String, Value> = raw.reading.into_iter().collect();
        reading.insert("format".into(), Value::String(raw.format.clone()));
        reading.insert("stream".into(), Value::String(raw.stream.clone()));
        if !problems.is_empty() {
            return Err(Error::config(format!(
                "s3 source config: {}",
                problems.join("; ")
            )));
        }
        Ok(SourceConfig {
            scheme,
            authority,
            region: raw.region.unwrap_or_else(|| "us-east-1".into()),
            bucket_name: raw.bucket,
            prefix: raw.prefix.unwrap_or_default(),
            glob: raw.glob.unwrap_or_else(|| "**".into()),
            path_style: raw.path_style.unwrap_or(false),
            access_key_id_secret: raw.access_key_id_secret,
            secret_access_key_secret: raw.secret_access_key_secret,
            session_token_secret: raw.session_token_secret,
            staging: PathBuf::from(raw.staging),
            stream: raw.stream,
            extension,
            timeout_ms: raw.timeout_ms.unwrap_or(60_000),
            reading,
        })
    }

    /// The bucket, with the credentials from the granted secrets.
    pub fn bucket(&self) -> Result<Bucket> {
        Ok(Bucket {
            scheme: self.scheme.clone(),
            authority: self.authority.clone(),
            name: self.bucket_name.clone(),
            region: self.region.clone(),
            path_style: self.path_style,
            creds: s3_client::credentials(
                &self.access_key_id_secret,
                &self.secret_access_key_secret,
                self.session_token_secret.as_deref(),
            )?,
            timeout_ms: self.timeout_ms,
        })
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

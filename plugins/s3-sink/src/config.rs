//! The config of the S3 sink: where the bucket is and how to reach it ([`RawConfig`]), and
//! the layout, which is the file sink's (format, partitions, compression), written in the
//! same table.

use std::collections::BTreeMap;

use file_sink::config::SinkConfig as Layout;
use ingest_sdk::{config, Error, Result};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

/// The S3 keys of the config; every other key is the file sink's layout (`format`,
/// `partition_by`, `partition_granularity`, `compression`, `compression_level`,
/// `row_group_rows`).
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(title = "s3 sink config")]
pub struct RawConfig {
    /// The bucket and how to reach it.
    #[serde(flatten)]
    pub at: s3_client::BucketConfig,
    /// Where in the bucket the lake starts (`lake/`); objects are
    /// `<prefix><stream>/[<partition>/]part-<epoch>-<seq>.<ext>`.
    #[serde(default)]
    pub prefix: Option<String>,
    /// A local directory (granted read-write in `fs`) where an epoch's files are encoded
    /// before they are uploaded.
    pub staging: String,
    /// Bytes per uploaded part (at least 5 MiB, as S3 requires of all but the last).
    #[serde(default)]
    #[schemars(range(min = 5242880), extend("default" = 8388608))]
    pub part_bytes: Option<u64>,
    /// The layout, as the file sink's config has it.
    #[serde(flatten)]
    pub layout: BTreeMap<String, Value>,
}

/// The validated config.
#[derive(Debug)]
pub struct S3Config {
    pub at: s3_client::BucketConfig,
    pub prefix: String,
    pub part_bytes: usize,
    /// The file sink's config, writing to `staging`.
    pub layout: Layout,
}

impl S3Config {
    pub fn parse(json: &str) -> Result<S3Config> {
        let raw: RawConfig = config::parse(json)?;
        let mut problems = Vec::new();
        raw.at.check(&mut problems);
        let mut prefix = raw.prefix.unwrap_or_default();
        if prefix.starts_with('/') {
            problems.push(format!(
                "`prefix = {prefix:?}`: a key prefix does not start with `/`"
            ));
        }
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        let part_bytes = raw.part_bytes.unwrap_or(8 << 20);
        if part_bytes < 5 << 20 {
            problems.push(format!(
                "`part_bytes = {part_bytes}`: S3 needs parts of at least 5 MiB (5242880)"
            ));
        }
        let mut layout = raw.layout;
        // The flattened map sees every key; the bucket's are not the layout's.
        for key in s3_client::BucketConfig::KEYS {
            layout.remove(key);
        }
        if layout.contains_key("path") {
            problems.push("`path` is the file sink's; the S3 sink encodes into `staging` and uploads to `bucket`/`prefix`".into());
        }
        layout.insert("path".into(), Value::String(raw.staging));
        let layout = Layout::from_json(&Value::Object(layout.into_iter().collect()).to_string());
        let layout = match layout {
            Ok(l) => Some(l),
            Err(e) => {
                problems.push(e.to_string().replace("invalid config: ", ""));
                None
            }
        };
        if !problems.is_empty() {
            return Err(Error::config(format!(
                "s3 sink config: {}",
                problems.join("; ")
            )));
        }
        Ok(S3Config {
            at: raw.at,
            prefix,
            part_bytes: part_bytes as usize,
            layout: layout.expect("no problems"),
        })
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
    fn s3_keys_and_layout_keys_share_the_table() {
        let c = S3Config::parse(
            r#"{"endpoint":"http://127.0.0.1:5010","bucket":"lake","prefix":"raw","path_style":true,
                "access_key_id_secret":"k","secret_access_key_secret":"s","staging":"staging",
                "format":"jsonl"}"#,
        )
        .unwrap();
        assert_eq!(c.at.endpoint, "http://127.0.0.1:5010");
        assert_eq!(c.at.path_style, Some(true));
        assert_eq!(c.prefix, "raw/");
        assert_eq!(c.layout.root.to_string_lossy(), "staging");
        assert_eq!(c.part_bytes, 8 << 20);
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let m = S3Config::parse(
            r#"{"endpoint":"ftp://x","bucket":"No_Such","access_key_id_secret":"k",
                "secret_access_key_secret":"s","staging":"st","part_bytes":1000,"format":"xml"}"#,
        )
        .unwrap_err()
        .to_string();
        for part in [
            "`endpoint = \"ftp://x\"`",
            "`bucket = \"No_Such\"`",
            "part_bytes = 1000",
            "xml",
        ] {
            assert!(m.contains(part), "{part} missing from: {m}");
        }
    }
}

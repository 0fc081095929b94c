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
    /// The endpoint, `https://s3.<region>.amazonaws.com` or a local server's
    /// `http://host:port`; grant it in the sink's `http`.
    pub endpoint: String,
    /// The bucket's region (signed into every request).
    #[serde(default)]
    #[schemars(extend("default" = "us-east-1"))]
    pub region: Option<String>,
    pub bucket: String,
    /// Where in the bucket the lake starts (`lake/`); objects are
    /// `<prefix><stream>/[<partition>/]part-<epoch>-<seq>.<ext>`.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Address the bucket in the path (`endpoint/bucket/key`), as local servers want,
    /// instead of in the host name (`bucket.endpoint/key`).
    #[serde(default)]
    pub path_style: Option<bool>,
    /// The granted secret holding the access key id.
    pub access_key_id_secret: String,
    /// The granted secret holding the secret access key.
    pub secret_access_key_secret: String,
    /// The granted secret holding a session token, for temporary credentials.
    #[serde(default)]
    pub session_token_secret: Option<String>,
    /// A local directory (granted read-write in `fs`) where an epoch's files are encoded
    /// before they are uploaded.
    pub staging: String,
    /// Bytes per uploaded part (at least 5 MiB, as S3 requires of all but the last).
    #[serde(default)]
    #[schemars(range(min = 5242880), extend("default" = 8388608))]
    pub part_bytes: Option<u64>,
    /// Milliseconds a request may take to connect, to its first byte, and between bytes.
    #[serde(default)]
    #[schemars(range(min = 100), extend("default" = 60000))]
    pub timeout_ms: Option<u64>,
    /// The layout, as the file sink's config has it.
    #[serde(flatten)]
    pub layout: BTreeMap<String, Value>,
}

/// The validated config.
#[derive(Debug)]
pub struct S3Config {
    pub scheme: String,
    pub authority: String,
    pub region: String,
    pub bucket: String,
    pub prefix: String,
    pub path_style: bool,
    pub access_key_id_secret: String,
    pub secret_access_key_secret: String,
    pub session_token_secret: Option<String>,
    pub part_bytes: usize,
    pub timeout_ms: u64,
    /// The file sink's config, writing to `staging`.
    pub layout: Layout,
}

impl S3Config {
    pub fn parse(json: &str) -> Result<S3Config> {
        let raw: RawConfig = config::parse(json)?;
        let mut problems = Vec::new();
        let (scheme, authority) = s3_client::split_endpoint(&raw.endpoint).unwrap_or_else(|why| {
            problems.push(why);
            ("https".into(), "invalid".into())
        });
        if let Err(why) = s3_client::check_bucket_name(&raw.bucket) {
            problems.push(why);
        }
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
            scheme,
            authority,
            region: raw.region.unwrap_or_else(|| "us-east-1".into()),
            bucket: raw.bucket,
            prefix,
            path_style: raw.path_style.unwrap_or(false),
            access_key_id_secret: raw.access_key_id_secret,
            secret_access_key_secret: raw.secret_access_key_secret,
            session_token_secret: raw.session_token_secret,
            part_bytes: part_bytes as usize,
            timeout_ms: raw.timeout_ms.unwrap_or(60_000),
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
        assert_eq!(
            (c.scheme.as_str(), c.authority.as_str()),
            ("http", "127.0.0.1:5010")
        );
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

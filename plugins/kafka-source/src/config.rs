//! The config of the Kafka source: what the user wrote ([`RawConfig`], whose JSON Schema is
//! the source's `spec`) and the validated form ([`SourceConfig`]).

use std::collections::BTreeMap;

use ingest_sdk::payload::Payload;
use ingest_sdk::{config, Error, Result};
use schemars::JsonSchema;
use serde::Deserialize;

/// The config as written in pipeline.toml.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "kafka source config")]
pub struct RawConfig {
    /// Brokers to learn the cluster from, `host:port` each. Grant them in the source's
    /// `net`, and every broker as the cluster advertises it.
    pub brokers: Vec<String>,
    /// The topic to read.
    pub topic: String,
    /// The consumer group the pipeline commits its offsets to (default `ingest_<topic>`),
    /// once they are durable, so Kafka's tools show the pipeline's lag. The pipeline reads
    /// every partition itself and never joins the group: give each pipeline its own.
    #[serde(default)]
    pub group: Option<String>,
    /// Where a partition is read from when neither the pipeline nor the group has an
    /// offset for it: `earliest` (its first record) or `latest` (only what comes next).
    #[serde(default)]
    #[schemars(extend("default" = "earliest"))]
    pub start: Option<String>,
    /// What the record value becomes: `binary` (a `payload` column of bytes), `text`
    /// (UTF-8; a record that is not goes to the dead-letter queue) or `json` (an object
    /// whose fields fill the columns `columns` declares). A null value (a tombstone) is a
    /// row whose payload columns are all null.
    #[serde(default)]
    #[schemars(extend("default" = "binary"))]
    pub payload: Option<String>,
    /// For `payload = "json"`: each column and its type (`int64`, `float64`, `boolean`,
    /// `utf8`, `timestamp`). Fields not named are dropped; a missing field is null.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// What the record key becomes in `_key`: `text` (UTF-8; a record whose key is not
    /// goes to the dead-letter queue) or `binary`.
    #[serde(default)]
    #[schemars(extend("default" = "text"))]
    pub key: Option<String>,
    /// `never`: a topic that waits for new records; `caught-up`: the run ends once every
    /// partition is read to its end.
    #[serde(default)]
    #[schemars(extend("default" = "never"))]
    pub until: Option<String>,
    /// How long a fetch waits at the broker for new records, in milliseconds.
    #[serde(default)]
    #[schemars(range(min = 0, max = 10000), extend("default" = 100))]
    pub fetch_wait_ms: Option<u32>,
    /// Bytes a fetch returns at most (per request and per partition).
    #[serde(default)]
    #[schemars(range(min = 1024), extend("default" = 16777216))]
    pub fetch_max_bytes: Option<u32>,
    /// The name of the stream the pipeline sees (default: the topic's name).
    #[serde(default)]
    pub name: Option<String>,
}

/// The validated config.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub brokers: Vec<String>,
    pub topic: String,
    pub group: String,
    pub start_latest: bool,
    pub payload: Payload,
    pub key_binary: bool,
    pub until_caught_up: bool,
    pub fetch_wait_ms: i32,
    pub fetch_max_bytes: i32,
    pub name: String,
}

impl SourceConfig {
    /// Parse and check the config, reporting every problem at once.
    pub fn parse(json: &str) -> Result<SourceConfig> {
        let raw: RawConfig = config::parse(json)?;
        let mut problems = Vec::new();
        if raw.brokers.is_empty() {
            problems.push("`brokers` is empty: give at least one `host:port`".to_string());
        }
        for b in &raw.brokers {
            if b.rsplit_once(':')
                .is_none_or(|(_, port)| port.parse::<u16>().is_err())
            {
                problems.push(format!(
                    "`brokers`: {b:?} is not `host:port`, e.g. \"127.0.0.1:9092\""
                ));
            }
        }
        // Kafka's own rule for topic names.
        let topic_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 249
                && s != "."
                && s != ".."
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        };
        if !topic_ok(&raw.topic) {
            problems.push(format!(
                "`topic = {:?}`: a Kafka topic name is 1 to 249 letters, digits, `.`, `_` and `-`",
                raw.topic
            ));
        }
        let group = raw
            .group
            .clone()
            .unwrap_or_else(|| format!("ingest_{}", raw.topic));
        if group.is_empty() {
            problems.push("`group` is empty".into());
        }
        let start_latest = match raw.start.as_deref().unwrap_or("earliest") {
            "earliest" => false,
            "latest" => true,
            other => {
                problems.push(format!("`start = {other:?}`; accepted: earliest, latest"));
                false
            }
        };
        let payload = Payload::from_config(
            raw.payload.as_deref(),
            &raw.columns,
            &crate::rows::OWN_COLUMNS,
            &mut problems,
        );
        let key_binary = match raw.key.as_deref().unwrap_or("text") {
            "text" => false,
            "binary" => true,
            other => {
                problems.push(format!("`key = {other:?}`; accepted: text, binary"));
                false
            }
        };
        let until_caught_up = match raw.until.as_deref().unwrap_or("never") {
            "never" => false,
            "caught-up" => true,
            other => {
                problems.push(format!("`until = {other:?}`; accepted: never, caught-up"));
                false
            }
        };
        let fetch_wait_ms = raw.fetch_wait_ms.unwrap_or(100);
        if fetch_wait_ms > 10_000 {
            problems.push(format!(
                "`fetch_wait_ms = {fetch_wait_ms}`: wait at most 10000 ms, so heartbeats and checkpoints keep their pace"
            ));
        }
        let fetch_max_bytes = raw.fetch_max_bytes.unwrap_or(16 << 20);
        if !(1024..=(256 << 20)).contains(&fetch_max_bytes) {
            problems.push(format!(
                "`fetch_max_bytes = {fetch_max_bytes}`: give 1024 to 268435456"
            ));
        }
        if !problems.is_empty() {
            return Err(Error::config(problems.join("; ")));
        }
        Ok(SourceConfig {
            brokers: raw.brokers,
            name: raw.name.unwrap_or_else(|| raw.topic.clone()),
            topic: raw.topic,
            group,
            start_latest,
            payload,
            key_binary,
            until_caught_up,
            fetch_wait_ms: fetch_wait_ms as i32,
            fetch_max_bytes: fetch_max_bytes as i32,
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

    fn problems(json: &str) -> String {
        match SourceConfig::parse(json) {
            Err(Error::InvalidConfig(m)) => m,
            other => panic!("expected invalid-config, got {other:?}"),
        }
    }

    #[test]
    fn defaults_fill_in_what_is_not_given() {
        let c = SourceConfig::parse(r#"{"brokers":["127.0.0.1:9092"],"topic":"orders"}"#).unwrap();
        assert_eq!(c.group, "ingest_orders");
        assert_eq!(c.name, "orders");
        assert_eq!(c.payload, Payload::Binary);
        assert!(!c.start_latest && !c.key_binary && !c.until_caught_up);
        assert_eq!((c.fetch_wait_ms, c.fetch_max_bytes), (100, 16 << 20));
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let m = problems(
            r#"{"brokers":["localhost"],"topic":"a b","start":"middle","key":"json","until":"later","payload":"json","fetch_max_bytes":10}"#,
        );
        for part in [
            "\"localhost\" is not `host:port`",
            "`topic = \"a b\"`",
            "`start = \"middle\"`",
            "`key = \"json\"`",
            "`until = \"later\"`",
            "needs `columns`",
            "fetch_max_bytes = 10",
        ] {
            assert!(m.contains(part), "{part} missing from: {m}");
        }
        assert!(problems(r#"{"brokers":[],"topic":"t"}"#).contains("`brokers` is empty"));
        assert!(
            problems(r#"{"brokers":["h:1"],"topic":"t","partitions":[1]}"#).contains("partitions")
        );
    }
}

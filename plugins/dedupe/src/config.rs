//! The config of `dedupe`: the serde model of what the user wrote ([`RawConfig`]) and the
//! validated form ([`DedupeConfig`]). Validation collects every problem and reports them
//! together; the key columns are matched against the stream's schema later, at `open`.

use ingest_sdk::{config, Error, Result};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

/// Keys remembered when `window` is not set.
pub const DEFAULT_WINDOW: usize = 100_000;
/// The largest `window` accepted. Its checkpoint (16 bytes a key: 122 MiB at 8M keys) goes
/// from the plugin to the host in one call, and the host takes at most 128 MiB from a plugin
/// in one call (wasmtime's hostcall fuel). 8M keys take about 400 MiB of plugin memory.
pub const MAX_WINDOW: usize = 8_000_000;

/// The config as written in pipeline.toml (rendered to JSON by the host). Values are kept
/// as JSON so that a wrong type is reported with the key's name; the JSON Schema (the
/// transform's `spec`) is derived from it with the types they must have.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "dedupe transform config",
    description = "Drops every row whose key was already seen, keeping the first.",
    extend("required" = ["key"])
)]
pub struct RawConfig {
    /// The columns that identify a row. A row whose key values (null equals null) were
    /// already seen within the window is dropped; the first occurrence is kept.
    #[serde(default)]
    #[schemars(
        with = "Vec<String>",
        length(min = 1),
        inner(length(min = 1)),
        extend("uniqueItems" = true)
    )]
    pub key: Option<Value>,
    /// How many distinct keys are remembered, across batches, epochs and runs (the window
    /// is checkpointed); the oldest is forgotten first. Each key takes about 45 bytes of
    /// plugin memory and 16 bytes of checkpoint (32 in the state file, which keeps it as
    /// hex).
    #[serde(default)]
    #[schemars(
        with = "u64",
        range(min = 1, max = MAX_WINDOW),
        extend("default" = DEFAULT_WINDOW)
    )]
    pub window: Option<Value>,
}

/// A validated config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupeConfig {
    /// Key columns, in the order written; at least one, no repeats.
    pub key: Vec<String>,
    /// Distinct keys remembered, from 1 to [`MAX_WINDOW`].
    pub window: usize,
}

impl DedupeConfig {
    /// Parse and validate the host's JSON config. Every problem is reported in one
    /// `invalid-config` error.
    pub fn from_json(json: &str) -> Result<Self> {
        let raw: RawConfig = config::parse(json)?;
        Self::validate(raw)
    }

    /// Validate a parsed config.
    pub fn validate(raw: RawConfig) -> Result<Self> {
        let mut problems = Vec::new();
        let key = match raw.key {
            None => {
                problems.push(
                    "`key` is required: list the columns that identify a row, e.g. \
                     `key = [\"order_id\"]`"
                        .to_string(),
                );
                Vec::new()
            }
            Some(value) => parse_key(&value, &mut problems),
        };
        let window = match raw.window {
            None => DEFAULT_WINDOW,
            Some(value) => match value.as_u64() {
                Some(n) if (1..=MAX_WINDOW as u64).contains(&n) => n as usize,
                _ => {
                    problems.push(format!(
                        "`window` must be a whole number from 1 to {MAX_WINDOW} (the number of \
                         distinct keys remembered; default {DEFAULT_WINDOW}), got {value}"
                    ));
                    DEFAULT_WINDOW
                }
            },
        };
        if problems.is_empty() {
            Ok(DedupeConfig { key, window })
        } else {
            Err(Error::config(format!(
                "dedupe config: {}",
                problems.join("; ")
            )))
        }
    }
}

fn parse_key(value: &Value, problems: &mut Vec<String>) -> Vec<String> {
    let Value::Array(items) = value else {
        problems.push(format!(
            "`key` must be a list of column names, e.g. `key = [\"order_id\"]`, got {value}"
        ));
        return Vec::new();
    };
    if items.is_empty() {
        problems.push(
            "`key` lists no column; name at least one column that identifies a row, e.g. \
             `key = [\"order_id\"]`"
                .to_string(),
        );
    }
    let mut key: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::String(name) if !name.is_empty() => {
                if key.contains(name) {
                    problems.push(format!("`key` names the column `{name}` twice"));
                } else {
                    key.push(name.clone());
                }
            }
            other => problems.push(format!(
                "`key[{i}]` must be a column name (a non-empty string), got {other}"
            )),
        }
    }
    key
}

/// JSON Schema of the config, as `spec()` reports it.
pub fn json_schema() -> String {
    ingest_sdk::config::spec::<RawConfig>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        match DedupeConfig::from_json(json) {
            Err(Error::InvalidConfig(m)) => m,
            other => panic!("expected invalid-config, got {other:?}"),
        }
    }

    #[test]
    fn key_and_window_parse_and_window_defaults() {
        let c = DedupeConfig::from_json(r#"{"key":["order_id","line"],"window":5}"#).unwrap();
        assert_eq!(c.key, ["order_id", "line"]);
        assert_eq!(c.window, 5);
        let c = DedupeConfig::from_json(r#"{"key":["order_id"]}"#).unwrap();
        assert_eq!(c.window, DEFAULT_WINDOW);
        let c = DedupeConfig::from_json(&format!(r#"{{"key":["a"],"window":{MAX_WINDOW}}}"#));
        assert_eq!(c.unwrap().window, MAX_WINDOW);
    }

    #[test]
    fn a_missing_key_says_what_to_write() {
        let m = err(r#"{"window":10}"#);
        assert!(m.contains("`key` is required"), "{m}");
        assert!(m.contains(r#"key = ["order_id"]"#), "{m}");
    }

    #[test]
    fn a_key_that_is_not_a_list_of_names_is_rejected() {
        assert!(err(r#"{"key":"order_id"}"#).contains("must be a list of column names"));
        assert!(err(r#"{"key":[]}"#).contains("`key` lists no column"));
        let m = err(r#"{"key":["a",3,""]}"#);
        assert!(m.contains("`key[1]`") && m.contains("got 3"), "{m}");
        assert!(m.contains("`key[2]`"), "{m}");
        assert!(err(r#"{"key":["a","b","a"]}"#).contains("`a` twice"));
    }

    #[test]
    fn a_window_out_of_range_names_the_range_and_the_value() {
        for (value, shown) in [
            ("0", "got 0"),
            ("-3", "got -3"),
            ("2.5", "got 2.5"),
            ("\"big\"", "got \"big\""),
            ("8000001", "got 8000001"),
        ] {
            let m = err(&format!(r#"{{"key":["a"],"window":{value}}}"#));
            assert!(
                m.contains("`window` must be a whole number from 1 to 8000000"),
                "{m}"
            );
            assert!(m.contains(shown), "{m}");
        }
    }

    #[test]
    fn all_problems_are_reported_together() {
        let m = err(r#"{"key":[],"window":0}"#);
        assert!(
            m.contains("`key` lists no column") && m.contains("`window`"),
            "{m}"
        );
    }

    #[test]
    fn unknown_keys_are_named_with_the_accepted_ones() {
        let m = err(r#"{"key":["a"],"windw":10}"#);
        assert!(m.contains("`windw`"), "{m}");
        assert!(m.contains("`key`") && m.contains("`window`"), "{m}");
    }

    #[test]
    fn spec_is_json_with_the_limits() {
        let v: Value = serde_json::from_str(&json_schema()).unwrap();
        assert_eq!(v["required"][0], "key");
        assert_eq!(v["properties"]["window"]["maximum"], MAX_WINDOW);
        assert_eq!(v["properties"]["window"]["default"], DEFAULT_WINDOW);
        assert_eq!(v["properties"]["window"]["minimum"], 1);
        assert_eq!(v["properties"]["key"]["minItems"], 1);
        assert_eq!(v["properties"]["key"]["items"]["minLength"], 1);
        assert_eq!(v["additionalProperties"], false);
        assert!(v["properties"]["key"]["description"]
            .as_str()
            .unwrap()
            .starts_with("The columns that identify a row"));
    }
}

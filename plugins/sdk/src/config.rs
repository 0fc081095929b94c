//! Typed plugin configuration: the host hands the plugin's `config` table over as JSON, the
//! plugin parses it into its config struct, and its `spec()` is that struct's JSON Schema.

use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// Parse a plugin's JSON config into `T`. Unknown keys are errors when `T` says
/// `#[serde(deny_unknown_fields)]`; every error becomes `invalid-config` naming the key.
pub fn parse<T: DeserializeOwned>(json: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|e| Error::InvalidConfig(strip_position(&e.to_string())))
}

/// The JSON Schema of the config struct `T`, for `spec()`: derived from the type the config
/// is parsed into (`#[derive(Deserialize, JsonSchema)]`, doc comments becoming
/// descriptions), so the schema and the parser cannot drift apart.
pub fn spec<T: schemars::JsonSchema>() -> String {
    serde_json::to_string_pretty(&schemars::schema_for!(T)).expect("a derived schema serialises")
}

/// A size given in a config as a number of bytes or as text such as "128MiB" or "1 GB";
/// `None` when it is neither.
pub fn byte_size(value: &serde_json::Value) -> Option<u64> {
    match value.as_u64() {
        Some(n) => Some(n),
        None => value
            .as_str()?
            .trim()
            .parse::<bytesize::ByteSize>()
            .ok()
            .map(|size| size.as_u64()),
    }
}

// serde_json reports "at line 1 column 57" of the JSON the host rendered, which means
// nothing to a user who wrote TOML; the key name in the message is what helps.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config as a plugin declares it.
    #[derive(serde::Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Example {
        /// How many rows to make.
        rows: u64,
        #[serde(default)]
        stream: Option<String>,
    }

    #[test]
    fn the_spec_is_the_config_structs_schema() {
        let spec: serde_json::Value = serde_json::from_str(&spec::<Example>()).unwrap();
        assert_eq!(spec["type"], "object");
        assert_eq!(spec["additionalProperties"], false);
        assert_eq!(spec["required"], serde_json::json!(["rows"]));
        assert_eq!(
            spec["properties"]["rows"]["description"],
            "How many rows to make."
        );
        assert!(spec["properties"]["stream"].is_object());
    }
}

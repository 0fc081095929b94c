//! Typed plugin configuration: the host hands the plugin's `config` table over as JSON.

use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// Parse a plugin's JSON config into `T`. Unknown keys are errors when `T` says
/// `#[serde(deny_unknown_fields)]`; every error becomes `invalid-config` naming the key.
pub fn parse<T: DeserializeOwned>(json: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|e| Error::InvalidConfig(strip_position(&e.to_string())))
}

// serde_json reports "at line 1 column 57" of the JSON the host rendered, which means
// nothing to a user who wrote TOML; the key name in the message is what helps.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

//! What the `kafka` source needs as a plugin (feature `plugin`): client errors as the host
//! should treat them.

use ingest_sdk::Error as PluginError;

use crate::{code, Error};

/// A client error as the host should treat it: a denied connection is an access error
/// (with the grant to add), an authorization error too, a missing topic a config error, a
/// broken connection or a moving leader or coordinator worth a retry, anything else fatal.
pub fn to_plugin_error(e: Error, context: &str) -> PluginError {
    let message = format!("{context}: {e}");
    match &e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
            PluginError::AccessDenied(format!(
                "{message} (grant each broker's advertised `host:port` in the plugin's `net`)"
            ))
        }
        Error::Broker {
            code: code::TOPIC_AUTHORIZATION_FAILED | code::GROUP_AUTHORIZATION_FAILED,
            ..
        } => PluginError::AccessDenied(message),
        Error::Broker {
            code: code::UNKNOWN_TOPIC_OR_PARTITION,
            ..
        } => PluginError::InvalidConfig(message),
        e if e.is_transient() => PluginError::Transient {
            message,
            retry_after_ms: None,
        },
        _ => PluginError::Fatal(message),
    }
}

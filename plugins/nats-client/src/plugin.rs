//! What the `nats` source and sink share as plugins (feature `plugin`): connecting with
//! credentials from granted secrets, and client errors as the host should treat them.

use ingest_sdk::Error as PluginError;

use crate::{Auth, Connection, Error, JetStream};

/// How a plugin proves who it is: the names of granted secrets, not their values.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub token_secret: Option<String>,
    pub user: Option<String>,
    pub password_secret: Option<String>,
}

/// Connect to `server` as `client` and open JetStream, with `credentials` resolved from
/// the plugin's granted secrets.
pub fn connect(
    server: &str,
    client: &str,
    credentials: &Credentials,
) -> Result<JetStream, PluginError> {
    let auth = match (&credentials.token_secret, &credentials.user) {
        (Some(secret), _) => Auth::Token(ingest_sdk::host::secret(secret)?),
        (None, Some(user)) => Auth::User {
            user: user.clone(),
            password: match &credentials.password_secret {
                Some(secret) => ingest_sdk::host::secret(secret)?,
                None => String::new(),
            },
        },
        (None, None) => Auth::None,
    };
    let at = format!("nats {server}");
    let conn = Connection::connect(server, client, &auth).map_err(|e| to_plugin_error(e, &at))?;
    JetStream::new(conn, client).map_err(|e| to_plugin_error(e, &at))
}

/// A client error as the host should treat it: a denied connection is an access error
/// (with the grant to add), refused credentials too, a missing stream or consumer a config
/// error, a broken connection or a busy server worth a retry, anything else fatal.
pub fn to_plugin_error(e: Error, context: &str) -> PluginError {
    let message = format!("{context}: {e}");
    match &e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
            PluginError::AccessDenied(format!(
                "{message} (grant the server's `host:port` in the plugin's `net`)"
            ))
        }
        Error::Server(text) if text.to_ascii_lowercase().contains("authorization") => {
            PluginError::AccessDenied(message)
        }
        Error::Api { code: 404, .. } => PluginError::InvalidConfig(message),
        e if e.is_transient() => PluginError::Transient {
            message,
            retry_after_ms: None,
        },
        _ => PluginError::Fatal(message),
    }
}

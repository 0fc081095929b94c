//! What can go wrong talking to PostgreSQL, and how each failure maps onto the plugin
//! contract's error cases (retried, or shown to the user at once).

use std::fmt;
use std::io;

/// An error the server reported (an `ErrorResponse`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ServerError {
    pub severity: String,
    /// The SQLSTATE, e.g. `23502` for a NOT NULL violation.
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    pub column: Option<String>,
    pub constraint: Option<String>,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (SQLSTATE {})", self.message, self.code)?;
        if let Some(detail) = &self.detail {
            write!(f, "; {detail}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "; hint: {hint}")?;
        }
        Ok(())
    }
}

impl ServerError {
    /// Worth retrying: the server went away, is starting or shutting down, ran out of a
    /// resource, or chose this session as a deadlock or serialization victim.
    pub fn is_transient(&self) -> bool {
        let class = self.code.get(..2).unwrap_or("");
        matches!(class, "08" | "53" | "57" | "40") && self.code != "57014"
            || self.code == "57014" && self.message.contains("statement timeout")
    }

    /// The server ends the session after this error (severity FATAL or PANIC).
    pub fn ends_session(&self) -> bool {
        matches!(self.severity.as_str(), "FATAL" | "PANIC")
    }

    /// The session was ended by an administrator (`pg_terminate_backend`) or a shutdown.
    pub fn is_terminated(&self) -> bool {
        matches!(self.code.as_str(), "57P01" | "57P02" | "57P03")
    }
}

/// A failed call to the server.
#[derive(Debug)]
pub enum PgError {
    /// The TCP connection could not be made (refused, unreachable, or denied by the grant).
    Connect { address: String, source: io::Error },
    /// The socket failed after connecting (reset, closed).
    Io(io::Error),
    /// Authentication failed before the server said why, or cannot be done.
    Auth(String),
    /// The server reported an error.
    Server(Box<ServerError>),
    /// The server sent something this client does not understand.
    Protocol(String),
    /// TLS could not be set up: refused by the server, or a certificate not trusted.
    Tls(String),
}

impl From<io::Error> for PgError {
    fn from(e: io::Error) -> Self {
        PgError::Io(e)
    }
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgError::Connect { address, source } => {
                if source.kind() == io::ErrorKind::PermissionDenied {
                    write!(
                        f,
                        "connecting to {address} was denied: add \"{address}\" to the plugin's `net` grant"
                    )
                } else {
                    write!(f, "cannot connect to {address}: {source}")
                }
            }
            PgError::Io(e) => write!(f, "the connection failed: {e}"),
            PgError::Auth(m) => write!(f, "authentication failed: {m}"),
            PgError::Server(e) => write!(f, "{e}"),
            PgError::Protocol(m) => write!(f, "protocol error: {m}"),
            PgError::Tls(m) => write!(f, "TLS: {m}"),
        }
    }
}

impl std::error::Error for PgError {}

impl PgError {
    /// The SQLSTATE, when the server reported the error.
    pub fn code(&self) -> Option<&str> {
        match self {
            PgError::Server(e) => Some(&e.code),
            _ => None,
        }
    }

    /// The contract's error for this failure, its message prefixed with `context`.
    pub fn into_plugin_error(self, context: impl fmt::Display) -> ingest_sdk::Error {
        use ingest_sdk::Error;
        let message = format!("{context}: {self}");
        match &self {
            PgError::Connect { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => {
                Error::AccessDenied(message)
            }
            PgError::Connect { .. } | PgError::Io(_) => Error::Transient {
                message,
                retry_after_ms: None,
            },
            PgError::Auth(_) => Error::AccessDenied(message),
            PgError::Server(e) if e.code.starts_with("28") => Error::AccessDenied(message),
            PgError::Server(e) if e.code == "42501" => Error::AccessDenied(message),
            PgError::Server(e) if e.is_transient() => Error::Transient {
                message,
                retry_after_ms: None,
            },
            PgError::Server(e) if e.code == "3D000" || e.code == "42P01" || e.code == "42703" => {
                Error::InvalidConfig(message)
            }
            PgError::Tls(_) => Error::AccessDenied(message),
            PgError::Server(_) | PgError::Protocol(_) => Error::Fatal(message),
        }
    }
}

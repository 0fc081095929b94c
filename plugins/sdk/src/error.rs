//! The error a plugin returns, and the rows it rejects.

use crate::bindings::wit_types as wit;

/// What went wrong in a plugin call. The host acts on the case: configuration and access
/// errors fail the run at once, transient errors are retried from the last checkpoint,
/// data and fatal errors stop the run with the message shown to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The configuration is wrong; say which key and what would be accepted.
    InvalidConfig(String),
    /// A file, host, URL or secret the plugin needs was not granted.
    AccessDenied(String),
    /// A temporary failure worth retrying.
    Transient {
        message: String,
        retry_after_ms: Option<u64>,
    },
    /// Bad data that could not be turned into rejects; say where.
    Data(String),
    /// Anything else.
    Fatal(String),
}

/// Shorthand for results in plugin code.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn config(message: impl Into<String>) -> Self {
        Error::InvalidConfig(message.into())
    }
    pub fn data(message: impl Into<String>) -> Self {
        Error::Data(message.into())
    }
    pub fn fatal(message: impl Into<String>) -> Self {
        Error::Fatal(message.into())
    }

    /// The same error, its message prefixed with `context` (`"{context}: {message}"`),
    /// keeping its case (and a transient error's `retry_after_ms`).
    pub fn context(self, context: impl std::fmt::Display) -> Self {
        let with = |m: String| format!("{context}: {m}");
        match self {
            Error::InvalidConfig(m) => Error::InvalidConfig(with(m)),
            Error::AccessDenied(m) => Error::AccessDenied(with(m)),
            Error::Transient {
                message,
                retry_after_ms,
            } => Error::Transient {
                message: with(message),
                retry_after_ms,
            },
            Error::Data(m) => Error::Data(with(m)),
            Error::Fatal(m) => Error::Fatal(with(m)),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::InvalidConfig(m) => write!(f, "invalid config: {m}"),
            Error::AccessDenied(m) => write!(f, "access denied: {m}"),
            Error::Transient { message, .. } => write!(f, "transient: {message}"),
            Error::Data(m) => write!(f, "bad data: {m}"),
            Error::Fatal(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<arrow_schema::ArrowError> for Error {
    fn from(e: arrow_schema::ArrowError) -> Self {
        Error::Fatal(format!("arrow: {e}"))
    }
}

impl From<Error> for wit::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidConfig(m) => wit::Error::InvalidConfig(m),
            Error::AccessDenied(m) => wit::Error::AccessDenied(m),
            Error::Transient {
                message,
                retry_after_ms,
            } => wit::Error::Transient(wit::TransientError {
                message,
                retry_after_ms,
            }),
            Error::Data(m) => wit::Error::Data(m),
            Error::Fatal(m) => wit::Error::Fatal(m),
        }
    }
}

impl From<wit::Error> for Error {
    fn from(e: wit::Error) -> Self {
        match e {
            wit::Error::InvalidConfig(m) => Error::InvalidConfig(m),
            wit::Error::AccessDenied(m) => Error::AccessDenied(m),
            wit::Error::Transient(t) => Error::Transient {
                message: t.message,
                retry_after_ms: t.retry_after_ms,
            },
            wit::Error::Data(m) => Error::Data(m),
            wit::Error::Fatal(m) => Error::Fatal(m),
        }
    }
}

/// A record a plugin could not process. The host routes it by the pipeline's `on_error`
/// policy: fail the run, skip it, or write it to the dead-letter queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reject {
    /// Index of the row in the input batch (transforms, sinks).
    pub row: Option<u32>,
    /// The raw record, when it never became a row (sources).
    pub original: Option<String>,
    /// Where it came from, e.g. `orders.csv:42`.
    pub location: Option<String>,
    /// Why it was rejected.
    pub reason: String,
}

impl Reject {
    /// A row of the input batch, rejected for `reason`.
    pub fn row(row: usize, reason: impl Into<String>) -> Self {
        Reject {
            row: Some(row as u32),
            reason: reason.into(),
            ..Reject::default()
        }
    }

    /// A raw record that never became a row.
    pub fn record(
        original: impl Into<String>,
        location: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Reject {
            original: Some(original.into()),
            location: Some(location.into()),
            reason: reason.into(),
            ..Reject::default()
        }
    }
}

impl From<Reject> for wit::Reject {
    fn from(r: Reject) -> Self {
        wit::Reject {
            row: r.row,
            original: r.original,
            location: r.location,
            reason: r.reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_prefixes_the_message_and_keeps_the_case() {
        assert_eq!(
            Error::config("bad key").context("file sink"),
            Error::InvalidConfig("file sink: bad key".into())
        );
        assert_eq!(
            Error::Transient {
                message: "busy".into(),
                retry_after_ms: Some(5)
            }
            .context("stream `a`"),
            Error::Transient {
                message: "stream `a`: busy".into(),
                retry_after_ms: Some(5)
            }
        );
    }
}

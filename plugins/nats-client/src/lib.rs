//! A small synchronous NATS client for plugins, over `std::net` (wasi:sockets in a
//! component): [`conn`] speaks the text protocol, [`jetstream`] the JetStream API a durable
//! pull consumer and an idempotent publisher need.

pub mod conn;
pub mod jetstream;
#[cfg(feature = "plugin")]
pub mod plugin;

pub use conn::{Auth, Connection, Message};
pub use jetstream::{ConsumerConfig, Delivered, JetStream, PubAck, PullEnd, StreamInfo};

/// What went wrong talking to NATS.
#[derive(Debug)]
pub enum Error {
    /// The socket failed (connect, read, write).
    Io {
        what: String,
        source: std::io::Error,
    },
    /// The server closed the connection.
    Closed,
    /// The server sent `-ERR`.
    Server(String),
    /// A JetStream API error (`code` as HTTP: 404 not found, 503 no responders, ...).
    Api { code: u16, description: String },
    /// Bytes that do not follow the protocol.
    Protocol(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    fn io(what: &str, source: std::io::Error) -> Error {
        Error::Io {
            what: what.to_string(),
            source,
        }
    }

    /// Whether trying again later may succeed (the connection broke, the server is busy).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Io { .. } | Error::Closed => true,
            Error::Api { code, .. } => *code == 503 || *code == 408,
            Error::Server(_) | Error::Protocol(_) => false,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io { what, source } => write!(f, "cannot {what}: {source}"),
            Error::Closed => f.write_str("the server closed the connection"),
            Error::Server(message) => write!(f, "the server refused: {message}"),
            Error::Api { code, description } => {
                write!(f, "JetStream error {code}: {description}")
            }
            Error::Protocol(message) => write!(f, "{message}"),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests;

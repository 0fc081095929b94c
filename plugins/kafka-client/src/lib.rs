//! A small synchronous Kafka-protocol client for plugins, over `std::net` (wasi:sockets in
//! a component).
//!
//! - [`wire`]: the protocol's primitive types.
//! - [`records`]: record batches (magic 2), decoded and encoded.
//! - [`client`]: connections to the brokers and the requests a consumer and a producer
//!   send, each at one fixed, non-flexible version that Kafka 2.x to 4.x brokers accept.
//! - [`group`]: a consumer group's committed offsets, read and written.

pub mod client;
pub mod group;
#[cfg(feature = "plugin")]
pub mod plugin;
pub mod records;
pub mod wire;

pub use client::{Client, FetchedPartition, TopicMetadata};
pub use records::{NewRecord, Record};

/// What went wrong talking to Kafka.
#[derive(Debug)]
pub enum Error {
    /// The socket failed (connect, read, write).
    Io {
        what: String,
        source: std::io::Error,
    },
    /// The broker closed the connection.
    Closed(String),
    /// The broker answered with an error code.
    Broker {
        /// The request, e.g. `Fetch`.
        api: &'static str,
        code: i16,
        /// What the request was about (topic, partition, group), and the broker's message
        /// when it sent one.
        context: String,
    },
    /// Bytes that do not follow the protocol, or a broker without a version we speak.
    Protocol(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Error codes the client acts on.
pub mod code {
    pub const NONE: i16 = 0;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
    pub const GROUP_AUTHORIZATION_FAILED: i16 = 30;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
}

/// The name Kafka gives an error code, for messages.
pub fn code_name(code: i16) -> &'static str {
    match code {
        -1 => "UNKNOWN_SERVER_ERROR",
        0 => "NONE",
        1 => "OFFSET_OUT_OF_RANGE",
        2 => "CORRUPT_MESSAGE",
        3 => "UNKNOWN_TOPIC_OR_PARTITION",
        5 => "LEADER_NOT_AVAILABLE",
        6 => "NOT_LEADER_OR_FOLLOWER",
        7 => "REQUEST_TIMED_OUT",
        10 => "MESSAGE_TOO_LARGE",
        14 => "COORDINATOR_LOAD_IN_PROGRESS",
        15 => "COORDINATOR_NOT_AVAILABLE",
        16 => "NOT_COORDINATOR",
        17 => "INVALID_TOPIC_EXCEPTION",
        22 => "ILLEGAL_GENERATION",
        23 => "INCONSISTENT_GROUP_PROTOCOL",
        24 => "INVALID_GROUP_ID",
        25 => "UNKNOWN_MEMBER_ID",
        26 => "INVALID_SESSION_TIMEOUT",
        27 => "REBALANCE_IN_PROGRESS",
        29 => "TOPIC_AUTHORIZATION_FAILED",
        30 => "GROUP_AUTHORIZATION_FAILED",
        31 => "CLUSTER_AUTHORIZATION_FAILED",
        35 => "UNSUPPORTED_VERSION",
        36 => "TOPIC_ALREADY_EXISTS",
        37 => "INVALID_PARTITIONS",
        58 => "SASL_AUTHENTICATION_FAILED",
        79 => "MEMBER_ID_REQUIRED",
        _ => "an error code",
    }
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// The broker's error code, if the broker answered with one.
    pub fn code(&self) -> Option<i16> {
        match self {
            Error::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether trying again later may succeed (the connection broke, a leader or the group
    /// coordinator is moving, the broker timed out).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Io { .. } | Error::Closed(_) => true,
            Error::Broker { code: c, .. } => matches!(
                *c,
                code::LEADER_NOT_AVAILABLE
                    | code::NOT_LEADER_OR_FOLLOWER
                    | code::REQUEST_TIMED_OUT
                    | code::COORDINATOR_LOAD_IN_PROGRESS
                    | code::COORDINATOR_NOT_AVAILABLE
                    | code::NOT_COORDINATOR
                    | code::REBALANCE_IN_PROGRESS
            ),
            Error::Protocol(_) => false,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io { what, source } => write!(f, "cannot {what}: {source}"),
            Error::Closed(addr) => write!(f, "broker {addr} closed the connection"),
            Error::Broker { api, code, context } => write!(
                f,
                "{api} {context}: the broker answered {} ({code})",
                code_name(*code)
            ),
            Error::Protocol(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for Error {}

/// A broker error for `api` about `context`, or `Ok` for code 0.
pub(crate) fn check(api: &'static str, code: i16, context: impl FnOnce() -> String) -> Result<()> {
    if code == code::NONE {
        Ok(())
    } else {
        Err(Error::Broker {
            api,
            code,
            context: context(),
        })
    }
}

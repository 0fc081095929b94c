//! A small synchronous MySQL/MariaDB client for plugins compiled to wasm32-wasip2: the
//! client/server protocol over std::net ([`conn`]: handshake, `mysql_native_password`,
//! text queries) and the replica side of replication ([`binlog`]: `COM_REGISTER_SLAVE`,
//! `COM_BINLOG_DUMP` and the event stream's framing), and column types as Arrow types
//! ([`types`]).

pub mod binlog;
pub mod conn;
pub mod packet;
pub mod types;

pub use conn::{ConnectParams, Connection, MyError, RawRows, Rows, WireColumn};

//! A small synchronous PostgreSQL client for plugins compiled to wasm32-wasip2: the wire
//! protocol over std::net ([`conn`]), binary `COPY` decoded straight into Arrow builders
//! and encoded from Arrow arrays ([`copy`]), the catalog's types as Arrow types
//! ([`types`]), SQL quoting ([`sql`]), the connection settings every Postgres plugin
//! shares ([`settings`]), and logical replication ([`replication`], [`pgoutput`]).

pub mod conn;
pub mod copy;
pub mod error;
pub mod interval;
pub mod pgoutput;
pub mod replication;
pub mod settings;
pub mod sql;
pub mod tls;
pub mod types;

pub use conn::{ConnectParams, Connection, Rows};

/// A name part unique to this moment and server session (`pid`, the backend's process
/// id): lowercase hex, for staging tables, prepared transactions and split plans.
pub fn nonce(pid: i32) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:x}{:05x}",
        nanos & 0xffff_ffff_ffff,
        pid as u32 & 0xf_ffff
    )
}
pub use error::{PgError, ServerError};

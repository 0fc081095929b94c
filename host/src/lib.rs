//! The ingestion host: runs pipelines of sandboxed WebAssembly plugins (sources,
//! transforms, sinks) over Arrow record batches, with checkpointed epochs.

pub mod batch;
pub mod capabilities;
pub mod checkpoint;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod dlq;
pub mod encoder;
pub mod fault;
#[cfg(any(test, fuzzing))]
pub mod fuzzing;
pub mod http_grant;
pub mod lock;
pub mod metrics;
pub mod plugin;
pub mod progress;
pub mod runtime;
pub mod sandbox;
pub mod scaffold;
pub mod schema;
pub mod secrets;
pub mod sha256x8;
pub mod tap;
pub mod webhook;

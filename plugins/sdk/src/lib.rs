//! The Rust SDK for ingestion-host plugins.
//!
//! A plugin author implements one trait over Arrow [`RecordBatch`]es — [`source::Source`],
//! [`transform::Transform`] or [`sink::Sink`] — and exports it with one macro
//! ([`export_source!`], [`export_transform!`], [`export_sink!`]). The SDK owns everything
//! else: the generated WIT bindings, the Arrow IPC encoding at the boundary, and the mapping
//! of [`Error`] onto the contract's error variant.

pub use arrow_array;
pub use arrow_schema;
pub use serde_json;

pub mod config;
mod error;
pub mod host;
pub mod ipc;
mod ipc_peek;
pub mod parse;
pub mod payload;
pub mod resume;
pub mod sink;
pub mod source;
pub mod text;
pub mod transform;
pub mod webhook;

pub use arrow_array::RecordBatch;
pub use arrow_schema::{Schema, SchemaRef};
pub use error::{Error, Reject, Result};

/// The columns of a schema for a message, e.g. `[id: Int64, email: Utf8]`.
pub fn describe_schema(schema: &Schema) -> String {
    let columns: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| format!("{}: {}", f.name(), f.data_type()))
        .collect();
    format!("[{}]", columns.join(", "))
}

/// Generated bindings. One module per world; the shared `types` and `host` interfaces are
/// generated once (in `source`) and reused by the other two so values convert freely.
#[doc(hidden)]
pub mod bindings {
    pub mod source {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "source-plugin",
            pub_export_macro: true,
            export_macro_name: "__export_source",
            default_bindings_module: "ingest_sdk::bindings::source",
        });
    }
    pub mod transform {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "transform-plugin",
            pub_export_macro: true,
            export_macro_name: "__export_transform",
            default_bindings_module: "ingest_sdk::bindings::transform",
            with: {
                "ingest:plugin/types@0.1.0": crate::bindings::source::ingest::plugin::types,
                "ingest:plugin/host@0.1.0": crate::bindings::source::ingest::plugin::host,
            },
        });
    }
    pub mod sink {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "sink-plugin",
            pub_export_macro: true,
            export_macro_name: "__export_sink",
            default_bindings_module: "ingest_sdk::bindings::sink",
            with: {
                "ingest:plugin/types@0.1.0": crate::bindings::source::ingest::plugin::types,
                "ingest:plugin/host@0.1.0": crate::bindings::source::ingest::plugin::host,
            },
        });
    }
    pub use source::ingest::plugin::host as wit_host;
    pub use source::ingest::plugin::types as wit_types;
}

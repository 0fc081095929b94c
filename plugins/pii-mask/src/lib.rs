//! `pii-mask`: a transform that masks personal data column by column.
//!
//! Each configured column is replaced by a masked `Utf8` column (hash, keyed hash, redaction,
//! partial masking, e-mail domain or null); every other column passes through untouched.
//! The rules are deterministic, so equal inputs mask to equal outputs across runs, which keeps
//! masked keys joinable.
//!
//! - [`config`]: the config as written (parse) and as validated (rules per column).
//! - [`rules`]: the masking rules over Arrow string arrays, free of any host call.
//! - [`transform`]: the [`Transform`](ingest_sdk::transform::Transform) binding the two to a
//!   stream's schema and to the host's secrets.

pub mod config;
pub mod rules;
pub mod transform;

// Only the component exports the WIT interface: natively (unit tests) the exported names,
// which contain `:`, cannot be linked into a shared library.
#[cfg(target_family = "wasm")]
ingest_sdk::export_transform!(transform::PiiMask);

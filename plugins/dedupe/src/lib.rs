//! `dedupe`: a transform that drops rows whose key was already seen, for sources that
//! deliver at least once (a re-sent file, a redelivered message).
//!
//! Each row's key columns are encoded without ambiguity and hashed into 128 bits; the hashes
//! of the last `window` distinct keys are remembered, oldest evicted first, and a row whose
//! key is among them is dropped. The window is checkpointed with every epoch and restored
//! after a restart, so it always matches the output that was committed.
//!
//! - [`config`]: the config as written (parse) and as validated.
//! - [`key`]: the key encoding and its hash, free of any host call.
//! - [`window`]: the bounded set of remembered keys and its checkpoint format.
//! - [`transform`]: the [`Transform`](ingest_sdk::transform::Transform) binding them to a
//!   stream's schema.

pub mod config;
pub mod key;
pub mod transform;
pub mod window;

// Only the component exports the WIT interface: natively (unit tests) the exported names,
// which contain `:`, cannot be linked into a shared library.
#[cfg(target_family = "wasm")]
ingest_sdk::export_transform!(transform::Dedupe);

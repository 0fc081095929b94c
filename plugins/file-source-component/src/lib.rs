//! The built-in `file` source as a component: [`file_source::FileSource`], exported.

// Only the component exports the WIT interface: natively the exported names, which contain
// `:`, cannot be linked into a shared library.
#[cfg(target_family = "wasm")]
ingest_sdk::export_source!(file_source::FileSource);

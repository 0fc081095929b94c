//! The built-in `file` sink as a component: [`file_sink::FileSink`], exported.

// Only the component exports the WIT interface: natively the exported names, which contain
// `:`, cannot be linked into a shared library.
#[cfg(target_family = "wasm")]
ingest_sdk::export_sink!(file_sink::FileSink);

//! Where a stream's read stands: what a chunk leaves behind and `open` resumes from. The
//! SDK's resumable-read position, shared with the other database sources.

pub use ingest_sdk::resume::Position;

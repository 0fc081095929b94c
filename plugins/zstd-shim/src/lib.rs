//! A pure-Rust stand-in for the [`zstd`](https://crates.io/crates/zstd) crate, so that the
//! plugins, built for `wasm32-wasip2`, can read zstd-compressed Parquet.
//!
//! # Why this exists
//!
//! The real `zstd` crate binds the C library through `zstd-sys`, which needs a C compiler
//! and a WASI sysroot to build for `wasm32-wasip2`; neither is available where the plugins
//! are built. Without it, `parquet`'s `zstd` feature cannot be enabled, and the file source
//! could not read zstd Parquet, which is the default output of our own file sink and of
//! Polars. The plugins workspace therefore replaces the crates.io `zstd` with this crate
//! (`[patch.crates-io]` in `plugins/Cargo.toml`). It implements the part of zstd 0.14's API
//! that `parquet` 60.1 uses — [`bulk::Compressor`], [`bulk::Decompressor`],
//! [`zstd_safe::get_frame_content_size`], [`zstd_safe::compress_bound`] and
//! [`compression_level_range`] — plus a few neighbours, on top of the pure-Rust
//! [`ruzstd`] crate.
//!
//! # What it does
//!
//! * **Decompression is complete**: any standard zstd frame, from any compression level,
//!   any number of frames back to back (skippable frames are stepped over), with the
//!   content checksum and the declared content size verified when a frame carries them.
//!   Dictionaries and the pre-0.8 "legacy" formats are not supported; Parquet uses neither.
//! * **Compression works but is basic**: every level maps to ruzstd's one implemented
//!   level, roughly zstd's level 1. The output is valid zstd that any decoder reads, but it
//!   is larger and slower to produce than the C library's. Plugins should leave *writing*
//!   Parquet to the host, whose native encoder is the real zstd (see
//!   `docs/decisions/0001-parquet-encoding-is-a-host-capability.md`).
//!
//! * **A native decoder can take over**: a plugin whose host decompresses natively hands
//!   that function to [`set_native_decompressor`] once, and every later decompression that
//!   knows its output's bound goes through it (about six times as fast as ruzstd
//!   compiled to Wasm on Parquet pages; see `docs/decisions/0018-zstd-decompression-is-a-host-capability.md`).
//!
//! Errors are [`std::io::Error`]s whose message says what was wrong with the input.
//!
//! # Example
//!
//! ```
//! let data = b"zstd in WebAssembly, without C".repeat(100);
//! let compressed = zstd::bulk::compress(&data, 3).unwrap();
//! assert_eq!(
//!     zstd::zstd_safe::get_frame_content_size(&compressed),
//!     Ok(Some(data.len() as u64))
//! );
//! let back = zstd::bulk::decompress(&compressed, data.len()).unwrap();
//! assert_eq!(back, data);
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::io::{self, Read};
use std::sync::OnceLock;

pub mod bulk;
mod frame;
pub mod zstd_safe;

/// The compression level zstd uses when none is given (3).
pub use zstd_safe::CLEVEL_DEFAULT as DEFAULT_COMPRESSION_LEVEL;

/// How large a buffer a compressed block might need, at worst.
///
/// Reserve this much before [`bulk::compress_to_buffer()`], which writes into a destination
/// you provide rather than allocating one.
pub use zstd_safe::compress_bound;

/// The range of compression levels the C library accepts, `-131072..=22`.
///
/// Every level in it is accepted here too; they all compress the same way (see the crate
/// documentation).
pub fn compression_level_range() -> std::ops::RangeInclusive<zstd_safe::CompressionLevel> {
    zstd_safe::min_c_level()..=zstd_safe::max_c_level()
}

/// A zstd decoder outside this crate (a plugin host's native one): decompresses all the
/// frames in its first argument into at most its second argument's bytes, or fails.
pub type NativeDecompressor = fn(&[u8], usize) -> io::Result<Vec<u8>>;

static NATIVE: OnceLock<NativeDecompressor> = OnceLock::new();

/// Hands every later decompression to `decompress` instead of ruzstd: the bulk API's
/// (whose destination bounds the output), and [`decode_all`] where every frame records
/// its size. Returns `false`, changing nothing, when a decoder was set already.
///
/// Set it once, before decompressing: a plugin does so where it starts reading.
pub fn set_native_decompressor(decompress: NativeDecompressor) -> bool {
    NATIVE.set(decompress).is_ok()
}

/// The decoder [`set_native_decompressor`] set, if any.
pub(crate) fn native_decompressor() -> Option<NativeDecompressor> {
    NATIVE.get().copied()
}

/// Decompresses everything `source` yields: one or more zstd frames, back to back.
///
/// Reads the source to its end first, so it is meant for data that fits in memory.
pub fn decode_all<R: Read>(mut source: R) -> io::Result<Vec<u8>> {
    let mut input = Vec::new();
    source.read_to_end(&mut input)?;
    let mut decompressor = bulk::Decompressor::new()?;
    let capacity = bulk::Decompressor::upper_bound(&input);
    decompressor.decompress_growing(&input, capacity)
}

/// Compresses everything `source` yields into a single zstd frame.
///
/// `level` is accepted for compatibility and otherwise ignored (see the crate
/// documentation).
pub fn encode_all<R: Read>(mut source: R, level: i32) -> io::Result<Vec<u8>> {
    let mut input = Vec::new();
    source.read_to_end(&mut input)?;
    bulk::compress(&input, level)
}

#[cfg(test)]
mod tests;

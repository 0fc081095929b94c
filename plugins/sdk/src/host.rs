//! Capabilities the host grants: logging, secrets, progress reports, native digests,
//! native zstd decompression and native Parquet encoding.

use arrow_array::builder::StringBuilder;
use arrow_array::{Array, RecordBatch, StringArray};
use arrow_schema::Schema;

use crate::bindings::wit_host as wit;
use crate::{ipc, Error, Result};

pub use wit::{CheckpointPolicy, Digest, Level};

/// Write one line to the host log under this plugin's name.
pub fn log(level: Level, message: &str) {
    wit::log(level, message);
}

/// The value of the secret granted to this plugin under `name`.
pub fn secret(name: &str) -> Result<String> {
    wit::secret(name).map_err(Error::from)
}

/// Tell the host how far this source has read `split` of `stream`: `read` of `total`
/// bytes of its own (a file's, say). The host shows what is left and an estimate of the
/// time left. Report each split's size from `splits` with `read` 0, then after each chunk.
pub fn progress(stream: &str, split: &str, read: u64, total: u64) {
    wit::progress(stream, split, read, total);
}

/// When the pipeline closes epochs: a source that holds what it read upstream until the
/// epoch commits checks its timeouts and limits against it.
pub fn checkpoints() -> CheckpointPolicy {
    wit::checkpoints()
}

/// A tag unique to this writer when several hosts write the pipeline's outputs at once
/// (scale-out); `None` on one host. A sink keeps the staging of its open epoch under it,
/// and leaves other tags' staging alone.
pub fn writer_tag() -> Option<String> {
    wit::writer_tag()
}

/// The lowercase hex digest of every value of `values` (null stays null), computed natively
/// by the host in one call. `key` is the HMAC key for [`Digest::HmacSha256`].
pub fn digest_hex(algorithm: Digest, key: &[u8], values: &StringArray) -> Result<StringArray> {
    let offsets: Vec<u32> = values.value_offsets().iter().map(|&o| o as u32).collect();
    let hex = wit::digest_hex(algorithm, key, values.values().as_slice(), &offsets)?;
    if hex.len() != values.len() * 64 {
        return Err(Error::fatal(format!(
            "digest-hex returned {} bytes for {} values",
            hex.len(),
            values.len()
        )));
    }
    let mut out = StringBuilder::with_capacity(values.len(), hex.len());
    for (i, digest) in hex.chunks_exact(64).enumerate() {
        if values.is_null(i) {
            out.append_null();
            continue;
        }
        let text = std::str::from_utf8(digest)
            .map_err(|e| Error::fatal(format!("digest-hex returned a non-hex digest: {e}")))?;
        out.append_value(text);
    }
    Ok(out.finish())
}

/// Decompresses `data`, one or more zstd frames, natively in the host, into at most
/// `capacity` bytes (sizes past `u32::MAX` are asked as `u32::MAX`).
///
/// About six times as fast as a zstd decoder compiled to Wasm, and open to every plugin:
/// it reaches nothing outside the plugin. It has the shape the plugins' `zstd` stand-in
/// takes: a reader of zstd data (Parquet pages, `.zst` files, compressed messages) calls
/// `zstd::set_native_decompressor(ingest_sdk::host::zstd_decompress)` once, and every
/// decompression then goes through the host. Errors are `InvalidData`, with the host's
/// message.
pub fn zstd_decompress(data: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    let capacity = u32::try_from(capacity).unwrap_or(u32::MAX);
    wit::zstd_decompress(data, capacity).map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, Error::from(e).to_string())
    })
}

/// Options for [`ParquetEncoder`].
#[derive(Debug, Clone)]
pub struct ParquetOptions {
    /// `zstd`, `snappy`, `lz4`, `gzip` or `none`.
    pub compression: String,
    /// Level where the codec has one.
    pub level: Option<i32>,
    /// Rows per row group.
    pub row_group_rows: u32,
}

/// Encodes one Parquet file natively in the host. Append the bytes each call returns to
/// the file, in order.
pub struct ParquetEncoder(wit::ParquetEncoder);

impl ParquetEncoder {
    pub fn open(schema: &Schema, options: &ParquetOptions) -> Result<Self> {
        let schema = ipc::encode_schema(schema)?;
        let options = wit::ParquetOptions {
            compression: options.compression.clone(),
            level: options.level,
            row_group_rows: options.row_group_rows,
        };
        Ok(ParquetEncoder(wit::ParquetEncoder::open(
            &schema, &options,
        )?))
    }

    pub fn write(&self, batch: &RecordBatch) -> Result<Vec<u8>> {
        Ok(self.0.write(&ipc::encode_batch(batch)?)?)
    }

    /// Like [`ParquetEncoder::write`], for a batch that is already a one-batch IPC stream
    /// of the file's schema (as a sink received it): the bytes go to the host as they are.
    pub fn write_ipc(&self, batch: &[u8]) -> Result<Vec<u8>> {
        Ok(self.0.write(batch)?)
    }

    pub fn finish(&self) -> Result<Vec<u8>> {
        Ok(self.0.finish()?)
    }
}

//! The host side of the `ingest:plugin/host` interface: logging under the plugin's name,
//! secrets by grant, native digests of whole columns (for maskers), native zstd
//! decompression (for plugins that read zstd input) and native Parquet encoding for
//! plugins that write Parquet.
//!
//! Host functions answer in two layers: the outer `wasmtime::Result` is a trap (a host
//! bug or an exhausted resource table), the inner `Result` is an error the plugin handles.

use parquet::basic::{Compression, GzipLevel, ZstdLevel};
use parquet::file::properties::WriterProperties;
use wasmtime::component::Resource;

use sha2::{Digest as _, Sha256};

use crate::plugin::bindings::host::{self, Digest, Level, ParquetOptions};
use crate::plugin::bindings::types::{self, Error};
use crate::sandbox::PluginState;
use crate::sha256x8;

impl types::Host for PluginState {}

impl host::Host for PluginState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let allowed = self.log_budget.take();
        let plugin = &*self.label;
        if !allowed {
            return Ok(());
        }
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
        Ok(())
    }

    fn secret(&mut self, name: String) -> wasmtime::Result<Result<String, Error>> {
        Ok(match self.secrets.get(&name) {
            Some(value) => Ok(value.clone()),
            None => Err(Error::AccessDenied(format!(
                "secret `{name}` is not granted to {}; add it to the plugin's `secrets` list in pipeline.toml",
                self.label
            ))),
        })
    }

    fn progress(
        &mut self,
        stream: String,
        split: String,
        read_bytes: u64,
        total_bytes: u64,
    ) -> wasmtime::Result<()> {
        crate::metrics::get().progress(&stream, &split, read_bytes, total_bytes);
        Ok(())
    }

    fn checkpoints(&mut self) -> wasmtime::Result<host::CheckpointPolicy> {
        Ok(self.checkpoint)
    }

    fn writer_tag(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(self.writer_tag.clone())
    }

    fn digest_hex(
        &mut self,
        algorithm: Digest,
        key: Vec<u8>,
        values: Vec<u8>,
        offsets: Vec<u32>,
    ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        Ok(digest_hex(algorithm, &key, &values, &offsets).map_err(Error::Fatal))
    }

    fn zstd_decompress(
        &mut self,
        data: Vec<u8>,
        capacity: u32,
    ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        // The result is copied into the plugin's memory, which cannot hold more than this.
        let capacity = (capacity as usize).min(self.granted.memory_bytes);
        let decompressor = match &mut self.zstd {
            Some(decompressor) => decompressor,
            slot => match zstd::bulk::Decompressor::new() {
                Ok(decompressor) => slot.insert(decompressor),
                Err(e) => return Ok(Err(Error::Fatal(format!("zstd-decompress: {e}")))),
            },
        };
        Ok(zstd_decompress(decompressor, &data, capacity).map_err(Error::Data))
    }
}

/// Decompresses `data` (zstd frames back to back) into at most `capacity` bytes. When the
/// frames record their size, exactly that is allocated, and a larger size is refused before
/// any work; otherwise `capacity` is reserved (not touched) and the output must fit it.
pub fn zstd_decompress(
    decompressor: &mut zstd::bulk::Decompressor<'static>,
    data: &[u8],
    capacity: usize,
) -> Result<Vec<u8>, String> {
    decompressor
        .decompress(data, capacity)
        .map_err(|e| format!("zstd-decompress: {} bytes of input: {e}", data.len()))
}

/// Block size of SHA-256, the HMAC pad length.
const SHA256_BLOCK: usize = 64;

/// The lowercase hex digest of every value `offsets` delimits in `values`, back to back.
pub fn digest_hex(
    algorithm: Digest,
    key: &[u8],
    values: &[u8],
    offsets: &[u32],
) -> Result<Vec<u8>, String> {
    let n = offsets.len().saturating_sub(1);
    if let Some(w) = offsets.windows(2).position(|w| w[0] > w[1]) {
        return Err(format!(
            "digest-hex: offset {w} ({}) is past offset {} ({})",
            offsets[w],
            w + 1,
            offsets[w + 1]
        ));
    }
    if let Some(&last) = offsets.last() {
        if last as usize > values.len() {
            return Err(format!(
                "digest-hex: the last offset ({last}) is past the end of the {} value bytes",
                values.len()
            ));
        }
    }
    let value = |i: usize| &values[offsets[i] as usize..offsets[i + 1] as usize];
    let mut digests = vec![[0u8; 32]; n];
    match algorithm {
        Digest::Sha256 => sha256x8::digests(&sha256x8::IV, 0, n, value, &mut digests),
        Digest::HmacSha256 => {
            if key.is_empty() {
                return Err("digest-hex: hmac-sha256 needs a key that is not empty".into());
            }
            // RFC 2104: a long key is hashed first; the padded key is absorbed once into the
            // inner and outer states, which every value continues from.
            let mut block = [0u8; SHA256_BLOCK];
            if key.len() > SHA256_BLOCK {
                block[..32].copy_from_slice(&Sha256::digest(key));
            } else {
                block[..key.len()].copy_from_slice(key);
            }
            let padded = |byte: u8| sha256x8::absorb(sha256x8::IV, &block.map(|b| b ^ byte));
            let (inner, outer) = (padded(0x36), padded(0x5c));
            let mut macs = vec![[0u8; 32]; n];
            sha256x8::digests(&inner, 64, n, value, &mut macs);
            sha256x8::digests(&outer, 64, n, |i| &macs[i], &mut digests);
        }
    }
    let mut out = vec![0u8; n * 64];
    for (digest, hex) in digests.iter().zip(out.chunks_exact_mut(64)) {
        hex_into(digest, hex);
    }
    Ok(out)
}

fn hex_into(digest: &[u8], out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in digest.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = HEX[(byte >> 4) as usize];
        pair[1] = HEX[(byte & 15) as usize];
    }
}

/// A Parquet file being encoded for a plugin (see [`crate::encoder`]).
pub type ParquetEncoder = crate::encoder::Encoder;

fn compression(options: &ParquetOptions) -> Result<Compression, Error> {
    let bad_level = |e: parquet::errors::ParquetError| {
        Error::InvalidConfig(format!(
            "compression level {:?} is not valid for {}: {e}",
            options.level, options.compression
        ))
    };
    Ok(match options.compression.as_str() {
        "zstd" => {
            Compression::ZSTD(ZstdLevel::try_new(options.level.unwrap_or(3)).map_err(bad_level)?)
        }
        "snappy" => Compression::SNAPPY,
        "lz4" => Compression::LZ4_RAW,
        "gzip" => Compression::GZIP(
            GzipLevel::try_new(options.level.unwrap_or(6) as u32).map_err(bad_level)?,
        ),
        "none" | "uncompressed" => Compression::UNCOMPRESSED,
        other => {
            return Err(Error::InvalidConfig(format!(
                "unknown Parquet compression `{other}`; accepted: zstd, snappy, lz4, gzip, none"
            )))
        }
    })
}

/// Schemas (with options) whose Parquet tuning a plugin instance keeps at most.
const TUNINGS_KEPT: usize = 64;

impl PluginState {
    /// The tuning shared by this instance's files of `schema` and `options` (see
    /// [`crate::encoder::Tuning`]); `None` once [`TUNINGS_KEPT`] are kept.
    fn parquet_tuning(
        &mut self,
        schema: &arrow::datatypes::SchemaRef,
        options: &ParquetOptions,
    ) -> Option<crate::encoder::Tuning> {
        let key = format!(
            "{schema:?}|{}|{:?}|{}",
            options.compression, options.level, options.row_group_rows
        );
        if let Some(tuning) = self.parquet_tunings.get(&key) {
            return Some(tuning.clone());
        }
        if self.parquet_tunings.len() >= TUNINGS_KEPT {
            return None;
        }
        let tuning = crate::encoder::Tuning::default();
        self.parquet_tunings.insert(key, tuning.clone());
        Some(tuning)
    }
}

impl host::HostParquetEncoder for PluginState {
    fn open(
        &mut self,
        schema: Vec<u8>,
        options: ParquetOptions,
    ) -> wasmtime::Result<Result<Resource<ParquetEncoder>, Error>> {
        let compression = match compression(&options) {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let schema = match crate::batch::decode_schema(&schema) {
            Ok(schema) => schema,
            Err(e) => {
                return Ok(Err(Error::Fatal(format!(
                    "parquet-encoder.open: malformed Arrow IPC schema: {e}"
                ))))
            }
        };
        let props = WriterProperties::builder()
            .set_compression(compression)
            .build();
        let tuning = self.parquet_tuning(&schema, &options);
        let options = crate::encoder::FileOptions {
            props,
            row_group_rows: options.row_group_rows as usize,
            zstd_level_per_column: matches!(compression, Compression::ZSTD(_))
                && options.level.is_none(),
            tuning,
        };
        match ParquetEncoder::open(schema, options) {
            Ok(encoder) => Ok(Ok(self.table.push(encoder)?)),
            Err(e) => Ok(Err(Error::Fatal(format!("parquet-encoder.open: {e}")))),
        }
    }

    fn write(
        &mut self,
        encoder: Resource<ParquetEncoder>,
        batch: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        let encoder = self.table.get_mut(&encoder)?;
        let batch = match crate::batch::decode_owned(batch) {
            Ok(Some(batch)) => batch,
            Ok(None) => return Ok(Ok(Vec::new())),
            Err(e) => {
                return Ok(Err(Error::Fatal(format!(
                    "parquet-encoder.write: malformed Arrow IPC: {e}"
                ))))
            }
        };
        Ok(encoder
            .write(batch)
            .map_err(|e| Error::Fatal(format!("parquet-encoder.write: {e}"))))
    }

    fn finish(
        &mut self,
        encoder: Resource<ParquetEncoder>,
    ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        let encoder = self.table.get_mut(&encoder)?;
        Ok(encoder
            .finish()
            .map_err(|e| Error::Fatal(format!("parquet-encoder.finish: {e}"))))
    }

    fn drop(&mut self, encoder: Resource<ParquetEncoder>) -> wasmtime::Result<()> {
        self.table.delete(encoder)?;
        Ok(())
    }
}

/// Link the host interface and WASI into `linker`; every world imports the same set.
pub fn add_to_linker(
    linker: &mut wasmtime::component::Linker<PluginState>,
) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    // Outgoing HTTP, allowed per plugin by its `http` grants (see `sandbox::HttpPolicy`).
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    host::add_to_linker::<PluginState, wasmtime::component::HasSelf<PluginState>>(linker, |s| s)?;
    types::add_to_linker::<PluginState, wasmtime::component::HasSelf<PluginState>>(linker, |s| s)?;
    // Sources only import it; it does nothing without a `listen` grant.
    crate::plugin::bindings::webhook::add_to_linker::<
        PluginState,
        wasmtime::component::HasSelf<PluginState>,
    >(linker, |s| s)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decompressor() -> zstd::bulk::Decompressor<'static> {
        zstd::bulk::Decompressor::new().unwrap()
    }

    #[test]
    fn zstd_decompress_reads_frames_back_to_back_at_any_level() {
        let first = b"order,amount\n".repeat(1000);
        let second = b"42,9.99\n".repeat(3000);
        let mut data = zstd::bulk::compress(&first, 1).unwrap();
        data.extend(zstd::bulk::compress(&second, 19).unwrap());
        let out = zstd_decompress(&mut decompressor(), &data, 1 << 20).unwrap();
        assert_eq!(out, [first, second].concat());
    }

    #[test]
    fn zstd_decompress_refuses_output_beyond_the_capacity_before_decoding() {
        let data = zstd::bulk::compress(&[7u8; 10_000], 3).unwrap();
        let error = zstd_decompress(&mut decompressor(), &data, 9_999).unwrap_err();
        assert!(error.contains("10000 bytes needed, 9999 given"), "{error}");
    }

    #[test]
    fn zstd_decompress_names_input_that_is_not_zstd_or_cut_short() {
        let error = zstd_decompress(&mut decompressor(), b"not zstd at all", 100).unwrap_err();
        assert!(error.contains("15 bytes of input"), "{error}");
        let data = zstd::bulk::compress(&b"a value worth keeping".repeat(50), 3).unwrap();
        let truncated = &data[..data.len() - 3];
        assert!(zstd_decompress(&mut decompressor(), truncated, 2000).is_err());
    }
    use hmac::{Hmac, Mac};

    fn column(values: &[&str]) -> (Vec<u8>, Vec<u32>) {
        let mut data = Vec::new();
        let mut offsets = vec![0];
        for v in values {
            data.extend_from_slice(v.as_bytes());
            offsets.push(data.len() as u32);
        }
        (data, offsets)
    }

    #[test]
    fn digests_agree_with_the_reference_implementations() {
        // Every length around the one-block limit, more values than one batch of eight.
        let mut values: Vec<String> = (0..80)
            .map(|n| "é".repeat(n / 2) + &"x".repeat(n % 2))
            .collect();
        values.extend(["a@example.org".to_string(), "x".repeat(200)]);
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        let (data, offsets) = column(&values);
        let sha = digest_hex(Digest::Sha256, b"", &data, &offsets).unwrap();
        for key in [b"k".to_vec(), vec![7u8; 64], vec![9u8; 100]] {
            let mac = digest_hex(Digest::HmacSha256, &key, &data, &offsets).unwrap();
            for (i, v) in values.iter().enumerate() {
                let want = hex::encode(Sha256::digest(v.as_bytes()));
                assert_eq!(&sha[i * 64..(i + 1) * 64], want.as_bytes());
                let mut reference = Hmac::<Sha256>::new_from_slice(&key).unwrap();
                reference.update(v.as_bytes());
                let want = hex::encode(reference.finalize().into_bytes());
                assert_eq!(&mac[i * 64..(i + 1) * 64], want.as_bytes(), "key {key:?}");
            }
        }
    }

    #[test]
    fn digest_refuses_bad_offsets_and_an_empty_key() {
        let (data, _) = column(&["abc"]);
        assert!(digest_hex(Digest::Sha256, b"", &data, &[0, 4]).is_err());
        assert!(digest_hex(Digest::Sha256, b"", &data, &[2, 1]).is_err());
        assert!(digest_hex(Digest::HmacSha256, b"", &data, &[0, 3]).is_err());
        assert!(digest_hex(Digest::Sha256, b"", &data, &[])
            .unwrap()
            .is_empty());
    }
}

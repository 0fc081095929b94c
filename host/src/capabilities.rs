//! The host side of the `ingest:plugin/host` interface: logging under the plugin's name,
//! secrets by grant, and native Parquet encoding for plugins that write Parquet.
//!
//! Host functions answer in two layers: the outer `wasmtime::Result` is a trap (a host
//! bug or an exhausted resource table), the inner `Result` is an error the plugin handles.

use std::io::Cursor;
use std::sync::{Arc, Mutex};

use arrow::ipc::reader::StreamReader;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, GzipLevel, ZstdLevel};
use parquet::file::properties::WriterProperties;
use wasmtime::component::Resource;

use crate::plugin::bindings::host::{self, Level, ParquetOptions};
use crate::plugin::bindings::types::{self, Error};
use crate::sandbox::PluginState;

impl types::Host for PluginState {}

impl host::Host for PluginState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let (allowed, dropped) = self.log_budget.take();
        let plugin = &*self.label;
        if let Some(n) = dropped {
            tracing::warn!(plugin, "dropped {n} log lines (rate limit)");
        }
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
}

/// A Parquet file being encoded for a plugin.
pub struct ParquetEncoder {
    writer: Option<ArrowWriter<SharedBuffer>>,
    buffer: SharedBuffer,
}

/// The encoder's output, drained after every call.
#[derive(Clone, Default)]
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedBuffer {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

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

fn decode(bytes: &[u8]) -> Result<Option<arrow::record_batch::RecordBatch>, String> {
    let mut reader = StreamReader::try_new(Cursor::new(bytes), None).map_err(|e| e.to_string())?;
    reader.next().transpose().map_err(|e| e.to_string())
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
        let schema = match StreamReader::try_new(Cursor::new(&schema), None) {
            Ok(reader) => reader.schema(),
            Err(e) => {
                return Ok(Err(Error::Fatal(format!(
                    "parquet-encoder.open: malformed Arrow IPC schema: {e}"
                ))))
            }
        };
        let props = WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(options.row_group_rows.max(1) as usize))
            .build();
        let buffer = SharedBuffer::default();
        let writer = match ArrowWriter::try_new(buffer.clone(), schema, Some(props)) {
            Ok(w) => w,
            Err(e) => return Ok(Err(Error::Fatal(format!("parquet-encoder.open: {e}")))),
        };
        let encoder = ParquetEncoder {
            writer: Some(writer),
            buffer,
        };
        Ok(Ok(self.table.push(encoder)?))
    }

    fn write(
        &mut self,
        encoder: Resource<ParquetEncoder>,
        batch: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        let encoder = self.table.get_mut(&encoder)?;
        let Some(writer) = encoder.writer.as_mut() else {
            return Ok(Err(Error::Fatal(
                "parquet-encoder.write after finish".into(),
            )));
        };
        let batch = match decode(&batch) {
            Ok(Some(batch)) => batch,
            Ok(None) => return Ok(Ok(Vec::new())),
            Err(e) => {
                return Ok(Err(Error::Fatal(format!(
                    "parquet-encoder.write: malformed Arrow IPC: {e}"
                ))))
            }
        };
        if let Err(e) = writer.write(&batch) {
            return Ok(Err(Error::Fatal(format!("parquet-encoder.write: {e}"))));
        }
        Ok(Ok(encoder.buffer.take()))
    }

    fn finish(
        &mut self,
        encoder: Resource<ParquetEncoder>,
    ) -> wasmtime::Result<Result<Vec<u8>, Error>> {
        let encoder = self.table.get_mut(&encoder)?;
        let Some(writer) = encoder.writer.take() else {
            return Ok(Err(Error::Fatal(
                "parquet-encoder.finish called twice".into(),
            )));
        };
        if let Err(e) = writer.close() {
            return Ok(Err(Error::Fatal(format!("parquet-encoder.finish: {e}"))));
        }
        Ok(Ok(encoder.buffer.take()))
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
    Ok(())
}

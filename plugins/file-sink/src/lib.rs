//! `file` sink: writes each stream as Parquet, JSON Lines or CSV files under one directory,
//! optionally partitioned Hive-style, and publishes them exactly once by the host's epochs.
//!
//! - [`config`]: the config as written (parse) and as validated.
//! - [`layout`]: published and staging paths, escaping, partition values.
//! - [`writer`]: the epoch protocol (stage → prepare → commit | abort) over those paths.
//!
//! Parquet is encoded by the host (`ParquetEncoder`); the sink keeps every decision about
//! files and publishing. The component (`builtin:file`) is `file-sink-component`, which
//! exports this sink; the `s3` sink builds on the same writer.

use std::fs;

use ingest_sdk::sink::{Sink, WriteMode};
use ingest_sdk::source::StreamInfo;
use ingest_sdk::{Error, Result};

pub mod config;
pub mod layout;
pub mod writer;

use config::SinkConfig;
use writer::{is_access_error, FileWriter};

/// The sink.
pub struct FileSink;

impl Sink for FileSink {
    type Writer = FileWriter;

    fn spec() -> String {
        config::json_schema()
    }

    fn check(config: &str) -> Result<()> {
        let config = SinkConfig::from_json(config)?;
        prepare_root(&config)
    }

    fn open(config: &str, stream: StreamInfo, mode: WriteMode) -> Result<FileWriter> {
        let config = SinkConfig::from_json(config)?;
        check_mode("file", &stream.name, &mode)?;
        let tag = ingest_sdk::host::writer_tag();
        let writer =
            FileWriter::new(config, &stream.name, stream.schema)?.with_writer_tag(tag.as_deref());
        writer.claim_fence()?;
        Ok(writer)
    }
}

impl ingest_sdk::sink::Writer for FileWriter {
    fn write(&mut self, batch: ingest_sdk::RecordBatch) -> Result<()> {
        FileWriter::write(self, batch)
    }

    fn write_ipc(&mut self, batch: Vec<u8>) -> Result<Vec<ingest_sdk::Reject>> {
        FileWriter::write_ipc(self, batch)?;
        Ok(Vec::new())
    }

    fn prepare(&mut self, epoch: u64) -> Result<Vec<u8>> {
        FileWriter::prepare(self, epoch)
    }

    fn commit(&mut self, epoch: u64, token: &[u8]) -> Result<Vec<String>> {
        FileWriter::commit(self, epoch, token)
    }

    fn abort(&mut self, epoch: u64) -> Result<()> {
        FileWriter::abort(self, epoch)
    }
}

/// Only `append` is supported, by the file sink and the sinks built on it (`sink` names
/// which, for the message).
pub fn check_mode(sink: &str, stream: &str, mode: &WriteMode) -> Result<()> {
    let name = match mode {
        WriteMode::Append => return Ok(()),
        WriteMode::Overwrite => "overwrite",
        WriteMode::Upsert(_) => "upsert",
    };
    Err(Error::config(format!(
        "{sink} sink, stream `{stream}`: write mode `{name}` is not supported; the {sink} sink \
         supports write mode `append` only"
    )))
}

/// The output directory and its staging area exist and can be written: creating
/// `<path>/.staging` proves both (a read-only grant refuses it).
pub fn prepare_root(config: &SinkConfig) -> Result<()> {
    let staging = config.root.join(layout::STAGING_DIR);
    fs::create_dir_all(&staging).map_err(|e| {
        let message = format!(
            "file sink: cannot create the output directory `{}` (and its staging area `{}`): \
             {e}",
            config.root.display(),
            staging.display()
        );
        if is_access_error(&e) || e.kind() == std::io::ErrorKind::NotFound {
            Error::AccessDenied(format!(
                "{message}; `{}` must be granted read-write in the sink's `fs` grants",
                config.root.display()
            ))
        } else {
            Error::fatal(message)
        }
    })
}

#[cfg(test)]
mod tests;

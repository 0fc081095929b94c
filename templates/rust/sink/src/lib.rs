//! {{name}}: a sink that writes each stream as JSON Lines files under `path` (a directory the
//! pipeline grants read-write), one file per epoch. Rows are staged in a hidden file,
//! `prepare` makes it durable, `commit` publishes it by rename — a repeated commit changes
//! nothing — and `abort` deletes it.
//!
//! Build with `./build.sh`; test the logic natively with `cargo test`.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use arrow_array::RecordBatch;
use ingest_sdk::sink::{Sink, WriteMode, Writer};
use ingest_sdk::source::StreamInfo;
use ingest_sdk::{config, text, Error, Result};
use schemars::JsonSchema;
use serde::Deserialize;

/// The plugin's `[sink.config]` table.
/// Its JSON Schema, derived from this struct (doc comments become descriptions), is the
/// plugin's `spec()`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The directory files go to, as granted in `fs`.
    pub path: String,
}

/// An I/O error as the host should see it: a missing grant, or worth a retry.
fn io<'a>(what: &'a str, path: &'a std::path::Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| match e.kind() {
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::NotFound => Error::AccessDenied(
            format!("cannot {what} {}: {e}; grant the directory with fs = [\"DIR:rw\"]", path.display()),
        ),
        _ => Error::Transient {
            message: format!("cannot {what} {}: {e}", path.display()),
            retry_after_ms: None,
        },
    }
}

pub struct JsonLines;

impl Sink for JsonLines {
    type Writer = JsonWriter;

    fn spec() -> String {
        config::spec::<Config>()
    }

    fn check(config: &str) -> Result<()> {
        let config: Config = config::parse(config)?;
        let dir = PathBuf::from(&config.path);
        fs::create_dir_all(&dir).map_err(io("create", &dir))
    }

    fn open(config: &str, stream: StreamInfo, mode: WriteMode) -> Result<JsonWriter> {
        if !matches!(mode, WriteMode::Append) {
            return Err(Error::config("this sink only appends; remove `write_mode`"));
        }
        let config: Config = config::parse(config)?;
        let dir = PathBuf::from(&config.path).join(&stream.name);
        fs::create_dir_all(dir.join(".staging")).map_err(io("create", &dir))?;
        Ok(JsonWriter {
            dir,
            staged: None,
        })
    }
}

pub struct JsonWriter {
    dir: PathBuf,
    staged: Option<BufWriter<File>>,
}

impl JsonWriter {
    fn staging(&self, epoch: u64) -> PathBuf {
        self.dir.join(".staging").join(format!("epoch-{epoch:010}.jsonl"))
    }
    fn published(&self, epoch: u64) -> PathBuf {
        self.dir.join(format!("part-{epoch:010}.jsonl"))
    }
    fn open_file(&self) -> PathBuf {
        self.dir.join(".staging").join("open.jsonl")
    }
}

impl Writer for JsonWriter {
    fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if self.staged.is_none() {
            let path = self.open_file();
            let file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&path)
                .map_err(io("create", &path))?;
            self.staged = Some(BufWriter::new(file));
        }
        let columns = batch
            .columns()
            .iter()
            .map(text::to_text)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(Error::fatal)?;
        let schema = batch.schema();
        let out = self.staged.as_mut().expect("opened above");
        for row in 0..batch.num_rows() {
            let mut object = serde_json::Map::new();
            for (field, column) in schema.fields().iter().zip(&columns) {
                let value = if arrow_array::Array::is_null(column, row) {
                    serde_json::Value::Null
                } else {
                    serde_json::Value::String(column.value(row).to_string())
                };
                object.insert(field.name().clone(), value);
            }
            serde_json::to_writer(&mut *out, &object).map_err(|e| Error::fatal(e.to_string()))?;
            out.write_all(b"\n").map_err(|e| Error::fatal(e.to_string()))?;
        }
        Ok(())
    }

    fn prepare(&mut self, epoch: u64) -> Result<Vec<u8>> {
        let staged = self.staging(epoch);
        match self.staged.take() {
            Some(out) => {
                let file = out.into_inner().map_err(|e| Error::fatal(e.to_string()))?;
                file.sync_all().map_err(io("sync", &staged))?;
                fs::rename(self.open_file(), &staged).map_err(io("stage", &staged))?;
                Ok(b"1".to_vec())
            }
            // An epoch without rows publishes nothing.
            None => Ok(b"0".to_vec()),
        }
    }

    fn commit(&mut self, epoch: u64, token: &[u8]) -> Result<Vec<String>> {
        if token != b"1" {
            return Ok(Vec::new());
        }
        let (staged, published) = (self.staging(epoch), self.published(epoch));
        if staged.exists() {
            fs::rename(&staged, &published).map_err(io("publish", &published))?;
        } else if !published.exists() {
            return Err(Error::fatal(format!(
                "epoch {epoch} was prepared but {} is gone",
                staged.display()
            )));
        }
        Ok(vec![published.display().to_string()])
    }

    fn abort(&mut self, epoch: u64) -> Result<()> {
        self.staged = None;
        let _ = fs::remove_file(self.open_file());
        let _ = fs::remove_file(self.staging(epoch));
        Ok(())
    }
}

// Exported only in the component; the native build is for `cargo test`.
#[cfg(target_arch = "wasm32")]
ingest_sdk::export_sink!(JsonLines);

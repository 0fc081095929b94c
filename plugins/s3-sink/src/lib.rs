//! The built-in `s3` sink: the file sink's lake layout (Parquet, JSON Lines or CSV, Hive
//! partitions) on S3-compatible storage, published exactly once by the host's epochs.
//!
//! - **Write.** Rows go to the file sink's writer, which encodes them (Parquet by the host's
//!   encoder) into files under the local `staging` directory.
//! - **Prepare.** The epoch's files are staged locally as the file sink stages them, then
//!   each is uploaded to its final key as a multipart upload that is **not** completed:
//!   nothing is visible in the bucket yet. Uploads an earlier attempt at the same epoch
//!   left are aborted first. The token holds every key, upload id and part ETag.
//! - **Commit.** Each upload is completed with `If-None-Match: *`. A commit repeated after
//!   a crash finds the object there already (412) or the upload gone with the object made:
//!   it creates nothing twice. Then the local staged files are removed.
//! - **Abort.** The epoch's uploads in progress are listed by their keys
//!   (`part-<epoch>-…`) and aborted, with the local files.
//!
//! Credentials come from granted secrets; every request is signed (SigV4) in the plugin and
//! sent over wasi:http, which the host allows only under the sink's `http` grant.

pub mod config;

use std::io::Read;
use std::path::PathBuf;

use file_sink::writer::{FileWriter, Manifest};
use ingest_sdk::sink::{Sink, WriteMode};
use ingest_sdk::source::StreamInfo;
use ingest_sdk::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::config::S3Config;
use s3_client::Bucket;

/// The token of a prepared epoch.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prepared {
    /// The file sink's manifest of the locally staged files.
    pub staging: String,
    pub uploads: Vec<Upload>,
}

/// One object being uploaded.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upload {
    pub key: String,
    pub upload_id: String,
    pub etags: Vec<String>,
    pub rows: u64,
    pub bytes: u64,
}

pub struct S3Sink;

impl Sink for S3Sink {
    type Writer = S3Writer;

    fn spec() -> String {
        config::spec()
    }

    fn check(config: &str) -> Result<()> {
        let cfg = S3Config::parse(config)?;
        file_sink::prepare_root(&cfg.layout)?;
        cfg.at.bucket()?.check()
    }

    fn open(config: &str, stream: StreamInfo, mode: WriteMode) -> Result<S3Writer> {
        let cfg = S3Config::parse(config)?;
        file_sink::check_mode("s3", &stream.name, &mode)?;
        let files = FileWriter::new(cfg.layout.clone(), &stream.name, stream.schema)?
            .with_writer_tag(ingest_sdk::host::writer_tag().as_deref());
        Ok(S3Writer {
            bucket: cfg.at.bucket()?,
            root: cfg.layout.root.clone(),
            stream: stream.name,
            cfg,
            files,
        })
    }
}

/// Writes one stream.
pub struct S3Writer {
    cfg: S3Config,
    bucket: Bucket,
    files: FileWriter,
    /// The local staging directory.
    root: PathBuf,
    stream: String,
}

impl S3Writer {
    /// Abort the uploads an attempt at `epoch` left in the stream's part of the bucket.
    fn abort_uploads(&self, epoch: u64) -> Result<()> {
        let prefix = format!("{}{}/", self.cfg.prefix, self.stream);
        let mark = format!("part-{epoch:010}-");
        for (key, id) in self.bucket.uploads(&prefix)? {
            let name = key.rsplit('/').next().unwrap_or_default();
            if name.starts_with(&mark) {
                self.bucket.abort(&key, &id)?;
            }
        }
        Ok(())
    }

    /// Upload one staged file as a multipart upload, not completed.
    fn upload(&self, key: &str, path: &std::path::Path) -> Result<Vec<String>> {
        let id = self.bucket.create_upload(key)?;
        let mut file = std::fs::File::open(path)
            .map_err(|e| Error::fatal(format!("s3 sink: reading `{}`: {e}", path.display())))?;
        let mut etags = Vec::new();
        loop {
            let mut part = Vec::with_capacity(self.cfg.part_bytes);
            (&mut file)
                .take(self.cfg.part_bytes as u64)
                .read_to_end(&mut part)
                .map_err(|e| Error::fatal(format!("s3 sink: reading `{}`: {e}", path.display())))?;
            // An empty file still needs its one (empty) part.
            if part.is_empty() && !etags.is_empty() {
                break;
            }
            let last = part.len() < self.cfg.part_bytes;
            etags.push(
                self.bucket
                    .upload_part(key, &id, etags.len() as u32 + 1, part)?,
            );
            if last {
                break;
            }
        }
        Ok(std::iter::once(id).chain(etags).collect())
    }
}

impl ingest_sdk::sink::Writer for S3Writer {
    fn write(&mut self, batch: ingest_sdk::RecordBatch) -> Result<()> {
        self.files.write(batch)
    }

    fn write_ipc(&mut self, batch: Vec<u8>) -> Result<Vec<ingest_sdk::Reject>> {
        self.files.write_ipc(batch)?;
        Ok(Vec::new())
    }

    fn prepare(&mut self, epoch: u64) -> Result<Vec<u8>> {
        let staged = self.files.prepare(epoch)?;
        self.abort_uploads(epoch)?;
        if staged.is_empty() {
            return Ok(Vec::new());
        }
        let manifest: Manifest = serde_json::from_slice(&staged)
            .map_err(|e| Error::fatal(format!("s3 sink: the staged manifest: {e}")))?;
        let mut uploads = Vec::with_capacity(manifest.files.len());
        for entry in &manifest.files {
            let key = format!("{}{}", self.cfg.prefix, entry.published);
            let mut ids = self
                .upload(&key, &self.root.join(&entry.staged))?
                .into_iter();
            uploads.push(Upload {
                key,
                upload_id: ids.next().expect("an upload id"),
                etags: ids.collect(),
                rows: entry.rows,
                bytes: entry.bytes,
            });
        }
        serde_json::to_vec(&Prepared {
            staging: manifest.staging,
            uploads,
        })
        .map_err(|e| Error::fatal(format!("s3 sink: encoding the token: {e}")))
    }

    fn commit(&mut self, epoch: u64, token: &[u8]) -> Result<Vec<String>> {
        if token.is_empty() {
            return Ok(Vec::new());
        }
        let prepared: Prepared = serde_json::from_slice(token).map_err(|e| {
            Error::fatal(format!(
                "s3 sink, epoch {epoch}: the token is not this sink's: {e}"
            ))
        })?;
        let mut names = Vec::with_capacity(prepared.uploads.len());
        for u in &prepared.uploads {
            self.bucket.complete(&u.key, &u.upload_id, &u.etags)?;
            names.push(self.bucket.url_of(&u.key));
        }
        let local = self.root.join(&prepared.staging);
        match std::fs::remove_dir_all(&local) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::fatal(format!(
                    "s3 sink: removing the committed epoch's local files `{}`: {e}",
                    local.display()
                )))
            }
        }
        Ok(names)
    }

    fn abort(&mut self, epoch: u64) -> Result<()> {
        self.files.abort(epoch)?;
        self.abort_uploads(epoch)
    }
}

// Exported only in the component: natively (unit tests) the export names cannot link.
#[cfg(target_family = "wasm")]
ingest_sdk::export_sink!(S3Sink);

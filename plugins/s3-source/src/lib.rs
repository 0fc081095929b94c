//! The built-in `s3` source: the objects under a bucket's prefix whose keys match a glob,
//! read as one stream with the file source's formats (CSV, JSON Lines, Parquet; `.gz` and
//! `.zst` text is inflated on the way).
//!
//! - **Splits.** One per object, in key order. A split is the object's key; its descriptor
//!   holds the ETag and size it was listed with.
//! - **Versions.** The position carries the ETag of the version read. A version read to
//!   its end is never read again (`open` returns at once, nothing fetched); an object
//!   whose ETag changed is a new version, read from its start.
//! - **Parquet** objects are read where they lie, by ranged GETs (see [`ranged`]): the
//!   footer, then each row group as it is reached; a resumed read fetches only the row
//!   groups from its position on.
//! - **Text.** A CSV or JSON Lines object is fetched in one GET (or ranges of
//!   `range_bytes`), each only while the object is still the version listed (`If-Match`),
//!   into a local copy under `staging` (granted read-write), which the file source's
//!   reader reads. It is removed once the version's end is committed (at the latest when
//!   the next run finds it read), and copies of versions no longer listed are removed when
//!   a run lists the bucket. A version that changes while it is fetched is a transient
//!   error: the run's retry lists the bucket again.

pub mod config;
pub mod glob;
pub mod ranged;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::RecordBatch;
use file_source::parquet::{Input, ParquetReader};
use file_source::FileSource;
use ingest_sdk::source::{Chunk, Reader, Source, Split, StreamInfo, SyncMode};
use ingest_sdk::{Error, Result};
use s3_client::{Bucket, Object};
use serde::{Deserialize, Serialize};

use crate::config::SourceConfig;
use crate::ranged::ObjectRanges;

/// Where reading an object resumes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Position {
    /// The version being read.
    pub etag: String,
    /// The version was read to its end.
    #[serde(default)]
    pub done: bool,
    /// The file source's position in the local copy.
    #[serde(default)]
    pub file: Option<serde_json::Value>,
}

/// What a split's descriptor holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Descriptor {
    etag: String,
    size: u64,
}

pub struct S3Source;

/// Whether `key` is read where it lies, by ranged GETs (Parquet, not compressed as a
/// whole), rather than from a local copy.
fn read_in_place(cfg: &SourceConfig, key: &str) -> bool {
    cfg.extension == "parquet" && config::Codec::of(key) == config::Codec::None
}

/// The objects the config names, in key order.
fn objects(cfg: &SourceConfig, bucket: &Bucket) -> Result<Vec<Object>> {
    Ok(bucket
        .list(&cfg.prefix)?
        .into_iter()
        .filter(|o| glob::matches(&cfg.glob, &o.key[cfg.prefix.len()..]))
        .collect())
}

/// Where the local copy of `object`'s version lives: its key's digest and its ETag in the
/// name (never the key itself, which may hold anything), the format's extension kept.
fn local_copy(cfg: &SourceConfig, key: &str, etag: &str) -> PathBuf {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.as_bytes());
    let mut name = String::new();
    for b in &digest[..12] {
        name.push_str(&format!("{b:02x}"));
    }
    let tag: String = etag
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(40)
        .collect();
    cfg.staging
        .join("objects")
        .join(format!("{name}-{tag}.{}", cfg.extension))
}

/// Fetch `key` (the version `etag`, `size` bytes) into its local copy, inflated when the key
/// says so; nothing to do when the copy is there.
fn fetch(cfg: &SourceConfig, bucket: &Bucket, key: &str, etag: &str, size: u64) -> Result<PathBuf> {
    let dest = local_copy(cfg, key, etag);
    if dest.exists() {
        return Ok(dest);
    }
    let io = |what: &str, path: &Path, e: std::io::Error| {
        Error::fatal(format!(
            "s3 source: cannot {what} `{}`: {e}",
            path.display()
        ))
    };
    let dir = dest.parent().expect("under staging");
    std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
    let raw = dest.with_extension("download");
    {
        let file = std::fs::File::create(&raw).map_err(|e| io("create", &raw, e))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        // Whole objects in one GET each unless `range_bytes` says otherwise, written to the
        // copy as they arrive.
        let step = cfg.range_bytes.unwrap_or(u64::MAX);
        let mut at = 0;
        while at < size {
            let end = at.saturating_add(step).min(size);
            bucket.read_range_into(key, etag, at, end, &mut out)?;
            at = end;
        }
        let out = out
            .into_inner()
            .map_err(|e| io("write", &raw, e.into_error()))?;
        out.sync_all().map_err(|e| io("fsync", &raw, e))?;
    }
    let inflate = |decoded: std::io::Result<u64>, codec: &str| -> Result<()> {
        decoded.map(|_| ()).map_err(|e| {
            Error::data(format!(
                "{}: the {codec} stream cannot be read to its end ({e}): the object is cut short or not {codec}",
                bucket.url_of(key)
            ))
        })
    };
    match config::Codec::of(key) {
        config::Codec::None => {
            std::fs::rename(&raw, &dest).map_err(|e| io("rename", &raw, e))?;
        }
        codec => {
            let input = std::fs::File::open(&raw).map_err(|e| io("open", &raw, e))?;
            let tmp = dest.with_extension("inflating");
            let mut out = std::fs::File::create(&tmp).map_err(|e| io("create", &tmp, e))?;
            match codec {
                config::Codec::Gzip => inflate(
                    std::io::copy(
                        &mut flate2::read::MultiGzDecoder::new(std::io::BufReader::new(input)),
                        &mut out,
                    ),
                    "gzip",
                )?,
                config::Codec::Zstd => {
                    file_source::use_host_zstd();
                    let decoded = zstd::decode_all(std::io::BufReader::new(input))
                        .and_then(|bytes| out.write_all(&bytes).map(|()| bytes.len() as u64));
                    inflate(decoded, "zstd")?
                }
                config::Codec::None => unreachable!("handled above"),
            }
            out.sync_all().map_err(|e| io("fsync", &tmp, e))?;
            std::fs::rename(&tmp, &dest).map_err(|e| io("rename", &tmp, e))?;
            let _ = std::fs::remove_file(&raw);
        }
    }
    Ok(dest)
}

/// Remove the local copies of versions no longer listed (replaced or deleted objects) and
/// downloads left unfinished; what cannot be removed stays for the next run.
fn remove_stale_copies(cfg: &SourceConfig, listed: &[Object]) {
    let keep: std::collections::BTreeSet<PathBuf> = listed
        .iter()
        .map(|o| local_copy(cfg, &o.key, &o.etag))
        .collect();
    let Ok(entries) = std::fs::read_dir(cfg.staging.join("objects")) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !keep.contains(&path) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// How often `discover` lists again when the first object changes while it is read.
const DISCOVER_TRIES: u32 = 3;

/// The stream, with the schema of the first object listed.
fn discover_first(cfg: &SourceConfig) -> Result<Vec<StreamInfo>> {
    let bucket = cfg.bucket()?;
    let Some(first) = objects(cfg, &bucket)?.into_iter().next() else {
        return Err(Error::config(format!(
            "no object under s3://{}/{} matches `glob = {:?}`: the schema is read from the first one",
            cfg.at.bucket, cfg.prefix, cfg.glob
        )));
    };
    if read_in_place(cfg, &first.key) {
        let url = bucket.url_of(&first.key);
        let ranges = ObjectRanges::new(
            bucket,
            &first.key,
            &first.etag,
            first.size,
            cfg.group_range_bytes(),
        );
        let ranges = Arc::new(ranges);
        let schema = file_source::parquet::schema_of(Input::new(ranges.clone()), &url)
            .map_err(|e| ranges.take_error().unwrap_or(e))?;
        return Ok(vec![StreamInfo {
            name: cfg.stream.clone(),
            schema,
            primary_key: Vec::new(),
            cursor_field: None,
            sync_modes: vec![SyncMode::FullRefresh, SyncMode::Incremental],
        }]);
    }
    let local = fetch(cfg, &bucket, &first.key, &first.etag, first.size)?;
    FileSource::discover(&cfg.file_config(&local))
}

impl Source for S3Source {
    type Reader = S3Reader;

    fn spec() -> String {
        config::spec()
    }

    fn check(config: &str) -> Result<()> {
        let cfg = SourceConfig::parse(config)?;
        cfg.bucket()?.check()
    }

    fn discover(config: &str) -> Result<Vec<StreamInfo>> {
        let cfg = SourceConfig::parse(config)?;
        // The first object may be replaced while its schema is read: list again, a few
        // times, rather than fail the run before it starts.
        let mut tries = 0;
        loop {
            tries += 1;
            match discover_first(&cfg) {
                Err(Error::Transient { .. }) if tries < DISCOVER_TRIES => continue,
                result => return result,
            }
        }
    }

    fn splits(config: &str, stream: &str) -> Result<Vec<Split>> {
        let cfg = SourceConfig::parse(config)?;
        ingest_sdk::source::check_stream("s3", &cfg.stream, stream)?;
        let bucket = cfg.bucket()?;
        let objects = objects(&cfg, &bucket)?;
        remove_stale_copies(&cfg, &objects);
        Ok(objects
            .into_iter()
            .map(|o| Split {
                descriptor: serde_json::to_vec(&Descriptor {
                    etag: o.etag,
                    size: o.size,
                })
                .expect("a descriptor serializes"),
                id: o.key,
            })
            .collect())
    }

    fn open(
        config: &str,
        stream: &str,
        split: Split,
        position: Option<Vec<u8>>,
    ) -> Result<S3Reader> {
        let cfg = SourceConfig::parse(config)?;
        ingest_sdk::source::check_stream("s3", &cfg.stream, stream)?;
        let object: Descriptor = serde_json::from_slice(&split.descriptor).map_err(|e| {
            Error::fatal(format!(
                "split `{}`: not this source's descriptor: {e}",
                split.id
            ))
        })?;
        let at: S3Position = ingest_sdk::source::resume_at(stream, position)?;
        if at.etag == object.etag && at.done {
            // Read and committed: its local copy, if the reader's ack did not get to it.
            let _ = std::fs::remove_file(local_copy(&cfg, &split.id, &object.etag));
            return Ok(S3Reader::Done);
        }
        // A new version starts from its beginning.
        let resume = if at.etag == object.etag {
            at.file
        } else {
            None
        };
        let bucket = cfg.bucket()?;
        if read_in_place(&cfg, &split.id) {
            let url = bucket.url_of(&split.id);
            let ranges = Arc::new(ObjectRanges::new(
                bucket,
                &split.id,
                &object.etag,
                object.size,
                cfg.group_range_bytes(),
            ));
            let input = Input::new(ranges.clone());
            let resume = resume.map(|v| v.to_string().into_bytes());
            let reader = ParquetReader::open_input(input, &url, None, resume.as_deref())
                .map_err(|e| ranges.take_error().unwrap_or(e))?;
            let schema = reader.schema();
            return Ok(S3Reader::Reading {
                from: Origin::InPlace {
                    reader: Box::new(reader),
                    ranges,
                },
                etag: object.etag,
                schema: Some(schema),
                ended: false,
            });
        }
        let local = fetch(&cfg, &bucket, &split.id, &object.etag, object.size)?;
        let file_config = cfg.file_config(&local);
        let mut file_splits = FileSource::splits(&file_config, stream)?;
        if file_splits.len() != 1 {
            return Err(Error::fatal(format!(
                "{}: the local copy came out as {} splits",
                bucket.url_of(&split.id),
                file_splits.len()
            )));
        }
        let inner = FileSource::open(
            &file_config,
            stream,
            file_splits.remove(0),
            resume.map(|v| v.to_string().into_bytes()),
        )?;
        Ok(S3Reader::Reading {
            from: Origin::Copy {
                inner,
                local,
                file_config,
            },
            etag: object.etag,
            schema: None,
            ended: false,
        })
    }
}

/// Reads one version of one object.
pub enum S3Reader {
    /// The version was read to its end before.
    Done,
    Reading {
        from: Origin,
        etag: String,
        /// The rows' schema: the object's own for Parquet, else from the first chunk
        /// (looked up only for an object with no rows).
        schema: Option<arrow_schema::SchemaRef>,
        /// The chunk that marks the end was handed out.
        ended: bool,
    },
}

/// Where the rows of a version come from.
pub enum Origin {
    /// A Parquet object, read by ranged GETs.
    InPlace {
        reader: Box<ParquetReader>,
        ranges: Arc<ObjectRanges>,
    },
    /// The local copy of a text object.
    Copy {
        inner: <FileSource as Source>::Reader,
        local: PathBuf,
        /// The file source's config for the local copy.
        file_config: String,
    },
}

/// The position of `etag`'s version at the file source's position `file`, or at its end.
fn position(etag: &str, file: Option<serde_json::Value>, done: bool) -> Vec<u8> {
    serde_json::to_vec(&S3Position {
        etag: etag.to_string(),
        done,
        file,
    })
    .expect("a position serializes")
}

/// The file source's position in `chunk`, as JSON.
fn file_position(chunk: &Chunk) -> Result<serde_json::Value> {
    serde_json::from_slice(&chunk.position)
        .map_err(|e| Error::fatal(format!("the file source's position is not JSON: {e}")))
}

impl Reader for S3Reader {
    fn next(&mut self, max_rows: usize) -> Result<Option<Chunk>> {
        let S3Reader::Reading {
            from,
            etag,
            schema,
            ended,
        } = self
        else {
            return Ok(None);
        };
        if *ended {
            return Ok(None);
        }
        let next = match from {
            Origin::InPlace { reader, ranges } => reader
                .next_chunk(max_rows)
                .map_err(|e| ranges.take_error().unwrap_or(e))?,
            Origin::Copy { inner, .. } => inner.next(max_rows)?,
        };
        match next {
            Some(chunk) => {
                schema.get_or_insert_with(|| chunk.batch.schema());
                Ok(Some(Chunk {
                    position: position(etag, Some(file_position(&chunk)?), false),
                    batch: chunk.batch,
                    rejects: chunk.rejects,
                }))
            }
            None => {
                // One more, empty, chunk records that this version is read to its end.
                *ended = true;
                let schema = match (schema.take(), from) {
                    (Some(schema), _) => schema,
                    (None, Origin::Copy { file_config, .. }) => {
                        FileSource::discover(file_config)?
                            .into_iter()
                            .next()
                            .ok_or_else(|| Error::fatal("the file source offered no stream"))?
                            .schema
                    }
                    (None, Origin::InPlace { .. }) => unreachable!("set when opened"),
                };
                Ok(Some(Chunk {
                    batch: RecordBatch::new_empty(schema),
                    position: position(etag, None, true),
                    rejects: Vec::new(),
                }))
            }
        }
    }

    fn ack(&mut self, position: &[u8]) {
        let S3Reader::Reading {
            from: Origin::Copy { inner, local, .. },
            ..
        } = self
        else {
            return;
        };
        let Ok(at) = serde_json::from_slice::<S3Position>(position) else {
            return;
        };
        match (at.done, at.file) {
            // Committed to its end: the local copy is no longer needed.
            (true, _) => {
                let _ = std::fs::remove_file(&*local);
            }
            (false, Some(file)) => inner.ack(file.to_string().as_bytes()),
            (false, None) => {}
        }
    }
}

// Exported only in the component: natively (unit tests) the export names cannot link.
#[cfg(target_family = "wasm")]
ingest_sdk::export_source!(S3Source);

//! The built-in `nats` sink: each row becomes one message published to NATS JetStream.
//!
//! - **Staging.** `write` keeps the epoch's messages (subject and payload) in memory;
//!   `prepare` writes them to a file in the granted staging directory and syncs it. The
//!   token names the file.
//! - **Commit.** `commit` publishes the staged messages in order, each with the header
//!   `Nats-Msg-Id: <id_prefix>/<epoch>/<n>`, and checks every PubAck before it deletes the
//!   file. A commit repeated after a crash publishes the same ids again: the stream drops
//!   them as duplicates within its duplicate window (`duplicate_window`, 2 minutes by
//!   default), so nothing is stored twice. A file already gone means the epoch was
//!   committed.
//! - **Payload.** The row as a JSON object, or the bytes of one `payload_column`.
//! - **Subject.** A fixed `subject`, or each row's `subject_column`.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::path::PathBuf;

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use ingest_sdk::sink::{Sink, WriteMode, Writer};
use ingest_sdk::source::StreamInfo;
use ingest_sdk::{config, text, Error, Reject, Result};
use nats_client::JetStream;
use schemars::JsonSchema;
use serde::Deserialize;

/// PubAcks awaited at most before more messages are sent.
const WINDOW: usize = 1024;

/// The config as written in pipeline.toml.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "nats sink config")]
pub struct RawConfig {
    /// The server, `host:port`; grant the same in the sink's `net`.
    pub server: String,
    /// The JetStream stream the messages are stored in (its subjects must take them).
    pub stream: String,
    /// The subject every message is published to.
    #[serde(default)]
    pub subject: Option<String>,
    /// A text column holding each row's subject (instead of `subject`).
    #[serde(default)]
    pub subject_column: Option<String>,
    /// A binary or text column whose bytes are the payload; without it, the payload is the
    /// row as a JSON object.
    #[serde(default)]
    pub payload_column: Option<String>,
    /// The directory (granted read-write in `fs`) where prepared epochs wait for commit.
    pub staging: String,
    /// What message ids start with: `<id_prefix>/<epoch>/<n>`. Give pipelines that publish
    /// to one stream different prefixes (default: the pipeline's stream name).
    #[serde(default)]
    pub id_prefix: Option<String>,
    /// A duplicate window shorter than this many seconds is warned about: a commit
    /// repeated later than the window could store messages twice.
    #[serde(default)]
    #[schemars(extend("default" = 120))]
    pub min_duplicate_window_secs: Option<u64>,
    /// The name of a granted secret holding a token to authenticate with.
    #[serde(default)]
    pub token_secret: Option<String>,
    /// A user name to authenticate with (with `password_secret`).
    #[serde(default)]
    pub user: Option<String>,
    /// The name of a granted secret holding `user`'s password.
    #[serde(default)]
    pub password_secret: Option<String>,
}

impl RawConfig {
    fn parse(json: &str) -> Result<RawConfig> {
        let raw: RawConfig = config::parse(json)?;
        let mut problems = Vec::new();
        match (&raw.subject, &raw.subject_column) {
            (None, None) => problems.push("give `subject` or `subject_column`".to_string()),
            (Some(_), Some(_)) => {
                problems.push("give `subject` or `subject_column`, not both".to_string())
            }
            _ => {}
        }
        if !raw.server.contains(':') {
            problems.push(format!(
                "`server = {:?}`: give `host:port`, e.g. \"127.0.0.1:4222\"",
                raw.server
            ));
        }
        if raw.password_secret.is_some() && raw.user.is_none() {
            problems.push("`password_secret` needs `user`".into());
        }
        if problems.is_empty() {
            Ok(raw)
        } else {
            Err(Error::config(problems.join("; ")))
        }
    }
}

fn nats_error(e: nats_client::Error, context: &str) -> Error {
    nats_client::plugin::to_plugin_error(e, context)
}

fn connect(cfg: &RawConfig) -> Result<JetStream> {
    let credentials = nats_client::plugin::Credentials {
        token_secret: cfg.token_secret.clone(),
        user: cfg.user.clone(),
        password_secret: cfg.password_secret.clone(),
    };
    nats_client::plugin::connect(&cfg.server, "ingest_sink", &credentials)
}

/// Check the stream exists; warn when its duplicate window is short.
fn check_stream(js: &mut JetStream, cfg: &RawConfig) -> Result<()> {
    let info = js.stream_info(&cfg.stream).map_err(|e| {
        nats_error(
            e,
            &format!("nats {}: JetStream stream `{}`", cfg.server, cfg.stream),
        )
    })?;
    let window = info.config.duplicate_window / 1_000_000_000;
    let least = cfg.min_duplicate_window_secs.unwrap_or(120);
    if window < least {
        ingest_sdk::host::log(
            ingest_sdk::host::Level::Warn,
            &format!(
                "JetStream stream `{}` drops repeated message ids for {window} s only (duplicate_window); a commit repeated after a longer outage than that would store its messages twice. Raise the stream's duplicate_window to at least {least} s",
                cfg.stream
            ),
        );
    }
    Ok(())
}

pub struct NatsSink;

impl Sink for NatsSink {
    type Writer = NatsWriter;

    fn spec() -> String {
        config::spec::<RawConfig>()
    }

    fn check(config: &str) -> Result<()> {
        let cfg = RawConfig::parse(config)?;
        fs::create_dir_all(&cfg.staging).map_err(|e| staging_error(&cfg.staging, e))?;
        let mut js = connect(&cfg)?;
        check_stream(&mut js, &cfg)
    }

    fn open(config: &str, stream: StreamInfo, mode: WriteMode) -> Result<NatsWriter> {
        let cfg = RawConfig::parse(config)?;
        if !matches!(mode, WriteMode::Append) {
            return Err(Error::config(
                "the nats sink appends messages; remove `write_mode` (or set \"append\")",
            ));
        }
        let schema = stream.schema.clone();
        let column =
            |name: &Option<String>, what: &str, types: &[DataType]| -> Result<Option<usize>> {
                let Some(name) = name else { return Ok(None) };
                let (index, field) = schema.column_with_name(name).ok_or_else(|| {
                    Error::config(format!(
                        "`{what} = \"{name}\"`: stream `{}` has no such column",
                        stream.name
                    ))
                })?;
                if !types.contains(field.data_type()) {
                    return Err(Error::config(format!(
                        "`{what} = \"{name}\"` is {}; it must be {:?}",
                        field.data_type(),
                        types
                    )));
                }
                Ok(Some(index))
            };
        let subject_column = column(&cfg.subject_column, "subject_column", &[DataType::Utf8])?;
        let payload_column = column(
            &cfg.payload_column,
            "payload_column",
            &[DataType::Binary, DataType::Utf8],
        )?;
        let staging = PathBuf::from(&cfg.staging).join(&stream.name);
        fs::create_dir_all(&staging).map_err(|e| staging_error(&cfg.staging, e))?;
        Ok(NatsWriter {
            prefix: cfg.id_prefix.clone().unwrap_or_else(|| stream.name.clone()),
            cfg,
            subject_column,
            payload_column,
            staging,
            messages: Vec::new(),
            js: None,
        })
    }
}

fn staging_error(dir: &str, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::NotFound => Error::AccessDenied(
            format!("cannot use the staging directory `{dir}`: {e}; grant it read-write in the sink's `fs` (\"{dir}:rw\")"),
        ),
        _ => Error::Transient {
            message: format!("staging directory `{dir}`: {e}"),
            retry_after_ms: None,
        },
    }
}

/// Writes one stream's rows as messages.
pub struct NatsWriter {
    cfg: RawConfig,
    prefix: String,
    subject_column: Option<usize>,
    payload_column: Option<usize>,
    staging: PathBuf,
    /// The open epoch's messages: subject and payload.
    messages: Vec<(String, Vec<u8>)>,
    js: Option<JetStream>,
}

impl NatsWriter {
    fn staged(&self, epoch: u64) -> PathBuf {
        self.staging.join(format!("epoch-{epoch}.msgs"))
    }
}

impl Writer for NatsWriter {
    fn write(&mut self, batch: RecordBatch) -> Result<()> {
        self.write_rejecting(batch).map(|_| ())
    }

    fn write_rejecting(&mut self, batch: RecordBatch) -> Result<Vec<Reject>> {
        let mut rejects = Vec::new();
        let payloads: Vec<Option<Vec<u8>>> = match self.payload_column {
            Some(i) => {
                let column = batch.column(i);
                (0..batch.num_rows())
                    .map(|r| {
                        (!column.is_null(r)).then(|| match column.data_type() {
                            DataType::Binary => column.as_binary::<i32>().value(r).to_vec(),
                            _ => column.as_string::<i32>().value(r).as_bytes().to_vec(),
                        })
                    })
                    .collect()
            }
            None => json_rows(&batch)?.into_iter().map(Some).collect(),
        };
        for (row, payload) in payloads.into_iter().enumerate() {
            let subject = match (self.subject_column, &self.cfg.subject) {
                (Some(i), _) => {
                    let column = batch.column(i).as_string::<i32>();
                    (!column.is_null(row)).then(|| column.value(row).to_string())
                }
                (None, Some(subject)) => Some(subject.clone()),
                (None, None) => None,
            };
            match (subject, payload) {
                (Some(subject), Some(payload)) => self.messages.push((subject, payload)),
                (None, _) => rejects.push(Reject::row(row, "the subject column is null")),
                (_, None) => rejects.push(Reject::row(row, "the payload column is null")),
            }
        }
        Ok(rejects)
    }

    fn prepare(&mut self, epoch: u64) -> Result<Vec<u8>> {
        let path = self.staged(epoch);
        let mut bytes = Vec::new();
        for (subject, payload) in self.messages.drain(..) {
            bytes.extend_from_slice(&(subject.len() as u32).to_le_bytes());
            bytes.extend_from_slice(subject.as_bytes());
            bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&payload);
        }
        let staging = self.cfg.staging.clone();
        let part = path.with_extension("part");
        let mut file = fs::File::create(&part).map_err(|e| staging_error(&staging, e))?;
        file.write_all(&bytes)
            .map_err(|e| staging_error(&staging, e))?;
        file.sync_all().map_err(|e| staging_error(&staging, e))?;
        fs::rename(&part, &path).map_err(|e| staging_error(&staging, e))?;
        Ok(path.to_string_lossy().into_owned().into_bytes())
    }

    fn commit(&mut self, epoch: u64, token: &[u8]) -> Result<Vec<String>> {
        let published = vec![format!("nats:{}/{}/{epoch}", self.cfg.stream, self.prefix)];
        let path = PathBuf::from(String::from_utf8_lossy(token).into_owned());
        let mut bytes = Vec::new();
        match fs::File::open(&path) {
            Ok(mut f) => f
                .read_to_end(&mut bytes)
                .map_err(|e| staging_error(&self.cfg.staging, e))?,
            // Committed before: the file goes only once every message was stored.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(published),
            Err(e) => return Err(staging_error(&self.cfg.staging, e)),
        };
        let messages = decode(&bytes).ok_or_else(|| {
            Error::fatal(format!("the staged epoch {} is damaged", path.display()))
        })?;
        if self.js.is_none() {
            let mut js = connect(&self.cfg)?;
            check_stream(&mut js, &self.cfg)?;
            self.js = Some(js);
        }
        let result = publish_all(
            self.js.as_mut().expect("connected"),
            &self.prefix,
            epoch,
            &messages,
        );
        if let Err(e) = result {
            // A broken connection is made anew on the next try.
            self.js = None;
            return Err(nats_error(
                e,
                &format!(
                    "nats {}: publishing epoch {epoch} to stream `{}`",
                    self.cfg.server, self.cfg.stream
                ),
            ));
        }
        fs::remove_file(&path).map_err(|e| staging_error(&self.cfg.staging, e))?;
        Ok(published)
    }

    fn abort(&mut self, epoch: u64) -> Result<()> {
        self.messages.clear();
        for path in [
            self.staged(epoch),
            self.staged(epoch).with_extension("part"),
        ] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(staging_error(&self.cfg.staging, e)),
            }
        }
        Ok(())
    }
}

/// Publish `messages` with their ids, `WINDOW` at a time, checking every PubAck.
fn publish_all(
    js: &mut JetStream,
    prefix: &str,
    epoch: u64,
    messages: &[(&str, &[u8])],
) -> nats_client::Result<()> {
    let mut others = HashMap::new();
    for (start, chunk) in messages.chunks(WINDOW).enumerate() {
        let mut replies = Vec::with_capacity(chunk.len());
        for (i, (subject, payload)) in chunk.iter().enumerate() {
            let id = format!("{prefix}/{epoch}/{}", start * WINDOW + i);
            replies.push(js.publish(subject, &[("Nats-Msg-Id", &id)], payload)?);
        }
        js.flush()?;
        for reply in replies {
            js.pub_ack(&reply, &mut others)?;
        }
    }
    Ok(())
}

/// The messages of a staged file.
fn decode(mut bytes: &[u8]) -> Option<Vec<(&str, &[u8])>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (subject, rest) = take(bytes)?;
        let (payload, rest) = take(rest)?;
        out.push((std::str::from_utf8(subject).ok()?, payload));
        bytes = rest;
    }
    Some(out)
}

/// A length-prefixed value (4 bytes, little-endian) and the bytes after it.
fn take(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*len) as usize;
    Some((rest.get(..len)?, &rest[len..]))
}

/// Each row of `batch` as a JSON object (nulls left out).
fn json_rows(batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
    let batch = text_safe(batch)?;
    let mut buf = Vec::new();
    {
        let mut writer = arrow_json::LineDelimitedWriter::new(&mut buf);
        writer
            .write(&batch)
            .map_err(|e| Error::fatal(format!("rows as JSON: {e}")))?;
        writer
            .finish()
            .map_err(|e| Error::fatal(format!("rows as JSON: {e}")))?;
    }
    Ok(buf
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

/// `batch` with timestamps in a named zone relabelled `+00:00` (the same instants), which
/// the JSON writer formats without a time zone database.
fn text_safe(batch: &RecordBatch) -> Result<RecordBatch> {
    use arrow_schema::{Field, Schema};
    let schema = batch.schema();
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            f.as_ref()
                .clone()
                .with_data_type(text::text_safe_type(f.data_type()))
        })
        .collect();
    let columns = batch
        .columns()
        .iter()
        .map(text::text_safe)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::fatal(format!("rows as JSON: {e}")))?;
    RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), columns)
        .map_err(|e| Error::fatal(format!("rows as JSON: {e}")))
}

// Exported only in the component: natively (unit tests) the export names cannot link.
#[cfg(target_family = "wasm")]
ingest_sdk::export_sink!(NatsSink);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_messages_read_back_as_written_and_damage_is_seen() {
        let mut bytes = Vec::new();
        for (s, p) in [("a.b", &b"{}"[..]), ("c", &b""[..])] {
            bytes.extend_from_slice(&(s.len() as u32).to_le_bytes());
            bytes.extend_from_slice(s.as_bytes());
            bytes.extend_from_slice(&(p.len() as u32).to_le_bytes());
            bytes.extend_from_slice(p);
        }
        assert_eq!(
            decode(&bytes).unwrap(),
            [("a.b", &b"{}"[..]), ("c", &b""[..])]
        );
        assert!(decode(&bytes[..bytes.len() - 1]).is_none());
    }

    #[test]
    fn a_subject_or_a_subject_column_is_needed() {
        let err = |json: &str| match RawConfig::parse(json) {
            Err(Error::InvalidConfig(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(err(r#"{"server":"h:1","stream":"S","staging":"s"}"#).contains("give `subject`"));
        assert!(err(
            r#"{"server":"h:1","stream":"S","staging":"s","subject":"a","subject_column":"b"}"#
        )
        .contains("not both"));
    }
}

//! The dead-letter queue: records that a plugin rejected, with why and where, written as
//! JSON Lines and published with the epoch they belong to — so the queue is exactly-once
//! like any committing sink.
//!
//! Layout: `<dlq dir>/<stream>/epoch-<E>-<run>.jsonl`, where `<run>` names the process
//! that wrote it, so a name is never used twice, not even after `host state reset` starts
//! the epochs again. Letters of the open epoch are staged in `<dlq dir>/.staging/`.
//! Publishing never replaces a file: it links the staged file under its new name, which
//! fails if the name exists.
//!
//! A letter holds the data as it was before the rejecting plugin ran — for a source reject
//! the raw input, before any masking. `[dlq] protect` says how it is kept on disk:
//! `encrypt` seals the reason and the record with XChaCha20-Poly1305 under a key derived
//! from a granted secret; `mask` keeps records only after the pipeline's `pii-mask` rules
//! ran on them (see `runtime::transform`), and keeps no raw text a source could not parse;
//! `raw` keeps them as they are.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use crate::checkpoint::sync_dir;

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// When it was rejected (RFC 3339, UTC).
    pub time: String,
    pub pipeline: String,
    /// The plugin that rejected it.
    pub plugin: String,
    pub stream: String,
    /// Where the record came from (`file:line`), when known.
    pub location: Option<String>,
    pub reason: String,
    /// The record: the raw text a source could not parse, or the row as a JSON object.
    pub record: String,
    /// The record went through the pipeline's masking before it was written
    /// (`protect = "mask"`): it no longer holds the original values, and cannot be replayed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub masked: bool,
}

/// How dead letters are kept on disk, as `[dlq] protect` chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protect {
    /// As they are.
    Raw,
    /// Records masked by the pipeline's `pii-mask` stages before they are written.
    Mask,
    /// Reason and record sealed with a key derived from the secret `key_secret`.
    Encrypt { key_secret: String },
}

impl Protect {
    pub fn name(&self) -> &'static str {
        match self {
            Protect::Raw => "raw",
            Protect::Mask => "mask",
            Protect::Encrypt { .. } => "encrypt",
        }
    }
}

/// Why the dead-letter queue could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("dead-letter queue {}: cannot {action}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("dead-letter queue {}: line {line} is not a dead letter: {reason}", .path.display())]
    Unreadable {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("dead-letter queue {}: refusing to publish over the existing file {}; nothing was changed", .staged.display(), .path.display())]
    Exists { staged: PathBuf, path: PathBuf },
    #[error("dead-letter queue {}: the letters are encrypted (key id {key_id}); set `[dlq] protect = \"encrypt\"` with `key_secret` naming the secret they were sealed with to read them", .path.display())]
    NoKey { path: PathBuf, key_id: String },
    #[error("dead-letter queue {}, line {line}: the letter was sealed with key id {sealed}, but `[dlq] key_secret = \"{secret}\"` gives key id {ours}; give the secret it was sealed with (the letters are unchanged)", .path.display())]
    WrongKey {
        path: PathBuf,
        line: usize,
        sealed: String,
        secret: String,
        ours: String,
    },
    #[error("dead-letter queue {}, line {line}: the letter does not open with its key: it was changed after it was written", .path.display())]
    Tampered { path: PathBuf, line: usize },
    #[error("[dlq] key_secret `{secret}`: {problem}")]
    Key { secret: String, problem: String },
}

impl DlqError {
    /// The letters cannot be opened with the key the pipeline names: a configuration
    /// problem, found before anything changed.
    pub fn is_key_problem(&self) -> bool {
        matches!(
            self,
            DlqError::NoKey { .. } | DlqError::WrongKey { .. } | DlqError::Key { .. }
        )
    }
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DlqError + 'a {
    move |source| DlqError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The shortest secret accepted as the dead-letter key.
pub const MIN_KEY_BYTES: usize = 16;

/// The key letters are sealed with.
struct Sealer {
    cipher: XChaCha20Poly1305,
    /// Names the key in every sealed letter, so a wrong key is told apart from damage.
    key_id: String,
    secret: String,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealer(key id {})", self.key_id)
    }
}

/// `protect` with what it needs at run time (the key, derived from its secret).
#[derive(Debug)]
pub struct Protection {
    protect: Protect,
    sealer: Option<Sealer>,
}

impl Protection {
    /// Resolve `protect` against the pipeline's secrets.
    pub fn new(protect: &Protect, secrets: &BTreeMap<String, String>) -> Result<Self, DlqError> {
        let sealer = match protect {
            Protect::Encrypt { key_secret } => {
                let value = secrets.get(key_secret).ok_or_else(|| DlqError::Key {
                    secret: key_secret.clone(),
                    problem: "no such secret in [secrets]".into(),
                })?;
                Some(Sealer::derive(key_secret, value.as_bytes())?)
            }
            Protect::Raw | Protect::Mask => None,
        };
        Ok(Protection {
            protect: protect.clone(),
            sealer,
        })
    }

    pub fn protect(&self) -> &Protect {
        &self.protect
    }

    /// One letter as the line written to disk.
    fn encode(&self, letter: &DeadLetter) -> Vec<u8> {
        let mut line = match &self.sealer {
            None => serde_json::to_vec(letter),
            Some(sealer) => serde_json::to_vec(&sealer.seal(letter)),
        }
        .expect("dead letters serialize");
        line.push(b'\n');
        line
    }

    /// Read back one line of `path`.
    fn decode(&self, path: &Path, line: usize, text: &str) -> Result<DeadLetter, DlqError> {
        let unreadable = |reason: String| DlqError::Unreadable {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let stored: Stored = serde_json::from_str(text).map_err(|e| unreadable(e.to_string()))?;
        let Some(sealed) = stored.sealed else {
            return Ok(DeadLetter {
                time: stored.time,
                pipeline: stored.pipeline,
                plugin: stored.plugin,
                stream: stored.stream,
                location: stored.location,
                reason: stored.reason.unwrap_or_default(),
                record: stored
                    .record
                    .ok_or_else(|| unreadable("no record".into()))?,
                masked: stored.masked,
            });
        };
        let key_id = stored.key.unwrap_or_default();
        let Some(sealer) = &self.sealer else {
            return Err(DlqError::NoKey {
                path: path.to_path_buf(),
                key_id,
            });
        };
        if key_id != sealer.key_id {
            return Err(DlqError::WrongKey {
                path: path.to_path_buf(),
                line,
                sealed: key_id,
                secret: sealer.secret.clone(),
                ours: sealer.key_id.clone(),
            });
        }
        let mut letter = DeadLetter {
            time: stored.time,
            pipeline: stored.pipeline,
            plugin: stored.plugin,
            stream: stored.stream,
            location: stored.location,
            reason: String::new(),
            record: String::new(),
            masked: stored.masked,
        };
        let tampered = || DlqError::Tampered {
            path: path.to_path_buf(),
            line,
        };
        let inner = sealer.open(&letter, &sealed).ok_or_else(tampered)?;
        letter.reason = inner.reason;
        letter.record = inner.record;
        Ok(letter)
    }
}

/// A letter as it is written: sealed letters carry `sealed` and `key` in place of
/// `reason` and `record`.
#[derive(Serialize, Deserialize)]
struct Stored {
    time: String,
    pipeline: String,
    plugin: String,
    stream: String,
    location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    record: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    masked: bool,
    /// Base64 of the 24-byte nonce followed by the ciphertext of [`Sealed`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
}

/// What a sealed letter hides.
#[derive(Serialize, Deserialize)]
struct Sealed {
    reason: String,
    record: String,
}

impl Sealer {
    fn derive(secret: &str, value: &[u8]) -> Result<Sealer, DlqError> {
        if value.len() < MIN_KEY_BYTES {
            return Err(DlqError::Key {
                secret: secret.to_string(),
                problem: format!(
                    "is {} bytes long; the dead-letter key needs at least {MIN_KEY_BYTES} (e.g. `openssl rand -hex 32`)",
                    value.len()
                ),
            });
        }
        let hkdf = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"ingest-host dead letters"), value);
        let mut key = [0u8; 32];
        hkdf.expand(b"xchacha20poly1305 key v1", &mut key)
            .expect("32 bytes is a valid HKDF output length");
        let mut id = [0u8; 8];
        hkdf.expand(b"key id v1", &mut id)
            .expect("8 bytes is a valid HKDF output length");
        Ok(Sealer {
            cipher: XChaCha20Poly1305::new(&key.into()),
            key_id: hex::encode(id),
            secret: secret.to_string(),
        })
    }

    /// What the ciphertext is bound to: moving a sealed record to another letter fails.
    fn associated(letter: &DeadLetter) -> Vec<u8> {
        serde_json::to_vec(&(
            &letter.time,
            &letter.pipeline,
            &letter.plugin,
            &letter.stream,
            &letter.location,
            letter.masked,
        ))
        .expect("strings serialize")
    }

    fn seal(&self, letter: &DeadLetter) -> Stored {
        let plain = serde_json::to_vec(&Sealed {
            reason: letter.reason.clone(),
            record: letter.record.clone(),
        })
        .expect("strings serialize");
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = Self::associated(letter);
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .expect("sealing a letter cannot fail");
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        Stored {
            time: letter.time.clone(),
            pipeline: letter.pipeline.clone(),
            plugin: letter.plugin.clone(),
            stream: letter.stream.clone(),
            location: letter.location.clone(),
            reason: None,
            record: None,
            masked: letter.masked,
            sealed: Some(base64::engine::general_purpose::STANDARD.encode(sealed)),
            key: Some(self.key_id.clone()),
        }
    }

    fn open(&self, letter: &DeadLetter, sealed: &str) -> Option<Sealed> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .ok()?;
        if bytes.len() < 24 {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(24);
        let aad = Self::associated(letter);
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .ok()?;
        serde_json::from_slice(&plain).ok()
    }
}

/// The name of this process's run in the names of the files it publishes: when it started
/// and its process id, so no two runs share one, across state resets too.
pub fn run_id() -> &'static str {
    static RUN: OnceLock<String> = OnceLock::new();
    RUN.get_or_init(|| {
        let now = chrono::Utc::now();
        format!(
            "{}-{:x}",
            now.format("%Y%m%dT%H%M%S%3fZ"),
            std::process::id()
        )
    })
}

/// What `commit` needs to publish one epoch's dead letters: the staged file to publish
/// under its final name, and (after a replay) the published files the epoch replaces.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    #[serde(default)]
    staged: Option<PathBuf>,
    #[serde(default)]
    published: Option<PathBuf>,
    #[serde(default)]
    remove: Vec<PathBuf>,
}

impl Token {
    /// A token as the state file records it; state written before tokens were records
    /// holds it as a string of JSON.
    pub fn deserialize_recorded<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Token>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Recorded {
            Token(Token),
            Json(String),
        }
        match Option::<Recorded>::deserialize(d)? {
            None => Ok(None),
            Some(Recorded::Token(t)) => Ok(Some(t)),
            Some(Recorded::Json(text)) => serde_json::from_str(&text)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// The streams with a dead-letter directory under `dir`, in name order (none when `dir`
/// does not exist yet).
pub fn streams(dir: &Path) -> Vec<String> {
    let mut streams: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| !name.starts_with('.'))
            .collect(),
        Err(_) => Vec::new(),
    };
    streams.sort();
    streams
}

/// The published dead-letter files of `stream`, oldest epoch first.
pub fn published_files(dir: &Path, stream: &str) -> Result<Vec<PathBuf>, DlqError> {
    let dir = dir.join(stream);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("list", &dir)(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(io("list", &dir))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("epoch-") && name.ends_with(".jsonl") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The dead letters in one published file, opened with `protection`'s key where sealed.
pub fn read(path: &Path, protection: &Protection) -> Result<Vec<DeadLetter>, DlqError> {
    let text = std::fs::read_to_string(path).map_err(io("read", path))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| protection.decode(path, i + 1, line))
        .collect()
}

/// Writes dead letters of the open epoch for one stream.
pub struct DeadLetters {
    dir: PathBuf,
    stream: String,
    protection: Arc<Protection>,
    open: Option<(BufWriter<File>, PathBuf)>,
    /// Published files the next epoch replaces (a replay's queue).
    replaces: Vec<PathBuf>,
}

impl DeadLetters {
    pub fn new(dir: &Path, stream: &str, protection: Arc<Protection>) -> Self {
        DeadLetters {
            dir: dir.to_path_buf(),
            stream: stream.to_string(),
            protection,
            open: None,
            replaces: Vec::new(),
        }
    }

    fn staging(&self) -> PathBuf {
        self.dir.join(".staging")
    }

    fn current(&self) -> PathBuf {
        self.staging()
            .join(format!("{}.{}.open.jsonl", self.stream, run_id()))
    }

    /// Remove whatever earlier runs left staged for this stream and never committed.
    /// Call only after recovery has published what the state still refers to.
    pub fn discard_stale(&mut self) -> Result<(), DlqError> {
        self.abort();
        let staging = self.staging();
        let entries = match std::fs::read_dir(&staging) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("list", &staging)(e)),
        };
        let prefix = format!("{}.", self.stream);
        for entry in entries {
            let path = entry.map_err(io("list", &staging))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            // `<stream>.<run>.open.jsonl` or `<stream>.epoch-<E>-<run>.jsonl`; a stream
            // whose name extends this one's with a dot has files of its own.
            let rest = name.strip_prefix(&prefix).unwrap_or("");
            let ours = (rest.starts_with("epoch-") && rest.matches('.').count() == 1)
                || (rest.ends_with(".open.jsonl") && rest.matches('.').count() == 2);
            if ours {
                std::fs::remove_file(&path).map_err(io("remove the stale", &path))?;
            }
        }
        Ok(())
    }

    /// Stage one dead letter in the open epoch.
    pub fn write(&mut self, letter: &DeadLetter) -> Result<(), DlqError> {
        if self.open.is_none() {
            let path = self.current();
            std::fs::create_dir_all(self.staging()).map_err(io("create", &path))?;
            let file = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&path)
                .map_err(io("create", &path))?;
            self.open = Some((BufWriter::new(file), path));
        }
        let (writer, path) = self.open.as_mut().expect("opened above");
        writer
            .write_all(&self.protection.encode(letter))
            .map_err(io("write", path))
    }

    /// The next epoch also removes `files` from the queue when it commits (they were
    /// replayed).
    pub fn replacing(&mut self, files: Vec<PathBuf>) {
        self.replaces = files;
    }

    /// Make the open epoch's dead letters durable; `None` when the epoch has nothing to
    /// publish or remove.
    pub fn prepare(&mut self, epoch: u64) -> Result<Option<Token>, DlqError> {
        let remove = std::mem::take(&mut self.replaces);
        let Some((writer, current)) = self.open.take() else {
            return Ok((!remove.is_empty()).then_some(Token {
                staged: None,
                published: None,
                remove,
            }));
        };
        let file = writer.into_inner().map_err(|e| DlqError::Io {
            action: "flush",
            path: current.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io("sync", &current))?;
        let name = format!("epoch-{epoch:010}-{}.jsonl", run_id());
        let staged = self.staging().join(format!("{}.{name}", self.stream));
        std::fs::rename(&current, &staged).map_err(io("stage", &staged))?;
        sync_dir(&self.staging()).map_err(io("sync", &staged))?;
        Ok(Some(Token {
            staged: Some(staged),
            published: Some(self.dir.join(&self.stream).join(name)),
            remove,
        }))
    }

    /// Drop what was staged in the open epoch.
    pub fn abort(&mut self) {
        self.open = None;
        self.replaces.clear();
        let _ = std::fs::remove_file(self.current());
    }
}

/// Publish a prepared epoch's dead letters and remove the files it replaces. A repeat is
/// a no-op; a file is never replaced, and never removed by the epoch that published it.
pub fn commit(token: &Token) -> Result<(), DlqError> {
    if let (Some(staged), Some(published)) = (&token.staged, &token.published) {
        let dir = published
            .parent()
            .expect("published files live in a directory");
        if staged.exists() {
            std::fs::create_dir_all(dir).map_err(io("create", dir))?;
            publish(staged, published)?;
            sync_dir(dir).map_err(io("sync", dir))?;
            std::fs::remove_file(staged).map_err(io("remove the staged", staged))?;
        } else if !published.exists() {
            return Err(DlqError::Io {
                action: "publish",
                path: staged.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "staged dead letters are missing",
                ),
            });
        }
    }
    for path in &token.remove {
        if Some(path) == token.published.as_ref() {
            continue;
        }
        match std::fs::remove_file(path) {
            Ok(()) => {
                sync_dir(path.parent().expect("a file's directory")).map_err(io("sync", path))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("remove the replayed", path)(e)),
        }
    }
    Ok(())
}

/// Give `staged` the name `published` without ever replacing a file: a hard link fails
/// when the name exists. The same bytes already there are a commit repeated after a
/// crash; anything else is refused.
fn publish(staged: &Path, published: &Path) -> Result<(), DlqError> {
    match std::fs::hard_link(staged, published) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let same = std::fs::read(staged).map_err(io("read", staged))?
                == std::fs::read(published).map_err(io("read", published))?;
            if same {
                Ok(())
            } else {
                Err(DlqError::Exists {
                    staged: staged.to_path_buf(),
                    path: published.to_path_buf(),
                })
            }
        }
        Err(e) => Err(io("publish", published)(e)),
    }
}

/// What `protect = "mask"` keeps of a record it cannot mask column by column (raw text a
/// source could not parse, a row the masker refuses): its size only. The letter's
/// location says where the original is.
pub fn withheld(record: &str) -> String {
    format!(
        "[withheld: {} bytes that could not be masked column by column; see the location for the original]",
        record.len()
    )
}

/// The values a raw record may hold, to cut out of a reason that quotes them: its fields
/// split at the usual separators, without quotes, of at least 3 characters.
pub fn fields_of(record: &str) -> Vec<String> {
    record
        .split([',', ';', '\t', '|', '\n', '\r'])
        .map(|f| {
            f.trim()
                .trim_matches(['"', '\'', '{', '}', '[', ']'])
                .trim()
        })
        .flat_map(|f| {
            // `"key": "value"` pairs of a JSON line.
            f.rsplit_once(':')
                .map(|(_, v)| v.trim().trim_matches('"').to_string())
                .into_iter()
                .chain(std::iter::once(f.to_string()))
        })
        .filter(|f| f.chars().count() >= 3)
        .collect()
}

/// `reason` with every occurrence of the given values replaced by `[masked]`, longest
/// first so a value inside another is not left half cut.
pub fn scrub(reason: &str, values: &[String]) -> String {
    let mut values: Vec<&String> = values.iter().filter(|v| !v.is_empty()).collect();
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let mut out = reason.to_string();
    for value in values {
        out = out.replace(value.as_str(), "[masked]");
    }
    out
}

/// Now as RFC 3339 in UTC with milliseconds.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(n: u32) -> DeadLetter {
        DeadLetter {
            time: now_rfc3339(),
            pipeline: "p".into(),
            plugin: "source".into(),
            stream: "orders".into(),
            location: Some(format!("orders.csv:{n}")),
            reason: "expected 3 fields, found 4: `ann@example.com`".into(),
            record: "a,ann@example.com,c,d".into(),
            masked: false,
        }
    }

    fn raw() -> Arc<Protection> {
        Arc::new(Protection::new(&Protect::Raw, &BTreeMap::new()).unwrap())
    }

    fn encrypting(secret: &str) -> Protection {
        let secrets = BTreeMap::from([("dlq_key".to_string(), secret.to_string())]);
        let protect = Protect::Encrypt {
            key_secret: "dlq_key".into(),
        };
        Protection::new(&protect, &secrets).unwrap()
    }

    fn published(dir: &Path) -> Vec<PathBuf> {
        published_files(dir, "orders").unwrap()
    }

    #[test]
    fn dead_letters_appear_only_when_their_epoch_commits_and_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut dlq = DeadLetters::new(dir.path(), "orders", raw());
        dlq.write(&letter(1)).unwrap();
        dlq.write(&letter(2)).unwrap();
        let token = dlq.prepare(1).unwrap().unwrap();
        assert!(published(dir.path()).is_empty());
        commit(&token).unwrap();
        commit(&token).unwrap();
        let files = published(dir.path());
        assert_eq!(files.len(), 1);
        assert_eq!(read(&files[0], &raw()).unwrap().len(), 2);
        assert!(
            dlq.prepare(2).unwrap().is_none(),
            "an epoch without rejects stages nothing"
        );
    }

    #[test]
    fn aborted_dead_letters_disappear() {
        let dir = tempfile::tempdir().unwrap();
        let mut dlq = DeadLetters::new(dir.path(), "orders", raw());
        dlq.write(&letter(1)).unwrap();
        dlq.abort();
        assert!(dlq.prepare(1).unwrap().is_none());
        assert!(!dir.path().join("orders").exists());
    }

    #[test]
    fn publishing_never_replaces_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut dlq = DeadLetters::new(dir.path(), "orders", raw());
        dlq.write(&letter(1)).unwrap();
        let token = dlq.prepare(7).unwrap().unwrap();
        let target = token.published.clone().unwrap();
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, "letters of another epoch\n").unwrap();
        let error = commit(&token).unwrap_err().to_string();
        assert!(error.contains("refusing to publish over"), "{error}");
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "letters of another epoch\n"
        );
        assert!(
            token.staged.as_ref().unwrap().exists(),
            "the staged letters are kept"
        );
    }

    #[test]
    fn a_commit_repeated_after_a_crash_between_link_and_cleanup_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let mut dlq = DeadLetters::new(dir.path(), "orders", raw());
        dlq.write(&letter(1)).unwrap();
        let token = dlq.prepare(3).unwrap().unwrap();
        let (staged, target) = (token.staged.clone().unwrap(), token.published.unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::hard_link(&staged, &target).unwrap();
        commit(&Token {
            staged: Some(staged.clone()),
            published: Some(target.clone()),
            remove: Vec::new(),
        })
        .unwrap();
        assert!(!staged.exists());
        assert_eq!(read(&target, &raw()).unwrap().len(), 1);
    }

    #[test]
    fn letter_files_are_named_by_run_so_epochs_restarted_by_a_reset_do_not_collide() {
        let dir = tempfile::tempdir().unwrap();
        let mut dlq = DeadLetters::new(dir.path(), "orders", raw());
        dlq.write(&letter(1)).unwrap();
        commit(&dlq.prepare(1).unwrap().unwrap()).unwrap();
        // A file of epoch 1 written by another run (before a state reset).
        let earlier = dir
            .path()
            .join("orders/epoch-0000000001-20250101T000000000Z-1.jsonl");
        std::fs::write(&earlier, serde_json::to_string(&letter(9)).unwrap() + "\n").unwrap();
        let files = published(dir.path());
        assert_eq!(files.len(), 2, "{files:?}");
        let name = files
            .iter()
            .find(|f| **f != earlier)
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert_eq!(name, format!("epoch-0000000001-{}.jsonl", run_id()));
    }

    #[test]
    fn a_replay_never_removes_the_file_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let mut dlq = DeadLetters::new(dir.path(), "orders", raw());
        dlq.write(&letter(1)).unwrap();
        commit(&dlq.prepare(1).unwrap().unwrap()).unwrap();
        let replayed = published(dir.path());
        // The replay's own file would have the name of a replayed one.
        dlq.write(&letter(2)).unwrap();
        let mut token = dlq.prepare(2).unwrap().unwrap();
        let ours = token.published.clone().unwrap();
        token.remove = replayed.iter().cloned().chain([ours.clone()]).collect();
        commit(&token).unwrap();
        assert_eq!(published(dir.path()), vec![ours]);
    }

    #[test]
    fn a_replay_that_empties_the_queue_removes_the_replayed_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut dlq = DeadLetters::new(dir.path(), "orders", raw());
        dlq.write(&letter(1)).unwrap();
        commit(&dlq.prepare(1).unwrap().unwrap()).unwrap();
        dlq.replacing(published(dir.path()));
        let token = dlq
            .prepare(2)
            .unwrap()
            .expect("removing is something to commit");
        commit(&token).unwrap();
        assert!(published(dir.path()).is_empty());
    }

    #[test]
    fn stale_staging_of_earlier_runs_is_discarded_and_other_streams_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().join(".staging");
        std::fs::create_dir_all(&staging).unwrap();
        for name in [
            "orders.epoch-0000000004-20250101T000000000Z-1.jsonl",
            "orders.20250101T000000000Z-1.open.jsonl",
            "orders.eu.epoch-0000000004-20250101T000000000Z-1.jsonl",
        ] {
            std::fs::write(staging.join(name), "{}\n").unwrap();
        }
        DeadLetters::new(dir.path(), "orders", raw())
            .discard_stale()
            .unwrap();
        let left: Vec<String> = std::fs::read_dir(&staging)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            left,
            vec!["orders.eu.epoch-0000000004-20250101T000000000Z-1.jsonl"]
        );
    }

    #[test]
    fn encrypted_letters_hold_no_clear_text_and_open_with_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = "a-dead-letter-key-of-32-bytes-ok";
        let protection = Arc::new(encrypting(key));
        let mut dlq = DeadLetters::new(dir.path(), "orders", protection.clone());
        dlq.write(&letter(1)).unwrap();
        commit(&dlq.prepare(1).unwrap().unwrap()).unwrap();
        let file = &published(dir.path())[0];
        let bytes = std::fs::read_to_string(file).unwrap();
        assert!(!bytes.contains("ann@example.com"), "{bytes}");
        assert!(
            bytes.contains("orders.csv:1"),
            "the location stays readable"
        );
        let back = read(file, &encrypting(key)).unwrap();
        assert_eq!(back, vec![letter_at(&back[0], 1)]);
    }

    fn letter_at(read_back: &DeadLetter, n: u32) -> DeadLetter {
        DeadLetter {
            time: read_back.time.clone(),
            ..letter(n)
        }
    }

    #[test]
    fn a_wrong_or_missing_key_is_a_clear_error_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut dlq = DeadLetters::new(
            dir.path(),
            "orders",
            Arc::new(encrypting("a-dead-letter-key-of-32-bytes-ok")),
        );
        dlq.write(&letter(1)).unwrap();
        commit(&dlq.prepare(1).unwrap().unwrap()).unwrap();
        let file = &published(dir.path())[0];
        let before = std::fs::read(file).unwrap();
        let wrong = read(file, &encrypting("another-key-of-at-least-16-bytes"))
            .unwrap_err()
            .to_string();
        assert!(
            wrong.contains("sealed with key id") && wrong.contains("dlq_key"),
            "{wrong}"
        );
        let missing = read(file, &raw()).unwrap_err().to_string();
        assert!(missing.contains("protect = \"encrypt\""), "{missing}");
        assert_eq!(std::fs::read(file).unwrap(), before);
    }

    #[test]
    fn a_changed_sealed_letter_does_not_open() {
        let protection = encrypting("a-dead-letter-key-of-32-bytes-ok");
        let line = protection.encode(&letter(1));
        let mut stored: Stored = serde_json::from_slice(&line).unwrap();
        stored.location = Some("orders.csv:2".into());
        let text = serde_json::to_string(&stored).unwrap();
        let error = protection
            .decode(Path::new("q.jsonl"), 1, &text)
            .unwrap_err();
        assert!(
            matches!(error, DlqError::Tampered { line: 1, .. }),
            "{error}"
        );
    }

    #[test]
    fn a_short_key_secret_is_refused() {
        let secrets = BTreeMap::from([("k".to_string(), "short-secret".to_string())]);
        let error = Protection::new(
            &Protect::Encrypt {
                key_secret: "k".into(),
            },
            &secrets,
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("at least 16"), "{error}");
    }

    #[test]
    fn tokens_recorded_as_json_strings_by_earlier_versions_still_read() {
        #[derive(Deserialize)]
        struct Holder {
            #[serde(deserialize_with = "Token::deserialize_recorded")]
            t: Option<Token>,
        }
        let old = r#"{"t":"{\"staged\":\"/s\",\"published\":\"/p\",\"remove\":[]}"}"#;
        let h: Holder = serde_json::from_str(old).unwrap();
        assert_eq!(h.t.unwrap().published, Some(PathBuf::from("/p")));
        let new = r#"{"t":{"staged":"/s","published":"/p","remove":[]}}"#;
        let h: Holder = serde_json::from_str(new).unwrap();
        assert_eq!(h.t.unwrap().staged, Some(PathBuf::from("/s")));
    }

    #[test]
    fn a_reason_keeps_none_of_the_values_it_quotes() {
        let record = r#"17,"ann@example.com",+44 20 7946 0958,12.5x"#;
        let reason = "column `amount`: cannot read `12.5x` as a number (row of ann@example.com)";
        let scrubbed = scrub(reason, &fields_of(record));
        assert!(!scrubbed.contains("ann@example.com"), "{scrubbed}");
        assert!(!scrubbed.contains("12.5x"), "{scrubbed}");
        assert!(scrubbed.starts_with("column `amount`"), "{scrubbed}");
        let json = r#"{"id": 3, "email": "bob@example.org", "amount": "n/a"}"#;
        let scrubbed = scrub("`bob@example.org` is not allowed", &fields_of(json));
        assert_eq!(scrubbed, "`[masked]` is not allowed");
        assert!(!withheld(record).contains("ann"));
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let t = now_rfc3339();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'));
    }
}

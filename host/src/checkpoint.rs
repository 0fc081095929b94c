//! The checkpoint state of a pipeline and where it is kept.
//!
//! One record per pipeline: the last epoch, whether its commit is recorded, the source
//! positions it covers, the sink tokens needed to (re-)commit it, and each stream's schema.
//! The embedded store is a local directory; a write is atomic (temp file, fsync, rename,
//! fsync of the directory) and the record carries a checksum, so a torn or corrupted file
//! is reported, never taken for an empty state.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Opaque bytes a plugin owns and the host keeps for it — a source position, a
/// transform's checkpoint, a sink's commit token — written as hex in the state file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opaque(#[serde(with = "hex")] pub Vec<u8>);

impl Opaque {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Opaque {
    fn from(bytes: Vec<u8>) -> Self {
        Opaque(bytes)
    }
}

/// Where a source resumes reading one split: opaque bytes the source gave the host with
/// the chunk before it.
pub type Position = Opaque;

/// Source positions by stream, then split.
pub type Positions = BTreeMap<String, BTreeMap<String, Position>>;

/// The splits a stream is being read in, kept from the first epoch that reads it until
/// the epoch that reads it to its end: a resumed run reads the very splits its positions
/// belong to, even when planning again would split differently (key ranges planned
/// from data that changed since). Only streams of more than one split are kept.
pub type Plans = BTreeMap<String, Vec<PlannedSplit>>;

/// One split of a kept plan: the source's id and descriptor, as `splits` returned them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedSplit {
    pub id: String,
    pub descriptor: Opaque,
}

/// What stateful transforms checkpointed: by transform name, then stream.
pub type TransformStates = BTreeMap<String, BTreeMap<String, Opaque>>;

/// The durable state of one pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The last epoch that was prepared (0: none yet).
    pub epoch: u64,
    /// Whether the commit of `epoch` is recorded. A prepared but uncommitted epoch is
    /// committed again (sinks commit idempotently) before a run reads anything new.
    pub committed: bool,
    /// Source positions after `epoch`.
    pub positions: Positions,
    /// What `epoch` must publish.
    pub pending: Vec<PendingCommit>,
    /// Each stream's schema and its version.
    pub schemas: BTreeMap<String, SchemaRecord>,
    /// Totals over all epochs, for `state show`.
    pub totals: Totals,
    /// When the commit of `epoch` was recorded (RFC 3339, UTC), for `host status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed_at: Option<String>,
    /// What stateful transforms checkpointed with `epoch`.
    #[serde(default)]
    pub transforms: TransformStates,
    /// The split plans of the streams `epoch` left read part-way.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub plans: Plans,
}

/// A sink's prepared epoch for one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCommit {
    pub stream: String,
    /// The sink's token.
    pub token: Opaque,
    /// The dead-letter queue's token, when letters were staged in the epoch.
    #[serde(default, deserialize_with = "crate::dlq::Token::deserialize_recorded")]
    pub dlq_token: Option<crate::dlq::Token>,
}

/// A stream's schema (a schema-only Arrow IPC stream) and its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaRecord {
    pub version: u32,
    pub ipc: Opaque,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub rows_written: u64,
    pub rows_rejected: u64,
}

/// Why state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {action} the state file {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the state file {} is corrupted ({reason}); it was not changed. Restore it from a backup, or run `host state reset` to start over (outputs already published stay)", .path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// Scale-out: the split was claimed by another worker since this one last wrote its
    /// state (this worker's lease ran out); its open epoch must not be published.
    #[error("split {split} was taken over by {by} (this worker's lease ran out); its epoch is abandoned unpublished, and the new holder resumes from the last committed position")]
    Fenced { split: String, by: String },
    /// Scale-out: the cluster's bucket could not be written.
    #[error("cannot write the state `{key}` in the cluster's bucket: {message}")]
    Remote { key: String, message: String },
}

/// A place that keeps pipeline state.
pub trait StateStore: Send + Sync {
    /// The last state written, or the empty state when there is none.
    fn load(&self) -> Result<State, StateError>;
    /// Replace the state atomically: after a crash, either the old or the new state is read.
    fn save(&self, state: &State) -> Result<(), StateError>;
}

/// The embedded store: `<state dir>/<pipeline>/state`.
pub struct LocalStore {
    dir: PathBuf,
}

const MAGIC: &str = "ingest-state v1";

impl LocalStore {
    pub fn new(state_dir: &Path, pipeline: &str) -> Self {
        LocalStore {
            dir: state_dir.join(pipeline),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn io(&self, action: &'static str, source: std::io::Error) -> StateError {
        StateError::Io {
            action,
            path: self.path(),
            source,
        }
    }
}

impl StateStore for LocalStore {
    fn load(&self) -> Result<State, StateError> {
        let path = self.path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(e) => return Err(self.io("read", e)),
        };
        decode(&bytes).map_err(|reason| StateError::Corrupt { path, reason })
    }

    fn save(&self, state: &State) -> Result<(), StateError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| self.io("create the directory of", e))?;
        let bytes = encode(state);
        let tmp = self.dir.join("state.tmp");
        let mut file = std::fs::File::create(&tmp).map_err(|e| self.io("write", e))?;
        file.write_all(&bytes).map_err(|e| self.io("write", e))?;
        file.sync_all().map_err(|e| self.io("sync", e))?;
        drop(file);
        if !state.committed {
            crate::fault::point("mid-state-write", state.epoch);
        }
        std::fs::rename(&tmp, self.path()).map_err(|e| self.io("replace", e))?;
        sync_dir(&self.dir).map_err(|e| self.io("sync the directory of", e))
    }
}

/// Make a rename in `dir` durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// `ingest-state v1 <len> <crc32>\n<json>`
fn encode(state: &State) -> Vec<u8> {
    let json = serde_json::to_vec_pretty(state).expect("state serializes");
    let mut out = format!("{MAGIC} {} {:08x}\n", json.len(), crc32fast::hash(&json)).into_bytes();
    out.extend_from_slice(&json);
    out
}

fn decode(bytes: &[u8]) -> Result<State, String> {
    let newline = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or("no header line")?;
    let header = std::str::from_utf8(&bytes[..newline]).map_err(|_| "header is not text")?;
    let rest = header
        .strip_prefix(MAGIC)
        .ok_or_else(|| format!("header {header:?} does not start with {MAGIC:?}"))?;
    let mut fields = rest.split_whitespace();
    let len: usize = fields
        .next()
        .and_then(|f| f.parse().ok())
        .ok_or("header has no length")?;
    let crc = fields
        .next()
        .and_then(|f| u32::from_str_radix(f, 16).ok())
        .ok_or("header has no checksum")?;
    let body = &bytes[newline + 1..];
    if body.len() != len {
        return Err(format!(
            "expected {len} bytes of state, found {} (truncated?)",
            body.len()
        ));
    }
    if crc32fast::hash(body) != crc {
        return Err("checksum mismatch".into());
    }
    serde_json::from_slice(body).map_err(|e| format!("unreadable state record: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        let mut s = State {
            epoch: 7,
            committed: true,
            ..State::default()
        };
        s.positions
            .entry("orders".into())
            .or_default()
            .insert("a.csv".into(), Opaque(b"{}".to_vec()));
        s
    }

    #[test]
    fn opaque_bytes_are_hex_in_the_state_file() {
        let text = serde_json::to_string(&sample()).unwrap();
        assert!(text.contains(r#""a.csv":"7b7d""#), "{text}");
    }

    #[test]
    fn a_saved_state_loads_back_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path(), "p");
        assert_eq!(store.load().unwrap(), State::default());
        store.save(&sample()).unwrap();
        assert_eq!(store.load().unwrap(), sample());
    }

    #[test]
    fn a_truncated_state_file_is_reported_not_reset() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path(), "p");
        store.save(&sample()).unwrap();
        let bytes = std::fs::read(store.path()).unwrap();
        std::fs::write(store.path(), &bytes[..bytes.len() - 5]).unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(
            err.contains("corrupted") && err.contains("truncated"),
            "{err}"
        );
    }

    #[test]
    fn a_flipped_byte_is_caught_by_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path(), "p");
        store.save(&sample()).unwrap();
        let mut bytes = std::fs::read(store.path()).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 0x01;
        std::fs::write(store.path(), &bytes).unwrap();
        assert!(store.load().unwrap_err().to_string().contains("checksum"));
    }
}

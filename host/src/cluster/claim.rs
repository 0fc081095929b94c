//! One worker's hold on one split: the split's record in the cluster's bucket (its
//! checkpoint state, who holds it, how often it was claimed), written only by
//! compare-and-set on the revision this worker last wrote. That revision is the fence:
//! another worker's claim moves it, and from then on every state write of this worker is
//! refused, before the epoch it would record is published.
//!
//! Also the pipeline's epoch counter: every epoch of every split takes the next number.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::kv::{Kv, PutError};
use super::{key_token, now_ms, ClusterError};
use crate::checkpoint::{State, StateError, StateStore};

/// A split's record in the bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitRecord {
    pub pipeline: String,
    pub stream: String,
    pub split: String,
    /// The worker holding the split, or that held it last.
    pub owner: String,
    /// How many times the split was claimed (the writer tag's suffix).
    pub claims: u64,
    /// When the current claim was taken (ms since 1970).
    pub claimed_at: u64,
    /// When the record was last written (ms since 1970).
    pub updated_at: u64,
    /// Whether the split was read to its end under the current claim.
    pub done: bool,
    /// Why the last claim gave up, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The split's checkpoint state, as `host run` keeps a pipeline's.
    pub state: State,
}

/// The key of the record of `split` of `stream` of `pipeline`.
pub fn split_key(pipeline: &str, stream: &str, split: &str) -> String {
    format!(
        "split.{}.{}",
        key_token(pipeline),
        split_hash(stream, split)
    )
}

/// 16 hex digits naming a split within its pipeline.
fn split_hash(stream: &str, split: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(stream.as_bytes());
    h.update([0]);
    h.update(split.as_bytes());
    hex::encode(&h.finalize()[..8])
}

/// The key of `pipeline`'s epoch counter.
fn epoch_key(pipeline: &str) -> String {
    format!("epoch.{}", key_token(pipeline))
}

/// A worker's claim on one split.
pub struct Claim {
    kv: Arc<Kv>,
    pub key: String,
    pub pipeline: String,
    pub stream: String,
    pub split: String,
    /// The split's descriptor, as the source's `splits` gave it.
    pub descriptor: Vec<u8>,
    pub worker: String,
    /// Tells this claim's staging apart from other writers' (`host.writer-tag`).
    pub tag: String,
    held: Mutex<Held>,
}

/// The record as this claim last wrote it, and the revision that write got.
struct Held {
    record: SplitRecord,
    revision: u64,
}

impl Claim {
    /// Claim `split` of `stream` for `worker`: the record's revision moves, which fences
    /// off any worker that held the split before.
    pub fn take(
        kv: Arc<Kv>,
        pipeline: &str,
        stream: &str,
        split: &str,
        descriptor: &[u8],
        worker: &str,
    ) -> Result<Claim, ClusterError> {
        let key = split_key(pipeline, stream, split);
        // A conflict here is another worker writing the record at the same moment (a
        // holder whose lease just ran out): read again and claim over it.
        for _ in 0..10 {
            let (mut record, revision) = match kv.get(&key)? {
                Some(entry) => (
                    serde_json::from_slice::<SplitRecord>(&entry.value).map_err(|e| {
                        ClusterError::Protocol(format!("the record `{key}` is unreadable: {e}"))
                    })?,
                    entry.revision,
                ),
                None => (SplitRecord::default(), 0),
            };
            record.pipeline = pipeline.to_string();
            record.stream = stream.to_string();
            record.split = split.to_string();
            record.owner = worker.to_string();
            record.claims += 1;
            record.claimed_at = now_ms();
            record.updated_at = record.claimed_at;
            record.done = false;
            record.error = None;
            let value = serde_json::to_vec(&record).expect("a split record serializes");
            match kv.put(&key, &value, revision) {
                Ok(revision) => {
                    let tag = format!("{}-{}", &key[key.len() - 16..], record.claims);
                    return Ok(Claim {
                        kv,
                        key,
                        pipeline: pipeline.to_string(),
                        stream: stream.to_string(),
                        split: split.to_string(),
                        descriptor: descriptor.to_vec(),
                        worker: worker.to_string(),
                        tag,
                        held: Mutex::new(Held { record, revision }),
                    });
                }
                Err(PutError::Conflict) => continue,
                Err(PutError::Failed(e)) => return Err(e),
            }
        }
        Err(ClusterError::Invalid(format!(
            "cannot claim split `{split}` of stream `{stream}`: its record keeps changing"
        )))
    }

    /// The record as this claim last wrote it.
    pub fn record(&self) -> SplitRecord {
        self.held().record.clone()
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Write the record changed by `change`, if this claim still holds the split.
    fn write(&self, change: impl FnOnce(&mut SplitRecord)) -> Result<(), StateError> {
        let mut held = self.held();
        let mut record = held.record.clone();
        change(&mut record);
        record.updated_at = now_ms();
        let value = serde_json::to_vec(&record).expect("a split record serializes");
        match self.kv.put(&self.key, &value, held.revision) {
            Ok(revision) => {
                held.record = record;
                held.revision = revision;
                Ok(())
            }
            Err(PutError::Conflict) => {
                let by = self
                    .kv
                    .get(&self.key)
                    .ok()
                    .flatten()
                    .and_then(|e| serde_json::from_slice::<SplitRecord>(&e.value).ok())
                    .map(|r| format!("worker `{}` (claim {})", r.owner, r.claims))
                    .unwrap_or_else(|| "another worker".into());
                Err(StateError::Fenced {
                    split: format!("{} of stream `{}`", self.split, self.stream),
                    by,
                })
            }
            Err(PutError::Failed(e)) => Err(StateError::Remote {
                key: self.key.clone(),
                message: e.to_string(),
            }),
        }
    }

    /// Record that the split was read to its end.
    pub fn finish(&self) -> Result<(), StateError> {
        self.write(|r| r.done = true)
    }

    /// Record why this claim gave up on the split.
    pub fn fail(&self, error: &str) -> Result<(), StateError> {
        let error = error.to_string();
        self.write(|r| r.error = Some(error))
    }

    /// The next epoch number of the pipeline, unique across every split and worker.
    pub fn next_epoch(&self) -> Result<u64, ClusterError> {
        let key = epoch_key(&self.pipeline);
        loop {
            let (last, revision) = match self.kv.get(&key)? {
                Some(entry) => {
                    let text = String::from_utf8_lossy(&entry.value);
                    let last = text.trim().parse::<u64>().map_err(|_| {
                        ClusterError::Protocol(format!("the epoch counter `{key}` holds {text:?}"))
                    })?;
                    (last, entry.revision)
                }
                None => (0, 0),
            };
            let next = last + 1;
            match self.kv.put(&key, next.to_string().as_bytes(), revision) {
                Ok(_) => return Ok(next),
                Err(PutError::Conflict) => continue,
                Err(PutError::Failed(e)) => return Err(e),
            }
        }
    }
}

impl StateStore for Claim {
    fn load(&self) -> Result<State, StateError> {
        Ok(self.held().record.state.clone())
    }

    fn save(&self, state: &State) -> Result<(), StateError> {
        if !state.committed {
            crate::fault::point("mid-state-write", state.epoch);
        }
        let state = state.clone();
        self.write(move |r| r.state = state)
    }
}

/// The record of `split` of `stream` of `pipeline`, if it has one.
pub fn record_of(
    kv: &Kv,
    pipeline: &str,
    stream: &str,
    split: &str,
) -> Result<Option<SplitRecord>, ClusterError> {
    let key = split_key(pipeline, stream, split);
    match kv.get(&key)? {
        None => Ok(None),
        Some(entry) => serde_json::from_slice(&entry.value)
            .map(Some)
            .map_err(|e| ClusterError::Protocol(format!("the record `{key}` is unreadable: {e}"))),
    }
}

/// Every split record of `pipeline` (all pipelines when `None`), by key.
pub fn records(kv: &Kv, pipeline: Option<&str>) -> Result<Vec<SplitRecord>, ClusterError> {
    let prefix = match pipeline {
        Some(p) => format!("split.{}.", key_token(p)),
        None => "split.".to_string(),
    };
    let mut out = Vec::new();
    for key in kv.keys(&prefix)? {
        if let Some(entry) = kv.get(&key)? {
            let record = serde_json::from_slice::<SplitRecord>(&entry.value).map_err(|e| {
                ClusterError::Protocol(format!("the record `{key}` is unreadable: {e}"))
            })?;
            out.push(record);
        }
    }
    Ok(out)
}

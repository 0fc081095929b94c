//! `host submit`: plan a pipeline's splits and publish one work message per split.
//!
//! A message carries everything a worker on another machine needs to run its split: the
//! pipeline's text and path (paths in it are resolved from there, so inputs and outputs
//! must be reachable at the same paths on every worker: a shared mount, or object
//! storage), the stream, and the split as the source planned it. Its message id makes a
//! publish repeated within one submission count once; a split queued twice by two
//! submissions runs once and is then acknowledged as done (see `worker`).

use serde::{Deserialize, Serialize};

use super::{ensure_queue, kv, now_ms, ClusterError, Names};
use crate::checkpoint::Opaque;

/// One split to run, as a work message carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Work {
    pub pipeline: String,
    /// The pipeline file, absolute: relative paths in `text` are resolved from its folder.
    pub file: std::path::PathBuf,
    /// The pipeline file's text as submitted.
    pub text: String,
    pub stream: String,
    pub split: String,
    pub descriptor: Opaque,
    /// When it was submitted (ms since 1970).
    pub submitted_at: u64,
}

/// What `host submit` records of a pipeline, for `host status --nats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub pipeline: String,
    pub file: std::path::PathBuf,
    pub splits: u64,
    pub submitted_at: u64,
}

/// The key of `pipeline`'s job record.
pub fn job_key(pipeline: &str) -> String {
    format!("job.{}", super::key_token(pipeline))
}

/// Publish `work` (every split of a pipeline) to the cluster's queue, creating the queue
/// (with `lease`) and the bucket first when they do not exist.
pub fn publish(
    names: &Names,
    lease: std::time::Duration,
    work: &[Work],
) -> Result<(), ClusterError> {
    let mut js = kv::connect(&names.url, "ingest-submit")?;
    ensure_queue(&mut js, names, lease)?;
    let store = names.kv("ingest-submit")?;
    let mut replies = Vec::with_capacity(work.len());
    for item in work {
        let subject = names.work_subject(&item.pipeline);
        let payload = serde_json::to_vec(item).expect("a work message serializes");
        let id = message_id(item);
        let reply = js
            .publish(&subject, &[("Nats-Msg-Id", id.as_str())], &payload)
            .map_err(|source| ClusterError::Nats {
                what: format!("publish split `{}` to `{subject}`", item.split),
                source,
            })?;
        replies.push((reply, item));
    }
    let mut others = Default::default();
    for (reply, item) in replies {
        js.pub_ack(&reply, &mut others)
            .map_err(|source| ClusterError::Nats {
                what: format!("publish split `{}`", item.split),
                source,
            })?;
    }
    if let Some(first) = work.first() {
        let job = Job {
            pipeline: first.pipeline.clone(),
            file: first.file.clone(),
            splits: work.len() as u64,
            submitted_at: now_ms(),
        };
        store.put_any(
            &job_key(&first.pipeline),
            &serde_json::to_vec(&job).expect("a job serializes"),
        )?;
    }
    Ok(())
}

/// The split, the pipeline text it runs under and the submission, as 32 hex digits: a
/// publish repeated within one submission is stored once, a later submission is new work.
fn message_id(work: &Work) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [&work.pipeline, &work.stream, &work.split, &work.text] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.update(&work.descriptor.0);
    h.update(work.submitted_at.to_le_bytes());
    hex::encode(&h.finalize()[..16])
}

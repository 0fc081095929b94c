//! What travels between the stages of a run: data and control in one ordered stream, so
//! the epoch barrier is visible in the types and everything before a barrier belongs to
//! its epoch.

use std::sync::Arc;

use crate::checkpoint::{Plans, Positions, TransformStates};
use crate::config::OnError;

/// One message between two stages.
pub enum Message {
    /// A stream begins; its schema as the receiving stage will see it.
    Stream {
        name: String,
        schema: Vec<u8>,
        primary_key: Vec<String>,
    },
    /// One record batch (an IPC stream) with its row count.
    Data { batch: Vec<u8>, rows: u64 },
    /// Records a plugin rejected, to be routed by its `on_error` policy.
    Rejects(RejectBatch),
    /// The open stream was read to its end in this run; the barrier that follows closes
    /// its last epoch.
    Finish,
    /// Close an epoch.
    Barrier(Barrier),
    /// Rows sampled for `host tap` where they left the stage `stage`, as JSON objects,
    /// on their way to the sink stage, which hands them to the tap (see [`crate::tap`]).
    Tap { stage: String, rows: Vec<String> },
    /// End of input.
    End,
}

/// The rows of `batch` (an IPC stream of `rows` rows) that taps on `stage` want, if any.
pub fn tapped(stage: &str, batch: &[u8], rows: u64) -> Option<Message> {
    let wanted = crate::tap::hub().take(stage, rows as usize);
    if wanted == 0 {
        return None;
    }
    let decoded = crate::batch::decode(batch).ok()?;
    let rows = (0..wanted.min(decoded.num_rows()))
        .map(|i| crate::batch::row_as_json(&decoded, i))
        .collect();
    Some(Message::Tap {
        stage: stage.to_string(),
        rows,
    })
}

/// The end of an epoch: the source positions after it, and the state each stateful
/// transform checkpointed at it (added by the transforms as the barrier passes).
pub struct Barrier {
    pub epoch: u64,
    pub positions: Positions,
    /// The split plans of the streams read part-way at the barrier.
    pub plans: Plans,
    /// The source commit times (`_commit_ts`, µs since 1970) of the epoch's changes, when
    /// its stream carries them: a sample of at most [`COMMIT_TIMES`].
    pub commit_times: Vec<i64>,
    pub transforms: TransformStates,
}

/// Commit times an epoch keeps for its lag figures, at most.
pub const COMMIT_TIMES: usize = 4096;

/// Records one plugin rejected from one batch.
pub struct RejectBatch {
    /// The plugin, as messages name it.
    pub plugin: Arc<str>,
    pub on_error: OnError,
    pub stream: String,
    pub letters: Vec<Rejected>,
}

/// One rejected record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rejected {
    /// Where the record came from (`file:line`), when known.
    pub location: Option<String>,
    pub reason: String,
    /// The raw text a source could not parse, or the row as a JSON object.
    pub record: String,
    /// A masking stage replaced its personal data (`[dlq] protect = "mask"`).
    pub masked: bool,
}

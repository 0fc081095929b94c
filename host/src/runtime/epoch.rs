//! The two-phase commit of an epoch, written once: the sink stage, recovery and replay all
//! commit through [`Epochs`], and every fault point of the protocol is here.
//!
//! Committing epoch E for one stream:
//!
//! 1. phase one: the sink stages E durably (`prepare` → token) and so does the dead-letter
//!    queue;
//! 2. the state records E as prepared, with the tokens, the source positions after E, the
//!    transforms' checkpoints and the schemas — written atomically;
//! 3. phase two: the sink publishes E (`commit`, idempotent), then the dead-letter queue
//!    publishes E's letters (and removes the files a replay replaced);
//! 4. the state records E as committed. Only then may the caller acknowledge the
//!    positions to the source.
//!
//! A crash anywhere leaves either E unrecorded (its staging is discarded and E is read
//! again) or E prepared, which [`Epochs::recover`] publishes again before anything new is
//! read: publishing is idempotent on both sides.

use std::collections::BTreeMap;

use wasmtime::component::ResourceAny;

use super::instances::Sink;
use super::{Prepared, RunError};
use crate::checkpoint::{
    PendingCommit, Plans, Positions, SchemaRecord, State, StateStore, TransformStates,
};
use crate::dlq::{self, DeadLetters};
use crate::fault;
use crate::plugin::bindings::types::StreamInfo;

/// A pipeline's committed state, and the only way to change it.
pub struct Epochs {
    store: Box<dyn StateStore>,
    state: State,
}

/// What an epoch closes with, besides what the sink and the dead-letter queue staged.
pub struct Closing {
    pub epoch: u64,
    /// Where every source split resumes after the epoch.
    pub positions: Positions,
    /// The split plans of the streams read part-way after the epoch.
    pub plans: Plans,
    /// Every stateful transform's checkpoint after the epoch (replacing the previous).
    pub transforms: TransformStates,
    pub rows_written: u64,
    pub rows_rejected: u64,
}

impl Epochs {
    /// The pipeline's state as last written: its state directory's on one host, the
    /// claimed split's record in the cluster's bucket under `host worker`.
    pub fn load(prepared: &Prepared) -> Result<Self, RunError> {
        let store: Box<dyn StateStore> = match &prepared.claim {
            None => Box::new(super::state_store(&prepared.pipeline)),
            Some(claim) => Box::new(ClaimStore(claim.clone())),
        };
        let state = store.load()?;
        Ok(Epochs { store, state })
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// The streams' recorded schemas; a change becomes durable with the next epoch.
    pub fn schemas_mut(&mut self) -> &mut BTreeMap<String, SchemaRecord> {
        &mut self.state.schemas
    }

    /// Publish an epoch that was prepared but whose commit was not recorded (an earlier
    /// run stopped between the phases), before anything new is read.
    pub async fn recover(&mut self, prepared: &Prepared) -> Result<(), RunError> {
        if self.state.epoch == 0 || self.state.committed {
            return Ok(());
        }
        let epoch = self.state.epoch;
        tracing::info!(
            epoch,
            "committing the epoch an earlier run prepared but did not finish"
        );
        let mut sink = prepared
            .sink
            .start(&prepared.runtime, &prepared.cancel)
            .await?;
        let mode = super::wit_write_mode(&prepared.pipeline.sink.write_mode);
        for pending in &self.state.pending {
            let info = StreamInfo {
                name: pending.stream.clone(),
                schema: self
                    .state
                    .schemas
                    .get(&pending.stream)
                    .map(|s| s.ipc.0.clone())
                    .unwrap_or_default(),
                primary_key: Vec::new(),
                cursor_field: None,
                sync_modes: Vec::new(),
            };
            let writer = sink.open(&info, &mode).await?;
            let published = publish(&mut sink, writer, epoch, pending).await?;
            tracing::info!(epoch, published = published.len(), "re-committed");
            sink.close(writer).await?;
        }
        self.record_commit()
    }

    /// Commit `closing.epoch` of `stream`: everything the sink's `writer` and `letters`
    /// staged since the last epoch. Returns what the sink published.
    pub async fn commit(
        &mut self,
        sink: &mut Sink,
        writer: ResourceAny,
        stream: &str,
        letters: &mut DeadLetters,
        closing: Closing,
    ) -> Result<Vec<String>, RunError> {
        let epoch = closing.epoch;
        // Phase one: the sink and the dead-letter queue stage the epoch durably.
        fault::point("before-prepare", epoch);
        let token = sink.prepare(writer, epoch).await?;
        let dlq_token = letters.prepare(epoch)?;
        fault::point("after-prepare", epoch);
        let state = &mut self.state;
        state.epoch = epoch;
        state.committed = false;
        state.positions = closing.positions;
        state.plans = closing.plans;
        state.transforms = closing.transforms;
        state.pending = vec![PendingCommit {
            stream: stream.to_string(),
            token: token.into(),
            dlq_token,
        }];
        state.totals.rows_written += closing.rows_written;
        state.totals.rows_rejected += closing.rows_rejected;
        if let Err(e) = self.store.save(state) {
            // The epoch is not recorded, so nothing will ever publish it: its staging goes
            // (under scale-out, a fenced worker's epoch, whose number is its alone).
            let _ = sink.abort(writer, epoch).await;
            return Err(e.into());
        }
        fault::point("after-state", epoch);
        // Phase two: publish, then record the commit.
        let pending = self.state.pending[0].clone();
        let published = publish(sink, writer, epoch, &pending).await?;
        self.record_commit()?;
        Ok(published)
    }

    fn record_commit(&mut self) -> Result<(), RunError> {
        fault::point("after-commit", self.state.epoch);
        self.state.committed = true;
        self.state.committed_at = Some(crate::dlq::now_rfc3339());
        self.state.pending.clear();
        self.store.save(&self.state)?;
        Ok(())
    }
}

/// A claim's record as the state store of its run.
struct ClaimStore(std::sync::Arc<crate::cluster::Claim>);

impl StateStore for ClaimStore {
    fn load(&self) -> Result<State, crate::checkpoint::StateError> {
        self.0.load()
    }

    fn save(&self, state: &State) -> Result<(), crate::checkpoint::StateError> {
        self.0.save(state)
    }
}

/// Phase two for one stream: the sink publishes, then the dead-letter queue does. Both
/// are idempotent, so recovery repeats this as often as it takes.
async fn publish(
    sink: &mut Sink,
    writer: ResourceAny,
    epoch: u64,
    pending: &PendingCommit,
) -> Result<Vec<String>, RunError> {
    let published = sink.commit(writer, epoch, pending.token.as_bytes()).await?;
    for name in &published {
        tracing::info!(epoch, "published {name}");
    }
    fault::point("after-sink-commit", epoch);
    if let Some(token) = &pending.dlq_token {
        dlq::commit(token)?;
    }
    Ok(published)
}

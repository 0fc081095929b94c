//! One attempt at running the pipeline: recovery of a half-committed epoch, then the
//! source, transform and sink stages, each on a thread of its own, joined by byte-bounded
//! channels, with the epoch barrier travelling in-band between the batches.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use wasmtime::component::ResourceAny;

use super::channel::{self, Receiver, Sender};
use super::instances::{Sink, Transform};
use super::{state_store, wit_write_mode, Prepared, RunError, Summary};
use crate::checkpoint::{PendingCommit, SchemaRecord, State, StateStore};
use crate::config::OnError;
use crate::dlq::{self, DeadLetter, DeadLetters};
use crate::plugin::bindings::transform::exports::ingest::plugin::transform::Output;
use crate::plugin::bindings::types::{Reject, StreamInfo};
use crate::{batch, fault, schema};

/// Bytes of batches in flight between two stages.
const CHANNEL_BYTES: usize = 16 << 20;

/// Positions by stream, then split, as hex.
pub(super) type Positions = BTreeMap<String, BTreeMap<String, String>>;

/// Transform states by transform name, then stream, as hex.
type TransformStates = BTreeMap<String, BTreeMap<String, String>>;

/// What travels between stages: data and control in one ordered stream.
pub(super) enum Message {
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
    /// Close `epoch`: everything before this message belongs to it. Each transform adds
    /// the state it checkpointed, if any.
    Barrier {
        epoch: u64,
        positions: Positions,
        transforms: TransformStates,
    },
    /// End of input.
    End,
}

pub(super) struct RejectBatch {
    pub plugin: Arc<str>,
    pub on_error: OnError,
    pub stream: String,
    pub letters: Vec<(Option<String>, String, String)>,
}

/// Counters the stages fill in.
#[derive(Default)]
pub(super) struct SourceStats {
    pub rows: u64,
    pub bytes: u64,
}

#[derive(Default)]
struct SinkStats {
    rows: u64,
    published: u64,
    rejected: u64,
    dead_lettered: u64,
    epochs: u64,
    last_epoch: u64,
}

pub(super) fn hex_decode(plugin: &str, text: &str) -> Result<Vec<u8>, RunError> {
    hex::decode(text).map_err(|e| RunError::Fatal {
        plugin: plugin.to_string(),
        message: format!("stored position is not hex ({e}); the state file was edited by hand?"),
    })
}

/// Run the pipeline once from the last checkpoint; fills `summary` as it goes.
pub async fn attempt(prepared: Arc<Prepared>, summary: &mut Summary) -> Result<(), RunError> {
    let store = state_store(&prepared.pipeline);
    let mut state = store.load()?;
    recover(&prepared, &store, &mut state).await?;
    summary.resumed_after_epoch = state.epoch;
    summary.last_epoch = state.epoch;

    let (source_tx, mut next_rx) = channel::channel::<Message>(CHANNEL_BYTES);
    let (ack_tx, ack_rx) = mpsc::unbounded_channel::<Positions>();

    let source = prepared
        .source
        .start(&prepared.runtime, &prepared.cancel)
        .await?;
    let mut transforms = Vec::new();
    for t in &prepared.transforms {
        transforms.push(t.start(&prepared.runtime, &prepared.cancel).await?);
    }
    let sink = prepared
        .sink
        .start(&prepared.runtime, &prepared.cancel)
        .await?;

    let source_task = dedicated(super::reading::source_stage(
        prepared.clone(),
        source,
        state.positions.clone(),
        state.epoch + 1,
        source_tx,
        ack_rx,
    ));
    let mut transform_tasks = Vec::new();
    for (t, loaded) in transforms.into_iter().zip(&prepared.transforms) {
        let (tx, rx) = channel::channel::<Message>(CHANNEL_BYTES);
        let states = state
            .transforms
            .get(&loaded.stage.name)
            .cloned()
            .unwrap_or_default();
        transform_tasks.push(dedicated(transform_stage(
            t,
            loaded.stage.name.clone(),
            states,
            loaded.stage.on_error,
            next_rx,
            tx,
            prepared.cancel.clone(),
        )));
        next_rx = rx;
    }
    let sink_task = dedicated(sink_stage(prepared.clone(), sink, state, next_rx, ack_tx));

    // Collect every stage's outcome; the cause is the first error that is not merely a
    // stage stopping because its neighbour did.
    let mut cause: Option<RunError> = None;
    let mut note = |r: Result<(), RunError>| {
        if let Err(e) = r {
            let replace = match &cause {
                None => true,
                Some(RunError::Stopped) => !matches!(e, RunError::Stopped),
                // Say which plugin a signal interrupted, when a stage knows.
                Some(RunError::Cancelled { plugin: None }) => {
                    matches!(e, RunError::Cancelled { plugin: Some(_) })
                }
                Some(_) => false,
            };
            if replace {
                cause = Some(e);
            }
        }
    };
    let joined = |r: Result<Result<(), RunError>, tokio::task::JoinError>| {
        r.unwrap_or_else(|e| {
            Err(RunError::Fatal {
                plugin: "host".into(),
                message: format!("a pipeline stage panicked: {e}"),
            })
        })
    };
    let source_result = source_task.await;
    let (source_stats, source_result) = match source_result {
        Ok(Ok(stats)) => (stats, Ok(())),
        Ok(Err(e)) => (SourceStats::default(), Err(e)),
        Err(e) => (SourceStats::default(), joined(Err(e))),
    };
    note(source_result);
    for task in transform_tasks {
        note(joined(task.await));
    }
    let sink_result = sink_task.await;
    let sink_stats = match sink_result {
        Ok(Ok(stats)) => Some(stats),
        Ok(Err(e)) => {
            note(Err(e));
            None
        }
        Err(e) => {
            note(joined(Err(e)));
            None
        }
    };
    summary.rows_read += source_stats.rows;
    summary.bytes_read += source_stats.bytes;
    if let Some(s) = &sink_stats {
        summary.rows_written += s.rows;
        summary.published += s.published;
        summary.rows_rejected += s.rejected;
        summary.rows_dead_lettered += s.dead_lettered;
        summary.epochs += s.epochs;
        if s.last_epoch > 0 {
            summary.last_epoch = s.last_epoch;
        }
    }
    match cause {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// Finish an epoch that was prepared but whose commit was not recorded: commit it again
/// (commit is idempotent) before anything new is read.
pub(super) async fn recover(
    prepared: &Prepared,
    store: &impl StateStore,
    state: &mut State,
) -> Result<(), RunError> {
    if state.epoch == 0 || state.committed {
        return Ok(());
    }
    tracing::info!(
        epoch = state.epoch,
        "committing the epoch an earlier run prepared but did not finish"
    );
    let mut sink = prepared
        .sink
        .start(&prepared.runtime, &prepared.cancel)
        .await?;
    let mode = wit_write_mode(&prepared.pipeline.sink.write_mode);
    for pending in &state.pending {
        let schema = state
            .schemas
            .get(&pending.stream)
            .map(|s| hex_decode(&sink.label, &s.ipc))
            .transpose()?
            .unwrap_or_default();
        let info = StreamInfo {
            name: pending.stream.clone(),
            schema,
            primary_key: Vec::new(),
            cursor_field: None,
            sync_modes: Vec::new(),
        };
        let writer = sink.open(&info, &mode).await?;
        let token = hex_decode(&sink.label, &pending.token)?;
        let published = sink.commit(writer, state.epoch, &token).await?;
        tracing::info!(
            epoch = state.epoch,
            published = published.len(),
            "re-committed"
        );
        sink.close(writer).await?;
        if let Some(dlq_token) = &pending.dlq_token {
            let token: dlq::Token =
                serde_json::from_str(dlq_token).map_err(|e| RunError::Fatal {
                    plugin: "dead-letter queue".into(),
                    message: format!("unreadable token in the state file: {e}"),
                })?;
            dlq::commit(&token)?;
        }
    }
    state.committed = true;
    state.pending.clear();
    store.save(state)?;
    Ok(())
}

/// A batch over the plugin's `max_batch` limit breaks the contract.
pub(super) fn check_size<P>(
    plugin: &super::instances::Instance<P>,
    bytes: usize,
) -> Result<(), RunError> {
    let max = plugin.limits().max_batch_bytes;
    if bytes > max {
        return Err(RunError::Contract {
            plugin: plugin.label.to_string(),
            message: format!(
                "returned a batch of {}, over its `max_batch` limit of {}; return smaller batches (or raise `max_batch`)",
                crate::sandbox::show_bytes(bytes),
                crate::sandbox::show_bytes(max)
            ),
        });
    }
    Ok(())
}

pub(super) fn closed(_: channel::Closed) -> RunError {
    RunError::Stopped
}

pub(super) fn cancelled(prepared: &Prepared) -> Result<(), RunError> {
    if prepared.cancel.is_cancelled() {
        Err(RunError::Cancelled { plugin: None })
    } else {
        Ok(())
    }
}

/// What the open epoch holds so far, measured against the checkpoint policy.
pub(super) struct EpochClock {
    epoch: u64,
    pub rows: u64,
    pub bytes: u64,
    since: Instant,
    /// Positions moved since the last barrier (even without rows: rejects, progress).
    pub dirty: bool,
}

impl EpochClock {
    pub(super) fn new(epoch: u64) -> Self {
        EpochClock {
            epoch,
            rows: 0,
            bytes: 0,
            since: Instant::now(),
            dirty: false,
        }
    }

    pub(super) fn due(&self, policy: &crate::config::CheckpointPolicy) -> bool {
        self.rows >= policy.every_rows
            || self.bytes >= policy.every_bytes
            || self.since.elapsed() >= policy.every
    }

    /// Close the open epoch: send its barrier with the positions after it.
    pub(super) async fn close(
        &mut self,
        tx: &Sender<Message>,
        positions: &Positions,
    ) -> Result<(), RunError> {
        let barrier = Message::Barrier {
            epoch: self.epoch,
            positions: positions.clone(),
            transforms: TransformStates::new(),
        };
        tx.send(barrier, 0).await.map_err(closed)?;
        *self = EpochClock::new(self.epoch + 1);
        Ok(())
    }
}

/// Run one stage on a thread of its own: the future is polled on a blocking-pool thread
/// (timers and I/O still come from the runtime), so the operating system schedules each
/// stage, and a stage that waits lets another run, instead of stages taking turns on the
/// runtime's few worker threads.
pub(super) fn dedicated<F>(stage: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || runtime.block_on(stage))
}

/// Passes every message through one transform plugin.
async fn transform_stage(
    mut transform: Transform,
    stage: String,
    mut states: BTreeMap<String, String>,
    on_error: OnError,
    mut rx: Receiver<Message>,
    tx: Sender<Message>,
    cancel: CancellationToken,
) -> Result<(), RunError> {
    let label = transform.label.clone();
    let mut open: Option<(ResourceAny, arrow::datatypes::SchemaRef, String)> = None;
    loop {
        let Some((message, permit)) = rx.recv().await else {
            return Err(RunError::Stopped);
        };
        if cancel.is_cancelled() {
            return Err(RunError::Cancelled { plugin: None });
        }
        match message {
            Message::Stream {
                name,
                schema,
                primary_key,
            } => {
                if let Some((handle, _, _)) = open.take() {
                    transform.close(handle).await?;
                }
                let state = match states.get(&name) {
                    Some(hex) => Some(hex_decode(&label, hex)?),
                    None => None,
                };
                let (handle, output) = transform.open(&schema, state.as_ref()).await?;
                let declared = batch::decode_schema(&output).map_err(|e| RunError::Contract {
                    plugin: label.to_string(),
                    message: format!("declared an unreadable output schema: {e}"),
                })?;
                open = Some((handle, declared, name.clone()));
                let size = output.len();
                tx.send(
                    Message::Stream {
                        name,
                        schema: output,
                        primary_key,
                    },
                    size,
                )
                .await
                .map_err(closed)?;
            }
            Message::Data { batch: input, .. } => {
                let Some((handle, declared, stream)) = &open else {
                    return Err(RunError::Fatal {
                        plugin: "host".into(),
                        message: "data before a stream".into(),
                    });
                };
                let output = transform.process(*handle, &input).await?;
                drop(permit);
                for out in &output.batches {
                    check_size(&transform, out.len())?;
                }
                forward(
                    &label,
                    on_error,
                    stream,
                    declared,
                    output,
                    Some(&input),
                    &tx,
                )
                .await?;
            }
            Message::Barrier {
                epoch,
                positions,
                mut transforms,
            } => {
                if let Some((handle, declared, stream)) = &open {
                    let output = transform.flush(*handle).await?;
                    for out in &output.batches {
                        check_size(&transform, out.len())?;
                    }
                    forward(&label, on_error, stream, declared, output, None, &tx).await?;
                    let state = transform.checkpoint(*handle).await?;
                    if state.is_empty() {
                        states.remove(stream);
                    } else {
                        states.insert(stream.clone(), hex::encode(state));
                    }
                }
                if !states.is_empty() {
                    transforms.insert(stage.clone(), states.clone());
                }
                let barrier = Message::Barrier {
                    epoch,
                    positions,
                    transforms,
                };
                tx.send(barrier, 0).await.map_err(closed)?;
            }
            Message::Rejects(r) => tx.send(Message::Rejects(r), 0).await.map_err(closed)?,
            Message::End => {
                if let Some((handle, _, _)) = open.take() {
                    transform.close(handle).await?;
                }
                tx.send(Message::End, 0).await.map_err(closed)?;
                return Ok(());
            }
        }
    }
}

/// Send a transform's output on, after checking it against the declared schema.
async fn forward(
    label: &Arc<str>,
    on_error: OnError,
    stream: &str,
    declared: &arrow::datatypes::SchemaRef,
    output: Output,
    input: Option<&Vec<u8>>,
    tx: &Sender<Message>,
) -> Result<(), RunError> {
    for out in output.batches {
        let (schema, rows) = batch::inspect(&out).map_err(|e| RunError::Contract {
            plugin: label.to_string(),
            message: format!("returned a batch that is not valid Arrow IPC: {e}"),
        })?;
        if !batch::same_columns(declared, &schema) {
            return Err(RunError::Contract {
                plugin: label.to_string(),
                message: format!(
                    "declared output columns [{}] but returned [{}]",
                    batch::describe(declared),
                    batch::describe(&schema)
                ),
            });
        }
        if rows > 0 {
            let size = out.len();
            tx.send(Message::Data { batch: out, rows }, size)
                .await
                .map_err(closed)?;
        }
    }
    if !output.rejects.is_empty() {
        let decoded = input.and_then(|b| batch::decode(b).ok());
        let letters = output
            .rejects
            .into_iter()
            .map(|mut r: Reject| {
                let record = rejected_record(&mut r, decoded.as_ref());
                (r.location, r.reason, record)
            })
            .collect();
        let reject = RejectBatch {
            plugin: label.clone(),
            on_error,
            stream: stream.to_string(),
            letters,
        };
        tx.send(Message::Rejects(reject), 0).await.map_err(closed)?;
    }
    Ok(())
}

/// The record a transform rejected, for the dead-letter queue: the original it gave, or
/// its row of the input batch as JSON.
pub(super) fn rejected_record(
    reject: &mut Reject,
    input: Option<&arrow::record_batch::RecordBatch>,
) -> String {
    match (reject.original.take(), reject.row, input) {
        (Some(original), _, _) => original,
        (None, Some(row), Some(batch)) => batch::row_as_json(batch, row as usize),
        _ => String::new(),
    }
}

/// The open stream of the sink stage.
struct OpenStream {
    name: String,
    writer: ResourceAny,
    dead_letters: DeadLetters,
    /// Under `[schema] on_change = "quarantine"`: the recorded schema rows must fit.
    conform: Option<arrow::datatypes::SchemaRef>,
}

/// Record the schema `name` opens with, after checking a change against the pipeline's
/// `[schema] on_change` policy. The new version is made durable with the next epoch.
/// Under `quarantine` a changed stream keeps its recorded schema, returned here: its rows
/// are to be conformed to it one batch at a time.
pub(super) fn evolve_schema(
    prepared: &Prepared,
    state: &mut State,
    name: &str,
    schema: &[u8],
) -> Result<Option<arrow::datatypes::SchemaRef>, RunError> {
    let ipc = hex::encode(schema);
    let Some(record) = state.schemas.get_mut(name) else {
        state
            .schemas
            .insert(name.to_string(), SchemaRecord { version: 1, ipc });
        return Ok(None);
    };
    if record.ipc == ipc {
        return Ok(None);
    }
    let unreadable = |e: arrow::error::ArrowError| RunError::Fatal {
        plugin: "host".into(),
        message: format!("the recorded schema of stream `{name}` is unreadable: {e}"),
    };
    let old = batch::decode_schema(&hex_decode("host", &record.ipc)?).map_err(unreadable)?;
    let new = batch::decode_schema(schema).map_err(unreadable)?;
    let changes = schema::diff(&old, &new);
    if changes.is_empty() {
        // Only metadata differs: same columns, same version.
        record.ipc = ipc;
        return Ok(None);
    }
    let described: Vec<String> = changes.iter().map(ToString::to_string).collect();
    let policy = prepared.pipeline.on_schema_change;
    if policy == schema::OnChange::Quarantine {
        tracing::warn!(
            stream = name,
            version = record.version,
            "schema changed ({}); keeping version {} and sending rows that do not fit it to the dead-letter queue",
            described.join(", "),
            record.version
        );
        return Ok(Some(old));
    }
    schema::check(
        name,
        record.version,
        policy,
        prepared.pipeline.widen_to_text,
        changes,
    )?;
    record.version += 1;
    record.ipc = ipc;
    tracing::info!(
        stream = name,
        version = record.version,
        "schema evolved: {}",
        described.join(", ")
    );
    Ok(None)
}

/// The plugin name dead letters of a quarantined schema carry.
pub(super) const QUARANTINE: &str = "host ([schema] on_change = \"quarantine\")";

/// Bring a batch to the recorded schema of a quarantined stream: the rows that fit, as IPC
/// with their count, and the rows that do not, as dead letters.
pub(super) fn quarantine(
    pipeline: &str,
    stream: &str,
    target: &arrow::datatypes::SchemaRef,
    ipc: &[u8],
) -> Result<(Vec<u8>, u64, Vec<DeadLetter>), RunError> {
    let failed = |e: arrow::error::ArrowError| RunError::Fatal {
        plugin: QUARANTINE.into(),
        message: format!(
            "cannot check a batch of stream `{stream}` against its recorded schema: {e}"
        ),
    };
    let data = batch::decode(ipc).map_err(failed)?;
    let conformed = schema::conform(&data, target).map_err(failed)?;
    let letters = conformed
        .misfits
        .into_iter()
        .map(|(row, reason)| DeadLetter {
            time: dlq::now_rfc3339(),
            pipeline: pipeline.to_string(),
            plugin: QUARANTINE.to_string(),
            stream: stream.to_string(),
            location: None,
            reason,
            record: batch::row_as_json(&data, row),
        })
        .collect();
    let rows = conformed.batch.num_rows() as u64;
    let out = batch::encode(&conformed.batch).map_err(failed)?;
    Ok((out, rows, letters))
}

/// Writes batches, routes rejects, and runs the commit protocol at every barrier.
async fn sink_stage(
    prepared: Arc<Prepared>,
    mut sink: Sink,
    mut state: State,
    mut rx: Receiver<Message>,
    acks: mpsc::UnboundedSender<Positions>,
) -> Result<SinkStats, RunError> {
    let mut stats = SinkStats::default();
    let mut open: Option<OpenStream> = None;
    let result = sink_loop(
        &prepared, &mut sink, &mut state, &mut rx, &acks, &mut stats, &mut open,
    )
    .await;
    if result.is_err() {
        // Discard the open epoch; after a trap the instance is gone and the next start
        // aborts it instead.
        if let Some(stream) = open.as_mut() {
            stream.dead_letters.abort();
            let _ = sink.abort(stream.writer, state.epoch + 1).await;
        }
    }
    result.map(|()| stats)
}

async fn sink_loop(
    prepared: &Prepared,
    sink: &mut Sink,
    state: &mut State,
    rx: &mut Receiver<Message>,
    acks: &mpsc::UnboundedSender<Positions>,
    stats: &mut SinkStats,
    open: &mut Option<OpenStream>,
) -> Result<(), RunError> {
    let store = state_store(&prepared.pipeline);
    let mode = wit_write_mode(&prepared.pipeline.sink.write_mode);
    let mut epoch_rows = 0u64;
    let mut epoch_rejected = 0u64;
    loop {
        let Some((message, _permit)) = rx.recv().await else {
            return Err(RunError::Stopped);
        };
        cancelled(prepared)?;
        match message {
            Message::Stream {
                name,
                schema,
                primary_key,
            } => {
                if let Some(previous) = open.take() {
                    sink.close(previous.writer).await?;
                }
                let conform = evolve_schema(prepared, state, &name, &schema)?;
                let schema = match &conform {
                    Some(recorded) => batch::encode_schema(recorded),
                    None => schema,
                };
                let info = StreamInfo {
                    name: name.clone(),
                    schema,
                    primary_key,
                    cursor_field: None,
                    sync_modes: Vec::new(),
                };
                let writer = sink.open(&info, &mode).await?;
                // Whatever an interrupted run staged for the next epoch is stale.
                sink.abort(writer, state.epoch + 1).await?;
                let mut dead_letters = DeadLetters::new(&prepared.pipeline.dlq_dir, &name);
                dead_letters.abort();
                *open = Some(OpenStream {
                    name,
                    writer,
                    dead_letters,
                    conform,
                });
            }
            Message::Data { batch, rows } => {
                let stream = open.as_mut().ok_or_else(|| RunError::Fatal {
                    plugin: "host".into(),
                    message: "data before a stream".into(),
                })?;
                let Some(target) = &stream.conform else {
                    sink.write(stream.writer, &batch).await?;
                    epoch_rows += rows;
                    continue;
                };
                let (fitting, rows, letters) =
                    quarantine(&prepared.pipeline.name, &stream.name, target, &batch)?;
                if rows > 0 {
                    sink.write(stream.writer, &fitting).await?;
                }
                epoch_rows += rows;
                let n = letters.len() as u64;
                for letter in &letters {
                    stream.dead_letters.write(letter)?;
                }
                stats.dead_lettered += n;
                stats.rejected += n;
                epoch_rejected += n;
            }
            Message::Rejects(rejects) => {
                let n = rejects.letters.len() as u64;
                match rejects.on_error {
                    OnError::Fail => {
                        let (location, reason, _) =
                            rejects.letters.into_iter().next().unwrap_or_default();
                        return Err(RunError::Rejected {
                            plugin: rejects.plugin.to_string(),
                            location,
                            reason,
                        });
                    }
                    OnError::Skip => {
                        for (location, reason, _) in &rejects.letters {
                            tracing::warn!(plugin = %rejects.plugin, stream = %rejects.stream, location = location.as_deref().unwrap_or("-"), "skipped a rejected record: {reason}");
                        }
                    }
                    OnError::Dlq => {
                        let stream = open.as_mut().ok_or_else(|| RunError::Fatal {
                            plugin: "host".into(),
                            message: "rejects before a stream".into(),
                        })?;
                        for (location, reason, record) in rejects.letters {
                            stream.dead_letters.write(&DeadLetter {
                                time: dlq::now_rfc3339(),
                                pipeline: prepared.pipeline.name.clone(),
                                plugin: rejects.plugin.to_string(),
                                stream: rejects.stream.clone(),
                                location,
                                reason,
                                record,
                            })?;
                        }
                        stats.dead_lettered += n;
                    }
                }
                epoch_rejected += n;
                stats.rejected += n;
            }
            Message::Barrier {
                epoch,
                positions,
                transforms,
            } => {
                let stream = open.as_mut().ok_or_else(|| RunError::Fatal {
                    plugin: "host".into(),
                    message: "a barrier before any stream".into(),
                })?;
                // Phase 1: the sink and the dead-letter queue stage the epoch durably.
                fault::point("before-prepare", epoch);
                let token = sink.prepare(stream.writer, epoch).await?;
                let dlq_token = stream.dead_letters.prepare(epoch)?;
                fault::point("after-prepare", epoch);
                state.epoch = epoch;
                state.committed = false;
                state.positions = positions;
                state.transforms = transforms;
                state.pending = vec![PendingCommit {
                    stream: stream.name.clone(),
                    token: hex::encode(&token),
                    dlq_token: dlq_token
                        .as_ref()
                        .map(|t| serde_json::to_string(t).expect("token serializes")),
                }];
                state.totals.rows_written += epoch_rows;
                state.totals.rows_rejected += epoch_rejected;
                store.save(state)?;
                fault::point("after-state", epoch);
                // Phase 2: publish, record the commit, then release the source.
                let published = sink.commit(stream.writer, epoch, &token).await?;
                for name in &published {
                    tracing::info!(epoch, "published {name}");
                }
                stats.published += published.len() as u64;
                if let Some(t) = &dlq_token {
                    dlq::commit(t)?;
                }
                fault::point("after-commit", epoch);
                state.committed = true;
                state.pending.clear();
                store.save(state)?;
                let _ = acks.send(state.positions.clone());
                tracing::debug!(
                    epoch,
                    rows = epoch_rows,
                    rejected = epoch_rejected,
                    "epoch committed"
                );
                stats.rows += epoch_rows;
                stats.epochs += 1;
                stats.last_epoch = epoch;
                epoch_rows = 0;
                epoch_rejected = 0;
            }
            Message::End => {
                if let Some(stream) = open.take() {
                    sink.close(stream.writer).await?;
                }
                return Ok(());
            }
        }
    }
}

//! One attempt at running the pipeline: recovery of a half-committed epoch, then the
//! source, transform and sink stages, each on a thread of its own, joined by byte-bounded
//! channels, with the epoch barrier travelling in-band between the batches.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::channel;
use super::epoch::Epochs;
use super::message::Message;
use super::sink::sink_stage;
use super::source::{source_stage, SourceStats};
use super::transform::{transform_stage, TransformStage};
use super::{Prepared, RunError, Summary};
use crate::checkpoint::Positions;

/// Bytes of batches in flight between two stages.
const CHANNEL_BYTES: usize = 16 << 20;

/// Run the pipeline once from the last checkpoint; fills `summary` as it goes.
pub(super) async fn attempt(
    prepared: Arc<Prepared>,
    summary: &mut Summary,
) -> Result<(), RunError> {
    let mut epochs = Epochs::load(&prepared)?;
    epochs.recover(&prepared).await?;
    let state = epochs.state();
    if summary.attempts == 1 {
        // What the run started after; later attempts resume from what earlier ones committed.
        summary.resumed_after_epoch = state.epoch;
    }
    summary.last_epoch = summary.last_epoch.max(state.epoch);

    let (source_tx, mut next_rx) = channel::channel::<Message>(CHANNEL_BYTES);
    let (ack_tx, ack_rx) = mpsc::unbounded_channel::<Positions>();

    let (runtime, cancel) = (&prepared.runtime, &prepared.cancel);
    let source = prepared.source.start(runtime, cancel).await?;
    let mut transforms = Vec::new();
    for (i, loaded) in prepared.transforms.iter().enumerate() {
        transforms.push(TransformStage {
            transform: loaded.start(runtime, cancel).await?,
            name: loaded.stage.name.clone(),
            states: state
                .transforms
                .get(&loaded.stage.name)
                .cloned()
                .unwrap_or_default(),
            on_error: loaded.stage.on_error,
            masks_letters: prepared.masks_letters(i),
            masker: loaded.stage.is_masker(),
        });
    }
    let sink = prepared.sink.start(runtime, cancel).await?;

    let stage_span = |role: &str, name: &str| tracing::info_span!("stage", role, stage = name);
    let source_task = dedicated(tracing::Instrument::instrument(
        source_stage(
            prepared.clone(),
            source,
            state.positions.clone(),
            state.plans.clone(),
            prepared.next_epoch(state.epoch)?,
            source_tx,
            ack_rx,
        ),
        stage_span("source", &prepared.pipeline.source.name),
    ));
    let mut transform_tasks = Vec::new();
    for stage in transforms {
        let (tx, rx) = channel::channel::<Message>(CHANNEL_BYTES);
        let span = stage_span("transform", &stage.name);
        transform_tasks.push(dedicated(tracing::Instrument::instrument(
            transform_stage(stage, next_rx, tx),
            span,
        )));
        next_rx = rx;
    }
    let sink_task = dedicated(tracing::Instrument::instrument(
        sink_stage(prepared.clone(), sink, epochs, next_rx, ack_tx),
        stage_span("sink", &prepared.pipeline.sink.name),
    ));

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
        summary.lags.merge(&s.lags);
        if s.last_epoch > 0 {
            summary.last_epoch = s.last_epoch;
        }
    }
    match cause {
        None => Ok(()),
        Some(e) => Err(e),
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

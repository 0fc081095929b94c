//! The sink stage: opens a writer per stream (after checking the stream's schema against
//! the recorded one), writes batches, routes rejected records by their `on_error`
//! policy, and commits an epoch at every barrier through [`Epochs`].

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use tokio::sync::mpsc;
use wasmtime::component::ResourceAny;

use super::channel::Receiver;
use super::epoch::{Closing, Epochs};
use super::instances::Sink;
use super::message::{tapped, Barrier, Message, RejectBatch, Rejected};
use super::{Prepared, RunError};
use crate::checkpoint::{Opaque, Positions, SchemaRecord};
use crate::config::OnError;
use crate::dlq::{self, DeadLetter, DeadLetters};
use crate::plugin::bindings::types::{Reject, StreamInfo};
use crate::{batch, schema};

/// What the sink stage did.
#[derive(Default)]
pub(super) struct SinkStats {
    pub rows: u64,
    pub published: u64,
    pub rejected: u64,
    pub dead_lettered: u64,
    pub epochs: u64,
    pub last_epoch: u64,
    /// Source commit → sink commit for a sample of the changes committed.
    pub lags: super::Lags,
}

/// The stream the sink has open.
struct OpenStream {
    name: String,
    writer: ResourceAny,
    dead_letters: DeadLetters,
    /// Under `[schema] on_change = "quarantine"`: the recorded schema rows must fit.
    conform: Option<SchemaRef>,
}

/// Record the schema `name` opens with in `schemas`, after checking a change against the
/// pipeline's `[schema] on_change` policy; the new version is made durable with the next
/// epoch. Under `quarantine` a changed stream keeps its recorded schema, returned here:
/// its rows are to be conformed to it one batch at a time.
pub(super) fn evolve_schema(
    prepared: &Prepared,
    schemas: &mut BTreeMap<String, SchemaRecord>,
    name: &str,
    ipc: &[u8],
) -> Result<Option<SchemaRef>, RunError> {
    let Some(record) = schemas.get_mut(name) else {
        let record = SchemaRecord {
            version: 1,
            ipc: Opaque(ipc.to_vec()),
        };
        schemas.insert(name.to_string(), record);
        return Ok(None);
    };
    if record.ipc.as_bytes() == ipc {
        return Ok(None);
    }
    let unreadable = |e: arrow::error::ArrowError| RunError::Fatal {
        plugin: "host".into(),
        message: format!("the recorded schema of stream `{name}` is unreadable: {e}"),
    };
    let old = batch::decode_schema(record.ipc.as_bytes()).map_err(unreadable)?;
    let new = batch::decode_schema(ipc).map_err(unreadable)?;
    let changes = schema::diff(&old, &new);
    if changes.is_empty() {
        // Only metadata differs: same columns, same version.
        record.ipc = Opaque(ipc.to_vec());
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
    record.ipc = Opaque(ipc.to_vec());
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
    target: &SchemaRef,
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
            masked: false,
        })
        .collect();
    let rows = conformed.batch.num_rows() as u64;
    let out = batch::encode(&conformed.batch).map_err(failed)?;
    Ok((out, rows, letters))
}

/// The sink stage: writes batches, routes rejects, and commits an epoch at every barrier,
/// then hands the committed positions back for the source to acknowledge.
pub(super) async fn sink_stage(
    prepared: Arc<Prepared>,
    mut sink: Sink,
    mut epochs: Epochs,
    mut rx: Receiver<Message>,
    acks: mpsc::UnboundedSender<Positions>,
) -> Result<SinkStats, RunError> {
    let mut stage = SinkLoop {
        prepared: &prepared,
        sink: &mut sink,
        epochs: &mut epochs,
        stats: SinkStats::default(),
        open: None,
        epoch_rows: 0,
        epoch_rejected: 0,
    };
    let result = stage.run(&mut rx, &acks).await;
    if result.is_err() {
        // Discard the open epoch; after a trap the instance is gone and the next start
        // discards its staging instead.
        if let Some(mut stream) = stage.open.take() {
            stream.dead_letters.abort();
            let next = prepared.stale_epoch(stage.epochs.state().epoch);
            let _ = stage.sink.abort(stream.writer, next).await;
        }
    }
    result.map(|()| stage.stats)
}

struct SinkLoop<'a> {
    prepared: &'a Prepared,
    sink: &'a mut Sink,
    epochs: &'a mut Epochs,
    stats: SinkStats,
    open: Option<OpenStream>,
    epoch_rows: u64,
    epoch_rejected: u64,
}

impl SinkLoop<'_> {
    async fn run(
        &mut self,
        rx: &mut Receiver<Message>,
        acks: &mpsc::UnboundedSender<Positions>,
    ) -> Result<(), RunError> {
        loop {
            let Some((message, _permit)) = rx.recv().await else {
                return Err(RunError::Stopped);
            };
            match message {
                Message::Stream {
                    name,
                    schema,
                    primary_key,
                } => self.open_stream(name, schema, primary_key).await?,
                Message::Data { batch, rows } => {
                    let stage = &self.prepared.pipeline.sink.name;
                    if let Some(Message::Tap { stage, rows }) = tapped(stage, &batch, rows) {
                        crate::tap::hub().deliver(&stage, &rows);
                    }
                    self.write(batch, rows).await?
                }
                Message::Tap { stage, rows } => crate::tap::hub().deliver(&stage, &rows),
                Message::Rejects(rejects) => self.route(rejects)?,
                Message::Finish => {
                    let writer = self.stream("the end of a stream")?.writer;
                    self.sink.finish(writer).await?;
                }
                Message::Barrier(barrier) => {
                    let committed = self.commit(barrier).await?;
                    let _ = acks.send(committed);
                }
                Message::End => {
                    if let Some(stream) = self.open.take() {
                        self.sink.close(stream.writer).await?;
                    }
                    return Ok(());
                }
            }
        }
    }

    fn stream(&mut self, what: &str) -> Result<&mut OpenStream, RunError> {
        self.open.as_mut().ok_or_else(|| RunError::Fatal {
            plugin: "host".into(),
            message: format!("{what} before any stream"),
        })
    }

    async fn open_stream(
        &mut self,
        name: String,
        schema: Vec<u8>,
        primary_key: Vec<String>,
    ) -> Result<(), RunError> {
        if let Some(previous) = self.open.take() {
            self.sink.close(previous.writer).await?;
        }
        let conform = evolve_schema(self.prepared, self.epochs.schemas_mut(), &name, &schema)?;
        let info = StreamInfo {
            name: name.clone(),
            schema: match &conform {
                Some(recorded) => batch::encode_schema(recorded),
                None => schema,
            },
            primary_key,
            cursor_field: None,
            sync_modes: Vec::new(),
        };
        let mode = super::wit_write_mode(&self.prepared.pipeline.sink.write_mode);
        let writer = self.sink.open(&info, &mode).await?;
        // Whatever an interrupted run staged for the next epoch is stale.
        self.sink
            .abort(writer, self.prepared.stale_epoch(self.epochs.state().epoch))
            .await?;
        let mut dead_letters = self.prepared.dead_letters(&name);
        // Under a claim, other workers may be staging letters of this stream right now.
        if self.prepared.claim.is_none() {
            dead_letters.discard_stale()?;
        }
        self.open = Some(OpenStream {
            name,
            writer,
            dead_letters,
            conform,
        });
        Ok(())
    }

    async fn write(&mut self, batch: Vec<u8>, rows: u64) -> Result<(), RunError> {
        let pipeline = &self.prepared.pipeline.name;
        let stream = self.open.as_mut().ok_or_else(|| RunError::Fatal {
            plugin: "host".into(),
            message: "data before any stream".into(),
        })?;
        let Some(target) = &stream.conform else {
            let writer = stream.writer;
            let refused = self.sink.write(writer, &batch).await?;
            return self.refused(&batch, rows, refused);
        };
        let (fitting, rows, letters) = quarantine(pipeline, &stream.name, target, &batch)?;
        let mut refused = Vec::new();
        if rows > 0 {
            refused = self.sink.write(stream.writer, &fitting).await?;
        }
        for letter in &letters {
            stream.dead_letters.write(letter)?;
        }
        let n = letters.len() as u64;
        self.stats.dead_lettered += n;
        self.stats.rejected += n;
        self.epoch_rejected += n;
        self.refused(&fitting, rows, refused)
    }

    /// Count the rows of `batch` the sink staged, and route those it refused by the sink's
    /// `on_error`, each with its row as JSON.
    fn refused(&mut self, batch: &[u8], rows: u64, refused: Vec<Reject>) -> Result<(), RunError> {
        self.epoch_rows += rows.saturating_sub(refused.len() as u64);
        if refused.is_empty() {
            return Ok(());
        }
        let stream = self.stream("rejects")?.name.clone();
        let decoded = batch::decode(batch).ok();
        // Rows reach the sink after every transform: under `protect = "mask"` they are
        // already masked.
        let masked = self.prepared.pipeline.dlq_protect == dlq::Protect::Mask
            && (0..self.prepared.transforms.len()).any(|i| self.prepared.masks_letters(i));
        let letters = refused
            .into_iter()
            .map(|mut r| Rejected {
                record: super::transform::rejected_record(&mut r, decoded.as_ref()),
                location: r.location,
                reason: r.reason,
                masked,
            })
            .collect();
        self.route(RejectBatch {
            plugin: self.sink.label.clone(),
            on_error: self.prepared.pipeline.sink.on_error,
            stream,
            letters,
        })
    }

    /// Route rejected records by the `on_error` policy of the plugin that rejected them.
    fn route(&mut self, rejects: RejectBatch) -> Result<(), RunError> {
        let n = rejects.letters.len() as u64;
        match rejects.on_error {
            OnError::Fail => {
                let first = rejects.letters.into_iter().next().unwrap_or_default();
                return Err(RunError::Rejected {
                    plugin: rejects.plugin.to_string(),
                    location: first.location,
                    reason: first.reason,
                });
            }
            OnError::Skip => {
                for letter in &rejects.letters {
                    tracing::warn!(
                        plugin = %rejects.plugin,
                        stream = %rejects.stream,
                        location = letter.location.as_deref().unwrap_or("-"),
                        "skipped a rejected record: {}",
                        letter.reason
                    );
                }
            }
            OnError::Dlq => {
                let pipeline = self.prepared.pipeline.name.clone();
                let stream = self.stream("rejects")?;
                for letter in rejects.letters {
                    stream.dead_letters.write(&DeadLetter {
                        time: dlq::now_rfc3339(),
                        pipeline: pipeline.clone(),
                        plugin: rejects.plugin.to_string(),
                        stream: rejects.stream.clone(),
                        location: letter.location,
                        reason: letter.reason,
                        record: letter.record,
                        masked: letter.masked,
                    })?;
                }
                self.stats.dead_lettered += n;
                crate::metrics::get()
                    .dead_letters
                    .get_or_create(&crate::metrics::stream(&rejects.stream))
                    .inc_by(n);
            }
        }
        self.epoch_rejected += n;
        self.stats.rejected += n;
        Ok(())
    }

    /// Commit the epoch the barrier closes; returns the positions now durable.
    async fn commit(&mut self, mut barrier: Barrier) -> Result<Positions, RunError> {
        let epoch = barrier.epoch;
        let commit_times = std::mem::take(&mut barrier.commit_times);
        let closing = Closing {
            epoch,
            positions: barrier.positions,
            plans: barrier.plans,
            transforms: barrier.transforms,
            rows_written: self.epoch_rows,
            rows_rejected: self.epoch_rejected,
        };
        let stream = self.open.as_mut().ok_or_else(|| RunError::Fatal {
            plugin: "host".into(),
            message: "a barrier before any stream".into(),
        })?;
        let committing = std::time::Instant::now();
        let name = stream.name.clone();
        let published = tracing::Instrument::instrument(
            self.epochs.commit(
                self.sink,
                stream.writer,
                &stream.name,
                &mut stream.dead_letters,
                closing,
            ),
            tracing::info_span!("epoch", epoch, stream = %stream.name),
        )
        .await?;
        tracing::debug!(
            epoch,
            rows = self.epoch_rows,
            rejected = self.epoch_rejected,
            "epoch committed"
        );
        if !commit_times.is_empty() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as i64)
                .unwrap_or(0);
            for t in &commit_times {
                self.stats.lags.record(now - t);
                crate::metrics::get()
                    .lag_seconds
                    .observe((now - t) as f64 / 1e6);
            }
            let newest = commit_times.iter().max().map_or(0, |t| now - t) as f64 / 1e6;
            let oldest = commit_times.iter().min().map_or(0, |t| now - t) as f64 / 1e6;
            tracing::info!(
                epoch,
                "lag from source commit to sink commit: {newest:.3} s for the newest change, {oldest:.3} s for the oldest"
            );
        }
        crate::metrics::get().committed(
            &name,
            epoch,
            self.epoch_rows,
            self.epoch_rejected,
            committing.elapsed().as_secs_f64(),
        );
        self.stats.published += published.len() as u64;
        self.stats.rows += self.epoch_rows;
        self.stats.epochs += 1;
        self.stats.last_epoch = epoch;
        self.epoch_rows = 0;
        self.epoch_rejected = 0;
        Ok(self.epochs.state().positions.clone())
    }
}

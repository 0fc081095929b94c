//! `host dlq replay`: dead letters sent through the pipeline again — usually after its
//! config was fixed — as one new epoch under the same checkpoint protocol as a run.
//!
//! A letter re-enters the pipeline where it left it: records a source rejected are parsed
//! again by the source (`replay`), rows a transform rejected are rebuilt from their JSON in
//! the schema that transform receives and go through it and every later stage. What passes
//! is written to the sink; what fails again stays in the queue with its new reason. The
//! epoch's commit publishes the sink's output, writes the letters that still fail, and
//! removes the replayed files, so a crash at any point leaves either the old queue or the
//! new one.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use wasmtime::component::ResourceAny;

use super::epoch::{Closing, Epochs};
use super::instances::{Sink, Transform};
use super::sink::{evolve_schema, quarantine, QUARANTINE};
use super::transform::rejected_record;
use super::{wit_write_mode, Prepared, RunError};
use crate::batch;
use crate::checkpoint::Opaque;
use crate::config::WriteMode;
use crate::dlq::{self, DeadLetter};
use crate::plugin::bindings::types::StreamInfo;
use crate::plugin::Kind;

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Dead letters read from the queue.
    pub letters: u64,
    /// Rows written to the sink.
    pub rows_written: u64,
    /// Letters that failed again and stay in the queue.
    pub still_failing: u64,
    /// Files the sink published.
    pub published: u64,
    /// The epoch the replay committed, if it had anything to replay.
    pub epoch: Option<u64>,
}

/// Where a dead letter re-enters the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Source,
    Transform(usize),
    /// Rows a quarantined schema held back, as the sink would have received them.
    Sink,
}

/// The stage a letter's `plugin` label names (`transform "mask" (builtin:pii-mask)`).
fn entry(prepared: &Prepared, label: &str) -> Option<Entry> {
    if label == QUARANTINE {
        return Some(Entry::Sink);
    }
    if label == prepared.source.label.as_ref() {
        return Some(Entry::Source);
    }
    if let Some(i) = prepared
        .transforms
        .iter()
        .position(|t| t.label.as_ref() == label)
    {
        return Some(Entry::Transform(i));
    }
    // The plugin may have been replaced (a fixed version): match by kind and name.
    let mut parts = label.splitn(3, '"');
    let kind = parts.next()?.trim();
    let name = parts.next()?;
    if kind == Kind::Source.to_string() && name == prepared.source.stage.name {
        return Some(Entry::Source);
    }
    if kind == Kind::Transform.to_string() {
        return prepared
            .transforms
            .iter()
            .position(|t| t.stage.name == name)
            .map(Entry::Transform);
    }
    None
}

/// One transform of the chain, opened for the stream being replayed.
struct Opened {
    transform: Transform,
    handle: ResourceAny,
    input: SchemaRef,
    output: SchemaRef,
}

/// Replay the dead-letter queue of every stream of a prepared pipeline.
pub async fn replay(prepared: Arc<Prepared>) -> Result<ReplaySummary, RunError> {
    let mut epochs = Epochs::load(&prepared)?;
    epochs.recover(&prepared).await?;
    let mut summary = ReplaySummary::default();
    let dlq_dir = prepared.pipeline.dlq_dir.clone();

    // Read every stream's queue first: a replay is one epoch over all of them.
    let mut queues: Vec<(StreamInfo, Vec<PathBuf>, Vec<DeadLetter>)> = Vec::new();
    for info in &prepared.streams {
        let files = dlq::published_files(&dlq_dir, &info.name)?;
        let mut letters = Vec::new();
        for file in &files {
            letters.extend(dlq::read(file, &prepared.protection)?);
        }
        summary.letters += letters.len() as u64;
        // Masked letters no longer hold the values they were rejected for: they stay in
        // the queue for inspection, and are never sent through the pipeline again.
        let masked = letters.iter().filter(|l| l.masked).count() as u64;
        if masked > 0 {
            tracing::warn!(
                stream = %info.name,
                "{masked} dead letters were masked when written (`[dlq] protect = \"mask\"`) and cannot be replayed; they stay in the queue"
            );
            summary.still_failing += masked;
        }
        if letters.iter().any(|l| !l.masked) {
            queues.push((info.clone(), files, letters));
        }
    }
    if queues.is_empty() {
        return Ok(summary);
    }
    if queues.len() > 1 {
        return Err(RunError::Fatal {
            plugin: "host".into(),
            message: format!(
                "dead letters of {} streams wait; a replay handles one stream's queue per epoch, and this pipeline's sink commits one stream per epoch",
                queues.len()
            ),
        });
    }
    let (info, files, letters) = queues.pop().expect("one queue");
    let (kept, letters): (Vec<DeadLetter>, Vec<DeadLetter>) =
        letters.into_iter().partition(|l| l.masked);
    let kept_masked = kept.len() as u64;
    let epoch = epochs.state().epoch + 1;

    let mut source = prepared
        .source
        .start(&prepared.runtime, &prepared.cancel)
        .await?;
    let mut sink = prepared
        .sink
        .start(&prepared.runtime, &prepared.cancel)
        .await?;

    // Open the transform chain for the stream, as a run would.
    let unreadable = |plugin: &str, e: arrow::error::ArrowError| RunError::Contract {
        plugin: plugin.to_string(),
        message: format!("declared an unreadable schema: {e}"),
    };
    let mut chain = Vec::new();
    let mut schema_ipc = info.schema.clone();
    let mut transform_states = BTreeMap::new();
    for loaded in &prepared.transforms {
        let mut transform = loaded.start(&prepared.runtime, &prepared.cancel).await?;
        let label = transform.label.clone();
        let saved = epochs
            .state()
            .transforms
            .get(&loaded.stage.name)
            .and_then(|m| m.get(&info.name))
            .map(|s| s.0.clone());
        let input = batch::decode_schema(&schema_ipc).map_err(|e| unreadable(&label, e))?;
        let (handle, output_ipc) = transform.open(&schema_ipc, saved.as_ref()).await?;
        let output = batch::decode_schema(&output_ipc).map_err(|e| unreadable(&label, e))?;
        schema_ipc = output_ipc;
        chain.push(Opened {
            transform,
            handle,
            input,
            output,
        });
    }

    let chain_output = batch::decode_schema(&schema_ipc).map_err(|e| unreadable("host", e))?;
    let conform = evolve_schema(&prepared, epochs.schemas_mut(), &info.name, &schema_ipc)?;
    // Replayed letters join the target as it is: under `overwrite` they are appended to
    // the table the last run put in place, not made a run's whole output.
    let mode = match &prepared.pipeline.sink.write_mode {
        WriteMode::Overwrite => wit_write_mode(&WriteMode::Append),
        other => wit_write_mode(other),
    };
    let sink_info = StreamInfo {
        schema: match &conform {
            Some(recorded) => batch::encode_schema(recorded),
            None => schema_ipc,
        },
        ..info.clone()
    };
    let writer = sink.open(&sink_info, &mode).await?;
    sink.abort(writer, epoch).await?;

    let mut failing: Vec<DeadLetter> = kept;
    let again = |letter: &DeadLetter, plugin: &str, reason: String, record: String| DeadLetter {
        time: dlq::now_rfc3339(),
        plugin: plugin.to_string(),
        reason,
        record,
        ..letter.clone()
    };

    // Records the source rejected: parse them again.
    let (from_source, rest): (Vec<_>, Vec<_>) = letters
        .into_iter()
        .partition(|l| entry(&prepared, &l.plugin) == Some(Entry::Source));
    let mut batches: Vec<(usize, Vec<u8>)> = Vec::new();
    if !from_source.is_empty() {
        let records: Vec<String> = from_source.iter().map(|l| l.record.clone()).collect();
        let replayed = source.replay(&info.name, &records).await?;
        for reject in replayed.rejects {
            let Some(letter) = reject.row.and_then(|r| from_source.get(r as usize)) else {
                return Err(RunError::Contract {
                    plugin: source.label.to_string(),
                    message: "a replayed record was rejected without its index".into(),
                });
            };
            failing.push(again(
                letter,
                &source.label,
                reject.reason,
                letter.record.clone(),
            ));
        }
        batches.push((0, replayed.batch));
    }

    // Rows a transform rejected: rebuild them in that transform's input schema.
    for letter in rest {
        if entry(&prepared, &letter.plugin) == Some(Entry::Sink) {
            match batch::from_json_rows(&chain_output, &[letter.record.as_str()]) {
                Ok(ipc) => batches.push((chain.len(), ipc)),
                Err(e) => {
                    let reason = format!("the row does not fit the stream's schema now: {e}");
                    let record = letter.record.clone();
                    failing.push(again(&letter, QUARANTINE, reason, record));
                }
            }
            continue;
        }
        let Some(Entry::Transform(i)) = entry(&prepared, &letter.plugin) else {
            tracing::warn!(
                plugin = %letter.plugin,
                "a dead letter names a plugin this pipeline no longer has; it stays in the queue"
            );
            failing.push(letter);
            continue;
        };
        match batch::from_json_rows(&chain[i].input, &[letter.record.as_str()]) {
            Ok(ipc) => batches.push((i, ipc)),
            Err(e) => {
                let reason = format!(
                    "the row does not fit the schema `{}` now receives: {e}",
                    chain[i].transform.label
                );
                let record = letter.record.clone();
                failing.push(again(&letter, &letter.plugin, reason, record));
            }
        }
    }

    // Through the chain from each batch's entry, then flush every transform in order;
    // flushed rows continue through the later stages.
    let stream = info.name.clone();
    let to_sink = ToSink {
        writer,
        conform: conform.as_ref(),
        pipeline: &prepared.pipeline.name,
        stream: &stream,
    };
    let mut rows_written = drive(
        &mut chain,
        batches.into(),
        &mut sink,
        &to_sink,
        &mut failing,
    )
    .await?;
    for i in 0..chain.len() {
        let stage = &mut chain[i];
        let output = stage.transform.flush(stage.handle).await?;
        let mut flushed = VecDeque::new();
        collect(stage, output, None, &stream, &mut failing, |b| {
            flushed.push_back((i + 1, b))
        })?;
        let state = stage.transform.checkpoint(stage.handle).await?;
        transform_states.insert(
            prepared.transforms[i].stage.name.clone(),
            (!state.is_empty()).then_some(Opaque(state)),
        );
        rows_written += drive(&mut chain, flushed, &mut sink, &to_sink, &mut failing).await?;
    }
    for letter in &mut failing {
        letter.pipeline.clone_from(&prepared.pipeline.name);
    }

    // Commit: the sink's rows, the letters that still fail, and the removal of the
    // replayed files, as one epoch.
    let mut queue = prepared.dead_letters(&info.name);
    queue.discard_stale()?;
    for letter in &failing {
        queue.write(letter)?;
    }
    queue.replacing(files);
    // As a run does: a transform's new state replaces its old one, an empty one removes it.
    let mut transforms = epochs.state().transforms.clone();
    for (name, checkpoint) in transform_states {
        let states = transforms.entry(name.clone()).or_default();
        match checkpoint {
            Some(state) => {
                states.insert(info.name.clone(), state);
            }
            None => {
                states.remove(&info.name);
            }
        }
        if states.is_empty() {
            transforms.remove(&name);
        }
    }
    let closing = Closing {
        epoch,
        positions: epochs.state().positions.clone(),
        plans: epochs.state().plans.clone(),
        transforms,
        rows_written,
        rows_rejected: 0,
    };
    let published = epochs
        .commit(&mut sink, writer, &info.name, &mut queue, closing)
        .await?;
    sink.close(writer).await?;

    summary.rows_written = rows_written;
    summary.still_failing += failing.len() as u64 - kept_masked;
    summary.published = published.len() as u64;
    summary.epoch = Some(epoch);
    Ok(summary)
}

/// Send each batch through the chain from its entry stage to the sink, in order; returns
/// the rows written.
/// Where the chain ends: the sink's writer, and the recorded schema of a quarantined stream.
struct ToSink<'a> {
    writer: ResourceAny,
    conform: Option<&'a SchemaRef>,
    pipeline: &'a str,
    stream: &'a str,
}

async fn drive(
    chain: &mut [Opened],
    mut queue: VecDeque<(usize, Vec<u8>)>,
    sink: &mut Sink,
    to: &ToSink<'_>,
    failing: &mut Vec<DeadLetter>,
) -> Result<u64, RunError> {
    let mut rows = 0;
    while let Some((from, ipc)) = queue.pop_front() {
        if from == chain.len() {
            let ipc = match to.conform {
                None => ipc,
                Some(target) => {
                    let (fitting, _, letters) = quarantine(to.pipeline, to.stream, target, &ipc)?;
                    failing.extend(letters);
                    fitting
                }
            };
            rows += count_rows(&sink.label, &ipc)?;
            sink.write(to.writer, &ipc).await?;
            continue;
        }
        let stage = &mut chain[from];
        let output = stage.transform.process(stage.handle, &ipc).await?;
        collect(stage, output, Some(&ipc), to.stream, failing, |b| {
            queue.push_back((from + 1, b))
        })?;
    }
    Ok(rows)
}

fn count_rows(plugin: &str, ipc: &[u8]) -> Result<u64, RunError> {
    batch::inspect(ipc)
        .map(|(_, rows)| rows)
        .map_err(|e| RunError::Contract {
            plugin: plugin.to_string(),
            message: format!("returned a batch that is not valid Arrow IPC: {e}"),
        })
}

/// Check a transform's output against its declared schema; pass batches on and keep its
/// rejects as letters that still fail.
fn collect(
    stage: &Opened,
    output: crate::plugin::bindings::transform::exports::ingest::plugin::transform::Output,
    input: Option<&Vec<u8>>,
    stream: &str,
    failing: &mut Vec<DeadLetter>,
    mut next: impl FnMut(Vec<u8>),
) -> Result<(), RunError> {
    let label = stage.transform.label.to_string();
    for out in output.batches {
        let data = batch::decode(&out).map_err(|e| RunError::Contract {
            plugin: label.clone(),
            message: format!("returned a batch that is not valid Arrow IPC: {e}"),
        })?;
        if !batch::same_columns(&stage.output, &data.schema()) {
            return Err(RunError::Contract {
                plugin: label.clone(),
                message: format!(
                    "declared output columns [{}] but returned [{}]",
                    batch::describe(&stage.output),
                    batch::describe(&data.schema())
                ),
            });
        }
        if data.num_rows() > 0 {
            next(out);
        }
    }
    let decoded = input.and_then(|b| batch::decode(b).ok());
    for mut reject in output.rejects {
        let record = rejected_record(&mut reject, decoded.as_ref());
        failing.push(DeadLetter {
            time: dlq::now_rfc3339(),
            pipeline: String::new(),
            plugin: label.clone(),
            stream: stream.to_string(),
            location: reject.location,
            reason: reject.reason,
            record,
            masked: false,
        });
    }
    Ok(())
}

//! The source stage: reads every split of every stream and passes the chunks on in split
//! order, with the epoch barriers the checkpoint policy asks for.
//!
//! With `readers = 1` one instance reads the splits one after the other. With more, each
//! reader is an instance of its own on a thread of its own: it claims the next split in
//! order, reads it into a channel of its own, and claims another. The stage passes on
//! the chunks of split 0, then those of split 1, and so on, so the rows leave in exactly
//! the order one reader would give them (what a key's "first" row is does not depend on
//! timing), and positions, rejects and barriers are what they would be with one reader.
//! At most `readers + 1` splits are claimed and not yet passed on, each holding at most
//! [`SPLIT_BYTES`] of batches: memory stays bounded however many splits a stream has.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::datatypes::Schema;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use wasmtime::component::ResourceAny;

use super::attempt::dedicated;
use super::channel::{self, Receiver, Sender};
use super::instances::Source;
use super::message::{Barrier, Message, RejectBatch, Rejected};
use super::{Prepared, RunError};
use crate::batch;
use crate::checkpoint::{Position, Positions, TransformStates};
use crate::config::CheckpointPolicy;
use crate::plugin::bindings::source::exports::ingest::plugin::source::Chunk;
use crate::plugin::bindings::types::{Split, StreamInfo};

/// Bytes of batches one claimed split may hold before its reader waits.
const SPLIT_BYTES: usize = 16 << 20;

/// What the source stage read.
#[derive(Default)]
pub(super) struct SourceStats {
    pub rows: u64,
    pub bytes: u64,
}

/// What the open epoch holds so far, measured against the checkpoint policy.
struct EpochClock {
    epoch: u64,
    rows: u64,
    bytes: u64,
    since: Instant,
    /// Positions moved since the last barrier (even without rows: rejects, progress).
    dirty: bool,
}

impl EpochClock {
    fn new(epoch: u64) -> Self {
        EpochClock {
            epoch,
            rows: 0,
            bytes: 0,
            since: Instant::now(),
            dirty: false,
        }
    }

    fn due(&self, policy: &CheckpointPolicy) -> bool {
        self.rows >= policy.every_rows
            || self.bytes >= policy.every_bytes
            || self.since.elapsed() >= policy.every
    }

    /// Close the open epoch: send its barrier with the positions after it.
    async fn close(&mut self, tx: &Sender<Message>, positions: &Positions) -> Result<(), RunError> {
        let barrier = Barrier {
            epoch: self.epoch,
            positions: positions.clone(),
            transforms: TransformStates::new(),
        };
        tx.send(Message::Barrier(barrier), 0).await?;
        *self = EpochClock::new(self.epoch + 1);
        Ok(())
    }
}

/// Reads every split of every stream, emitting barriers by the checkpoint policy.
pub(super) async fn source_stage(
    prepared: Arc<Prepared>,
    source: Source,
    positions: Positions,
    epoch: u64,
    tx: Sender<Message>,
    acks: mpsc::UnboundedReceiver<Positions>,
) -> Result<SourceStats, RunError> {
    let label = source.label.clone();
    let mut out = Output {
        prepared: prepared.clone(),
        label: label.clone(),
        tx,
        acks,
        positions,
        clock: EpochClock::new(epoch),
        stats: SourceStats::default(),
    };
    let mut readers = vec![source];
    for info in &prepared.streams {
        let declared = Arc::new(batch::decode_schema(&info.schema).map_err(|e| {
            contract(
                &label,
                format!("stream `{}` has an unreadable schema: {e}", info.name),
            )
        })?);
        out.tx
            .send(
                Message::Stream {
                    name: info.name.clone(),
                    schema: info.schema.clone(),
                    primary_key: info.primary_key.clone(),
                },
                info.schema.len(),
            )
            .await?;
        let splits = readers[0].splits(&info.name).await?;
        let wanted = (prepared.pipeline.source.readers as usize).min(splits.len());
        if wanted > 1 {
            while readers.len() < wanted {
                let extra = prepared
                    .source
                    .start(&prepared.runtime, &prepared.cancel)
                    .await?;
                readers.push(extra);
            }
            readers = read_in_parallel(&mut out, readers, info, &declared, splits).await?;
        } else {
            for split in &splits {
                read_split_here(&mut out, &mut readers[0], info, &declared, split).await?;
            }
        }
        if out.clock.dirty {
            out.clock.close(&out.tx, &out.positions).await?;
        }
    }
    out.tx.send(Message::End, 0).await?;
    Ok(out.stats)
}

fn contract(label: &Arc<str>, message: String) -> RunError {
    RunError::Contract {
        plugin: label.to_string(),
        message,
    }
}

/// A chunk that kept the source's contract, with its row count.
struct Checked {
    chunk: Chunk,
    rows: u64,
}

/// The next chunk of `reader`, checked against the plugin's limits and the stream's
/// declared columns; `None` at the end of the split.
async fn next_checked(
    source: &mut Source,
    reader: ResourceAny,
    batch_rows: u32,
    stream: &str,
    declared: &Schema,
) -> Result<Option<Checked>, RunError> {
    let Some(chunk) = source.next(reader, batch_rows).await? else {
        return Ok(None);
    };
    source.check_batch_size(chunk.batch.len())?;
    let (schema, rows) = batch::inspect(&chunk.batch).map_err(|e| {
        contract(
            &source.label,
            format!("returned a chunk that is not valid Arrow IPC: {e}"),
        )
    })?;
    if rows > 0 && !batch::same_columns(declared, &schema) {
        return Err(contract(
            &source.label,
            format!(
                "stream `{stream}` was declared with columns [{}] but a batch has [{}]",
                batch::describe(declared),
                batch::describe(&schema)
            ),
        ));
    }
    Ok(Some(Checked { chunk, rows }))
}

/// Where checked chunks go, in order: the positions they move, the rejects and rows they
/// carry, and the barriers the checkpoint policy asks for.
struct Output {
    prepared: Arc<Prepared>,
    label: Arc<str>,
    tx: Sender<Message>,
    acks: mpsc::UnboundedReceiver<Positions>,
    positions: Positions,
    clock: EpochClock,
    stats: SourceStats,
}

impl Output {
    /// The stored position of `split` of `stream`, if it was read before.
    fn position(&self, stream: &str, split: &str) -> Option<Vec<u8>> {
        self.positions
            .get(stream)
            .and_then(|m| m.get(split))
            .map(|p| p.0.clone())
    }

    /// The positions the sink has made durable since the last call, for `stream`.
    fn durable(&mut self, stream: &str) -> Vec<(String, Position)> {
        let mut out = Vec::new();
        while let Ok(acked) = self.acks.try_recv() {
            if let Some(splits) = acked.get(stream) {
                out.extend(splits.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        out
    }

    /// Pass on one chunk of `split`.
    async fn emit(&mut self, stream: &str, split: &str, checked: Checked) -> Result<(), RunError> {
        let Checked { chunk, rows } = checked;
        self.positions
            .entry(stream.to_string())
            .or_default()
            .insert(split.to_string(), Position::from(chunk.position));
        self.clock.dirty = true;
        if !chunk.rejects.is_empty() {
            let letters = chunk
                .rejects
                .into_iter()
                .map(|r| Rejected {
                    location: r.location,
                    reason: r.reason,
                    record: r.original.unwrap_or_default(),
                    masked: false,
                })
                .collect();
            let reject = RejectBatch {
                plugin: self.label.clone(),
                on_error: self.prepared.pipeline.source.on_error,
                stream: stream.to_string(),
                letters,
            };
            self.tx.send(Message::Rejects(reject), 0).await?;
        }
        let size = chunk.batch.len();
        self.stats.rows += rows;
        self.stats.bytes += size as u64;
        self.clock.rows += rows;
        self.clock.bytes += size as u64;
        if rows > 0 {
            let data = Message::Data {
                batch: chunk.batch,
                rows,
            };
            self.tx.send(data, size).await?;
        }
        if self.clock.due(&self.prepared.pipeline.checkpoint) {
            self.clock.close(&self.tx, &self.positions).await?;
        }
        Ok(())
    }
}

/// Read `split` with the stage's own instance, passing each chunk on as it comes.
async fn read_split_here(
    out: &mut Output,
    source: &mut Source,
    info: &StreamInfo,
    declared: &Schema,
    split: &Split,
) -> Result<(), RunError> {
    let batch_rows = out.prepared.pipeline.source.batch_rows;
    let position = out.position(&info.name, &split.id);
    let reader = source.open(&info.name, split, position.as_ref()).await?;
    loop {
        out.prepared.check_cancelled()?;
        for (id, p) in out.durable(&info.name) {
            if id == split.id {
                source.ack(reader, &p.0).await?;
            }
        }
        let Some(checked) = next_checked(source, reader, batch_rows, &info.name, declared).await?
        else {
            break;
        };
        out.emit(&info.name, &split.id, checked).await?;
    }
    source.close(reader).await
}

/// What a reader sends about the split it claimed.
enum Part {
    Chunk(Checked),
    /// The split is read to its end.
    Done,
    Failed(RunError),
}

/// A split a reader has claimed: the channel its chunks arrive on, and its place in the
/// window of claimed splits (released once its chunks are passed on).
struct Claim {
    index: usize,
    reader: usize,
    parts: Receiver<Part>,
    _slot: OwnedSemaphorePermit,
}

/// A split not yet claimed: its index in the stream's order and its stored position.
struct Unclaimed {
    index: usize,
    split: Split,
    position: Option<Vec<u8>>,
}

/// What every reader of one stream shares.
struct Work {
    prepared: Arc<Prepared>,
    stream: String,
    declared: Arc<Schema>,
    /// Splits not yet claimed, in order, with their stored positions.
    queue: Mutex<VecDeque<Unclaimed>>,
    /// One permit per split that may be claimed and not yet passed on.
    window: Arc<Semaphore>,
}

/// Read `splits` with every instance in `readers` at once and pass the chunks on in split
/// order; gives the instances back for the next stream.
async fn read_in_parallel(
    out: &mut Output,
    readers: Vec<Source>,
    info: &StreamInfo,
    declared: &Arc<Schema>,
    splits: Vec<Split>,
) -> Result<Vec<Source>, RunError> {
    let count = splits.len();
    let mut queue = VecDeque::with_capacity(count);
    let mut ids = Vec::with_capacity(count);
    for (index, split) in splits.into_iter().enumerate() {
        let position = out.position(&info.name, &split.id);
        ids.push(split.id.clone());
        queue.push_back(Unclaimed {
            index,
            split,
            position,
        });
    }
    let work = Arc::new(Work {
        prepared: out.prepared.clone(),
        stream: info.name.clone(),
        declared: declared.clone(),
        queue: Mutex::new(queue),
        window: Arc::new(Semaphore::new(readers.len() + 1)),
    });
    let (claims_tx, mut claims) = mpsc::unbounded_channel::<Claim>();
    let mut ack_txs = Vec::new();
    let mut tasks = Vec::new();
    for (n, source) in readers.into_iter().enumerate() {
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        ack_txs.push(ack_tx);
        tasks.push(dedicated(reader_task(
            n,
            source,
            work.clone(),
            claims_tx.clone(),
            ack_rx,
        )));
    }
    drop(claims_tx);

    let merged = merge(out, &info.name, &ids, &mut claims, &ack_txs).await;
    if merged.is_err() {
        // Readers stop at their next step: their claims are gone and nothing is left to claim.
        work.window.close();
        work.queue.lock().expect("queue lock").clear();
        drop(claims);
    }
    merged?;
    drop(ack_txs);
    let mut back = Vec::with_capacity(tasks.len());
    for task in tasks {
        match task.await {
            Ok(source) => back.push(source),
            Err(e) => {
                return Err(RunError::Fatal {
                    plugin: "host".into(),
                    message: format!("a source reader panicked: {e}"),
                })
            }
        }
    }
    Ok(back)
}

/// Pass on the chunks of every split in order, waiting for each split's reader, and hand
/// durable positions to the reader holding their split.
async fn merge(
    out: &mut Output,
    stream: &str,
    ids: &[String],
    claims: &mut mpsc::UnboundedReceiver<Claim>,
    ack_txs: &[mpsc::UnboundedSender<(String, Vec<u8>)>],
) -> Result<(), RunError> {
    let index_of: HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mut pending: BTreeMap<usize, Claim> = BTreeMap::new();
    let label = out.label.clone();
    let stopped = |index: usize| RunError::Fatal {
        plugin: label.to_string(),
        message: format!(
            "the reader of split `{}` of stream `{stream}` stopped before the split's end",
            ids[index]
        ),
    };
    for (index, id) in ids.iter().enumerate() {
        let mut claim = loop {
            if let Some(claim) = pending.remove(&index) {
                break claim;
            }
            match claims.recv().await {
                Some(claim) => {
                    pending.insert(claim.index, claim);
                }
                None => return Err(stopped(index)),
            }
        };
        loop {
            for (split, p) in out.durable(stream) {
                let Some(&at) = index_of.get(split.as_str()) else {
                    continue;
                };
                let holder = if at == index {
                    Some(claim.reader)
                } else {
                    pending.get(&at).map(|c| c.reader)
                };
                if let Some(reader) = holder {
                    // A reader that already moved on drops it, as one reader would.
                    let _ = ack_txs[reader].send((split, p.0));
                }
            }
            let Some((part, _permit)) = claim.parts.recv().await else {
                return Err(stopped(index));
            };
            match part {
                Part::Chunk(checked) => out.emit(stream, id, checked).await?,
                Part::Done => break,
                Part::Failed(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// One reader: claims splits in order until none is left, sending each split's chunks to
/// a channel of its own. Gives its instance back.
async fn reader_task(
    reader: usize,
    mut source: Source,
    work: Arc<Work>,
    claims: mpsc::UnboundedSender<Claim>,
    mut acks: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
) -> Source {
    loop {
        let Ok(slot) = work.window.clone().acquire_owned().await else {
            break;
        };
        let Some(Unclaimed {
            index,
            split,
            position,
        }) = work.queue.lock().expect("queue lock").pop_front()
        else {
            break;
        };
        let (tx, parts) = channel::channel::<Part>(SPLIT_BYTES);
        let claim = Claim {
            index,
            reader,
            parts,
            _slot: slot,
        };
        if claims.send(claim).is_err() {
            break;
        }
        match read_claimed(&mut source, &work, &split, position, &tx, &mut acks).await {
            Ok(()) => {
                if tx.send(Part::Done, 0).await.is_err() {
                    break;
                }
            }
            Err(RunError::Stopped) => break,
            Err(e) => {
                let _ = tx.send(Part::Failed(e), 0).await;
                break;
            }
        }
    }
    source
}

/// Read one claimed split into `tx`.
async fn read_claimed(
    source: &mut Source,
    work: &Work,
    split: &Split,
    position: Option<Vec<u8>>,
    tx: &Sender<Part>,
    acks: &mut mpsc::UnboundedReceiver<(String, Vec<u8>)>,
) -> Result<(), RunError> {
    let batch_rows = work.prepared.pipeline.source.batch_rows;
    let reader = source.open(&work.stream, split, position.as_ref()).await?;
    loop {
        work.prepared.check_cancelled()?;
        while let Ok((id, p)) = acks.try_recv() {
            if id == split.id {
                source.ack(reader, &p).await?;
            }
        }
        let next = next_checked(source, reader, batch_rows, &work.stream, &work.declared).await?;
        let Some(checked) = next else {
            break;
        };
        let size = checked.chunk.batch.len();
        tx.send(Part::Chunk(checked), size).await?;
    }
    source.close(reader).await
}

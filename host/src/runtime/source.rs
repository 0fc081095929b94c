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

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow::datatypes::Schema;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use wasmtime::component::ResourceAny;

use super::attempt::dedicated;
use super::channel::{self, Receiver, Sender};
use super::instances::Source;
use super::message::{tapped, Barrier, Message, RejectBatch, Rejected, COMMIT_TIMES};
use super::{Prepared, RunError};
use crate::batch;
use crate::checkpoint::{Opaque, PlannedSplit, Plans, Position, Positions, TransformStates};
use crate::config::{CheckpointPolicy, WriteMode};
use crate::plugin::bindings::source::exports::ingest::plugin::source::Chunk;
use crate::plugin::bindings::types::{Split, StreamInfo};

/// The column a change carries its source commit time in (timestamp µs), for lag.
const COMMIT_TS: &str = "_commit_ts";

/// Bytes of batches one claimed split may hold before its reader waits.
const SPLIT_BYTES: usize = 16 << 20;

/// What the source stage read.
#[derive(Default)]
pub(super) struct SourceStats {
    pub rows: u64,
    pub bytes: u64,
}

/// Epochs closed and not yet committed at most, before the open epoch is closed by time:
/// one committing while the next fills the stages.
const MAX_UNCOMMITTED: u64 = 2;

/// What the open epoch holds so far, measured against the checkpoint policy.
struct EpochClock {
    epoch: u64,
    rows: u64,
    bytes: u64,
    since: Instant,
    /// Positions moved since the last barrier (even without rows: rejects, progress).
    dirty: bool,
    /// Source commit times of the epoch's changes (a sample).
    commit_times: Vec<i64>,
    /// Commit times seen in the epoch, for sampling.
    commit_seen: u64,
}

impl EpochClock {
    fn new(epoch: u64) -> Self {
        EpochClock {
            epoch,
            rows: 0,
            bytes: 0,
            since: Instant::now(),
            dirty: false,
            commit_times: Vec::new(),
            commit_seen: 0,
        }
    }

    /// Keep `value` in the epoch's sample of commit times: every one up to
    /// [`COMMIT_TIMES`], then a reservoir sample.
    fn note_commit_time(&mut self, value: i64) {
        self.commit_seen += 1;
        if self.commit_times.len() < COMMIT_TIMES {
            self.commit_times.push(value);
            return;
        }
        // A cheap deterministic mix stands in for a random draw.
        let slot = (self.commit_seen.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11) % self.commit_seen;
        if (slot as usize) < COMMIT_TIMES {
            self.commit_times[slot as usize] = value;
        }
    }

    /// The epoch holds as many rows or bytes as the policy allows.
    fn full(&self, policy: &CheckpointPolicy) -> bool {
        self.rows >= policy.every_rows || self.bytes >= policy.every_bytes
    }

    /// Close the open epoch: send its barrier with the positions after it and the plans
    /// of the streams read part-way.
    async fn close(
        &mut self,
        tx: &Sender<Message>,
        positions: &Positions,
        plans: &Plans,
        next: u64,
    ) -> Result<(), RunError> {
        let barrier = Barrier {
            epoch: self.epoch,
            positions: positions.clone(),
            plans: plans.clone(),
            commit_times: std::mem::take(&mut self.commit_times),
            transforms: TransformStates::new(),
        };
        tx.send(Message::Barrier(barrier), 0).await?;
        crate::metrics::get()
            .epoch_seconds
            .observe(self.since.elapsed().as_secs_f64());
        *self = EpochClock::new(next);
        Ok(())
    }
}

/// Reads every split of every stream, emitting barriers by the checkpoint policy.
pub(super) async fn source_stage(
    prepared: Arc<Prepared>,
    source: Source,
    positions: Positions,
    plans: Plans,
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
        uncommitted: 0,
        positions,
        recorded: plans.keys().cloned().collect(),
        plans,
        commit_ts: BTreeMap::new(),
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
        if let Ok(index) = declared.index_of(COMMIT_TS) {
            if matches!(
                declared.field(index).data_type(),
                arrow::datatypes::DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, _)
            ) {
                out.commit_ts.insert(info.name.clone(), index);
            }
        }
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
        let splits = plan(&mut out, &mut readers[0], &info.name).await?;
        let mut kept: Option<(ResourceAny, String, Option<Position>)> = None;
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
            for (i, split) in splits.iter().enumerate() {
                // The last split's reader stays open until the stream's last epoch is
                // committed, so that it is told (see `final_ack`).
                let last = i + 1 == splits.len();
                let open = read_split_here(&mut out, &mut readers[0], info, &declared, split, last)
                    .await?;
                kept = open.map(|(reader, acked)| (reader, split.id.clone(), acked));
                if prepared.drain.is_cancelled() {
                    break;
                }
            }
        }
        if prepared.drain.is_cancelled() {
            // Draining: what was read commits with this epoch; the run ends here.
            if out.clock.dirty {
                out.close().await?;
            }
            tracing::info!("drained: reading stopped and the open epoch is committing");
            // The reader hears of that commit (a webhook answers its senders, a stream
            // source acknowledges its messages) before it is closed.
            if let Some((reader, split, acked)) = kept.take() {
                final_ack(&mut out, &mut readers[0], reader, &info.name, &split, acked).await?;
            }
            break;
        }
        // The stream is read to its end: the sink is told, and its plan is done with.
        // The epoch that follows must close even if nothing else moved when an epoch
        // recorded the plan, or when the sink overwrites its target (that epoch puts
        // the run's rows in place of the old ones).
        out.tx.send(Message::Finish, 0).await?;
        if out.plans.remove(&info.name).is_some() && out.recorded.contains(&info.name) {
            out.clock.dirty = true;
        }
        if prepared.pipeline.sink.write_mode == WriteMode::Overwrite {
            out.clock.dirty = true;
        }
        if out.clock.dirty {
            out.close().await?;
        }
        if let Some((reader, split, acked)) = kept.take() {
            final_ack(&mut out, &mut readers[0], reader, &info.name, &split, acked).await?;
        }
    }
    out.tx.send(Message::End, 0).await?;
    Ok(out.stats)
}

/// The splits to read `stream` in: the plan an interrupted run kept, or a new one from
/// the source (kept from the next epoch on when it has more than one split).
async fn plan(out: &mut Output, source: &mut Source, stream: &str) -> Result<Vec<Split>, RunError> {
    if let Some(kept) = out.plans.get(stream) {
        tracing::info!(
            stream,
            splits = kept.len(),
            "resuming the splits an interrupted run planned"
        );
        return Ok(kept
            .iter()
            .map(|s| Split {
                id: s.id.clone(),
                descriptor: s.descriptor.0.clone(),
            })
            .collect());
    }
    if let Some(claim) = &out.prepared.claim {
        // `host worker`: the one split claimed, as `host submit` planned it.
        return Ok(vec![Split {
            id: claim.split.clone(),
            descriptor: claim.descriptor.clone(),
        }]);
    }
    let splits = source.splits(stream).await?;
    if splits.len() > 1 {
        let kept = splits
            .iter()
            .map(|s| PlannedSplit {
                id: s.id.clone(),
                descriptor: Opaque(s.descriptor.clone()),
            })
            .collect();
        out.plans.insert(stream.to_string(), kept);
    }
    Ok(splits)
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
    /// The positions of each epoch the sink committed, one message per epoch.
    acks: mpsc::UnboundedReceiver<Positions>,
    /// Epochs closed whose commit has not come back on `acks` yet.
    uncommitted: u64,
    positions: Positions,
    /// The split plans of the streams read part-way.
    plans: Plans,
    /// The streams whose rows carry their source commit time (`_commit_ts`, µs), with the
    /// column's index.
    commit_ts: BTreeMap<String, usize>,
    /// The streams whose plan the last barrier carried (or the stored state, at first).
    recorded: BTreeSet<String>,
    clock: EpochClock,
    stats: SourceStats,
}

impl Output {
    /// Note the `_commit_ts` values (column `index`) of a chunk's rows in the open epoch.
    fn note_commit_times(&mut self, ipc: &[u8], index: usize) {
        let Ok(column) = batch::decode_column(ipc, index) else {
            return;
        };
        let Some(times) = column
            .as_any()
            .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
        else {
            return;
        };
        for value in times.iter().flatten() {
            self.clock.note_commit_time(value);
        }
    }

    /// Close the open epoch.
    async fn close(&mut self) -> Result<(), RunError> {
        let next = self.prepared.next_epoch(self.clock.epoch)?;
        self.clock
            .close(&self.tx, &self.positions, &self.plans, next)
            .await?;
        self.uncommitted += 1;
        self.recorded = self.plans.keys().cloned().collect();
        Ok(())
    }

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
            self.uncommitted = self.uncommitted.saturating_sub(1);
            if let Some(splits) = acked.get(stream) {
                out.extend(splits.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        out
    }

    /// Pass on one chunk of `split`.
    async fn emit(&mut self, stream: &str, split: &str, checked: Checked) -> Result<(), RunError> {
        let Checked { chunk, rows } = checked;
        let position = Position::from(chunk.position);
        let splits = self.positions.entry(stream.to_string()).or_default();
        // A chunk without rows or rejects that leaves the position where it was changes
        // nothing, and needs no epoch (a re-run of a caught-up incremental stream).
        let moved = splits.get(split) != Some(&position);
        splits.insert(split.to_string(), position);
        if moved || rows > 0 || !chunk.rejects.is_empty() {
            self.clock.dirty = true;
        }
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
        if let (true, Some(&index)) = (rows > 0, self.commit_ts.get(stream)) {
            self.note_commit_times(&chunk.batch, index);
        }
        // A chunk without rows (a stream source with nothing new) carries only its
        // schema: it counts toward neither the figures nor the epoch's size.
        let size = if rows > 0 { chunk.batch.len() } else { 0 };
        self.stats.rows += rows;
        self.stats.bytes += size as u64;
        if rows > 0 {
            crate::metrics::get().read(stream, rows, size as u64);
        }
        self.clock.rows += rows;
        self.clock.bytes += size as u64;
        if rows > 0 {
            let stage = &self.prepared.pipeline.source.name;
            if let Some(tap) = tapped(stage, &chunk.batch, rows) {
                self.tx.send(tap, 0).await?;
            }
            let data = Message::Data {
                batch: chunk.batch,
                rows,
            };
            self.tx.send(data, size).await?;
        }
        let policy = &self.prepared.pipeline.checkpoint;
        if self.clock.full(policy) {
            self.close().await?;
        } else if self.clock.since.elapsed() >= policy.every {
            if !self.clock.dirty {
                // Nothing moved: no epoch to commit; the interval starts over.
                self.clock.since = Instant::now();
            } else if self.uncommitted < MAX_UNCOMMITTED {
                self.close().await?;
            }
            // Otherwise the sink is behind: the open epoch takes more until one of those
            // committing is done, so that epochs closed by time do not queue up faster than
            // they commit. (Epochs closed by size keep their size: the stages' channels,
            // bounded in bytes, hold the source back instead.)
        }
        Ok(())
    }
}

/// Tell the kept reader of `split`, the last of `stream`, that the position it ended at
/// is durable, once the sink has committed it (the stream's last epoch); then close it. A
/// source that releases what it read upstream (acknowledges messages, say) releases the
/// end of a bounded stream too. `acked` is the last position known durable: when the
/// reader ended there, nothing is pending.
async fn final_ack(
    out: &mut Output,
    source: &mut Source,
    reader: ResourceAny,
    stream: &str,
    split: &str,
    acked: Option<Position>,
) -> Result<(), RunError> {
    let end = out
        .positions
        .get(stream)
        .and_then(|m| m.get(split))
        .cloned();
    if let Some(end) = end.filter(|end| acked.as_ref() != Some(end)) {
        // Only an epoch still committing can make `end` durable.
        while out.uncommitted > 0 {
            let committed = tokio::select! {
                committed = out.acks.recv() => committed,
                _ = out.prepared.cancel.cancelled() => return Err(RunError::Cancelled { plugin: None }),
            };
            // The sink stage ended without committing it: the attempt is failing.
            let Some(committed) = committed else {
                return Err(RunError::Stopped);
            };
            out.uncommitted -= 1;
            if let Some(position) = committed.get(stream).and_then(|m| m.get(split)) {
                source.ack(reader, &position.0).await?;
                if *position == end {
                    break;
                }
            }
        }
    }
    source.close(reader).await
}

/// Read `split` with the stage's own instance, passing each chunk on as it comes. With
/// `keep`, a reader that reached the split's end is returned open, with the last position
/// known durable (the one it resumed from, or the last it was told of), instead of closed.
async fn read_split_here(
    out: &mut Output,
    source: &mut Source,
    info: &StreamInfo,
    declared: &Schema,
    split: &Split,
    keep: bool,
) -> Result<Option<(ResourceAny, Option<Position>)>, RunError> {
    let batch_rows = out.prepared.pipeline.source.batch_rows;
    let position = out.position(&info.name, &split.id);
    let reader = source.open(&info.name, split, position.as_ref()).await?;
    // The position reading resumed from is durable already.
    let mut acked = position.clone().map(Position::from);
    loop {
        out.prepared.check_cancelled()?;
        if out.prepared.drain.is_cancelled() {
            if keep {
                return Ok(Some((reader, acked)));
            }
            break;
        }
        for (id, p) in out.durable(&info.name) {
            if id == split.id {
                source.ack(reader, &p.0).await?;
                acked = Some(p);
            }
        }
        let Some(checked) = next_checked(source, reader, batch_rows, &info.name, declared).await?
        else {
            crate::metrics::get().split_done(&info.name, &split.id);
            if keep {
                return Ok(Some((reader, acked)));
            }
            break;
        };
        out.emit(&info.name, &split.id, checked).await?;
    }
    source.close(reader).await?;
    Ok(None)
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
            crate::metrics::get().split_done(&work.stream, &split.id);
            break;
        };
        let size = checked.chunk.batch.len();
        tx.send(Part::Chunk(checked), size).await?;
    }
    source.close(reader).await
}

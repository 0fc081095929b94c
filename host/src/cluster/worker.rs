//! `host worker`: pull splits from the cluster's queue and run them, one at a time.
//!
//! For each split: claim it in the bucket (the fence moves), run it through the same stages
//! and two-phase epochs as `host run`, with the split's record as its state, then record
//! it done and acknowledge its message. While a split runs, a keeper thread tells the
//! server every quarter lease that the work is in progress (so the message is not
//! delivered again) and keeps the worker's heartbeat in the bucket for `host status`. A
//! worker that dies or stops stops both: the message goes to another worker after the
//! lease, that worker's claim fences this one, and the split resumes from its last
//! committed epoch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::submit::Work;
use super::{ensure_queue, kv, lease_of, now_ms, Claim, ClusterError, Kv, Names};
use crate::checkpoint::StateError;
use crate::plugin::Runtime;
use crate::runtime::{self, RunError};

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub names: Names,
    /// This worker's name in the bucket and in logs.
    pub id: String,
    /// The lease when this worker creates the queue (an existing queue keeps its own).
    pub lease: Duration,
    /// Exit after this long without work; `None`: wait for work until stopped.
    pub idle_exit: Option<Duration>,
    /// Where compiled plugins are cached.
    pub cache_dir: Option<std::path::PathBuf>,
}

/// What a worker did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Splits run to their end.
    pub done: u64,
    pub rows_read: u64,
    pub rows_written: u64,
    pub epochs: u64,
    /// Splits another worker took over while this one held them.
    pub fenced: u64,
    /// Splits that failed here (given back to the queue, or refused for good).
    pub failed: u64,
    /// Round trips to the bucket for the splits' state and epoch numbers, and their time.
    pub kv_round_trips: u64,
    pub kv_time: Duration,
    /// Time spent running splits, coordination included.
    pub busy: Duration,
}

/// A worker's heartbeat in the bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub started_at: u64,
    pub seen_at: u64,
    /// The lease the worker renews, in ms.
    pub lease_ms: u64,
    /// `pipeline / stream / split` while it runs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<String>,
    pub done: u64,
    pub rows_written: u64,
    /// Whether the worker stopped (set when it exits cleanly).
    #[serde(default)]
    pub stopped: bool,
}

/// The key of worker `id`'s heartbeat.
pub fn worker_key(id: &str) -> String {
    format!("worker.{}", super::key_token(id))
}

/// What the keeper thread shares with the worker loop.
struct Keep {
    /// The ack subject of the split in progress.
    ack: Option<String>,
    record: WorkerRecord,
}

/// Renews the lease of the split in progress and writes the heartbeat, every quarter
/// lease, on connections of its own.
struct Keeper {
    shared: Arc<Mutex<Keep>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Keeper {
    fn start(names: &Names, kv: Arc<Kv>, record: WorkerRecord, lease: Duration) -> Keeper {
        let shared = Arc::new(Mutex::new(Keep { ack: None, record }));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, flag, url) = (shared.clone(), stop.clone(), names.url.clone());
        let every = (lease / 4).max(Duration::from_millis(100));
        let thread = std::thread::spawn(move || {
            let mut js: Option<nats_client::JetStream> = None;
            while !flag.load(Ordering::Relaxed) {
                let (ack, mut record) = {
                    let k = s.lock().unwrap_or_else(|p| p.into_inner());
                    (k.ack.clone(), k.record.clone())
                };
                if let Some(ack) = ack {
                    if js.is_none() {
                        js = kv::connect(&url, "ingest-keeper").ok();
                    }
                    if let Some(conn) = js.as_mut() {
                        let sent = conn
                            .conn
                            .publish(&ack, None, &[], b"+WPI")
                            .and_then(|()| conn.flush());
                        if let Err(e) = sent {
                            tracing::warn!("cannot renew the lease of the split in progress: {e}");
                            js = None;
                        }
                    }
                }
                record.seen_at = now_ms();
                let value = serde_json::to_vec(&record).expect("a worker record serializes");
                if let Err(e) = kv.put_any(&worker_key(&record.id), &value) {
                    tracing::warn!("cannot write this worker's heartbeat: {e}");
                }
                let until = Instant::now() + every;
                while Instant::now() < until && !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        });
        Keeper {
            shared,
            stop,
            thread: Some(thread),
        }
    }

    fn update(&self, change: impl FnOnce(&mut Keep)) {
        change(&mut self.shared.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn record(&self) -> WorkerRecord {
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record
            .clone()
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How one split ended, and what becomes of its message.
enum Outcome {
    /// Read to its end and recorded: acknowledge.
    Done(runtime::Summary),
    /// Another worker holds it now: leave the message to it.
    Fenced(String),
    /// Failed in a way another try may not: refuse the message for good.
    Refused(String),
    /// Failed; deliver it again after a pause.
    Again(String),
    /// The worker is stopping: deliver it again at once.
    Stopped,
}

/// Deliveries of one split after which a failing split is refused for good.
const MAX_DELIVERIES: u64 = 5;

/// Pull and run splits until stopped, or idle for `options.idle_exit`.
pub async fn work(options: &Options, cancel: CancellationToken) -> Result<Tally, ClusterError> {
    let names = &options.names;
    let client = format!("ingest-worker-{}", options.id);
    let mut js = kv::connect(&names.url, &client)?;
    ensure_queue(&mut js, names, options.lease)?;
    let lease = lease_of(&mut js, names)?;
    let kv = names.kv(&client)?;
    let record = WorkerRecord {
        id: options.id.clone(),
        host: hostname(),
        pid: std::process::id(),
        started_at: now_ms(),
        seen_at: now_ms(),
        lease_ms: lease.as_millis() as u64,
        ..WorkerRecord::default()
    };
    let keeper = Keeper::start(names, names.kv(&client)?, record, lease);
    tracing::info!(
        worker = %options.id,
        lease_ms = lease.as_millis() as u64,
        "worker started; pulling splits from `{}`",
        names.work_stream()
    );
    let mut tally = Tally::default();
    let mut runtimes: Vec<(bool, Runtime)> = Vec::new();
    let mut idle_since = Instant::now();
    let stream = names.work_stream();
    let result = loop {
        if cancel.is_cancelled() {
            break Ok(());
        }
        if options
            .idle_exit
            .is_some_and(|idle| idle_since.elapsed() >= idle)
        {
            tracing::info!(worker = %options.id, "no work came for {:?}; stopping", options.idle_exit.unwrap_or_default());
            break Ok(());
        }
        let mut got = Vec::new();
        let pulled = tokio::task::block_in_place(|| {
            js.pull(
                &stream,
                Names::CONSUMER,
                1,
                Duration::from_millis(500).as_nanos() as u64,
                &mut got,
            )
        });
        if let Err(e) = pulled {
            if e.is_transient() {
                tracing::warn!("cannot pull from `{stream}`, connecting again: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                match kv::connect(&names.url, &client) {
                    Ok(fresh) => js = fresh,
                    Err(e) => tracing::warn!("{e}"),
                }
                continue;
            }
            break Err(ClusterError::Nats {
                what: format!("pull from `{stream}`"),
                source: e,
            });
        }
        let Some(delivered) = got.pop() else {
            continue;
        };
        let Some(ack) = delivered.message.reply.clone() else {
            continue;
        };
        let work: Work = match serde_json::from_slice(&delivered.message.payload) {
            Ok(work) => work,
            Err(e) => {
                tracing::error!("a work message is unreadable ({e}); refusing it");
                let _ = reply(&mut js, &ack, "+TERM");
                continue;
            }
        };
        keeper.update(|k| {
            k.ack = Some(ack.clone());
            k.record.running = Some(format!(
                "{} / {} / {}",
                work.pipeline, work.stream, work.split
            ));
        });
        let label = format!(
            "split `{}` of stream `{}` of pipeline `{}`",
            work.split, work.stream, work.pipeline
        );
        tracing::info!(worker = %options.id, delivery = delivered.delivered, "running {label}");
        let started = Instant::now();
        let outcome = run_split(options, &kv, &work, &mut runtimes, cancel.clone()).await;
        tally.busy += started.elapsed();
        keeper.update(|k| {
            k.ack = None;
            k.record.running = None;
        });
        let sent = match outcome {
            Outcome::Done(summary) => {
                tally.done += 1;
                tally.rows_read += summary.rows_read;
                tally.rows_written += summary.rows_written;
                tally.epochs += summary.epochs;
                keeper.update(|k| {
                    k.record.done += 1;
                    k.record.rows_written += summary.rows_written;
                });
                tracing::info!(
                    worker = %options.id,
                    rows_read = summary.rows_read,
                    rows_written = summary.rows_written,
                    epochs = summary.epochs,
                    "done: {label}"
                );
                reply(&mut js, &ack, "+ACK")
            }
            Outcome::Fenced(why) => {
                tally.fenced += 1;
                tracing::warn!(worker = %options.id, "fenced: {why}");
                Ok(())
            }
            Outcome::Refused(why) => {
                tally.failed += 1;
                tracing::error!(worker = %options.id, "{label} failed and is refused: {why}");
                reply(&mut js, &ack, "+TERM")
            }
            Outcome::Again(why) => {
                tally.failed += 1;
                if delivered.delivered >= MAX_DELIVERIES {
                    tracing::error!(worker = %options.id, deliveries = delivered.delivered, "{label} failed again and is refused: {why}");
                    reply(&mut js, &ack, "+TERM")
                } else {
                    tracing::warn!(worker = %options.id, "{label} failed; it goes back to the queue: {why}");
                    let delay = lease.as_nanos() as u64;
                    reply(&mut js, &ack, &format!("-NAK {{\"delay\": {delay}}}"))
                }
            }
            Outcome::Stopped => reply(&mut js, &ack, "-NAK"),
        };
        if let Err(e) = sent {
            tracing::warn!("cannot answer the work message of {label}: {e}");
        }
        idle_since = Instant::now();
    };
    keeper.update(|k| k.record.stopped = true);
    let last = keeper.record();
    keeper.stop();
    let value = serde_json::to_vec(&WorkerRecord {
        seen_at: now_ms(),
        ..last
    })
    .expect("a worker record serializes");
    let _ = kv.put_any(&worker_key(&options.id), &value);
    (tally.kv_round_trips, tally.kv_time) = kv.round_trips();
    result.map(|()| tally)
}

/// Answer a delivered message (`+ACK`, `+TERM`, `-NAK ...`) and flush.
fn reply(js: &mut nats_client::JetStream, ack: &str, what: &str) -> nats_client::Result<()> {
    js.conn.publish(ack, None, &[], what.as_bytes())?;
    js.flush()
}

/// Claim and run one split.
async fn run_split(
    options: &Options,
    kv: &Arc<Kv>,
    work: &Work,
    runtimes: &mut Vec<(bool, Runtime)>,
    cancel: CancellationToken,
) -> Outcome {
    let pipeline = match crate::config::parse(&work.file, &work.text) {
        Ok(p) => p,
        Err(e) => return Outcome::Refused(e.to_string()),
    };
    if let Err(e) = super::check_pipeline(&pipeline) {
        return Outcome::Refused(e.to_string());
    }
    // A split queued twice (two submissions close together) runs once: the second
    // message finds it done since it was submitted.
    match tokio::task::block_in_place(|| {
        super::claim::record_of(kv, &work.pipeline, &work.stream, &work.split)
    }) {
        Ok(Some(record)) if record.done && record.updated_at >= work.submitted_at => {
            tracing::info!(
                worker = %options.id,
                "split `{}` was run to its end by `{}` after this message was submitted",
                work.split,
                record.owner
            );
            return Outcome::Done(runtime::Summary::default());
        }
        Ok(_) => {}
        Err(e) => return Outcome::Again(e.to_string()),
    }
    let claim = match tokio::task::block_in_place(|| {
        Claim::take(
            kv.clone(),
            &work.pipeline,
            &work.stream,
            &work.split,
            &work.descriptor.0,
            &options.id,
        )
    }) {
        Ok(claim) => Arc::new(claim),
        Err(e) => return Outcome::Again(e.to_string()),
    };
    tracing::info!(
        worker = %options.id,
        claim = claim.record().claims,
        resumes_after_epoch = claim.record().state.epoch,
        "claimed split `{}`", work.split
    );
    let fuel = pipeline.stages().any(|s| s.limits.fuel.is_some());
    let runtime = match runtimes.iter().find(|(f, _)| *f == fuel) {
        Some((_, r)) => r.clone(),
        None => match Runtime::new(options.cache_dir.clone(), fuel) {
            Ok(r) => {
                runtimes.push((fuel, r.clone()));
                r
            }
            Err(e) => return Outcome::Again(format!("cannot create the WebAssembly engine: {e}")),
        },
    };
    let result = async {
        let prepared =
            runtime::prepare_claimed(&pipeline, &runtime, cancel.clone(), Some(claim.clone()))
                .await?;
        runtime::run(Arc::new(prepared)).await
    }
    .await;
    // Record why this claim gives up; a claim taken over meanwhile cannot, and then the
    // failure was (or was caused by) the takeover: leave the split to its new holder.
    let give_up = |why: String, again: bool| -> Outcome {
        match tokio::task::block_in_place(|| claim.fail(&why)) {
            Err(fenced @ StateError::Fenced { .. }) => {
                return Outcome::Fenced(format!("{fenced} (this claim's last error: {why})"))
            }
            Err(e) => tracing::warn!("cannot record the failure of split `{}`: {e}", work.split),
            Ok(()) => {}
        }
        if again {
            Outcome::Again(why)
        } else {
            Outcome::Refused(why)
        }
    };
    match result {
        Ok(summary) => match tokio::task::block_in_place(|| claim.finish()) {
            Ok(()) => Outcome::Done(summary),
            Err(e @ StateError::Fenced { .. }) => Outcome::Fenced(e.to_string()),
            Err(e) => Outcome::Again(e.to_string()),
        },
        Err(RunError::State(e @ StateError::Fenced { .. })) => Outcome::Fenced(e.to_string()),
        Err(RunError::Cancelled { .. }) if cancel.is_cancelled() => Outcome::Stopped,
        Err(e) if e.is_config() || matches!(e, RunError::AccessDenied { .. }) => {
            give_up(crate::secrets::redact(&e.to_string()), false)
        }
        Err(e) => give_up(crate::secrets::redact(&e.to_string()), true),
    }
}

/// This machine's name, for the heartbeat.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

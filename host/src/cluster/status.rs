//! `host status --nats`: the cluster's workers and splits, from the queue and the bucket.

use serde::Serialize;

use super::claim::{records, SplitRecord};
use super::submit::Job;
use super::worker::WorkerRecord;
use super::{kv, now_ms, ClusterError, Names};

/// What the cluster is doing.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub cluster: String,
    /// Splits waiting for a worker.
    pub queued: u64,
    /// Splits delivered to a worker and not yet acknowledged.
    pub in_flight: u64,
    pub lease_ms: u64,
    pub jobs: Vec<Job>,
    pub workers: Vec<WorkerView>,
    pub splits: Vec<SplitRecord>,
}

/// A worker as `host status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerView {
    #[serde(flatten)]
    pub record: WorkerRecord,
    /// `alive`, `stopped`, or `lost` (no heartbeat for two leases).
    pub condition: &'static str,
    pub seen_ago_ms: u64,
}

/// Read the cluster's queue and bucket.
pub fn overview(names: &Names) -> Result<Overview, ClusterError> {
    let mut js = kv::connect(&names.url, "ingest-status")?;
    let stream = names.work_stream();
    let consumer = js.request(
        &format!("$JS.API.CONSUMER.INFO.{stream}.{}", Names::CONSUMER),
        &serde_json::Value::Null,
    );
    let (queued, in_flight, lease_ms) = match consumer {
        Ok(info) => (
            info["num_pending"].as_u64().unwrap_or(0),
            info["num_ack_pending"].as_u64().unwrap_or(0),
            info["config"]["ack_wait"].as_u64().unwrap_or(0) / 1_000_000,
        ),
        Err(nats_client::Error::Api { code: 404, .. }) => (0, 0, 0),
        Err(source) => {
            return Err(ClusterError::Nats {
                what: format!("read the consumer of `{stream}`"),
                source,
            })
        }
    };
    let store = names.kv("ingest-status")?;
    let now = now_ms();
    let mut workers = Vec::new();
    for key in store.keys("worker.")? {
        let Some(entry) = store.get(&key)? else {
            continue;
        };
        let Ok(record) = serde_json::from_slice::<WorkerRecord>(&entry.value) else {
            continue;
        };
        let seen_ago_ms = now.saturating_sub(record.seen_at);
        let condition = if record.stopped {
            "stopped"
        } else if seen_ago_ms > 2 * record.lease_ms.max(1000) {
            "lost"
        } else {
            "alive"
        };
        workers.push(WorkerView {
            record,
            condition,
            seen_ago_ms,
        });
    }
    let mut jobs = Vec::new();
    for key in store.keys("job.")? {
        if let Some(entry) = store.get(&key)? {
            if let Ok(job) = serde_json::from_slice::<Job>(&entry.value) {
                jobs.push(job);
            }
        }
    }
    Ok(Overview {
        cluster: names.name.clone(),
        queued,
        in_flight,
        lease_ms,
        jobs,
        workers,
        splits: records(&store, None)?,
    })
}

/// The overview as lines for people.
pub fn describe(o: &Overview) -> String {
    let mut out = format!(
        "cluster {}: {} split{} queued, {} in flight (lease {:.1} s)\n",
        o.cluster,
        o.queued,
        if o.queued == 1 { "" } else { "s" },
        o.in_flight,
        o.lease_ms as f64 / 1000.0
    );
    for job in &o.jobs {
        let splits: Vec<&SplitRecord> = o
            .splits
            .iter()
            .filter(|s| s.pipeline == job.pipeline)
            .collect();
        let done = splits.iter().filter(|s| s.done).count();
        let rows: u64 = splits.iter().map(|s| s.state.totals.rows_written).sum();
        out.push_str(&format!(
            "pipeline {}: {done} of {} splits done, {rows} rows written ({})\n",
            job.pipeline,
            job.splits,
            job.file.display()
        ));
    }
    out.push_str(&format!("workers ({}):\n", o.workers.len()));
    for w in &o.workers {
        let r = &w.record;
        out.push_str(&format!(
            "  {:<16} {:<8} {}:{}  seen {:.1} s ago  {} split{} done, {} rows written{}\n",
            r.id,
            w.condition,
            r.host,
            r.pid,
            w.seen_ago_ms as f64 / 1000.0,
            r.done,
            if r.done == 1 { "" } else { "s" },
            r.rows_written,
            r.running
                .as_ref()
                .map(|s| format!("; running {s}"))
                .unwrap_or_default()
        ));
    }
    out.push_str(&format!("splits ({}):\n", o.splits.len()));
    for s in &o.splits {
        let condition = if s.done {
            "done".to_string()
        } else if let Some(error) = &s.error {
            format!("failed: {error}")
        } else {
            format!("held by {}", s.owner)
        };
        out.push_str(&format!(
            "  {} / {} / {}  claim {}  epoch {}{}  {} rows  {condition}\n",
            s.pipeline,
            s.stream,
            s.split,
            s.claims,
            s.state.epoch,
            if s.state.committed || s.state.epoch == 0 {
                ""
            } else {
                " (prepared)"
            },
            s.state.totals.rows_written,
        ));
    }
    out
}

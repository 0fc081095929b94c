//! Running one pipeline on many hosts, coordinated through NATS JetStream.
//!
//! - `host submit` plans the pipeline's splits and publishes one message per split to the
//!   cluster's work-queue stream ([`submit`]).
//! - `host worker`, as many as wanted on any machines, pulls a split, claims it in the
//!   cluster's KV bucket, runs it through the same stages and epochs as `host run`, and
//!   acknowledges the message once the split is read to its end ([`worker`]).
//! - A split's checkpoint state lives in the bucket, one key per split, and every write of
//!   it is a compare-and-set on the key's revision ([`claim`]). A claim bumps the revision,
//!   so a worker whose split was taken over (its lease ran out: the message was delivered to
//!   another worker) fails its next state write and abandons its epoch before publishing it.
//! - Epoch numbers come from one counter per pipeline in the bucket, so every epoch of every
//!   split has a number of its own, and sinks keep committing idempotently by (pipeline,
//!   stream, epoch).
//!
//! Names: a cluster `NAME` (default `ingest`) owns the stream `NAME_work` (subjects
//! `NAME.work.<pipeline>`), its durable consumer `workers`, and the bucket `NAME_state`.

pub mod claim;
pub mod kv;
pub mod status;
pub mod submit;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

pub use claim::Claim;
pub use kv::Kv;

/// What went wrong talking to the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot {what}: {source}")]
    Nats {
        what: String,
        source: nats_client::Error,
    },
    #[error("NATS answered something unexpected: {0}")]
    Protocol(String),
    #[error("{0}")]
    Invalid(String),
}

impl ClusterError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ClusterError::Nats { source, .. } if source.is_transient())
    }
}

/// A cluster's names on one NATS server.
#[derive(Debug, Clone)]
pub struct Names {
    pub url: String,
    pub name: String,
}

impl Names {
    /// The cluster `name` at `url`; the name takes letters, digits, `-` and `_`.
    pub fn new(url: &str, name: &str) -> Result<Names, ClusterError> {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ClusterError::Invalid(format!(
                "--cluster {name:?}: a cluster name takes letters, digits, `-` and `_`"
            )));
        }
        Ok(Names {
            url: url.to_string(),
            name: name.to_string(),
        })
    }

    /// The work-queue stream.
    pub fn work_stream(&self) -> String {
        format!("{}_work", self.name)
    }

    /// The subject the splits of `pipeline` are published on.
    pub fn work_subject(&self, pipeline: &str) -> String {
        format!("{}.work.{}", self.name, key_token(pipeline))
    }

    /// The durable consumer every worker pulls from.
    pub const CONSUMER: &'static str = "workers";

    /// The KV bucket of states, epoch counters and workers.
    pub fn bucket(&self) -> String {
        format!("{}_state", self.name)
    }

    /// Open the cluster's bucket as `client`.
    pub fn kv(&self, client: &str) -> Result<Arc<Kv>, ClusterError> {
        Ok(Arc::new(Kv::open(&self.url, &self.bucket(), client)?))
    }
}

/// `text` as one token of a KV key or subject: itself when made of letters, digits, `-`
/// and `_`, else its bytes in hex behind `x`.
pub fn key_token(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        text.to_string()
    } else {
        format!("x{}", hex::encode(text.as_bytes()))
    }
}

/// The work-queue stream's settings: a message stays until a worker acknowledges it.
fn work_stream_config(names: &Names) -> serde_json::Value {
    serde_json::json!({
        "name": names.work_stream(),
        "subjects": [format!("{}.work.>", names.name)],
        "retention": "workqueue",
        "storage": "file",
        "num_replicas": 1,
        "duplicate_window": 120_000_000_000u64,
    })
}

/// The consumer every worker shares: a split not acknowledged within `lease` (a worker
/// died, or stopped renewing) is delivered again, to whichever worker pulls next.
fn consumer_config(lease: Duration) -> serde_json::Value {
    serde_json::json!({
        "durable_name": Names::CONSUMER,
        "deliver_policy": "all",
        "ack_policy": "explicit",
        "ack_wait": lease.as_nanos() as u64,
        "max_deliver": -1,
        "max_ack_pending": -1,
    })
}

/// Create the work-queue stream and its consumer when they do not exist yet.
pub fn ensure_queue(
    js: &mut nats_client::JetStream,
    names: &Names,
    lease: Duration,
) -> Result<(), ClusterError> {
    let stream = names.work_stream();
    let nats = |what: &str| {
        let what = what.to_string();
        move |source| ClusterError::Nats { what, source }
    };
    kv::ensure_stream(js, &stream, &work_stream_config(names))
        .map_err(nats(&format!("create the work-queue stream `{stream}`")))?;
    // An existing consumer keeps its settings: every worker shares its lease, and a
    // create request without `action` would update it to this caller's.
    let info = format!("$JS.API.CONSUMER.INFO.{stream}.{}", Names::CONSUMER);
    match js.request(&info, &serde_json::Value::Null) {
        Ok(_) => return Ok(()),
        Err(nats_client::Error::Api { code: 404, .. }) => {}
        Err(e) => return Err(nats(&format!("read the consumer of `{stream}`"))(e)),
    }
    let body = serde_json::json!({
        "stream_name": stream,
        "config": consumer_config(lease),
        "action": "create",
    });
    match js.request(
        &format!(
            "$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{}",
            Names::CONSUMER
        ),
        &body,
    ) {
        Ok(_) => Ok(()),
        // Another caller created it first, maybe with another lease: the first one stays.
        Err(nats_client::Error::Api { code: 400, .. }) => Ok(()),
        Err(e) => Err(nats(&format!("create the consumer of `{stream}`"))(e)),
    }
}

/// The lease of the cluster's consumer (its ack wait).
pub fn lease_of(js: &mut nats_client::JetStream, names: &Names) -> Result<Duration, ClusterError> {
    let stream = names.work_stream();
    let info = js
        .request(
            &format!("$JS.API.CONSUMER.INFO.{stream}.{}", Names::CONSUMER),
            &serde_json::Value::Null,
        )
        .map_err(|source| ClusterError::Nats {
            what: format!("read the consumer of `{stream}`"),
            source,
        })?;
    let nanos = info["config"]["ack_wait"].as_u64().ok_or_else(|| {
        ClusterError::Protocol(format!("the consumer of `{stream}` has no ack wait"))
    })?;
    Ok(Duration::from_nanos(nanos))
}

/// Remove the cluster's stream and bucket (tests, and `host cluster destroy` some day).
pub fn destroy(names: &Names) -> Result<(), ClusterError> {
    let mut js = kv::connect(&names.url, "ingest-destroy")?;
    for stream in [names.work_stream(), format!("KV_{}", names.bucket())] {
        kv::delete_stream(&mut js, &stream).map_err(|source| ClusterError::Nats {
            what: format!("delete the stream `{stream}`"),
            source,
        })?;
    }
    Ok(())
}

/// Refuse what a pipeline cannot do split by split on many workers.
pub fn check_pipeline(pipeline: &crate::config::Pipeline) -> Result<(), ClusterError> {
    if pipeline.sink.write_mode == crate::config::WriteMode::Overwrite {
        return Err(ClusterError::Invalid(format!(
            "pipeline `{}`: sink `{}` has write_mode = \"overwrite\", which replaces a stream's whole output at the end of a run; a split ends alone, so under `host worker` it would replace the other splits' rows. Use \"append\" or \"upsert\", or `host run`",
            pipeline.name, pipeline.sink.name
        )));
    }
    Ok(())
}

/// Now, in milliseconds since 1970.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

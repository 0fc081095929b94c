//! The driver: loads the pipeline's plugins, runs source → transforms → sink as tasks
//! joined by channels bounded in bytes, closes epochs with the two-phase commit of the
//! checkpoint protocol, recovers a half-committed epoch on start, and retries failed
//! attempts from the last checkpoint with exponential backoff.
//!
//! The epoch protocol (see DESIGN.md): the source stage emits a barrier carrying the source
//! positions after every `checkpoint` interval and at the end of each stream; transforms
//! flush and pass it on; the sink stage calls `prepare`, writes the state record
//! atomically, calls `commit`, records the commit, and only then acknowledges the
//! positions to the source.

mod attempt;
mod channel;
mod conform;
mod epoch;
mod error;
mod instances;
mod lag;
mod message;
mod replay;
mod sink;
mod source;
mod transform;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wasmtime::component::Linker;

use crate::checkpoint::{LocalStore, State, StateError, StateStore};
use crate::config::{Pipeline, Stage};
use crate::dlq::{DeadLetters, Protection};
use crate::plugin::bindings::types::{StreamInfo, WriteMode as WitWriteMode};
use crate::plugin::Runtime;
use crate::sandbox::Grants;
use crate::{batch, capabilities, config};

pub use conform::{conform, Finding};
pub use error::RunError;
pub use instances::{LoadedSink, LoadedSource, LoadedTransform};
pub use lag::Lags;
pub use replay::{replay, ReplaySummary};

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub rows_read: u64,
    pub bytes_read: u64,
    pub rows_written: u64,
    pub rows_rejected: u64,
    pub rows_dead_lettered: u64,
    /// Files, objects or tables the sink published.
    pub published: u64,
    pub epochs: u64,
    pub attempts: u32,
    /// The epoch the run started after.
    pub resumed_after_epoch: u64,
    pub last_epoch: u64,
    pub elapsed: Duration,
    /// Source commit → sink commit for a sample of the changes committed (streams whose
    /// rows carry `_commit_ts`).
    pub lags: Lags,
}

/// A pipeline whose plugins are loaded, linked and checked.
pub struct Prepared {
    pub pipeline: Pipeline,
    pub runtime: Runtime,
    pub cancel: CancellationToken,
    /// In stream mode: stop reading, commit the open epoch and end the run.
    pub drain: CancellationToken,
    pub source: LoadedSource,
    pub transforms: Vec<LoadedTransform>,
    pub sink: LoadedSink,
    /// What the source offers, as discovered during the check.
    pub streams: Vec<StreamInfo>,
    /// How dead letters are kept, with its key.
    pub protection: Arc<Protection>,
    /// Under `host worker`: the one split this run reads, and where its state is kept.
    pub claim: Option<Arc<crate::cluster::Claim>>,
}

impl Prepared {
    /// Stop with [`RunError::Cancelled`] once the run is cancelled.
    pub fn check_cancelled(&self) -> Result<(), RunError> {
        if self.cancel.is_cancelled() {
            Err(RunError::Cancelled { plugin: None })
        } else {
            Ok(())
        }
    }

    /// Whether transform `index` masks the dead letters passing it (`protect = "mask"`).
    pub fn masks_letters(&self, index: usize) -> bool {
        self.pipeline.dlq_protect == crate::dlq::Protect::Mask
            && self.transforms[index].stage.is_masker()
    }

    /// The number of the epoch after `last`: the next one on one host, the pipeline's
    /// next across the cluster under a claim.
    pub fn next_epoch(&self, last: u64) -> Result<u64, RunError> {
        match &self.claim {
            None => Ok(last + 1),
            Some(claim) => claim.next_epoch().map_err(|e| RunError::Transient {
                plugin: "host".into(),
                message: format!("cannot number the next epoch: {e}"),
                retry_after: None,
            }),
        }
    }

    /// The epoch whose leftovers a writer clears when it opens, after the state's last:
    /// on one host the next epoch, which an interrupted run may have staged. Under a claim
    /// the next number belongs to whichever writer draws it, so none is named (0 is never
    /// an epoch): the sink clears only the open epoch under its writer tag.
    pub fn stale_epoch(&self, last: u64) -> u64 {
        match &self.claim {
            None => last + 1,
            Some(_) => 0,
        }
    }

    /// The dead-letter queue of `stream`.
    pub fn dead_letters(&self, stream: &str) -> DeadLetters {
        DeadLetters::new(&self.pipeline.dlq_dir, stream, self.protection.clone())
    }
}

fn grants(
    stage: &Stage,
    secrets: &BTreeMap<String, String>,
    pipeline: &Pipeline,
    writer_tag: Option<&str>,
) -> Result<Grants, RunError> {
    for grant in &stage.fs {
        if grant.writable {
            std::fs::create_dir_all(&grant.host_path).map_err(|e| RunError::AccessDenied {
                plugin: stage.label(),
                message: format!(
                    "cannot create the read-write directory {}: {e}",
                    grant.host_path.display()
                ),
            })?;
        }
    }
    let mut net = Vec::new();
    for grant in &stage.net {
        use std::net::ToSocketAddrs;
        let resolved = (grant.host.as_str(), grant.port)
            .to_socket_addrs()
            .map_err(|e| RunError::AccessDenied {
                plugin: stage.label(),
                message: format!("cannot resolve its net grant {grant}: {e}"),
            })?;
        net.extend(resolved);
    }
    Ok(Grants {
        fs: stage.fs.clone(),
        net,
        http: stage.http.clone(),
        env: stage.env.clone(),
        secrets: stage
            .secrets
            .iter()
            .filter_map(|name| secrets.get(name).map(|v| (name.clone(), v.clone())))
            .collect(),
        listen: stage.listen,
        limits: stage.limits,
        checkpoint: crate::plugin::bindings::host::CheckpointPolicy {
            every_rows: pipeline.checkpoint.every_rows,
            every_bytes: pipeline.checkpoint.every_bytes,
            every_ms: pipeline.checkpoint.every.as_millis() as u64,
            streaming: pipeline.mode == crate::config::RunMode::Stream,
        },
        writer_tag: writer_tag.map(str::to_string),
    })
}

/// Refuse a grant the plugin cannot use because it does not import the interface the grant
/// opens: a grant nobody needs is a mistake in the pipeline or a sign the plugin is not the
/// one the operator meant to grant.
fn check_grants_used(
    runtime: &Runtime,
    stage: &Stage,
    component: &wasmtime::component::Component,
) -> Result<(), RunError> {
    let imports: Vec<String> = component
        .component_type()
        .imports(&runtime.engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let imports_any = |prefix: &str| imports.iter().any(|i| i.starts_with(prefix));
    let mut unused = Vec::new();
    let grants: [(&str, bool, &str); 6] = [
        ("fs", !stage.fs.is_empty(), "wasi:filesystem/"),
        ("net", !stage.net.is_empty(), "wasi:sockets/"),
        ("http", !stage.http.is_empty(), "wasi:http/outgoing-handler"),
        ("env", !stage.env.is_empty(), "wasi:cli/environment"),
        ("secrets", !stage.secrets.is_empty(), "ingest:plugin/host"),
        ("listen", stage.listen.is_some(), "ingest:plugin/webhook"),
    ];
    for (key, granted, interface) in grants {
        if granted && !imports_any(interface) {
            unused.push(format!(
                "`{key}` is granted but the plugin does not import {}",
                interface.trim_end_matches('/')
            ));
        }
    }
    if unused.is_empty() {
        Ok(())
    } else {
        Err(RunError::InvalidConfig {
            plugin: stage.label(),
            message: format!(
                "unused grant: {}; remove the grant (see `host plugins inspect` for what the plugin imports)",
                unused.join("; ")
            ),
        })
    }
}

/// Add where in the pipeline file a key the plugin complains about is.
fn locate(pipeline: &Pipeline, stage: &Stage, error: RunError) -> RunError {
    let text = pipeline.text.as_str();
    let RunError::InvalidConfig { plugin, message } = error else {
        return error;
    };
    let key = message
        .split('`')
        .nth(1)
        .filter(|_| message.contains("unknown field") || message.contains("missing field"));
    let line = match (key, &stage.config_span) {
        (Some(key), Some(_)) if message.contains("unknown field") => {
            config::locate_config_key(text, stage.kind, &stage.name, key)
        }
        (_, Some(span)) => Some(config::line_of(text, span.start)),
        _ => None,
    };
    let message = match line {
        Some(line) => format!("{message} ({}, line {line})", pipeline.file.display()),
        None => message,
    };
    RunError::InvalidConfig { plugin, message }
}

/// Load, compile (or take from the cache), link and check every plugin, and discover the
/// source's streams. Moves no data.
pub async fn prepare(
    pipeline: &Pipeline,
    runtime: &Runtime,
    cancel: CancellationToken,
) -> Result<Prepared, RunError> {
    prepare_claimed(pipeline, runtime, cancel, None).await
}

/// [`prepare`] for a run of the one split `claim` holds (`host worker`): the source reads
/// that split only, the state is the split's record in the cluster's bucket, and the sink
/// is told its writer tag.
pub async fn prepare_claimed(
    pipeline: &Pipeline,
    runtime: &Runtime,
    cancel: CancellationToken,
    claim: Option<Arc<crate::cluster::Claim>>,
) -> Result<Prepared, RunError> {
    let tag = claim.as_ref().map(|c| c.tag.as_str());
    let secrets = crate::secrets::resolve(&pipeline.secrets).map_err(|errors| {
        RunError::Secrets(
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    let protection = Protection::new(&pipeline.dlq_protect, &secrets)
        .map_err(|e| RunError::Secrets(e.to_string()))?;
    let mut linker = Linker::new(&runtime.engine);
    capabilities::add_to_linker(&mut linker).map_err(|e| RunError::Fatal {
        plugin: "host".into(),
        message: format!("cannot set up the plugin linker: {e:#}"),
    })?;

    let compile = |stage: &Stage| -> Result<wasmtime::component::Component, RunError> {
        let label = stage.label();
        let bytes = crate::plugin::read(&stage.plugin, stage.kind)?;
        let component = runtime.compile(&label, &bytes)?;
        runtime.check_kind(&label, &component, stage.kind)?;
        check_grants_used(runtime, stage, &component)?;
        Ok(component)
    };

    let stage = &pipeline.source;
    let source = LoadedSource::new(
        stage.clone(),
        grants(stage, &secrets, pipeline, tag)?,
        &linker,
        &compile(stage)?,
    )?;
    let mut transforms = Vec::new();
    for stage in &pipeline.transforms {
        transforms.push(LoadedTransform::new(
            stage.clone(),
            grants(stage, &secrets, pipeline, tag)?,
            &linker,
            &compile(stage)?,
        )?);
    }
    let stage = &pipeline.sink;
    let sink = LoadedSink::new(
        stage.clone(),
        grants(stage, &secrets, pipeline, tag)?,
        &linker,
        &compile(stage)?,
    )?;

    let mut instance = source.start(runtime, &cancel).await?;
    instance
        .check()
        .await
        .map_err(|e| locate(pipeline, &pipeline.source, e))?;
    let mut streams = instance
        .discover()
        .await
        .map_err(|e| locate(pipeline, &pipeline.source, e))?;
    if let Some(claim) = &claim {
        streams.retain(|s| s.name == claim.stream);
        if streams.is_empty() {
            return Err(RunError::InvalidConfig {
                plugin: pipeline.source.label(),
                message: format!(
                    "the source no longer offers stream `{}`, which split `{}` was planned for",
                    claim.stream, claim.split
                ),
            });
        }
    }
    for t in &transforms {
        let mut instance = t.start(runtime, &cancel).await?;
        instance
            .check()
            .await
            .map_err(|e| locate(pipeline, &t.stage, e))?;
    }
    let mut instance = sink.start(runtime, &cancel).await?;
    instance
        .check()
        .await
        .map_err(|e| locate(pipeline, &pipeline.sink, e))?;

    Ok(Prepared {
        pipeline: pipeline.clone(),
        runtime: runtime.clone(),
        cancel,
        drain: CancellationToken::new(),
        source,
        transforms,
        sink,
        streams,
        protection: Arc::new(protection),
        claim,
    })
}

/// The schema of each discovered stream, for `host check`.
pub fn describe_streams(prepared: &Prepared) -> Vec<(String, String)> {
    prepared
        .streams
        .iter()
        .map(|s| {
            let schema = batch::decode_schema(&s.schema)
                .map(|s| batch::describe(&s))
                .unwrap_or_else(|e| format!("unreadable schema: {e}"));
            (s.name.clone(), schema)
        })
        .collect()
}

pub(crate) fn wit_write_mode(mode: &config::WriteMode) -> WitWriteMode {
    match mode {
        config::WriteMode::Append => WitWriteMode::Append,
        config::WriteMode::Overwrite => WitWriteMode::Overwrite,
        config::WriteMode::Upsert(key) => WitWriteMode::Upsert(key.clone()),
    }
}

/// Run a prepared pipeline to the end of its input, retrying failed attempts by the
/// pipeline's retry policy.
pub async fn run(prepared: Arc<Prepared>) -> Result<Summary, RunError> {
    let started = Instant::now();
    let policy = prepared.pipeline.retry;
    // Attempts in a row that committed nothing: what `max_attempts` bounds, so that a
    // stream that keeps going through occasional failures is not stopped by their sum.
    let mut attempt = 0;
    let mut total = Summary::default();
    loop {
        attempt += 1;
        total.attempts += 1;
        let committed = total.last_epoch;
        let span = tracing::info_span!("attempt", n = total.attempts);
        let result =
            tracing::Instrument::instrument(attempt::attempt(prepared.clone(), &mut total), span)
                .await;
        if result.is_err() && total.last_epoch > committed {
            attempt = 1;
        }
        match result {
            Ok(()) => {
                total.elapsed = started.elapsed();
                return Ok(total);
            }
            Err(e) if e.is_retryable() && attempt < policy.max_attempts => {
                if prepared.cancel.is_cancelled() {
                    return Err(RunError::Cancelled { plugin: None });
                }
                crate::metrics::get().retried(&e);
                let delay = backoff(&policy, attempt, &e);
                tracing::warn!(
                    attempt,
                    max_attempts = policy.max_attempts,
                    delay_ms = delay.as_millis() as u64,
                    "attempt failed, retrying from the last checkpoint: {e}"
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = prepared.cancel.cancelled() => {
                        return Err(RunError::Cancelled { plugin: None });
                    }
                }
            }
            Err(e) => return Err(e),
        }
    }
}

fn backoff(policy: &config::RetryPolicy, attempt: u32, error: &RunError) -> Duration {
    let exp = policy
        .initial_backoff
        .saturating_mul(1u32 << (attempt - 1).min(20))
        .min(policy.max_backoff);
    let mut delay = if policy.jitter {
        // Full jitter between half and all of the delay.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        exp.mul_f64(0.5 + (nanos % 1000) as f64 / 2000.0)
    } else {
        exp
    };
    if let RunError::Transient {
        retry_after: Some(after),
        ..
    } = error
    {
        delay = delay.max(*after);
    }
    delay
}

/// The state store of a pipeline.
pub fn state_store(pipeline: &Pipeline) -> LocalStore {
    LocalStore::new(&pipeline.state_dir, &pipeline.name)
}

/// The committed state of a pipeline.
pub fn load_state(pipeline: &Pipeline) -> Result<State, StateError> {
    state_store(pipeline).load()
}

/// Every split of every stream the source offers, as its `splits` plans them (for
/// `host submit`).
pub async fn plan_splits(
    prepared: &Prepared,
) -> Result<Vec<(String, Vec<crate::plugin::bindings::types::Split>)>, RunError> {
    let mut source = prepared
        .source
        .start(&prepared.runtime, &prepared.cancel)
        .await?;
    let mut out = Vec::new();
    for info in &prepared.streams {
        out.push((info.name.clone(), source.splits(&info.name).await?));
    }
    Ok(out)
}

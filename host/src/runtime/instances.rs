//! Typed handles on running plugin instances: one store and one instance per handle, and
//! one way into the plugin, [`Instance::call`], that bounds every call by the plugin's
//! deadline and by cancellation, and turns every failure into a [`RunError`] that names
//! the plugin and says what happened.
//!
//! The deadline is a host timer around the call, not only the engine's epoch tick: a
//! plugin waiting inside a host call (a sleep, a poll, a socket read from a server that
//! never answers) runs no WebAssembly, so nothing inside the engine would stop it. When
//! the timer fires or the run is cancelled, the call's future is dropped; wasmtime
//! unwinds the plugin's stack, and the instance is discarded: every later call on it
//! fails at once. Running code yields at every epoch tick (see `sandbox`), so the same
//! timer also stops a plugin that computes without pause.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wasmtime::component::{Component, Linker, ResourceAny};
use wasmtime::Store;

use super::RunError;
use crate::config::Stage;
use crate::metrics::PluginMetrics;
use crate::plugin::bindings::sink::{SinkPlugin, SinkPluginPre};
use crate::plugin::bindings::source::{
    exports::ingest::plugin::source::{Chunk, Replayed},
    SourcePlugin, SourcePluginPre,
};
use crate::plugin::bindings::transform::exports::ingest::plugin::transform::Output;
use crate::plugin::bindings::transform::{TransformPlugin, TransformPluginPre};
use crate::plugin::bindings::types::{Error as WitError, Reject, Split, StreamInfo, WriteMode};
use crate::plugin::Runtime;
use crate::sandbox::{self, Grants, Limits, PluginState};

/// Why the host stopped a call before it returned.
#[derive(Debug, Clone, Copy)]
enum Interrupted {
    Deadline(Duration),
    Cancelled,
}

/// Run one call into a plugin (`call`, a future over the plugin's store) under its
/// deadline and the run's cancellation. The outer error is the host's (a trap, a limit, an
/// interruption); whatever the plugin itself returned is inside the `Ok`.
async fn bounded<T>(
    label: &str,
    limits: Limits,
    cancel: &CancellationToken,
    call: impl Future<Output = wasmtime::Result<T>>,
) -> Result<T, RunError> {
    let call = tracing::Instrument::instrument(call, tracing::trace_span!("call", plugin = label));
    let outcome = tokio::select! {
        // A cancelled run starts no new call, and stops one that waits or computes.
        biased;
        _ = cancel.cancelled() => Err(Interrupted::Cancelled),
        result = call => Ok(result),
        _ = tokio::time::sleep(limits.call_timeout) => Err(Interrupted::Deadline(limits.call_timeout)),
    };
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(trapped(label, limits, error)),
        Err(Interrupted::Cancelled) => Err(RunError::Cancelled {
            plugin: Some(label.to_string()),
        }),
        Err(Interrupted::Deadline(limit)) => Err(RunError::Trapped {
            plugin: label.to_string(),
            what: format!(
                "exceeded its deadline of {} for one call (raise `deadline` to allow longer calls)",
                humantime::format_duration(limit)
            ),
        }),
    }
}

/// What a call into the instance of `store` used, for its plugin's metrics: the time
/// since `started`, the instance's peak memory, and the fuel burnt when the engine meters
/// fuel (`fuel` held what was left before).
fn used(
    metrics: &PluginMetrics,
    store: &Store<PluginState>,
    started: std::time::Instant,
    fuel: Option<u64>,
) {
    let burnt = fuel.and_then(|before| Some(before.saturating_sub(store.get_fuel().ok()?)));
    metrics.called(started.elapsed(), store.data().peak_memory_bytes(), burnt);
}

/// Describe why a plugin call failed inside the engine, naming the limit it hit.
fn trapped(label: &str, limits: Limits, error: wasmtime::Error) -> RunError {
    let text = format!("{error:#}");
    let what = if text.contains("forcing trap when growing memory") {
        format!(
            "hit its memory limit of {} (raise `memory` to allow more)",
            sandbox::show_bytes(limits.memory_bytes as u64)
        )
    } else if text.contains("fuel allocated for hostcalls has been exhausted") {
        // Not worth a retry: the plugin would return the same again.
        return RunError::Contract {
            plugin: label.to_string(),
            message: format!(
                "returned more than its `max_batch` limit of {} in one call; return smaller batches (or raise `max_batch`)",
                sandbox::show_bytes(limits.max_batch_bytes as u64)
            ),
        };
    } else if let Some(wasmtime::Trap::OutOfFuel) = error.downcast_ref::<wasmtime::Trap>() {
        format!(
            "ran out of its fuel of {} units for one call (raise `fuel` to allow more)",
            limits.fuel.unwrap_or_default()
        )
    } else if let Some(trap) = error.downcast_ref::<wasmtime::Trap>() {
        // The first line of `text` is the header of the wasm backtrace, not the cause;
        // the backtrace itself is for plugin authors.
        tracing::debug!(plugin = label, "{text}");
        match sandbox::take_panic(label) {
            Some(panic) => format!("trapped ({trap}) after it panicked: {panic}"),
            None => format!("trapped ({trap})"),
        }
    } else if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        format!("exited with status {}", exit.0)
    } else {
        format!("failed: {}", text.lines().next().unwrap_or_default())
    };
    RunError::Trapped {
        plugin: label.to_string(),
        what,
    }
}

/// A plugin compiled, linked and ready to be instantiated in ~tens of microseconds.
pub struct Loaded<P> {
    pub stage: Stage,
    pub label: Arc<str>,
    pub grants: Grants,
    pre: P,
}

macro_rules! loaded {
    ($pre:ty, $plugin:ty) => {
        impl Loaded<$pre> {
            pub fn new(
                stage: Stage,
                grants: Grants,
                linker: &Linker<PluginState>,
                component: &Component,
            ) -> Result<Self, RunError> {
                let label: Arc<str> = stage.label().into();
                let instance_pre =
                    linker
                        .instantiate_pre(component)
                        .map_err(|e| RunError::Fatal {
                            plugin: label.to_string(),
                            message: format!("cannot link: {e:#}"),
                        })?;
                let pre = <$pre>::new(instance_pre).map_err(|e| RunError::Fatal {
                    plugin: label.to_string(),
                    message: format!("does not match the contract: {e:#}"),
                })?;
                Ok(Loaded {
                    stage,
                    label,
                    grants,
                    pre,
                })
            }

            /// A fresh instance in a fresh sandbox; instantiation (which may run the
            /// plugin's start-up code) is bounded like any call.
            pub async fn start(
                &self,
                runtime: &Runtime,
                cancel: &CancellationToken,
            ) -> Result<Instance<$plugin>, RunError> {
                let mut store =
                    sandbox::new_store(&runtime.engine, self.label.clone(), &self.grants)?;
                sandbox::arm(&mut store);
                let metrics = crate::metrics::get().plugin(&self.label);
                let (started, fuel) = (std::time::Instant::now(), store.get_fuel().ok());
                let plugin = bounded(
                    &self.label,
                    self.grants.limits,
                    cancel,
                    self.pre.instantiate_async(&mut store),
                )
                .await;
                used(&metrics, &store, started, fuel);
                let plugin = plugin?;
                Ok(Instance {
                    label: self.label.clone(),
                    metrics,
                    config: self.stage.config_json.clone(),
                    cancel: cancel.clone(),
                    discarded: false,
                    store,
                    plugin,
                })
            }
        }
    };
}

loaded!(SourcePluginPre<PluginState>, SourcePlugin);
loaded!(TransformPluginPre<PluginState>, TransformPlugin);
loaded!(SinkPluginPre<PluginState>, SinkPlugin);

/// A running instance of a plugin: its own store (sandbox) and its bindings.
pub struct Instance<P> {
    pub label: Arc<str>,
    metrics: PluginMetrics,
    config: String,
    cancel: CancellationToken,
    /// A call failed inside the engine or was stopped by the host: the instance's state
    /// is gone, and it takes no more calls.
    discarded: bool,
    store: Store<PluginState>,
    plugin: P,
}

impl<P> Instance<P> {
    /// The limits the instance runs under.
    pub fn limits(&self) -> Limits {
        self.store.data().granted
    }

    /// The config the instance's calls pass.
    pub fn config(&self) -> &str {
        &self.config
    }

    /// A batch the plugin returned over its `max_batch` limit breaks the contract.
    pub fn check_batch_size(&self, bytes: usize) -> Result<(), RunError> {
        let max = self.limits().max_batch_bytes;
        if bytes > max {
            return Err(RunError::Contract {
                plugin: self.label.to_string(),
                message: format!(
                    "returned a batch of {}, over its `max_batch` limit of {}; return smaller batches (or raise `max_batch`)",
                    sandbox::show_bytes(bytes as u64),
                    sandbox::show_bytes(max as u64)
                ),
            });
        }
        Ok(())
    }

    /// Pass `config` instead from now on (the conformance suite tries a bad one).
    pub fn set_config(&mut self, config: String) {
        self.config = config;
    }

    /// Call into the plugin: `call` gets the bindings, the store and the config. Any
    /// failure of the call itself (a trap, a limit, the deadline, cancellation) discards
    /// the instance.
    async fn call<T>(
        &mut self,
        call: impl AsyncFnOnce(&P, &mut Store<PluginState>, &String) -> wasmtime::Result<T>,
    ) -> Result<T, RunError> {
        if self.discarded {
            return Err(RunError::Trapped {
                plugin: self.label.to_string(),
                what: "was discarded after an earlier call failed".into(),
            });
        }
        sandbox::arm(&mut self.store);
        let limits = self.store.data().granted;
        let (started, fuel) = (std::time::Instant::now(), self.store.get_fuel().ok());
        let result = bounded(
            &self.label,
            limits,
            &self.cancel,
            call(&self.plugin, &mut self.store, &self.config),
        )
        .await;
        used(&self.metrics, &self.store, started, fuel);
        self.discarded = result.is_err();
        result
    }

    /// [`Instance::call`] for a call whose result is the contract's `result<T, error>`:
    /// the plugin's own error keeps the instance.
    async fn try_call<T>(
        &mut self,
        call: impl AsyncFnOnce(
            &P,
            &mut Store<PluginState>,
            &String,
        ) -> wasmtime::Result<Result<T, WitError>>,
    ) -> Result<T, RunError> {
        self.call(call)
            .await?
            .map_err(|e| RunError::from_plugin(&self.label, e))
    }

    /// Close one of the plugin's resources (a reader, transformer or writer) by dropping it.
    pub async fn close(&mut self, resource: ResourceAny) -> Result<(), RunError> {
        self.call(async |_, store, _| resource.resource_drop_async(store).await)
            .await
    }
}

impl Instance<SourcePlugin> {
    /// The JSON Schema of the plugin's config.
    pub async fn spec(&mut self) -> Result<String, RunError> {
        self.call(async |p, s, _| p.ingest_plugin_source().call_spec(s).await)
            .await
    }

    pub async fn check(&mut self) -> Result<(), RunError> {
        self.try_call(async |p, s, c| p.ingest_plugin_source().call_check(s, c).await)
            .await
    }

    pub async fn discover(&mut self) -> Result<Vec<StreamInfo>, RunError> {
        self.try_call(async |p, s, c| p.ingest_plugin_source().call_discover(s, c).await)
            .await
    }

    pub async fn splits(&mut self, stream: &str) -> Result<Vec<Split>, RunError> {
        self.try_call(async |p, s, c| p.ingest_plugin_source().call_splits(s, c, stream).await)
            .await
    }

    /// Parse again records the source rejected earlier.
    pub async fn replay(&mut self, stream: &str, records: &[String]) -> Result<Replayed, RunError> {
        self.try_call(async |p, s, c| {
            p.ingest_plugin_source()
                .call_replay(s, c, stream, records)
                .await
        })
        .await
    }

    pub async fn open(
        &mut self,
        stream: &str,
        split: &Split,
        position: Option<&Vec<u8>>,
    ) -> Result<ResourceAny, RunError> {
        self.try_call(async |p, s, c| {
            p.ingest_plugin_source()
                .reader()
                .call_open(s, c, stream, split, position)
                .await
        })
        .await
    }

    pub async fn next(
        &mut self,
        reader: ResourceAny,
        max_rows: u32,
    ) -> Result<Option<Chunk>, RunError> {
        self.try_call(async |p, s, _| {
            p.ingest_plugin_source()
                .reader()
                .call_next(s, reader, max_rows)
                .await
        })
        .await
    }

    pub async fn ack(&mut self, reader: ResourceAny, position: &Vec<u8>) -> Result<(), RunError> {
        self.call(async |p, s, _| {
            p.ingest_plugin_source()
                .reader()
                .call_ack(s, reader, position)
                .await
        })
        .await
    }
}

impl Instance<TransformPlugin> {
    /// The JSON Schema of the plugin's config.
    pub async fn spec(&mut self) -> Result<String, RunError> {
        self.call(async |p, s, _| p.ingest_plugin_transform().call_spec(s).await)
            .await
    }

    pub async fn check(&mut self) -> Result<(), RunError> {
        self.try_call(async |p, s, c| p.ingest_plugin_transform().call_check(s, c).await)
            .await
    }

    /// Open a transformer for `schema`, resuming from `state` (what `checkpoint` returned at
    /// the last committed epoch); returns it with its declared output schema.
    pub async fn open(
        &mut self,
        schema: &Vec<u8>,
        state: Option<&Vec<u8>>,
    ) -> Result<(ResourceAny, Vec<u8>), RunError> {
        let state = state.map(Vec::as_slice);
        let handle = self
            .try_call(async |p, s, c| {
                p.ingest_plugin_transform()
                    .transformer()
                    .call_open(s, c, schema, state)
                    .await
            })
            .await?;
        let output = self
            .try_call(async |p, s, _| {
                p.ingest_plugin_transform()
                    .transformer()
                    .call_output_schema(s, handle)
                    .await
            })
            .await?;
        Ok((handle, output))
    }

    pub async fn process(
        &mut self,
        handle: ResourceAny,
        batch: &Vec<u8>,
    ) -> Result<Output, RunError> {
        self.try_call(async |p, s, _| {
            p.ingest_plugin_transform()
                .transformer()
                .call_process(s, handle, batch)
                .await
        })
        .await
    }

    pub async fn flush(&mut self, handle: ResourceAny) -> Result<Output, RunError> {
        self.try_call(async |p, s, _| {
            p.ingest_plugin_transform()
                .transformer()
                .call_flush(s, handle)
                .await
        })
        .await
    }

    /// The state to keep with the epoch being closed.
    pub async fn checkpoint(&mut self, handle: ResourceAny) -> Result<Vec<u8>, RunError> {
        self.try_call(async |p, s, _| {
            p.ingest_plugin_transform()
                .transformer()
                .call_checkpoint(s, handle)
                .await
        })
        .await
    }
}

impl Instance<SinkPlugin> {
    /// The JSON Schema of the plugin's config.
    pub async fn spec(&mut self) -> Result<String, RunError> {
        self.call(async |p, s, _| p.ingest_plugin_sink().call_spec(s).await)
            .await
    }

    pub async fn check(&mut self) -> Result<(), RunError> {
        self.try_call(async |p, s, c| p.ingest_plugin_sink().call_check(s, c).await)
            .await
    }

    pub async fn open(
        &mut self,
        stream: &StreamInfo,
        mode: &WriteMode,
    ) -> Result<ResourceAny, RunError> {
        self.try_call(async |p, s, c| {
            p.ingest_plugin_sink()
                .writer()
                .call_open(s, c, stream, mode)
                .await
        })
        .await
    }

    /// Stage `batch`; returns the rows the sink refused.
    pub async fn write(
        &mut self,
        writer: ResourceAny,
        batch: &Vec<u8>,
    ) -> Result<Vec<Reject>, RunError> {
        self.try_call(async |p, s, _| {
            p.ingest_plugin_sink()
                .writer()
                .call_write(s, writer, batch)
                .await
        })
        .await
    }

    pub async fn prepare(&mut self, writer: ResourceAny, epoch: u64) -> Result<Vec<u8>, RunError> {
        self.try_call(async |p, s, _| {
            p.ingest_plugin_sink()
                .writer()
                .call_prepare(s, writer, epoch)
                .await
        })
        .await
    }

    /// Publish `epoch`; returns the names of what was published.
    pub async fn commit(
        &mut self,
        writer: ResourceAny,
        epoch: u64,
        token: &[u8],
    ) -> Result<Vec<String>, RunError> {
        self.try_call(async |p, s, _| {
            p.ingest_plugin_sink()
                .writer()
                .call_commit(s, writer, epoch, token)
                .await
        })
        .await
    }

    /// Tell the writer its stream was read to its end: the next epoch is its last.
    pub async fn finish(&mut self, writer: ResourceAny) -> Result<(), RunError> {
        self.try_call(async |p, s, _| p.ingest_plugin_sink().writer().call_finish(s, writer).await)
            .await
    }

    pub async fn abort(&mut self, writer: ResourceAny, epoch: u64) -> Result<(), RunError> {
        self.try_call(async |p, s, _| {
            p.ingest_plugin_sink()
                .writer()
                .call_abort(s, writer, epoch)
                .await
        })
        .await
    }
}

pub type LoadedSource = Loaded<SourcePluginPre<PluginState>>;
pub type LoadedTransform = Loaded<TransformPluginPre<PluginState>>;
pub type LoadedSink = Loaded<SinkPluginPre<PluginState>>;

/// A running source instance.
pub type Source = Instance<SourcePlugin>;
/// A running transform instance.
pub type Transform = Instance<TransformPlugin>;
/// A running sink instance.
pub type Sink = Instance<SinkPlugin>;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_that_waits_is_stopped_at_its_deadline() {
        let limits = Limits {
            call_timeout: Duration::from_millis(50),
            ..Limits::default()
        };
        let started = std::time::Instant::now();
        let waiting = async {
            tokio::time::sleep(Duration::from_secs(600)).await;
            Ok(())
        };
        let error = bounded("source \"s\"", limits, &CancellationToken::new(), waiting)
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        let text = error.to_string();
        assert!(text.contains("deadline of 50ms"), "{text}");
        assert!(
            error.is_retryable(),
            "a deadline overrun is retried like a trap"
        );
    }

    #[tokio::test]
    async fn a_cancelled_run_stops_a_waiting_call_and_starts_no_new_one() {
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            trigger.cancel();
        });
        let waiting = async {
            tokio::time::sleep(Duration::from_secs(600)).await;
            Ok(())
        };
        let error = bounded("sink \"s\"", Limits::default(), &cancel, waiting)
            .await
            .unwrap_err();
        assert!(
            matches!(error, RunError::Cancelled { plugin: Some(ref p) } if p == "sink \"s\""),
            "{error:?}"
        );
        let started = std::sync::atomic::AtomicBool::new(false);
        let call = async {
            started.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        };
        let again = bounded("sink \"s\"", Limits::default(), &cancel, call).await;
        assert!(matches!(again, Err(RunError::Cancelled { .. })));
        assert!(
            !started.into_inner(),
            "a call after cancellation must not start"
        );
    }

    #[test]
    fn deadlines_read_as_written() {
        let shown = |d| humantime::format_duration(d).to_string();
        assert_eq!(shown(Duration::from_secs(2)), "2s");
        assert_eq!(shown(Duration::from_millis(250)), "250ms");
        assert_eq!(shown(Duration::from_millis(1500)), "1s 500ms");
    }
}

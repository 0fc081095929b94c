//! Typed handles on running plugin instances: one store and one instance per handle, every
//! call armed with the plugin's deadline, every failure turned into a [`RunError`] that
//! names the plugin and says what happened.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use wasmtime::component::{Component, Linker, ResourceAny};
use wasmtime::Store;

use super::RunError;
use crate::config::Stage;
use crate::plugin::bindings::sink::{SinkPlugin, SinkPluginPre};
use crate::plugin::bindings::source::{
    exports::ingest::plugin::source::{Chunk, Replayed},
    SourcePlugin, SourcePluginPre,
};
use crate::plugin::bindings::transform::exports::ingest::plugin::transform::Output;
use crate::plugin::bindings::transform::{TransformPlugin, TransformPluginPre};
use crate::plugin::bindings::types::{Error as WitError, Split, StreamInfo, WriteMode};
use crate::plugin::Runtime;
use crate::sandbox::{self, Grants, Interrupted, PluginState};

/// Turn the outcome of a call into our error: the outer layer is a trap or interruption,
/// the inner one the plugin's own error.
fn outcome<T>(
    state: &PluginState,
    result: wasmtime::Result<Result<T, WitError>>,
) -> Result<T, RunError> {
    match result {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(RunError::from_plugin(&state.label, e)),
        Err(e) => Err(trapped(state, e)),
    }
}

fn unit(state: &PluginState, result: wasmtime::Result<()>) -> Result<(), RunError> {
    result.map_err(|e| trapped(state, e))
}

/// Describe why a plugin instance died, naming the limit it hit.
pub fn trapped(state: &PluginState, error: wasmtime::Error) -> RunError {
    let label = state.label.as_ref();
    let limits = state.granted;
    if let Some(interrupted) = error.downcast_ref::<Interrupted>() {
        return match interrupted {
            Interrupted::Cancelled => RunError::Cancelled {
                plugin: Some(label.to_string()),
            },
            Interrupted::Deadline(_) => RunError::Trapped {
                plugin: label.to_string(),
                what: format!("{interrupted} (raise `deadline` to allow longer calls)"),
            },
        };
    }
    let text = format!("{error:#}");
    let what = if text.contains("forcing trap when growing memory") {
        format!(
            "hit its memory limit of {} (raise `memory` to allow more)",
            sandbox::show_bytes(limits.memory_bytes)
        )
    } else if text.contains("fuel allocated for hostcalls has been exhausted") {
        // Not worth a retry: the plugin would return the same again.
        return RunError::Contract {
            plugin: label.to_string(),
            message: format!(
                "returned more than its `max_batch` limit of {} in one call; return smaller batches (or raise `max_batch`)",
                sandbox::show_bytes(limits.max_batch_bytes)
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
        format!("trapped ({trap})")
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

fn new_store(
    runtime: &Runtime,
    label: &Arc<str>,
    grants: &Grants,
    cancel: &Arc<AtomicBool>,
) -> Result<Store<PluginState>, RunError> {
    Ok(sandbox::new_store(
        &runtime.engine,
        label.clone(),
        grants,
        cancel.clone(),
    )?)
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

            /// A fresh instance in a fresh sandbox.
            pub async fn start(
                &self,
                runtime: &Runtime,
                cancel: &Arc<AtomicBool>,
            ) -> Result<Instance<$plugin>, RunError> {
                let mut store = new_store(runtime, &self.label, &self.grants, cancel)?;
                sandbox::arm(&mut store);
                let plugin = self
                    .pre
                    .instantiate_async(&mut store)
                    .await
                    .map_err(|e| trapped(store.data(), e))?;
                Ok(Instance {
                    label: self.label.clone(),
                    config: self.stage.config_json.clone(),
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
    config: String,
    store: Store<PluginState>,
    plugin: P,
}

impl<P> Instance<P> {
    /// The limits the instance runs under.
    pub fn limits(&self) -> sandbox::Limits {
        self.store.data().granted
    }

    /// The config the instance's calls pass.
    pub fn config(&self) -> &str {
        &self.config
    }

    /// Pass `config` instead from now on (the conformance suite tries a bad one).
    pub fn set_config(&mut self, config: String) {
        self.config = config;
    }
}

macro_rules! spec {
    ($plugin:ty, $interface:ident) => {
        impl Instance<$plugin> {
            /// The JSON Schema of the plugin's config.
            pub async fn spec(&mut self) -> Result<String, RunError> {
                sandbox::arm(&mut self.store);
                let r = self.plugin.$interface().call_spec(&mut self.store).await;
                r.map_err(|e| trapped(self.store.data(), e))
            }
        }
    };
}

spec!(SourcePlugin, ingest_plugin_source);
spec!(TransformPlugin, ingest_plugin_transform);
spec!(SinkPlugin, ingest_plugin_sink);

pub type LoadedSource = Loaded<SourcePluginPre<PluginState>>;
pub type LoadedTransform = Loaded<TransformPluginPre<PluginState>>;
pub type LoadedSink = Loaded<SinkPluginPre<PluginState>>;

/// A running source instance.
pub type Source = Instance<SourcePlugin>;

impl Instance<SourcePlugin> {
    pub async fn check(&mut self) -> Result<(), RunError> {
        sandbox::arm(&mut self.store);
        let r = self
            .plugin
            .ingest_plugin_source()
            .call_check(&mut self.store, &self.config)
            .await;
        outcome(self.store.data(), r)
    }

    pub async fn discover(&mut self) -> Result<Vec<StreamInfo>, RunError> {
        sandbox::arm(&mut self.store);
        let r = self
            .plugin
            .ingest_plugin_source()
            .call_discover(&mut self.store, &self.config)
            .await;
        outcome(self.store.data(), r)
    }

    pub async fn splits(&mut self, stream: &str) -> Result<Vec<Split>, RunError> {
        sandbox::arm(&mut self.store);
        let r = self
            .plugin
            .ingest_plugin_source()
            .call_splits(&mut self.store, &self.config, stream)
            .await;
        outcome(self.store.data(), r)
    }

    /// Parse again records the source rejected earlier.
    pub async fn replay(&mut self, stream: &str, records: &[String]) -> Result<Replayed, RunError> {
        sandbox::arm(&mut self.store);
        let r = self
            .plugin
            .ingest_plugin_source()
            .call_replay(&mut self.store, &self.config, stream, records)
            .await;
        outcome(self.store.data(), r)
    }

    pub async fn open(
        &mut self,
        stream: &str,
        split: &Split,
        position: Option<&Vec<u8>>,
    ) -> Result<ResourceAny, RunError> {
        sandbox::arm(&mut self.store);
        let r = self
            .plugin
            .ingest_plugin_source()
            .reader()
            .call_open(&mut self.store, &self.config, stream, split, position)
            .await;
        outcome(self.store.data(), r)
    }

    pub async fn next(
        &mut self,
        reader: ResourceAny,
        max_rows: u32,
    ) -> Result<Option<Chunk>, RunError> {
        sandbox::arm(&mut self.store);
        let r = self
            .plugin
            .ingest_plugin_source()
            .reader()
            .call_next(&mut self.store, reader, max_rows)
            .await;
        outcome(self.store.data(), r)
    }

    pub async fn ack(&mut self, reader: ResourceAny, position: &Vec<u8>) -> Result<(), RunError> {
        sandbox::arm(&mut self.store);
        let r = self
            .plugin
            .ingest_plugin_source()
            .reader()
            .call_ack(&mut self.store, reader, position)
            .await;
        unit(self.store.data(), r)
    }

    pub async fn close(&mut self, reader: ResourceAny) -> Result<(), RunError> {
        sandbox::arm(&mut self.store);
        {
            let r = reader.resource_drop_async(&mut self.store).await;
            unit(self.store.data(), r)
        }
    }
}

/// A running transform instance.
pub type Transform = Instance<TransformPlugin>;

impl Instance<TransformPlugin> {
    pub async fn check(&mut self) -> Result<(), RunError> {
        sandbox::arm(&mut self.store);
        let r = self
            .plugin
            .ingest_plugin_transform()
            .call_check(&mut self.store, &self.config)
            .await;
        outcome(self.store.data(), r)
    }

    /// Open a transformer for `schema`, resuming from `state` (what `checkpoint` returned at
    /// the last committed epoch); returns it with its declared output schema.
    pub async fn open(
        &mut self,
        schema: &Vec<u8>,
        state: Option<&Vec<u8>>,
    ) -> Result<(ResourceAny, Vec<u8>), RunError> {
        sandbox::arm(&mut self.store);
        let api = self.plugin.ingest_plugin_transform().transformer();
        let r = api
            .call_open(
                &mut self.store,
                &self.config,
                schema,
                state.map(Vec::as_slice),
            )
            .await;
        let handle = outcome(self.store.data(), r)?;
        sandbox::arm(&mut self.store);
        let r = api.call_output_schema(&mut self.store, handle).await;
        Ok((handle, outcome(self.store.data(), r)?))
    }

    pub async fn process(
        &mut self,
        handle: ResourceAny,
        batch: &Vec<u8>,
    ) -> Result<Output, RunError> {
        sandbox::arm(&mut self.store);
        let r = self
            .plugin
            .ingest_plugin_transform()
            .transformer()
            .call_process(&mut self.store, handle, batch)
            .await;
        outcome(self.store.data(), r)
    }

    pub async fn flush(&mut self, handle: ResourceAny) -> Result<Output, RunError> {
        sandbox::arm(&mut self.store);
        let r = self
            .plugin
            .ingest_plugin_transform()
            .transformer()
            .call_flush(&mut self.store, handle)
            .await;
        outcome(self.store.data(), r)
    }

    /// The state to keep with the epoch being closed.
    pub async fn checkpoint(&mut self, handle: ResourceAny) -> Result<Vec<u8>, RunError> {
        sandbox::arm(&mut self.store);
        let r = self
            .plugin
            .ingest_plugin_transform()
            .transformer()
            .call_checkpoint(&mut self.store, handle)
            .await;
        outcome(self.store.data(), r)
    }

    pub async fn close(&mut self, handle: ResourceAny) -> Result<(), RunError> {
        sandbox::arm(&mut self.store);
        {
            let r = handle.resource_drop_async(&mut self.store).await;
            unit(self.store.data(), r)
        }
    }
}

/// A running sink instance.
pub type Sink = Instance<SinkPlugin>;

impl Instance<SinkPlugin> {
    pub async fn check(&mut self) -> Result<(), RunError> {
        sandbox::arm(&mut self.store);
        let r = self
            .plugin
            .ingest_plugin_sink()
            .call_check(&mut self.store, &self.config)
            .await;
        outcome(self.store.data(), r)
    }

    pub async fn open(
        &mut self,
        stream: &StreamInfo,
        mode: &WriteMode,
    ) -> Result<ResourceAny, RunError> {
        sandbox::arm(&mut self.store);
        let r = self
            .plugin
            .ingest_plugin_sink()
            .writer()
            .call_open(&mut self.store, &self.config, stream, mode)
            .await;
        outcome(self.store.data(), r)
    }

    pub async fn write(&mut self, writer: ResourceAny, batch: &Vec<u8>) -> Result<(), RunError> {
        sandbox::arm(&mut self.store);
        let r = self
            .plugin
            .ingest_plugin_sink()
            .writer()
            .call_write(&mut self.store, writer, batch)
            .await;
        outcome(self.store.data(), r)
    }

    pub async fn prepare(&mut self, writer: ResourceAny, epoch: u64) -> Result<Vec<u8>, RunError> {
        sandbox::arm(&mut self.store);
        let r = self
            .plugin
            .ingest_plugin_sink()
            .writer()
            .call_prepare(&mut self.store, writer, epoch)
            .await;
        outcome(self.store.data(), r)
    }

    /// Publish `epoch`; returns the names of what was published.
    pub async fn commit(
        &mut self,
        writer: ResourceAny,
        epoch: u64,
        token: &[u8],
    ) -> Result<Vec<String>, RunError> {
        sandbox::arm(&mut self.store);
        let r = self
            .plugin
            .ingest_plugin_sink()
            .writer()
            .call_commit(&mut self.store, writer, epoch, token)
            .await;
        outcome(self.store.data(), r)
    }

    pub async fn abort(&mut self, writer: ResourceAny, epoch: u64) -> Result<(), RunError> {
        sandbox::arm(&mut self.store);
        let r = self
            .plugin
            .ingest_plugin_sink()
            .writer()
            .call_abort(&mut self.store, writer, epoch)
            .await;
        outcome(self.store.data(), r)
    }

    pub async fn close(&mut self, writer: ResourceAny) -> Result<(), RunError> {
        sandbox::arm(&mut self.store);
        {
            let r = writer.resource_drop_async(&mut self.store).await;
            unit(self.store.data(), r)
        }
    }
}

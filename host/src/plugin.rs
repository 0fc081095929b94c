//! Plugins as components: where a component comes from (a built-in embedded in this binary,
//! or a file pinned by sha256), the engine that compiles it, the on-disk cache of compiled
//! components, and the typed bindings of the contract (the one `bindgen!` of the host).

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

/// Generated bindings of `wit/plugin.wit`, one module per world. The `types` and `host`
/// interfaces are generated once (in `source`) and shared by the other worlds.
pub mod bindings {
    pub mod source {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "source-plugin",
            imports: { default: trappable },
            exports: { default: async },
            with: {
                "ingest:plugin/host.parquet-encoder": crate::capabilities::ParquetEncoder,
                "ingest:plugin/webhook.endpoint": crate::webhook::Endpoint,
            },
        });
    }
    pub mod transform {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "transform-plugin",
            imports: { default: trappable },
            exports: { default: async },
            with: {
                "ingest:plugin/types": crate::plugin::bindings::source::ingest::plugin::types,
                "ingest:plugin/host": crate::plugin::bindings::source::ingest::plugin::host,
            },
        });
    }
    pub mod sink {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "sink-plugin",
            imports: { default: trappable },
            exports: { default: async },
            with: {
                "ingest:plugin/types": crate::plugin::bindings::source::ingest::plugin::types,
                "ingest:plugin/host": crate::plugin::bindings::source::ingest::plugin::host,
            },
        });
    }
    pub use source::ingest::plugin::host;
    pub use source::ingest::plugin::types;
    pub use source::ingest::plugin::webhook;
}

mod builtins {
    include!(concat!(env!("OUT_DIR"), "/builtins.rs"));
}

/// The three roles a plugin can play; each maps to one world of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Kind {
    Source,
    Transform,
    Sink,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Source => "source",
            Kind::Transform => "transform",
            Kind::Sink => "sink",
        }
    }

    /// The contract interface a component of this kind exports.
    pub fn export_name(self) -> &'static str {
        match self {
            Kind::Source => "ingest:plugin/source@0.1.0",
            Kind::Transform => "ingest:plugin/transform@0.1.0",
            Kind::Sink => "ingest:plugin/sink@0.1.0",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a plugin's component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginRef {
    /// `builtin:NAME`, embedded in this binary.
    Builtin(String),
    /// A `.wasm` file whose sha256 must match the pinned digest.
    File { path: PathBuf, sha256: String },
}

impl fmt::Display for PluginRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginRef::Builtin(name) => write!(f, "builtin:{name}"),
            PluginRef::File { path, .. } => write!(f, "{}", path.display()),
        }
    }
}

/// The names of the built-in plugins of one kind.
pub fn builtin_names(kind: Kind) -> Vec<&'static str> {
    builtins::BUILTINS
        .iter()
        .filter(|(k, ..)| *k == kind.as_str())
        .map(|(_, name, ..)| *name)
        .collect()
}

/// The component bytes of a built-in plugin.
pub fn builtin_bytes(kind: Kind, name: &str) -> Option<&'static [u8]> {
    builtin(kind, name).map(|(bytes, _)| bytes)
}

/// The component bytes of a built-in plugin with their sha256 (hex), taken at build time.
fn builtin(kind: Kind, name: &str) -> Option<(&'static [u8], &'static str)> {
    builtins::BUILTINS
        .iter()
        .find(|(k, n, ..)| *k == kind.as_str() && *n == name)
        .map(|(_, _, bytes, digest)| (*bytes, *digest))
}

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("unknown built-in {kind} plugin `builtin:{name}`; built-in {kind} plugins are: {}", .available.join(", "))]
    UnknownBuiltin {
        kind: Kind,
        name: String,
        available: Vec<String>,
    },
    #[error("cannot read plugin file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("plugin file {} has sha256 {actual}, but the pipeline pins sha256 = \"{expected}\"; refusing to run a plugin that is not the one pinned", .path.display())]
    DigestMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{plugin} is not a valid WebAssembly component: {message}")]
    Compile { plugin: String, message: String },
    #[error("{plugin} does not export `{expected}`, so it cannot be used as a {kind}; it exports: {}", .exports.join(", "))]
    WrongKind {
        plugin: String,
        kind: Kind,
        expected: &'static str,
        exports: Vec<String>,
    },
}

/// A component's bytes with their digest.
pub struct PluginBytes {
    pub bytes: std::borrow::Cow<'static, [u8]>,
    pub sha256: String,
}

impl PluginBytes {
    /// Bytes read from somewhere, with their digest.
    pub fn new(bytes: Vec<u8>) -> Self {
        PluginBytes {
            sha256: sha256_hex(&bytes),
            bytes: bytes.into(),
        }
    }
}

/// Read a plugin's bytes and check its pinned digest.
pub fn read(plugin: &PluginRef, kind: Kind) -> Result<PluginBytes, LoadError> {
    match plugin {
        PluginRef::Builtin(name) => {
            let (bytes, digest) = builtin(kind, name).ok_or_else(|| LoadError::UnknownBuiltin {
                kind,
                name: name.clone(),
                available: builtin_names(kind)
                    .iter()
                    .map(|n| format!("builtin:{n}"))
                    .collect(),
            })?;
            Ok(PluginBytes {
                sha256: digest.to_string(),
                bytes: bytes.into(),
            })
        }
        PluginRef::File { path, sha256 } => {
            let bytes = read_file(path)?;
            let actual = sha256_hex(&bytes);
            if !actual.eq_ignore_ascii_case(sha256) {
                return Err(LoadError::DigestMismatch {
                    path: path.clone(),
                    expected: sha256.clone(),
                    actual,
                });
            }
            Ok(PluginBytes {
                bytes: bytes.into(),
                sha256: actual,
            })
        }
    }
}

/// Read a `.wasm` file without a pin (for `host plugins inspect`).
pub fn read_file(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The engine every plugin runs on, and the cache of compiled components.
#[derive(Clone)]
pub struct Runtime {
    pub engine: Engine,
    cache_dir: Option<PathBuf>,
    engine_key: Arc<str>,
}

impl Runtime {
    /// An engine with the component model, async calls (so a long call yields and can be
    /// cancelled) and epoch interruption (deadlines). Compiled components are cached under
    /// `cache_dir` when given.
    /// `fuel` meters every instruction (some plugin has a `fuel` limit); it costs time, so
    /// it is on only when asked for.
    pub fn new(cache_dir: Option<PathBuf>, fuel: bool) -> wasmtime::Result<Self> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.parallel_compilation(true);
        config.consume_fuel(fuel);
        let engine = Engine::new(&config)?;
        start_epoch_ticker(&engine);
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = format!("{:016x}", hasher.finish()).into();
        Ok(Runtime {
            engine,
            cache_dir,
            engine_key,
        })
    }

    /// Compile a component, or load it from the cache (keyed by engine configuration and
    /// component digest). A cache entry the engine refuses is recompiled and replaced.
    pub fn compile(&self, label: &str, plugin: &PluginBytes) -> Result<Component, LoadError> {
        self.compile_cached(label, plugin)
            .map(|(component, _)| component)
    }

    /// Where compiled components are cached, if anywhere.
    pub fn cache_dir(&self) -> Option<&Path> {
        self.cache_dir.as_deref()
    }

    /// As [`Runtime::compile`]; also says whether the component came from the cache.
    pub fn compile_cached(
        &self,
        label: &str,
        plugin: &PluginBytes,
    ) -> Result<(Component, bool), LoadError> {
        let cached = self
            .cache_dir
            .as_ref()
            .map(|dir| dir.join(format!("{}-{}.cwasm", plugin.sha256, self.engine_key)));
        if let Some(path) = &cached {
            if path.is_file() {
                // SAFETY: cache entries are written only by `store_in_cache` below from
                // `Component::serialize` of this same engine configuration (the key says
                // so); wasmtime still validates the header and refuses a mismatch.
                match unsafe { Component::deserialize_file(&self.engine, path) } {
                    Ok(component) => return Ok((component, true)),
                    Err(e) => tracing::warn!(
                        plugin = label,
                        cache = %path.display(),
                        "ignoring unusable compiled-component cache entry: {e}"
                    ),
                }
            }
        }
        let started = Instant::now();
        let component =
            Component::new(&self.engine, &plugin.bytes).map_err(|e| LoadError::Compile {
                plugin: label.to_string(),
                message: format!("{e:#}"),
            })?;
        tracing::debug!(
            plugin = label,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "compiled component"
        );
        if let Some(path) = &cached {
            store_in_cache(&component, path);
        }
        Ok((component, false))
    }

    /// Check that a compiled component exports the interface its kind needs.
    pub fn check_kind(
        &self,
        label: &str,
        component: &Component,
        kind: Kind,
    ) -> Result<(), LoadError> {
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        if exports.iter().any(|e| e == kind.export_name()) {
            Ok(())
        } else {
            Err(LoadError::WrongKind {
                plugin: label.to_string(),
                kind,
                expected: kind.export_name(),
                exports,
            })
        }
    }
}

/// How often running plugin code is interrupted to yield, check cancellation and check
/// its deadline.
pub const EPOCH_TICK: std::time::Duration = std::time::Duration::from_millis(10);

/// Advance the engine's epoch every [`EPOCH_TICK`] for as long as the engine lives.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            match weak.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => return,
            }
        })
        .expect("spawning the epoch ticker thread");
}

/// Write a compiled component to the cache atomically; a failure only costs the next start.
fn store_in_cache(component: &Component, path: &Path) {
    let result = (|| -> std::io::Result<()> {
        let bytes = component
            .serialize()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        tracing::warn!(cache = %path.display(), "could not write the compiled-component cache: {e}");
    }
}

/// The default cache directory: `$INGEST_CACHE_DIR`, else `$XDG_CACHE_HOME/ingest-host`,
/// else `~/.cache/ingest-host`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("INGEST_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("ingest-host"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/ingest-host"))
}

/// What `host plugins inspect` shows about a component.
pub struct Inspection {
    pub size: usize,
    pub sha256: String,
    pub kinds: Vec<Kind>,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

/// Describe a component: its size, digest, the worlds it targets and every import it asks
/// for, without running it.
pub fn inspect(runtime: &Runtime, label: &str, bytes: &[u8]) -> Result<Inspection, LoadError> {
    let plugin = PluginBytes {
        sha256: sha256_hex(bytes),
        bytes: bytes.to_vec().into(),
    };
    let component = runtime.compile(label, &plugin)?;
    let ty = component.component_type();
    let imports: Vec<String> = ty
        .imports(&runtime.engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let exports: Vec<String> = ty
        .exports(&runtime.engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let kinds = [Kind::Source, Kind::Transform, Kind::Sink]
        .into_iter()
        .filter(|k| exports.iter().any(|e| e == k.export_name()))
        .collect();
    Ok(Inspection {
        size: bytes.len(),
        sha256: plugin.sha256,
        kinds,
        imports,
        exports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_digests_taken_at_build_time_are_those_of_the_embedded_bytes() {
        assert!(!builtins::BUILTINS.is_empty());
        for (_, name, bytes, digest) in builtins::BUILTINS {
            assert_eq!(sha256_hex(bytes), *digest, "builtin:{name}");
        }
    }
}

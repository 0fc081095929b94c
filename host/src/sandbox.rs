//! The sandbox of one plugin instance: its grants (preopened directories, `host:port`
//! connections, HTTP URL prefixes, environment variables, secrets) turned into a WASI
//! context with nothing else — no other environment, network or inherited stdio — its
//! memory cap, its per-call fuel, and the capture of what it prints. (The per-call deadline
//! and cancellation are the host timer around each call, in `runtime::instances`.)

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;

use crate::http_grant::{check_request, HttpGrant};
use wasmtime::{Engine, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// A directory a plugin may open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsGrant {
    /// The directory on the host.
    pub host_path: PathBuf,
    /// The path the plugin uses for it (as written in pipeline.toml).
    pub guest_path: String,
    /// Whether the plugin may create, change and delete files in it.
    pub writable: bool,
}

/// A `host:port` a plugin may connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetGrant {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for NetGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Hard limits of one plugin instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most linear memory the instance may have, in bytes.
    pub memory_bytes: usize,
    /// Longest a single call into the plugin may run.
    pub call_timeout: Duration,
    /// Most WebAssembly fuel (about one unit per instruction) a single call may burn; none
    /// when the deadline alone bounds a call.
    pub fuel: Option<u64>,
    /// Largest Arrow IPC batch the plugin may hand to the host in one call, in bytes.
    pub max_batch_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 1 << 30,
            call_timeout: Duration::from_secs(60),
            fuel: None,
            max_batch_bytes: 256 << 20,
        }
    }
}

/// How a byte count reads in messages and summaries: `812 bytes`, `64 MiB`, `1.5 GiB`.
pub fn show_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract() != 0.0 {
        if unit == 0 {
            return format!("{n} bytes");
        }
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value} {}", UNITS[unit])
    }
}

/// Everything a plugin instance is allowed.
#[derive(Debug, Clone)]
pub struct Grants {
    pub fs: Vec<FsGrant>,
    /// The socket addresses the plugin may connect to over TCP: its `net` grants,
    /// resolved by the host. Nothing else is reachable, whatever a name resolves to later.
    pub net: Vec<SocketAddr>,
    /// URL prefixes the plugin may send `wasi:http` requests to.
    pub http: Vec<HttpGrant>,
    /// Environment variables the plugin sees, with their values.
    pub env: Vec<(String, String)>,
    /// Granted secrets by name, with their resolved values.
    pub secrets: BTreeMap<String, String>,
    /// The address where the host listens for webhooks on the plugin's behalf.
    pub listen: Option<SocketAddr>,
    pub limits: Limits,
    /// The pipeline's checkpoint policy, which the plugin may ask for.
    pub checkpoint: crate::plugin::bindings::host::CheckpointPolicy,
    /// Under scale-out, the tag of this claim of a split (`host.writer-tag`).
    pub writer_tag: Option<String>,
}

/// The `wasi:http` policy of one plugin: requests go out only under its `http` grants.
pub struct HttpPolicy {
    label: Arc<str>,
    allowed: Arc<Vec<HttpGrant>>,
}

impl wasmtime_wasi_http::WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn std::future::Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<
                            dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>>
                                + Send,
                        >,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        let host = request.headers().get(http::header::HOST);
        if let Err(rule) = check_request(&self.allowed, request.uri(), host) {
            tracing::warn!(plugin = %self.label, "denied an HTTP request to {}: {rule}", request.uri());
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        wasmtime_wasi_http::default_hooks().send_request(request, options, fut)
    }
}

/// The host-side state of one plugin instance (the `T` of its `Store<T>`).
pub struct PluginState {
    /// The plugin as the user knows it, e.g. `transform "mask" (builtin:pii-mask)`.
    pub label: Arc<str>,
    pub secrets: BTreeMap<String, String>,
    /// Its `listen` grant (see `webhook`).
    pub listen: Option<SocketAddr>,
    /// The pipeline's checkpoint policy (`host.checkpoints`).
    pub checkpoint: crate::plugin::bindings::host::CheckpointPolicy,
    /// Under scale-out, the tag of this claim of a split (`host.writer-tag`).
    pub writer_tag: Option<String>,
    wasi: WasiCtx,
    http: wasmtime_wasi_http::WasiHttpCtx,
    http_policy: HttpPolicy,
    pub table: ResourceTable,
    limits: Limiter,
    /// The limits the instance runs under, for messages.
    pub granted: Limits,
    pub log_budget: LogBudget,
    /// Parquet tuning shared by this instance's files, by schema and options (see
    /// `crate::encoder::Tuning`).
    pub parquet_tunings: std::collections::HashMap<String, crate::encoder::Tuning>,
    /// The decompression context `host.zstd-decompress` reuses, made on first use.
    pub zstd: Option<zstd::bulk::Decompressor<'static>>,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasmtime_wasi_http::WasiHttpView for PluginState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_policy,
        }
    }
}

/// Why a sandbox could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{plugin}: cannot grant directory {} (as `{guest}`): {message}", .host.display())]
    Preopen {
        plugin: String,
        host: PathBuf,
        guest: String,
        message: String,
    },
}

/// Create the store of one plugin instance with exactly `grants`.
pub fn new_store(
    engine: &Engine,
    label: Arc<str>,
    grants: &Grants,
) -> Result<Store<PluginState>, SandboxError> {
    let mut wasi = WasiCtxBuilder::new();
    wasi.stdout(PluginOutput::new(label.clone(), "stdout"))
        .stderr(PluginOutput::new(label.clone(), "stderr"))
        .allow_tcp(!grants.net.is_empty())
        .allow_udp(false)
        .allow_ip_name_lookup(!grants.net.is_empty())
        // File reads and writes run on the calling thread instead of a round trip through
        // the blocking pool for every 64 KiB: pipeline stages have threads of their own
        // (runtime::stages), and local file operations are short.
        .allow_blocking_current_thread(true);
    for (name, value) in &grants.env {
        wasi.env(name, value);
    }
    let allowed = Arc::new(grants.net.clone());
    let plugin = label.clone();
    wasi.socket_addr_check(move |addr, used| {
        let permitted = match used {
            // Connecting binds the wildcard address first; binding anything else would
            // let the plugin listen.
            SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
            SocketAddrUse::TcpConnect => allowed.contains(&addr),
            _ => false,
        };
        if !permitted && !matches!(used, SocketAddrUse::TcpBind) {
            tracing::warn!(plugin = %plugin, "denied {used:?} to {addr}: not in the plugin's `net` grant");
        }
        Box::pin(async move { permitted })
    });
    for grant in &grants.fs {
        let perms = if grant.writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        wasi.preopened_dir(&grant.host_path, &grant.guest_path, perms)
            .map_err(|e| SandboxError::Preopen {
                plugin: label.to_string(),
                host: grant.host_path.clone(),
                guest: grant.guest_path.clone(),
                message: format!("{e:#}"),
            })?;
    }
    let limits = Limiter {
        limits: StoreLimitsBuilder::new()
            .memory_size(grants.limits.memory_bytes)
            .trap_on_grow_failure(true)
            .instances(64)
            .build(),
        memory_bytes: 0,
        peak_memory_bytes: 0,
    };
    let state = PluginState {
        label: label.clone(),
        secrets: grants.secrets.clone(),
        listen: grants.listen,
        checkpoint: grants.checkpoint,
        writer_tag: grants.writer_tag.clone(),
        wasi: wasi.build(),
        http: wasmtime_wasi_http::WasiHttpCtx::new(),
        http_policy: HttpPolicy {
            label: label.clone(),
            allowed: Arc::new(grants.http.clone()),
        },
        table: ResourceTable::new(),
        limits,
        granted: grants.limits,
        log_budget: LogBudget::new(label.clone(), "log"),
        parquet_tunings: std::collections::HashMap::new(),
        zstd: None,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    // What a plugin may hand the host in one call (a batch, a checkpoint) is bounded by
    // its `max_batch` limit, before the host allocates for it.
    store.set_hostcall_fuel(grants.limits.max_batch_bytes.saturating_add(1 << 20));
    if store.get_fuel().is_ok() {
        // The engine meters fuel (some plugin of the pipeline has a `fuel` limit): the
        // others get all they want.
        let _ = store.set_fuel(grants.limits.fuel.unwrap_or(u64::MAX));
    }
    // Every epoch tick (see `plugin::Runtime`) running plugin code yields to the executor,
    // so the host timer and the cancellation around each call (see
    // `runtime::instances`) are polled even while the plugin computes without pause.
    store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
    store.set_epoch_deadline(1);
    Ok(store)
}

/// The store's resource limits (the grant's memory cap), which also keep the instance's
/// linear memory in use and its peak, for metrics.
struct Limiter {
    limits: StoreLimits,
    /// The size of every linear memory of the instance together.
    memory_bytes: usize,
    peak_memory_bytes: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            self.memory_bytes = self.memory_bytes.saturating_add(desired - current);
            self.peak_memory_bytes = self.peak_memory_bytes.max(self.memory_bytes);
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

impl PluginState {
    /// The most linear memory the instance has held at once, in bytes.
    pub fn peak_memory_bytes(&self) -> usize {
        self.limits.peak_memory_bytes
    }
}

/// Prepare the store for one call into the plugin: the next epoch tick yields, and the
/// fuel budget, which is per call like the deadline, is full again.
pub fn arm(store: &mut Store<PluginState>) {
    store.set_epoch_deadline(1);
    if let Some(fuel) = store.data().granted.fuel {
        let _ = store.set_fuel(fuel);
    }
}

/// Lines a plugin may log per second before the host drops the rest.
const LOG_LINES_PER_SECOND: u32 = 200;

/// A per-second budget of lines for one of a plugin's outputs (its host log, its stdout or
/// its stderr), so a plugin cannot flood the host log. Lines over the budget are dropped
/// and counted; the count is logged as a warning when the next second begins, and when the
/// budget ends with its instance, so a flood is never silent.
#[derive(Debug)]
pub struct LogBudget {
    label: Arc<str>,
    /// Which output: `log`, `stdout` or `stderr`.
    output: &'static str,
    window: Instant,
    used: u32,
    dropped: u64,
}

impl LogBudget {
    pub fn new(label: Arc<str>, output: &'static str) -> Self {
        LogBudget {
            label,
            output,
            window: Instant::now(),
            used: 0,
            dropped: 0,
        }
    }

    /// Whether one more line may be logged now.
    pub fn take(&mut self) -> bool {
        if self.window.elapsed() >= Duration::from_secs(1) {
            self.report();
            self.window = Instant::now();
            self.used = 0;
        }
        if self.used < LOG_LINES_PER_SECOND {
            self.used += 1;
            true
        } else {
            self.dropped += 1;
            false
        }
    }

    /// Logs how many lines were dropped since the last report, if any.
    fn report(&mut self) {
        if self.dropped > 0 {
            tracing::warn!(
                plugin = %self.label,
                "dropped {} {} lines (rate limit: {LOG_LINES_PER_SECOND} a second)",
                self.dropped,
                self.output
            );
            self.dropped = 0;
        }
    }
}

impl Drop for LogBudget {
    fn drop(&mut self) {
        self.report();
    }
}

/// A plugin's stdout or stderr: each line goes to the host log under the plugin's name,
/// secrets redacted (by the log writer), long lines cut.
/// The budget is shared by every stream the plugin opens on the output: a guest may open a
/// new one for each write.
#[derive(Clone)]
struct PluginOutput {
    label: Arc<str>,
    stream: &'static str,
    budget: Arc<std::sync::Mutex<LogBudget>>,
}

impl PluginOutput {
    fn new(label: Arc<str>, stream: &'static str) -> Self {
        PluginOutput {
            budget: Arc::new(std::sync::Mutex::new(LogBudget::new(label.clone(), stream))),
            label,
            stream,
        }
    }
}

impl IsTerminal for PluginOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for PluginOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(LineLogger {
            label: self.label.clone(),
            stream: self.stream,
            pending: Vec::new(),
            budget: self.budget.clone(),
            panicked_at: None,
        })
    }
}

const MAX_LINE: usize = 4096;

/// The panic each plugin printed last on its stderr, by label, until the trap that follows
/// it takes it ([`take_panic`]): a Rust guest prints `thread '…' panicked at FILE:LINE:COL:`
/// and then the message, before it aborts with a bare `unreachable` trap.
static PANICS: std::sync::Mutex<BTreeMap<String, String>> = std::sync::Mutex::new(BTreeMap::new());

/// The panic message (with where it happened) the plugin `label` printed before it
/// trapped, if it printed one.
pub fn take_panic(label: &str) -> Option<String> {
    PANICS.lock().ok()?.remove(label)
}

/// The place of a Rust panic line (`thread 'main' (1) panicked at src/lib.rs:3:5:`).
fn panic_location(line: &str) -> Option<&str> {
    let (head, place) = line.split_once(" panicked at ")?;
    head.starts_with("thread ")
        .then(|| place.trim_end().trim_end_matches(':'))
}

struct LineLogger {
    label: Arc<str>,
    stream: &'static str,
    pending: Vec<u8>,
    budget: Arc<std::sync::Mutex<LogBudget>>,
    /// Where the panic whose message the next line holds happened.
    panicked_at: Option<String>,
}

impl LineLogger {
    fn emit(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(&line[..line.len().min(MAX_LINE)]);
        if self.stream == "stderr" {
            if let Some(place) = self.panicked_at.take() {
                if let Ok(mut panics) = PANICS.lock() {
                    panics.insert(
                        self.label.to_string(),
                        format!("{} (at {place})", text.trim_end()),
                    );
                }
            } else if let Some(place) = panic_location(&text) {
                self.panicked_at = Some(place.to_string());
            }
        }
        let allowed = self.budget.lock().map(|mut b| b.take()).unwrap_or(true);
        if allowed {
            tracing::info!(plugin = %self.label, stream = self.stream, "{}", text.trim_end());
        }
    }
}

impl tokio::io::AsyncWrite for LineLogger {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.pending.extend_from_slice(buf);
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.emit(&line);
        }
        if self.pending.len() > MAX_LINE {
            let line = std::mem::take(&mut self.pending);
            self.emit(&line);
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.emit(&line);
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rust_panic_line_gives_where_it_happened() {
        assert_eq!(
            panic_location("thread '<unnamed>' (1) panicked at src/lib.rs:3:5:"),
            Some("src/lib.rs:3:5")
        );
        assert_eq!(
            panic_location("a line that mentions panicked at noon"),
            None
        );
    }

    #[test]
    fn a_log_budget_allows_its_lines_per_second_and_counts_the_rest() {
        let mut budget = LogBudget::new(Arc::from("source \"s\""), "log");
        let allowed = (0..LOG_LINES_PER_SECOND + 50)
            .filter(|_| budget.take())
            .count();
        assert_eq!(allowed, LOG_LINES_PER_SECOND as usize);
        assert_eq!(budget.dropped, 50);
        // A new second: the count is reported (and reset) and lines flow again.
        budget.window -= Duration::from_secs(1);
        assert!(budget.take());
        assert_eq!(budget.dropped, 0);
        assert_eq!(budget.used, 1);
    }
}

//! The run's Prometheus metrics: what the stages read, write, reject and retry, how long
//! epochs take to fill and to commit, the last committed epoch and when, and the lag of
//! change streams, what bounded sources have left to read, and each plugin's call time,
//! peak memory and fuel. Recording is an atomic add per chunk or epoch, always on; `host
//! run --metrics ADDR` serves them at `http://ADDR/metrics`: OpenMetrics text to
//! Prometheus, which asks for it, and the classic Prometheus text format to other clients.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::runtime::RunError;

/// A stream, as metrics label it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabel {
    pub stream: String,
}

/// A transform stage and the stream passing it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    pub stage: String,
    pub stream: String,
}

/// A plugin, as metrics label it (`source "orders" (builtin:file)`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabel {
    pub plugin: String,
}

/// Why an attempt was retried.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabel {
    pub cause: String,
}

/// A webhook path and the status a request to it was answered with.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabel {
    pub path: String,
    pub status: u16,
}

/// Totals over every stream, for the progress line.
#[derive(Default)]
pub struct Totals {
    pub rows_read: AtomicU64,
    pub bytes_read: AtomicU64,
    pub rows_written: AtomicU64,
    /// The size of every split bounded sources reported ([`Metrics::progress`]), and what
    /// is left of it to read, in the sources' bytes.
    pub work_bytes: AtomicI64,
    pub work_left: AtomicI64,
}

/// Splits whose progress is kept at most: a source reporting more (or inventing split
/// names) is not followed further, so the host's memory stays bounded.
const MAX_SPLITS: usize = 250_000;

/// Every metric of the process (one pipeline run).
pub struct Metrics {
    registry: Registry,
    pub totals: Totals,
    pub rows_read: Family<StreamLabel, Counter>,
    pub bytes_read: Family<StreamLabel, Counter>,
    pub rows_written: Family<StreamLabel, Counter>,
    pub rows_transformed: Family<StageLabel, Counter>,
    pub bytes_transformed: Family<StageLabel, Counter>,
    pub rows_rejected: Family<StreamLabel, Counter>,
    pub dead_letters: Family<StreamLabel, Counter>,
    pub epochs: Counter,
    pub retries: Family<CauseLabel, Counter>,
    pub last_epoch: Gauge,
    pub last_commit: Gauge<f64, AtomicU64>,
    pub epoch_seconds: Histogram,
    pub commit_seconds: Histogram,
    pub lag_seconds: Histogram,
    pub call_seconds: Family<PluginLabel, Histogram>,
    pub peak_memory: Family<PluginLabel, Gauge>,
    pub fuel: Family<PluginLabel, Counter>,
    pub bytes_left: Family<StreamLabel, Gauge>,
    pub webhook_requests: Family<WebhookLabel, Counter>,
    pub webhook_seconds: Histogram,
    /// Bytes read and total bytes, by stream and split, as sources report them.
    splits: Mutex<HashMap<(String, String), (u64, u64)>>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("ingest");
        let m = Metrics {
            rows_read: Family::default(),
            bytes_read: Family::default(),
            rows_written: Family::default(),
            rows_transformed: Family::default(),
            bytes_transformed: Family::default(),
            rows_rejected: Family::default(),
            dead_letters: Family::default(),
            epochs: Counter::default(),
            retries: Family::default(),
            last_epoch: Gauge::default(),
            last_commit: Gauge::default(),
            // 1 ms to about 9 minutes.
            epoch_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 20)),
            commit_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 20)),
            lag_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 16)),
            // 10 µs to about 5 minutes.
            call_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_01, 4.0, 13))
            }),
            peak_memory: Family::default(),
            fuel: Family::default(),
            bytes_left: Family::default(),
            webhook_requests: Family::default(),
            // 1 ms to about 9 minutes.
            webhook_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 20)),
            splits: Mutex::default(),
            registry: Registry::default(),
            totals: Totals::default(),
        };
        registry.register("source_rows", "Rows the source read", m.rows_read.clone());
        registry.register(
            "webhook_requests",
            "Webhook requests answered, by path and status",
            m.webhook_requests.clone(),
        );
        registry.register(
            "webhook_answer_seconds",
            "Time from receiving a webhook request to answering it",
            m.webhook_seconds.clone(),
        );
        registry.register(
            "source_bytes",
            "Bytes the source read, as Arrow",
            m.bytes_read.clone(),
        );
        registry.register(
            "sink_rows",
            "Rows the sink committed",
            m.rows_written.clone(),
        );
        registry.register(
            "transform_rows",
            "Rows leaving a transform stage",
            m.rows_transformed.clone(),
        );
        registry.register(
            "transform_bytes",
            "Bytes leaving a transform stage, as Arrow",
            m.bytes_transformed.clone(),
        );
        registry.register(
            "rejected_rows",
            "Rows a plugin rejected (skipped, failed or dead-lettered)",
            m.rows_rejected.clone(),
        );
        registry.register(
            "dead_letters",
            "Rejected rows written to the dead-letter queue",
            m.dead_letters.clone(),
        );
        registry.register("epochs_committed", "Epochs committed", m.epochs.clone());
        registry.register(
            "retries",
            "Attempts retried from the last checkpoint, by cause",
            m.retries.clone(),
        );
        registry.register(
            "last_committed_epoch",
            "The number of the last committed epoch",
            m.last_epoch.clone(),
        );
        registry.register(
            "last_commit_timestamp_seconds",
            "When the last epoch was committed (Unix time)",
            m.last_commit.clone(),
        );
        registry.register(
            "epoch_duration_seconds",
            "Time from an epoch's opening to its barrier",
            m.epoch_seconds.clone(),
        );
        registry.register(
            "epoch_commit_duration_seconds",
            "Time the sink and the state took to commit an epoch",
            m.commit_seconds.clone(),
        );
        registry.register(
            "source_lag_seconds",
            "Change streams: source commit to sink commit, per change (sampled)",
            m.lag_seconds.clone(),
        );
        registry.register_with_unit(
            "source_left",
            "Bounded sources: what is left to read of the splits they reported, in the source's own bytes (a file's, say)",
            prometheus_client::registry::Unit::Bytes,
            m.bytes_left.clone(),
        );
        registry.register(
            "plugin_call_duration_seconds",
            "Time of each call into a plugin, by plugin",
            m.call_seconds.clone(),
        );
        registry.register_with_unit(
            "plugin_memory_peak",
            "The most linear memory one instance of the plugin has held, by plugin",
            prometheus_client::registry::Unit::Bytes,
            m.peak_memory.clone(),
        );
        registry.register(
            "plugin_fuel_consumed",
            "Fuel (about one unit per WebAssembly instruction) the plugin burnt, by plugin; counted only when some plugin of the pipeline has a `fuel` limit",
            m.fuel.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The metrics as OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }

    /// The metrics in the Prometheus text format (0.0.4), for clients that do not ask
    /// for OpenMetrics (curl, `promtool check metrics`).
    pub fn render_prometheus(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }

    /// Count a retry of an attempt that failed with `error`.
    pub fn retried(&self, error: &RunError) {
        let cause = match error {
            RunError::Transient { .. } => "transient",
            RunError::Trapped { .. } => "trapped",
            RunError::Data { .. } => "data",
            RunError::Fatal { .. } => "fatal",
            RunError::Contract { .. } => "contract",
            _ => "other",
        };
        self.retries
            .get_or_create(&CauseLabel {
                cause: cause.to_string(),
            })
            .inc();
    }

    /// The metrics of `plugin`, to record its calls with.
    pub fn plugin(&self, plugin: &str) -> PluginMetrics {
        let label = PluginLabel {
            plugin: plugin.to_string(),
        };
        PluginMetrics {
            call_seconds: self.call_seconds.get_or_create(&label).clone(),
            peak_memory: self.peak_memory.get_or_create(&label).clone(),
            fuel: self.fuel.get_or_create(&label).clone(),
        }
    }

    /// A source has read `read` of the `total` bytes of `split` of `stream`.
    pub fn progress(&self, stream: &str, split: &str, read: u64, total: u64) {
        let read = read.min(total);
        let mut splits = self.splits.lock().expect("progress lock");
        let key = (stream.to_string(), split.to_string());
        let (old_read, old_total) = match splits.get(&key) {
            Some(&kept) => kept,
            None if splits.len() >= MAX_SPLITS => return,
            None => (0, 0),
        };
        splits.insert(key, (read, total));
        drop(splits);
        let left = (total - read) as i64 - (old_total - old_read) as i64;
        let size = total as i64 - old_total as i64;
        self.bytes_left
            .get_or_create(&self::stream(stream))
            .inc_by(left);
        self.totals.work_left.fetch_add(left, Ordering::Relaxed);
        self.totals.work_bytes.fetch_add(size, Ordering::Relaxed);
    }

    /// The reader of `split` of `stream` returned none: it is read to its end.
    pub fn split_done(&self, stream: &str, split: &str) {
        let total = {
            let splits = self.splits.lock().expect("progress lock");
            match splits.get(&(stream.to_string(), split.to_string())) {
                Some(&(_, total)) => total,
                None => return,
            }
        };
        self.progress(stream, split, total, total);
    }

    /// Count a batch leaving transform `stage`.
    pub fn transformed(&self, stage: &str, stream: &str, rows: u64, bytes: u64) {
        let label = StageLabel {
            stage: stage.to_string(),
            stream: stream.to_string(),
        };
        self.rows_transformed.get_or_create(&label).inc_by(rows);
        self.bytes_transformed.get_or_create(&label).inc_by(bytes);
    }

    /// Count a chunk the source read.
    pub fn read(&self, stream: &str, rows: u64, bytes: u64) {
        let label = self::stream(stream);
        self.rows_read.get_or_create(&label).inc_by(rows);
        self.bytes_read.get_or_create(&label).inc_by(bytes);
        self.totals.rows_read.fetch_add(rows, Ordering::Relaxed);
        self.totals.bytes_read.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Count a committed epoch of `stream`: its rows, its rejects, and how long the commit
    /// took.
    pub fn committed(&self, stream: &str, epoch: u64, rows: u64, rejected: u64, took: f64) {
        let label = self::stream(stream);
        self.rows_written.get_or_create(&label).inc_by(rows);
        self.rows_rejected.get_or_create(&label).inc_by(rejected);
        self.totals.rows_written.fetch_add(rows, Ordering::Relaxed);
        self.commit_seconds.observe(took);
        self.epochs.inc();
        self.last_epoch.set(epoch as i64);
        self.last_commit.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
        );
    }
}

/// The metrics of one plugin, kept by each of its instances so that a call records
/// without looking its labels up.
#[derive(Clone)]
pub struct PluginMetrics {
    call_seconds: Histogram,
    peak_memory: Gauge,
    fuel: Counter,
}

impl PluginMetrics {
    /// Record one call: how long it took, the instance's peak memory so far, and the fuel
    /// the call burnt when fuel is metered.
    pub fn called(&self, took: std::time::Duration, peak_memory_bytes: usize, fuel: Option<u64>) {
        self.call_seconds.observe(took.as_secs_f64());
        self.peak_memory
            .inner()
            .fetch_max(peak_memory_bytes as i64, Ordering::Relaxed);
        if let Some(fuel) = fuel {
            self.fuel.inc_by(fuel);
        }
    }
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// The label of `stream`.
pub fn stream(stream: &str) -> StreamLabel {
    StreamLabel {
        stream: stream.to_string(),
    }
}

/// Serve the metrics at `http://ADDR/metrics` until the process ends. Returns once the
/// address is bound, so a failure to bind is the caller's error.
pub async fn serve(addr: &str) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(answer(socket));
        }
    });
    Ok(bound)
}

/// Answer one HTTP/1.1 request: `GET /metrics` with the metrics, anything else with 404.
async fn answer(mut socket: tokio::net::TcpStream) {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    // The request head, up to its blank line (8 KiB at most).
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        match tokio::time::timeout(std::time::Duration::from_secs(5), socket.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    let line = String::from_utf8_lossy(&head);
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    // Prometheus asks for OpenMetrics in its Accept header; other clients get the
    // classic text format.
    let openmetrics = line.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("accept:") && l.contains("application/openmetrics-text")
    });
    let (status, kind, body) =
        if method == "GET" && (target == "/metrics" || target.starts_with("/metrics?")) {
            if openmetrics {
                (
                    "200 OK",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    get().render(),
                )
            } else {
                (
                    "200 OK",
                    prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                    get().render_prometheus(),
                )
            }
        } else {
            (
                "404 Not Found",
                "text/plain; charset=utf-8",
                "metrics are at /metrics\n".to_string(),
            )
        };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = socket.write_all(response.as_bytes()).await;
    let _ = socket.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_sources_have_left_to_read_follows_their_reports() {
        let m = Metrics::new();
        let left = |m: &Metrics| m.bytes_left.get_or_create(&stream("logs")).get();
        m.progress("logs", "a.csv", 0, 1000);
        m.progress("logs", "b.csv", 0, 500);
        assert_eq!(left(&m), 1500);
        m.progress("logs", "a.csv", 400, 1000);
        assert_eq!(left(&m), 1100);
        // A reader that returns none has read its split to the end, whatever it said.
        m.split_done("logs", "a.csv");
        assert_eq!(left(&m), 500);
        // A report past the end counts as the end.
        m.progress("logs", "b.csv", 900, 500);
        assert_eq!(left(&m), 0);
        assert_eq!(m.totals.work_bytes.load(Ordering::Relaxed), 1500);
        assert_eq!(m.totals.work_left.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn metrics_are_named_by_prometheus_conventions() {
        let m = get();
        m.rows_read.get_or_create(&stream("orders")).inc_by(5);
        m.epoch_seconds.observe(0.5);
        m.transformed("mask", "orders", 3, 100);
        m.plugin("transform \"mask\" (builtin:pii-mask)").called(
            std::time::Duration::from_millis(2),
            2 << 20,
            Some(1000),
        );
        let text = m.render();
        for line in [
            "ingest_transform_rows_total{stage=\"mask\",stream=\"orders\"} 3",
            "ingest_transform_bytes_total{stage=\"mask\",stream=\"orders\"} 100",
            "ingest_plugin_memory_peak_bytes{plugin=\"transform \\\"mask\\\" (builtin:pii-mask)\"} 2097152",
            "ingest_plugin_fuel_consumed_total{plugin=\"transform \\\"mask\\\" (builtin:pii-mask)\"} 1000",
            "# TYPE ingest_source_rows counter",
            "ingest_source_rows_total{stream=\"orders\"} 5",
            "# TYPE ingest_epoch_duration_seconds histogram",
            "# TYPE ingest_last_commit_timestamp_seconds gauge",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}

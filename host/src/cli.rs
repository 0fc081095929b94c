//! The command line: `host run`, `host check`, `host plugins inspect|list`,
//! `host state show|reset`, `host dlq show|replay`.
//! Exit codes: 0 success, 1 the run failed, 2 a usage or configuration error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{self, ConfigError};
use crate::plugin::{self, Kind, PluginRef, Runtime};
use crate::runtime::{self, RunError, Summary};
use crate::secrets::redact;

#[derive(Debug, Parser)]
#[command(
    name = "host",
    version,
    about = "Move data through sandboxed WebAssembly plugins"
)]
pub struct Cli {
    /// Log level filter (error, warn, info, debug, trace), or a tracing directive.
    #[arg(long, global = true, env = "INGEST_LOG", default_value = "warn")]
    pub log: String,
    /// How log lines are written: `text` for people, `json` (one object a line, with the
    /// run, attempt, stage and epoch they belong to) for log shippers.
    #[arg(
        long,
        global = true,
        env = "INGEST_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a pipeline to the end of its input.
    Run {
        /// The pipeline file.
        pipeline: PathBuf,
        /// Serve Prometheus metrics at http://ADDR/metrics while the run lasts (e.g.
        /// 127.0.0.1:9464).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
        /// No progress line on the terminal (the summary is still printed).
        #[arg(long, short)]
        quiet: bool,
    },
    /// Validate a pipeline and its plugins without moving any data.
    Check { pipeline: PathBuf },
    /// Work with plugin components.
    Plugins {
        #[command(subcommand)]
        command: PluginsCommand,
    },
    /// How a pipeline stands, for people and for monitoring: the last committed epoch and
    /// when, rows, dead letters, who holds its run lock, and freshness against `[slo]
    /// freshness`. Exits 3 when the SLO is breached.
    ///
    /// With `--nats`: the cluster's workers (alive, stopped or lost), its queue, and every
    /// split with its holder, epoch and rows; no pipeline file is needed.
    Status {
        #[arg(required_unless_present = "nats")]
        pipeline: Option<PathBuf>,
        /// Print one JSON object instead of lines.
        #[arg(long)]
        json: bool,
        /// Show the cluster at this NATS server instead of one pipeline's local state.
        #[arg(long, value_name = "URL", env = "INGEST_NATS")]
        nats: Option<String>,
        /// The cluster's name (its stream and bucket are named after it).
        #[arg(long, default_value = "ingest")]
        cluster: String,
    },
    /// Plan a pipeline's splits and queue them for `host worker`s on any machines (NATS
    /// JetStream). Inputs and outputs must be reachable at the same paths by every worker.
    Submit {
        pipeline: PathBuf,
        /// The NATS server with JetStream, e.g. nats://127.0.0.1:4222.
        #[arg(long, value_name = "URL", env = "INGEST_NATS")]
        nats: String,
        /// The cluster's name (its stream and bucket are named after it).
        #[arg(long, default_value = "ingest")]
        cluster: String,
        /// How long a worker holds a split without renewing before another takes it over
        /// (set when the cluster's queue is created).
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        lease: std::time::Duration,
    },
    /// Pull splits from the cluster's queue and run them; run as many as wanted.
    Worker {
        /// The NATS server with JetStream, e.g. nats://127.0.0.1:4222.
        #[arg(long, value_name = "URL", env = "INGEST_NATS")]
        nats: String,
        /// The cluster's name (its stream and bucket are named after it).
        #[arg(long, default_value = "ingest")]
        cluster: String,
        /// This worker's name (default: host name and process id).
        #[arg(long)]
        id: Option<String>,
        /// The lease, should this worker create the cluster's queue.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        lease: std::time::Duration,
        /// Exit after this long without work (default: wait until stopped).
        #[arg(long, value_parser = parse_duration)]
        idle_exit: Option<std::time::Duration>,
    },
    /// Print rows as they leave a stage of a running pipeline, one JSON object per line, as
    /// the sink would see them: masked by the `builtin:pii-mask` stages after it, secret
    /// values redacted. Ends after `--rows` rows, or when the run ends.
    Tap {
        pipeline: PathBuf,
        /// The source, transform or sink (rows arriving at it) to sample.
        #[arg(long)]
        stage: String,
        /// How many rows to print.
        #[arg(long, default_value_t = 10)]
        rows: usize,
    },
    /// Print the JSON Schema of pipeline.toml (for editors and CI checks).
    Schema,
    /// Show or reset a pipeline's checkpoint state.
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
    /// Look at or replay a pipeline's dead-letter queue.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Start something new.
    New {
        #[command(subcommand)]
        command: NewCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum NewCommand {
    /// Write a ready plugin project: code, build script (`./build.sh`), a test pipeline
    /// with its input, the contract and the SDK.
    Plugin {
        /// The language to write it in.
        #[arg(long, value_enum)]
        lang: crate::scaffold::Lang,
        /// What the plugin does in a pipeline.
        #[arg(long, value_enum)]
        kind: Kind,
        /// The plugin's name (lower case, digits, dashes); also the project directory.
        name: String,
        /// Where to create the project directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Count the dead letters of each stream, by plugin and reason.
    Show { pipeline: PathBuf },
    /// Send the dead letters through the pipeline again (e.g. after its config was fixed)
    /// as one new epoch; what passes is written to the sink and leaves the queue, what
    /// fails again stays with its new reason.
    Replay { pipeline: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// Show a component's worlds, imports, exports, size and sha256, without running it.
    Inspect {
        /// A `.wasm` file, or `builtin:NAME` (also `source:NAME`-style `builtin:KIND/NAME`).
        plugin: String,
    },
    /// List the built-in plugins.
    List,
    /// Check every plugin of a test pipeline against the contract, call by call: config
    /// schema, a refused unknown key, reading and resuming, transforms' output, the sink's
    /// abort and idempotent commit. The sink publishes test epochs: use a test pipeline.
    Conform { pipeline: PathBuf },
    /// Compile a component into the cache now, so that runs start it in milliseconds.
    Compile {
        /// A `.wasm` file.
        plugin: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Print the committed epoch, positions and schema versions.
    Show { pipeline: PathBuf },
    /// Forget the state: the next run reads every source from the start. Outputs already
    /// published stay, so a sink that appends will receive those rows again.
    Reset {
        pipeline: PathBuf,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

/// An error with its exit code.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure {
            code: 2,
            error: e.into(),
        }
    }
}

fn run_failure(e: RunError) -> Failure {
    let code = if e.is_config() { 2 } else { 1 };
    Failure {
        code,
        error: e.into(),
    }
}

/// Run the command line; returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    // A panic the host turns into an error (a malformed batch from a plugin) is reported as
    // that error, not also as a panic message.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !crate::batch::in_guarded_read() {
            report(info);
        }
    }));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let outcome = rt.block_on(dispatch(cli.command));
    // Every plugin call is bounded, so no stage thread should be left; should one be, it
    // must not keep a stopped run from exiting.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", redact(&format!("{:#}", f.error)));
            ExitCode::from(f.code)
        }
    }
}

async fn dispatch(command: Command) -> Result<(), Failure> {
    match command {
        Command::Run {
            pipeline,
            metrics,
            quiet,
        } => {
            if let Some(addr) = metrics {
                let bound = crate::metrics::serve(&addr).await.map_err(|e| Failure {
                    code: 2,
                    error: anyhow::anyhow!("--metrics {addr}: cannot listen there: {e}"),
                })?;
                tracing::info!("metrics at http://{bound}/metrics");
            }
            run(&pipeline, quiet).await
        }
        Command::Check { pipeline } => check(&pipeline).await,
        Command::Plugins {
            command: PluginsCommand::Inspect { plugin },
        } => inspect(&plugin),
        Command::Plugins {
            command: PluginsCommand::List,
        } => {
            for kind in [Kind::Source, Kind::Transform, Kind::Sink] {
                for name in plugin::builtin_names(kind) {
                    println!("{kind:<9} builtin:{name}");
                }
            }
            Ok(())
        }
        Command::Status {
            pipeline,
            json,
            nats,
            cluster,
        } => match (nats, pipeline) {
            (Some(url), _) => cluster_status(&url, &cluster, json),
            (None, Some(pipeline)) => status(&pipeline, json),
            (None, None) => Err(Failure {
                code: 2,
                error: anyhow::anyhow!("name a pipeline file, or a cluster with --nats"),
            }),
        },
        Command::Submit {
            pipeline,
            nats,
            cluster,
            lease,
        } => submit(&pipeline, &nats, &cluster, lease).await,
        Command::Worker {
            nats,
            cluster,
            id,
            lease,
            idle_exit,
        } => worker(&nats, &cluster, id, lease, idle_exit).await,
        Command::Tap {
            pipeline,
            stage,
            rows,
        } => tap(&pipeline, &stage, rows).await,
        Command::Schema => {
            println!("{}", config::json_schema());
            Ok(())
        }
        Command::State {
            command: StateCommand::Show { pipeline },
        } => state_show(&pipeline),
        Command::State {
            command: StateCommand::Reset { pipeline, yes },
        } => state_reset(&pipeline, yes),
        Command::Dlq {
            command: DlqCommand::Show { pipeline },
        } => dlq_show(&pipeline),
        Command::New {
            command:
                NewCommand::Plugin {
                    lang,
                    kind,
                    name,
                    dir,
                },
        } => {
            let project =
                crate::scaffold::new_plugin(lang, kind, &name, &dir).map_err(|e| Failure {
                    code: 2,
                    error: e.into(),
                })?;
            println!(
                "created {}: a {kind} plugin in {lang:?}\n\n    cd {}\n    ./build.sh               # builds {name}.wasm and pins it in pipeline.toml\n    host run pipeline.toml   # runs it on the sample input",
                project.display(),
                project.display()
            );
            Ok(())
        }
        Command::Plugins {
            command: PluginsCommand::Compile { plugin },
        } => compile(&plugin),
        Command::Plugins {
            command: PluginsCommand::Conform { pipeline },
        } => conform(&pipeline).await,
        Command::Dlq {
            command: DlqCommand::Replay { pipeline },
        } => dlq_replay(&pipeline).await,
    }
}

/// How `pipeline`'s dead letters are kept, with the key to open sealed ones; only the key's
/// secret is resolved.
fn dlq_protection(pipeline: &config::Pipeline) -> Result<crate::dlq::Protection, Failure> {
    let needed: std::collections::BTreeMap<_, _> = pipeline
        .secrets
        .iter()
        .filter(|(name, _)| {
            matches!(&pipeline.dlq_protect, crate::dlq::Protect::Encrypt { key_secret } if key_secret == *name)
        })
        .map(|(name, source)| (name.clone(), source.clone()))
        .collect();
    let secrets = crate::secrets::resolve(&needed).map_err(|errors| Failure {
        code: 2,
        error: anyhow::anyhow!(
            "cannot open the dead letters: {}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ),
    })?;
    crate::dlq::Protection::new(&pipeline.dlq_protect, &secrets).map_err(|e| Failure {
        code: 2,
        error: e.into(),
    })
}

fn dlq_show(path: &Path) -> Result<(), Failure> {
    let pipeline = config::load(path)?;
    let protection = dlq_protection(&pipeline)?;
    let failed = |e: crate::dlq::DlqError| Failure {
        code: if e.is_key_problem() { 2 } else { 1 },
        error: e.into(),
    };
    let dir = &pipeline.dlq_dir;
    let mut total = 0;
    for stream in crate::dlq::streams(dir) {
        let mut counts: std::collections::BTreeMap<(String, String), u64> = Default::default();
        for file in crate::dlq::published_files(dir, &stream).map_err(failed)? {
            for letter in crate::dlq::read(&file, &protection).map_err(failed)? {
                let reason = reason_kind(&letter.reason);
                *counts.entry((letter.plugin, reason)).or_default() += 1;
            }
        }
        let n: u64 = counts.values().sum();
        if n == 0 {
            continue;
        }
        total += n;
        println!(
            "stream {stream}: {n} dead letter{}",
            if n == 1 { "" } else { "s" }
        );
        for ((plugin, reason), count) in counts {
            println!("  {count:>8}  {plugin}: {reason}");
        }
    }
    println!(
        "pipeline {}: {total} dead letter{} in {}",
        pipeline.name,
        if total == 1 { "" } else { "s" },
        dir.display()
    );
    Ok(())
}

/// A reason grouped by its kind, not by the value it quotes: every backquoted value is
/// shown as `…`, but the name after `column`, which says where the problem is.
fn reason_kind(reason: &str) -> String {
    let mut out = String::new();
    for (i, part) in reason.split('`').enumerate() {
        if i > 0 {
            out.push('`');
        }
        if i % 2 == 1 && !out.ends_with("column `") {
            out.push('…');
        } else {
            out.push_str(part);
        }
    }
    out
}

/// `host plugins conform`: one line per check, exit 1 when any failed.
async fn conform(path: &Path) -> Result<(), Failure> {
    let pipeline = config::load(path)?;
    let runtime = new_runtime(Some(&pipeline))?;
    let prepared = runtime::prepare(&pipeline, &runtime, cancel_on_signal())
        .await
        .map_err(run_failure)?;
    let findings = runtime::conform(Arc::new(prepared))
        .await
        .map_err(run_failure)?;
    let failed = findings.iter().filter(|f| f.failure.is_some()).count();
    for f in &findings {
        match &f.failure {
            None => println!("ok    {}: {}", f.plugin, f.check),
            Some(why) => println!("FAIL  {}: {}: {why}", f.plugin, f.check),
        }
    }
    println!("{} checks, {} failed", findings.len(), failed);
    if failed > 0 {
        return Err(Failure {
            code: 1,
            error: anyhow::anyhow!("{failed} conformance check(s) failed"),
        });
    }
    Ok(())
}

/// Compile a component into the cache (`host plugins compile`).
fn compile(path: &Path) -> Result<(), Failure> {
    let failed = |code, error: anyhow::Error| Failure { code, error };
    let runtime = new_runtime(None)?;
    if runtime.cache_dir().is_none() {
        return Err(failed(
            2,
            anyhow::anyhow!("no cache directory: set INGEST_CACHE_DIR or HOME"),
        ));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| failed(2, anyhow::anyhow!("cannot read {}: {e}", path.display())))?;
    let plugin = plugin::PluginBytes::new(bytes);
    let label = path.display().to_string();
    let started = std::time::Instant::now();
    let (_, cached) = runtime
        .compile_cached(&label, &plugin)
        .map_err(|e| failed(1, e.into()))?;
    println!(
        "{label}: sha256 {}; {} in {:.2} s",
        plugin.sha256,
        if cached {
            "already in the cache"
        } else {
            "compiled into the cache"
        },
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn dlq_replay(path: &Path) -> Result<(), Failure> {
    let pipeline = config::load(path)?;
    let _lock = lock_state(&pipeline, "dlq replay", path)?;
    let runtime = new_runtime(Some(&pipeline))?;
    let cancel = cancel_on_signal();
    let prepared = runtime::prepare(&pipeline, &runtime, cancel)
        .await
        .map_err(run_failure)?;
    let s = runtime::replay(Arc::new(prepared))
        .await
        .map_err(run_failure)?;
    let epoch = match s.epoch {
        Some(e) => format!("epoch {e} committed"),
        None => "nothing to replay".to_string(),
    };
    println!(
        "{}",
        redact(&format!(
            "pipeline {}: {} dead letters replayed, {} rows written, {} still failing (kept in the queue), {} file{} published; {epoch}",
            pipeline.name,
            s.letters,
            s.rows_written,
            s.still_failing,
            s.published,
            if s.published == 1 { "" } else { "s" },
        ))
    );
    Ok(())
}

/// The names of `pipeline`'s stages, in order.
fn stage_names(pipeline: &config::Pipeline) -> Vec<String> {
    pipeline.stages().map(|s| s.name.clone()).collect()
}

/// Serve `host tap` for the run of `pipeline` (whose lock the caller holds); a run that
/// cannot serve taps runs all the same, with a warning.
fn serve_taps(pipeline: &config::Pipeline) -> Option<crate::tap::Server> {
    let path = crate::tap::socket_path(&pipeline.state_dir, &pipeline.name);
    match crate::tap::Server::start(path.clone(), stage_names(pipeline)) {
        Ok(server) => Some(server),
        Err(e) => {
            tracing::warn!(
                "`host tap` is not available for this run: cannot listen at {}: {e}",
                path.display()
            );
            None
        }
    }
}

/// `host tap`: print `rows` rows leaving `stage` of the running `pipeline`.
async fn tap(path: &Path, stage: &str, rows: usize) -> Result<(), Failure> {
    let pipeline = config::load(path)?;
    let stages = stage_names(&pipeline);
    let refused = |message: String| Failure {
        code: 2,
        error: anyhow::anyhow!(message),
    };
    if !stages.iter().any(|s| s == stage) {
        return Err(refused(format!(
            "pipeline `{}` has no stage `{stage}`; its stages are {}",
            pipeline.name,
            stages.join(", ")
        )));
    }
    if rows == 0 || rows > crate::tap::MAX_ROWS {
        return Err(refused(format!(
            "`--rows` takes 1 to {}, not {rows}",
            crate::tap::MAX_ROWS
        )));
    }
    let socket = crate::tap::socket_path(&pipeline.state_dir, &pipeline.name);
    let got = crate::tap::tap(&socket, &pipeline.name, stage, rows, |row| {
        println!("{row}")
    })
    .await
    .map_err(|e| Failure {
        code: match e {
            crate::tap::TapError::Refused { .. } => 2,
            _ => 1,
        },
        error: e.into(),
    })?;
    if got < rows {
        eprintln!("the run ended after {got} of {rows} rows");
    }
    Ok(())
}

/// Takes `pipeline`'s state lock for `command` (what the user ran, e.g. `run p.toml`), or
/// fails with exit 2 naming the holder.
fn lock_state(
    pipeline: &config::Pipeline,
    command: &str,
    path: &Path,
) -> Result<crate::lock::StateLock, Failure> {
    let command = format!("{command} {}", path.display());
    crate::lock::acquire(&pipeline.state_dir, &pipeline.name, &command).map_err(|e| {
        let code = match e {
            crate::lock::LockError::Held { .. } => 2,
            crate::lock::LockError::Io { .. } => 1,
        };
        Failure {
            code,
            error: e.into(),
        }
    })
}

/// The engine for `pipeline` (fuel metering on when a plugin has a `fuel` limit), or for
/// no pipeline.
fn new_runtime(pipeline: Option<&config::Pipeline>) -> Result<Runtime, Failure> {
    let fuel = pipeline.is_some_and(|p| p.stages().any(|s| s.limits.fuel.is_some()));
    Runtime::new(plugin::default_cache_dir(), fuel).map_err(|e| Failure {
        code: 1,
        error: anyhow::anyhow!("cannot create the WebAssembly engine: {e}"),
    })
}

/// Cancel the run on SIGINT/SIGTERM: every plugin call in progress stops at once, waiting
/// or computing, and the open epoch is aborted. A second signal exits at once.
fn cancel_on_signal() -> CancellationToken {
    on_signal(None)
}

/// On SIGINT/SIGTERM: with a `drain` token (stream mode), the first signal drains (reading
/// stops and the open epoch commits); without, it cancels the run as
/// [`cancel_on_signal`] does. A second signal exits at once. Returns the cancel token.
fn on_signal(drain: Option<CancellationToken>) -> CancellationToken {
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            for _ in 0..2 {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
                if token.is_cancelled() || drain.as_ref().is_some_and(|d| d.is_cancelled()) {
                    eprintln!("error: interrupted again; exiting now");
                    std::process::exit(130);
                }
                if let Some(drain) = &drain {
                    drain.cancel();
                    eprintln!(
                        "draining: reading stops and the open epoch commits (interrupt again to exit at once)"
                    );
                    continue;
                }
                token.cancel();
                eprintln!("stopping: aborting the open epoch (interrupt again to exit at once)");
            }
        }
    });
    cancel
}

async fn run(path: &Path, quiet: bool) -> Result<(), Failure> {
    let pipeline = config::load(path)?;
    let _lock = lock_state(&pipeline, "run", path)?;
    let runtime = new_runtime(Some(&pipeline))?;
    let drain = (pipeline.mode == config::RunMode::Stream).then(CancellationToken::new);
    let cancel = on_signal(drain.clone());
    let mut prepared = runtime::prepare(&pipeline, &runtime, cancel)
        .await
        .map_err(run_failure)?;
    if let Some(drain) = drain {
        prepared.drain = drain;
    }
    let _taps = serve_taps(&pipeline);
    let span = tracing::info_span!("run", pipeline = %pipeline.name);
    let progress = crate::progress::Progress::start(quiet);
    let result = tracing::Instrument::instrument(runtime::run(Arc::new(prepared)), span).await;
    // Webhook requests still held were not committed: their senders retry.
    crate::webhook::shutdown();
    if let Some(progress) = progress {
        progress.finish();
    }
    let summary = result.map_err(run_failure)?;
    print_summary(&pipeline, &summary);
    Ok(())
}

fn print_summary(pipeline: &config::Pipeline, s: &Summary) {
    let secs = s.elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        s.rows_read as f64 / secs
    } else {
        0.0
    };
    let epochs = if s.epochs == 0 {
        format!("no new epoch (state stays at epoch {})", s.last_epoch)
    } else {
        format!(
            "{} epoch{} committed ({}..={})",
            s.epochs,
            if s.epochs == 1 { "" } else { "s" },
            s.resumed_after_epoch + 1,
            s.last_epoch
        )
    };
    println!(
        "{}",
        redact(&format!(
            "pipeline {}: {} rows read ({} as Arrow), {} rows written, {} rejected ({} to the dead-letter queue), {} file{} published; {}; {} attempt{}; {:.2} s ({:.0} rows/s)",
            pipeline.name,
            s.rows_read,
            crate::sandbox::show_bytes(s.bytes_read),
            s.rows_written,
            s.rows_rejected,
            s.rows_dead_lettered,
            s.published,
            if s.published == 1 { "" } else { "s" },
            epochs,
            s.attempts,
            if s.attempts == 1 { "" } else { "s" },
            secs,
            rate,
        ))
    );
    if s.lags.count() > 0 {
        println!(
            "pipeline {}: lag from source commit to sink commit: p50 {:.3} s, p99 {:.3} s, max {:.3} s ({} changes sampled)",
            pipeline.name,
            s.lags.quantile(0.5),
            s.lags.quantile(0.99),
            s.lags.max_seconds(),
            s.lags.count()
        );
    }
}

async fn check(path: &Path) -> Result<(), Failure> {
    let pipeline = config::load(path)?;
    let runtime = new_runtime(Some(&pipeline))?;
    let prepared = runtime::prepare(&pipeline, &runtime, CancellationToken::new())
        .await
        .map_err(run_failure)?;
    println!("pipeline {} is valid", pipeline.name);
    for (label, plugin) in std::iter::once(&prepared.source.label)
        .chain(prepared.transforms.iter().map(|t| &t.label))
        .chain(std::iter::once(&prepared.sink.label))
        .zip(
            std::iter::once(&pipeline.source)
                .chain(&pipeline.transforms)
                .chain(std::iter::once(&pipeline.sink)),
        )
    {
        let grants: Vec<String> = plugin
            .fs
            .iter()
            .map(|g| format!("{}{}", g.guest_path, if g.writable { ":rw" } else { "" }))
            .chain(plugin.net.iter().map(|n| format!("net {n}")))
            .chain(plugin.secrets.iter().map(|s| format!("secret {s}")))
            .collect();
        println!(
            "  {label}: grants [{}], memory {} MiB, deadline {:?}",
            grants.join(", "),
            plugin.limits.memory_bytes >> 20,
            plugin.limits.call_timeout
        );
    }
    for (stream, schema) in runtime::describe_streams(&prepared) {
        println!("  stream {stream}: {schema}");
    }
    Ok(())
}

fn inspect(target: &str) -> Result<(), Failure> {
    let runtime = new_runtime(None)?;
    let (label, bytes) = if let Some(name) = target.strip_prefix("builtin:") {
        let found = [Kind::Source, Kind::Transform, Kind::Sink]
            .into_iter()
            .filter_map(|k| {
                let (kind_name, plugin) = match name.split_once('/') {
                    Some((k2, n)) if k2 == k.as_str() => (k2, n),
                    Some(_) => return None,
                    None => (k.as_str(), name),
                };
                plugin::builtin_bytes(k, plugin)
                    .map(|b| (format!("builtin:{kind_name}/{plugin}"), b.to_vec()))
            })
            .collect::<Vec<_>>();
        match found.len() {
            0 => {
                return Err(Failure {
                    code: 2,
                    error: anyhow::anyhow!(
                        "no built-in plugin `{target}`; `host plugins list` shows them"
                    ),
                })
            }
            1 => found.into_iter().next().unwrap(),
            _ => {
                return Err(Failure {
                    code: 2,
                    error: anyhow::anyhow!(
                        "`{target}` names more than one built-in ({}); say which",
                        found
                            .iter()
                            .map(|(l, _)| l.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })
            }
        }
    } else {
        let path = PathBuf::from(target);
        let bytes = plugin::read_file(&path).map_err(|e| Failure {
            code: 2,
            error: e.into(),
        })?;
        (
            PluginRef::File {
                path,
                sha256: String::new(),
            }
            .to_string(),
            bytes,
        )
    };
    let info = plugin::inspect(&runtime, &label, &bytes).map_err(|e| Failure {
        code: 2,
        error: anyhow::Error::from(e).context("cannot inspect the plugin"),
    })?;
    println!("plugin:  {label}");
    println!("size:    {} bytes", info.size);
    println!("sha256:  {}", info.sha256);
    let kinds: Vec<&str> = info.kinds.iter().map(|k| k.as_str()).collect();
    println!(
        "kind:    {}",
        if kinds.is_empty() {
            "none (exports no ingest:plugin interface)".to_string()
        } else {
            kinds.join(", ")
        }
    );
    println!("exports:");
    for e in &info.exports {
        println!("  {e}");
    }
    println!("imports (what it could ask the host for; each is denied unless granted):");
    for i in &info.imports {
        println!("  {i}");
    }
    Ok(())
}

/// The exit code of `host status` when the freshness SLO is breached.
const SLO_BREACHED: u8 = 3;

fn status(path: &Path, json: bool) -> Result<(), Failure> {
    let pipeline = config::load(path)?;
    let failed = |e: anyhow::Error| Failure { code: 1, error: e };
    let state = runtime::load_state(&pipeline).map_err(|e| failed(e.into()))?;
    let holder = crate::lock::holder(&pipeline.state_dir, &pipeline.name).map_err(|e| {
        failed(anyhow::anyhow!(
            "cannot read the run lock of pipeline `{}`: {e}",
            pipeline.name
        ))
    })?;
    // Dead letters, counted by line: no key is needed to count sealed ones.
    let mut letters = std::collections::BTreeMap::new();
    for stream in crate::dlq::streams(&pipeline.dlq_dir) {
        let files = crate::dlq::published_files(&pipeline.dlq_dir, &stream)
            .map_err(|e| failed(e.into()))?;
        let mut n = 0u64;
        for file in files {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| failed(anyhow::anyhow!("{}: {e}", file.display())))?;
            n += text.lines().filter(|l| !l.trim().is_empty()).count() as u64;
        }
        if n > 0 {
            letters.insert(stream, n);
        }
    }
    let committed_at = state
        .committed_at
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    let age = committed_at.map(|t| {
        (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
            .to_std()
            .unwrap_or_default()
    });
    // Nothing committed yet is as stale as it gets.
    let breached = pipeline.freshness.map(|slo| age.is_none_or(|a| a > slo));
    let show = |d: std::time::Duration| {
        humantime::format_duration(std::time::Duration::from_secs(d.as_secs())).to_string()
    };
    let dead: u64 = letters.values().sum();
    if json {
        let value = serde_json::json!({
            "pipeline": pipeline.name,
            "epoch": state.epoch,
            "committed": state.committed,
            "committed_at": state.committed_at,
            "age_seconds": age.map(|a| a.as_secs_f64()),
            "rows_written": state.totals.rows_written,
            "rows_rejected": state.totals.rows_rejected,
            "dead_letters": { "total": dead, "streams": letters },
            "lock": holder.as_ref().map(|h| serde_json::json!({
                "pid": h.pid, "host": h.host, "started": h.started, "command": h.command,
            })),
            "slo": pipeline.freshness.map(|f| serde_json::json!({
                "freshness_seconds": f.as_secs_f64(),
                "breached": breached.unwrap_or(false),
            })),
        });
        println!("{value}");
    } else {
        println!("pipeline {} ({})", pipeline.name, path.display());
        let commit = match (state.epoch, &state.committed_at, age) {
            (0, _, _) => "nothing committed yet".to_string(),
            (epoch, Some(at), Some(age)) if state.committed => {
                format!("epoch {epoch} at {at}, {} ago", show(age))
            }
            (epoch, _, _) if state.committed => format!("epoch {epoch} (time not recorded)"),
            (epoch, _, _) => format!("epoch {epoch} prepared, its commit pending"),
        };
        println!("  last commit   {commit}");
        println!(
            "  rows          {} written, {} rejected",
            state.totals.rows_written, state.totals.rows_rejected
        );
        let by_stream: Vec<String> = letters.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        if by_stream.is_empty() {
            println!("  dead letters  0");
        } else {
            println!("  dead letters  {dead} ({})", by_stream.join(", "));
        }
        match &holder {
            Some(h) => println!("  run lock      held by {h}"),
            None => println!("  run lock      free"),
        }
        if let Some(slo) = pipeline.freshness {
            let since = age.map_or("no commit yet".to_string(), |a| {
                format!("{} since the last commit", show(a))
            });
            println!(
                "  freshness     {since}, SLO {}: {}",
                show(slo),
                if breached == Some(true) {
                    "BREACHED"
                } else {
                    "ok"
                }
            );
        }
    }
    if breached == Some(true) {
        return Err(Failure {
            code: SLO_BREACHED,
            error: anyhow::anyhow!(
                "pipeline `{}` is staler than its freshness SLO of {}",
                pipeline.name,
                show(pipeline.freshness.unwrap_or_default())
            ),
        });
    }
    Ok(())
}

fn state_show(path: &Path) -> Result<(), Failure> {
    let pipeline = config::load(path)?;
    let state = runtime::load_state(&pipeline).map_err(|e| Failure {
        code: 1,
        error: e.into(),
    })?;
    println!(
        "pipeline {}: state in {}",
        pipeline.name,
        runtime::state_store(&pipeline).path().display()
    );
    println!(
        "epoch {} ({})",
        state.epoch,
        if state.epoch == 0 {
            "nothing committed yet"
        } else if state.committed {
            "committed"
        } else {
            "prepared, commit pending"
        }
    );
    println!(
        "rows written {}, rejected {}",
        state.totals.rows_written, state.totals.rows_rejected
    );
    for (stream, splits) in &state.positions {
        println!("stream {stream}:");
        for (split, position) in splits {
            let shown = String::from_utf8(position.0.clone())
                .unwrap_or_else(|_| format!("0x{}", hex::encode(&position.0)));
            println!("  {split}: {shown}");
        }
        if let Some(schema) = state.schemas.get(stream) {
            println!("  schema version {}", schema.version);
        }
        if let Some(plan) = state.plans.get(stream) {
            println!(
                "  read part-way in {} splits (the next run resumes them)",
                plan.len()
            );
        }
    }
    Ok(())
}

fn state_reset(path: &Path, yes: bool) -> Result<(), Failure> {
    let pipeline = config::load(path)?;
    let _lock = lock_state(&pipeline, "state reset", path)?;
    let file = runtime::state_store(&pipeline).path();
    if !file.exists() {
        println!("pipeline {} has no state; nothing to reset", pipeline.name);
        return Ok(());
    }
    if !yes {
        use std::io::{BufRead, IsTerminal, Write};
        if !std::io::stdin().is_terminal() {
            return Err(Failure {
                code: 2,
                error: anyhow::anyhow!(
                    "refusing to reset the state of `{}` without confirmation; pass --yes",
                    pipeline.name
                ),
            });
        }
        print!(
            "This forgets every position of pipeline `{}`: the next run reads all sources from \
             the start, and outputs already published stay.\nType the pipeline name to confirm: ",
            pipeline.name
        );
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if answer.trim() != pipeline.name {
            return Err(Failure {
                code: 2,
                error: anyhow::anyhow!("not confirmed; the state is unchanged"),
            });
        }
    }
    std::fs::remove_file(&file).map_err(|e| Failure {
        code: 1,
        error: anyhow::anyhow!("cannot remove {}: {e}", file.display()),
    })?;
    println!(
        "pipeline {}: state reset ({} removed)",
        pipeline.name,
        file.display()
    );
    Ok(())
}

/// A duration such as `30s`, `500ms` or `2m`.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (write e.g. 30s, 500ms or 2m)"))
}

fn cluster_names(url: &str, cluster: &str) -> Result<crate::cluster::Names, Failure> {
    crate::cluster::Names::new(url, cluster).map_err(|e| Failure {
        code: 2,
        error: e.into(),
    })
}

fn cluster_failure(e: crate::cluster::ClusterError) -> Failure {
    Failure {
        code: 1,
        error: e.into(),
    }
}

async fn submit(
    path: &Path,
    url: &str,
    cluster: &str,
    lease: std::time::Duration,
) -> Result<(), Failure> {
    let names = cluster_names(url, cluster)?;
    let file = std::path::absolute(path).map_err(|e| Failure {
        code: 2,
        error: anyhow::anyhow!("{}: {e}", path.display()),
    })?;
    let text = std::fs::read_to_string(&file).map_err(|e| Failure {
        code: 2,
        error: anyhow::anyhow!("cannot read the pipeline file {}: {e}", file.display()),
    })?;
    let pipeline = config::parse(&file, &text)?;
    crate::cluster::check_pipeline(&pipeline).map_err(|e| Failure {
        code: 2,
        error: e.into(),
    })?;
    let runtime = new_runtime(Some(&pipeline))?;
    let prepared = runtime::prepare(&pipeline, &runtime, cancel_on_signal())
        .await
        .map_err(run_failure)?;
    let planned = runtime::plan_splits(&prepared).await.map_err(run_failure)?;
    let submitted_at = crate::cluster::now_ms();
    let work: Vec<crate::cluster::submit::Work> = planned
        .iter()
        .flat_map(|(stream, splits)| {
            splits.iter().map(|split| crate::cluster::submit::Work {
                pipeline: pipeline.name.clone(),
                file: file.clone(),
                text: text.clone(),
                stream: stream.clone(),
                split: split.id.clone(),
                descriptor: crate::checkpoint::Opaque(split.descriptor.clone()),
                submitted_at,
            })
        })
        .collect();
    tokio::task::block_in_place(|| crate::cluster::submit::publish(&names, lease, &work))
        .map_err(cluster_failure)?;
    println!(
        "pipeline {}: {} split{} of {} stream{} queued on `{}` at {url}; start `host worker --nats {url}{}` on any machine",
        pipeline.name,
        work.len(),
        if work.len() == 1 { "" } else { "s" },
        planned.len(),
        if planned.len() == 1 { "" } else { "s" },
        names.work_stream(),
        if cluster == "ingest" { String::new() } else { format!(" --cluster {cluster}") },
    );
    Ok(())
}

async fn worker(
    url: &str,
    cluster: &str,
    id: Option<String>,
    lease: std::time::Duration,
    idle_exit: Option<std::time::Duration>,
) -> Result<(), Failure> {
    let names = cluster_names(url, cluster)?;
    let id = id.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "worker".into());
        format!("{host}-{}", std::process::id())
    });
    let options = crate::cluster::worker::Options {
        names,
        id: id.clone(),
        lease,
        idle_exit,
        cache_dir: plugin::default_cache_dir(),
    };
    let tally = crate::cluster::worker::work(&options, cancel_on_signal())
        .await
        .map_err(cluster_failure)?;
    println!(
        "worker {id}: {} split{} done, {} rows read, {} rows written, {} epochs; {} taken over by another worker, {} failed; {:.2} s busy, of which {:.3} s in {} round trips to the state bucket",
        tally.done,
        if tally.done == 1 { "" } else { "s" },
        tally.rows_read,
        tally.rows_written,
        tally.epochs,
        tally.fenced,
        tally.failed,
        tally.busy.as_secs_f64(),
        tally.kv_time.as_secs_f64(),
        tally.kv_round_trips,
    );
    Ok(())
}

fn cluster_status(url: &str, cluster: &str, json: bool) -> Result<(), Failure> {
    let names = cluster_names(url, cluster)?;
    let overview = crate::cluster::status::overview(&names).map_err(cluster_failure)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&overview).expect("an overview serializes")
        );
    } else {
        print!("{}", crate::cluster::status::describe(&overview));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_grouped_by_kind_keeping_the_column_and_hiding_the_value() {
        assert_eq!(
            reason_kind("column `amount`: `N/A` is not a float64"),
            "column `amount`: `…` is not a float64"
        );
        assert_eq!(
            reason_kind("`ann@example.com` is on the block list"),
            "`…` is on the block list"
        );
        assert_eq!(reason_kind("no quotes here"), "no quotes here");
    }
}

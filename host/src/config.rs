//! `pipeline.toml`: the raw file as written (serde model, unknown keys rejected), then
//! validation that collects every problem at once, then the built [`Pipeline`] the runtime
//! executes. Relative paths are resolved against the directory of the pipeline file.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::plugin::{Kind, PluginRef};
use crate::sandbox::{FsGrant, Limits, NetGrant};
use crate::secrets::SecretSource;

// ---------------------------------------------------------------------------------------
// The raw file.

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "File")]
struct RawFile {
    /// The pipeline's name and how it runs.
    pipeline: RawPipeline,
    /// Where the checkpoint state is kept.
    #[serde(default)]
    state: RawState,
    /// When an epoch closes: at whichever limit comes first, and at the end of the input.
    #[serde(default)]
    checkpoint: RawCheckpoint,
    /// How failed attempts are retried from the last checkpoint.
    #[serde(default)]
    retry: RawRetry,
    /// The dead-letter queue of rejected records.
    #[serde(default)]
    dlq: RawDlq,
    /// What a change of a stream's schema may do.
    #[serde(default)]
    schema: RawSchema,
    /// Service levels `host status` checks.
    #[serde(default)]
    slo: RawSlo,
    /// Secrets by name, resolved by the host and granted to plugins by name.
    #[serde(default)]
    secrets: BTreeMap<String, RawSecret>,
    /// The source (exactly one).
    #[serde(default)]
    source: Vec<RawStage>,
    /// Transforms, in order.
    #[serde(default)]
    transform: Vec<RawStage>,
    /// The sink (exactly one).
    #[serde(default)]
    sink: Vec<RawStage>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Pipeline")]
struct RawPipeline {
    /// Names the state; letters, digits, `-`, `_` and `.`.
    name: String,
    /// What to do with records a plugin rejects (default `fail`); a stage may override it.
    #[serde(default)]
    on_error: Option<OnError>,
    /// `batch` (the default: run to the end of the input) or `stream`.
    #[serde(default)]
    mode: Option<String>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "State")]
struct RawState {
    /// The state directory (default `.state` next to the pipeline file).
    dir: Option<String>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Checkpoint")]
struct RawCheckpoint {
    /// Rows per epoch at most (default 1000000).
    every_rows: Option<u64>,
    /// Bytes (as Arrow) per epoch at most (default 256MiB).
    every_bytes: Option<ByteSize>,
    /// Time per epoch at most (default 60s; 1s in stream mode).
    every: Option<DurationStr>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Retry")]
struct RawRetry {
    /// Failed attempts in a row before the run fails (an attempt that committed an epoch
    /// starts the count again).
    max_attempts: Option<u32>,
    /// The first wait before a retry, doubled each attempt.
    initial_backoff: Option<DurationStr>,
    /// The longest wait before a retry.
    max_backoff: Option<DurationStr>,
    /// Spread the waits at random (default true).
    jitter: Option<bool>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Dlq")]
struct RawDlq {
    /// Where dead letters are kept (default under the state directory).
    dir: Option<String>,
    /// How letters are kept on disk: `encrypt`, `mask` or `raw`.
    protect: Option<String>,
    /// `protect = "encrypt"`: the secret the key is derived from.
    key_secret: Option<String>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Schema")]
struct RawSchema {
    /// `evolve` (new nullable columns and safe widenings pass), `freeze` or `quarantine`.
    on_change: Option<crate::schema::OnChange>,
    /// Accept a column of any type becoming text as a safe change under `evolve`.
    widen_to_text: Option<bool>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Slo")]
struct RawSlo {
    /// The longest time since the last committed epoch that is still fresh.
    freshness: Option<DurationStr>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Secret")]
struct RawSecret {
    /// Read the secret from this environment variable.
    env: Option<String>,
    /// Read the secret from this file.
    file: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Stage")]
struct RawStage {
    /// The stage's name in messages and dead letters.
    name: Option<String>,
    /// `builtin:NAME`, or the path of a `.wasm` component (pin it with `sha256`).
    #[schemars(with = "String")]
    plugin: toml::Spanned<String>,
    /// The sha256 a `.wasm` component must have (64 hex digits).
    sha256: Option<String>,
    /// The plugin's own config, validated by the plugin (`host plugins inspect` shows its
    /// schema).
    #[schemars(with = "Option<std::collections::BTreeMap<String, serde_json::Value>>")]
    config: Option<toml::Spanned<toml::Table>>,
    /// Directories the plugin may read (`dir:rw` to write too); nothing else of the disk.
    #[serde(default)]
    fs: Vec<String>,
    /// `host:port` addresses the plugin may connect to over TCP; no network otherwise.
    #[serde(default)]
    net: Vec<String>,
    /// Names of the secrets the plugin may read.
    #[serde(default)]
    secrets: Vec<String>,
    /// URL prefixes for outgoing `wasi:http` requests.
    #[serde(default)]
    http: Vec<String>,
    /// Sources only: the `ip:port` where the host listens for webhooks on the plugin's
    /// behalf (`builtin:webhook`).
    listen: Option<String>,
    /// Names of host environment variables the plugin sees.
    #[serde(default)]
    env: Vec<String>,
    /// The plugin's memory limit.
    memory: Option<ByteSize>,
    /// The longest one call into the plugin may take.
    deadline: Option<DurationStr>,
    /// Fuel per call.
    fuel: Option<u64>,
    /// Largest batch the plugin may return.
    max_batch: Option<ByteSize>,
    /// What to do with records this stage rejects (default: the pipeline's).
    on_error: Option<OnError>,
    /// Sources only: the most rows per chunk (a source may return fewer).
    batch_rows: Option<u32>,
    /// Sources only: how many instances read splits at once.
    readers: Option<u32>,
    /// Sinks only: `append`, `upsert` or `replace`.
    write_mode: Option<String>,
    /// Sinks only: the key an `upsert` merges by.
    primary_key: Option<Vec<String>>,
}

/// What happens to a record a plugin rejects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Stop the run; nothing of the open epoch is published.
    Fail,
    /// Drop the record and count it.
    Skip,
    /// Write the record, with its reason, to the dead-letter queue.
    Dlq,
}

/// `"64MiB"`, `"1 GB"`, or a number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ByteSize(u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => parse_bytes(&s)
                .map(ByteSize)
                .map_err(serde::de::Error::custom),
        }
    }
}

impl schemars::JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A size: \"64MiB\", \"1 GB\", or a number of bytes",
            "type": ["string", "integer"],
            "minimum": 0,
        })
    }
}

fn parse_bytes(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|_| {
            format!("`{s}` is not a size; write e.g. 512MiB, 2GiB, 64MB or a number of bytes")
        })
}

/// `"30s"`, `"500ms"`, `"2m"`, `"1h"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DurationStr(Duration);

impl<'de> Deserialize<'de> for DurationStr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(DurationStr)
            .map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for DurationStr {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A duration: \"500ms\", \"30s\", \"5m\", \"1h\"",
            "type": "string",
        })
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|_| format!("`{s}` is not a duration; write e.g. 500ms, 30s, 5m or 1h"))
}

/// The JSON Schema of pipeline.toml, derived from the types the file is read into, for
/// editors (taplo, Even Better TOML) and CI checks.
pub fn json_schema() -> String {
    let mut schema = schemars::schema_for!(RawFile);
    schema.insert("title".into(), "pipeline.toml".into());
    serde_json::to_string_pretty(&schema).expect("a derived schema serialises")
}

// ---------------------------------------------------------------------------------------
// The validated pipeline.

/// A pipeline ready to run.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    /// The pipeline file, for messages.
    pub file: PathBuf,
    /// The text of the pipeline file, to point at the line of a key a plugin refused.
    pub text: String,
    pub state_dir: PathBuf,
    pub dlq_dir: PathBuf,
    /// How dead letters are kept on disk (`raw` when the pipeline writes none).
    pub dlq_protect: crate::dlq::Protect,
    pub mode: RunMode,
    pub checkpoint: CheckpointPolicy,
    pub retry: RetryPolicy,
    /// What to do when a stream's schema changed since the recorded version.
    pub on_schema_change: crate::schema::OnChange,
    /// Whether a column of any type becoming text is a safe change.
    pub widen_to_text: bool,
    /// `[slo] freshness`: `host status` reports a breach (exit 3) when the last epoch was
    /// committed longer ago than this.
    pub freshness: Option<Duration>,
    pub secrets: BTreeMap<String, SecretSource>,
    pub source: Stage,
    pub transforms: Vec<Stage>,
    pub sink: Stage,
}

impl Pipeline {
    /// Every stage, source first.
    pub fn stages(&self) -> impl Iterator<Item = &Stage> {
        std::iter::once(&self.source)
            .chain(&self.transforms)
            .chain(std::iter::once(&self.sink))
    }
}

/// How a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunMode {
    /// The run reads every stream to its end, then stops; a signal aborts the open epoch.
    #[default]
    Batch,
    /// Sources may never end; epochs close by time (1 s unless `[checkpoint] every` says
    /// otherwise), and the first SIGTERM or SIGINT drains: reading stops, the open epoch
    /// commits, and the run ends as if its input had.
    Stream,
}

/// When an epoch closes (whichever comes first), and always at end of input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPolicy {
    pub every_rows: u64,
    pub every_bytes: u64,
    pub every: Duration,
}

/// How failed attempts are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub jitter: bool,
}

/// One plugin of the pipeline with its config, grants and policies.
#[derive(Debug, Clone)]
pub struct Stage {
    pub kind: Kind,
    pub name: String,
    pub plugin: PluginRef,
    /// The plugin's `config` table as JSON.
    pub config_json: String,
    /// Line of the `config` table in the pipeline file, for messages.
    pub config_span: Option<Range<usize>>,
    pub fs: Vec<FsGrant>,
    /// `host:port` the plugin may connect to over TCP.
    pub net: Vec<NetGrant>,
    /// URL prefixes the plugin may send HTTP requests to.
    pub http: Vec<crate::http_grant::HttpGrant>,
    /// Sources only: where the host listens for webhooks on the plugin's behalf.
    pub listen: Option<std::net::SocketAddr>,
    /// Environment variables the plugin sees, with their values.
    pub env: Vec<(String, String)>,
    pub secrets: Vec<String>,
    pub limits: Limits,
    pub on_error: OnError,
    pub batch_rows: u32,
    /// Sources only: how many instances of the plugin read a stream's splits at once
    /// (1 to [`MAX_READERS`]); their rows are passed on in split order.
    pub readers: u32,
    pub write_mode: WriteMode,
}

/// The most source instances one stream is read with.
pub const MAX_READERS: u32 = 64;

impl Stage {
    /// A `builtin:pii-mask` transform: under `[dlq] protect = "mask"` it masks dead letters.
    pub fn is_masker(&self) -> bool {
        self.kind == Kind::Transform && self.plugin == PluginRef::Builtin("pii-mask".into())
    }

    /// How the stage is named in messages: `transform "mask" (builtin:pii-mask)`.
    pub fn label(&self) -> String {
        format!("{} \"{}\" ({})", self.kind, self.name, self.plugin)
    }
}

/// How the sink applies rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteMode {
    Append,
    Overwrite,
    Upsert(Vec<String>),
}

/// Everything wrong with a pipeline file.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.problems.len() == 1 {
            write!(f, "{}: {}", self.file.display(), self.problems[0])
        } else {
            write!(
                f,
                "{}: {} problems:",
                self.file.display(),
                self.problems.len()
            )?;
            for p in &self.problems {
                write!(f, "\n  - {p}")?;
            }
            Ok(())
        }
    }
}

impl std::error::Error for ConfigError {}

/// The 1-based line of byte offset `at` in `text`.
pub fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

/// Read, parse and validate a pipeline file.
pub fn load(path: &Path) -> Result<Pipeline, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        problems: vec![format!("cannot read the pipeline file: {e}")],
    })?;
    parse(path, &text)
}

/// Parse and validate pipeline text; `path` locates relative paths and names the file.
pub fn parse(path: &Path, text: &str) -> Result<Pipeline, ConfigError> {
    let error = |problems| ConfigError {
        file: path.to_path_buf(),
        problems,
    };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| format!("line {}: ", line_of(text, s.start)))
            .unwrap_or_default();
        error(vec![format!("{line}{}", e.message())])
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    };
    let mut problems = Vec::new();
    let pipeline = validate(raw, &base, path, text, &mut problems);
    match pipeline {
        Some(p) if problems.is_empty() => Ok(p),
        _ => Err(error(problems)),
    }
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

fn validate(
    raw: RawFile,
    base: &Path,
    file: &Path,
    text: &str,
    problems: &mut Vec<String>,
) -> Option<Pipeline> {
    let name = raw.pipeline.name.clone();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        problems.push(format!(
            "[pipeline] name = {name:?}: use letters, digits, `-`, `_` or `.` (it names the state directory)"
        ));
    }
    let on_error = raw.pipeline.on_error.unwrap_or(OnError::Fail);

    let mut secrets = BTreeMap::new();
    for (secret, def) in &raw.secrets {
        match (&def.env, &def.file) {
            (Some(var), None) => {
                secrets.insert(secret.clone(), SecretSource::Env(var.clone()));
            }
            (None, Some(f)) => {
                secrets.insert(secret.clone(), SecretSource::File(resolve(base, f)));
            }
            _ => problems.push(format!(
                "[secrets] {secret}: give exactly one of `env = \"VARIABLE\"` or `file = \"PATH\"`"
            )),
        }
    }

    let mode = match raw.pipeline.mode.as_deref() {
        None | Some("batch") => RunMode::Batch,
        Some("stream") => RunMode::Stream,
        Some(other) => {
            problems.push(format!(
                "[pipeline] mode = {other:?}; accepted: batch, stream"
            ));
            RunMode::Batch
        }
    };
    let checkpoint = CheckpointPolicy {
        every_rows: raw.checkpoint.every_rows.unwrap_or(1_000_000),
        every_bytes: raw.checkpoint.every_bytes.map(|b| b.0).unwrap_or(256 << 20),
        every: raw.checkpoint.every.map(|d| d.0).unwrap_or(match mode {
            RunMode::Batch => Duration::from_secs(60),
            RunMode::Stream => Duration::from_secs(1),
        }),
    };
    if checkpoint.every_rows == 0 || checkpoint.every_bytes == 0 || checkpoint.every.is_zero() {
        problems.push(
            "[checkpoint]: every_rows, every_bytes and every must be greater than zero".into(),
        );
    }
    let retry = RetryPolicy {
        max_attempts: raw.retry.max_attempts.unwrap_or(3),
        initial_backoff: raw
            .retry
            .initial_backoff
            .map(|d| d.0)
            .unwrap_or(Duration::from_millis(200)),
        max_backoff: raw
            .retry
            .max_backoff
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(30)),
        jitter: raw.retry.jitter.unwrap_or(true),
    };
    if retry.max_attempts == 0 {
        problems.push("[retry] max_attempts must be at least 1 (1 = no retry)".into());
    }

    let state_dir = resolve(base, raw.state.dir.as_deref().unwrap_or(".state"));
    let dlq_dir = raw
        .dlq
        .dir
        .as_deref()
        .map(|d| resolve(base, d))
        .unwrap_or_else(|| state_dir.join(&name).join("dlq"));

    let mut stages = |kind: Kind, list: Vec<RawStage>| -> Vec<Stage> {
        let table = format!("[[{kind}]]");
        if list.len() != 1 && kind != Kind::Transform {
            problems.push(format!(
                "expected exactly one {table} table, found {}",
                list.len()
            ));
        }
        let mut out = Vec::new();
        for (i, stage) in list.into_iter().enumerate() {
            if let Some(s) =
                validate_stage(kind, i, stage, base, text, &secrets, on_error, problems)
            {
                out.push(s);
            }
        }
        out
    };
    let source = stages(Kind::Source, raw.source);
    let transforms = stages(Kind::Transform, raw.transform);
    let sink = stages(Kind::Sink, raw.sink);
    // Messages and state name plugins by kind and name, so names are unique per kind.
    let mut names: Vec<(Kind, &str)> = source
        .iter()
        .chain(&transforms)
        .chain(&sink)
        .map(|s| (s.kind, s.name.as_str()))
        .collect();
    names.sort_by_key(|(kind, name)| (kind.as_str(), *name));
    for pair in names.windows(2) {
        if pair[0] == pair[1] {
            problems.push(format!(
                "two {} plugins are named `{}`; give each a unique `name`",
                pair[0].0, pair[0].1
            ));
        }
    }
    let dlq_protect = validate_protect(
        &raw.dlq,
        &secrets,
        source.iter().chain(&transforms).chain(&sink),
        raw.schema.on_change == Some(crate::schema::OnChange::Quarantine),
        problems,
    );
    let source = source.into_iter().next()?;
    let sink = sink.into_iter().next()?;
    if mode == RunMode::Stream && source.readers > 1 {
        problems.push(format!(
            "[[source]] {}: readers = {} in stream mode; a stream is read by one reader",
            source.name, source.readers
        ));
    }
    Some(Pipeline {
        name,
        file: file.to_path_buf(),
        text: text.to_string(),
        state_dir,
        dlq_dir,
        dlq_protect,
        mode,
        checkpoint,
        retry,
        on_schema_change: raw.schema.on_change.unwrap_or_default(),
        widen_to_text: raw.schema.widen_to_text.unwrap_or(false),
        freshness: raw.slo.freshness.map(|d| d.0),
        secrets,
        source,
        transforms,
        sink,
    })
}

/// `[dlq] protect`: required when the pipeline can write dead letters or masks personal
/// data, since a letter holds its record as it was before the plugin that rejected it.
fn validate_protect<'a>(
    raw: &RawDlq,
    secrets: &BTreeMap<String, SecretSource>,
    stages: impl Iterator<Item = &'a Stage>,
    quarantine: bool,
    problems: &mut Vec<String>,
) -> crate::dlq::Protect {
    use crate::dlq::Protect;
    let stages: Vec<&Stage> = stages.collect();
    let masker = stages.iter().find(|s| s.is_masker()).map(|s| s.label());
    let dead_letters = quarantine || stages.iter().any(|s| s.on_error == OnError::Dlq);
    const CHOICES: &str = "\"encrypt\" (with `key_secret = \"<secret>\"`; `host dlq show` and `replay` decrypt with it), \"mask\" (records go through the pipeline's pii-mask rules before they are written; such letters are kept for inspection and cannot be replayed) or \"raw\" (kept as they are)";
    let protect = match raw.protect.as_deref() {
        Some("encrypt") => {
            let key_secret = match &raw.key_secret {
                Some(name) if secrets.contains_key(name) => name.clone(),
                Some(name) => {
                    problems.push(format!(
                        "[dlq] key_secret = {name:?} is not defined; add `[secrets] {name} = {{ env = \"VARIABLE\" }}`"
                    ));
                    name.clone()
                }
                None => {
                    problems.push(
                        "[dlq] protect = \"encrypt\" needs `key_secret = \"<name of a [secrets] entry>\"`, the secret the key is derived from".into(),
                    );
                    String::new()
                }
            };
            Protect::Encrypt { key_secret }
        }
        Some("mask") => {
            if masker.is_none() {
                problems.push(
                    "[dlq] protect = \"mask\" masks letters with the pipeline's `builtin:pii-mask` stage, and this pipeline has none; add one, or choose \"encrypt\"".into(),
                );
            }
            Protect::Mask
        }
        Some("raw") => Protect::Raw,
        Some(other) => {
            problems.push(format!("[dlq] protect = {other:?}; accepted: {CHOICES}"));
            Protect::Raw
        }
        None => {
            let why = match (&masker, dead_letters) {
                (Some(masker), _) => Some(format!("this pipeline masks personal data ({masker})")),
                (None, true) => Some("this pipeline can write dead letters (`on_error = \"dlq\"` or `[schema] on_change = \"quarantine\"`)".to_string()),
                (None, false) => None,
            };
            if let Some(why) = why {
                problems.push(format!(
                    "[dlq] protect is not set, and {why}: a dead letter keeps its record as it was before the plugin that rejected it (for a source's reject, the raw input, unmasked). Choose how letters are kept: protect = {CHOICES}"
                ));
            }
            Protect::Raw
        }
    };
    if raw.key_secret.is_some() && !matches!(protect, Protect::Encrypt { .. }) {
        problems.push("[dlq] key_secret applies to protect = \"encrypt\" only".into());
    }
    protect
}

#[allow(clippy::too_many_arguments)]
fn validate_stage(
    kind: Kind,
    index: usize,
    raw: RawStage,
    base: &Path,
    text: &str,
    secrets: &BTreeMap<String, SecretSource>,
    on_error: OnError,
    problems: &mut Vec<String>,
) -> Option<Stage> {
    let at = format!(
        "line {}: [[{kind}]] #{}",
        line_of(text, raw.plugin.span().start),
        index + 1
    );
    let before = problems.len();
    let plugin_text = raw.plugin.get_ref().trim().to_string();
    let plugin = if let Some(name) = plugin_text.strip_prefix("builtin:") {
        if raw.sha256.is_some() {
            problems.push(format!(
                "{at}: `sha256` pins plugin files; built-in plugins need none"
            ));
        }
        if crate::plugin::builtin_bytes(kind, name).is_none() {
            let available = crate::plugin::builtin_names(kind)
                .iter()
                .map(|n| format!("builtin:{n}"))
                .collect::<Vec<_>>()
                .join(", ");
            problems.push(format!(
                "{at}: unknown plugin `{plugin_text}`; built-in {kind} plugins are: {available}, or give the path of a .wasm file with its sha256"
            ));
        }
        PluginRef::Builtin(name.to_string())
    } else {
        let path = resolve(base, &plugin_text);
        match &raw.sha256 {
            Some(sha) if sha.len() == 64 && sha.chars().all(|c| c.is_ascii_hexdigit()) => {
                PluginRef::File {
                    path,
                    sha256: sha.to_ascii_lowercase(),
                }
            }
            Some(sha) => {
                problems.push(format!(
                    "{at}: sha256 = {sha:?} is not 64 hexadecimal digits"
                ));
                PluginRef::File {
                    path,
                    sha256: sha.clone(),
                }
            }
            None => {
                let hint = std::fs::read(&path)
                    .map(|b| {
                        format!(
                            " (this file's is sha256 = \"{}\")",
                            crate::plugin::sha256_hex(&b)
                        )
                    })
                    .unwrap_or_default();
                problems.push(format!(
                    "{at}: plugin `{plugin_text}` must be pinned with `sha256 = \"<64 hex digits>\"`{hint}"
                ));
                PluginRef::File {
                    path,
                    sha256: String::new(),
                }
            }
        }
    };
    let name = raw.name.clone().unwrap_or_else(|| match &plugin {
        PluginRef::Builtin(n) => n.clone(),
        PluginRef::File { path, .. } => path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| kind.to_string()),
    });

    let mut fs = Vec::new();
    for grant in &raw.fs {
        let (dir, writable) = match grant.strip_suffix(":rw") {
            Some(dir) => (dir, true),
            None => (grant.strip_suffix(":ro").unwrap_or(grant), false),
        };
        if dir.is_empty() {
            problems.push(format!("{at}: fs grant {grant:?} names no directory; write \"DIR\" (read-only) or \"DIR:rw\""));
            continue;
        }
        let host_path = resolve(base, dir);
        if !writable && !host_path.is_dir() {
            problems.push(format!(
                "{at}: fs grant {grant:?}: directory {} does not exist",
                host_path.display()
            ));
        }
        fs.push(FsGrant {
            host_path,
            guest_path: dir.to_string(),
            writable,
        });
    }
    let mut net = Vec::new();
    for grant in &raw.net {
        match parse_net_grant(grant) {
            Some(g) => net.push(g),
            None => problems.push(format!(
                "{at}: net grant {grant:?} is not `host:port`; write e.g. \"db.internal:5432\", \"127.0.0.1:4222\" or \"[::1]:6379\""
            )),
        }
    }
    let mut http = Vec::new();
    for grant in &raw.http {
        match crate::http_grant::HttpGrant::parse(grant) {
            Ok(prefix) => http.push(prefix),
            Err(why) => problems.push(format!(
                "{at}: http grant {grant:?} is refused: {why}; write a URL prefix, e.g. \"https://api.example.com/v1/\" or \"http://127.0.0.1:8080/\""
            )),
        }
    }
    let mut env = Vec::new();
    for name in &raw.env {
        if name.is_empty() || name.contains(['=', '\0']) {
            problems.push(format!("{at}: env grant {name:?} is not a variable name"));
            continue;
        }
        match std::env::var(name) {
            Ok(value) => env.push((name.clone(), value)),
            Err(_) => problems.push(format!(
                "{at}: env grant `{name}`: the variable is not set (or not UTF-8) in the host's environment"
            )),
        }
    }
    for secret in &raw.secrets {
        if !secrets.contains_key(secret) {
            let known: Vec<&str> = secrets.keys().map(String::as_str).collect();
            problems.push(format!(
                "{at}: secret `{secret}` is granted but not defined; add `[secrets] {secret} = {{ env = \"VARIABLE\" }}`{}",
                if known.is_empty() { String::new() } else { format!(" (defined: {})", known.join(", ")) }
            ));
        }
    }
    let mut limits = Limits::default();
    if let Some(memory) = raw.memory {
        if memory.0 < (1 << 20) {
            problems.push(format!(
                "{at}: memory = {} bytes is too small; give at least 1MiB",
                memory.0
            ));
        }
        limits.memory_bytes = memory.0 as usize;
    }
    if let Some(deadline) = raw.deadline {
        limits.call_timeout = deadline.0;
    }
    if let Some(fuel) = raw.fuel {
        if fuel == 0 {
            problems.push(format!("{at}: fuel = 0 lets no call run; give a positive number of units (about one per instruction)"));
        }
        limits.fuel = Some(fuel);
    }
    if let Some(max) = raw.max_batch {
        if max.0 < 1024 {
            problems.push(format!(
                "{at}: max_batch = {} bytes is too small; give at least 1KiB",
                max.0
            ));
        }
        limits.max_batch_bytes = max.0 as usize;
    }
    if kind != Kind::Source && raw.batch_rows.is_some() {
        problems.push(format!("{at}: `batch_rows` applies to sources only"));
    }
    if kind != Kind::Source && raw.readers.is_some() {
        problems.push(format!("{at}: `readers` applies to sources only"));
    }
    let listen = match &raw.listen {
        None => None,
        Some(_) if kind != Kind::Source => {
            problems.push(format!("{at}: `listen` applies to sources only"));
            None
        }
        Some(text) => match text.trim().parse::<std::net::SocketAddr>() {
            Ok(addr) if addr.port() > 0 => Some(addr),
            _ => {
                problems.push(format!(
                    "{at}: listen = {text:?} is not `ip:port`; write e.g. \"127.0.0.1:8088\" or \"0.0.0.0:8088\""
                ));
                None
            }
        },
    };
    if let Some(n) = raw.readers {
        if !(1..=MAX_READERS).contains(&n) {
            problems.push(format!(
                "{at}: readers = {n}; give 1 to {MAX_READERS} (instances reading splits at once)"
            ));
        }
    }
    if kind != Kind::Sink && (raw.write_mode.is_some() || raw.primary_key.is_some()) {
        problems.push(format!(
            "{at}: `write_mode` and `primary_key` apply to sinks only"
        ));
    }
    let write_mode = match raw.write_mode.as_deref().unwrap_or("append") {
        "append" => WriteMode::Append,
        // `replace` is the word database users know for it.
        "overwrite" | "replace" => WriteMode::Overwrite,
        "upsert" => match &raw.primary_key {
            Some(key) if !key.is_empty() => WriteMode::Upsert(key.clone()),
            _ => {
                problems.push(format!(
                    "{at}: write_mode = \"upsert\" needs `primary_key = [\"column\", ...]`"
                ));
                WriteMode::Append
            }
        },
        other => {
            problems.push(format!(
                "{at}: write_mode = {other:?}; accepted: append, overwrite (or replace), upsert"
            ));
            WriteMode::Append
        }
    };
    let (config_json, config_span) = match &raw.config {
        Some(table) => (
            serde_json::to_string(table.get_ref()).expect("TOML values render as JSON"),
            Some(table.span()),
        ),
        None => ("{}".to_string(), None),
    };
    if problems.len() > before {
        return None;
    }
    Some(Stage {
        kind,
        name,
        plugin,
        config_json,
        config_span,
        fs,
        net,
        http,
        listen,
        env,
        secrets: raw.secrets,
        limits,
        on_error: raw.on_error.unwrap_or(on_error),
        batch_rows: raw.batch_rows.unwrap_or(65_536).max(1),
        readers: raw.readers.unwrap_or(1),
        write_mode,
    })
}

/// `host:port` with a port from 1 to 65535; IPv6 addresses in brackets.
fn parse_net_grant(text: &str) -> Option<NetGrant> {
    let (host, port) = text.trim().rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty()
        || host.contains(['/', ' ', '[', ']'])
        || (host.contains(':') && !text.starts_with('['))
    {
        return None;
    }
    Some(NetGrant {
        host: host.to_string(),
        port,
    })
}

/// Where a key named in a plugin's error message sits in the pipeline file: the line of
/// `key` within the `config` table of the `kind` stage named `stage` (at any depth, first
/// in document order), from the spans the TOML parser reports.
pub fn locate_config_key(text: &str, kind: Kind, stage: &str, key: &str) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    fn get<'t, 'i>(table: &'t DeTable<'i>, key: &str) -> Option<&'t DeValue<'i>> {
        table
            .iter()
            .find(|(k, _)| k.get_ref() == key)
            .map(|(_, v)| v.get_ref())
    }
    fn find(table: &DeTable<'_>, key: &str) -> Option<usize> {
        table.iter().find_map(|(k, v)| {
            if k.get_ref() == key {
                return Some(k.span().start);
            }
            match v.get_ref() {
                DeValue::Table(inner) => find(inner, key),
                _ => None,
            }
        })
    }
    let document = DeTable::parse(text).ok()?;
    let DeValue::Array(stages) = get(document.get_ref(), kind.as_str())? else {
        return None;
    };
    let config = stages.iter().find_map(|s| match s.get_ref() {
        DeValue::Table(t) => match get(t, "name") {
            Some(DeValue::String(name)) if name == stage => match get(t, "config") {
                Some(DeValue::Table(config)) => Some(config),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    })?;
    find(config, key).map(|at| line_of(text, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Pipeline, ConfigError> {
        parse(Path::new("/nonexistent/pipeline.toml"), text)
    }

    const MINIMAL: &str = r#"
[pipeline]
name = "orders"

[[source]]
plugin = "builtin:file"
[source.config]
path = "data/orders.csv"

[[sink]]
plugin = "builtin:file"
fs = ["out:rw"]
"#;

    #[test]
    fn a_minimal_pipeline_gets_defaults() {
        let p = parse_str(MINIMAL).unwrap();
        assert_eq!(p.name, "orders");
        assert_eq!(p.state_dir, PathBuf::from("/nonexistent/.state"));
        assert_eq!(p.source.config_json, r#"{"path":"data/orders.csv"}"#);
        assert_eq!(p.sink.fs[0].guest_path, "out");
        assert!(p.sink.fs[0].writable);
        assert_eq!(p.retry.max_attempts, 3);
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let text = MINIMAL.replace("name = \"orders\"", "name = \"orders\"\ncolour = \"blue\"");
        let err = parse_str(&text).unwrap_err().to_string();
        assert!(err.contains("colour"), "{err}");
        assert!(err.contains("line 4"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
[pipeline]
name = "bad name"
[[source]]
plugin = "builtin:nope"
secrets = ["missing"]
[[sink]]
plugin = "plugins/x.wasm"
"#;
        let err = parse_str(text).unwrap_err();
        assert_eq!(err.problems.len(), 4, "{err}");
        let text = err.to_string();
        assert!(text.contains("unknown plugin `builtin:nope`"));
        assert!(text.contains("secret `missing`"));
        assert!(text.contains("sha256"));
        assert!(text.contains("bad name"));
    }

    #[test]
    fn net_grants_are_host_and_port() {
        let g = |s| parse_net_grant(s).map(|g| (g.host, g.port));
        assert_eq!(g("db.internal:5432"), Some(("db.internal".into(), 5432)));
        assert_eq!(g("[::1]:6379"), Some(("::1".into(), 6379)));
        assert_eq!(g("localhost"), None);
        assert_eq!(g("localhost:0"), None);
        assert_eq!(g("::1:80"), None);
        assert_eq!(g("http://x:80"), None);
    }

    #[test]
    fn sizes_and_durations_read_as_people_write_them() {
        assert_eq!(parse_bytes("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1 GB").unwrap(), 1_000_000_000);
        assert!(parse_bytes("lots").is_err());
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_duration("1m 30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_bytes("1.5 KiB").unwrap(), 1536);
        assert_eq!(parse_bytes("512").unwrap(), 512);
    }

    #[test]
    fn a_config_key_is_located_within_its_stage_table() {
        let text = "[[source]]\nname = \"a\"\nplugin = \"x\"\n[source.config]\npath = \"a\"\n\
                    \n[[source]]\nname = \"b\"\nplugin = \"x\"\n[source.config]\npath = \"b\"\n\
                    [source.config.csv]\ndelimter = \";\"\n\
                    [[sink]]\nname = \"b\"\nconfig = { path = \"out\", delimter = 1 }\n";
        assert_eq!(
            locate_config_key(text, Kind::Source, "b", "delimter"),
            Some(13)
        );
        assert_eq!(locate_config_key(text, Kind::Source, "b", "path"), Some(11));
        assert_eq!(
            locate_config_key(text, Kind::Sink, "b", "delimter"),
            Some(16)
        );
        assert_eq!(locate_config_key(text, Kind::Source, "a", "delimter"), None);
        assert_eq!(locate_config_key(text, Kind::Transform, "b", "path"), None);
    }
}

//! The config of the NATS source: what the user wrote ([`RawConfig`], whose JSON Schema is
//! the source's `spec`) and the validated form ([`SourceConfig`]).

use std::collections::BTreeMap;

use ingest_sdk::host::CheckpointPolicy;
use ingest_sdk::payload::Payload;
use ingest_sdk::{config, Error, Result};
use schemars::JsonSchema;
use serde::Deserialize;

/// The config as written in pipeline.toml.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "nats source config")]
pub struct RawConfig {
    /// The server, `host:port`; grant the same in the source's `net`.
    pub server: String,
    /// The JetStream stream to read.
    pub stream: String,
    /// The durable pull consumer this pipeline reads with (default `ingest_<stream>`). It is
    /// created again at the pipeline's committed position whenever a run starts: give each
    /// pipeline its own.
    #[serde(default)]
    pub consumer: Option<String>,
    /// Read only messages on this subject (wildcards allowed).
    #[serde(default)]
    pub filter_subject: Option<String>,
    /// What the payload becomes: `binary` (a `payload` column of bytes), `text` (UTF-8; a
    /// message that is not goes to the dead-letter queue) or `json` (an object whose fields
    /// fill the columns `columns` declares).
    #[serde(default)]
    #[schemars(extend("default" = "binary"))]
    pub payload: Option<String>,
    /// For `payload = "json"`: each column and its type (`int64`, `float64`, `boolean`,
    /// `utf8`, `timestamp`). Fields not named are dropped; a missing field is null.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// `never`: a stream that waits for new messages; `caught-up`: the run ends once no
    /// message is waiting.
    #[serde(default)]
    #[schemars(extend("default" = "never"))]
    pub until: Option<String>,
    /// Messages asked for per pull.
    #[serde(default)]
    #[schemars(range(min = 1, max = 100000), extend("default" = 1000))]
    pub batch: Option<u32>,
    /// Seconds the server waits for an acknowledgement before it delivers a message again.
    /// Messages are acknowledged once their epoch is committed, so this must exceed the
    /// epoch's time (`[checkpoint] every`, 60 s by default in batch mode) and its commit.
    #[serde(default)]
    #[schemars(range(min = 1), extend("default" = 300))]
    pub ack_wait_secs: Option<u64>,
    /// Messages delivered and not yet acknowledged at most. Reading pauses at this many
    /// until an epoch commits, so it should exceed the messages of an epoch (`[checkpoint]
    /// every_rows`, 1,000,000 by default).
    #[serde(default)]
    #[schemars(range(min = 1), extend("default" = 1000000))]
    pub max_ack_pending: Option<i64>,
    /// The name of a granted secret holding a token to authenticate with.
    #[serde(default)]
    pub token_secret: Option<String>,
    /// A user name to authenticate with (with `password_secret`).
    #[serde(default)]
    pub user: Option<String>,
    /// The name of a granted secret holding `user`'s password.
    #[serde(default)]
    pub password_secret: Option<String>,
    /// The name of the stream the pipeline sees (default: the JetStream stream's name).
    #[serde(default)]
    pub name: Option<String>,
}

/// The validated config.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub server: String,
    pub stream: String,
    pub consumer: String,
    pub filter_subject: Option<String>,
    pub payload: Payload,
    pub until_caught_up: bool,
    pub batch: usize,
    pub ack_wait_secs: u64,
    pub max_ack_pending: i64,
    pub credentials: nats_client::plugin::Credentials,
    pub name: String,
}

impl SourceConfig {
    /// Parse and check the config, reporting every problem at once.
    pub fn parse(json: &str) -> Result<SourceConfig> {
        let raw: RawConfig = config::parse(json)?;
        let mut problems = Vec::new();
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !name_ok(&raw.stream) {
            problems.push(format!(
                "`stream = {:?}`: a JetStream stream name is letters, digits, `_` and `-`",
                raw.stream
            ));
        }
        let consumer = raw
            .consumer
            .clone()
            .unwrap_or_else(|| format!("ingest_{}", raw.stream));
        if !name_ok(&consumer) {
            problems.push(format!(
                "`consumer = {consumer:?}`: a consumer name is letters, digits, `_` and `-`"
            ));
        }
        if !raw.server.contains(':') {
            problems.push(format!(
                "`server = {:?}`: give `host:port`, e.g. \"127.0.0.1:4222\"",
                raw.server
            ));
        }
        let payload = Payload::from_config(
            raw.payload.as_deref(),
            &raw.columns,
            &crate::rows::OWN_COLUMNS,
            &mut problems,
        );
        let until_caught_up = match raw.until.as_deref().unwrap_or("never") {
            "never" => false,
            "caught-up" => true,
            other => {
                problems.push(format!("`until = {other:?}`; accepted: never, caught-up"));
                false
            }
        };
        let batch = raw.batch.unwrap_or(1000);
        if batch == 0 || batch > 100_000 {
            problems.push(format!(
                "`batch = {batch}`: ask for 1 to 100000 messages a pull"
            ));
        }
        let ack_wait_secs = raw.ack_wait_secs.unwrap_or(300);
        if ack_wait_secs == 0 {
            problems.push("`ack_wait_secs = 0`: give the seconds an epoch may take at most".into());
        }
        let max_ack_pending = raw.max_ack_pending.unwrap_or(1_000_000);
        if max_ack_pending < batch as i64 {
            problems.push(format!(
                "`max_ack_pending = {max_ack_pending}` is under `batch = {batch}`: delivery would stop within one pull, since messages are acknowledged only when their epoch commits"
            ));
        }
        if raw.password_secret.is_some() && raw.user.is_none() {
            problems.push("`password_secret` needs `user`".into());
        }
        if !problems.is_empty() {
            return Err(Error::config(problems.join("; ")));
        }
        Ok(SourceConfig {
            server: raw.server,
            name: raw.name.unwrap_or_else(|| raw.stream.clone()),
            stream: raw.stream,
            consumer,
            filter_subject: raw.filter_subject,
            payload,
            until_caught_up,
            batch: batch as usize,
            ack_wait_secs,
            max_ack_pending,
            credentials: nats_client::plugin::Credentials {
                token_secret: raw.token_secret,
                user: raw.user,
                password_secret: raw.password_secret,
            },
        })
    }
}

impl SourceConfig {
    /// Check the consumer's limits against when the pipeline closes epochs. Messages are
    /// acknowledged once their epoch commits: an `ack_wait` within the epoch's time has the
    /// server deliver the epoch again before it can commit (an error); a `max_ack_pending`
    /// under the epoch's rows pauses reading until the epoch closes by time (a warning).
    pub fn check_against(&self, epochs: &CheckpointPolicy) -> Result<Option<String>> {
        let ack_wait_ms = self.ack_wait_secs.saturating_mul(1000);
        if ack_wait_ms <= epochs.every_ms {
            return Err(Error::config(format!(
                "`ack_wait_secs = {}` is not longer than an epoch ([checkpoint] every = {} ms): the server would deliver every message of an epoch again before the epoch commits and acknowledges it; give more than {} s, or close epochs sooner",
                self.ack_wait_secs,
                epochs.every_ms,
                epochs.every_ms.div_ceil(1000) * 2
            )));
        }
        let mut warnings = Vec::new();
        if ack_wait_ms < epochs.every_ms.saturating_mul(2) {
            warnings.push(format!(
                "`ack_wait_secs = {}` leaves less than an epoch's time ([checkpoint] every = {} ms) for the commit: a slow commit has messages delivered again (they are dropped by sequence, at the cost of the traffic)",
                self.ack_wait_secs, epochs.every_ms
            ));
        }
        if (self.max_ack_pending as u64) < epochs.every_rows && !epochs.streaming {
            warnings.push(format!(
                "`max_ack_pending = {}` is under an epoch's rows ([checkpoint] every_rows = {}): reading pauses at that many messages until the epoch closes by time ([checkpoint] every = {} ms)",
                self.max_ack_pending, epochs.every_rows, epochs.every_ms
            ));
        }
        Ok((!warnings.is_empty()).then(|| warnings.join("; ")))
    }
}

/// The JSON Schema of the config.
pub fn spec() -> String {
    config::spec::<RawConfig>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(json: &str) -> String {
        match SourceConfig::parse(json) {
            Err(Error::InvalidConfig(m)) => m,
            other => panic!("expected invalid-config, got {other:?}"),
        }
    }

    #[test]
    fn defaults_fill_in_what_is_not_given() {
        let c = SourceConfig::parse(r#"{"server":"127.0.0.1:4222","stream":"ORDERS"}"#).unwrap();
        assert_eq!(c.consumer, "ingest_ORDERS");
        assert_eq!(c.name, "ORDERS");
        assert_eq!(c.payload, Payload::Binary);
        assert!(!c.until_caught_up);
        assert_eq!(
            (c.batch, c.ack_wait_secs, c.max_ack_pending),
            (1000, 300, 1_000_000)
        );
    }

    #[test]
    fn an_ack_wait_within_an_epoch_is_an_error_and_a_tight_one_a_warning() {
        let policy = |every_ms, every_rows, streaming| CheckpointPolicy {
            every_rows,
            every_bytes: 256 << 20,
            every_ms,
            streaming,
        };
        let c = SourceConfig::parse(r#"{"server":"h:1","stream":"S"}"#).unwrap();
        // The defaults (300 s, 1M) fit batch mode's 60 s and 1M-row epochs.
        assert_eq!(
            c.check_against(&policy(60_000, 1_000_000, false)).unwrap(),
            None
        );
        let c = SourceConfig::parse(r#"{"server":"h:1","stream":"S","ack_wait_secs":30}"#).unwrap();
        match c.check_against(&policy(60_000, 1_000_000, false)) {
            Err(Error::InvalidConfig(m)) => assert!(
                m.contains("`ack_wait_secs = 30`") && m.contains("every = 60000 ms"),
                "{m}"
            ),
            other => panic!("expected invalid-config, got {other:?}"),
        }
        let warned = c
            .check_against(&policy(20_000, 1_000_000, false))
            .unwrap()
            .unwrap();
        assert!(warned.contains("less than an epoch's time"), "{warned}");
        let c =
            SourceConfig::parse(r#"{"server":"h:1","stream":"S","max_ack_pending":1000}"#).unwrap();
        let warned = c
            .check_against(&policy(60_000, 1_000_000, false))
            .unwrap()
            .unwrap();
        assert!(warned.contains("reading pauses"), "{warned}");
        // In stream mode epochs close every second: a pause lasts at most that long.
        assert_eq!(
            c.check_against(&policy(1000, 1_000_000, true)).unwrap(),
            None
        );
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let m = problems(
            r#"{"server":"localhost","stream":"a.b","payload":"json","until":"later","batch":10,"max_ack_pending":5}"#,
        );
        for part in [
            "host:port",
            "`stream = \"a.b\"`",
            "needs `columns`",
            "`until = \"later\"`",
            "max_ack_pending = 5",
        ] {
            assert!(m.contains(part), "{part} missing from: {m}");
        }
        let m = problems(
            r#"{"server":"h:1","stream":"S","payload":"json","columns":{"a":"int32","_seq":"int64"}}"#,
        );
        assert!(
            m.contains("`columns.a = \"int32\"`") && m.contains("`columns._seq`"),
            "{m}"
        );
        assert!(problems(r#"{"server":"h:1","stream":"S","colour":1}"#).contains("colour"));
    }
}

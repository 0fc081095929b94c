//! The config of the Postgres sink: the serde model of what the user wrote ([`RawConfig`])
//! and the validated form ([`SinkConfig`]). Every problem is reported at once; nothing
//! here talks to the server.

use ingest_sdk::{config, Result};
use postgres_client::settings::{self, Settings};
use postgres_client::sql;
use schemars::JsonSchema;
use serde::Deserialize;

/// The config as written in pipeline.toml. Its JSON Schema (the sink's `spec`) is derived
/// from it, descriptions from these comments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "postgres sink config")]
pub struct RawConfig {
    /// The server's host name or address; grant `host:port` in the sink's `net`.
    pub host: String,
    /// The server's port.
    #[serde(default)]
    #[schemars(range(min = 1, max = 65535), extend("default" = 5432))]
    pub port: Option<u16>,
    /// The role to connect as; it needs CREATE on the target schema (for the staging
    /// tables and `_ingest_epochs`).
    pub user: String,
    /// The database to write.
    pub database: String,
    /// The name of a granted secret holding the password (none for trust auth).
    #[serde(default)]
    pub password_secret: Option<String>,
    /// TLS: `disable` (the default), `require` (encrypted, any certificate) or
    /// `verify-full` (the certificate must chain to a CA in `sslrootcert` and name `host`).
    #[serde(default)]
    #[schemars(extend("enum" = ["disable", "require", "verify-full"], "default" = "disable"))]
    pub sslmode: Option<String>,
    /// For `verify-full`: a PEM file of the CA certificates to trust, in a directory the
    /// plugin's `fs` grants.
    #[serde(default)]
    pub sslrootcert: Option<String>,
    /// The target table, `table` (in `public`) or `schema.table`; by default the stream's
    /// name. Created from the stream's schema when absent.
    #[serde(default)]
    pub table: Option<String>,
    /// Names this pipeline in `_ingest_epochs`, where each committed (pipeline, stream,
    /// epoch) is recorded; by default the target table's name. Give each pipeline that
    /// writes the same table its own.
    #[serde(default)]
    pub pipeline: Option<String>,
    /// How an epoch is made durable before it is published: `prepared` (Postgres's
    /// two-phase commit, `PREPARE TRANSACTION`: the rows are written once; needs
    /// `max_prepared_transactions` > 0 on the server), `staging` (a staging table per
    /// epoch, merged at commit: works on any server, writes the rows twice), or `auto`
    /// (the default: `prepared` where the server allows it).
    #[serde(default)]
    #[schemars(extend("enum" = ["auto", "prepared", "staging"], "default" = "auto"))]
    pub commit: Option<String>,
    /// Under `commit = "prepared"`, an upsert (or a stream with `_op`) is sent to the
    /// target in chunks of at most this many rows while the epoch is still being read,
    /// so the server's work overlaps the reading. An upsert without `_op` into a target
    /// whose key is indexed deletes each chunk's keys through the index and copies the
    /// chunk's last row per key straight into the target; streams with `_op` merge a work
    /// table every this many rows, and an upsert into a target without such an index
    /// merges its work table once, at `prepare`.
    #[serde(default)]
    #[schemars(range(min = 1), extend("default" = 100000))]
    pub merge_rows: Option<u64>,
}

/// How epochs are staged and published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitProtocol {
    /// Decide at `open`: prepared where the server allows prepared transactions.
    Auto,
    /// Rows go into the target (or an unlogged work table) inside a transaction that
    /// `prepare` makes durable with `PREPARE TRANSACTION`, and `commit` commits.
    Prepared,
    /// Rows go into a staging table; `commit` merges it in one transaction.
    Staging,
}

/// The validated config.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub settings: Settings,
    /// The target as (schema, table), when the config names it.
    pub table: Option<(String, String)>,
    pub pipeline: Option<String>,
    pub commit: CommitProtocol,
    /// Rows merged per chunk within an epoch (prepared protocol).
    pub merge_rows: u64,
}

/// Rows of an epoch merged per chunk when the config does not say.
pub const DEFAULT_MERGE_ROWS: u64 = 100_000;

impl SinkConfig {
    /// Parse and validate the JSON config.
    pub fn parse(json: &str) -> Result<SinkConfig> {
        let raw: RawConfig = config::parse(json)?;
        let mut problems = Vec::new();
        let tls = settings::tls(
            raw.sslmode.as_deref(),
            raw.sslrootcert.as_deref(),
            &mut problems,
        );
        let settings = Settings {
            host: raw.host,
            port: raw.port.unwrap_or(settings::DEFAULT_PORT),
            user: raw.user,
            database: raw.database,
            password_secret: raw.password_secret,
            tls,
        };
        settings.validate(&mut problems);
        let table = match raw.table.as_deref() {
            None => None,
            Some(t) => match sql::split_qualified(t) {
                Some(parts) => Some(parts),
                None => {
                    problems.push(format!("`table = {t:?}` is not `table` or `schema.table`"));
                    None
                }
            },
        };
        if raw.pipeline.as_deref().is_some_and(|p| p.trim().is_empty()) {
            problems.push("`pipeline` is empty; leave it out to use the table's name".into());
        }
        let commit = match raw.commit.as_deref() {
            None | Some("auto") => CommitProtocol::Auto,
            Some("prepared") => CommitProtocol::Prepared,
            Some("staging") => CommitProtocol::Staging,
            Some(other) => {
                problems.push(format!(
                    "`commit = {other:?}`; accepted: auto, prepared, staging"
                ));
                CommitProtocol::Auto
            }
        };
        if raw.merge_rows == Some(0) {
            problems.push("`merge_rows = 0`; it needs at least 1 row".into());
        }
        settings::problems_to_error(problems)?;
        Ok(SinkConfig {
            settings,
            table,
            pipeline: raw.pipeline,
            commit,
            merge_rows: raw.merge_rows.unwrap_or(DEFAULT_MERGE_ROWS),
        })
    }

    /// The target of `stream`: the configured table, else the stream's name.
    pub fn target(&self, stream: &str) -> Result<(String, String)> {
        match &self.table {
            Some(t) => Ok(t.clone()),
            None => sql::split_qualified(stream).ok_or_else(|| {
                ingest_sdk::Error::config(format!(
                    "stream `{stream}` is not a table name; set `table` in the sink's config"
                ))
            }),
        }
    }
}

/// The JSON Schema of the config.
pub fn spec() -> String {
    ingest_sdk::config::spec::<RawConfig>()
}

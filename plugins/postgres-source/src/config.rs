//! The config of the Postgres source: the serde model of what the user wrote
//! ([`RawConfig`]) and the validated form ([`SourceConfig`]). Every problem is reported at
//! once; nothing here talks to the server.

use std::collections::BTreeMap;

use ingest_sdk::{config, Result};
use postgres_client::settings::{self, Settings};
use postgres_client::types::UnknownTypes;

use crate::cdc::CdcOptions;
use schemars::JsonSchema;
use serde::Deserialize;

/// The config as written in pipeline.toml. Its JSON Schema (the source's `spec`) is
/// derived from it, descriptions from these comments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "postgres source config")]
pub struct RawConfig {
    /// The server's host name or address; grant `host:port` in the source's `net`.
    pub host: String,
    /// The server's port.
    #[serde(default)]
    #[schemars(range(min = 1, max = 65535), extend("default" = 5432))]
    pub port: Option<u16>,
    /// The role to connect as.
    pub user: String,
    /// The database to read.
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
    /// Tables to read, as globs over `schema.table` (`*` and `?`; a bare name is in
    /// `public`). Each table is a stream named like the table (`schema.table` outside
    /// `public`).
    #[serde(default)]
    pub tables: Vec<String>,
    /// Streams defined by a query.
    #[serde(default)]
    pub queries: Vec<RawQuery>,
    /// Per-stream options, by stream name.
    #[serde(default)]
    pub streams: BTreeMap<String, RawStream>,
    /// What to do with a column of a type that has no Arrow mapping: `error` (default)
    /// or `text` (read its text form, with a warning).
    #[serde(default)]
    #[schemars(extend("enum" = ["error", "text"], "default" = "error"))]
    pub unknown_types: Option<String>,
    /// Full-refresh tables with a primary key are split into ranges of the key's first
    /// column of about this many rows (by the planner's estimate), so that the source's
    /// `readers` read them in parallel, all from one snapshot; 0 reads every table as
    /// one split.
    #[serde(default)]
    #[schemars(extend("default" = 1000000))]
    pub split_rows: Option<u64>,
}

/// A stream defined by a query.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawQuery {
    /// The stream's name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// A SELECT statement; incremental reads wrap it as a subquery.
    #[schemars(length(min = 1))]
    pub sql: String,
}

/// How one stream is read.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStream {
    /// `full_refresh` (every run reads everything; the default), `incremental` (only
    /// rows whose cursor is at or past the last committed value) or `cdc` (a snapshot,
    /// then every change, through logical replication; tables only, in stream mode).
    #[serde(default)]
    #[schemars(extend("enum" = ["full_refresh", "incremental", "cdc"], "default" = "full_refresh"))]
    pub sync: Option<String>,
    /// For `cdc`: the logical replication slot the stream owns (created with its first
    /// snapshot). Lowercase letters, digits and `_`.
    #[serde(default)]
    pub slot: Option<String>,
    /// For `cdc`: the publication that publishes the table (`CREATE PUBLICATION … FOR
    /// TABLE …`).
    #[serde(default)]
    pub publication: Option<String>,
    /// The column whose growth marks new rows; needed for `incremental`.
    #[serde(default)]
    pub cursor: Option<String>,
    /// The columns that identify a row; read from the catalog for tables when not given.
    #[serde(default)]
    pub primary_key: Option<Vec<String>>,
}

/// How a stream is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    FullRefresh,
    Incremental,
    /// Change data capture through a logical replication slot.
    Cdc,
}

/// Validated per-stream options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOptions {
    pub sync: Sync,
    pub cursor: Option<String>,
    pub primary_key: Option<Vec<String>>,
    /// For `cdc`: its slot and publication.
    pub cdc: Option<CdcOptions>,
}

/// A stream defined by a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub name: String,
    pub sql: String,
}

/// The validated config.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub settings: Settings,
    pub tables: Vec<String>,
    pub queries: Vec<Query>,
    pub streams: BTreeMap<String, StreamOptions>,
    pub unknown_types: UnknownTypes,
    /// Rows per key-range split of a full-refresh table (0: no splits).
    pub split_rows: u64,
}

/// The default of `split_rows`.
pub const SPLIT_ROWS: u64 = 1_000_000;

impl SourceConfig {
    /// Parse and validate the JSON config.
    pub fn parse(json: &str) -> Result<SourceConfig> {
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
        if raw.tables.is_empty() && raw.queries.is_empty() {
            problems.push(
                "no streams: give `tables = [\"schema.table\", \"schema.*\"]` or `[[queries]]`"
                    .into(),
            );
        }
        for t in &raw.tables {
            if postgres_client::sql::split_qualified(t).is_none() {
                problems.push(format!(
                    "`tables` entry {t:?} is not `table` or `schema.table`"
                ));
            }
        }
        let mut queries = Vec::new();
        for q in raw.queries {
            if q.name.trim().is_empty() || q.sql.trim().is_empty() {
                problems.push("a `[[queries]]` entry needs a `name` and an `sql`".into());
            } else if queries.iter().any(|x: &Query| x.name == q.name) {
                problems.push(format!("two queries are named {:?}", q.name));
            } else {
                queries.push(Query {
                    name: q.name,
                    sql: q.sql.trim().trim_end_matches(';').to_string(),
                });
            }
        }
        let mut streams = BTreeMap::new();
        for (name, s) in raw.streams {
            let sync = match s.sync.as_deref() {
                None | Some("full_refresh") => Sync::FullRefresh,
                Some("incremental") => Sync::Incremental,
                Some("cdc") => Sync::Cdc,
                Some(other) => {
                    problems.push(format!(
                        "streams.{name}.sync = {other:?}; accepted: full_refresh, incremental, cdc"
                    ));
                    Sync::FullRefresh
                }
            };
            let cdc = match (sync, s.slot, s.publication) {
                (Sync::Cdc, Some(slot), Some(publication)) => {
                    let valid = !slot.is_empty()
                        && slot.len() <= 63
                        && slot
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                    if !valid {
                        problems.push(format!(
                            "streams.{name}.slot = {slot:?}; a slot name is 1 to 63 lowercase letters, digits and `_`"
                        ));
                    }
                    Some(CdcOptions { slot, publication })
                }
                (Sync::Cdc, slot, publication) => {
                    for (key, given) in [
                        ("slot", slot.is_some()),
                        ("publication", publication.is_some()),
                    ] {
                        if !given {
                            problems
                                .push(format!("streams.{name}: `sync = \"cdc\"` needs a `{key}`"));
                        }
                    }
                    None
                }
                (_, slot, publication) => {
                    if slot.is_some() || publication.is_some() {
                        problems.push(format!(
                            "streams.{name}: `slot` and `publication` are for `sync = \"cdc\"`"
                        ));
                    }
                    None
                }
            };
            if sync == Sync::Incremental && s.cursor.is_none() {
                problems.push(format!(
                    "streams.{name}: `sync = \"incremental\"` needs a `cursor` column"
                ));
            }
            if s.primary_key.as_ref().is_some_and(Vec::is_empty) {
                problems.push(format!(
                    "streams.{name}.primary_key is empty; leave it out to read it from the catalog"
                ));
            }
            streams.insert(
                name,
                StreamOptions {
                    sync,
                    cursor: s.cursor,
                    primary_key: s.primary_key,
                    cdc,
                },
            );
        }
        let unknown_types = match raw.unknown_types.as_deref() {
            None | Some("error") => UnknownTypes::Error,
            Some("text") => UnknownTypes::Text,
            Some(other) => {
                problems.push(format!("unknown_types = {other:?}; accepted: error, text"));
                UnknownTypes::Error
            }
        };
        settings::problems_to_error(problems)?;
        Ok(SourceConfig {
            settings,
            tables: raw.tables,
            queries,
            streams,
            unknown_types,
            split_rows: raw.split_rows.unwrap_or(SPLIT_ROWS),
        })
    }

    /// The options of stream `name` (defaults when the config gives none).
    pub fn options(&self, name: &str) -> StreamOptions {
        self.streams.get(name).cloned().unwrap_or(StreamOptions {
            sync: Sync::FullRefresh,
            cursor: None,
            primary_key: None,
            cdc: None,
        })
    }
}

/// The JSON Schema of the config.
pub fn spec() -> String {
    ingest_sdk::config::spec::<RawConfig>()
}

pub use ingest_sdk::resume::glob_match;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_reported_at_once() {
        let e = SourceConfig::parse(
            r#"{"host":"","user":"u","database":"d","sslmode":"verify-full",
                "streams":{"t":{"sync":"incremental"}},"unknown_types":"drop"}"#,
        )
        .unwrap_err()
        .to_string();
        for part in [
            "`host` is empty",
            "no streams",
            "needs a `cursor`",
            "unknown_types = \"drop\"",
            "needs `sslrootcert`",
        ] {
            assert!(e.contains(part), "{part} missing from {e}");
        }
    }
}

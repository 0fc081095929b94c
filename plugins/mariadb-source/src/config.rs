//! The config of the MariaDB source: the serde model of what the user wrote
//! ([`RawConfig`]) and the validated form ([`SourceConfig`]). Every problem is reported at
//! once; nothing here talks to the server.

use std::collections::BTreeMap;

use ingest_sdk::{config, Error, Result};
use mysql_client::ConnectParams;
use schemars::JsonSchema;
use serde::Deserialize;

/// The server's port unless the config gives one.
pub const DEFAULT_PORT: u16 = 3306;

/// The config as written in pipeline.toml. Its JSON Schema (the source's `spec`) is
/// derived from it, descriptions from these comments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "mariadb source config")]
pub struct RawConfig {
    /// The server's host name or address; grant `host:port` in the source's `net`.
    pub host: String,
    /// The server's port.
    #[serde(default)]
    #[schemars(range(min = 1, max = 65535), extend("default" = 3306))]
    pub port: Option<u16>,
    /// The user to connect as. Reading tables needs SELECT; `cdc` streams also need
    /// REPLICATION SLAVE and REPLICATION CLIENT (BINLOG MONITOR on MariaDB 10.5+).
    pub user: String,
    /// The database (schema) that bare table names are in.
    pub database: String,
    /// The name of a granted secret holding the password (none for a user without one).
    #[serde(default)]
    pub password_secret: Option<String>,
    /// Tables to read, as globs over `database.table` (`*` and `?`; a bare name is in
    /// `database`). Each table is a stream named like the table (`database.table` outside
    /// `database`).
    #[serde(default)]
    pub tables: Vec<String>,
    /// Streams defined by a query.
    #[serde(default)]
    pub queries: Vec<RawQuery>,
    /// Per-stream options, by stream name.
    #[serde(default)]
    pub streams: BTreeMap<String, RawStream>,
}

/// A stream defined by a query.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawQuery {
    /// The stream's name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// A SELECT statement; reads wrap it as a derived table.
    #[schemars(length(min = 1))]
    pub sql: String,
}

/// How one stream is read.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStream {
    /// `full_refresh` (every run reads everything; the default), `incremental` (only
    /// rows whose cursor is at or past the last committed value) or `cdc` (a snapshot,
    /// then every change, from the binary log; tables only, in stream mode).
    #[serde(default)]
    #[schemars(extend("enum" = ["full_refresh", "incremental", "cdc"], "default" = "full_refresh"))]
    pub sync: Option<String>,
    /// For `cdc`: the server id the stream registers as a replica with, unique among the
    /// server's replicas (a second replica with the same id takes the first one's place).
    #[serde(default)]
    #[schemars(range(min = 1, max = 4294967295u32))]
    pub server_id: Option<u32>,
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
    /// Change data capture from the binary log, as a replica.
    Cdc {
        server_id: u32,
    },
}

/// Validated per-stream options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOptions {
    pub sync: Sync,
    pub cursor: Option<String>,
    pub primary_key: Option<Vec<String>>,
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
    pub host: String,
    pub port: u16,
    pub user: String,
    pub database: String,
    pub password_secret: Option<String>,
    pub tables: Vec<String>,
    pub queries: Vec<Query>,
    pub streams: BTreeMap<String, StreamOptions>,
}

impl SourceConfig {
    /// Parse and validate the JSON config.
    pub fn parse(json: &str) -> Result<SourceConfig> {
        let raw: RawConfig = config::parse(json)?;
        let mut problems = Vec::new();
        if raw.host.is_empty() {
            problems.push("`host` is empty; give the server's name or address".to_string());
        }
        if raw.user.is_empty() {
            problems.push("`user` is empty".into());
        }
        if raw.database.is_empty() {
            problems.push("`database` is empty; give the database bare table names are in".into());
        }
        if raw.port == Some(0) {
            problems.push(format!("`port` is 0; the default is {DEFAULT_PORT}"));
        }
        if raw.tables.is_empty() && raw.queries.is_empty() {
            problems.push(
                "no streams: give `tables = [\"table\", \"database.*\"]` or `[[queries]]`".into(),
            );
        }
        for t in &raw.tables {
            if split_qualified(t, &raw.database).is_none() {
                problems.push(format!(
                    "`tables` entry {t:?} is not `table` or `database.table`"
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
            let sync = match (s.sync.as_deref(), s.server_id) {
                (None | Some("full_refresh"), None) => Sync::FullRefresh,
                (Some("incremental"), None) => Sync::Incremental,
                (Some("cdc"), Some(0)) => {
                    problems.push(format!(
                        "streams.{name}.server_id is 0, which no replica may have; give 1 to 4294967295"
                    ));
                    Sync::FullRefresh
                }
                (Some("cdc"), Some(server_id)) => Sync::Cdc { server_id },
                (Some("cdc"), None) => {
                    problems.push(format!(
                        "streams.{name}: `sync = \"cdc\"` needs a `server_id`, the replica id the stream registers with (unique among the server's replicas)"
                    ));
                    Sync::FullRefresh
                }
                (None | Some("full_refresh" | "incremental"), Some(_)) => {
                    problems.push(format!(
                        "streams.{name}: `server_id` is for `sync = \"cdc\"`"
                    ));
                    Sync::FullRefresh
                }
                (Some(other), _) => {
                    problems.push(format!(
                        "streams.{name}.sync = {other:?}; accepted: full_refresh, incremental, cdc"
                    ));
                    Sync::FullRefresh
                }
            };
            if s.sync.as_deref() == Some("incremental") && s.cursor.is_none() {
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
                },
            );
        }
        if !problems.is_empty() {
            return Err(Error::config(problems.join("; ")));
        }
        Ok(SourceConfig {
            host: raw.host,
            port: raw.port.unwrap_or(DEFAULT_PORT),
            user: raw.user,
            database: raw.database,
            password_secret: raw.password_secret,
            tables: raw.tables,
            queries,
            streams,
        })
    }

    /// The options of stream `name` (defaults when the config gives none).
    pub fn options(&self, name: &str) -> StreamOptions {
        self.streams.get(name).cloned().unwrap_or(StreamOptions {
            sync: Sync::FullRefresh,
            cursor: None,
            primary_key: None,
        })
    }

    /// Where and as whom to connect, with the password read from its granted secret.
    pub fn connect_params(&self) -> Result<ConnectParams> {
        let password = match &self.password_secret {
            Some(name) => Some(
                ingest_sdk::host::secret(name)
                    .map_err(|e| e.context(format_args!("the password secret `{name}`")))?,
            ),
            None => None,
        };
        Ok(ConnectParams {
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            password,
            database: Some(self.database.clone()),
        })
    }
}

/// `table` (in `database`) or `schema.table` as (schema, table); none when malformed.
pub fn split_qualified(name: &str, database: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = name.split('.').collect();
    match parts.as_slice() {
        [t] if !t.is_empty() => Some((database.to_string(), t.to_string())),
        [s, t] if !s.is_empty() && !t.is_empty() => Some((s.to_string(), t.to_string())),
        _ => None,
    }
}

/// The JSON Schema of the config.
pub fn spec() -> String {
    ingest_sdk::config::spec::<RawConfig>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_reported_at_once() {
        let e = SourceConfig::parse(
            r#"{"host":"","user":"u","database":"d",
                "streams":{"t":{"sync":"incremental"},"c":{"sync":"cdc"},"z":{"sync":"cdc","server_id":0},
                           "f":{"server_id":7},"x":{"sync":"log"}}}"#,
        )
        .unwrap_err()
        .to_string();
        for part in [
            "`host` is empty",
            "no streams",
            "needs a `cursor`",
            "streams.c: `sync = \"cdc\"` needs a `server_id`",
            "streams.z.server_id is 0",
            "streams.f: `server_id` is for",
            "streams.x.sync = \"log\"",
        ] {
            assert!(e.contains(part), "{part} missing from {e}");
        }
    }

    #[test]
    fn bare_table_names_are_in_the_configured_database() {
        assert_eq!(
            split_qualified("orders", "shop"),
            Some(("shop".into(), "orders".into()))
        );
        assert_eq!(
            split_qualified("sales.orders", "shop"),
            Some(("sales".into(), "orders".into()))
        );
        assert_eq!(split_qualified("a.b.c", "shop"), None);
    }
}

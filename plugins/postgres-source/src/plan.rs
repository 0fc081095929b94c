//! A stream resolved against the server: which relation it reads (a table or a query),
//! its columns with their Arrow types, its key and cursor, the COPY statement that reads
//! it from a position, and how a chunk moves the position on.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Field, Schema, SchemaRef};
use ingest_sdk::host::{log, Level};
use ingest_sdk::resume::Shape;
use ingest_sdk::source::{StreamInfo, SyncMode};
use ingest_sdk::{Error, Result};
use postgres_client::sql::{self, ident, literal};
use postgres_client::types::{self, DescribeError, PgColumn};
use postgres_client::Connection;

use crate::config::{glob_match, SourceConfig, Sync};
use crate::position::Position;
use crate::split::Descriptor;

/// One stream, resolved.
#[derive(Debug, Clone)]
pub struct StreamPlan {
    pub name: String,
    /// What the SELECT reads from: a quoted table name or a parenthesised query.
    pub relation: String,
    /// The table's schema and name, for a table stream.
    pub table: Option<(String, String)>,
    pub columns: Vec<PgColumn>,
    pub schema: SchemaRef,
    pub primary_key: Vec<String>,
    pub cursor: Option<String>,
    pub sync: Sync,
}

impl StreamPlan {
    /// The stream as `discover` reports it.
    pub fn info(self) -> StreamInfo {
        let mut modes = vec![SyncMode::FullRefresh];
        if self.cursor.is_some() || self.sync == Sync::Cdc {
            modes.push(SyncMode::Incremental);
        }
        StreamInfo {
            name: self.name,
            schema: self.schema,
            primary_key: self.primary_key,
            cursor_field: self.cursor,
            sync_modes: modes,
        }
    }

    /// The COPY statement that reads the stream (or the key range `split` describes)
    /// from `from`.
    pub fn copy_sql(&self, from: &Position, split: &Descriptor) -> String {
        let select: Vec<String> = self.columns.iter().map(PgColumn::select_expr).collect();
        let mut sql = format!("SELECT {} FROM {} AS s", select.join(", "), self.relation);
        let key: Vec<String> = self
            .primary_key
            .iter()
            .map(|k| format!("s.{}", ident(k)))
            .collect();
        match self.sync {
            Sync::Incremental => {
                let cursor = format!("s.{}", ident(self.cursor.as_deref().unwrap_or_default()));
                sql.push_str(&format!(" WHERE {cursor} IS NOT NULL"));
                if let Some(c) = &from.cursor {
                    sql.push_str(&format!(" AND {cursor} >= {}", literal(c)));
                }
                sql.push_str(&format!(" ORDER BY {cursor}"));
                for k in &key {
                    sql.push_str(&format!(", {k}"));
                }
            }
            Sync::FullRefresh if !key.is_empty() => {
                let mut conditions = Vec::new();
                let first = &key[0];
                if let Some(lower) = &split.lower {
                    conditions.push(format!("{first} >= {}", literal(lower)));
                }
                match (&split.lower, &split.upper) {
                    (None, Some(upper)) => conditions
                        .push(format!("({first} < {} OR {first} IS NULL)", literal(upper))),
                    (Some(_), Some(upper)) => {
                        conditions.push(format!("{first} < {}", literal(upper)))
                    }
                    _ => {}
                }
                if let Some(after) = &from.after {
                    let values: Vec<String> = after.iter().map(|v| literal(v)).collect();
                    conditions.push(format!("({}) > ({})", key.join(", "), values.join(", ")));
                }
                if !conditions.is_empty() {
                    sql.push_str(&format!(" WHERE {}", conditions.join(" AND ")));
                }
                sql.push_str(&format!(" ORDER BY {}", key.join(", ")));
            }
            Sync::FullRefresh | Sync::Cdc => {}
        }
        format!("COPY ({sql}) TO STDOUT (FORMAT binary)")
    }

    fn index(&self, column: &str) -> Result<usize> {
        self.schema.index_of(column).map_err(|_| {
            Error::config(format!(
                "stream `{}` has no column `{column}`; its columns: {}",
                self.name,
                self.columns
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    /// How the stream's rows are told apart and ordered, for resuming reads.
    fn shape(&self) -> Result<Shape> {
        let cursor = match (self.sync, &self.cursor) {
            (Sync::Incremental, Some(c)) => Some(self.index(c)?),
            _ => None,
        };
        let key = self
            .primary_key
            .iter()
            .map(|k| self.index(k))
            .collect::<Result<_>>()?;
        Ok(Shape {
            stream: self.name.clone(),
            cursor,
            key,
            width: self.columns.len(),
        })
    }

    /// Drop from the front of `batch` the rows delivered before at the position's cursor
    /// value (incremental streams re-read that value in case more rows arrived at it).
    pub fn drop_delivered(&self, batch: RecordBatch, from: &Position) -> Result<RecordBatch> {
        if self.sync != Sync::Incremental {
            return Ok(batch);
        }
        self.shape()?.drop_delivered(batch, from)
    }

    /// The position after `batch`, which was read from `from`.
    pub fn advance(&self, from: &Position, batch: &RecordBatch) -> Result<Position> {
        if self.sync == Sync::Cdc {
            return Ok(from.clone());
        }
        self.shape()?.advance(from, batch)
    }
}

/// The stream name of a table: `table` in `public`, else `schema.table`.
fn stream_name(schema: &str, table: &str) -> String {
    if schema == "public" {
        table.to_string()
    } else {
        format!("{schema}.{table}")
    }
}

/// The tables the config's globs match, as (schema, table), each once, in name order.
fn tables(conn: &mut Connection, cfg: &SourceConfig) -> Result<Vec<(String, String)>> {
    if cfg.tables.is_empty() {
        return Ok(Vec::new());
    }
    let rows = conn
        .query(
            "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') \
             AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
             ORDER BY 1, 2",
        )
        .map_err(|e| e.into_plugin_error("listing tables"))?;
    let all: Vec<(String, String)> = rows
        .rows
        .into_iter()
        .filter_map(|r| Some((r.first()?.clone()?, r.get(1)?.clone()?)))
        .collect();
    let mut out: Vec<(String, String)> = Vec::new();
    for pattern in &cfg.tables {
        let (schema_glob, table_glob) =
            sql::split_qualified(pattern).expect("validated by the config");
        let matched: Vec<&(String, String)> = all
            .iter()
            .filter(|(s, t)| glob_match(&schema_glob, s) && glob_match(&table_glob, t))
            .collect();
        if matched.is_empty() {
            return Err(Error::config(format!(
                "`tables` entry {pattern:?} matches no table or view in database `{}` that user `{}` can see",
                cfg.settings.database, cfg.settings.user
            )));
        }
        for m in matched {
            if !out.contains(m) {
                out.push(m.clone());
            }
        }
    }
    Ok(out)
}

/// Every stream of the config, resolved.
pub fn all(conn: &mut Connection, cfg: &SourceConfig) -> Result<Vec<StreamPlan>> {
    let mut plans = Vec::new();
    for (schema, table) in tables(conn, cfg)? {
        plans.push(table_plan(conn, cfg, &schema, &table)?);
    }
    for q in &cfg.queries {
        plans.push(build(conn, cfg, &q.name, &format!("({})", q.sql), None)?);
    }
    let names: Vec<(&str, bool)> = plans
        .iter()
        .map(|p| (p.name.as_str(), p.sync == Sync::Cdc))
        .collect();
    let configured: Vec<&str> = cfg.streams.keys().map(String::as_str).collect();
    ingest_sdk::resume::check_streams(&names, &configured)?;
    Ok(plans)
}

/// The stream named `name`, resolved.
pub fn one(conn: &mut Connection, cfg: &SourceConfig, name: &str) -> Result<StreamPlan> {
    if let Some(q) = cfg.queries.iter().find(|q| q.name == name) {
        return build(conn, cfg, &q.name, &format!("({})", q.sql), None);
    }
    for (schema, table) in tables(conn, cfg)? {
        if stream_name(&schema, &table) == name {
            return table_plan(conn, cfg, &schema, &table);
        }
    }
    Err(Error::config(format!("this source has no stream `{name}`")))
}

fn table_plan(
    conn: &mut Connection,
    cfg: &SourceConfig,
    schema: &str,
    table: &str,
) -> Result<StreamPlan> {
    let name = stream_name(schema, table);
    build(
        conn,
        cfg,
        &name,
        &sql::qualified(schema, table),
        Some((schema, table)),
    )
}

fn build(
    conn: &mut Connection,
    cfg: &SourceConfig,
    name: &str,
    relation: &str,
    table: Option<(&str, &str)>,
) -> Result<StreamPlan> {
    let (columns, unmapped) = types::describe(conn, relation, cfg.unknown_types).map_err(|e| {
        match e {
            DescribeError::Pg(e) => e.into_plugin_error(format_args!("stream `{name}`")),
            DescribeError::Unmapped(u) => Error::config(format!(
                "stream `{name}`: column `{}` has type {}, which has no Arrow mapping; set `unknown_types = \"text\"` to read it as text, or cast it in a `[[queries]]` stream",
                u.column, u.type_name
            )),
        }
    })?;
    for u in unmapped {
        log(
            Level::Warn,
            &format!(
                "stream `{name}`: column `{}` has type {}, which has no Arrow mapping; reading its text form",
                u.column, u.type_name
            ),
        );
    }
    let options = cfg.options(name);
    let primary_key = match (&options.primary_key, table) {
        (Some(k), _) => k.clone(),
        (None, Some((schema, table))) => catalog_key(conn, schema, table)?,
        (None, None) => Vec::new(),
    };
    let mut fields: Vec<Field> = columns.iter().map(|c| c.kind.field(&c.name)).collect();
    if options.sync == Sync::Cdc {
        if table.is_none() {
            return Err(Error::config(format!(
                "stream `{name}`: `sync = \"cdc\"` reads tables; a query stream has no change stream"
            )));
        }
        if primary_key.is_empty() {
            return Err(Error::config(format!(
                "stream `{name}`: `sync = \"cdc\"` needs a primary key to apply updates and deletes by; the table has none (add one, or give `primary_key`)"
            )));
        }
        let (schema_name, table_name) = table.expect("checked above");
        let identity = conn
            .query(&format!(
                "SELECT relreplident FROM pg_catalog.pg_class WHERE oid = to_regclass({})",
                literal(&sql::qualified(schema_name, table_name))
            ))
            .map_err(|e| {
                e.into_plugin_error(format_args!("stream `{name}`: its replica identity"))
            })?;
        // Under REPLICA IDENTITY FULL the server sends whole old rows: the stream carries
        // them as a before-image.
        let before = (identity.scalar() == Some("f")).then(|| fields.clone());
        for f in crate::cdc::meta_fields(before) {
            if columns.iter().any(|c| &c.name == f.name()) {
                return Err(Error::config(format!(
                    "stream `{name}`: the table has a column `{}`, which a CDC stream adds itself",
                    f.name()
                )));
            }
            fields.push(f);
        }
    }
    let schema = Arc::new(Schema::new(fields));
    let plan = StreamPlan {
        name: name.to_string(),
        relation: relation.to_string(),
        table: table.map(|(s, t)| (s.to_string(), t.to_string())),
        columns,
        schema,
        primary_key,
        cursor: options.cursor.clone(),
        sync: options.sync,
    };
    for k in &plan.primary_key {
        plan.index(k)
            .map_err(|e| e.context("the primary key names a missing column"))?;
    }
    if let Some(c) = &plan.cursor {
        plan.index(c)
            .map_err(|e| e.context("the cursor names a missing column"))?;
    }
    Ok(plan)
}

/// The primary key of `schema.table` from the catalog, in key order; empty without one.
fn catalog_key(conn: &mut Connection, schema: &str, table: &str) -> Result<Vec<String>> {
    let rows = conn
        .query(&format!(
            "SELECT a.attname FROM pg_catalog.pg_index i \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = to_regclass({}) AND i.indisprimary \
             ORDER BY array_position(i.indkey::int2[], a.attnum)",
            literal(&sql::qualified(schema, table))
        ))
        .map_err(|e| e.into_plugin_error(format_args!("the primary key of {schema}.{table}")))?;
    Ok(rows
        .rows
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect())
}

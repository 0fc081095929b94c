//! A stream resolved against the server: which relation it reads (a table or a query),
//! its columns with their Arrow types, its key and cursor, the SELECT that reads it from a
//! position, and how a chunk moves the position on.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{Field, Schema, SchemaRef};
use ingest_sdk::resume::{glob_match, Position, Shape};
use ingest_sdk::source::{StreamInfo, SyncMode};
use ingest_sdk::{Error, Result};
use mysql_client::types::{self, literal, MyColumn, MyKind};
use mysql_client::Connection;

use crate::config::{split_qualified, SourceConfig, Sync};
use crate::my_error;

/// One stream, resolved.
#[derive(Debug, Clone)]
pub struct StreamPlan {
    pub name: String,
    /// What the SELECT reads from: a quoted table name or a parenthesised query.
    pub relation: String,
    /// The table's database and name, for a table stream.
    pub table: Option<(String, String)>,
    pub columns: Vec<MyColumn>,
    /// The stream's schema: the columns', then (for `cdc`) the change columns.
    pub schema: SchemaRef,
    pub primary_key: Vec<String>,
    pub cursor: Option<String>,
    pub sync: Sync,
}

impl StreamPlan {
    /// The stream as `discover` reports it.
    pub fn info(self) -> StreamInfo {
        let mut modes = vec![SyncMode::FullRefresh];
        if self.cursor.is_some() || matches!(self.sync, Sync::Cdc { .. }) {
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

    /// The SELECT list of the stream's own columns.
    pub fn select_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| format!("s.{}", ident(&c.name)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The SELECT that reads the stream from `from`: in cursor order for incremental
    /// streams, in key order for full refreshes with a key.
    pub fn select_sql(&self, from: &Position) -> Result<String> {
        let mut sql = format!("SELECT {} FROM {} AS s", self.select_list(), self.relation);
        let key: Vec<String> = self
            .primary_key
            .iter()
            .map(|k| format!("s.{}", ident(k)))
            .collect();
        match self.sync {
            Sync::Incremental => {
                let name = self.cursor.as_deref().unwrap_or_default();
                let cursor = format!("s.{}", ident(name));
                sql.push_str(&format!(" WHERE {cursor} IS NOT NULL"));
                if let Some(c) = &from.cursor {
                    let value = self.literal_of(name, c)?;
                    sql.push_str(&format!(" AND {cursor} >= {value}"));
                }
                sql.push_str(&format!(" ORDER BY {cursor}"));
                for k in &key {
                    sql.push_str(&format!(", {k}"));
                }
            }
            Sync::FullRefresh if !key.is_empty() => {
                if let Some(after) = &from.after {
                    let values = self
                        .primary_key
                        .iter()
                        .zip(after)
                        .map(|(k, v)| self.literal_of(k, v))
                        .collect::<Result<Vec<_>>>()?;
                    sql.push_str(&format!(
                        " WHERE ({}) > ({})",
                        key.join(", "),
                        values.join(", ")
                    ));
                }
                sql.push_str(&format!(" ORDER BY {}", key.join(", ")));
            }
            Sync::FullRefresh | Sync::Cdc { .. } => {}
        }
        Ok(sql)
    }

    /// The SQL literal of a key or cursor value of `column`, from the text a position
    /// keeps it as (see [`ingest_sdk::resume`]).
    fn literal_of(&self, column: &str, text: &str) -> Result<String> {
        let c = self
            .columns
            .iter()
            .find(|c| c.name == column)
            .ok_or_else(|| self.missing(column))?;
        Ok(match c.kind {
            MyKind::Int { .. } | MyKind::Float | MyKind::Double | MyKind::Decimal { .. } => {
                let numeric = !text.is_empty()
                    && text.bytes().all(|b| {
                        b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E')
                    });
                if !numeric {
                    return Err(Error::fatal(format!(
                        "stream `{}`: the stored position holds {text:?} for numeric column `{column}`; reset the state to read the stream again",
                        self.name
                    )));
                }
                text.to_string()
            }
            MyKind::Date | MyKind::DateTime | MyKind::Timestamp => literal(&text.replace('T', " ")),
            MyKind::Binary if text.bytes().all(|b| b.is_ascii_hexdigit()) => format!("X'{text}'"),
            MyKind::Binary => {
                return Err(Error::fatal(format!(
                    "stream `{}`: the stored position holds {text:?} for binary column `{column}`, which is not hex; reset the state to read the stream again",
                    self.name
                )))
            }
            _ => literal(text),
        })
    }

    fn missing(&self, column: &str) -> Error {
        Error::config(format!(
            "stream `{}` has no column `{column}`; its columns: {}",
            self.name,
            self.columns
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    fn index(&self, column: &str) -> Result<usize> {
        self.columns
            .iter()
            .position(|c| c.name == column)
            .ok_or_else(|| self.missing(column))
    }

    /// How the stream's rows are told apart and ordered, for resuming reads.
    pub fn shape(&self) -> Result<Shape> {
        let cursor = match (self.sync, &self.cursor) {
            (Sync::Incremental, Some(c)) => Some(self.index(c)?),
            _ => None,
        };
        Ok(Shape {
            stream: self.name.clone(),
            cursor,
            key: self
                .primary_key
                .iter()
                .map(|k| self.index(k))
                .collect::<Result<_>>()?,
            width: self.columns.len(),
        })
    }

    /// Drop the rows an incremental read delivered before at the position's cursor value.
    pub fn drop_delivered(&self, batch: RecordBatch, from: &Position) -> Result<RecordBatch> {
        if self.sync != Sync::Incremental {
            return Ok(batch);
        }
        self.shape()?.drop_delivered(batch, from)
    }
}

/// `name` quoted as a MariaDB identifier.
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `schema`.`table`, quoted.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", ident(schema), ident(table))
}

/// The stream name of a table: `table` in the configured database, else `schema.table`.
fn stream_name(cfg: &SourceConfig, schema: &str, table: &str) -> String {
    if schema == cfg.database {
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
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys') \
             ORDER BY 1, 2",
        )
        .map_err(|e| my_error(e, "listing tables"))?;
    let all: Vec<(String, String)> = rows
        .rows
        .into_iter()
        .filter_map(|r| Some((r.first()?.clone()?, r.get(1)?.clone()?)))
        .collect();
    let mut out: Vec<(String, String)> = Vec::new();
    for pattern in &cfg.tables {
        let (schema_glob, table_glob) =
            split_qualified(pattern, &cfg.database).expect("validated by the config");
        let matched: Vec<&(String, String)> = all
            .iter()
            .filter(|(s, t)| glob_match(&schema_glob, s) && glob_match(&table_glob, t))
            .collect();
        if matched.is_empty() {
            return Err(Error::config(format!(
                "`tables` entry {pattern:?} matches no table or view that user `{}` can see (bare names are in database `{}`)",
                cfg.user, cfg.database
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
        plans.push(query_plan(conn, cfg, &q.name, &q.sql)?);
    }
    let names: Vec<(&str, bool)> = plans
        .iter()
        .map(|p| (p.name.as_str(), matches!(p.sync, Sync::Cdc { .. })))
        .collect();
    let configured: Vec<&str> = cfg.streams.keys().map(String::as_str).collect();
    ingest_sdk::resume::check_streams(&names, &configured)?;
    Ok(plans)
}

/// The stream named `name`, resolved.
pub fn one(conn: &mut Connection, cfg: &SourceConfig, name: &str) -> Result<StreamPlan> {
    if let Some(q) = cfg.queries.iter().find(|q| q.name == name) {
        return query_plan(conn, cfg, &q.name, &q.sql);
    }
    for (schema, table) in tables(conn, cfg)? {
        if stream_name(cfg, &schema, &table) == name {
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
    let name = stream_name(cfg, schema, table);
    let columns = types::describe(conn, schema, table)
        .map_err(|e| my_error(e, format_args!("stream `{name}`: describing its columns")))?;
    if columns.is_empty() {
        return Err(Error::config(format!(
            "stream `{name}`: table {schema}.{table} has no columns that user `{}` can see",
            cfg.user
        )));
    }
    let options = cfg.options(&name);
    let primary_key = match &options.primary_key {
        Some(k) => k.clone(),
        None => catalog_key(conn, schema, table)?,
    };
    build(
        cfg,
        &name,
        qualified(schema, table),
        Some((schema, table)),
        columns,
        primary_key,
    )
}

fn query_plan(
    conn: &mut Connection,
    cfg: &SourceConfig,
    name: &str,
    sql: &str,
) -> Result<StreamPlan> {
    let relation = format!("({sql})");
    let described = conn
        .query_raw(&format!("SELECT * FROM {relation} AS s LIMIT 0"))
        .map_err(|e| my_error(e, format_args!("stream `{name}`: describing its query")))?;
    let columns = described
        .columns
        .iter()
        .zip(&described.wire)
        .map(|(n, w)| MyColumn {
            name: n.clone(),
            kind: MyKind::from_wire(w),
            column_type: format!("protocol type {}", w.type_code),
        })
        .collect();
    let primary_key = cfg.options(name).primary_key.unwrap_or_default();
    build(cfg, name, relation, None, columns, primary_key)
}

fn build(
    cfg: &SourceConfig,
    name: &str,
    relation: String,
    table: Option<(&str, &str)>,
    columns: Vec<MyColumn>,
    primary_key: Vec<String>,
) -> Result<StreamPlan> {
    let options = cfg.options(name);
    let mut fields: Vec<Field> = columns
        .iter()
        .map(|c| Field::new(&c.name, c.kind.arrow_type(), true))
        .collect();
    if let Sync::Cdc { .. } = options.sync {
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
        for f in crate::cdc::meta_fields(fields.clone()) {
            if columns.iter().any(|c| &c.name == f.name()) {
                return Err(Error::config(format!(
                    "stream `{name}`: the table has a column `{}`, which a CDC stream adds itself",
                    f.name()
                )));
            }
            fields.push(f);
        }
    }
    let plan = StreamPlan {
        name: name.to_string(),
        relation,
        table: table.map(|(s, t)| (s.to_string(), t.to_string())),
        columns,
        schema: Arc::new(Schema::new(fields)),
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
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
             WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {} AND CONSTRAINT_NAME = 'PRIMARY' \
             ORDER BY ORDINAL_POSITION",
            literal(schema),
            literal(table)
        ))
        .map_err(|e| my_error(e, format_args!("the primary key of {schema}.{table}")))?;
    Ok(rows
        .rows
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(sync: Sync, cursor: Option<&str>) -> StreamPlan {
        let column = |name: &str, kind: MyKind| MyColumn {
            name: name.into(),
            kind,
            column_type: String::new(),
        };
        let columns = vec![
            column(
                "id",
                MyKind::Int {
                    bits: 64,
                    unsigned: true,
                },
            ),
            column("tag", MyKind::Binary),
            column("placed", MyKind::DateTime),
            column("note", MyKind::Text),
        ];
        StreamPlan {
            name: "orders".into(),
            relation: qualified("shop", "orders"),
            table: Some(("shop".into(), "orders".into())),
            schema: types::schema(&columns),
            columns,
            primary_key: vec!["id".into(), "tag".into()],
            cursor: cursor.map(str::to_string),
            sync,
        }
    }

    #[test]
    fn positions_become_literals_of_each_column_type() {
        let from = Position {
            cursor: Some("2026-12-01T05:00:00".into()),
            ..Position::default()
        };
        let sql = plan(Sync::Incremental, Some("placed"))
            .select_sql(&from)
            .unwrap();
        assert!(
            sql.ends_with("WHERE s.`placed` IS NOT NULL AND s.`placed` >= '2026-12-01 05:00:00' ORDER BY s.`placed`, s.`id`, s.`tag`"),
            "{sql}"
        );
        let from = Position {
            after: Some(vec!["18446744073709551615".into(), "00ff".into()]),
            ..Position::default()
        };
        let sql = plan(Sync::FullRefresh, None).select_sql(&from).unwrap();
        assert!(
            sql.ends_with("WHERE (s.`id`, s.`tag`) > (18446744073709551615, X'00ff') ORDER BY s.`id`, s.`tag`"),
            "{sql}"
        );
        // A number that is not one is never pasted into SQL.
        let from = Position {
            after: Some(vec!["1) OR (1".into(), "00".into()]),
            ..Position::default()
        };
        assert!(plan(Sync::FullRefresh, None).select_sql(&from).is_err());
    }
}

//! The target table of a stream and the staging tables of its epochs: creating the target
//! from the stream's schema (or adding the columns the stream gained), the column types
//! rows are written as, and the life of staging tables (created per epoch, marked when
//! prepared, dropped when committed or aborted).

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, FixedSizeBinaryArray, RecordBatch, StringArray};
use arrow_cast::cast;
use arrow_schema::DataType;
use ingest_sdk::sink::WriteMode;
use ingest_sdk::source::StreamInfo;
use ingest_sdk::{Error, Reject, Result};
use postgres_client::copy::Encoder;
use postgres_client::nonce;
use postgres_client::sql::{ident, literal, qualified};
use postgres_client::types::{self, DescribeError, PgKind, UnknownTypes};
use postgres_client::Connection;

use crate::config::SinkConfig;

/// The column of a stream that says what a row does (`delete` deletes its key).
pub const OP_COLUMN: &str = "_op";
/// A change stream's before-image of the row (REPLICA IDENTITY FULL), left out of the table.
pub const BEFORE_COLUMN: &str = "_before";
/// The staging table's column for the operation.
const STAGE_OP: &str = "_ingest_op";
/// The staging table's column for the row's number in the epoch (last row per key wins).
pub const STAGE_ROW: &str = "_ingest_row";
/// The table that records committed epochs, in the target's schema.
pub const EPOCHS_TABLE: &str = "_ingest_epochs";

/// A column the sink writes.
#[derive(Debug, Clone)]
pub struct WriteColumn {
    /// Its index in the stream's batches.
    pub index: usize,
    pub name: String,
    pub kind: PgKind,
    /// The target column's type as `format_type` writes it.
    pub type_sql: String,
    /// The target column is NOT NULL.
    pub not_null: bool,
}

/// A stream's target, resolved at `open`.
#[derive(Debug, Clone)]
pub struct Target {
    pub stream: String,
    pub schema: String,
    pub table: String,
    /// The pipeline's name in `_ingest_epochs`.
    pub pipeline: String,
    /// Under `overwrite`: the table the run replaces; `table` is then the shadow table
    /// the run fills.
    pub replaces: Option<String>,
    /// The target checks rows against constraints this sink cannot foresee (CHECK,
    /// foreign keys, unique keys besides the primary key): each batch is merged on its
    /// own, so that the rows it refuses can be told apart and rejected.
    pub guarded: bool,
    pub columns: Vec<WriteColumn>,
    /// The index of the stream's `_op` column, when it has one.
    pub op: Option<usize>,
    /// The upsert key.
    pub key: Vec<String>,
    /// A valid, non-partial index of the target starts with the key's columns: merging
    /// a chunk probes it for the keys the chunk carries instead of scanning the table.
    pub key_indexed: bool,
    /// Identifies this (table, pipeline, stream) in staging-table and transaction names.
    hash: String,
    /// Every staging table of this target and stream starts with it.
    prefix: String,
    /// Encodes rows for a staging table: the columns, `_op` when the stream has it.
    encoder: Encoder,
    /// Encodes rows for the target itself: the columns only.
    direct: Encoder,
    names: Vec<String>,
    /// The key's columns, as indexes into `columns`.
    key_columns: Vec<usize>,
    /// Encodes the key's columns alone (the rows of a key table).
    key_encoder: Encoder,
}

impl Target {
    /// Resolve the target of `stream`, creating it or adding columns as needed.
    pub fn open(
        conn: &mut Connection,
        cfg: &SinkConfig,
        stream: &StreamInfo,
        mode: &WriteMode,
    ) -> Result<Target> {
        let (schema, table) = cfg.target(&stream.name)?;
        let pipeline = cfg
            .pipeline
            .clone()
            .unwrap_or_else(|| format!("{schema}.{table}"));
        let at = format!(
            "postgres sink, stream `{}`, table {schema}.{table}",
            stream.name
        );
        let fail = |what: &str| {
            let at = format!("{at}: {what}");
            move |e: postgres_client::PgError| e.into_plugin_error(&at)
        };
        let key = match mode {
            WriteMode::Upsert(key) => key.clone(),
            _ => Vec::new(),
        };
        let fields = stream.schema.fields();
        for k in &key {
            if fields.iter().all(|f| f.name() != k) {
                return Err(Error::config(format!(
                    "{at}: the upsert key `{k}` is not a column of the stream"
                )));
            }
        }
        let op = fields.iter().position(|f| f.name() == OP_COLUMN);
        // A change stream's before-image describes the change, not the row: it is not
        // written into the table.
        let written: Vec<usize> = (0..fields.len())
            .filter(|i| Some(*i) != op && fields[*i].name() != BEFORE_COLUMN)
            .collect();

        conn.query(&format!(
            "CREATE TABLE IF NOT EXISTS {} (pipeline text NOT NULL, stream text NOT NULL, \
             epoch bigint NOT NULL, nonce text NOT NULL, rows bigint NOT NULL, \
             committed_at timestamptz NOT NULL DEFAULT now(), \
             PRIMARY KEY (pipeline, stream, epoch))",
            qualified(&schema, EPOCHS_TABLE)
        ))
        .or_else(ignore_duplicate)
        .map_err(fail("creating _ingest_epochs"))?;

        let target = qualified(&schema, &table);
        let exists = conn
            .query(&format!(
                "SELECT to_regclass({}) IS NOT NULL",
                literal(&target)
            ))
            .map_err(fail("looking up the table"))?;
        if exists.scalar() != Some("t") {
            let mut columns = Vec::new();
            for i in &written {
                let f = &fields[*i];
                let kind = PgKind::for_arrow(f).ok_or_else(|| {
                    Error::config(format!(
                        "{at}: column `{}` is {}, which has no Postgres column type; cast it in a transform",
                        f.name(),
                        f.data_type()
                    ))
                })?;
                columns.push(format!("{} {}", ident(f.name()), kind.ddl()));
            }
            if !key.is_empty() {
                let key: Vec<String> = key.iter().map(|k| ident(k)).collect();
                columns.push(format!("PRIMARY KEY ({})", key.join(", ")));
            }
            conn.query(&format!(
                "CREATE TABLE IF NOT EXISTS {target} ({})",
                columns.join(", ")
            ))
            .or_else(ignore_duplicate)
            .map_err(fail("creating the table"))?;
        }

        let existing = target_columns(conn, &target).map_err(fail("reading its columns"))?;
        for i in &written {
            let f = &fields[*i];
            if existing.contains_key(f.name()) {
                continue;
            }
            let kind = PgKind::for_arrow(f).ok_or_else(|| {
                Error::config(format!(
                    "{at}: new column `{}` is {}, which has no Postgres column type",
                    f.name(),
                    f.data_type()
                ))
            })?;
            conn.query(&format!(
                "ALTER TABLE {target} ADD COLUMN IF NOT EXISTS {} {}",
                ident(f.name()),
                kind.ddl()
            ))
            .map_err(fail("adding a column"))?;
        }
        let existing = target_columns(conn, &target).map_err(fail("reading its columns"))?;
        // The primary key is left out: an upsert deletes a key before inserting it, and
        // an append of a key already present is the pipeline's mistake (fails the epoch)
        // rather than a bad row; checking every batch would cost appends their speed.
        let guarded = conn
            .query(&format!(
                "SELECT count(*) FROM pg_catalog.pg_constraint WHERE conrelid = to_regclass({}) \
                 AND contype IN ('c', 'f', 'u', 'x')",
                literal(&target)
            ))
            .map_err(fail("reading its constraints"))?
            .scalar()
            != Some("0");
        let key_indexed = !key.is_empty()
            && conn
                .query(&key_index_sql(&target, &key))
                .map_err(fail("reading its indexes"))?
                .scalar()
                != Some("0");
        let (described, _) =
            types::describe(conn, &target, UnknownTypes::Text).map_err(|e| match e {
                DescribeError::Pg(e) => e.into_plugin_error(&at),
                DescribeError::Unmapped(u) => Error::config(format!("{at}: {}", u.column)),
            })?;
        let mut columns = Vec::new();
        for i in written {
            let name = fields[i].name();
            let column = described.iter().find(|c| c.name == *name);
            let (Some(column), Some((type_sql, not_null))) = (column, existing.get(name)) else {
                return Err(Error::fatal(format!("{at}: column `{name}` is missing")));
            };
            if column.as_text {
                return Err(Error::config(format!(
                    "{at}: column `{name}` has type {type_sql}, which this sink cannot write; \
                     write into a column of a mapped type (see docs/plugins.md)"
                )));
            }
            columns.push(WriteColumn {
                index: i,
                name: name.clone(),
                kind: column.kind.clone(),
                type_sql: type_sql.clone(),
                not_null: *not_null,
            });
        }
        let key_columns: Vec<usize> = key
            .iter()
            .filter_map(|k| columns.iter().position(|c| c.name == *k))
            .collect();
        let key_encoder = Encoder::new(
            key_columns
                .iter()
                .map(|i| columns[*i].kind.clone())
                .collect(),
        );
        let mut kinds: Vec<PgKind> = columns.iter().map(|c| c.kind.clone()).collect();
        let direct = Encoder::new(kinds.clone());
        let mut names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
        if op.is_some() {
            kinds.push(PgKind::Text);
            names.push(STAGE_OP.into());
        }
        let hash = format!(
            "{:016x}",
            fnv1a(&format!(
                "{schema}\u{0}{table}\u{0}{pipeline}\u{0}{}",
                stream.name
            ))
        );
        let prefix = format!("_ingest_stage_{hash}_");
        Ok(Target {
            stream: stream.name.clone(),
            schema,
            table,
            pipeline,
            replaces: None,
            guarded,
            columns,
            op,
            key,
            key_indexed,
            hash,
            prefix,
            encoder: Encoder::new(kinds),
            direct,
            names,
            key_columns,
            key_encoder,
        })
    }

    /// Write into the shadow table that replaces this one at the stream's last epoch.
    pub fn write_into_shadow(&mut self) {
        let shadow = crate::replace::shadow_name(&self.table);
        self.replaces = Some(std::mem::replace(&mut self.table, shadow));
    }

    /// `schema.table` (the table written to, under `overwrite` the one replaced), for
    /// messages and the run summary.
    pub fn display(&self) -> String {
        format!(
            "{}.{}",
            self.schema,
            self.replaces.as_deref().unwrap_or(&self.table)
        )
    }

    /// The target, quoted.
    pub fn sql(&self) -> String {
        qualified(&self.schema, &self.table)
    }

    /// The epochs table, quoted.
    pub fn epochs_sql(&self) -> String {
        qualified(&self.schema, EPOCHS_TABLE)
    }

    /// A staging table `name`, quoted.
    pub fn stage_sql(&self, name: &str) -> String {
        qualified(&self.schema, name)
    }

    /// Whether the stream carries an `_op` column.
    pub fn has_op(&self) -> bool {
        self.op.is_some()
    }

    /// The staging table's operation column.
    pub fn stage_op(&self) -> &'static str {
        STAGE_OP
    }

    /// Create a new, empty staging table (unlogged for a work table that lives only inside
    /// one transaction); returns its name.
    pub fn create_stage(&self, conn: &mut Connection, unlogged: bool) -> Result<String> {
        let name = format!("{}{}", self.prefix, nonce(conn.backend_pid));
        let mut columns: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("{} {}", ident(&c.name), c.type_sql))
            .collect();
        if self.op.is_some() {
            columns.push(format!("{} text", ident(STAGE_OP)));
        }
        columns.push(format!("{} bigint NOT NULL", ident(STAGE_ROW)));
        conn.query(&format!(
            "CREATE {}TABLE {} ({})",
            if unlogged { "UNLOGGED " } else { "" },
            self.stage_sql(&name),
            columns.join(", ")
        ))
        .map_err(|e| {
            e.into_plugin_error(format_args!(
                "postgres sink, stream `{}`: creating staging table {name}",
                self.stream
            ))
        })?;
        Ok(name)
    }

    /// The COPY that fills staging table `name`.
    pub fn copy_sql(&self, name: &str) -> String {
        let mut columns: Vec<String> = self.names.iter().map(|n| ident(n)).collect();
        columns.push(ident(STAGE_ROW));
        format!(
            "COPY {} ({}) FROM STDIN (FORMAT binary)",
            self.stage_sql(name),
            columns.join(", ")
        )
    }

    /// Create a new, empty, unlogged table for the keys of an upsert's chunk (it lives
    /// inside one transaction); returns its name.
    pub fn create_key_table(&self, conn: &mut Connection) -> Result<String> {
        let name = format!("{}k{}", self.prefix, nonce(conn.backend_pid));
        let columns: Vec<String> = self
            .key_columns
            .iter()
            .map(|i| {
                let c = &self.columns[*i];
                format!("{} {}", ident(&c.name), c.type_sql)
            })
            .collect();
        conn.query(&format!(
            "CREATE UNLOGGED TABLE {} ({})",
            self.stage_sql(&name),
            columns.join(", ")
        ))
        .map_err(|e| {
            e.into_plugin_error(format_args!(
                "postgres sink, stream `{}`: creating key table {name}",
                self.stream
            ))
        })?;
        Ok(name)
    }

    /// The COPY that fills key table `name`.
    pub fn copy_keys_sql(&self, name: &str) -> String {
        let columns: Vec<String> = self
            .key_columns
            .iter()
            .map(|i| ident(&self.columns[*i].name))
            .collect();
        format!(
            "COPY {} ({}) FROM STDIN (FORMAT binary)",
            self.stage_sql(name),
            columns.join(", ")
        )
    }

    /// The DELETE of the target's rows whose key is in key table `name`.
    pub fn delete_keys_sql(&self, name: &str) -> String {
        let matches: Vec<String> = self
            .key_columns
            .iter()
            .map(|i| {
                let k = ident(&self.columns[*i].name);
                format!("t.{k} = k.{k}")
            })
            .collect();
        format!(
            "DELETE FROM {} AS t USING {} AS k WHERE {}",
            self.sql(),
            self.stage_sql(name),
            matches.join(" AND ")
        )
    }

    /// Append the key columns of `batch` as binary COPY rows to `out`.
    pub fn encode_keys(&self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<()> {
        let mut arrays = Vec::with_capacity(self.key_columns.len());
        let mut names = Vec::with_capacity(self.key_columns.len());
        for i in &self.key_columns {
            let c = &self.columns[*i];
            arrays.push(self.conformed(batch, c)?);
            names.push(c.name.clone());
        }
        self.key_encoder
            .encode(&names, &arrays, None, out)
            .map_err(|e| Error::data(format!("postgres sink, stream `{}`: {e}", self.stream)))
    }

    /// The values of `batch`'s `_op` column as text, when the stream has one.
    fn ops(&self, batch: &RecordBatch) -> Result<Option<ArrayRef>> {
        let Some(op) = self.op else {
            return Ok(None);
        };
        cast(batch.column(op), &DataType::Utf8)
            .map(Some)
            .map_err(|e| {
                Error::data(format!(
                    "postgres sink, stream `{}`, column `{OP_COLUMN}`: {e}",
                    self.stream
                ))
            })
    }

    /// Column `c` of `batch` as the Arrow type its values are written from.
    fn conformed(&self, batch: &RecordBatch, c: &WriteColumn) -> Result<ArrayRef> {
        conform(batch.column(c.index), &c.kind).map_err(|m| {
            Error::data(format!(
                "postgres sink, stream `{}`, column `{}` ({}): {m}",
                self.stream, c.name, c.type_sql
            ))
        })
    }

    /// The COPY that writes the stream's columns straight into the target (a stream
    /// without `_op`).
    pub fn copy_target_sql(&self) -> String {
        let columns: Vec<String> = self.columns.iter().map(|c| ident(&c.name)).collect();
        format!(
            "COPY {} ({}) FROM STDIN (FORMAT binary)",
            self.sql(),
            columns.join(", ")
        )
    }

    /// The rows of `batch` the target refuses: NULL in a column it declares NOT NULL,
    /// each with the database's own words. Found before anything is sent.
    pub fn refused(&self, batch: &RecordBatch) -> Vec<Reject> {
        let mut refused: Vec<Reject> = Vec::new();
        let mut seen = vec![false; batch.num_rows()];
        // A delete carries only its key: its other columns are not values to check.
        if let Some(ops) = self.op.and_then(|i| batch.column(i).as_string_opt::<i32>()) {
            for (row, done) in seen.iter_mut().enumerate() {
                *done = ops.is_valid(row) && ops.value(row) == "delete";
            }
        }
        for c in self.columns.iter().filter(|c| c.not_null) {
            let column = batch.column(c.index);
            if column.null_count() == 0 {
                continue;
            }
            for (row, done) in seen.iter_mut().enumerate() {
                if column.is_null(row) && !*done {
                    *done = true;
                    refused.push(Reject::row(
                        row,
                        format!(
                            "null value in column \"{}\" of relation \"{}\" violates not-null constraint",
                            c.name,
                            self.replaces.as_deref().unwrap_or(&self.table)
                        ),
                    ));
                }
            }
        }
        refused.sort_by_key(|r| r.row);
        refused
    }

    /// The name of the prepared transaction of `epoch`.
    pub fn transaction_id(&self, epoch: u64, nonce: &str) -> String {
        format!("ingest_{}_{epoch}_{nonce}", self.hash)
    }

    /// Roll back this stream's prepared transactions of `epoch` and later (never recorded
    /// by the host, so never to be committed).
    pub fn roll_back_prepared_from(&self, conn: &mut Connection, epoch: u64) -> Result<()> {
        let prefix = format!("ingest_{}_", self.hash);
        let fail = |e: postgres_client::PgError| {
            e.into_plugin_error(format_args!(
                "postgres sink, stream `{}`: rolling back prepared transactions",
                self.stream
            ))
        };
        let rows = conn
            .query(&format!(
                "SELECT gid FROM pg_catalog.pg_prepared_xacts \
                 WHERE database = current_database() AND left(gid, {}) = {}",
                prefix.len(),
                literal(&prefix)
            ))
            .map_err(fail)?;
        for gid in rows
            .rows
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
        {
            let of: Option<u64> = gid[prefix.len()..]
                .split('_')
                .next()
                .and_then(|e| e.parse().ok());
            if of.is_some_and(|e| e >= epoch) {
                conn.query(&format!("ROLLBACK PREPARED {}", literal(&gid)))
                    .map_err(fail)?;
            }
        }
        Ok(())
    }

    /// Append `batch` as binary COPY rows to `out`, each followed by its number in the
    /// epoch when `numbers` are given (rows bound for a staging table).
    pub fn encode(
        &self,
        batch: &RecordBatch,
        numbers: Option<&[i64]>,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let mut arrays = Vec::with_capacity(self.names.len());
        for c in &self.columns {
            arrays.push(self.conformed(batch, c)?);
        }
        if numbers.is_some() {
            arrays.extend(self.ops(batch)?);
        }
        let encoder = match numbers {
            Some(_) => &self.encoder,
            None => &self.direct,
        };
        encoder
            .encode(&self.names[..arrays.len()], &arrays, numbers, out)
            .map_err(|e| Error::data(format!("postgres sink, stream `{}`: {e}", self.stream)))
    }

    /// Mark staging table `name` as holding prepared epoch `epoch`.
    pub fn mark_prepared(&self, conn: &mut Connection, name: &str, epoch: u64) -> Result<()> {
        conn.query(&format!(
            "COMMENT ON TABLE {} IS {}",
            self.stage_sql(name),
            literal(&prepared_comment(epoch))
        ))
        .map_err(|e| {
            e.into_plugin_error(format_args!(
                "postgres sink, stream `{}`: marking {name} prepared",
                self.stream
            ))
        })?;
        Ok(())
    }

    /// Drop staging table `name`, if it is there.
    pub fn drop_stage(&self, conn: &mut Connection, name: &str) -> Result<()> {
        conn.query(&format!("DROP TABLE IF EXISTS {}", self.stage_sql(name)))
            .map_err(|e| {
                e.into_plugin_error(format_args!(
                    "postgres sink, stream `{}`: dropping {name}",
                    self.stream
                ))
            })?;
        Ok(())
    }

    /// Drop this stream's staging tables that were never prepared (left by a writer that
    /// stopped mid-epoch), and those prepared for `epoch` when given (an aborted epoch).
    pub fn drop_unprepared_and(&self, conn: &mut Connection, epoch: Option<u64>) -> Result<()> {
        let rows = conn
            .query(&format!(
                "SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = {} AND c.relkind = 'r' AND left(c.relname, {}) = {}",
                literal(&self.schema),
                self.prefix.len(),
                literal(&self.prefix)
            ))
            .map_err(|e| {
                e.into_plugin_error(format_args!(
                    "postgres sink, stream `{}`: listing staging tables",
                    self.stream
                ))
            })?;
        let aborted = epoch.map(prepared_comment);
        for row in rows.rows {
            let (Some(Some(name)), comment) = (row.first(), row.get(1).cloned().flatten()) else {
                continue;
            };
            if comment.is_none() || comment == aborted {
                self.drop_stage(conn, name)?;
            }
        }
        Ok(())
    }
}

fn prepared_comment(epoch: u64) -> String {
    format!("prepared epoch {epoch}")
}

/// Counts the valid, non-partial indexes of `target` whose leading columns are the
/// columns of `key`, in any order.
fn key_index_sql(target: &str, key: &[String]) -> String {
    let names: Vec<String> = key.iter().map(|k| literal(k)).collect();
    format!(
        "SELECT count(*) FROM pg_catalog.pg_index i WHERE i.indrelid = to_regclass({}) \
         AND i.indisvalid AND i.indpred IS NULL AND i.indnkeyatts >= {n} \
         AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text) FROM pg_catalog.pg_attribute a \
              WHERE a.attrelid = i.indrelid AND a.attnum = ANY ((i.indkey::int2[])[0:{last}])) \
             = (SELECT array_agg(k ORDER BY k) FROM unnest(ARRAY[{}]::text[]) AS k)",
        literal(target),
        names.join(", "),
        n = key.len(),
        last = key.len() - 1,
    )
}

fn fnv1a(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A concurrent `CREATE … IF NOT EXISTS` can still collide in the catalog; the object
/// is there either way.
fn ignore_duplicate(
    e: postgres_client::PgError,
) -> Result<postgres_client::Rows, postgres_client::PgError> {
    match e.code() {
        Some("23505" | "42P07" | "42710") => Ok(Default::default()),
        _ => Err(e),
    }
}

/// The target's columns: name → (type as `format_type` writes it, NOT NULL).
fn target_columns(
    conn: &mut Connection,
    target: &str,
) -> Result<HashMap<String, (String, bool)>, postgres_client::PgError> {
    let rows = conn.query(&format!(
        "SELECT attname, format_type(atttypid, atttypmod), attnotnull \
         FROM pg_catalog.pg_attribute WHERE attrelid = to_regclass({}) \
         AND attnum > 0 AND NOT attisdropped",
        literal(target)
    ))?;
    Ok(rows
        .rows
        .into_iter()
        .filter_map(|r| {
            let mut r = r.into_iter();
            let name = r.next()??;
            let ty = r.next()??;
            let not_null = r.next()?? == "t";
            Some((name, (ty, not_null)))
        })
        .collect())
}

/// `array` as the Arrow type values of `kind` are written from.
fn conform(array: &ArrayRef, kind: &PgKind) -> Result<ArrayRef, String> {
    let want = kind.arrow_type();
    let have = array.data_type();
    let same = match (&want, have) {
        (DataType::Timestamp(u1, _), DataType::Timestamp(u2, _)) => u1 == u2,
        (DataType::List(a), DataType::List(b)) => a.data_type() == b.data_type(),
        (a, b) => a == b,
    };
    if same {
        return Ok(array.clone());
    }
    if *kind == PgKind::Uuid {
        let text = cast(array, &DataType::Utf8).map_err(|e| e.to_string())?;
        return uuids(
            text.as_any()
                .downcast_ref::<StringArray>()
                .expect("cast to Utf8"),
        );
    }
    cast(array, &want).map_err(|e| format!("cannot write {have} as {}: {e}", kind.ddl()))
}

/// Parse uuid text (with or without hyphens, any case) into 16-byte values.
fn uuids(text: &StringArray) -> Result<ArrayRef, String> {
    let mut values: Vec<Option<[u8; 16]>> = Vec::with_capacity(text.len());
    for v in text.iter() {
        let Some(v) = v else {
            values.push(None);
            continue;
        };
        let hex: String = v.chars().filter(|c| *c != '-').collect();
        let bad = || format!("{v:?} is not a uuid");
        if hex.len() != 32 {
            return Err(bad());
        }
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        values.push(Some(out));
    }
    let array = FixedSizeBinaryArray::try_from_sparse_iter_with_size(
        values.iter().map(|v| v.as_ref().map(|b| b.as_slice())),
        16,
    )
    .map_err(|e| e.to_string())?;
    Ok(Arc::new(array))
}

//! The built-in `postgres` source: tables (by glob) and named queries as streams, read with
//! `COPY (SELECT …) TO STDOUT (FORMAT binary)` over the plugin's `net` grant and decoded
//! straight into Arrow batches.
//!
//! - `full_refresh` streams are read whole every run. With a primary key they are read in
//!   key order, and a run that stopped part-way resumes after the last committed key;
//!   without one, an interrupted read starts again from the first row.
//! - `incremental` streams read rows whose cursor is at or past the last committed cursor
//!   value, in cursor order, and drop the rows already delivered at exactly that value (by
//!   primary key, or by the whole row when the stream has none). Many rows sharing a
//!   cursor value, and a read interrupted in the middle of them, lose and repeat nothing.
//!   Rows whose cursor is NULL are not read incrementally.
//!
//! - `cdc` streams read a table's snapshot, then its changes, through a logical
//!   replication slot ([`cdc`]).
//!
//! [`plan`] resolves a stream (its relation, columns and key) from the config and the
//! catalog; [`position`] is what a chunk leaves behind to resume from.

pub mod cdc;
pub mod config;
pub mod plan;
pub mod position;
pub mod split;

use arrow_schema::SchemaRef;
use ingest_sdk::source::{Chunk, Reader, Source, Split, StreamInfo, SyncMode};
use ingest_sdk::{Error, Result};
use postgres_client::copy::Decoder;
use postgres_client::{Connection, PgError};

use crate::cdc::CdcReader;
use crate::config::{SourceConfig, Sync};
use crate::plan::StreamPlan;
use crate::position::Position;

/// COPY data one chunk takes in at most, whatever `max_rows` allows, so that wide rows
/// make smaller batches and memory stays flat.
const MAX_CHUNK_BYTES: usize = 8 << 20;

/// The `application_name` the source's sessions show in `pg_stat_activity`.
const APPLICATION: &str = "ingest-postgres-source";

pub struct PostgresSource;

impl Source for PostgresSource {
    type Reader = PostgresReader;

    fn spec() -> String {
        config::spec()
    }

    fn check(config: &str) -> Result<()> {
        let cfg = SourceConfig::parse(config)?;
        let mut conn = cfg.settings.connect(APPLICATION)?;
        plan::all(&mut conn, &cfg)?;
        conn.close();
        Ok(())
    }

    fn discover(config: &str) -> Result<Vec<StreamInfo>> {
        let cfg = SourceConfig::parse(config)?;
        let mut conn = cfg.settings.connect(APPLICATION)?;
        let plans = plan::all(&mut conn, &cfg)?;
        conn.close();
        Ok(plans.into_iter().map(StreamPlan::info).collect())
    }

    fn splits(config: &str, stream: &str) -> Result<Vec<Split>> {
        let cfg = SourceConfig::parse(config)?;
        let mut conn = cfg.settings.connect(APPLICATION)?;
        let plan = plan::one(&mut conn, &cfg, stream)?;
        let splits = split::plan(&mut conn, &cfg, &plan)?;
        if splits.len() > 1 {
            split::keep_exporter(conn);
        } else {
            conn.close();
        }
        Ok(splits)
    }

    fn open(
        config: &str,
        stream: &str,
        split: Split,
        position: Option<Vec<u8>>,
    ) -> Result<PostgresReader> {
        let cfg = SourceConfig::parse(config)?;
        let descriptor = split::Descriptor::decode(stream, &split.descriptor)?;
        let mut conn = cfg.settings.connect(APPLICATION)?;
        let plan = plan::one(&mut conn, &cfg, stream)?;
        if let Some(options) = cfg.options(stream).cdc {
            conn.close();
            let reader = CdcReader::open(plan, &cfg.settings, options, position.as_deref())?;
            return Ok(PostgresReader::Cdc(Box::new(reader)));
        }
        let start = match &position {
            Some(bytes) => Position::decode(bytes).map_err(|e| {
                Error::fatal(format!(
                    "stream `{stream}`: the stored position is unreadable ({e}); remove the state directory to read the stream again"
                ))
            })?,
            None => Position::default(),
        };
        let this_plan = (!descriptor.plan.is_empty()).then(|| descriptor.plan.clone());
        let start = match plan.sync {
            // A split this plan finished (a resumed run) has nothing more to read.
            Sync::FullRefresh if start.done && start.plan.is_some() && start.plan == this_plan => {
                conn.close();
                return Ok(PostgresReader::Copy(Box::new(CopyReader {
                    decoder: Decoder::new(&[]),
                    schema: plan.schema.clone(),
                    plan,
                    conn: None,
                    position: start,
                    finished: true,
                })));
            }
            _ => start.start_of(stream, plan.sync == Sync::FullRefresh),
        };
        let mut start = start;
        if plan.sync == Sync::FullRefresh {
            start.plan = this_plan;
        }
        if descriptor.is_range() {
            split::begin(&mut conn, stream, &descriptor)?;
        }
        let sql = plan.copy_sql(&start, &descriptor);
        conn.copy_out_start(&sql)
            .map_err(|e| e.into_plugin_error(format_args!("stream `{stream}`: {sql}")))?;
        let columns: Vec<_> = plan
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.kind.clone()))
            .collect();
        Ok(PostgresReader::Copy(Box::new(CopyReader {
            decoder: Decoder::new(&columns),
            schema: plan.schema.clone(),
            plan,
            conn: Some(conn),
            position: start,
            finished: false,
        })))
    }
}

/// Reads one split: a COPY of rows, or a table's changes.
pub enum PostgresReader {
    Copy(Box<CopyReader>),
    Cdc(Box<CdcReader>),
}

impl Reader for PostgresReader {
    fn next(&mut self, max_rows: usize) -> Result<Option<Chunk>> {
        match self {
            PostgresReader::Copy(r) => r.next(max_rows),
            PostgresReader::Cdc(r) => r.next(max_rows),
        }
    }

    fn ack(&mut self, position: &[u8]) {
        if let PostgresReader::Cdc(r) = self {
            r.ack(position);
        }
    }
}

/// Reads one stream's COPY, a chunk at a time.
pub struct CopyReader {
    plan: StreamPlan,
    schema: SchemaRef,
    conn: Option<Connection>,
    decoder: Decoder,
    /// Where the rows handed out so far end.
    position: Position,
    finished: bool,
}

impl CopyReader {
    fn next(&mut self, max_rows: usize) -> Result<Option<Chunk>> {
        if self.finished {
            return Ok(None);
        }
        let stream = self.plan.name.clone();
        let Some(conn) = self.conn.as_mut() else {
            return Ok(None);
        };
        let complete = read_copy_chunk(conn, &mut self.decoder, max_rows, &stream)?;
        if complete && !self.decoder.is_finished() {
            return Err(Error::Transient {
                message: format!("stream `{stream}`: the COPY ended without its trailer"),
                retry_after_ms: None,
            });
        }
        let batch = self
            .decoder
            .finish(self.schema.clone())
            .map_err(|e| Error::fatal(format!("stream `{stream}`: {e}")))?;
        let batch = self.plan.drop_delivered(batch, &self.position)?;
        self.position = self.plan.advance(&self.position, &batch)?;
        if complete {
            self.finished = true;
            self.position.done = self.plan.sync == Sync::FullRefresh;
            if let Some(conn) = self.conn.take() {
                conn.close();
            }
        }
        Ok(Some(Chunk {
            batch,
            position: self.position.encode(),
            rejects: Vec::new(),
        }))
    }
}

/// Decode the next rows of a running `COPY … TO STDOUT` into `decoder`: up to `max_rows`
/// rows or [`MAX_CHUNK_BYTES`] of data. Returns true once the COPY is complete.
pub(crate) fn read_copy_chunk(
    conn: &mut Connection,
    decoder: &mut Decoder,
    max_rows: usize,
    stream: &str,
) -> Result<bool> {
    let mut taken = 0;
    let mut decode_error = None;
    while decoder.rows() < max_rows && taken < MAX_CHUNK_BYTES {
        let more = conn
            .copy_out_next(256 << 10, &mut |data| {
                taken += data.len();
                decoder.push(data).map_err(|e| {
                    decode_error = Some(e);
                    PgError::Protocol("undecodable COPY data".into())
                })
            })
            .map_err(|e| match decode_error.take() {
                Some(d) => Error::data(format!("stream `{stream}`: {d}")),
                None => e.into_plugin_error(format_args!("stream `{stream}`")),
            })?;
        if !more {
            return Ok(true);
        }
    }
    Ok(false)
}

impl From<&Sync> for SyncMode {
    fn from(s: &Sync) -> SyncMode {
        match s {
            Sync::FullRefresh => SyncMode::FullRefresh,
            Sync::Incremental | Sync::Cdc => SyncMode::Incremental,
        }
    }
}

// Exported only in the component: the export names are not valid symbols for a native
// shared library, and the native build exists for the unit tests.
#[cfg(target_arch = "wasm32")]
ingest_sdk::export_source!(PostgresSource);

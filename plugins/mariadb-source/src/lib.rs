//! The built-in `mariadb` source: MariaDB (and MySQL) tables, by glob, and named queries as
//! streams, read over the plugin's `net` grant with the text protocol and turned into
//! Arrow batches; and a table's changes, read from the binary log as a replica ([`cdc`]).
//!
//! - `full_refresh` streams are read whole every run. With a primary key they are read in
//!   key order, and a run that stopped part-way resumes after the last committed key;
//!   without one, an interrupted read starts again from the first row.
//! - `incremental` streams read rows whose cursor is at or past the last committed cursor
//!   value, in cursor order, and drop the rows already delivered at exactly that value (by
//!   primary key, or by the whole row when the stream has none): see
//!   [`ingest_sdk::resume`].
//! - `cdc` streams read a table's snapshot, then its changes from the binary log.
//!
//! Sessions run in UTC (`time_zone = '+00:00'`), so TIMESTAMP values are read as the
//! instants they are; DATETIME values are wall-clock times without a zone.

pub mod cdc;
pub mod config;
pub mod plan;

use std::fmt::Display;

use ingest_sdk::resume::Position;
use ingest_sdk::source::{Chunk, Reader, Source, Split, StreamInfo};
use ingest_sdk::{Error, Result};
use mysql_client::{Connection, MyError, RawRows};

use crate::cdc::CdcReader;
use crate::config::{SourceConfig, Sync};
use crate::plan::StreamPlan;

/// Result data one chunk takes in at most, whatever `max_rows` allows, so that wide rows
/// make smaller batches and memory stays flat.
const MAX_CHUNK_BYTES: usize = 8 << 20;

/// Rows read from the socket between checks of the chunk's size.
const READ_STEP: usize = 1024;

pub struct MariadbSource;

/// Open a session of `cfg` for reading: UTC, and patient with a reader that the host's
/// backpressure holds back.
pub fn connect(cfg: &SourceConfig) -> Result<Connection> {
    let params = cfg.connect_params()?;
    let at = format!(
        "mariadb {} (database `{}`, user `{}`)",
        params.address(),
        cfg.database,
        cfg.user
    );
    let mut conn = Connection::connect(&params).map_err(|e| my_error(e, &at))?;
    conn.query("SET time_zone = '+00:00', SESSION net_write_timeout = 3600, SESSION net_read_timeout = 3600")
        .map_err(|e| my_error(e, &at))?;
    Ok(conn)
}

/// A client error as the host should treat it: lost connections and lock conflicts are
/// retried, refused credentials and privileges are access errors, unknown databases,
/// tables and columns are config errors.
pub fn my_error(e: MyError, context: impl Display) -> Error {
    let message = format!("{context}: {e}");
    match &e {
        MyError::Connect { source, .. }
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            Error::AccessDenied(message)
        }
        MyError::Connect { .. } | MyError::Io(_) => Error::Transient {
            message,
            retry_after_ms: None,
        },
        MyError::Auth(_) => Error::AccessDenied(message),
        MyError::Server { code, .. } => match code {
            1044 | 1045 | 1142 | 1143 | 1227 | 1698 => Error::AccessDenied(message),
            1049 | 1054 | 1146 => Error::InvalidConfig(message),
            // Lock wait timeout, deadlock, connection killed, server shutting down,
            // too many connections.
            1205 | 1213 | 1927 | 1053 | 1040 | 2006 | 2013 => Error::Transient {
                message,
                retry_after_ms: None,
            },
            _ => Error::Fatal(message),
        },
        MyError::Protocol(_) => Error::Fatal(message),
    }
}

impl Source for MariadbSource {
    type Reader = MariadbReader;

    fn spec() -> String {
        config::spec()
    }

    fn check(config: &str) -> Result<()> {
        let cfg = SourceConfig::parse(config)?;
        let mut conn = connect(&cfg)?;
        let plans = plan::all(&mut conn, &cfg)?;
        if let Some(p) = plans.iter().find(|p| matches!(p.sync, Sync::Cdc { .. })) {
            cdc::check_server(&mut conn, &p.name)?;
        }
        conn.close();
        Ok(())
    }

    fn discover(config: &str) -> Result<Vec<StreamInfo>> {
        let cfg = SourceConfig::parse(config)?;
        let mut conn = connect(&cfg)?;
        let plans = plan::all(&mut conn, &cfg)?;
        conn.close();
        Ok(plans.into_iter().map(StreamPlan::info).collect())
    }

    fn splits(config: &str, stream: &str) -> Result<Vec<Split>> {
        let cfg = SourceConfig::parse(config)?;
        let mut conn = connect(&cfg)?;
        plan::one(&mut conn, &cfg, stream)?;
        conn.close();
        Ok(vec![Split {
            id: "all".into(),
            descriptor: Vec::new(),
        }])
    }

    fn open(
        config: &str,
        stream: &str,
        _split: Split,
        position: Option<Vec<u8>>,
    ) -> Result<MariadbReader> {
        let cfg = SourceConfig::parse(config)?;
        let mut conn = connect(&cfg)?;
        let plan = plan::one(&mut conn, &cfg, stream)?;
        if let Sync::Cdc { server_id } = plan.sync {
            let reader = CdcReader::open(plan, &cfg, conn, server_id, position.as_deref())?;
            return Ok(MariadbReader::Cdc(Box::new(reader)));
        }
        let start = match &position {
            Some(bytes) => Position::decode(bytes).map_err(|e| {
                Error::fatal(format!(
                    "stream `{stream}`: the stored position is unreadable ({e}); remove the state directory to read the stream again"
                ))
            })?,
            None => Position::default(),
        };
        let start = start.start_of(stream, plan.sync == Sync::FullRefresh);
        let sql = plan.select_sql(&start)?;
        let header = conn
            .query_start(&sql)
            .map_err(|e| my_error(e, format_args!("stream `{stream}`: {sql}")))?;
        Ok(MariadbReader::Query(Box::new(QueryReader {
            plan,
            conn: Some(conn),
            columns: header.columns,
            position: start,
        })))
    }
}

/// Reads one split: a SELECT's rows, or a table's changes.
pub enum MariadbReader {
    Query(Box<QueryReader>),
    Cdc(Box<CdcReader>),
}

impl Reader for MariadbReader {
    fn next(&mut self, max_rows: usize) -> Result<Option<Chunk>> {
        match self {
            MariadbReader::Query(r) => r.next(max_rows),
            MariadbReader::Cdc(r) => r.next(max_rows),
        }
    }

    fn ack(&mut self, position: &[u8]) {
        if let MariadbReader::Cdc(r) = self {
            r.ack(position);
        }
    }
}

/// Reads one stream's SELECT, a chunk at a time.
pub struct QueryReader {
    plan: StreamPlan,
    /// The session the rows come over; none once they are all read.
    conn: Option<Connection>,
    /// The result's column names.
    columns: Vec<String>,
    /// Where the rows handed out so far end.
    position: Position,
}

impl QueryReader {
    fn next(&mut self, max_rows: usize) -> Result<Option<Chunk>> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(None);
        };
        let stream = self.plan.name.clone();
        let mut raw = RawRows {
            columns: self.columns.clone(),
            ..RawRows::default()
        };
        let complete = read_rows(conn, &mut raw, max_rows, &stream)?;
        let batch = mysql_client::types::to_batch(&self.plan.columns, &raw)
            .map_err(|e| Error::data(format!("stream `{stream}`: {e}")))?;
        let batch = self.plan.drop_delivered(batch, &self.position)?;
        self.position = self.plan.shape()?.advance(&self.position, &batch)?;
        if complete {
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

/// Read the next rows of a running result into `raw`: up to `max_rows` rows or
/// [`MAX_CHUNK_BYTES`] of data. Returns true once the result is read to its end.
pub(crate) fn read_rows(
    conn: &mut Connection,
    raw: &mut RawRows,
    max_rows: usize,
    stream: &str,
) -> Result<bool> {
    let mut bytes = 0;
    while raw.rows.len() < max_rows && bytes < MAX_CHUNK_BYTES {
        let before = raw.rows.len();
        let step = READ_STEP.min(max_rows - before);
        let more = conn
            .query_more(raw, step)
            .map_err(|e| my_error(e, format_args!("stream `{stream}`")))?;
        bytes += raw.rows[before..]
            .iter()
            .flatten()
            .map(|v| v.as_ref().map_or(1, Vec::len))
            .sum::<usize>();
        if !more {
            return Ok(true);
        }
    }
    Ok(false)
}

// Exported only in the component: the export names are not valid symbols for a native
// shared library, and the native build exists for the unit tests.
#[cfg(target_arch = "wasm32")]
ingest_sdk::export_source!(MariadbSource);

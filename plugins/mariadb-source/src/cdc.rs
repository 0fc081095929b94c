//! `sync = "cdc"`: a table's changes, read from the server's binary log as a replica.
//!
//! The first open reads the table in a transaction `WITH CONSISTENT SNAPSHOT` and takes
//! the place in the binary log that snapshot stands at (`binlog_snapshot_file` and
//! `binlog_snapshot_position`): every row is an `insert` at that place. The stream then
//! registers as replica `server_id` (`COM_REGISTER_SLAVE`) and asks for the log from there
//! (`COM_BINLOG_DUMP`, with heartbeats while it is idle). Row events (TableMap, then
//! Write/Update/Delete rows, v1 and v2) are decoded by `mysql_common`'s binlog reader.
//!
//! Every row carries `_op` (`insert`, `update`, `delete`), `_pos` (the binary log file and
//! the offset after the change's event, `file:0000012345`, which sorts in log order),
//! `_gtid` (MariaDB's global transaction id, `domain-server-sequence`), `_commit_ts` (the
//! time the log gives the change, whole seconds) and `_before` (the row as it was, for
//! updates and deletes: the log carries whole rows). A delete carries the old row; an
//! update that changes the key is a delete of the old key followed by the new row.
//!
//! The position is the end of the last transaction wholly delivered (file and offset),
//! and how many changes of the next one were: a run resumes by asking for the log from
//! there again and passing over those changes. Nothing is lost or repeated, however the
//! chunks cut the transactions. The server keeps no replica position: the log is kept
//! for `expire_logs_days` / `binlog_expire_logs_seconds`, and a position older than that
//! is a clear error that says how to take a new snapshot.
//!
//! Table maps name their columns when the server logs `binlog_row_metadata = FULL`, and
//! changes are matched to the stream's columns by name; otherwise by position, and only
//! while the column count agrees. A change with a column the stream does not have (DDL
//! mid-stream) stops the run before it, like TRUNCATE and DROP of the table do.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::builder::{StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch, StructArray};
use arrow_schema::{DataType, Field, Fields, TimeUnit};
use ingest_sdk::host::{log, Level};
use ingest_sdk::source::Chunk;
use ingest_sdk::{Error, Result};
use mysql_client::binlog::{kind, BinlogStream, Event, LogPosition};
use mysql_client::types::{binlog_text, to_batch, UTC};
use mysql_client::{Connection, MyError, RawRows};
use mysql_common::binlog::consts::BinlogVersion;
use mysql_common::binlog::events::{EventData, OptionalMetaExtractor, RowsEventData};
use mysql_common::binlog::row::BinlogRow;
use mysql_common::binlog::EventStreamReader;
use mysql_common::value::Value;
use serde::{Deserialize, Serialize};

use crate::config::SourceConfig;
use crate::plan::StreamPlan;
use crate::{connect, my_error, read_rows};

/// The column that says what happened to the row.
pub const OP: &str = "_op";
/// The column with the change's place in the binary log.
pub const POS: &str = "_pos";
/// The column with the change's global transaction id.
pub const GTID: &str = "_gtid";
/// The column with the change's time.
pub const COMMIT_TS: &str = "_commit_ts";
/// The column with the row as it was before an update or delete.
pub const BEFORE: &str = "_before";

/// How long a stream waits for the next event when none has arrived.
const POLL_WAIT: Duration = Duration::from_millis(2);

/// How long a call gathers changes that keep coming before it hands them on.
const CHUNK_TIME: Duration = Duration::from_millis(100);

/// How often an idle server sends a heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// The server error for a log the server cannot send (a purged or unknown file, an
/// offset past its end).
const ER_MASTER_FATAL_ERROR_READING_BINLOG: u16 = 1236;

/// The fields a CDC stream adds to the table's fields (`table`).
pub fn meta_fields(table: Vec<Field>) -> Vec<Field> {
    vec![
        Field::new(OP, DataType::Utf8, false),
        Field::new(POS, DataType::Utf8, false),
        Field::new(GTID, DataType::Utf8, true),
        Field::new(
            COMMIT_TS,
            DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
            true,
        ),
        Field::new(BEFORE, DataType::Struct(Fields::from(table)), true),
    ]
}

/// Where a CDC stream stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdcPosition {
    /// The log file of the end of the last transaction wholly delivered; none while the
    /// initial snapshot is read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The offset in `file` of that end.
    #[serde(default)]
    pub offset: u32,
    /// Changes of the transaction after it already delivered.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skip: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `file:offset`, with the offset zero-padded so that places sort in log order.
fn place(file: &str, offset: u32) -> String {
    format!("{file}:{offset:010}")
}

/// The binary log settings change data capture needs, checked.
pub fn check_server(conn: &mut Connection, stream: &str) -> Result<()> {
    mysql_client::binlog::check_row_logging(conn)
        .map_err(|e| Error::config(format!("stream `{stream}`: {e}")))
}

/// An event of the log that does not decode.
fn undecodable(stream: &str, e: std::io::Error) -> Error {
    Error::fatal(format!(
        "stream `{stream}`: an event of the binary log is undecodable: {e}"
    ))
}

/// What `statement` (run with `schema` as its default database) does to `table` when it
/// empties or removes it: `truncated`, `dropped`, `renamed`.
fn empties_or_removes(
    table: &(String, String),
    schema: &str,
    statement: &str,
) -> Option<&'static str> {
    let words: Vec<String> = statement
        .split(|c: char| c.is_whitespace() || c == ',' || c == ';')
        .filter(|w| !w.is_empty())
        .map(|w| w.to_ascii_lowercase())
        .collect();
    let what = match words.first().map(String::as_str) {
        Some("truncate") => "truncated",
        Some("drop") if words.get(1).map(String::as_str) == Some("table") => "dropped",
        Some("rename") => "renamed",
        _ => return None,
    };
    let (ours_schema, ours_table) = (table.0.to_ascii_lowercase(), table.1.to_ascii_lowercase());
    let names_ours = |w: &String| {
        let name = w.replace('`', "");
        match name.split_once('.') {
            Some((s, t)) => s == ours_schema && t == ours_table,
            None => schema.eq_ignore_ascii_case(&ours_schema) && name == ours_table,
        }
    };
    words.iter().skip(1).any(names_ours).then_some(what)
}

/// The initial snapshot, while it is read.
struct Snapshot {
    conn: Connection,
    columns: Vec<String>,
    /// The place in the log the snapshot stands at.
    at: LogPosition,
}

/// How a table map's columns land in the stream's columns: for each column of the table
/// map, its index among the stream's columns.
struct Mapping {
    to_column: Vec<usize>,
}

/// The transaction being streamed.
struct Txn {
    gtid: Option<String>,
    /// A DDL statement or other group without an XID: the next QUERY event ends it.
    standalone: bool,
    /// Changes of ours seen so far (delivered or passed over).
    changes: u64,
}

/// Rows being gathered for a chunk.
struct Rows {
    after: RawRows,
    before: RawRows,
    has_before: Vec<bool>,
    ops: StringBuilder,
    places: StringBuilder,
    gtids: StringBuilder,
    times: TimestampMicrosecondBuilder,
}

impl Rows {
    fn new() -> Rows {
        Rows {
            after: RawRows::default(),
            before: RawRows::default(),
            has_before: Vec::new(),
            ops: StringBuilder::new(),
            places: StringBuilder::new(),
            gtids: StringBuilder::new(),
            times: TimestampMicrosecondBuilder::new().with_timezone(UTC),
        }
    }

    fn len(&self) -> usize {
        self.after.rows.len()
    }

    fn finish(&mut self, plan: &StreamPlan) -> Result<RecordBatch> {
        let fail = |e: String| Error::fatal(format!("stream `{}`: {e}", plan.name));
        let rows = std::mem::take(&mut self.after);
        let batch = to_batch(&plan.columns, &rows).map_err(fail)?;
        let before = std::mem::take(&mut self.before);
        let images = to_batch(&plan.columns, &before).map_err(fail)?;
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns.push(Arc::new(self.ops.finish()));
        columns.push(Arc::new(self.places.finish()));
        columns.push(Arc::new(self.gtids.finish()));
        columns.push(Arc::new(self.times.finish()));
        let nulls = arrow_buffer::NullBuffer::from(std::mem::take(&mut self.has_before));
        let image = StructArray::try_new(
            images.schema().fields().clone(),
            images.columns().to_vec(),
            Some(nulls),
        )
        .map_err(|e| fail(e.to_string()))?;
        columns.push(Arc::new(image));
        RecordBatch::try_new(plan.schema.clone(), columns).map_err(|e| fail(e.to_string()))
    }
}

/// Reads one CDC stream: its snapshot, then its changes.
pub struct CdcReader {
    plan: StreamPlan,
    cfg: SourceConfig,
    server_id: u32,
    /// The stream's table, as the log names it.
    table: (String, String),
    snapshot: Option<Snapshot>,
    /// The replication session and how its events are framed.
    repl: Option<(Connection, BinlogStream)>,
    parser: EventStreamReader,
    /// The log file the stream is in.
    file: String,
    /// The end of the last transaction wholly delivered.
    delivered: LogPosition,
    /// Changes of the first transaction streamed that an earlier run delivered.
    skip: u64,
    txn: Option<Txn>,
    /// Table ids of the stream's table, with how their columns land.
    mappings: HashMap<u64, Mapping>,
    rows: Rows,
    /// An error to report once the rows before it are handed out.
    pending: Option<Error>,
}

impl CdcReader {
    /// Open `plan`'s CDC stream from `position` (none: from a new snapshot), on `conn`.
    pub fn open(
        plan: StreamPlan,
        cfg: &SourceConfig,
        mut conn: Connection,
        server_id: u32,
        position: Option<&[u8]>,
    ) -> Result<CdcReader> {
        let stream = plan.name.clone();
        let table = plan.table.clone().ok_or_else(|| {
            Error::config(format!("stream `{stream}`: only tables can be read by CDC"))
        })?;
        check_server(&mut conn, &stream)?;
        let start = match position {
            Some(bytes) => Some(serde_json::from_slice::<CdcPosition>(bytes).map_err(|e| {
                Error::fatal(format!(
                    "stream `{stream}`: the stored position is unreadable ({e}); reset the state to take a new snapshot"
                ))
            })?),
            None => None,
        };
        let mut reader = CdcReader {
            plan,
            cfg: cfg.clone(),
            server_id,
            table,
            snapshot: None,
            repl: None,
            parser: EventStreamReader::new(BinlogVersion::Version4),
            file: String::new(),
            delivered: LogPosition {
                file: String::new(),
                offset: 0,
            },
            skip: 0,
            txn: None,
            mappings: HashMap::new(),
            rows: Rows::new(),
            pending: None,
        };
        match start {
            Some(CdcPosition {
                file: Some(file),
                offset,
                skip,
            }) => {
                conn.close();
                reader.skip = skip;
                reader.start_stream(LogPosition { file, offset })?;
            }
            other => {
                if other.is_some() {
                    log(
                        Level::Warn,
                        &format!(
                            "stream `{stream}`: the initial snapshot was interrupted; it is taken again, and the rows it had delivered come again"
                        ),
                    );
                }
                reader.start_snapshot(conn)?;
            }
        }
        Ok(reader)
    }

    /// Start reading the table from a consistent snapshot, and note where in the log it
    /// stands.
    fn start_snapshot(&mut self, mut conn: Connection) -> Result<()> {
        let stream = self.plan.name.clone();
        let at = conn
            .start_snapshot()
            .map_err(|e| my_error(e, format_args!("stream `{stream}`: starting the snapshot")))?;
        let sql = format!(
            "SELECT {} FROM {} AS s",
            self.plan.select_list(),
            self.plan.relation
        );
        let header = conn
            .query_start(&sql)
            .map_err(|e| my_error(e, format_args!("stream `{stream}`: {sql}")))?;
        log(
            Level::Info,
            &format!(
                "stream `{stream}`: reading the table's snapshot at {}",
                place(&at.file, at.offset)
            ),
        );
        self.snapshot = Some(Snapshot {
            conn,
            columns: header.columns,
            at,
        });
        Ok(())
    }

    /// Register as a replica and stream the log from `from`.
    fn start_stream(&mut self, from: LogPosition) -> Result<()> {
        let stream = self.plan.name.clone();
        let mut conn = connect(&self.cfg)?;
        let framing = conn
            .start_binlog(self.server_id, &from, HEARTBEAT)
            .map_err(|e| {
                my_error(
                    e,
                    format_args!(
                        "stream `{stream}`: asking for the binary log from {}",
                        place(&from.file, from.offset)
                    ),
                )
            })?;
        self.file = from.file.clone();
        self.delivered = from;
        self.parser = EventStreamReader::new(BinlogVersion::Version4);
        self.mappings.clear();
        self.txn = None;
        self.repl = Some((conn, framing));
        Ok(())
    }

    /// The next chunk: of the snapshot while it lasts, then of the log. A CDC stream
    /// never ends.
    pub fn next(&mut self, max_rows: usize) -> Result<Option<Chunk>> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        if self.snapshot.is_some() {
            return self.next_of_snapshot(max_rows).map(Some);
        }
        let started = Instant::now();
        while self.rows.len() < max_rows {
            let (conn, framing) = self.repl.as_mut().expect("streaming");
            let event = match framing.try_next(conn) {
                Ok(Some(event)) => event,
                Ok(None) => {
                    if started.elapsed() >= CHUNK_TIME {
                        break;
                    }
                    std::thread::sleep(POLL_WAIT);
                    continue;
                }
                Err(e) => {
                    let e = self.log_error(e);
                    if self.rows.len() == 0 {
                        return Err(e);
                    }
                    self.pending = Some(e);
                    break;
                }
            };
            if let Err(e) = self.apply(event) {
                if self.rows.len() == 0 {
                    return Err(e);
                }
                self.pending = Some(e);
                break;
            }
        }
        let batch = self.rows.finish(&self.plan)?;
        Ok(Some(Chunk {
            batch,
            position: self.position(),
            rejects: Vec::new(),
        }))
    }

    /// An error of the log stream, with what it means for the stream's position.
    fn log_error(&self, e: MyError) -> Error {
        let stream = &self.plan.name;
        match &e {
            MyError::Server { code, .. } if *code == ER_MASTER_FATAL_ERROR_READING_BINLOG => {
                Error::fatal(format!(
                    "stream `{stream}`: the server cannot send the binary log from {} ({e}); the log was purged past this pipeline's position (expire_logs_days, PURGE BINARY LOGS), so the changes after it are gone. Reset this pipeline's state to take a new snapshot",
                    place(&self.delivered.file, self.delivered.offset)
                ))
            }
            _ => my_error(e, format_args!("stream `{stream}`: reading the binary log")),
        }
    }

    /// The position after the rows handed out so far.
    fn position(&self) -> Vec<u8> {
        serde_json::to_vec(&CdcPosition {
            file: Some(self.delivered.file.clone()),
            offset: self.delivered.offset,
            skip: self.txn.as_ref().map_or(0, |t| t.changes),
        })
        .expect("a position serialises")
    }

    /// The binary log keeps no replica position: nothing to confirm.
    pub fn ack(&mut self, _position: &[u8]) {}

    fn next_of_snapshot(&mut self, max_rows: usize) -> Result<Chunk> {
        let stream = self.plan.name.clone();
        let snapshot = self.snapshot.as_mut().expect("reading the snapshot");
        let mut raw = RawRows {
            columns: snapshot.columns.clone(),
            ..RawRows::default()
        };
        let complete = read_rows(&mut snapshot.conn, &mut raw, max_rows, &stream)?;
        let at = place(&snapshot.at.file, snapshot.at.offset);
        let part = to_batch(&self.plan.columns, &raw)
            .map_err(|e| Error::data(format!("stream `{stream}`: {e}")))?;
        let rows = part.num_rows();
        let mut columns: Vec<ArrayRef> = part.columns().to_vec();
        columns.push(Arc::new(arrow_array::StringArray::from(vec![
            "insert";
            rows
        ])));
        columns.push(Arc::new(arrow_array::StringArray::from(vec![
            at.as_str();
            rows
        ])));
        for name in [GTID, COMMIT_TS, BEFORE] {
            let field = self.plan.schema.field_with_name(name).expect("a CDC field");
            columns.push(arrow_array::new_null_array(field.data_type(), rows));
        }
        let batch = RecordBatch::try_new(self.plan.schema.clone(), columns)
            .map_err(|e| Error::fatal(format!("stream `{stream}`: {e}")))?;
        let position = if complete {
            let snapshot = self.snapshot.take().expect("reading the snapshot");
            let mut conn = snapshot.conn;
            conn.query("COMMIT")
                .map_err(|e| my_error(e, format_args!("stream `{stream}`: ending the snapshot")))?;
            conn.close();
            log(
                Level::Info,
                &format!("stream `{stream}`: the snapshot is read; streaming changes from {at}"),
            );
            self.start_stream(snapshot.at)?;
            self.position()
        } else {
            serde_json::to_vec(&CdcPosition::default()).expect("a position serialises")
        };
        Ok(Chunk {
            batch,
            position,
            rejects: Vec::new(),
        })
    }

    /// Take in one event of the log.
    fn apply(&mut self, event: Event) -> Result<()> {
        match event.kind {
            kind::ROTATE => {
                // The next file, and the offset in it the stream goes on from.
                let body = event.body();
                if body.len() >= 8 {
                    let offset = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
                    self.file = String::from_utf8_lossy(&body[8..]).into_owned();
                    if self.txn.is_none() {
                        self.delivered = LogPosition {
                            file: self.file.clone(),
                            offset: offset as u32,
                        };
                    }
                }
                return Ok(());
            }
            kind::HEARTBEAT => return Ok(()),
            kind::MARIADB_GTID => {
                // Sequence number (8), domain (4), flags (1): a group begins.
                let b = event.body();
                if b.len() >= 13 {
                    let seq = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
                    let domain = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
                    let flags = b[12];
                    self.txn = Some(Txn {
                        gtid: Some(format!("{domain}-{}-{seq}", event.server_id)),
                        standalone: flags & 1 != 0,
                        changes: 0,
                    });
                }
                return Ok(());
            }
            kind::XID => {
                self.commit(&event);
                return Ok(());
            }
            _ => {}
        }
        let wanted = matches!(
            event.kind,
            kind::FORMAT_DESCRIPTION | kind::TABLE_MAP | kind::QUERY
        ) || self.is_ours_rows(&event);
        if !wanted {
            return Ok(());
        }
        let Some(parsed) = self
            .parser
            .read(&event.raw[..])
            .map_err(|e| undecodable(&self.plan.name, e))?
        else {
            return Ok(());
        };
        let data = parsed
            .read_data()
            .map_err(|e| undecodable(&self.plan.name, e))?;
        match data {
            Some(EventData::QueryEvent(q)) => {
                let sql = q.query();
                let statement = sql.trim();
                if statement.eq_ignore_ascii_case("BEGIN") {
                    if self.txn.is_none() {
                        self.txn = Some(Txn {
                            gtid: None,
                            standalone: false,
                            changes: 0,
                        });
                    }
                    return Ok(());
                }
                if statement.eq_ignore_ascii_case("COMMIT") {
                    // A transaction of a table without transactions (MyISAM, Aria).
                    self.commit(&event);
                    return Ok(());
                }
                let schema = q.schema().into_owned();
                if let Some(what) = empties_or_removes(&self.table, &schema, statement) {
                    return Err(Error::fatal(format!(
                        "stream `{}`: table {}.{} was {what} at {}; a change stream cannot carry that as rows. Reset this pipeline's state to take a new snapshot (and empty the target)", self.plan.name,
                        self.table.0,
                        self.table.1,
                        place(&self.file, event.next_offset)
                    )));
                }
                if self.txn.as_ref().is_none_or(|t| t.standalone) {
                    self.commit(&event);
                }
            }
            Some(EventData::TableMapEvent(tme))
                if tme.database_name() == self.table.0.as_str()
                    && tme.table_name() == self.table.1.as_str()
                    && !self.mappings.contains_key(&tme.table_id()) =>
            {
                let mapping = self.map(&tme, &event)?;
                self.mappings.insert(tme.table_id(), mapping);
            }
            Some(EventData::RowsEvent(rows)) => {
                let id = rows.table_id();
                let tme = self.parser.get_tme(id).ok_or_else(|| {
                    Error::fatal(format!(
                        "stream `{}`: a rows event names table id {id}, which no table map described", self.plan.name
                    ))
                })?;
                let op = match &rows {
                    RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => "insert",
                    RowsEventData::UpdateRowsEventV1(_) | RowsEventData::UpdateRowsEvent(_) => "update",
                    RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => "delete",
                    RowsEventData::PartialUpdateRowsEvent(_) => {
                        return Err(Error::config(format!(
                            "stream `{}`: the server logs partial JSON updates; set binlog_row_value_options = '' so that updates carry whole rows", self.plan.name
                        )))
                    }
                };
                let decoded = mysql_client::binlog::rows_of(event.kind, event.body(), tme)
                    .map_err(|e| my_error(e, format_args!("stream `{}`", self.plan.name)))?;
                let at = place(&self.file, event.next_offset);
                let ts = i64::from(event.timestamp) * 1_000_000;
                for (before, after) in decoded {
                    self.change(id, op, before, after, &at, ts)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether `event` is a rows event of the stream's table.
    fn is_ours_rows(&self, event: &Event) -> bool {
        let rows = matches!(
            event.kind,
            kind::WRITE_ROWS_V1
                | kind::UPDATE_ROWS_V1
                | kind::DELETE_ROWS_V1
                | kind::WRITE_ROWS
                | kind::UPDATE_ROWS
                | kind::DELETE_ROWS
        );
        if !rows || event.body().len() < 6 {
            return false;
        }
        let mut id = [0u8; 8];
        id[..6].copy_from_slice(&event.body()[..6]);
        self.mappings.contains_key(&u64::from_le_bytes(id))
    }

    /// A transaction ends at `event`: the stream stands after it.
    fn commit(&mut self, event: &Event) {
        self.txn = None;
        self.skip = 0;
        if event.next_offset > 0 {
            self.delivered = LogPosition {
                file: self.file.clone(),
                offset: event.next_offset,
            };
        }
    }

    /// How the columns of table map `tme` land in the stream's columns.
    fn map(
        &self,
        tme: &mysql_common::binlog::events::TableMapEvent<'_>,
        event: &Event,
    ) -> Result<Mapping> {
        let stream = &self.plan.name;
        let count = tme.columns_count() as usize;
        let names: Vec<String> = OptionalMetaExtractor::new(tme.iter_optional_meta())
            .map(|m| {
                m.iter_column_name()
                    .filter_map(|n| n.ok().map(|n| n.name().into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let changed = |what: String| {
            Error::fatal(format!(
                "stream `{stream}`: table {}.{} changed at {}: {what}. The run stops before that change; run it again to take the new schema through [schema] on_change",
                self.table.0,
                self.table.1,
                place(&self.file, event.next_offset)
            ))
        };
        let mut to_column = Vec::with_capacity(count);
        if names.len() == count {
            for name in &names {
                let Some(i) = self.plan.columns.iter().position(|c| &c.name == name) else {
                    return Err(changed(format!(
                        "column `{name}` is not in the stream's schema"
                    )));
                };
                to_column.push(i);
            }
        } else if count == self.plan.columns.len() {
            to_column.extend(0..count);
        } else {
            return Err(changed(format!(
                "the log has {count} columns for it and the stream {} (set binlog_row_metadata = FULL on the server so that changes are matched by column name)",
                self.plan.columns.len()
            )));
        }
        Ok(Mapping { to_column })
    }

    /// Count one changed row of the open transaction and add it (unless an earlier run
    /// delivered it).
    fn change(
        &mut self,
        table_id: u64,
        op: &str,
        before: Option<BinlogRow>,
        after: Option<BinlogRow>,
        at: &str,
        ts: i64,
    ) -> Result<()> {
        let txn = self.txn.get_or_insert(Txn {
            gtid: None,
            standalone: false,
            changes: 0,
        });
        txn.changes += 1;
        if txn.changes <= self.skip {
            return Ok(());
        }
        let gtid = txn.gtid.clone();
        let before = before.map(|r| self.values(table_id, r)).transpose()?;
        let after = after.map(|r| self.values(table_id, r)).transpose()?;
        match (op, before, after) {
            ("insert", _, Some(new)) => self.emit("insert", new, None, at, gtid.as_deref(), ts),
            ("update", Some(old), Some(new)) => {
                if self.key_of(&old) != self.key_of(&new) {
                    self.emit("delete", old.clone(), None, at, gtid.as_deref(), ts);
                }
                self.emit("update", new, Some(old), at, gtid.as_deref(), ts);
            }
            ("delete", Some(old), _) => {
                self.emit("delete", old.clone(), Some(old), at, gtid.as_deref(), ts)
            }
            _ => {
                return Err(Error::fatal(format!(
                    "stream `{}`: a {op} event without the row images it needs",
                    self.plan.name
                )))
            }
        }
        Ok(())
    }

    /// The stream's key values of a row (in stream column order).
    fn key_of<'a>(&self, row: &'a [Option<Vec<u8>>]) -> Vec<&'a Option<Vec<u8>>> {
        self.plan
            .primary_key
            .iter()
            .filter_map(|k| self.plan.columns.iter().position(|c| &c.name == k))
            .map(|i| &row[i])
            .collect()
    }

    /// A logged row as the text values of the stream's columns.
    fn values(&self, table_id: u64, mut row: BinlogRow) -> Result<Vec<Option<Vec<u8>>>> {
        let stream = &self.plan.name;
        // Only rows events of a mapped table id are decoded.
        let mapping = &self.mappings[&table_id];
        let mut out = vec![None; self.plan.columns.len()];
        for (i, &column) in mapping.to_column.iter().enumerate() {
            let value = row.take(i).ok_or_else(|| {
                Error::config(format!(
                    "stream `{stream}`: the log leaves column `{}` out of a row; change data capture needs binlog_row_image = FULL",
                    self.plan.columns[column].name
                ))
            })?;
            let value = Value::try_from(value).map_err(|e| {
                Error::fatal(format!(
                    "stream `{stream}`: column `{}`: {e}",
                    self.plan.columns[column].name
                ))
            })?;
            out[column] = binlog_text(&self.plan.columns[column].kind, &value);
        }
        Ok(out)
    }

    fn emit(
        &mut self,
        op: &str,
        values: Vec<Option<Vec<u8>>>,
        before: Option<Vec<Option<Vec<u8>>>>,
        at: &str,
        gtid: Option<&str>,
        ts: i64,
    ) {
        self.rows.has_before.push(before.is_some());
        self.rows
            .before
            .rows
            .push(before.unwrap_or_else(|| vec![None; values.len()]));
        self.rows.after.rows.push(values);
        self.rows.ops.append_value(op);
        self.rows.places.append_value(at);
        self.rows.gtids.append_option(gtid);
        self.rows.times.append_value(ts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_that_empty_or_remove_the_table_are_told_from_others() {
        let t = ("shop".to_string(), "items".to_string());
        assert_eq!(
            empties_or_removes(&t, "shop", "TRUNCATE TABLE items"),
            Some("truncated")
        );
        assert_eq!(
            empties_or_removes(
                &t,
                "other",
                "DROP TABLE IF EXISTS `shop`.`items` /* generated by server */"
            ),
            Some("dropped")
        );
        assert_eq!(
            empties_or_removes(&t, "shop", "RENAME TABLE items TO items_old"),
            Some("renamed")
        );
        assert_eq!(
            empties_or_removes(&t, "other", "TRUNCATE TABLE items"),
            None
        );
        assert_eq!(
            empties_or_removes(&t, "shop", "DROP TABLE items_archive"),
            None
        );
        assert_eq!(
            empties_or_removes(&t, "shop", "ALTER TABLE items ADD c int"),
            None
        );
    }

    #[test]
    fn places_sort_in_log_order() {
        let mut places = vec![
            place("bin.000002", 4),
            place("bin.000001", 123_456),
            place("bin.000001", 99),
        ];
        places.sort();
        assert_eq!(
            places,
            [
                "bin.000001:0000000099",
                "bin.000001:0000123456",
                "bin.000002:0000000004"
            ]
        );
    }

    #[test]
    fn a_position_round_trips_and_reads_a_snapshot_in_progress() {
        let p = CdcPosition {
            file: Some("bin.000003".into()),
            offset: 1234,
            skip: 7,
        };
        let bytes = serde_json::to_vec(&p).unwrap();
        assert_eq!(serde_json::from_slice::<CdcPosition>(&bytes).unwrap(), p);
        let snapshot: CdcPosition = serde_json::from_slice(b"{}").unwrap();
        assert_eq!(snapshot.file, None);
    }
}

//! `sync = "cdc"`: a table's changes, read through logical replication with `pgoutput`.
//!
//! The first open creates the stream's slot, which exports a snapshot: the table is read
//! from that snapshot (every row an `insert` at the slot's consistent point), then the
//! slot is streamed from that point with `START_REPLICATION … LOGICAL` (decision 0011).
//! Every row carries `_op` (`insert`, `update`, `delete`), `_lsn` (the LSN of its
//! transaction's commit) and `_commit_ts`. A delete carries the key (every column under
//! REPLICA IDENTITY FULL); an update that changes the key is a delete of the old key
//! followed by the new row.
//!
//! The position is the end of the last transaction wholly delivered, and how many changes
//! of the next one were: a run resumes by streaming from there again and passing over
//! those changes. Nothing is lost or repeated, however the chunks cut the transactions.
//! The slot's confirmed flush LSN moves only in `ack`, once the host has made a position
//! durable, so the server keeps the WAL a resumed run needs.
//!
//! A call reads what has arrived without waiting on the socket (guest sockets have no
//! read timeouts): it gathers changes for up to [`CHUNK_TIME`], polling every
//! [`POLL_WAIT`] while nothing comes, so an idle stream still returns and epochs close
//! on time. The server hears where the stream stands at least every [`STATUS_EVERY`],
//! when it asks, and at every `ack`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::builder::{Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch, StructArray};
use arrow_schema::{DataType, Field, Fields, SchemaRef, TimeUnit};
use bytes::Bytes;
use ingest_sdk::host::{log, Level};
use ingest_sdk::source::Chunk;
use ingest_sdk::{Error, Result};
use postgres_client::copy::Decoder;
use postgres_client::pgoutput::{self, Message, OldKind, Relation, Tuple, Value};
use postgres_client::replication::{format_lsn, parse_lsn, WalMessage};
use postgres_client::settings::Settings;
use postgres_client::sql::{literal, qualified};
use postgres_client::types::UTC;
use postgres_client::{Connection, PgError};
use serde::{Deserialize, Serialize};

use crate::plan::StreamPlan;

/// The column that says what happened to the row.
pub const OP: &str = "_op";
/// The column with the LSN of the change's commit.
pub const LSN: &str = "_lsn";
/// The column with the change's commit time.
pub const COMMIT_TS: &str = "_commit_ts";

/// How long a stream waits for the next message when none has arrived.
const POLL_WAIT: Duration = Duration::from_millis(2);

/// How often the stream tells the server where it stands, at least (the server ends a
/// replication session that is silent for `wal_sender_timeout`, 60 s by default).
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// How long a call gathers changes that keep coming before it hands them on.
const CHUNK_TIME: Duration = Duration::from_millis(100);

/// How long `open` waits for a slot a killed run still holds to be released.
const SLOT_RELEASE: Duration = Duration::from_secs(10);

/// The `application_name` of the replication session.
const APPLICATION: &str = "ingest-postgres-cdc";

/// The column with the row as it was before an update or delete (REPLICA IDENTITY FULL).
pub const BEFORE: &str = "_before";

/// The fields a CDC stream adds to the table's columns; `before` (the table's fields)
/// when the server sends whole old rows.
pub fn meta_fields(before: Option<Vec<Field>>) -> Vec<Field> {
    let mut fields = vec![
        Field::new(OP, DataType::Utf8, false),
        Field::new(LSN, DataType::Int64, false),
        Field::new(
            COMMIT_TS,
            DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
            true,
        ),
    ];
    if let Some(table) = before {
        fields.push(Field::new(
            BEFORE,
            DataType::Struct(Fields::from(table)),
            true,
        ));
    }
    fields
}

/// Where a CDC stream stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdcPosition {
    /// The slot the position is in.
    pub slot: String,
    /// The end of the last transaction wholly delivered (`X/X`); none while the initial
    /// snapshot is read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn: Option<String>,
    /// Changes of the transaction after `lsn` already delivered.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skip: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The options of a CDC stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdcOptions {
    pub slot: String,
    pub publication: String,
}

/// The initial snapshot, while it is read.
struct Snapshot {
    conn: Connection,
    decoder: Decoder,
    /// The slot's consistent point: the snapshot holds every change before it.
    lsn: u64,
}

/// How a relation's columns land in the stream's columns.
struct Mapping {
    /// Ours: the stream's table; other tables of the publication are passed over.
    ours: bool,
    /// For each column of the relation, its index among the table's columns.
    to_column: Vec<usize>,
    /// The table's key columns, as indices among the relation's columns.
    key: Vec<usize>,
}

/// The transaction being streamed.
struct Txn {
    lsn: u64,
    commit_ts: i64,
    /// Changes of ours seen so far (delivered or passed over).
    changes: u64,
}

/// Rows being gathered for a chunk.
struct Rows {
    /// The table's own columns (the stream's schema without the CDC columns).
    table: SchemaRef,
    decoder: Decoder,
    ops: StringBuilder,
    lsns: Int64Builder,
    times: TimestampMicrosecondBuilder,
    /// The before-images, when the stream carries them, and which rows have one.
    before: Option<(Decoder, Vec<bool>)>,
    /// A row of NULLs: the before-image of a row without one.
    nulls: Vec<Option<&'static [u8]>>,
}

impl Rows {
    fn new(plan: &StreamPlan) -> Rows {
        let columns = table_columns(plan);
        Rows {
            table: Arc::new(arrow_schema::Schema::new(
                plan.columns
                    .iter()
                    .map(|c| c.kind.field(&c.name))
                    .collect::<Vec<_>>(),
            )),
            decoder: Decoder::new(&columns),
            ops: StringBuilder::new(),
            lsns: Int64Builder::new(),
            times: TimestampMicrosecondBuilder::new().with_timezone(UTC),
            before: has_before(plan).then(|| (Decoder::new(&columns), Vec::new())),
            nulls: vec![None; columns.len()],
        }
    }

    /// Rows gathered so far.
    fn len(&self) -> usize {
        self.decoder.rows()
    }

    fn push(
        &mut self,
        values: &[Option<&[u8]>],
        before: Option<&[Option<&[u8]>]>,
        op: &str,
        lsn: u64,
        commit_ts: Option<i64>,
    ) -> std::result::Result<(), String> {
        self.decoder.append_row(values).map_err(|e| e.to_string())?;
        if let Some((decoder, valid)) = &mut self.before {
            decoder
                .append_row(before.unwrap_or(&self.nulls))
                .map_err(|e| format!("the before-image: {e}"))?;
            valid.push(before.is_some());
        }
        self.ops.append_value(op);
        self.lsns.append_value(lsn as i64);
        self.times.append_option(commit_ts);
        Ok(())
    }

    fn finish(&mut self, plan: &StreamPlan) -> Result<RecordBatch> {
        let fail =
            |e: arrow_schema::ArrowError| Error::fatal(format!("stream `{}`: {e}", plan.name));
        let batch = self.decoder.finish(self.table.clone()).map_err(fail)?;
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns.push(Arc::new(self.ops.finish()));
        columns.push(Arc::new(self.lsns.finish()));
        columns.push(Arc::new(self.times.finish()));
        if let Some((decoder, valid)) = &mut self.before {
            let images = decoder.finish(self.table.clone()).map_err(fail)?;
            let nulls = arrow_buffer::NullBuffer::from(std::mem::take(valid));
            let image = StructArray::try_new(
                images.schema().fields().clone(),
                images.columns().to_vec(),
                Some(nulls),
            )
            .map_err(fail)?;
            columns.push(Arc::new(image));
        }
        RecordBatch::try_new(plan.schema.clone(), columns).map_err(fail)
    }
}

/// Whether the stream carries before-images.
fn has_before(plan: &StreamPlan) -> bool {
    plan.schema.column_with_name(BEFORE).is_some()
}

fn table_columns(plan: &StreamPlan) -> Vec<(String, postgres_client::types::PgKind)> {
    plan.columns
        .iter()
        .map(|c| (c.name.clone(), c.kind.clone()))
        .collect()
}

/// Reads one CDC stream: its snapshot, then its changes.
pub struct CdcReader {
    plan: StreamPlan,
    settings: Settings,
    options: CdcOptions,
    /// `schema.table` of the stream's table.
    table: (String, String),
    repl: Connection,
    snapshot: Option<Snapshot>,
    rows: Rows,
    relations: HashMap<u32, Mapping>,
    txn: Option<Txn>,
    /// The end of the last transaction wholly delivered.
    delivered: u64,
    /// Changes of the first transaction streamed that an earlier run delivered.
    skip: u64,
    /// The highest LSN the server said it sent.
    received: u64,
    /// The highest LSN the host made durable: the slot's confirmed flush LSN.
    acked: u64,
    /// When the server was last told where the stream stands.
    last_status: Instant,
    /// An error to report once the rows before it are handed out.
    pending: Option<Error>,
}

impl CdcReader {
    /// Open `plan`'s CDC stream from `position` (none: from a new snapshot).
    pub fn open(
        plan: StreamPlan,
        settings: &Settings,
        options: CdcOptions,
        position: Option<&[u8]>,
    ) -> Result<CdcReader> {
        let stream = plan.name.clone();
        let table = plan.table.clone().ok_or_else(|| {
            Error::config(format!("stream `{stream}`: only tables can be read by CDC"))
        })?;
        let start = match position {
            Some(bytes) => Some(serde_json::from_slice::<CdcPosition>(bytes).map_err(|e| {
                Error::fatal(format!(
                    "stream `{stream}`: the stored position is unreadable ({e}); reset the state to take a new snapshot"
                ))
            })?),
            None => None,
        };
        if let Some(p) = &start {
            if p.slot != options.slot {
                return Err(Error::config(format!(
                    "stream `{stream}`: the state holds a position in slot `{}`, and the config names slot `{}`; reset the state to take a new snapshot in the new slot",
                    p.slot, options.slot
                )));
            }
        }
        let mut conn = settings.connect(APPLICATION)?;
        check_publication(&mut conn, &stream, &options, &table)?;
        let resume = match &start {
            Some(CdcPosition {
                lsn: Some(lsn),
                skip,
                ..
            }) => {
                let lsn = parse_lsn(lsn).ok_or_else(|| {
                    Error::fatal(format!(
                        "stream `{stream}`: the stored LSN {lsn:?} is unreadable"
                    ))
                })?;
                Some((lsn, *skip))
            }
            _ => None,
        };
        let slot = wait_for_slot(&mut conn, &stream, &options.slot)?;
        let mut reader = CdcReader {
            rows: Rows::new(&plan),
            plan,
            settings: settings.clone(),
            table,
            repl: replication_connection(settings)?,
            snapshot: None,
            relations: HashMap::new(),
            txn: None,
            delivered: 0,
            skip: 0,
            received: 0,
            acked: 0,
            last_status: Instant::now(),
            pending: None,
            options,
        };
        match (resume, slot) {
            (Some((lsn, skip)), Some(slot)) => {
                if slot.lost {
                    conn.close();
                    return Err(Error::fatal(format!(
                        "stream `{stream}`: the server removed WAL that slot `{}` still needed (wal_status = lost), so the changes after {} are gone; reset this pipeline's state to take a new snapshot",
                        reader.options.slot,
                        format_lsn(lsn)
                    )));
                }
                if slot.confirmed > lsn {
                    conn.close();
                    return Err(Error::fatal(format!(
                        "stream `{stream}`: slot `{}` was confirmed up to {}, past this pipeline's position {}: another consumer took changes from it; give the pipeline a slot of its own and reset its state",
                        reader.options.slot,
                        format_lsn(slot.confirmed),
                        format_lsn(lsn)
                    )));
                }
                conn.close();
                reader.delivered = lsn;
                reader.acked = lsn.max(slot.confirmed);
                reader.skip = skip;
                reader.start_stream(lsn)?;
            }
            (Some((lsn, _)), None) => {
                conn.close();
                return Err(Error::fatal(format!(
                    "stream `{stream}`: replication slot `{}` is missing, and with it the changes after {}; reset this pipeline's state to take a new snapshot",
                    reader.options.slot,
                    format_lsn(lsn)
                )));
            }
            (None, existing) => {
                if existing.is_some() {
                    let why = if start.is_some() {
                        "the initial snapshot was interrupted; it is taken again, and the rows it had delivered come again"
                    } else {
                        "this pipeline's state holds no position in it"
                    };
                    log(
                        Level::Warn,
                        &format!(
                            "stream `{stream}`: slot `{}` exists but {why}: it is dropped and created again with a new snapshot",
                            reader.options.slot
                        ),
                    );
                    conn.query(&format!(
                        "SELECT pg_drop_replication_slot({})",
                        literal(&reader.options.slot)
                    ))
                    .map_err(|e| {
                        e.into_plugin_error(format_args!(
                            "stream `{stream}`: dropping slot `{}`",
                            reader.options.slot
                        ))
                    })?;
                }
                conn.close();
                reader.start_snapshot()?;
            }
        }
        Ok(reader)
    }

    /// Create the slot and start reading the table from the snapshot it exported.
    fn start_snapshot(&mut self) -> Result<()> {
        let stream = self.plan.name.clone();
        let created = self
            .repl
            .create_logical_slot(&self.options.slot)
            .map_err(|e| {
                e.into_plugin_error(format_args!(
                    "stream `{stream}`: creating replication slot `{}`",
                    self.options.slot
                ))
            })?;
        let mut conn = self.settings.connect(crate::APPLICATION)?;
        let at = |what: &'static str| {
            let stream = stream.clone();
            move |e: PgError| e.into_plugin_error(format_args!("stream `{stream}`: {what}"))
        };
        conn.query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .map_err(at("BEGIN"))?;
        conn.query(&format!(
            "SET TRANSACTION SNAPSHOT {}",
            literal(&created.snapshot)
        ))
        .map_err(at("importing the slot's snapshot"))?;
        let select: Vec<String> = self.plan.columns.iter().map(|c| c.select_expr()).collect();
        let sql = format!(
            "COPY (SELECT {} FROM {}) TO STDOUT (FORMAT binary)",
            select.join(", "),
            self.plan.relation
        );
        conn.copy_out_start(&sql)
            .map_err(|e| e.into_plugin_error(format_args!("stream `{stream}`: {sql}")))?;
        log(
            Level::Info,
            &format!(
                "stream `{stream}`: slot `{}` created at {}; reading the table's snapshot",
                self.options.slot,
                format_lsn(created.consistent_point)
            ),
        );
        self.snapshot = Some(Snapshot {
            conn,
            decoder: Decoder::new(&table_columns(&self.plan)),
            lsn: created.consistent_point,
        });
        Ok(())
    }

    /// Stream the slot from `lsn`.
    fn start_stream(&mut self, lsn: u64) -> Result<()> {
        self.repl
            .start_logical_replication(&self.options.slot, lsn, &self.options.publication)
            .map_err(|e| {
                e.into_plugin_error(format_args!(
                    "stream `{}`: streaming slot `{}` from {}",
                    self.plan.name,
                    self.options.slot,
                    format_lsn(lsn)
                ))
            })?;
        self.delivered = lsn;
        self.received = self.received.max(lsn);
        Ok(())
    }

    /// The next chunk: of the snapshot while it lasts, then of the stream. A CDC stream
    /// never ends.
    pub fn next(&mut self, max_rows: usize) -> Result<Option<Chunk>> {
        if let Some(e) = self.pending.take() {
            return Err(e);
        }
        if self.snapshot.is_some() {
            return self.next_of_snapshot(max_rows).map(Some);
        }
        let stream = self.plan.name.clone();
        let wire = |e: PgError| e.into_plugin_error(format_args!("stream `{stream}`"));
        let started = Instant::now();
        while self.rows.len() < max_rows {
            if self.last_status.elapsed() >= STATUS_EVERY {
                self.send_status(false).map_err(wire)?;
            }
            let Some(message) = self.repl.replication_try_next().map_err(wire)? else {
                // Nothing has arrived: hand on what this call gathered once its time is up.
                if started.elapsed() >= CHUNK_TIME {
                    break;
                }
                std::thread::sleep(POLL_WAIT);
                continue;
            };
            match message {
                WalMessage::Keepalive { end, reply } => {
                    self.received = self.received.max(end);
                    // Everything before `end` was sent: with no transaction open, the
                    // stream stands at `end`.
                    if self.txn.is_none() && end > self.delivered {
                        self.delivered = end;
                    }
                    if reply {
                        self.send_status(false).map_err(wire)?;
                    }
                }
                WalMessage::Data { end, body, .. } => {
                    self.received = self.received.max(end);
                    if let Err(e) = self.apply(body) {
                        if self.rows.len() == 0 {
                            return Err(e);
                        }
                        self.pending = Some(e);
                        break;
                    }
                }
            }
        }
        let batch = self.rows.finish(&self.plan)?;
        Ok(Some(Chunk {
            batch,
            position: self.position(),
            rejects: Vec::new(),
        }))
    }

    /// The position after the rows handed out so far.
    fn position(&self) -> Vec<u8> {
        let skip = self.txn.as_ref().map_or(0, |t| t.changes);
        serde_json::to_vec(&CdcPosition {
            slot: self.options.slot.clone(),
            lsn: Some(format_lsn(self.delivered)),
            skip,
        })
        .expect("a position serialises")
    }

    /// The host made `position` durable: confirm it to the slot.
    pub fn ack(&mut self, position: &[u8]) {
        let Ok(p) = serde_json::from_slice::<CdcPosition>(position) else {
            return;
        };
        let Some(lsn) = p.lsn.as_deref().and_then(parse_lsn) else {
            return;
        };
        if lsn > self.acked {
            self.acked = lsn;
            if self.snapshot.is_none() {
                // A failure shows on the next read, which retries from the checkpoint.
                let _ = self.send_status(false);
            }
        }
    }

    /// Tell the server what the stream received and what is durable (the slot's confirmed
    /// flush LSN).
    fn send_status(&mut self, reply: bool) -> std::result::Result<(), PgError> {
        self.last_status = Instant::now();
        self.repl.send_status(self.received, self.acked, reply)
    }

    fn next_of_snapshot(&mut self, max_rows: usize) -> Result<Chunk> {
        let stream = self.plan.name.clone();
        let snapshot = self.snapshot.as_mut().expect("reading the snapshot");
        let complete =
            crate::read_copy_chunk(&mut snapshot.conn, &mut snapshot.decoder, max_rows, &stream)?;
        let part = snapshot
            .decoder
            .finish(self.rows.table.clone())
            .map_err(|e| Error::fatal(format!("stream `{stream}`: {e}")))?;
        let rows = part.num_rows();
        let lsn = snapshot.lsn;
        let mut columns: Vec<ArrayRef> = part.columns().to_vec();
        columns.push(Arc::new(arrow_array::StringArray::from(vec![
            "insert";
            rows
        ])));
        columns.push(Arc::new(arrow_array::Int64Array::from(vec![
            lsn as i64;
            rows
        ])));
        columns.push(Arc::new(
            arrow_array::TimestampMicrosecondArray::from(vec![None; rows]).with_timezone(UTC),
        ));
        if let Ok(field) = self.plan.schema.field_with_name(BEFORE) {
            columns.push(arrow_array::new_null_array(field.data_type(), rows));
        }
        let batch = RecordBatch::try_new(self.plan.schema.clone(), columns)
            .map_err(|e| Error::fatal(format!("stream `{stream}`: {e}")))?;
        let position = if complete {
            let snapshot = self.snapshot.take().expect("reading the snapshot");
            snapshot.conn.close();
            log(
                Level::Info,
                &format!(
                    "stream `{stream}`: the snapshot is read; streaming changes from {}",
                    format_lsn(lsn)
                ),
            );
            self.start_stream(lsn)?;
            self.acked = lsn;
            self.position()
        } else {
            serde_json::to_vec(&CdcPosition {
                slot: self.options.slot.clone(),
                lsn: None,
                skip: 0,
            })
            .expect("a position serialises")
        };
        Ok(Chunk {
            batch,
            position,
            rejects: Vec::new(),
        })
    }

    /// Take in one pgoutput message.
    fn apply(&mut self, body: Bytes) -> Result<()> {
        let message = pgoutput::decode(body)
            .map_err(|e| e.into_plugin_error(format_args!("stream `{}`", self.plan.name)))?;
        match message {
            Message::Begin {
                final_lsn,
                commit_ts,
                ..
            } => {
                self.txn = Some(Txn {
                    lsn: final_lsn,
                    commit_ts,
                    changes: 0,
                });
            }
            Message::Commit { end_lsn, .. } => {
                self.txn = None;
                self.skip = 0;
                self.delivered = self.delivered.max(end_lsn);
            }
            Message::Relation(r) => {
                let mapping = self.map(&r)?;
                self.relations.insert(r.id, mapping);
            }
            Message::Insert { relation, new } => {
                if self.take_change(relation)? {
                    self.emit(relation, "insert", &new, None)?;
                }
            }
            Message::Update { relation, old, new } => {
                if self.take_change(relation)? {
                    let old_full = match &old {
                        Some((OldKind::Full, t)) => Some(t),
                        _ => None,
                    };
                    if let Some((_, old)) = &old {
                        if self.key_of(relation, old) != self.key_of(relation, &new) {
                            self.emit(relation, "delete", old, None)?;
                        }
                    }
                    self.emit(relation, "update", &new, old_full)?;
                }
            }
            Message::Delete { relation, old } => {
                if self.take_change(relation)? {
                    let image = (old.0 == OldKind::Full).then_some(&old.1);
                    self.emit(relation, "delete", &old.1, image)?;
                }
            }
            Message::Truncate { relations, .. } => {
                if relations
                    .iter()
                    .any(|r| self.relations.get(r).is_some_and(|m| m.ours))
                {
                    let lsn = self.txn.as_ref().map_or(self.delivered, |t| t.lsn);
                    return Err(Error::fatal(format!(
                        "stream `{}`: table {}.{} was truncated at {}; a change stream cannot carry that as rows. Reset this pipeline's state to take a new snapshot (and empty the target)",
                        self.plan.name,
                        self.table.0,
                        self.table.1,
                        format_lsn(lsn)
                    )));
                }
            }
            Message::Other(_) => {}
        }
        Ok(())
    }

    /// Count a change of `relation` in the open transaction; false when it is not ours
    /// or an earlier run delivered it.
    fn take_change(&mut self, relation: u32) -> Result<bool> {
        let ours = match self.relations.get(&relation) {
            Some(m) => m.ours,
            None => {
                return Err(Error::fatal(format!(
                    "stream `{}`: a change names relation {relation}, which no Relation message described",
                    self.plan.name
                )))
            }
        };
        if !ours {
            return Ok(false);
        }
        let txn = self.txn.as_mut().ok_or_else(|| {
            Error::fatal(format!(
                "stream `{}`: a change arrived outside a transaction",
                self.plan.name
            ))
        })?;
        txn.changes += 1;
        Ok(txn.changes > self.skip)
    }

    /// The key values of `tuple`.
    fn key_of<'a>(&self, relation: u32, tuple: &'a Tuple) -> Vec<Option<&'a [u8]>> {
        let Some(m) = self.relations.get(&relation) else {
            return Vec::new();
        };
        m.key.iter().map(|i| value_bytes(tuple.get(*i))).collect()
    }

    /// Add one row of `tuple` with `op`; `old` (a whole old row) fills values the server
    /// left out and is the row's before-image.
    fn emit(&mut self, relation: u32, op: &str, tuple: &Tuple, old: Option<&Tuple>) -> Result<()> {
        let mapping = &self.relations[&relation];
        let before: Option<Vec<Option<&[u8]>>> = old.map(|o| {
            let mut image = vec![None; self.plan.columns.len()];
            for (i, value) in o.iter().enumerate() {
                if let Some(&column) = mapping.to_column.get(i) {
                    image[column] = value_bytes(Some(value));
                }
            }
            image
        });
        let mut values: Vec<Option<&[u8]>> = vec![None; self.plan.columns.len()];
        for (i, value) in tuple.iter().enumerate() {
            let Some(&column) = mapping.to_column.get(i) else {
                continue;
            };
            values[column] = match value {
                Value::Unchanged => match old.map(|o| &o[i]) {
                    Some(Value::Binary(b)) | Some(Value::Text(b)) => Some(b.as_ref()),
                    Some(Value::Null) => None,
                    _ => {
                        return Err(Error::fatal(format!(
                            "stream `{}`: column `{}` of an updated row holds a large (TOASTed) value the update did not change, and the server does not send it; set REPLICA IDENTITY FULL on {}.{} so that updates carry it",
                            self.plan.name,
                            self.plan.columns[column].name,
                            self.table.0,
                            self.table.1
                        )))
                    }
                },
                other => value_bytes(Some(other)),
            };
        }
        let txn = self.txn.as_ref().expect("a change is in a transaction");
        let (lsn, ts) = (txn.lsn, txn.commit_ts);
        self.rows
            .push(&values, before.as_deref(), op, lsn, Some(ts))
            .map_err(|e| Error::fatal(format!("stream `{}`: {e}", self.plan.name)))
    }

    /// How the columns of relation `r` land in the stream's columns.
    fn map(&self, r: &Relation) -> Result<Mapping> {
        let ours = r.namespace == self.table.0 && r.name == self.table.1;
        if !ours {
            return Ok(Mapping {
                ours,
                to_column: Vec::new(),
                key: Vec::new(),
            });
        }
        let mut to_column = Vec::with_capacity(r.columns.len());
        for c in &r.columns {
            let Some(i) = self.plan.columns.iter().position(|p| p.name == c.name) else {
                let at = self.txn.as_ref().map_or(self.delivered, |t| t.lsn);
                return Err(Error::fatal(format!(
                    "stream `{}`: table {}.{} changed at {}: column `{}` is not in the stream's schema. The run stops before that change; run it again to take the new schema through [schema] on_change",
                    self.plan.name,
                    self.table.0,
                    self.table.1,
                    format_lsn(at),
                    c.name
                )));
            };
            if self.plan.columns[i].as_text {
                return Err(Error::config(format!(
                    "stream `{}`: column `{}` has a type without an Arrow mapping ({}), which CDC cannot read as text; leave the column out of the publication or cast it in the table",
                    self.plan.name, c.name, self.plan.columns[i].type_name
                )));
            }
            to_column.push(i);
        }
        let key = self
            .plan
            .primary_key
            .iter()
            .filter_map(|k| r.columns.iter().position(|c| &c.name == k))
            .collect();
        Ok(Mapping {
            ours,
            to_column,
            key,
        })
    }
}

fn value_bytes(value: Option<&Value>) -> Option<&[u8]> {
    match value {
        Some(Value::Binary(b)) | Some(Value::Text(b)) => Some(b.as_ref()),
        _ => None,
    }
}

/// A replication session of `settings`.
fn replication_connection(settings: &Settings) -> Result<Connection> {
    settings.connect_replication(APPLICATION)
}

/// What the catalog says of a slot.
struct SlotState {
    confirmed: u64,
    lost: bool,
}

/// The slot named `slot`, once no other session holds it (a run killed a moment ago may
/// still, briefly); none when it does not exist.
fn wait_for_slot(conn: &mut Connection, stream: &str, slot: &str) -> Result<Option<SlotState>> {
    let started = std::time::Instant::now();
    loop {
        let rows = conn
            .query(&format!(
                "SELECT active_pid, confirmed_flush_lsn, wal_status, plugin, database FROM pg_catalog.pg_replication_slots WHERE slot_name = {}",
                literal(slot)
            ))
            .map_err(|e| e.into_plugin_error(format_args!("stream `{stream}`: looking up slot `{slot}`")))?;
        let Some(row) = rows.rows.first() else {
            return Ok(None);
        };
        let get = |i: usize| row.get(i).cloned().flatten();
        if let Some(pid) = get(0) {
            if started.elapsed() < SLOT_RELEASE {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            return Err(Error::Transient {
                message: format!(
                    "stream `{stream}`: replication slot `{slot}` is in use by another session (pid {pid}); a slot has one consumer. Stop the other consumer, or give this pipeline a slot of its own"
                ),
                retry_after_ms: Some(1000),
            });
        }
        if get(3).as_deref() != Some("pgoutput") {
            return Err(Error::config(format!(
                "stream `{stream}`: replication slot `{slot}` uses output plugin {:?}; a CDC stream needs a pgoutput slot of its own",
                get(3).unwrap_or_default()
            )));
        }
        return Ok(Some(SlotState {
            confirmed: get(1).as_deref().and_then(parse_lsn).unwrap_or(0),
            lost: get(2).as_deref() == Some("lost"),
        }));
    }
}

/// The publication must exist and publish the stream's table.
fn check_publication(
    conn: &mut Connection,
    stream: &str,
    options: &CdcOptions,
    table: &(String, String),
) -> Result<()> {
    let publication = &options.publication;
    let rows = conn
        .query(&format!(
            "SELECT (SELECT count(*) FROM pg_catalog.pg_publication WHERE pubname = {p}), \
             (SELECT count(*) FROM pg_catalog.pg_publication_tables WHERE pubname = {p} AND schemaname = {s} AND tablename = {t}), \
             current_setting('wal_level')",
            p = literal(publication),
            s = literal(&table.0),
            t = literal(&table.1)
        ))
        .map_err(|e| e.into_plugin_error(format_args!("stream `{stream}`: looking up publication `{publication}`")))?;
    let row = rows.rows.first().cloned().unwrap_or_default();
    let get = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    let name = qualified(&table.0, &table.1);
    if get(2) != "logical" {
        return Err(Error::config(format!(
            "stream `{stream}`: the server runs with wal_level = {}; CDC needs wal_level = logical (ALTER SYSTEM SET wal_level = logical, then restart the server)",
            get(2)
        )));
    }
    if get(0) == "0" {
        return Err(Error::config(format!(
            "stream `{stream}`: publication `{publication}` does not exist; create it with CREATE PUBLICATION {} FOR TABLE {name}",
            postgres_client::sql::ident(publication)
        )));
    }
    if get(1) == "0" {
        return Err(Error::config(format!(
            "stream `{stream}`: publication `{publication}` does not publish {name}; add it with ALTER PUBLICATION {} ADD TABLE {name}",
            postgres_client::sql::ident(publication)
        )));
    }
    Ok(())
}

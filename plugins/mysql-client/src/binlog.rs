//! The replica side of replication: checking that the server writes a row-based binary
//! log, registering as a replica (`COM_REGISTER_SLAVE`), asking for the log from a file and
//! offset (`COM_BINLOG_DUMP`, with heartbeats while the log is idle), and the framing of
//! the events that follow: each event's header, its body, its checksum taken off.

use std::time::Duration;

use bitvec::slice::BitSlice;
use mysql_common::binlog::events::TableMapEvent;
use mysql_common::binlog::row::BinlogRow;
use mysql_common::io::ParseBuf;

use crate::conn::{server_error, Connection, MyError};
use crate::packet::Reader;

/// Event types this client names.
pub mod kind {
    pub const QUERY: u8 = 2;
    pub const ROTATE: u8 = 4;
    pub const FORMAT_DESCRIPTION: u8 = 15;
    pub const XID: u8 = 16;
    pub const TABLE_MAP: u8 = 19;
    pub const WRITE_ROWS_V1: u8 = 23;
    pub const UPDATE_ROWS_V1: u8 = 24;
    pub const DELETE_ROWS_V1: u8 = 25;
    pub const HEARTBEAT: u8 = 27;
    pub const WRITE_ROWS: u8 = 30;
    pub const UPDATE_ROWS: u8 = 31;
    pub const DELETE_ROWS: u8 = 32;
    /// MariaDB: the SQL of the rows events that follow (with `binlog_annotate_row_events`).
    pub const ANNOTATE_ROWS: u8 = 160;
    /// MariaDB: a transaction's global id.
    pub const MARIADB_GTID: u8 = 162;
}

/// Where in the binary log: a file and an offset in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPosition {
    pub file: String,
    pub offset: u32,
}

/// One event of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Seconds since 1970 when the statement began.
    pub timestamp: u32,
    pub kind: u8,
    pub server_id: u32,
    /// The offset of the next event in the current log file (0 for artificial events).
    pub next_offset: u32,
    pub flags: u16,
    /// The whole event as the log holds it (header, body, checksum), for a full parser
    /// such as `mysql_common::binlog::EventStreamReader`.
    pub raw: Vec<u8>,
    /// Where the body ends in `raw` (before the checksum).
    body_end: usize,
}

impl Event {
    /// The event after its 19-byte header, without its checksum.
    pub fn body(&self) -> &[u8] {
        &self.raw[HEADER..self.body_end]
    }
}

/// The header every event starts with.
const HEADER: usize = 19;

/// The binary log's settings, checked for change data capture.
pub fn check_row_logging(conn: &mut Connection) -> Result<(), String> {
    let rows = conn
        .query("SELECT @@global.log_bin, @@global.binlog_format, @@global.binlog_row_image")
        .map_err(|e| format!("reading the binary log's settings: {e}"))?;
    let row = rows.rows.first().cloned().unwrap_or_default();
    let get = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    let problems = row_logging_problems(&get(0), &get(1), &get(2));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// What is wrong with these settings for change data capture, each with its fix.
pub fn row_logging_problems(log_bin: &str, format: &str, image: &str) -> Vec<String> {
    let mut out = Vec::new();
    if log_bin != "1" && !log_bin.eq_ignore_ascii_case("ON") {
        out.push("the server writes no binary log (log_bin is OFF); set log_bin in its config and restart it".to_string());
    }
    if !format.eq_ignore_ascii_case("ROW") {
        out.push(format!(
            "binlog_format is {format}; change data capture needs binlog_format = ROW (SET GLOBAL binlog_format = ROW, and in the server's config)"
        ));
    }
    if !image.is_empty() && !image.eq_ignore_ascii_case("FULL") {
        out.push(format!(
            "binlog_row_image is {image}; change data capture needs whole rows: binlog_row_image = FULL"
        ));
    }
    out
}

impl Connection {
    /// Where the server is writing its binary log now.
    pub fn log_position(&mut self) -> Result<LogPosition, MyError> {
        let rows = self.query("SHOW MASTER STATUS")?;
        let file = rows.first("File").map(str::to_string);
        let offset = rows.first("Position").and_then(|p| p.parse().ok());
        match (file, offset) {
            (Some(file), Some(offset)) => Ok(LogPosition { file, offset }),
            _ => Err(MyError::Protocol(
                "SHOW MASTER STATUS shows no binary log; is log_bin on?".into(),
            )),
        }
    }

    /// Start a transaction that reads one snapshot of every table, and return the place in
    /// the binary log that snapshot stands at (MariaDB's `binlog_snapshot_file` and
    /// `binlog_snapshot_position`): streaming the log from there gives exactly the changes
    /// the snapshot does not hold. The session stays in the transaction until `COMMIT`.
    pub fn start_snapshot(&mut self) -> Result<LogPosition, MyError> {
        self.query("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")?;
        self.query("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")?;
        let rows = self.query("SHOW STATUS LIKE 'binlog_snapshot_%'")?;
        let value = |name: &str| {
            rows.rows
                .iter()
                .find(|r| r.first().cloned().flatten().as_deref() == Some(name))
                .and_then(|r| r.get(1).cloned().flatten())
        };
        match (
            value("Binlog_snapshot_file"),
            value("Binlog_snapshot_position").and_then(|p| p.parse().ok()),
        ) {
            (Some(file), Some(offset)) if !file.is_empty() => Ok(LogPosition { file, offset }),
            _ => Err(MyError::Protocol(
                "the server gives no binlog_snapshot_file/position (a MariaDB with log_bin on does)".into(),
            )),
        }
    }

    /// Register as replica `server_id` and stream the log from `from`. The server sends a
    /// heartbeat event after `heartbeat` without events. Returns whether events carry a
    /// CRC32 checksum (taken off by [`Connection::next_event`]).
    pub fn start_binlog(
        &mut self,
        server_id: u32,
        from: &LogPosition,
        heartbeat: Duration,
    ) -> Result<BinlogStream, MyError> {
        let checksum = self
            .query("SELECT @@global.binlog_checksum")?
            .scalar()
            .unwrap_or("NONE")
            .to_string();
        // The server sends checksums only to a replica that says it reads them.
        self.query(&format!("SET @master_binlog_checksum = '{checksum}'"))?;
        // MariaDB: a replica that understands GTID events (and is sent them).
        let _ = self.query("SET @mariadb_slave_capability = 4");
        self.query(&format!(
            "SET @master_heartbeat_period = {}",
            heartbeat.as_nanos()
        ))?;
        let mut register = Vec::new();
        register.extend_from_slice(&server_id.to_le_bytes());
        for field in ["ingest", "", ""] {
            register.push(field.len() as u8);
            register.extend_from_slice(field.as_bytes());
        }
        register.extend_from_slice(&0u16.to_le_bytes()); // port
        register.extend_from_slice(&0u32.to_le_bytes()); // rank
        register.extend_from_slice(&0u32.to_le_bytes()); // master id
        self.command(0x15, &register)?;
        let reply = self.packet()?;
        if reply.first() == Some(&0xff) {
            return Err(server_error(&reply));
        }
        let mut dump = Vec::new();
        dump.extend_from_slice(&from.offset.to_le_bytes());
        dump.extend_from_slice(&0u16.to_le_bytes()); // flags: wait for more at the end
        dump.extend_from_slice(&server_id.to_le_bytes());
        dump.extend_from_slice(from.file.as_bytes());
        self.command(0x12, &dump)?;
        Ok(BinlogStream {
            checksum: !checksum.eq_ignore_ascii_case("NONE"),
        })
    }
}

/// One changed row: its image before the change (updates, deletes) and after it
/// (inserts, updates).
pub type RowImages = (Option<BinlogRow>, Option<BinlogRow>);

/// The rows of a rows event (`body`, of event type `kind`), each as its before-image
/// (updates, deletes) and after-image (inserts, updates), read with the columns `tme`
/// describes by `mysql_common`'s row reader.
///
/// The event's header (table id, flags, the extra data of v2 events, the column count and
/// the bitmaps of the columns each image holds) is read here: `mysql_common`'s own reader
/// keeps the bitmaps under a length cap (0x2000000000000000) that wraps to 0 where `usize`
/// has 32 bits, as in a wasm32 plugin, and would see no columns.
pub fn rows_of(kind: u8, body: &[u8], tme: &TableMapEvent<'_>) -> Result<Vec<RowImages>, MyError> {
    let bad = |e: std::io::Error| MyError::Protocol(format!("a rows event: {e}"));
    let mut r = Reader::new(body);
    r.bytes(6)?; // table id
    r.u16()?; // flags
    if matches!(
        kind,
        kind::WRITE_ROWS | kind::UPDATE_ROWS | kind::DELETE_ROWS
    ) {
        let extra = r.u16()? as usize; // its own two bytes included
        r.bytes(extra.saturating_sub(2))?;
    }
    let columns = r
        .lenenc()?
        .ok_or_else(|| MyError::Protocol("a rows event without a column count".into()))?;
    let width = (columns as usize).div_ceil(8);
    let (before, after) = match kind {
        kind::UPDATE_ROWS_V1 | kind::UPDATE_ROWS => (Some(r.bytes(width)?), Some(r.bytes(width)?)),
        kind::DELETE_ROWS_V1 | kind::DELETE_ROWS => (Some(r.bytes(width)?), None),
        _ => (None, Some(r.bytes(width)?)),
    };
    let before = before.map(|b| &BitSlice::<u8>::from_slice(b)[..columns as usize]);
    let after = after.map(|b| &BitSlice::<u8>::from_slice(b)[..columns as usize]);
    let mut data = ParseBuf(r.rest());
    let mut out = Vec::new();
    while !data.0.is_empty() {
        let old = match before {
            Some(b) => Some(
                data.parse::<BinlogRow>((columns, b, false, tme))
                    .map_err(bad)?,
            ),
            None => None,
        };
        let new = match after {
            Some(b) => Some(
                data.parse::<BinlogRow>((columns, b, false, tme))
                    .map_err(bad)?,
            ),
            None => None,
        };
        out.push((old, new));
    }
    Ok(out)
}

/// How the events of a dump are framed.
#[derive(Debug, Clone, Copy)]
pub struct BinlogStream {
    /// Events end with a 4-byte CRC32.
    pub checksum: bool,
}

impl BinlogStream {
    /// The next event, waiting for it.
    pub fn next(&self, conn: &mut Connection) -> Result<Event, MyError> {
        let packet = conn.packet()?;
        self.event(packet)
    }

    /// The next event if it has arrived, without waiting.
    pub fn try_next(&self, conn: &mut Connection) -> Result<Option<Event>, MyError> {
        if !conn.packet_ready()? {
            return Ok(None);
        }
        self.next(conn).map(Some)
    }

    fn event(&self, mut packet: Vec<u8>) -> Result<Event, MyError> {
        match packet.first() {
            Some(0x00) => {}
            Some(0xff) => return Err(server_error(&packet)),
            // The server stops sending (it shuts down, or the session was killed): a
            // connection that ended, to be opened again.
            Some(0xfe) => {
                return Err(MyError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the server ended the binary log stream",
                )))
            }
            _ => {
                return Err(MyError::Protocol(
                    "unexpected packet in the binary log stream".into(),
                ))
            }
        }
        let data = &packet[1..];
        if data.len() < HEADER {
            return Err(MyError::Protocol("an event shorter than its header".into()));
        }
        let mut r = Reader::new(data);
        let timestamp = r.u32()?;
        let kind = r.u8()?;
        let server_id = r.u32()?;
        let size = r.u32()? as usize;
        let next_offset = r.u32()?;
        let flags = r.u16()?;
        if size != data.len() {
            return Err(MyError::Protocol(format!(
                "an event says it has {size} bytes and has {}",
                data.len()
            )));
        }
        let end = if self.checksum {
            size.saturating_sub(4)
        } else {
            size
        };
        // The packet's first byte (OK) goes; the event stays in the packet's buffer.
        packet.remove(0);
        Ok(Event {
            timestamp,
            kind,
            server_id,
            next_offset,
            flags,
            raw: packet,
            body_end: end.max(HEADER),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::ConnectParams;
    use mysql_common::binlog::consts::BinlogVersion;
    use mysql_common::binlog::events::EventData;
    use mysql_common::binlog::value::BinlogValue;
    use mysql_common::binlog::EventStreamReader;
    use mysql_common::value::Value;
    use std::time::Instant;

    fn connect() -> Connection {
        Connection::connect(&ConnectParams {
            host: "127.0.0.1".into(),
            port: 3306,
            user: "root".into(),
            password: None,
            database: None,
        })
        .unwrap_or_else(|e| {
            panic!("MariaDB does not answer on 127.0.0.1:3306 as root ({e}); run scripts/mariadb-setup")
        })
    }

    #[test]
    fn a_snapshot_and_the_log_from_its_position_hold_each_change_once() {
        let mut c = connect();
        let db = format!("ingest_snapshot_{}", std::process::id());
        c.query(&format!("CREATE DATABASE {db}")).unwrap();
        c.query(&format!("CREATE TABLE {db}.t (id int PRIMARY KEY)"))
            .unwrap();
        c.query(&format!("INSERT INTO {db}.t VALUES (1)")).unwrap();
        let mut reader = connect();
        let at = reader.start_snapshot().unwrap();
        // A change after the snapshot: not in it, and in the log after its position.
        c.query(&format!("INSERT INTO {db}.t VALUES (2)")).unwrap();
        let seen = reader
            .query(&format!("SELECT id FROM {db}.t ORDER BY id"))
            .unwrap();
        assert_eq!(seen.rows, [[Some("1".to_string())]]);
        reader.query("COMMIT").unwrap();

        let mut replica = connect();
        let stream = replica
            .start_binlog(
                4_200_000 + std::process::id() % 100_000,
                &at,
                Duration::from_millis(200),
            )
            .unwrap();
        let mut parser = EventStreamReader::new(BinlogVersion::Version4);
        let mut ids = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut heartbeat = false;
        while Instant::now() < deadline && !heartbeat {
            let Some(event) = stream.try_next(&mut replica).unwrap() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            heartbeat = event.kind == kind::HEARTBEAT;
            let Some(parsed) = parser.read(&event.raw[..]).unwrap() else {
                continue;
            };
            if let Some(EventData::RowsEvent(rows)) = parsed.read_data().unwrap() {
                let tme = parser.get_tme(rows.table_id()).unwrap();
                if tme.database_name() == db {
                    for row in rows.rows(tme) {
                        ids.push(row.unwrap().1.unwrap().unwrap()[0].clone());
                    }
                }
            }
        }
        c.query(&format!("DROP DATABASE {db}")).unwrap();
        assert_eq!(ids, [BinlogValue::Value(Value::Int(2))]);
    }

    #[test]
    fn settings_that_cannot_carry_rows_are_named_with_their_fix() {
        assert!(row_logging_problems("1", "ROW", "FULL").is_empty());
        let p = row_logging_problems("0", "MIXED", "MINIMAL").join("; ");
        for part in [
            "log_bin is OFF",
            "binlog_format is MIXED",
            "binlog_format = ROW",
            "binlog_row_image = FULL",
        ] {
            assert!(p.contains(part), "{part} missing from {p}");
        }
    }

    #[test]
    fn a_replica_sees_a_rows_event_for_an_insert_and_heartbeats_while_idle() {
        let mut c = connect();
        check_row_logging(&mut c).unwrap_or_else(|e| panic!("{e}; run scripts/mariadb-setup"));
        let db = format!("ingest_binlog_{}", std::process::id());
        c.query(&format!("CREATE DATABASE {db}")).unwrap();
        c.query(&format!(
            "CREATE TABLE {db}.t (id int PRIMARY KEY, note text)"
        ))
        .unwrap();
        let from = c.log_position().unwrap();

        let mut replica = connect();
        let stream = replica
            .start_binlog(
                4_000_000 + std::process::id() % 100_000,
                &from,
                Duration::from_millis(200),
            )
            .unwrap();
        c.query(&format!("INSERT INTO {db}.t VALUES (1, 'one')"))
            .unwrap();

        // The log is the server's: other sessions' events come too. Ours are told by the
        // table id our table map gives.
        let mut kinds = Vec::new();
        let mut parser = EventStreamReader::new(BinlogVersion::Version4);
        let mut decoded = Vec::new();
        let mut ours = None;
        let mut inserted = false;
        let mut heartbeat = false;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && !heartbeat {
            let Some(event) = stream.try_next(&mut replica).unwrap() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            let table_id = event.body().get(..6).map(|b| b.to_vec());
            match event.kind {
                kind::TABLE_MAP => {
                    let mut r = Reader::new(event.body());
                    r.bytes(8).unwrap(); // table id (6) and flags (2)
                    let schema_len = r.u8().unwrap() as usize;
                    if r.bytes(schema_len).unwrap() == db.as_bytes() {
                        ours = table_id;
                    }
                }
                kind::WRITE_ROWS_V1 | kind::WRITE_ROWS if ours.is_some() && table_id == ours => {
                    inserted = true;
                }
                _ => {}
            }
            // mysql_common reads the same events into rows.
            if let Some(parsed) = parser.read(&event.raw[..]).unwrap() {
                if let Some(EventData::RowsEvent(rows)) = parsed.read_data().unwrap() {
                    let tme = parser.get_tme(rows.table_id()).unwrap();
                    if tme.database_name() == db {
                        for row in rows.rows(tme) {
                            let (_, after) = row.unwrap();
                            decoded.push(after.unwrap().unwrap());
                        }
                    }
                }
            }
            heartbeat = event.kind == kind::HEARTBEAT && inserted;
            kinds.push(event.kind);
        }
        c.query(&format!("DROP DATABASE {db}")).unwrap();
        assert!(kinds.contains(&kind::FORMAT_DESCRIPTION), "{kinds:?}");
        assert!(ours.is_some(), "no table map of our table: {kinds:?}");
        assert!(inserted, "no rows event of our table: {kinds:?}");
        assert_eq!(
            decoded,
            [vec![
                BinlogValue::Value(Value::Int(1)),
                BinlogValue::Value(Value::Bytes(b"one".to_vec()))
            ]]
        );
        assert!(kinds.contains(&kind::XID), "{kinds:?}");
        assert!(heartbeat, "no heartbeat while the log was idle: {kinds:?}");
    }
}

//! One connection to a MySQL or MariaDB server over a blocking TCP socket (std::net, which
//! a wasm32-wasip2 plugin reaches through its `net` grant): the handshake,
//! `mysql_native_password` authentication (with the server's switch requests), and text
//! queries (`COM_QUERY`) with their result sets.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use sha1::{Digest, Sha1};

use crate::packet::{put_lenenc, Reader, Short, MAX_PAYLOAD};

const CLIENT_LONG_PASSWORD: u32 = 1;
const CLIENT_LONG_FLAG: u32 = 4;
const CLIENT_CONNECT_WITH_DB: u32 = 8;
const CLIENT_PROTOCOL_41: u32 = 0x200;
const CLIENT_TRANSACTIONS: u32 = 0x2000;
const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
const CLIENT_MULTI_RESULTS: u32 = 0x2_0000;
const CLIENT_PLUGIN_AUTH: u32 = 0x8_0000;
const CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 0x20_0000;

/// utf8mb4_general_ci.
const UTF8MB4: u8 = 45;

const NATIVE_PASSWORD: &str = "mysql_native_password";

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct ConnectParams {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    /// The database to use; none for a session without one (replication).
    pub database: Option<String>,
}

impl ConnectParams {
    /// `host:port` as the plugin's `net` grant must name it.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// What can go wrong talking to the server.
#[derive(Debug)]
pub enum MyError {
    /// The server could not be reached.
    Connect {
        address: String,
        source: io::Error,
    },
    Io(io::Error),
    /// The server answered with an error packet.
    Server {
        code: u16,
        state: String,
        message: String,
    },
    /// The server sent something this client does not understand.
    Protocol(String),
    /// Authentication cannot go on (an unsupported method, a missing password).
    Auth(String),
}

impl std::fmt::Display for MyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MyError::Connect { address, source } => {
                write!(f, "cannot connect to {address}: {source}")
            }
            MyError::Io(e) => write!(f, "{e}"),
            MyError::Server {
                code,
                state,
                message,
            } => write!(f, "{message} (error {code}, SQLSTATE {state})"),
            MyError::Protocol(m) => write!(f, "protocol error: {m}"),
            MyError::Auth(m) => write!(f, "authentication failed: {m}"),
        }
    }
}

impl std::error::Error for MyError {}

impl From<io::Error> for MyError {
    fn from(e: io::Error) -> MyError {
        MyError::Io(e)
    }
}

impl From<Short> for MyError {
    fn from(_: Short) -> MyError {
        MyError::Protocol("a packet ends early".into())
    }
}

/// The result of a text query: column names and rows of text values (`None` for NULL).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
    /// Rows changed, for a statement without a result set.
    pub affected: u64,
}

impl Rows {
    /// The single value of a one-row, one-column result.
    pub fn scalar(&self) -> Option<&str> {
        self.rows.first()?.first()?.as_deref()
    }

    /// The value of column `name` in the first row.
    pub fn first(&self, name: &str) -> Option<&str> {
        let i = self
            .columns
            .iter()
            .position(|c| c.eq_ignore_ascii_case(name))?;
        self.rows.first()?.get(i)?.as_deref()
    }
}

/// What a result set says of one of its columns (the protocol's column definition).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WireColumn {
    /// The protocol's type code (`MYSQL_TYPE_*`).
    pub type_code: u8,
    /// Column flags (`UNSIGNED_FLAG` 32, `BINARY_FLAG` 128, `ENUM_FLAG` 256, `SET_FLAG` 2048).
    pub flags: u16,
    /// The character set of the values (63: binary).
    pub charset: u16,
    /// The display length.
    pub length: u32,
    /// Digits after the point (DECIMAL scale, fractional seconds).
    pub decimals: u8,
}

/// The result of a text query with each value as the server's bytes.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RawRows {
    pub columns: Vec<String>,
    /// How the server describes each column.
    pub wire: Vec<WireColumn>,
    pub rows: Vec<Vec<Option<Vec<u8>>>>,
    pub affected: u64,
}

/// An open, authenticated connection.
pub struct Connection {
    stream: TcpStream,
    read: Vec<u8>,
    /// The sequence id of the next packet of the exchange in progress.
    seq: u8,
    /// The server's version string (`10.11.6-MariaDB-…`).
    pub server_version: String,
    /// The server's id for this session, for `KILL`.
    pub connection_id: u32,
    /// A result set is being read part by part.
    reading: bool,
}

impl Connection {
    /// Connect, authenticate, and use `params.database` when given.
    pub fn connect(params: &ConnectParams) -> Result<Connection, MyError> {
        let stream = TcpStream::connect((params.host.as_str(), params.port)).map_err(|e| {
            MyError::Connect {
                address: params.address(),
                source: e,
            }
        })?;
        let _ = stream.set_nodelay(true);
        let mut conn = Connection {
            stream,
            read: Vec::with_capacity(64 * 1024),
            seq: 0,
            server_version: String::new(),
            connection_id: 0,
            reading: false,
        };
        conn.handshake(params)?;
        Ok(conn)
    }

    fn handshake(&mut self, params: &ConnectParams) -> Result<(), MyError> {
        let greeting = self.packet()?;
        if greeting.first() == Some(&0xff) {
            return Err(server_error(&greeting));
        }
        let mut r = Reader::new(&greeting);
        if r.u8()? != 10 {
            return Err(MyError::Protocol(
                "the server speaks a protocol other than 10".into(),
            ));
        }
        self.server_version = String::from_utf8_lossy(r.nul_str()?).into_owned();
        self.connection_id = r.u32()?;
        let mut scramble = r.bytes(8)?.to_vec();
        r.u8()?;
        let mut capabilities = u32::from(r.u16()?);
        let mut plugin = NATIVE_PASSWORD.to_string();
        if !r.is_empty() {
            let _charset = r.u8()?;
            let _status = r.u16()?;
            capabilities |= u32::from(r.u16()?) << 16;
            let data_len = r.u8()?;
            r.bytes(10)?;
            if capabilities & CLIENT_SECURE_CONNECTION != 0 {
                let n = (data_len as usize).saturating_sub(8).max(13);
                let part = r.bytes(n)?;
                // The part ends with a NUL that is not part of the scramble.
                scramble.extend_from_slice(&part[..n - 1]);
            }
            if capabilities & CLIENT_PLUGIN_AUTH != 0 {
                plugin = String::from_utf8_lossy(r.nul_str()?).into_owned();
            }
        }
        if capabilities & CLIENT_PROTOCOL_41 == 0 {
            return Err(MyError::Protocol(
                "the server is older than protocol 4.1".into(),
            ));
        }
        let mut flags = CLIENT_LONG_PASSWORD
            | CLIENT_LONG_FLAG
            | CLIENT_PROTOCOL_41
            | CLIENT_TRANSACTIONS
            | CLIENT_SECURE_CONNECTION
            | CLIENT_MULTI_RESULTS
            | CLIENT_PLUGIN_AUTH
            | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA;
        if params.database.is_some() {
            flags |= CLIENT_CONNECT_WITH_DB;
        }
        flags &= capabilities | CLIENT_PROTOCOL_41;
        let auth = auth_response(&plugin, params, &scramble)?;
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&(MAX_PAYLOAD as u32).to_le_bytes());
        out.push(UTF8MB4);
        out.extend_from_slice(&[0; 23]);
        out.extend_from_slice(params.user.as_bytes());
        out.push(0);
        put_lenenc(&mut out, auth.len() as u64);
        out.extend_from_slice(&auth);
        if let Some(db) = &params.database {
            out.extend_from_slice(db.as_bytes());
            out.push(0);
        }
        out.extend_from_slice(plugin.as_bytes());
        out.push(0);
        self.send(&out)?;
        loop {
            let reply = self.packet()?;
            match reply.first() {
                Some(0x00) => return Ok(()),
                Some(0xff) => return Err(server_error(&reply)),
                Some(0xfe) => {
                    // Switch to another method, with a new scramble.
                    let mut r = Reader::new(&reply[1..]);
                    let method = String::from_utf8_lossy(r.nul_str()?).into_owned();
                    let data = r.rest();
                    let data = data.strip_suffix(&[0]).unwrap_or(data);
                    let auth = auth_response(&method, params, data)?;
                    self.send(&auth)?;
                }
                Some(0x01) => {
                    return Err(MyError::Auth(format!(
                        "the server asks for more than {NATIVE_PASSWORD} offers (its method for user `{}` needs a secure channel); use {NATIVE_PASSWORD} for this user",
                        params.user
                    )))
                }
                _ => return Err(MyError::Protocol("unexpected reply to the handshake".into())),
            }
        }
    }

    /// Run one statement (the text protocol) and return its rows, or how many it changed.
    pub fn query(&mut self, sql: &str) -> Result<Rows, MyError> {
        let raw = self.query_raw(sql)?;
        Ok(Rows {
            columns: raw.columns,
            rows: raw
                .rows
                .into_iter()
                .map(|r| {
                    r.into_iter()
                        .map(|v| v.map(|v| String::from_utf8_lossy(&v).into_owned()))
                        .collect()
                })
                .collect(),
            affected: raw.affected,
        })
    }

    /// Run one statement and return its rows as the bytes the server sent (the text form
    /// of each value; binary strings as they are).
    pub fn query_raw(&mut self, sql: &str) -> Result<RawRows, MyError> {
        let mut out = self.query_start(sql)?;
        while self.query_more(&mut out, usize::MAX)? {}
        Ok(out)
    }

    /// Start a statement whose rows are read a part at a time with
    /// [`Connection::query_more`], so that a large result never sits in memory whole. The
    /// result holds the column names (or, for a statement without rows, the rows changed).
    /// Until the result is read to its end, the connection can run nothing else.
    pub fn query_start(&mut self, sql: &str) -> Result<RawRows, MyError> {
        self.command(0x03, sql.as_bytes())?;
        let first = self.packet()?;
        match first.first() {
            Some(0x00) => {
                let mut r = Reader::new(&first[1..]);
                let affected = r.lenenc()?.unwrap_or(0);
                self.reading = false;
                Ok(RawRows {
                    affected,
                    ..RawRows::default()
                })
            }
            Some(0xff) => Err(server_error(&first)),
            Some(0xfb) => Err(MyError::Protocol("LOAD DATA LOCAL is not supported".into())),
            _ => {
                let count = Reader::new(&first)
                    .lenenc()?
                    .ok_or_else(|| MyError::Protocol("a NULL column count".into()))?;
                let mut out = RawRows::default();
                for _ in 0..count {
                    let def = self.packet()?;
                    let mut r = Reader::new(&def);
                    for _ in 0..4 {
                        r.lenenc_bytes()?; // catalog, schema, table, original table
                    }
                    let name = r.lenenc_bytes()?.unwrap_or_default();
                    out.columns.push(String::from_utf8_lossy(name).into_owned());
                    r.lenenc_bytes()?; // original name
                    r.lenenc()?; // length of the fixed fields
                    out.wire.push(WireColumn {
                        charset: r.u16()?,
                        length: r.u32()?,
                        type_code: r.u8()?,
                        flags: r.u16()?,
                        decimals: r.u8()?,
                    });
                }
                self.expect_eof()?;
                self.reading = true;
                Ok(out)
            }
        }
    }

    /// Read up to `max` more rows of the statement [`Connection::query_start`] began into
    /// `out.rows` (which the caller may empty between calls). Returns false once the
    /// result is read to its end.
    pub fn query_more(&mut self, out: &mut RawRows, max: usize) -> Result<bool, MyError> {
        let mut taken = 0;
        while self.reading && taken < max {
            let row = self.packet()?;
            if row.first() == Some(&0xfe) && row.len() < 9 {
                self.reading = false;
                break;
            }
            if row.first() == Some(&0xff) {
                self.reading = false;
                return Err(server_error(&row));
            }
            let mut r = Reader::new(&row);
            let mut values = Vec::with_capacity(out.columns.len());
            for _ in 0..out.columns.len() {
                values.push(r.lenenc_bytes()?.map(<[u8]>::to_vec));
            }
            out.rows.push(values);
            taken += 1;
        }
        Ok(self.reading)
    }

    fn expect_eof(&mut self) -> Result<(), MyError> {
        let p = self.packet()?;
        match p.first() {
            Some(0xfe) if p.len() < 9 => Ok(()),
            Some(0xff) => Err(server_error(&p)),
            _ => Err(MyError::Protocol(
                "expected the end of the column definitions".into(),
            )),
        }
    }

    /// Start a command: a new exchange with sequence 0.
    pub(crate) fn command(&mut self, code: u8, body: &[u8]) -> Result<(), MyError> {
        self.seq = 0;
        let mut payload = Vec::with_capacity(1 + body.len());
        payload.push(code);
        payload.extend_from_slice(body);
        self.send(&payload)
    }

    /// Say goodbye; the server ends the session.
    pub fn close(mut self) {
        let _ = self.command(0x01, &[]);
    }

    /// Send one payload as packets of the exchange.
    fn send(&mut self, payload: &[u8]) -> Result<(), MyError> {
        let mut out = Vec::with_capacity(payload.len() + 4);
        let mut chunks = payload.chunks(MAX_PAYLOAD).peekable();
        if payload.is_empty() {
            out.extend_from_slice(&[0, 0, 0, self.seq]);
            self.seq = self.seq.wrapping_add(1);
        }
        while let Some(chunk) = chunks.next() {
            out.extend_from_slice(&(chunk.len() as u32).to_le_bytes()[..3]);
            out.push(self.seq);
            self.seq = self.seq.wrapping_add(1);
            out.extend_from_slice(chunk);
            if chunks.peek().is_none() && chunk.len() == MAX_PAYLOAD {
                out.extend_from_slice(&[0, 0, 0, self.seq]);
                self.seq = self.seq.wrapping_add(1);
            }
        }
        self.stream.write_all(&out)?;
        Ok(())
    }

    /// The next payload (packets of the maximum length joined with what follows).
    pub(crate) fn packet(&mut self) -> Result<Vec<u8>, MyError> {
        let mut payload = Vec::new();
        loop {
            while self.read.len() < 4 {
                self.fill()?;
            }
            let len = u32::from_le_bytes([self.read[0], self.read[1], self.read[2], 0]) as usize;
            self.seq = self.read[3].wrapping_add(1);
            while self.read.len() < 4 + len {
                self.fill()?;
            }
            payload.extend_from_slice(&self.read[4..4 + len]);
            self.read.drain(..4 + len);
            if len < MAX_PAYLOAD {
                return Ok(payload);
            }
        }
    }

    /// Whether a whole packet has arrived, reading what the socket holds without
    /// waiting.
    pub(crate) fn packet_ready(&mut self) -> Result<bool, MyError> {
        loop {
            if self.read.len() >= 4 {
                let len =
                    u32::from_le_bytes([self.read[0], self.read[1], self.read[2], 0]) as usize;
                if self.read.len() >= 4 + len {
                    return Ok(true);
                }
            }
            self.stream.set_nonblocking(true)?;
            let mut buf = [0u8; 64 * 1024];
            let read = self.stream.read(&mut buf);
            self.stream.set_nonblocking(false)?;
            match read {
                Ok(0) => return Err(closed()),
                Ok(n) => self.read.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn fill(&mut self) -> Result<(), MyError> {
        let mut buf = [0u8; 64 * 1024];
        let n = self.stream.read(&mut buf)?;
        if n == 0 {
            return Err(closed());
        }
        self.read.extend_from_slice(&buf[..n]);
        Ok(())
    }
}

fn closed() -> MyError {
    MyError::Io(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the server closed the connection",
    ))
}

/// The auth response of `method` for the server's `scramble`.
fn auth_response(
    method: &str,
    params: &ConnectParams,
    scramble: &[u8],
) -> Result<Vec<u8>, MyError> {
    if method != NATIVE_PASSWORD {
        return Err(MyError::Auth(format!(
            "user `{}` authenticates with {method}; this client speaks {NATIVE_PASSWORD}",
            params.user
        )));
    }
    Ok(match params.password.as_deref() {
        None | Some("") => Vec::new(),
        Some(p) => native_password(p.as_bytes(), scramble),
    })
}

/// `SHA1(password) XOR SHA1(scramble + SHA1(SHA1(password)))`.
fn native_password(password: &[u8], scramble: &[u8]) -> Vec<u8> {
    let once = Sha1::digest(password);
    let twice = Sha1::digest(once);
    let mut h = Sha1::new();
    h.update(&scramble[..scramble.len().min(20)]);
    h.update(twice);
    let mix = h.finalize();
    once.iter().zip(mix.iter()).map(|(a, b)| a ^ b).collect()
}

/// The error an ERR packet carries.
pub(crate) fn server_error(packet: &[u8]) -> MyError {
    let mut r = Reader::new(packet.get(1..).unwrap_or_default());
    let code = r.u16().unwrap_or(0);
    let mut state = String::new();
    if r.rest().first() == Some(&b'#') {
        let _ = r.u8();
        state = String::from_utf8_lossy(r.bytes(5).unwrap_or_default()).into_owned();
    }
    MyError::Server {
        code,
        state,
        message: String::from_utf8_lossy(r.rest()).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The machine's MariaDB (127.0.0.1:3306, root without a password).
    fn params() -> ConnectParams {
        ConnectParams {
            host: "127.0.0.1".into(),
            port: 3306,
            user: "root".into(),
            password: None,
            database: None,
        }
    }

    fn connect() -> Connection {
        Connection::connect(&params()).unwrap_or_else(|e| {
            panic!("MariaDB does not answer on 127.0.0.1:3306 as root ({e}); run scripts/mariadb-setup")
        })
    }

    #[test]
    fn the_native_password_scramble_matches_the_servers_formula() {
        // Known answer: password "secret" with a scramble of twenty 0x01 bytes, as
        // computed by SHA1(pw) XOR SHA1(scramble + SHA1(SHA1(pw))).
        let scramble = [1u8; 20];
        let got = native_password(b"secret", &scramble);
        let once = Sha1::digest(b"secret");
        let mut h = Sha1::new();
        h.update(scramble);
        h.update(Sha1::digest(once));
        let back: Vec<u8> = got
            .iter()
            .zip(h.finalize().iter())
            .map(|(a, b)| a ^ b)
            .collect();
        assert_eq!(back, once.to_vec());
        assert_eq!(got.len(), 20);
    }

    #[test]
    fn queries_return_rows_with_nulls_and_errors_name_the_problem() {
        let mut c = connect();
        assert!(c.server_version.contains("MariaDB") || !c.server_version.is_empty());
        let rows = c
            .query("SELECT 1 AS one, NULL AS nothing, 'tëxt' AS word")
            .unwrap();
        assert_eq!(rows.columns, ["one", "nothing", "word"]);
        assert_eq!(
            rows.rows,
            [[Some("1".to_string()), None, Some("tëxt".to_string())]]
        );
        let e = c
            .query("SELECT * FROM no_such_db.no_such_table")
            .unwrap_err();
        assert!(
            matches!(
                &e,
                MyError::Server {
                    code: 1146 | 1049,
                    ..
                }
            ),
            "{e}"
        );
        // The session goes on after an error.
        assert_eq!(c.query("SELECT 2").unwrap().scalar(), Some("2"));
        let db = format!("ingest_client_{}", std::process::id());
        c.query(&format!("CREATE DATABASE {db}")).unwrap();
        c.query(&format!("CREATE TABLE {db}.t (id int PRIMARY KEY)"))
            .unwrap();
        let done = c
            .query(&format!("INSERT INTO {db}.t VALUES (1), (2), (3)"))
            .unwrap();
        assert_eq!(done.affected, 3);
        c.query(&format!("DROP DATABASE {db}")).unwrap();
        c.close();
    }

    #[test]
    fn a_large_result_is_read_a_part_at_a_time_and_the_session_goes_on() {
        let mut c = connect();
        let mut part = c
            .query_start("SELECT seq FROM mysql.seq_1_to_50000")
            .unwrap();
        assert_eq!(part.columns, ["seq"]);
        let mut seen = 0u64;
        let mut parts = 0;
        loop {
            part.rows.clear();
            let more = c.query_more(&mut part, 10_000).unwrap();
            assert!(part.rows.len() <= 10_000);
            for row in &part.rows {
                seen += 1;
                assert_eq!(row[0].as_deref(), Some(seen.to_string().as_bytes()));
            }
            parts += 1;
            if !more {
                break;
            }
        }
        assert_eq!(seen, 50_000);
        assert!(parts >= 5, "read in {parts} parts");
        assert_eq!(c.query("SELECT 3").unwrap().scalar(), Some("3"));
    }

    #[test]
    fn a_wrong_password_is_refused_by_the_server() {
        let mut p = params();
        p.user = "ingest_nobody".into();
        p.password = Some("wrong".into());
        match Connection::connect(&p) {
            Err(MyError::Server { code, .. }) => assert_eq!(code, 1045),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("a wrong password was accepted"),
        }
    }
}

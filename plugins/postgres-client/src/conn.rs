//! One connection to a PostgreSQL server over a blocking TCP socket (std::net, which a
//! wasm32-wasip2 plugin reaches through its `net` grant): start-up and authentication
//! (trust, cleartext, MD5, SCRAM-SHA-256), simple queries with text results, and both
//! directions of `COPY`.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::sasl::{self, ScramSha256};
use postgres_protocol::message::backend::{ErrorFields, Message};
use postgres_protocol::message::frontend;

use crate::error::{PgError, ServerError};
use crate::tls::{self, Tls, Transport};

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct ConnectParams {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub database: String,
    /// The password, when the server asks for one.
    pub password: Option<String>,
    /// Shown in `pg_stat_activity.application_name`.
    pub application_name: String,
    /// How the connection is protected.
    pub tls: Tls,
    /// A walsender session for logical replication (`replication=database`).
    pub replication: bool,
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

/// The result of a simple query: column names and rows of text values (`None` for NULL).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Rows {
    pub columns: Vec<String>,
    /// Each column's type oid and type modifier, as the server described them.
    pub types: Vec<(u32, i32)>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl Rows {
    /// The single value of a one-row, one-column result.
    pub fn scalar(&self) -> Option<&str> {
        self.rows.first()?.first()?.as_deref()
    }
}

/// An open, authenticated connection, idle between calls.
pub struct Connection {
    stream: Transport,
    read: BytesMut,
    scratch: Box<[u8]>,
    write: BytesMut,
    /// The server's process id, for `pg_terminate_backend` and log lines.
    pub backend_pid: i32,
}

const READ_CHUNK: usize = 256 * 1024;

impl Connection {
    /// Connect, authenticate and wait until the server is ready for queries.
    pub fn connect(params: &ConnectParams) -> Result<Connection, PgError> {
        let stream = TcpStream::connect((params.host.as_str(), params.port)).map_err(|e| {
            PgError::Connect {
                address: params.address(),
                source: e,
            }
        })?;
        // Latency matters more than packet count for the protocol's small messages.
        let _ = stream.set_nodelay(true);
        let mut startup = BytesMut::new();
        startup_message(params, &mut startup)?;
        let mut stream = tls::handshake(
            stream,
            &params.tls,
            &params.host,
            &params.address(),
            &startup,
        )?;
        if let Transport::Plain(_) = stream {
            stream.write_all(&startup)?;
        }
        let mut conn = Connection {
            stream,
            read: BytesMut::with_capacity(READ_CHUNK),
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            write: BytesMut::with_capacity(64 * 1024),
            backend_pid: 0,
        };
        conn.start_up(params)?;
        Ok(conn)
    }

    /// Authenticate, after the startup message went out.
    fn start_up(&mut self, params: &ConnectParams) -> Result<(), PgError> {
        let mut scram: Option<ScramSha256> = None;
        loop {
            match self.message()? {
                Message::AuthenticationOk => {}
                Message::AuthenticationCleartextPassword => {
                    let password = need_password(params)?;
                    frontend::password_message(password.as_bytes(), &mut self.write)?;
                    self.flush()?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let password = need_password(params)?;
                    let hash = postgres_protocol::authentication::md5_hash(
                        params.user.as_bytes(),
                        password.as_bytes(),
                        body.salt(),
                    );
                    frontend::password_message(hash.as_bytes(), &mut self.write)?;
                    self.flush()?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut offered = Vec::new();
                    while let Some(m) = mechanisms.next()? {
                        offered.push(m.to_string());
                    }
                    if !offered.iter().any(|m| m == sasl::SCRAM_SHA_256) {
                        return Err(PgError::Auth(format!(
                            "the server offers only {} authentication; this client speaks SCRAM-SHA-256, MD5 and cleartext",
                            offered.join(", ")
                        )));
                    }
                    let password = need_password(params)?;
                    let s = ScramSha256::new(
                        password.as_bytes(),
                        sasl::ChannelBinding::unsupported(),
                    );
                    frontend::sasl_initial_response(
                        sasl::SCRAM_SHA_256,
                        s.message(),
                        &mut self.write,
                    )?;
                    self.flush()?;
                    scram = Some(s);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let s = scram.as_mut().ok_or_else(|| {
                        PgError::Protocol("SASL continue before SASL start".into())
                    })?;
                    s.update(body.data())
                        .map_err(|e| PgError::Auth(format!("SCRAM exchange failed: {e}")))?;
                    frontend::sasl_response(s.message(), &mut self.write)?;
                    self.flush()?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let s = scram.as_mut().ok_or_else(|| {
                        PgError::Protocol("SASL final before SASL start".into())
                    })?;
                    s.finish(body.data()).map_err(|e| {
                        PgError::Auth(format!("the server's SCRAM signature is wrong: {e}"))
                    })?;
                }
                Message::AuthenticationKerberosV5
                | Message::AuthenticationScmCredential
                | Message::AuthenticationGss
                | Message::AuthenticationSspi
                | Message::AuthenticationGssContinue(_) => {
                    return Err(PgError::Auth(
                        "the server asks for Kerberos/GSS/SSPI authentication; use password or SCRAM-SHA-256 in pg_hba.conf".into(),
                    ))
                }
                Message::BackendKeyData(body) => self.backend_pid = body.process_id(),
                Message::ParameterStatus(_) | Message::NoticeResponse(_) => {}
                Message::ReadyForQuery(_) => return Ok(()),
                Message::ErrorResponse(body) => {
                    return Err(PgError::Server(Box::new(server_error(body.fields())?)))
                }
                _ => return Err(PgError::Protocol("unexpected message during start-up".into())),
            }
        }
    }

    /// Run one or more statements (the simple query protocol) and return the rows of the
    /// last statement that produced rows. On an error the server rolls back the implicit
    /// transaction and the connection stays usable.
    pub fn query(&mut self, sql: &str) -> Result<Rows, PgError> {
        frontend::query(sql, &mut self.write)?;
        self.flush()?;
        let mut out = Rows::default();
        let mut error = None;
        loop {
            match self.message()? {
                Message::RowDescription(body) => {
                    out = Rows::default();
                    let mut fields = body.fields();
                    while let Some(f) = fields.next()? {
                        out.columns.push(f.name().to_string());
                        out.types.push((f.type_oid(), f.type_modifier()));
                    }
                }
                Message::DataRow(body) => {
                    let buffer = body.buffer();
                    let mut row = Vec::with_capacity(out.columns.len());
                    let mut ranges = body.ranges();
                    while let Some(range) = ranges.next()? {
                        row.push(match range {
                            None => None,
                            Some(r) => Some(
                                std::str::from_utf8(&buffer[r])
                                    .map_err(|_| PgError::Protocol("a value is not UTF-8".into()))?
                                    .to_string(),
                            ),
                        });
                    }
                    out.rows.push(row);
                }
                Message::CommandComplete(_) | Message::EmptyQueryResponse => {}
                Message::NoticeResponse(_) | Message::ParameterStatus(_) => {}
                Message::ErrorResponse(body) => {
                    let e = server_error(body.fields())?;
                    if e.ends_session() {
                        return Err(PgError::Server(Box::new(e)));
                    }
                    error = Some(e);
                }
                Message::CopyInResponse(_) => {
                    frontend::copy_fail("COPY FROM STDIN is not expected here", &mut self.write)?;
                    self.flush()?;
                }
                Message::CopyOutResponse(_) | Message::CopyData(_) | Message::CopyDone => {}
                Message::ReadyForQuery(_) => {
                    return match error {
                        Some(e) => Err(PgError::Server(Box::new(e))),
                        None => Ok(out),
                    }
                }
                _ => return Err(PgError::Protocol("unexpected message in a query".into())),
            }
        }
    }

    /// Start `COPY … TO STDOUT`; read its data with [`Connection::copy_out_next`].
    pub fn copy_out_start(&mut self, sql: &str) -> Result<(), PgError> {
        self.copy_start(
            sql,
            |m| matches!(m, Message::CopyOutResponse(_)),
            "COPY OUT",
        )
    }

    /// Send `sql` and wait for the response `started` recognises.
    fn copy_start(
        &mut self,
        sql: &str,
        started: fn(&Message) -> bool,
        what: &str,
    ) -> Result<(), PgError> {
        frontend::query(sql, &mut self.write)?;
        self.flush()?;
        loop {
            match self.message()? {
                m if started(&m) => return Ok(()),
                Message::NoticeResponse(_) | Message::ParameterStatus(_) => {}
                Message::ErrorResponse(body) => {
                    let e = server_error(body.fields())?;
                    return Err(self.failed(e));
                }
                _ => return Err(PgError::Protocol(format!("expected {what} to start"))),
            }
        }
    }

    /// Hand the next pieces of COPY data to `sink`, until about `budget` bytes were handed
    /// over. Returns false once the COPY is complete (the connection is then idle again).
    pub fn copy_out_next(
        &mut self,
        budget: usize,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), PgError>,
    ) -> Result<bool, PgError> {
        let mut handed = 0;
        while handed < budget {
            // Fast path: CopyData messages straight from the read buffer.
            while self.read.len() >= 5 && self.read[0] == b'd' {
                let len =
                    i32::from_be_bytes([self.read[1], self.read[2], self.read[3], self.read[4]])
                        as usize;
                if len < 4 {
                    return Err(PgError::Protocol("a CopyData message is too short".into()));
                }
                if self.read.len() < 1 + len {
                    break;
                }
                sink(&self.read[5..1 + len])?;
                handed += len - 4;
                let _ = self.read.split_to(1 + len);
                if handed >= budget {
                    return Ok(true);
                }
            }
            if self.read.len() >= 5 && self.read[0] != b'd' {
                match self.message()? {
                    Message::CopyData(body) => sink(body.data())?,
                    Message::CopyDone | Message::CommandComplete(_) => {}
                    Message::NoticeResponse(_) | Message::ParameterStatus(_) => {}
                    Message::ErrorResponse(body) => {
                        let e = server_error(body.fields())?;
                        return Err(self.failed(e));
                    }
                    Message::ReadyForQuery(_) => return Ok(false),
                    _ => return Err(PgError::Protocol("unexpected message in COPY OUT".into())),
                }
                continue;
            }
            self.fill()?;
        }
        Ok(true)
    }

    /// Start `COPY … FROM STDIN`; send data with [`Connection::copy_in_send`] and end with
    /// [`Connection::copy_in_finish`].
    pub fn copy_in_start(&mut self, sql: &str) -> Result<(), PgError> {
        self.copy_start(sql, |m| matches!(m, Message::CopyInResponse(_)), "COPY IN")
    }

    /// Send COPY data (any split of the stream).
    pub fn copy_in_send(&mut self, data: &[u8]) -> Result<(), PgError> {
        // CopyData: 'd', length, bytes. Written straight to the socket to avoid a copy.
        let mut header = [0u8; 5];
        header[0] = b'd';
        header[1..].copy_from_slice(&((data.len() + 4) as i32).to_be_bytes());
        self.flush()?;
        self.stream.write_all(&header)?;
        self.stream.write_all(data)?;
        Ok(())
    }

    /// End a COPY IN; returns the number of rows copied.
    pub fn copy_in_finish(&mut self) -> Result<u64, PgError> {
        frontend::copy_done(&mut self.write);
        self.flush()?;
        self.command_result()
    }

    /// Abandon a COPY IN; the server discards what it received.
    pub fn copy_in_fail(&mut self, reason: &str) -> Result<(), PgError> {
        frontend::copy_fail(reason, &mut self.write)?;
        self.flush()?;
        match self.command_result() {
            Ok(_) | Err(PgError::Server(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn command_result(&mut self) -> Result<u64, PgError> {
        let mut rows = 0;
        let mut error = None;
        loop {
            match self.message()? {
                Message::CommandComplete(body) => {
                    let tag = body.tag()?;
                    rows = tag
                        .rsplit(' ')
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                }
                Message::NoticeResponse(_) | Message::ParameterStatus(_) => {}
                Message::ErrorResponse(body) => {
                    let e = server_error(body.fields())?;
                    if e.ends_session() {
                        return Err(PgError::Server(Box::new(e)));
                    }
                    error = Some(e);
                }
                Message::ReadyForQuery(_) => {
                    return match error {
                        Some(e) => Err(PgError::Server(Box::new(e))),
                        None => Ok(rows),
                    }
                }
                _ => return Err(PgError::Protocol("unexpected message after COPY".into())),
            }
        }
    }

    /// The error `e` the server reported; unless it ended the session, the connection is
    /// read up to the server's next ReadyForQuery so that it can be used again.
    fn failed(&mut self, e: ServerError) -> PgError {
        if !e.ends_session() {
            // A failure here shows on the next call; the error itself is what matters.
            let _ = self.until_ready();
        }
        PgError::Server(Box::new(e))
    }

    fn until_ready(&mut self) -> Result<(), PgError> {
        loop {
            if let Message::ReadyForQuery(_) = self.message()? {
                return Ok(());
            }
        }
    }

    /// Start a CopyBoth exchange (`START_REPLICATION`): the server streams CopyData,
    /// read with [`Connection::copy_both_next`], and takes CopyData from
    /// [`Connection::copy_both_send`].
    pub fn copy_both_start(&mut self, sql: &str) -> Result<(), PgError> {
        frontend::query(sql, &mut self.write)?;
        self.flush()?;
        loop {
            // CopyBothResponse ('W') is not among the messages the codec parses.
            if self.read.len() >= 5 && self.read[0] == b'W' {
                let len =
                    i32::from_be_bytes([self.read[1], self.read[2], self.read[3], self.read[4]])
                        as usize;
                if self.read.len() < 1 + len {
                    self.fill()?;
                    continue;
                }
                let _ = self.read.split_to(1 + len);
                return Ok(());
            }
            if self.read.len() < 5 {
                self.fill()?;
                continue;
            }
            match self.message()? {
                Message::NoticeResponse(_) | Message::ParameterStatus(_) => {}
                Message::ErrorResponse(body) => {
                    let e = server_error(body.fields())?;
                    return Err(self.failed(e));
                }
                _ => return Err(PgError::Protocol("expected COPY BOTH to start".into())),
            }
        }
    }

    /// The next CopyData payload of a CopyBoth exchange; none once the server ended it.
    pub fn copy_both_next(&mut self) -> Result<Option<bytes::Bytes>, PgError> {
        loop {
            if self.read.len() >= 5 && self.read[0] == b'd' {
                let len =
                    i32::from_be_bytes([self.read[1], self.read[2], self.read[3], self.read[4]])
                        as usize;
                if len < 4 {
                    return Err(PgError::Protocol("a CopyData message is too short".into()));
                }
                if self.read.len() > len {
                    let mut m = self.read.split_to(1 + len);
                    let _ = m.split_to(5);
                    return Ok(Some(m.freeze()));
                }
            } else if self.read.len() >= 5 {
                match self.message()? {
                    Message::CopyDone | Message::CommandComplete(_) => {}
                    Message::NoticeResponse(_) | Message::ParameterStatus(_) => {}
                    Message::ReadyForQuery(_) => return Ok(None),
                    Message::ErrorResponse(body) => {
                        return Err(PgError::Server(Box::new(server_error(body.fields())?)))
                    }
                    _ => return Err(PgError::Protocol("unexpected message in COPY BOTH".into())),
                }
                continue;
            }
            self.fill()?;
        }
    }

    /// The next CopyData payload of a CopyBoth exchange if one has arrived, without
    /// waiting: `Ok(None)` when the socket has nothing yet. Errors when the server ended
    /// the exchange.
    pub fn copy_both_try_next(&mut self) -> Result<Option<bytes::Bytes>, PgError> {
        loop {
            // A whole message has arrived: read it without waiting.
            let len = (self.read.len() >= 5).then(|| {
                i32::from_be_bytes([self.read[1], self.read[2], self.read[3], self.read[4]])
                    as usize
            });
            if len.is_some_and(|len| self.read.len() > len) {
                return match self.copy_both_next()? {
                    Some(m) => Ok(Some(m)),
                    None => Err(PgError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server ended the replication stream",
                    ))),
                };
            }
            self.stream.set_nonblocking(true)?;
            let read = self.stream.read(&mut self.scratch);
            self.stream.set_nonblocking(false)?;
            match read {
                Ok(0) => {
                    return Err(PgError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    )))
                }
                Ok(n) => self.read.extend_from_slice(&self.scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Send one CopyData message of a CopyBoth exchange.
    pub fn copy_both_send(&mut self, data: &[u8]) -> Result<(), PgError> {
        self.write.extend_from_slice(b"d");
        self.write
            .extend_from_slice(&((data.len() + 4) as i32).to_be_bytes());
        self.write.extend_from_slice(data);
        self.flush()
    }

    /// Say goodbye; the server ends the session.
    pub fn close(mut self) {
        frontend::terminate(&mut self.write);
        let _ = self.flush();
        self.stream.close_notify();
    }

    fn flush(&mut self) -> Result<(), PgError> {
        if !self.write.is_empty() {
            self.stream.write_all(&self.write)?;
            self.write.clear();
        }
        Ok(())
    }

    fn message(&mut self) -> Result<Message, PgError> {
        loop {
            if let Some(m) = Message::parse(&mut self.read)? {
                return Ok(m);
            }
            self.fill()?;
        }
    }

    fn fill(&mut self) -> Result<(), PgError> {
        let n = self.stream.read(&mut self.scratch)?;
        if n == 0 {
            return Err(PgError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            )));
        }
        self.read.extend_from_slice(&self.scratch[..n]);
        Ok(())
    }
}

/// The startup message for `params`, into `out`.
fn startup_message(params: &ConnectParams, out: &mut BytesMut) -> Result<(), PgError> {
    let options = [
        ("user", params.user.as_str()),
        ("database", params.database.as_str()),
        ("application_name", params.application_name.as_str()),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO"),
        ("TimeZone", "UTC"),
        ("standard_conforming_strings", "on"),
    ];
    let replication = params.replication.then_some(("replication", "database"));
    frontend::startup_message(options.iter().copied().chain(replication), out)?;
    Ok(())
}

fn need_password(params: &ConnectParams) -> Result<&str, PgError> {
    params.password.as_deref().ok_or_else(|| {
        PgError::Auth(format!(
            "the server asks user `{}` for a password and none was given; grant a secret and name it in `password_secret`",
            params.user
        ))
    })
}

fn server_error(mut fields: ErrorFields<'_>) -> Result<ServerError, PgError> {
    let mut e = ServerError::default();
    while let Some(f) = fields.next()? {
        let value = String::from_utf8_lossy(f.value_bytes()).into_owned();
        match f.type_() {
            b'S' => e.severity = value,
            b'C' => e.code = value,
            b'M' => e.message = value,
            b'D' => e.detail = Some(value),
            b'H' => e.hint = Some(value),
            b'c' => e.column = Some(value),
            b'n' => e.constraint = Some(value),
            _ => {}
        }
    }
    Ok(e)
}

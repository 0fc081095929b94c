//! One connection to a NATS server: the text protocol (INFO, CONNECT, PUB/HPUB, SUB/UNSUB,
//! MSG/HMSG, PING/PONG, +OK/-ERR) over a blocking `std::net::TcpStream`, which in a plugin is
//! a wasi:sockets stream through its `net` grant.
//!
//! Writes are buffered until [`Connection::flush`] (or a read), so a publisher pipelines as
//! many messages as it likes; reads answer the server's PINGs on the way.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use serde::Deserialize;

use crate::{Error, Result};

/// What the server says about itself on connecting.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerInfo {
    pub server_id: String,
    pub version: String,
    #[serde(default)]
    pub headers: bool,
    #[serde(default)]
    pub jetstream: bool,
    pub max_payload: usize,
}

/// A message the server delivered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub subject: String,
    pub sid: u64,
    pub reply: Option<String>,
    /// The status line's code and text, for a status message (`NATS/1.0 404 No Messages`).
    pub status: Option<(u16, String)>,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

impl Message {
    /// The first value of header `name` (names compare without case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A connection to one server.
pub struct Connection {
    reader: BufReader<TcpStream>,
    out: Vec<u8>,
    info: ServerInfo,
    next_sid: u64,
    /// Messages read while waiting for something else (see [`Connection::next_for`]).
    held: std::collections::VecDeque<Message>,
}

/// Largest control line the server sends (an INFO line is the longest).
const MAX_LINE: usize = 64 * 1024;

impl Connection {
    /// Connect to `addr` (`host:port`) as `name`, with `token` or `user`/`password` when
    /// given.
    pub fn connect(addr: &str, name: &str, auth: &Auth) -> Result<Connection> {
        let stream = TcpStream::connect(addr).map_err(|e| Error::Io {
            what: format!("connect to {addr}"),
            source: e,
        })?;
        let _ = stream.set_nodelay(true);
        // One socket for both ways (wasi:sockets cannot clone one): reads go through the
        // buffer, writes straight to the socket under it.
        let mut reader = BufReader::with_capacity(256 * 1024, stream);
        let line = read_line(&mut reader)?;
        let info = line
            .strip_prefix("INFO ")
            .ok_or_else(|| Error::Protocol(format!("expected INFO from {addr}, got `{line}`")))?;
        let info: ServerInfo = serde_json::from_str(info)
            .map_err(|e| Error::Protocol(format!("the INFO of {addr}: {e}")))?;
        let mut connect = serde_json::json!({
            "verbose": false,
            "pedantic": false,
            "headers": true,
            "no_responders": true,
            "protocol": 1,
            "lang": "rust-ingest",
            "version": env!("CARGO_PKG_VERSION"),
            "name": name,
        });
        match auth {
            Auth::None => {}
            Auth::Token(token) => connect["auth_token"] = token.as_str().into(),
            Auth::User { user, password } => {
                connect["user"] = user.as_str().into();
                connect["pass"] = password.as_str().into();
            }
        }
        let mut conn = Connection {
            reader,
            out: Vec::with_capacity(64 * 1024),
            info,
            next_sid: 1,
            held: Default::default(),
        };
        conn.out
            .extend_from_slice(format!("CONNECT {connect}\r\nPING\r\n").as_bytes());
        conn.flush()?;
        // The server answers PING with PONG once it accepted CONNECT, or -ERR.
        loop {
            match conn.read_frame()? {
                Frame::Pong => break,
                Frame::Msg(m) => conn.held.push_back(m),
                Frame::Ok | Frame::Info => {}
            }
        }
        Ok(conn)
    }

    /// What the server said about itself.
    pub fn info(&self) -> &ServerInfo {
        &self.info
    }

    /// Queue a message to `subject`, with `reply` and `headers` when given; sent by the
    /// next [`Connection::flush`] or read.
    pub fn publish(
        &mut self,
        subject: &str,
        reply: Option<&str>,
        headers: &[(&str, &str)],
        payload: &[u8],
    ) -> Result<()> {
        check_subject(subject)?;
        if payload.len() > self.info.max_payload {
            return Err(Error::Protocol(format!(
                "a message of {} bytes to `{subject}` is over the server's max_payload of {} bytes",
                payload.len(),
                self.info.max_payload
            )));
        }
        let reply = reply.map(|r| format!(" {r}")).unwrap_or_default();
        if headers.is_empty() {
            self.out.extend_from_slice(
                format!("PUB {subject}{reply} {}\r\n", payload.len()).as_bytes(),
            );
        } else {
            let mut head = String::from("NATS/1.0\r\n");
            for (k, v) in headers {
                if k.contains([':', '\r', '\n']) || v.contains(['\r', '\n']) {
                    return Err(Error::Protocol(format!(
                        "header `{k}` has a character a NATS header cannot hold"
                    )));
                }
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\n");
            self.out.extend_from_slice(
                format!(
                    "HPUB {subject}{reply} {} {}\r\n",
                    head.len(),
                    head.len() + payload.len()
                )
                .as_bytes(),
            );
            self.out.extend_from_slice(head.as_bytes());
        }
        self.out.extend_from_slice(payload);
        self.out.extend_from_slice(b"\r\n");
        if self.out.len() >= 256 * 1024 {
            self.flush()?;
        }
        Ok(())
    }

    /// Subscribe to `subject`; returns the subscription's id.
    pub fn subscribe(&mut self, subject: &str) -> Result<u64> {
        let sid = self.next_sid;
        self.next_sid += 1;
        self.out
            .extend_from_slice(format!("SUB {subject} {sid}\r\n").as_bytes());
        Ok(sid)
    }

    /// End subscription `sid`.
    pub fn unsubscribe(&mut self, sid: u64) -> Result<()> {
        self.out
            .extend_from_slice(format!("UNSUB {sid}\r\n").as_bytes());
        Ok(())
    }

    /// Send what is queued.
    pub fn flush(&mut self) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let mut socket: &TcpStream = self.reader.get_ref();
        socket
            .write_all(&self.out)
            .map_err(|e| Error::io("write to the server", e))?;
        self.out.clear();
        Ok(())
    }

    /// The next message of any subscription, in the order the server sent them. Blocks
    /// until one arrives.
    pub fn next_message(&mut self) -> Result<Message> {
        if let Some(m) = self.held.pop_front() {
            return Ok(m);
        }
        self.flush()?;
        loop {
            if let Frame::Msg(m) = self.read_frame()? {
                return Ok(m);
            }
        }
    }

    /// The next message of subscription `sid`; messages of other subscriptions that come
    /// first are kept for [`Connection::next_message`].
    pub fn next_for(&mut self, sid: u64) -> Result<Message> {
        if let Some(at) = self.held.iter().position(|m| m.sid == sid) {
            return Ok(self.held.remove(at).expect("a held message"));
        }
        self.flush()?;
        loop {
            if let Frame::Msg(m) = self.read_frame()? {
                if m.sid == sid {
                    return Ok(m);
                }
                self.held.push_back(m);
            }
        }
    }

    /// Read one frame, answering PING.
    fn read_frame(&mut self) -> Result<Frame> {
        loop {
            let line = read_line(&mut self.reader)?;
            let (op, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            match op {
                "MSG" => return self.read_msg(rest, false).map(Frame::Msg),
                "HMSG" => return self.read_msg(rest, true).map(Frame::Msg),
                "PING" => {
                    self.out.extend_from_slice(b"PONG\r\n");
                    self.flush()?;
                }
                "PONG" => return Ok(Frame::Pong),
                "+OK" => return Ok(Frame::Ok),
                "INFO" => return Ok(Frame::Info),
                "-ERR" => return Err(Error::Server(rest.trim().trim_matches('\'').to_string())),
                _ => {
                    return Err(Error::Protocol(format!(
                        "unexpected line from the server: `{line}`"
                    )))
                }
            }
        }
    }

    /// The rest of a MSG (`subject sid [reply] size`) or HMSG (`subject sid [reply]
    /// header-size size`) line, and its payload.
    fn read_msg(&mut self, args: &str, with_headers: bool) -> Result<Message> {
        let words: Vec<&str> = args.split_ascii_whitespace().collect();
        let bad = || Error::Protocol(format!("a malformed message line: `{args}`"));
        let sizes = if with_headers { 2 } else { 1 };
        if words.len() != 2 + sizes && words.len() != 3 + sizes {
            return Err(bad());
        }
        let reply = (words.len() == 3 + sizes).then(|| words[2].to_string());
        let number = |w: &str| w.parse::<usize>().map_err(|_| bad());
        let total = number(words[words.len() - 1])?;
        let head = if with_headers {
            number(words[words.len() - 2])?
        } else {
            0
        };
        if head > total {
            return Err(bad());
        }
        let mut body = vec![0u8; total + 2];
        self.reader
            .read_exact(&mut body)
            .map_err(|e| Error::io("read a message", e))?;
        if &body[total..] != b"\r\n" {
            return Err(Error::Protocol("a message does not end in CRLF".into()));
        }
        body.truncate(total);
        let payload = body.split_off(head);
        let (status, headers) = if with_headers {
            parse_headers(&body)?
        } else {
            (None, Vec::new())
        };
        Ok(Message {
            subject: words[0].to_string(),
            sid: number(words[1])? as u64,
            reply,
            status,
            headers,
            payload,
        })
    }
}

/// How a client proves who it is.
#[derive(Debug, Clone, Default)]
pub enum Auth {
    #[default]
    None,
    Token(String),
    User {
        user: String,
        password: String,
    },
}

enum Frame {
    Msg(Message),
    Pong,
    Ok,
    Info,
}

fn read_line(reader: &mut BufReader<TcpStream>) -> Result<String> {
    let mut line = Vec::with_capacity(128);
    let n = reader
        .by_ref()
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)
        .map_err(|e| Error::io("read from the server", e))?;
    if n == 0 {
        return Err(Error::Closed);
    }
    if !line.ends_with(b"\r\n") {
        return Err(Error::Protocol(
            "a control line from the server is too long or cut off".into(),
        ));
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|_| Error::Protocol("a control line is not UTF-8".into()))
}

/// The status and headers of a header block (`NATS/1.0[ code text]\r\nKey: Value\r\n...`).
#[allow(clippy::type_complexity)]
fn parse_headers(block: &[u8]) -> Result<(Option<(u16, String)>, Vec<(String, String)>)> {
    let text = std::str::from_utf8(block)
        .map_err(|_| Error::Protocol("message headers are not UTF-8".into()))?;
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let rest = first
        .strip_prefix("NATS/1.0")
        .ok_or_else(|| Error::Protocol(format!("a header block starts with `{first}`")))?
        .trim();
    let status = if rest.is_empty() {
        None
    } else {
        let (code, text) = rest.split_once(' ').unwrap_or((rest, ""));
        code.parse().ok().map(|c| (c, text.to_string()))
    };
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok((status, headers))
}

/// A subject to publish to: not empty, no whitespace, no wildcard.
fn check_subject(subject: &str) -> Result<()> {
    if subject.is_empty()
        || subject.contains(|c: char| c.is_whitespace())
        || subject
            .split('.')
            .any(|t| t.is_empty() || t == "*" || t == ">")
    {
        return Err(Error::Protocol(format!(
            "`{subject}` is not a subject one can publish to (dot-separated tokens, no spaces or wildcards)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_blocks_give_their_status_and_headers() {
        let (status, headers) = parse_headers(b"NATS/1.0 404 No Messages\r\n\r\n").unwrap();
        assert_eq!(status, Some((404, "No Messages".into())));
        assert!(headers.is_empty());
        let (status, headers) =
            parse_headers(b"NATS/1.0\r\nNats-Msg-Id: a/1\r\nX: y: z\r\n\r\n").unwrap();
        assert_eq!(status, None);
        assert_eq!(
            headers,
            [
                ("Nats-Msg-Id".into(), "a/1".into()),
                ("X".into(), "y: z".into())
            ]
        );
        assert!(parse_headers(b"HTTP/1.1 200\r\n\r\n").is_err());
    }

    #[test]
    fn only_plain_subjects_take_messages() {
        assert!(check_subject("orders.eu").is_ok());
        for bad in ["", "a b", "orders.*", "orders.>", "a..b"] {
            assert!(check_subject(bad).is_err(), "{bad}");
        }
    }
}

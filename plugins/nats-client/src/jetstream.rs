//! The JetStream API over a [`Connection`]: stream information, durable pull consumers
//! (created at a stream sequence, fetched in batches, acked message by message) and
//! publishing with a message id, each publish checked by its PubAck.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::conn::{Connection, Message};
use crate::{Error, Result};

/// A connection with an inbox for JetStream API replies.
pub struct JetStream {
    pub conn: Connection,
    inbox: String,
    sid: u64,
    next: u64,
}

/// What `STREAM.INFO` says of a stream.
#[derive(Debug, Clone, Deserialize)]
pub struct StreamInfo {
    pub config: StreamConfig,
    pub state: StreamState,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamConfig {
    pub name: String,
    #[serde(default)]
    pub subjects: Vec<String>,
    /// The window within which a repeated `Nats-Msg-Id` is dropped, in nanoseconds.
    #[serde(default)]
    pub duplicate_window: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamState {
    pub messages: u64,
    pub first_seq: u64,
    pub last_seq: u64,
}

/// A durable pull consumer's settings.
#[derive(Debug, Clone, Serialize)]
pub struct ConsumerConfig {
    pub durable_name: String,
    /// `all`, or `by_start_sequence` with `opt_start_seq`.
    pub deliver_policy: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opt_start_seq: Option<u64>,
    pub ack_policy: String,
    /// Nanoseconds.
    pub ack_wait: u64,
    pub max_ack_pending: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter_subject: Option<String>,
}

/// One message a pull consumer delivered, with where it sits in the stream.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub message: Message,
    pub stream_seq: u64,
    /// How many times it was delivered (more than 1 is a redelivery).
    pub delivered: u64,
    /// When it was stored, in nanoseconds since 1970.
    pub timestamp_ns: i64,
    /// Messages left for the consumer after this one.
    pub pending: u64,
}

/// How a pull ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullEnd {
    /// The batch was filled.
    Full,
    /// No message was waiting (`no_wait`), or none came before the pull expired.
    Empty,
}

/// A PubAck: where the stream stored a published message, or that it was a duplicate.
#[derive(Debug, Clone, Deserialize)]
pub struct PubAck {
    pub stream: String,
    pub seq: u64,
    #[serde(default)]
    pub duplicate: bool,
}

impl JetStream {
    /// JetStream over `conn`; fails when the server has no JetStream.
    pub fn new(mut conn: Connection, client: &str) -> Result<JetStream> {
        if !conn.info().jetstream {
            return Err(Error::Protocol(
                "the server has JetStream off (start nats-server with -js)".into(),
            ));
        }
        let inbox = format!("_INBOX.{}", unique(client));
        let sid = conn.subscribe(&format!("{inbox}.>"))?;
        Ok(JetStream {
            conn,
            inbox,
            sid,
            next: 0,
        })
    }

    /// A new subject under this connection's inbox.
    pub fn new_inbox(&mut self) -> String {
        self.next += 1;
        format!("{}.{}", self.inbox, self.next)
    }

    /// Send an API request and wait for its reply (other messages on the inbox that come
    /// first, such as late replies of an earlier pull, are dropped).
    pub fn request(&mut self, subject: &str, body: &Value) -> Result<Value> {
        let reply = self.new_inbox();
        // Requests without a body (INFO, DELETE) take an empty payload, not `null`.
        let payload = match body {
            Value::Null => String::new(),
            body => body.to_string(),
        };
        self.conn
            .publish(subject, Some(&reply), &[], payload.as_bytes())?;
        let message = loop {
            let m = self.conn.next_for(self.sid)?;
            if m.subject == reply {
                break m;
            }
        };
        if let Some((503, _)) = message.status {
            return Err(Error::Api {
                code: 503,
                description: format!("no JetStream responder for `{subject}`"),
            });
        }
        api_reply(&message.payload)
    }

    /// What the server knows of stream `name`.
    pub fn stream_info(&mut self, name: &str) -> Result<StreamInfo> {
        let reply = self.request(&format!("$JS.API.STREAM.INFO.{name}"), &Value::Null)?;
        serde_json::from_value(reply)
            .map_err(|e| Error::Protocol(format!("the STREAM.INFO reply for `{name}`: {e}")))
    }

    /// Create (or replace) the durable consumer `config.durable_name` on `stream`: a
    /// consumer that exists is deleted first, so it starts where `config` says.
    pub fn recreate_consumer(&mut self, stream: &str, config: &ConsumerConfig) -> Result<()> {
        let name = &config.durable_name;
        match self.request(
            &format!("$JS.API.CONSUMER.DELETE.{stream}.{name}"),
            &Value::Null,
        ) {
            Ok(_) => {}
            Err(Error::Api { code: 404, .. }) => {}
            Err(e) => return Err(e),
        }
        let body = serde_json::json!({ "stream_name": stream, "config": config });
        self.request(
            &format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{name}"),
            &body,
        )?;
        Ok(())
    }

    /// Fetch up to `batch` messages for consumer `consumer` of `stream`, waiting at most
    /// `expires_ns` for them (`0`: only what is waiting now). Messages of an earlier pull
    /// that arrive late are dropped (they will be delivered again).
    pub fn pull(
        &mut self,
        stream: &str,
        consumer: &str,
        batch: usize,
        expires_ns: u64,
        out: &mut Vec<Delivered>,
    ) -> Result<PullEnd> {
        let reply = self.new_inbox();
        let body = if expires_ns == 0 {
            serde_json::json!({ "batch": batch, "no_wait": true })
        } else {
            serde_json::json!({ "batch": batch, "expires": expires_ns })
        };
        self.conn.publish(
            &format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
            Some(&reply),
            &[],
            body.to_string().as_bytes(),
        )?;
        let mut got = 0;
        while got < batch {
            let m = self.conn.next_for(self.sid)?;
            // Messages keep their own subject; status messages come on the pull's.
            if m.status.is_some() && m.subject != reply {
                continue;
            }
            match m.status {
                // No messages, the pull expired, or the consumer was deleted or changed.
                Some((404, _)) | Some((408, _)) => return Ok(PullEnd::Empty),
                Some((409, text)) => {
                    return Err(Error::Api {
                        code: 409,
                        description: format!("pull from consumer `{consumer}`: {text}"),
                    })
                }
                Some((100, _)) => continue,
                Some((code, text)) => {
                    return Err(Error::Api {
                        code,
                        description: format!("pull from consumer `{consumer}`: {text}"),
                    })
                }
                None => {}
            }
            let meta = m.reply.as_deref().and_then(ack_metadata).ok_or_else(|| {
                Error::Protocol(format!(
                    "a message from consumer `{consumer}` has no JetStream ack subject"
                ))
            })?;
            out.push(Delivered {
                message: m,
                stream_seq: meta.stream_seq,
                delivered: meta.delivered,
                timestamp_ns: meta.timestamp_ns,
                pending: meta.pending,
            });
            got += 1;
        }
        Ok(PullEnd::Full)
    }

    /// Acknowledge a delivered message (queued; sent with the next flush or read).
    pub fn ack(&mut self, ack_subject: &str) -> Result<()> {
        self.conn.publish(ack_subject, None, &[], b"+ACK")
    }

    /// Publish to `subject` with `headers`, the reply going to a fresh inbox subject, which
    /// is returned: the PubAck arrives there ([`JetStream::pub_ack`]).
    pub fn publish(
        &mut self,
        subject: &str,
        headers: &[(&str, &str)],
        payload: &[u8],
    ) -> Result<String> {
        let reply = self.new_inbox();
        self.conn.publish(subject, Some(&reply), headers, payload)?;
        Ok(reply)
    }

    /// The PubAck of the message published with reply subject `reply`, waiting for it;
    /// PubAcks of other messages that arrive first go to `others`, by reply subject.
    pub fn pub_ack(
        &mut self,
        reply: &str,
        others: &mut std::collections::HashMap<String, Result<PubAck>>,
    ) -> Result<PubAck> {
        if let Some(ack) = others.remove(reply) {
            return ack;
        }
        loop {
            let m = self.conn.next_for(self.sid)?;
            let ack = if let Some((503, _)) = m.status {
                Err(Error::Api {
                    code: 503,
                    description: "no stream takes messages on this subject".into(),
                })
            } else {
                api_reply(&m.payload).and_then(|v| {
                    serde_json::from_value(v).map_err(|e| Error::Protocol(format!("a PubAck: {e}")))
                })
            };
            if m.subject == reply {
                return ack;
            }
            others.insert(m.subject, ack);
        }
    }

    /// Send what is queued.
    pub fn flush(&mut self) -> Result<()> {
        self.conn.flush()
    }
}

/// The JSON of an API reply, or its error.
fn api_reply(payload: &[u8]) -> Result<Value> {
    let value: Value = serde_json::from_slice(payload)
        .map_err(|e| Error::Protocol(format!("a JetStream API reply is not JSON: {e}")))?;
    if let Some(error) = value.get("error") {
        return Err(Error::Api {
            code: error.get("code").and_then(Value::as_u64).unwrap_or(0) as u16,
            description: error
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("unknown error")
                .to_string(),
        });
    }
    Ok(value)
}

/// What a JetStream ack subject tells of its message.
#[derive(Debug, PartialEq, Eq)]
struct AckMetadata {
    delivered: u64,
    stream_seq: u64,
    timestamp_ns: i64,
    pending: u64,
}

/// `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>`,
/// or the newer form with a domain and an account hash after `$JS.ACK` (and a token at the
/// end).
fn ack_metadata(subject: &str) -> Option<AckMetadata> {
    let tokens: Vec<&str> = subject.split('.').collect();
    if tokens.len() < 9 || tokens[0] != "$JS" || tokens[1] != "ACK" {
        return None;
    }
    let at = if tokens.len() == 9 { 4 } else { 6 };
    let number = |i: usize| tokens.get(at + i)?.parse::<u64>().ok();
    Some(AckMetadata {
        delivered: number(0)?,
        stream_seq: number(1)?,
        timestamp_ns: number(3)? as i64,
        pending: number(4)?,
    })
}

/// A name unlikely to repeat: the client's name, the time and a counter.
fn unique(client: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let clean: String = client
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!(
        "{clean}_{nanos:x}_{}",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_subjects_give_the_stream_sequence_in_both_forms() {
        let old = ack_metadata("$JS.ACK.ORDERS.reader.1.42.7.1700000000000000000.5").unwrap();
        assert_eq!(
            old,
            AckMetadata {
                delivered: 1,
                stream_seq: 42,
                timestamp_ns: 1_700_000_000_000_000_000,
                pending: 5
            }
        );
        let new =
            ack_metadata("$JS.ACK.hub.ACCHASH.ORDERS.reader.2.43.8.1700000000000000001.0.tok")
                .unwrap();
        assert_eq!(new.stream_seq, 43);
        assert_eq!(new.delivered, 2);
        assert!(ack_metadata("_INBOX.x.1").is_none());
    }
}

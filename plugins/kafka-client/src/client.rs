//! Connections to a cluster and the requests a consumer and a producer send.
//!
//! [`Connection`] frames requests (a 32-bit size, then header v1: API key, version,
//! correlation id, client id) and reads each response in turn. [`Client`] knows the
//! cluster from a bootstrap broker's metadata and sends each request where it belongs:
//! fetches and produces to the partition's leader, group requests to the coordinator.
//!
//! Every request goes at one fixed version: the last one without the "flexible" encoding,
//! accepted by brokers from Kafka 2.x to 4.x (which dropped the oldest versions). The
//! broker's own ranges, from ApiVersions, are checked once on connecting.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;

use crate::records::{self, AbortedTransaction, NewRecord, Record};
use crate::wire::{Decoder, Encoder};
use crate::{check, code, Error, Result};

/// An API and the version this client speaks.
#[derive(Debug, Clone, Copy)]
pub struct Api {
    pub key: i16,
    pub version: i16,
    pub name: &'static str,
}

impl Api {
    const fn new(key: i16, version: i16, name: &'static str) -> Api {
        Api { key, version, name }
    }
}

pub const PRODUCE: Api = Api::new(0, 3, "Produce");
pub const FETCH: Api = Api::new(1, 4, "Fetch");
pub const LIST_OFFSETS: Api = Api::new(2, 1, "ListOffsets");
pub const METADATA: Api = Api::new(3, 4, "Metadata");
pub const OFFSET_COMMIT: Api = Api::new(8, 2, "OffsetCommit");
pub const OFFSET_FETCH: Api = Api::new(9, 3, "OffsetFetch");
pub const FIND_COORDINATOR: Api = Api::new(10, 1, "FindCoordinator");
pub const API_VERSIONS: Api = Api::new(18, 0, "ApiVersions");
pub const CREATE_TOPICS: Api = Api::new(19, 2, "CreateTopics");
pub const DELETE_TOPICS: Api = Api::new(20, 1, "DeleteTopics");

/// The APIs checked against the broker's ranges on connecting.
const SPOKEN: [Api; 9] = [
    PRODUCE,
    FETCH,
    LIST_OFFSETS,
    METADATA,
    OFFSET_COMMIT,
    OFFSET_FETCH,
    FIND_COORDINATOR,
    CREATE_TOPICS,
    DELETE_TOPICS,
];

/// Largest response accepted (a fetch is bounded by its `max_bytes`, far below).
const MAX_RESPONSE: usize = 256 << 20;

/// One connection to one broker.
pub struct Connection {
    stream: TcpStream,
    addr: String,
    client_id: String,
    correlation: i32,
    /// The API keys whose version this client speaks but the broker does not (key, the
    /// broker's min and max), from ApiVersions.
    unsupported: Vec<(i16, i16, i16)>,
}

impl Connection {
    /// Connect to `addr` (`host:port`) and learn which versions the broker speaks.
    pub fn connect(addr: &str, client_id: &str) -> Result<Connection> {
        let stream =
            TcpStream::connect(addr).map_err(|e| Error::io(format!("connect to {addr}"), e))?;
        let _ = stream.set_nodelay(true);
        let mut conn = Connection {
            stream,
            addr: addr.to_string(),
            client_id: client_id.to_string(),
            correlation: 0,
            unsupported: Vec::new(),
        };
        let body = conn.call(API_VERSIONS, &[])?;
        let mut d = Decoder::new(&body, "ApiVersions");
        let error = d.i16()?;
        check("ApiVersions", error, || format!("at {addr}"))?;
        let mut ranges = HashMap::new();
        for _ in 0..d.count()? {
            let key = d.i16()?;
            let min = d.i16()?;
            let max = d.i16()?;
            ranges.insert(key, (min, max));
        }
        for api in SPOKEN {
            match ranges.get(&api.key) {
                Some(&(min, max)) if (min..=max).contains(&api.version) => {}
                Some(&(min, max)) => conn.unsupported.push((api.key, min, max)),
                None => conn.unsupported.push((api.key, -1, -1)),
            }
        }
        Ok(conn)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Send one request and read its response body (after the correlation id).
    pub fn call(&mut self, api: Api, body: &[u8]) -> Result<Vec<u8>> {
        if let Some(&(_, min, max)) = self.unsupported.iter().find(|u| u.0 == api.key) {
            return Err(Error::Protocol(if min < 0 {
                format!("broker {} does not offer {} requests", self.addr, api.name)
            } else {
                format!(
                    "broker {} speaks {} versions {min} to {max}; this client speaks version {}",
                    self.addr, api.name, api.version
                )
            }));
        }
        self.correlation = self.correlation.wrapping_add(1);
        let mut e = Encoder::default();
        e.i32(0)
            .i16(api.key)
            .i16(api.version)
            .i32(self.correlation)
            .string(&self.client_id);
        e.buf.extend_from_slice(body);
        let size = (e.buf.len() - 4) as i32;
        e.buf[..4].copy_from_slice(&size.to_be_bytes());
        let addr = self.addr.clone();
        self.stream
            .write_all(&e.buf)
            .map_err(|err| Error::io(format!("send {} to {addr}", api.name), err))?;
        let mut size = [0u8; 4];
        self.read_exact(&mut size, api)?;
        let size = i32::from_be_bytes(size);
        if size < 4 || size as usize > MAX_RESPONSE {
            return Err(Error::Protocol(format!(
                "broker {addr} sent a {} response of {size} bytes",
                api.name
            )));
        }
        let mut response = vec![0u8; size as usize];
        self.read_exact(&mut response, api)?;
        let correlation = i32::from_be_bytes(response[..4].try_into().unwrap());
        if correlation != self.correlation {
            return Err(Error::Protocol(format!(
                "broker {addr} answered request {correlation} while {} was waiting for {}",
                api.name, self.correlation
            )));
        }
        response.drain(..4);
        Ok(response)
    }

    fn read_exact(&mut self, buf: &mut [u8], api: Api) -> Result<()> {
        self.stream.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::Closed(self.addr.clone())
            } else {
                Error::io(format!("read {} from {}", api.name, self.addr), e)
            }
        })
    }
}

/// A partition's leader and replicas, from metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    pub partition: i32,
    pub leader: i32,
    pub error: i16,
}

/// A topic's partitions, from metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    pub name: String,
    pub partitions: Vec<PartitionMetadata>,
}

/// What one partition's fetch returned.
#[derive(Debug, Default)]
pub struct FetchedPartition {
    pub partition: i32,
    /// The broker's error for this partition (0 when none).
    pub error: i16,
    /// The offset after the last committed record in the partition.
    pub high_watermark: i64,
    /// The records at or after the offset asked for.
    pub records: Vec<Record>,
    /// The offset to fetch next.
    pub next_offset: i64,
}

/// A client of one cluster: a bootstrap connection for metadata and one connection per
/// broker it has had to talk to.
pub struct Client {
    client_id: String,
    bootstrap: Connection,
    /// Broker id → `host:port`, from the last metadata.
    brokers: HashMap<i32, String>,
    conns: HashMap<i32, Connection>,
    /// Topics' partitions and leaders, as last looked up; forgotten by [`Client::reset`].
    topics: HashMap<String, TopicMetadata>,
}

impl Client {
    /// Connect to the first of `bootstrap` (`host:port` each) that answers.
    pub fn connect(bootstrap: &[String], client_id: &str) -> Result<Client> {
        let mut last = None;
        for addr in bootstrap {
            match Connection::connect(addr, client_id) {
                Ok(conn) => {
                    return Ok(Client {
                        client_id: client_id.to_string(),
                        bootstrap: conn,
                        brokers: HashMap::new(),
                        conns: HashMap::new(),
                        topics: HashMap::new(),
                    })
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Protocol("no bootstrap broker given".into())))
    }

    /// The connection to broker `node`, opened at its advertised address when needed.
    pub fn broker(&mut self, node: i32) -> Result<&mut Connection> {
        if !self.conns.contains_key(&node) {
            if !self.brokers.contains_key(&node) {
                self.metadata(&[])?;
            }
            let Some(addr) = self.brokers.get(&node) else {
                return Err(Error::Protocol(format!(
                    "the cluster's metadata names no broker {node}"
                )));
            };
            let conn = Connection::connect(addr, &self.client_id).map_err(|e| match e {
                Error::Io { what, source } => Error::Io {
                    what: format!("{what} (broker {node}, as the cluster advertises it)"),
                    source,
                },
                e => e,
            })?;
            self.conns.insert(node, conn);
        }
        Ok(self.conns.get_mut(&node).expect("inserted above"))
    }

    /// Forget broker `node`'s connection (after it failed), so the next request opens a
    /// new one, and the cluster's metadata, which may have moved leaders.
    pub fn reset(&mut self, node: i32) {
        self.conns.remove(&node);
        self.forget_metadata();
    }

    /// Forget what is known of brokers and leaders: the next request looks them up again.
    pub fn forget_metadata(&mut self) {
        self.brokers.clear();
        self.topics.clear();
    }

    /// Send `body` to broker `node`; a connection that breaks is dropped.
    fn call(&mut self, node: i32, api: Api, body: &[u8]) -> Result<Vec<u8>> {
        let result = self.broker(node)?.call(api, body);
        if matches!(result, Err(Error::Io { .. } | Error::Closed(_))) {
            self.conns.remove(&node);
        }
        result
    }

    /// Metadata for `topics` (none: the brokers only); learns the brokers on the way.
    pub fn metadata(&mut self, topics: &[&str]) -> Result<Vec<TopicMetadata>> {
        let mut e = Encoder::default();
        // An empty array asks for no topic; a null one (which this never sends) for all.
        e.count(topics.len());
        for t in topics {
            e.string(t);
        }
        e.bool(false); // never create a topic by asking for it
        let body = self.bootstrap.call(METADATA, &e.buf)?;
        let mut d = Decoder::new(&body, "Metadata");
        let _throttle = d.i32()?;
        self.brokers.clear();
        for _ in 0..d.count()? {
            let node = d.i32()?;
            let host = d.string()?;
            let port = d.i32()?;
            let _rack = d.nullable_string()?;
            self.brokers.insert(node, format!("{host}:{port}"));
        }
        let _cluster = d.nullable_string()?;
        let _controller = d.i32()?;
        let mut out = Vec::new();
        for _ in 0..d.count()? {
            let error = d.i16()?;
            let name = d.string()?;
            let _internal = d.bool()?;
            let mut partitions = Vec::new();
            for _ in 0..d.count()? {
                let p_error = d.i16()?;
                let partition = d.i32()?;
                let leader = d.i32()?;
                for _ in 0..d.count()? {
                    d.i32()?; // replicas
                }
                for _ in 0..d.count()? {
                    d.i32()?; // in-sync replicas
                }
                partitions.push(PartitionMetadata {
                    partition,
                    leader,
                    error: p_error,
                });
            }
            check("Metadata", error, || format!("topic `{name}`"))?;
            partitions.sort_by_key(|p| p.partition);
            let meta = TopicMetadata { name, partitions };
            self.topics.insert(meta.name.clone(), meta.clone());
            out.push(meta);
        }
        Ok(out)
    }

    /// The topic's partitions, looked up now, or an error naming it when the cluster has no
    /// such topic.
    pub fn topic(&mut self, topic: &str) -> Result<TopicMetadata> {
        self.topics.remove(topic);
        self.metadata(&[topic])?;
        self.cached_topic(topic)
    }

    /// The topic's partitions as last looked up (looked up now the first time).
    fn cached_topic(&mut self, topic: &str) -> Result<TopicMetadata> {
        if !self.topics.contains_key(topic) {
            self.metadata(&[topic])?;
        }
        self.topics
            .get(topic)
            .cloned()
            .ok_or_else(|| Error::Broker {
                api: "Metadata",
                code: code::UNKNOWN_TOPIC_OR_PARTITION,
                context: format!("topic `{topic}`"),
            })
    }

    /// Each partition's leader, with the partitions it leads.
    fn by_leader(&mut self, topic: &str, partitions: &[i32]) -> Result<Vec<(i32, Vec<i32>)>> {
        let meta = self.cached_topic(topic)?;
        let mut out: Vec<(i32, Vec<i32>)> = Vec::new();
        for &p in partitions {
            let Some(m) = meta.partitions.iter().find(|m| m.partition == p) else {
                return Err(Error::Broker {
                    api: "Metadata",
                    code: code::UNKNOWN_TOPIC_OR_PARTITION,
                    context: format!("topic `{topic}` partition {p}"),
                });
            };
            check("Metadata", m.error, || {
                format!("topic `{topic}` partition {p}")
            })?;
            match out.iter_mut().find(|(leader, _)| *leader == m.leader) {
                Some((_, ps)) => ps.push(p),
                None => out.push((m.leader, vec![p])),
            }
        }
        Ok(out)
    }

    /// The offset of each partition's first record (`at = -2`) or after its last (`-1`).
    pub fn list_offsets(
        &mut self,
        topic: &str,
        partitions: &[i32],
        at: i64,
    ) -> Result<Vec<(i32, i64)>> {
        let mut out = Vec::new();
        for (leader, ps) in self.by_leader(topic, partitions)? {
            let mut e = Encoder::default();
            e.i32(-1).count(1).string(topic).count(ps.len());
            for p in &ps {
                e.i32(*p).i64(at);
            }
            let body = self.call(leader, LIST_OFFSETS, &e.buf)?;
            let mut d = Decoder::new(&body, "ListOffsets");
            for _ in 0..d.count()? {
                let name = d.string()?;
                for _ in 0..d.count()? {
                    let p = d.i32()?;
                    let error = d.i16()?;
                    let _timestamp = d.i64()?;
                    let offset = d.i64()?;
                    check("ListOffsets", error, || {
                        format!("topic `{name}` partition {p}")
                    })?;
                    out.push((p, offset));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Fetch from each `(partition, offset)` of `topic`, waiting at most `max_wait_ms` for
    /// `min_bytes`; read-committed (aborted transactions are left out). Partitions whose
    /// leader fails are returned with the error code, the others with their records.
    pub fn fetch(
        &mut self,
        topic: &str,
        at: &[(i32, i64)],
        max_wait_ms: i32,
        max_bytes: i32,
        partition_max_bytes: i32,
    ) -> Result<Vec<FetchedPartition>> {
        let partitions: Vec<i32> = at.iter().map(|(p, _)| *p).collect();
        let mut out = Vec::new();
        for (leader, ps) in self.by_leader(topic, &partitions)? {
            let mut e = Encoder::default();
            e.i32(-1)
                .i32(max_wait_ms)
                .i32(1)
                .i32(max_bytes)
                .i8(1) // read committed
                .count(1)
                .string(topic)
                .count(ps.len());
            for p in &ps {
                let offset = at.iter().find(|(q, _)| q == p).expect("asked for").1;
                e.i32(*p).i64(offset).i32(partition_max_bytes);
            }
            let body = match self.call(leader, FETCH, &e.buf) {
                Ok(body) => body,
                Err(e) if e.is_transient() => {
                    self.reset(leader);
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            let mut d = Decoder::new(&body, "Fetch");
            let _throttle = d.i32()?;
            for _ in 0..d.count()? {
                let _name = d.string()?;
                for _ in 0..d.count()? {
                    let partition = d.i32()?;
                    let error = d.i16()?;
                    let high_watermark = d.i64()?;
                    let _last_stable = d.i64()?;
                    let mut aborted = Vec::new();
                    let n = d.i32()?;
                    for _ in 0..n.max(0) {
                        aborted.push(AbortedTransaction {
                            producer_id: d.i64()?,
                            first_offset: d.i64()?,
                        });
                    }
                    let data = d.nullable_bytes()?.unwrap_or_default();
                    let from = at.iter().find(|(q, _)| *q == partition).map_or(0, |a| a.1);
                    let mut fetched = FetchedPartition {
                        partition,
                        error,
                        high_watermark,
                        records: Vec::new(),
                        next_offset: from,
                    };
                    if error == code::NONE {
                        fetched.next_offset =
                            records::decode_batches(data, from, &aborted, &mut fetched.records)
                                .map_err(|e| match e {
                                    Error::Protocol(m) => Error::Protocol(format!(
                                        "topic `{topic}` partition {partition}: {m}"
                                    )),
                                    e => e,
                                })?;
                    }
                    out.push(fetched);
                }
            }
        }
        out.sort_by_key(|f| f.partition);
        Ok(out)
    }

    /// Append `records` to one partition, waiting for all in-sync replicas; the offset of
    /// the first.
    pub fn produce(&mut self, topic: &str, partition: i32, records: &[NewRecord]) -> Result<i64> {
        let batch = records::encode_batch(records);
        let (leader, _) = self
            .by_leader(topic, &[partition])?
            .pop()
            .expect("one partition asked for");
        let mut e = Encoder::default();
        e.nullable_string(None)
            .i16(-1)
            .i32(30_000)
            .count(1)
            .string(topic)
            .count(1)
            .i32(partition)
            .bytes(&batch);
        let body = self.call(leader, PRODUCE, &e.buf)?;
        let mut d = Decoder::new(&body, "Produce");
        let mut base = -1;
        for _ in 0..d.count()? {
            let name = d.string()?;
            for _ in 0..d.count()? {
                let p = d.i32()?;
                let error = d.i16()?;
                base = d.i64()?;
                let _append_time = d.i64()?;
                check("Produce", error, || format!("topic `{name}` partition {p}"))?;
            }
        }
        Ok(base)
    }

    /// Create `topic` with `partitions` partitions (one replica each); an existing topic
    /// is an error with code TOPIC_ALREADY_EXISTS.
    pub fn create_topic(&mut self, topic: &str, partitions: i32) -> Result<()> {
        let mut e = Encoder::default();
        e.count(1)
            .string(topic)
            .i32(partitions)
            .i16(1)
            .count(0)
            .count(0)
            .i32(30_000)
            .bool(false);
        let body = self.controller_call(CREATE_TOPICS, &e.buf)?;
        let mut d = Decoder::new(&body, "CreateTopics");
        let _throttle = d.i32()?;
        for _ in 0..d.count()? {
            let name = d.string()?;
            let error = d.i16()?;
            let message = d.nullable_string()?;
            check("CreateTopics", error, || match message {
                Some(m) => format!("topic `{name}`: {m}"),
                None => format!("topic `{name}`"),
            })?;
        }
        Ok(())
    }

    /// Delete `topic`; a topic that does not exist is no error.
    pub fn delete_topic(&mut self, topic: &str) -> Result<()> {
        let mut e = Encoder::default();
        e.count(1).string(topic).i32(30_000);
        let body = self.controller_call(DELETE_TOPICS, &e.buf)?;
        let mut d = Decoder::new(&body, "DeleteTopics");
        let _throttle = d.i32()?;
        for _ in 0..d.count()? {
            let name = d.string()?;
            let error = d.i16()?;
            if error != code::UNKNOWN_TOPIC_OR_PARTITION {
                check("DeleteTopics", error, || format!("topic `{name}`"))?;
            }
        }
        Ok(())
    }

    /// Topic administration goes to the bootstrap broker (which forwards to the
    /// controller on clusters that need it).
    fn controller_call(&mut self, api: Api, body: &[u8]) -> Result<Vec<u8>> {
        self.bootstrap.call(api, body)
    }

    /// The broker coordinating `group`.
    pub fn find_coordinator(&mut self, group: &str) -> Result<i32> {
        let mut e = Encoder::default();
        e.string(group).i8(0);
        let body = self.bootstrap.call(FIND_COORDINATOR, &e.buf)?;
        let mut d = Decoder::new(&body, "FindCoordinator");
        let _throttle = d.i32()?;
        let error = d.i16()?;
        let message = d.nullable_string()?;
        let node = d.i32()?;
        let host = d.string()?;
        let port = d.i32()?;
        check("FindCoordinator", error, || match message {
            Some(m) => format!("group `{group}`: {m}"),
            None => format!("group `{group}`"),
        })?;
        self.brokers.insert(node, format!("{host}:{port}"));
        Ok(node)
    }

    /// Send a group request to the coordinator `node`.
    pub(crate) fn coordinator_call(&mut self, node: i32, api: Api, body: &[u8]) -> Result<Vec<u8>> {
        self.call(node, api, body)
    }
}

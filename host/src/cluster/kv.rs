//! A JetStream key-value bucket, as the host's workers use it: values read with their
//! revision, written only if the revision is still the one read (compare-and-set), and
//! listed by key prefix.
//!
//! The bucket is the stream `KV_<bucket>` on subjects `$KV.<bucket>.<key>`, one value kept
//! per key, the layout every NATS client reads as a KV bucket (`nats kv get` works on it).
//! A revision is the stream sequence of the value's message; a write names the revision it
//! replaces (`Nats-Expected-Last-Subject-Sequence`, 0 for a key that must not exist yet),
//! and the server refuses it when another write came in between.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use base64::Engine;
use nats_client::{Auth, Connection, JetStream};
use serde_json::{json, Value};

use super::ClusterError;

/// A bucket and the connection it is reached over.
pub struct Kv {
    url: String,
    bucket: String,
    client: String,
    js: Mutex<Option<JetStream>>,
    /// Round trips made, and the time they took, for the coordination figures.
    calls: AtomicU64,
    nanos: AtomicU64,
}

/// A value with the revision it was written at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Vec<u8>,
    pub revision: u64,
}

/// Why a write did not happen.
#[derive(Debug)]
pub enum PutError {
    /// The key's revision is no longer the one the write named.
    Conflict,
    Failed(ClusterError),
}

impl From<ClusterError> for PutError {
    fn from(e: ClusterError) -> Self {
        PutError::Failed(e)
    }
}

impl Kv {
    /// The bucket `bucket` on the server at `url` (`nats://host:port` or `host:port`),
    /// created when it does not exist yet.
    pub fn open(url: &str, bucket: &str, client: &str) -> Result<Kv, ClusterError> {
        let kv = Kv {
            url: url.to_string(),
            bucket: bucket.to_string(),
            client: client.to_string(),
            js: Mutex::new(None),
            calls: AtomicU64::new(0),
            nanos: AtomicU64::new(0),
        };
        let config = json!({
            "name": kv.stream(),
            "subjects": [format!("$KV.{bucket}.>")],
            "retention": "limits",
            "max_msgs_per_subject": 1,
            "discard": "new",
            "storage": "file",
            "num_replicas": 1,
            "allow_rollup_hdrs": true,
            "deny_delete": true,
            "allow_direct": true,
            "duplicate_window": 120_000_000_000u64,
        });
        kv.call(|js| ensure_stream(js, &kv.stream(), &config))?;
        Ok(kv)
    }

    /// The stream that holds the bucket.
    pub fn stream(&self) -> String {
        format!("KV_{}", self.bucket)
    }

    fn subject(&self, key: &str) -> String {
        format!("$KV.{}.{key}", self.bucket)
    }

    /// Run `op` on the connection, connecting first if need be; a broken connection is
    /// dropped so the next call connects again.
    fn call<T>(
        &self,
        op: impl FnOnce(&mut JetStream) -> nats_client::Result<T>,
    ) -> Result<T, ClusterError> {
        let mut guard = self.js.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(connect(&self.url, &self.client)?);
        }
        let js = guard.as_mut().expect("connected above");
        let started = Instant::now();
        let result = op(js);
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        match result {
            Ok(value) => Ok(value),
            Err(e) => {
                if matches!(
                    e,
                    nats_client::Error::Io { .. } | nats_client::Error::Closed
                ) {
                    *guard = None;
                }
                Err(ClusterError::Nats {
                    what: format!("use the bucket `{}`", self.bucket),
                    source: e,
                })
            }
        }
    }

    /// Round trips to the bucket so far, and the time they took.
    pub fn round_trips(&self) -> (u64, std::time::Duration) {
        (
            self.calls.load(Ordering::Relaxed),
            std::time::Duration::from_nanos(self.nanos.load(Ordering::Relaxed)),
        )
    }

    /// The value of `key` and its revision; `None` when the key has none (or was deleted).
    pub fn get(&self, key: &str) -> Result<Option<Entry>, ClusterError> {
        let subject = self.subject(key);
        let stream = self.stream();
        let reply = self.call(|js| {
            match js.request(
                &format!("$JS.API.STREAM.MSG.GET.{stream}"),
                &json!({ "last_by_subj": subject }),
            ) {
                Ok(reply) => Ok(Some(reply)),
                Err(nats_client::Error::Api { code: 404, .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })?;
        let Some(reply) = reply else {
            return Ok(None);
        };
        let message = &reply["message"];
        let revision = message["seq"].as_u64().ok_or_else(|| {
            ClusterError::Protocol(format!("a value of `{key}` came without its revision"))
        })?;
        let decode = |field: &str| -> Result<Vec<u8>, ClusterError> {
            match message[field].as_str() {
                None => Ok(Vec::new()),
                Some(text) => base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|e| {
                        ClusterError::Protocol(format!(
                            "the {field} of `{key}` are not base64: {e}"
                        ))
                    }),
            }
        };
        let headers = String::from_utf8_lossy(&decode("hdrs")?).into_owned();
        if headers.contains("KV-Operation: DEL") || headers.contains("KV-Operation: PURGE") {
            return Ok(None);
        }
        Ok(Some(Entry {
            value: decode("data")?,
            revision,
        }))
    }

    /// Write `value` under `key` if its revision is still `expected` (0: the key has no
    /// value); returns the new revision.
    pub fn put(&self, key: &str, value: &[u8], expected: u64) -> Result<u64, PutError> {
        let subject = self.subject(key);
        let expected_text = expected.to_string();
        let headers = [(
            "Nats-Expected-Last-Subject-Sequence",
            expected_text.as_str(),
        )];
        let sent = self.call(|js| {
            let reply = js.publish(&subject, &headers, value)?;
            js.pub_ack(&reply, &mut Default::default())
        });
        match sent {
            Ok(ack) => Ok(ack.seq),
            Err(ClusterError::Nats {
                source: nats_client::Error::Api { description, .. },
                ..
            }) if description.contains("wrong last sequence") => Err(PutError::Conflict),
            Err(e @ ClusterError::Nats { .. }) => {
                // The reply may have been lost after the write landed: if the key now holds
                // exactly this value, the write is the one that landed.
                match self.get(key) {
                    Ok(Some(entry)) if entry.value == value && entry.revision > expected => {
                        Ok(entry.revision)
                    }
                    _ => Err(PutError::Failed(e)),
                }
            }
            Err(e) => Err(PutError::Failed(e)),
        }
    }

    /// Write `value` under `key` whatever it held.
    pub fn put_any(&self, key: &str, value: &[u8]) -> Result<u64, ClusterError> {
        let subject = self.subject(key);
        let ack = self.call(|js| {
            let reply = js.publish(&subject, &[], value)?;
            js.pub_ack(&reply, &mut Default::default())
        })?;
        Ok(ack.seq)
    }

    /// Remove the value of `key`.
    pub fn delete(&self, key: &str) -> Result<(), ClusterError> {
        let subject = self.subject(key);
        self.call(|js| {
            let reply = js.publish(&subject, &[("KV-Operation", "DEL")], b"")?;
            js.pub_ack(&reply, &mut Default::default())
        })?;
        Ok(())
    }

    /// The keys that start with `prefix` and hold a value, in order.
    pub fn keys(&self, prefix: &str) -> Result<Vec<String>, ClusterError> {
        let stream = self.stream();
        let filter = format!("$KV.{}.{prefix}>", self.bucket);
        let info = self.call(|js| {
            js.request(
                &format!("$JS.API.STREAM.INFO.{stream}"),
                &json!({ "subjects_filter": filter }),
            )
        })?;
        let strip = format!("$KV.{}.", self.bucket);
        let mut keys: Vec<String> = info["state"]["subjects"]
            .as_object()
            .map(|subjects| {
                subjects
                    .keys()
                    .filter_map(|s| s.strip_prefix(&strip).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        keys.sort();
        // Deleted keys keep their delete marker as their last message.
        let mut live = Vec::with_capacity(keys.len());
        for key in keys {
            if self.get(&key)?.is_some() {
                live.push(key);
            }
        }
        Ok(live)
    }

    /// Remove the bucket and everything in it.
    pub fn destroy(&self) -> Result<(), ClusterError> {
        let stream = self.stream();
        self.call(|js| delete_stream(js, &stream))
    }
}

/// A JetStream connection to `url` named `client`.
pub fn connect(url: &str, client: &str) -> Result<JetStream, ClusterError> {
    let addr = url
        .strip_prefix("nats://")
        .unwrap_or(url)
        .trim_end_matches('/');
    let conn = Connection::connect(addr, client, &Auth::None).map_err(|e| ClusterError::Nats {
        what: format!("connect to NATS at {url}"),
        source: e,
    })?;
    JetStream::new(conn, client).map_err(|e| ClusterError::Nats {
        what: format!("use JetStream at {url}"),
        source: e,
    })
}

/// Create stream `name` with `config`, or take the one that exists.
pub fn ensure_stream(js: &mut JetStream, name: &str, config: &Value) -> nats_client::Result<()> {
    match js.request(&format!("$JS.API.STREAM.CREATE.{name}"), config) {
        Ok(_) => Ok(()),
        // Created by another host in the meantime, or with settings of an older version:
        // the stream is there, which is what matters.
        Err(nats_client::Error::Api {
            code: 400,
            description,
        }) if description.contains("already in use") => js.stream_info(name).map(|_| ()),
        Err(e) => Err(e),
    }
}

/// Delete stream `name`; one that does not exist is not an error.
pub fn delete_stream(js: &mut JetStream, name: &str) -> nats_client::Result<()> {
    match js.request(&format!("$JS.API.STREAM.DELETE.{name}"), &Value::Null) {
        Ok(_) | Err(nats_client::Error::Api { code: 404, .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

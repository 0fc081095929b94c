//! The built-in `nats` source: one NATS JetStream stream, read over the plugin's `net`
//! grant by a durable pull consumer with explicit acknowledgement.
//!
//! - **Position.** The stream sequence of the last message handed out (`{"seq":N}`). A run
//!   creates the consumer again, starting just after the committed position, so a restart
//!   reads on exactly there, in order, whatever the previous run had been delivered.
//! - **Acknowledgement.** A message is acknowledged in `ack` only, once the epoch holding
//!   it is committed; a work-queue or interest stream then lets it go.
//! - **Redelivery.** A message the server delivers again (its `ack_wait` passed before the
//!   epoch committed) is dropped by sequence: it was handed out already.
//! - **Rows.** `_subject`, `_seq`, `_commit_ts` (when the stream stored it) and `_headers`
//!   (a JSON object, null without headers), then the payload: `payload` as bytes or text,
//!   or the declared fields of a JSON object.
//! - **End.** With `until = "never"` (the default) the stream never ends; each `next`
//!   returns at once, after a 20 ms pause when no message is waiting. With
//!   `until = "caught-up"` a run ends once no message is waiting.

pub mod config;
pub mod rows;

use ingest_sdk::source::{Chunk, Reader, Source, Split, StreamInfo, SyncMode};
use ingest_sdk::{Error, Result};
use nats_client::{ConsumerConfig, Delivered, JetStream, PullEnd};
use serde::{Deserialize, Serialize};

use crate::config::SourceConfig;
use crate::rows::Rows;

/// How long a streaming `next` waits before it looks again when no message is waiting.
const IDLE_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// Where reading resumes: after stream sequence `seq`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsPosition {
    pub seq: u64,
}

pub struct NatsSource;

/// A client error as the host should treat it.
pub fn nats_error(e: nats_client::Error, context: &str) -> Error {
    nats_client::plugin::to_plugin_error(e, context)
}

/// Connect with the config's credentials.
pub fn connect(cfg: &SourceConfig) -> Result<JetStream> {
    nats_client::plugin::connect(&cfg.server, &cfg.consumer, &cfg.credentials)
}

/// The stream's information, or a config error naming the stream.
fn check_stream(js: &mut JetStream, cfg: &SourceConfig) -> Result<nats_client::StreamInfo> {
    js.stream_info(&cfg.stream).map_err(|e| {
        nats_error(
            e,
            &format!("nats {}: JetStream stream `{}`", cfg.server, cfg.stream),
        )
    })
}

impl Source for NatsSource {
    type Reader = NatsReader;

    fn spec() -> String {
        config::spec()
    }

    fn check(config: &str) -> Result<()> {
        let cfg = SourceConfig::parse(config)?;
        if let Some(warning) = cfg.check_against(&ingest_sdk::host::checkpoints())? {
            ingest_sdk::host::log(ingest_sdk::host::Level::Warn, &warning);
        }
        let mut js = connect(&cfg)?;
        check_stream(&mut js, &cfg).map(|_| ())
    }

    fn discover(config: &str) -> Result<Vec<StreamInfo>> {
        let cfg = SourceConfig::parse(config)?;
        Ok(vec![StreamInfo {
            name: cfg.name.clone(),
            schema: rows::schema(&cfg.payload),
            primary_key: vec!["_seq".to_string()],
            cursor_field: Some("_seq".to_string()),
            sync_modes: vec![SyncMode::Incremental],
        }])
    }

    fn splits(config: &str, stream: &str) -> Result<Vec<Split>> {
        let cfg = SourceConfig::parse(config)?;
        check_name(&cfg, stream)?;
        Ok(vec![Split {
            id: cfg.stream.clone(),
            descriptor: Vec::new(),
        }])
    }

    fn open(
        config: &str,
        stream: &str,
        _split: Split,
        position: Option<Vec<u8>>,
    ) -> Result<NatsReader> {
        let cfg = SourceConfig::parse(config)?;
        check_name(&cfg, stream)?;
        let at: NatsPosition = ingest_sdk::source::resume_at(stream, position)?;
        let mut js = connect(&cfg)?;
        let info = check_stream(&mut js, &cfg)?;
        if at.seq > info.state.last_seq {
            return Err(Error::fatal(format!(
                "stream `{stream}`: the pipeline's position is sequence {} but JetStream stream `{}` ends at {}: it was deleted or purged and made again. Reset this pipeline's state to read it from its start",
                at.seq, cfg.stream, info.state.last_seq
            )));
        }
        let consumer = ConsumerConfig {
            durable_name: cfg.consumer.clone(),
            deliver_policy: if at.seq == 0 {
                "all"
            } else {
                "by_start_sequence"
            }
            .into(),
            opt_start_seq: (at.seq > 0).then_some(at.seq + 1),
            ack_policy: "explicit".into(),
            ack_wait: cfg.ack_wait_secs.saturating_mul(1_000_000_000),
            max_ack_pending: cfg.max_ack_pending,
            filter_subject: cfg.filter_subject.clone(),
        };
        js.recreate_consumer(&cfg.stream, &consumer).map_err(|e| {
            nats_error(
                e,
                &format!(
                    "nats {}: consumer `{}` of `{}`",
                    cfg.server, cfg.consumer, cfg.stream
                ),
            )
        })?;
        Ok(NatsReader {
            rows: Rows::new(&cfg.payload),
            cfg,
            js,
            delivered: at,
            unacked: Vec::new(),
            pulled: Vec::new(),
            done: false,
            paused: false,
        })
    }
}

fn check_name(cfg: &SourceConfig, stream: &str) -> Result<()> {
    ingest_sdk::source::check_stream("nats", &cfg.name, stream)
}

/// Reads the stream through its consumer.
pub struct NatsReader {
    cfg: SourceConfig,
    js: JetStream,
    rows: Rows,
    /// The last message handed out.
    delivered: NatsPosition,
    /// Handed out, not yet acknowledged: stream sequence and ack subject, in order.
    unacked: Vec<(u64, String)>,
    pulled: Vec<Delivered>,
    done: bool,
    /// Reading is paused at `max_ack_pending` (warned once per pause).
    paused: bool,
}

impl NatsReader {
    /// The rows built so far as a chunk, at the last message handed out.
    fn chunk(&mut self, rejects: Vec<ingest_sdk::Reject>) -> Result<Option<Chunk>> {
        Ok(Some(Chunk {
            batch: self.rows.finish()?,
            position: serde_json::to_vec(&self.delivered).expect("a position serializes"),
            rejects,
        }))
    }

    fn error(&self, e: nats_client::Error) -> Error {
        nats_error(
            e,
            &format!(
                "nats {}: reading stream `{}` with consumer `{}`",
                self.cfg.server, self.cfg.stream, self.cfg.consumer
            ),
        )
    }
}

impl Reader for NatsReader {
    fn next(&mut self, max_rows: usize) -> Result<Option<Chunk>> {
        if self.done {
            return Ok(None);
        }
        // Never ask for more than the consumer may have unacknowledged: the server would
        // hold the pull until `ack_wait` passed and deliver everything again.
        let room = (self.cfg.max_ack_pending.max(0) as usize).saturating_sub(self.unacked.len());
        if room == 0 {
            if !self.paused {
                self.paused = true;
                ingest_sdk::host::log(
                    ingest_sdk::host::Level::Warn,
                    &format!(
                        "stream `{}`: reading paused at {} messages awaiting their epoch's commit (max_ack_pending); close epochs sooner ([checkpoint] every_rows) or raise max_ack_pending",
                        self.cfg.name,
                        self.unacked.len()
                    ),
                );
            }
            // Nothing new until the open epoch commits and `ack` makes room.
            std::thread::sleep(std::time::Duration::from_millis(50));
            return self.chunk(Vec::new());
        }
        self.paused = false;
        let want = max_rows.clamp(1, self.cfg.batch).min(room);
        self.pulled.clear();
        let pulled = self.js.pull(
            &self.cfg.stream,
            &self.cfg.consumer,
            want,
            0,
            &mut self.pulled,
        );
        let end = pulled.map_err(|e| self.error(e))?;
        if end == PullEnd::Empty && self.pulled.is_empty() && !self.cfg.until_caught_up {
            // Nothing waiting: look again shortly (a pull that waits on the server is not
            // used; polling keeps every call short).
            std::thread::sleep(IDLE_POLL);
        }
        let mut rejects = Vec::new();
        for d in self.pulled.drain(..) {
            let reply = d.message.reply.clone().unwrap_or_default();
            if d.stream_seq <= self.delivered.seq {
                // Delivered again (its ack_wait passed): keep the newest ack subject.
                // `unacked` is in sequence order.
                if let Ok(at) = self
                    .unacked
                    .binary_search_by_key(&d.stream_seq, |(s, _)| *s)
                {
                    self.unacked[at].1 = reply;
                }
                continue;
            }
            self.delivered.seq = d.stream_seq;
            self.unacked.push((d.stream_seq, reply));
            if let Err(reason) = self.rows.push(&d) {
                rejects.push(ingest_sdk::Reject {
                    row: None,
                    original: Some(String::from_utf8_lossy(&d.message.payload).into_owned()),
                    location: Some(format!("{}:{}", self.cfg.stream, d.stream_seq)),
                    reason,
                });
            }
        }
        if end == PullEnd::Empty
            && self.cfg.until_caught_up
            && self.rows.is_empty()
            && rejects.is_empty()
        {
            self.done = true;
            return Ok(None);
        }
        self.chunk(rejects)
    }

    fn ack(&mut self, position: &[u8]) {
        let Ok(at) = serde_json::from_slice::<NatsPosition>(position) else {
            return;
        };
        let done = self.unacked.partition_point(|(seq, _)| *seq <= at.seq);
        for (_, subject) in self.unacked.drain(..done) {
            if self.js.ack(&subject).is_err() {
                // Unacknowledged messages are delivered again and dropped by sequence;
                // the next run starts after the committed position in any case.
                break;
            }
        }
        let _ = self.js.flush();
    }
}

// Exported only in the component: natively (unit tests) the export names cannot link.
#[cfg(target_family = "wasm")]
ingest_sdk::export_source!(NatsSource);

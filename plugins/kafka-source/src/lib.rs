//! The built-in `kafka` source: one Kafka topic, read over the plugin's `net` grant, its
//! offsets kept in the pipeline's state and committed to a consumer group once durable.
//!
//! - **Partitions.** The reader reads every partition of the topic itself; it never joins
//!   the group (see docs/decisions/0014). The topic's metadata is looked up again every
//!   minute: partitions added meanwhile are read from their start.
//! - **Position.** The next offset of every partition (`{"offsets":{"0":120,"1":98}}`), in
//!   the pipeline's own state, always at the end of a record batch. A partition the
//!   position does not name starts at the group's committed offset, or, without one, at
//!   `start` (earliest or latest).
//! - **Commits.** Offsets are committed to the group (`ingest_<topic>` by default) in `ack`
//!   only, once the epoch holding their records is durable. A run resumes from the
//!   pipeline's position; the group's offsets follow it, so Kafka's tools show the
//!   pipeline's lag.
//! - **Rows.** `_partition`, `_offset`, `_commit_ts` (the record's timestamp), `_key`,
//!   `_headers` (a JSON object, null without headers), then the value: `payload` as bytes
//!   or text, or the declared fields of a JSON object. `(_partition, _offset)` is unique.
//! - **Transactions.** Reads are read-committed: records of aborted transactions and the
//!   transaction markers are never rows.
//! - **End.** With `until = "never"` (the default) the topic never ends; each `next` waits
//!   at most `fetch_wait_ms` at the broker. With `until = "caught-up"` a run ends once every
//!   partition is read to its end.

pub mod config;
pub mod rows;

use std::collections::BTreeMap;

use ingest_sdk::source::{Chunk, Reader, Source, Split, StreamInfo, SyncMode};
use ingest_sdk::{Error, Result};
use kafka_client::group;
use kafka_client::{code, Client, Record};
use serde::{Deserialize, Serialize};

use crate::config::SourceConfig;
use crate::rows::Rows;

/// Where reading resumes: the next offset of each partition read so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaPosition {
    pub offsets: BTreeMap<i32, i64>,
}

pub struct KafkaSource;

/// A client error as the host should treat it.
pub fn kafka_error(e: kafka_client::Error, context: &str) -> Error {
    kafka_client::plugin::to_plugin_error(e, context)
}

/// How often the topic's partitions are looked up again.
const LOOK_UP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Connect to the cluster.
fn connect(cfg: &SourceConfig) -> Result<Client> {
    Client::connect(&cfg.brokers, &cfg.group)
        .map_err(|e| kafka_error(e, &format!("kafka {}", cfg.brokers.join(","))))
}

/// The topic's partitions, or a config error naming the topic.
fn partitions(client: &mut Client, cfg: &SourceConfig) -> Result<Vec<i32>> {
    let meta = client.topic(&cfg.topic).map_err(|e| {
        kafka_error(
            e,
            &format!("kafka {}: topic `{}`", cfg.brokers.join(","), cfg.topic),
        )
    })?;
    Ok(meta.partitions.iter().map(|p| p.partition).collect())
}

impl Source for KafkaSource {
    type Reader = KafkaReader;

    fn spec() -> String {
        config::spec()
    }

    fn check(config: &str) -> Result<()> {
        let cfg = SourceConfig::parse(config)?;
        let mut client = connect(&cfg)?;
        partitions(&mut client, &cfg).map(|_| ())
    }

    fn discover(config: &str) -> Result<Vec<StreamInfo>> {
        let cfg = SourceConfig::parse(config)?;
        Ok(vec![StreamInfo {
            name: cfg.name.clone(),
            schema: rows::schema(&cfg.payload, cfg.key_binary),
            primary_key: vec!["_partition".to_string(), "_offset".to_string()],
            cursor_field: None,
            sync_modes: vec![SyncMode::Incremental],
        }])
    }

    fn splits(config: &str, stream: &str) -> Result<Vec<Split>> {
        let cfg = SourceConfig::parse(config)?;
        check_name(&cfg, stream)?;
        Ok(vec![Split {
            id: cfg.topic.clone(),
            descriptor: Vec::new(),
        }])
    }

    fn open(
        config: &str,
        stream: &str,
        _split: Split,
        position: Option<Vec<u8>>,
    ) -> Result<KafkaReader> {
        let cfg = SourceConfig::parse(config)?;
        check_name(&cfg, stream)?;
        // zstd-compressed record batches decode natively in the host (decision 0018).
        #[cfg(target_family = "wasm")]
        zstd::set_native_decompressor(ingest_sdk::host::zstd_decompress);
        let at: KafkaPosition = ingest_sdk::source::resume_at(stream, position)?;
        let mut client = connect(&cfg)?;
        let all = partitions(&mut client, &cfg)?;
        if let Some(gone) = at.offsets.keys().find(|p| !all.contains(p)) {
            return Err(Error::fatal(format!(
                "stream `{stream}`: the pipeline's position names partition {gone} of topic `{}`, which now has {} partitions: it was deleted and made again. Reset this pipeline's state to read it from its start",
                cfg.topic,
                all.len()
            )));
        }
        let mut reader = KafkaReader {
            rows: Rows::new(&cfg.payload, cfg.key_binary),
            cfg,
            client,
            next: at.offsets,
            partitions: Vec::new(),
            looked_up: std::time::Instant::now(),
            buffered: Vec::new(),
            caught_up: BTreeMap::new(),
            done: false,
            commit_warned: false,
        };
        reader.take_partitions(all, false)?;
        Ok(reader)
    }
}

fn check_name(cfg: &SourceConfig, stream: &str) -> Result<()> {
    ingest_sdk::source::check_stream("kafka", &cfg.name, stream)
}

/// Records fetched and not yet handed out, of one partition, with the offset to fetch
/// next once they are.
struct Buffered {
    partition: i32,
    records: std::vec::IntoIter<Record>,
    next_offset: i64,
}

/// Reads every partition of the topic.
pub struct KafkaReader {
    cfg: SourceConfig,
    client: Client,
    rows: Rows,
    /// The next offset of every partition.
    next: BTreeMap<i32, i64>,
    /// The topic's partitions, as last looked up.
    partitions: Vec<i32>,
    /// When the topic's partitions were last looked up.
    looked_up: std::time::Instant,
    buffered: Vec<Buffered>,
    /// Per partition, whether the last fetch reached its end.
    caught_up: BTreeMap<i32, bool>,
    done: bool,
    /// A failed group commit was warned about (once per run).
    commit_warned: bool,
}

impl KafkaReader {
    fn context(&self) -> String {
        format!(
            "kafka {}: topic `{}`, group `{}`",
            self.cfg.brokers.join(","),
            self.cfg.topic,
            self.cfg.group
        )
    }

    fn error(&self, e: kafka_client::Error) -> Error {
        kafka_error(e, &self.context())
    }

    /// Read `partitions` (the topic's, as just looked up): starting offsets for those not
    /// read before, from the group's committed offsets, or else from `start` when the run
    /// opens and from their first record when they were `added` to the topic during it.
    fn take_partitions(&mut self, partitions: Vec<i32>, added: bool) -> Result<()> {
        for p in &partitions {
            self.caught_up.entry(*p).or_insert(false);
        }
        self.partitions = partitions;
        let new: Vec<i32> = self
            .partitions
            .iter()
            .copied()
            .filter(|p| !self.next.contains_key(p))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let committed = group::committed(&mut self.client, &self.cfg.group, &self.cfg.topic, &new)
            .map_err(|e| self.error(e))?;
        let mut unset = Vec::new();
        for (p, offset) in committed {
            match offset {
                Some(o) => {
                    self.next.insert(p, o);
                }
                None => unset.push(p),
            }
        }
        if !unset.is_empty() {
            let at = if self.cfg.start_latest && !added {
                -1
            } else {
                -2
            };
            let offsets = self
                .client
                .list_offsets(&self.cfg.topic, &unset, at)
                .map_err(|e| self.error(e))?;
            self.next.extend(offsets);
        }
        Ok(())
    }

    /// The rows built so far as a chunk, at the position after them.
    fn chunk(&mut self, rejects: Vec<ingest_sdk::Reject>) -> Result<Option<Chunk>> {
        let position = KafkaPosition {
            offsets: self.next.clone(),
        };
        Ok(Some(Chunk {
            batch: self.rows.finish()?,
            position: serde_json::to_vec(&position).expect("a position serializes"),
            rejects,
        }))
    }

    /// Fetch from every partition (called once everything fetched before is handed out).
    fn fetch(&mut self) -> Result<()> {
        debug_assert!(self.buffered.is_empty());
        let at: Vec<(i32, i64)> = self.partitions.iter().map(|p| (*p, self.next[p])).collect();
        if at.is_empty() {
            return Ok(());
        }
        let wait = if self.cfg.until_caught_up {
            0
        } else {
            self.cfg.fetch_wait_ms
        };
        let fetched = self
            .client
            .fetch(
                &self.cfg.topic,
                &at,
                wait,
                self.cfg.fetch_max_bytes,
                self.cfg.fetch_max_bytes,
            )
            .map_err(|e| self.error(e))?;
        for f in fetched {
            match f.error {
                code::NONE => {}
                code::OFFSET_OUT_OF_RANGE => {
                    return Err(Error::fatal(format!(
                        "{}: partition {} no longer holds offset {} (the topic's retention deleted records the pipeline had not read, or the topic was made again); reset this pipeline's state, or set its position past the gap",
                        self.context(),
                        f.partition,
                        self.next[&f.partition]
                    )))
                }
                other => {
                    // A leader moving or unavailable: look up the cluster again and try
                    // this partition on the next call.
                    ingest_sdk::host::log(
                        ingest_sdk::host::Level::Warn,
                        &format!(
                            "{}: partition {}: {} ({other}); trying again",
                            self.context(),
                            f.partition,
                            kafka_client::code_name(other)
                        ),
                    );
                    self.client.forget_metadata();
                    continue;
                }
            }
            let end = f.next_offset.max(self.next[&f.partition]);
            self.caught_up
                .insert(f.partition, f.records.is_empty() && end >= f.high_watermark);
            if f.records.is_empty() {
                // Only markers or aborted records: move past them.
                self.next.insert(f.partition, end);
            } else {
                self.buffered.push(Buffered {
                    partition: f.partition,
                    records: f.records.into_iter(),
                    next_offset: end,
                });
            }
        }
        Ok(())
    }
}

impl Reader for KafkaReader {
    fn next(&mut self, max_rows: usize) -> Result<Option<Chunk>> {
        if self.done {
            return Ok(None);
        }
        if self.looked_up.elapsed() >= LOOK_UP_EVERY {
            // Partitions added to the topic since.
            self.looked_up = std::time::Instant::now();
            let all = partitions(&mut self.client, &self.cfg)?;
            if all.len() > self.partitions.len() {
                self.take_partitions(all, true)?;
            }
        }
        if self.buffered.is_empty() {
            self.fetch()?;
        }
        let mut rejects = Vec::new();
        let want = max_rows.max(1);
        // Whole record batches only: the position moves from batch end to batch end (see
        // `Record::batch_end`), so `want` is exceeded by up to a batch.
        let mut at_batch_end = true;
        while let Some(b) = self.buffered.first_mut() {
            if at_batch_end && self.rows.len() + rejects.len() >= want {
                break;
            }
            match b.records.next() {
                Some(r) => {
                    at_batch_end = r.batch_end.is_some();
                    if let Some(end) = r.batch_end {
                        self.next.insert(b.partition, end);
                    }
                    if let Err(reason) = self.rows.push(b.partition, &r) {
                        rejects.push(ingest_sdk::Reject {
                            row: None,
                            original: r
                                .value
                                .as_deref()
                                .map(|v| String::from_utf8_lossy(v).into_owned()),
                            location: Some(format!(
                                "{}:{}@{}",
                                self.cfg.topic, b.partition, r.offset
                            )),
                            reason,
                        });
                    }
                }
                None => {
                    at_batch_end = true;
                    self.next.insert(b.partition, b.next_offset);
                    self.buffered.remove(0);
                }
            }
        }
        if self.cfg.until_caught_up
            && self.rows.is_empty()
            && rejects.is_empty()
            && self.buffered.is_empty()
            && self.caught_up.values().all(|c| *c)
        {
            self.done = true;
            return Ok(None);
        }
        self.chunk(rejects)
    }

    fn ack(&mut self, position: &[u8]) {
        let Ok(at) = serde_json::from_slice::<KafkaPosition>(position) else {
            return;
        };
        let offsets: Vec<(i32, i64)> = at.offsets.into_iter().collect();
        if offsets.is_empty() {
            return;
        }
        let committed = group::commit(&mut self.client, &self.cfg.group, &self.cfg.topic, &offsets);
        if let Err(e) = committed {
            // The pipeline's own position is what a run resumes from; the group's offsets
            // only show progress.
            if !self.commit_warned {
                self.commit_warned = true;
                ingest_sdk::host::log(
                    ingest_sdk::host::Level::Warn,
                    &format!(
                        "{}: committing offsets to the group failed ({e}); the pipeline's own state keeps its position, and the next commit tries again",
                        self.context()
                    ),
                );
            }
        }
    }
}

// Exported only in the component: natively (unit tests) the export names cannot link.
#[cfg(target_family = "wasm")]
ingest_sdk::export_source!(KafkaSource);

//! Kafka in, against the Kafka-protocol broker `scripts/kafka-setup` starts on
//! 127.0.0.1:9092: every record once into the lake however often a run is killed, the
//! group's offsets committed only as epochs commit, keys, headers and tombstones as
//! columns, and a broker outside the grant denied.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_client::{Client, NewRecord};
use serde_json::{json, Value};

use crate::support::*;

const BROKER: &str = "127.0.0.1:9092";

fn client() -> Client {
    Client::connect(&[BROKER.to_string()], "ingest-tests").unwrap_or_else(|e| {
        panic!(
            "cannot reach a Kafka broker at {BROKER}; scripts/kafka-setup starts one (scripts/test runs it): {e}"
        )
    })
}

/// A topic of the test's own, deleted when dropped.
struct TestTopic {
    name: String,
    partitions: i32,
}

impl TestTopic {
    fn new(tag: &str, partitions: i32) -> TestTopic {
        let name = format!("t_{tag}_{}", std::process::id());
        let mut c = client();
        c.delete_topic(&name).unwrap();
        c.create_topic(&name, partitions).unwrap();
        TestTopic { name, partitions }
    }

    /// Produce JSON records `{"id":N,"note":"record N"}`, N from `from`, spread over the
    /// partitions in runs of 1000, keyed by id.
    fn produce(&self, from: u64, rows: u64) {
        let mut c = client();
        let ids: Vec<u64> = (from..from + rows).collect();
        for (i, chunk) in ids.chunks(1000).enumerate() {
            let records: Vec<NewRecord> = chunk
                .iter()
                .map(|id| NewRecord {
                    timestamp_ms: 1_764_806_400_000 + *id as i64,
                    key: Some(format!("order-{id}").into_bytes()),
                    value: Some(
                        json!({"id": id, "note": format!("record {id}")})
                            .to_string()
                            .into_bytes(),
                    ),
                    headers: Vec::new(),
                })
                .collect();
            c.produce(&self.name, i as i32 % self.partitions, &records)
                .unwrap();
        }
    }

    fn produce_records(&self, partition: i32, records: &[NewRecord]) {
        client().produce(&self.name, partition, records).unwrap();
    }

    /// Each partition's end (the offset after its last record), as a fetch reports it.
    fn ends(&self) -> Vec<(i32, i64)> {
        let from: Vec<(i32, i64)> = (0..self.partitions).map(|p| (p, 0)).collect();
        client()
            .fetch(&self.name, &from, 0, 1024, 1024)
            .unwrap()
            .into_iter()
            .map(|f| (f.partition, f.high_watermark))
            .collect()
    }

    /// The offsets `group` committed.
    fn committed(&self, group: &str) -> Vec<(i32, Option<i64>)> {
        let partitions: Vec<i32> = (0..self.partitions).collect();
        kafka_client::group::committed(&mut client(), group, &self.name, &partitions).unwrap()
    }
}

impl Drop for TestTopic {
    fn drop(&mut self) {
        let _ = client().delete_topic(&self.name);
    }
}

/// The kafka source of `topic` (JSON values: `id`, `note`) until caught up.
fn kafka_source(topic: &TestTopic) -> String {
    format!(
        r#"[[source]]
name = "records"
plugin = "builtin:kafka"
net = ["{BROKER}"]
[source.config]
brokers = ["{BROKER}"]
topic = "{name}"
name = "orders"
until = "caught-up"
fetch_max_bytes = 262144
payload = "json"
[source.config.columns]
id = "int64"
note = "utf8"
"#,
        name = topic.name
    )
}

/// The ids in the lake, with how often each appears.
fn ids_in_lake(scratch: &Scratch) -> BTreeMap<i64, usize> {
    crate::nats::ids_in_lake(scratch)
}

#[test]
fn every_record_reaches_the_lake_once_however_often_the_run_is_killed() {
    const ROWS: u64 = 1_000_000;
    let topic = TestTopic::new("kills", 3);
    topic.produce(1, ROWS);
    let scratch = Scratch::new();
    std::fs::create_dir_all(scratch.path("out")).unwrap();
    scratch.write(
        "pipeline.toml",
        format!(
            "[pipeline]\nname = \"kafka-lake\"\n\n[checkpoint]\nevery_rows = 10000\n\n{}\n{JSONL_LAKE}",
            kafka_source(&topic)
        ),
    );
    // Each run is killed a random moment after its first commit, with more records
    // produced before each, so that every run has work left when it dies.
    let killed = kill_after_first_commit(
        &scratch,
        "out/orders",
        20,
        Duration::from_millis(150),
        |run| topic.produce(ROWS + 1 + run * 20_000, 20_000),
    );
    const PRODUCED: u64 = ROWS + 20 * 20_000;
    // Records produced between runs are read too.
    topic.produce(PRODUCED + 1, 3000);
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    let ids = ids_in_lake(&scratch);
    let twice: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "in the lake more than once: {twice:?}");
    assert_eq!(ids.len() as u64, PRODUCED + 3000, "records lost");
    assert_eq!(ids.keys().next(), Some(&1));
    assert_eq!(ids.keys().last(), Some(&((PRODUCED + 3000) as i64)));
    assert!(
        killed >= 15,
        "only {killed} of 20 runs were killed before they ended"
    );
    // The group's offsets followed the commits to each partition's end.
    let ends: Vec<(i32, Option<i64>)> = topic
        .ends()
        .into_iter()
        .map(|(p, end)| (p, Some(end)))
        .collect();
    assert_eq!(topic.committed(&format!("ingest_{}", topic.name)), ends);
    // A run with nothing new reads nothing.
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    assert_eq!(ids_in_lake(&scratch).len() as u64, PRODUCED + 3000);
}

#[test]
fn keys_headers_timestamps_and_tombstones_become_columns_and_bad_values_dead_letters() {
    let topic = TestTopic::new("columns", 1);
    let record = |key: Option<&str>, value: Option<&str>| NewRecord {
        timestamp_ms: 1_764_806_400_123,
        key: key.map(|k| k.as_bytes().to_vec()),
        value: value.map(|v| v.as_bytes().to_vec()),
        headers: vec![("trace".into(), b"abc".to_vec())],
    };
    topic.produce_records(
        0,
        &[
            record(Some("order-1"), Some(r#"{"id":1,"note":"first"}"#)),
            record(Some("order-1"), None),
            record(None, Some("not json")),
            record(Some("order-2"), Some(r#"{"id":2}"#)),
        ],
    );
    let scratch = Scratch::new();
    std::fs::create_dir_all(scratch.path("out")).unwrap();
    scratch.write(
        "pipeline.toml",
        format!(
            "[pipeline]\nname = \"kafka-columns\"\non_error = \"dlq\"\n\n[dlq]\nprotect = \"raw\"\n\n{}\n{JSONL_LAKE}",
            kafka_source(&topic)
        ),
    );
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    let rows = json_lines(&scratch.path("out/orders"));
    let pick = |row: &Value| {
        (
            row["_offset"].as_i64().unwrap(),
            row["_key"].clone(),
            row["id"].clone(),
            row["note"].clone(),
        )
    };
    let mut got: Vec<_> = rows.iter().map(pick).collect();
    got.sort_by_key(|r| r.0);
    assert_eq!(
        got,
        [
            (0, json!("order-1"), json!(1), json!("first")),
            (1, json!("order-1"), Value::Null, Value::Null),
            (3, json!("order-2"), json!(2), Value::Null),
        ]
    );
    assert_eq!(rows[0]["_partition"], 0);
    assert_eq!(rows[0]["_headers"], r#"{"trace":"abc"}"#);
    assert!(
        rows[0]["_commit_ts"]
            .as_str()
            .is_some_and(|t| t.starts_with("2025-12-04T00:00:00.123")),
        "{}",
        rows[0]["_commit_ts"]
    );
    let letters = dead_letters(&scratch.path(""), "kafka-columns", "orders");
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = letters[0].to_string();
    assert!(
        letter.contains("not JSON") && letter.contains(&format!("{}:0@2", topic.name)),
        "{letter}"
    );
}

#[test]
fn a_broker_outside_the_grant_is_denied_and_a_missing_topic_named() {
    let topic = TestTopic::new("grant", 1);
    topic.produce(1, 10);
    let scratch = Scratch::new();
    std::fs::create_dir_all(scratch.path("out")).unwrap();
    let text = format!(
        "[pipeline]\nname = \"kafka-grant\"\n\n{}\n{JSONL_LAKE}",
        kafka_source(&topic)
    );
    scratch.write(
        "pipeline.toml",
        text.replace(&format!("net = [\"{BROKER}\"]"), "net = [\"127.0.0.1:9\"]"),
    );
    let out = scratch.host(&["run", "pipeline.toml"]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stderr.contains("access denied") && out.stderr.contains(BROKER),
        "{}",
        out.stderr
    );
    scratch.write(
        "pipeline.toml",
        text.replace(
            &format!("topic = \"{}\"", topic.name),
            "topic = \"no_such_topic_here\"",
        ),
    );
    let out = scratch.host(&["check", "pipeline.toml"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("`no_such_topic_here`")
            && out.stderr.contains("UNKNOWN_TOPIC_OR_PARTITION"),
        "{}",
        out.stderr
    );
    assert!(
        !std::path::Path::new(&scratch.path("out/orders")).exists()
            || ids_in_lake(&scratch).is_empty()
    );
}

#[test]
fn example_13_reads_the_produced_orders_into_a_masked_partitioned_lake() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/13-kafka-to-parquet");
    let topic = TestTopic {
        name: format!("t_example_{}", std::process::id()),
        partitions: 3,
    };
    let scratch = Scratch::new();
    let text = std::fs::read_to_string(dir.join("pipeline.toml")).unwrap();
    assert!(text.contains("topic = \"example_orders\""));
    scratch.write(
        "pipeline.toml",
        text.replace("example_orders", &topic.name).replace(
            "group = \"example_13\"",
            &format!("group = \"{}_g\"", topic.name),
        ),
    );
    scratch.write(
        "secrets/mask.key",
        std::fs::read(dir.join("secrets/mask.key")).unwrap(),
    );
    let produce = |count: &str| {
        let out = std::process::Command::new("python3")
            .arg(dir.join("produce.py"))
            .args([count, "--topic", &topic.name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "produce.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    crate::nats::assert_example_orders_lake(&scratch, produce, || {});
}

//! NATS JetStream in and out, against the machine's nats-server (127.0.0.1:4222, JetStream
//! on): every message once into the lake however often a run is killed, acknowledged only
//! once committed, and a repeated commit into a stream storing nothing twice.

use std::collections::BTreeMap;
use std::time::Duration;

use nats_client::{Auth, Connection, JetStream};
use serde_json::{json, Value};

use crate::cdc::start;
use crate::support::*;

const SERVER: &str = "127.0.0.1:4222";

fn jetstream() -> JetStream {
    let conn = Connection::connect(SERVER, "ingest-tests", &Auth::None).unwrap_or_else(|e| {
        panic!(
            "cannot reach NATS at {SERVER}; the tests need nats-server with JetStream (-js): {e}"
        )
    });
    JetStream::new(conn, "ingest_tests").unwrap()
}

/// A JetStream stream of the test's own on `<NAME>.>`, deleted when dropped.
struct TestStream {
    name: String,
}

impl TestStream {
    fn new(tag: &str, duplicate_window_secs: u64) -> TestStream {
        let name = format!("T_{tag}_{}", std::process::id());
        let mut js = jetstream();
        let _ = js.request(&format!("$JS.API.STREAM.DELETE.{name}"), &Value::Null);
        js.request(
            &format!("$JS.API.STREAM.CREATE.{name}"),
            &json!({
                "name": name,
                "subjects": [format!("{name}.>")],
                "duplicate_window": duplicate_window_secs * 1_000_000_000,
            }),
        )
        .unwrap();
        TestStream { name }
    }

    /// Publish `rows` JSON messages `{"id":N,"note":"message N"}`, N from `from`, each
    /// checked by its PubAck.
    fn publish(&self, from: u64, rows: u64) {
        let mut js = jetstream();
        let subject = format!("{}.orders", self.name);
        let mut others = Default::default();
        let ids: Vec<u64> = (from..from + rows).collect();
        for chunk in ids.chunks(2000) {
            let mut replies = Vec::new();
            for id in chunk {
                let body = json!({"id": id, "note": format!("message {id}")}).to_string();
                replies.push(js.publish(&subject, &[], body.as_bytes()).unwrap());
            }
            js.flush().unwrap();
            for r in replies {
                js.pub_ack(&r, &mut others).unwrap();
            }
        }
    }

    fn info(&self) -> nats_client::StreamInfo {
        jetstream().stream_info(&self.name).unwrap()
    }

    /// The consumer's numbers: (acknowledged floor's stream sequence, messages awaiting ack).
    fn consumer(&self, consumer: &str) -> (u64, u64) {
        let info = jetstream()
            .request(
                &format!("$JS.API.CONSUMER.INFO.{}.{consumer}", self.name),
                &Value::Null,
            )
            .unwrap();
        (
            info["ack_floor"]["stream_seq"].as_u64().unwrap(),
            info["num_ack_pending"].as_u64().unwrap(),
        )
    }

    /// Every message's payload, in stream order.
    fn messages(&self) -> Vec<Value> {
        let mut js = jetstream();
        let mut out = Vec::new();
        for seq in 1..=self.info().state.last_seq {
            let reply = js
                .request(
                    &format!("$JS.API.STREAM.MSG.GET.{}", self.name),
                    &json!({ "seq": seq }),
                )
                .unwrap();
            let data = reply["message"]["data"].as_str().unwrap();
            out.push(serde_json::from_slice(&base64(data)).unwrap());
        }
        out
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let _ = jetstream().request(
            &format!("$JS.API.STREAM.DELETE.{}", self.name),
            &Value::Null,
        );
    }
}

/// Standard base64, as the JetStream API encodes message data.
fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (18 - 6 * i));
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// The nats source of `stream` (JSON payloads: `id`, `note`) until caught up.
fn nats_source(stream: &TestStream) -> String {
    format!(
        r#"[[source]]
name = "messages"
plugin = "builtin:nats"
net = ["{SERVER}"]
[source.config]
server = "{SERVER}"
stream = "{name}"
name = "orders"
until = "caught-up"
batch = 500
payload = "json"
[source.config.columns]
id = "int64"
note = "utf8"
"#,
        name = stream.name
    )
}

/// The ids in the JSON Lines files of stream `orders` under `out/`, with how often each
/// appears.
pub(crate) fn ids_in_lake(scratch: &Scratch) -> BTreeMap<i64, usize> {
    let mut ids = BTreeMap::new();
    for row in json_lines(&scratch.path("out/orders")) {
        *ids.entry(row["id"].as_i64().unwrap()).or_default() += 1;
    }
    ids
}

#[test]
fn every_message_reaches_the_lake_once_however_often_the_run_is_killed() {
    const ROWS: u64 = 1_000_000;
    let stream = TestStream::new("kills", 120);
    stream.publish(1, ROWS);
    let scratch = Scratch::new();
    std::fs::create_dir_all(scratch.path("out")).unwrap();
    scratch.write(
        "pipeline.toml",
        format!(
            "[pipeline]\nname = \"nats-lake\"\n\n[checkpoint]\nevery_rows = 20000\n\n{}\n{JSONL_LAKE}",
            nats_source(&stream)
        ),
    );
    let mut killed = 0;
    let mut rng = 0x2545_f491_u64;
    let mut latest = 1200;
    for _ in 0..20 {
        rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let after = Duration::from_millis(50 + (rng >> 33) % latest);
        let mut child = start(&scratch);
        if wait_or_kill(&mut child, after) {
            killed += 1;
        } else {
            latest = (latest / 2).max(100);
        }
    }
    // Messages published between runs are read too.
    stream.publish(ROWS + 1, 1000);
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    let ids = ids_in_lake(&scratch);
    let twice: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "in the lake more than once: {twice:?}");
    assert_eq!(ids.len() as u64, ROWS + 1000, "messages lost");
    assert_eq!(ids.keys().next(), Some(&1));
    assert_eq!(ids.keys().last(), Some(&((ROWS + 1000) as i64)));
    assert!(
        killed >= 10,
        "only {killed} of 20 runs were killed before they ended"
    );
    // Every message is acknowledged once its epoch committed, and nothing waits for one.
    let (floor, pending) = stream.consumer(&format!("ingest_{}", stream.name));
    assert_eq!((floor, pending), (ROWS + 1000, 0));
}

#[test]
fn a_repeated_commit_into_a_stream_stores_nothing_twice() {
    const ROWS: u64 = 5_000;
    let from = TestStream::new("from", 120);
    let to = TestStream::new("to", 120);
    from.publish(1, ROWS);
    let scratch = Scratch::new();
    scratch.write(
        "pipeline.toml",
        format!(
            "[pipeline]\nname = \"nats-nats\"\n\n[checkpoint]\nevery_rows = 1000\n\n{}\n\
             [[sink]]\nname = \"copy\"\nplugin = \"builtin:nats\"\nnet = [\"{SERVER}\"]\n\
             fs = [\"staging:rw\"]\n[sink.config]\nserver = \"{SERVER}\"\nstream = \"{to}\"\n\
             subject = \"{to}.copied\"\nstaging = \"staging\"\n",
            nats_source(&from),
            to = to.name
        ),
    );
    // The sink publishes epoch 2, and the process dies before the commit is recorded.
    let mut crashing = scratch.command(&["run", "pipeline.toml"]);
    crashing.env("INGEST_FAULT", "after-sink-commit@2");
    let out = output(crashing);
    assert_ne!(out.code, 0, "the fault did not fire: {}", out.stdout);
    assert_eq!(to.info().state.messages, 2000, "epochs 1 and 2 are in");
    // The next run commits epoch 2 again (the same message ids: dropped as duplicates)
    // and goes on.
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    let messages = to.messages();
    let ids: Vec<i64> = messages.iter().map(|m| m["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, (1..=ROWS as i64).collect::<Vec<_>>());
    assert_eq!(messages[0]["note"], "message 1");
    assert_eq!(messages[0]["_subject"], format!("{}.orders", from.name));
    // A second run finds nothing new and publishes nothing.
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    assert_eq!(to.info().state.messages, ROWS);
}

#[test]
fn a_short_duplicate_window_is_warned_about_and_a_missing_stream_named() {
    let from = TestStream::new("short", 1);
    from.publish(1, 10);
    let scratch = Scratch::new();
    let text = format!(
        "[pipeline]\nname = \"short\"\n\n{}\n[[sink]]\nname = \"copy\"\nplugin = \"builtin:nats\"\n\
         net = [\"{SERVER}\"]\nfs = [\"staging:rw\"]\n[sink.config]\nserver = \"{SERVER}\"\n\
         stream = \"{name}\"\nsubject = \"{name}.copy\"\nstaging = \"staging\"\n",
        nats_source(&from),
        name = from.name
    );
    scratch.write("pipeline.toml", &text);
    let out = scratch.host(&["run", "pipeline.toml", "--log", "warn"]);
    out.assert_ok();
    assert!(
        out.stderr.contains("duplicate_window") && out.stderr.contains("for 1 s only"),
        "{}",
        out.stderr
    );
    scratch.write(
        "pipeline.toml",
        text.replace(
            &format!("stream = \"{}\"\nname", from.name),
            "stream = \"NO_SUCH\"\nname",
        ),
    );
    let out = scratch.host(&["check", "pipeline.toml"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("`NO_SUCH`") && out.stderr.contains("not found"),
        "{}",
        out.stderr
    );
}

#[test]
fn reading_pauses_at_max_ack_pending_until_the_epoch_commits_and_loses_nothing() {
    let stream = TestStream::new("pause", 120);
    stream.publish(1, 3000);
    let scratch = Scratch::new();
    std::fs::create_dir_all(scratch.path("out")).unwrap();
    // Epochs of a second, far over the 1000 messages the consumer may leave unacknowledged.
    let source =
        nats_source(&stream).replace("batch = 500\n", "batch = 500\nmax_ack_pending = 1000\n");
    scratch.write(
        "pipeline.toml",
        format!(
            "[pipeline]\nname = \"pause\"\n\n[checkpoint]\nevery = \"1s\"\n\n{source}\n{JSONL_LAKE}"
        ),
    );
    let out = scratch.host(&["run", "pipeline.toml", "--log", "warn"]);
    out.assert_ok();
    assert!(
        out.stderr.contains("reading paused at 1000 messages"),
        "{}",
        out.stderr
    );
    let ids = ids_in_lake(&scratch);
    assert_eq!(ids.len(), 3000);
    assert!(ids.values().all(|n| *n == 1));
    assert_eq!(
        stream.consumer(&format!("ingest_{}", stream.name)),
        (3000, 0)
    );
}

#[test]
fn example_11_reads_the_published_orders_into_a_masked_partitioned_lake() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/11-nats-to-parquet");
    let stream = TestStream::new("example", 120);
    let scratch = Scratch::new();
    let text = std::fs::read_to_string(dir.join("pipeline.toml")).unwrap();
    assert!(text.contains("stream = \"EXAMPLE_ORDERS\""));
    scratch.write(
        "pipeline.toml",
        text.replace("EXAMPLE_ORDERS", &stream.name).replace(
            "consumer = \"example_11\"",
            &format!("consumer = \"{}_c\"", stream.name),
        ),
    );
    scratch.write(
        "secrets/mask.key",
        std::fs::read(dir.join("secrets/mask.key")).unwrap(),
    );
    let publish = |count: &str| {
        let out = std::process::Command::new("python3")
            .arg(dir.join("publish.py"))
            .args([count, "--stream", &stream.name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "publish.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    assert_example_orders_lake(&scratch, publish, || {});
}

/// Examples 11 and 13: `send(COUNT)` sends orders 1..=COUNT; a run puts them into a lake
/// partitioned by day with emails hashed, and a second run reads only what was sent since
/// (the same ids again, as new messages).
/// `collect` brings the lake to `out/` after each run, where it is not there already.
pub(crate) fn assert_example_orders_lake(
    scratch: &Scratch,
    send: impl Fn(&str),
    collect: impl Fn(),
) {
    send("2000");
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    collect();
    let ids = crate::webhook::parquet_ids(&scratch.path("out/orders"));
    assert_eq!(ids, (1..=2000).collect::<Vec<_>>());
    let files = parquet_files(&scratch.path("out/orders"));
    assert!(
        files
            .iter()
            .all(|f| f.to_string_lossy().contains("created_at_day=2026-12-")),
        "{files:?}"
    );
    let batches = crate::cdc::batches(&scratch.path("out/orders"));
    let email = batches[0].column_by_name("email").unwrap();
    use arrow::array::AsArray;
    assert_eq!(
        email.as_string::<i32>().value(0).len(),
        64,
        "emails are HMAC hex"
    );
    send("500");
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    collect();
    assert_eq!(
        crate::webhook::parquet_ids(&scratch.path("out/orders")).len(),
        2500
    );
}

#[test]
fn an_ack_wait_that_would_redeliver_an_epoch_is_refused_before_anything_is_read() {
    let stream = TestStream::new("ackwait", 120);
    stream.publish(1, 10);
    let scratch = Scratch::new();
    std::fs::create_dir_all(scratch.path("out")).unwrap();
    // Epochs of up to 60 s (batch mode's default) against a 30 s ack_wait.
    let source = nats_source(&stream).replace("batch = 500\n", "batch = 500\nack_wait_secs = 30\n");
    scratch.write(
        "pipeline.toml",
        format!("[pipeline]\nname = \"ackwait\"\n\n{source}\n{JSONL_LAKE}"),
    );
    let out = scratch.host(&["check", "pipeline.toml"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("`ack_wait_secs = 30` is not longer than an epoch")
            && out.stderr.contains("every = 60000 ms"),
        "{}",
        out.stderr
    );
    // Epochs of 10 s fit.
    let text = std::fs::read_to_string(scratch.path("pipeline.toml")).unwrap();
    scratch.write(
        "pipeline.toml",
        text.replace(
            "name = \"ackwait\"\n",
            "name = \"ackwait\"\n\n[checkpoint]\nevery = \"10s\"\n",
        ),
    );
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    assert_eq!(ids_in_lake(&scratch).len(), 10);
}

//! Against the NATS server of this machine (127.0.0.1:4222, JetStream on), each test in a
//! stream of its own that it deletes.

use serde_json::json;

use super::*;

const SERVER: &str = "127.0.0.1:4222";

/// A JetStream connection and a fresh stream on `<name>.>` (2 s duplicate window),
/// deleted when dropped.
struct TestStream {
    js: JetStream,
    name: String,
}

impl TestStream {
    fn new(tag: &str) -> TestStream {
        let conn =
            Connection::connect(SERVER, "nats-client-test", &Auth::None).unwrap_or_else(|e| {
                panic!("cannot reach NATS at {SERVER} (the tests need nats-server -js): {e}")
            });
        let mut js = JetStream::new(conn, "test").unwrap();
        let name = format!("CLIENT_{tag}_{}", std::process::id());
        let config = json!({"name": name, "subjects": [format!("{name}.>")], "duplicate_window": 2_000_000_000u64});
        // Seen in a full run: the server could not make the new stream's directory because
        // the account's `streams` directory had just gone with another test's last stream
        // ("could not create storage directory", error 500). It is the server's race: try
        // again.
        let mut attempts = 0;
        loop {
            match js.request(&format!("$JS.API.STREAM.CREATE.{name}"), &config) {
                Ok(_) => break,
                Err(Error::Api { code: 500, .. }) if attempts < 5 => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => panic!("creating stream {name}: {e}"),
            }
        }
        TestStream { js, name }
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let _ = self.js.request(
            &format!("$JS.API.STREAM.DELETE.{}", self.name),
            &serde_json::Value::Null,
        );
    }
}

fn consumer(name: &str, start: Option<u64>) -> ConsumerConfig {
    ConsumerConfig {
        durable_name: name.to_string(),
        deliver_policy: if start.is_some() {
            "by_start_sequence"
        } else {
            "all"
        }
        .into(),
        opt_start_seq: start,
        ack_policy: "explicit".into(),
        ack_wait: 30_000_000_000,
        max_ack_pending: 10_000,
        filter_subject: None,
    }
}

#[test]
fn a_message_id_is_stored_once_within_the_duplicate_window() {
    let mut s = TestStream::new("dup");
    let subject = format!("{}.orders", s.name);
    let mut others = Default::default();
    let mut seqs = Vec::new();
    for (id, body) in [("a/1", "one"), ("a/2", "two"), ("a/1", "one again")] {
        let reply =
            s.js.publish(&subject, &[("Nats-Msg-Id", id)], body.as_bytes())
                .unwrap();
        let ack = s.js.pub_ack(&reply, &mut others).unwrap();
        seqs.push((ack.seq, ack.duplicate));
    }
    assert_eq!(seqs, [(1, false), (2, false), (1, true)]);
    let info = s.js.stream_info(&s.name).unwrap();
    assert_eq!(info.state.messages, 2);
    assert_eq!(info.config.duplicate_window, 2_000_000_000);
}

#[test]
fn a_pull_consumer_delivers_in_order_and_starts_again_where_it_is_told() {
    let mut s = TestStream::new("pull");
    let subject = format!("{}.orders", s.name);
    let mut replies = Vec::new();
    for i in 1..=25 {
        replies.push(
            s.js.publish(
                &subject,
                &[("Trace", &format!("t{i}"))],
                format!("m{i}").as_bytes(),
            )
            .unwrap(),
        );
    }
    let mut others = Default::default();
    for r in &replies {
        s.js.pub_ack(r, &mut others).unwrap();
    }
    let name = s.name.clone();
    s.js.recreate_consumer(&name, &consumer("reader", None))
        .unwrap();
    let mut got = Vec::new();
    assert_eq!(
        s.js.pull(&name, "reader", 10, 0, &mut got).unwrap(),
        PullEnd::Full
    );
    assert_eq!(
        s.js.pull(&name, "reader", 10, 0, &mut got).unwrap(),
        PullEnd::Full
    );
    // Five left: the pull ends early, empty-handed at the end.
    assert_eq!(
        s.js.pull(&name, "reader", 10, 200_000_000, &mut got)
            .unwrap(),
        PullEnd::Empty
    );
    let seqs: Vec<u64> = got.iter().map(|d| d.stream_seq).collect();
    assert_eq!(seqs, (1..=25).collect::<Vec<_>>());
    assert_eq!(got[0].message.payload, b"m1");
    assert_eq!(got[0].message.subject, subject);
    assert_eq!(got[0].message.header("trace"), Some("t1"));
    assert_eq!(got[24].pending, 0);
    assert!(got[0].timestamp_ns > 1_600_000_000_000_000_000);
    for d in &got {
        s.js.ack(d.message.reply.as_deref().unwrap()).unwrap();
    }
    s.js.flush().unwrap();
    // Recreated at sequence 21, the consumer delivers 21..=25 again.
    s.js.recreate_consumer(&name, &consumer("reader", Some(21)))
        .unwrap();
    let mut again = Vec::new();
    s.js.pull(&name, "reader", 100, 0, &mut again).unwrap();
    let seqs: Vec<u64> = again.iter().map(|d| d.stream_seq).collect();
    assert_eq!(seqs, (21..=25).collect::<Vec<_>>());
}

#[test]
fn api_errors_name_what_is_missing() {
    let conn = Connection::connect(SERVER, "nats-client-test", &Auth::None).unwrap();
    let mut js = JetStream::new(conn, "test").unwrap();
    match js.stream_info("NO_SUCH_STREAM_HERE") {
        Err(Error::Api {
            code: 404,
            description,
        }) => {
            assert!(description.contains("not found"), "{description}")
        }
        other => panic!("{other:?}"),
    }
    // A subject no stream listens on has no responders.
    let reply = js.publish("nobody.listens.here", &[], b"x").unwrap();
    match js.pub_ack(&reply, &mut Default::default()) {
        Err(Error::Api { code: 503, .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_consumer_started_past_the_end_finds_nothing_waiting() {
    let mut s = TestStream::new("past");
    let subject = format!("{}.orders", s.name);
    let reply = s.js.publish(&subject, &[], b"one").unwrap();
    s.js.pub_ack(&reply, &mut Default::default()).unwrap();
    let name = s.name.clone();
    s.js.recreate_consumer(&name, &consumer("reader", Some(2)))
        .unwrap();
    let mut got = Vec::new();
    assert_eq!(
        s.js.pull(&name, "reader", 10, 0, &mut got).unwrap(),
        PullEnd::Empty
    );
    assert!(got.is_empty());
}

#[test]
#[ignore]
fn pull_speed_on_benchx() {
    let conn = Connection::connect(SERVER, "speed", &Auth::None).unwrap();
    let mut js = JetStream::new(conn, "speed").unwrap();
    js.recreate_consumer("BENCHX", &consumer("speed", None))
        .unwrap();
    let started = std::time::Instant::now();
    let mut total = 0;
    for _ in 0..20 {
        let mut got = Vec::new();
        let t = std::time::Instant::now();
        js.pull("BENCHX", "speed", 1000, 0, &mut got).unwrap();
        total += got.len();
        eprintln!("{} in {:?}", got.len(), t.elapsed());
    }
    eprintln!("{total} in {:?}", started.elapsed());
}

#[test]
fn a_pull_that_waits_ends_empty_when_it_expires() {
    let mut s = TestStream::new("expire");
    let name = s.name.clone();
    s.js.recreate_consumer(&name, &consumer("reader", None))
        .unwrap();
    let mut got = Vec::new();
    let started = std::time::Instant::now();
    assert_eq!(
        s.js.pull(&name, "reader", 10, 200_000_000, &mut got)
            .unwrap(),
        PullEnd::Empty
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

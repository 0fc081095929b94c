//! Webhooks in: the host listens, the `builtin:webhook` source checks and parses what
//! arrives, and a request is answered 2xx only once the epoch holding it has committed. A
//! sender that retries what was not answered 2xx, with `builtin:dedupe` on the delivery id,
//! gets every accepted request into the lake exactly once, however often the host is killed.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cdc::{sigterm, wait_for};
use crate::nats::ids_in_lake;
use crate::support::*;

/// The signing key of the test pipelines.
const HOOK_KEY: &str = "integration-test-webhook-key-41b7";

/// A port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A stream-mode pipeline: webhooks on `/hooks/orders` signed GitHub's way, JSON bodies
/// with an `id`, deduplicated by delivery id, into JSON Lines under `out/`.
fn pipeline(port: u16, every: &str, extra: &str) -> String {
    format!(
        r#"[pipeline]
name = "hooks"
mode = "stream"

[checkpoint]
every = "{every}"

[secrets]
hook = {{ env = "TEST_HOOK_KEY" }}

[[source]]
name = "hooks"
plugin = "builtin:webhook"
listen = "127.0.0.1:{port}"
secrets = ["hook"]
[source.config]
paths = ["/hooks/orders"]
stream = "orders"
payload = "json"
require_delivery_id = true
signature = {{ style = "github", secret = "hook" }}
{extra}
[source.config.columns]
id = "int64"

[[transform]]
name = "dedupe"
plugin = "builtin:dedupe"
[transform.config]
key = ["_delivery_id"]
window = 500000

[[sink]]
name = "lake"
plugin = "builtin:file"
fs = ["out:rw"]
[sink.config]
path = "out"
format = "jsonl"
"#
    )
}

/// A host process, killed when dropped (a failing test leaves no listener behind).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `host run pipeline.toml` in `scratch`, its output kept (`piped`) or dropped.
fn start_host(scratch: &Scratch, piped: bool) -> Running {
    let out = || if piped { Stdio::piped() } else { Stdio::null() };
    Running(
        scratch
            .command(&["run", "pipeline.toml", "--quiet"])
            .env("TEST_HOOK_KEY", HOOK_KEY)
            .stdout(out())
            .stderr(out())
            .spawn()
            .unwrap(),
    )
}

/// What a host that was started with piped output printed, once it has ended.
fn wait_output(child: &mut Running) -> std::process::Output {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    let status = child.0.wait().unwrap();
    std::process::Output {
        status,
        stdout,
        stderr,
    }
}

/// An HTTP/1.1 answer: status, headers (names in lower case) and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

/// A keep-alive HTTP/1.1 client of one connection, made again after any failure.
struct Client {
    port: u16,
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    fn new(port: u16) -> Client {
        Client { port, conn: None }
    }

    fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> std::io::Result<Answer> {
        let reused = self.conn.is_some();
        let mut result = self.try_send(method, path, headers, body);
        if result.is_err() && reused {
            // The server closed the kept-alive connection (after an answer it sent without
            // reading the request's body, say): once more on a new one, as clients do.
            self.conn = None;
            result = self.try_send(method, path, headers, body);
        }
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    fn try_send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> std::io::Result<Answer> {
        if self.conn.is_none() {
            let stream = TcpStream::connect(("127.0.0.1", self.port))?;
            stream.set_read_timeout(Some(Duration::from_secs(60)))?;
            stream.set_nodelay(true)?;
            self.conn = Some(BufReader::new(stream));
        }
        let conn = self.conn.as_mut().unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let stream = conn.get_mut();
        stream.write_all(head.as_bytes())?;
        // A server may answer (413, say) and close without reading the body: the answer
        // is still there to read.
        let wrote = stream.write_all(body);
        let mut line = String::new();
        if conn.read_line(&mut line).unwrap_or(0) == 0 {
            wrote?;
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or(std::io::ErrorKind::InvalidData)?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            conn.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let length: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        conn.read_exact(&mut body)?;
        Ok(Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// POST `body` to `/hooks/orders` with delivery id `delivery`, signed with `key`.
    fn deliver(&mut self, delivery: &str, body: &str, key: &str) -> std::io::Result<Answer> {
        let headers = [
            ("content-type", "application/json".to_string()),
            ("x-github-delivery", delivery.to_string()),
            (
                "x-hub-signature-256",
                format!("sha256={}", hmac_hex(key, body)),
            ),
        ];
        self.send("POST", "/hooks/orders", &headers, body.as_bytes())
    }
}

/// Wait until something accepts connections on `port`.
fn wait_listening(port: u16) {
    wait_for(
        Duration::from_secs(60),
        "the webhook listener is up",
        || TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
}

#[test]
fn every_request_answered_2xx_is_in_the_lake_once_however_often_the_host_is_killed() {
    const REQUESTS: u64 = 100_000;
    const SENDERS: usize = 1024;
    let port = free_port();
    let scratch = Scratch::new();
    scratch.write("pipeline.toml", pipeline(port, "100ms", ""));
    let next = Arc::new(AtomicU64::new(1));
    let answered = Arc::new(Mutex::new(BTreeSet::new()));
    let refused = Arc::new(Mutex::new(BTreeSet::new()));
    let tries = Arc::new(AtomicU64::new(0));
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            let (next, answered, refused, tries) = (
                next.clone(),
                answered.clone(),
                refused.clone(),
                tries.clone(),
            );
            std::thread::Builder::new()
                .stack_size(128 << 10)
                .spawn(move || {
                    let mut client = Client::new(port);
                    loop {
                        let id = next.fetch_add(1, Ordering::Relaxed);
                        if id > REQUESTS {
                            return;
                        }
                        // Every 997th is signed with the wrong key, every 991st is not JSON:
                        // refused, whatever happens to the host.
                        let key = if id % 997 == 0 {
                            "not-the-key"
                        } else {
                            HOOK_KEY
                        };
                        let body = if id % 991 == 0 {
                            format!("id={id}")
                        } else {
                            format!(r#"{{"id":{id},"note":"order {id}"}}"#)
                        };
                        // The sender retries until it gets an answer other than 429/5xx.
                        loop {
                            tries.fetch_add(1, Ordering::Relaxed);
                            match client.deliver(&format!("d-{id}"), &body, key) {
                                Ok(a) if (200..300).contains(&a.status) => {
                                    answered.lock().unwrap().insert(id as i64);
                                    break;
                                }
                                Ok(a) if a.status == 400 || a.status == 401 => {
                                    refused.lock().unwrap().insert((id as i64, a.status));
                                    break;
                                }
                                Ok(_) | Err(_) => std::thread::sleep(Duration::from_millis(50)),
                            }
                        }
                    }
                })
                .unwrap()
        })
        .collect();
    // Kill the host now and then while the senders keep sending.
    let started = Instant::now();
    let mut rng = 0x9e37_79b9_u64;
    let mut killed = 0;
    for _ in 0..10 {
        rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let mut child = start_host(&scratch, false);
        wait_listening(port);
        if wait_or_kill(
            &mut child.0,
            Duration::from_millis(300 + (rng >> 33) % 1200),
        ) {
            killed += 1;
        }
    }
    // The last run takes the rest; once every sender is done, it drains and ends.
    let mut child = start_host(&scratch, false);
    for s in senders {
        s.join().unwrap();
    }
    sigterm(&child.0);
    let status = child.0.wait().unwrap();
    assert!(status.success(), "the drained run failed: {status:?}");
    let elapsed = started.elapsed();

    let answered = answered.lock().unwrap().clone();
    let refused = refused.lock().unwrap().clone();
    let ids = ids_in_lake(&scratch);
    let twice: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "in the lake more than once: {twice:?}");
    let in_lake: BTreeSet<i64> = ids.keys().copied().collect();
    let lost: Vec<_> = answered.difference(&in_lake).take(5).collect();
    assert!(
        lost.is_empty(),
        "answered 2xx but not in the lake: {lost:?}"
    );
    let unanswered: Vec<_> = in_lake.difference(&answered).take(5).collect();
    assert!(
        unanswered.is_empty(),
        "in the lake but never answered 2xx: {unanswered:?}"
    );
    // The refused ones: 401 for a bad signature, 400 for a body that is not JSON.
    let expected: BTreeSet<(i64, u16)> = (1..=REQUESTS as i64)
        .filter_map(|id| match (id % 997, id % 991) {
            (0, _) => Some((id, 401)),
            (_, 0) => Some((id, 400)),
            _ => None,
        })
        .collect();
    assert_eq!(refused, expected);
    assert_eq!(answered.len() + refused.len(), REQUESTS as usize);
    assert!(
        killed >= 8,
        "only {killed} of 10 runs were killed before they ended"
    );
    eprintln!(
        "{REQUESTS} requests ({} sends) by {SENDERS} senders through {killed} kills in {elapsed:.1?}",
        tries.load(Ordering::Relaxed)
    );
}

#[test]
fn refusals_are_answered_at_once_held_requests_on_drain_and_a_full_queue_429() {
    let port = free_port();
    let scratch = Scratch::new();
    // Epochs that do not close by themselves; at most two requests held; 1 KiB bodies.
    scratch.write(
        "pipeline.toml",
        pipeline(port, "1h", "max_in_flight = 2\nmax_body_bytes = 1024\n"),
    );
    let mut child = start_host(&scratch, true);
    wait_listening(port);
    let mut client = Client::new(port);
    let a = client.send("GET", "/hooks/orders", &[], b"").unwrap();
    assert_eq!(a.status, 405, "{a:?}");
    let a = client.send("POST", "/elsewhere", &[], b"{}").unwrap();
    assert_eq!(a.status, 404, "{a:?}");
    let a = client.deliver("d-1", r#"{"id":1}"#, "not-the-key").unwrap();
    assert_eq!(a.status, 401, "{a:?}");
    assert!(a.body.contains("does not match"), "{a:?}");
    let a = client
        .send(
            "POST",
            "/hooks/orders",
            &[("x-github-delivery", "d-2".into())],
            br#"{"id":2}"#,
        )
        .unwrap();
    assert_eq!(a.status, 401, "{a:?}");
    assert!(a.body.contains("no `x-hub-signature-256` header"), "{a:?}");
    let a = client.deliver("d-3", "id=3", HOOK_KEY).unwrap();
    assert_eq!(a.status, 400, "{a:?}");
    assert!(a.body.contains("not JSON"), "{a:?}");
    let big = format!(r#"{{"id":4,"pad":"{}"}}"#, "x".repeat(2000));
    let a = client.deliver("d-4", &big, HOOK_KEY).unwrap();
    assert_eq!(a.status, 413, "{a:?}");

    // Two good requests are held until their epoch commits; a third finds the queue full.
    let held: Vec<_> = [5, 6]
        .map(|id| {
            std::thread::spawn(move || {
                Client::new(port)
                    .deliver(&format!("d-{id}"), &format!(r#"{{"id":{id}}}"#), HOOK_KEY)
                    .unwrap()
            })
        })
        .into();
    std::thread::sleep(Duration::from_millis(500));
    let a = client.deliver("d-7", r#"{"id":7}"#, HOOK_KEY).unwrap();
    assert_eq!(a.status, 429, "{a:?}");
    assert!(
        a.headers
            .iter()
            .any(|(k, v)| k == "retry-after" && v == "1"),
        "{a:?}"
    );
    assert!(
        held.iter().all(|h| !h.is_finished()),
        "answered before their epoch committed"
    );
    assert!(json_lines(&scratch.path("out/orders")).is_empty());

    // SIGTERM drains: the open epoch commits, and then its requests are answered.
    sigterm(&child.0);
    for h in held {
        let a = h.join().unwrap();
        assert_eq!(a.status, 200, "{a:?}");
    }
    let out = finished(wait_output(&mut child));
    out.assert_ok();
    assert!(!out.stderr.contains(HOOK_KEY));
    let ids = ids_in_lake(&scratch);
    assert_eq!(
        ids.keys().copied().collect::<Vec<_>>(),
        vec![5, 6],
        "{ids:?}"
    );
}

#[test]
fn a_webhook_needs_its_listen_grant_and_only_sources_get_one() {
    let scratch = Scratch::new();
    let port = free_port();
    let text = pipeline(port, "1s", "").replace(&format!("listen = \"127.0.0.1:{port}\"\n"), "");
    scratch.write("pipeline.toml", &text);
    let mut command = scratch.command(&["run", "pipeline.toml"]);
    command.env("TEST_HOOK_KEY", HOOK_KEY);
    let out = output(command);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("no `listen` grant"), "{}", out.stderr);
    scratch.write(
        "pipeline.toml",
        text.replace(
            "fs = [\"out:rw\"]",
            "fs = [\"out:rw\"]\nlisten = \"127.0.0.1:9\"",
        ),
    );
    let out = scratch.host(&["check", "pipeline.toml"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("`listen` applies to sources only"),
        "{}",
        out.stderr
    );
}

/// The `id` column of every Parquet file under `dir`, sorted.
pub(crate) fn parquet_ids(dir: &std::path::Path) -> Vec<i64> {
    use arrow::array::AsArray;
    let mut ids: Vec<i64> = crate::cdc::batches(dir)
        .iter()
        .flat_map(|b| {
            b.column_by_name("id")
                .unwrap()
                .as_primitive::<arrow::datatypes::Int64Type>()
                .values()
                .to_vec()
        })
        .collect();
    ids.sort_unstable();
    ids
}

#[test]
fn example_12_takes_signed_deliveries_into_parquet_as_the_readme_says() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/12-webhook-to-parquet");
    let port = free_port();
    let scratch = Scratch::new();
    let text = std::fs::read_to_string(dir.join("pipeline.toml")).unwrap();
    assert!(text.contains("listen = \"127.0.0.1:8088\""));
    scratch.write(
        "pipeline.toml",
        text.replace("127.0.0.1:8088", &format!("127.0.0.1:{port}")),
    );
    scratch.write(
        "secrets/webhook.key",
        std::fs::read(dir.join("secrets/webhook.key")).unwrap(),
    );
    let mut child = start_host(&scratch, true);
    wait_listening(port);
    let url = format!("http://127.0.0.1:{port}/hooks/orders");
    let send = |args: &[&str]| {
        let out = std::process::Command::new("python3")
            .arg(dir.join("send.py"))
            .args(args)
            .args(["--url", &url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "send.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(send(&["300"]).contains("300 of 300 deliveries answered 2xx"));
    // A delivery sent again (the same id) is answered and kept once.
    assert!(send(&["10", "--from", "291"]).contains("10 of 10"));
    sigterm(&child.0);
    let out = finished(wait_output(&mut child));
    out.assert_ok();
    assert_eq!(
        parquet_ids(&scratch.path("out/orders")),
        (1..=300).collect::<Vec<_>>()
    );
}

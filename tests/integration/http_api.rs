//! The `http` source against a JSON API on loopback that pages, rate-limits (429 with
//! Retry-After) and fails (500) on purpose: every record once across kills in the middle of
//! a pass, incremental passes that read only what is new, a bad page in the dead-letter
//! queue with its URL, a page outside the grant denied, and an endless pagination stopped.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::*;

/// What the API serves; changed by the test while it runs.
#[derive(Clone)]
struct ApiState {
    /// Records `1..=total`: `{"id", "name", "amount"}`.
    total: u64,
    per_page: u64,
    /// Of every 100 requests, how many are answered 429 (with `Retry-After: 0`), and how
    /// many more 500.
    rate_limited: u64,
    failing: u64,
    /// Each page waits this long before it is answered.
    delay: Duration,
    /// This page is answered with text that is not JSON.
    broken_page: Option<u64>,
    /// This page's next link leads outside `/api/`.
    leaks_at: Option<u64>,
    /// Pages never end (each one links to the next).
    endless: bool,
}

/// The API: `GET /api/orders?page=N[&since_id=K]` answers the records with id > K, `per_page`
/// a page, as `{"data":[...],"next":"/api/orders?page=N+1&…"|null}` with the same next page
/// in a `Link` header.
struct Api {
    port: u16,
    state: Arc<Mutex<ApiState>>,
    /// Requests answered 429, 500 and 200.
    answered: Arc<[AtomicU64; 3]>,
}

impl Api {
    fn start(state: ApiState) -> Api {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(state));
        let answered: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
        let (s, a) = (state.clone(), answered.clone());
        std::thread::spawn(move || {
            let requests = AtomicU64::new(0);
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let n = requests.fetch_add(1, Ordering::Relaxed);
                let state = s.lock().unwrap().clone();
                let answered = a.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, n, &state, &answered);
                });
            }
        });
        Api {
            port,
            state,
            answered,
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn answered(&self, i: usize) -> u64 {
        self.answered[i].load(Ordering::Relaxed)
    }
}

fn serve(
    conn: TcpStream,
    n: u64,
    state: &ApiState,
    answered: &[AtomicU64; 3],
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        if header == "\r\n" || header.is_empty() {
            break;
        }
    }
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse::<u64>().ok())
    };
    // A deterministic spread of failures over the requests.
    let roll = n.wrapping_mul(2_654_435_761) % 100;
    let (status, extra, body) = if path != "/api/orders" {
        (
            404,
            String::new(),
            "{\"error\":\"no such path\"}".to_string(),
        )
    } else if roll < state.rate_limited {
        (
            429,
            "Retry-After: 0\r\n".to_string(),
            "{\"error\":\"slow down\"}".into(),
        )
    } else if roll < state.rate_limited + state.failing {
        (500, String::new(), "{\"error\":\"injected\"}".into())
    } else {
        std::thread::sleep(state.delay);
        let page = param("page").unwrap_or(1);
        let since = param("since_id").unwrap_or(0);
        if state.broken_page == Some(page) {
            let next = format!("/api/orders?page={}&since_id={since}", page + 1);
            (
                200,
                format!("Link: <{next}>; rel=\"next\"\r\n"),
                "<html>upstream error</html>".into(),
            )
        } else {
            let first = since + (page - 1) * state.per_page + 1;
            let last = (first + state.per_page - 1).min(state.total);
            let data: Vec<Value> = (first..=last)
                .map(|id| json!({"id": id, "name": format!("order {id}"), "amount": id as f64 * 1.5}))
                .collect();
            let more = state.endless || last < state.total;
            let next = if state.leaks_at == Some(page) {
                Some(format!("/private/orders?page={}", page + 1))
            } else {
                more.then(|| format!("/api/orders?page={}&since_id={since}", page + 1))
            };
            let link = next
                .as_ref()
                .map(|n| format!("Link: <{n}>; rel=\"next\"\r\n"))
                .unwrap_or_default();
            (200, link, json!({"data": data, "next": next}).to_string())
        }
    };
    let slot = match status {
        429 => 0,
        500 => 1,
        _ => 2,
    };
    answered[slot].fetch_add(1, Ordering::Relaxed);
    let mut out = conn;
    write!(
        out,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    )?;
    out.flush()
}

fn serving(total: u64) -> ApiState {
    ApiState {
        total,
        per_page: 50,
        rate_limited: 0,
        failing: 0,
        delay: Duration::ZERO,
        broken_page: None,
        leaks_at: None,
        endless: false,
    }
}

/// A pipeline reading the API's orders into JSON Lines under `out/`.
fn pipeline(api: &Api, pagination: &str, extra: &str) -> String {
    format!(
        r#"[pipeline]
name = "api"
on_error = "dlq"

[dlq]
protect = "raw"

[checkpoint]
every_rows = 200

[[source]]
name = "api"
plugin = "builtin:http"
http = ["{base}/api"]
[source.config]
url = "{base}/api/orders?page=1"
name = "orders"
records = "data"
pagination = {pagination}
primary_key = ["id"]
{extra}
[source.config.columns]
amount = "float64"

{JSONL_LAKE}"#,
        base = api.base()
    )
}

const NEXT_URL: &str = r#"{ style = "next-url", path = "next" }"#;
const LINKS: &str = r#"{ style = "link-header" }"#;

#[test]
fn every_record_arrives_once_through_429s_500s_and_kills_in_the_middle_of_a_pass() {
    let api = Api::start(ApiState {
        rate_limited: 10,
        failing: 5,
        delay: Duration::from_millis(15),
        ..serving(5000)
    });
    let scratch = Scratch::new();
    std::fs::create_dir_all(scratch.path("out")).unwrap();
    scratch.write(
        "pipeline.toml",
        pipeline(
            &api,
            NEXT_URL,
            "incremental = { cursor_field = \"id\", param = \"since_id\" }\n",
        ),
    );
    // Each run is killed a random moment after its first commit.
    let killed = kill_after_first_commit(
        &scratch,
        "out/orders",
        6,
        Duration::from_millis(300),
        |_| {},
    );
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    let ids = crate::nats::ids_in_lake(&scratch);
    let twice: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "in the lake more than once: {twice:?}");
    assert_eq!(ids.len(), 5000, "records lost");
    assert!(killed >= 4, "only {killed} of 6 runs were killed in a pass");
    assert!(
        api.answered(0) >= 10 && api.answered(1) >= 5,
        "the API answered 429 {} and 500 {} times",
        api.answered(0),
        api.answered(1)
    );
    // New records: the next pass asks only for those after the largest id read.
    api.state.lock().unwrap().total = 5_120;
    let out = scratch.host(&["run", "pipeline.toml"]);
    out.assert_ok();
    let ids = crate::nats::ids_in_lake(&scratch);
    assert_eq!(ids.len(), 5_120);
    assert!(ids.values().all(|n| *n == 1));
    assert!(out.stdout.contains("120 rows read"), "{}", out.stdout);
}

#[test]
fn a_page_that_is_not_json_is_a_dead_letter_with_its_url_and_the_pass_goes_on() {
    let api = Api::start(ApiState {
        broken_page: Some(2),
        ..serving(200)
    });
    let scratch = Scratch::new();
    std::fs::create_dir_all(scratch.path("out")).unwrap();
    scratch.write("pipeline.toml", pipeline(&api, LINKS, ""));
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    let ids = crate::nats::ids_in_lake(&scratch);
    // Page 2 (ids 51..=100) is a dead letter; pages 1, 3 and 4 are read.
    assert_eq!(ids.len(), 150);
    assert!(!ids.contains_key(&51) && ids.contains_key(&101));
    let letters = dead_letters(&scratch.path(""), "api", "orders");
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = letters[0].to_string();
    assert!(
        letter.contains("not JSON")
            && letter.contains("/api/orders?page=2")
            && letter.contains("upstream error"),
        "{letter}"
    );
}

#[test]
fn a_page_outside_the_grant_is_denied_and_an_endless_pagination_stopped() {
    let api = Api::start(ApiState {
        leaks_at: Some(2),
        ..serving(1000)
    });
    let scratch = Scratch::new();
    std::fs::create_dir_all(scratch.path("out")).unwrap();
    scratch.write("pipeline.toml", pipeline(&api, NEXT_URL, ""));
    let out = scratch.host(&["run", "pipeline.toml"]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stderr.contains("access denied") && out.stderr.contains("/private/orders?page=3"),
        "{}",
        out.stderr
    );
    // Nothing after the denied page is read.
    assert!(crate::nats::ids_in_lake(&scratch).len() <= 100);

    let endless = Api::start(ApiState {
        endless: true,
        ..serving(100)
    });
    let scratch = Scratch::new();
    std::fs::create_dir_all(scratch.path("out")).unwrap();
    scratch.write(
        "pipeline.toml",
        pipeline(&endless, NEXT_URL, "max_pages = 20\n"),
    );
    let out = scratch.host(&["run", "pipeline.toml"]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stderr.contains("`max_pages = 20`") && out.stderr.contains("page=21"),
        "{}",
        out.stderr
    );
}

/// Example 15's API (`api.py`) on a port of the test's own, stopped when dropped.
fn example_api(script: &std::path::Path) -> ServerProcess {
    let port = free_port();
    let mut command = std::process::Command::new("python3");
    command.arg(script).args(["--port", &port.to_string()]);
    ServerProcess::start(command, port, "api.py")
}

#[test]
fn example_15_reads_the_api_pages_into_a_masked_partitioned_lake() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/15-http-api-to-parquet");
    let api = example_api(&dir.join("api.py"));
    let scratch = Scratch::new();
    let text = std::fs::read_to_string(dir.join("pipeline.toml")).unwrap();
    assert!(text.contains("127.0.0.1:8615"));
    scratch.write(
        "pipeline.toml",
        text.replace("127.0.0.1:8615", &format!("127.0.0.1:{}", api.port)),
    );
    for secret in ["mask.key", "api.token"] {
        scratch.write(
            &format!("secrets/{secret}"),
            std::fs::read(dir.join("secrets").join(secret)).unwrap(),
        );
    }
    // The API starts with 2,000 orders; the second pass asks only for the 500 added.
    let add = |count: &str| {
        if count == "2000" {
            return;
        }
        let out = std::process::Command::new("python3")
            .arg(dir.join("api.py"))
            .args(["--port", &api.port.to_string(), "--add", count])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "api.py --add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    crate::nats::assert_example_orders_lake(&scratch, add, || {});
}

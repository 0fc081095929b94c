//! Beyond one machine: `host submit` queues a pipeline's splits on the machine's NATS
//! JetStream (127.0.0.1:4222), any number of `host worker`s run them, and the splits' state
//! and leases live in a KV bucket. Every row lands once, whether a worker is killed mid-split
//! or paused past its lease and resumed (its commit is then refused: fenced).
//!
//! Each test has a cluster name of its own (its stream and bucket), deleted when it ends.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nats_client::{Auth, Connection, JetStream};
use serde_json::Value;

use crate::support::*;

const NATS: &str = "nats://127.0.0.1:4222";

/// Files of R1-shaped orders the tests spread over workers.
const FILES: usize = 8;

/// A cluster name of the test's own; its stream and bucket are deleted when dropped.
struct TestCluster {
    name: String,
}

impl TestCluster {
    fn new(tag: &str) -> TestCluster {
        let conn = Connection::connect("127.0.0.1:4222", "ingest-tests", &Auth::None)
            .unwrap_or_else(|e| {
                panic!("cannot reach NATS at {NATS}; the cluster tests need nats-server with JetStream (-js): {e}")
            });
        drop(conn);
        let cluster = TestCluster {
            name: format!("t_{tag}_{}", std::process::id()),
        };
        cluster.delete();
        cluster
    }

    fn delete(&self) {
        let conn = Connection::connect("127.0.0.1:4222", "ingest-tests", &Auth::None).unwrap();
        let mut js = JetStream::new(conn, "ingest_tests").unwrap();
        for stream in [
            format!("{}_work", self.name),
            format!("KV_{}_state", self.name),
        ] {
            let _ = js.request(&format!("$JS.API.STREAM.DELETE.{stream}"), &Value::Null);
        }
    }

    fn submit(&self, scratch: &Scratch, lease: &str) -> Output {
        let out = scratch.host(&[
            "submit",
            "pipeline.toml",
            "--nats",
            NATS,
            "--cluster",
            &self.name,
            "--lease",
            lease,
        ]);
        out.assert_ok();
        out
    }

    /// Start `host worker` as `id`, its output in `<id>.log`, exiting after `idle` without
    /// work.
    fn worker(&self, scratch: &Scratch, id: &str, idle: &str) -> Child {
        let log = std::fs::File::create(scratch.path(&format!("{id}.log"))).unwrap();
        scratch
            .command(&[
                "worker",
                "--nats",
                NATS,
                "--cluster",
                &self.name,
                "--id",
                id,
                "--idle-exit",
                idle,
            ])
            .env("INGEST_LOG", "info")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("the host binary starts")
    }

    /// `host status --nats --json`.
    fn status(&self, scratch: &Scratch) -> Value {
        let out = scratch.host(&["status", "--nats", NATS, "--cluster", &self.name, "--json"]);
        out.assert_ok();
        serde_json::from_str(&out.stdout).unwrap()
    }

    /// Wait until a split held by `worker` has committed an epoch and is not done.
    fn wait_mid_split(&self, scratch: &Scratch, worker: &str, child: &mut Child) -> String {
        let started = Instant::now();
        loop {
            assert!(
                child.try_wait().unwrap().is_none(),
                "worker {worker} ended before it was caught mid-split:\n{}",
                log(scratch, worker)
            );
            let status = self.status(scratch);
            let running = status["splits"].as_array().into_iter().flatten().find(|s| {
                s["owner"] == worker
                    && s["done"] == false
                    && s["state"]["epoch"].as_u64().unwrap_or(0) > 0
            });
            if let Some(split) = running {
                return split["split"].as_str().unwrap().to_string();
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "worker {worker} never got mid-split:\n{}",
                log(scratch, worker)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.delete();
    }
}

fn log(scratch: &Scratch, id: &str) -> String {
    std::fs::read_to_string(scratch.path(&format!("{id}.log"))).unwrap_or_default()
}

/// Wait for a worker to exit by itself; its log must show a clean end.
fn wait_worker(scratch: &Scratch, id: &str, child: &mut Child) -> String {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let text = log(scratch, id);
            assert!(status.success(), "worker {id} failed:\n{text}");
            assert_no_secret(&text);
            return text;
        }
        if started.elapsed() > Duration::from_secs(180) {
            let _ = child.kill();
            panic!("worker {id} did not finish:\n{}", log(scratch, id));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `FILES` CSV files of `rows` orders each, ids 1..=FILES*rows, and the standard pipeline
/// over them (one split per file) with small epochs, so a split commits many.
fn r1_over_files(scratch: &Scratch, rows: usize, every_rows: u64) {
    for i in 0..FILES {
        let first = 1 + (i * rows) as i64;
        scratch.write(
            &format!("data/orders-{i}.csv"),
            format!("{ORDERS_HEADER}{}", orders_csv(&orders(first, rows))),
        );
    }
    let spec = PipelineSpec {
        input: "data/orders-*.csv",
        every_rows,
        batch_rows: 1000,
        ..PipelineSpec::default()
    };
    scratch.write("pipeline.toml", spec.render());
}

/// Every id of `FILES * rows` exactly once in the lake.
fn assert_every_row_once(dir: &Path, rows: usize) {
    let ids = read_ids(dir);
    let expected: Vec<i64> = (1..=(FILES * rows) as i64).collect();
    if ids != expected {
        let mut seen = std::collections::BTreeMap::new();
        for id in &ids {
            *seen.entry(*id).or_insert(0) += 1;
        }
        let doubled = seen.values().filter(|n| **n > 1).count();
        panic!(
            "expected ids 1..={} once each; found {} rows, {} ids doubled, {} missing",
            expected.len(),
            ids.len(),
            doubled,
            expected.len() - seen.len()
        );
    }
}

/// Staging left in the lake, other than empty directories.
fn staged_files(out: &Path) -> Vec<String> {
    fn walk(dir: &Path, found: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, found);
            } else {
                found.push(path.display().to_string());
            }
        }
    }
    let mut found = Vec::new();
    walk(&out.join(".staging"), &mut found);
    found
}

#[test]
fn eight_files_on_two_workers_land_every_row_once_and_a_second_submit_changes_nothing() {
    let scratch = Scratch::new();
    let cluster = TestCluster::new("two");
    let rows = 20_000;
    r1_over_files(&scratch, rows, 5_000);
    let submitted = cluster.submit(&scratch, "10s");
    assert!(
        submitted.stdout.contains("8 splits of 1 stream queued"),
        "{}",
        submitted.stdout
    );
    let status = cluster.status(&scratch);
    assert_eq!(status["queued"], 8, "{status:#}");

    let mut a = cluster.worker(&scratch, "w-a", "3s");
    let mut b = cluster.worker(&scratch, "w-b", "3s");
    let log_a = wait_worker(&scratch, "w-a", &mut a);
    let log_b = wait_worker(&scratch, "w-b", &mut b);
    assert_every_row_once(&scratch.path("out"), rows);
    assert!(staged_files(&scratch.path("out")).is_empty());

    // Together the workers ran all eight splits.
    let done = |id: &str, log: &str| -> u64 {
        let prefix = format!("worker {id}: ");
        log.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no summary line in:\n{log}"))
    };
    assert_eq!(
        done("w-a", &log_a) + done("w-b", &log_b),
        FILES as u64,
        "{log_a}\n{log_b}"
    );

    // The bucket knows every split: done, with its rows; the workers stopped.
    let status = cluster.status(&scratch);
    let splits = status["splits"].as_array().unwrap();
    assert_eq!(splits.len(), FILES, "{status:#}");
    assert!(splits.iter().all(|s| s["done"] == true), "{status:#}");
    let written: u64 = splits
        .iter()
        .map(|s| s["state"]["totals"]["rows_written"].as_u64().unwrap())
        .sum();
    assert_eq!(written, (FILES * rows) as u64);
    // Epoch numbers are unique across splits.
    let mut epochs: Vec<u64> = splits
        .iter()
        .map(|s| s["state"]["epoch"].as_u64().unwrap())
        .collect();
    epochs.sort_unstable();
    epochs.dedup();
    assert_eq!(epochs.len(), FILES, "{status:#}");
    let workers = status["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "{status:#}");
    assert!(workers.iter().all(|w| w["condition"] == "stopped"));
    let text = scratch.host(&["status", "--nats", NATS, "--cluster", &cluster.name]);
    assert!(
        text.stdout.contains("pipeline orders: 8 of 8 splits done"),
        "{}",
        text.stdout
    );

    // Submitting the finished pipeline again and running a worker publishes nothing new.
    let before = parquet_files(&scratch.path("out")).len();
    cluster.submit(&scratch, "10s");
    let mut c = cluster.worker(&scratch, "w-c", "2s");
    let log_c = wait_worker(&scratch, "w-c", &mut c);
    assert_eq!(done("w-c", &log_c), FILES as u64, "{log_c}");
    assert_eq!(parquet_files(&scratch.path("out")).len(), before);
    assert_every_row_once(&scratch.path("out"), rows);
}

#[test]
fn a_worker_killed_mid_split_has_its_split_resumed_by_another_with_nothing_lost_or_doubled() {
    let scratch = Scratch::new();
    let cluster = TestCluster::new("kill");
    let rows = 40_000;
    r1_over_files(&scratch, rows, 2_000);
    cluster.submit(&scratch, "2s");

    let mut a = cluster.worker(&scratch, "w-a", "30s");
    let split = cluster.wait_mid_split(&scratch, "w-a", &mut a);
    a.kill().unwrap(); // SIGKILL
    a.wait().unwrap();

    let mut b = cluster.worker(&scratch, "w-b", "4s");
    let log_b = wait_worker(&scratch, "w-b", &mut b);
    assert_every_row_once(&scratch.path("out"), rows);

    // The killed split was claimed again and resumed after its committed epochs.
    let status = cluster.status(&scratch);
    let record = status["splits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["split"] == split.as_str())
        .unwrap();
    assert_eq!(record["owner"], "w-b", "{status:#}");
    assert!(record["claims"].as_u64().unwrap() >= 2, "{status:#}");
    assert!(record["done"] == true, "{status:#}");
    // Its rows were counted once across both claims.
    assert_eq!(
        record["state"]["totals"]["rows_written"].as_u64().unwrap(),
        rows as u64,
        "{status:#}\n{log_b}"
    );
    let worker_a = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == "w-a")
        .unwrap();
    assert_ne!(worker_a["condition"], "stopped", "{status:#}");
}

#[test]
fn a_worker_paused_past_its_lease_has_its_commit_refused_and_nothing_is_doubled() {
    let scratch = Scratch::new();
    let cluster = TestCluster::new("pause");
    let rows = 40_000;
    r1_over_files(&scratch, rows, 2_000);
    cluster.submit(&scratch, "2s");

    let mut a = cluster.worker(&scratch, "w-a", "3s");
    let split = cluster.wait_mid_split(&scratch, "w-a", &mut a);
    let pid = a.id().to_string();
    let signal = |name: &str| {
        let ok = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {name} {pid}");
    };
    signal("-STOP");
    // Another worker takes the paused worker's split after the lease, and all the rest.
    let mut b = cluster.worker(&scratch, "w-b", "3s");
    wait_worker(&scratch, "w-b", &mut b);
    assert_every_row_once(&scratch.path("out"), rows);
    let taken = cluster.status(&scratch);
    let record = taken["splits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["split"] == split.as_str())
        .unwrap()
        .clone();
    assert_eq!(record["owner"], "w-b", "{taken:#}");
    assert_eq!(record["done"], true);

    // Resumed, the paused worker's next state write is refused: it publishes nothing.
    signal("-CONT");
    let log_a = wait_worker(&scratch, "w-a", &mut a);
    assert!(log_a.contains("taken over by worker `w-b`"), "{log_a}");
    assert!(log_a.contains("1 taken over by another worker"), "{log_a}");
    assert_every_row_once(&scratch.path("out"), rows);
    assert!(
        staged_files(&scratch.path("out")).is_empty(),
        "{:?}",
        staged_files(&scratch.path("out"))
    );
    // The record is still the new holder's.
    let after = cluster.status(&scratch);
    let still = after["splits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["split"] == split.as_str())
        .unwrap();
    assert_eq!(still, &record, "{after:#}");
}

/// What one epoch costs in coordination, measured with `clients` workers at once: each
/// holds a split of its own and, per epoch, draws the pipeline's next epoch number (one
/// counter every client contends for) and writes its state twice (prepared, committed),
/// as a worker does. Returns (epochs per second in all, p50 and p99 of one epoch's
/// coordination).
fn epoch_coordination(
    cluster: &TestCluster,
    clients: usize,
    for_: Duration,
) -> (f64, Duration, Duration) {
    use ingest_host::checkpoint::{State, StateStore};
    use ingest_host::cluster::{Claim, Names};
    let names = Names::new(NATS, &cluster.name).unwrap();
    let started = Instant::now() + Duration::from_millis(300);
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let names = names.clone();
            std::thread::spawn(move || {
                let kv = names.kv(&format!("probe-{i}")).unwrap();
                let claim =
                    Claim::take(kv, "probe", "orders", &format!("split-{i}"), b"{}", "probe")
                        .unwrap();
                let mut state = State::default();
                state.positions.entry("orders".into()).or_default().insert(
                    format!("split-{i}"),
                    b"{\"offset\":123456789,\"line\":4242}".to_vec().into(),
                );
                while Instant::now() < started {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let mut times = Vec::new();
                while started.elapsed() < for_ {
                    let t = Instant::now();
                    state.epoch = claim.next_epoch().unwrap();
                    state.committed = false;
                    claim.save(&state).unwrap();
                    state.committed = true;
                    claim.save(&state).unwrap();
                    times.push(t.elapsed());
                }
                times
            })
        })
        .collect();
    let mut all: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort_unstable();
    let rate = all.len() as f64 / for_.as_secs_f64();
    (rate, all[all.len() / 2], all[all.len() * 99 / 100])
}

#[test]
#[ignore = "a measurement for docs/scale-out.md, run by `scripts/bench --cluster`"]
fn coordination_cost_per_epoch_with_1_to_100_workers() {
    let cluster = TestCluster::new("probe");
    println!("| workers at once | epochs/s (all workers) | one epoch's coordination p50 | p99 |");
    println!("|---|---|---|---|");
    for clients in [1, 10, 100] {
        let (rate, p50, p99) = epoch_coordination(&cluster, clients, Duration::from_secs(5));
        println!(
            "| {clients} | {rate:.0} | {:.2} ms | {:.2} ms |",
            p50.as_secs_f64() * 1000.0,
            p99.as_secs_f64() * 1000.0
        );
    }
}

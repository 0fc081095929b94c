//! The `s3` sink against the S3-compatible server `scripts/s3-setup` starts on
//! 127.0.0.1:5010: every row in the bucket exactly once however often a run is killed, no
//! upload left in progress, nothing visible before its epoch commits, and a missing bucket
//! or an endpoint outside the grant refused by name. Buckets are inspected with boto3.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::cdc::start;
use crate::support::*;

const ENDPOINT: &str = "http://127.0.0.1:5010";

/// Run `code` in the S3 server's Python (with boto3 and `s3`, a client of the server, in
/// scope); its stdout.
fn boto(code: &str) -> String {
    let prelude = format!(
        "import boto3\ns3 = boto3.client('s3', endpoint_url='{ENDPOINT}', aws_access_key_id='test-key', aws_secret_access_key='test-secret', region_name='us-east-1')\n"
    );
    let out = Command::new(s3_python())
        .arg("-c")
        .arg(format!("{prelude}{code}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "boto3 failed (is the S3 server up? scripts/s3-setup starts it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The S3 server's Python, which has boto3.
fn s3_python() -> String {
    let setup = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/s3-setup");
    let out = Command::new(&setup).arg("--python").output().unwrap();
    assert!(
        out.status.success(),
        "scripts/s3-setup --python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A bucket of the test's own, emptied and deleted when dropped.
struct TestBucket {
    name: String,
}

impl TestBucket {
    fn new(tag: &str) -> TestBucket {
        let name = format!("t-{tag}-{}", std::process::id());
        boto(&format!("s3.create_bucket(Bucket='{name}')"));
        TestBucket { name }
    }

    /// Download every object under `lake/` into `dir`, keeping the keys' paths.
    fn download(&self, dir: &Path) -> usize {
        let out = boto(&format!(
            "import os\nn = 0\nfor page in s3.get_paginator('list_objects_v2').paginate(Bucket='{b}', Prefix='lake/'):\n    for o in page.get('Contents', []):\n        path = os.path.join('{d}', o['Key'][len('lake/'):])\n        os.makedirs(os.path.dirname(path), exist_ok=True)\n        s3.download_file('{b}', o['Key'], path)\n        n += 1\nprint(n)",
            b = self.name,
            d = dir.display()
        ));
        out.trim().parse().unwrap()
    }

    /// Multipart uploads in progress.
    fn uploads(&self) -> usize {
        boto(&format!(
            "print(len(s3.list_multipart_uploads(Bucket='{}').get('Uploads', [])))",
            self.name
        ))
        .trim()
        .parse()
        .unwrap()
    }
}

impl Drop for TestBucket {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| {
            boto(&format!(
                "b = '{}'\nfor u in s3.list_multipart_uploads(Bucket=b).get('Uploads', []):\n    s3.abort_multipart_upload(Bucket=b, Key=u['Key'], UploadId=u['UploadId'])\nfor page in s3.get_paginator('list_objects_v2').paginate(Bucket=b):\n    for o in page.get('Contents', []):\n        s3.delete_object(Bucket=b, Key=o['Key'])\ns3.delete_bucket(Bucket=b)",
                self.name
            ))
        });
    }
}

/// The standard test pipeline with its lake in `bucket`.
fn s3_pipeline(scratch: &Scratch, bucket: &str, every_rows: u64) -> String {
    scratch.write("secrets/s3_id", "test-key");
    scratch.write("secrets/s3_secret", "test-secret");
    std::fs::create_dir_all(scratch.path("staging")).unwrap();
    let text = PipelineSpec {
        every_rows,
        ..Default::default()
    }
    .render();
    let at = text.find("[[sink]]").unwrap();
    let text = text[..at].replace(
        "[secrets]\n",
        "[secrets]\ns3_id = { file = \"secrets/s3_id\" }\ns3_secret = { file = \"secrets/s3_secret\" }\n",
    );
    format!(
        r#"{text}[[sink]]
name = "lake"
plugin = "builtin:s3"
fs = ["staging:rw"]
http = ["{ENDPOINT}/"]
secrets = ["s3_id", "s3_secret"]
[sink.config]
endpoint = "{ENDPOINT}"
bucket = "{bucket}"
prefix = "lake"
path_style = true
access_key_id_secret = "s3_id"
secret_access_key_secret = "s3_secret"
staging = "staging"
format = "parquet"
compression = "zstd"
"#
    )
}

#[test]
fn every_row_lands_in_the_bucket_once_however_often_the_run_is_killed() {
    const ROWS: usize = 2_000_000;
    let bucket = TestBucket::new("kills");
    let scratch = Scratch::new();
    write_orders_file(&scratch.path("data/orders.csv"), ROWS);
    scratch.write(
        "pipeline.toml",
        s3_pipeline(&scratch, &bucket.name, 200_000),
    );
    let mut killed = 0;
    let mut rng = 0x2545_f491_u64;
    let mut latest = 2500;
    for _ in 0..10 {
        rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let after = Duration::from_millis(300 + (rng >> 33) % latest);
        let mut child = start(&scratch);
        if wait_or_kill(&mut child, after) {
            killed += 1;
        } else {
            latest = (latest / 2).max(200);
        }
    }
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    let out = scratch.path("out");
    let objects = bucket.download(&out);
    // Epochs close at the first batch past 200,000 rows: 10 of them, one object each.
    assert!(objects >= 9, "{objects} objects");
    let ids = read_ids(&out.join("orders"));
    let mut seen = ids.clone();
    seen.dedup();
    assert_eq!(seen.len(), ids.len(), "rows in the bucket more than once");
    assert_eq!(ids, (1..=ROWS as i64).collect::<Vec<_>>(), "rows lost");
    assert_eq!(bucket.uploads(), 0, "uploads left in progress");
    assert!(
        killed >= 5,
        "only {killed} of 10 runs were killed before they ended"
    );
    // A run with nothing new writes nothing.
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    assert_eq!(bucket.download(&scratch.path("again")), objects);
}

#[test]
fn nothing_is_visible_before_its_epoch_commits_and_a_repeated_commit_creates_nothing_twice() {
    let bucket = TestBucket::new("commit");
    let scratch = Scratch::new();
    // Epochs close at the first batch (8,192 rows) past 10,000 rows: three of them.
    write_orders_file(&scratch.path("data/orders.csv"), 40_000);
    scratch.write("pipeline.toml", s3_pipeline(&scratch, &bucket.name, 10_000));
    // Epoch 2 is prepared (uploaded, not completed) and the process dies before its commit.
    let mut crashing = scratch.command(&["run", "pipeline.toml"]);
    crashing.env("INGEST_FAULT", "after-state@2");
    let out = output(crashing);
    assert_ne!(out.code, 0, "the fault did not fire: {}", out.stdout);
    assert_eq!(
        bucket.download(&scratch.path("early")),
        1,
        "only epoch 1 is visible"
    );
    assert!(
        bucket.uploads() >= 1,
        "epoch 2 waits as an upload in progress"
    );
    // The sink completes epoch 2, and then dies before the commit is recorded.
    let mut crashing = scratch.command(&["run", "pipeline.toml"]);
    crashing.env("INGEST_FAULT", "after-sink-commit@2");
    let out = output(crashing);
    assert_ne!(out.code, 0, "the fault did not fire: {}", out.stdout);
    // The next run commits epoch 2 again (creating nothing twice) and goes on.
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    let objects = bucket.download(&scratch.path("out"));
    assert_eq!(objects, 3);
    assert_eq!(
        read_ids(&scratch.path("out/orders")),
        (1..=40_000).collect::<Vec<_>>()
    );
    assert_eq!(bucket.uploads(), 0);
}

#[test]
fn a_missing_bucket_and_an_endpoint_outside_the_grant_are_refused_by_name() {
    let scratch = Scratch::new();
    write_orders_file(&scratch.path("data/orders.csv"), 10);
    scratch.write(
        "pipeline.toml",
        s3_pipeline(&scratch, "no-such-bucket-here", 1000),
    );
    let out = scratch.host(&["check", "pipeline.toml"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("no such bucket") && out.stderr.contains("no-such-bucket-here"),
        "{}",
        out.stderr
    );
    let bucket = TestBucket::new("grant");
    let text = s3_pipeline(&scratch, &bucket.name, 1000).replace(
        &format!("http = [\"{ENDPOINT}/\"]"),
        "http = [\"http://127.0.0.1:9/\"]",
    );
    scratch.write("pipeline.toml", text);
    let out = scratch.host(&["run", "pipeline.toml"]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stderr.contains("access denied") && out.stderr.contains(&bucket.name),
        "{}",
        out.stderr
    );
}

impl TestBucket {
    /// Upload `orders` `from..from + n` as CSV to `key` (gzipped when the key ends `.gz`).
    fn put_orders(&self, scratch: &Scratch, key: &str, from: i64, n: usize) {
        let local = scratch.path(&format!("upload/{}", key.replace('/', "_")));
        std::fs::create_dir_all(local.parent().unwrap()).unwrap();
        let csv = format!("{ORDERS_HEADER}{}", orders_csv(&orders(from, n)));
        if key.ends_with(".gz") {
            let plain = local.with_extension("plain");
            std::fs::write(&plain, csv).unwrap();
            let status = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "gzip -c '{}' > '{}'",
                    plain.display(),
                    local.display()
                ))
                .status()
                .unwrap();
            assert!(status.success(), "gzip failed");
        } else {
            std::fs::write(&local, csv).unwrap();
        }
        self.put_file(&local, key);
    }

    fn put_file(&self, local: &Path, key: &str) {
        boto(&format!(
            "s3.upload_file('{}', '{}', '{key}')",
            local.display(),
            self.name
        ));
    }
}

/// The s3 source of `bucket`'s `drops/**/*.csv*` into JSON Lines under `out/`.
fn s3_source_pipeline(scratch: &Scratch, bucket: &str) -> String {
    scratch.write("secrets/s3_id", "test-key");
    scratch.write("secrets/s3_secret", "test-secret");
    std::fs::create_dir_all(scratch.path("staging")).unwrap();
    std::fs::create_dir_all(scratch.path("out")).unwrap();
    format!(
        r#"[pipeline]
name = "drops"

[checkpoint]
every_rows = 5000

[secrets]
s3_id = {{ file = "secrets/s3_id" }}
s3_secret = {{ file = "secrets/s3_secret" }}

[[source]]
name = "drops"
plugin = "builtin:s3"
fs = ["staging:rw"]
http = ["{ENDPOINT}/"]
secrets = ["s3_id", "s3_secret"]
[source.config]
endpoint = "{ENDPOINT}"
bucket = "{bucket}"
prefix = "drops/"
glob = "**/*.csv*"
path_style = true
access_key_id_secret = "s3_id"
secret_access_key_secret = "s3_secret"
staging = "staging"
format = "csv"
stream = "orders"
[source.config.schema]
amount = "utf8"

{JSONL_LAKE}"#
    )
}

/// The order ids in the JSON Lines lake, with how often each appears.
fn order_ids(scratch: &Scratch) -> std::collections::BTreeMap<i64, usize> {
    let mut ids = std::collections::BTreeMap::new();
    for row in json_lines(&scratch.path("out/orders")) {
        *ids.entry(row["order_id"].as_i64().unwrap()).or_default() += 1;
    }
    ids
}

#[test]
fn objects_are_read_once_per_version_and_new_ones_on_the_next_run() {
    let bucket = TestBucket::new("drops");
    let scratch = Scratch::new();
    bucket.put_orders(&scratch, "drops/2026/12/01.csv", 1, 1000);
    bucket.put_orders(&scratch, "drops/2026/12/02.csv.gz", 1001, 1000);
    bucket.put_orders(&scratch, "drops/2026/12/03.csv", 2001, 1000);
    bucket.put_orders(&scratch, "elsewhere/04.csv", 9001, 10);
    scratch.write("pipeline.toml", s3_source_pipeline(&scratch, &bucket.name));
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    let ids = order_ids(&scratch);
    assert_eq!(ids.len(), 3000);
    assert!(ids.values().all(|n| *n == 1));
    // A new object is read; the ones read before are not fetched again.
    bucket.put_orders(&scratch, "drops/2026/12/04.csv", 3001, 500);
    let out = scratch.host(&["run", "pipeline.toml"]);
    out.assert_ok();
    assert!(out.stdout.contains("500 rows read"), "{}", out.stdout);
    // A changed object (a new ETag) is a new version, read from its start.
    bucket.put_orders(&scratch, "drops/2026/12/03.csv", 5001, 200);
    let out = scratch.host(&["run", "pipeline.toml"]);
    out.assert_ok();
    assert!(out.stdout.contains("200 rows read"), "{}", out.stdout);
    let ids = order_ids(&scratch);
    assert_eq!(ids.len(), 3700);
    assert!(ids.values().all(|n| *n == 1));
    // The local copies are removed once their versions are committed: at the latest on the
    // next run, which reads nothing.
    let out = scratch.host(&["run", "pipeline.toml"]);
    out.assert_ok();
    assert!(out.stdout.contains(" 0 rows read"), "{}", out.stdout);
    let copies = std::fs::read_dir(scratch.path("staging/objects")).map_or(0, |d| d.count());
    assert_eq!(copies, 0);
}

#[test]
fn every_object_row_arrives_once_however_often_the_run_is_killed_and_a_cut_gzip_is_named() {
    let bucket = TestBucket::new("drops-kill");
    let scratch = Scratch::new();
    for i in 0..12 {
        let key = format!(
            "drops/part-{i:02}.csv{}",
            if i % 3 == 0 { ".gz" } else { "" }
        );
        bucket.put_orders(&scratch, &key, i * 40_000 + 1, 40_000);
    }
    scratch.write("pipeline.toml", s3_source_pipeline(&scratch, &bucket.name));
    let killed = kill_after_first_commit(
        &scratch,
        "out/orders",
        8,
        Duration::from_millis(400),
        |_| {},
    );
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    let ids = order_ids(&scratch);
    let twice: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "in the lake more than once: {twice:?}");
    assert_eq!(ids.len(), 12 * 40_000, "rows lost");
    assert!(killed >= 4, "only {killed} of 8 runs were killed");
    // A gzip object cut short stops the run, naming the object.
    let whole = scratch.path("upload/cut.csv.gz");
    bucket.put_orders(&scratch, "drops/cut.csv.gz", 900_001, 5000);
    let bytes = std::fs::read(scratch.path("upload/drops_cut.csv.gz")).unwrap();
    std::fs::write(&whole, &bytes[..bytes.len() / 2]).unwrap();
    bucket.put_file(&whole, "drops/cut.csv.gz");
    let out = scratch.host(&["run", "pipeline.toml"]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stderr.contains("drops/cut.csv.gz") && out.stderr.contains("gzip"),
        "{}",
        out.stderr
    );
}

#[test]
fn example_14_reads_the_dropped_orders_into_a_masked_partitioned_lake_on_s3() {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/14-s3-drops-to-parquet-on-s3");
    let drops = TestBucket::new("ex14-drops");
    let lake = TestBucket::new("ex14-lake");
    let scratch = Scratch::new();
    let text = std::fs::read_to_string(dir.join("pipeline.toml")).unwrap();
    assert!(
        text.contains("bucket = \"example-drops\"") && text.contains("bucket = \"example-lake\"")
    );
    scratch.write(
        "pipeline.toml",
        text.replace("example-drops", &drops.name)
            .replace("example-lake", &lake.name),
    );
    for secret in ["mask.key", "aws_key_id", "aws_secret"] {
        scratch.write(
            &format!("secrets/{secret}"),
            std::fs::read(dir.join("secrets").join(secret)).unwrap(),
        );
    }
    let drop = |count: &str| {
        let out = Command::new(s3_python())
            .arg(dir.join("drop.py"))
            .args([count, "--drops", &drops.name, "--lake", &lake.name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "drop.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let collect = || {
        let out = scratch.path("out");
        let _ = std::fs::remove_dir_all(&out);
        lake.download(&out);
    };
    crate::nats::assert_example_orders_lake(&scratch, drop, collect);
    assert_eq!(lake.uploads(), 0, "an upload left in progress");
}

/// A loopback proxy in front of the S3 server that calls `hook` once, before forwarding the
/// first request whose `Range` header starts at `at`: a way to change an object in the
/// middle of its read. One request per connection (`Connection: close`).
struct RangeProxy {
    port: u16,
}

impl RangeProxy {
    fn start(at: u64, hook: impl FnOnce() + Send + 'static) -> RangeProxy {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hook = std::sync::Arc::new(std::sync::Mutex::new(Some(hook)));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut client) = conn else { continue };
                let hook = hook.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(client.try_clone().unwrap());
                    let mut head = Vec::new();
                    let mut length = 0usize;
                    let mut range_start = None;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        if let Some(v) = lower.strip_prefix("range: bytes=") {
                            range_start = v
                                .split('-')
                                .next()
                                .and_then(|s| s.trim().parse::<u64>().ok());
                        }
                        if lower.starts_with("connection:") {
                            continue;
                        }
                        if line == "\r\n" {
                            head.extend_from_slice(b"Connection: close\r\n\r\n");
                            break;
                        }
                        head.extend_from_slice(line.as_bytes());
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    if range_start == Some(at) {
                        if let Some(hook) = hook.lock().unwrap().take() {
                            hook();
                        }
                    }
                    let mut server = std::net::TcpStream::connect("127.0.0.1:5010").unwrap();
                    server.write_all(&head).unwrap();
                    server.write_all(&body).unwrap();
                    let mut answer = Vec::new();
                    let _ = server.read_to_end(&mut answer);
                    let _ = client.write_all(&answer);
                });
            }
        });
        RangeProxy { port }
    }
}

#[test]
fn an_object_replaced_in_the_middle_of_its_read_is_read_again_as_its_new_version() {
    let bucket = TestBucket::new("drops-change");
    let scratch = Scratch::new();
    // The first object, whose schema is the stream's; then one of more than one range of
    // `range_bytes` (8 MiB here).
    bucket.put_orders(&scratch, "drops/a.csv", 900_001, 100);
    bucket.put_orders(&scratch, "drops/big.csv", 1, 120_000);
    let size = std::fs::metadata(scratch.path("upload/drops_big.csv"))
        .unwrap()
        .len();
    assert!(size > 9 << 20, "the object is only {size} bytes");
    // Replaced by 1,000 other orders just before its second range is fetched.
    let replacement = scratch.path("upload/replacement.csv");
    std::fs::write(
        &replacement,
        format!("{ORDERS_HEADER}{}", orders_csv(&orders(500_001, 1000))),
    )
    .unwrap();
    let (name, path) = (bucket.name.clone(), replacement.clone());
    let proxy = RangeProxy::start(8 << 20, move || {
        boto(&format!(
            "s3.upload_file('{}', '{name}', 'drops/big.csv')",
            path.display()
        ));
    });
    let through_proxy = format!("http://127.0.0.1:{}", proxy.port);
    scratch.write(
        "pipeline.toml",
        s3_source_pipeline(&scratch, &bucket.name)
            .replace(ENDPOINT, &through_proxy)
            .replace(
                "staging = \"staging\"\n",
                "staging = \"staging\"\nrange_bytes = 8388608\n",
            ),
    );
    let out = scratch.host(&["run", "pipeline.toml"]);
    out.assert_ok();
    assert!(
        out.stderr.contains("drops/big.csv")
            && out.stderr.contains("the object changed while it was read"),
        "{}",
        out.stderr
    );
    // Only the new version's rows, each once; nothing of the version that changed.
    let ids = order_ids(&scratch);
    assert_eq!(ids.len(), 1100, "{:?}", ids.keys().next());
    assert!(ids
        .keys()
        .all(|id| (500_001..=501_000).contains(id) || (900_001..=900_100).contains(id)));
    assert!(ids.values().all(|n| *n == 1));
}

/// A second S3 server, of the test's own, that checks every request's SigV4 signature and
/// the caller's IAM policy as AWS does (moto with authentication on once `open_calls`
/// set-up calls are made), and its endpoint; stopped when dropped.
fn checking_server(open_calls: u32) -> (ServerProcess, String) {
    let port = free_port();
    let mut command = Command::new(Path::new(&s3_python()).with_file_name("moto_server"));
    command
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("INITIAL_NO_AUTH_ACTION_COUNT", open_calls.to_string());
    let server = ServerProcess::start(command, port, "moto_server");
    (server, format!("http://127.0.0.1:{port}"))
}

#[test]
fn wrong_credentials_are_refused_by_name_and_the_right_ones_read_everything_once() {
    // Four open calls: a user, its key, its policy, the bucket; every call after is checked.
    let (_server, endpoint) = checking_server(4);
    let scratch = Scratch::new();
    let local = scratch.path("upload/orders.csv");
    std::fs::create_dir_all(local.parent().unwrap()).unwrap();
    std::fs::write(
        &local,
        format!("{ORDERS_HEADER}{}", orders_csv(&orders(1, 1000))),
    )
    .unwrap();
    let keys = boto(&format!(
        r#"import json
iam = boto3.client('iam', endpoint_url='{e}', aws_access_key_id='x', aws_secret_access_key='x', region_name='us-east-1')
iam.create_user(UserName='loader')
key = iam.create_access_key(UserName='loader')['AccessKey']
iam.put_user_policy(UserName='loader', PolicyName='all', PolicyDocument=json.dumps({{'Version': '2012-10-17', 'Statement': [{{'Effect': 'Allow', 'Action': '*', 'Resource': '*'}}]}}))
s3 = boto3.client('s3', endpoint_url='{e}', aws_access_key_id='x', aws_secret_access_key='x', region_name='us-east-1')
s3.create_bucket(Bucket='checked')
s3 = boto3.client('s3', endpoint_url='{e}', aws_access_key_id=key['AccessKeyId'], aws_secret_access_key=key['SecretAccessKey'], region_name='us-east-1')
s3.upload_file('{f}', 'checked', 'drops/orders.csv')
print(key['AccessKeyId'], key['SecretAccessKey'])"#,
        e = endpoint,
        f = local.display()
    ));
    let (id, secret) = keys.trim().split_once(' ').unwrap();
    // No slash in the listing's prefix: this server's signature check decodes `%2F` in
    // query values before it signs them again (boto3's own listings fail the same way).
    let text = s3_source_pipeline(&scratch, "checked")
        .replace(ENDPOINT, &endpoint)
        .replace("prefix = \"drops/\"", "prefix = \"\"")
        .replace("glob = \"**/*.csv*\"", "glob = \"drops/*.csv\"");
    scratch.write("pipeline.toml", &text);
    scratch.write("secrets/s3_id", id);
    // A wrong secret: the signature does not match.
    scratch.write("secrets/s3_secret", "not-the-secret");
    let out = scratch.host(&["run", "pipeline.toml"]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stderr.contains("drops")
            && out.stderr.contains("403")
            && out.stderr.contains("credentials"),
        "{}",
        out.stderr
    );
    // An unknown key.
    scratch.write("secrets/s3_id", "AKIANOSUCHKEY0000000");
    scratch.write("secrets/s3_secret", secret);
    let out = scratch.host(&["run", "pipeline.toml"]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(out.stderr.contains("403"), "{}", out.stderr);
    // The right ones: every row once, signatures checked by the server.
    scratch.write("secrets/s3_id", id);
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    let ids = order_ids(&scratch);
    assert_eq!(ids.len(), 1000);
    assert!(ids.values().all(|n| *n == 1));
}

/// A Parquet file of orders `from..from + n` (`order_id`, `customer_email`, `amount`) in
/// row groups of `group` rows, zstd-compressed.
fn orders_parquet(path: &Path, from: i64, n: i64, group: usize) {
    use arrow::array::{Float64Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;
    use parquet::arrow::ArrowWriter;
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::properties::WriterProperties;
    let schema = std::sync::Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("customer_email", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
    ]));
    let ids = from..from + n;
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            std::sync::Arc::new(Int64Array::from_iter_values(ids.clone())),
            std::sync::Arc::new(StringArray::from_iter_values(
                ids.clone().map(|i| format!("customer{i}@example.org")),
            )),
            std::sync::Arc::new(Float64Array::from_iter_values(
                ids.map(|i| (i % 977) as f64 / 4.0),
            )),
        ],
    )
    .unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(group))
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

#[test]
fn parquet_objects_are_read_in_place_by_row_group_and_every_row_arrives_once_through_kills() {
    let bucket = TestBucket::new("drops-parquet");
    let scratch = Scratch::new();
    for i in 0..4 {
        let local = scratch.path(&format!("upload/part-{i}.parquet"));
        orders_parquet(&local, i * 300_000 + 1, 300_000, 25_000);
        bucket.put_file(&local, &format!("drops/part-{i}.parquet"));
    }
    // Something else under the prefix that the glob leaves out.
    bucket.put_orders(&scratch, "drops/notes.csv", 1, 10);
    let text = s3_source_pipeline(&scratch, &bucket.name)
        .replace("glob = \"**/*.csv*\"", "glob = \"**/*.parquet\"")
        .replace("format = \"csv\"", "format = \"parquet\"")
        .replace("[source.config.schema]\namount = \"utf8\"\n", "")
        .replace("every_rows = 5000", "every_rows = 40000");
    scratch.write("pipeline.toml", text);
    let killed = kill_after_first_commit(
        &scratch,
        "out/orders",
        6,
        Duration::from_millis(500),
        |_| {},
    );
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    let ids = order_ids(&scratch);
    let twice: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "in the lake more than once: {twice:?}");
    assert_eq!(ids.len(), 1_200_000, "rows lost");
    assert!(killed >= 3, "only {killed} of 6 runs were killed");
    // Read where they lie: no local copy was ever made.
    assert!(
        !scratch.path("staging/objects").exists(),
        "a Parquet object was copied to staging"
    );
    // Read to their end: the next run reads nothing.
    let out = scratch.host(&["run", "pipeline.toml"]);
    out.assert_ok();
    assert!(out.stdout.contains(" 0 rows read"), "{}", out.stdout);
}

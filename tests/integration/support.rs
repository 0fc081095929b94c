//! Shared helpers: a scratch directory per test, running the binary, generating orders,
//! reading Parquet back, and computing the expected masks independently.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use hmac::{Hmac, Mac};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sha2::Sha256;

/// The secret every test pipeline masks with.
pub const MASK_KEY: &str = "integration-test-mask-key-5d1f0e";

/// The secret test pipelines seal dead letters with (`protect = "encrypt"`).
pub const DLQ_KEY: &str = "integration-test-dead-letter-key-9c2e7a41";

/// Outcome of one `host` invocation.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn assert_ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "host failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

/// A scratch directory holding a pipeline, its data, state and output.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch {
            dir: tempfile::Builder::new()
                .prefix("ingest-test-")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        path
    }

    /// Write `orders` as `data/orders.csv`, the input of the standard test pipeline.
    pub fn write_orders(&self, orders: &[Order]) -> PathBuf {
        self.write(
            "data/orders.csv",
            format!("{ORDERS_HEADER}{}", orders_csv(orders)),
        )
    }

    /// Run `host ARGS...` in this directory with the mask key in the environment.
    pub fn host(&self, args: &[&str]) -> Output {
        host_in(self.dir.path(), args)
    }

    /// `host ARGS...` in this directory, to be started by the caller.
    pub fn command(&self, args: &[&str]) -> Command {
        host_command(self.dir.path(), args)
    }
}

/// The compiled-component cache shared by every test of this run.
fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("component-cache")
}

/// `host ARGS...` in `dir`, ready to run, with the test environment.
pub fn host_command(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_host"));
    command
        .args(args)
        .current_dir(dir)
        .env("INGEST_CACHE_DIR", cache_dir())
        .env("TEST_MASK_KEY", MASK_KEY)
        .env("TEST_DLQ_KEY", DLQ_KEY)
        .env_remove("INGEST_LOG")
        .env_remove("INGEST_FAULT");
    command
}

pub fn host_in(dir: &Path, args: &[&str]) -> Output {
    output(host_command(dir, args))
}

/// Run a prepared command and collect what it printed. Whatever the test, the secret every
/// test pipeline holds must never appear in what the host printed.
pub fn output(mut command: Command) -> Output {
    finished(command.output().expect("the host binary runs"))
}

/// What a host process that ended printed, checked for leaked secrets.
pub fn finished(out: std::process::Output) -> Output {
    let output = Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_no_secret(&output.stdout);
    assert_no_secret(&output.stderr);
    output
}

/// The test secret does not appear in `captured`.
pub fn assert_no_secret(captured: &str) {
    assert!(
        !captured.contains(MASK_KEY) && !captured.contains(DLQ_KEY),
        "the secret leaked into the host's output:\n{captured}"
    );
}

/// One generated order, as the CSV holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub order_id: i64,
    pub customer_email: String,
    pub customer_name: String,
    pub phone: String,
    pub country: String,
    pub amount: String,
    pub created_at: String,
    pub notes: String,
}

pub const ORDERS_HEADER: &str =
    "order_id,customer_email,customer_name,phone,country,amount,created_at,notes\n";

/// `n` deterministic orders starting at id `first`.
pub fn orders(first: i64, n: usize) -> Vec<Order> {
    (first..first + n as i64).map(order).collect()
}

/// Order `id`, with the awkward cases spread through the ids: commas, quotes and newlines
/// inside quoted fields, non-ASCII names, empty notes.
pub fn order(id: i64) -> Order {
    let countries = ["US", "FR", "DE", "JP", "BR", "IN"];
    let notes = match id % 7 {
        0 => String::new(),
        1 => format!("gift wrap, ribbon #{id}"),
        2 => "said \"hello\", twice".to_string(),
        3 => format!("line one\nline two of {id}"),
        4 => "plain note".to_string(),
        5 => "Zoë paid, ½ now".to_string(),
        _ => format!("note {id}"),
    };
    Order {
        order_id: id,
        customer_email: format!("user{id}@example{}.com", id % 13),
        customer_name: if id % 5 == 0 {
            format!("Doe, Jane {id}")
        } else {
            format!("Ana Müller {id}")
        },
        phone: format!("+1 555-{:04}-{:04}", id % 10_000, (id * 7) % 10_000),
        country: countries[(id % 6) as usize].to_string(),
        amount: format!("{}.{:02}", id % 1000, id % 100),
        created_at: format!(
            "2026-11-{:02}T{:02}:{:02}:00Z",
            1 + id % 28,
            id % 24,
            id % 60
        ),
        notes,
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Orders as CSV rows (no header).
pub fn orders_csv(orders: &[Order]) -> String {
    let mut out = String::new();
    for o in orders {
        writeln!(
            out,
            "{},{},{},{},{},{},{},{}",
            o.order_id,
            csv_field(&o.customer_email),
            csv_field(&o.customer_name),
            csv_field(&o.phone),
            o.country,
            o.amount,
            o.created_at,
            csv_field(&o.notes)
        )
        .unwrap();
    }
    out
}

/// HMAC-SHA256 as lowercase hex, computed here, independently of the plugin.
pub fn hmac_hex(key: &str, value: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(value.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Every character but the last four replaced by `*`.
pub fn keep_last_4(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    let keep = chars.len().saturating_sub(4);
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| if i < keep { '*' } else { *c })
        .collect()
}

/// All Parquet files under `dir`, recursively, sorted.
/// Copy directory `from` into `to`, recursively, leaving out every entry `skip` is true of.
pub fn copy_tree(from: &Path, to: &Path, skip: &dyn Fn(&Path) -> bool) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if skip(&path) {
            continue;
        }
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_tree(&path, &target, skip);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// Whether `path` is named `name`.
pub fn named(path: &Path, names: &[&str]) -> bool {
    path.file_name()
        .is_some_and(|n| names.iter().any(|name| n == *name))
}

pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.file_name().unwrap().to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Every row of every Parquet file under `dir`, keyed by `order_id`, each column as text.
/// Panics on a duplicate key: exactly-once is part of what the tests check.
pub fn read_orders(dir: &Path) -> BTreeMap<i64, BTreeMap<String, Option<String>>> {
    read_order_files(&parquet_files(dir))
}

/// Every row of the given Parquet files, as [`read_orders`] reads them.
pub fn read_order_files(files: &[PathBuf]) -> BTreeMap<i64, BTreeMap<String, Option<String>>> {
    let mut rows = BTreeMap::new();
    for file in files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(file).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            collect(&batch, &mut rows, file);
        }
    }
    rows
}

fn collect(
    batch: &RecordBatch,
    rows: &mut BTreeMap<i64, BTreeMap<String, Option<String>>>,
    file: &Path,
) {
    let ids = batch
        .column_by_name("order_id")
        .expect("order_id column")
        .as_primitive::<Int64Type>();
    for row in 0..batch.num_rows() {
        let mut values = BTreeMap::new();
        for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
            let value = if column.is_null(row) {
                None
            } else {
                Some(match field.data_type() {
                    DataType::Utf8 => column.as_string::<i32>().value(row).to_string(),
                    DataType::Int64 => column.as_primitive::<Int64Type>().value(row).to_string(),
                    DataType::Float64 => {
                        column.as_primitive::<Float64Type>().value(row).to_string()
                    }
                    other => panic!("unexpected column type {other} for {}", field.name()),
                })
            };
            values.insert(field.name().clone(), value);
        }
        let id = ids.value(row);
        assert!(
            rows.insert(id, values).is_none(),
            "order {id} appears twice (second time in {})",
            file.display()
        );
    }
}

/// The `order_id` of every row of every Parquet file under `dir`, sorted.
pub fn read_ids(dir: &Path) -> Vec<i64> {
    let mut ids: Vec<i64> = ids_by_file(dir)
        .into_iter()
        .flat_map(|(_, ids)| ids)
        .collect();
    ids.sort_unstable();
    ids
}

/// Each Parquet file under `dir` (relative to it) with the `order_id` of its rows, in the
/// order the file holds them.
pub fn ids_by_file(dir: &Path) -> Vec<(PathBuf, Vec<i64>)> {
    let mut out = Vec::new();
    for file in parquet_files(dir) {
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).unwrap()).unwrap();
        let mask = parquet::arrow::ProjectionMask::columns(builder.parquet_schema(), ["order_id"]);
        let mut ids = Vec::new();
        for batch in builder.with_projection(mask).build().unwrap() {
            let batch = batch.unwrap();
            ids.extend(
                batch
                    .column(0)
                    .as_primitive::<Int64Type>()
                    .values()
                    .iter()
                    .copied(),
            );
        }
        out.push((file.strip_prefix(dir).unwrap().to_path_buf(), ids));
    }
    out
}

/// Write `n` generated orders as a CSV file with a header, in pieces.
pub fn write_orders_file(path: &Path, n: usize) {
    use std::io::Write;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    file.write_all(ORDERS_HEADER.as_bytes()).unwrap();
    let mut first = 1;
    while first <= n as i64 {
        let count = (n as i64 - first + 1).min(50_000) as usize;
        file.write_all(orders_csv(&orders(first, count)).as_bytes())
            .unwrap();
        first += count as i64;
    }
}

/// The sha256 of a file, as a pipeline pins it.
pub fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// A test fixture component built by the build script.
pub fn fixture(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("INGEST_FIXTURES_DIR")).join(format!("{name}.wasm"));
    assert!(path.is_file(), "fixture {} was not built", path.display());
    path
}

/// The standard test pipeline: orders CSV → [extra transforms] → pii-mask → Parquet.
pub struct PipelineSpec<'a> {
    pub input: &'a str,
    pub on_error: &'a str,
    /// `[dlq] protect`: `raw`, `mask` or `encrypt` (keyed by `TEST_DLQ_KEY`).
    pub protect: &'a str,
    pub every_rows: u64,
    pub batch_rows: u32,
    pub extra_transform: &'a str,
    pub max_attempts: u32,
    /// Source instances reading splits at once.
    pub readers: u32,
    /// The file source's `split_bytes`, if set.
    pub split_bytes: Option<&'a str>,
    /// The file source's `last_record` (`wait` or `read`), if set.
    pub last_record: Option<&'a str>,
}

impl Default for PipelineSpec<'_> {
    fn default() -> Self {
        PipelineSpec {
            input: "data/orders.csv",
            on_error: "fail",
            protect: "raw",
            every_rows: 1_000_000,
            batch_rows: 8192,
            extra_transform: "",
            max_attempts: 1,
            readers: 1,
            split_bytes: None,
            last_record: None,
        }
    }
}

impl PipelineSpec<'_> {
    pub fn render(&self) -> String {
        format!(
            r#"[pipeline]
name = "orders"
on_error = "{on_error}"

[dlq]
protect = "{protect}"
{dlq_key}
[checkpoint]
every_rows = {every_rows}

[retry]
max_attempts = {max_attempts}
initial_backoff = "10ms"

[secrets]
mask_key = {{ env = "TEST_MASK_KEY" }}
dlq_key = {{ env = "TEST_DLQ_KEY" }}

[[source]]
name = "orders"
plugin = "builtin:file"
fs = ["data"]
batch_rows = {batch_rows}
readers = {readers}
[source.config]
path = "{input}"
stream = "orders"
{split_bytes}{last_record}[source.config.schema]
amount = "utf8"
{extra}
[[transform]]
name = "mask"
plugin = "builtin:pii-mask"
secrets = ["mask_key"]
[transform.config]
key_secret = "mask_key"
[transform.config.columns]
customer_email = "hmac-sha256"
phone = "keep-last-4"

[[sink]]
name = "lake"
plugin = "builtin:file"
fs = ["out:rw"]
[sink.config]
path = "out"
format = "parquet"
compression = "zstd"
"#,
            on_error = self.on_error,
            protect = self.protect,
            dlq_key = if self.protect == "encrypt" {
                "key_secret = \"dlq_key\"\n"
            } else {
                ""
            },
            every_rows = self.every_rows,
            max_attempts = self.max_attempts,
            batch_rows = self.batch_rows,
            input = self.input,
            readers = self.readers,
            split_bytes = self
                .split_bytes
                .map(|s| format!("split_bytes = \"{s}\"\n"))
                .unwrap_or_default(),
            last_record = self
                .last_record
                .map(|s| format!("last_record = \"{s}\"\n"))
                .unwrap_or_default(),
            extra = self.extra_transform,
        )
    }
}

/// Check that the Parquet output holds exactly `expected`, masked as the pipeline says.
pub fn assert_output_matches(out_dir: &Path, expected: &[Order]) {
    let rows = read_orders(out_dir);
    assert_eq!(rows.len(), expected.len(), "row count");
    for o in expected {
        let row = rows
            .get(&o.order_id)
            .unwrap_or_else(|| panic!("order {} is missing", o.order_id));
        let get = |c: &str| row.get(c).cloned().flatten();
        assert_eq!(
            get("customer_email"),
            Some(hmac_hex(MASK_KEY, &o.customer_email)),
            "email of {}",
            o.order_id
        );
        assert_eq!(
            get("phone"),
            Some(keep_last_4(&o.phone)),
            "phone of {}",
            o.order_id
        );
        assert_eq!(
            get("customer_name").as_deref(),
            Some(o.customer_name.as_str())
        );
        assert_eq!(get("country").as_deref(), Some(o.country.as_str()));
        assert_eq!(get("amount").as_deref(), Some(o.amount.as_str()));
        assert_eq!(get("created_at").as_deref(), Some(o.created_at.as_str()));
        let notes = if o.notes.is_empty() {
            None
        } else {
            Some(o.notes.clone())
        };
        assert_eq!(get("notes"), notes, "notes of {}", o.order_id);
    }
}

/// `host plugins conform` passes every check on the pipeline in `dir` (its sink publishes
/// test epochs, so call it after the output was checked).
pub fn assert_conforms(dir: &Path) {
    let out = host_in(dir, &["plugins", "conform", "pipeline.toml"]);
    assert!(
        out.code == 0 && out.stdout.contains(" 0 failed"),
        "the plugins in {} break the contract:\n{}\n{}",
        dir.display(),
        out.stdout,
        out.stderr
    );
}

/// Every line of every `.jsonl` file directly in `dir`, in file-name order, as JSON; none
/// when `dir` does not exist.
pub fn json_lines(dir: &Path) -> Vec<serde_json::Value> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The dead letters of `stream` in the default queue of the pipeline in `dir`.
pub fn dead_letters(dir: &Path, pipeline: &str, stream: &str) -> Vec<serde_json::Value> {
    json_lines(&dir.join(format!(".state/{pipeline}/dlq/{stream}")))
}

/// Where the tests keep the Python and JavaScript components they build, across runs.
pub fn polyglot_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the test tmpdir lives in the target dir")
        .join("polyglot")
}

/// The component of `key` in [`polyglot_dir`], built by `build` into the path it is given
/// when not there yet. Each key is built at most once per process, whatever the number of
/// tests asking; a build that stops half-way leaves nothing under the key.
pub fn build_once(key: &str, build: impl FnOnce(&Path)) -> PathBuf {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    static BUILDS: OnceLock<Mutex<HashMap<String, Arc<OnceLock<PathBuf>>>>> = OnceLock::new();
    let slot = BUILDS
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .entry(key.to_string())
        .or_default()
        .clone();
    slot.get_or_init(|| {
        let path = polyglot_dir().join(format!("{key}.wasm"));
        if !path.is_file() {
            std::fs::create_dir_all(polyglot_dir()).unwrap();
            let tmp = polyglot_dir().join(format!("{key}.{}.wasm.tmp", std::process::id()));
            build(&tmp);
            assert!(tmp.is_file(), "the build wrote no {}", tmp.display());
            std::fs::rename(&tmp, &path).unwrap();
        }
        path
    })
    .clone()
}

/// A service on this machine the tests share, which one test at a time may take alone
/// (to restart it, or to change its settings): every other user holds it shared while it
/// runs, and a thread that holds it alone needs no shared hold besides.
pub struct ServerLock(std::sync::RwLock<()>);

thread_local! {
    /// The server locks this thread holds alone, by address.
    static HELD_ALONE: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl ServerLock {
    pub const fn new() -> ServerLock {
        ServerLock(std::sync::RwLock::new(()))
    }

    fn key(&'static self) -> usize {
        self as *const ServerLock as usize
    }

    /// A hold that keeps the server from being taken alone; `None` when this thread has
    /// it alone already.
    pub fn shared(&'static self) -> Option<std::sync::RwLockReadGuard<'static, ()>> {
        if HELD_ALONE.with(|h| h.borrow().contains(&self.key())) {
            return None;
        }
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The server to this thread alone, until the result is dropped.
    pub fn exclusive(&'static self) -> Exclusive {
        let guard = self.0.write().unwrap_or_else(|e| e.into_inner());
        HELD_ALONE.with(|h| h.borrow_mut().push(self.key()));
        Exclusive {
            _guard: guard,
            key: self.key(),
        }
    }
}

/// A server held alone; see [`ServerLock::exclusive`].
pub struct Exclusive {
    _guard: std::sync::RwLockWriteGuard<'static, ()>,
    key: usize,
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        HELD_ALONE.with(|h| h.borrow_mut().retain(|k| *k != self.key));
    }
}

/// Let `child` run for `after`, then SIGKILL it; true when it was killed before it ended.
pub fn wait_or_kill(child: &mut std::process::Child, after: std::time::Duration) -> bool {
    let started = std::time::Instant::now();
    while started.elapsed() < after {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    true
}

/// Run the pipeline in `scratch` `runs` times, each killed (SIGKILL) a random moment of up
/// to `jitter` after its first commit shows as a new file in `lake` (relative to the
/// scratch directory); `before_each(run)` goes first. How many runs were killed (the others
/// ended on their own).
pub fn kill_after_first_commit(
    scratch: &Scratch,
    lake: &str,
    runs: u64,
    jitter: std::time::Duration,
    mut before_each: impl FnMut(u64),
) -> usize {
    use std::time::{Duration, Instant};
    let files = || std::fs::read_dir(scratch.path(lake)).map_or(0, |d| d.count());
    let mut killed = 0;
    let mut rng = 0x9e37_79b9_u64 ^ runs;
    for run in 0..runs {
        before_each(run);
        rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let after = Duration::from_millis((rng >> 33) % jitter.as_millis().max(1) as u64);
        let before = files();
        let mut child = crate::cdc::start(scratch);
        let started = Instant::now();
        while files() == before && started.elapsed() < Duration::from_secs(60) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if wait_or_kill(&mut child, after) {
            killed += 1;
        }
    }
    killed
}

/// A sink writing JSON Lines under `out/` (granted read-write), for pipelines whose lake
/// the tests read back with [`json_lines`].
pub const JSONL_LAKE: &str =
    "[[sink]]\nname = \"lake\"\nplugin = \"builtin:file\"\nfs = [\"out:rw\"]\n\
                              [sink.config]\npath = \"out\"\nformat = \"jsonl\"\n";

/// A loopback port that was free when asked.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server process of a test's own, listening on a loopback port; stopped when dropped.
pub struct ServerProcess {
    child: std::process::Child,
    pub port: u16,
}

impl ServerProcess {
    /// Start `command` (`what` in messages) and wait until `port` takes connections.
    pub fn start(mut command: Command, port: u16, what: &str) -> ServerProcess {
        let child = command
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{what} cannot start: {e}"));
        let server = ServerProcess { child, port };
        let ready = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < ready,
                "{what} did not listen on 127.0.0.1:{port} within 30 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        server
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

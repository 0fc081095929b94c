//! Hostile plugins: a transform (the `hostile` fixture) attacks its sandbox on the first
//! batch — files outside its grants, the environment, the network, time, memory, stack,
//! the plugin contract, a secret — and the host must contain it: the run fails naming the
//! plugin and the grant or limit it ran into, the host itself exits normally, nothing of
//! the epoch is published, and the same pipeline without the hostile stage then completes.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use crate::hostile::Attacking;
use crate::support::*;

const ROWS: usize = 100;

/// A scratch directory with `ROWS` orders in `data/orders.csv`.
fn scratch_with_orders() -> Scratch {
    let scratch = Scratch::new();
    scratch.write_orders(&orders(1, ROWS));
    scratch
}

/// The hostile stage: `stage` holds its grants and limits, `config` the attack's settings
/// (each a block of lines, possibly empty).
fn hostile(attack: &str, stage: &str, config: &str) -> String {
    let fixture = fixture("hostile");
    format!(
        "[[transform]]\nname = \"hostile\"\nplugin = \"{}\"\nsha256 = \"{}\"\n{stage}[transform.config]\nattack = \"{attack}\"\n{config}",
        fixture.display(),
        sha256_file(&fixture)
    )
}

/// Run the standard pipeline with `stage` in it.
fn run_with(scratch: &Scratch, stage: &str, args: &[&str]) -> Output {
    let spec = PipelineSpec {
        extra_transform: stage,
        max_attempts: 1,
        ..PipelineSpec::default()
    };
    scratch.write("pipeline.toml", spec.render());
    let mut command = vec!["run", "pipeline.toml"];
    command.extend_from_slice(args);
    scratch.host(&command)
}

/// The run failed as a run (exit 1, one `error:` line naming the hostile plugin, no panic),
/// published nothing, and the pipeline without the hostile stage then completes from the
/// state the failed run left.
fn assert_contained(scratch: &Scratch, run: &Output) {
    assert_eq!(run.code, 1, "the run fails, the host survives: {run:?}");
    assert!(
        run.stderr.contains("error: transform \"hostile\""),
        "the error names the plugin: {}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert!(
        parquet_files(&scratch.path("out")).is_empty(),
        "nothing is published"
    );

    let clean = run_with(scratch, "", &[]);
    clean.assert_ok();
    assert!(
        clean.stdout.contains(&format!("{ROWS} rows read")),
        "{}",
        clean.stdout
    );
    assert_output_matches(&scratch.path("out"), &orders(1, ROWS));
}

#[test]
fn reading_etc_passwd_is_denied_by_every_path() {
    let scratch = scratch_with_orders();
    std::os::unix::fs::symlink("/etc/passwd", scratch.path("data/passwd")).unwrap();
    let stage = hostile(
        "read-passwd",
        "fs = [\"data\"]\n",
        "paths = [\"/etc/passwd\", \"../../../../../etc/passwd\", \"data/../../../../../etc/passwd\", \"data/passwd\"]\n",
    );
    let run = run_with(&scratch, &stage, &[]);
    assert!(
        run.stderr.contains("read-passwd: blocked: /etc/passwd: "),
        "the plugin reports every read failed: {}",
        run.stderr
    );
    assert!(!run.stderr.contains("root:"), "{}", run.stderr);
    assert_contained(&scratch, &run);
}

#[test]
fn writing_outside_the_read_write_grant_is_denied() {
    let scratch = scratch_with_orders();
    std::fs::create_dir_all(scratch.path("box")).unwrap();
    std::os::unix::fs::symlink("..", scratch.path("box/up")).unwrap();
    let in_tmp = std::env::temp_dir().join(format!("ingest-escape-{}.txt", std::process::id()));
    let config = format!(
        "paths = [\"../escape.txt\", \"{}\", \"box/../escape.txt\", \"box/up/escape.txt\", \"data/escape.txt\"]\n",
        in_tmp.display()
    );
    let stage = hostile("write-outside", "fs = [\"data\", \"box:rw\"]\n", &config);
    let run = run_with(&scratch, &stage, &[]);
    assert!(
        run.stderr
            .contains("write-outside: blocked: ../escape.txt: "),
        "the plugin reports every write failed: {}",
        run.stderr
    );
    for escaped in [
        scratch.path("escape.txt"),
        scratch.path("data/escape.txt"),
        in_tmp,
    ] {
        assert!(!escaped.exists(), "{} was created", escaped.display());
    }
    assert_contained(&scratch, &run);
}

#[test]
fn the_environment_of_the_host_is_invisible() {
    let scratch = scratch_with_orders();
    let run = run_with(&scratch, &hostile("read-env", "", ""), &[]);
    assert!(
        run.stderr.contains("read-env: blocked: HOME: "),
        "the plugin sees no variable: {}",
        run.stderr
    );
    // The host's environment holds the mask key's variable.
    assert!(!run.stderr.contains("TEST_MASK_KEY"), "{}", run.stderr);
    assert_contained(&scratch, &run);
}

#[test]
fn the_network_is_off() {
    let scratch = scratch_with_orders();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let stage = hostile("connect", "", &format!("port = {port}\n"));
    let run = run_with(&scratch, &stage, &[]);
    assert!(
        run.stderr.contains("connect: blocked: tcp 127.0.0.1:"),
        "the plugin reports every connection failed: {}",
        run.stderr
    );
    assert_eq!(
        listener.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock,
        "nothing connected to the test's port"
    );
    assert_contained(&scratch, &run);
}

#[test]
fn a_granted_host_and_port_is_reachable_by_address_and_by_name() {
    let scratch = scratch_with_orders();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let stage = hostile(
        "connect-ok",
        &format!("net = [\"localhost:{port}\"]\n"),
        &format!("port = {port}\n"),
    );
    let run = run_with(&scratch, &stage, &[]);
    run.assert_ok();
    listener.set_nonblocking(true).unwrap();
    let accepted = std::iter::from_fn(|| listener.accept().ok()).count();
    assert_eq!(accepted, 2, "both connections reached the granted port");
}

#[test]
fn with_a_net_grant_every_other_port_stays_closed() {
    let scratch = scratch_with_orders();
    let granted = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    other.set_nonblocking(true).unwrap();
    let (granted_port, other_port) = (
        granted.local_addr().unwrap().port(),
        other.local_addr().unwrap().port(),
    );
    let stage = hostile(
        "connect",
        &format!("net = [\"127.0.0.1:{granted_port}\"]\n"),
        &format!("port = {other_port}\n"),
    );
    let run = run_with(&scratch, &stage, &["--log", "warn"]);
    assert!(
        run.stderr.contains("connect: blocked: tcp 127.0.0.1:"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("not in the plugin's `net` grant"),
        "the host log names the denied connection: {}",
        run.stderr
    );
    assert_eq!(
        other.accept().map(|_| ()).unwrap_err().kind(),
        std::io::ErrorKind::WouldBlock
    );
    assert_contained(&scratch, &run);
}

#[test]
fn a_malformed_net_grant_is_a_config_error_naming_the_entry() {
    let scratch = scratch_with_orders();
    let stage = hostile("connect-ok", "net = [\"localhost\"]\n", "");
    let run = run_with(&scratch, &stage, &[]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("net grant \"localhost\" is not `host:port`"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_endless_loop_is_stopped_by_its_deadline() {
    let scratch = scratch_with_orders();
    let attack = attacking(
        &scratch,
        &hostile("infinite-loop", "deadline = \"1s\"\n", ""),
    );
    let started = Instant::now();
    let run = attack.finish(Duration::from_secs(10));
    let took = started.elapsed();
    assert!(
        run.stderr.contains("exceeded its deadline of 1s"),
        "{}",
        run.stderr
    );
    assert!(
        took < Duration::from_secs(3),
        "took {took:?} after the loop began"
    );
    assert_contained(&scratch, &run);
}

#[test]
fn unbounded_allocation_is_stopped_by_the_memory_limit() {
    let scratch = scratch_with_orders();
    let attack = attacking(&scratch, &hostile("allocate", "memory = \"64MiB\"\n", ""));
    let started = Instant::now();
    let run = attack.finish(Duration::from_secs(10));
    let took = started.elapsed();
    assert!(
        run.stderr.contains("hit its memory limit of 64 MiB"),
        "the error names the limit: {}",
        run.stderr
    );
    assert!(
        took < Duration::from_secs(3),
        "took {took:?} after the allocation began"
    );
    assert_contained(&scratch, &run);
}

#[test]
fn unbounded_recursion_traps() {
    let scratch = scratch_with_orders();
    let run = run_with(&scratch, &hostile("deep-recursion", "", ""), &[]);
    assert!(
        run.stderr
            .contains("trapped (wasm trap: call stack exhausted)"),
        "{}",
        run.stderr
    );
    assert_contained(&scratch, &run);
}

#[test]
fn a_batch_that_is_not_arrow_ipc_breaks_the_contract() {
    let scratch = scratch_with_orders();
    let run = run_with(&scratch, &hostile("garbage-ipc", "", ""), &[]);
    assert!(
        run.stderr.contains("broke the plugin contract")
            && run.stderr.contains("not valid Arrow IPC"),
        "{}",
        run.stderr
    );
    assert_contained(&scratch, &run);
}

#[test]
fn a_batch_with_an_undeclared_column_breaks_the_contract() {
    let scratch = scratch_with_orders();
    let run = run_with(&scratch, &hostile("wrong-schema", "", ""), &[]);
    assert!(
        run.stderr.contains("broke the plugin contract") && run.stderr.contains("smuggled"),
        "{}",
        run.stderr
    );
    assert_contained(&scratch, &run);
}

#[test]
fn a_secret_the_plugin_prints_logs_or_returns_is_redacted() {
    let scratch = scratch_with_orders();
    let stage = hostile("print-secret", "secrets = [\"mask_key\"]\n", "");
    let run = run_with(&scratch, &stage, &["--log", "info"]);
    assert!(
        !run.stdout.contains(MASK_KEY) && !run.stderr.contains(MASK_KEY),
        "the secret leaked: {run:?}"
    );
    for channel in [
        "print-secret on stdout: [redacted]",
        "print-secret on stderr: [redacted]",
        "print-secret in the log: [redacted]",
        "print-secret: the secret is [redacted]",
    ] {
        assert!(
            run.stderr.contains(channel),
            "`{channel}` is missing: {}",
            run.stderr
        );
    }
    assert_contained(&scratch, &run);
}

#[test]
fn a_plugin_that_exits_the_process_only_ends_its_own_instance() {
    let scratch = scratch_with_orders();
    let run = run_with(&scratch, &hostile("exit", "", ""), &[]);
    assert!(run.stderr.contains("exited with status"), "{}", run.stderr);
    assert_contained(&scratch, &run);
}

#[test]
fn sigterm_stops_an_endless_loop_long_before_its_deadline() {
    let scratch = scratch_with_orders();
    let attack = attacking(
        &scratch,
        &hostile("infinite-loop", "deadline = \"60s\"\n", ""),
    );
    std::thread::sleep(Duration::from_millis(200));
    let signalled = Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &attack.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let run = attack.finish(Duration::from_secs(10));
    let took = signalled.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?} after SIGTERM");
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("error: the run was cancelled while transform \"hostile\""),
        "the error names the plugin that was running: {}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert!(parquet_files(&scratch.path("out")).is_empty());

    let clean = run_with(&scratch, "", &[]);
    clean.assert_ok();
    assert_output_matches(&scratch.path("out"), &orders(1, ROWS));
}

#[test]
fn a_second_signal_exits_at_once() {
    let scratch = scratch_with_orders();
    // A plugin that ignores cancellation would need its deadline to pass; the second
    // signal does not wait for anything.
    let attack = attacking(
        &scratch,
        &hostile("infinite-loop", "deadline = \"60s\"\n", ""),
    );
    let pid = attack.child.id().to_string();
    let signalled = Instant::now();
    for _ in 0..2 {
        let kill = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap();
        assert!(kill.success());
        std::thread::sleep(Duration::from_millis(5));
    }
    let run = attack.finish(Duration::from_secs(10));
    assert!(signalled.elapsed() < Duration::from_secs(2));
    assert_ne!(run.code, 0, "{run:?}");
    assert!(parquet_files(&scratch.path("out")).is_empty());
    let clean = run_with(&scratch, "", &[]);
    clean.assert_ok();
    assert_output_matches(&scratch.path("out"), &orders(1, ROWS));
}

#[test]
fn fuel_bounds_the_instructions_of_one_call() {
    let scratch = scratch_with_orders();
    let attack = attacking(
        &scratch,
        &hostile("infinite-loop", "fuel = 200000000\n", ""),
    );
    let run = attack.finish(Duration::from_secs(20));
    assert!(
        run.stderr
            .contains("ran out of its fuel of 200000000 units for one call"),
        "{}",
        run.stderr
    );
    assert_contained(&scratch, &run);
}

#[test]
fn a_batch_over_the_size_limit_breaks_the_contract() {
    let scratch = scratch_with_orders();
    let stage = hostile("big-batch", "max_batch = \"4MiB\"\n", "mib = 8\n");
    let run = run_with(&scratch, &stage, &[]);
    assert!(
        run.stderr.contains("broke the plugin contract")
            && run.stderr.contains("`max_batch` limit of 4 MiB"),
        "{}",
        run.stderr
    );
    assert_contained(&scratch, &run);
}

/// A loopback HTTP server answering 200 to every request; counts the requests it served.
struct HttpServer {
    port: u16,
    served: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl HttpServer {
    fn start() -> Self {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = served.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                // Read the request head.
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            }
        });
        HttpServer { port, served }
    }

    fn served(&self) -> usize {
        self.served.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[test]
fn http_requests_go_only_under_a_granted_url_prefix() {
    let scratch = scratch_with_orders();
    let server = HttpServer::start();
    let port = server.port;
    // No http grant at all: nothing goes out.
    let stage = hostile(
        "http",
        "",
        &format!("urls = [\"http://127.0.0.1:{port}/api/orders\"]\n"),
    );
    let run = run_with(&scratch, &stage, &[]);
    assert!(
        run.stderr.contains("http: blocked: GET http://127.0.0.1:"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("HttpRequestDenied"), "{}", run.stderr);
    assert_eq!(server.served(), 0);
    assert_contained(&scratch, &run);

    // A grant for /api/ does not open /admin, nor a look-alike path, nor another port.
    let scratch = scratch_with_orders();
    let stage = hostile(
        "http",
        &format!("http = [\"http://127.0.0.1:{port}/api/\"]\n"),
        &format!(
            "urls = [\"http://127.0.0.1:{port}/admin\", \"http://127.0.0.1:{port}/apix\", \"http://127.0.0.1:1/api/x\"]\n"
        ),
    );
    let run = run_with(&scratch, &stage, &["--log", "warn"]);
    assert!(run.stderr.contains("http: blocked: "), "{}", run.stderr);
    assert!(
        run.stderr.contains("not under the plugin's `http` grant"),
        "the host log names the denied request: {}",
        run.stderr
    );
    assert_eq!(server.served(), 0);
    assert_contained(&scratch, &run);
}

#[test]
fn a_path_that_walks_out_of_the_http_grant_never_reaches_the_server() {
    let scratch = scratch_with_orders();
    let server = HttpServer::start();
    let port = server.port;
    let base = format!("http://127.0.0.1:{port}");
    let walks = [
        "/api/../admin",
        "/api/./../admin",
        "/api/%2e%2e/secret",
        "/api/%2E%2e/secret",
        "/api/.%2E/secret",
        "/api/..%2fother",
        "/api/x%2F..%2F..%2Fadmin",
        "/api/x%5c..%5cadmin",
        "/api/..;/admin",
        "/api/%c0%ae%c0%ae/admin",
    ];
    let urls: Vec<String> = walks
        .iter()
        .map(|path| format!("{base}{path}"))
        .chain([format!("http://user@127.0.0.1:{port}/api/x")])
        .collect();
    let stage = hostile(
        "http",
        &format!("http = [\"{base}/api/\"]\n"),
        &format!(
            "urls = [{}]\n",
            urls.iter()
                .map(|u| format!("\"{u}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    let run = run_with(&scratch, &stage, &["--log", "warn"]);
    assert_eq!(server.served(), 0, "{}", run.stderr);
    for path in walks {
        assert!(
            run.stderr.contains(&format!(
                "denied an HTTP request to {base}{path}: its path holds"
            )),
            "the log names the denial of {path}: {}",
            run.stderr
        );
    }
    assert!(
        run.stderr.contains("http: blocked: ")
            && run
                .stderr
                .contains("the request's authority holds a user name"),
        "{}",
        run.stderr
    );
    assert_contained(&scratch, &run);
}

#[test]
fn a_granted_url_prefix_answers() {
    let scratch = scratch_with_orders();
    let server = HttpServer::start();
    let port = server.port;
    let stage = hostile(
        "http-ok",
        &format!("http = [\"http://127.0.0.1:{port}/api\"]\n"),
        &format!(
            "urls = [\"http://127.0.0.1:{port}/api\", \"http://127.0.0.1:{port}/api/orders?page=2\"]\n"
        ),
    );
    run_with(&scratch, &stage, &[]).assert_ok();
    assert_eq!(server.served(), 2);
    assert_output_matches(&scratch.path("out"), &orders(1, ROWS));
}

#[test]
fn an_env_grant_shows_exactly_the_named_variable() {
    let scratch = scratch_with_orders();
    let stage = hostile(
        "env-ok",
        "env = [\"INGEST_TEST_REGION\"]\n",
        "var = \"INGEST_TEST_REGION\"\n",
    );
    let spec = PipelineSpec {
        extra_transform: &stage,
        ..PipelineSpec::default()
    };
    scratch.write("pipeline.toml", spec.render());
    let mut command = scratch.command(&["run", "pipeline.toml", "--log", "info"]);
    command.env("INGEST_TEST_REGION", "eu-west-3");
    let run = output(command);
    run.assert_ok();
    assert!(
        run.stderr
            .contains("env-ok: INGEST_TEST_REGION has 9 bytes"),
        "{}",
        run.stderr
    );

    // Still nothing else: the read-env attack with the same grant sees no HOME or PATH.
    let scratch = scratch_with_orders();
    let stage = hostile("read-env", "env = [\"INGEST_TEST_REGION\"]\n", "");
    let spec = PipelineSpec {
        extra_transform: &stage,
        ..PipelineSpec::default()
    };
    scratch.write("pipeline.toml", spec.render());
    let mut command = scratch.command(&["run", "pipeline.toml"]);
    command.env("INGEST_TEST_REGION", "eu-west-3");
    let run = output(command);
    assert!(
        run.stderr.contains("HOME: environment variable not found"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("PATH=/"), "{}", run.stderr);

    // A variable the host does not have is a config error naming the entry.
    let mut command = scratch.command(&["run", "pipeline.toml"]);
    command.env_remove("INGEST_TEST_REGION");
    let run = output(command);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains("env grant `INGEST_TEST_REGION`: the variable is not set"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_grant_the_plugin_cannot_use_is_refused_before_anything_runs() {
    let scratch = scratch_with_orders();
    let spec = PipelineSpec::default().render().replace(
        "plugin = \"builtin:pii-mask\"\n",
        "plugin = \"builtin:pii-mask\"\nnet = [\"127.0.0.1:5432\"]\n",
    );
    scratch.write("pipeline.toml", spec);
    let check = scratch.host(&["check", "pipeline.toml"]);
    assert_eq!(check.code, 2, "{check:?}");
    assert!(
        check.stderr.contains("transform \"mask\" (builtin:pii-mask): invalid config: unused grant: `net` is granted but the plugin does not import wasi:sockets"),
        "{}",
        check.stderr
    );
    let run = scratch.host(&["run", "pipeline.toml"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(!scratch.path("out").exists() || parquet_files(&scratch.path("out")).is_empty());
}

/// A run of the standard pipeline with `stage` in it, caught in the act: the plugin has
/// logged that it begins its attack.
fn attacking(scratch: &Scratch, stage: &str) -> Attacking {
    let spec = PipelineSpec {
        extra_transform: stage,
        max_attempts: 1,
        ..PipelineSpec::default()
    };
    scratch.write("pipeline.toml", spec.render());
    Attacking::spawn(scratch)
}

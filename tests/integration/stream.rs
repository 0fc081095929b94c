//! Stream mode: a source that never ends, epochs that close by time, and a SIGTERM that
//! drains (the open epoch commits, the host exits 0) so the next run goes on exactly
//! where this one stopped.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::hostile::{pipeline, published, scratch};
use crate::support::*;

/// The hostile source made an endless stream (a chunk of 10 rows every 20 ms) into the
/// hostile sink, in stream mode with the default epoch interval (1 s).
pub fn stream_pipeline() -> String {
    let text = pipeline(None, 1_000_000)
        .replace(
            "name = \"hostile\"\non_error = \"fail\"",
            "name = \"hostile\"\non_error = \"fail\"\nmode = \"stream\"",
        )
        .replace(
            "batch_rows = 10\n",
            "batch_rows = 10\nendless = true\npace_ms = 20\n",
        );
    assert!(
        text.contains("mode = \"stream\"") && text.contains("endless = true"),
        "the hostile pipeline changed"
    );
    text
}

pub fn signal(child: &Child, name: &str) {
    let status = std::process::Command::new("kill")
        .args([name, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Run until `epochs` epochs are published, then SIGTERM: the run must end by itself,
/// successfully, within `within`. Returns what it printed.
fn run_then_drain(scratch: &Scratch, epochs: usize, within: Duration) -> Output {
    let before = epoch_files(scratch);
    let mut child = scratch
        .command(&["run", "pipeline.toml"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while epoch_files(scratch) < before + epochs {
        assert!(
            Instant::now() < deadline,
            "no epoch closed by time within 30 s"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "an endless stream ended"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&child, "-TERM");
    let sent = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if sent.elapsed() > within {
            let _ = child.kill();
            panic!("the run did not drain within {within:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = finished(child.wait_with_output().unwrap());
    assert_eq!(out.code, 0, "a drain exits 0: {}", out.stderr);
    out
}

pub fn epoch_files(scratch: &Scratch) -> usize {
    std::fs::read_dir(scratch.path("out"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("epoch-")
        })
        .count()
}

#[test]
fn epochs_close_by_time_and_a_sigterm_drains_so_the_next_run_goes_on_exactly_there() {
    let scratch = scratch();
    scratch.write("pipeline.toml", stream_pipeline());
    // Two epochs closed by time, then a drain well within one more epoch.
    let stderr = run_then_drain(&scratch, 2, Duration::from_secs(3)).stderr;
    assert!(stderr.contains("draining"), "{stderr}");
    let first = published(&scratch);
    assert!(!first.is_empty());
    let expected: Vec<i64> = (1..=first.len() as i64).collect();
    assert_eq!(
        first, expected,
        "the drained run published rows 1 to N, each once"
    );

    // The next run starts right after the last committed row.
    run_then_drain(&scratch, 1, Duration::from_secs(3));
    let both = published(&scratch);
    assert!(both.len() > first.len());
    let expected: Vec<i64> = (1..=both.len() as i64).collect();
    assert_eq!(
        both,
        expected,
        "the second run went on at row {}",
        first.len() + 1
    );
}

#[test]
fn a_second_signal_during_a_drain_exits_at_once() {
    let scratch = scratch();
    // A source that takes 5 s to return a chunk: the drain waits for it, a second signal
    // does not.
    let text = stream_pipeline().replace("pace_ms = 20", "pace_ms = 5000");
    scratch.write("pipeline.toml", text);
    let mut child = scratch
        .command(&["run", "pipeline.toml"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    signal(&child, "-TERM");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the drain waits for the source's chunk"
    );
    signal(&child, "-TERM");
    let sent = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            sent.elapsed() < Duration::from_secs(2),
            "a second signal exits at once"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(child.wait().unwrap().code(), Some(130));
}

#[test]
fn stream_mode_is_checked_like_any_setting() {
    let scratch = scratch();
    scratch.write(
        "pipeline.toml",
        stream_pipeline().replace("mode = \"stream\"", "mode = \"streaming\""),
    );
    let out = scratch.host(&["run", "pipeline.toml"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("mode = \"streaming\"")
            && out.stderr.contains("accepted: batch, stream"),
        "{}",
        out.stderr
    );
    scratch.write(
        "pipeline.toml",
        stream_pipeline().replace("name = \"orders\"\n", "name = \"orders\"\nreaders = 2\n"),
    );
    let out = scratch.host(&["run", "pipeline.toml"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("a stream is read by one reader"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_summary_gives_the_lag_from_source_commit_to_sink_commit() {
    let scratch = scratch();
    let text = stream_pipeline().replace("endless = true\n", "endless = true\ncommit_ts = true\n");
    scratch.write("pipeline.toml", text);
    let stdout = run_then_drain(&scratch, 2, Duration::from_secs(3)).stdout;
    // With epochs of 1 s, a change waits at most about one epoch and its commit.
    let line = stdout
        .lines()
        .find(|l| l.contains("lag from source commit to sink commit"))
        .unwrap_or_else(|| panic!("no lag in the summary: {stdout}"));
    let figure = |name: &str| -> f64 {
        let at = line
            .find(name)
            .unwrap_or_else(|| panic!("{name} missing: {line}"));
        line[at + name.len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (p50, p99, max) = (figure("p50 "), figure("p99 "), figure("max "));
    assert!(0.0 <= p50 && p50 <= p99 && p99 <= max, "{line}");
    assert!(max < 3.0, "{line}");
}

/// The value of the sample `name` (with its labels, as the exposition writes them) in a
/// scrape; none when absent.
fn sample(scrape: &str, name: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Prometheus's `promtool`: on the PATH, or where `scripts/setup` unpacks it.
fn promtool() -> std::path::PathBuf {
    let unpacked = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("../tools/bin/promtool");
    if unpacked.is_file() {
        return unpacked;
    }
    let on_path = std::process::Command::new("promtool")
        .arg("--version")
        .output();
    assert!(
        on_path.is_ok_and(|o| o.status.success()),
        "promtool is neither on the PATH nor at {}; run scripts/setup",
        unpacked.display()
    );
    "promtool".into()
}

/// Scrape `url` with curl, as Prometheus does (asking for OpenMetrics).
fn scrape_openmetrics(url: &str) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", "-H"])
        .arg("Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
        .arg(url)
        .output()
        .expect("curl runs");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// Scrape `url` with curl, a client of its own.
fn scrape(url: &str) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "5", url])
        .output()
        .expect("curl runs");
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn metrics_are_served_while_a_stream_runs_and_count_what_it_does() {
    let scratch = scratch();
    // A fuel limit on the source meters fuel, which the metrics then count.
    let text = stream_pipeline().replace(
        "name = \"orders\"\n",
        "name = \"orders\"\nfuel = 1000000000\n",
    );
    assert!(text.contains("fuel = "), "the stream pipeline changed");
    scratch.write("pipeline.toml", text);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let url = format!("http://{address}/metrics");
    let mut child = scratch
        .command(&["run", "pipeline.toml", "--metrics", &address])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Two epochs committed (1 s each), scraped as it runs.
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        assert!(Instant::now() < deadline, "no two epochs committed in 30 s");
        assert!(child.try_wait().unwrap().is_none(), "the stream ended");
        let Ok(text) = std::panic::catch_unwind(|| scrape(&url)) else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        if sample(&text, "ingest_epochs_committed_total").unwrap_or(0.0) >= 2.0 {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_millis(1500));
    let second = scrape(&url);
    // Prometheus, asking for OpenMetrics, gets it.
    let openmetrics = scrape_openmetrics(&url);
    assert!(
        openmetrics.contains("# TYPE ingest_source_rows counter")
            && openmetrics.ends_with("# EOF\n"),
        "{openmetrics}"
    );
    // Anything but /metrics is not found.
    let other = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://{address}/"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&other.stdout), "404");
    signal(&child, "-TERM");
    let out = finished(child.wait_with_output().unwrap());
    assert_eq!(out.code, 0, "{}", out.stderr);

    for name in [
        "# TYPE ingest_source_rows_total counter",
        "# TYPE ingest_sink_rows_total counter",
        "# TYPE ingest_epoch_duration_seconds histogram",
        "# TYPE ingest_epoch_commit_duration_seconds histogram",
        "# TYPE ingest_last_committed_epoch gauge",
        "# TYPE ingest_last_commit_timestamp_seconds gauge",
        "# TYPE ingest_plugin_call_duration_seconds histogram",
        "ingest_plugin_call_duration_seconds_count{plugin=\"source \\\"orders\\\"",
        "ingest_plugin_call_duration_seconds_count{plugin=\"sink \\\"",
        "# TYPE ingest_plugin_memory_peak_bytes gauge",
        "# TYPE ingest_plugin_fuel_consumed_total counter",
    ] {
        assert!(first.contains(name), "{name} missing from:\n{first}");
    }
    // Each plugin's peak memory is at least the 1 MiB or so of a small Rust component,
    // under its 256 MiB default limit.
    let peaks: Vec<f64> = second
        .lines()
        .filter(|l| l.starts_with("ingest_plugin_memory_peak_bytes{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert_eq!(peaks.len(), 2, "source and sink: {second}");
    assert!(
        peaks
            .iter()
            .all(|&p| (1e6..=256.0 * 1048576.0).contains(&p)),
        "{peaks:?}"
    );
    let fuel = second
        .lines()
        .find(|l| l.starts_with("ingest_plugin_fuel_consumed_total{plugin=\"source"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no fuel counted for the source:\n{second}"));
    assert!(fuel > 1000.0, "{fuel}");
    // Prometheus's own checker finds nothing wrong with the exposition.
    let promtool = promtool();
    let mut check = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(second.as_bytes())
        .unwrap();
    let checked = check.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let rows = |text: &str, name: &str| {
        sample(text, &format!("{name}{{stream=\"orders\"}}"))
            .unwrap_or_else(|| panic!("{name} of stream orders missing from:\n{text}"))
    };
    // The stream keeps going: what was read and committed grows between scrapes.
    assert!(rows(&second, "ingest_source_rows_total") > rows(&first, "ingest_source_rows_total"));
    assert!(rows(&second, "ingest_sink_rows_total") > rows(&first, "ingest_sink_rows_total"));
    assert!(
        sample(&second, "ingest_last_committed_epoch").unwrap()
            > sample(&first, "ingest_last_committed_epoch").unwrap()
    );
    let committed_at = sample(&second, "ingest_last_commit_timestamp_seconds").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - committed_at).abs() < 10.0,
        "{committed_at} against {now}"
    );
}

/// A tmux session running `host run ARGS pipeline.toml` in `scratch` on a terminal of its
/// own; killed when dropped.
struct Terminal(String);

impl Terminal {
    fn run(scratch: &Scratch, tag: &str, args: &str) -> Terminal {
        let session = format!("ingest-{tag}-{}", std::process::id());
        let command = format!(
            "cd {} && INGEST_CACHE_DIR={} {} run {args} pipeline.toml; sleep 30",
            scratch.path(".").display(),
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join("component-cache")
                .display(),
            env!("CARGO_BIN_EXE_host")
        );
        let started = std::process::Command::new("tmux")
            .args(["new-session", "-d", "-s", &session, "-x", "160", "-y", "20"])
            .arg(&command)
            .status()
            .expect("tmux runs");
        assert!(started.success());
        Terminal(session)
    }

    /// What the terminal shows now.
    fn screen(&self) -> String {
        pane(&self.0)
    }

    fn ctrl_c(&self) {
        std::process::Command::new("tmux")
            .args(["send-keys", "-t", &self.0, "C-c"])
            .status()
            .unwrap();
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

/// What the tmux pane `session` shows now.
fn pane(session: &str) -> String {
    let out = std::process::Command::new("tmux")
        .args(["capture-pane", "-p", "-t", session])
        .output()
        .expect("tmux runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The rows-read figure of the progress line in `screen`.
fn rows_on_screen(screen: &str) -> Option<u64> {
    let line = screen.lines().find(|l| l.contains(" rows read ("))?;
    let before = line.split(" rows read (").next()?;
    let figure = before.split_whitespace().last()?;
    figure.replace(',', "").parse().ok()
}

#[test]
fn on_a_terminal_a_progress_line_moves_and_gives_way_to_the_summary() {
    let scratch = scratch();
    scratch.write("pipeline.toml", stream_pipeline());
    let terminal = Terminal::run(&scratch, "progress", "");
    // The line appears and its figures grow, as a person watching would see.
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        assert!(
            Instant::now() < deadline,
            "no progress line: {}",
            terminal.screen()
        );
        if let Some(rows) = rows_on_screen(&terminal.screen()).filter(|r| *r > 0) {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_millis(1500));
    let screen = terminal.screen();
    let later = rows_on_screen(&screen).expect("the line is still there");
    assert!(
        later > first,
        "the line did not move: {first} then {later}\n{screen}"
    );
    assert!(screen.contains("rows committed, epoch "), "{screen}");
    // Ctrl-C drains; the line gives way to the summary.
    terminal.ctrl_c();
    let deadline = Instant::now() + Duration::from_secs(20);
    let screen = loop {
        let screen = terminal.screen();
        if screen.contains("epochs committed") || screen.contains("epoch committed") {
            break screen;
        }
        assert!(
            Instant::now() < deadline,
            "no summary after Ctrl-C: {screen}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // The summary comes after the last state of the line (the terminal echoed the ^C on
    // it, so it stays, as the last word before the summary).
    let line = screen.find(" rows read (").unwrap_or(0);
    let summary = screen.find("pipeline hostile:").expect("the summary");
    assert!(line < summary, "{screen}");
}

#[test]
fn with_quiet_a_terminal_gets_no_progress_line_and_still_the_summary() {
    let scratch = scratch();
    scratch.write("pipeline.toml", stream_pipeline());
    let terminal = Terminal::run(&scratch, "quiet", "--quiet");
    // Epochs close while it runs (the output shows them); the screen stays empty.
    let deadline = Instant::now() + Duration::from_secs(60);
    while epoch_files(&scratch) < 2 {
        assert!(
            Instant::now() < deadline,
            "no epochs: {}",
            terminal.screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let screen = terminal.screen();
    assert!(
        !screen.contains(" rows read ("),
        "a line under --quiet: {screen}"
    );
    terminal.ctrl_c();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let screen = terminal.screen();
        if screen.contains("epochs committed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no summary after Ctrl-C: {screen}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_bounded_run_of_five_million_rows_shows_its_share_read_and_the_time_left() {
    let scratch = scratch();
    // 5M rows of CSV, about 75 MB, read by the file source into the honest hostile sink.
    let mut csv = String::with_capacity(80 << 20);
    csv.push_str("id,note\n");
    for id in 1..=5_000_000u64 {
        csv.push_str(&format!("{id},row {id}\n"));
    }
    scratch.write("data/rows.csv", &csv);
    let sink = stream_pipeline();
    let sink = &sink[sink.find("[[sink]]").expect("a sink")..];
    scratch.write(
        "pipeline.toml",
        format!(
            "[pipeline]\nname = \"bounded\"\n\n[[source]]\nname = \"rows\"\nplugin = \"builtin:file\"\n\
             fs = [\"data\"]\n[source.config]\npath = \"data/rows.csv\"\n\n{sink}"
        ),
    );
    let terminal = Terminal::run(&scratch, "eta", "");
    // Watch as a person would: the share read grows, an estimate of the time left shows,
    // and the summary takes the line's place at the end.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut shares, mut eta) = (Vec::new(), false);
    let screen = loop {
        let screen = terminal.screen();
        if screen.contains("pipeline bounded:") {
            break screen;
        }
        assert!(Instant::now() < deadline, "the run did not end: {screen}");
        if let Some(line) = screen.lines().find(|l| l.contains(" rows read (")) {
            if let Some(at) = line.find("% of ") {
                let share: u64 = line[..at]
                    .rsplit(' ')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("no share: {line}"));
                assert!(line[at..].contains("MiB read"), "{line}");
                shares.push(share);
                eta |= line.contains(", ETA ");
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        shares.windows(2).all(|w| w[0] <= w[1]) && shares.first() < shares.last(),
        "the share read did not grow: {shares:?}\n{screen}"
    );
    assert!(eta, "no time left was shown: {shares:?}\n{screen}");
    assert!(screen.contains("5000000 rows read"), "{screen}");
}

//! Stream mode: a source that never ends, epochs that close by time, and a SIGTERM that
//! drains (the open epoch commits, the host exits 0) so the next run goes on exactly
//! where this one stopped.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::hostile::{pipeline, published, scratch};
use crate::support::*;

/// The hostile source made an endless stream (a chunk of 10 rows every 20 ms) into the
/// hostile sink, in stream mode with the default epoch interval (1 s).
fn stream_pipeline() -> String {
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

fn signal(child: &Child, name: &str) {
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

fn epoch_files(scratch: &Scratch) -> usize {
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

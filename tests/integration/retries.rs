//! Transient failures are retried from the last checkpoint with backoff; permanent ones
//! stop the run at once, naming the plugin, with the state at the last good epoch.

use crate::support::*;

fn pipeline(transient_failures: u32, fail_from_epoch: Option<u64>) -> String {
    let fixture = fixture("flaky_sink");
    let fail_from = fail_from_epoch
        .map(|e| format!("fail_from_epoch = {e}\n"))
        .unwrap_or_default();
    format!(
        r#"[pipeline]
name = "orders"
[checkpoint]
every_rows = 1000
[retry]
max_attempts = 5
initial_backoff = "20ms"
max_backoff = "100ms"
[[source]]
name = "orders"
plugin = "builtin:file"
fs = ["data"]
batch_rows = 1000
[source.config]
path = "data/orders.csv"
[[sink]]
name = "warehouse"
plugin = "{}"
sha256 = "{}"
fs = ["warehouse:rw"]
[sink.config]
dir = "warehouse"
transient_failures = {transient_failures}
{fail_from}"#,
        fixture.display(),
        sha256_file(&fixture)
    )
}

fn committed_epochs(scratch: &Scratch) -> Vec<(u64, u64)> {
    std::fs::read_to_string(scratch.path("warehouse/committed.txt"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let (e, r) = l.split_once(' ').unwrap();
            (e.parse().unwrap(), r.parse().unwrap())
        })
        .collect()
}

#[test]
fn a_sink_that_fails_transiently_three_times_succeeds_on_the_fourth_attempt() {
    let scratch = Scratch::new();
    scratch.write_orders(&orders(1, 3_000));
    scratch.write("pipeline.toml", pipeline(3, None));
    let run = scratch.host(&["run", "pipeline.toml"]);
    run.assert_ok();
    assert!(run.stdout.contains("4 attempts"), "{}", run.stdout);
    let retries: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("retrying from the last checkpoint"))
        .collect();
    assert_eq!(retries.len(), 3, "{}", run.stderr);
    for (i, line) in retries.iter().enumerate() {
        assert!(
            line.contains("sink \"warehouse\""),
            "the retry names the plugin: {line}"
        );
        assert!(
            line.contains(&format!("attempt={}", i + 1)),
            "the retry names the attempt: {line}"
        );
        assert!(line.contains("busy"), "the retry names the cause: {line}");
    }
    let epochs = committed_epochs(&scratch);
    assert_eq!(
        epochs.iter().map(|(_, rows)| rows).sum::<u64>(),
        3_000,
        "{epochs:?}"
    );
}

#[test]
fn a_sink_that_fails_permanently_stops_the_run_at_the_last_good_epoch() {
    let scratch = Scratch::new();
    scratch.write_orders(&orders(1, 3_000));
    scratch.write("pipeline.toml", pipeline(0, Some(2)));
    let run = scratch.host(&["run", "pipeline.toml"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("sink \"warehouse\""), "{}", run.stderr);
    assert!(run.stderr.contains("disk full"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("retrying"),
        "a fatal error is not retried: {}",
        run.stderr
    );
    assert_eq!(committed_epochs(&scratch), vec![(1, 1_000)]);
    let state = scratch.host(&["state", "show", "pipeline.toml"]);
    assert!(
        state.stdout.contains("epoch 1 (committed)"),
        "{}",
        state.stdout
    );
}

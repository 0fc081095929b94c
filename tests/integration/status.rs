//! `host status`: how a pipeline stands, for people and for monitoring — the last committed
//! epoch and when, rows, dead letters, who holds the run lock — and freshness against
//! `[slo] freshness`, with exit code 3 when it is breached.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::*;

/// Orders 1..=1000, of which the ten with an id ending in 42 have an unreadable amount.
fn write_input(scratch: &Scratch) {
    let orders: Vec<Order> = orders(1, 1000)
        .into_iter()
        .map(|mut o| {
            if o.order_id % 100 == 42 {
                o.amount = "N/A".to_string();
            }
            o
        })
        .collect();
    scratch.write_orders(&orders);
}

fn pipeline(freshness: &str) -> String {
    let text = PipelineSpec {
        on_error: "dlq",
        ..PipelineSpec::default()
    }
    .render()
    .replace("amount = \"utf8\"", "amount = \"float64\"");
    format!("{text}\n[slo]\nfreshness = \"{freshness}\"\n")
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

/// The pipeline's lock file, from where `host state show` says its state is.
fn lock_file(scratch: &Scratch) -> PathBuf {
    let out = scratch.host(&["state", "show", "pipeline.toml"]);
    let line = out.stdout.lines().next().unwrap_or_default().to_string();
    let (_, path) = line.split_once(": state in ").expect("a state path");
    let path = scratch.path(path.trim());
    path.parent().unwrap().join("lock")
}

#[test]
fn status_tells_the_last_commit_the_dead_letters_the_lock_and_freshness_against_the_slo() {
    let scratch = Scratch::new();
    write_input(&scratch);
    scratch.write("pipeline.toml", pipeline("1h"));

    // Before any run: nothing committed is as stale as it gets.
    let out = scratch.host(&["status", "pipeline.toml"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stdout.contains("last commit   nothing committed yet"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("SLO 1h: BREACHED"), "{}", out.stdout);

    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    let out = scratch.host(&["status", "pipeline.toml"]);
    assert_eq!(out.code, 0, "{out:?}");
    for part in [
        "last commit   epoch 1 at ",
        "rows          990 written, 10 rejected",
        "dead letters  10 (orders: 10)",
        "run lock      free",
        "since the last commit, SLO 1h: ok",
    ] {
        assert!(
            out.stdout.contains(part),
            "{part} missing from:\n{}",
            out.stdout
        );
    }
    let status = json(&scratch.host(&["status", "pipeline.toml", "--json"]));
    assert_eq!(status["epoch"], 1);
    assert_eq!(status["committed"], true);
    assert_eq!(status["dead_letters"]["total"], 10);
    assert_eq!(status["lock"], serde_json::Value::Null);
    assert_eq!(status["slo"]["breached"], false);
    assert!(status["age_seconds"].as_f64().unwrap() < 60.0);

    // While another process holds the run lock, status says who (as the last holder wrote
    // it down) and still answers.
    let mut holding = Command::new("flock")
        .arg(lock_file(&scratch))
        .args(["sleep", "30"])
        .stdout(Stdio::null())
        .spawn()
        .expect("flock runs");
    std::thread::sleep(Duration::from_millis(300));
    let out = scratch.host(&["status", "pipeline.toml"]);
    holding.kill().unwrap();
    holding.wait().unwrap();
    assert!(
        out.stdout
            .contains("run lock      held by `host run pipeline.toml`"),
        "{}",
        out.stdout
    );

    // A tighter SLO than the time since the last commit: breached, exit 3.
    scratch.write("pipeline.toml", pipeline("1s"));
    std::thread::sleep(Duration::from_millis(1500));
    let out = scratch.host(&["status", "pipeline.toml"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stdout.contains("SLO 1s: BREACHED"), "{}", out.stdout);
    assert!(
        out.stderr.contains("staler than its freshness SLO of 1s"),
        "{}",
        out.stderr
    );
    let out = scratch.host(&["status", "pipeline.toml", "--json"]);
    assert_eq!(out.code, 3);
    assert_eq!(json(&out)["slo"]["breached"], true);
}

#[test]
fn json_logs_are_one_object_a_line_with_the_run_attempt_stage_and_epoch_they_belong_to() {
    let scratch = Scratch::new();
    write_input(&scratch);
    scratch.write("pipeline.toml", pipeline("1h"));
    let out = scratch.host(&[
        "run",
        "pipeline.toml",
        "--log",
        "info",
        "--log-format",
        "json",
    ]);
    out.assert_ok();
    let lines: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}")))
        .collect();
    assert!(!lines.is_empty(), "no log lines at info");
    // A line the sink logs while it commits an epoch names every span it is in.
    let committed = lines
        .iter()
        .find(|l| l["span"]["name"] == "epoch")
        .unwrap_or_else(|| panic!("no line inside an epoch span: {}", out.stderr));
    let spans: Vec<&str> = committed["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(spans, ["run", "attempt", "stage", "epoch"]);
    assert_eq!(committed["spans"][0]["pipeline"], "orders");
    assert_eq!(committed["spans"][2]["role"], "sink");
    assert_eq!(committed["span"]["epoch"], 1);
    for l in &lines {
        assert!(l["level"].is_string() && l["timestamp"].is_string(), "{l}");
    }
}

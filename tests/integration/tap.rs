//! `host tap`: rows sampled where they leave a stage of a running pipeline, masked by the
//! masking stages after it as the sink receives them.

use std::process::Stdio;
use std::time::{Duration, Instant};

use sha2::Digest;

use crate::hostile::scratch;
use crate::stream::{epoch_files, signal, stream_pipeline};
use crate::support::*;

/// The endless stream of the stream tests, with `note` ("row N") hashed on the way by
/// `builtin:pii-mask` in a stage named `mask`.
fn masked_stream() -> String {
    let text = stream_pipeline()
        .replace("[checkpoint]", "[dlq]\nprotect = \"mask\"\n\n[checkpoint]")
        .replace(
            "[[sink]]",
            "[[transform]]\nname = \"mask\"\nplugin = \"builtin:pii-mask\"\n\
             [transform.config.columns]\nnote = \"sha256\"\n\n[[sink]]",
        );
    assert!(
        text.contains("name = \"mask\""),
        "the stream pipeline changed"
    );
    text
}

/// The rows a tap printed, each checked to be `note`-masked as the sink sees it: the
/// SHA-256 of `row ID`, never the note itself.
fn masked_rows(stdout: &str) -> Vec<i64> {
    stdout
        .lines()
        .map(|line| {
            let row: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a tapped row is not JSON ({e}): {line}"));
            let id = row["id"]
                .as_i64()
                .unwrap_or_else(|| panic!("no id: {line}"));
            let expected = hex::encode(sha2::Sha256::digest(format!("row {id}")));
            assert_eq!(
                row["note"], expected,
                "not masked as the sink sees it: {line}"
            );
            id
        })
        .collect()
}

#[test]
fn a_tap_prints_rows_leaving_any_stage_as_the_sink_would_see_them() {
    let scratch = scratch();
    scratch.write("pipeline.toml", masked_stream());
    // Before any run, there is nothing to tap.
    let out = scratch.host(&["tap", "pipeline.toml", "--stage", "orders"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("no run in progress") && out.stderr.contains("host run"),
        "{}",
        out.stderr
    );
    let mut child = scratch
        .command(&["run", "pipeline.toml"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while epoch_files(&scratch) == 0 {
        assert!(Instant::now() < deadline, "no epoch committed in 30 s");
        assert!(child.try_wait().unwrap().is_none(), "the stream ended");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Upstream of the masker, at it, and arriving at the sink: always masked.
    for (stage, rows) in [("orders", 5), ("mask", 3), ("warehouse", 2)] {
        let out = scratch.host(&[
            "tap",
            "pipeline.toml",
            "--stage",
            stage,
            "--rows",
            &rows.to_string(),
        ]);
        assert_eq!(out.code, 0, "tap of {stage}: {}", out.stderr);
        let ids = masked_rows(&out.stdout);
        assert_eq!(ids.len(), rows, "tap of {stage}: {}", out.stdout);
        // Consecutive rows of the stream, in order.
        assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    }

    // A stage the pipeline does not have is named, with the ones it has.
    let out = scratch.host(&["tap", "pipeline.toml", "--stage", "nope"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("no stage `nope`") && out.stderr.contains("orders, mask, warehouse"),
        "{}",
        out.stderr
    );

    // A tap that leaves early costs the run nothing: it goes on and drains cleanly.
    let mut early = scratch
        .command(&[
            "tap",
            "pipeline.toml",
            "--stage",
            "orders",
            "--rows",
            "10000",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    early.kill().unwrap();
    early.wait().unwrap();
    let before = epoch_files(&scratch);
    let deadline = Instant::now() + Duration::from_secs(30);
    while epoch_files(&scratch) < before + 2 {
        assert!(
            Instant::now() < deadline,
            "the run stopped committing after a tap left"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(&child, "-TERM");
    let out = finished(child.wait_with_output().unwrap());
    assert_eq!(out.code, 0, "{}", out.stderr);
    // The run's socket went with it.
    let out = scratch.host(&["tap", "pipeline.toml", "--stage", "orders"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("no run in progress"), "{}", out.stderr);
}

//! Schema evolution under `[schema] on_change`: a stream whose columns change between runs
//! evolves when the change is safe, and otherwise stops before any row is written, with a
//! readable diff.

use crate::support::*;

fn pipeline(path: &str, policy: &str) -> String {
    format!(
        r#"[pipeline]
name = "prices"
[schema]
on_change = "{policy}"
[[source]]
plugin = "builtin:file"
fs = ["data"]
[source.config]
path = "{path}"
stream = "prices"
[[sink]]
plugin = "builtin:file"
fs = ["out:rw"]
[sink.config]
path = "out"
format = "jsonl"
"#
    )
}

fn setup() -> Scratch {
    let scratch = Scratch::new();
    scratch.write("data/v1.csv", "sku,amount\nA,10\nB,20\n");
    // A new export: amount became decimal (int64 -> float64) and a discount column appeared.
    scratch.write("data/v2.csv", "sku,amount,discount\nC,30.5,0.1\nD,40,\n");
    // A broken export: amount is text now.
    scratch.write("data/v3.csv", "sku,amount\nE,n/a\n");
    scratch
}

fn published_lines(scratch: &Scratch) -> usize {
    std::fs::read_dir(scratch.path("out/prices"))
        .map(|d| {
            d.map(|f| {
                std::fs::read_to_string(f.unwrap().path())
                    .unwrap()
                    .lines()
                    .count()
            })
            .sum()
        })
        .unwrap_or(0)
}

#[test]
fn evolve_accepts_a_new_nullable_column_and_a_widening_and_refuses_a_narrowing() {
    let scratch = setup();
    scratch.write("pipeline.toml", pipeline("data/v1.csv", "evolve"));
    scratch.host(&["run", "pipeline.toml"]).assert_ok();

    scratch.write("pipeline.toml", pipeline("data/v2.csv", "evolve"));
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    let state = scratch.host(&["state", "show", "pipeline.toml"]);
    assert!(
        state.stdout.contains("schema version 2"),
        "{}",
        state.stdout
    );
    assert_eq!(published_lines(&scratch), 4);

    scratch.write("pipeline.toml", pipeline("data/v3.csv", "evolve"));
    let run = scratch.host(&["run", "pipeline.toml"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("~ amount: Float64 -> Utf8 (not a safe widening)"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("- discount: Float64"), "{}", run.stderr);
    assert_eq!(
        published_lines(&scratch),
        4,
        "nothing of the refused run is published"
    );
}

#[test]
fn freeze_refuses_any_change_with_a_readable_diff() {
    let scratch = setup();
    scratch.write("pipeline.toml", pipeline("data/v1.csv", "freeze"));
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    scratch.write("pipeline.toml", pipeline("data/v2.csv", "freeze"));
    let run = scratch.host(&["run", "pipeline.toml"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("stream `prices` changed since version 1"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("+ discount: Float64"), "{}", run.stderr);
    assert!(
        run.stderr.contains("~ amount: Int64 -> Float64 (widening)"),
        "{}",
        run.stderr
    );
    assert_eq!(published_lines(&scratch), 2);
    let state = scratch.host(&["state", "show", "pipeline.toml"]);
    assert!(
        state.stdout.contains("epoch 1 (committed)") && state.stdout.contains("schema version 1"),
        "{}",
        state.stdout
    );
}

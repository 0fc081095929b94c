//! Schema evolution under `[schema] on_change`: a stream whose columns change between runs
//! evolves when the change is safe, and otherwise stops before any row is written, with a
//! readable diff.

use crate::support::*;

fn pipeline(path: &str, policy: &str) -> String {
    format!(
        r#"[pipeline]
name = "prices"
[dlq]
protect = "raw"
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
    assert_eq!(json_lines(&scratch.path("out/prices")).len(), 4);

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
        json_lines(&scratch.path("out/prices")).len(),
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
    assert_eq!(json_lines(&scratch.path("out/prices")).len(), 2);
    let state = scratch.host(&["state", "show", "pipeline.toml"]);
    assert!(
        state.stdout.contains("epoch 1 (committed)") && state.stdout.contains("schema version 1"),
        "{}",
        state.stdout
    );
}

#[test]
fn quarantine_keeps_the_schema_and_sends_only_rows_that_do_not_fit_to_the_queue() {
    let scratch = setup();
    scratch.write("pipeline.toml", pipeline("data/v1.csv", "quarantine"));
    scratch.host(&["run", "pipeline.toml"]).assert_ok();

    // v2: amount widened to float64 and a discount column appeared. D (40, no discount)
    // fits version 1; C (30.5 with a discount) does not.
    scratch.write("pipeline.toml", pipeline("data/v2.csv", "quarantine"));
    let run = scratch.host(&["run", "pipeline.toml"]);
    run.assert_ok();
    assert!(
        run.stdout
            .contains("1 rejected (1 to the dead-letter queue)"),
        "{}",
        run.stdout
    );
    let rows = json_lines(&scratch.path("out/prices"));
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[2]["sku"], "D");
    assert_eq!(rows[2]["amount"], 40, "written in the recorded type, int64");
    assert!(rows[2].get("discount").is_none(), "no new column appears");
    let letters = dead_letters(&scratch.path(""), "prices", "prices");
    assert_eq!(letters.len(), 1, "{letters:?}");
    let reason = letters[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("`amount`") || reason.contains("`discount`"),
        "{reason}"
    );
    assert!(letters[0]["record"].as_str().unwrap().contains("\"C\""));

    // v3: amount became text; `n/a` fits no int64.
    scratch.write("pipeline.toml", pipeline("data/v3.csv", "quarantine"));
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    assert_eq!(json_lines(&scratch.path("out/prices")).len(), 3);
    assert_eq!(dead_letters(&scratch.path(""), "prices", "prices").len(), 2);
    let state = scratch.host(&["state", "show", "pipeline.toml"]);
    assert!(
        state.stdout.contains("schema version 1"),
        "quarantine never changes the recorded schema: {}",
        state.stdout
    );
}

#[test]
fn quarantined_rows_move_on_when_replayed_after_the_policy_accepts_the_change() {
    let scratch = setup();
    scratch.write("pipeline.toml", pipeline("data/v1.csv", "quarantine"));
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    scratch.write("pipeline.toml", pipeline("data/v2.csv", "quarantine"));
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    assert_eq!(dead_letters(&scratch.path(""), "prices", "prices").len(), 1);

    scratch.write("pipeline.toml", pipeline("data/v2.csv", "evolve"));
    let replay = scratch.host(&["dlq", "replay", "pipeline.toml"]);
    replay.assert_ok();
    assert!(
        replay
            .stdout
            .contains("1 dead letters replayed, 1 rows written, 0 still failing"),
        "{}",
        replay.stdout
    );
    assert!(dead_letters(&scratch.path(""), "prices", "prices").is_empty());
    let rows = json_lines(&scratch.path("out/prices"));
    assert_eq!(rows.len(), 4);
    let c = rows.iter().find(|r| r["sku"] == "C").unwrap();
    assert_eq!(c["amount"], 30.5);
    assert_eq!(c["discount"], 0.1);
    let state = scratch.host(&["state", "show", "pipeline.toml"]);
    assert!(
        state.stdout.contains("schema version 2"),
        "{}",
        state.stdout
    );
}

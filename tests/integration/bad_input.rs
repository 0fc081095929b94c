//! Bad input gets a clear error and loses nothing: malformed records are reported with
//! file and line (or dead-lettered), and configuration mistakes stop the run with exit
//! code 2 before any data moves.

use crate::support::*;

fn no_output(scratch: &Scratch) {
    assert!(
        parquet_files(&scratch.path("out")).is_empty(),
        "nothing may be published"
    );
}

/// 20 good orders with a row of the wrong width at line 12 (the header is line 1).
fn input_with_a_wide_row() -> (String, Vec<Order>) {
    let good = orders(1, 20);
    let mut text = String::from(ORDERS_HEADER);
    text.push_str(&orders_csv(&good[..10]));
    text.push_str("999,x@example.com,X,+1 555,US,1.00,2026-11-01T00:00:00Z,note,EXTRA\n");
    text.push_str(&orders_csv(&good[10..]));
    (text, good)
}

#[test]
fn a_row_with_too_many_fields_fails_the_run_naming_file_and_line() {
    let scratch = Scratch::new();
    let (text, _) = input_with_a_wide_row();
    scratch.write("data/orders.csv", text);
    scratch.write("pipeline.toml", PipelineSpec::default().render());
    let run = scratch.host(&["run", "pipeline.toml"]);
    assert_eq!(run.code, 1, "{run:?}");
    // Orders 1..=10 take lines 2..=12 (order 3 and 10 hold a newline in their notes).
    let line = 2 + orders_csv(&orders(1, 10)).lines().count();
    assert!(
        run.stderr.contains(&format!("data/orders.csv:{line}")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("on_error"),
        "the message says how to go on: {}",
        run.stderr
    );
    no_output(&scratch);
}

#[test]
fn with_a_dead_letter_queue_bad_rows_are_set_aside_and_the_rest_arrives() {
    let scratch = Scratch::new();
    let (mut text, good) = input_with_a_wide_row();
    text.push_str(
        "1000,y@example.com,\"Unclosed, quote,+1 555,US,2.00,2026-11-01T00:00:00Z,note\n",
    );
    scratch.write("data/orders.csv", text);
    // The file is complete: the quote left open at its end is a bad record, not one its
    // writer has yet to finish.
    scratch.write(
        "pipeline.toml",
        PipelineSpec {
            on_error: "dlq",
            last_record: Some("read"),
            ..PipelineSpec::default()
        }
        .render(),
    );
    let run = scratch.host(&["run", "pipeline.toml"]);
    run.assert_ok();
    assert!(
        run.stdout.contains("2 to the dead-letter queue"),
        "{}",
        run.stdout
    );
    assert_output_matches(&scratch.path("out"), &good);

    let letters = dead_letters(&scratch.path(""), "orders", "orders");
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert!(letters[0]["record"].as_str().unwrap().contains("EXTRA"));
    assert!(letters[0]["location"]
        .as_str()
        .unwrap()
        .starts_with("data/orders.csv:"));
    assert!(letters[1]["record"].as_str().unwrap().contains("Unclosed"));
    for letter in &letters {
        assert!(!letter["reason"].as_str().unwrap().is_empty());
        assert_eq!(letter["plugin"], "source \"orders\" (builtin:file)");
    }
}

fn config_error(pipeline: &str, data: bool) -> Output {
    let scratch = Scratch::new();
    if data {
        scratch.write_orders(&orders(1, 5));
    }
    scratch.write("pipeline.toml", pipeline);
    let run = scratch.host(&["run", "pipeline.toml"]);
    assert_eq!(run.code, 2, "{run:?}");
    no_output(&scratch);
    assert!(
        !scratch.path(".state/orders/state").exists(),
        "no state may be written"
    );
    run
}

#[test]
fn a_missing_input_file_is_a_config_error() {
    let spec = PipelineSpec {
        input: "data/nope.csv",
        ..PipelineSpec::default()
    };
    let run = config_error(&spec.render(), true);
    assert!(run.stderr.contains("data/nope.csv"), "{}", run.stderr);
}

#[test]
fn an_unknown_builtin_plugin_is_a_config_error_listing_the_known_ones() {
    let pipeline = PipelineSpec::default()
        .render()
        .replace("builtin:pii-mask", "builtin:pii-masker");
    let run = config_error(&pipeline, true);
    assert!(run.stderr.contains("builtin:pii-masker"), "{}", run.stderr);
    assert!(
        run.stderr.contains("builtin:pii-mask,") || run.stderr.contains("builtin:pii-mask "),
        "{}",
        run.stderr
    );
}

#[test]
fn a_plugin_file_with_the_wrong_sha256_is_refused() {
    let fixture = fixture("trap_transform");
    let extra = format!(
        "[[transform]]\nname = \"trap\"\nplugin = \"{}\"\nsha256 = \"{}\"\n[transform.config]\ntrap_after_rows = 1\n",
        fixture.display(),
        "0".repeat(64)
    );
    let spec = PipelineSpec {
        extra_transform: &extra,
        ..PipelineSpec::default()
    };
    let run = config_error(&spec.render(), true);
    assert!(run.stderr.contains("sha256"), "{}", run.stderr);
    assert!(
        run.stderr.contains(&sha256_file(&fixture)),
        "the message shows the actual digest: {}",
        run.stderr
    );
}

#[test]
fn an_unknown_key_in_the_pipeline_is_named_with_its_line() {
    let pipeline = PipelineSpec::default()
        .render()
        .replace("[retry]", "[retry]\nmax_attemps = 3");
    let run = config_error(&pipeline, true);
    assert!(run.stderr.contains("max_attemps"), "{}", run.stderr);
    let line = pipeline
        .lines()
        .position(|l| l.starts_with("max_attemps"))
        .unwrap()
        + 1;
    assert!(
        run.stderr.contains(&format!("line {line}")),
        "{}",
        run.stderr
    );
}

#[test]
fn an_unknown_key_in_a_plugin_config_is_named_with_its_line() {
    let pipeline = PipelineSpec::default().render().replace(
        "stream = \"orders\"",
        "stream = \"orders\"\ndelimter = \";\"",
    );
    let run = config_error(&pipeline, true);
    assert!(run.stderr.contains("delimter"), "{}", run.stderr);
    let line = pipeline
        .lines()
        .position(|l| l.starts_with("delimter"))
        .unwrap()
        + 1;
    assert!(
        run.stderr.contains(&format!("line {line}")),
        "{}",
        run.stderr
    );
}

#[test]
fn a_missing_secret_stops_the_run_before_data_moves() {
    let pipeline = PipelineSpec::default()
        .render()
        .replace("TEST_MASK_KEY", "SURELY_UNSET_MASK_KEY");
    let run = config_error(&pipeline, true);
    assert!(
        run.stderr.contains("SURELY_UNSET_MASK_KEY"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("mask_key"), "{}", run.stderr);
}

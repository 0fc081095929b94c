//! A plugin that dies mid-run leaves the state at the last committed epoch, publishes
//! nothing of the open one, and the next run resumes from there.

use crate::support::*;

fn trap_transform(after_rows: u64) -> String {
    let fixture = fixture("trap_transform");
    format!(
        "[[transform]]\nname = \"flaky\"\nplugin = \"{}\"\nsha256 = \"{}\"\n[transform.config]\ntrap_after_rows = {after_rows}\n",
        fixture.display(),
        sha256_file(&fixture)
    )
}

#[test]
fn a_trap_mid_run_keeps_committed_epochs_and_the_next_run_resumes_after_them() {
    let scratch = Scratch::new();
    let expected = orders(1, 50_000);
    scratch.write(
        "data/orders.csv",
        format!("{ORDERS_HEADER}{}", orders_csv(&expected)),
    );
    let trapping = trap_transform(25_000);
    let spec = PipelineSpec {
        every_rows: 10_000,
        batch_rows: 5_000,
        extra_transform: &trapping,
        ..PipelineSpec::default()
    };
    scratch.write("pipeline.toml", spec.render());
    let run = scratch.host(&["run", "pipeline.toml"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("transform \"flaky\""),
        "the error names the plugin: {}",
        run.stderr
    );
    assert!(run.stderr.contains("trapped"), "{}", run.stderr);

    let state = scratch.host(&["state", "show", "pipeline.toml"]);
    state.assert_ok();
    assert!(
        state.stdout.contains("epoch 2 (committed)"),
        "{}",
        state.stdout
    );
    assert_output_matches(&scratch.path("out"), &expected[..20_000]);

    let healthy = trap_transform(u64::MAX / 2);
    let spec = PipelineSpec {
        extra_transform: &healthy,
        ..spec
    };
    scratch.write("pipeline.toml", spec.render());
    let run = scratch.host(&["run", "pipeline.toml"]);
    run.assert_ok();
    assert!(run.stdout.contains("30000 rows read"), "{}", run.stdout);
    assert_output_matches(&scratch.path("out"), &expected);
}

#[test]
fn retries_start_again_from_the_last_checkpoint_on_a_fresh_instance() {
    // Each fresh instance traps after 25,000 rows, but every attempt commits two epochs
    // before it does, so three attempts carry 50,000 rows through.
    let scratch = Scratch::new();
    let expected = orders(1, 50_000);
    scratch.write(
        "data/orders.csv",
        format!("{ORDERS_HEADER}{}", orders_csv(&expected)),
    );
    let trapping = trap_transform(25_000);
    let spec = PipelineSpec {
        every_rows: 10_000,
        batch_rows: 5_000,
        extra_transform: &trapping,
        max_attempts: 4,
        ..PipelineSpec::default()
    };
    scratch.write("pipeline.toml", spec.render());
    let run = scratch.host(&["run", "pipeline.toml"]);
    run.assert_ok();
    assert!(run.stdout.contains("3 attempts"), "{}", run.stdout);
    assert_output_matches(&scratch.path("out"), &expected);
}

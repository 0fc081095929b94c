//! `builtin:dedupe` behind an at-least-once input: repeated rows arrive once, within a run,
//! across runs (the window is checkpointed with the epoch) and across crashes at every
//! point of the commit protocol (the window restored is the committed epoch's).

use crate::support::*;

/// The dedupe stage on `order_id`, with `window` keys when given.
fn dedupe_stage(window: Option<u64>) -> String {
    let window = window
        .map(|w| format!("window = {w}\n"))
        .unwrap_or_default();
    format!(
        "[[transform]]\nname = \"dedupe\"\nplugin = \"builtin:dedupe\"\n[transform.config]\nkey = [\"order_id\"]\n{window}"
    )
}

/// Orders `first..first + n` in order, with a repeat of an earlier order (up to `reach`
/// rows back, possibly before `first`, down to order 1) after every tenth row.
fn with_repeats(first: i64, n: usize, reach: i64, seed: u64) -> Vec<Order> {
    let mut rng = seed | 1;
    let mut rows = Vec::with_capacity(n + n / 10);
    for id in first..first + n as i64 {
        rows.push(order(id));
        if id % 10 == 0 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let back = (rng % reach as u64) as i64;
            rows.push(order((id - back).max(1)));
        }
    }
    rows
}

fn write_csv(scratch: &Scratch, rel: &str, rows: &[Order]) {
    scratch.write(rel, format!("{ORDERS_HEADER}{}", orders_csv(rows)));
}

#[test]
fn repeated_rows_in_later_files_of_a_glob_arrive_once() {
    let scratch = Scratch::new();
    // Three files of 3,000 orders each; one row in eleven repeats an order up to 4,000 rows
    // back, so repeats cross batches, epochs and files.
    let mut read = 0;
    for (i, first) in [1, 3001, 6001].into_iter().enumerate() {
        let rows = with_repeats(first, 3000, 4000, 7 + i as u64);
        read += rows.len();
        write_csv(&scratch, &format!("data/orders-{}.csv", i + 1), &rows);
    }
    assert_eq!(read, 9900);
    let stage = dedupe_stage(None);
    let spec = PipelineSpec {
        input: "data/orders-*.csv",
        every_rows: 2000,
        batch_rows: 700,
        extra_transform: &stage,
        ..PipelineSpec::default()
    };
    scratch.write("pipeline.toml", spec.render());
    let run = scratch.host(&["run", "pipeline.toml"]);
    run.assert_ok();
    assert!(
        run.stdout.contains("9900 rows read") && run.stdout.contains("9000 rows written"),
        "{}",
        run.stdout
    );
    // Each order exactly once (a duplicate fails the read), masked as usual.
    assert_output_matches(&scratch.path("out"), &orders(1, 9000));
}

#[test]
fn a_second_run_drops_repeats_of_the_first_through_the_restored_window() {
    let scratch = Scratch::new();
    write_csv(&scratch, "data/orders-1.csv", &orders(1, 5000));
    let stage = dedupe_stage(None);
    let spec = PipelineSpec {
        input: "data/orders-*.csv",
        every_rows: 2000,
        batch_rows: 1000,
        extra_transform: &stage,
        ..PipelineSpec::default()
    };
    scratch.write("pipeline.toml", spec.render());
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    assert_eq!(read_ids(&scratch.path("out")).len(), 5000);

    // A re-delivery: the second file starts with the last 1,000 orders of the first.
    write_csv(&scratch, "data/orders-2.csv", &orders(4001, 3000));
    let run = scratch.host(&["run", "pipeline.toml"]);
    run.assert_ok();
    assert!(
        run.stdout.contains("3000 rows read") && run.stdout.contains("2000 rows written"),
        "{}",
        run.stdout
    );
    assert_output_matches(&scratch.path("out"), &orders(1, 7000));

    // The state holds the window under the transform's name; `state show` stays as it was.
    let state = scratch.host(&["state", "show", "pipeline.toml"]);
    state.assert_ok();
    assert_plain_state_show(&state.stdout, "epoch 5 (committed)");
}

#[test]
fn a_window_shrunk_between_runs_forgets_the_oldest_keys() {
    let scratch = Scratch::new();
    write_csv(&scratch, "data/orders-1.csv", &orders(1, 1000));
    let stage = dedupe_stage(Some(1000));
    let spec = PipelineSpec {
        input: "data/orders-*.csv",
        extra_transform: &stage,
        ..PipelineSpec::default()
    };
    scratch.write("pipeline.toml", spec.render());
    scratch.host(&["run", "pipeline.toml"]).assert_ok();

    // Keep only the newest 300 keys (701..=1000): a repeat of 1000 down to 601 lets
    // 700..=601 through again, and only those.
    let stage = dedupe_stage(Some(300));
    scratch.write(
        "pipeline.toml",
        PipelineSpec {
            extra_transform: &stage,
            ..spec
        }
        .render(),
    );
    let mut again = orders(601, 400);
    again.reverse();
    write_csv(&scratch, "data/orders-2.csv", &again);
    let run = scratch.host(&["run", "pipeline.toml"]);
    run.assert_ok();
    assert!(run.stdout.contains("100 rows written"), "{}", run.stdout);
    let ids = read_ids(&scratch.path("out"));
    let mut expected: Vec<i64> = (1..=1000).chain(601..=700).collect();
    expected.sort_unstable();
    assert_eq!(ids, expected);
}

/// `state show` prints the epoch, the totals and the positions, nothing of the window.
fn assert_plain_state_show(stdout: &str, epoch: &str) {
    assert!(stdout.contains(epoch), "{stdout}");
    assert!(
        stdout.lines().count() <= 8 && stdout.len() < 1000,
        "state show prints transform state: {stdout}"
    );
    assert!(!stdout.contains("dedupe"), "{stdout}");
}

#[test]
fn a_crash_at_any_point_of_the_commit_protocol_restores_the_committed_window() {
    // 30,000 orders with repeats up to 6,000 rows back: a restored window older than the
    // committed epoch lets repeats through twice, a newer one drops first occurrences.
    let input = with_repeats(1, 30_000, 6000, 42);
    let expected = orders(1, 30_000);
    let stage = dedupe_stage(None);
    for point in ingest_host::fault::POINTS {
        for epoch in [2, 4] {
            let scratch = Scratch::new();
            write_csv(&scratch, "data/orders.csv", &input);
            let spec = PipelineSpec {
                every_rows: 5000,
                batch_rows: 2500,
                extra_transform: &stage,
                ..PipelineSpec::default()
            };
            scratch.write("pipeline.toml", spec.render());
            let mut crashing = scratch.command(&["run", "pipeline.toml"]);
            crashing.env("INGEST_FAULT", format!("{point}@{epoch}"));
            let crashed = output(crashing);
            assert_ne!(crashed.code, 0, "{point}@{epoch}: {crashed:?}");
            assert!(
                crashed.stderr.contains("fault injected"),
                "{point}@{epoch}: {}",
                crashed.stderr
            );
            let recorded = match *point {
                "after-state" | "after-sink-commit" | "after-commit" => {
                    format!("epoch {epoch} (prepared, commit pending)")
                }
                _ => format!("epoch {} (committed)", epoch - 1),
            };
            let state = scratch.host(&["state", "show", "pipeline.toml"]);
            assert_plain_state_show(&state.stdout, &recorded);

            scratch.host(&["run", "pipeline.toml"]).assert_ok();
            assert_output_matches(&scratch.path("out"), &expected);
        }
    }
}

#[test]
fn a_trap_after_the_dedupe_stage_retries_from_the_committed_window() {
    // The trap fixture after dedupe dies after 12,000 rows per instance; each attempt
    // commits two epochs first, and every retry opens dedupe with the committed window.
    let scratch = Scratch::new();
    let input = with_repeats(1, 30_000, 6000, 5);
    write_csv(&scratch, "data/orders.csv", &input);
    let fixture = fixture("trap_transform");
    let stages = format!(
        "{}[[transform]]\nname = \"flaky\"\nplugin = \"{}\"\nsha256 = \"{}\"\n[transform.config]\ntrap_after_rows = 12000\n",
        dedupe_stage(None),
        fixture.display(),
        sha256_file(&fixture)
    );
    let spec = PipelineSpec {
        every_rows: 5000,
        batch_rows: 2500,
        extra_transform: &stages,
        max_attempts: 10,
        ..PipelineSpec::default()
    };
    scratch.write("pipeline.toml", spec.render());
    let run = scratch.host(&["run", "pipeline.toml"]);
    run.assert_ok();
    assert!(!run.stdout.contains(" 1 attempt;"), "{}", run.stdout);
    assert_output_matches(&scratch.path("out"), &orders(1, 30_000));
}

#[test]
fn example_06_keeps_the_first_row_of_each_redelivered_order() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/06-dedupe-redelivered-orders");
    let scratch = Scratch::new();
    scratch.write(
        "pipeline.toml",
        std::fs::read(example.join("pipeline.toml")).unwrap(),
    );
    for file in ["orders-0830.csv", "orders-0845.csv"] {
        let rel = format!("data/{file}");
        scratch.write(&rel, std::fs::read(example.join(&rel)).unwrap());
    }
    let run = scratch.host(&["run", "pipeline.toml"]);
    run.assert_ok();
    assert!(
        run.stdout.contains("12 rows read") && run.stdout.contains("8 rows written"),
        "{}",
        run.stdout
    );
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(scratch.path("out/orders")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            ids.push(row["order_id"].as_i64().unwrap());
        }
    }
    ids.sort_unstable();
    assert_eq!(ids, (1001..=1008).collect::<Vec<_>>());
}

//! Several source instances reading a stream's splits at once (`readers`): the rows leave
//! in the order one reader gives them, so the output, the epochs and the errors are the
//! same as with one reader.

use crate::support::*;

/// Run `spec` over the CSV `text` in a scratch directory of its own.
fn run_with(spec: &PipelineSpec, files: &[(&str, String)]) -> (Scratch, Output) {
    let scratch = Scratch::new();
    for (name, text) in files {
        scratch.write(&format!("data/{name}"), text);
    }
    scratch.write("pipeline.toml", spec.render());
    let run = scratch.host(&["run", "pipeline.toml"]);
    (scratch, run)
}

/// Every `order_id` of the output, file after file (files are named by epoch), each file in
/// the order it holds its rows.
fn ids_in_order(out: &std::path::Path) -> Vec<i64> {
    ids_by_file(out)
        .into_iter()
        .flat_map(|(_, ids)| ids)
        .collect()
}

/// Panics unless `a` and `b` are equal, saying where they first differ (not printing them).
fn assert_same_sequence(a: &[i64], b: &[i64], what: &str) {
    if let Some(i) = (0..a.len().min(b.len())).find(|&i| a[i] != b[i]) {
        panic!(
            "{what}: first difference at row {i}: {} against {}",
            a[i], b[i]
        );
    }
    assert_eq!(a.len(), b.len(), "{what}: row count");
}

/// `rows` orders from `first` on, as a CSV file with its header.
fn orders_file(first: i64, rows: usize) -> String {
    format!("{ORDERS_HEADER}{}", orders_csv(&orders(first, rows)))
}

/// The standard pipeline with epochs of `every_rows`: with one reader, and with three
/// sharing the file in 1 MiB parts.
fn one_and_three_readers(every_rows: u64) -> (PipelineSpec<'static>, PipelineSpec<'static>) {
    let one = PipelineSpec {
        every_rows,
        ..PipelineSpec::default()
    };
    let three = PipelineSpec {
        readers: 3,
        split_bytes: Some("1MiB"),
        ..one
    };
    (one, three)
}

#[test]
fn three_readers_of_one_file_in_parts_write_what_one_reader_writes() {
    let text = orders_file(1, 150_000);
    let (one, three) = one_and_three_readers(25_000);
    let (a, run_a) = run_with(&one, &[("orders.csv", text.clone())]);
    run_a.assert_ok();
    let (b, run_b) = run_with(&three, &[("orders.csv", text)]);
    run_b.assert_ok();
    // Chunks end where parts end, so epochs may close a few rows apart; the rows and
    // their order are the same.
    let ids = ids_in_order(&a.path("out"));
    assert!(parquet_files(&b.path("out")).len() >= 4);
    assert_same_sequence(&ids_in_order(&b.path("out")), &ids, "rows in order");
    assert_output_matches(&b.path("out"), &orders(1, 150_000));
    // A second run reads nothing again: every part's position was kept.
    let again = b.host(&["run", "pipeline.toml"]);
    again.assert_ok();
    assert_same_sequence(&ids_in_order(&b.path("out")), &ids, "after a second run");
    let state = b.host(&["state", "show", "pipeline.toml"]);
    state.assert_ok();
    assert!(
        state.stdout.contains("data/orders.csv@"),
        "{}",
        state.stdout
    );
}

#[test]
fn a_glob_of_files_read_by_two_readers_keeps_path_order() {
    let files: Vec<(String, String)> = (0..5)
        .map(|k| {
            let text = orders_file(1 + k * 20_000, 20_000);
            (format!("orders-{k}.csv"), text)
        })
        .collect();
    let files: Vec<(&str, String)> = files.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let one = PipelineSpec {
        input: "data/orders-*.csv",
        every_rows: 30_000,
        ..PipelineSpec::default()
    };
    let two = PipelineSpec { readers: 2, ..one };
    let (a, run_a) = run_with(&one, &files);
    run_a.assert_ok();
    let (b, run_b) = run_with(&two, &files);
    run_b.assert_ok();
    // Whole files make the same chunks, so even the epochs are the same.
    let (files_a, files_b) = (ids_by_file(&a.path("out")), ids_by_file(&b.path("out")));
    assert_eq!(files_b.len(), files_a.len(), "files");
    for ((name_a, ids_a), (name_b, ids_b)) in files_a.iter().zip(&files_b) {
        assert_eq!(name_b, name_a);
        assert_same_sequence(ids_b, ids_a, &name_a.display().to_string());
    }
    assert_eq!(read_ids(&b.path("out")), (1..=100_000).collect::<Vec<_>>());
}

#[test]
fn a_bad_record_in_a_later_part_fails_the_run_as_one_reader_would() {
    let mut text = orders_file(1, 120_000);
    let line = text.matches('\n').count() + 1;
    text.push_str("121000,not,enough\n");
    text.push_str(&orders_csv(&orders(120_001, 30_000)));
    let (one, three) = one_and_three_readers(20_000);
    let (a, run_a) = run_with(&one, &[("orders.csv", text.clone())]);
    let (b, run_b) = run_with(&three, &[("orders.csv", text)]);
    assert_eq!(run_a.code, 1, "{run_a:?}");
    assert_eq!(run_b.code, 1, "{run_b:?}");
    for run in [&run_a, &run_b] {
        assert!(
            run.stderr.contains(&format!("orders.csv:{line}")),
            "the error names the file and line: {}",
            run.stderr
        );
    }
    // Epochs close where the checkpoint policy says, on rows before the bad record; what
    // was committed is a prefix of the input in order, as with one reader.
    let (ids_a, ids_b) = (ids_in_order(&a.path("out")), ids_in_order(&b.path("out")));
    assert!(
        !ids_b.is_empty() && ids_b.len() < 120_000,
        "{} rows",
        ids_b.len()
    );
    assert_same_sequence(
        &ids_b,
        &(1..=ids_b.len() as i64).collect::<Vec<_>>(),
        "prefix",
    );
    assert_same_sequence(
        &ids_a,
        &(1..=ids_a.len() as i64).collect::<Vec<_>>(),
        "prefix",
    );
}

#[test]
fn readers_must_be_between_one_and_sixty_four() {
    let spec = PipelineSpec::default();
    let scratch = Scratch::new();
    scratch.write_orders(&orders(1, 10));
    let text = spec.render().replace("readers = 1", "readers = 0");
    scratch.write("pipeline.toml", text);
    let run = scratch.host(&["check", "pipeline.toml"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("readers = 0; give 1 to 64"),
        "{}",
        run.stderr
    );
}

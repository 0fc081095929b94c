//! A plugin that dies mid-run leaves the state at the last committed epoch, publishes
//! nothing of the open one, and the next run resumes from there.

use crate::support::*;

/// The `flaky` stage: the trap-transform fixture with `config` (one `key = value` line).
fn flaky_stage(config: &str) -> String {
    let fixture = fixture("trap_transform");
    format!(
        "[[transform]]\nname = \"flaky\"\nplugin = \"{}\"\nsha256 = \"{}\"\n[transform.config]\n{config}\n",
        fixture.display(),
        sha256_file(&fixture)
    )
}

fn trap_transform(after_rows: u64) -> String {
    flaky_stage(&format!("trap_after_rows = {after_rows}"))
}

fn trap_at_random(probability: f64) -> String {
    flaky_stage(&format!("trap_probability = {probability}"))
}

#[test]
fn a_trap_mid_run_keeps_committed_epochs_and_the_next_run_resumes_after_them() {
    let scratch = Scratch::new();
    let expected = orders(1, 50_000);
    scratch.write_orders(&expected);
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
    scratch.write_orders(&expected);
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

#[test]
fn a_crash_at_any_point_of_the_commit_protocol_loses_nothing_and_publishes_nothing_twice() {
    let expected = orders(1, 30_000);
    for point in ingest_host::fault::POINTS {
        let scratch = Scratch::new();
        scratch.write_orders(&expected);
        let spec = PipelineSpec {
            every_rows: 10_000,
            batch_rows: 5_000,
            ..PipelineSpec::default()
        };
        scratch.write("pipeline.toml", spec.render());
        let mut crashing = scratch.command(&["run", "pipeline.toml"]);
        crashing.env("INGEST_FAULT", format!("{point}@2"));
        let crashed = output(crashing);
        assert_ne!(
            crashed.code, 0,
            "{point}: the fault must stop the process: {crashed:?}"
        );
        assert!(
            crashed.stderr.contains("fault injected"),
            "{point}: {}",
            crashed.stderr
        );

        let state = scratch.host(&["state", "show", "pipeline.toml"]);
        let recorded = match *point {
            "after-state" | "after-sink-commit" | "after-commit" => {
                "epoch 2 (prepared, commit pending)"
            }
            _ => "epoch 1 (committed)",
        };
        assert!(state.stdout.contains(recorded), "{point}: {}", state.stdout);

        scratch.host(&["run", "pipeline.toml"]).assert_ok();
        assert_output_matches(&scratch.path("out"), &expected);
        let state = scratch.host(&["state", "show", "pipeline.toml"]);
        assert!(
            state.stdout.contains("epoch 3 (committed)"),
            "{point}: {}",
            state.stdout
        );
    }
}

/// The standard pipeline reading `amount` as a number, dead-lettering what it cannot read;
/// `fixed` reads `N/A` as null instead.
fn dead_letter_pipeline(fixed: bool) -> String {
    let text = PipelineSpec {
        on_error: "dlq",
        every_rows: 10_000,
        batch_rows: 5_000,
        ..PipelineSpec::default()
    }
    .render()
    .replace("amount = \"utf8\"", "amount = \"float64\"");
    if fixed {
        text.replace(
            "stream = \"orders\"\n",
            "stream = \"orders\"\nnull_values = [\"\", \"N/A\"]\n",
        )
    } else {
        text
    }
}

fn write_orders_with_bad_rows(scratch: &Scratch, rows: usize) {
    let input: Vec<Order> = orders(1, rows)
        .into_iter()
        .map(|mut o| {
            if is_bad(o.order_id) {
                o.amount = "N/A".into();
            }
            o
        })
        .collect();
    scratch.write_orders(&input);
}

/// Run `args` with a fault injected at `point` of `epoch`; the process must die there.
fn crash_at(scratch: &Scratch, args: &[&str], point: &str, epoch: u64) {
    let mut crashing = scratch.command(args);
    crashing.env("INGEST_FAULT", format!("{point}@{epoch}"));
    let crashed = output(crashing);
    assert!(
        crashed.code != 0 && crashed.stderr.contains("fault injected"),
        "{point}: the fault must stop the process: {crashed:?}"
    );
}

#[test]
fn a_crash_at_any_point_with_dead_letters_puts_each_row_in_one_place_once() {
    let test = KillTest {
        rows: 30_000,
        bad_rows: true,
        ..KillTest::default()
    };
    for point in ingest_host::fault::POINTS {
        let scratch = Scratch::new();
        write_orders_with_bad_rows(&scratch, test.rows);
        scratch.write("pipeline.toml", dead_letter_pipeline(false));
        crash_at(&scratch, &["run", "pipeline.toml"], point, 2);
        let run = scratch.host(&["run", "pipeline.toml"]);
        run.assert_ok();
        assert_each_row_once(&scratch, &test);
        let state = scratch.host(&["state", "show", "pipeline.toml"]);
        assert!(
            state.stdout.contains("(committed)"),
            "{point}: {}",
            state.stdout
        );
    }
}

#[test]
fn a_replay_that_crashes_at_any_point_is_finished_by_the_next_replay() {
    let rows = 10_000;
    for point in ingest_host::fault::POINTS {
        let scratch = Scratch::new();
        write_orders_with_bad_rows(&scratch, rows);
        scratch.write("pipeline.toml", dead_letter_pipeline(false));
        scratch.host(&["run", "pipeline.toml"]).assert_ok();
        let queued = dead_letters(&scratch.path(""), "orders", "orders").len();
        assert_eq!(queued, rows / 100);
        let epoch = recorded_epoch(&scratch);

        scratch.write("pipeline.toml", dead_letter_pipeline(true));
        crash_at(
            &scratch,
            &["dlq", "replay", "pipeline.toml"],
            point,
            epoch + 1,
        );
        let replay = scratch.host(&["dlq", "replay", "pipeline.toml"]);
        replay.assert_ok();
        let all: Vec<i64> = (1..=rows as i64).collect();
        assert_eq!(
            read_ids(&scratch.path("out")),
            all,
            "{point}: {}",
            replay.stdout
        );
        assert!(
            dead_letters(&scratch.path(""), "orders", "orders").is_empty(),
            "{point}: the replayed letters left the queue"
        );
    }
}

/// A small xorshift generator: the test prints its seed so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn between(&mut self, low: u64, high: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        low + self.0 % (high - low)
    }
}

#[test]
fn killed_fifty_times_at_random_moments_every_row_arrives_exactly_once() {
    kill_at_random_moments(KillTest {
        rows: 200_000,
        kills: 50,
        ..KillTest::default()
    });
}

#[test]
fn killed_while_three_readers_share_a_file_every_row_arrives_exactly_once() {
    kill_at_random_moments(KillTest {
        rows: 200_000,
        kills: 15,
        readers: 3,
        split_bytes: Some("1MiB"),
        ..KillTest::default()
    });
}

#[test]
fn killed_fifty_times_with_bad_rows_each_lands_once_in_the_output_or_the_queue() {
    kill_at_random_moments(KillTest {
        rows: 200_000,
        kills: 50,
        bad_rows: true,
        ..KillTest::default()
    });
}

/// One crash test: `rows` orders, killed at random moments until `kills` kills landed.
struct KillTest {
    rows: usize,
    kills: usize,
    readers: u32,
    split_bytes: Option<&'static str>,
    /// 1% of the rows have an amount the source cannot read, and go to the dead-letter
    /// queue (`on_error = "dlq"`).
    bad_rows: bool,
}

impl Default for KillTest {
    fn default() -> Self {
        KillTest {
            rows: 100_000,
            kills: 10,
            readers: 1,
            split_bytes: None,
            bad_rows: false,
        }
    }
}

/// The orders of a crash test whose amount the source cannot read.
fn is_bad(id: i64) -> bool {
    id % 100 == 42
}

/// Run the pipeline over the test's orders and kill it at random moments until the kills
/// have landed, then let it finish: every row must be in the output exactly once (or, bad
/// rows, in the dead-letter queue exactly once), and the committed epoch must have moved
/// on between kills, so the test cannot pass without recovering from them.
fn kill_at_random_moments(test: KillTest) {
    let scratch = Scratch::new();
    if test.bad_rows {
        write_orders_with_bad_rows(&scratch, test.rows);
    } else {
        write_orders_file(&scratch.path("data/orders.csv"), test.rows);
    }
    // Small epochs so kills land in every phase; a transform that also traps now and then.
    let flaky = trap_at_random(0.02);
    let spec = PipelineSpec {
        on_error: if test.bad_rows { "dlq" } else { "fail" },
        every_rows: 5_000,
        batch_rows: 2_500,
        extra_transform: &flaky,
        max_attempts: 1_000,
        readers: test.readers,
        split_bytes: test.split_bytes,
        ..PipelineSpec::default()
    };
    let text = spec.render();
    let text = if test.bad_rows {
        text.replace("amount = \"utf8\"", "amount = \"float64\"")
    } else {
        text
    };
    scratch.write("pipeline.toml", text);
    let seed = std::env::var("CRASH_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test seed: {seed} (replay with CRASH_TEST_SEED={seed})");
    let mut rng = Rng(seed);

    // How long one whole run takes here: kills land anywhere within it, so most land after
    // some epochs committed, whatever the speed of the machine.
    let started = std::time::Instant::now();
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    let whole = started.elapsed().as_millis() as u64;
    assert_each_row_once(&scratch, &test);
    start_over(&scratch);

    // Kill runs at random moments until enough kills have landed. A run that finishes
    // before its kill (the machine was fast) is checked, and the pipeline starts over
    // from empty state and output, so every test run covers every kill.
    let (mut kills, mut rounds, mut advanced) = (0, 0, 0);
    while kills < test.kills {
        let before = recorded_epoch(&scratch);
        let mut child = scratch
            .command(&["run", "pipeline.toml"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(
            rng.between(10, whole.max(20)),
        ));
        match child.try_wait().unwrap() {
            Some(status) => {
                assert!(status.success(), "a run ended on its own with {status}");
                assert_each_row_once(&scratch, &test);
                start_over(&scratch);
                rounds += 1;
            }
            None => {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                let after = recorded_epoch(&scratch);
                assert!(
                    after >= before,
                    "the state went back from epoch {before} to {after}"
                );
                if after > before {
                    advanced += 1;
                }
            }
        }
    }
    let last = scratch.host(&["run", "pipeline.toml"]);
    last.assert_ok();
    eprintln!(
        "after {kills} kills within {whole} ms ({advanced} after the epoch moved on, {rounds} rounds finished early): {}",
        last.stdout.trim()
    );
    assert!(
        advanced * 5 >= kills,
        "the committed epoch moved on before only {advanced} of {kills} kills: the kills \
         landed before any commit, so recovery was hardly exercised (seed {seed})"
    );
    assert_each_row_once(&scratch, &test);
}

/// Forget the state, the output and the dead letters: the next run starts from nothing.
fn start_over(scratch: &Scratch) {
    scratch
        .host(&["state", "reset", "pipeline.toml", "--yes"])
        .assert_ok();
    std::fs::remove_dir_all(scratch.path("out")).unwrap();
    let _ = std::fs::remove_dir_all(scratch.path(".state/orders/dlq"));
}

/// The epoch `state show` reports (prepared or committed).
fn recorded_epoch(scratch: &Scratch) -> u64 {
    let state = scratch.host(&["state", "show", "pipeline.toml"]);
    state.assert_ok();
    state
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("epoch ")?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no epoch in: {}", state.stdout))
}

/// Every good row is in the output once, masked as configured; with bad rows, every bad
/// row is in the dead-letter queue once, and none in both.
fn assert_each_row_once(scratch: &Scratch, test: &KillTest) {
    let good: Vec<i64> = (1..=test.rows as i64)
        .filter(|&id| !(test.bad_rows && is_bad(id)))
        .collect();
    let ids = read_ids(&scratch.path("out"));
    assert_eq!(ids.len(), good.len(), "every row exactly once: count");
    assert!(ids == good, "every row exactly once: keys");
    if test.bad_rows {
        let mut dead: Vec<i64> = dead_letters(&scratch.path(""), "orders", "orders")
            .iter()
            .map(|l| {
                let record = l["record"].as_str().unwrap();
                record.split(',').next().unwrap().parse().unwrap()
            })
            .collect();
        dead.sort_unstable();
        let bad: Vec<i64> = (1..=test.rows as i64).filter(|&id| is_bad(id)).collect();
        assert_eq!(dead, bad, "every bad row exactly once in the queue");
    }
    // Masks survive the restarts too: check every row of one published file.
    let sample = parquet_files(&scratch.path("out")).pop().unwrap();
    for (id, row) in read_order_files(&[sample]) {
        assert_eq!(
            row["customer_email"],
            Some(hmac_hex(MASK_KEY, &order(id).customer_email))
        );
        assert_eq!(row["phone"], Some(keep_last_4(&order(id).phone)));
    }
}

#[test]
fn resetting_the_state_needs_confirmation_and_then_reads_from_the_start() {
    let scratch = Scratch::new();
    scratch.write_orders(&orders(1, 100));
    scratch.write("pipeline.toml", PipelineSpec::default().render());
    scratch.host(&["run", "pipeline.toml"]).assert_ok();

    let refused = scratch.host(&["state", "reset", "pipeline.toml"]);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    assert!(scratch
        .host(&["state", "show", "pipeline.toml"])
        .stdout
        .contains("epoch 1 (committed)"));

    scratch
        .host(&["state", "reset", "pipeline.toml", "--yes"])
        .assert_ok();
    let state = scratch.host(&["state", "show", "pipeline.toml"]);
    assert!(
        state.stdout.contains("epoch 0 (nothing committed yet)"),
        "{}",
        state.stdout
    );
}

#[test]
fn a_truncated_state_file_stops_the_run_with_a_clear_error_and_writes_nothing() {
    let scratch = Scratch::new();
    scratch.write_orders(&orders(1, 100));
    scratch.write("pipeline.toml", PipelineSpec::default().render());
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    let files = parquet_files(&scratch.path("out"));

    let state = scratch.path(".state/orders/state");
    let bytes = std::fs::read(&state).unwrap();
    std::fs::write(&state, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(scratch.path("data/orders.csv"))
        .and_then(|mut f| {
            std::io::Write::write_all(&mut f, orders_csv(&orders(101, 10)).as_bytes())
        })
        .unwrap();

    let run = scratch.host(&["run", "pipeline.toml"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("corrupted") && run.stderr.contains("truncated"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(".state/orders/state"),
        "the message names the file: {}",
        run.stderr
    );
    assert_eq!(
        parquet_files(&scratch.path("out")),
        files,
        "nothing new may be published"
    );
    assert_eq!(
        std::fs::read(&state).unwrap(),
        &bytes[..bytes.len() / 2],
        "the state file is left as it was"
    );
}

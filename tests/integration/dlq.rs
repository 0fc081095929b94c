//! The dead-letter queue: bad records go to the queue with their reason and where they came
//! from, everything else goes to the output, and `host dlq replay` moves them on once the
//! config is fixed — each record ending up in exactly one place at every step.

use std::collections::BTreeSet;

use crate::support::*;

const ROWS: usize = 10_000;

/// 1% of the orders carry an amount the pipeline cannot read as a number.
fn is_malformed(id: i64) -> bool {
    id % 100 == 42
}

fn write_input(scratch: &Scratch) {
    let orders: Vec<Order> = orders(1, ROWS)
        .into_iter()
        .map(|mut o| {
            if is_malformed(o.order_id) {
                o.amount = "N/A".to_string();
            }
            o
        })
        .collect();
    scratch.write_orders(&orders);
}

/// The standard pipeline with `amount` typed as a number, optionally reading `N/A` as null.
fn pipeline(null_na: bool) -> String {
    let text = PipelineSpec {
        on_error: "dlq",
        every_rows: 2_500,
        batch_rows: 1_000,
        ..PipelineSpec::default()
    }
    .render()
    .replace("amount = \"utf8\"", "amount = \"float64\"");
    if null_na {
        text.replace(
            "stream = \"orders\"\n",
            "stream = \"orders\"\nnull_values = [\"\", \"N/A\"]\n",
        )
    } else {
        text
    }
}

#[test]
fn one_percent_malformed_rows_go_to_the_queue_and_a_replay_after_the_fix_moves_them_on() {
    let scratch = Scratch::new();
    write_input(&scratch);
    scratch.write("pipeline.toml", pipeline(false));

    // 1. The run: the good rows in the output, exactly the bad ones in the queue.
    let run = scratch.host(&["run", "pipeline.toml"]);
    run.assert_ok();
    assert!(
        run.stdout
            .contains("100 rejected (100 to the dead-letter queue)"),
        "{}",
        run.stdout
    );
    let expected_good: Vec<i64> = (1..=ROWS as i64).filter(|&id| !is_malformed(id)).collect();
    assert_eq!(read_ids(&scratch.path("out")), expected_good);

    let letters = dead_letters(&scratch.path(""), "orders", "orders");
    assert_eq!(letters.len(), 100);
    let mut dead_ids = BTreeSet::new();
    for letter in &letters {
        let record = letter["record"].as_str().unwrap();
        let id: i64 = record.split(',').next().unwrap().parse().unwrap();
        assert!(is_malformed(id), "order {id} is not malformed: {record}");
        assert!(record.contains("N/A"), "{record}");
        assert_eq!(
            letter["reason"], "column `amount`: `N/A` is not a float64",
            "{letter}"
        );
        let location = letter["location"].as_str().unwrap();
        assert!(location.starts_with("data/orders.csv:"), "{location}");
        assert_eq!(letter["stream"], "orders");
        assert!(letter["plugin"].as_str().unwrap().contains("builtin:file"));
        dead_ids.insert(id);
    }
    assert_eq!(dead_ids.len(), 100, "each malformed row once");

    let show = scratch.host(&["dlq", "show", "pipeline.toml"]);
    show.assert_ok();
    assert!(
        show.stdout.contains("stream orders: 100 dead letters"),
        "{}",
        show.stdout
    );

    // 2. Replaying with the config unchanged moves nothing and loses nothing.
    let replay = scratch.host(&["dlq", "replay", "pipeline.toml"]);
    replay.assert_ok();
    assert!(
        replay
            .stdout
            .contains("100 dead letters replayed, 0 rows written, 100 still failing"),
        "{}",
        replay.stdout
    );
    assert_eq!(
        dead_letters(&scratch.path(""), "orders", "orders").len(),
        100
    );
    assert_eq!(read_ids(&scratch.path("out")), expected_good);

    // 3. After the fix (N/A means "no amount"), the replay moves every letter on.
    scratch.write("pipeline.toml", pipeline(true));
    let replay = scratch.host(&["dlq", "replay", "pipeline.toml"]);
    replay.assert_ok();
    assert!(
        replay
            .stdout
            .contains("100 dead letters replayed, 100 rows written, 0 still failing"),
        "{}",
        replay.stdout
    );
    assert!(dead_letters(&scratch.path(""), "orders", "orders").is_empty());
    let all: Vec<i64> = (1..=ROWS as i64).collect();
    assert_eq!(
        read_ids(&scratch.path("out")),
        all,
        "every order exactly once"
    );
    let rows = read_orders(&scratch.path("out"));
    let replayed = &rows[&42];
    assert_eq!(replayed["amount"], None, "N/A became null");
    assert_eq!(
        replayed["customer_email"].as_deref(),
        Some(hmac_hex(MASK_KEY, &order(42).customer_email).as_str()),
        "replayed rows go through the transforms"
    );

    // 4. Nothing is left to replay, and a new run adds nothing.
    let replay = scratch.host(&["dlq", "replay", "pipeline.toml"]);
    replay.assert_ok();
    assert!(
        replay.stdout.contains("nothing to replay"),
        "{}",
        replay.stdout
    );
    scratch.host(&["run", "pipeline.toml"]).assert_ok();
    assert_eq!(read_ids(&scratch.path("out")).len(), ROWS);
}

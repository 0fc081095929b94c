//! `[dlq] protect`: dead letters of a pipeline that masks personal data never hold that
//! data in clear. A letter is rejected before the masking stage (by the source, which could
//! not parse the line, or by a transform ahead of the masker), so it holds the raw values;
//! `encrypt` seals them, `mask` masks them, and a byte search of the whole state directory
//! finds none of the e-mail addresses or phone numbers of the rejected rows.

use std::path::Path;

use crate::support::*;

const ROWS: usize = 2_000;

/// The source cannot read these orders: their amount holds the customer's e-mail address.
fn unreadable(id: i64) -> bool {
    id % 100 == 42
}

/// The `screen` transform (ahead of the masker) rejects these, quoting the e-mail address.
fn screened(id: i64) -> bool {
    id % 100 == 0
}

fn input() -> Vec<Order> {
    orders(1, ROWS)
        .into_iter()
        .map(|mut o| {
            if unreadable(o.order_id) {
                o.amount = o.customer_email.clone();
            }
            o
        })
        .collect()
}

/// The standard pipeline with `amount` as a number and the screening transform ahead of the
/// masker; `screen` false leaves the transform passing everything.
fn pipeline(protect: &str, screen: bool) -> String {
    let fixture = fixture("trap_transform");
    let stage = format!(
        "[[transform]]\nname = \"screen\"\nplugin = \"{}\"\nsha256 = \"{}\"\n[transform.config]\n{}\n",
        fixture.display(),
        sha256_file(&fixture),
        if screen { "reject_every = 100" } else { "" }
    );
    PipelineSpec {
        on_error: "dlq",
        protect,
        every_rows: 500,
        batch_rows: 250,
        extra_transform: &stage,
        ..PipelineSpec::default()
    }
    .render()
    .replace("amount = \"utf8\"", "amount = \"float64\"")
}

/// The e-mail addresses and phone numbers of every rejected order.
fn personal_data_of_rejected() -> Vec<String> {
    input()
        .into_iter()
        .filter(|o| unreadable(o.order_id) || screened(o.order_id))
        .flat_map(|o| [o.customer_email, o.phone])
        .collect()
}

/// Every file under `dir` that holds one of `needles`, with the needle.
fn files_holding(dir: &Path, needles: &[String]) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (path, bytes) in snapshot(dir) {
        for needle in needles {
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                found.push((path.clone(), needle.clone()));
            }
        }
    }
    found
}

fn assert_no_personal_data_in_state(scratch: &Scratch) {
    let leaks = files_holding(&scratch.path(".state"), &personal_data_of_rejected());
    assert!(leaks.is_empty(), "personal data in clear: {leaks:?}");
}

fn good_ids() -> Vec<i64> {
    (1..=ROWS as i64)
        .filter(|&id| !unreadable(id) && !screened(id))
        .collect()
}

#[test]
fn encrypted_letters_hold_no_personal_data_and_replay_with_the_key() {
    let scratch = Scratch::new();
    scratch.write_orders(&input());
    scratch.write("pipeline.toml", pipeline("encrypt", true));
    let run = scratch.host(&["run", "pipeline.toml"]);
    run.assert_ok();
    assert!(
        run.stdout
            .contains("40 rejected (40 to the dead-letter queue)"),
        "{}",
        run.stdout
    );
    assert_eq!(read_ids(&scratch.path("out")), good_ids());
    assert_no_personal_data_in_state(&scratch);
    let letters = dead_letters(&scratch.path(""), "orders", "orders");
    assert_eq!(letters.len(), 40);
    for letter in &letters {
        assert!(letter["sealed"].is_string(), "{letter}");
        assert!(letter.get("record").is_none() && letter.get("reason").is_none());
    }

    // `dlq show` opens them with the key: the reasons are there to read.
    let show = scratch.host(&["dlq", "show", "pipeline.toml"]);
    show.assert_ok();
    assert!(
        show.stdout.contains("stream orders: 40 dead letters"),
        "{}",
        show.stdout
    );
    assert!(show.stdout.contains("is not a float64"), "{}", show.stdout);
    assert!(
        show.stdout.contains("is on the block list"),
        "{}",
        show.stdout
    );

    // A wrong key is a clear error that changes nothing.
    let queue = scratch.path(".state/orders/dlq");
    let before = snapshot(&queue);
    for args in [
        &["dlq", "show", "pipeline.toml"][..],
        &["dlq", "replay", "pipeline.toml"],
    ] {
        let mut wrong = scratch.command(args);
        wrong.env("TEST_DLQ_KEY", "some-other-key-of-enough-length");
        let out = output(wrong);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(
            out.stderr.contains("sealed with key id") && out.stderr.contains("dlq_key"),
            "{}",
            out.stderr
        );
    }
    assert_eq!(snapshot(&queue), before, "a wrong key loses nothing");

    // With the screening lifted, a replay with the key moves the screened rows on, once;
    // the lines the source still cannot read stay, sealed again.
    scratch.write("pipeline.toml", pipeline("encrypt", false));
    let replay = scratch.host(&["dlq", "replay", "pipeline.toml"]);
    replay.assert_ok();
    assert!(
        replay
            .stdout
            .contains("40 dead letters replayed, 20 rows written, 20 still failing"),
        "{}",
        replay.stdout
    );
    let written: Vec<i64> = (1..=ROWS as i64).filter(|&id| !unreadable(id)).collect();
    assert_eq!(read_ids(&scratch.path("out")), written);
    let left = dead_letters(&scratch.path(""), "orders", "orders");
    assert_eq!(left.len(), 20);
    assert!(left.iter().all(|l| l["sealed"].is_string()));
    assert_no_personal_data_in_state(&scratch);
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            files.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    files.sort();
    files
}

#[test]
fn masked_letters_keep_the_masked_values_and_no_raw_line() {
    let scratch = Scratch::new();
    scratch.write_orders(&input());
    scratch.write("pipeline.toml", pipeline("mask", true));
    let run = scratch.host(&["run", "pipeline.toml"]);
    run.assert_ok();
    assert_eq!(read_ids(&scratch.path("out")), good_ids());
    assert_no_personal_data_in_state(&scratch);

    let letters = dead_letters(&scratch.path(""), "orders", "orders");
    assert_eq!(letters.len(), 40);
    let by_id = |id: i64| input().into_iter().find(|o| o.order_id == id).unwrap();
    for letter in &letters {
        assert_eq!(letter["masked"], true, "{letter}");
        let plugin = letter["plugin"].as_str().unwrap();
        let record = letter["record"].as_str().unwrap();
        let reason = letter["reason"].as_str().unwrap();
        if plugin.contains("screen") {
            // A row: masked exactly as the output would be, reason without the address.
            let row: serde_json::Value = serde_json::from_str(record).unwrap();
            let order = by_id(row["order_id"].as_i64().unwrap());
            assert!(screened(order.order_id));
            assert_eq!(
                row["customer_email"].as_str().unwrap(),
                hmac_hex(MASK_KEY, &order.customer_email)
            );
            assert_eq!(row["phone"].as_str().unwrap(), keep_last_4(&order.phone));
            assert_eq!(row["customer_name"].as_str().unwrap(), order.customer_name);
            assert_eq!(reason, "`[masked]` is on the block list");
        } else {
            // A line the source could not parse: no columns to mask, nothing of it kept.
            assert!(record.starts_with("[withheld: "), "{record}");
            assert!(reason.starts_with("column `amount`:"), "{reason}");
            assert!(letter["location"]
                .as_str()
                .unwrap()
                .starts_with("data/orders.csv:"));
        }
    }

    // Masked letters are kept for inspection and never replayed.
    scratch.write("pipeline.toml", pipeline("mask", false));
    let replay = scratch.host(&["dlq", "replay", "pipeline.toml"]);
    replay.assert_ok();
    assert!(
        replay
            .stdout
            .contains("40 dead letters replayed, 0 rows written, 40 still failing"),
        "{}",
        replay.stdout
    );
    assert_eq!(read_ids(&scratch.path("out")), good_ids());
    assert_eq!(
        dead_letters(&scratch.path(""), "orders", "orders").len(),
        40
    );
}

#[test]
fn a_masking_pipeline_without_protect_is_a_config_error_naming_the_choices() {
    let scratch = Scratch::new();
    scratch.write_orders(&orders(1, 10));
    let text = pipeline("raw", false).replace("[dlq]\nprotect = \"raw\"\n", "");
    scratch.write("pipeline.toml", &text);
    let run = scratch.host(&["run", "pipeline.toml"]);
    assert_eq!(run.code, 2, "{run:?}");
    for word in [
        "[dlq] protect",
        "\"encrypt\"",
        "\"mask\"",
        "\"raw\"",
        "builtin:pii-mask",
    ] {
        assert!(run.stderr.contains(word), "{word}: {}", run.stderr);
    }
    // Even when nothing is routed to the queue: the choice is made where the data is masked.
    scratch.write(
        "pipeline.toml",
        text.replace("on_error = \"dlq\"", "on_error = \"fail\""),
    );
    assert_eq!(scratch.host(&["check", "pipeline.toml"]).code, 2);
    // `mask` needs a masker.
    let no_masker = PipelineSpec {
        protect: "mask",
        ..PipelineSpec::default()
    }
    .render()
    .replace(
        "plugin = \"builtin:pii-mask\"",
        "plugin = \"builtin:dedupe\"",
    );
    scratch.write("pipeline.toml", no_masker);
    let check = scratch.host(&["check", "pipeline.toml"]);
    assert_eq!(check.code, 2, "{check:?}");
    assert!(
        check.stderr.contains("protect = \"mask\""),
        "{}",
        check.stderr
    );
}

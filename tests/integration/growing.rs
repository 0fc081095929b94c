//! Files that are still being written. A writer appends to a CSV or JSON Lines file in
//! random-sized chunks, cut anywhere (mid-line, inside a quoted field), and the pipeline
//! runs after every chunk: each run stops before the unfinished last record (the default
//! `last_record = "wait"`), a later run reads it whole, and in the end every row has
//! arrived exactly once with nothing in the dead-letter queue. With `last_record = "read"`
//! the files are declared complete, and a quote left open at the end of a file is one
//! rejected record naming its line.

use std::io::Write;

use crate::support::*;

/// A small seeded generator, so a failing cut can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Orders as JSON Lines, with `amount` as text as the standard pipeline reads it.
fn orders_jsonl(orders: &[Order]) -> String {
    let mut out = String::new();
    for o in orders {
        let line = serde_json::json!({
            "order_id": o.order_id,
            "customer_email": o.customer_email,
            "customer_name": o.customer_name,
            "phone": o.phone,
            "country": o.country,
            "amount": o.amount,
            "created_at": o.created_at,
            "notes": if o.notes.is_empty() { None } else { Some(&o.notes) },
        });
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}

/// Writes `head` and then `body` into `data/<file>` in `chunks` random-sized pieces,
/// running the standard pipeline (with dead letters on, and the file read in 1 MiB parts
/// by two readers) after each; checks that every order arrived once and none was rejected.
fn written_while_runs_repeat(file: &str, head: &str, body: &str, expected: &[Order], seed: u64) {
    let scratch = Scratch::new();
    let input = format!("data/{file}");
    let path = scratch.write(&input, head);
    let spec = PipelineSpec {
        input: &input,
        on_error: "dlq",
        every_rows: 2000,
        readers: 2,
        split_bytes: Some("1MiB"),
        ..PipelineSpec::default()
    };
    scratch.write("pipeline.toml", spec.render());
    let mut rng = Rng(seed);
    let chunks = 25;
    let mut rest = body.as_bytes();
    for i in 0..chunks {
        let n = if i == chunks - 1 {
            rest.len()
        } else {
            let mean = rest.len() / (chunks - i);
            (mean / 2 + rng.below(mean as u64 + 1) as usize).min(rest.len())
        };
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&rest[..n]).unwrap();
        drop(f);
        rest = &rest[n..];
        let run = scratch.host(&["run", "pipeline.toml"]);
        run.assert_ok();
    }
    let ids = read_ids(&scratch.path("out"));
    let wanted: Vec<i64> = expected.iter().map(|o| o.order_id).collect();
    assert_eq!(ids.len(), wanted.len(), "{file}: rows published");
    assert_eq!(ids, wanted, "{file}: every order once");
    assert_output_matches(&scratch.path("out"), expected);
    let letters = dead_letters(&scratch.path(""), "orders", "orders");
    assert!(letters.is_empty(), "{file}: dead letters: {letters:?}");
}

#[test]
fn a_csv_file_read_while_it_is_written_yields_every_row_once() {
    let expected = orders(1, 12_000);
    written_while_runs_repeat(
        "orders.csv",
        ORDERS_HEADER,
        &orders_csv(&expected),
        &expected,
        20261203,
    );
}

#[test]
fn a_json_lines_file_read_while_it_is_written_yields_every_row_once() {
    let expected = orders(1, 12_000);
    let text = orders_jsonl(&expected);
    let first_line = text.find('\n').unwrap() + 1;
    written_while_runs_repeat(
        "orders.jsonl",
        &text[..first_line],
        &text[first_line..],
        &expected,
        7,
    );
}

#[test]
fn with_last_record_read_an_unterminated_quote_is_one_dead_letter_naming_its_line() {
    let scratch = Scratch::new();
    let good = orders(1, 4);
    // Order 3's notes open a quote that never closes; the lines after it are orders too.
    let mut text = String::from(ORDERS_HEADER);
    text.push_str(&orders_csv(&good[..2]));
    text.push_str("3,a@b.c,Ann,+1 555,US,1.00,2026-11-01T00:00:00Z,\"never closed\n");
    text.push_str(&orders_csv(&good[3..]));
    scratch.write("data/orders.csv", &text);
    let spec = PipelineSpec {
        on_error: "dlq",
        last_record: Some("read"),
        ..PipelineSpec::default()
    };
    scratch.write("pipeline.toml", spec.render());
    let run = scratch.host(&["run", "pipeline.toml"]);
    run.assert_ok();
    let ids = read_ids(&scratch.path("out"));
    assert_eq!(ids, vec![1, 2, 4], "the line after the open quote is a row");
    let letters = dead_letters(&scratch.path(""), "orders", "orders");
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = letters[0].to_string();
    // The header is line 1, orders 1 and 2 lines 2 and 3, so order 3 opens on line 4.
    assert!(
        letter.contains("orders.csv:4") && letter.contains("never closed"),
        "the letter names the line and the reason: {letter}"
    );
}

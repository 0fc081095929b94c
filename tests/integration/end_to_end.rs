//! A pipeline run end to end moves every row exactly once, masks what it is told to and
//! leaves every other value as it was; running it again changes nothing.

use std::path::Path;

use crate::support::*;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "out" || name == ".state" {
            continue;
        }
        let target = to.join(&name);
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Examples that read what a script of theirs first publishes, produces, drops or serves;
/// each has a test of its own that runs the script.
const FED_BY_THEIR_OWN_TESTS: &[&str] = &[
    "11-nats-to-parquet",
    "13-kafka-to-parquet",
    "14-s3-drops-to-parquet-on-s3",
    "15-http-api-to-parquet",
];

#[test]
fn every_numbered_example_runs_and_a_second_run_changes_nothing() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut dirs: Vec<_> = std::fs::read_dir(&examples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("pipeline.toml").is_file())
        // A stream never ends by itself, and some examples read what a script puts in a
        // broker, a bucket or an API first: those have tests of their own.
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            !FED_BY_THEIR_OWN_TESTS.contains(&name.as_ref())
                && !std::fs::read_to_string(p.join("pipeline.toml"))
                    .unwrap()
                    .lines()
                    .any(|l| l.trim_start().starts_with("mode = \"stream\""))
        })
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 2, "examples found: {dirs:?}");
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.as_bytes()[..2].iter().all(u8::is_ascii_digit),
            "examples are numbered: {name}"
        );
        let scratch = Scratch::new();
        copy_dir(&dir, &scratch.path(&name));
        // The Postgres examples run against a database of their own on the machine's
        // server, so that what an earlier run left in `postgres` cannot change the result.
        let _db = name.contains("postgres").then(|| {
            let db = crate::pg::TestDb::new("example");
            let path = scratch.path(&format!("{name}/pipeline.toml"));
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.contains("database = \"postgres\""), "{name}");
            let text = text.replace(
                "database = \"postgres\"",
                &format!("database = \"{}\"", db.name),
            );
            std::fs::write(&path, text).unwrap();
            db
        });
        crate::python::build_example_plugins(&scratch.path(&name));
        crate::javascript::prepare_example(&scratch.path(&name));
        let pipeline = format!("{name}/pipeline.toml");
        let first = scratch.host(&["run", &pipeline]);
        first.assert_ok();
        assert!(
            first.stdout.contains("1 epoch committed"),
            "{name}: {}",
            first.stdout
        );
        let second = scratch.host(&["run", &pipeline]);
        second.assert_ok();
        assert!(
            second.stdout.contains("no new epoch"),
            "{name}: {}",
            second.stdout
        );
    }
}

#[test]
fn example_02_pseudonymises_json_lines_and_dead_letters_the_broken_line() {
    use sha2::Digest;
    let scratch = Scratch::new();
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/02-events-jsonl-to-jsonl");
    copy_dir(&example, &scratch.path("ex"));
    scratch.host(&["run", "ex/pipeline.toml"]).assert_ok();

    let input: Vec<serde_json::Value> =
        std::fs::read_to_string(scratch.path("ex/data/events.jsonl"))
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
    let out_dir = scratch.path("ex/out/events");
    let mut output = Vec::new();
    for file in std::fs::read_dir(&out_dir).unwrap() {
        let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
        output.extend(
            text.lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()),
        );
    }
    output.sort_by_key(|v| v["event_id"].as_i64());
    assert_eq!(output.len(), input.len());
    for (i, o) in input.iter().zip(&output) {
        let domain = i["user_email"]
            .as_str()
            .map(|e| e.rsplit('@').next().unwrap().to_string());
        assert_eq!(o["user_email"].as_str().map(str::to_string), domain);
        assert_eq!(o["user_name"], "[person]");
        let ip = hex::encode(sha2::Sha256::digest(i["ip"].as_str().unwrap().as_bytes()));
        assert_eq!(o["ip"].as_str(), Some(ip.as_str()));
        assert_eq!(o["action"], i["action"]);
    }
    // The example keeps its letters masked: a line the source could not parse has no
    // columns to mask, so only its size and where it is are kept.
    let letters = dead_letters(&scratch.path("ex"), "events-jsonl-to-jsonl", "events");
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter["location"], "data/events.jsonl:4");
    assert_eq!(letter["masked"], true);
    let record = letter["record"].as_str().unwrap();
    assert!(
        record.starts_with("[withheld: ") && !record.contains("this line is not JSON"),
        "{record}"
    );
}

#[test]
fn example_01_masks_email_and_phone_and_keeps_everything_else() {
    let scratch = Scratch::new();
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/01-orders-csv-to-parquet");
    copy_dir(&example, &scratch.path("ex"));
    let run = scratch.host(&["run", "ex/pipeline.toml"]);
    run.assert_ok();
    assert!(run.stdout.contains("12 rows read"), "{}", run.stdout);

    // The input as the csv crate reads it, independently of the source plugin.
    let key = std::fs::read_to_string(scratch.path("ex/secrets/mask.key")).unwrap();
    let key = key.trim_end();
    let mut input = csv::Reader::from_path(scratch.path("ex/data/orders.csv")).unwrap();
    let headers = input.headers().unwrap().clone();
    let output = read_orders(&scratch.path("ex/out"));
    let mut seen = 0;
    for record in input.records() {
        let record = record.unwrap();
        let field = |name: &str| {
            record
                .get(headers.iter().position(|h| h == name).unwrap())
                .unwrap()
        };
        let id: i64 = field("order_id").parse().unwrap();
        let row = &output[&id];
        let value = |c: &str| row[c].clone();
        assert_eq!(
            value("customer_email"),
            Some(hmac_hex(key, field("customer_email")))
        );
        assert_eq!(value("phone"), Some(keep_last_4(field("phone"))));
        for column in [
            "customer_name",
            "country",
            "currency",
            "created_at",
            "status",
        ] {
            assert_eq!(
                value(column).as_deref(),
                Some(field(column)),
                "{column} of order {id}"
            );
        }
        let notes = field("notes");
        assert_eq!(
            value("notes"),
            (!notes.is_empty()).then(|| notes.to_string()),
            "notes of {id}"
        );
        let amount: f64 = field("amount").parse().unwrap();
        assert_eq!(value("amount"), Some(amount.to_string()));
        seen += 1;
    }
    assert_eq!(seen, 12);
    assert_eq!(output.len(), 12);
    // Hive-style partitions by the day of created_at.
    let files = parquet_files(&scratch.path("ex/out"));
    assert!(
        files.iter().all(|f| f
            .to_string_lossy()
            .contains("/orders/created_at_day=2026-11-0")),
        "{files:?}"
    );
}

#[test]
fn two_hundred_thousand_rows_arrive_exactly_once_and_a_rerun_writes_nothing() {
    let scratch = Scratch::new();
    let expected = orders(1, 200_000);
    scratch.write_orders(&expected);
    let spec = PipelineSpec {
        every_rows: 50_000,
        ..PipelineSpec::default()
    };
    scratch.write("pipeline.toml", spec.render());

    let first = scratch.host(&["run", "pipeline.toml"]);
    first.assert_ok();
    assert!(
        first.stdout.contains("200000 rows read"),
        "{}",
        first.stdout
    );
    assert!(
        first.stdout.contains("4 epochs committed"),
        "{}",
        first.stdout
    );
    assert_output_matches(&scratch.path("out"), &expected);

    let files_before = parquet_files(&scratch.path("out"));
    let second = scratch.host(&["run", "pipeline.toml"]);
    second.assert_ok();
    assert!(second.stdout.contains("0 rows read"), "{}", second.stdout);
    assert!(second.stdout.contains("no new epoch"), "{}", second.stdout);
    assert_eq!(
        parquet_files(&scratch.path("out")),
        files_before,
        "a rerun must publish nothing"
    );
    assert_output_matches(&scratch.path("out"), &expected);
}

#[test]
fn rows_appended_to_the_input_are_the_only_ones_a_rerun_adds() {
    let scratch = Scratch::new();
    let mut expected = orders(1, 3_000);
    scratch.write_orders(&expected);
    scratch.write("pipeline.toml", PipelineSpec::default().render());
    scratch.host(&["run", "pipeline.toml"]).assert_ok();

    let more = orders(3_001, 500);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(scratch.path("data/orders.csv"))
        .unwrap();
    std::io::Write::write_all(&mut file, orders_csv(&more).as_bytes()).unwrap();
    drop(file);
    let run = scratch.host(&["run", "pipeline.toml"]);
    run.assert_ok();
    assert!(run.stdout.contains("500 rows read"), "{}", run.stdout);
    expected.extend(more);
    assert_output_matches(&scratch.path("out"), &expected);
}

#[test]
fn our_own_zstd_parquet_output_reads_back_through_the_file_source() {
    let scratch = Scratch::new();
    let expected = orders(1, 20_000);
    scratch.write_orders(&expected);
    scratch.write("pipeline.toml", PipelineSpec::default().render());
    scratch.host(&["run", "pipeline.toml"]).assert_ok();

    // A second pipeline reads the lake the first one wrote (Parquet, zstd) into JSON Lines.
    scratch.write(
        "lake-to-jsonl.toml",
        r#"[pipeline]
name = "lake-to-jsonl"
[[source]]
plugin = "builtin:file"
fs = ["out"]
[source.config]
path = "out/orders/*.parquet"
stream = "orders"
[[sink]]
plugin = "builtin:file"
fs = ["copy:rw"]
[sink.config]
path = "copy"
format = "jsonl"
"#,
    );
    let run = scratch.host(&["run", "lake-to-jsonl.toml"]);
    run.assert_ok();
    assert!(run.stdout.contains("20000 rows read"), "{}", run.stdout);
    let mut copied = std::collections::BTreeMap::new();
    for file in std::fs::read_dir(scratch.path("copy/orders")).unwrap() {
        for line in std::fs::read_to_string(file.unwrap().path())
            .unwrap()
            .lines()
        {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            copied.insert(row["order_id"].as_i64().unwrap(), row);
        }
    }
    assert_eq!(copied.len(), expected.len());
    for o in &expected {
        let row = &copied[&o.order_id];
        assert_eq!(row["customer_email"], hmac_hex(MASK_KEY, &o.customer_email));
        assert_eq!(
            row["notes"],
            if o.notes.is_empty() {
                serde_json::Value::Null
            } else {
                o.notes.clone().into()
            }
        );
    }
}

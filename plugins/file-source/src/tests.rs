//! The source as the host drives it: check, discover, splits, open and next, on real files.

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_schema::{DataType, TimeUnit};
use ingest_sdk::Reject;
use serde_json::json;

use super::*;
use crate::testutil::{Rng, TempDir};

/// Everything one split yields from `position` on, `max_rows` at a time.
struct Read {
    batches: Vec<RecordBatch>,
    rejects: Vec<Reject>,
    positions: Vec<Vec<u8>>,
}

impl Read {
    fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    fn ints(&self, column: &str) -> Vec<Option<i64>> {
        self.batches
            .iter()
            .flat_map(|b| {
                b.column_by_name(column)
                    .unwrap()
                    .as_primitive::<Int64Type>()
                    .iter()
            })
            .collect()
    }

    fn texts(&self, column: &str) -> Vec<Option<String>> {
        self.batches
            .iter()
            .flat_map(|b| {
                b.column_by_name(column)
                    .unwrap()
                    .as_string::<i32>()
                    .iter()
                    .map(|v| v.map(str::to_string))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

fn split_for(config: &str, path: &str) -> Split {
    let stream = plan(config).unwrap().settings.stream;
    FileSource::splits(config, &stream)
        .unwrap()
        .into_iter()
        .find(|s| s.id == path)
        .unwrap_or_else(|| panic!("no split for {path}"))
}

fn read(
    config: &str,
    path: &str,
    position: Option<Vec<u8>>,
    max_rows: usize,
    chunks: usize,
) -> Read {
    let stream = plan(config).unwrap().settings.stream;
    let mut reader = FileSource::open(config, &stream, split_for(config, path), position).unwrap();
    let mut out = Read {
        batches: Vec::new(),
        rejects: Vec::new(),
        positions: Vec::new(),
    };
    for _ in 0..chunks {
        let Some(chunk) = reader.next(max_rows).unwrap() else {
            break;
        };
        assert!(chunk.batch.num_rows() + chunk.rejects.len() <= max_rows);
        out.batches.push(chunk.batch);
        out.rejects.extend(chunk.rejects);
        out.positions.push(chunk.position);
    }
    out
}

fn config(value: serde_json::Value) -> String {
    value.to_string()
}

fn invalid_config(result: Result<impl std::fmt::Debug>) -> String {
    match result {
        Err(Error::InvalidConfig(m)) => m,
        other => panic!("expected invalid-config, got {other:?}"),
    }
}

fn orders(rows: usize) -> String {
    let mut text = String::from("id,amount,note\n");
    for i in 1..=rows {
        text.push_str(&format!("{i},{i}.5,\"n, {i}\"\n"));
    }
    text
}

#[test]
fn discover_reports_one_stream_with_the_inferred_schema() {
    let dir = TempDir::new("discover");
    let path = dir.write("orders.csv", orders(3));
    let streams = FileSource::discover(&config(json!({ "path": path }))).unwrap();
    assert_eq!(streams.len(), 1);
    let s = &streams[0];
    assert_eq!(s.name, "orders");
    assert!(s.primary_key.is_empty() && s.cursor_field.is_none());
    assert_eq!(
        s.sync_modes,
        vec![SyncMode::FullRefresh, SyncMode::Incremental]
    );
    let types: Vec<(&str, &DataType, bool)> = s
        .schema
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type(), f.is_nullable()))
        .collect();
    assert_eq!(
        types,
        vec![
            ("id", &DataType::Int64, true),
            ("amount", &DataType::Float64, true),
            ("note", &DataType::Utf8, true),
        ]
    );
}

#[test]
fn reading_resumes_exactly_after_the_last_returned_row() {
    let dir = TempDir::new("resume");
    let path = dir.write("orders.csv", orders(10));
    let cfg = config(json!({ "path": path }));
    let first = read(&cfg, &path, None, 3, 2);
    assert_eq!(first.ints("id"), (1..=6).map(Some).collect::<Vec<_>>());
    assert_eq!(
        String::from_utf8(first.positions[1].clone()).unwrap(),
        format!(r#"{{"offset":{},"line":8,"rows":6}}"#, orders(6).len())
    );
    let rest = read(&cfg, &path, first.positions.last().cloned(), 3, 100);
    assert_eq!(rest.ints("id"), (7..=10).map(Some).collect::<Vec<_>>());
    assert_eq!(rest.texts("note")[0].as_deref(), Some("n, 7"));
    assert!(rest.rejects.is_empty(), "the header is never read as data");
}

#[test]
fn a_file_that_grew_yields_only_its_new_rows() {
    let dir = TempDir::new("grew");
    let path = dir.write("orders.csv", orders(2));
    let cfg = config(json!({ "path": path }));
    let first = read(&cfg, &path, None, 100, 100);
    assert_eq!(first.rows(), 2);
    let at_end = first.positions.last().cloned();
    assert_eq!(read(&cfg, &path, at_end.clone(), 100, 100).rows(), 0);
    dir.append("orders.csv", "3,3.5,x\n4,4.5,y\n");
    let more = read(&cfg, &path, at_end, 100, 100);
    assert_eq!(more.ints("id"), vec![Some(3), Some(4)]);
}

#[test]
fn a_position_past_the_end_of_a_truncated_file_is_a_data_error() {
    let dir = TempDir::new("truncated");
    let path = dir.write("orders.csv", orders(5));
    let cfg = config(json!({ "path": path }));
    let first = read(&cfg, &path, None, 100, 100);
    dir.write("orders.csv", orders(1));
    let stream = "orders";
    match FileSource::open(
        &cfg,
        stream,
        split_for(&cfg, &path),
        first.positions.last().cloned(),
    ) {
        Err(Error::Data(m)) => assert!(m.contains(&path) && m.contains("truncated"), "{m}"),
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("opened"),
    }
}

#[test]
fn crlf_files_resume_without_a_blank_row() {
    let dir = TempDir::new("crlf");
    let path = dir.write("t.csv", "a,b\r\n1,x\r\n2,y\r\n3,z\r\n");
    let cfg = config(json!({ "path": path }));
    let first = read(&cfg, &path, None, 1, 1);
    assert_eq!(first.ints("a"), vec![Some(1)]);
    assert_eq!(
        String::from_utf8(first.positions[0].clone()).unwrap(),
        r#"{"offset":10,"line":3,"rows":1}"#
    );
    let rest = read(&cfg, &path, first.positions.last().cloned(), 100, 100);
    assert_eq!(rest.ints("a"), vec![Some(2), Some(3)]);
    assert_eq!(rest.texts("b"), vec![Some("y".into()), Some("z".into())]);
    assert!(rest.rejects.is_empty());
}

#[test]
fn quoted_delimiters_quotes_and_newlines_stay_in_their_field() {
    let dir = TempDir::new("quoted");
    let path = dir.write(
        "t.csv",
        "id,text\n1,\"a,b\"\n2,\"say \"\"hi\"\"\"\n3,\"two\nlines\"\n4,plain\n",
    );
    let cfg = config(json!({ "path": path }));
    let all = read(&cfg, &path, None, 100, 100);
    assert_eq!(
        all.texts("text"),
        vec![
            Some("a,b".into()),
            Some("say \"hi\"".into()),
            Some("two\nlines".into()),
            Some("plain".into())
        ]
    );
}

#[test]
fn a_record_with_the_wrong_field_count_is_rejected_with_its_line_and_text() {
    let dir = TempDir::new("width");
    let path = dir.write(
        "t.csv",
        "id,a,b\n1,x,y\n2,x\n3,\"multi\nline\",y,z\n4,x,y\n",
    );
    let cfg = config(json!({ "path": path }));
    let all = read(&cfg, &path, None, 100, 100);
    assert_eq!(all.ints("id"), vec![Some(1), Some(4)]);
    assert_eq!(all.rejects.len(), 2);
    let r = &all.rejects[0];
    assert_eq!(r.original.as_deref(), Some("2,x"));
    assert_eq!(r.location.as_deref(), Some(format!("{path}:3").as_str()));
    assert_eq!(r.reason, "expected 3 fields, found 2");
    let r = &all.rejects[1];
    assert_eq!(r.original.as_deref(), Some("3,\"multi\nline\",y,z"));
    assert_eq!(r.location.as_deref(), Some(format!("{path}:4").as_str()));
    assert!(
        r.reason.starts_with("expected 3 fields, found 4; "),
        "{}",
        r.reason
    );
    assert!(r.reason.contains("quote may be unbalanced"), "{}", r.reason);
}

#[test]
fn a_value_that_does_not_parse_rejects_its_whole_row() {
    let dir = TempDir::new("badvalue");
    let path = dir.write("t.csv", "id,amount\n1,2.5\n2,3\n3,abc\n4,\n");
    let cfg = config(json!({ "path": path, "infer_rows": 2 }));
    let all = read(&cfg, &path, None, 100, 100);
    assert_eq!(all.ints("id"), vec![Some(1), Some(2), Some(4)]);
    let amounts: Vec<Option<f64>> = all.batches[0]
        .column(1)
        .as_primitive::<Float64Type>()
        .iter()
        .collect();
    assert_eq!(amounts, vec![Some(2.5), Some(3.0), None]);
    assert_eq!(all.rejects.len(), 1);
    assert_eq!(
        all.rejects[0].reason,
        "column `amount`: `abc` is not a float64"
    );
    assert_eq!(
        all.rejects[0].location.as_deref(),
        Some(format!("{path}:4").as_str())
    );
}

#[test]
fn a_chunk_may_hold_only_rejects() {
    let dir = TempDir::new("onlyrejects");
    let path = dir.write("t.csv", "a,b\n1,2\nbad\nbad\n3,4\n");
    let cfg = config(json!({ "path": path }));
    let stream = "t";
    let mut reader = FileSource::open(&cfg, stream, split_for(&cfg, &path), None).unwrap();
    let first = reader.next(1).unwrap().unwrap();
    assert_eq!((first.batch.num_rows(), first.rejects.len()), (1, 0));
    let second = reader.next(1).unwrap().unwrap();
    assert_eq!((second.batch.num_rows(), second.rejects.len()), (0, 1));
    let third = reader.next(1).unwrap().unwrap();
    assert_eq!((third.batch.num_rows(), third.rejects.len()), (0, 1));
    let fourth = reader.next(1).unwrap().unwrap();
    assert_eq!((fourth.batch.num_rows(), fourth.rejects.len()), (1, 0));
    assert!(reader.next(1).unwrap().is_none());
}

#[test]
fn overrides_set_date_timestamp_and_number_types() {
    let dir = TempDir::new("overrides");
    let path = dir.write(
        "t.csv",
        "id,day,at,code\n1,2024-01-02,2024-01-02T03:04:05Z,007\n2,,2024-01-02 03:04:05.5+01:00,8\n",
    );
    let cfg = config(json!({
        "path": path,
        "schema": { "day": "date", "at": "timestamp", "code": "utf8", "id": "float64" }
    }));
    let schema = plan(&cfg).unwrap().schema;
    assert_eq!(schema.field(0).data_type(), &DataType::Float64);
    assert_eq!(schema.field(1).data_type(), &DataType::Date32);
    assert_eq!(
        schema.field(2).data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    let all = read(&cfg, &path, None, 100, 100);
    assert!(all.rejects.is_empty(), "{:?}", all.rejects);
    let b = &all.batches[0];
    let days: Vec<Option<i32>> = b.column(1).as_primitive::<Date32Type>().iter().collect();
    assert_eq!(days, vec![Some(19_724), None]);
    let at: Vec<Option<i64>> = b
        .column(2)
        .as_primitive::<TimestampMicrosecondType>()
        .iter()
        .collect();
    let base = 19_724 * 86_400_000_000 + (3 * 3600 + 4 * 60 + 5) * 1_000_000;
    assert_eq!(at, vec![Some(base), Some(base - 3_600_000_000 + 500_000)]);
    assert_eq!(
        all.texts("code"),
        vec![Some("007".into()), Some("8".into())]
    );
}

#[test]
fn an_override_for_a_missing_column_names_the_real_ones() {
    let dir = TempDir::new("override-missing");
    let path = dir.write("t.csv", "id,amount\n1,2\n");
    let m = invalid_config(FileSource::check(&config(
        json!({ "path": path, "schema": { "amt": "float64" } }),
    )));
    assert!(m.contains("`schema.amt`"), "{m}");
    assert!(m.contains("[id, amount]"), "{m}");
}

#[test]
fn check_fails_when_nothing_matches() {
    let dir = TempDir::new("nomatch");
    dir.write("a.txt", "x");
    let pattern = format!("{}/x*.csv", dir.path());
    let m = invalid_config(FileSource::check(&config(json!({ "path": pattern }))));
    assert_eq!(m, format!("no file matches `{pattern}`"));
    let missing = format!("{}/missing.csv", dir.path());
    let m = invalid_config(FileSource::check(&config(json!({ "path": missing }))));
    assert!(m.contains(&missing), "{m}");
}

#[test]
fn one_split_per_file_sorted_by_path() {
    let dir = TempDir::new("splits");
    dir.write("orders_b.csv", orders(1));
    dir.write("orders_a.csv", orders(2));
    let cfg = config(json!({ "path": format!("{}/orders_*.csv", dir.path()) }));
    let splits = FileSource::splits(&cfg, "orders").unwrap();
    let ids: Vec<&str> = splits.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        vec![dir.file("orders_a.csv"), dir.file("orders_b.csv")]
    );
    let m = invalid_config(FileSource::splits(&cfg, "other"));
    assert!(m.contains("`other`") && m.contains("`orders`"), "{m}");
    assert_eq!(
        read(&cfg, &dir.file("orders_b.csv"), None, 100, 100).rows(),
        1
    );
}

#[test]
fn a_file_whose_header_differs_from_the_stream_is_a_data_error() {
    let dir = TempDir::new("header-mismatch");
    dir.write("a.csv", "id,name\n1,x\n");
    let b = dir.write("b.csv", "id,title\n2,y\n");
    let cfg = config(json!({ "path": format!("{}/*.csv", dir.path()) }));
    match FileSource::open(&cfg, "default", split_for(&cfg, &b), None) {
        Err(Error::Data(m)) => {
            assert!(m.contains(&format!("`{b}:1`")), "{m}");
            assert!(m.contains("[id, title]") && m.contains("[id, name]"), "{m}");
        }
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("opened"),
    }
}

#[test]
fn an_empty_file_yields_nothing() {
    let dir = TempDir::new("empty");
    let path = dir.write("t.csv", "");
    let cfg = config(json!({ "path": path }));
    assert_eq!(plan(&cfg).unwrap().schema.fields().len(), 0);
    assert_eq!(read(&cfg, &path, None, 100, 100).batches.len(), 0);
    let header_only = dir.write("h.csv", "a,b\n");
    let cfg = config(json!({ "path": header_only }));
    assert_eq!(plan(&cfg).unwrap().schema.fields().len(), 2);
    assert_eq!(read(&cfg, &header_only, None, 100, 100).batches.len(), 0);
}

#[test]
fn null_values_and_a_custom_dialect_are_honoured() {
    let dir = TempDir::new("dialect");
    let path = dir.write("t.tsv", "# exported\n1\t'a\tb'\tNA\n2\tc\t5\n");
    let cfg = config(json!({
        "path": path, "format": "csv", "null_values": ["NA"],
        "csv": { "header": false, "delimiter": "\t", "quote": "'", "comment": "#" }
    }));
    let all = read(&cfg, &path, None, 100, 100);
    assert!(all.rejects.is_empty(), "{:?}", all.rejects);
    assert_eq!(
        all.texts("column_2"),
        vec![Some("a\tb".into()), Some("c".into())]
    );
    assert_eq!(all.ints("column_3"), vec![None, Some(5)]);
}

#[test]
fn jsonl_values_are_read_as_written_escapes_and_all() {
    let dir = TempDir::new("jsonl-escapes");
    let path = dir.write(
        "e.jsonl",
        concat!(
            "{\"id\": 1, \"s\": \"plain\", \"n\": 7, \"x\": 1.50}\n",
            "{\"s\": \"say \\\"hi\\\"\\n\\u00e9\", \"id\": \"2\", \"n\": \"8\", \"x\": \"2.5\"}\n",
            "{\"id\": -3, \"s\": 12.50, \"n\": null, \"x\": 1e2}\n",
            "{\"id\": 4, \"n\": 3.0}\n",
        ),
    );
    let cfg = config(json!({ "path": path, "infer_rows": 1 }));
    let all = read(&cfg, &path, None, 100, 100);
    assert_eq!(all.ints("id"), vec![Some(1), Some(2), Some(-3)]);
    assert_eq!(
        all.texts("s"),
        vec![
            Some("plain".into()),
            Some("say \"hi\"\n\u{e9}".into()),
            Some("12.5".into())
        ],
        "escapes are decoded; a number in a text column is stored as compact JSON"
    );
    assert_eq!(
        all.ints("n"),
        vec![Some(7), Some(8), None],
        "a string spelling an int64 fits"
    );
    assert_eq!(all.rejects.len(), 1, "3.0 is not an int64");
    assert_eq!(all.rejects[0].reason, "column `n`: `3.0` is not an int64");
}

#[test]
fn jsonl_lines_become_rows_and_bad_lines_rejects() {
    let dir = TempDir::new("jsonl");
    let path = dir.write(
        "events.jsonl",
        concat!(
            "{\"id\": 1, \"tags\": [\"a\"], \"who\": {\"n\": 1}}\n",
            "\n",
            "[1, 2]\n",
            "{\"id\": \"x\"}\n",
            "{\"id\": 2, \"extra\": true}\n",
            "{\"id\": 3, \"who\": \"plain\"}\n",
        ),
    );
    let cfg = config(json!({ "path": path, "infer_rows": 1 }));
    let all = read(&cfg, &path, None, 100, 100);
    assert_eq!(all.ints("id"), vec![Some(1), Some(3)]);
    assert_eq!(all.texts("tags"), vec![Some("[\"a\"]".into()), None]);
    assert_eq!(
        all.texts("who"),
        vec![Some("{\"n\":1}".into()), Some("plain".into())]
    );
    let locations: Vec<String> = all
        .rejects
        .iter()
        .map(|r| r.location.clone().unwrap())
        .collect();
    assert_eq!(
        locations,
        vec![
            format!("{path}:3"),
            format!("{path}:4"),
            format!("{path}:5")
        ]
    );
    assert!(
        all.rejects[0].reason.starts_with("not a JSON object"),
        "{}",
        all.rejects[0].reason
    );
    assert_eq!(
        all.rejects[1].reason,
        "column `id`: `\"x\"` is not an int64"
    );
    assert!(
        all.rejects[2].reason.contains("key `extra`"),
        "{}",
        all.rejects[2].reason
    );
    assert_eq!(all.rejects[1].original.as_deref(), Some("{\"id\": \"x\"}"));
}

#[test]
fn jsonl_reading_resumes_exactly() {
    let dir = TempDir::new("jsonl-resume");
    let text: String = (1..=7).map(|i| format!("{{\"id\": {i}}}\n\n")).collect();
    let path = dir.write("e.ndjson", text);
    let cfg = config(json!({ "path": path }));
    let first = read(&cfg, &path, None, 3, 1);
    assert_eq!(first.ints("id"), vec![Some(1), Some(2), Some(3)]);
    assert_eq!(
        String::from_utf8(first.positions[0].clone()).unwrap(),
        r#"{"offset":32,"line":6,"rows":3}"#
    );
    let rest = read(&cfg, &path, first.positions.last().cloned(), 3, 100);
    assert_eq!(rest.ints("id"), (4..=7).map(Some).collect::<Vec<_>>());
}

/// A Parquet file at `path` with one column, `id`, holding `ids`.
fn write_parquet_ids(path: &str, ids: Vec<i64>) {
    use ::parquet::arrow::ArrowWriter;
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(arrow_array::Int64Array::from(ids))],
    )
    .unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn parquet_files_are_read_through_the_source() {
    let dir = TempDir::new("parquet-source");
    let path = dir.file("t.parquet");
    write_parquet_ids(&path, vec![1, 2, 3]);
    let cfg = config(json!({ "path": path }));
    let streams = FileSource::discover(&cfg).unwrap();
    assert_eq!(streams[0].schema.field(0).name(), "id");
    let first = read(&cfg, &path, None, 2, 1);
    assert_eq!(first.ints("id"), vec![Some(1), Some(2)]);
    let rest = read(&cfg, &path, first.positions.last().cloned(), 2, 100);
    assert_eq!(rest.ints("id"), vec![Some(3)]);
}

/// A CSV file of `rows` orders over several MiB: notes with commas, doubled quotes and
/// line feeds inside quotes, CRLF records, blank lines, and a record with too few fields
/// every 997 rows.
fn awkward_csv(rows: usize) -> String {
    let notes = [
        "plain",
        "\"gift, wrap\"",
        "\"she said \"\"ring twice\"\"\"",
        "\"back door\nfront one broken\"",
        "\"\n\n\"",
        "",
    ];
    let mut text = String::from("id,amount,note\n");
    for i in 1..=rows {
        let note = notes[i % notes.len()];
        let end = if i % 7 == 0 { "\r\n" } else { "\n" };
        if i % 997 == 0 {
            text.push_str(&format!("{i},{note}{end}"));
        } else {
            text.push_str(&format!("{i},{i}.25,{note}{end}"));
        }
        if i % 101 == 0 {
            text.push('\n');
        }
    }
    text
}

/// Every row, reject location and final position of every split of `cfg`, read in order.
fn read_all_splits(cfg: &str) -> (Vec<Split>, Read) {
    let stream = plan(cfg).unwrap().settings.stream;
    let splits = FileSource::splits(cfg, &stream).unwrap();
    let mut all = Read {
        batches: Vec::new(),
        rejects: Vec::new(),
        positions: Vec::new(),
    };
    for split in &splits {
        let mut reader = FileSource::open(cfg, &stream, split.clone(), None).unwrap();
        while let Some(chunk) = reader.next(5000).unwrap() {
            all.batches.push(chunk.batch);
            all.rejects.extend(chunk.rejects);
            all.positions.push(chunk.position);
        }
    }
    (splits, all)
}

fn locations(read: &Read) -> Vec<String> {
    read.rejects
        .iter()
        .map(|r| r.location.clone().unwrap_or_default())
        .collect()
}

/// The parts gave the ids, notes and reject lines of the whole file, in order.
fn assert_same_reading(parts: &Read, whole: &Read) {
    assert_eq!(parts.ints("id"), whole.ints("id"));
    assert_eq!(parts.texts("note"), whole.texts("note"));
    assert_eq!(locations(parts), locations(whole), "reject lines");
}

#[test]
fn csv_parts_start_at_records_and_read_together_as_the_whole_file() {
    let dir = TempDir::new("csv-parts");
    let path = dir.write("orders.csv", awkward_csv(120_000));
    let whole = read_all_splits(&config(json!({ "path": path }))).1;
    assert_eq!(whole.rows() + whole.rejects.len(), 120_000);
    for split_bytes in [json!(1 << 20), json!("1MiB"), json!(1_500_000)] {
        let cfg = config(json!({ "path": path, "split_bytes": split_bytes }));
        let (splits, parts) = read_all_splits(&cfg);
        assert!(splits.len() >= 3, "{} splits", splits.len());
        assert_eq!(splits[0].id, path);
        assert!(splits[1].id.starts_with(&format!("{path}@")));
        assert_same_reading(&parts, &whole);
    }
}

#[test]
fn jsonl_parts_start_at_lines_and_read_together_as_the_whole_file() {
    let dir = TempDir::new("jsonl-parts");
    let mut text = String::new();
    for i in 1..=60_000 {
        if i % 500 == 0 {
            text.push_str("not json\n\n");
        }
        text.push_str(&format!(
            "{{\"id\":{i},\"note\":\"line\\nfeed, {{\\\"quoted\\\"}} {i}\"}}\n"
        ));
    }
    let path = dir.write("events.jsonl", text);
    let whole = read_all_splits(&config(json!({ "path": path }))).1;
    let cfg = config(json!({ "path": path, "split_bytes": "1MiB" }));
    let (splits, parts) = read_all_splits(&cfg);
    assert!(splits.len() >= 3, "{} splits", splits.len());
    assert_eq!(parts.rows(), 60_000);
    assert_same_reading(&parts, &whole);
}

#[test]
fn a_part_resumes_inside_itself_and_ends_where_the_next_begins() {
    let dir = TempDir::new("part-resume");
    let path = dir.write("orders.csv", awkward_csv(100_000));
    let cfg = config(json!({ "path": path, "split_bytes": "1MiB" }));
    let stream = plan(&cfg).unwrap().settings.stream;
    let splits = FileSource::splits(&cfg, &stream).unwrap();
    let second = splits[1].clone();
    let mut reader = FileSource::open(&cfg, &stream, second.clone(), None).unwrap();
    let first = reader.next(1000).unwrap().unwrap();
    let mut rest = Vec::new();
    while let Some(chunk) = reader.next(1000).unwrap() {
        rest.push(chunk);
    }
    let mut resumed =
        FileSource::open(&cfg, &stream, second, Some(first.position.clone())).unwrap();
    let mut again = Vec::new();
    while let Some(chunk) = resumed.next(1000).unwrap() {
        again.push(chunk);
    }
    let ids = |chunks: &[Chunk]| -> Vec<i64> {
        chunks
            .iter()
            .flat_map(|c| {
                c.batch
                    .column(0)
                    .as_primitive::<Int64Type>()
                    .values()
                    .to_vec()
            })
            .collect()
    };
    assert_eq!(ids(&again), ids(&rest));
    let end: serde_json::Value = serde_json::from_slice(&rest.last().unwrap().position).unwrap();
    let third: serde_json::Value = serde_json::from_slice(&splits[2].descriptor).unwrap();
    assert_eq!(end["offset"], third["part"]["start"]);
    assert_eq!(end["line"], third["part"]["line"]);
    assert_eq!(end["split_bytes"], json!(1 << 20));
}

#[test]
fn a_position_saved_under_another_split_bytes_is_refused() {
    let dir = TempDir::new("part-mismatch");
    let path = dir.write("orders.csv", awkward_csv(20_000));
    let whole_cfg = config(json!({ "path": path }));
    let parts_cfg = config(json!({ "path": path, "split_bytes": "1MiB" }));
    let whole_position = read(&whole_cfg, &path, None, 100, 1).positions.remove(0);
    let parts_position = read(&parts_cfg, &path, None, 100, 1).positions.remove(0);
    let stream = plan(&whole_cfg).unwrap().settings.stream;
    for (cfg, position, wanted) in [
        (&parts_cfg, whole_position, "written with no `split_bytes`"),
        (
            &whole_cfg,
            parts_position,
            "written with `split_bytes = 1048576`",
        ),
    ] {
        let split = split_for(cfg, &path);
        match FileSource::open(cfg, &stream, split, Some(position)) {
            Err(Error::Fatal(m)) => assert!(m.contains(wanted) && !m.contains("  "), "{m}"),
            other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
        }
    }
}

#[test]
fn a_growing_file_keeps_its_earlier_parts() {
    let dir = TempDir::new("part-grow");
    let text = awkward_csv(40_000);
    let path = dir.write("orders.csv", &text);
    let cfg = config(json!({ "path": path, "split_bytes": "1MiB" }));
    let stream = plan(&cfg).unwrap().settings.stream;
    let before = FileSource::splits(&cfg, &stream).unwrap();
    let more = awkward_csv(80_000);
    dir.append("orders.csv", &more[more.find('\n').unwrap() + 1..]);
    let after = FileSource::splits(&cfg, &stream).unwrap();
    assert!(after.len() > before.len());
    let ids = |s: &[Split]| s.iter().map(|s| s.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&after[..before.len()]), ids(&before));
    // Only the last part's end moved: it reached the end of the file before.
    for (a, b) in before.iter().zip(&after).take(before.len() - 1) {
        assert_eq!(a.descriptor, b.descriptor);
    }
}

#[test]
fn split_bytes_is_a_size_of_at_least_one_mebibyte_for_text_formats() {
    let dir = TempDir::new("part-config");
    let csv = dir.write("a.csv", orders(3));
    let parquet = dir.file("a.parquet");
    for (cfg, wanted) in [
        (json!({ "path": csv, "split_bytes": 1000 }), "at least 1MiB"),
        (
            json!({ "path": csv, "split_bytes": "64 parsecs" }),
            "at least 1MiB",
        ),
        (
            json!({ "path": parquet, "split_bytes": "64MiB" }),
            "applies to csv and jsonl",
        ),
    ] {
        let m = invalid_config(Settings::parse(&config(cfg)));
        assert!(m.contains(wanted), "{m}");
    }
    let s = Settings::parse(&config(json!({ "path": csv, "split_bytes": "64MiB" }))).unwrap();
    assert_eq!(s.split_bytes, Some(64 << 20));
    // A file smaller than one part is one split, named by its path.
    let splits =
        FileSource::splits(&config(json!({ "path": csv, "split_bytes": "64MiB" })), "a").unwrap();
    assert_eq!(splits.len(), 1);
    assert_eq!(splits[0].id, csv);
}

/// Reads `path` from `position` to the end as it is now: its rows' `id`s, its rejects and
/// where the next read resumes.
fn read_on(cfg: &str, path: &str, position: Option<Vec<u8>>) -> (Read, Option<Vec<u8>>) {
    let got = read(cfg, path, position.clone(), 7, usize::MAX);
    let next = got.positions.last().cloned().or(position);
    (got, next)
}

#[test]
fn a_last_line_without_a_line_end_waits_for_its_writer_and_is_then_read_whole_once() {
    let dir = TempDir::new("wait-line");
    let path = dir.write("orders.csv", "id,amount,note\n1,1.5,a\n2,2.5,b\n3,3.");
    let cfg = config(json!({ "path": path }));
    let (first, at) = read_on(&cfg, &path, None);
    assert_eq!(first.ints("id"), vec![Some(1), Some(2)]);
    assert!(first.rejects.is_empty(), "{:?}", first.rejects);
    assert_eq!(
        String::from_utf8(at.clone().unwrap()).unwrap(),
        r#"{"offset":31,"line":4,"rows":2}"#,
        "the position stays before the unfinished line"
    );

    dir.append("orders.csv", "5,c\n4,4.5,d\n");
    let (rest, _) = read_on(&cfg, &path, at);
    assert_eq!(rest.ints("id"), vec![Some(3), Some(4)]);
    assert_eq!(
        rest.texts("note"),
        vec![Some("c".to_string()), Some("d".to_string())]
    );
    assert!(rest.rejects.is_empty());
}

#[test]
fn a_quote_still_open_at_the_end_of_the_file_waits_for_its_writer() {
    let dir = TempDir::new("wait-quote");
    let path = dir.write(
        "orders.csv",
        "id,amount,note\n1,1.5,a\n2,2.5,\"two\nlines, and",
    );
    let cfg = config(json!({ "path": path }));
    let (first, at) = read_on(&cfg, &path, None);
    assert_eq!(first.ints("id"), vec![Some(1)]);
    assert!(first.rejects.is_empty(), "{:?}", first.rejects);

    // A newline inside the open quote is not the end of the record either.
    dir.append("orders.csv", " more\n");
    let (same, at) = read_on(&cfg, &path, at);
    assert_eq!(same.rows() + same.rejects.len(), 0);

    dir.append("orders.csv", "\"\n3,3.5,c\n");
    let (rest, _) = read_on(&cfg, &path, at);
    assert_eq!(rest.ints("id"), vec![Some(2), Some(3)]);
    assert_eq!(
        rest.texts("note")[0].as_deref(),
        Some("two\nlines, and more\n")
    );
    assert!(rest.rejects.is_empty());
}

#[test]
fn with_last_record_read_an_unterminated_quote_is_one_reject_naming_its_line() {
    let dir = TempDir::new("read-quote");
    let path = dir.write(
        "orders.csv",
        "id,amount,note\n1,1.5,a\n2,2.5,\"open\n3,3.5,c\n4,4.5,d",
    );
    let cfg = config(json!({ "path": path, "last_record": "read" }));
    let (got, _) = read_on(&cfg, &path, None);
    assert_eq!(
        got.ints("id"),
        vec![Some(1), Some(3), Some(4)],
        "the lines after the open quote are rows, and the last line is read without its end"
    );
    assert_eq!(got.rejects.len(), 1, "{:?}", got.rejects);
    let reject = &got.rejects[0];
    assert_eq!(reject.original.as_deref(), Some("2,2.5,\"open"));
    assert_eq!(
        reject.location.as_deref(),
        Some(format!("{path}:3").as_str())
    );
    assert!(
        reject
            .reason
            .contains("quote opened in this record is never closed"),
        "{}",
        reject.reason
    );
}

#[test]
fn last_record_takes_wait_or_read() {
    let dir = TempDir::new("last-record");
    let path = dir.write("orders.csv", orders(1));
    let message = invalid_config(FileSource::check(&config(
        json!({ "path": path, "last_record": "skip" }),
    )));
    assert!(
        message.contains("`last_record` = \"skip\"") && message.contains("\"wait\""),
        "{message}"
    );
}

#[test]
fn a_json_line_without_a_line_end_waits_for_its_writer() {
    let dir = TempDir::new("wait-jsonl");
    let path = dir.write("events.jsonl", "{\"id\":1}\n{\"id\":2}\n{\"id\":");
    let cfg = config(json!({ "path": path }));
    let (first, at) = read_on(&cfg, &path, None);
    assert_eq!(first.ints("id"), vec![Some(1), Some(2)]);
    assert!(first.rejects.is_empty());
    dir.append("events.jsonl", "3}\n{\"id\":4}");
    let (rest, at) = read_on(&cfg, &path, at);
    assert_eq!(rest.ints("id"), vec![Some(3)]);
    let read_cfg = config(json!({ "path": path, "last_record": "read" }));
    let (last, _) = read_on(&read_cfg, &path, at);
    assert_eq!(
        last.ints("id"),
        vec![Some(4)],
        "with `read`, the last line is a row"
    );
}

#[test]
fn a_parquet_file_without_its_footer_waits_for_its_writer() {
    let dir = TempDir::new("wait-parquet");
    let whole = dir.file("b.parquet");
    write_parquet_ids(&whole, (1..=10).collect());
    let bytes = std::fs::read(&whole).unwrap();
    dir.write("a.parquet", &bytes[..bytes.len() - 20]);
    let glob = dir.file("*.parquet");
    let splits = FileSource::splits(&config(json!({ "path": glob })), "default").unwrap();
    let ids: Vec<&str> = splits.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, vec![whole.as_str()], "the unfinished file is left out");
    let message = match FileSource::splits(
        &config(json!({ "path": glob, "last_record": "read" })),
        "default",
    ) {
        Err(e) => e.to_string(),
        Ok(s) => panic!("a file without its footer was read: {s:?}"),
    };
    assert!(message.contains("a.parquet"), "{message}");
}

/// Writes `body` after `head` in random-sized chunks (cut anywhere: mid-line, inside a
/// quoted field, between CR and LF), reading on from the last position after each; the
/// ids of every row read, and every reject.
fn read_while_written(
    name: &str,
    head: &str,
    body: &str,
    cfg: serde_json::Value,
    seed: u64,
) -> (Vec<i64>, Vec<Reject>) {
    let dir = TempDir::new("chunks");
    let path = dir.write(name, head);
    let mut cfg = cfg;
    cfg["path"] = json!(path);
    let cfg = config(cfg);
    let mut rng = Rng(seed);
    let (mut ids, mut rejects, mut at) = (Vec::new(), Vec::new(), None);
    let mut rest = body.as_bytes();
    while !rest.is_empty() {
        let n = (1 + rng.below(rest.len().min(4000))).min(rest.len());
        dir.append(name, &rest[..n]);
        rest = &rest[n..];
        let (got, next) = read_on(&cfg, &path, at);
        ids.extend(got.ints("id").into_iter().map(Option::unwrap));
        rejects.extend(got.rejects);
        at = next;
    }
    (ids, rejects)
}

#[test]
fn csv_written_in_random_chunks_while_read_yields_every_row_once() {
    let mut body = String::new();
    for i in 1..=3000 {
        let note = match i % 5 {
            0 => format!("\"multi\nline, {i}\""),
            1 => format!("\"quoted \"\"{i}\"\"\""),
            2 => format!("plain {i}"),
            3 => String::new(),
            _ => format!("\"crlf\r\n{i}\""),
        };
        let end = if i % 7 == 0 { "\r\n" } else { "\n" };
        body.push_str(&format!("{i},{i}.25,{note}{end}"));
    }
    let schema = json!({ "id": "int64", "amount": "float64", "note": "utf8" });
    for seed in [1, 7, 42, 2026] {
        let (ids, rejects) = read_while_written(
            "orders.csv",
            "id,amount,note\n",
            &body,
            json!({ "schema": schema }),
            seed,
        );
        assert!(
            rejects.is_empty(),
            "seed {seed}: {:?}",
            &rejects[..rejects.len().min(3)]
        );
        assert_eq!(ids, (1..=3000).collect::<Vec<_>>(), "seed {seed}");
    }
}

#[test]
fn json_lines_written_in_random_chunks_while_read_yields_every_row_once() {
    let mut body = String::new();
    for i in 1..=3000 {
        body.push_str(&format!(
            "{{\"id\":{i},\"note\":\"line {i} with \\\"quotes\\\" and \\n\",\"amount\":{i}.5}}\n"
        ));
    }
    let (head, body) = body.split_at(body.find('\n').unwrap() + 1);
    for seed in [3, 11, 99, 2026] {
        let (ids, rejects) = read_while_written(
            "events.jsonl",
            head,
            body,
            json!({ "schema": { "id": "int64", "note": "utf8", "amount": "float64" } }),
            seed,
        );
        assert!(
            rejects.is_empty(),
            "seed {seed}: {:?}",
            &rejects[..rejects.len().min(3)]
        );
        assert_eq!(ids, (1..=3000).collect::<Vec<_>>(), "seed {seed}");
    }
}

//! The epoch protocol on a real directory, with the text formats (Parquet needs the host).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use ingest_sdk::sink::WriteMode;
use ingest_sdk::Error;

use crate::config::SinkConfig;
use crate::writer::{FileWriter, Limits, Manifest};

/// A fresh directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("file-sink-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn out(&self) -> PathBuf {
        self.0.join("out")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("region", DataType::Utf8, true),
    ]))
}

fn batch(ids: &[i64], regions: &[Option<&str>]) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.to_vec())),
        Arc::new(StringArray::from(regions.to_vec())),
    ];
    RecordBatch::try_new(schema(), columns).unwrap()
}

fn config(out: &Path, extra: &str) -> SinkConfig {
    let json = format!(
        r#"{{"path":{}{extra}}}"#,
        serde_json::to_string(out.to_str().unwrap()).unwrap()
    );
    SinkConfig::from_json(&json).unwrap()
}

fn writer(out: &Path, extra: &str) -> FileWriter {
    FileWriter::new(config(out, extra), "orders", schema()).unwrap()
}

/// Every file under `root` (relative path → content).
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                let bytes = fs::read(&path).unwrap();
                out.insert(rel, String::from_utf8_lossy(&bytes).into_owned());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn published(root: &Path) -> BTreeMap<String, String> {
    tree(root)
        .into_iter()
        .filter(|(p, _)| !p.starts_with(".staging") && !p.starts_with(".fences"))
        .collect()
}

#[test]
fn jsonl_epoch_is_staged_then_published_once() {
    let dir = TempDir::new("jsonl");
    let out = dir.out();
    let mut w = writer(&out, r#","format":"jsonl""#);
    w.write(batch(&[1, 2], &[Some("eu"), None])).unwrap();
    w.write(batch(&[3], &[Some("us")])).unwrap();
    assert!(
        published(&out).is_empty(),
        "nothing is visible before commit"
    );

    let token = w.prepare(1).unwrap();
    let manifest: Manifest = serde_json::from_slice(&token).unwrap();
    assert_eq!(manifest.epoch, 1);
    assert_eq!(manifest.files.len(), 1);
    assert_eq!(manifest.files[0].rows, 3);
    assert_eq!(
        manifest.files[0].published,
        "orders/part-0000000001-0000.jsonl"
    );
    assert_eq!(
        manifest.files[0].staged,
        ".staging/orders/epoch-1/0000.jsonl"
    );
    let staged = tree(&out);
    assert!(staged.contains_key(".staging/orders/epoch-1/_manifest.json"));
    assert_eq!(
        staged[".staging/orders/epoch-1/_manifest.json"].as_bytes(),
        &token[..]
    );
    assert!(
        published(&out).is_empty(),
        "nothing is visible before commit"
    );

    w.commit(1, &token).unwrap();
    let after = tree(&out);
    assert_eq!(
        after,
        BTreeMap::from([(
            "orders/part-0000000001-0000.jsonl".to_string(),
            "{\"id\":1,\"region\":\"eu\"}\n{\"id\":2,\"region\":null}\n{\"id\":3,\"region\":\"us\"}\n"
                .to_string()
        )])
    );
    assert!(!out.join(".staging/orders/epoch-1").exists());

    // A repeat changes nothing, from this writer or a fresh one.
    w.commit(1, &token).unwrap();
    assert_eq!(tree(&out), after);
    writer(&out, r#","format":"jsonl""#)
        .commit(1, &token)
        .unwrap();
    assert_eq!(tree(&out), after);

    // The next epoch gets its own file.
    w.write(batch(&[4], &[Some("eu")])).unwrap();
    let token = w.prepare(2).unwrap();
    w.commit(2, &token).unwrap();
    assert_eq!(
        published(&out).keys().collect::<Vec<_>>(),
        [
            "orders/part-0000000001-0000.jsonl",
            "orders/part-0000000002-0000.jsonl"
        ]
    );
}

#[test]
fn a_fresh_writer_finishes_an_interrupted_commit() {
    let dir = TempDir::new("resume");
    let out = dir.out();
    let mut w = writer(&out, r#","format":"csv","partition_by":"region""#);
    w.write(batch(&[1, 2, 3], &[Some("eu"), Some("us"), Some("eu")]))
        .unwrap();
    let token = w.prepare(5).unwrap();
    drop(w);

    // The crash came after the first file was published.
    let manifest: Manifest = serde_json::from_slice(&token).unwrap();
    assert_eq!(manifest.files.len(), 2);
    let first = &manifest.files[0];
    fs::create_dir_all(out.join(&first.published).parent().unwrap()).unwrap();
    fs::rename(out.join(&first.staged), out.join(&first.published)).unwrap();

    writer(&out, r#","format":"csv","partition_by":"region""#)
        .commit(5, &token)
        .unwrap();
    assert_eq!(
        tree(&out),
        BTreeMap::from([
            (
                "orders/region=eu/part-0000000005-0000.csv".to_string(),
                "id,region\n1,eu\n3,eu\n".to_string()
            ),
            (
                "orders/region=us/part-0000000005-0001.csv".to_string(),
                "id,region\n2,us\n".to_string()
            ),
        ])
    );
}

#[test]
fn a_writer_whose_split_was_claimed_again_cannot_commit_and_the_new_holder_can() {
    let dir = TempDir::new("fence");
    let out = dir.out();
    let tagged = |tag: &str| {
        let w = writer(&out, r#","format":"csv""#).with_writer_tag(Some(tag));
        w.claim_fence().unwrap();
        w
    };
    // Claim 1 stages and prepares epoch 7, then stalls; its split is claimed again.
    let mut first = tagged("0123456789abcdef-1");
    first.write(batch(&[1, 2], &[Some("eu"), None])).unwrap();
    let token = first.prepare(7).unwrap();
    let mut second = tagged("0123456789abcdef-2");

    // The first writer resumes: its commit is refused and publishes nothing.
    let refused = first.commit(7, &token).unwrap_err().to_string();
    assert!(refused.contains("fenced"), "{refused}");
    assert!(refused.contains("claim 2 was taken since"), "{refused}");
    assert!(published(&out).is_empty());

    // The new holder publishes the epoch the host recorded, once.
    second.commit(7, &token).unwrap();
    assert_eq!(
        published(&out).keys().cloned().collect::<Vec<_>>(),
        ["orders/part-0000000007-0000.csv"]
    );
    // Another split's claims fence nothing here, and a writer without a tag is not fenced.
    let mut other = tagged("fedcba9876543210-9");
    other.write(batch(&[3], &[Some("us")])).unwrap();
    let token = other.prepare(8).unwrap();
    other.commit(8, &token).unwrap();
    let mut untagged = writer(&out, r#","format":"csv""#);
    untagged.write(batch(&[4], &[Some("us")])).unwrap();
    let token = untagged.prepare(9).unwrap();
    untagged.commit(9, &token).unwrap();
    assert_eq!(published(&out).len(), 3);
}

#[test]
fn abort_leaves_nothing() {
    let dir = TempDir::new("abort");
    let out = dir.out();
    let mut w = writer(&out, r#","format":"csv""#);

    // Aborting an epoch that never started is fine.
    w.abort(1).unwrap();

    // An open epoch.
    w.write(batch(&[1], &[Some("eu")])).unwrap();
    w.abort(1).unwrap();
    assert!(tree(&out).is_empty(), "{:?}", tree(&out));

    // A prepared epoch whose token was never recorded.
    w.write(batch(&[2], &[Some("eu")])).unwrap();
    w.prepare(2).unwrap();
    writer(&out, r#","format":"csv""#).abort(2).unwrap();
    assert!(tree(&out).is_empty(), "{:?}", tree(&out));

    // The writer goes on after an abort.
    w.write(batch(&[3], &[Some("eu")])).unwrap();
    let token = w.prepare(3).unwrap();
    w.commit(3, &token).unwrap();
    assert_eq!(
        tree(&out),
        BTreeMap::from([(
            "orders/part-0000000003-0000.csv".to_string(),
            "id,region\n3,eu\n".to_string()
        )])
    );
}

#[test]
fn an_epoch_without_rows_publishes_nothing() {
    let dir = TempDir::new("empty");
    let out = dir.out();
    let mut w = writer(&out, r#","format":"jsonl""#);
    w.write(batch(&[], &[])).unwrap();
    let token = w.prepare(1).unwrap();
    assert!(token.is_empty());
    w.commit(1, &token).unwrap();
    assert!(tree(&out).is_empty());
}

#[test]
fn a_dead_instances_current_is_discarded() {
    let dir = TempDir::new("stale");
    let out = dir.out();
    fs::create_dir_all(out.join(".staging/orders/current")).unwrap();
    fs::write(out.join(".staging/orders/current/0000.jsonl"), "garbage\n").unwrap();
    let mut w = writer(&out, r#","format":"jsonl""#);
    w.write(batch(&[1], &[None])).unwrap();
    let token = w.prepare(1).unwrap();
    w.commit(1, &token).unwrap();
    assert_eq!(
        tree(&out),
        BTreeMap::from([(
            "orders/part-0000000001-0000.jsonl".to_string(),
            "{\"id\":1,\"region\":null}\n".to_string()
        )])
    );
}

#[test]
fn commit_refuses_lost_and_colliding_files() {
    let dir = TempDir::new("refuse");
    let out = dir.out();
    let mut w = writer(&out, r#","format":"jsonl""#);
    w.write(batch(&[1], &[None])).unwrap();
    let token = w.prepare(1).unwrap();

    // Another run already published the same name: nothing is overwritten.
    fs::create_dir_all(out.join("orders")).unwrap();
    fs::write(out.join("orders/part-0000000001-0000.jsonl"), "theirs\n").unwrap();
    let err = w.commit(1, &token).unwrap_err();
    let Error::Fatal(m) = &err else {
        panic!("{err:?}")
    };
    assert!(
        m.contains("stream `orders`") && m.contains("part-0000000001-0000.jsonl"),
        "{m}"
    );
    assert_eq!(
        fs::read_to_string(out.join("orders/part-0000000001-0000.jsonl")).unwrap(),
        "theirs\n"
    );

    // The staged file and its published name are both gone.
    fs::remove_file(out.join("orders/part-0000000001-0000.jsonl")).unwrap();
    fs::remove_dir_all(out.join(".staging/orders/epoch-1")).unwrap();
    let err = w.commit(1, &token).unwrap_err();
    let Error::Fatal(m) = &err else {
        panic!("{err:?}")
    };
    assert!(
        m.contains("part-0000000001-0000.jsonl") && m.contains("neither"),
        "{m}"
    );
}

#[test]
fn tokens_of_other_epochs_or_streams_are_refused() {
    let dir = TempDir::new("token");
    let out = dir.out();
    let mut w = writer(&out, r#","format":"jsonl""#);
    w.write(batch(&[1], &[None])).unwrap();
    let token = w.prepare(1).unwrap();
    assert!(matches!(w.commit(2, &token), Err(Error::Fatal(_))));
    assert!(matches!(w.commit(1, b"{not json"), Err(Error::Fatal(_))));
    let other = FileWriter::new(config(&out, r#","format":"jsonl""#), "users", schema()).unwrap();
    let mut other = other;
    assert!(matches!(other.commit(1, &token), Err(Error::Fatal(_))));

    let mut forged: Manifest = serde_json::from_slice(&token).unwrap();
    forged.files[0].published = "../../etc/passwd".into();
    let forged = serde_json::to_vec(&forged).unwrap();
    assert!(matches!(w.commit(1, &forged), Err(Error::Fatal(_))));
    assert!(published(&out).is_empty());
}

#[test]
fn batches_of_another_schema_are_data_errors() {
    let dir = TempDir::new("schema");
    let mut w = writer(&dir.out(), r#","format":"csv""#);
    let other = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)])),
        vec![Arc::new(Int64Array::from(vec![1]))],
    )
    .unwrap();
    let err = w.write(other).unwrap_err();
    let Error::Data(m) = &err else {
        panic!("{err:?}")
    };
    assert!(
        m.contains("stream `orders`") && m.contains("[x: Int64]"),
        "{m}"
    );
}

#[test]
fn only_append_is_supported() {
    crate::check_mode("file", "orders", &WriteMode::Append).unwrap();
    for mode in [WriteMode::Overwrite, WriteMode::Upsert(vec!["id".into()])] {
        let err = crate::check_mode("file", "orders", &mode).unwrap_err();
        let Error::InvalidConfig(m) = &err else {
            panic!("{err:?}")
        };
        assert!(m.contains("supports write mode `append` only"), "{m}");
        assert!(m.contains("stream `orders`"), "{m}");
    }
}

#[test]
fn check_creates_the_output_directory() {
    let dir = TempDir::new("check");
    let out = dir.out().join("nested");
    crate::prepare_root(&config(&out, "")).unwrap();
    assert!(out.join(".staging").is_dir());

    // A file where the directory should be.
    let blocked = dir.0.join("file");
    fs::write(&blocked, "").unwrap();
    let err = crate::prepare_root(&config(&blocked, "")).unwrap_err();
    assert!(
        err.to_string().contains(&*blocked.to_string_lossy()),
        "{err}"
    );
}

#[test]
fn timestamps_in_named_zones_are_written_as_utc_instants() {
    use arrow_array::TimestampSecondArray;
    use arrow_schema::TimeUnit;

    let dir = TempDir::new("tz");
    let out = dir.out();
    let schema = Arc::new(Schema::new(vec![Field::new(
        "at",
        DataType::Timestamp(TimeUnit::Second, Some("UTC".into())),
        true,
    )]));
    let at = TimestampSecondArray::from(vec![Some(1_704_499_200), None]).with_timezone("UTC");
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(at)]).unwrap();
    for (format, expected) in [
        (
            "jsonl",
            "{\"at\":\"2024-01-06T00:00:00Z\"}\n{\"at\":null}\n",
        ),
        ("csv", "at\n2024-01-06T00:00:00Z\n\"\"\n"),
    ] {
        let cfg = config(
            &out,
            &format!(r#","format":"{format}","partition_by":"at""#),
        );
        let mut w = FileWriter::new(cfg, "events", schema.clone()).unwrap();
        w.write(batch.clone()).unwrap();
        let token = w.prepare(1).unwrap();
        w.commit(1, &token).unwrap();
        let files = published(&out);
        let text: String = files.values().cloned().collect();
        assert_eq!(files.len(), 2, "{files:?}");
        assert!(
            files.keys().any(|k| k.contains("at_day=2024-01-06")),
            "{files:?}"
        );
        let mut lines: Vec<&str> = text.lines().collect();
        let mut want: Vec<&str> = expected.lines().collect();
        lines.sort_unstable();
        want.sort_unstable();
        if format == "csv" {
            // One header per file.
            want.push("at");
            want.sort_unstable();
        }
        assert_eq!(lines, want, "{format}");
        fs::remove_dir_all(&out).unwrap();
    }
}

/// Bounds small enough to reach in a test: `open_files` files, rows written out at
/// `flush_rows`, `pending_bytes` waiting across partitions.
fn limits(open_files: usize, flush_rows: usize, pending_bytes: usize) -> Limits {
    Limits {
        open_files,
        flush_rows,
        pending_bytes,
    }
}

/// Rows of every published file, by path, as `id,region` lines without the header.
fn published_rows(out: &Path) -> BTreeMap<String, Vec<String>> {
    published(out)
        .into_iter()
        .map(|(path, text)| (path, text.lines().skip(1).map(str::to_string).collect()))
        .collect()
}

/// A CSV writer partitioned by `region`, within `limits`.
fn by_region(out: &Path, limits: Limits) -> FileWriter {
    writer(out, r#","format":"csv","partition_by":"region""#).with_limits(limits)
}

/// The rows of the one published file of `region`'s partition.
fn rows_of<'a>(files: &'a BTreeMap<String, Vec<String>>, region: &str) -> &'a Vec<String> {
    let mut of_region = files
        .iter()
        .filter(|(p, _)| p.starts_with(&format!("orders/region={region}/")));
    let (_, rows) = of_region.next().expect("a file of the partition");
    assert!(of_region.next().is_none(), "one file for {region}");
    rows
}

#[test]
fn an_epoch_writes_one_file_per_partition_however_its_rows_interleave() {
    let dir = TempDir::new("interleaved");
    let out = dir.out();
    // 4 files open at most, every row written out at once: most partitions spill.
    let mut w = by_region(&out, limits(4, 1, usize::MAX));
    let regions: Vec<String> = (0..50).map(|r| format!("r{r:02}")).collect();
    for round in 0..3i64 {
        let ids: Vec<i64> = (0..50).map(|r| round * 100 + r).collect();
        let names: Vec<Option<&str>> = regions.iter().map(|r| Some(r.as_str())).collect();
        w.write(batch(&ids, &names)).unwrap();
    }
    assert!(
        tree(&out).keys().any(|p| p.ends_with("/spill.arrows")),
        "partitions beyond the open files spill"
    );
    let token = w.prepare(1).unwrap();
    assert!(
        !tree(&out).keys().any(|p| p.ends_with("/spill.arrows")),
        "spill files are gone once prepared"
    );
    w.commit(1, &token).unwrap();

    let files = published_rows(&out);
    assert_eq!(
        files.len(),
        50,
        "one file per partition: {:?}",
        files.keys()
    );
    for (r, region) in regions.iter().enumerate() {
        let want: Vec<String> = (0..3)
            .map(|round| format!("{},{region}", round * 100 + r))
            .collect();
        assert_eq!(
            rows_of(&files, region),
            &want,
            "{region}: every row, in arrival order"
        );
    }
}

#[test]
fn rows_waiting_past_the_memory_bound_are_written_out_and_nothing_is_lost() {
    let dir = TempDir::new("pending");
    let out = dir.out();
    // Nothing is written out for its own row count; 1 KiB waiting across partitions is
    // the bound, and 3 files may be open.
    let mut w = by_region(&out, limits(3, usize::MAX, 1024));
    let mut want: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in 0..400i64 {
        let region = format!("r{}", (i * 7) % 20);
        want.entry(region.clone())
            .or_default()
            .push(format!("{i},{region}"));
        w.write(batch(&[i], &[Some(&region)])).unwrap();
    }
    let token = w.prepare(1).unwrap();
    w.commit(1, &token).unwrap();
    let files = published_rows(&out);
    assert_eq!(files.len(), 20, "{:?}", files.keys());
    for (region, rows) in want {
        assert_eq!(rows_of(&files, &region), &rows, "{region}");
    }
}

#[test]
fn a_file_is_rolled_at_the_target_size_and_the_next_epoch_starts_afresh() {
    let dir = TempDir::new("roll");
    let out = dir.out();
    // Each row is 6 bytes ("10,eu\n"), the header 10: a file is rolled once it has passed
    // 30 bytes, at 4 rows.
    let mut w = writer(&out, r#","format":"csv","target_file_size":30"#).with_limits(limits(
        4,
        1,
        usize::MAX,
    ));
    for i in 10..20i64 {
        w.write(batch(&[i], &[Some("eu")])).unwrap();
    }
    let token = w.prepare(1).unwrap();
    w.commit(1, &token).unwrap();
    let files = published(&out);
    let sizes: Vec<usize> = files.values().map(String::len).collect();
    assert_eq!(sizes, [34, 34, 22], "{files:?}");
    let rows: Vec<String> = published_rows(&out).into_values().flatten().collect();
    let want: Vec<String> = (10..20).map(|i| format!("{i},eu")).collect();
    assert_eq!(
        rows, want,
        "every row once, in order, across the rolled files"
    );

    // The default (128 MiB) keeps an epoch of a few rows in one file.
    let dir = TempDir::new("no-roll");
    let out = dir.out();
    let mut w = writer(&out, r#","format":"csv""#).with_limits(limits(4, 1, usize::MAX));
    for i in 10..20i64 {
        w.write(batch(&[i], &[Some("eu")])).unwrap();
    }
    let token = w.prepare(1).unwrap();
    w.commit(1, &token).unwrap();
    assert_eq!(published(&out).len(), 1);
}

#[test]
fn after_a_failed_write_or_prepare_only_abort_helps() {
    let dir = TempDir::new("poison");
    let out = dir.out();
    // Rows written out at once, so that a write reaches the files.
    let mut w = by_region(&out, limits(4, 1, usize::MAX));
    w.write(batch(&[1], &[Some("eu")])).unwrap();
    // The staging area vanishes under the writer: opening the next partition's file fails.
    fs::remove_dir_all(out.join(".staging/orders/current")).unwrap();
    assert!(w.write(batch(&[2], &[Some("us")])).is_err());
    let err = w.prepare(1).unwrap_err();
    assert!(err.to_string().contains("can only be aborted"), "{err}");
    assert!(w.write(batch(&[3], &[Some("eu")])).is_err());
    w.abort(1).unwrap();

    // A prepare that fails does not leave an empty epoch behind for a second prepare.
    w.write(batch(&[4], &[Some("eu")])).unwrap();
    fs::remove_dir_all(out.join(".staging/orders/current")).unwrap();
    assert!(w.prepare(2).is_err());
    assert!(
        w.prepare(2).is_err(),
        "a repeated prepare must not report an empty epoch"
    );
    w.abort(2).unwrap();

    w.write(batch(&[5], &[Some("eu")])).unwrap();
    let token = w.prepare(3).unwrap();
    w.commit(3, &token).unwrap();
    assert_eq!(
        published(&out),
        BTreeMap::from([(
            "orders/region=eu/part-0000000003-0000.csv".to_string(),
            "id,region\n5,eu\n".to_string()
        )])
    );
}

//! JavaScript plugins: the SDK's Arrow IPC codec against arrow-rs (golden bytes and a round
//! trip JS → Rust → JS), example 04 end to end, each kind made by `host new plugin --lang js`
//! built with its build.sh and run, the host's imports and each error case as a JavaScript
//! plugin meets them (a config error is one at exit code 2), no network in what a component
//! asks for, and the start-up cost.
//!
//! Components are built with `sdks/js/build.sh` (the pinned componentize-js in `.tools/js`,
//! installed by `scripts/polyglot-tools js` when missing) once per test process, and kept
//! under `target/polyglot/` keyed by a hash of everything that goes into them, so a rerun
//! with nothing changed builds nothing.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arrow::array::*;
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::*;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Install the pinned JavaScript tools once per process.
fn tools() {
    static TOOLS: OnceLock<()> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let out = Command::new(root().join("scripts/polyglot-tools"))
            .arg("js")
            .current_dir(root())
            .output()
            .expect("scripts/polyglot-tools runs");
        assert!(
            out.status.success(),
            "the JavaScript plugin tools could not be installed (scripts/polyglot-tools js needs \
             node and npm, and the npm registry): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// Feed every file under `dir` (sorted, by relative path) into `hasher`.
fn hash_tree(hasher: &mut Sha256, dir: &Path) {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    for file in files {
        hasher.update(file.strip_prefix(dir).unwrap().to_string_lossy().as_bytes());
        hasher.update(std::fs::read(&file).unwrap());
    }
}

/// The cache key of a component: what it is built from (its modules, the SDK, the
/// contract, the tools' pins and the build scripts).
fn inputs_key(app_js: &[PathBuf], world: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(world.as_bytes());
    for file in app_js {
        hasher.update(file.file_name().unwrap().to_string_lossy().as_bytes());
        hasher.update(std::fs::read(file).unwrap());
    }
    hash_tree(&mut hasher, &root().join("sdks/js/lib"));
    hasher.update(std::fs::read(root().join("wit/plugin.wit")).unwrap());
    hasher.update(std::fs::read(root().join("sdks/js/build.sh")).unwrap());
    hex::encode(&hasher.finalize()[..12])
}

/// The JavaScript modules of an app directory (top level).
fn app_modules(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "js" || e == "mjs"))
        .collect();
    files.sort();
    files
}

/// One build at a time (two cores), with the tools installed, and each component once per
/// process.
fn built(key: &str, build: impl FnOnce(&Path)) -> PathBuf {
    build_once(&format!("js-{key}"), |out| {
        static BUILDING: Mutex<()> = Mutex::new(());
        let _one = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
        tools();
        build(out);
    })
}

/// Run a build command, failing the test with its output.
fn run_build(mut command: Command, what: &str) -> Duration {
    let started = Instant::now();
    let out = command.output().expect("the build command runs");
    assert!(
        out.status.success(),
        "building {what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let elapsed = started.elapsed();
    eprintln!(
        "built {what} in {:.1} s: {}",
        elapsed.as_secs_f64(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    elapsed
}

/// The component of a JavaScript app in the repository (app.js + sdks/js/lib).
fn build_app(app_dir: &Path, world: &str) -> PathBuf {
    let key = inputs_key(&app_modules(app_dir), world);
    built(&key, |out| {
        let mut command = Command::new(root().join("sdks/js/build.sh"));
        command.arg(app_dir).arg(world).arg(out);
        run_build(command, &app_dir.display().to_string());
    })
}

/// Set the `sha256` of the plugin `file` in `pipeline` to `digest` (as `--pin` does).
fn pin(pipeline: &Path, file: &str, digest: &str) {
    let text = std::fs::read_to_string(pipeline).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let at = lines
        .iter()
        .position(|l| l.trim_start().starts_with("plugin") && l.contains(&format!("{file}\"")))
        .unwrap_or_else(|| panic!("{} has no plugin = \"{file}\"", pipeline.display()));
    let sha = (at.saturating_sub(3)..lines.len().min(at + 4))
        .find(|&i| lines[i].trim_start().starts_with("sha256"))
        .unwrap_or_else(|| panic!("{} pins no sha256 for {file}", pipeline.display()));
    lines[sha] = format!("sha256 = \"{digest}\"");
    std::fs::write(pipeline, lines.join("\n") + "\n").unwrap();
}

/// Make a copy of a JavaScript example runnable: build its component (cached), put it
/// where its pipeline names it and pin its digest. Does nothing for other examples.
pub fn prepare_example(dir: &Path) {
    if !dir.join("app.js").is_file() {
        return;
    }
    let pipeline = dir.join("pipeline.toml");
    let text = std::fs::read_to_string(&pipeline).unwrap();
    // The plugin's .wasm, and its kind from the table that names it.
    let mut kind = None;
    let mut file = None;
    for line in text.lines().map(str::trim) {
        if let Some(table) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
            kind = Some(table.to_string());
        } else if let Some(value) = line.strip_prefix("plugin = \"") {
            let value = value.trim_end_matches('"');
            if value.ends_with(".wasm") {
                file = Some((
                    kind.clone().expect("a plugin inside a table"),
                    value.to_string(),
                ));
            }
        }
    }
    let (world, file) = file.expect("the example's pipeline names its .wasm");
    let wasm = build_app(dir, &world);
    std::fs::copy(&wasm, dir.join(&file)).unwrap();
    pin(&pipeline, &file, &sha256_file(&wasm));
}

/// Copy an example without what runs and builds leave in it (outputs, state, tools,
/// components).
fn copy_tree(from: &Path, to: &Path) {
    crate::support::copy_tree(from, to, &|p| {
        named(p, &["out", ".state", ".tools"])
            || (!p.is_dir() && p.extension().is_some_and(|e| e == "wasm"))
    });
}

// ------------------------------------------------------------------------------------------
// The IPC codec against arrow-rs

fn golden_dir() -> PathBuf {
    root().join("sdks/js/test/fixtures")
}

/// The type's name as the JavaScript SDK prints it.
fn js_type(dt: &DataType) -> String {
    let unit = |u: &TimeUnit| match u {
        TimeUnit::Second => "s",
        TimeUnit::Millisecond => "ms",
        TimeUnit::Microsecond => "us",
        TimeUnit::Nanosecond => "ns",
    };
    match dt {
        DataType::Null => "null".into(),
        DataType::Boolean => "bool".into(),
        DataType::Int8 => "int8".into(),
        DataType::Int16 => "int16".into(),
        DataType::Int32 => "int32".into(),
        DataType::Int64 => "int64".into(),
        DataType::UInt8 => "uint8".into(),
        DataType::UInt16 => "uint16".into(),
        DataType::UInt32 => "uint32".into(),
        DataType::UInt64 => "uint64".into(),
        DataType::Float32 => "float32".into(),
        DataType::Float64 => "float64".into(),
        DataType::Utf8 => "utf8".into(),
        DataType::LargeUtf8 => "large_utf8".into(),
        DataType::Binary => "binary".into(),
        DataType::LargeBinary => "large_binary".into(),
        DataType::Date32 => "date32".into(),
        DataType::Date64 => "date64".into(),
        DataType::Timestamp(u, None) => format!("timestamp[{}]", unit(u)),
        DataType::Timestamp(u, Some(tz)) => format!("timestamp[{}, {tz}]", unit(u)),
        DataType::Time32(u) => format!("time32[{}]", unit(u)),
        DataType::Time64(u) => format!("time64[{}]", unit(u)),
        DataType::Duration(u) => format!("duration[{}]", unit(u)),
        other => panic!("no JavaScript name for {other}"),
    }
}

fn float_json(v: f64) -> Value {
    if v.is_nan() {
        json!("NaN")
    } else if v.is_infinite() {
        json!(if v > 0.0 { "Infinity" } else { "-Infinity" })
    } else if v == 0.0 && v.is_sign_negative() {
        json!("-0")
    } else {
        json!(v)
    }
}

/// One value as golden.js describes it.
fn value_json(array: &dyn Array, row: usize) -> Value {
    use arrow::datatypes::*;
    if array.is_null(row) || array.data_type() == &DataType::Null {
        return Value::Null;
    }
    let big = |v: i64| json!(v.to_string());
    match array.data_type() {
        DataType::Boolean => json!(array.as_boolean().value(row)),
        DataType::Int8 => json!(array.as_primitive::<Int8Type>().value(row)),
        DataType::Int16 => json!(array.as_primitive::<Int16Type>().value(row)),
        DataType::Int32 => json!(array.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => big(array.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => json!(array.as_primitive::<UInt8Type>().value(row)),
        DataType::UInt16 => json!(array.as_primitive::<UInt16Type>().value(row)),
        DataType::UInt32 => json!(array.as_primitive::<UInt32Type>().value(row)),
        DataType::UInt64 => json!(array.as_primitive::<UInt64Type>().value(row).to_string()),
        DataType::Float32 => float_json(array.as_primitive::<Float32Type>().value(row) as f64),
        DataType::Float64 => float_json(array.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => json!(array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => json!(array.as_string::<i64>().value(row)),
        DataType::Binary => json!({ "hex": hex::encode(array.as_binary::<i32>().value(row)) }),
        DataType::LargeBinary => {
            json!({ "hex": hex::encode(array.as_binary::<i64>().value(row)) })
        }
        DataType::Date32 => json!(array.as_primitive::<Date32Type>().value(row)),
        DataType::Date64 => json!(array.as_primitive::<Date64Type>().value(row)),
        DataType::Time32(TimeUnit::Second) => {
            json!(array.as_primitive::<Time32SecondType>().value(row))
        }
        DataType::Time32(_) => json!(array.as_primitive::<Time32MillisecondType>().value(row)),
        DataType::Time64(TimeUnit::Microsecond) => {
            json!(array.as_primitive::<Time64MicrosecondType>().value(row))
        }
        DataType::Time64(_) => big(array.as_primitive::<Time64NanosecondType>().value(row)),
        DataType::Timestamp(unit, _) | DataType::Duration(unit) => {
            // Every 64-bit time is an i64 underneath; nanoseconds are BigInt in JavaScript.
            let v = array.to_data().buffers()[0].typed_data::<i64>()[array.offset() + row];
            if *unit == TimeUnit::Nanosecond {
                big(v)
            } else {
                json!(v)
            }
        }
        other => panic!("no JSON for {other}"),
    }
}

fn describe(schema: &Schema, batches: &[RecordBatch]) -> Value {
    fn metadata<'a>(m: impl IntoIterator<Item = (&'a String, &'a String)>) -> Value {
        json!(m.into_iter().collect::<BTreeMap<_, _>>())
    }
    json!({
        "schema": schema.fields().iter().map(|f| json!({
            "name": f.name(),
            "type": js_type(f.data_type()),
            "nullable": f.is_nullable(),
            "metadata": metadata(f.metadata()),
        })).collect::<Vec<_>>(),
        "metadata": metadata(&schema.metadata),
        "batches": batches.iter().map(|b| json!({
            "rows": b.num_rows(),
            "columns": b.schema().fields().iter().zip(b.columns()).map(|(f, c)| {
                (f.name().clone(), json!((0..b.num_rows()).map(|r| value_json(c.as_ref(), r)).collect::<Vec<_>>()))
            }).collect::<serde_json::Map<_, _>>(),
        })).collect::<Vec<_>>(),
    })
}

/// Every type the SDK reads and writes, with nulls spread over more than one bitmap byte,
/// extremes, empty and non-ASCII strings, float specials, and schema and field metadata.
fn all_types() -> (Arc<Schema>, Vec<RecordBatch>) {
    let n = 10;
    // Every third row is null, from row 1 on.
    fn opt<T>(i: usize, v: T) -> Option<T> {
        (i % 3 != 1).then_some(v)
    }
    let columns: Vec<(Field, ArrayRef)> = vec![
        (
            Field::new("id", DataType::Int64, false),
            Arc::new(Int64Array::from_iter_values(
                (0..n as i64).map(|i| i * 1_000_000_007 - 3),
            )),
        ),
        (
            Field::new("nothing", DataType::Null, true),
            Arc::new(NullArray::new(n)),
        ),
        (
            Field::new("flag", DataType::Boolean, true),
            Arc::new(BooleanArray::from_iter((0..n).map(|i| opt(i, i % 2 == 0)))),
        ),
        (
            Field::new("i8", DataType::Int8, true),
            Arc::new(Int8Array::from_iter(
                (0..n).map(|i| opt(i, [i8::MIN, -1, 0, 1, i8::MAX][i % 5])),
            )),
        ),
        (
            Field::new("i16", DataType::Int16, true),
            Arc::new(Int16Array::from_iter(
                (0..n).map(|i| opt(i, [i16::MIN, -300, 0, 300, i16::MAX][i % 5])),
            )),
        ),
        (
            Field::new("i32", DataType::Int32, true),
            Arc::new(Int32Array::from_iter((0..n).map(|i| {
                opt(i, [i32::MIN, -70_000, 0, 70_000, i32::MAX][i % 5])
            }))),
        ),
        (
            Field::new("i64", DataType::Int64, true),
            Arc::new(Int64Array::from_iter((0..n).map(|i| {
                opt(
                    i,
                    [i64::MIN, -(1 << 53) - 1, 0, (1 << 53) + 1, i64::MAX][i % 5],
                )
            }))),
        ),
        (
            Field::new("u8", DataType::UInt8, true),
            Arc::new(UInt8Array::from_iter(
                (0..n).map(|i| opt(i, [0, 1, 127, 128, u8::MAX][i % 5])),
            )),
        ),
        (
            Field::new("u16", DataType::UInt16, true),
            Arc::new(UInt16Array::from_iter(
                (0..n).map(|i| opt(i, [0, 1, 32_768, 40_000, u16::MAX][i % 5])),
            )),
        ),
        (
            Field::new("u32", DataType::UInt32, true),
            Arc::new(UInt32Array::from_iter((0..n).map(|i| {
                opt(i, [0, 1, 1 << 31, 3_000_000_000, u32::MAX][i % 5])
            }))),
        ),
        (
            Field::new("u64", DataType::UInt64, true),
            Arc::new(UInt64Array::from_iter((0..n).map(|i| {
                opt(i, [0, 1, 1 << 63, (1 << 53) + 1, u64::MAX][i % 5])
            }))),
        ),
        (
            Field::new("f32", DataType::Float32, true),
            Arc::new(Float32Array::from_iter((0..n).map(|i| {
                opt(
                    i,
                    [1.5, -0.0, f32::NAN, f32::INFINITY, f32::MIN_POSITIVE][i % 5],
                )
            }))),
        ),
        (
            Field::new("f64", DataType::Float64, true),
            Arc::new(Float64Array::from_iter((0..n).map(|i| {
                opt(i, [0.1, -0.0, f64::NAN, f64::NEG_INFINITY, 1e300][i % 5])
            }))),
        ),
        (
            Field::new("text", DataType::Utf8, true),
            Arc::new(StringArray::from_iter((0..n).map(|i| {
                opt(
                    i,
                    ["", "plain", "Zoë, ½ \"quoted\"", "line\nbreak", "日本語 🎉"][i % 5],
                )
            }))),
        ),
        (
            Field::new("large_text", DataType::LargeUtf8, true),
            Arc::new(LargeStringArray::from_iter(
                (0..n).map(|i| opt(i, format!("large {i} ✓"))),
            )),
        ),
        (
            Field::new("bytes", DataType::Binary, true),
            Arc::new(BinaryArray::from_iter((0..n).map(|i| {
                opt(
                    i,
                    [&b""[..], b"\x00\xff", b"abc", b"\x80", b"\x01\x02\x03\x04"][i % 5],
                )
            }))),
        ),
        (
            Field::new("large_bytes", DataType::LargeBinary, true),
            Arc::new(LargeBinaryArray::from_iter(
                (0..n).map(|i| opt(i, vec![i as u8; i])),
            )),
        ),
        (
            Field::new("day", DataType::Date32, true),
            Arc::new(Date32Array::from_iter(
                (0..n).map(|i| opt(i, [-719_162, -1, 0, 19_782, 2_932_896][i % 5])),
            )),
        ),
        (
            Field::new("day_ms", DataType::Date64, true),
            Arc::new(Date64Array::from_iter(
                (0..n).map(|i| opt(i, [-86_400_000, 0, 1_709_164_800_000][i % 3])),
            )),
        ),
        (
            Field::new(
                "ts_s",
                DataType::Timestamp(TimeUnit::Second, Some("UTC".into())),
                true,
            ),
            Arc::new(
                TimestampSecondArray::from_iter(
                    (0..n).map(|i| opt(i, 1_700_000_000 + i as i64 * 3600)),
                )
                .with_timezone("UTC"),
            ),
        ),
        (
            Field::new(
                "ts_ms",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
            Arc::new(TimestampMillisecondArray::from_iter(
                (0..n).map(|i| opt(i, -1_700_000_000_123 + i as i64)),
            )),
        ),
        (
            Field::new(
                "ts_us",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Arc::new(
                TimestampMicrosecondArray::from_iter(
                    (0..n).map(|i| opt(i, 1_709_208_000_000_000 + i as i64 * 1_000_001)),
                )
                .with_timezone("UTC"),
            ),
        ),
        (
            Field::new(
                "ts_ns",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("+02:00".into())),
                true,
            ),
            Arc::new(
                TimestampNanosecondArray::from_iter(
                    (0..n).map(|i| opt(i, 1_709_208_000_123_456_789 + i as i64)),
                )
                .with_timezone("+02:00"),
            ),
        ),
        (
            Field::new("t32_s", DataType::Time32(TimeUnit::Second), true),
            Arc::new(Time32SecondArray::from_iter(
                (0..n).map(|i| opt(i, i as i32 * 3601)),
            )),
        ),
        (
            Field::new("t32_ms", DataType::Time32(TimeUnit::Millisecond), true),
            Arc::new(Time32MillisecondArray::from_iter(
                (0..n).map(|i| opt(i, 86_399_999 - i as i32)),
            )),
        ),
        (
            Field::new("t64_us", DataType::Time64(TimeUnit::Microsecond), true),
            Arc::new(Time64MicrosecondArray::from_iter(
                (0..n).map(|i| opt(i, 86_399_999_999 - i as i64)),
            )),
        ),
        (
            Field::new("t64_ns", DataType::Time64(TimeUnit::Nanosecond), true),
            Arc::new(Time64NanosecondArray::from_iter(
                (0..n).map(|i| opt(i, 86_399_999_999_999 - i as i64)),
            )),
        ),
        (
            Field::new("dur_ms", DataType::Duration(TimeUnit::Millisecond), true),
            Arc::new(DurationMillisecondArray::from_iter(
                (0..n).map(|i| opt(i, -5_000 + i as i64 * 1_000)),
            )),
        ),
        (
            Field::new("dur_ns", DataType::Duration(TimeUnit::Nanosecond), true),
            Arc::new(DurationNanosecondArray::from_iter(
                (0..n).map(|i| opt(i, i64::MAX - i as i64)),
            )),
        ),
    ];
    let mut fields: Vec<Field> = columns.iter().map(|(f, _)| f.clone()).collect();
    fields[14] = fields[14].clone().with_metadata(HashMap::from([(
        "comment".to_string(),
        "kept as it is".to_string(),
    )]));
    let schema = Arc::new(Schema::new_with_metadata(
        fields,
        HashMap::from([("origin".to_string(), "arrow-rs golden".to_string())]),
    ));
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, c)| c).collect(),
    )
    .unwrap();
    // Two messages, the second from a slice (arrow-rs rebases its offsets and bitmaps).
    (schema, vec![batch.slice(0, 6), batch.slice(6, 4)])
}

/// The columns the built-in file source emits, as a CSV source with nulls sends them.
fn file_source_types() -> (Arc<Schema>, Vec<RecordBatch>) {
    let n = 20;
    let schema = Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, true),
        Field::new("amount", DataType::Float64, true),
        Field::new("paid", DataType::Boolean, true),
        Field::new("email", DataType::Utf8, true),
        Field::new("day", DataType::Date32, true),
        Field::new(
            "created_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ]));
    let some = |i: usize| i % 7 != 3;
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter(
                (0..n as i64).map(|i| some(i as usize).then_some(i + 1)),
            )),
            Arc::new(Float64Array::from_iter(
                (0..n).map(|i| some(i).then_some(i as f64 * 10.25)),
            )),
            Arc::new(BooleanArray::from_iter(
                (0..n).map(|i| some(i).then_some(i % 3 == 0)),
            )),
            Arc::new(StringArray::from_iter(
                (0..n).map(|i| some(i).then(|| format!("user{i}@example.com"))),
            )),
            Arc::new(Date32Array::from_iter(
                (0..n).map(|i| some(i).then_some(20_400 + i as i32)),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter(
                    (0..n).map(|i| some(i).then_some(1_762_000_000_000_000 + i as i64)),
                )
                .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap();
    (schema, vec![batch])
}

/// name → (schema, batches) of every golden fixture.
fn golden_sets() -> BTreeMap<&'static str, (Arc<Schema>, Vec<RecordBatch>)> {
    let (all, all_batches) = all_types();
    let (file, file_batches) = file_source_types();
    BTreeMap::from([
        ("all_types", (all.clone(), all_batches)),
        ("file_source_types", (file.clone(), file_batches)),
        ("schema_only", (all.clone(), vec![])),
        (
            "zero_rows",
            (file.clone(), vec![RecordBatch::new_empty(file)]),
        ),
    ])
}

fn encode(schema: &Schema, batches: &[RecordBatch]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new(&mut out, schema).unwrap();
    for b in batches {
        writer.write(b).unwrap();
    }
    writer.finish().unwrap();
    drop(writer);
    out
}

fn decode(bytes: &[u8]) -> (Arc<Schema>, Vec<RecordBatch>) {
    let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>().unwrap();
    (schema, batches)
}

#[test]
fn golden_ipc_fixtures_are_what_arrow_rs_writes() {
    // INGEST_UPDATE_GOLDEN=1 rewrites them (after a change of the sets above).
    let update = std::env::var_os("INGEST_UPDATE_GOLDEN").is_some();
    for (name, (schema, batches)) in golden_sets() {
        let bytes = encode(&schema, &batches);
        let text = serde_json::to_string_pretty(&describe(&schema, &batches)).unwrap() + "\n";
        let arrow_path = golden_dir().join(format!("{name}.arrow"));
        let json_path = golden_dir().join(format!("{name}.json"));
        if update {
            std::fs::write(&arrow_path, &bytes).unwrap();
            std::fs::write(&json_path, &text).unwrap();
            continue;
        }
        assert_eq!(
            std::fs::read(&arrow_path).unwrap_or_default(),
            bytes,
            "{} is not what arrow-rs writes; INGEST_UPDATE_GOLDEN=1 rewrites it",
            arrow_path.display()
        );
        assert_eq!(
            std::fs::read_to_string(&json_path).unwrap_or_default(),
            text,
            "{} does not describe the fixture; INGEST_UPDATE_GOLDEN=1 rewrites it",
            json_path.display()
        );
    }
    // Streams with a column the SDK does not map, for the error it gives (no .json: the
    // JavaScript tests read them by name).
    for (name, field, column) in unsupported() {
        let schema = Arc::new(Schema::new(vec![field]));
        let batch = RecordBatch::try_new(schema.clone(), vec![column]).unwrap();
        let bytes = encode(&schema, &[batch]);
        let path = golden_dir().join(format!("{name}.arrow"));
        if update {
            std::fs::write(&path, &bytes).unwrap();
        } else {
            assert_eq!(
                std::fs::read(&path).unwrap_or_default(),
                bytes,
                "{}",
                path.display()
            );
        }
    }
}

fn unsupported() -> Vec<(&'static str, Field, ArrayRef)> {
    use arrow::datatypes::Int32Type;
    let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![Some(vec![Some(1)])]);
    let dictionary: DictionaryArray<Int32Type> = vec!["FR"].into_iter().collect();
    vec![
        (
            "unsupported_list",
            Field::new("tags", list.data_type().clone(), true),
            Arc::new(list),
        ),
        (
            "unsupported_decimal",
            Field::new("price", DataType::Decimal128(10, 2), true),
            Arc::new(
                Decimal128Array::from(vec![Some(1234)])
                    .with_precision_and_scale(10, 2)
                    .unwrap(),
            ),
        ),
        (
            "unsupported_dictionary",
            Field::new("country", dictionary.data_type().clone(), true),
            Arc::new(dictionary),
        ),
    ]
}

fn node(args: &[&str]) -> std::process::Output {
    Command::new("node")
        .args(args)
        .current_dir(root().join("sdks/js"))
        .output()
        .expect("node runs (the JavaScript SDK's tests need Node.js 18 or newer)")
}

#[test]
fn the_javascript_sdk_unit_tests_pass() {
    let mut tests: Vec<String> = std::fs::read_dir(root().join("sdks/js/test"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".test.js"))
        .map(|f| format!("test/{f}"))
        .collect();
    tests.sort();
    let mut args = vec!["--test"];
    args.extend(tests.iter().map(String::as_str));
    let out = node(&args);
    assert!(
        out.status.success(),
        "node --test failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ipc_round_trip_js_rust_js_is_exact() {
    let scratch = tempfile::tempdir().unwrap();
    let from_js = scratch.path().join("from-js");
    let from_rust = scratch.path().join("from-rust");
    std::fs::create_dir_all(&from_rust).unwrap();
    let out = node(&["test/roundtrip.js", "encode", from_js.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (name, (schema, batches)) in golden_sets() {
        // Built in JavaScript from the values, and passed through without decoding them.
        for file in [format!("{name}.arrow"), format!("{name}.passthrough.arrow")] {
            let bytes = std::fs::read(from_js.join(&file)).unwrap();
            for at in message_offsets(&bytes) {
                assert_eq!(
                    at % 8,
                    0,
                    "{file}: a message starts at byte {at}, not 8-aligned"
                );
            }
            let (got_schema, got) = decode(&bytes);
            assert_eq!(*got_schema, *schema, "{file}: the schema JavaScript wrote");
            assert_eq!(got.len(), batches.len(), "{file}: batches");
            for (g, want) in got.iter().zip(&batches) {
                assert_eq!(g, want, "{file}: a batch JavaScript wrote");
            }
        }
        let (got_schema, got) =
            decode(&std::fs::read(from_js.join(format!("{name}.arrow"))).unwrap());
        std::fs::write(
            from_rust.join(format!("{name}.arrow")),
            encode(&got_schema, &got),
        )
        .unwrap();
    }
    let out = node(&["test/roundtrip.js", "check", from_rust.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "what arrow-rs wrote back reads differently in JavaScript:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Start of every encapsulated message of an IPC stream.
fn message_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut at = 0;
    let mut out = Vec::new();
    while at + 8 <= bytes.len() {
        out.push(at);
        let len = i32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        let meta = &bytes[at + 8..at + 8 + len];
        let message = arrow::ipc::root_as_message(meta).unwrap();
        at += 8 + len + message.bodyLength() as usize;
    }
    out
}

// ------------------------------------------------------------------------------------------
// Example 04, the templates, errors and start-up

/// What example 04 makes of a name: single spaces, each word capitalised.
fn tidy_name(name: &str) -> String {
    name.split_whitespace()
        .map(|w| {
            let mut chars = w.chars();
            let first = chars.next().unwrap();
            first.to_uppercase().collect::<String>() + &chars.as_str().to_lowercase()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn read_parquet_rows(dir: &Path) -> Vec<RecordBatch> {
    parquet_files(dir)
        .into_iter()
        .flat_map(|file| {
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(file).unwrap())
                .unwrap()
                .build()
                .unwrap()
                .map(Result::unwrap)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn example_04_tidies_contacts_in_javascript_and_dead_letters_the_bad_address() {
    let scratch = Scratch::new();
    let example = root().join("examples/04-js-transform");
    copy_tree(&example, &scratch.path("ex"));
    prepare_example(&scratch.path("ex"));
    let run = scratch.host(&["run", "ex/pipeline.toml"]);
    run.assert_ok();
    assert!(run.stdout.contains("8 rows read"), "{}", run.stdout);
    assert!(run.stdout.contains("7 rows written"), "{}", run.stdout);

    // The input as the csv crate reads it, tidied here independently of the plugin.
    let mut input = csv::Reader::from_path(scratch.path("ex/data/contacts.csv")).unwrap();
    let mut expected = BTreeMap::new();
    for record in input.records() {
        let r = record.unwrap();
        let email = r[2].trim().to_lowercase();
        let Some((_, domain)) = email.split_once('@') else {
            continue;
        };
        let text = |s: &str| (!s.is_empty()).then(|| s.to_string());
        expected.insert(
            r[0].parse::<i64>().unwrap(),
            (
                text(&r[1]).map(|n| tidy_name(&n)),
                email.clone(),
                domain.to_string(),
                text(&r[3]),
                r[4].parse::<i64>().ok(),
                r[5] == *"true",
            ),
        );
    }
    assert_eq!(expected.len(), 7);

    let batches = read_parquet_rows(&scratch.path("ex/out"));
    let schema = batches[0].schema();
    let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "contact_id",
            "full_name",
            "email",
            "city",
            "score",
            "active",
            "signed_up_at",
            "email_domain"
        ]
    );
    assert!(matches!(
        schema.field_with_name("signed_up_at").unwrap().data_type(),
        DataType::Timestamp(TimeUnit::Microsecond, _)
    ));
    let mut seen = 0;
    for b in &batches {
        let col = |n: &str| b.column_by_name(n).unwrap().clone();
        let ids = col("contact_id");
        let ids = ids.as_primitive::<arrow::datatypes::Int64Type>();
        let text = |n: &str, i: usize| {
            let c = col(n);
            (!c.is_null(i)).then(|| c.as_string::<i32>().value(i).to_string())
        };
        let score = col("score");
        let active = col("active");
        let signed = col("signed_up_at");
        for i in 0..b.num_rows() {
            let id = ids.value(i);
            let (name, email, domain, city, s, a) = &expected[&id];
            assert_eq!(&text("full_name", i), name, "name of {id}");
            assert_eq!(text("email", i).as_ref(), Some(email), "email of {id}");
            assert_eq!(
                text("email_domain", i).as_ref(),
                Some(domain),
                "domain of {id}"
            );
            assert_eq!(&text("city", i), city, "city of {id}");
            let got_score = (!score.is_null(i))
                .then(|| score.as_primitive::<arrow::datatypes::Int64Type>().value(i));
            assert_eq!(&got_score, s, "score of {id}");
            assert_eq!(active.as_boolean().value(i), *a, "active of {id}");
            let micros = signed
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                .value(i);
            let day = micros.div_euclid(86_400_000_000);
            assert_eq!(day, 20_727 + id - 1, "signed_up_at of {id} ({micros})");
            seen += 1;
        }
    }
    assert_eq!(seen, 7);
    assert_eq!(expected[&3].0.as_deref(), Some("Müller, Jürgen"));

    let dlq_dir = scratch.path("ex/.state/contacts-js-transform/dlq/contacts");
    let letters: Vec<Value> = std::fs::read_dir(&dlq_dir)
        .unwrap()
        .flat_map(|f| {
            std::fs::read_to_string(f.unwrap().path())
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(
        letters[0].to_string().contains("not-an-email"),
        "{}",
        letters[0]
    );
}

#[test]
fn a_javascript_invalid_config_fails_the_run_as_a_config_error_naming_the_plugin() {
    let scratch = Scratch::new();
    copy_tree(
        &root().join("examples/04-js-transform"),
        &scratch.path("ex"),
    );
    prepare_example(&scratch.path("ex"));
    let pipeline = scratch.path("ex/pipeline.toml");
    let text = std::fs::read_to_string(&pipeline).unwrap().replace(
        "domain_column = \"email_domain\"",
        "domain_column = \"email_domain\"\nshout = true",
    );
    std::fs::write(&pipeline, text).unwrap();
    for command in ["check", "run"] {
        let out = scratch.host(&[command, "ex/pipeline.toml"]);
        assert_eq!(out.code, 2, "{command}: {out:?}");
        assert!(
            out.stderr.contains("tidy") && out.stderr.contains("unknown key `shout`"),
            "{command}: {}",
            out.stderr
        );
    }
    assert!(
        parquet_files(&scratch.path("ex/out")).is_empty(),
        "nothing is written"
    );
}

/// A project made by `host new plugin --lang js`: the template of `kind` with the name
/// filled in, the contract as wit/plugin.wit and the SDK as lib/.
pub fn new_project(kind: &str, name: &str, parent: &Path) -> PathBuf {
    host_in(
        parent,
        &[
            "new", "plugin", "--lang", "js", "--kind", kind, name, "--dir", ".",
        ],
    )
    .assert_ok();
    let project = parent.join(name);
    for file in [
        "app.js",
        "build.sh",
        "pipeline.toml",
        "lib/ingest.js",
        "wit/plugin.wit",
    ] {
        assert!(project.join(file).is_file(), "the project has no {file}");
    }
    project
}

/// Build a template project with its own build.sh (cached like every component), with the
/// repository's installed tools standing in for the ones build.sh would install.
pub fn build_template(kind: &str, name: &str, project: &Path) {
    let mut modules = app_modules(project);
    modules.push(project.join("build.sh"));
    let key = inputs_key(&modules, &format!("template-{kind}"));
    let wasm_name = format!("{name}.wasm");
    let mut built_here = false;
    let wasm = built(&key, |out| {
        std::fs::create_dir_all(project.join(".tools")).unwrap();
        std::os::unix::fs::symlink(root().join(".tools/js"), project.join(".tools/js")).unwrap();
        let mut command = Command::new(project.join("build.sh"));
        command.current_dir(project);
        run_build(command, &format!("the {kind} template"));
        std::fs::copy(project.join(&wasm_name), out).unwrap();
        built_here = true;
    });
    if built_here {
        assert_eq!(
            sha256_of_pin(&project.join("pipeline.toml")),
            sha256_file(&wasm),
            "build.sh pins what it built"
        );
    } else {
        std::fs::copy(&wasm, project.join(&wasm_name)).unwrap();
        pin(
            &project.join("pipeline.toml"),
            &wasm_name,
            &sha256_file(&wasm),
        );
    }
}

fn sha256_of_pin(pipeline: &Path) -> String {
    std::fs::read_to_string(pipeline)
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("sha256 = \""))
        .map(|v| v.trim_end_matches('"').to_string())
        .expect("a sha256 pin")
}

fn jsonl_rows(dir: &Path) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "jsonl") {
                for line in std::fs::read_to_string(&path).unwrap().lines() {
                    rows.push(serde_json::from_str(line).unwrap());
                }
            }
        }
    }
    rows
}

#[test]
fn the_javascript_transform_template_builds_and_runs() {
    let scratch = Scratch::new();
    let project = new_project("transform", "shout", &scratch.path(""));
    build_template("transform", "shout", &project);
    let run = host_in(&project, &["run", "pipeline.toml"]);
    run.assert_ok();
    let rows = jsonl_rows(&project.join("out"));
    assert!(!rows.is_empty(), "{}", run.stdout);
    for row in &rows {
        let name = row["name"].as_str().unwrap();
        assert_eq!(name, name.trim().to_uppercase(), "{row}");
        assert_eq!(
            row["name_length"].as_i64(),
            Some(name.chars().count() as i64)
        );
    }
    let second = host_in(&project, &["run", "pipeline.toml"]);
    second.assert_ok();
    assert!(second.stdout.contains("no new epoch"), "{}", second.stdout);
    assert_conforms(&project);
}

#[test]
fn the_javascript_source_template_builds_and_runs() {
    let scratch = Scratch::new();
    let project = new_project("source", "tail-logs", &scratch.path(""));
    build_template("source", "tail-logs", &project);
    let run = host_in(&project, &["run", "pipeline.toml"]);
    run.assert_ok();
    let rows = jsonl_rows(&project.join("out"));
    let input_lines: usize = std::fs::read_dir(project.join("input"))
        .unwrap()
        .map(|f| {
            std::fs::read_to_string(f.unwrap().path())
                .unwrap()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .count()
        })
        .sum();
    assert!(!rows.is_empty());
    assert!(rows.len() < input_lines, "one line of the input is broken");
    for row in &rows {
        assert!(
            row["level"].is_string() && row["message"].is_string(),
            "{row}"
        );
    }
    // Appending to an input is read from the position where the last run stopped.
    let first = std::fs::read_dir(project.join("input"))
        .unwrap()
        .map(|f| f.unwrap().path())
        .min()
        .unwrap();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&first)
        .unwrap();
    std::io::Write::write_all(
        &mut file,
        b"2026-11-20T10:00:00Z level=info message=\"appended\"\n",
    )
    .unwrap();
    let again = host_in(&project, &["run", "pipeline.toml"]);
    again.assert_ok();
    assert!(again.stdout.contains("1 rows read"), "{}", again.stdout);
    assert_eq!(jsonl_rows(&project.join("out")).len(), rows.len() + 1);
    assert_conforms(&project);
}

#[test]
fn the_javascript_sink_template_builds_and_runs() {
    let scratch = Scratch::new();
    let project = new_project("sink", "to-jsonl", &scratch.path(""));
    build_template("sink", "to-jsonl", &project);
    let run = host_in(&project, &["run", "pipeline.toml"]);
    run.assert_ok();
    let mut input = csv::Reader::from_path(project.join("input/orders.csv")).unwrap();
    let expected = input.records().count();
    let rows = jsonl_rows(&project.join("out"));
    assert_eq!(rows.len(), expected, "{}", run.stdout);
    // Published by rename: nothing staged is left behind, and a rerun publishes nothing.
    let staged = project.join("out/.staging");
    assert!(
        std::fs::read_dir(&staged).map_or(true, |mut d| d.next().is_none()),
        "staged files are left in {}",
        staged.display()
    );
    let again = host_in(&project, &["run", "pipeline.toml"]);
    again.assert_ok();
    assert_eq!(jsonl_rows(&project.join("out")).len(), expected);
    assert_conforms(&project);
}

#[test]
fn a_javascript_plugin_starts_from_the_compile_cache() {
    let scratch = Scratch::new();
    copy_tree(
        &root().join("examples/04-js-transform"),
        &scratch.path("ex"),
    );
    prepare_example(&scratch.path("ex"));
    // The same pipeline without the JavaScript transform: what the rest of a start costs.
    let text = std::fs::read_to_string(scratch.path("ex/pipeline.toml")).unwrap();
    let start = text.find("[[transform]]").unwrap();
    let end = text.find("[[sink]]").unwrap();
    scratch.write(
        "ex/builtins-only.toml",
        format!("{}{}", &text[..start], &text[end..]),
    );
    let cache = scratch.path("cache");
    let check = |pipeline: &str| {
        let mut command = scratch.command(&["check", pipeline]);
        command.env("INGEST_CACHE_DIR", &cache);
        let started = Instant::now();
        let out = output(command);
        let elapsed = started.elapsed();
        assert_eq!(out.code, 0, "{out:?}");
        elapsed
    };
    // The built-ins compile first, so the first start below compiles only the JS plugin.
    let _ = check("ex/builtins-only.toml");
    let first = check("ex/pipeline.toml");
    let best = |pipeline: &str| (0..3).map(|_| check(pipeline)).min().unwrap();
    let second = best("ex/pipeline.toml");
    let builtins = best("ex/builtins-only.toml");
    let plugin_start = second.saturating_sub(builtins);
    eprintln!(
        "JavaScript plugin start: first `host check` {:.0} ms (compiles), second {:.0} ms \
         (from the cache); the same pipeline without it {:.0} ms: the plugin adds {:.0} ms",
        first.as_secs_f64() * 1e3,
        second.as_secs_f64() * 1e3,
        builtins.as_secs_f64() * 1e3,
        plugin_start.as_secs_f64() * 1e3
    );
    assert!(
        second < first,
        "the second start ({second:?}) is not faster than the first ({first:?})"
    );
    // Generous for a shared two-core machine; the figure printed above is the measurement.
    assert!(
        plugin_start < Duration::from_millis(500),
        "a cached JavaScript plugin adds {plugin_start:?} to a start"
    );
}

#[test]
fn a_javascript_component_asks_for_no_network() {
    let wasm = build_app(&root().join("examples/04-js-transform"), "transform");
    let out = host_in(&root(), &["plugins", "inspect", wasm.to_str().unwrap()]);
    out.assert_ok();
    assert!(
        out.stdout.contains("ingest:plugin/transform@0.1.0"),
        "{}",
        out.stdout
    );
    for denied in ["wasi:http", "wasi:sockets"] {
        assert!(
            !out.stdout.contains(denied),
            "the component imports {denied}:\n{}",
            out.stdout
        );
    }
}

/// A JavaScript transform that exercises the host's imports and the error cases, by mode.
const PROBE_APP: &str = r#"
import { defineTransform, secret, log, parquetEncoder, Transient } from './lib/ingest.js';

export const transform = defineTransform({
  open(config) {
    if (config.mode === 'secret') {
      const value = secret(config.name);
      log('info', `the secret has ${value.length} characters`);
      console.log(`printing it by mistake: ${value}`);
    }
    return {
      process(batch) {
        if (config.mode === 'transient') throw new Transient('upstream busy', 5);
        if (config.mode === 'crash') return batch.column('nope');
        if (config.mode === 'parquet') {
          const encoder = parquetEncoder(batch.schema, { compression: 'snappy' });
          const head = encoder.write(batch);
          const tail = encoder.finish();
          const file = new Uint8Array([...head, ...tail]);
          const magic = String.fromCharCode(...file.slice(0, 4), ...file.slice(-4));
          log('info', `parquet: ${file.length} bytes, ${magic}`);
        }
        return batch;
      },
    };
  },
});
"#;

#[test]
fn javascript_host_imports_and_errors_reach_the_host_as_the_contract_says() {
    let scratch = Scratch::new();
    scratch.write("probe/app.js", PROBE_APP);
    let wasm = build_app(&scratch.path("probe"), "transform");
    scratch.write("data/rows.csv", "id,name\n1,a\n2,b\n");
    let pipeline = |mode: &str, grant: &str| {
        format!(
            r#"[pipeline]
name = "probe-{mode}"
[retry]
max_attempts = 2
initial_backoff = "10ms"
[secrets]
token = {{ env = "TEST_MASK_KEY" }}
[[source]]
plugin = "builtin:file"
fs = ["data"]
[source.config]
path = "data/rows.csv"
stream = "rows"
[[transform]]
name = "probe"
plugin = "{wasm}"
sha256 = "{sha}"
secrets = [{grant}]
[transform.config]
mode = "{mode}"
name = "token"
[[sink]]
plugin = "builtin:file"
fs = ["out-{mode}:rw"]
[sink.config]
path = "out-{mode}"
format = "jsonl"
"#,
            wasm = wasm.display(),
            sha = sha256_file(&wasm),
        )
    };
    let run = |mode: &str, grant: &str| {
        scratch.write(&format!("{mode}.toml"), pipeline(mode, grant));
        let mut command = scratch.command(&["run", &format!("{mode}.toml")]);
        command.env("INGEST_LOG", "info");
        output(command)
    };

    // log and secret: the value reaches the plugin; what it prints is redacted.
    let granted = run("secret", "\"token\"");
    granted.assert_ok();
    assert!(
        granted.stderr.contains("the secret has 32 characters"),
        "{}",
        granted.stderr
    );
    assert!(
        granted
            .stderr
            .contains("printing it by mistake: [redacted]")
            && !granted.stderr.contains(MASK_KEY),
        "{}",
        granted.stderr
    );

    let denied = run("secret", "");
    assert_ne!(denied.code, 0);
    assert!(
        denied.stderr.contains("access denied")
            && denied.stderr.contains("secret `token` is not granted"),
        "{}",
        denied.stderr
    );

    // The host's Parquet encoder, a resource of the host interface.
    let parquet = run("parquet", "");
    parquet.assert_ok();
    assert!(
        parquet.stderr.contains("bytes, PAR1PAR1"),
        "{}",
        parquet.stderr
    );

    // Transient: retried, then reported with its message.
    let transient = run("transient", "");
    assert_eq!(transient.code, 1, "{transient:?}");
    assert!(
        transient.stderr.contains("retrying") && transient.stderr.contains("upstream busy"),
        "{}",
        transient.stderr
    );

    // Any other exception: fatal, with the JavaScript error's message.
    let crash = run("crash", "");
    assert_eq!(crash.code, 1, "{crash:?}");
    assert!(
        crash.stderr.contains("\"probe\"") && crash.stderr.contains("no column nope"),
        "{}",
        crash.stderr
    );
}

//! Python plugins: the Python SDK's Arrow IPC codec agrees with arrow-rs in both directions;
//! components built with componentize-py run in the host (the Python examples and every
//! Python template kind); an error raised in Python reaches the host as its variant; a
//! Python plugin compiled once starts from the compile cache.
//!
//! Components are built once per test process and cached across runs under
//! `target/polyglot/`, keyed by a hash of everything the build reads, so only a change to a
//! plugin, the SDK, the contract or the tool's version rebuilds (≈ 20 s each).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type, SchemaRef};
use sha2::{Digest, Sha256};

use crate::support::*;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ lives in the workspace root")
        .to_path_buf()
}

/// Run a command to success, or panic with what it printed.
fn run(mut command: Command, what: &str) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start {command:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// componentize-py, installed into `.tools/python` by `scripts/polyglot-tools python` when
/// missing (once per test process).
fn componentize_py() -> PathBuf {
    static TOOL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    TOOL.get_or_init(|| {
        let tool = root().join(".tools/python/bin/componentize-py");
        let script = root().join("scripts/polyglot-tools");
        let out = Command::new(&script)
            .arg("python")
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !out.status.success() || !tool.is_file() {
            return Err(format!(
                "installing componentize-py failed; run `scripts/polyglot-tools python` and fix what it reports \
                 (it needs python3 with venv and access to PyPI):\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(tool)
    })
    .clone()
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The componentize-py version `scripts/polyglot-tools` pins: part of every build's key.
fn tool_version() -> String {
    let script = std::fs::read_to_string(root().join("scripts/polyglot-tools")).unwrap();
    script
        .lines()
        .find_map(|l| l.strip_prefix("COMPONENTIZE_PY_VERSION="))
        .expect("scripts/polyglot-tools pins COMPONENTIZE_PY_VERSION")
        .to_string()
}

/// Every file under `dir` (sorted, relative paths), leaving out what a build writes or
/// never reads.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name == "__pycache__" || name.starts_with('.') || name.ends_with(".wasm") {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    files.sort();
    files
}

/// A hash of a build's inputs: the world, the tool version and the named directories' or
/// files' contents.
fn build_key(world: &str, inputs: &[(&str, &Path)]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(tool_version());
    hasher.update(world);
    for (label, path) in inputs {
        let files: Vec<(String, PathBuf)> = if path.is_dir() {
            files_under(path)
                .into_iter()
                .map(|rel| (rel.display().to_string(), path.join(rel)))
                .collect()
        } else {
            vec![(String::new(), path.to_path_buf())]
        };
        for (rel, file) in files {
            hasher.update(format!("\0{label}/{rel}\0"));
            hasher.update(std::fs::read(&file).unwrap());
        }
    }
    hex::encode(&hasher.finalize()[..16])
}

/// The component of the Python plugin whose `app.py` is in `app_dir`, for world
/// `<kind>-plugin`, built with `sdks/python/build.sh`.
pub fn build_python_plugin(app_dir: &Path, kind: &str) -> PathBuf {
    let root = root();
    let world = format!("{kind}-plugin");
    let key = build_key(
        &world,
        &[
            ("app", app_dir),
            ("sdk", &root.join("sdks/python/ingest_plugin")),
            ("build", &root.join("sdks/python/build.sh")),
            ("wit", &root.join("wit/plugin.wit")),
        ],
    );
    build_once(&key, |out| {
        componentize_py();
        let mut build = Command::new(root.join("sdks/python/build.sh"));
        build.arg(app_dir).arg(&world).arg(out);
        run(build, &format!("building {}", app_dir.display()));
    })
}

/// Build the Python plugins of the example in `dir` (a copy): each stage whose
/// `plugin = "X.wasm"` has its source in `X/app.py` gets the component at `X.wasm`, pinned
/// in the pipeline by the SDK's own pinning (what `sdks/python/build.sh` does after a
/// build). Examples without Python plugins are left alone.
pub fn build_example_plugins(dir: &Path) {
    let text = std::fs::read_to_string(dir.join("pipeline.toml")).unwrap();
    let pipeline: toml::Table = toml::from_str(&text).unwrap();
    for kind in ["source", "transform", "sink"] {
        let Some(stages) = pipeline.get(kind).and_then(|s| s.as_array()) else {
            continue;
        };
        for stage in stages {
            let Some(stem) = stage
                .get("plugin")
                .and_then(|p| p.as_str())
                .and_then(|p| p.strip_suffix(".wasm"))
            else {
                continue;
            };
            let app_dir = dir.join(stem);
            if !app_dir.join("app.py").is_file() {
                continue;
            }
            let wasm = format!("{stem}.wasm");
            std::fs::copy(build_python_plugin(&app_dir, kind), dir.join(&wasm)).unwrap();
            let mut pin = Command::new("python3");
            pin.args(["-m", "ingest_plugin.pin", "pipeline.toml", &wasm])
                .current_dir(dir)
                .env("PYTHONPATH", root().join("sdks/python"))
                .env("PYTHONDONTWRITEBYTECODE", "1");
            run(pin, &format!("pinning {wasm}"));
        }
    }
}

/// Copy an example without Python's bytecode caches.
fn copy_tree(from: &Path, to: &Path) {
    crate::support::copy_tree(from, to, &|p| named(p, &["__pycache__"]));
}

/// `host new plugin --lang python --kind KIND NAME`, making the project `dest` (whose last
/// component is NAME): the template with NAME in place of `{{name}}`, the contract at
/// `wit/plugin.wit` and the SDK package at `ingest_plugin/`.
pub fn instantiate_python_template(kind: &str, name: &str, dest: &Path) {
    assert_eq!(dest.file_name().unwrap(), name);
    let parent = dest.parent().unwrap();
    std::fs::create_dir_all(parent).unwrap();
    host_in(
        parent,
        &[
            "new", "plugin", "--lang", "python", "--kind", kind, name, "--dir", ".",
        ],
    )
    .assert_ok();
    assert!(dest.join("ingest_plugin").is_dir() && dest.join("wit/plugin.wit").is_file());
}

/// Build a project made from a template with its own `build.sh` (with the test's
/// componentize-py instead of a venv of its own), through the cache; leaves `NAME.wasm` in
/// the project, pinned in its pipeline.toml.
fn build_template_project(dir: &Path, name: &str, kind: &str) -> PathBuf {
    let wasm = format!("{name}.wasm");
    let key = build_key(
        &format!("template-{kind}"),
        &[
            ("app", &dir.join("app.py")),
            ("build", &dir.join("build.sh")),
            ("sdk", &dir.join("ingest_plugin")),
            ("wit", &dir.join("wit")),
        ],
    );
    let built = build_once(&key, |out| {
        let mut build = Command::new("bash");
        build
            .arg("build.sh")
            .current_dir(dir)
            .env("COMPONENTIZE_PY", componentize_py());
        run(build, &format!("the {kind} template's build.sh"));
        std::fs::copy(dir.join(&wasm), out).unwrap();
    });
    std::fs::copy(&built, dir.join(&wasm)).unwrap();
    let mut pin = Command::new("python3");
    pin.args(["-m", "ingest_plugin.pin", "pipeline.toml", &wasm])
        .current_dir(dir);
    run(pin, "pinning the template's plugin");
    dir.join(wasm)
}

// --- the IPC codec against arrow-rs ------------------------------------------------------

mod golden {
    //! The batches of `sdks/python/tests/cases.py`, built with arrow-rs.

    use std::collections::HashMap;
    use std::sync::Arc;

    use arrow::array::*;
    use arrow::buffer::Buffer;
    use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit};

    pub type Case = (&'static str, SchemaRef, Vec<RecordBatch>);

    fn batch(schema: &SchemaRef, columns: Vec<ArrayRef>) -> RecordBatch {
        RecordBatch::try_new(schema.clone(), columns).unwrap()
    }

    fn nullable(name: &str, ty: DataType) -> Field {
        Field::new(name, ty, true)
    }

    fn primitives() -> Case {
        use DataType::*;
        let schema = Arc::new(Schema::new(vec![
            nullable("null", Null),
            nullable("bool", Boolean),
            nullable("int8", Int8),
            nullable("int16", Int16),
            nullable("int32", Int32),
            nullable("int64", Int64),
            nullable("uint8", UInt8),
            nullable("uint16", UInt16),
            nullable("uint32", UInt32),
            nullable("uint64", UInt64),
            nullable("float16", Float16),
            nullable("float32", Float32),
            nullable("float64", Float64),
            Field::new("int64_required", Int64, false),
        ]));
        // 1.5, null, -0.25, 65504 (the largest half) as IEEE half bits.
        let halves = ArrayData::builder(Float16)
            .len(4)
            .add_buffer(Buffer::from_slice_ref([0x3E00u16, 0, 0xB400, 0x7BFF]))
            .null_bit_buffer(Some(Buffer::from([0b1101u8])))
            .build()
            .unwrap();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(NullArray::new(4)),
            Arc::new(BooleanArray::from(vec![
                Some(true),
                None,
                Some(false),
                Some(true),
            ])),
            Arc::new(Int8Array::from(vec![Some(-128), None, Some(0), Some(127)])),
            Arc::new(Int16Array::from(vec![
                Some(i16::MIN),
                Some(1),
                None,
                Some(i16::MAX),
            ])),
            Arc::new(Int32Array::from(vec![
                Some(i32::MIN),
                Some(2),
                Some(3),
                None,
            ])),
            Arc::new(Int64Array::from(vec![
                Some(i64::MIN),
                None,
                Some(0),
                Some(i64::MAX),
            ])),
            Arc::new(UInt8Array::from(vec![Some(0), Some(255), None, Some(7)])),
            Arc::new(UInt16Array::from(vec![
                Some(0),
                Some(u16::MAX),
                Some(1),
                None,
            ])),
            Arc::new(UInt32Array::from(vec![
                None,
                Some(u32::MAX),
                Some(0),
                Some(1),
            ])),
            Arc::new(UInt64Array::from(vec![
                Some(u64::MAX),
                Some(0),
                None,
                Some(42),
            ])),
            make_array(halves),
            Arc::new(Float32Array::from(vec![
                Some(1.5),
                None,
                Some(-0.25),
                Some(f32::MAX),
            ])),
            Arc::new(Float64Array::from(vec![
                Some(1e300),
                None,
                Some(-2.5),
                Some(0.1),
            ])),
            Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
        ];
        ("primitives", schema.clone(), vec![batch(&schema, columns)])
    }

    fn strings() -> Case {
        let schema = Arc::new(Schema::new(vec![
            nullable("utf8", DataType::Utf8),
            nullable("large_utf8", DataType::LargeUtf8),
            nullable("binary", DataType::Binary),
            nullable("large_binary", DataType::LargeBinary),
            nullable("fixed_size_binary", DataType::FixedSizeBinary(3)),
            Field::new("ascii_required", DataType::Utf8, false),
        ]));
        let text = vec![
            Some("a"),
            None,
            Some("zoë ½ 🎉"),
            Some(""),
            Some("line\nbreak, \"quoted\""),
        ];
        let bytes: Vec<Option<&[u8]>> = vec![
            Some(b"\x00\xff"),
            None,
            Some(b""),
            Some(b"abc"),
            Some(b"\x01"),
        ];
        let fixed = FixedSizeBinaryArray::try_from_sparse_iter_with_size(
            vec![
                Some(b"abc".to_vec()),
                None,
                Some(vec![0, 1, 2]),
                Some(b"xyz".to_vec()),
                Some(b"   ".to_vec()),
            ]
            .into_iter(),
            3,
        )
        .unwrap();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(text.clone())),
            Arc::new(LargeStringArray::from(text)),
            Arc::new(BinaryArray::from(bytes.clone())),
            Arc::new(LargeBinaryArray::from(bytes)),
            Arc::new(fixed),
            Arc::new(StringArray::from(vec!["x", "yy", "zzz", "", "w"])),
        ];
        ("strings", schema.clone(), vec![batch(&schema, columns)])
    }

    fn temporal() -> Case {
        use TimeUnit::*;
        let ts = |unit, tz: Option<&str>| DataType::Timestamp(unit, tz.map(Into::into));
        let schema = Arc::new(Schema::new(vec![
            nullable("date32", DataType::Date32),
            nullable("date64", DataType::Date64),
            nullable("ts_s", ts(Second, None)),
            nullable("ts_ms_utc", ts(Millisecond, Some("UTC"))),
            nullable("ts_us_utc", ts(Microsecond, Some("UTC"))),
            nullable("ts_ns_offset", ts(Nanosecond, Some("+02:00"))),
            nullable("time32_s", DataType::Time32(Second)),
            nullable("time32_ms", DataType::Time32(Millisecond)),
            nullable("time64_us", DataType::Time64(Microsecond)),
            nullable("time64_ns", DataType::Time64(Nanosecond)),
            nullable("duration_s", DataType::Duration(Second)),
            nullable("duration_ms", DataType::Duration(Millisecond)),
            nullable("duration_us", DataType::Duration(Microsecond)),
            nullable("duration_ns", DataType::Duration(Nanosecond)),
        ]));
        // 2024-02-29 is day 19782; noon that day is 1709208000 s after the epoch.
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Date32Array::from(vec![Some(19_782), None, Some(-1)])),
            Arc::new(Date64Array::from(vec![
                Some(19_782 * 86_400_000),
                None,
                Some(-86_400_000),
            ])),
            Arc::new(TimestampSecondArray::from(vec![
                Some(0),
                None,
                Some(1_709_208_000),
            ])),
            Arc::new(
                TimestampMillisecondArray::from(vec![Some(1_709_208_000_123), None, Some(-1)])
                    .with_timezone("UTC"),
            ),
            Arc::new(
                TimestampMicrosecondArray::from(vec![Some(1_709_208_000_123_456), None, Some(0)])
                    .with_timezone("UTC"),
            ),
            Arc::new(
                TimestampNanosecondArray::from(vec![
                    Some(1_709_208_000_123_456_789),
                    None,
                    Some(-1),
                ])
                .with_timezone("+02:00"),
            ),
            Arc::new(Time32SecondArray::from(vec![Some(0), None, Some(86_399)])),
            Arc::new(Time32MillisecondArray::from(vec![
                Some(45_296_789),
                None,
                Some(0),
            ])),
            Arc::new(Time64MicrosecondArray::from(vec![
                Some(45_296_789_012),
                None,
                Some(1),
            ])),
            Arc::new(Time64NanosecondArray::from(vec![
                Some(45_296_789_012_345),
                None,
                Some(0),
            ])),
            Arc::new(DurationSecondArray::from(vec![Some(3600), None, Some(-1)])),
            Arc::new(DurationMillisecondArray::from(vec![
                Some(1500),
                None,
                Some(0),
            ])),
            Arc::new(DurationMicrosecondArray::from(vec![
                Some(1),
                None,
                Some(-86_400_000_000),
            ])),
            Arc::new(DurationNanosecondArray::from(vec![
                Some(1),
                None,
                Some(123_456_789),
            ])),
        ];
        ("temporal", schema.clone(), vec![batch(&schema, columns)])
    }

    fn orders() -> Case {
        let schema = Arc::new(Schema::new(vec![
            nullable("order_id", DataType::Int64),
            nullable("customer_email", DataType::Utf8),
            nullable("amount", DataType::Float64),
            nullable("paid", DataType::Boolean),
            nullable(
                "created_at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ),
            nullable("day", DataType::Date32),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![1001, 1002, 1003])),
            Arc::new(StringArray::from(vec![
                Some("alice@example.com"),
                None,
                Some("zoë@example.fr"),
            ])),
            Arc::new(Float64Array::from(vec![Some(129.9), Some(15.0), None])),
            Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![
                    Some(1_793_524_500_000_000),
                    None,
                    Some(1_793_606_400_500_000),
                ])
                .with_timezone("UTC"),
            ),
            Arc::new(Date32Array::from(vec![Some(20_758), Some(20_758), None])),
        ];
        ("orders", schema.clone(), vec![batch(&schema, columns)])
    }

    fn empty() -> Case {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            nullable("name", DataType::Utf8),
        ]));
        (
            "empty",
            schema.clone(),
            vec![RecordBatch::new_empty(schema)],
        )
    }

    fn schema_only() -> Case {
        let schema = Arc::new(Schema::new(vec![
            nullable("a", DataType::Int64),
            nullable("b", DataType::Utf8),
            nullable(
                "c",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ),
        ]));
        ("schema_only", schema, vec![])
    }

    fn metadata() -> Case {
        let schema = Arc::new(Schema::new_with_metadata(
            vec![
                Field::new("id", DataType::Int64, false)
                    .with_metadata(HashMap::from([("key".into(), "primary".into())])),
                nullable("label", DataType::Utf8),
            ],
            HashMap::from([
                ("origin".into(), "golden".into()),
                ("note".into(), "zoë".into()),
            ]),
        ));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![1, 2])),
            Arc::new(StringArray::from(vec![Some("x"), None])),
        ];
        ("metadata", schema.clone(), vec![batch(&schema, columns)])
    }

    fn sliced() -> Case {
        let schema = Arc::new(Schema::new(vec![
            nullable("n", DataType::Int32),
            nullable("s", DataType::Utf8),
            nullable("b", DataType::Boolean),
        ]));
        let n: Int32Array = (0..10).map(|i| (i % 3 != 0).then_some(i * 10)).collect();
        let s: StringArray = (0..10)
            .map(|i| (i % 4 != 0).then(|| format!("row {i}")))
            .collect();
        let b: BooleanArray = (0..10).map(|i| Some(i % 2 == 0)).collect();
        let whole = batch(&schema, vec![Arc::new(n), Arc::new(s), Arc::new(b)]);
        ("sliced", schema, vec![whole.slice(3, 5)])
    }

    fn multi() -> Case {
        let schema = Arc::new(Schema::new(vec![
            nullable("id", DataType::Int64),
            nullable("word", DataType::Utf8),
        ]));
        let make = |ids: Vec<Option<i64>>, words: Vec<Option<&str>>| {
            batch(
                &schema,
                vec![
                    Arc::new(Int64Array::from(ids)),
                    Arc::new(StringArray::from(words)),
                ],
            )
        };
        let batches = vec![
            make(vec![Some(1), Some(2)], vec![Some("one"), Some("two")]),
            make(vec![], vec![]),
            make(
                vec![Some(3), None, Some(5)],
                vec![None, Some("four"), Some("five")],
            ),
        ];
        ("multi", schema, batches)
    }

    /// The cases the Python SDK reads and writes.
    pub fn cases() -> Vec<Case> {
        vec![
            primitives(),
            strings(),
            temporal(),
            orders(),
            empty(),
            schema_only(),
            metadata(),
            sliced(),
            multi(),
        ]
    }

    /// Streams of types the Python SDK refuses, naming the column.
    pub fn unsupported() -> Vec<Case> {
        let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), Some(2)]),
            None,
        ]);
        let decimal = Decimal128Array::from(vec![Some(12_345), None])
            .with_precision_and_scale(10, 2)
            .unwrap();
        let dictionary: DictionaryArray<Int32Type> = vec!["FR", "US", "FR"].into_iter().collect();
        let one = |name: &'static str, column: &'static str, array: ArrayRef| -> Case {
            let schema = Arc::new(Schema::new(vec![nullable(
                column,
                array.data_type().clone(),
            )]));
            (name, schema.clone(), vec![batch(&schema, vec![array])])
        };
        vec![
            one("unsupported_list", "tags", Arc::new(list)),
            one("unsupported_decimal", "price", Arc::new(decimal)),
            one("unsupported_dictionary", "country", Arc::new(dictionary)),
        ]
    }
}

fn write_stream(schema: &SchemaRef, batches: &[RecordBatch]) -> Vec<u8> {
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), schema).unwrap();
    for batch in batches {
        writer.write(batch).unwrap();
    }
    writer.into_inner().unwrap()
}

fn read_stream(bytes: &[u8]) -> (SchemaRef, Vec<RecordBatch>) {
    let reader = arrow::ipc::reader::StreamReader::try_new(bytes, None).unwrap();
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>().unwrap();
    (schema, batches)
}

fn python(args: &[&str], what: &str) -> String {
    let mut command = Command::new("python3");
    command
        .args(args)
        .current_dir(root().join("sdks/python"))
        .env("PYTHONDONTWRITEBYTECODE", "1");
    run(command, what)
}

#[test]
fn python_sdk_ipc_codec_agrees_with_arrow_rs_both_ways() {
    // 1. The golden files the Python tests read are what arrow-rs writes today.
    let golden_dir = root().join("sdks/python/tests/golden");
    let bless = std::env::var_os("INGEST_BLESS").is_some();
    for (name, schema, batches) in golden::cases().into_iter().chain(golden::unsupported()) {
        let path = golden_dir.join(format!("{name}.arrows"));
        let bytes = write_stream(&schema, &batches);
        if bless {
            std::fs::create_dir_all(&golden_dir).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        assert!(
            std::fs::read(&path).ok().as_deref() == Some(&bytes[..]),
            "{} is not what arrow-rs writes for case {name}; \
             regenerate the golden files with `INGEST_BLESS=1 cargo test python_sdk_ipc`",
            path.display()
        );
    }

    // 2. The Python unit tests (the codec against those files, batches, plugins).
    python(
        &["-m", "unittest", "discover", "-s", "tests"],
        "the Python SDK's unit tests",
    );

    // 3. Python writes every case; arrow-rs reads exactly the batches it built itself.
    let scratch = tempfile::tempdir().unwrap();
    let from_python = scratch.path().join("python");
    let from_rust = scratch.path().join("rust");
    std::fs::create_dir_all(&from_rust).unwrap();
    python(
        &["tests/interop.py", "write", from_python.to_str().unwrap()],
        "writing the cases in Python",
    );
    for (name, schema, batches) in golden::cases() {
        let bytes = std::fs::read(from_python.join(format!("{name}.arrows"))).unwrap();
        let (read_schema, read) = read_stream(&bytes);
        assert_eq!(
            read_schema, schema,
            "schema of case {name} written by Python"
        );
        assert_eq!(read, batches, "batches of case {name} written by Python");
        // 4. ... and writes them again for Python to read back: Python → Rust → Python.
        std::fs::write(
            from_rust.join(format!("{name}.arrows")),
            write_stream(&read_schema, &read),
        )
        .unwrap();
    }
    python(
        &["tests/interop.py", "check", from_rust.to_str().unwrap()],
        "reading back in Python what arrow-rs wrote from Python's streams",
    );
}

// --- examples ---------------------------------------------------------------------------

/// A copy of example `name` in the scratch directory at `ex/`, its Python plugins built.
fn example(scratch: &Scratch, name: &str) -> PathBuf {
    let dir = scratch.path("ex");
    copy_tree(&root().join("examples").join(name), &dir);
    for leftover in ["out", ".state"] {
        let _ = std::fs::remove_dir_all(dir.join(leftover));
    }
    build_example_plugins(&dir);
    dir
}

#[test]
fn example_03_python_transform_keeps_big_paid_orders_with_their_value_in_euros() {
    let scratch = Scratch::new();
    let dir = example(&scratch, "03-python-transform");
    let run = scratch.host(&["run", "ex/pipeline.toml"]);
    run.assert_ok();
    assert!(run.stdout.contains("12 rows read"), "{}", run.stdout);

    // The expected output, computed here from the CSV as the csv crate reads it.
    let rates = HashMap::from([
        ("USD", 0.92),
        ("EUR", 1.0),
        ("GBP", 1.17),
        ("JPY", 0.0061),
        ("SEK", 0.087),
    ]);
    let mut input = csv::Reader::from_path(dir.join("data/orders.csv")).unwrap();
    let headers = input.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let mut expected = std::collections::BTreeMap::new();
    let mut rejected = Vec::new();
    for record in input.records() {
        let record = record.unwrap();
        let id: i64 = record[column("order_id")].parse().unwrap();
        let amount: Option<f64> = record[column("amount")].parse().ok();
        let rate = rates.get(&record[column("currency")]);
        let (Some(amount), Some(rate)) = (amount, rate) else {
            rejected.push(id);
            continue;
        };
        let eur = (amount * rate * 100.0).round() / 100.0;
        if &record[column("status")] == "paid" && eur >= 20.0 {
            expected.insert(id, (eur, record[column("customer_email")].to_string()));
        }
    }
    assert_eq!(expected.len(), 5, "{expected:?}");

    let mut output = std::collections::BTreeMap::new();
    for file in parquet_files(&dir.join("out")) {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&file).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        for batch in reader {
            let batch: RecordBatch = batch.unwrap();
            let ids = batch["order_id"].as_primitive::<Int64Type>();
            let eur = batch["amount_eur"].as_primitive::<Float64Type>();
            let emails = batch["customer_email"].as_string::<i32>();
            assert_eq!(eur.null_count(), 0);
            for row in 0..batch.num_rows() {
                let previous = output.insert(
                    ids.value(row),
                    (eur.value(row), emails.value(row).to_string()),
                );
                assert!(previous.is_none(), "order {} twice", ids.value(row));
            }
        }
    }
    assert_eq!(
        output.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (id, (eur, email)) in &expected {
        let (got_eur, got_email) = &output[id];
        assert!(
            (got_eur - eur).abs() < 1e-9,
            "amount_eur of {id}: {got_eur} != {eur}"
        );
        assert_eq!(got_email, email, "customer_email of {id}");
    }

    let letters = dead_letters(&dir, "python-transform", "orders");
    let mut reasons: Vec<&str> = letters
        .iter()
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    reasons.sort();
    assert_eq!(reasons, ["no amount", "no rate for currency 'BRL'"]);
    assert_eq!(letters.len(), rejected.len());
    assert!(letters
        .iter()
        .all(|l| l["plugin"].as_str().unwrap().contains("big-orders")));
}

#[test]
fn example_05_python_source_reads_the_log_and_dead_letters_lines_that_do_not_parse() {
    let scratch = Scratch::new();
    let dir = example(&scratch, "05-python-source");
    let run = scratch.host(&["run", "ex/pipeline.toml"]);
    run.assert_ok();
    let rows = json_lines(&dir.join("out/access_log"));
    assert_eq!(rows.len(), 6, "{rows:?}");
    let first = &rows[0];
    assert_eq!(first["ip"], "203.0.113.7");
    assert_eq!(first["user"], serde_json::Value::Null);
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/index.html");
    assert_eq!(first["status"], 200);
    assert_eq!(first["bytes"], 2326);
    assert!(
        first["at"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-10T12:55:36"),
        "the time in UTC: {first}"
    );
    assert_eq!(rows[1]["user"], "alice");
    assert_eq!(rows[2]["bytes"], serde_json::Value::Null);
    assert!(
        rows[5]["at"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-11T04:59:59"),
        "-0500 moves to the next day in UTC: {}",
        rows[5]
    );
    let letters = dead_letters(&dir, "python-source", "access_log");
    let mut located: Vec<(&str, &str)> = letters
        .iter()
        .map(|l| {
            (
                l["location"].as_str().unwrap(),
                l["reason"].as_str().unwrap(),
            )
        })
        .collect();
    located.sort();
    assert_eq!(
        located,
        [
            ("data/access.log:4", "not in the common log format"),
            ("data/access.log:8", "bad time '31/Feb/2026:10:00:00 +0000'"),
        ]
    );
    assert!(letters[0]["record"].as_str().unwrap().len() > 10);

    // A replay hands the lines back to the plugin, which still cannot parse them.
    let replay = scratch.host(&["dlq", "replay", "ex/pipeline.toml"]);
    replay.assert_ok();
    assert!(
        replay
            .stdout
            .contains("2 dead letters replayed, 0 rows written, 2 still failing"),
        "{}",
        replay.stdout
    );

    // Lines appended to the log are the only ones the next run reads.
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("data/access.log"))
        .unwrap();
    std::io::Write::write_all(
        &mut log,
        b"192.0.2.1 - - [11/Nov/2026:08:00:00 +0000] \"GET /new HTTP/1.1\" 200 5 \"-\" \"x\"\n",
    )
    .unwrap();
    let again = scratch.host(&["run", "ex/pipeline.toml"]);
    again.assert_ok();
    assert!(
        again.stdout.contains("1 rows read") || again.stdout.contains("1 row read"),
        "{}",
        again.stdout
    );
    let rows = json_lines(&dir.join("out/access_log"));
    assert_eq!(rows.len(), 7);
    assert_eq!(rows[6]["path"], "/new");
}

// --- templates --------------------------------------------------------------------------

/// A project made from the Python template of `kind`, built, in `scratch/NAME`.
pub fn template_project(scratch: &Scratch, kind: &str) -> (PathBuf, &'static str) {
    let name = match kind {
        "source" => "py-lines",
        "transform" => "py-cities",
        _ => "py-jsonl",
    };
    let dir = scratch.path(name);
    instantiate_python_template(kind, name, &dir);
    build_template_project(&dir, name, kind);
    (dir, name)
}

fn run_twice(dir: &Path) -> Output {
    let first = host_in(dir, &["run", "pipeline.toml"]);
    first.assert_ok();
    assert!(
        first.stdout.contains("1 epoch committed"),
        "{}",
        first.stdout
    );
    let second = host_in(dir, &["run", "pipeline.toml"]);
    second.assert_ok();
    assert!(second.stdout.contains("no new epoch"), "{}", second.stdout);
    first
}

#[test]
fn python_transform_template_builds_and_runs_in_its_pipeline() {
    let scratch = Scratch::new();
    let (dir, name) = template_project(&scratch, "transform");
    assert!(!std::fs::read_to_string(dir.join("app.py"))
        .unwrap()
        .contains("{{name}}"));
    run_twice(&dir);
    let rows = json_lines(&dir.join("out/rows"));
    let kept: Vec<(i64, &str, i64)> = rows
        .iter()
        .map(|r| {
            (
                r["id"].as_i64().unwrap(),
                r["city"].as_str().unwrap(),
                r["city_length"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(kept, [(1, "Lisbon", 6), (2, "Porto", 5)]);
    let letters = dead_letters(&dir, name, "rows");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["reason"], "city is empty");
    assert_conforms(&dir);
}

#[test]
fn python_source_template_builds_and_runs_in_its_pipeline() {
    let scratch = Scratch::new();
    let (dir, name) = template_project(&scratch, "source");
    run_twice(&dir);
    let rows = json_lines(&dir.join("out/lines"));
    let lines: Vec<(&str, i64)> = rows
        .iter()
        .map(|r| (r["file"].as_str().unwrap(), r["line"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        lines,
        [
            ("a.txt", 1),
            ("a.txt", 2),
            ("a.txt", 4),
            ("b.txt", 1),
            ("b.txt", 2)
        ]
    );
    assert_eq!(rows[1]["text"], "Zoë wrote the second one.");
    let letters = dead_letters(&dir, name, "lines");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["location"], "input/a.txt:3");
    assert_conforms(&dir);
}

#[test]
fn python_sink_template_builds_and_publishes_each_epoch_once() {
    let scratch = Scratch::new();
    let (dir, _) = template_project(&scratch, "sink");
    let first = run_twice(&dir);
    assert!(
        first.stdout.contains("1 files published") || first.stdout.contains("1 file published"),
        "{}",
        first.stdout
    );
    let published: Vec<_> = std::fs::read_dir(dir.join("out/rows"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(published, ["epoch-0000000001.jsonl"]);
    let rows = json_lines(&dir.join("out/rows"));
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0]["name"], "Ana");
    assert_eq!(rows[0]["joined"], "2026-01-15");
    assert_eq!(rows[2]["score"], serde_json::Value::Null);
    assert_eq!(
        std::fs::read_dir(dir.join("out/.staging/rows"))
            .unwrap()
            .count(),
        0,
        "nothing stays staged"
    );
    assert_conforms(&dir);
}

// --- errors and start-up ----------------------------------------------------------------

/// A transform that fails on demand: `fail_in` (check, open or process) raises `error`.
const FAILING_TRANSFORM: &str = r#"
from ingest_plugin import AccessDenied, DataError, Fatal, InvalidConfig, Transform, Transient, secret


def fail(config):
    error = config["error"]
    if error == "invalid_config":
        raise InvalidConfig("threshold = -1: give a number of 0 or more")
    if error == "transient":
        raise Transient("the service is busy", retry_after_ms=config.get("retry_after_ms"))
    if error == "data":
        raise DataError("row 3 has no id")
    if error == "fatal":
        raise Fatal("the model file is corrupt")
    if error == "secret":
        secret("not_granted")
    if error == "crash":
        return 1 // 0
    raise AssertionError(error)


class Failing(Transform):
    @classmethod
    def check(cls, config):
        if config.get("fail_in") == "check":
            fail(config)

    def __init__(self, config, input_schema):
        super().__init__(config, input_schema)
        if config.get("fail_in") == "open":
            fail(config)

    def process(self, batch):
        if self.config.get("fail_in") == "process":
            fail(self.config)
        return batch
"#;

fn failing_transform() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = polyglot_dir().join("failing-transform");
            std::fs::create_dir_all(&dir).unwrap();
            if std::fs::read_to_string(dir.join("app.py")).ok().as_deref()
                != Some(FAILING_TRANSFORM)
            {
                std::fs::write(dir.join("app.py"), FAILING_TRANSFORM).unwrap();
            }
            build_python_plugin(&dir, "transform")
        })
        .clone()
}

fn failing_pipeline(scratch: &Scratch, config: &str) {
    let plugin = failing_transform();
    scratch.write_orders(&orders(1, 50));
    scratch.write(
        "pipeline.toml",
        format!(
            r#"[pipeline]
name = "failing"
[retry]
max_attempts = 2
initial_backoff = "10ms"
[[source]]
name = "orders"
plugin = "builtin:file"
fs = ["data"]
[source.config]
path = "data/orders.csv"
stream = "orders"
[[transform]]
name = "failing"
plugin = "{}"
sha256 = "{}"
[transform.config]
{config}
[[sink]]
name = "files"
plugin = "builtin:file"
fs = ["out:rw"]
[sink.config]
path = "out"
format = "jsonl"
"#,
            plugin.display(),
            sha256_file(&plugin)
        ),
    );
}

#[test]
fn errors_raised_in_python_reach_the_host_as_their_variant() {
    // InvalidConfig from check: `host check` fails with exit code 2 and the message.
    let scratch = Scratch::new();
    failing_pipeline(&scratch, "fail_in = \"check\"\nerror = \"invalid_config\"");
    let check = scratch.host(&["check", "pipeline.toml"]);
    assert_eq!(check.code, 2, "{check:?}");
    assert!(
        check
            .stderr
            .contains("invalid config: threshold = -1: give a number of 0 or more"),
        "{}",
        check.stderr
    );

    // Transient: retried from the last checkpoint after at least retry_after_ms, then the
    // run fails naming it.
    let scratch = Scratch::new();
    failing_pipeline(
        &scratch,
        "fail_in = \"process\"\nerror = \"transient\"\nretry_after_ms = 400",
    );
    let started = Instant::now();
    let run = scratch.host(&["run", "pipeline.toml"]);
    let elapsed = started.elapsed();
    assert_eq!(run.code, 1, "{run:?}");
    let retries: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("retrying from the last checkpoint"))
        .collect();
    assert_eq!(retries.len(), 1, "{}", run.stderr);
    assert!(retries[0].contains("the service is busy"), "{}", retries[0]);
    assert!(
        run.stderr.contains("the service is busy (transient)"),
        "{}",
        run.stderr
    );
    assert!(
        elapsed >= Duration::from_millis(400),
        "retry_after_ms = 400 was honoured: {elapsed:?}"
    );

    // Any other exception: fatal, not retried, with the traceback's last line.
    let scratch = Scratch::new();
    failing_pipeline(&scratch, "fail_in = \"process\"\nerror = \"crash\"");
    let run = scratch.host(&["run", "pipeline.toml"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("ZeroDivisionError: integer division or modulo by zero")
            || run.stderr.contains("ZeroDivisionError: division by zero"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("retrying"), "{}", run.stderr);

    // DataError and Fatal keep their cases; a secret the plugin was not granted comes
    // back from the host as access-denied, raised in Python and passed on as such.
    for (config, expected, code) in [
        (
            "fail_in = \"open\"\nerror = \"data\"",
            "bad data: row 3 has no id",
            1,
        ),
        (
            "fail_in = \"open\"\nerror = \"fatal\"",
            "the model file is corrupt",
            1,
        ),
        ("fail_in = \"open\"\nerror = \"secret\"", "access denied", 2),
    ] {
        let scratch = Scratch::new();
        failing_pipeline(&scratch, config);
        let run = scratch.host(&["run", "pipeline.toml"]);
        assert_eq!(run.code, code, "{config}: {run:?}");
        assert!(run.stderr.contains(expected), "{config}: {}", run.stderr);
        assert!(
            run.stderr.contains("transform \"failing\""),
            "{}",
            run.stderr
        );
    }
}

/// The fastest of `n` runs of `command`.
fn fastest(n: usize, mut command: impl FnMut() -> Command) -> Duration {
    (0..n)
        .map(|_| {
            let started = Instant::now();
            output(command()).assert_ok();
            started.elapsed()
        })
        .min()
        .unwrap()
}

#[test]
fn a_python_plugin_starts_from_the_compile_cache_in_milliseconds() {
    let scratch = Scratch::new();
    failing_pipeline(&scratch, "fail_in = \"never\"\nerror = \"none\"");
    // The same pipeline without the Python transform: what `host check` costs anyway.
    let text = std::fs::read_to_string(scratch.path("pipeline.toml")).unwrap();
    let start = text.find("[[transform]]").unwrap();
    let end = text.find("[[sink]]").unwrap();
    scratch.write(
        "baseline.toml",
        format!("{}{}", &text[..start], &text[end..]),
    );
    // The first check compiles the component into the cache (unless a test did already).
    scratch.host(&["check", "pipeline.toml"]).assert_ok();
    let cached = fastest(3, || scratch.command(&["check", "pipeline.toml"]));
    let baseline = fastest(3, || scratch.command(&["check", "baseline.toml"]));
    let start = cached.saturating_sub(baseline);
    eprintln!(
        "python plugin start from the compile cache: `host check` {:.0} ms with it, {:.0} ms \
         without it: the plugin ({:.1} MB) starts in {:.0} ms",
        cached.as_secs_f64() * 1e3,
        baseline.as_secs_f64() * 1e3,
        std::fs::metadata(failing_transform()).unwrap().len() as f64 / 1e6,
        start.as_secs_f64() * 1e3,
    );
    // Generous for a loaded 2-core machine (a compile takes 10-30 s); the figure printed
    // above is the one to watch, against a target of 50 ms.
    assert!(
        start < Duration::from_millis(500),
        "a cached Python plugin took {start:?} to start"
    );
}

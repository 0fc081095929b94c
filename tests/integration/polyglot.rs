//! Plugins in three languages in one pipeline: the built-in file source (Rust) → the
//! Python transform template → the JavaScript transform template → the built-in Parquet
//! sink (Rust), with the output read back by the `parquet` crate and checked against what
//! the two transforms are meant to do, row by row.

use std::collections::BTreeMap;
use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::support::*;

/// Every row of every Parquet file under `dir`, each column as text, by `id`.
fn rows_by_id(dir: &Path) -> BTreeMap<String, BTreeMap<String, Option<String>>> {
    let mut rows = BTreeMap::new();
    for file in parquet_files(dir) {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let schema = batch.schema();
            let columns: Vec<_> = batch
                .columns()
                .iter()
                .map(|c| cast(c, &DataType::Utf8).unwrap())
                .collect();
            for row in 0..batch.num_rows() {
                let mut values = BTreeMap::new();
                for (field, column) in schema.fields().iter().zip(&columns) {
                    let text = column.as_string::<i32>();
                    let value = (!text.is_null(row)).then(|| text.value(row).to_string());
                    values.insert(field.name().clone(), value);
                }
                let id = values["id"].clone().unwrap();
                rows.insert(id, values);
            }
        }
    }
    rows
}

#[test]
fn a_python_and_a_javascript_transform_run_in_one_pipeline_between_rust_plugins() {
    let scratch = Scratch::new();
    let (python, python_name) = crate::python::template_project(&scratch, "transform");
    let javascript = crate::javascript::new_project("transform", "shout", &scratch.path(""));
    crate::javascript::build_template("transform", "shout", &javascript);
    let wasm = |dir: &Path, name: &str| dir.join(format!("{name}.wasm"));
    let (py_wasm, js_wasm) = (wasm(&python, python_name), wasm(&javascript, "shout"));
    scratch.write(
        "pipeline.toml",
        format!(
            r#"[pipeline]
name = "polyglot"
on_error = "dlq"
[dlq]
protect = "raw"

[[source]]
name = "people"
plugin = "builtin:file"
fs = ["{python_name}/input"]
[source.config]
path = "{python_name}/input/rows.csv"
stream = "people"

[[transform]]
name = "cities-with-o"
plugin = "{py}"
sha256 = "{py_sha}"
memory = "256MiB"
[transform.config]
column = "city"
contains = "o"

[[transform]]
name = "shout"
plugin = "{js}"
sha256 = "{js_sha}"
memory = "256MiB"
[transform.config]
column = "name"

[[sink]]
name = "lake"
plugin = "builtin:file"
fs = ["out:rw"]
[sink.config]
path = "out"
format = "parquet"
"#,
            py = py_wasm.display(),
            py_sha = sha256_file(&py_wasm),
            js = js_wasm.display(),
            js_sha = sha256_file(&js_wasm),
        ),
    );
    let run = scratch.host(&["run", "pipeline.toml"]);
    run.assert_ok();
    assert!(
        run.stdout.contains("6 rows read")
            && run.stdout.contains("2 rows written")
            && run
                .stdout
                .contains("1 rejected (1 to the dead-letter queue)"),
        "{}",
        run.stdout
    );

    // What the input says, recomputed here: keep the cities with an `o` (Python), add the
    // city's length (Python), upper-case the trimmed name and add its length (JavaScript).
    let input = std::fs::read_to_string(python.join("input/rows.csv")).unwrap();
    let mut expected = BTreeMap::new();
    for line in input.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        let (id, name, city) = (fields[0], fields[1], fields[2]);
        if city.contains('o') {
            let shouted = name.trim().to_uppercase();
            expected.insert(
                id.to_string(),
                (
                    shouted.clone(),
                    shouted.chars().count().to_string(),
                    city.chars().count().to_string(),
                ),
            );
        }
    }
    let rows = rows_by_id(&scratch.path("out"));
    assert_eq!(
        rows.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (id, (name, name_length, city_length)) in &expected {
        let row = &rows[id];
        assert_eq!(row["name"].as_deref(), Some(name.as_str()), "row {id}");
        assert_eq!(row["name_length"].as_deref(), Some(name_length.as_str()));
        assert_eq!(row["city_length"].as_deref(), Some(city_length.as_str()));
    }
    let letters = std::fs::read_dir(scratch.path(".state/polyglot/dlq/people")).unwrap();
    assert_eq!(
        letters.count(),
        1,
        "the row without a city is a dead letter"
    );
}

//! `host schema`: the JSON Schema of pipeline.toml, for editors. Every example and every
//! template validates against it, and a misspelt key does not.

use std::path::{Path, PathBuf};

use crate::support::*;

/// Every pipeline.toml of the examples and the templates.
fn pipeline_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in [
        "examples",
        "templates/rust",
        "templates/python",
        "templates/js",
    ] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let file = entry.unwrap().path().join("pipeline.toml");
            if file.exists() {
                files.push(file);
            }
        }
    }
    files.sort();
    files
}

fn as_json(toml_text: &str) -> serde_json::Value {
    let value: toml::Value = toml::from_str(toml_text).unwrap();
    serde_json::to_value(value).unwrap()
}

#[test]
fn every_example_and_template_validates_against_the_printed_schema() {
    let scratch = Scratch::new();
    let out = scratch.host(&["schema"]);
    out.assert_ok();
    let schema: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(schema["title"], "pipeline.toml");
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");

    let files = pipeline_files();
    assert!(files.len() >= 19, "examples and templates: {files:?}");
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&as_json(&text))
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", file.display());
    }

    // What the host refuses, the schema refuses too: a misspelt key, a wrong type.
    let example = std::fs::read_to_string(&files[0]).unwrap();
    let misspelt = example.replace("[pipeline]", "[pipeline]\nmoed = \"stream\"");
    assert!(!validator.is_valid(&as_json(&misspelt)));
    assert!(!example.contains("[retry]"));
    let mistyped = format!("{example}\n[retry]\nmax_attempts = \"three\"\n");
    assert!(!validator.is_valid(&as_json(&mistyped)));
}

//! `host new plugin`: each generated Rust project builds with its one command and runs in
//! its own test pipeline, twice (the second run finds nothing new). The Python and
//! JavaScript projects are built and run by `python.rs` and `javascript.rs`, which make
//! them with the same command.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

/// The cargo target directory of the plugin build: its compiled dependencies (arrow,
/// serde, wit-bindgen for wasm32-wasip2) are the ones a generated project needs, so a
/// project builds in seconds instead of minutes.
fn shared_target_dir() -> PathBuf {
    PathBuf::from(env!("INGEST_FIXTURES_DIR"))
        .ancestors()
        .nth(2)
        .expect("the fixtures live in <target>/wasm32-wasip2/release")
        .to_path_buf()
}

/// `host new plugin --lang rust --kind KIND NAME` in `parent`, then its `./build.sh`.
fn new_rust_project(parent: &Path, kind: &str, name: &str) -> PathBuf {
    let made = host_in(
        parent,
        &["new", "plugin", "--lang", "rust", "--kind", kind, name],
    );
    made.assert_ok();
    assert!(made.stdout.contains("./build.sh"), "{}", made.stdout);
    let dir = parent.join(name);
    let build = Command::new("bash")
        .arg("build.sh")
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", shared_target_dir())
        .output()
        .expect("bash runs");
    assert!(
        build.status.success(),
        "{kind} project's build.sh failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    assert!(dir.join(format!("{name}.wasm")).is_file());
    dir
}

/// Run the project's pipeline twice: the first run commits, the second finds nothing new.
fn run_twice(dir: &Path) -> Output {
    let first = host_in(dir, &["run", "pipeline.toml"]);
    first.assert_ok();
    let second = host_in(dir, &["run", "pipeline.toml"]);
    second.assert_ok();
    assert!(second.stdout.contains("no new epoch"), "{}", second.stdout);
    first
}

#[test]
fn a_new_rust_transform_builds_and_filters_its_sample_input() {
    let scratch = Scratch::new();
    let dir = new_rust_project(&scratch.path(""), "transform", "scaffold-filter");
    let run = run_twice(&dir);
    assert!(
        run.stdout.contains("6 rows read")
            && run
                .stdout
                .contains("1 rejected (1 to the dead-letter queue)"),
        "{}",
        run.stdout
    );
    let rows = json_lines(&dir.join("out/rows"));
    let cities: Vec<&str> = rows.iter().map(|r| r["city"].as_str().unwrap()).collect();
    assert_eq!(cities, ["Lisbon", "Porto"], "the cities with an `o`");
    assert_conforms(&dir);
}

#[test]
fn a_new_rust_source_builds_and_resumes_after_its_committed_position() {
    let scratch = Scratch::new();
    let dir = new_rust_project(&scratch.path(""), "source", "scaffold-numbers");
    let run = run_twice(&dir);
    assert!(run.stdout.contains("1000 rows written"), "{}", run.stdout);
    let rows = json_lines(&dir.join("out/numbers"));
    let ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, (0..1000).collect::<Vec<_>>());
    assert_conforms(&dir);
}

#[test]
fn a_new_rust_sink_builds_and_publishes_each_epoch_once() {
    let scratch = Scratch::new();
    let dir = new_rust_project(&scratch.path(""), "sink", "scaffold-jsonl");
    run_twice(&dir);
    let rows = json_lines(&dir.join("out/rows"));
    assert_eq!(rows.len(), 6);
    assert_eq!(rows[0]["name"], "Ana");
    assert!(
        !dir.join("out/rows/.staging/open.jsonl").exists(),
        "nothing is left staged"
    );
    assert_conforms(&dir);
}

#[test]
fn a_project_is_never_written_over_and_names_are_checked() {
    let scratch = Scratch::new();
    let parent = scratch.path("");
    let args = [
        "new", "plugin", "--lang", "python", "--kind", "sink", "taken",
    ];
    host_in(&parent, &args).assert_ok();
    let again = host_in(&parent, &args);
    assert_eq!(again.code, 2, "{again:?}");
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    let bad = host_in(
        &parent,
        &[
            "new", "plugin", "--lang", "js", "--kind", "source", "Bad_Name",
        ],
    );
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("lower-case letters"), "{}", bad.stderr);
}

#[test]
fn plugins_compile_warms_the_cache_so_the_next_start_skips_compilation() {
    let scratch = Scratch::new();
    let plugin = fixture("trap_transform");
    let cache = scratch.path("cache");
    let compile = |what: &str| {
        let mut command = host_command(&scratch.path(""), &["plugins", "compile"]);
        command.arg(&plugin).env("INGEST_CACHE_DIR", &cache);
        let out = output(command);
        out.assert_ok();
        assert!(out.stdout.contains(what), "{}", out.stdout);
    };
    compile("compiled into the cache");
    compile("already in the cache");
}

//! `host plugins inspect` shows what a component is and everything it could ask for,
//! without running it.

use crate::support::*;

#[test]
fn inspecting_a_builtin_lists_its_kind_digest_and_imports() {
    let scratch = Scratch::new();
    let out = scratch.host(&["plugins", "inspect", "builtin:source/file"]);
    out.assert_ok();
    assert!(out.stdout.contains("kind:    source"), "{}", out.stdout);
    assert!(out.stdout.contains("sha256:  "), "{}", out.stdout);
    assert!(
        out.stdout.contains("ingest:plugin/types@0.1.0"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("wasi:filesystem/preopens"),
        "{}",
        out.stdout
    );
}

#[test]
fn inspecting_a_file_shows_the_digest_to_pin() {
    let scratch = Scratch::new();
    let fixture = fixture("trap_transform");
    let out = scratch.host(&["plugins", "inspect", fixture.to_str().unwrap()]);
    out.assert_ok();
    assert!(
        out.stdout.contains(&sha256_file(&fixture)),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("kind:    transform"), "{}", out.stdout);
}

#[test]
fn inspecting_something_that_is_not_a_component_is_a_clear_error() {
    let scratch = Scratch::new();
    let path = scratch.write("bogus.wasm", b"not wasm at all");
    let out = scratch.host(&["plugins", "inspect", path.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("not a valid WebAssembly component"),
        "{}",
        out.stderr
    );
}

//! Builds every WebAssembly component of the project — the built-in plugins and the test
//! fixtures in the `plugins/` workspace — for `wasm32-wasip2`, and embeds the built-ins in
//! the `host` binary as `builtin:NAME`. Test fixtures are built alongside (one cargo run
//! shares their dependencies) but only their directory is exported, to the tests.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (kind, builtin name, crate artefact name)
const BUILTINS: &[(&str, &str, &str)] = &[
    ("source", "file", "file_source_component"),
    ("transform", "pii-mask", "pii_mask"),
    ("transform", "dedupe", "dedupe"),
    ("sink", "file", "file_sink_component"),
    ("source", "postgres", "postgres_source"),
    ("sink", "postgres", "postgres_sink"),
    ("source", "mariadb", "mariadb_source"),
    ("source", "nats", "nats_source"),
    ("sink", "nats", "nats_sink"),
    ("source", "webhook", "webhook_source"),
    ("source", "kafka", "kafka_source"),
    ("source", "http", "http_source"),
    ("sink", "s3", "s3_sink"),
    ("source", "s3", "s3_source"),
];

/// Paths whose change means the components must be rebuilt.
const INPUTS: &[&str] = &[
    "wit",
    "plugins/Cargo.toml",
    "plugins/Cargo.lock",
    "plugins/.cargo/config.toml",
    "plugins/sdk",
    "plugins/file-source",
    "plugins/file-source-component",
    "plugins/pii-mask",
    "plugins/dedupe",
    "plugins/file-sink",
    "plugins/file-sink-component",
    "plugins/postgres-client",
    "plugins/postgres-source",
    "plugins/postgres-sink",
    "plugins/mysql-client",
    "plugins/mariadb-source",
    "plugins/nats-client",
    "plugins/nats-source",
    "plugins/nats-sink",
    "plugins/webhook-source",
    "plugins/kafka-client",
    "plugins/kafka-source",
    "plugins/http-client",
    "plugins/http-source",
    "plugins/s3-client",
    "plugins/s3-sink",
    "plugins/s3-source",
    "plugins/zstd-shim-013",
    "plugins/zstd-shim",
    "tests/fixtures",
];

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir
        .parent()
        .expect("host/ lives in the workspace root");
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    for input in INPUTS {
        println!("cargo:rerun-if-changed={}", root.join(input).display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");

    ensure_wasm_target();

    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("wasm-plugins");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    // From the plugin workspace, so that its .cargo/config.toml (the wasm target features)
    // applies.
    cmd.current_dir(root.join("plugins"))
        .arg("build")
        .arg("--release")
        .arg("--target=wasm32-wasip2")
        .arg("--manifest-path")
        .arg(root.join("plugins/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .arg("--workspace");
    // Variables cargo sets for this build script describe the host build; they must not
    // leak into the nested wasm build.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_FEATURE_")
            || key.starts_with("CARGO_CFG_")
            || key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_ENCODED_RUSTFLAGS",
                "RUSTFLAGS",
                "CARGO_TARGET_DIR",
                "CARGO_BUILD_TARGET",
                "TARGET",
                "HOST",
                "OUT_DIR",
                "OPT_LEVEL",
                "PROFILE",
                "DEBUG",
                "RUSTC_WORKSPACE_WRAPPER",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&key.as_ref())
        {
            cmd.env_remove(key.as_ref());
        }
    }
    let status = cmd
        .status()
        .expect("could not run cargo to build the plugins; is cargo on PATH?");
    if !status.success() {
        panic!(
            "building the plugins for wasm32-wasip2 failed (see the errors above); \
             reproduce with `cd plugins && cargo build --release --target wasm32-wasip2 --workspace`"
        );
    }

    let artefacts = target_dir.join("wasm32-wasip2/release");
    // The digest of each embedded component is taken here, once, rather than at every
    // start of the host: hashing the built-ins costs tens of milliseconds on a processor
    // without SHA instructions.
    let mut table =
        String::from("/// Built-in plugins: (kind, name, component bytes, their sha256 in hex).\n");
    table.push_str("pub static BUILTINS: &[(&str, &str, &[u8], &str)] = &[\n");
    for (kind, name, artefact) in BUILTINS {
        let from = artefacts.join(format!("{artefact}.wasm"));
        let to = out_dir.join(format!("{artefact}.wasm"));
        copy(&from, &to);
        let digest = sha256_hex(&fs::read(&to).unwrap());
        writeln!(
            table,
            "    ({kind:?}, {name:?}, include_bytes!({:?}), {digest:?}),",
            to.display().to_string()
        )
        .unwrap();
    }
    table.push_str("];\n");
    fs::write(out_dir.join("builtins.rs"), table).unwrap();
    println!(
        "cargo:rustc-env=INGEST_FIXTURES_DIR={}",
        artefacts.display()
    );

    scaffold_files(root, &out_dir);
}

/// The lowercase hex sha256 of `bytes`, as the host names components.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What `host new plugin` writes, embedded: the project templates of every language and
/// kind, each language's SDK, and the contract.
const SCAFFOLD: &[&str] = &[
    "wit/plugin.wit",
    "templates",
    "sdks/python/ingest_plugin",
    "sdks/js/lib",
    "plugins/sdk/src",
];

fn scaffold_files(root: &Path, out_dir: &Path) {
    let mut files = Vec::new();
    for input in SCAFFOLD {
        let path = root.join(input);
        println!("cargo:rerun-if-changed={}", path.display());
        collect(&path, &mut files);
    }
    files.sort();
    let mut table = String::from(
        "/// Files `host new plugin` writes from: (path in the repository, bytes).
",
    );
    table.push_str("pub static FILES: &[(&str, &[u8])] = &[\n");
    for file in files {
        let relative = file
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        writeln!(
            table,
            "    ({relative:?}, include_bytes!({:?})),",
            file.display().to_string()
        )
        .unwrap();
    }
    table.push_str("];\n");
    fs::write(out_dir.join("scaffold.rs"), table).unwrap();
}

/// Every file under `path`, leaving out what tools leave behind.
fn collect(path: &Path, files: &mut Vec<PathBuf>) {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if ["__pycache__", "node_modules", ".venv", "target", ".tools"].contains(&name)
        || name.ends_with(".pyc")
    {
        return;
    }
    if path.is_dir() {
        for entry in fs::read_dir(path).unwrap() {
            collect(&entry.unwrap().path(), files);
        }
    } else if path.is_file() {
        files.push(path.to_path_buf());
    }
}

fn copy(from: &Path, to: &Path) {
    if let Err(e) = fs::copy(from, to) {
        panic!("the plugin build did not produce {}: {e}", from.display());
    }
}

/// A fresh machine may lack the wasm32-wasip2 standard library; install it through rustup
/// (the toolchain file names it, but rustup does not install targets by itself here).
fn ensure_wasm_target() {
    let installed = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .map(|sysroot| sysroot.join("lib/rustlib/wasm32-wasip2").is_dir())
        .unwrap_or(false);
    if installed {
        return;
    }
    let added = Command::new("rustup")
        .args(["target", "add", "wasm32-wasip2"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !added {
        panic!(
            "the wasm32-wasip2 target is not installed and `rustup target add wasm32-wasip2` \
             failed; install it with that command (or run scripts/setup) and build again"
        );
    }
}

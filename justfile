# Everyday commands. `just --list` shows them.

# Run example 01 end to end (CSV with personal data → masked Parquet).
demo:
    cargo run -- run examples/01-orders-csv-to-parquet/pipeline.toml

# Every test, formatting and lint check (what CI runs).
test:
    scripts/test

# Build the host (and, through its build script, every plugin).
build:
    cargo build --release

# Format and lint the host and the plugins.
lint:
    cargo fmt --all
    cargo fmt --all --manifest-path plugins/Cargo.toml
    cargo clippy --workspace --all-targets -- -D warnings
    cargo clippy --manifest-path plugins/Cargo.toml --workspace --all-targets -- -D warnings

# Show what a plugin could do before granting it anything.
inspect plugin:
    cargo run -- plugins inspect {{plugin}}

# Benchmark job R1 against DuckDB, Polars and PyArrow (prints ratios; results in bench/results/).
bench *args:
    scripts/bench {{args}}

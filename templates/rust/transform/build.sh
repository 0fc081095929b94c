#!/usr/bin/env bash
# Builds {{name}}.wasm and pins its new sha256 in pipeline.toml:
#
#   ./build.sh
#
# Needs rustup's Rust toolchain; the wasm32-wasip2 target is added when missing.
set -euo pipefail
cd "$(dirname "$0")"

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
cargo build --quiet --release --target wasm32-wasip2
target_dir=${CARGO_TARGET_DIR:-target}
cp "$target_dir/wasm32-wasip2/release/$(echo '{{name}}' | tr - _).wasm" {{name}}.wasm
digest=$(sha256sum {{name}}.wasm | cut -d' ' -f1)
sed -i.bak -E "s/^sha256 = \"[0-9a-f]*\"/sha256 = \"$digest\"/" pipeline.toml && rm -f pipeline.toml.bak
echo "built {{name}}.wasm (sha256 $digest), pinned in pipeline.toml"

#!/usr/bin/env bash
# Builds a JavaScript plugin of this repository into a WebAssembly component:
#
#   sdks/js/build.sh APP_DIR source|transform|sink OUT.wasm [--pin PIPELINE.toml]
#
# APP_DIR/app.js is the entry module and imports the SDK as ./lib/ingest.js (the SDK in
# sdks/js/lib is put there for the build). The pinned componentize-js is installed into
# .tools/js on first use (scripts/polyglot-tools js); the contract is wit/plugin.wit.
# With --pin, the plugin's sha256 in PIPELINE.toml is set to the new digest.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
"$root/scripts/polyglot-tools" js
INGEST_JS_TOOLS="$root/.tools/js" INGEST_WIT="$root/wit/plugin.wit" \
    exec "$root/sdks/js/lib/componentize.sh" "$@"

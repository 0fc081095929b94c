#!/usr/bin/env bash
# Builds {{name}}.wasm from app.js and pins its sha256 in pipeline.toml:
#
#   ./build.sh
#
# The first run installs the pinned componentize-js (lib/tools/package-lock.json) into
# .tools/js with npm; later runs only build (about 10 s).
set -euo pipefail
cd "$(dirname "$0")"
if ! cmp -s lib/tools/package-lock.json .tools/js/package-lock.json ||
    [[ ! -f .tools/js/node_modules/@bytecodealliance/componentize-js/src/cli.js ]]; then
    echo "installing componentize-js into .tools/js"
    mkdir -p .tools/js
    cp lib/tools/package.json lib/tools/package-lock.json .tools/js/
    npm ci --prefix .tools/js --ignore-scripts --no-audit --no-fund --loglevel=error
fi
exec lib/componentize.sh . transform {{name}}.wasm --pin pipeline.toml

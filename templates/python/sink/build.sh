#!/usr/bin/env bash
# Builds {{name}}.wasm from app.py and pins its new sha256 in pipeline.toml:
#
#   ./build.sh
#
# Needs python3 (3.10 or newer). The first build installs componentize-py 0.25.1 into .venv;
# set COMPONENTIZE_PY to the path of a componentize-py 0.25.1 to use that one instead.
set -euo pipefail
cd "$(dirname "$0")"

world=sink-plugin
tool=${COMPONENTIZE_PY:-.venv/bin/componentize-py}
if [[ -z ${COMPONENTIZE_PY:-} ]] && ! "$tool" --version 2>/dev/null | grep -qx "componentize-py 0.25.1"; then
    echo "build.sh: installing componentize-py 0.25.1 into .venv"
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check "componentize-py==0.25.1"
fi
# ingest_plugin/_glue holds the entry modules componentize-py looks up for the world.
"$tool" -d wit/plugin.wit -w "$world" componentize \
    -p "ingest_plugin/_glue/${world%-plugin}" -p . \
    ingest_main -o {{name}}.wasm
python3 -m ingest_plugin.pin pipeline.toml {{name}}.wasm

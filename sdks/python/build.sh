#!/usr/bin/env bash
# Builds a Python plugin into a WebAssembly component with componentize-py:
#
#   sdks/python/build.sh APP_DIR WORLD OUT.wasm [PIPELINE.toml]
#
# APP_DIR holds the plugin's app.py (and any modules it imports); WORLD is source-plugin,
# transform-plugin or sink-plugin (or just source, transform, sink). The component gets the
# ingest_plugin package of this directory and targets wit/plugin.wit. Given PIPELINE.toml,
# the sha256 pin of OUT.wasm in it is rewritten to the new digest (componentize-py's
# output differs from build to build, so every build needs a new pin).
#
# Installs componentize-py into .tools/python first when it is missing
# (scripts/polyglot-tools python).
set -euo pipefail

if [[ $# -lt 3 || $# -gt 4 ]]; then
    echo "usage: sdks/python/build.sh APP_DIR WORLD OUT.wasm [PIPELINE.toml]" >&2
    exit 2
fi
app_dir=$1
kind=${2%-plugin}
out=$3
pipeline=${4:-}
root=$(cd "$(dirname "$0")/../.." && pwd)
sdk="$root/sdks/python"

case $kind in
    source | transform | sink) ;;
    *)
        echo "build.sh: unknown world '$2'; use source-plugin, transform-plugin or sink-plugin" >&2
        exit 2
        ;;
esac
if [[ ! -f $app_dir/app.py ]]; then
    echo "build.sh: $app_dir/app.py not found; a plugin's code starts in app.py" >&2
    exit 2
fi

"$root/scripts/polyglot-tools" python
mkdir -p "$(dirname "$out")"
# The glue directory comes first: it holds the modules named after the world's interface
# (source, transform, sink) that componentize-py looks up, which a plugin must not shadow.
"$root/.tools/python/bin/componentize-py" \
    -d "$root/wit/plugin.wit" -w "$kind-plugin" \
    componentize \
    -p "$sdk/ingest_plugin/_glue/$kind" -p "$app_dir" -p "$sdk" \
    ingest_main -o "$out"

if [[ -n $pipeline ]]; then
    PYTHONPATH="$sdk" "$root/.tools/python/bin/python" -m ingest_plugin.pin "$pipeline" "$out"
fi

#!/usr/bin/env bash
# Builds a JavaScript plugin into a WebAssembly component with the pinned componentize-js.
#
#   lib/componentize.sh APP_DIR WORLD OUT.wasm [--pin PIPELINE.toml]
#
# APP_DIR holds app.js (the entry module, which imports ./lib/ingest.js) and any other
# modules it imports; WORLD is source, transform or sink (or source-plugin...). The app's
# .js files and this SDK (as ./lib/) are staged in a temporary directory and built there,
# so the same app builds inside a project made by `host new plugin` and in the repository.
# With --pin, the `sha256 = "..."` of the plugin OUT.wasm in PIPELINE.toml is set to the
# new digest (builds are not bit-for-bit reproducible: every build gets a new digest).
#
# Environment: INGEST_JS_TOOLS, the directory where lib/tools/package.json is installed
# (default APP_DIR/.tools/js); INGEST_WIT, the contract (default APP_DIR/wit/plugin.wit).
#
# Capabilities: the component imports the contract's `host` interface and the WASI the
# JavaScript engine needs (cli stdio, clocks, random, filesystem), which the host grants
# per pipeline; `wasi:http` is disabled (-d http -d fetch-event), so it asks for no network.
set -euo pipefail

usage() {
    echo "usage: $0 APP_DIR source|transform|sink OUT.wasm [--pin PIPELINE.toml]" >&2
    exit 2
}
[[ $# -eq 3 || ( $# -eq 5 && $4 == --pin ) ]] || usage
app_dir=$(cd "$1" && pwd)
world=${2%-plugin}
out=$3
pin=${5:-}
case $world in
    source | transform | sink) ;;
    *) echo "componentize: unknown world '$2'; expected source, transform or sink" >&2; exit 2 ;;
esac
lib=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tools=${INGEST_JS_TOOLS:-$app_dir/.tools/js}
wit=${INGEST_WIT:-$app_dir/wit/plugin.wit}
cli=$tools/node_modules/@bytecodealliance/componentize-js/src/cli.js
if [[ ! -f $cli ]]; then
    echo "componentize: componentize-js is not installed in $tools; install it with" >&2
    echo "  npm ci --prefix $tools (after copying $lib/tools/package*.json there)" >&2
    exit 1
fi
[[ -f $wit ]] || { echo "componentize: no contract at $wit (set INGEST_WIT)" >&2; exit 1; }
[[ -f $app_dir/app.js ]] || { echo "componentize: no $app_dir/app.js (the entry module)" >&2; exit 1; }

stage=$(mktemp -d "${TMPDIR:-/tmp}/ingest-js-build.XXXXXX")
trap 'rm -rf "$stage"' EXIT

# The app's modules (not its data, tools or a copy of the SDK), then the SDK as ./lib/.
(
    cd "$app_dir"
    find . -mindepth 1 \( -name lib -o -name node_modules -o -name '.*' -o -name wit -o -name out \
        -o -name input -o -name data \) -prune -o -type f \( -name '*.js' -o -name '*.mjs' \) -print
) | while read -r file; do
    mkdir -p "$stage/$(dirname "$file")"
    cp "$app_dir/$file" "$stage/$file"
done
mkdir -p "$stage/lib"
cp "$lib"/*.js "$lib/package.json" "$stage/lib/"

# The contract's world, extended with wasi:filesystem so JavaScript can reach the grants.
package=$(sed -n -E 's/^package ([a-z0-9:-]+@[0-9.]+);.*/\1/p' "$wit")
[[ -n $package ]] || { echo "componentize: no package line in $wit" >&2; exit 1; }
mkdir -p "$stage/.wit/deps/contract"
cp "$wit" "$stage/.wit/deps/contract/plugin.wit"
cp -R "$lib/wit/deps/." "$stage/.wit/deps/"
cat >"$stage/.wit/world.wit" <<EOF
package ingest:js-plugin;

world $world-plugin {
    include ${package%@*}/$world-plugin@${package#*@};
    import wasi:filesystem/preopens@0.2.12;
    import wasi:filesystem/types@0.2.12;
}
EOF

mkdir -p "$(dirname "$out")"
out_abs=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
# Milliseconds now (whole seconds where `date` has no %N).
now_ms() {
    local n
    n=$(date +%s%N)
    if [[ $n =~ ^[0-9]+$ ]]; then echo $((n / 1000000)); else echo $(($(date +%s) * 1000)); fi
}
started=$(now_ms)
(
    cd "$stage"
    node "$cli" app.js --wit .wit --world-name "$world-plugin" -d http -d fetch-event -o "$out_abs"
)
elapsed_ms=$(($(now_ms) - started))
if command -v sha256sum >/dev/null; then
    digest=$(sha256sum "$out_abs" | cut -d' ' -f1)
else
    digest=$(shasum -a 256 "$out_abs" | cut -d' ' -f1)
fi
echo "componentize: built $out ($(wc -c <"$out_abs" | tr -d ' ') bytes) in $((elapsed_ms / 1000)).$((elapsed_ms % 1000 / 100)) s; sha256 $digest"

if [[ -n $pin ]]; then
    # Set the sha256 in the table whose plugin is ".../OUT.wasm" (first pass: find that
    # table; second pass: rewrite its sha256 line).
    name=$(basename "$out")
    tmp=$(mktemp "$pin.XXXXXX")
    awk -v name="$name" -v digest="$digest" '
        FNR == 1 { table = 0 }
        /^[[:space:]]*\[/ { table++ }
        FNR == NR {
            if ($0 ~ /^[[:space:]]*plugin[[:space:]]*=/) {
                value = $0; sub(/^[^"]*"/, "", value); sub(/".*/, "", value)
                n = split(value, parts, "/")
                if (parts[n] == name) target = table
            }
            next
        }
        table == target && target != "" && /^[[:space:]]*sha256[[:space:]]*=/ {
            sub(/"[^"]*"/, "\"" digest "\""); found = 1
        }
        { print }
        END { if (!found) exit 3 }
    ' "$pin" "$pin" >"$tmp" || {
        rm -f "$tmp"
        echo "componentize: $pin has no sha256 = \"...\" beside plugin = \".../$name\"" >&2
        exit 1
    }
    mv "$tmp" "$pin"
    echo "componentize: pinned $name in $pin"
fi

"""Rewrite the sha256 pin of a plugin file in a pipeline after a build:

    python3 -m ingest_plugin.pin PIPELINE.toml PLUGIN.wasm

Every stage of PIPELINE.toml whose `plugin = "..."` is PLUGIN.wasm (relative paths are
relative to the pipeline file, as the host reads them) gets `sha256 = "<digest of the
file>"`, replacing the old pin or added under the plugin line. The rest of the file is
left as it was. A build tool: not used inside a component.
"""

import hashlib
import os
import re
import sys

_PLUGIN = re.compile(r'^\s*plugin\s*=\s*"([^"]*)"')
_SHA = re.compile(r'^(\s*sha256\s*=\s*")([^"]*)(".*)$', re.S)


def pin(pipeline, wasm):
    """Pin `wasm` in `pipeline`; returns the digest. Raises ValueError when no stage
    uses the file."""
    with open(wasm, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    base = os.path.dirname(os.path.abspath(pipeline))
    target = os.path.realpath(wasm)
    with open(pipeline, encoding="utf-8") as f:
        lines = f.read().splitlines(keepends=True)

    # Tables (a header line and the lines up to the next header), as [start, end) ranges.
    starts = [0] + [i for i, line in enumerate(lines) if line.lstrip().startswith("[")]
    ends = starts[1:] + [len(lines)]
    pinned = 0
    inserts = []
    for start, end in zip(starts, ends):
        plugin_line = None
        for i in range(start, end):
            match = _PLUGIN.match(lines[i])
            if match and os.path.realpath(os.path.join(base, match.group(1))) == target:
                plugin_line = i
        if plugin_line is None:
            continue
        pinned += 1
        for i in range(start, end):
            match = _SHA.match(lines[i])
            if match:
                lines[i] = match.group(1) + digest + match.group(3)
                break
        else:
            indent = re.match(r"\s*", lines[plugin_line]).group(0)
            inserts.append((plugin_line + 1, f'{indent}sha256 = "{digest}"\n'))
    if not pinned:
        raise ValueError(f'no stage of {pipeline} has plugin = "{os.path.relpath(wasm, base)}"')
    for at, line in reversed(inserts):
        lines.insert(at, line)
    with open(pipeline, "w", encoding="utf-8") as f:
        f.write("".join(lines))
    return digest


def main(argv):
    if len(argv) != 2:
        print("usage: python3 -m ingest_plugin.pin PIPELINE.toml PLUGIN.wasm", file=sys.stderr)
        return 2
    try:
        digest = pin(argv[0], argv[1])
    except (OSError, ValueError) as e:
        print(f"pin: {e}", file=sys.stderr)
        return 1
    print(f'{argv[0]}: {os.path.basename(argv[1])} pinned to sha256 = "{digest}"')
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

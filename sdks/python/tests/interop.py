"""Round trips with arrow-rs, driven by `tests/integration/python.rs`:

    python3 interop.py write DIR   # each case of cases.py as DIR/<case>.arrows
    python3 interop.py check DIR   # each DIR/<case>.arrows must read back as its case
    python3 interop.py copy IN OUT # read each IN/<case>.arrows and write it again to OUT

Exits 1 naming the first case that differs.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cases import CASES  # noqa: E402

from ingest_plugin import Batch, read_ipc, write_ipc  # noqa: E402


def expected(name):
    schema, batches = CASES[name]
    return schema, [Batch(schema, columns) for columns in batches]


def write(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    for name in CASES:
        schema, batches = expected(name)
        with open(os.path.join(out_dir, f"{name}.arrows"), "wb") as f:
            f.write(write_ipc(schema, batches))


def check(in_dir):
    for name in CASES:
        with open(os.path.join(in_dir, f"{name}.arrows"), "rb") as f:
            schema, batches = read_ipc(f.read())
        want_schema, want = expected(name)
        if schema != want_schema:
            raise SystemExit(f"{name}: schema {schema} (metadata {schema.metadata}), expected {want_schema}")
        got = [b.to_pydict() for b in batches]
        if got != [b.to_pydict() for b in want]:
            raise SystemExit(f"{name}: read {got}, expected {[b.to_pydict() for b in want]}")


def copy(in_dir, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    for name in CASES:
        with open(os.path.join(in_dir, f"{name}.arrows"), "rb") as f:
            schema, batches = read_ipc(f.read())
        with open(os.path.join(out_dir, f"{name}.arrows"), "wb") as f:
            f.write(write_ipc(schema, batches))


if __name__ == "__main__":
    command, *dirs = sys.argv[1:]
    {"write": write, "check": check, "copy": copy}[command](*dirs)

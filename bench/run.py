"""The benchmark harness: our host and the peer tools on the same data, in the same run,
alternating, repeated; median wall time, CPU time and peak RSS (from the OS, through
/usr/bin/time -v), rows/s and MB/s, and the ratio ours/peer. Outputs are checked to agree
(row count, and the masked values of a sample of rows) before any figure is printed.
Results go to bench/results/ as Markdown with the machine description.

Variants of our pipeline beside the reference job: HMAC instead of SHA-256, an identity
Wasm transform added (the boundary tax), no masking at all, JSON Lines input (`--jsonl`;
generated once, like the CSV), several source readers sharing the input file in parts
(`--readers N`), and the start-up cost of a 3-plugin pipeline on a 10-row file with a warm
compile cache.

Two builds of our host can be compared in the same alternation: `--baseline PATH` adds
the reference job run by the host binary at PATH, and `--variants sha256` leaves out the
other variants of ours.

The row-wise peers, dlt (`--tools dlt`, about 15k rows/s) and Sling (`--tools sling`,
about 55k rows/s), run on their own smaller data set (`--row-wise-rows`, 500k by default)
beside our pipeline on the same file, and are compared by rows/s. Sling's release on PyPI
masks less than the job asks (see peers.py): its output is checked for the row count and
the rows' keys only.

Usage: python3 bench/run.py [--rows N] [--repeat K] [--tools duckdb,polars,pyarrow,dlt,sling] [--jsonl]
                            [--variants sha256,hmac,identity,nomask] [--baseline PATH]
                            [--readers N]
                            [--row-wise-rows N]
"""

import argparse
import datetime
import glob
import hashlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HOST = os.path.join(ROOT, "target", "release", "host")
KEY = "bench-mask-key"

PIPELINE = """[pipeline]
name = "r1"
[state]
dir = "{work}/state"
[checkpoint]
every_rows = 10000000
every_bytes = "4GiB"
[secrets]
mask_key = {{ env = "BENCH_MASK_KEY" }}
[[source]]
plugin = "builtin:file"
fs = ["{data_dir}"]
{readers}
[source.config]
path = "{data}"
stream = "orders"
{split}
# The column types DuckDB infers from this file, so that every tool writes the same
# Parquet types (the file source infers numbers and booleans; timestamps are declared).
[source.config.schema]
amount = "float64"
created_at = "timestamp"
updated_at = "timestamp"
{extra}
{mask}
[[sink]]
plugin = "builtin:file"
fs = ["{work}/out:rw"]
[sink.config]
path = "{work}/out"
format = "parquet"
compression = "zstd"
"""

MASK = """[dlq]
protect = "mask"

[[transform]]
plugin = "builtin:pii-mask"
secrets = ["mask_key"]
[transform.config]
{key}
[transform.config.columns]
customer_email = "{email_rule}"
phone = "keep-last-4"
"""

# A pass-through transform (the test fixture with no trap configured): the boundary tax.
IDENTITY_WASM = os.path.join(ROOT, "target", "wasm-plugins", "wasm32-wasip2", "release", "trap_transform.wasm")


def pipeline_text(work, data_dir, data, mask, extra, readers=1):
    """The R1 pipeline; with `readers` > 1, that many source instances share the file in
    parts of SPLIT_BYTES."""
    parallel = readers > 1
    return PIPELINE.format(
        work=work,
        data_dir=data_dir,
        data=data,
        mask=mask,
        extra=extra,
        readers=f"readers = {readers}" if parallel else "",
        split=f'split_bytes = "{SPLIT_BYTES}"' if parallel else "",
    )


# Part size when several readers share the input file.
SPLIT_BYTES = "16MiB"


def cpu_model():
    """The processor's model name and whether it has SHA extensions (the digests' speed
    depends on them)."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return platform.processor() or "processor unknown"
    model = next((l.split(":", 1)[1].strip() for l in text.splitlines() if l.startswith("model name")), "?")
    flags = next((l.split(":", 1)[1].split() for l in text.splitlines() if l.startswith("flags")), [])
    return f"{model}, {'with' if 'sha_ni' in flags else 'without'} SHA extensions"


def identity_stage():
    digest = hashlib.sha256(open(IDENTITY_WASM, "rb").read()).hexdigest()
    return f'[[transform]]\nname = "identity"\nplugin = "{IDENTITY_WASM}"\nsha256 = "{digest}"\n'



def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def measure(cmd, env=None):
    """Run cmd under /usr/bin/time -v; return (wall s, cpu s, max rss MiB)."""
    out = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{out.stdout}\n{out.stderr[-3000:]}")
    stats = {}
    for line in out.stderr.splitlines():
        if ":" in line:
            k, _, v = line.strip().rpartition(": ")
            stats[k.strip()] = v.strip()
    wall = stats["Elapsed (wall clock) time (h:mm:ss or m:ss)"].split(":")
    wall_s = sum(float(p) * 60 ** i for i, p in enumerate(reversed(wall)))
    cpu = float(stats["User time (seconds)"]) + float(stats["System time (seconds)"])
    rss = int(stats["Maximum resident set size (kbytes)"]) / 1024
    return wall_s, cpu, rss


# A peer run on the JSON Lines input is named with this suffix.
JSONL_SUFFIX = " (jsonl input)"

# Peers that move rows one at a time: they run on the smaller data set.
ROW_WISE = ("dlt", "sling")

# Peers whose output is checked for the row count and the keys only (see peers.py).
PARTIAL_MASKING = ("sling",)


def sling_package():
    """The Sling release on PyPI with the binary for this machine (later releases fetch it
    from GitHub at run time, which the benchmark machine cannot reach)."""
    arch = "arm64" if platform.machine() == "aarch64" else "amd64"
    return f"sling-linux-{arch}==1.4.11"


def venv(tools):
    path = os.path.join(HERE, ".venv")
    python = os.path.join(path, "bin", "python")
    if not os.path.exists(python):
        sh([sys.executable, "-m", "venv", path])
    wanted = {"duckdb": "duckdb", "duckdb-1t": "duckdb", "polars": "polars", "pyarrow": "pyarrow",
              "dlt": "dlt[parquet,filesystem]==1.31.0", "sling": sling_package()}
    pkgs = sorted({wanted[t] for t in tools} | {"duckdb"})
    sh([python, "-m", "pip", "install", "-q"] + pkgs)
    return python


def verify(python, outputs, rows):
    """Row counts and a sample of masked values must agree across every tool (the first
    is the reference); for the tools in PARTIAL_MASKING, the row count and the sample's
    keys."""
    script = """
import duckdb, json, sys
res = {}
outputs, partial = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for name, path in outputs.items():
    q = f"read_parquet('{path}')"
    n = duckdb.sql(f"SELECT count(*) FROM {q}").fetchall()[0][0]
    columns = "order_id" if name in partial else "order_id, customer_email, phone"
    sample = duckdb.sql(f"SELECT {columns} FROM {q} WHERE order_id IN (1, 2, 777, 99999) ORDER BY order_id").fetchall()
    res[name] = [n, [list(map(str, r)) for r in sample]]
print(json.dumps(res))
"""
    import json

    partial = [name for name in outputs if name in PARTIAL_MASKING]
    out = subprocess.run([python, "-c", script, json.dumps(outputs), json.dumps(partial)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"cannot verify the outputs:\n{out.stderr}")
    res = json.loads(out.stdout)
    ref_name = next(iter(res))
    for name, (n, sample) in res.items():
        if n != rows:
            sys.exit(f"{name} wrote {n} rows, expected {rows}")
        expected = [r[:1] for r in res[ref_name][1]] if name in partial else res[ref_name][1]
        if sample != expected:
            sys.exit(f"masked values differ between {ref_name} and {name}:\n{expected}\n{sample}")
    # And the masks are what they should be, computed here.
    for order_id, email, phone in res[ref_name][1]:
        assert len(email) == 64 and phone.startswith("*"), (order_id, email, phone)


def tiny_run(work, env, name, extra="", host=HOST):
    """Run a 3-plugin pipeline (file → [extra →] pii-mask → Parquet) on a 10-row CSV; the
    first run of each plugin compiles it into the cache. Returns (wall, cpu, rss)."""
    w = os.path.join(work, "tiny")
    src = os.path.join(w, "orders.csv")
    if not os.path.exists(src):
        os.makedirs(w, exist_ok=True)
        sh([sys.executable, os.path.join(HERE, "generate.py"), "10", src])
    run = os.path.join(w, name)
    os.makedirs(run)
    pipeline = os.path.join(run, "pipeline.toml")
    mask = MASK.format(key="", email_rule="sha256")
    with open(pipeline, "w") as f:
        f.write(pipeline_text(run, w, src, mask, extra))
    return measure([host, "run", pipeline], env)


def tiny_startup(work, env):
    """Median wall of `host run` on the 10-row file, with a warm cache."""
    return statistics.median(tiny_run(work, env, f"timed{i}")[0] for i in range(5))


def result_path(args):
    """bench/results/DATE-r1-ROWS[-ab].md, with -2, -3... when a run of the same day is
    already there, so that no earlier result is overwritten."""
    suffix = "-ab" if args.baseline else ""
    stem = os.path.join(HERE, "results", f"{datetime.date.today()}-r1-{args.rows}{suffix}")
    path, n = stem + ".md", 1
    while os.path.exists(path):
        n += 1
        path = f"{stem}-{n}.md"
    return path


def dataset(data_dir, rows):
    """The CSV of `rows` orders, generated once."""
    data = os.path.join(data_dir, f"orders-{rows}.csv")
    if not os.path.exists(data):
        print(f"generating {rows} rows → {data}")
        sh([sys.executable, os.path.join(HERE, "generate.py"), str(rows), data + ".tmp"])
        os.rename(data + ".tmp", data)
    return data


def peer_output(tool, dst):
    """Where `peers.py TOOL INPUT dst` leaves its Parquet (a glob)."""
    return os.path.join(dst, "r1", "orders", "*.parquet") if tool == "dlt" else dst


def row_wise(args, python, env, work, data_dir, peers):
    """Ours and the row-wise `peers` on the smaller data set, alternating; lines of a
    Markdown table."""
    rows = args.row_wise_rows
    data = dataset(data_dir, rows)
    runs = {"ours (sha256)": [], **{peer: [] for peer in peers}}
    outputs = {}
    for rep in range(args.repeat):
        w = os.path.join(work, "row-wise-ours")
        shutil.rmtree(w, ignore_errors=True)
        os.makedirs(w)
        pipeline = os.path.join(w, "pipeline.toml")
        with open(pipeline, "w") as f:
            mask = MASK.format(key="", email_rule="sha256")
            f.write(pipeline_text(w, data_dir, data, mask, ""))
        runs["ours (sha256)"].append(measure([HOST, "run", pipeline], env))
        outputs["ours (sha256)"] = os.path.join(w, "out", "orders", "*.parquet")
        for peer in peers:
            dst = os.path.join(work, f"row-wise-{peer}")
            shutil.rmtree(dst, ignore_errors=True)
            shutil.rmtree(dst + "-pipelines", ignore_errors=True)
            if os.path.isfile(dst):
                os.remove(dst)
            runs[peer].append(measure([python, os.path.join(HERE, "peers.py"), peer, data, dst]))
            outputs[peer] = peer_output(peer, dst)
        print(f"row-wise repetition {rep + 1}/{args.repeat} done", file=sys.stderr)
    verify(python, outputs, rows)
    med = {name: tuple(statistics.median(r[i] for r in rs) for i in range(3)) for name, rs in runs.items()}
    ours = med["ours (sha256)"][0]
    lines = [
        f"Row-wise peers, on {rows:,} orders (median of {args.repeat}, alternating; outputs verified):",
        "",
        "| tool | wall s | CPU s | peak RSS MiB | rows/s | ours ÷ tool (wall) |",
        "|---|---|---|---|---|---|",
    ]
    for name, (wall, cpu, rss) in med.items():
        lines.append(f"| {name} | {wall:.2f} | {cpu:.2f} | {rss:.0f} | {rows / wall:,.0f} | {ours / wall:.3f} |")
    if "sling" in peers:
        lines += ["", "Sling (1.4.11, the last release on PyPI with its binary) hashes the email to the raw "
                  "32-byte digest rather than hex and leaves the phone unmasked: its transforms cannot keep "
                  "the last four characters. Its output is checked for the row count and the rows' keys."]
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tools", default="duckdb,duckdb-1t,polars,pyarrow")
    ap.add_argument("--jsonl", action="store_true", help="also run ours on the data as JSON Lines")
    ap.add_argument("--variants", default="sha256,hmac,identity,nomask", help="variants of ours to run")
    ap.add_argument("--baseline", help="another host binary to run the reference job with (A/B)")
    ap.add_argument("--readers", type=int, default=1, help="also run ours with this many source readers sharing the input")
    ap.add_argument("--row-wise-rows", type=int, default=500_000, help="rows of the data set dlt and Sling run on")
    args = ap.parse_args()
    all_tools = [t for t in args.tools.split(",") if t]
    tools = [t for t in all_tools if t not in ROW_WISE]
    row_peers = [t for t in all_tools if t in ROW_WISE]
    chosen = set(args.variants.split(",")) | {"sha256"}
    if args.baseline and not os.access(args.baseline, os.X_OK):
        sys.exit(f"--baseline {args.baseline}: not an executable file")

    sh(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    data_dir = os.path.join(HERE, "data")
    os.makedirs(data_dir, exist_ok=True)
    data = dataset(data_dir, args.rows)
    jsonl = os.path.join(data_dir, f"orders-{args.rows}.jsonl")
    if args.jsonl and not os.path.exists(jsonl):
        print(f"generating {args.rows} rows → {jsonl}")
        sh([sys.executable, os.path.join(HERE, "generate.py"), str(args.rows), os.devnull, jsonl + ".tmp"])
        os.rename(jsonl + ".tmp", jsonl)
    size_mb = os.path.getsize(data) / 1e6
    python = venv(all_tools)
    if args.jsonl and "duckdb" in tools:
        # DuckDB on the same JSON Lines: the peer for our JSON Lines variant.
        tools.append("duckdb" + JSONL_SUFFIX)
    env = dict(os.environ, BENCH_MASK_KEY=KEY, INGEST_CACHE_DIR=os.path.join(HERE, ".cache"))

    work = tempfile.mkdtemp(prefix="bench-", dir=HERE)
    # name → (host, input, email rule, HMAC key line, extra stage before the masker, mask at
    # all, source readers)
    variants = {"ours (sha256)": (HOST, data, "sha256", "", "", True, 1)}
    if args.baseline:
        variants["baseline (sha256)"] = (args.baseline, data, "sha256", "", "", True, 1)
    if "hmac" in chosen:
        variants["ours (hmac-sha256)"] = (HOST, data, "hmac-sha256", 'key_secret = "mask_key"', "", True, 1)
    if "identity" in chosen:
        variants["ours + identity transform"] = (HOST, data, "sha256", "", identity_stage(), True, 1)
    if "nomask" in chosen:
        variants["ours (no masking)"] = (HOST, data, "", "", "", False, 1)
    if args.readers > 1:
        variants[f"ours, {args.readers} readers"] = (HOST, data, "sha256", "", "", True, args.readers)
    if args.jsonl:
        variants["ours" + JSONL_SUFFIX] = (HOST, jsonl, "sha256", "", "", True, 1)
        if args.readers > 1:
            variants[f"ours{JSONL_SUFFIX}, {args.readers} readers"] = (
                HOST, jsonl, "sha256", "", "", True, args.readers)
    # Warm the compiled-component cache so that no timed run compiles a plugin.
    tiny_run(work, env, "warm")
    tiny_run(work, env, "warm-identity", identity_stage())
    if args.baseline:
        tiny_run(work, env, "warm-baseline", host=args.baseline)
    runs = {name: [] for name in list(variants) + tools}
    outputs = {}
    # name → the file it read
    inputs = {}
    for rep in range(args.repeat):
        for name, (host, src, rule, key, extra, masked, readers) in variants.items():
            w = os.path.join(work, f"v{list(variants).index(name)}")
            shutil.rmtree(w, ignore_errors=True)
            os.makedirs(w)
            pipeline = os.path.join(w, "pipeline.toml")
            mask = MASK.format(key=key, email_rule=rule) if masked else ""
            with open(pipeline, "w") as f:
                f.write(pipeline_text(w, data_dir, src, mask, extra, readers))
            runs[name].append(measure([host, "run", pipeline], env))
            outputs[name] = os.path.join(w, "out", "orders", "*.parquet")
            inputs[name] = src
        for tool in tools:
            src = jsonl if tool.endswith(JSONL_SUFFIX) else data
            peer = tool.removesuffix(JSONL_SUFFIX)
            dst = os.path.join(work, f"{list(runs).index(tool)}.parquet")
            if os.path.exists(dst):
                os.remove(dst)
            runs[tool].append(measure([python, os.path.join(HERE, "peers.py"), peer, src, dst]))
            outputs[tool] = dst
            inputs[tool] = src
        print(f"repetition {rep + 1}/{args.repeat} done", file=sys.stderr)

    med = {name: tuple(statistics.median(r[i] for r in rs) for i in range(3)) for name, rs in runs.items()}
    ours = med["ours (sha256)"][0]
    lines = [
        f"# R1: {args.rows:,} orders, {size_mb:.0f} MB CSV → masked Parquet (zstd)",
        "",
        f"{datetime.date.today()}, {platform.node()}: {os.cpu_count()} vCPUs, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, {platform.platform()}, {cpu_model()}. "
        f"Median of {args.repeat}, alternating. Outputs verified equal (row count, masked sample).",
        "",
        "| tool | wall s | CPU s | peak RSS MiB | rows/s | MB/s | output MB | ours ÷ tool (wall) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    def input_mb(name):
        return os.path.getsize(inputs[name]) / 1e6

    for name, (wall, cpu, rss) in med.items():
        written = sum(os.path.getsize(f) for f in glob.glob(outputs[name])) / 1e6
        lines.append(
            f"| {name} | {wall:.2f} | {cpu:.2f} | {rss:.0f} | {args.rows / wall:,.0f} | {input_mb(name) / wall:.0f} | {written:.0f} | {ours / wall:.2f} |"
        )
    lines.append("")
    jsonl_pair = ("ours" + JSONL_SUFFIX, "duckdb" + JSONL_SUFFIX)
    if all(name in med for name in jsonl_pair):
        ours_jsonl, duckdb_jsonl = (med[name][0] for name in jsonl_pair)
        lines.append(
            f"JSON Lines input ({input_mb(jsonl_pair[0]):.0f} MB): ours {ours_jsonl:.2f} s against "
            f"DuckDB's {duckdb_jsonl:.2f} s ({ours_jsonl / duckdb_jsonl:.2f}x)."
        )
    if "ours + identity transform" in med:
        tax = med["ours + identity transform"][0] / ours - 1
        lines.append(f"Boundary tax (identity Wasm transform added): {tax * 100:+.1f}% wall.")
    startup = tiny_startup(work, env)
    lines.append(
        f"Start-up: a 3-plugin pipeline (file → pii-mask → Parquet) on a 10-row file, warm cache: "
        f"{startup * 1000:.0f} ms wall (median of 5)."
    )
    if row_peers:
        lines += [""] + row_wise(args, python, env, work, data_dir, row_peers)
    report = "\n".join(lines) + "\n"
    print(report)
    verify(python, {k: v for k, v in outputs.items() if "hmac" not in k and "no masking" not in k}, args.rows)
    print("outputs verified: same row count and the same masked values in every tool")
    result = result_path(args)
    with open(result, "w") as f:
        f.write(report)
    print(f"written to {result}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

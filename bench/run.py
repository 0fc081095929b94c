"""The benchmark harness: our host and the peer tools on the same data, in the same run,
alternating (ours first in odd repetitions, the peers first in even ones), repeated;
median wall time with its range, CPU time and peak RSS (from the OS, through
/usr/bin/time -v, for every tool's whole process: start-up counts the same for all),
rows/s and MB/s, and the ratio ours/peer. Every output is verified before any figure is
printed: against DuckDB's output of the same input, on every column (names, types and
values, as multisets of rows) and on distinct order ids. Results go to bench/results/ as
Markdown with the machine description.

DuckDB runs at its default zstd level and at `COMPRESSION_LEVEL 1` (our Parquet is zstd 3,
and 1 for hash-like columns: decision 0005); each ratio is against the faster of the two.
Our reference job runs with the default checkpoint settings (1M-row epochs); `ours, one
epoch` is the same job in a single epoch.

Variants of ours beside the reference job: HMAC instead of SHA-256, an identity Wasm
transform added (the boundary tax, also measured on its own with `--tax N` alternating
pairs), no masking at all, several source readers sharing the input file in parts
(`--readers N`), and the start-up cost of a 3-plugin pipeline on a 10-row file with a warm
compile cache. Other inputs, each with DuckDB on the same file: JSON Lines (`--jsonl`),
Parquet written by DuckDB (`--parquet`), and a partitioned lake (`--partitioned`: the
orders spread over 336 days, example 01's layout partitioned by day against DuckDB's
`PARTITION_BY`, files counted).

Two builds of our host can be compared in the same alternation: `--baseline PATH` adds
the reference job run by the host binary at PATH, and `--variants sha256` leaves out the
other variants of ours.

The row-wise peers, dlt (`--tools dlt`, about 15k rows/s) and Sling (`--tools sling`,
about 55k rows/s), run on their own smaller data set (`--row-wise-rows`, 500k by default)
beside our pipeline on the same file, and are compared by rows/s. Sling's release on PyPI
masks less than the job asks (see peers.py): its output is checked for the row count and
the rows' keys only.

Usage: python3 bench/run.py [--rows N] [--repeat K] [--tools duckdb,polars,pyarrow,dlt,sling]
                            [--jsonl] [--parquet] [--partitioned] [--tax N]
                            [--variants sha256,one-epoch,hmac,identity,nomask] [--baseline PATH]
                            [--readers N] [--row-wise-rows N]
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
{checkpoint}
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
{schema}
{extra}
{mask}
[[sink]]
plugin = "builtin:file"
fs = ["{work}/out:rw"]
[sink.config]
path = "{work}/out"
format = "parquet"
compression = "zstd"
{sink_extra}
"""

# The column types DuckDB infers from the text inputs, so that every tool writes the same
# Parquet types (the file source infers numbers and booleans; timestamps are declared).
# A Parquet input carries its own.
TEXT_SCHEMA = """[source.config.schema]
amount = "float64"
created_at = "timestamp"
updated_at = "timestamp"
"""

# The whole input in one epoch (the default is 1M rows or 256 MiB an epoch).
ONE_EPOCH = """[checkpoint]
every_rows = 1000000000
every_bytes = "64GiB"
"""

# Example 01's lake layout.
BY_DAY = """partition_by = "created_at"
partition_granularity = "day"
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


def pipeline_text(work, data_dir, data, mask, extra, readers=1, checkpoint="", sink_extra=""):
    """The R1 pipeline; with `readers` > 1, that many source instances share the file in
    parts of SPLIT_BYTES."""
    parallel = readers > 1
    return PIPELINE.format(
        work=work,
        data_dir=data_dir,
        data=data,
        mask=mask,
        extra=extra,
        checkpoint=checkpoint,
        sink_extra=sink_extra,
        schema="" if data.endswith(".parquet") else TEXT_SCHEMA,
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
    wanted = {"duckdb": "duckdb", "duckdb-1t": "duckdb", "polars": "polars polars-hash", "pyarrow": "pyarrow",
              "dlt": "dlt[parquet,filesystem]==1.31.0", "sling": sling_package()}
    pkgs = sorted({pkg for t in tools for pkg in wanted[t].split()} | {"duckdb"})
    sh([python, "-m", "pip", "install", "-q"] + pkgs)
    return python


VERIFY = """
import duckdb, json, sys
checks = json.loads(sys.argv[1])
con = duckdb.connect()
con.execute("SET threads = 2")
con.execute("SET enable_progress_bar = false")
out = {}
for c in checks:
    q = f"read_parquet('{c['path']}', hive_partitioning = false)"
    r = f"read_parquet('{c['ref']}', hive_partitioning = false)"
    types = [(n, t) for n, t, *_ in con.sql(f"DESCRIBE SELECT * FROM {q}").fetchall()]
    ref_types = [(n, t) for n, t, *_ in con.sql(f"DESCRIBE SELECT * FROM {r}").fetchall()]
    n, distinct = con.sql(f"SELECT count(*), count(DISTINCT order_id) FROM {q}").fetchall()[0]
    res = {"types": types, "ref_types": ref_types, "rows": n, "distinct": distinct}
    if c["keys_only"]:
        cols = "order_id"
    else:
        cols = ", ".join(f'"{n}"' for n, _ in ref_types if n not in c["skip"])
    res["diff"] = con.sql(
        f"SELECT count(*) FROM ((SELECT {cols} FROM {q} EXCEPT ALL SELECT {cols} FROM {r}) "
        f"UNION ALL (SELECT {cols} FROM {r} EXCEPT ALL SELECT {cols} FROM {q}))").fetchall()[0][0]
    if "customer_email" in c["skip"] and c["masked"]:
        res["bad_digests"] = con.sql(
            f"SELECT count(*) FROM {q} WHERE NOT regexp_full_match(customer_email, '[0-9a-f]{{64}}')"
        ).fetchall()[0][0]
    out[c["name"]] = res
print("RESULT " + json.dumps(out))
"""


def verify(python, checks):
    """Every output against its reference (DuckDB's output of the same input): the same
    column names and types, the same rows as multisets on every column (but those a
    variant changes on purpose: the HMAC variant's e-mail, checked to be 64 hex digits,
    and the unmasked variant's e-mail and phone), and as many distinct order ids as rows. Tools in
    PARTIAL_MASKING are checked on their order ids only. Exits on the first difference;
    returns the lines saying what was checked."""
    import json

    out = subprocess.run([python, "-c", VERIFY, json.dumps(checks)], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"cannot verify the outputs:\n{out.stderr}")
    res = json.loads(next(l for l in reversed(out.stdout.splitlines()) if l.startswith("RESULT "))[7:])
    for c in checks:
        name, r = c["name"], res[c["name"]]
        if r["rows"] != c["rows"] or r["distinct"] != c["rows"]:
            sys.exit(f"{name} wrote {r['rows']} rows with {r['distinct']} distinct order ids, expected {c['rows']}")
        if c["types"] and not c["keys_only"] and r["types"] != r["ref_types"]:
            sys.exit(f"{name}: columns {r['types']} differ from {c['ref_name']}'s {r['ref_types']}")
        if r["diff"]:
            sys.exit(f"{name}: {r['diff']} rows differ from {c['ref_name']}'s output")
        if r.get("bad_digests"):
            sys.exit(f"{name}: {r['bad_digests']} e-mails are not 64 hex digits")
    return [f"Outputs verified: {len(checks)} outputs against DuckDB's output of the same input, on every "
            "column's name, type and values (rows compared as multisets) and on distinct order ids."]


def check(name, path, ref_name, ref, rows, skip=(), masked=True, types=True):
    """One output of `rows` rows to verify against `ref` (the reference tool's output);
    `types`: whether the column types must be the same too."""
    return {"name": name, "path": path, "ref_name": ref_name, "ref": ref, "rows": rows, "skip": list(skip),
            "masked": masked, "keys_only": name in PARTIAL_MASKING, "types": types}


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
    ours_out = outputs.pop("ours (sha256)")
    # dlt writes its own types (its timestamps, its load columns): values are compared on
    # our columns, types are not.
    verify(python, [check(peer, path, "ours (sha256)", ours_out, rows, types=False) for peer, path in outputs.items()])
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


class Job:
    """One timed command of the run: ours (a pipeline written into its own directory) or a
    peer (peers.py). `group`: the input it belongs to (r1, jsonl, parquet, partitioned)."""

    def __init__(self, name, group, src, ours=None, peer=None):
        self.name, self.group, self.src = name, group, src
        self.ours, self.peer = ours, peer
        self.runs = []
        self.output = None

    def run(self, work, env, python, index):
        w = os.path.join(work, f"j{index}")
        shutil.rmtree(w, ignore_errors=True)
        os.makedirs(w)
        if self.ours:
            host, pipeline_args = self.ours
            pipeline = os.path.join(w, "pipeline.toml")
            with open(pipeline, "w") as f:
                f.write(pipeline_text(w, *pipeline_args))
            self.runs.append(measure([host, "run", pipeline], env))
            self.output = os.path.join(w, "out", "orders", "**", "*.parquet")
        else:
            tool, flags = self.peer
            dst = os.path.join(w, "out" if "--partition-by-day" in flags else "out.parquet")
            self.runs.append(measure([python, os.path.join(HERE, "peers.py"), tool, self.src, dst] + flags))
            self.output = os.path.join(dst, "**", "*.parquet") if "--partition-by-day" in flags else dst

    def median(self):
        return tuple(statistics.median(r[i] for r in self.runs) for i in range(3))

    def wall_range(self):
        walls = [r[0] for r in self.runs]
        return min(walls), max(walls)

    def files(self):
        return glob.glob(self.output, recursive=True)


def table(jobs, rows, headline, files=False):
    """A Markdown table of `jobs` with each one's ratio to `headline` (ours ÷ tool)."""
    lines = [
        "| tool | wall s, median (range) | CPU s | peak RSS MiB | rows/s | MB/s | output MB |"
        + (" files |" if files else "") + " ours ÷ tool (wall) |",
        "|---|---|---|---|---|---|---|" + ("---|" if files else "") + "---|",
    ]
    ours = headline.median()[0]
    for job in jobs:
        wall, cpu, rss = job.median()
        lo, hi = job.wall_range()
        written = sum(os.path.getsize(f) for f in job.files()) / 1e6
        mb = os.path.getsize(job.src) / 1e6
        lines.append(
            f"| {job.name} | {wall:.2f} ({lo:.2f}–{hi:.2f}) | {cpu:.2f} | {rss:.0f} | {rows / wall:,.0f} | "
            f"{mb / wall:.0f} | {written:.0f} |" + (f" {len(job.files()):,} |" if files else "")
            + f" {ours / wall:.2f} |"
        )
    return lines


def faster(jobs):
    """The job with the lowest median wall time."""
    return min(jobs, key=lambda j: j.median()[0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tools", default="duckdb,polars,pyarrow")
    ap.add_argument("--jsonl", action="store_true", help="also run ours and DuckDB on the data as JSON Lines")
    ap.add_argument("--parquet", action="store_true", help="also run ours and DuckDB on the data as Parquet")
    ap.add_argument("--partitioned", action="store_true",
                    help="also write a lake partitioned by day, from orders over 336 days")
    ap.add_argument("--partitioned-rows", type=int, default=1_000_000, help="rows of the partitioned job's input")
    ap.add_argument("--tax", type=int, default=0, help="also time the identity transform's tax in N alternating pairs")
    ap.add_argument("--variants", default="sha256,one-epoch,hmac,identity,nomask", help="variants of ours to run")
    ap.add_argument("--baseline", help="another host binary to run the reference job with (A/B)")
    ap.add_argument("--readers", type=int, default=1, help="also run ours with this many source readers sharing the input")
    ap.add_argument("--no-build", action="store_true", help="run target/release/host as it is")
    ap.add_argument("--row-wise-rows", type=int, default=500_000, help="rows of the data set dlt and Sling run on")
    args = ap.parse_args()
    all_tools = [t for t in args.tools.split(",") if t]
    tools = [t for t in all_tools if t not in ROW_WISE]
    row_peers = [t for t in all_tools if t in ROW_WISE]
    chosen = set(args.variants.split(",")) | {"sha256"}
    if args.baseline and not os.access(args.baseline, os.X_OK):
        sys.exit(f"--baseline {args.baseline}: not an executable file")

    if not args.no_build:
        sh(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    data_dir = os.path.join(HERE, "data")
    os.makedirs(data_dir, exist_ok=True)
    data = dataset(data_dir, args.rows)
    python = venv(all_tools + ["duckdb"])
    jsonl = os.path.join(data_dir, f"orders-{args.rows}.jsonl")
    if args.jsonl and not os.path.exists(jsonl):
        print(f"generating {args.rows} rows → {jsonl}")
        sh([sys.executable, os.path.join(HERE, "generate.py"), str(args.rows), os.devnull, jsonl + ".tmp"])
        os.rename(jsonl + ".tmp", jsonl)
    parquet = os.path.join(data_dir, f"orders-{args.rows}.parquet")
    if args.parquet and not os.path.exists(parquet):
        print(f"writing {data} as Parquet (DuckDB, zstd) → {parquet}")
        sh([python, "-c", "import duckdb, sys; duckdb.sql(f\"COPY (SELECT * FROM read_csv('{sys.argv[1]}', "
            "header = true)) TO '{sys.argv[2]}' (FORMAT parquet, COMPRESSION zstd)\")", data, parquet + ".tmp.parquet"])
        os.rename(parquet + ".tmp.parquet", parquet)
    by_day = os.path.join(data_dir, f"orders-{args.partitioned_rows}-336d.csv")
    if args.partitioned and not os.path.exists(by_day):
        print(f"generating {args.partitioned_rows} rows over 336 days → {by_day}")
        sh([sys.executable, os.path.join(HERE, "generate.py"), str(args.partitioned_rows), by_day + ".tmp", "--days", "336"])
        os.rename(by_day + ".tmp", by_day)
    env = dict(os.environ, BENCH_MASK_KEY=KEY, INGEST_CACHE_DIR=os.path.join(HERE, ".cache"))
    sha = MASK.format(key="", email_rule="sha256")

    def ours(name, group, src, host=HOST, mask=sha, extra="", readers=1, checkpoint="", sink_extra=""):
        return Job(name, group, src, ours=(host, (data_dir, src, mask, extra, readers, checkpoint, sink_extra)))

    def peer(name, group, src, tool, *flags):
        return Job(name, group, src, peer=(tool, list(flags)))

    reference = ours("ours (sha256)", "r1", data)
    jobs = [reference]
    if args.baseline:
        jobs.append(ours("baseline (sha256)", "r1", data, host=args.baseline))
    if "one-epoch" in chosen:
        jobs.append(ours("ours, one epoch", "r1", data, checkpoint=ONE_EPOCH))
    if "hmac" in chosen:
        jobs.append(ours("ours (hmac-sha256)", "r1", data,
                         mask=MASK.format(key='key_secret = "mask_key"', email_rule="hmac-sha256")))
    if "identity" in chosen:
        jobs.append(ours("ours + identity transform", "r1", data, extra=identity_stage()))
    if "nomask" in chosen:
        jobs.append(ours("ours (no masking)", "r1", data, mask=""))
    if args.readers > 1:
        jobs.append(ours(f"ours, {args.readers} readers", "r1", data, readers=args.readers))
    duckdb_names = []
    for tool in tools:
        if tool == "duckdb":
            jobs.append(peer("duckdb", "r1", data, "duckdb"))
            jobs.append(peer("duckdb, zstd level 1", "r1", data, "duckdb", "--level", "1"))
            duckdb_names += ["duckdb", "duckdb, zstd level 1"]
        else:
            jobs.append(peer(tool, "r1", data, tool))
    if args.jsonl:
        jobs.append(ours("ours (jsonl input)", "jsonl", jsonl))
        jobs.append(peer("duckdb (jsonl input)", "jsonl", jsonl, "duckdb"))
        jobs.append(peer("duckdb, zstd level 1 (jsonl input)", "jsonl", jsonl, "duckdb", "--level", "1"))
    if args.parquet:
        jobs.append(ours("ours (parquet input)", "parquet", parquet))
        jobs.append(peer("duckdb (parquet input)", "parquet", parquet, "duckdb"))
        jobs.append(peer("duckdb, zstd level 1 (parquet input)", "parquet", parquet, "duckdb", "--level", "1"))
    if args.partitioned:
        jobs.append(ours("ours, partitioned by day", "partitioned", by_day, sink_extra=BY_DAY))
        jobs.append(ours("ours, unpartitioned", "partitioned", by_day))
        jobs.append(peer("duckdb, PARTITION_BY day", "partitioned", by_day, "duckdb", "--partition-by-day"))
        jobs.append(peer("duckdb, zstd level 1, PARTITION_BY day", "partitioned", by_day, "duckdb",
                         "--partition-by-day", "--level", "1"))

    work = tempfile.mkdtemp(prefix="bench-", dir=HERE)
    # Warm the compiled-component cache so that no timed run compiles a plugin.
    tiny_run(work, env, "warm")
    tiny_run(work, env, "warm-identity", identity_stage())
    if args.baseline:
        tiny_run(work, env, "warm-baseline", host=args.baseline)
    for rep in range(args.repeat):
        order = list(enumerate(jobs))
        if rep % 2:
            # The peers first.
            order = [o for o in order if not o[1].ours] + [o for o in order if o[1].ours]
        for index, job in order:
            job.run(work, env, python, index)
        print(f"repetition {rep + 1}/{args.repeat} done", file=sys.stderr)

    # Verify before any figure is printed.
    refs = {"r1": "duckdb", "jsonl": "duckdb (jsonl input)", "parquet": "duckdb (parquet input)",
            "partitioned": "duckdb, PARTITION_BY day"}
    by_name = {job.name: job for job in jobs}
    checks = []
    for job in jobs:
        ref = by_name.get(refs[job.group]) or reference
        if job is ref:
            continue
        skip = {"ours (hmac-sha256)": ["customer_email"], "ours (no masking)": ["customer_email", "phone"]}.get(job.name, [])
        rows = args.partitioned_rows if job.group == "partitioned" else args.rows
        checks.append(check(job.name, job.output, ref.name, ref.output, rows, skip,
                            masked=job.name != "ours (no masking)"))
    verified = verify(python, checks)

    size_mb = os.path.getsize(data) / 1e6
    lines = [
        f"# R1: {args.rows:,} orders, {size_mb:.0f} MB CSV → masked Parquet (zstd)",
        "",
        f"{datetime.date.today()}, {platform.node()}: {os.cpu_count()} vCPUs, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, {platform.platform()}, {cpu_model()}. "
        f"Median of {args.repeat} (range in brackets), alternating: ours first in odd repetitions, the peers "
        "first in even ones. Every tool timed as a whole process (start-up included).",
        "",
    ] + verified + [""]
    r1 = [job for job in jobs if job.group == "r1"]
    lines += table(r1, args.rows, reference) + [""]
    duckdbs = [by_name[n] for n in duckdb_names]
    if duckdbs:
        best = faster(duckdbs)
        lines.append(f"R1 at default epochs against DuckDB at its faster setting ({best.name}): "
                     f"{reference.median()[0] / best.median()[0]:.2f}×.")
    if "ours + identity transform" in by_name:
        tax = by_name["ours + identity transform"].median()[0] / reference.median()[0] - 1
        lines.append(f"Boundary tax (identity Wasm transform added), from the table: {tax * 100:+.1f}% wall.")
    for group, title in (("jsonl", "JSON Lines input"), ("parquet", "Parquet input (written by DuckDB, zstd)")):
        members = [job for job in jobs if job.group == group]
        if not members:
            continue
        mine = members[0]
        best = faster(members[1:])
        lines += ["", f"{title}, {os.path.getsize(mine.src) / 1e6:.0f} MB:", ""]
        lines += table(members, args.rows, mine) + [""]
        lines.append(f"Ours against DuckDB at its faster setting ({best.name}): {mine.median()[0] / best.median()[0]:.2f}×.")
    if args.partitioned:
        members = [job for job in jobs if job.group == "partitioned"]
        mine, flat = members[0], members[1]
        best = faster(members[2:])
        lines += ["", f"A lake partitioned by day: {args.partitioned_rows:,} orders over 336 days "
                  f"({os.path.getsize(by_day) / 1e6:.0f} MB CSV), default epochs:", ""]
        lines += table(members, args.partitioned_rows, mine, files=True) + [""]
        lines.append(f"Partitioned against unpartitioned: {mine.median()[0] / flat.median()[0]:.2f}×; against DuckDB's "
                     f"PARTITION_BY at its faster setting ({best.name}): {mine.median()[0] / best.median()[0]:.2f}×; "
                     f"{len(mine.files()):,} files for {len(best.files()):,} partitions.")
    if args.tax:
        pair = [ours("ours (sha256)", "r1", data), ours("ours + identity transform", "r1", data, extra=identity_stage())]
        for rep in range(args.tax):
            for index, job in enumerate(pair if rep % 2 == 0 else pair[::-1]):
                job.run(work, env, python, 1000 + index)
        base, ident = (job.median()[0] for job in pair)
        lines.append(f"Boundary tax, {args.tax} alternating pairs: {base:.2f} s without the identity transform, "
                     f"{ident:.2f} s with it: {(ident / base - 1) * 100:+.1f}% wall.")
    startup = tiny_startup(work, env)
    lines.append(
        f"Start-up: a 3-plugin pipeline (file → pii-mask → Parquet) on a 10-row file, warm cache: "
        f"{startup * 1000:.0f} ms wall (median of 5)."
    )
    if row_peers:
        lines += [""] + row_wise(args, python, env, work, data_dir, row_peers)
    report = "\n".join(lines) + "\n"
    print(report)
    result = result_path(args)
    with open(result, "w") as f:
        f.write(report)
    print(f"written to {result}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""The Postgres benchmark (`scripts/bench --postgres`): our host against the psql binary
COPY pipe on the same 1M rows of the R1 orders shape, in the same run, alternating,
median of K.

Jobs:
  - PG → PG append: ours (postgres source → postgres sink, append) against
    `psql -c "\\copy (SELECT …) TO STDOUT (FORMAT binary)" | psql -c "\\copy t FROM STDIN (FORMAT binary)"`.
  - PG → PG upsert into a table already holding half the keys: ours (upsert by order_id).
  - PG → Parquet: ours (postgres source → file sink, zstd) against psql's binary COPY to
    /dev/null plus our own CSV → Parquet time on the same rows (R1 without masking).

Targets (the issue's): append ≥ 90% of the pipe's throughput; upsert ≤ 1.5× append's
time; PG → Parquet ≤ 1.2× (COPY to /dev/null + our R1 Parquet time); peak RSS ≤ 150 MiB.
Wall, CPU (client processes; the server's CPU is not in either side's figure) and peak
RSS come from /usr/bin/time -v. Results go to bench/results/DATE-postgres-ROWS.md.

Usage: python3 bench/postgres.py [--rows N] [--repeat K] [--staging] [--tls] [--readers N]

`--staging` adds the sink's staging-table commit protocol (for servers without prepared
transactions) as two more jobs. `--tls` adds PG → PG append and PG → Parquet with
`sslmode = "require"` on both sides. `--readers N` adds PG → Parquet read as N key
ranges by N readers.
"""

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from run import HOST, cpu_model, dataset, measure, pipeline_text  # noqa: E402

DB = "ingest_bench"
PG = ["-h", "127.0.0.1", "-p", "5432", "-U", "postgres", "-X", "-q", "-v", "ON_ERROR_STOP=1"]

COLUMNS = """order_id bigint PRIMARY KEY, customer_email text, customer_name text, phone text,
country text, amount numeric(10,2), currency text, created_at timestamptz,
updated_at timestamptz, status text, notes text"""

SOURCE = """[pipeline]
name = "bench-{job}"
[state]
dir = "{work}/state-{job}"
[checkpoint]
every_rows = 10000000
every_bytes = "4GiB"
[[source]]
plugin = "builtin:postgres"
net = ["127.0.0.1:5432"]
{source_extra}
[source.config]
host = "127.0.0.1"
user = "postgres"
database = "{db}"
tables = ["orders"]
{config_extra}
"""

PG_SINK = """[[sink]]
plugin = "builtin:postgres"
net = ["127.0.0.1:5432"]
{mode}
[sink.config]
host = "127.0.0.1"
user = "postgres"
database = "{db}"
table = "{table}"
pipeline = "bench"
{protocol}"""

FILE_SINK = """[[sink]]
plugin = "builtin:file"
fs = ["{work}/out:rw"]
[sink.config]
path = "{work}/out"
format = "parquet"
compression = "zstd"
"""


def psql(sql, db=DB):
    out = subprocess.run(["psql"] + PG + ["-d", db, "-tA", "-c", sql], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"psql failed: {sql}\n{out.stderr}")
    return out.stdout.strip()


def load(rows, data_dir):
    """The orders table of `rows` rows in database ingest_bench, loaded once."""
    if psql(f"SELECT count(*) FROM pg_database WHERE datname = '{DB}'", db="postgres") == "0":
        psql(f"CREATE DATABASE {DB}", db="postgres")
    have = "-1"
    if psql("SELECT to_regclass('orders') IS NOT NULL") == "t":
        have = psql("SELECT count(*) FROM orders")
    if have != str(rows):
        csv = dataset(data_dir, rows)
        print(f"loading {csv} into {DB}.orders")
        psql(f"DROP TABLE IF EXISTS orders; CREATE TABLE orders ({COLUMNS})")
        psql(f"\\copy orders FROM '{csv}' (FORMAT csv, HEADER true)")
        psql("VACUUM ANALYZE orders")
    return dataset(data_dir, rows)


def reset(table, half=False):
    psql(f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} ({COLUMNS})")
    if half:
        psql(f"INSERT INTO {table} SELECT * FROM orders WHERE order_id % 2 = 0")
        psql(f"VACUUM ANALYZE {table}")
    if psql("SELECT to_regclass('_ingest_epochs') IS NOT NULL") == "t":
        psql("DELETE FROM _ingest_epochs")
    psql("CHECKPOINT")


def bash(script):
    return ["bash", "-c", "set -euo pipefail; " + script]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--staging", action="store_true", help="also run the sink's staging-table protocol")
    ap.add_argument("--tls", action="store_true", help="also run with sslmode = require")
    ap.add_argument("--readers", type=int, default=0, help="also read PG → Parquet as N key ranges")
    args = ap.parse_args()
    if not os.path.exists(HOST):
        sys.exit(f"{HOST} is missing: run `cargo build --release` first")

    data_dir = os.path.join(HERE, "data")
    os.makedirs(data_dir, exist_ok=True)
    csv = load(args.rows, data_dir)
    work = tempfile.mkdtemp(prefix="bench-pg-")
    conn = " ".join(PG) + f" -d {DB}"

    def ours(job, sink, table=None, half=False, source_extra="", config_extra=""):
        def prepare():
            shutil.rmtree(os.path.join(work, f"state-{job}"), ignore_errors=True)
            shutil.rmtree(os.path.join(work, "out"), ignore_errors=True)
            if table:
                reset(table, half)

        path = os.path.join(work, f"{job}.toml")
        with open(path, "w") as f:
            f.write(
                SOURCE.format(job=job, work=work, db=DB, source_extra=source_extra, config_extra=config_extra)
                + sink
            )
        return prepare, [HOST, "run", path]

    jobs = {}
    jobs["psql pipe (append)"] = (
        lambda: reset("pipe_target"),
        bash(
            f"psql {conn} -c \"\\copy (SELECT * FROM orders) TO STDOUT (FORMAT binary)\" | "
            f"psql {conn} -c \"\\copy pipe_target FROM STDIN (FORMAT binary)\""
        ),
    )
    jobs["ours PG → PG append"] = ours(
        "append", PG_SINK.format(mode='write_mode = "append"', db=DB, table="append_target", protocol=""), "append_target"
    )
    jobs["ours PG → PG upsert (half the keys present)"] = ours(
        "upsert",
        PG_SINK.format(
            mode='write_mode = "upsert"\nprimary_key = ["order_id"]', db=DB, table="upsert_target", protocol=""
        ),
        "upsert_target",
        half=True,
    )
    if args.staging:
        # The staging-table commit protocol, for servers without prepared transactions.
        jobs["ours PG → PG append, staging protocol"] = ours(
            "append-staging",
            PG_SINK.format(
                mode='write_mode = "append"', db=DB, table="append_staging", protocol='commit = "staging"\n'
            ),
            "append_staging",
        )
        jobs["ours PG → PG upsert, staging protocol"] = ours(
            "upsert-staging",
            PG_SINK.format(
                mode='write_mode = "upsert"\nprimary_key = ["order_id"]',
                db=DB,
                table="upsert_staging",
                protocol='commit = "staging"\n',
            ),
            "upsert_staging",
            half=True,
        )
    jobs["psql binary COPY to /dev/null"] = (
        lambda: None,
        bash(f"psql {conn} -c \"\\copy (SELECT * FROM orders) TO STDOUT (FORMAT binary)\" > /dev/null"),
    )
    jobs["ours PG → Parquet"] = ours("parquet", FILE_SINK.format(work=work))
    if args.tls:
        tls = 'sslmode = "require"\n'
        jobs["ours PG → PG append, TLS"] = ours(
            "append-tls",
            PG_SINK.format(mode='write_mode = "append"', db=DB, table="append_tls", protocol=tls),
            "append_tls",
            config_extra=tls,
        )
        jobs["ours PG → Parquet, TLS"] = ours("parquet-tls", FILE_SINK.format(work=work), config_extra=tls)
    if args.readers > 1:
        jobs[f"ours PG → Parquet, {args.readers} readers over key ranges"] = ours(
            f"parquet-{args.readers}-readers",
            FILE_SINK.format(work=work),
            source_extra=f"readers = {args.readers}",
            config_extra=f"split_rows = {max(1, args.rows // args.readers)}",
        )
    r1 = os.path.join(work, "r1.toml")
    with open(r1, "w") as f:
        f.write(pipeline_text(work, data_dir, csv, mask="", extra=""))

    def r1_prepare():
        shutil.rmtree(os.path.join(work, "state"), ignore_errors=True)
        shutil.rmtree(os.path.join(work, "out"), ignore_errors=True)

    jobs["ours R1 CSV → Parquet (no masking)"] = (r1_prepare, [HOST, "run", r1])

    results = {name: [] for name in jobs}
    env = dict(os.environ, BENCH_MASK_KEY="bench-mask-key")
    # Compiling the plugins happens once per plugin version and is not what is measured:
    # one untimed run of each of ours fills the compile cache.
    for name, (prepare, cmd) in jobs.items():
        if cmd[0] == HOST:
            prepare()
            subprocess.run(cmd, env=env, check=True, capture_output=True)
    for i in range(args.repeat):
        for name, (prepare, cmd) in jobs.items():
            prepare()
            wall, cpu, rss = measure(cmd, env=env)
            results[name].append((wall, cpu, rss))
            print(f"  run {i + 1}: {name}: {wall:.2f} s wall, {cpu:.2f} s CPU, {rss:.0f} MiB")

    # The copies agree with the source before any figure is shown.
    tables = ["pipe_target", "append_target", "upsert_target"]
    if args.staging:
        tables += ["append_staging", "upsert_staging"]
    if args.tls:
        tables += ["append_tls"]
    for table in tables:
        diff = psql(
            f"SELECT count(*) FROM ((TABLE orders EXCEPT TABLE {table}) UNION ALL (TABLE {table} EXCEPT TABLE orders)) d"
        )
        if diff != "0":
            sys.exit(f"{table} differs from orders in {diff} rows")

    med = {n: tuple(statistics.median(r[k] for r in rs) for k in range(3)) for n, rs in results.items()}
    pipe = med["psql pipe (append)"][0]
    append = med["ours PG → PG append"][0]
    upsert = med["ours PG → PG upsert (half the keys present)"][0]
    parquet = med["ours PG → Parquet"][0]
    budget = med["psql binary COPY to /dev/null"][0] + med["ours R1 CSV → Parquet (no masking)"][0]
    # The target is the issue's jobs' (one reader); more readers hold more batches.
    peak = max(med[n][2] for n in med if n.startswith("ours PG") and "readers" not in n)
    lines = [
        f"# Postgres benchmark, {args.rows} rows of the R1 orders shape ({datetime.date.today()})",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}; "
        f"{psql('SELECT version()')}.",
        f"Median of {args.repeat}, alternating. Command: `scripts/bench --postgres --rows {args.rows} --repeat {args.repeat}"
        + (" --staging" if args.staging else "")
        + (" --tls" if args.tls else "")
        + (f" --readers {args.readers}" if args.readers > 1 else "")
        + "`.",
        "",
        "| job | wall s | CPU s (client) | peak RSS MiB | rows/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, (wall, cpu, rss) in med.items():
        lines.append(f"| {name} | {wall:.2f} | {cpu:.2f} | {rss:.0f} | {args.rows / wall:,.0f} |")
    lines += [
        "",
        "| target | figure | met |",
        "|---|---:|:---:|",
        f"| append ≥ 90% of the psql pipe's throughput | {pipe / append:.0%} | {'yes' if pipe / append >= 0.9 else 'no'} |",
        f"| upsert ≤ 1.5× append's time | {upsert / append:.2f}× | {'yes' if upsert / append <= 1.5 else 'no'} |",
        f"| PG → Parquet ≤ 1.2× (COPY to /dev/null + R1 Parquet) | {parquet / budget:.2f}× | {'yes' if parquet / budget <= 1.2 else 'no'} |",
        f"| peak RSS ≤ 150 MiB | {peak:.0f} MiB | {'yes' if peak <= 150 else 'no'} |",
    ]
    report = "\n".join(lines) + "\n"
    print()
    print(report)
    stem = os.path.join(HERE, "results", f"{datetime.date.today()}-postgres-{args.rows}")
    path, n = stem + ".md", 1
    while os.path.exists(path):
        n += 1
        path = f"{stem}-{n}.md"
    with open(path, "w") as f:
        f.write(report)
    print(f"written to {path}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

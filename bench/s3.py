"""Object storage and HTTP APIs: R1 from S3 to Parquet on S3 against R1 on local files, in
the same run; records/s from the HTTP source against a fixed server latency; and, with
`--kills N`, R1-shaped objects from S3 to Parquet on S3 with the run killed N times.

The S3-compatible server is the one `scripts/s3-setup` starts on 127.0.0.1:5010. The input
is R1's CSV (bench/generate.py) cut at row boundaries into `--objects` files: the local job
reads them from a directory, the S3 job as objects under a prefix; both mask and write
Parquet (zstd), one epoch per run as in bench/run.py. Runs alternate; medians of
`--repeat`. Outputs are verified equal (row count, distinct ids, a masked sample).

Usage: scripts/bench --s3 [--rows N] [--objects K] [--repeat R]
                          [--http-pages P] [--page-size S] [--latency-ms L]
                          [--kills N] [--kill-bytes B]
"""

import argparse
import csv
import datetime
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import run  # noqa: E402  (the R1 harness: data set, venv, timing)

ENDPOINT = "http://127.0.0.1:5010"
BOTO3 = "boto3==1.44.8"

SOURCES = {
    "local": """[[source]]
plugin = "builtin:file"
fs = ["{parts}"]
[source.config]
path = "{parts}/*.csv"
stream = "orders"
""",
    "s3": """[[source]]
plugin = "builtin:s3"
{grants}[source.config]
{bucket_keys}prefix = "in/"
glob = "*.csv"
staging = "{work}/staging/in"
format = "csv"
stream = "orders"
""",
}

# The grants and bucket keys the S3 source and sink share.
GRANTS = """http = ["{endpoint}/"]
fs = ["{work}/staging:rw"]
secrets = ["s3_id", "s3_secret"]
"""
BUCKET_KEYS = """endpoint = "{endpoint}"
path_style = true
bucket = "{bucket}"
access_key_id_secret = "s3_id"
secret_access_key_secret = "s3_secret"
"""

SINKS = {
    "local": """[[sink]]
plugin = "builtin:file"
fs = ["{work}/out:rw"]
[sink.config]
path = "{work}/out"
format = "parquet"
compression = "zstd"
""",
    "s3": """[[sink]]
plugin = "builtin:s3"
{grants}[sink.config]
{bucket_keys}prefix = "{out_prefix}"
staging = "{work}/staging/out"
format = "parquet"
compression = "zstd"
""",
}

PIPELINE = """[pipeline]
name = "r1-{kind}"
[state]
dir = "{work}/state"
[checkpoint]
every_rows = {every_rows}
every_bytes = "4GiB"
[secrets]
mask_key = {{ env = "BENCH_MASK_KEY" }}
s3_id = {{ env = "BENCH_S3_ID" }}
s3_secret = {{ env = "BENCH_S3_SECRET" }}
{source}[source.config.schema]
amount = "float64"
created_at = "timestamp"
updated_at = "timestamp"
{mask}
{sink}"""


def in_venv():
    """Run under bench/.venv with duckdb and boto3 (re-executing this script there)."""
    if os.environ.get("BENCH_S3_VENV") == "1":
        return
    python = run.venv(["duckdb"])
    run.sh([python, "-m", "pip", "install", "-q", BOTO3])
    os.environ["BENCH_S3_VENV"] = "1"
    os.execv(python, [python, os.path.abspath(__file__)] + sys.argv[1:])


def s3():
    import boto3

    return boto3.client("s3", endpoint_url=ENDPOINT, aws_access_key_id="bench",
                        aws_secret_access_key="bench", region_name="us-east-1")


def empty_bucket(client, bucket, prefix=""):
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=o["Key"])


def cut(data, parts_dir, objects):
    """R1's CSV cut at row boundaries into `objects` files of about equal size, once."""
    done = os.path.join(parts_dir, "done")
    if os.path.exists(done):
        return sorted(os.path.join(parts_dir, f) for f in os.listdir(parts_dir) if f.endswith(".csv"))
    shutil.rmtree(parts_dir, ignore_errors=True)
    os.makedirs(parts_dir)
    size = os.path.getsize(data)
    print(f"cutting {data} into {objects} parts → {parts_dir}", file=sys.stderr)
    with open(data, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        paths, n, out, writer = [], 0, None, None
        for row in reader:
            if out is None or (out.tell() > size / objects and n < objects):
                if out:
                    out.close()
                paths.append(os.path.join(parts_dir, f"part-{len(paths):03d}.csv"))
                out = open(paths[-1], "w", newline="")
                writer = csv.writer(out, lineterminator="\n")
                writer.writerow(header)
                n += 1
            writer.writerow(row)
        out.close()
    open(done, "w").close()
    return paths


def upload(client, bucket, paths, prefix="in/"):
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=64 << 20)
    for path in paths:
        client.upload_file(path, bucket, prefix + os.path.basename(path), Config=config)


def download(client, bucket, prefix, dst):
    os.makedirs(dst, exist_ok=True)
    n = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            client.download_file(bucket, o["Key"], os.path.join(dst, f"{n:05d}.parquet"))
            n += 1
    return n


def pipeline(kind, work, parts, bucket, out_prefix="out/", every_rows=10_000_000):
    source, sink = {"local": ("local", "local"), "s3": ("s3", "s3"),
                    "s3-in": ("s3", "local"), "s3-out": ("local", "s3")}[kind]
    fill = dict(work=work, parts=parts, bucket=bucket, endpoint=ENDPOINT, out_prefix=out_prefix)
    fill.update(grants=GRANTS.format(**fill), bucket_keys=BUCKET_KEYS.format(**fill))
    mask = run.MASK.format(key="", email_rule="sha256")
    return PIPELINE.format(kind=kind, work=work, every_rows=every_rows, mask=mask,
                           source=SOURCES[source].format(**fill), sink=SINKS[sink].format(**fill))


def check_outputs(outputs, rows):
    """Every output: `rows` rows, `rows` distinct ids, the same masked sample."""
    import duckdb

    seen = {}
    for name, path in outputs.items():
        q = f"read_parquet('{path}/*.parquet')"
        n, distinct = duckdb.sql(f"SELECT count(*), count(DISTINCT order_id) FROM {q}").fetchall()[0]
        sample = duckdb.sql(
            f"SELECT order_id, customer_email, phone FROM {q} WHERE order_id IN (1, 2, 777, 99999) ORDER BY order_id"
        ).fetchall()
        if n != rows or distinct != rows:
            sys.exit(f"{name}: {n} rows, {distinct} distinct ids; expected {rows}")
        seen[name] = sample
    first = next(iter(seen.values()))
    for name, sample in seen.items():
        if sample != first:
            sys.exit(f"masked values differ in {name}:\n{first}\n{sample}")


# ---------------------------------------------------------------------------------------
# HTTP: pages at a fixed latency.

def api_server(pages, page_size, latency):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
            page = int(query.get("page", "1"))
            time.sleep(latency)
            first = (page - 1) * page_size
            records = [{"id": first + i + 1, "email": f"customer{first + i + 1}@example.org",
                        "country": "DE", "amount": round((first + i) * 0.37 % 500, 2),
                        "updated_at": "2026-12-04T10:00:00Z"} for i in range(page_size)]
            nxt = f"/api/orders?page={page + 1}" if page < pages else None
            body = json.dumps({"data": records, "next": nxt}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


HTTP_PIPELINE = """[pipeline]
name = "api"
[state]
dir = "{work}/state"
[checkpoint]
every_rows = 1000000
[[source]]
plugin = "builtin:http"
http = ["{base}/api"]
[source.config]
url = "{base}/api/orders?page=1"
name = "orders"
records = "data"
pagination = {{ style = "next-url", path = "next" }}
[source.config.columns]
updated_at = "timestamp"
[[sink]]
plugin = "builtin:file"
fs = ["{work}/out:rw"]
[sink.config]
path = "{work}/out"
format = "parquet"
compression = "zstd"
"""


def bare_client(base, pages):
    """The floor: one sequential client that fetches and parses every page."""
    start, n, url = time.perf_counter(), 0, f"{base}/api/orders?page=1"
    while url:
        with urllib.request.urlopen(url) as r:
            page = json.load(r)
        n += len(page["data"])
        url = base + page["next"] if page["next"] else None
    return time.perf_counter() - start, n


def http_bench(args, env, work):
    server = api_server(args.http_pages, args.page_size, args.latency_ms / 1000)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    total = args.http_pages * args.page_size
    ours, bare = [], []
    for rep in range(args.repeat):
        w = os.path.join(work, "http")
        shutil.rmtree(w, ignore_errors=True)
        os.makedirs(os.path.join(w, "out"))
        path = os.path.join(w, "pipeline.toml")
        with open(path, "w") as f:
            f.write(HTTP_PIPELINE.format(work=w, base=base))
        ours.append(run.measure([run.HOST, "run", path], env)[0])
        bare.append(bare_client(base, args.http_pages)[0])
    import duckdb

    n = duckdb.sql(f"SELECT count(DISTINCT id) FROM read_parquet('{w}/out/orders/*.parquet')").fetchall()[0][0]
    if n != total:
        sys.exit(f"the http source wrote {n} distinct records, expected {total}")
    server.shutdown()
    ideal = total / (args.http_pages * args.latency_ms / 1000)
    o, b = statistics.median(ours), statistics.median(bare)
    return [
        f"## HTTP source: {args.http_pages} pages of {args.page_size} records, {args.latency_ms} ms a page",
        "",
        "| client | wall s (median, range) | records/s | of the latency bound |",
        "|---|---|---|---|",
        f"| ours, http → Parquet (start-up included) | {o:.2f} ({min(ours):.2f}–{max(ours):.2f}) | {total / o:,.0f} | {total / o / ideal:.0%} |",
        f"| bare Python client, fetch and parse only | {b:.2f} ({min(bare):.2f}–{max(bare):.2f}) | {total / b:,.0f} | {total / b / ideal:.0%} |",
        "",
        f"The latency bound (pages one after another): {ideal:,.0f} records/s. Ours ÷ bare (wall): {o / b:.2f}.",
    ]


# ---------------------------------------------------------------------------------------
# Kills: R1-shaped objects from S3 to Parquet on S3, the run killed again and again.

def kill_bench(args, env, work, client, bucket, data):
    avg = os.path.getsize(data) / args.rows
    rows = int(args.kill_bytes / avg)
    kill_data = run.dataset(os.path.join(HERE, "data"), rows)
    parts = cut(kill_data, os.path.join(HERE, "data", f"s3-parts-{rows}-{args.objects}"), args.objects)
    empty_bucket(client, bucket)
    upload(client, bucket, parts)
    size = sum(os.path.getsize(p) for p in parts)
    w = os.path.join(work, "kills")
    shutil.rmtree(w, ignore_errors=True)
    os.makedirs(w)
    path = os.path.join(w, "pipeline.toml")
    with open(path, "w") as f:
        f.write(pipeline("s3", w, "", bucket, out_prefix="kills/", every_rows=250_000))
    print(f"kills: {rows:,} rows, {size / 1e9:.2f} GB in {len(parts)} objects", file=sys.stderr)
    # Kills a second or two apart: each run commits an epoch or two before it dies, so
    # that the kills fall all over the job (a run that ends first stops the kills).
    rng = random.Random(20261204)
    killed, start = 0, time.perf_counter()
    while killed < args.kills:
        p = subprocess.Popen([run.HOST, "run", path], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        try:
            p.wait(timeout=rng.uniform(0.8, 2.0))
            break
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait()
            killed += 1
    last = subprocess.run([run.HOST, "run", path], env=env, capture_output=True, text=True)
    if last.returncode != 0:
        sys.exit(f"the run after the kills failed:\n{last.stderr[-3000:]}")
    total = time.perf_counter() - start
    out = os.path.join(w, "out")
    files = download(client, bucket, "kills/", out)
    check_outputs({"after kills": out}, rows)
    left = len(client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))
    if left:
        sys.exit(f"{left} multipart uploads left in progress")
    return [
        f"## {size / 1e9:.2f} GB of R1 objects, S3 → Parquet on S3, killed {killed} times",
        "",
        f"{rows:,} rows in {len(parts)} objects; {killed} runs killed by SIGKILL at random moments, "
        f"then one run to the end: {total:.0f} s in all. The lake holds {files} Parquet objects with "
        f"every row once ({rows:,} rows, {rows:,} distinct ids), and no multipart upload is left in progress.",
    ]


def main():
    in_venv()
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--objects", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--http-pages", type=int, default=200)
    ap.add_argument("--page-size", type=int, default=500)
    ap.add_argument("--latency-ms", type=int, default=20)
    ap.add_argument("--kills", type=int, default=0, help="also run the kill test with this many kills")
    ap.add_argument("--kill-bytes", type=float, default=2e9)
    ap.add_argument("--skip-r1", action="store_true")
    ap.add_argument("--skip-http", action="store_true")
    ap.add_argument("--breakdown", action="store_true",
                    help="also S3 in → local Parquet, and local files → Parquet on S3")
    args = ap.parse_args()

    run.sh(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    data_dir = os.path.join(HERE, "data")
    os.makedirs(data_dir, exist_ok=True)
    data = run.dataset(data_dir, args.rows)
    env = dict(os.environ, BENCH_MASK_KEY=run.KEY, BENCH_S3_ID="bench-key-id", BENCH_S3_SECRET="bench-secret",
               INGEST_CACHE_DIR=os.path.join(HERE, ".cache"))
    work = tempfile.mkdtemp(prefix="bench-s3-", dir=HERE)
    client = s3()
    bucket = f"bench-{os.getpid()}"
    client.create_bucket(Bucket=bucket)
    lines = [
        f"# Object storage and HTTP APIs",
        "",
        f"{datetime.date.today()}, {platform.node()}: {os.cpu_count()} vCPUs, {platform.platform()}, "
        f"{run.cpu_model()}. S3-compatible server: moto on loopback (scripts/s3-setup). "
        f"Release build. Median of {args.repeat}, alternating.",
        "",
    ]
    try:
        run.tiny_run(work, env, "warm")
        if not args.skip_r1:
            parts_dir = os.path.join(data_dir, f"s3-parts-{args.rows}-{args.objects}")
            parts = cut(data, parts_dir, args.objects)
            size_mb = sum(os.path.getsize(p) for p in parts) / 1e6
            upload(client, bucket, parts)
            kinds = ["local", "s3"] + (["s3-in", "s3-out"] if args.breakdown else [])
            runs = {kind: [] for kind in kinds}
            outputs = {}
            for rep in range(args.repeat):
                order = kinds if rep % 2 == 0 else kinds[::-1]
                for kind in order:
                    w = os.path.join(work, kind)
                    shutil.rmtree(w, ignore_errors=True)
                    os.makedirs(os.path.join(w, "out"))
                    os.makedirs(os.path.join(w, "staging"))
                    empty_bucket(client, bucket, f"{kind}/")
                    path = os.path.join(w, "pipeline.toml")
                    with open(path, "w") as f:
                        f.write(pipeline(kind, w, parts_dir, bucket, out_prefix=f"{kind}/"))
                    runs[kind].append(run.measure([run.HOST, "run", path], env))
                    if kind in ("local", "s3-in"):
                        outputs[kind] = os.path.join(w, "out", "orders")
                print(f"repetition {rep + 1}/{args.repeat} done", file=sys.stderr)
            s3_out = os.path.join(work, "s3-out")
            download(client, bucket, "s3/", s3_out)
            outputs["s3"] = s3_out
            check_outputs(outputs, args.rows)
            med = {k: statistics.median(r[0] for r in v) for k, v in runs.items()}
            lines += [
                f"## R1 from S3 to Parquet on S3: {args.rows:,} orders, {size_mb:.0f} MB of CSV in {len(parts)} objects",
                "",
                "| job | wall s (median, range) | CPU s | peak RSS MiB | MB/s | throughput ÷ local |",
                "|---|---|---|---|---|---|",
            ]
            labels = {"local": "local files → Parquet on local disk", "s3": "S3 objects → Parquet on S3",
                      "s3-in": "S3 objects → Parquet on local disk", "s3-out": "local files → Parquet on S3"}
            for kind in kinds:
                label = labels[kind]
                walls = [r[0] for r in runs[kind]]
                cpu = statistics.median(r[1] for r in runs[kind])
                rss = statistics.median(r[2] for r in runs[kind])
                lines.append(
                    f"| {label} | {med[kind]:.2f} ({min(walls):.2f}–{max(walls):.2f}) | {cpu:.2f} | {rss:.0f} | "
                    f"{size_mb / med[kind]:.0f} | {med['local'] / med[kind]:.2f} |"
                )
            lines += ["", "Outputs verified equal: row count, distinct ids and a masked sample.", ""]
        if not args.skip_http:
            lines += http_bench(args, env, work) + [""]
        if args.kills:
            lines += kill_bench(args, env, work, client, bucket, data) + [""]
    finally:
        empty_bucket(client, bucket)
        client.delete_bucket(Bucket=bucket)
        shutil.rmtree(work, ignore_errors=True)
    report = "\n".join(lines)
    print(report)
    result = os.path.join(HERE, "results", f"{datetime.date.today()}-s3.md")
    n = 1
    while os.path.exists(result):
        n += 1
        result = os.path.join(HERE, "results", f"{datetime.date.today()}-s3-{n}.md")
    with open(result, "w") as f:
        f.write(report)
    print(f"results: {result}")


if __name__ == "__main__":
    main()

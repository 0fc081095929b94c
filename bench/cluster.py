"""Scale-out: R1 over 8 input files, queued with `host submit` on the machine's NATS
JetStream and run by 1, 2 and 4 `host worker` processes, against the same pipeline run by
`host run` (one process, one reader, and with `readers = 2`). Wall time from the submit to
the last worker's exit, CPU time of all workers, and the coordination each worker reports
(round trips to the state bucket and their time). Every output is checked: the row count
and distinct order ids equal the input's.

Then the cost of coordination per epoch with 1, 10 and 100 workers at once (the ignored
test `coordination_cost_per_epoch_with_1_to_100_workers` of tests/integration/cluster.rs).

Usage: scripts/bench --cluster [--rows N] [--repeat K] [--skip-probe]
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
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import run  # noqa: E402  (the R1 harness: data set, venv, timing)
import s3  # noqa: E402  (cutting R1's CSV into parts)

NATS = "nats://127.0.0.1:4222"
FILES = 8


def pipeline(work, parts_dir, readers=1):
    text = run.pipeline_text(work, parts_dir, f"{parts_dir}/*.csv",
                             run.MASK.format(key="", email_rule="sha256"), "", readers=readers)
    # Default epochs, as a cluster would run: one epoch per million rows.
    return text.replace("every_rows = 10000000", "every_rows = 1000000")


def run_local(work, parts_dir, readers, env):
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    path = os.path.join(work, "pipeline.toml")
    with open(path, "w") as f:
        f.write(pipeline(work, parts_dir, readers))
    wall, cpu, rss = run.measure([run.HOST, "run", "--quiet", path], env=env)
    return wall, cpu, rss, None


def run_cluster(work, parts_dir, workers, env, tag):
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    path = os.path.join(work, "pipeline.toml")
    with open(path, "w") as f:
        f.write(pipeline(work, parts_dir))
    cluster = f"bench_{tag}_{os.getpid()}"
    started = time.monotonic()
    subprocess.run([run.HOST, "submit", path, "--nats", NATS, "--cluster", cluster, "--lease", "30s"],
                   check=True, env=env, capture_output=True)
    procs = []
    for i in range(workers):
        log = open(os.path.join(work, f"worker-{i}.log"), "w")
        procs.append(subprocess.Popen(
            ["/usr/bin/time", "-f", "%U %S %M", "-o", os.path.join(work, f"worker-{i}.time"),
             run.HOST, "worker", "--nats", NATS, "--cluster", cluster, "--id", f"w{i}", "--idle-exit", "1s"],
            stdout=log, stderr=subprocess.STDOUT, env=env))
    for p in procs:
        if p.wait() != 0:
            sys.exit(f"a worker failed; see {work}")
    # The idle wait after the last split is not work: take it off.
    wall = time.monotonic() - started - 1.0
    cpu, rss, coordination = 0.0, 0.0, []
    for i in range(workers):
        user, system, max_kb = open(os.path.join(work, f"worker-{i}.time")).read().split()[-3:]
        cpu += float(user) + float(system)
        rss = max(rss, int(max_kb) / 1024)
        summary = [l for l in open(os.path.join(work, f"worker-{i}.log")) if l.startswith(f"worker w{i}:")]
        coordination.append(summary[-1].strip() if summary else "(no summary)")
    subprocess.run([run.HOST, "status", "--nats", NATS, "--cluster", cluster], env=env,
                   stdout=open(os.path.join(work, "status.txt"), "w"))
    destroy(cluster)
    return wall, cpu, rss, coordination


def destroy(cluster):
    """Delete the cluster's stream and bucket, through the JetStream API over a socket."""
    import socket
    s = socket.create_connection(("127.0.0.1", 4222))
    s.recv(4096)
    s.sendall(b'CONNECT {"verbose":false,"headers":true}\r\nSUB _INBOX.bench_destroy 1\r\n')
    for stream in (f"{cluster}_work", f"KV_{cluster}_state"):
        s.sendall(f"PUB $JS.API.STREAM.DELETE.{stream} _INBOX.bench_destroy 0\r\n\r\n".encode())
    buf = b""
    while buf.count(b"MSG _INBOX.bench_destroy") < 2:
        buf += s.recv(4096)
    s.close()


def verify(python, out_dir, rows):
    code = (
        "import duckdb,sys;"
        f"r=duckdb.sql(\"select count(*), count(distinct order_id) from read_parquet('{out_dir}/**/*.parquet')\").fetchall()[0];"
        "print(r[0], r[1])"
    )
    count, distinct = subprocess.run([python, "-c", code], check=True, capture_output=True,
                                     text=True).stdout.split()
    if int(count) != rows or int(distinct) != rows:
        sys.exit(f"{out_dir}: {count} rows, {distinct} distinct ids; expected {rows}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-probe", action="store_true")
    args = ap.parse_args()

    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    python = run.venv(["duckdb"])
    data_dir = os.path.join(HERE, "data")
    os.makedirs(data_dir, exist_ok=True)
    data = run.dataset(data_dir, args.rows)
    parts_dir = os.path.join(data_dir, f"s3-parts-{args.rows}-{FILES}")
    parts = s3.cut(data, parts_dir, FILES)
    env = dict(os.environ, BENCH_MASK_KEY=run.KEY)

    jobs = [
        ("host run, 1 reader", lambda w, t: run_local(w, parts_dir, 1, env)),
        ("host run, readers = 2", lambda w, t: run_local(w, parts_dir, 2, env)),
        ("1 worker", lambda w, t: run_cluster(w, parts_dir, 1, env, t)),
        ("2 workers", lambda w, t: run_cluster(w, parts_dir, 2, env, t)),
        ("4 workers", lambda w, t: run_cluster(w, parts_dir, 4, env, t)),
    ]
    results = {name: [] for name, _ in jobs}
    coordination = {}
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        for rep in range(args.repeat):
            order = jobs if rep % 2 == 0 else list(reversed(jobs))
            for i, (name, job) in enumerate(order):
                work = os.path.join(tmp, f"job{i}")
                wall, cpu, rss, coord = job(work, f"{rep}_{i}")
                verify(python, os.path.join(work, "out"), args.rows)
                results[name].append((wall, cpu, rss))
                if coord:
                    coordination[name] = coord
                print(f"{name}: {wall:.2f} s wall, {cpu:.2f} s CPU, {rss:.0f} MiB", file=sys.stderr)

    base = statistics.median(w for w, _, _ in results["1 worker"])
    lines = [
        f"# Scale-out: R1 over {FILES} files, {args.rows:,} rows, on NATS JetStream workers",
        "",
        f"{datetime.date.today()}, {os.cpu_count()} vCPUs, {run.cpu_model()}, {platform.platform()}. "
        f"Medians of {args.repeat}, jobs alternating; every output verified (row count and distinct ids). "
        "Default epochs (1M rows); SHA-256 masking; Parquet zstd. Worker wall time runs from "
        "`host submit` to the last worker's exit, less the 1 s the workers wait idle before they exit.",
        "",
        "| job | wall s (median, range) | CPU s | peak RSS MiB (one process) | speed-up over 1 worker |",
        "|---|---|---|---|---|",
    ]
    for name, _ in jobs:
        walls = [w for w, _, _ in results[name]]
        cpu = statistics.median(c for _, c, _ in results[name])
        rss = max(r for _, _, r in results[name])
        wall = statistics.median(walls)
        lines.append(
            f"| {name} | {wall:.2f} ({min(walls):.2f}–{max(walls):.2f}) | {cpu:.2f} | {rss:.0f} | {base / wall:.2f}× |")
    lines += ["", "What each worker reported (last repetition):", ""]
    for name, coord in coordination.items():
        lines.append(f"- {name}:")
        lines += [f"  - `{c}`" for c in coord]

    if not args.skip_probe:
        probe = subprocess.run(
            ["cargo", "test", "--locked", "--test", "integration", "--",
             "--ignored", "--exact", "cluster::coordination_cost_per_epoch_with_1_to_100_workers",
             "--nocapture"], cwd=ROOT, capture_output=True, text=True)
        if probe.returncode != 0:
            sys.exit(f"the coordination probe failed:\n{probe.stdout}\n{probe.stderr[-3000:]}")
        table = [l for l in probe.stdout.splitlines() if l.startswith("|")]
        lines += ["", "## Coordination per epoch, workers at once",
                  "",
                  "Each worker holds a split of its own; per epoch it draws the pipeline's next epoch "
                  "number (one counter all contend for) and writes its state twice (prepared, committed), "
                  "as `host worker` does. 5 s per row of the table, one NATS server on loopback.",
                  ""] + table

    text = "\n".join(lines) + "\n"
    print(text)
    results_dir = os.path.join(HERE, "results")
    name = f"{datetime.date.today()}-cluster-{args.rows}.md"
    path = os.path.join(results_dir, name)
    n = 2
    while os.path.exists(path):
        path = os.path.join(results_dir, name.replace(".md", f"-{n}.md"))
        n += 1
    with open(path, "w") as f:
        f.write(text)
    print(f"results → {path}", file=sys.stderr)


if __name__ == "__main__":
    main()

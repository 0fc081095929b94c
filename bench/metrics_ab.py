"""What serving metrics costs (`scripts/bench --metrics-ab`): the reference job R1 (CSV →
pii-mask → Parquet) run alternately with and without `host run --metrics`, while a scraper
reads /metrics every second as Prometheus would, medians of --repeat runs each.
Results go to bench/results/DATE-metrics.md.
"""

import argparse
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from run import HOST, KEY, MASK, cpu_model, dataset, measure, pipeline_text  # noqa: E402

PORT = 19464


def scraper(stop):
    """Scrape /metrics every second until `stop` is set; returns the scrapes that answered."""
    answered = []

    def loop():
        while not stop.is_set():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics", timeout=2) as r:
                    answered.append(len(r.read()))
            except OSError:
                pass
            stop.wait(1.0)

    thread = threading.Thread(target=loop)
    thread.start()
    return thread, answered


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    data_dir = os.path.join(HERE, "data")
    os.makedirs(data_dir, exist_ok=True)
    data = dataset(data_dir, args.rows)
    env = dict(os.environ, BENCH_MASK_KEY=KEY, INGEST_CACHE_DIR=os.path.join(HERE, ".cache"))
    mask = MASK.format(key="", email_rule="sha256")
    walls = {"without": [], "with": []}
    scrapes = 0
    with tempfile.TemporaryDirectory() as work:
        for i in range(args.repeat + 1):
            # ABBA: neither variant always goes first.
            order = ("without", "with") if i % 2 == 0 else ("with", "without")
            for variant in order:
                run = os.path.join(work, f"{variant}{i}")
                shutil.rmtree(run, ignore_errors=True)
                os.makedirs(run)
                pipeline = os.path.join(run, "pipeline.toml")
                with open(pipeline, "w") as f:
                    f.write(pipeline_text(run, data_dir, data, mask, ""))
                cmd = [HOST, "run", pipeline]
                stop = threading.Event()
                if variant == "with":
                    cmd += ["--metrics", f"127.0.0.1:{PORT}"]
                    thread, answered = scraper(stop)
                wall, _, _ = measure(cmd, env)
                if variant == "with":
                    stop.set()
                    thread.join()
                    scrapes += len(answered)
                if i > 0:  # the first round warms the cache and the page cache
                    walls[variant].append(wall)
                print(f"{variant} --metrics: {wall:.2f} s", flush=True)
    without = statistics.median(walls["without"])
    with_ = statistics.median(walls["with"])
    lines = [
        f"# Metrics overhead, {datetime.date.today()}",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores. R1 ({args.rows:,} rows, CSV → pii-mask → Parquet), "
        f"alternating (ABBA), medians of {args.repeat} after a warm-up round; with `--metrics`, /metrics scraped every "
        f"second ({scrapes} scrapes answered).",
        "",
        "| run | median wall | all |",
        "|---|---:|---|",
        f"| without `--metrics` | {without:.2f} s | {', '.join(f'{w:.2f}' for w in walls['without'])} |",
        f"| with `--metrics`, scraped | {with_:.2f} s | {', '.join(f'{w:.2f}' for w in walls['with'])} |",
        "",
        f"Ratio: {with_ / without:.3f} ({(with_ / without - 1) * 100:+.1f}%).",
    ]
    print("\n".join(lines))
    out = os.path.join(HERE, "results", f"{datetime.date.today()}-metrics.md")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"results: {out}")


if __name__ == "__main__":
    main()

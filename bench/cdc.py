"""The CDC benchmark (`scripts/bench --cdc`): Postgres logical replication into Postgres,
in stream mode with the default 1 s epochs, against a writer in the same server.

Jobs:
  - End-to-end lag at a paced change rate (default 5,000 and 20,000 changes/s): a writer
    (a PL/pgSQL loop of transactions that upsert, update and delete runs of 33 keys out
    of 20,000, about 90 changes each) runs for --seconds while the pipeline streams into a
    Postgres table by upsert;
    then the pipeline catches up and drains, and its summary gives the lag from source
    commit to sink commit (p50, p99, max over a sample of every change's commit time).
  - The writer's own top rate (no pipeline running), then the same unpaced writer with the
    pipeline streaming: the pipeline's sustained rate is the changes over the time from the
    writer's start until the pipeline has committed the last of them.
  - --soak S: a paced stream of S seconds with the host's RSS sampled every 5 s (flat or not).

The goal (the issue's): p99 lag < 1.5 s at 5k and 20k changes/s. Results go to
bench/results/DATE-cdc.md.

Usage: python3 bench/cdc.py [--seconds N] [--rates 5000,20000] [--soak S]
"""

import argparse
import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from run import HOST, cpu_model  # noqa: E402

DB = "ingest_bench_cdc"
SLOT = "ingest_bench_cdc"
PG = ["-h", "127.0.0.1", "-p", "5432", "-U", "postgres", "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1"]
KEYS = 20000

PIPELINE = """[pipeline]
name = "bench-cdc"
mode = "stream"
[state]
dir = "{work}/state"
[[source]]
plugin = "builtin:postgres"
net = ["127.0.0.1:5432"]
[source.config]
host = "127.0.0.1"
user = "postgres"
database = "{db}"
tables = ["items"]
[source.config.streams.items]
sync = "cdc"
slot = "{slot}"
publication = "items_pub"
[[sink]]
plugin = "builtin:postgres"
net = ["127.0.0.1:5432"]
write_mode = "upsert"
primary_key = ["id"]
[sink.config]
host = "127.0.0.1"
user = "postgres"
database = "{db}"
table = "items_copy"
"""


def psql(sql, db=DB):
    out = subprocess.run(["psql", *PG, "-d", db, "-c", sql], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"psql failed: {sql[:200]}\n{out.stderr}")
    return out.stdout.strip()


def fresh_database():
    psql(f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{SLOT}'", "postgres")
    psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", "postgres")
    psql(f"CREATE DATABASE {DB}", "postgres")
    psql(
        "CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, note text, updated_at timestamptz NOT NULL DEFAULT now());"
        f"INSERT INTO items SELECT g, g % 17, md5(g::text), now() FROM generate_series(1, {KEYS // 2}) AS g;"
        "CREATE PUBLICATION items_pub FOR TABLE items;"
    )


def drop_database():
    psql(f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{SLOT}' AND NOT active", "postgres")
    psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", "postgres")


def writer(seconds, rate):
    """Start the writer: `rate` changes a second (0: as fast as it can) for `seconds`.
    Each transaction upserts, updates and deletes runs of 33 keys (about 90 changes)."""
    pace = (
        f"PERFORM pg_sleep(greatest(0, done / {rate}.0 - extract(epoch FROM clock_timestamp() - t0)));"
        if rate
        else ""
    )
    sql = (
        "DO $$ DECLARE t0 timestamptz := clock_timestamp(); done bigint := 0; n bigint; k int; BEGIN "
        f"WHILE clock_timestamp() < t0 + interval '{seconds} seconds' LOOP "
        f"k := 1 + floor(random() * {KEYS - 40})::int; "
        "INSERT INTO items SELECT g, 1, md5(random()::text), now() FROM generate_series(k, k + 32) AS g "
        "ON CONFLICT (id) DO UPDATE SET qty = items.qty + 1, note = EXCLUDED.note, updated_at = now(); "
        "GET DIAGNOSTICS n = ROW_COUNT; done := done + n; "
        f"k := 1 + floor(random() * {KEYS - 40})::int; "
        "UPDATE items SET qty = qty + 1, note = md5(random()::text), updated_at = now() WHERE id BETWEEN k AND k + 32; "
        "GET DIAGNOSTICS n = ROW_COUNT; done := done + n; "
        f"k := 1 + floor(random() * {KEYS - 40})::int; "
        "DELETE FROM items WHERE id BETWEEN k AND k + 32; "
        "GET DIAGNOSTICS n = ROW_COUNT; done := done + n; "
        f"COMMIT; {pace} END LOOP; END $$;"
    )
    return subprocess.Popen(["psql", *PG, "-d", DB, "-c", sql])


def changes_since(xact_before):
    """Rows changed in items since the stats snapshot `xact_before` (ins + upd + del)."""
    now = stats()
    return sum(now) - sum(xact_before)


def stats():
    psql("SELECT pg_stat_clear_snapshot()")
    row = psql("SELECT n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables WHERE relname = 'items'")
    return [int(x) for x in row.split("|")]


def confirmed_past(lsn):
    return psql(
        f"SELECT coalesce(confirmed_flush_lsn >= '{lsn}'::pg_lsn, false) FROM pg_replication_slots WHERE slot_name = '{SLOT}'",
        "postgres",
    ) == "t"


def wait(cond, limit, what):
    deadline = time.time() + limit
    while not cond():
        if time.time() > deadline:
            raise SystemExit(f"{what} within {limit} s")
        time.sleep(0.05)


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


def start_host(work):
    log = open(os.path.join(work, "host.log"), "w")
    host = subprocess.Popen([HOST, "run", os.path.join(work, "pipeline.toml")], stdout=log, stderr=subprocess.STDOUT)
    wait(lambda: psql("SELECT to_regclass('items_copy') IS NOT NULL") == "t"
         and psql("SELECT count(*) FROM items_copy") == psql("SELECT count(*) FROM items"),
         120, "the snapshot committed")
    return host


def drain(host, work):
    host.send_signal(15)
    host.wait(timeout=60)
    with open(os.path.join(work, "host.log")) as f:
        text = f.read()
    m = re.search(r"lag from source commit to sink commit: p50 ([\d.]+) s, p99 ([\d.]+) s, max ([\d.]+) s", text)
    if host.returncode != 0 or not m:
        raise SystemExit(f"the host did not drain cleanly (exit {host.returncode}):\n{text[-2000:]}")
    return tuple(float(x) for x in m.groups())


def check_equal():
    differ = psql(
        "SELECT count(*) FROM ((SELECT id, qty, note FROM items EXCEPT SELECT id, qty, note FROM items_copy) "
        "UNION ALL (SELECT id, qty, note FROM items_copy EXCEPT SELECT id, qty, note FROM items)) AS d"
    )
    if differ != "0":
        raise SystemExit(f"the target differs from the table in {differ} rows")


def paced(seconds, rate, work, soak=False):
    """Lag at `rate` changes/s; with `soak`, RSS samples too."""
    fresh_database()
    shutil.rmtree(os.path.join(work, "state"), ignore_errors=True)
    with open(os.path.join(work, "pipeline.toml"), "w") as f:
        f.write(PIPELINE.format(work=work, db=DB, slot=SLOT))
    host = start_host(work)
    before = stats()
    started = time.time()
    w = writer(seconds, rate)
    samples = []
    while w.poll() is None:
        samples.append((time.time() - started, rss_kib(host.pid)))
        time.sleep(5 if soak else 0.5)
    wrote = time.time() - started
    end = psql("SELECT pg_current_wal_lsn()")
    changes = changes_since(before)
    wait(lambda: confirmed_past(end), 300, "the pipeline caught up")
    caught = time.time() - started
    lag = drain(host, work)
    check_equal()
    drop_database()
    return changes, wrote, caught, lag, samples


def top_rate(seconds):
    fresh_database()
    before = stats()
    started = time.time()
    writer(seconds, 0).wait()
    took = time.time() - started
    changes = changes_since(before)
    drop_database()
    return changes / took


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=int, default=30)
    p.add_argument("--rates", default="5000,20000")
    p.add_argument("--soak", type=int, default=0)
    args = p.parse_args()
    rates = [int(r) for r in args.rates.split(",") if r]
    lines = [
        f"# CDC benchmark, {datetime.date.today()}",
        "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()}; PostgreSQL "
        f"{psql('SHOW server_version', 'postgres')}. Postgres → Postgres (upsert), stream mode, 1 s epochs; "
        f"a writer of ~90-change transactions (runs of 33 keys upserted, updated, deleted) over {KEYS} keys for {args.seconds} s. "
        "Lag is source commit → sink commit over every change (sampled), from the host's summary.",
        "",
        "| writer rate (changes/s) | achieved | pipeline caught up after | lag p50 | lag p99 | lag max | peak RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as work:
        for rate in rates:
            changes, wrote, caught, lag, samples = paced(args.seconds, rate, work)
            peak = max(s[1] for s in samples) / 1024 if samples else 0
            lines.append(
                f"| {rate} | {changes / wrote:.0f} | {caught - wrote:.2f} s after the writer | "
                f"{lag[0]:.3f} s | {lag[1]:.3f} s | {lag[2]:.3f} s | {peak:.0f} MiB |"
            )
            print(lines[-1], flush=True)
        top = top_rate(args.seconds)
        lines += ["", f"The writer alone, unpaced: {top:.0f} changes/s.", ""]
        print(lines[-2], flush=True)
        changes, wrote, caught, lag, samples = paced(args.seconds, 0, work)
        lines.append(
            f"Unpaced writer with the pipeline streaming: {changes / wrote:.0f} changes/s written; "
            f"the pipeline committed all {changes} changes {caught:.1f} s after the writer started, "
            f"a sustained {changes / caught:.0f} changes/s ({changes / caught / top:.2f}× the writer's own top rate); "
            f"lag p50 {lag[0]:.2f} s, p99 {lag[1]:.2f} s, max {lag[2]:.2f} s."
        )
        print(lines[-1], flush=True)
        if args.soak:
            changes, wrote, caught, lag, samples = paced(args.soak, 5000, work, soak=True)
            first = [s[1] for s in samples if s[0] < 60]
            last = [s[1] for s in samples if s[0] > args.soak - 60]
            lines += [
                "",
                f"Soak: {args.soak} s at 5,000 changes/s ({changes} changes): RSS peak in the first minute "
                f"{max(first) / 1024:.0f} MiB, in the last minute {max(last) / 1024:.0f} MiB; "
                f"lag p99 {lag[1]:.2f} s, max {lag[2]:.2f} s.",
            ]
            print(lines[-1], flush=True)
    out = os.path.join(HERE, "results", f"{datetime.date.today()}-cdc.md")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"results: {out}")


if __name__ == "__main__":
    main()

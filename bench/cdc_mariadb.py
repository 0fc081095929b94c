"""The MariaDB CDC benchmark (`scripts/bench --cdc-mariadb`): a MariaDB table's binary log
into Postgres (upsert), in stream mode with the default 1 s epochs, against a writer in the
MariaDB server.

Jobs, as in bench/cdc.py for Postgres:
  - End-to-end lag at a paced change rate (default 5,000 and 20,000 changes/s): a writer
    (a stored procedure of transactions that upsert, update and delete runs of 33 keys out
    of 20,000, about 90 changes each) runs for --seconds while the pipeline streams into
    Postgres; then the pipeline catches up and drains. Two lag figures:
      * the host's, from `_commit_ts` (the binary log keeps whole seconds, so this one is
        late by up to a second, half a second on average);
      * the exact one: the writer stamps each row with `updated_at = SYSDATE(6)` and a
        trigger on the target stamps `landed = clock_timestamp()` when the sink writes it;
        lag = landed - updated_at over the rows the writer left (its last change per key).
  - The writer's own top rate (no pipeline), then the unpaced writer with the pipeline
    streaming: the sustained rate is the changes over the time from the writer's start
    until the target equals the table.

Results are appended to bench/results/DATE-cdc.md.
"""

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from run import HOST  # noqa: E402
from cdc import drain, psql, rss_kib, wait  # noqa: E402

DB = "ingest_bench_binlog"
MY = ["-h", "127.0.0.1", "-P", "3306", "-u", "root", "-N", "-B"]
KEYS = 20000

PIPELINE = """[pipeline]
name = "bench-binlog"
mode = "stream"
[state]
dir = "{work}/state"
[[source]]
plugin = "builtin:mariadb"
net = ["127.0.0.1:3306"]
[source.config]
host = "127.0.0.1"
user = "root"
database = "{db}"
tables = ["items"]
[source.config.streams.items]
sync = "cdc"
server_id = 424242
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

WRITER = """DELIMITER //
CREATE PROCEDURE writer(seconds INT, rate INT)
BEGIN
  DECLARE t0 DOUBLE DEFAULT UNIX_TIMESTAMP(SYSDATE(6));
  DECLARE done BIGINT DEFAULT 0;
  DECLARE k INT;
  WHILE UNIX_TIMESTAMP(SYSDATE(6)) < t0 + seconds DO
    START TRANSACTION;
    SET k = 1 + FLOOR(RAND() * (@@keys - 40));
    INSERT INTO items SELECT seq, 1, MD5(RAND()), SYSDATE(6) FROM seq_1_to_20000 WHERE seq BETWEEN k AND k + 32
      ON DUPLICATE KEY UPDATE qty = qty + 1, note = VALUES(note), updated_at = SYSDATE(6);
    SET done = done + 33;
    SET k = 1 + FLOOR(RAND() * (@@keys - 40));
    UPDATE items SET qty = qty + 1, note = MD5(RAND()), updated_at = SYSDATE(6) WHERE id BETWEEN k AND k + 32;
    SET done = done + ROW_COUNT();
    SET k = 1 + FLOOR(RAND() * (@@keys - 40));
    DELETE FROM items WHERE id BETWEEN k AND k + 32;
    SET done = done + ROW_COUNT();
    COMMIT;
    IF rate > 0 THEN
      DO SLEEP(GREATEST(0, done / rate - (UNIX_TIMESTAMP(SYSDATE(6)) - t0)));
    END IF;
  END WHILE;
  SELECT done;
END//
DELIMITER ;
""".replace("@@keys", str(KEYS))


def pg(sql, db=DB):
    return psql(sql, db)


def my(sql, db=DB):
    out = subprocess.run(["mariadb", *MY, "-e", sql, db], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"mariadb failed: {sql[:200]}\n{out.stderr}")
    return out.stdout.strip()


def fresh_databases():
    my(f"DROP DATABASE IF EXISTS {DB}; CREATE DATABASE {DB}", "mysql")
    my(
        "CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, note text, updated_at timestamp(6) NOT NULL); "
        f"INSERT INTO items SELECT seq, seq % 17, MD5(seq), SYSDATE(6) FROM seq_1_to_{KEYS // 2};"
    )
    my(WRITER)
    pg(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", "postgres")
    pg(f"CREATE DATABASE {DB}", "postgres")
    pg(
        "CREATE TABLE items_copy (id int PRIMARY KEY, qty int NOT NULL, note text, updated_at timestamptz, "
        "landed timestamptz); "
        "CREATE FUNCTION landed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.landed := clock_timestamp(); RETURN NEW; END $$; "
        "CREATE TRIGGER landed BEFORE INSERT OR UPDATE ON items_copy FOR EACH ROW EXECUTE FUNCTION landed();"
    )


def drop_databases():
    my(f"DROP DATABASE IF EXISTS {DB}", "mysql")
    pg(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", "postgres")


def writer(seconds, rate):
    return subprocess.Popen(
        ["mariadb", *MY, "-e", f"CALL writer({seconds}, {rate})", DB], stdout=subprocess.PIPE, text=True
    )


def written(w):
    out, _ = w.communicate()
    if w.returncode != 0:
        raise SystemExit("the writer failed")
    return int(out.strip().splitlines()[-1])


def table_digest():
    return my(
        "SET SESSION group_concat_max_len = 1073741824; "
        "SELECT MD5(GROUP_CONCAT(CONCAT_WS('|', id, qty, note) ORDER BY id SEPARATOR ';')) FROM items"
    )


def target_digest():
    return pg("SELECT md5(string_agg(concat_ws('|', id, qty, note), ';' ORDER BY id)) FROM items_copy")


def start_host(work):
    log = open(os.path.join(work, "host.log"), "w")
    host = subprocess.Popen([HOST, "run", os.path.join(work, "pipeline.toml")], stdout=log, stderr=subprocess.STDOUT)
    wait(lambda: pg("SELECT count(*) FROM items_copy") == my("SELECT count(*) FROM items"),
         120, "the snapshot committed")
    return host


def exact_lag(since):
    row = pg(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY l), percentile_cont(0.99) WITHIN GROUP (ORDER BY l), max(l) "
        f"FROM (SELECT extract(epoch FROM landed - updated_at) AS l FROM items_copy WHERE updated_at > to_timestamp({since})) AS s"
    )
    return tuple(float(x) for x in row.split("|"))


def paced(seconds, rate, work, samples=None):
    """Lag at `rate` changes/s; RSS samples (seconds since the writer started, KiB) go into
    `samples` when given, every 5 s."""
    fresh_databases()
    shutil.rmtree(os.path.join(work, "state"), ignore_errors=True)
    with open(os.path.join(work, "pipeline.toml"), "w") as f:
        f.write(PIPELINE.format(work=work, db=DB))
    host = start_host(work)
    started = time.time()
    w = writer(seconds, rate)
    peak = 0
    while w.poll() is None:
        rss = rss_kib(host.pid)
        peak = max(peak, rss)
        if samples is not None:
            samples.append((time.time() - started, rss))
        time.sleep(5 if samples is not None else 0.5)
    changes = written(w)
    wrote = time.time() - started
    truth = table_digest()
    wait(lambda: target_digest() == truth, 300, "the pipeline caught up")
    caught = time.time() - started
    lag = drain(host, work)
    exact = exact_lag(started)
    drop_databases()
    return changes, wrote, caught, lag, exact, peak


def top_rate(seconds):
    fresh_databases()
    started = time.time()
    changes = written(writer(seconds, 0))
    took = time.time() - started
    drop_databases()
    return changes / took


def soak(seconds):
    samples = []
    with tempfile.TemporaryDirectory() as work:
        changes, wrote, caught, lag, exact, peak = paced(seconds, 5000, work, samples)
    first = [kib for t, kib in samples if t < 60]
    last = [kib for t, kib in samples if t > seconds - 60]
    line = (
        f"\nMariaDB soak (`python3 bench/cdc_mariadb.py --soak {seconds}`, {datetime.date.today()}): {seconds} s at "
        f"5,000 changes/s ({changes} changes): RSS peak in the first minute {max(first) / 1024:.0f} MiB, in the last "
        f"minute {max(last) / 1024:.0f} MiB; exact lag p50 {exact[0]:.2f} s, p99 {exact[1]:.2f} s, max {exact[2]:.2f} s."
    )
    print(line, flush=True)
    out = os.path.join(HERE, "results", f"{datetime.date.today()}-cdc.md")
    with open(out, "a") as f:
        f.write(line + "\n")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=int, default=30)
    p.add_argument("--rates", default="5000,20000")
    p.add_argument("--soak", type=int, default=0, help="only a paced stream of S seconds at 5,000/s, RSS sampled")
    args = p.parse_args()
    if args.soak:
        return soak(args.soak)
    rates = [int(r) for r in args.rates.split(",") if r]
    version = my("SELECT VERSION()", "mysql")
    lines = [
        "",
        f"## MariaDB binary log → Postgres, {datetime.date.today()}",
        "",
        f"MariaDB {version} (binlog_format = ROW, binlog_row_image = FULL) → Postgres (upsert), stream mode, 1 s epochs; "
        f"a writer of ~90-change transactions over {KEYS} keys for {args.seconds} s. Host lag is from `_commit_ts` "
        "(whole seconds in the binary log: late by up to 1 s); exact lag is the sink's write time minus the writer's "
        "microsecond stamp, over the last change of each key.",
        "",
        "| writer rate (changes/s) | achieved | caught up after | host lag p50 / p99 / max | exact lag p50 / p99 / max | peak RSS |",
        "|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    with tempfile.TemporaryDirectory() as work:
        for rate in rates:
            changes, wrote, caught, lag, exact, peak = paced(args.seconds, rate, work)
            lines.append(
                f"| {rate} | {changes / wrote:.0f} | {caught - wrote:.2f} s after the writer | "
                f"{lag[0]:.2f} / {lag[1]:.2f} / {lag[2]:.2f} s | {exact[0]:.2f} / {exact[1]:.2f} / {exact[2]:.2f} s | "
                f"{peak / 1024:.0f} MiB |"
            )
            print(lines[-1], flush=True)
        top = top_rate(args.seconds)
        lines += ["", f"The writer alone, unpaced: {top:.0f} changes/s.", ""]
        print(lines[-2], flush=True)
        changes, wrote, caught, lag, exact, peak = paced(args.seconds, 0, work)
        lines.append(
            f"Unpaced writer with the pipeline streaming: {changes / wrote:.0f} changes/s written; "
            f"the target equalled the table {caught:.1f} s after the writer started, "
            f"a sustained {changes / caught:.0f} changes/s ({changes / caught / top:.2f}× the writer's own top rate); "
            f"exact lag p50 {exact[0]:.2f} s, p99 {exact[1]:.2f} s, max {exact[2]:.2f} s; peak RSS {peak / 1024:.0f} MiB."
        )
        print(lines[-1], flush=True)
    out = os.path.join(HERE, "results", f"{datetime.date.today()}-cdc.md")
    with open(out, "a") as f:
        f.write("\n".join(lines) + "\n")
    print(f"results: {out}")


if __name__ == "__main__":
    main()

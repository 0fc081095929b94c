"""The peer tools on job R1: read the orders (CSV, JSON Lines or Parquet), mask
customer_email (SHA-256 hex) and phone (every character but the last four becomes '*'),
write Parquet with zstd.
Usage: peers.py TOOL INPUT OUTPUT.parquet [--level N] [--partition-by-day]
(for dlt, OUTPUT is a directory; with --partition-by-day, DuckDB writes a Hive-style
directory partitioned by the day of created_at, one file per partition)"""

import hashlib
import os
import subprocess
import sys
import tempfile


def duckdb_job(src, dst, threads, level=None, by_day=False):
    """DuckDB's COPY; a .jsonl input is read with read_json (newline-delimited), a .parquet
    one with read_parquet. `level`: the zstd level (DuckDB's default when None). `by_day`:
    PARTITION_BY the day of created_at (the `day` column is the directory, not written in
    the files)."""
    import duckdb

    cast = ""
    if src.endswith(".jsonl"):
        reader = f"read_json('{src}', format = 'newline_delimited')"
        # The generator writes amounts as JSON strings; every tool writes them as doubles.
        cast = ", CAST(amount AS DOUBLE) AS amount"
    elif src.endswith(".parquet"):
        reader = f"read_parquet('{src}')"
    else:
        reader = f"read_csv('{src}', header = true, all_varchar = false)"
    options = "FORMAT parquet, COMPRESSION zstd"
    if level is not None:
        options += f", COMPRESSION_LEVEL {level}"
    day = ""
    if by_day:
        options += ", PARTITION_BY (day)"
        day = ", CAST(created_at AT TIME ZONE 'UTC' AS DATE) AS day"
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    con.execute(
        f"""COPY (
            SELECT * REPLACE (
                sha256(customer_email) AS customer_email,
                repeat('*', greatest(length(phone) - 4, 0)) || right(phone, 4) AS phone{cast}){day}
            FROM {reader}
        ) TO '{dst}' ({options})"""
    )


def polars_job(src, dst):
    """Polars' streaming engine, with SHA-256 from the polars-hash plugin (native, not a
    Python function per row)."""
    import polars as pl
    import polars_hash as plh

    sha = lambda c: plh.col(c).chash.sha2_256()
    (
        pl.scan_csv(src, try_parse_dates=True)
        .with_columns(
            sha("customer_email").alias("customer_email"),
            (pl.lit("*").repeat_by(pl.col("phone").str.len_chars() - 4).list.join("") + pl.col("phone").str.slice(-4)).alias("phone"),
        )
        .sink_parquet(dst, compression="zstd")
    )


def pyarrow_job(src, dst):
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    reader = pcsv.open_csv(
        src,
        read_options=pcsv.ReadOptions(block_size=16 << 20),
        parse_options=pcsv.ParseOptions(newlines_in_values=True),
        # An empty field is NULL, as DuckDB and the others read it.
        convert_options=pcsv.ConvertOptions(strings_can_be_null=True),
    )
    writer = None
    for batch in reader:
        emails = [hashlib.sha256(v.encode()).hexdigest() for v in batch.column("customer_email").to_pylist()]
        phones = ["*" * max(len(v) - 4, 0) + v[-4:] for v in batch.column("phone").to_pylist()]
        cols = {name: batch.column(name) for name in batch.schema.names}
        cols["customer_email"] = pa.array(emails)
        cols["phone"] = pa.array(phones)
        table = pa.table(cols)
        if writer is None:
            writer = pq.ParquetWriter(dst, table.schema, compression="zstd")
        writer.write_table(table)
    writer.close()


def dlt_job(src, dst):
    """dlt's row-wise path: a Python resource yields one dict per CSV row, typed and masked
    in Python; dlt extracts, normalises and loads them as Parquet (zstd) files under the
    directory `dst` (as dst/r1/orders/*.parquet)."""
    import csv
    import datetime
    import os

    os.environ["NORMALIZE__DATA_WRITER__COMPRESSION"] = "zstd"
    os.environ["RUNTIME__LOG_LEVEL"] = "WARNING"
    import dlt

    @dlt.resource(name="orders", file_format="parquet")
    def orders():
        with open(src, newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                r["order_id"] = int(r["order_id"])
                r["amount"] = float(r["amount"])
                r["created_at"] = datetime.datetime.fromisoformat(r["created_at"])
                r["updated_at"] = datetime.datetime.fromisoformat(r["updated_at"])
                r["customer_email"] = hashlib.sha256(r["customer_email"].encode()).hexdigest()
                phone = r["phone"]
                r["phone"] = "*" * max(len(phone) - 4, 0) + phone[-4:]
                yield r

    pipeline = dlt.pipeline(
        pipeline_name="r1",
        destination=dlt.destinations.filesystem(bucket_url="file://" + os.path.abspath(dst)),
        dataset_name="r1",
        pipelines_dir=os.path.abspath(dst) + "-pipelines",
    )
    pipeline.run(orders(), loader_file_format="parquet")


def sling_job(src, dst):
    """Sling's file-to-file path (its own Go CSV reader and Parquet writer, telemetry off,
    no DuckDB). Its legacy transforms, the only ones in the release on PyPI, cannot keep the
    last four digits of the phone, and `hash_sha256` writes the raw 32-byte digest, not hex:
    the email is hashed, the phone is left as it is, so Sling does less than the others."""
    import platform

    if platform.machine() == "aarch64":
        from sling_linux_arm64 import SLING_BIN
    else:
        from sling_linux_amd64 import SLING_BIN

    with tempfile.TemporaryDirectory(prefix="sling-home-") as home:
        env = dict(os.environ, SLING_HOME_DIR=home, SLING_DISABLE_TELEMETRY="true",
                   SLING_DUCKDB_COMPUTE="false")
        subprocess.run(
            [SLING_BIN, "run",
             "--src-stream", "file://" + os.path.abspath(src),
             "--tgt-object", "file://" + os.path.abspath(dst),
             "--tgt-options", "{format: parquet, compression: zstd}",
             "--transforms", '{"customer_email": ["hash_sha256"]}'],
            env=env, check=True, stdout=subprocess.DEVNULL,
        )


def main():
    tool, src, dst = sys.argv[1:4]
    rest = sys.argv[4:]
    level = int(rest[rest.index("--level") + 1]) if "--level" in rest else None
    by_day = "--partition-by-day" in rest
    if tool == "duckdb":
        duckdb_job(src, dst, 2, level, by_day)
    elif tool == "duckdb-1t":
        duckdb_job(src, dst, 1, level)
    elif tool == "polars":
        polars_job(src, dst)
    elif tool == "pyarrow":
        pyarrow_job(src, dst)
    elif tool == "dlt":
        dlt_job(src, dst)
    elif tool == "sling":
        sling_job(src, dst)
    else:
        sys.exit(f"unknown tool {tool}")


if __name__ == "__main__":
    main()

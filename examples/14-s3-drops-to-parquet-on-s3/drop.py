#!/usr/bin/env python3
"""Drop example order files into a bucket for example 14.

    "$(scripts/s3-setup --python)" examples/14-s3-drops-to-parquet-on-s3/drop.py [COUNT]

Creates the buckets example-drops and example-lake on the S3-compatible server at
http://127.0.0.1:5010 (scripts/s3-setup starts one) if they are not there, then drops
COUNT (default 10,000) orders as CSV objects of up to 1,000 orders under orders/, every
third one gzipped. Ids continue after the orders already dropped. `--list` lists the lake's
objects; `--delete` empties and deletes both buckets. `--drops` and `--lake` name other
buckets. Needs boto3, which the Python that `scripts/s3-setup --python` prints has.
"""
import argparse
import gzip
import io
import re

import boto3

ENDPOINT = "http://127.0.0.1:5010"
COUNTRIES = ["DE", "FR", "NL", "PL", "SE"]
PER_OBJECT = 1000


def client():
    # The local server takes any credentials; these are the ones in secrets/.
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        aws_access_key_id="test-key",
        aws_secret_access_key="test-secret",
        region_name="us-east-1",
    )


def keys(s3, bucket, prefix=""):
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            yield o["Key"], o["Size"]


def ensure(s3, bucket):
    try:
        s3.head_bucket(Bucket=bucket)
    except s3.exceptions.ClientError:
        s3.create_bucket(Bucket=bucket)


def last_id(s3, bucket):
    """The highest order id dropped so far, from the keys' id ranges."""
    last = 0
    for key, _ in keys(s3, bucket, "orders/"):
        m = re.search(r"orders-\d+-(\d+)\.csv", key)
        if m:
            last = max(last, int(m.group(1)))
    return last


def csv_of(first, last):
    lines = ["id,email,country,amount,created_at"]
    for i in range(first, last + 1):
        lines.append(
            f"{i},customer{i}@example.org,{COUNTRIES[i % len(COUNTRIES)]},"
            f"{round(10 + (i * 7919 % 50000) / 100, 2)},"
            f"2026-12-{1 + i % 28:02d}T{i % 24:02d}:00:00Z"
        )
    return ("\n".join(lines) + "\n").encode()


def drop(s3, bucket, count):
    ensure(s3, bucket)
    first = last_id(s3, bucket) + 1
    end = first + count - 1
    objects = 0
    for start in range(first, end + 1, PER_OBJECT):
        stop = min(start + PER_OBJECT - 1, end)
        body = csv_of(start, stop)
        key = f"orders/orders-{start:07d}-{stop:07d}.csv"
        if (start // PER_OBJECT) % 3 == 0:
            buffer = io.BytesIO()
            with gzip.GzipFile(fileobj=buffer, mode="wb") as out:
                out.write(body)
            body, key = buffer.getvalue(), key + ".gz"
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        objects += 1
    print(f"dropped orders {first}..{end} as {objects} objects into s3://{bucket}/orders/")


def delete(s3, bucket):
    try:
        s3.head_bucket(Bucket=bucket)
    except s3.exceptions.ClientError:
        return
    for upload in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    for key, _ in list(keys(s3, bucket)):
        s3.delete_object(Bucket=bucket, Key=key)
    s3.delete_bucket(Bucket=bucket)
    print(f"deleted s3://{bucket}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", type=int, nargs="?", default=10_000)
    parser.add_argument("--drops", default="example-drops")
    parser.add_argument("--lake", default="example-lake")
    parser.add_argument("--list", action="store_true", help="list the lake's objects")
    parser.add_argument("--delete", action="store_true", help="delete both buckets")
    args = parser.parse_args()
    s3 = client()
    if args.delete:
        delete(s3, args.drops)
        delete(s3, args.lake)
        return
    if args.list:
        for key, size in keys(s3, args.lake):
            print(f"{size:>10}  s3://{args.lake}/{key}")
        return
    ensure(s3, args.lake)
    drop(s3, args.drops, args.count)


if __name__ == "__main__":
    main()

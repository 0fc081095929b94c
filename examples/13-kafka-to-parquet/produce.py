#!/usr/bin/env python3
"""Produce example orders to a Kafka topic for example 13.

    python3 examples/13-kafka-to-parquet/produce.py [COUNT] [--broker HOST:PORT]

Creates the topic example_orders (3 partitions; `--topic` names another) if it is not
there, then produces COUNT (default 10,000) JSON orders keyed by order id, spread over the
partitions, each batch acknowledged by the broker. `--delete` deletes the topic instead.
Only the standard library: it speaks the few Kafka requests it needs itself.
"""
import argparse
import json
import socket
import struct
import time


def crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


TABLE = crc32c_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc = (crc >> 8) ^ TABLE[(crc ^ b) & 0xFF]
    return crc ^ 0xFFFFFFFF


def varint(n):
    n = (n << 1) ^ (n >> 63)  # zig-zag
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


class Kafka:
    def __init__(self, broker):
        host, port = broker.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.correlation = 0

    def call(self, api_key, version, body):
        self.correlation += 1
        header = struct.pack(">hhi", api_key, version, self.correlation) + string("example-13")
        frame = header + body
        self.sock.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", self.read(4))[0]
        response = self.read(size)
        if struct.unpack(">i", response[:4])[0] != self.correlation:
            raise SystemExit("the broker answered another request")
        return response[4:]

    def read(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise SystemExit("the broker closed the connection")
            data += chunk
        return data

    def create_topic(self, topic, partitions):
        # CreateTopics v2: one topic, no assignments or configs, 30 s, not validate-only.
        body = struct.pack(">i", 1) + string(topic) + struct.pack(">ihii", partitions, 1, 0, 0)
        body += struct.pack(">ib", 30000, 0)
        r = self.call(19, 2, body)
        name_len = struct.unpack(">h", r[8:10])[0]
        error = struct.unpack(">h", r[10 + name_len:12 + name_len])[0]
        if error not in (0, 36):  # 36: the topic exists already
            raise SystemExit(f"cannot create topic {topic}: error code {error}")

    def delete_topic(self, topic):
        body = struct.pack(">i", 1) + string(topic) + struct.pack(">i", 30000)
        self.call(20, 1, body)

    def produce(self, topic, partition, records):
        """Produce v3: one uncompressed record batch of (key, value) pairs."""
        now = int(time.time() * 1000)
        body = bytearray()
        for i, (key, value) in enumerate(records):
            record = b"\x00" + varint(0) + varint(i)
            record += varint(len(key)) + key + varint(len(value)) + value + varint(0)
            body += varint(len(record)) + record
        after_crc = struct.pack(">hiqqqhii", 0, len(records) - 1, now, now, -1, -1, -1, len(records))
        after_crc += body
        batch = struct.pack(">qiib", 0, len(after_crc) + 9, -1, 2)
        batch += struct.pack(">I", crc32c(after_crc)) + after_crc
        request = struct.pack(">h", -1)  # no transactional id
        request += struct.pack(">hii", -1, 30000, 1) + string(topic)
        request += struct.pack(">iii", 1, partition, len(batch)) + batch
        r = self.call(0, 3, request)
        name_len = struct.unpack(">h", r[4:6])[0]
        at = 6 + name_len + 4
        error = struct.unpack(">h", r[at + 4:at + 6])[0]
        if error != 0:
            raise SystemExit(f"the broker refused a batch for {topic}/{partition}: error code {error}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", type=int, nargs="?", default=10_000)
    parser.add_argument("--broker", default="127.0.0.1:9092")
    parser.add_argument("--topic", default="example_orders")
    parser.add_argument("--delete", action="store_true")
    args = parser.parse_args()
    kafka = Kafka(args.broker)
    if args.delete:
        kafka.delete_topic(args.topic)
        print(f"deleted topic {args.topic}")
        return
    partitions = 3
    kafka.create_topic(args.topic, partitions)
    countries = ["DE", "FR", "NL", "PL", "SE"]
    batch = 1000
    for n, start in enumerate(range(0, args.count, batch)):
        records = []
        for i in range(start + 1, min(start + batch, args.count) + 1):
            order = {
                "id": i,
                "email": f"customer{i}@example.org",
                "country": countries[i % len(countries)],
                "amount": round(10 + (i * 7919 % 50000) / 100, 2),
                "created_at": f"2026-12-{1 + i % 28:02d}T{i % 24:02d}:00:00Z",
            }
            records.append((f"order-{i}".encode(), json.dumps(order).encode()))
        kafka.produce(args.topic, n % partitions, records)
    print(f"produced {args.count} orders to topic {args.topic}")


if __name__ == "__main__":
    main()

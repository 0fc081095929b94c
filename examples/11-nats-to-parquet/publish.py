#!/usr/bin/env python3
"""Publish example orders to NATS JetStream for example 11.

    python3 examples/11-nats-to-parquet/publish.py [COUNT] [--server HOST:PORT]

Creates the JetStream stream EXAMPLE_ORDERS (subjects `EXAMPLE_ORDERS.>`; `--stream` names
another) if it is not there, then publishes COUNT (default 10,000) JSON orders to
`EXAMPLE_ORDERS.eu`, each acknowledged by the stream. `--delete` deletes the stream
instead. Only the standard library: the NATS text protocol is small.
"""
import argparse
import json
import socket


INBOX = "_INBOX.example11"


class Nats:
    def __init__(self, server):
        host, port = server.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.file = self.sock.makefile("rb")
        info = self.file.readline()
        if not info.startswith(b"INFO"):
            raise SystemExit(f"{server} does not speak NATS: {info!r}")
        self.send(b'CONNECT {"verbose":false,"pedantic":false,"name":"example-11"}\r\nPING\r\n')
        self.wait_pong()
        self.send(f"SUB {INBOX} 1\r\n".encode())

    def send(self, data):
        self.sock.sendall(data)

    def wait_pong(self):
        while True:
            line = self.file.readline()
            if line.startswith(b"PONG"):
                return
            if line.startswith(b"-ERR"):
                raise SystemExit(f"NATS refused: {line.decode().strip()}")

    def publish(self, subject, payload, reply=INBOX):
        self.send(f"PUB {subject} {reply} {len(payload)}\r\n".encode() + payload + b"\r\n")

    def reply(self):
        """The payload of the next message on the inbox."""
        while True:
            line = self.file.readline()
            if not line:
                raise SystemExit("NATS closed the connection")
            if line.startswith(b"PING"):
                self.send(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                raise SystemExit(f"NATS refused: {line.decode().strip()}")
            elif line.startswith(b"MSG"):
                size = int(line.split()[-1])
                payload = self.file.read(size + 2)[:size]
                return json.loads(payload)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", type=int, nargs="?", default=10_000)
    parser.add_argument("--server", default="127.0.0.1:4222")
    parser.add_argument("--stream", default="EXAMPLE_ORDERS")
    parser.add_argument("--delete", action="store_true")
    args = parser.parse_args()
    nats = Nats(args.server)
    stream = args.stream
    if args.delete:
        nats.publish(f"$JS.API.STREAM.DELETE.{stream}", b"")
        print(f"deleted JetStream stream {stream}" if nats.reply().get("success") else f"no stream {stream}")
        return
    config = {"name": stream, "subjects": [f"{stream}.>"], "duplicate_window": 120 * 10**9}
    nats.publish(f"$JS.API.STREAM.CREATE.{stream}", json.dumps(config).encode())
    created = nats.reply()
    error = created.get("error")
    if error and error.get("err_code") != 10058:  # 10058: the stream exists already
        raise SystemExit(f"cannot create stream {stream}: {error.get('description')}")
    countries = ["DE", "FR", "NL", "PL", "SE"]
    batch = 1000
    for start in range(0, args.count, batch):
        ids = range(start + 1, min(start + batch, args.count) + 1)
        for i in ids:
            order = {
                "id": i,
                "email": f"customer{i}@example.org",
                "country": countries[i % len(countries)],
                "amount": round(10 + (i * 7919 % 50000) / 100, 2),
                "created_at": f"2026-12-{1 + i % 28:02d}T{i % 24:02d}:00:00Z",
            }
            nats.publish(f"{stream}.eu", json.dumps(order).encode())
        for _ in ids:
            ack = nats.reply()
            if "error" in ack:
                raise SystemExit(f"a message was not stored: {ack['error'].get('description')}")
    print(f"published {args.count} orders to JetStream stream {stream}")


if __name__ == "__main__":
    main()

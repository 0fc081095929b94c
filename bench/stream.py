"""The NATS stream benchmark (`scripts/bench --stream`): NATS JetStream into Parquet through
`builtin:nats`, against the machine's nats-server (127.0.0.1:4222, JetStream on).

Jobs:
  - Throughput: --messages JSON messages (about 90 bytes each) stored in a stream, then read
    into Parquet to the end (`until = "caught-up"`), medians of --repeat runs. Against it, in
    the same run, the server's own delivery rate to a bare client: a push consumer without
    acknowledgements delivering the same messages to a socket that only counts them.
  - End-to-end lag at a paced rate (--rate messages/s for --seconds), in stream mode with the
    default 1 s epochs: the host's lag figures from `_commit_ts` (when the stream stored a
    message) to the sink's commit, p50/p99/max, and the host's peak RSS.
  - With --soak MINUTES, the paced job runs that long and RSS is sampled every 10 s.
  - Webhooks (--webhook-seconds, 0 to skip): --connections senders in a closed loop (each
    sends a signed JSON delivery and waits for its answer) against `builtin:webhook` →
    Parquet in stream mode, with 1 s and 100 ms epochs: requests/s answered 2xx, and the
    latency to the answer, p50/p99 (an answer waits for the epoch's commit).

Results are appended to bench/results/DATE-stream.md.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from run import HOST, cpu_model  # noqa: E402
from cdc import rss_kib  # noqa: E402

SERVER = ("127.0.0.1", 4222)

PIPELINE = """[pipeline]
name = "bench-stream"
{mode}
[state]
dir = "{work}/state"
[[source]]
plugin = "builtin:nats"
net = ["127.0.0.1:4222"]
[source.config]
server = "127.0.0.1:4222"
stream = "{stream}"
name = "events"
{until}
payload = "json"
[source.config.columns]
id = "int64"
user = "utf8"
amount = "float64"
at = "timestamp"
[[sink]]
plugin = "builtin:file"
fs = ["{work}/out:rw"]
[sink.config]
path = "{work}/out"
format = "parquet"
"""


class Nats:
    """A bare NATS client on a raw socket: JetStream requests and pipelined publishes."""

    def __init__(self):
        self.sock = socket.create_connection(SERVER)
        self.buf = b""
        self.read_line()  # INFO
        self.sock.sendall(b'CONNECT {"verbose":false,"headers":true,"no_responders":true}\r\nSUB _INBOX.bench.* 1\r\n')
        self.n = 0
        # Messages of other subscriptions read while waiting for a reply.
        self.others = 0

    def read_line(self):
        while b"\r\n" not in self.buf:
            self.buf += self.sock.recv(1 << 20)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_msg(self):
        while True:
            line = self.read_line()
            if line == b"PING":
                self.sock.sendall(b"PONG\r\n")
                continue
            if line.startswith(b"MSG") or line.startswith(b"HMSG"):
                size = int(line.split()[-1])
                while len(self.buf) < size + 2:
                    self.buf += self.sock.recv(1 << 20)
                body, self.buf = self.buf[:size], self.buf[size + 2:]
                return line, body

    def request(self, subject, body=b""):
        self.n += 1
        reply = f"_INBOX.bench.{self.n}".encode()
        self.sock.sendall(b"PUB %s %s %d\r\n%s\r\n" % (subject.encode(), reply, len(body), body))
        while True:
            line, body = self.read_msg()
            if line.split()[1] == reply:
                return json.loads(body) if body and not line.startswith(b"HMSG") else {}
            self.others += 1

    def sync(self):
        """Wait until the server has read everything sent so far."""
        self.sock.sendall(b"PING\r\n")
        while self.read_line() != b"PONG":
            pass


def message(i, at):
    return json.dumps({"id": i, "user": f"user{i % 1000}", "amount": i % 997 + 0.5, "at": at}).encode()


def fill(stream, count):
    """Store `count` messages in `stream`, each acknowledged by the stream."""
    nats = Nats()
    nats.request(f"$JS.API.STREAM.DELETE.{stream}")
    nats.request(f"$JS.API.STREAM.CREATE.{stream}", json.dumps({"name": stream, "subjects": [f"{stream}.>"]}).encode())
    at = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    payload_bytes = 0
    chunk = []
    for i in range(1, count + 1):
        body = message(i, at)
        payload_bytes += len(body)
        chunk.append(b"PUB %s.e %d\r\n%s\r\n" % (stream.encode(), len(body), body))
        if len(chunk) == 5000:
            nats.sock.sendall(b"".join(chunk))
            chunk = []
            nats.sync()
    nats.sock.sendall(b"".join(chunk))
    nats.sync()
    info = nats.request(f"$JS.API.STREAM.INFO.{stream}")
    stored = info["state"]["messages"]
    if stored != count:
        raise SystemExit(f"the stream holds {stored} messages, not {count}")
    return payload_bytes


def bare_delivery(stream, count):
    """Seconds for the server to push `count` messages to a client that only counts them."""
    nats = Nats()
    inbox = "bench.bare.deliver"
    nats.sock.sendall(f"SUB {inbox} 2\r\n".encode())
    nats.sync()
    started = time.perf_counter()
    nats.request(
        f"$JS.API.CONSUMER.CREATE.{stream}",
        json.dumps({"stream_name": stream, "config": {"deliver_subject": inbox, "ack_policy": "none", "deliver_policy": "all"}}).encode(),
    )
    # Delivered messages keep their own subject and come on subscription 2.
    mark = b"MSG %s.e 2 " % stream.encode()
    seen = nats.others + nats.buf.count(mark)
    tail = nats.buf[-64:]
    while seen < count:
        data = nats.sock.recv(1 << 22)
        window = tail + data
        seen += window.count(mark) - tail.count(mark)
        tail = window[-64:]
        if b"PING\r\n" in data:
            nats.sock.sendall(b"PONG\r\n")
    return time.perf_counter() - started


def run_host(work, stream, mode, until):
    text = PIPELINE.format(work=work, stream=stream, mode=mode, until=until)
    with open(os.path.join(work, "pipeline.toml"), "w") as f:
        f.write(text)
    shutil.rmtree(os.path.join(work, "state"), ignore_errors=True)
    shutil.rmtree(os.path.join(work, "out"), ignore_errors=True)
    os.makedirs(os.path.join(work, "out"))


def throughput(args, work, stream):
    payload = fill(stream, args.messages)
    bare, ours = [], []
    for _ in range(args.repeat):
        bare.append(bare_delivery(stream, args.messages))
        run_host(work, stream, "", 'until = "caught-up"')
        started = time.perf_counter()
        out = subprocess.run([HOST, "run", "-q", os.path.join(work, "pipeline.toml")], capture_output=True, text=True)
        took = time.perf_counter() - started
        if out.returncode != 0 or f"{args.messages} rows written" not in out.stdout:
            raise SystemExit(f"the host run failed:\n{out.stdout}\n{out.stderr}")
        ours.append(took)
        print(f"bare client {bare[-1]:.2f} s, host {took:.2f} s", flush=True)
    return payload, bare, ours


def paced(args, work, stream, seconds):
    nats = Nats()
    nats.request(f"$JS.API.STREAM.DELETE.{stream}")
    nats.request(f"$JS.API.STREAM.CREATE.{stream}", json.dumps({"name": stream, "subjects": [f"{stream}.>"]}).encode())
    run_host(work, stream, 'mode = "stream"', "")
    log = open(os.path.join(work, "host.log"), "w")
    host = subprocess.Popen([HOST, "run", os.path.join(work, "pipeline.toml")], stdout=log, stderr=subprocess.STDOUT)
    rss = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            rss.append(rss_kib(host.pid))
            stop.wait(1.0 if seconds < 120 else 10.0)

    sampler = threading.Thread(target=sample)
    sampler.start()
    sent = 0
    started = time.perf_counter()
    tick = 0.01
    while time.perf_counter() - started < seconds:
        due = int((time.perf_counter() - started) * args.rate)
        if due > sent:
            at = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            nats.sock.sendall(b"".join(b"PUB %s.e %d\r\n%s\r\n" % (stream.encode(), len(m), m) for m in (message(i, at) for i in range(sent + 1, due + 1))))
            sent = due
        time.sleep(tick)
    nats.sync()
    time.sleep(2.5)
    host.send_signal(15)
    host.wait(timeout=60)
    stop.set()
    sampler.join()
    text = open(os.path.join(work, "host.log")).read()
    m = re.search(r"lag from source commit to sink commit: p50 ([\d.]+) s, p99 ([\d.]+) s, max ([\d.]+) s", text)
    rows = re.search(r"(\d+) rows written", text)
    if host.returncode != 0 or not m or not rows:
        raise SystemExit(f"the host did not drain cleanly (exit {host.returncode}):\n{text[-2000:]}")
    if int(rows.group(1)) != sent:
        raise SystemExit(f"{sent} messages sent, {rows.group(1)} written")
    return sent, tuple(float(x) for x in m.groups()), rss


WEBHOOK_PIPELINE = """[pipeline]
name = "bench-webhook"
mode = "stream"
[state]
dir = "{work}/state"
[checkpoint]
every = "{every}"
[secrets]
hook = {{ file = "{work}/hook.key" }}
[[source]]
plugin = "builtin:webhook"
listen = "127.0.0.1:{port}"
secrets = ["hook"]
[source.config]
paths = ["/hooks"]
stream = "events"
payload = "json"
signature = {{ style = "github", secret = "hook" }}
max_in_flight = 100000
[source.config.columns]
id = "int64"
user = "utf8"
amount = "float64"
at = "timestamp"
[[sink]]
plugin = "builtin:file"
fs = ["{work}/out:rw"]
[sink.config]
path = "{work}/out"
format = "parquet"
"""


async def webhook_load(port, connections, seconds, key):
    """Closed-loop senders; the latency of every request answered 2xx, and other answers."""
    import asyncio
    import hashlib
    import hmac

    latencies, others = [], 0
    counter = iter(range(1, 1 << 62))
    deadline = time.perf_counter() + seconds

    async def sender():
        nonlocal others
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < deadline:
            i = next(counter)
            at = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            body = message(i, at)
            sig = hmac.new(key, body, hashlib.sha256).hexdigest()
            head = (f"POST /hooks HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                    f"x-hub-signature-256: sha256={sig}\r\ncontent-length: {len(body)}\r\n\r\n")
            started = time.perf_counter()
            writer.write(head.encode() + body)
            status = int((await reader.readline()).split()[1])
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
                    # (the answer's body is read below)
            await reader.readexactly(length)
            if 200 <= status < 300:
                latencies.append(time.perf_counter() - started)
            else:
                others += 1
                await asyncio.sleep(0.05)
        writer.close()

    await asyncio.gather(*(sender() for _ in range(connections)))
    return latencies, others


def webhook(args, work, every):
    import asyncio

    port = free_port()
    key = b"bench-webhook-key"
    with open(os.path.join(work, "hook.key"), "wb") as f:
        f.write(key)
    shutil.rmtree(os.path.join(work, "state"), ignore_errors=True)
    shutil.rmtree(os.path.join(work, "out"), ignore_errors=True)
    os.makedirs(os.path.join(work, "out"))
    with open(os.path.join(work, "pipeline.toml"), "w") as f:
        f.write(WEBHOOK_PIPELINE.format(work=work, every=every, port=port))
    log = open(os.path.join(work, "host.log"), "w")
    host = subprocess.Popen([HOST, "run", "-q", os.path.join(work, "pipeline.toml")], stdout=log, stderr=subprocess.STDOUT)
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            break
        except OSError:
            time.sleep(0.05)
    rss = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            rss.append(rss_kib(host.pid))
            stop.wait(1.0)

    sampler = threading.Thread(target=sample)
    sampler.start()
    latencies, others = asyncio.run(webhook_load(port, args.connections, args.webhook_seconds, key))
    host.send_signal(15)
    host.wait(timeout=60)
    stop.set()
    sampler.join()
    text = open(os.path.join(work, "host.log")).read()
    rows = re.search(r"(\d+) rows written", text)
    if host.returncode != 0 or not rows:
        raise SystemExit(f"the host did not drain cleanly (exit {host.returncode}):\n{text[-2000:]}")
    if int(rows.group(1)) < len(latencies):
        raise SystemExit(f"{len(latencies)} requests answered 2xx, {rows.group(1)} rows written")
    latencies.sort()
    q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))]
    return len(latencies) / args.webhook_seconds, q(0.5), q(0.99), others, max(rss)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nats_jobs(args, work, stream, lines):
    payload, bare, ours = throughput(args, work, stream)
    mb = payload / 1e6
    b, o = statistics.median(bare), statistics.median(ours)
    lines += [
        f"## NATS → Parquet, {args.messages:,} JSON messages ({mb:.1f} MB of payload), medians of {args.repeat}", "",
        "| reader | median s | messages/s | MB/s | all |", "|---|---:|---:|---:|---|",
        f"| bare client (push, no acks, counts only) | {b:.2f} | {args.messages / b:,.0f} | {mb / b:.1f} | {', '.join(f'{x:.2f}' for x in bare)} |",
        f"| host: builtin:nats → Parquet, acked per epoch | {o:.2f} | {args.messages / o:,.0f} | {mb / o:.1f} | {', '.join(f'{x:.2f}' for x in ours)} |",
        "", f"Host against the bare client: {b / o:.2f}× its rate.", "",
    ]
    seconds = args.soak * 60 if args.soak else args.seconds
    sent, (p50, p99, mx), rss = paced(args, work, stream + "_P", seconds)
    lines += [
        f"## Lag at {args.rate:,} messages/s for {seconds:.0f} s, stream mode, 1 s epochs", "",
        "| messages | lag p50 | p99 | max | peak RSS |", "|---:|---:|---:|---:|---:|",
        f"| {sent:,} | {p50:.2f} s | {p99:.2f} s | {mx:.2f} s | {max(rss) / 1024:.0f} MiB |", "",
    ]
    if args.soak:
        samples = ", ".join(f"{r / 1024:.0f}" for r in rss[:: max(1, len(rss) // 12)])
        lines += [f"RSS (MiB) every {max(1, len(rss) // 12) * 10} s: {samples}", ""]


def webhook_jobs(args, work, lines):
    lines += [
        f"## Webhooks → Parquet, {args.connections} senders in a closed loop for {args.webhook_seconds} s each, GitHub-signed JSON", "",
        "| epochs | requests/s answered 2xx | answer p50 | p99 | other answers | peak RSS |", "|---|---:|---:|---:|---:|---:|",
    ]
    for every in ("1s", "100ms"):
        rate, p50, p99, others, rss = webhook(args, work, every)
        print(f"webhooks, {every} epochs: {rate:,.0f} requests/s, p50 {p50:.3f} s, p99 {p99:.3f} s", flush=True)
        lines.append(f"| {every} | {rate:,.0f} | {p50 * 1000:.0f} ms | {p99 * 1000:.0f} ms | {others} | {rss / 1024:.0f} MiB |")
    lines += ["", "An answer waits for the commit of the epoch holding the request, so its latency follows the epoch interval.", ""]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--soak", type=float, default=0, help="minutes of the paced job, sampling RSS")
    ap.add_argument("--webhook-seconds", type=int, default=20, help="seconds of each webhook load (0: skip)")
    ap.add_argument("--connections", type=int, default=1000, help="webhook senders at once")
    ap.add_argument("--only-webhook", action="store_true", help="run the webhook jobs alone")
    args = ap.parse_args()
    stream = f"BENCH_{os.getpid()}"
    work = tempfile.mkdtemp(prefix="bench-stream-")
    lines = [f"# Stream benchmark, {datetime.date.today()}", "",
             f"Machine: {cpu_model()}, {os.cpu_count()} cores. nats-server on loopback. Command: `scripts/bench --stream {' '.join(sys.argv[1:])}`.", ""]
    try:
        if not args.only_webhook:
            nats_jobs(args, work, stream, lines)
        if args.webhook_seconds > 0:
            webhook_jobs(args, work, lines)
    finally:
        for s in (stream, stream + "_P"):
            try:
                Nats().request(f"$JS.API.STREAM.DELETE.{s}")
            except OSError:
                pass
        shutil.rmtree(work, ignore_errors=True)
    text = "\n".join(lines)
    print(text)
    path = os.path.join(HERE, "results", f"{datetime.date.today()}-stream.md")
    with open(path, "a") as f:
        f.write(text + "\n")
    print(f"results: {path}")


if __name__ == "__main__":
    main()

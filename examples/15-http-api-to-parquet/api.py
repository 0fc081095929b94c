#!/usr/bin/env python3
"""A paginated JSON API of orders on loopback, for example 15.

    python3 examples/15-http-api-to-parquet/api.py [--port 8615] [--orders 2000]
    python3 examples/15-http-api-to-parquet/api.py --add 500

Serves `GET /v1/orders` to callers with `Authorization: Bearer <secrets/api.token>`: the
orders updated after `updated_after` (when given), oldest first, `limit` (default 100, at
most 500) a page, as {"data": [...], "meta": {"next_cursor": "..." | null}}; the next page
is asked for with `cursor`. Like a real API it rate-limits: every tenth request is answered
429 with `Retry-After: 1`. `--add N` asks the running server to add N new orders. Only the
standard library.
"""
import argparse
import base64
import json
import pathlib
import threading
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = pathlib.Path(__file__).parent
TOKEN = (HERE / "secrets" / "api.token").read_text().strip()
COUNTRIES = ["DE", "FR", "NL", "PL", "SE"]


def order(i):
    return {
        "id": i,
        "email": f"customer{i}@example.org",
        "country": COUNTRIES[i % len(COUNTRIES)],
        "amount": round(10 + (i * 7919 % 50000) / 100, 2),
        "created_at": f"2026-12-{1 + i % 28:02d}T{i % 24:02d}:00:00Z",
        # One order updated per second, in id order.
        "updated_at": f"2026-12-{1 + i // 86400:02d}T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z",
    }


class Orders:
    def __init__(self, count):
        self.count = count
        self.requests = 0
        self.lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    orders: Orders

    def answer(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def authorized(self):
        if self.headers.get("Authorization") == f"Bearer {TOKEN}":
            return True
        self.answer(401, {"error": "a bearer token is required"})
        return False

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/v1/orders":
            return self.answer(404, {"error": f"no such resource: {url.path}"})
        if not self.authorized():
            return
        with self.orders.lock:
            self.orders.requests += 1
            limited = self.orders.requests % 10 == 0
            count = self.orders.count
        if limited:
            return self.answer(429, {"error": "slow down"}, [("Retry-After", "1")])
        query = dict(urllib.parse.parse_qsl(url.query))
        try:
            limit = min(int(query.get("limit", "100")), 500)
            after = int(base64.urlsafe_b64decode(query["cursor"]).decode()) if "cursor" in query else 0
        except (ValueError, KeyError):
            return self.answer(400, {"error": "limit and cursor must be what the API handed out"})
        since = query.get("updated_after")
        page = []
        i = after + 1
        while i <= count and len(page) < limit:
            o = order(i)
            if since is None or o["updated_at"] > since:
                page.append(o)
            i += 1
        more = page and page[-1]["id"] < count
        cursor = base64.urlsafe_b64encode(str(page[-1]["id"]).encode()).decode() if more else None
        self.answer(200, {"data": page, "meta": {"next_cursor": cursor}})

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/v1/orders/more":
            return self.answer(404, {"error": f"no such resource: {url.path}"})
        if not self.authorized():
            return
        added = int(dict(urllib.parse.parse_qsl(url.query)).get("count", "0"))
        with self.orders.lock:
            self.orders.count += added
            count = self.orders.count
        self.answer(200, {"orders": count})

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8615)
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--add", type=int, help="add orders to the running server")
    args = parser.parse_args()
    if args.add is not None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{args.port}/v1/orders/more?count={args.add}",
            method="POST",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            print(f"the API now has {json.load(answer)['orders']} orders")
        return
    Handler.orders = Orders(args.orders)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"serving {args.orders} orders on http://127.0.0.1:{args.port}/v1/orders", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Send signed example deliveries to example 12's webhook.

    python3 examples/12-webhook-to-parquet/send.py [COUNT] [--url URL] [--from N]

Posts COUNT (default 100) JSON orders, ids from N (default 1), each with an
`X-GitHub-Delivery` id and an `X-Hub-Signature-256` HMAC of the body under the key in
secrets/webhook.key, eight at a time. Like a webhook sender, it retries a delivery until it
is answered 2xx (after a 429, a 5xx, or no answer) and gives up only on a 4xx. Only the
standard library.
"""
import argparse
import hashlib
import hmac
import json
import pathlib
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

HERE = pathlib.Path(__file__).parent


def deliver(url, key, order):
    body = json.dumps(order).encode()
    signature = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json",
        "User-Agent": "example-12-sender",
        "X-GitHub-Delivery": f"delivery-{order['id']}",
        "X-Hub-Signature-256": signature,
    })
    for attempt in range(100):
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                return answer.status
        except urllib.error.HTTPError as e:
            if e.code != 429 and e.code < 500:
                return e.code
            time.sleep(float(e.headers.get("Retry-After", "1")))
        except OSError:
            time.sleep(min(0.1 * 2 ** attempt, 2))
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", type=int, nargs="?", default=100)
    parser.add_argument("--url", default="http://127.0.0.1:8088/hooks/orders")
    parser.add_argument("--from", dest="first", type=int, default=1)
    parser.add_argument("--key-file", default=HERE / "secrets" / "webhook.key")
    args = parser.parse_args()
    key = pathlib.Path(args.key_file).read_bytes().strip()
    orders = [
        {
            "id": i,
            "customer": f"customer-{i % 97}",
            "amount": round(5 + (i * 7919 % 10000) / 100, 2),
            "created_at": f"2026-12-{1 + i % 28:02d}T{i % 24:02d}:30:00Z",
        }
        for i in range(args.first, args.first + args.count)
    ]
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda o: deliver(args.url, key, o), orders))
    ok = sum(1 for s in statuses if s is not None and 200 <= s < 300)
    print(f"{ok} of {len(orders)} deliveries answered 2xx")
    if ok != len(orders):
        raise SystemExit(1)


if __name__ == "__main__":
    main()

"""Deterministic generator of the reference orders data set (job R1).

Writes N orders as CSV (and optionally JSON Lines): order_id, customer_email,
customer_name, phone (personal data), country, amount, currency, created_at, updated_at
(ISO timestamps), status, notes (free text with commas, quotes and newlines inside
quotes). Seeded: the same N always gives the same bytes.

`--days D` spreads created_at over D days from 2025-11-01 instead of the 28 days of
October 2026: the partitioned-lake variant, many partitions in one epoch. Without it the
bytes are those of the reference data set.
"""

import csv
import datetime
import json
import random
import sys

FIRST = ["Ana", "Bob", "Chloé", "Dmitri", "Emma", "Farid", "Grace", "Hiro", "Inés", "Jack", "Kavya", "Liam"]
LAST = ["Martin", "Nguyen", "Dubois", "Ivanov", "Smith", "Haddad", "Lee", "Tanaka", "García", "O'Brien", "Rao", "Wilson"]
COUNTRIES = [("US", "USD"), ("FR", "EUR"), ("DE", "EUR"), ("GB", "GBP"), ("JP", "JPY"), ("IN", "INR"), ("BR", "BRL")]
STATUS = ["paid", "shipped", "refunded", "cancelled", "pending"]
NOTES = [
    "",
    "gift wrap, blue ribbon",
    'customer wrote: "please ring twice"',
    "deliver to the back door\n(the front one is broken)",
    "leave with neighbour, no. 12",
    "fragile\nhandle with care",
    "corporate account",
]


def rows(n, seed=20261125, days=None):
    rng = random.Random(seed)
    start = datetime.date(2025, 11, 1)
    for i in range(1, n + 1):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        country, currency = rng.choice(COUNTRIES)
        day = 1 + rng.randrange(28)
        created = f"2026-10-{day:02d}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}Z"
        if days:
            date = start + datetime.timedelta(days=(day * 7919 + i) % days)
            created = f"{date.isoformat()}{created[10:]}"
        updated = f"2026-11-{day:02d}T{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}Z"
        yield {
            "order_id": i,
            "customer_email": f"{first.lower()}.{last.lower().replace(chr(39), '')}{i}@example{i % 97}.com",
            "customer_name": f"{first} {last}" if i % 5 else f"{last}, {first}",
            "phone": f"+{1 + i % 90} {rng.randrange(100, 999)}-{rng.randrange(100, 999)}-{rng.randrange(1000, 9999)}",
            "country": country,
            "amount": f"{rng.randrange(100, 500000) / 100:.2f}",
            "currency": currency,
            "created_at": created,
            "updated_at": updated,
            "status": rng.choice(STATUS),
            "notes": rng.choice(NOTES),
        }


def main():
    args = sys.argv[1:]
    days = None
    if "--days" in args:
        at = args.index("--days")
        days = int(args[at + 1])
        del args[at:at + 2]
    n, csv_path = int(args[0]), args[1]
    jsonl_path = args[2] if len(args) > 2 else None
    fields = list(next(rows(1)).keys())
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        for r in rows(n, days=days):
            w.writerow(r)
    if jsonl_path:
        with open(jsonl_path, "w", encoding="utf-8") as f:
            for r in rows(n, days=days):
                f.write(json.dumps(r, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()

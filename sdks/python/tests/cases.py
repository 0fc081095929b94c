"""The batches of the IPC golden files, as Python values. The same batches are built in
Rust by `tests/integration/python.rs`, which writes `golden/<case>.arrows` with arrow-rs;
the tests here read those files, and `interop.py` writes these cases for arrow-rs to read."""

import datetime as dt

from ingest_plugin import Field, Schema

UTC = dt.timezone.utc

PRIMITIVES = Schema(
    [
        Field("null", "null"),
        Field("bool", "bool"),
        Field("int8", "int8"),
        Field("int16", "int16"),
        Field("int32", "int32"),
        Field("int64", "int64"),
        Field("uint8", "uint8"),
        Field("uint16", "uint16"),
        Field("uint32", "uint32"),
        Field("uint64", "uint64"),
        Field("float16", "float16"),
        Field("float32", "float32"),
        Field("float64", "float64"),
        Field("int64_required", "int64", nullable=False),
    ]
)

STRINGS = Schema(
    [
        Field("utf8", "utf8"),
        Field("large_utf8", "large_utf8"),
        Field("binary", "binary"),
        Field("large_binary", "large_binary"),
        Field("fixed_size_binary", "fixed_size_binary[3]"),
        Field("ascii_required", "utf8", nullable=False),
    ]
)

TEMPORAL = Schema(
    [
        Field("date32", "date32"),
        Field("date64", "date64"),
        Field("ts_s", "timestamp[s]"),
        Field("ts_ms_utc", "timestamp[ms, UTC]"),
        Field("ts_us_utc", "timestamp[us, UTC]"),
        Field("ts_ns_offset", "timestamp[ns, +02:00]"),
        Field("time32_s", "time32[s]"),
        Field("time32_ms", "time32[ms]"),
        Field("time64_us", "time64[us]"),
        Field("time64_ns", "time64[ns]"),
        Field("duration_s", "duration[s]"),
        Field("duration_ms", "duration[ms]"),
        Field("duration_us", "duration[us]"),
        Field("duration_ns", "duration[ns]"),
    ]
)

TEXT = ["a", None, "zoë ½ 🎉", "", 'line\nbreak, "quoted"']
BYTES = [b"\x00\xff", None, b"", b"abc", b"\x01"]

ORDERS = Schema(
    [
        Field("order_id", "int64"),
        Field("customer_email", "utf8"),
        Field("amount", "float64"),
        Field("paid", "bool"),
        Field("created_at", "timestamp[us, UTC]"),
        Field("day", "date32"),
    ]
)

SLICED = Schema([Field("n", "int32"), Field("s", "utf8"), Field("b", "bool")])


def _sliced():
    # Rows 3..8 of ten rows where n is null every third row and s every fourth.
    n = [None if i % 3 == 0 else i * 10 for i in range(10)]
    s = [None if i % 4 == 0 else f"row {i}" for i in range(10)]
    b = [i % 2 == 0 for i in range(10)]
    return {"n": n[3:8], "s": s[3:8], "b": b[3:8]}


# name -> (schema, [batch as {column: values}, ...])
CASES = {
    "primitives": (
        PRIMITIVES,
        [
            {
                "null": [None, None, None, None],
                "bool": [True, None, False, True],
                "int8": [-128, None, 0, 127],
                "int16": [-32768, 1, None, 32767],
                "int32": [-2147483648, 2, 3, None],
                "int64": [-9223372036854775808, None, 0, 9223372036854775807],
                "uint8": [0, 255, None, 7],
                "uint16": [0, 65535, 1, None],
                "uint32": [None, 4294967295, 0, 1],
                "uint64": [18446744073709551615, 0, None, 42],
                "float16": [1.5, None, -0.25, 65504.0],
                "float32": [1.5, None, -0.25, 3.4028234663852886e38],
                "float64": [1e300, None, -2.5, 0.1],
                "int64_required": [1, 2, 3, 4],
            }
        ],
    ),
    "strings": (
        STRINGS,
        [
            {
                "utf8": TEXT,
                "large_utf8": TEXT,
                "binary": BYTES,
                "large_binary": BYTES,
                "fixed_size_binary": [b"abc", None, b"\x00\x01\x02", b"xyz", b"   "],
                "ascii_required": ["x", "yy", "zzz", "", "w"],
            }
        ],
    ),
    "temporal": (
        TEMPORAL,
        [
            {
                "date32": [dt.date(2024, 2, 29), None, dt.date(1969, 12, 31)],
                "date64": [dt.date(2024, 2, 29), None, dt.date(1969, 12, 31)],
                "ts_s": [dt.datetime(1970, 1, 1), None, dt.datetime(2024, 2, 29, 12, 0)],
                "ts_ms_utc": [
                    dt.datetime(2024, 2, 29, 12, 0, 0, 123000, tzinfo=UTC),
                    None,
                    dt.datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
                ],
                "ts_us_utc": [
                    dt.datetime(2024, 2, 29, 12, 0, 0, 123456, tzinfo=UTC),
                    None,
                    dt.datetime(1970, 1, 1, tzinfo=UTC),
                ],
                "ts_ns_offset": [1709208000123456789, None, -1],
                "time32_s": [dt.time(0, 0), None, dt.time(23, 59, 59)],
                "time32_ms": [dt.time(12, 34, 56, 789000), None, dt.time(0, 0)],
                "time64_us": [dt.time(12, 34, 56, 789012), None, dt.time(0, 0, 0, 1)],
                "time64_ns": [45296789012345, None, 0],
                "duration_s": [dt.timedelta(hours=1), None, dt.timedelta(seconds=-1)],
                "duration_ms": [dt.timedelta(milliseconds=1500), None, dt.timedelta(0)],
                "duration_us": [dt.timedelta(microseconds=1), None, dt.timedelta(days=-1)],
                "duration_ns": [1, None, 123456789],
            }
        ],
    ),
    "orders": (
        ORDERS,
        [
            {
                "order_id": [1001, 1002, 1003],
                "customer_email": ["alice@example.com", None, "zoë@example.fr"],
                "amount": [129.9, 15.0, None],
                "paid": [True, False, None],
                "created_at": [
                    dt.datetime(2026, 11, 1, 9, 15, tzinfo=UTC),
                    None,
                    dt.datetime(2026, 11, 2, 8, 0, 0, 500000, tzinfo=UTC),
                ],
                "day": [dt.date(2026, 11, 1), dt.date(2026, 11, 1), None],
            }
        ],
    ),
    "empty": (
        Schema([Field("id", "int64", nullable=False), Field("name", "utf8")]),
        [{"id": [], "name": []}],
    ),
    "schema_only": (
        Schema([Field("a", "int64"), Field("b", "utf8"), Field("c", "timestamp[us, UTC]")]),
        [],
    ),
    "metadata": (
        Schema(
            [
                Field("id", "int64", nullable=False, metadata={"key": "primary"}),
                Field("label", "utf8"),
            ],
            metadata={"origin": "golden", "note": "zoë"},
        ),
        [{"id": [1, 2], "label": ["x", None]}],
    ),
    "sliced": (SLICED, [_sliced()]),
    "multi": (
        Schema([Field("id", "int64"), Field("word", "utf8")]),
        [
            {"id": [1, 2], "word": ["one", "two"]},
            {"id": [], "word": []},
            {"id": [3, None, 5], "word": [None, "four", "five"]},
        ],
    ),
}

# Golden files of types this package does not support: name -> (column, type named in
# the error).
UNSUPPORTED = {
    "unsupported_list": ("tags", "list"),
    "unsupported_decimal": ("price", "decimal128(10, 2)"),
    "unsupported_dictionary": ("country", "dictionary-encoded"),
}

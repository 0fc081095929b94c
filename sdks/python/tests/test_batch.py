"""Batch, Schema, Field and DataType: building, reading and deriving batches."""

import datetime as dt
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ingest_plugin import Batch, DataType, Field, Schema, UnsupportedType  # noqa: E402

ORDERS = Schema([Field("id", "int64", nullable=False), Field("amount", "float64"), Field("status", "utf8")])


def orders():
    return Batch(ORDERS, [[1, 2, 3], [10.5, None, 99.0], ["paid", "paid", "cancelled"]])


class Types(unittest.TestCase):
    def test_types_parse_from_their_names(self):
        self.assertEqual(DataType.parse("timestamp[us, UTC]"), DataType("timestamp", "us", "UTC"))
        self.assertEqual(DataType.parse("timestamp[ms, tz=+02:00]").tz, "+02:00")
        self.assertEqual(DataType.parse("timestamp"), DataType("timestamp", "us", "UTC"))
        self.assertEqual(DataType.parse("string"), DataType("utf8"))
        self.assertEqual(DataType.parse("fixed_size_binary[16]").width, 16)
        self.assertEqual(str(DataType.parse("time64[ns]")), "time64[ns]")
        self.assertEqual(Field("a", "int64").type, "int64")

    def test_unknown_types_and_bad_units_are_refused(self):
        with self.assertRaises(UnsupportedType):
            DataType.parse("decimal128[10, 2]")
        with self.assertRaises(ValueError):
            DataType.parse("time32[us]")
        with self.assertRaises(ValueError):
            DataType("timestamp", "minutes")

    def test_a_schema_refuses_a_name_twice_and_names_the_columns_it_has(self):
        with self.assertRaises(ValueError):
            Schema([Field("a", "int64"), Field("a", "utf8")])
        with self.assertRaises(KeyError) as raised:
            ORDERS.index("nope")
        self.assertIn("id, amount, status", str(raised.exception))


class Building(unittest.TestCase):
    def test_columns_must_have_the_batch_length(self):
        with self.assertRaises(ValueError) as raised:
            Batch(ORDERS, [[1, 2], [1.0], ["a", "b"]])
        self.assertIn("'amount'", str(raised.exception))

    def test_from_rows_takes_dicts_and_tuples(self):
        batch = Batch.from_rows([{"id": 1, "status": "paid"}, (2, 3.5, None)], ORDERS)
        self.assertEqual(batch.to_pydict(), {"id": [1, 2], "amount": [None, 3.5], "status": ["paid", None]})

    def test_from_columns_infers_types(self):
        batch = Batch.from_columns(
            {
                "i": [1, None],
                "f": [1, 2.5],
                "s": ["a", None],
                "b": [True, False],
                "t": [dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), None],
                "d": [dt.date(2024, 1, 1), None],
                "n": [None, None],
            }
        )
        types = [str(f.type) for f in batch.schema]
        self.assertEqual(types, ["int64", "float64", "utf8", "bool", "timestamp[us, tz=UTC]", "date32", "null"])
        self.assertEqual(Batch.from_ipc(batch.to_ipc()), batch)

    def test_from_columns_refuses_mixed_columns(self):
        with self.assertRaises(TypeError) as raised:
            Batch.from_columns({"x": [1, "a"]})
        self.assertIn("'x'", str(raised.exception))


class Reading(unittest.TestCase):
    def test_rows_iterate_as_dicts(self):
        self.assertEqual(
            list(orders()),
            [
                {"id": 1, "amount": 10.5, "status": "paid"},
                {"id": 2, "amount": None, "status": "paid"},
                {"id": 3, "amount": 99.0, "status": "cancelled"},
            ],
        )
        self.assertEqual(orders().row(-1)["id"], 3)
        self.assertEqual(orders()["status"], orders().column(2))


class Deriving(unittest.TestCase):
    def test_filter_keeps_the_rows_the_mask_says(self):
        batch = orders().filter([s == "paid" for s in orders()["status"]])
        self.assertEqual(batch["id"], [1, 2])
        self.assertEqual(batch.schema, ORDERS)

    def test_with_column_adds_or_replaces(self):
        batch = orders().with_column(Field("cents", "int64"), [1050, None, 9900])
        self.assertEqual(batch.schema.names, ["id", "amount", "status", "cents"])
        batch = batch.with_column("status", ["a", "b", "c"])
        self.assertEqual(batch["status"], ["a", "b", "c"])
        self.assertEqual(batch.schema.field("status").type, "utf8")
        read = Batch.from_ipc(batch.to_ipc())
        self.assertEqual(read["cents"], [1050, None, 9900])

    def test_select_drop_rename_slice_take(self):
        batch = orders()
        self.assertEqual(batch.select(["status", "id"]).schema.names, ["status", "id"])
        self.assertEqual(batch.drop("amount").schema.names, ["id", "status"])
        self.assertEqual(batch.rename({"id": "order_id"}).schema.names[0], "order_id")
        self.assertEqual(batch.slice(1)["id"], [2, 3])
        self.assertEqual(batch.take([2, 0])["id"], [3, 1])

    def test_a_derived_batch_of_an_ipc_batch_reuses_untouched_columns(self):
        read = Batch.from_ipc(orders().to_ipc())
        derived = read.with_column(Field("flag", "bool"), [True, False, True])
        self.assertEqual(Batch.from_ipc(derived.to_ipc())["status"], ["paid", "paid", "cancelled"])


if __name__ == "__main__":
    unittest.main()

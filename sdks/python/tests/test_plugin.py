"""The plugin side natively: base classes, the error mapping onto the contract's variant,
finding the plugin class, pinning, and the Python templates run in plain Python."""

import dataclasses
import importlib.util
import json
import os
import sys
import tempfile
import types
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(HERE, ".."))

from ingest_plugin import (  # noqa: E402
    AccessDenied,
    Batch,
    DataError,
    Fatal,
    Field,
    InvalidConfig,
    Schema,
    Split,
    Stream,
    Transform,
    Transient,
    WriteMode,
    _bridge,
    pin,
)


def fake_wit_types():
    """Stand-ins for the generated `wit_world.imports.types` error cases."""
    module = types.SimpleNamespace()
    for name in ("Error_InvalidConfig", "Error_AccessDenied", "Error_Transient", "Error_Data", "Error_Fatal"):
        setattr(module, name, dataclasses.make_dataclass(name, ["value"]))
    module.TransientError = dataclasses.make_dataclass("TransientError", ["message", "retry_after_ms"])
    return module


def load(path, name):
    sys.dont_write_bytecode = True  # no __pycache__ in the templates
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Errors(unittest.TestCase):
    def test_each_exception_maps_to_its_case(self):
        t = fake_wit_types()
        self.assertEqual(_bridge.to_wit_error(InvalidConfig("k"), t), t.Error_InvalidConfig("k"))
        self.assertEqual(_bridge.to_wit_error(AccessDenied("a"), t), t.Error_AccessDenied("a"))
        self.assertEqual(
            _bridge.to_wit_error(Transient("busy", retry_after_ms=250), t),
            t.Error_Transient(t.TransientError("busy", 250)),
        )
        self.assertEqual(_bridge.to_wit_error(Transient("busy"), t), t.Error_Transient(t.TransientError("busy", None)))
        self.assertEqual(_bridge.to_wit_error(DataError("d"), t), t.Error_Data("d"))
        self.assertEqual(_bridge.to_wit_error(Fatal("f"), t), t.Error_Fatal("f"))

    def test_any_other_exception_is_fatal_with_the_last_traceback_line(self):
        t = fake_wit_types()
        try:
            {}["amount"]
        except KeyError as e:
            error = _bridge.to_wit_error(e, t)
        self.assertEqual(error, t.Error_Fatal("KeyError: 'amount'"))

    def test_retry_after_must_be_milliseconds(self):
        with self.assertRaises(ValueError):
            Transient("x", retry_after_ms=-1)

    def test_configs_parse_from_json(self):
        self.assertEqual(_bridge.parse_config('{"a": 1}'), {"a": 1})
        self.assertEqual(_bridge.parse_config(""), {})
        self.assertEqual(_bridge.parse_config("null"), {})
        with self.assertRaises(InvalidConfig):
            _bridge.parse_config("{nope")


class FindingThePlugin(unittest.TestCase):
    def tearDown(self):
        sys.modules.pop("app", None)

    def install_app(self, source):
        module = types.ModuleType("app")
        exec(source, module.__dict__)
        sys.modules["app"] = module

    def test_the_one_subclass_in_app_is_the_plugin(self):
        self.install_app("from ingest_plugin import Transform, Field\nclass Mine(Transform):\n    pass\n")
        self.assertEqual(_bridge.plugin_class(Transform).__name__, "Mine")

    def test_several_need_plugin_named(self):
        self.install_app("from ingest_plugin import Transform\nclass A(Transform): pass\nclass B(Transform): pass\n")
        with self.assertRaises(TypeError) as raised:
            _bridge.plugin_class(Transform)
        self.assertIn("PLUGIN = TheClass", str(raised.exception))
        self.install_app(
            "from ingest_plugin import Transform\nclass A(Transform): pass\nclass B(Transform): pass\nPLUGIN = B\n"
        )
        self.assertEqual(_bridge.plugin_class(Transform).__name__, "B")

    def test_batches_in_another_schema_than_declared_are_refused(self):
        declared = Schema([Field("a", "int64")])
        other = Batch(Schema([Field("b", "int64")]), [[1]])
        with self.assertRaises(Fatal):
            _bridge.as_batches(other, declared, "process")
        self.assertEqual(_bridge.as_batches([Batch.empty(declared)], declared, "process"), [])


class Transforms(unittest.TestCase):
    def test_state_is_restored_after_open_and_rejects_are_collected(self):
        class Counting(Transform):
            def __init__(self, config, input_schema):
                super().__init__(config, input_schema)
                self.seen = 0

            def restore(self, state):
                self.seen = int(state)

            def checkpoint(self):
                return str(self.seen)

            def process(self, batch):
                self.seen += batch.num_rows
                self.reject(0, "first row")
                return batch

        schema = Schema([Field("a", "int64")])
        t = Counting.open({}, schema, b"5")
        t.process(Batch(schema, [[1, 2]]))
        self.assertEqual(t.checkpoint(), "7")
        self.assertEqual([r.reason for r in t.take_rejects()], ["first row"])
        self.assertEqual(t.take_rejects(), [])


class Pinning(unittest.TestCase):
    def test_the_pin_of_the_built_file_is_rewritten_and_nothing_else(self):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "x.wasm"), "wb") as f:
                f.write(b"component")
            text = (
                '[[transform]]\nplugin = "x.wasm"\nsha256 = "00"  # pinned\n\n'
                '[[sink]]\nplugin = "y.wasm"\nsha256 = "11"\n'
            )
            with open(os.path.join(d, "pipeline.toml"), "w") as f:
                f.write(text)
            digest = pin.pin(os.path.join(d, "pipeline.toml"), os.path.join(d, "x.wasm"))
            with open(os.path.join(d, "pipeline.toml")) as f:
                result = f.read()
            self.assertEqual(result, text.replace('"00"', f'"{digest}"'))
            with open(os.path.join(d, "z.wasm"), "wb") as f:
                f.write(b"another")
            with self.assertRaises(ValueError):
                pin.pin(os.path.join(d, "pipeline.toml"), os.path.join(d, "z.wasm"))


class Templates(unittest.TestCase):
    """The templates' plugins, run here in plain Python (the build runs them in the host)."""

    def setUp(self):
        self.cwd = os.getcwd()
        self.dir = tempfile.TemporaryDirectory()
        os.chdir(self.dir.name)

    def tearDown(self):
        os.chdir(self.cwd)
        self.dir.cleanup()

    def template(self, kind):
        return load(os.path.join(ROOT, "templates", "python", kind, "app.py"), f"template_{kind}").Plugin

    def test_transform_filters_derives_and_rejects(self):
        plugin = self.template("transform")
        schema = Schema([Field("id", "int64"), Field("city", "utf8")])
        t = plugin.open({"column": "city", "contains": "o"}, schema)
        out = t.process(Batch(schema, [[1, 2, 3], ["Porto", None, "Paris"]]))
        self.assertEqual(out.to_pydict(), {"id": [1], "city": ["Porto"], "city_length": [5]})
        self.assertEqual([(r.row, r.reason) for r in t.take_rejects()], [(1, "city is empty")])
        with self.assertRaises(InvalidConfig):
            plugin.open({"column": "nope"}, schema)

    def test_source_reads_lines_and_resumes_from_its_position(self):
        plugin = self.template("source")
        os.mkdir("input")
        with open("input/a.txt", "w") as f:
            f.write("one\n\nthree\npartial")
        config = {"dir": "input"}
        plugin.check(config)
        (split,) = plugin.splits(config, "lines")
        reader = plugin.open(config, "lines", Split(split.id, split.descriptor), None)
        chunk = reader.next(10)
        self.assertEqual(chunk.batch.to_pydict(), {"file": ["a.txt", "a.txt"], "line": [1, 3], "text": ["one", "three"]})
        self.assertEqual([r.location for r in chunk.rejects], ["input/a.txt:2"])
        self.assertIsNone(reader.next(10))
        with open("input/a.txt", "a") as f:
            f.write(" line\n")
        again = plugin.open(config, "lines", Split(split.id, split.descriptor), chunk.position)
        self.assertEqual(again.next(10).batch["text"], ["partial line"])
        reader.file.close()
        again.file.close()
        with self.assertRaises(InvalidConfig):
            plugin.check({"dir": "missing"})

    def test_sink_publishes_by_rename_and_a_repeated_commit_changes_nothing(self):
        plugin = self.template("sink")
        os.mkdir("out")
        schema = Schema([Field("id", "int64"), Field("name", "utf8")])
        writer = plugin.open({"dir": "out"}, Stream("rows", schema), WriteMode("append"))
        writer.write(Batch(schema, [[1, 2], ["Ana", None]]))
        token = writer.prepare(1)
        self.assertEqual(os.listdir("out/rows") if os.path.exists("out/rows") else [], [])
        names = writer.commit(1, token.encode())
        self.assertEqual(names, ["out/rows/epoch-0000000001.jsonl"])
        fresh = plugin.open({"dir": "out"}, Stream("rows", schema), WriteMode("append"))
        self.assertEqual(fresh.commit(1, token.encode()), names)
        with open(names[0]) as f:
            self.assertEqual([json.loads(line) for line in f], [{"id": 1, "name": "Ana"}, {"id": 2, "name": None}])
        writer.write(Batch(schema, [[3], ["Eva"]]))
        writer.prepare(2)
        writer.abort(2)
        self.assertEqual(os.listdir("out/.staging/rows"), [])
        self.assertEqual(writer.commit(3, writer.prepare(3).encode()), [])


if __name__ == "__main__":
    unittest.main()

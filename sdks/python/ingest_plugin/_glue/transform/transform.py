"""The `transformer` resource of a transform component, backed by the plugin class."""

from wit_world.exports import transform as wit
from wit_world.imports import types

from ingest_plugin import _bridge
from ingest_plugin.arrow import Schema
from ingest_plugin.batch import Batch
from ingest_plugin.plugin import Transform

PLUGIN = _bridge.plugin_class(Transform)


class Transformer(wit.Transformer):
    def __init__(self, inner):
        self._inner = inner
        self._schema = None

    @classmethod
    def open(cls, config, input_schema, state=None):
        def run():
            schema = Schema.from_ipc(input_schema)
            return cls(PLUGIN.open(_bridge.parse_config(config), schema, None if state is None else bytes(state)))

        return _bridge.call(run)

    def _output_schema(self):
        if self._schema is None:
            self._schema = _bridge.as_schema(self._inner.output_schema(), "output_schema()")
        return self._schema

    def output_schema(self):
        return _bridge.call(lambda: self._output_schema().to_ipc())

    def _output(self, result, what):
        batches = _bridge.as_batches(result, self._output_schema(), what)
        rejects = _bridge.wit_rejects(self._inner.take_rejects(), types)
        return wit.Output(batches, rejects)

    def process(self, batch):
        return _bridge.call(lambda: self._output(self._inner.process(Batch.from_ipc(batch)), "process"))

    def flush(self):
        return _bridge.call(lambda: self._output(self._inner.flush(), "flush"))

    def checkpoint(self):
        return _bridge.call(lambda: _bridge.as_bytes(self._inner.checkpoint(), "checkpoint()"))

"""The `writer` resource of a sink component, backed by the plugin class."""

from wit_world.exports import sink as wit
from wit_world.imports import types

from ingest_plugin import _bridge
from ingest_plugin.arrow import Schema
from ingest_plugin.batch import Batch
from ingest_plugin.plugin import Sink, Stream, WriteMode

PLUGIN = _bridge.plugin_class(Sink)

_SYNC_MODES = {types.SyncMode.FULL_REFRESH: "full_refresh", types.SyncMode.INCREMENTAL: "incremental"}


def _mode(mode):
    if isinstance(mode, types.WriteMode_Upsert):
        return WriteMode("upsert", mode.value)
    if isinstance(mode, types.WriteMode_Overwrite):
        return WriteMode("overwrite")
    return WriteMode("append")


class Writer(wit.Writer):
    def __init__(self, inner):
        self._inner = inner

    @classmethod
    def open(cls, config, stream, mode):
        def run():
            info = Stream(
                stream.name,
                Schema.from_ipc(stream.schema),
                stream.primary_key,
                stream.cursor_field,
                [_SYNC_MODES[m] for m in stream.sync_modes],
            )
            return cls(PLUGIN.open(_bridge.parse_config(config), info, _mode(mode)))

        return _bridge.call(run)

    def write(self, batch):
        def run():
            self._inner.write(Batch.from_ipc(batch))
            return _bridge.wit_rejects(self._inner.take_rejects(), types)

        return _bridge.call(run)

    def prepare(self, epoch):
        return _bridge.call(lambda: _bridge.as_bytes(self._inner.prepare(epoch), "prepare()'s token"))

    def commit(self, epoch, token):
        def run():
            names = self._inner.commit(epoch, bytes(token))
            return [str(n) for n in (names or [])]

        return _bridge.call(run)

    def abort(self, epoch):
        _bridge.call(lambda: self._inner.abort(epoch))

    def finish(self):
        finish = getattr(self._inner, "finish", None)
        if finish is not None:
            _bridge.call(finish)

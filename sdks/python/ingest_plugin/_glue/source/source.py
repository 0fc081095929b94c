"""The `reader` resource of a source component, backed by the plugin class."""

from wit_world.exports import source as wit
from wit_world.imports import types

from ingest_plugin import _bridge, host
from ingest_plugin.plugin import Chunk, Source, Split

PLUGIN = _bridge.plugin_class(Source)


class Reader(wit.Reader):
    def __init__(self, inner):
        self._inner = inner

    @classmethod
    def open(cls, config, stream, split, position):
        def run():
            inner = PLUGIN.open(
                _bridge.parse_config(config),
                stream,
                Split(split.id, split.descriptor),
                None if position is None else bytes(position),
            )
            return cls(inner)

        return _bridge.call(run)

    def next(self, max_rows):
        def run():
            chunk = self._inner.next(max_rows)
            if chunk is None:
                return None
            if not isinstance(chunk, Chunk):
                raise TypeError(f"next() returned {type(chunk).__name__}; return a Chunk or None")
            return wit.Chunk(
                batch=chunk.batch.to_ipc(),
                position=chunk.position,
                rejects=_bridge.wit_rejects(chunk.rejects, types),
            )

        return _bridge.call(run)

    def ack(self, position):
        try:
            self._inner.ack(bytes(position))
        except Exception as e:
            host.log(f"ack failed: {type(e).__name__}: {e}", "warn")

"""Entry of a source component: the `source` interface's free functions."""

from wit_world import exports
from wit_world.exports import source as wit
from wit_world.imports import types

import source  # imports app.py at build time, so a broken plugin fails the build
from ingest_plugin import _bridge
from ingest_plugin.plugin import Replayed

_SYNC_MODES = {"full_refresh": types.SyncMode.FULL_REFRESH, "incremental": types.SyncMode.INCREMENTAL}


class Source(exports.Source):
    def spec(self):
        return _bridge.spec_json(source.PLUGIN)

    def check(self, config):
        _bridge.call(lambda: source.PLUGIN.check(_bridge.parse_config(config)))

    def discover(self, config):
        def run():
            return [
                types.StreamInfo(
                    name=s.name,
                    schema=s.schema.to_ipc(),
                    primary_key=list(s.primary_key),
                    cursor_field=s.cursor_field,
                    sync_modes=[_SYNC_MODES[m] for m in s.sync_modes],
                )
                for s in source.PLUGIN.discover(_bridge.parse_config(config))
            ]

        return _bridge.call(run)

    def splits(self, config, stream):
        def run():
            return [
                types.Split(id=s.id, descriptor=s.descriptor)
                for s in source.PLUGIN.splits(_bridge.parse_config(config), stream)
            ]

        return _bridge.call(run)

    def replay(self, config, stream, records):
        def run():
            replayed = source.PLUGIN.replay(_bridge.parse_config(config), stream, list(records))
            if not isinstance(replayed, Replayed):
                raise TypeError(f"replay() returned {type(replayed).__name__}; return a Replayed")
            return wit.Replayed(
                batch=replayed.batch.to_ipc(),
                rejects=_bridge.wit_rejects(replayed.rejects, types),
            )

        return _bridge.call(run)

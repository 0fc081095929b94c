"""Entry of a sink component: the `sink` interface's free functions."""

from wit_world import exports

import sink  # imports app.py at build time, so a broken plugin fails the build
from ingest_plugin import _bridge


class Sink(exports.Sink):
    def spec(self):
        return _bridge.spec_json(sink.PLUGIN)

    def check(self, config):
        _bridge.call(lambda: sink.PLUGIN.check(_bridge.parse_config(config)))

"""Entry of a transform component: the `transform` interface's free functions."""

from wit_world import exports

import transform  # imports app.py at build time, so a broken plugin fails the build
from ingest_plugin import _bridge


class Transform(exports.Transform):
    def spec(self):
        return _bridge.spec_json(transform.PLUGIN)

    def check(self, config):
        _bridge.call(lambda: transform.PLUGIN.check(_bridge.parse_config(config)))

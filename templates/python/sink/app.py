"""{{name}}: a sink plugin.

Writes each stream as JSON Lines files into the directory `dir` (which must be granted
read-write: fs = ["out:rw"]), published by two-phase commit:

- `write` appends the rows of the open epoch to a staging file, `<dir>/.staging/<stream>/open.jsonl`;
- `prepare(epoch)` makes it durable (fsync) and renames it to `.staging/<stream>/epoch-<E>.jsonl`;
  the token names that file and the file it will be published as;
- `commit(epoch, token)` publishes by renaming it to `<dir>/<stream>/epoch-<E>.jsonl`. A repeat
  (after a crash, from a fresh instance) finds the file already published and changes nothing;
- `abort(epoch)` deletes what was staged.

Readers of `<dir>/<stream>/` only ever see whole epochs. Change `_line` to write another
format; `ingest_plugin/README.md` documents the API.
"""

import base64
import datetime
import json
import os

from ingest_plugin import AccessDenied, Fatal, InvalidConfig, Sink, expect_keys


def _json(value):
    """JSON for the values json cannot write itself."""
    if isinstance(value, datetime.datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


class Plugin(Sink):
    @classmethod
    def spec(cls):
        """The JSON Schema of the config ([sink.config] in pipeline.toml)."""
        return {
            "type": "object",
            "properties": {"dir": {"type": "string", "description": "a directory granted read-write"}},
            "required": ["dir"],
        }

    @classmethod
    def check(cls, config):
        """Validate the config and check the target is writable with the grants given."""
        expect_keys(config, required=["dir"])
        directory = config.get("dir")
        if not isinstance(directory, str) or not directory:
            raise InvalidConfig('dir: name the output directory, e.g. dir = "out"')
        probe = os.path.join(directory, ".write-check")
        try:
            with open(probe, "w"):
                pass
            os.remove(probe)
        except OSError as e:
            raise AccessDenied(
                f"dir = {directory!r} is not writable ({e.strerror}); grant it with fs = [\"{directory}:rw\"]"
            ) from None

    def __init__(self, config, stream, mode):
        """A writer for one stream (`stream.name`, `stream.schema`) in `mode`."""
        super().__init__(config, stream, mode)
        self.check(config)
        directory = config["dir"]
        self.published = os.path.join(directory, stream.name)
        self.staging = os.path.join(directory, ".staging", stream.name)
        os.makedirs(self.staging, exist_ok=True)
        self.open_path = os.path.join(self.staging, "open.jsonl")
        self.file = None

    def _line(self, row):
        return json.dumps(row, default=_json, ensure_ascii=False) + "\n"

    def write(self, batch):
        """Stage one batch of the open epoch."""
        if self.file is None:
            # "w": whatever a failed attempt left here is not part of this epoch.
            self.file = open(self.open_path, "w", encoding="utf-8")
        self.file.writelines(self._line(row) for row in batch.rows())

    def _names(self, epoch):
        name = f"epoch-{epoch:010d}.jsonl"
        return os.path.join(self.staging, name), os.path.join(self.published, name)

    def prepare(self, epoch):
        """Make the epoch durable but unpublished; the token lets commit publish it."""
        staged, final = self._names(epoch)
        if self.file is None:
            return json.dumps({"staged": None, "final": None})
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        self.file = None
        os.replace(self.open_path, staged)
        return json.dumps({"staged": staged, "final": final})

    def commit(self, epoch, token):
        """Publish the epoch; a repeat changes nothing and names the same file."""
        names = json.loads(token)
        staged, final = names["staged"], names["final"]
        if staged is None:
            return []
        if os.path.exists(staged):
            os.makedirs(self.published, exist_ok=True)
            os.replace(staged, final)
        elif not os.path.exists(final):
            raise Fatal(f"epoch {epoch}: {staged} is gone and {final} was never published")
        return [final]

    def abort(self, epoch):
        """Discard what was staged for the epoch."""
        if self.file is not None:
            self.file.close()
            self.file = None
        staged, _ = self._names(epoch)
        for path in (self.open_path, staged):
            if os.path.exists(path):
                os.remove(path)

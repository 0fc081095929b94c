"""{{name}}: a source plugin.

Reads the text files of the directory `dir` (which must be in the source's `fs` grant) as
rows of (file, line, text), one split per file. The position after each chunk is the
byte offset and line number reached in that file, so a later run reads only the lines
appended since. An empty line is rejected, to show how: the host sends it to the
dead-letter queue with its location.

Change `discover` (the streams and their schemas) and `next` (the rows) to read what your
source reads; `ingest_plugin/README.md` documents the API.
"""

import json
import os

from ingest_plugin import Batch, Chunk, Field, InvalidConfig, Reject, Schema, Source, Split, Stream, expect_keys

SCHEMA = Schema(
    [
        Field("file", "utf8", nullable=False),
        Field("line", "int64", nullable=False),
        Field("text", "utf8", nullable=False),
    ]
)


class Plugin(Source):
    @classmethod
    def spec(cls):
        """The JSON Schema of the config ([source.config] in pipeline.toml)."""
        return {
            "type": "object",
            "properties": {"dir": {"type": "string", "description": "a granted directory of text files"}},
            "required": ["dir"],
        }

    @classmethod
    def check(cls, config):
        """Validate the config and reach the input; InvalidConfig stops the run (exit code 2)."""
        expect_keys(config, required=["dir"])
        directory = config.get("dir")
        if not isinstance(directory, str):
            raise InvalidConfig('dir: name a directory of text files, e.g. dir = "input"')
        try:
            os.listdir(directory)
        except OSError as e:
            raise InvalidConfig(f"dir = {directory!r}: {e.strerror}; is it in the source's fs grant?") from None

    @classmethod
    def discover(cls, config):
        """The streams this source offers, with their schemas."""
        return [Stream("lines", SCHEMA)]

    @classmethod
    def splits(cls, config, stream):
        """Independent units of work, read in this order: here one per file."""
        directory = config["dir"]
        names = sorted(n for n in os.listdir(directory) if os.path.isfile(os.path.join(directory, n)))
        return [Split(name, os.path.join(directory, name)) for name in names]

    def __init__(self, config, stream, split, position):
        """A reader of one split, resuming after `position` (bytes from an earlier chunk)."""
        super().__init__(config, stream, split, position)
        self.path = split.descriptor.decode("utf-8")
        state = json.loads(position) if position else {"offset": 0, "line": 0}
        self.offset, self.line = state["offset"], state["line"]
        self.file = open(self.path, "rb")
        self.file.seek(self.offset)

    def next(self, max_rows):
        """The next chunk of at most `max_rows` rows with the position after it, or None at the end."""
        rows, rejects = [], []
        while len(rows) < max_rows:
            raw = self.file.readline()
            if not raw.endswith(b"\n"):
                break  # the end, or a line still being written
            self.offset += len(raw)
            self.line += 1
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            if text.strip():
                rows.append((self.split.id, self.line, text))
            else:
                rejects.append(Reject("empty line", original=text, location=f"{self.path}:{self.line}"))
        if not rows and not rejects:
            return None
        position = json.dumps({"offset": self.offset, "line": self.line})
        return Chunk(Batch.from_rows(rows, SCHEMA), position, rejects)

"""Reads a web server access log (the common/combined log format) as rows.

One stream, `access_log`, with one split: the file at `path` (which must lie in a
directory of the source's `fs` grant). Each line becomes a row (ip, user, at, method,
path, status, bytes); a line that does not parse is rejected with its line number, and the
host sends it to the dead-letter queue. The position after each chunk is the byte offset
and line number reached, so a later run reads only lines appended since; a last line
without its newline (still being written) is left for the next run. `host dlq replay`
hands rejected lines back to `replay`, which parses them again.
"""

import datetime
import json
import re

from ingest_plugin import Batch, Chunk, Field, InvalidConfig, Reject, Replayed, Schema, Source, Stream

SCHEMA = Schema(
    [
        Field("ip", "utf8", nullable=False),
        Field("user", "utf8"),
        Field("at", "timestamp[us, UTC]", nullable=False),
        Field("method", "utf8", nullable=False),
        Field("path", "utf8", nullable=False),
        Field("status", "int32", nullable=False),
        Field("bytes", "int64"),
    ]
)

LINE = re.compile(r'(\S+) \S+ (\S+) \[([^\]]+)\] "(\S+) (\S+)[^"]*" (\d{3}) (\d+|-)')


def parse(line):
    """The row of one log line; ValueError says why a line is not one."""
    match = LINE.match(line)
    if not match:
        raise ValueError("not in the common log format")
    ip, user, at, method, path, status, size = match.groups()
    try:
        when = datetime.datetime.strptime(at, "%d/%b/%Y:%H:%M:%S %z")
    except ValueError:
        raise ValueError(f"bad time {at!r}") from None
    return (
        ip,
        None if user == "-" else user,
        when.astimezone(datetime.timezone.utc),
        method,
        path,
        int(status),
        None if size == "-" else int(size),
    )


class AccessLog(Source):
    @classmethod
    def spec(cls):
        return {
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "the log file, in a granted directory"},
                "stream": {"type": "string", "default": "access_log"},
            },
            "required": ["path"],
        }

    @classmethod
    def check(cls, config):
        path = config.get("path")
        if not isinstance(path, str) or not path:
            raise InvalidConfig('path: give the log file, e.g. path = "data/access.log"')
        try:
            open(path, "rb").close()
        except OSError as e:
            raise InvalidConfig(
                f"path = {path!r}: cannot open it ({e.strerror}); is its directory in the source's fs grant?"
            ) from None

    @classmethod
    def discover(cls, config):
        return [Stream(config.get("stream", "access_log"), SCHEMA)]

    @classmethod
    def replay(cls, config, stream, records):
        rows, rejects = [], []
        for index, text in enumerate(records):
            try:
                rows.append(parse(text))
            except ValueError as e:
                rejects.append(Reject(str(e), row=index, original=text))
        return Replayed(Batch.from_rows(rows, SCHEMA), rejects)

    def __init__(self, config, stream, split, position):
        super().__init__(config, stream, split, position)
        self.path = config["path"]
        state = json.loads(position) if position else {"offset": 0, "line": 0}
        self.offset, self.line = state["offset"], state["line"]
        self.file = open(self.path, "rb")
        self.file.seek(self.offset)

    def next(self, max_rows):
        rows, rejects = [], []
        while len(rows) < max_rows:
            raw = self.file.readline()
            if not raw.endswith(b"\n"):
                break  # the end, or a line still being written
            self.offset += len(raw)
            self.line += 1
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            try:
                rows.append(parse(text))
            except ValueError as e:
                rejects.append(Reject(str(e), original=text, location=f"{self.path}:{self.line}"))
        if not rows and not rejects:
            return None
        position = json.dumps({"offset": self.offset, "line": self.line})
        return Chunk(Batch.from_rows(rows, SCHEMA), position, rejects)

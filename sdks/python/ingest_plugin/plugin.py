"""The base classes of the three plugin kinds, mirroring the worlds of `wit/plugin.wit`.

A plugin is one subclass of `Source`, `Transform` or `Sink` in the module `app.py`. The
contract's free functions (`spec`, `check`, `discover`, `splits`) are class methods; the
contract's resource (a source's reader, a transformer, a sink's writer) is an instance,
created by `open` (which calls the constructor) for one stream. Configs arrive parsed from
JSON (a dict); schemas as `Schema`; batches as `Batch`. Raise the errors of
`ingest_plugin.errors` to report the contract's error cases.
"""

from .arrow import Schema
from .batch import Batch

SYNC_MODES = ("full_refresh", "incremental")


def _schema(value):
    return value if isinstance(value, Schema) else Schema(value)


class Stream:
    """A stream a source offers (what `discover` returns), and what a sink is opened for.
    `sync_modes` lists `"full_refresh"` and/or `"incremental"`."""

    def __init__(self, name, schema, primary_key=(), cursor_field=None, sync_modes=SYNC_MODES):
        for mode in sync_modes:
            if mode not in SYNC_MODES:
                raise ValueError(f"sync mode {mode!r}; use {' or '.join(SYNC_MODES)}")
        self.name = name
        self.schema = _schema(schema)
        self.primary_key = list(primary_key)
        self.cursor_field = cursor_field
        self.sync_modes = list(sync_modes)

    def __repr__(self):
        return f"Stream({self.name!r}, {self.schema})"


class Split:
    """An independent unit of work of a stream (a file, a key range): a stable `id` and a
    `descriptor` (bytes, or a str stored as UTF-8) that `open` reads back."""

    def __init__(self, id, descriptor=b""):
        self.id = id
        self.descriptor = descriptor.encode("utf-8") if isinstance(descriptor, str) else bytes(descriptor)

    def __repr__(self):
        return f"Split({self.id!r}, {self.descriptor!r})"


class Reject:
    """A record a plugin could not process: the row index within the input batch (when the
    row reached a batch), or the original record as text, where it came from, and why."""

    def __init__(self, reason, row=None, original=None, location=None):
        self.reason = str(reason)
        self.row = row
        self.original = original
        self.location = location

    def __repr__(self):
        return f"Reject({self.reason!r}, row={self.row!r}, location={self.location!r})"


class Chunk:
    """What a source's `next` returns: one batch in the stream's schema (possibly with no
    rows), the position just after it (bytes, or a str stored as UTF-8), and the records
    it could not read."""

    def __init__(self, batch, position, rejects=()):
        if not isinstance(batch, Batch):
            raise TypeError(f"a chunk holds a Batch, got {type(batch).__name__}")
        self.batch = batch
        self.position = position.encode("utf-8") if isinstance(position, str) else bytes(position)
        self.rejects = list(rejects)


class Replayed:
    """What a source's `replay` returns: the records that parse now as one batch in the
    stream's schema, and those that still fail, each with `row` set to its index in the
    records given."""

    def __init__(self, batch, rejects=()):
        if not isinstance(batch, Batch):
            raise TypeError(f"replay returns a Batch of the records that parse, got {type(batch).__name__}")
        self.batch = batch
        self.rejects = list(rejects)


class WriteMode:
    """How a sink applies rows: `kind` is `"append"`, `"overwrite"` or `"upsert"`;
    `keys` the primary-key columns of an upsert."""

    def __init__(self, kind, keys=()):
        self.kind = kind
        self.keys = list(keys)

    def __repr__(self):
        return f"WriteMode({self.kind!r}, {self.keys!r})" if self.keys else f"WriteMode({self.kind!r})"


class _Plugin:
    @classmethod
    def spec(cls):
        """The JSON Schema of the config, as a dict (or a JSON string)."""
        return {"type": "object"}

    @classmethod
    def check(cls, config):
        """Validate `config` (a dict); raise InvalidConfig naming the key and what is
        accepted. Called once before a run moves data."""


class Source(_Plugin):
    """A source. Class methods answer for the whole source; an instance reads one split.

    Override `discover` and `next` at least; `splits` defaults to one split per stream
    whose id is the stream name.
    """

    @classmethod
    def discover(cls, config):
        """The streams this source offers: a list of `Stream`s with their schemas."""
        raise NotImplementedError(f"{cls.__name__} must define discover(cls, config)")

    @classmethod
    def splits(cls, config, stream):
        """The independent units of work of `stream`, in reading order: `Split`s."""
        return [Split(stream)]

    @classmethod
    def open(cls, config, stream, split, position):
        """A reader of `split` of `stream`, resuming after `position` (bytes the reader
        returned in a chunk earlier, made durable by the host), or from the start when
        None. Calls the constructor with the same arguments."""
        return cls(config, stream, split, position)

    @classmethod
    def replay(cls, config, stream, records):
        """Parse again, with the current config, records this source rejected earlier (each
        as its `Reject.original` gave it); return a `Replayed`. `host dlq replay` calls it.
        By default a source cannot."""
        from .errors import Fatal

        raise Fatal(f"this source cannot parse records of stream {stream!r} from the dead-letter queue again")

    def __init__(self, config, stream, split, position):
        self.config = config
        self.stream = stream
        self.split = split
        self.position = position

    def next(self, max_rows):
        """The next `Chunk` of at most about `max_rows` rows, or None when the split is
        done."""
        raise NotImplementedError(f"{type(self).__name__} must define next(self, max_rows)")

    def ack(self, position):
        """The host made `position` durable and the sinks committed everything before it;
        release it upstream if the source holds anything for it."""


class Transform(_Plugin):
    """A transform. An instance transforms one stream.

    Override `process` at least. Call `self.reject(row, reason)` from `process` to drop an
    input row and send it to the host's `on_error` policy (dead-letter queue, skip or fail).
    """

    @classmethod
    def open(cls, config, input_schema, state=None):
        """A transformer for input of `input_schema`. Calls the constructor, then `restore`
        with the state `checkpoint` returned at the last committed epoch, if any; raise
        InvalidConfig when the config does not fit the schema (e.g. it names a column the
        stream lacks)."""
        plugin = cls(config, input_schema)
        if state:
            plugin.restore(bytes(state))
        return plugin

    def __init__(self, config, input_schema):
        self.config = config
        self.input_schema = input_schema
        self._rejects = []

    def output_schema(self):
        """The schema of every batch this transformer returns; by default the input's."""
        return self.input_schema

    def process(self, batch):
        """Transform one batch: return a Batch in the output schema, a list of them, or
        None (nothing to emit now)."""
        raise NotImplementedError(f"{type(self).__name__} must define process(self, batch)")

    def flush(self):
        """Emit anything held back (a Batch, a list of them, or None). Called before every
        epoch closes and at the end of the input."""
        return None

    def checkpoint(self):
        """The state to keep with the epoch being closed (bytes, or a str stored as
        UTF-8), taken right after `flush`; a stateless transform keeps none."""
        return b""

    def restore(self, state):
        """Resume from the bytes `checkpoint` returned at the last committed epoch."""

    def reject(self, row, reason, original=None, location=None):
        """Drop row `row` of the batch being processed, with a reason a person can read."""
        if not hasattr(self, "_rejects"):
            self._rejects = []
        self._rejects.append(Reject(reason, row=row, original=original, location=location))

    def take_rejects(self):
        """The rejects recorded since the last call (the SDK calls this after `process`)."""
        rejects = getattr(self, "_rejects", [])
        self._rejects = []
        return rejects


class Sink(_Plugin):
    """A sink. An instance writes one stream and publishes it by two-phase commit:
    `write` stages batches of the open epoch, `prepare(epoch)` makes them durable but
    unpublished and returns a token, `commit(epoch, token)` publishes (idempotently: it
    may be called again with the same token after a restart, even on a fresh instance),
    `abort(epoch)` discards what was staged. `finish()` says the stream was read to its
    end: the next epoch is its last (a sink in `overwrite` mode publishes the whole run
    then); the default does nothing.
    """

    @classmethod
    def open(cls, config, stream, mode):
        """A writer for `stream` (a `Stream`: name and schema) in `mode` (a `WriteMode`).
        Calls the constructor."""
        return cls(config, stream, mode)

    def __init__(self, config, stream, mode):
        self.config = config
        self.stream = stream
        self.mode = mode

    def write(self, batch):
        """Stage one batch as part of the open epoch. Rows the target refuses are left out
        and recorded with `reject(row, reason)`; the host routes them by `on_error`."""
        raise NotImplementedError(f"{type(self).__name__} must define write(self, batch)")

    def reject(self, row, reason):
        """Refuse row `row` of the batch being written, with a reason a person can read."""
        if not hasattr(self, "_rejects"):
            self._rejects = []
        self._rejects.append(Reject(reason, row=row))

    def take_rejects(self):
        """The rejects recorded since the last call (the SDK calls this after `write`)."""
        rejects = getattr(self, "_rejects", [])
        self._rejects = []
        return rejects

    def prepare(self, epoch):
        """Make everything written in `epoch` durable but unpublished; return a token
        (bytes, or a str stored as UTF-8) that lets `commit` publish it."""
        raise NotImplementedError(f"{type(self).__name__} must define prepare(self, epoch)")

    def commit(self, epoch, token):
        """Publish what `prepare(epoch)` staged; idempotent. Return the names of what the
        epoch published (a repeat returns the same names)."""
        raise NotImplementedError(f"{type(self).__name__} must define commit(self, epoch, token)")

    def finish(self):
        """The stream was read to its end in this run: the next epoch is its last."""

    def abort(self, epoch):
        """Discard whatever was staged for `epoch` and not committed."""

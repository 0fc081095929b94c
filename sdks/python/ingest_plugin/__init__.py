"""The Python SDK for ingestion-host plugins.

Write one subclass of `Source`, `Transform` or `Sink` in `app.py`, build it with
`build.sh` (componentize-py against `wit/plugin.wit`), pin the `.wasm` in pipeline.toml.
Batches arrive and leave as `Batch`es: a `Schema` of `Field`s and one Python list per
column. The package is pure Python without dependencies (pyarrow cannot be built into a
component), so it also runs under plain `python3` for a plugin's own unit tests.

    from ingest_plugin import Transform, Field

    class AddTotal(Transform):
        def output_schema(self):
            return self.input_schema.append(Field("total", "float64"))

        def process(self, batch):
            total = [q * p for q, p in zip(batch["quantity"], batch["price"])]
            return batch.with_column(Field("total", "float64"), total)
"""

from . import arrow
from .arrow import DataType, Field, Schema, UnsupportedType
from .batch import Batch
from .errors import AccessDenied, DataError, Fatal, InvalidConfig, PluginError, Transient, expect_keys
from .host import log, secret
from .ipc import IpcError
from .plugin import Chunk, Reject, Replayed, Sink, Source, Split, Stream, Transform, WriteMode

__version__ = "0.1.0"


def read_ipc(data):
    """(schema, [Batch, ...]) of an Arrow IPC stream."""
    from . import ipc

    return ipc.read_stream(data)


def write_ipc(schema, batches):
    """An Arrow IPC stream of `schema` and `batches`."""
    from . import ipc

    return ipc.write_stream(schema, batches)


__all__ = [
    "AccessDenied",
    "Batch",
    "Chunk",
    "DataError",
    "DataType",
    "Fatal",
    "Field",
    "InvalidConfig",
    "IpcError",
    "PluginError",
    "Reject",
    "Replayed",
    "Schema",
    "Sink",
    "Source",
    "Split",
    "Stream",
    "Transform",
    "Transient",
    "UnsupportedType",
    "WriteMode",
    "arrow",
    "log",
    "read_ipc",
    "secret",
    "write_ipc",
]

"""Between the contract's generated bindings and the plugin: finds the plugin class in
`app.py`, parses configs, converts values both ways, and turns Python exceptions into the
contract's error variant. Used only inside a component (the modules in `_glue/`).

A component holds only the modules imported while it is built (componentize-py runs the
imports of the entry module and keeps the result), so a standard-library module that is
imported lazily on first use must be imported here: `_strptime`, which
`datetime.strptime` needs.
"""

import _strptime  # noqa: F401  (datetime.strptime imports it on first use; see below)
import importlib
import json
import traceback

from . import host
from .arrow import Schema
from .batch import Batch
from .errors import AccessDenied, DataError, Fatal, InvalidConfig, PluginError, Transient

APP_MODULE = "app"


def plugin_class(base):
    """The plugin class of `app.py`: its `PLUGIN` attribute when set, else the one subclass
    of `base` defined there."""
    app = importlib.import_module(APP_MODULE)
    explicit = getattr(app, "PLUGIN", None)
    if explicit is not None:
        if not (isinstance(explicit, type) and issubclass(explicit, base)):
            raise TypeError(f"app.PLUGIN is {explicit!r}, not a subclass of ingest_plugin.{base.__name__}")
        return explicit
    found = [
        v
        for v in vars(app).values()
        if isinstance(v, type) and issubclass(v, base) and v is not base and v.__module__ == app.__name__
    ]
    if len(found) != 1:
        names = ", ".join(c.__name__ for c in found) or "none"
        raise TypeError(
            f"app.py must define exactly one subclass of ingest_plugin.{base.__name__} "
            f"(found: {names}); with several, name the plugin with PLUGIN = TheClass"
        )
    return found[0]


def parse_config(text):
    """The config as a dict (an empty one for an empty config)."""
    if not text or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise InvalidConfig(f"the config is not JSON: {e}") from None
    return {} if value is None else value


def spec_json(plugin):
    spec = plugin.spec()
    return spec if isinstance(spec, str) else json.dumps(spec)


def as_bytes(value, what):
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be bytes or str, got {type(value).__name__}")


def as_schema(value, what):
    if isinstance(value, Schema):
        return value
    try:
        return Schema(value)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{what} must be a Schema or a list of Fields: {e}") from None


def as_batches(value, schema, what):
    """A plugin's batch output (None, a Batch or a list of Batches) as IPC streams in
    `schema`; batches without rows are left out."""
    if value is None:
        return []
    items = [value] if isinstance(value, Batch) else list(value)
    out = []
    for batch in items:
        if not isinstance(batch, Batch):
            raise TypeError(f"{what} returned {type(batch).__name__}; return a Batch, a list of Batches or None")
        if batch.schema.names != schema.names or [f.type for f in batch.schema] != [f.type for f in schema]:
            raise Fatal(
                f"{what} returned a batch of schema {batch.schema}, but the output schema is {schema}"
            )
        if batch.num_rows:
            out.append(batch_ipc(batch, schema))
    return out


def batch_ipc(batch, schema):
    from . import ipc

    return ipc.write_stream(schema, [batch])


def wit_rejects(rejects, types):
    out = []
    for r in rejects:
        out.append(types.Reject(row=r.row, original=r.original, location=r.location, reason=r.reason))
    return out


def to_wit_error(e, types):
    """The contract's error for exception `e`."""
    if isinstance(e, InvalidConfig):
        return types.Error_InvalidConfig(e.message)
    if isinstance(e, AccessDenied):
        return types.Error_AccessDenied(e.message)
    if isinstance(e, Transient):
        return types.Error_Transient(types.TransientError(e.message, e.retry_after_ms))
    if isinstance(e, DataError):
        return types.Error_Data(e.message)
    if isinstance(e, PluginError):
        return types.Error_Fatal(e.message)
    lines = traceback.format_exception(type(e), e, e.__traceback__)
    host.log("".join(lines).rstrip(), "error")
    return types.Error_Fatal(lines[-1].strip())


def from_wit_error(e):
    """The exception for an error the host returned (`componentize_py_types.Err`)."""
    from wit_world.imports import types

    value = getattr(e, "value", None)
    if isinstance(value, types.Error_InvalidConfig):
        return InvalidConfig(value.value)
    if isinstance(value, types.Error_AccessDenied):
        return AccessDenied(value.value)
    if isinstance(value, types.Error_Transient):
        return Transient(value.value.message, value.value.retry_after_ms)
    if isinstance(value, types.Error_Data):
        return DataError(value.value)
    if isinstance(value, types.Error_Fatal):
        return Fatal(value.value)
    return e


def call(fn, *args):
    """Run plugin code; a Python exception leaves as the contract's error."""
    from componentize_py_types import Err
    from wit_world.imports import types

    try:
        return fn(*args)
    except Err:
        raise
    except Exception as e:
        raise Err(to_wit_error(e, types)) from None

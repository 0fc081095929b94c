"""Arrow IPC stream format, read and written in pure Python.

A stream is a sequence of encapsulated messages: a continuation marker (0xFFFFFFFF), the
length of the FlatBuffers metadata, the metadata (padded to 8 bytes), then the message
body. The first message is the schema; each record batch message describes, per column,
one field node (length, null count) and its buffers (validity bitmap, offsets, values) as
offsets into the body. The stream ends with a zero length (or simply ends).

Written streams use metadata version V5, little-endian, no compression, and pad every body
buffer to 8 bytes; a column without nulls gets an empty validity buffer, as the format
allows. Only uncompressed streams without dictionaries are read (what the host sends).
"""

import datetime
import itertools
import operator
import struct

from . import flatbuf as fb
from .arrow import DataType, Field, Schema, UnsupportedType

_I32 = struct.Struct("<i")
_NODE = struct.Struct("<qq")
_BUFFER = struct.Struct("<qq")

_V5 = 4
_HEADER_SCHEMA = 1
_HEADER_DICTIONARY = 2
_HEADER_RECORD_BATCH = 3

# FlatBuffers `Type` union tags of Schema.fbs.
_T_NULL = 1
_T_INT = 2
_T_FLOAT = 3
_T_BINARY = 4
_T_UTF8 = 5
_T_BOOL = 6
_T_DATE = 8
_T_TIME = 9
_T_TIMESTAMP = 10
_T_FIXED_SIZE_BINARY = 15
_T_DURATION = 18
_T_LARGE_BINARY = 19
_T_LARGE_UTF8 = 20

_UNSUPPORTED_TAGS = {
    7: "decimal",
    11: "interval",
    12: "list",
    13: "struct",
    14: "union",
    16: "fixed_size_list",
    17: "map",
    21: "large_list",
    22: "run_end_encoded",
    23: "binary_view",
    24: "utf8_view",
    25: "list_view",
    26: "large_list_view",
}

_UNIT_CODES = {"s": 0, "ms": 1, "us": 2, "ns": 3}
_UNITS = {v: k for k, v in _UNIT_CODES.items()}

_INTS = {
    "int8": (8, True, "b"),
    "int16": (16, True, "h"),
    "int32": (32, True, "i"),
    "int64": (64, True, "q"),
    "uint8": (8, False, "B"),
    "uint16": (16, False, "H"),
    "uint32": (32, False, "I"),
    "uint64": (64, False, "Q"),
}
_INT_BY_WIDTH = {(w, s): name for name, (w, s, _) in _INTS.items()}
_FLOATS = {"float16": (0, "e"), "float32": (1, "f"), "float64": (2, "d")}
_FLOAT_BY_PRECISION = {p: name for name, (p, _) in _FLOATS.items()}

SUPPORTED = (
    "null, bool, int8-64, uint8-64, float16/32/64, utf8, large_utf8, binary, large_binary, "
    "fixed_size_binary, date32, date64, timestamp, time32, time64, duration"
)


class IpcError(ValueError):
    """Bytes that are not an Arrow IPC stream this package can read."""


# --- schema ----------------------------------------------------------------------------


def _key_values(table, field_id):
    return {kv.string(0) or "": kv.string(1) or "" for kv in table.tables(field_id)}


def _read_type(name, tag, t):
    def unsupported(type_name):
        raise UnsupportedType(
            f"column {name!r} has Arrow type {type_name}, which ingest_plugin cannot read; "
            f"supported types: {SUPPORTED}"
        )

    if tag == _T_NULL:
        return DataType("null")
    if tag == _T_BOOL:
        return DataType("bool")
    if tag == _T_INT:
        key = (t.i32(0), t.bool(1))
        if key not in _INT_BY_WIDTH:
            unsupported(f"int{key[0]}")
        return DataType(_INT_BY_WIDTH[key])
    if tag == _T_FLOAT:
        return DataType(_FLOAT_BY_PRECISION[t.i16(0)])
    if tag == _T_UTF8:
        return DataType("utf8")
    if tag == _T_LARGE_UTF8:
        return DataType("large_utf8")
    if tag == _T_BINARY:
        return DataType("binary")
    if tag == _T_LARGE_BINARY:
        return DataType("large_binary")
    if tag == _T_FIXED_SIZE_BINARY:
        return DataType("fixed_size_binary", width=t.i32(0))
    if tag == _T_DATE:
        return DataType("date32" if t.i16(0, 1) == 0 else "date64")
    if tag == _T_TIMESTAMP:
        return DataType("timestamp", _UNITS[t.i16(0, 0)], t.string(1))
    if tag == _T_TIME:
        unit = _UNITS[t.i16(0, 1)]
        width = t.i32(1, 32)
        if (width, unit) not in ((32, "s"), (32, "ms"), (64, "us"), (64, "ns")):
            unsupported(f"time{width}[{unit}]")
        return DataType(f"time{width}", unit)
    if tag == _T_DURATION:
        return DataType("duration", _UNITS[t.i16(0, 1)])
    if tag == 7 and t is not None:
        unsupported(f"decimal{t.i32(2, 128)}({t.i32(0)}, {t.i32(1)})")
    unsupported(_UNSUPPORTED_TAGS.get(tag, f"with type tag {tag}"))


def _read_field(f):
    name = f.string(0) or ""
    if f.table(4) is not None:
        raise UnsupportedType(
            f"column {name!r} is dictionary-encoded, which ingest_plugin cannot read; "
            f"supported types: {SUPPORTED}"
        )
    dtype = _read_type(name, f.u8(2), f.table(3))
    return Field(name, dtype, f.bool(1), _key_values(f, 6))


def _read_schema(header):
    if header.i16(0) != 0:
        raise IpcError("the stream is big-endian; only little-endian streams are read")
    return Schema([_read_field(f) for f in header.tables(1)], _key_values(header, 2))


def _key_value_vector(metadata):
    if not metadata:
        return None
    return fb.TableVector(fb.T({0: fb.S(k), 1: fb.S(v)}) for k, v in sorted(metadata.items()))


def _type_table(t):
    """(union tag, table) of a DataType."""
    i = t.id
    if i == "null":
        return _T_NULL, fb.T({})
    if i == "bool":
        return _T_BOOL, fb.T({})
    if i in _INTS:
        width, signed, _ = _INTS[i]
        return _T_INT, fb.T({0: fb.i32(width), 1: fb.boolean(signed)})
    if i in _FLOATS:
        return _T_FLOAT, fb.T({0: fb.i16(_FLOATS[i][0])})
    if i == "utf8":
        return _T_UTF8, fb.T({})
    if i == "large_utf8":
        return _T_LARGE_UTF8, fb.T({})
    if i == "binary":
        return _T_BINARY, fb.T({})
    if i == "large_binary":
        return _T_LARGE_BINARY, fb.T({})
    if i == "fixed_size_binary":
        return _T_FIXED_SIZE_BINARY, fb.T({0: fb.i32(t.width)})
    if i == "date32":
        return _T_DATE, fb.T({0: fb.i16(0)})
    if i == "date64":
        return _T_DATE, fb.T({0: fb.i16(1)})
    if i == "timestamp":
        return _T_TIMESTAMP, fb.T({0: fb.i16(_UNIT_CODES[t.unit]), 1: fb.S(t.tz) if t.tz else None})
    if i in ("time32", "time64"):
        return _T_TIME, fb.T({0: fb.i16(_UNIT_CODES[t.unit]), 1: fb.i32(32 if i == "time32" else 64)})
    if i == "duration":
        return _T_DURATION, fb.T({0: fb.i16(_UNIT_CODES[t.unit])})
    raise UnsupportedType(f"cannot write Arrow type {t}")


def _schema_table(schema):
    fields = []
    for f in schema.fields:
        tag, table = _type_table(f.type)
        fields.append(
            fb.T(
                {
                    0: fb.S(f.name),
                    1: fb.boolean(f.nullable),
                    2: fb.u8(tag),
                    3: table,
                    5: fb.TableVector([]),
                    6: _key_value_vector(f.metadata),
                }
            )
        )
    return fb.T({0: fb.i16(0), 1: fb.TableVector(fields), 2: _key_value_vector(schema.metadata)})


# --- columns ---------------------------------------------------------------------------


class Encoded:
    """One column as it sits in an IPC body: its length, null count and buffers. A batch
    read from IPC keeps its columns like this until they are asked for, and writes an
    untouched column back without decoding it."""

    __slots__ = ("length", "null_count", "buffers")

    def __init__(self, length, null_count, buffers):
        self.length = length
        self.null_count = null_count
        self.buffers = buffers


def _buffer_count(t):
    if t.id == "null":
        return 0
    if t.id in ("utf8", "large_utf8", "binary", "large_binary"):
        return 3
    return 2


_TO_01 = bytes.maketrans(b"\x00\x01", b"01")
_BIT = {"0": False, "1": True}
_EPOCH_DATE_ORDINAL = datetime.date(1970, 1, 1).toordinal()
_EPOCH = datetime.datetime(1970, 1, 1)
_EPOCH_UTC = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_TIMEDELTA_ARG = {"s": "seconds", "ms": "milliseconds", "us": "microseconds"}


def _bits(bitmap, n):
    """The first n bits of an LSB-first bitmap as a str of '0'/'1', one per row."""
    if n == 0:
        return ""
    nbytes = (n + 7) // 8
    return format(int.from_bytes(bytes(bitmap[:nbytes]), "little"), f"0{nbytes * 8}b")[::-1][:n]


def _bitmap(flags):
    """An LSB-first bitmap of a bytes of 0/1 flags, one per row."""
    n = len(flags)
    if n == 0:
        return b""
    return int(flags[::-1].translate(_TO_01), 2).to_bytes((n + 7) // 8, "little")


def _with_nulls(values, validity, n):
    bits = _bits(validity, n)
    return [v if b == "1" else None for v, b in zip(values, bits)]


def _offsets(buf, n, large):
    fmt = "q" if large else "i"
    return struct.unpack_from(f"<{n + 1}{fmt}", buf, 0)


def decode(field, col):
    """The Python values of an encoded column (see the table in `arrow`)."""
    t = field.type
    n = col.length
    i = t.id
    if i == "null":
        return [None] * n
    if n == 0:
        return []
    bufs = col.buffers
    if i == "bool":
        values = list(map(_BIT.__getitem__, _bits(bufs[1], n)))
    elif i in _INTS:
        values = list(struct.unpack_from(f"<{n}{_INTS[i][2]}", bufs[1], 0))
    elif i in _FLOATS:
        values = list(struct.unpack_from(f"<{n}{_FLOATS[i][1]}", bufs[1], 0))
    elif i in ("utf8", "large_utf8", "binary", "large_binary"):
        offsets = _offsets(bufs[1], n, i.startswith("large"))
        start, end = offsets[0], offsets[n]
        data = bytes(bufs[2][start:end])
        if start:
            offsets = [o - start for o in offsets]
        if i in ("utf8", "large_utf8"):
            if data.isascii():
                text = data.decode("ascii")
                values = [text[a:b] for a, b in zip(offsets, offsets[1:])]
            else:
                try:
                    values = [data[a:b].decode("utf-8") for a, b in zip(offsets, offsets[1:])]
                except UnicodeDecodeError as e:
                    raise IpcError(f"column {field.name!r} ({t}) holds invalid UTF-8: {e}") from None
        else:
            values = [data[a:b] for a, b in zip(offsets, offsets[1:])]
    elif i == "fixed_size_binary":
        w = t.width
        data = bytes(bufs[1][: n * w])
        values = [data[k * w : (k + 1) * w] for k in range(n)]
    else:
        fmt = "i" if i in ("date32", "time32") else "q"
        raw = struct.unpack_from(f"<{n}{fmt}", bufs[1], 0)
        values = _from_temporal(field, raw, col)
    if col.null_count:
        values = _with_nulls(values, bufs[0], n)
    return values


def _from_temporal(field, raw, col):
    t = field.type
    i = t.id
    valid = _bits(col.buffers[0], col.length) if col.null_count else None
    # Slots under a null hold anything; convert only valid ones.
    if valid is not None:
        raw = [r if b == "1" else 0 for r, b in zip(raw, valid)]
    try:
        if i == "date32":
            return [datetime.date.fromordinal(_EPOCH_DATE_ORDINAL + d) for d in raw]
        if i == "date64":
            return [datetime.date.fromordinal(_EPOCH_DATE_ORDINAL + ms // 86_400_000) for ms in raw]
        if t.unit == "ns":
            return list(raw)
        if i == "timestamp":
            epoch = _EPOCH_UTC if t.tz else _EPOCH
            key = _TIMEDELTA_ARG[t.unit]
            return [epoch + datetime.timedelta(**{key: v}) for v in raw]
        if i == "duration":
            key = _TIMEDELTA_ARG[t.unit]
            return [datetime.timedelta(**{key: v}) for v in raw]
        # time32 / time64: a time of day.
        per = _PER_SECOND[t.unit]
        out = []
        for v in raw:
            seconds, fraction = divmod(v, per)
            minutes, second = divmod(seconds, 60)
            hour, minute = divmod(minutes, 60)
            out.append(datetime.time(hour, minute, second, fraction * 1_000_000 // per))
        return out
    except (OverflowError, ValueError) as e:
        raise IpcError(
            f"column {field.name!r} ({t}) holds a value Python's datetime cannot represent: {e}"
        ) from None


def _type_error(field, values, allowed, expected):
    for row, v in enumerate(values):
        if v is not None and not isinstance(v, allowed):
            raise TypeError(
                f"column {field.name!r} ({field.type}): row {row} holds "
                f"{type(v).__name__} {v!r:.60}; expected {expected} or None"
            )


def _check_types(field, values, allowed, expected):
    seen = set(map(type, values))
    seen.discard(type(None))
    if not seen.issubset(allowed):
        _type_error(field, values, tuple(allowed), expected)


def encode(field, values):
    """Encode a column of Python values: (null count, buffers)."""
    t = field.type
    i = t.id
    n = len(values)
    if i == "null":
        if any(v is not None for v in values):
            _type_error(field, values, (), "nothing")
        return n, []
    null_count = values.count(None)
    if null_count and not field.nullable:
        row = values.index(None)
        raise ValueError(
            f"column {field.name!r} is not nullable, but row {row} is None; "
            "declare the field with nullable=True or give it a value"
        )
    if null_count:
        validity = _bitmap(bytes(map(operator.is_not, values, itertools.repeat(None))))
        filled = values
    else:
        validity = b""
        filled = values
    if i == "bool":
        _check_types(field, values, {bool}, "bool")
        return null_count, [validity, _bitmap(bytes(map(bool, filled)))]
    if i in _INTS:
        _check_types(field, values, {int, bool}, "int")
        if null_count:
            filled = [0 if v is None else v for v in values]
        try:
            data = struct.pack(f"<{n}{_INTS[i][2]}", *filled)
        except struct.error:
            bits, signed, _ = _INTS[i]
            lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
            row = next(r for r, v in enumerate(filled) if not lo <= v <= hi)
            raise ValueError(
                f"column {field.name!r} ({t}): row {row} holds {filled[row]}, outside {lo}..{hi}"
            ) from None
        return null_count, [validity, data]
    if i in _FLOATS:
        _check_types(field, values, {float, int, bool}, "float")
        if null_count:
            filled = [0.0 if v is None else v for v in values]
        try:
            data = struct.pack(f"<{n}{_FLOATS[i][1]}", *filled)
        except (OverflowError, struct.error) as e:
            raise ValueError(f"column {field.name!r} ({t}): {e}") from None
        return null_count, [validity, data]
    if i in ("utf8", "large_utf8"):
        _check_types(field, values, {str}, "str")
        if null_count:
            filled = ["" if v is None else v for v in values]
        text = "".join(filled)
        if text.isascii():
            data = text.encode("ascii")
            lengths = map(len, filled)
        else:
            try:
                parts = [v.encode("utf-8") for v in filled]
            except UnicodeEncodeError as e:
                raise ValueError(f"column {field.name!r} ({t}): {e}") from None
            data = b"".join(parts)
            lengths = map(len, parts)
        return null_count, [validity, _pack_offsets(field, lengths, n, i == "large_utf8", len(data)), data]
    if i in ("binary", "large_binary", "fixed_size_binary"):
        _check_types(field, values, {bytes, bytearray, memoryview}, "bytes")
        if null_count:
            empty = bytes(t.width or 0)
            filled = [empty if v is None else v for v in values]
        parts = [bytes(v) for v in filled]
        data = b"".join(parts)
        if i == "fixed_size_binary":
            for row, p in enumerate(parts):
                if len(p) != t.width:
                    raise ValueError(
                        f"column {field.name!r} ({t}): row {row} holds {len(p)} bytes, not {t.width}"
                    )
            return null_count, [validity, data]
        return null_count, [validity, _pack_offsets(field, map(len, parts), n, i == "large_binary", len(data)), data]
    raw = _to_temporal(field, values)
    fmt = "i" if i in ("date32", "time32") else "q"
    try:
        data = struct.pack(f"<{n}{fmt}", *raw)
    except struct.error:
        raise ValueError(f"column {field.name!r} ({t}): a value is out of range for {t}") from None
    return null_count, [validity, data]


def _pack_offsets(field, lengths, n, large, total):
    if not large and total > 0x7FFFFFFF:
        raise ValueError(
            f"column {field.name!r} ({field.type}) holds {total} bytes in one batch, more than "
            f"2 GiB; use large_{field.type.id} or smaller batches"
        )
    return struct.pack(f"<{n + 1}{'q' if large else 'i'}", *itertools.accumulate(lengths, initial=0))


def _to_temporal(field, values):
    """Raw Arrow integers of a temporal column; ints pass through as raw values."""
    t = field.type
    i = t.id
    out = []
    for row, v in enumerate(values):
        if v is None or (type(v) is int):
            out.append(v or 0)
            continue
        try:
            if i in ("date32", "date64"):
                if isinstance(v, datetime.datetime) or not isinstance(v, datetime.date):
                    raise TypeError("expected datetime.date")
                days = v.toordinal() - _EPOCH_DATE_ORDINAL
                out.append(days if i == "date32" else days * 86_400_000)
            elif i == "timestamp":
                if not isinstance(v, datetime.datetime):
                    raise TypeError("expected datetime.datetime")
                if v.tzinfo is not None:
                    delta = v - _EPOCH_UTC
                else:
                    delta = v - _EPOCH
                out.append(_count(delta, t.unit))
            elif i == "duration":
                if not isinstance(v, datetime.timedelta):
                    raise TypeError("expected datetime.timedelta")
                out.append(_count(v, t.unit))
            else:
                if not isinstance(v, datetime.time):
                    raise TypeError("expected datetime.time")
                micros = ((v.hour * 60 + v.minute) * 60 + v.second) * 1_000_000 + v.microsecond
                out.append(micros * _PER_SECOND[t.unit] // 1_000_000)
        except TypeError as e:
            raise TypeError(
                f"column {field.name!r} ({t}): row {row} holds {type(v).__name__} {v!r:.60}; "
                f"{e}, an int (the raw Arrow value) or None"
            ) from None
    return out


def _count(delta, unit):
    """A timedelta in whole units (floored for units coarser than a microsecond)."""
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return micros * 1000 if unit == "ns" else micros // (1_000_000 // _PER_SECOND[unit])


# --- messages --------------------------------------------------------------------------


def _message(header_type, header, body_length):
    meta = fb.build(fb.T({0: fb.i16(_V5), 1: fb.u8(header_type), 2: header, 3: fb.i64(body_length)}))
    padded = len(meta) + (-(len(meta) + 8)) % 8
    return b"\xff\xff\xff\xff" + _I32.pack(padded) + meta + bytes(padded - len(meta))


def _record_batch(batch, schema):
    nodes = bytearray()
    buffers = bytearray()
    body = bytearray()
    buffer_count = 0
    for index, field in enumerate(schema.fields):
        col = batch._encoded_column(index, field)
        nodes += _NODE.pack(col.length, col.null_count)
        for buf in col.buffers:
            length = len(buf)
            buffers += _BUFFER.pack(len(body), length)
            buffer_count += 1
            body += buf
            body += bytes(-length % 8)
    header = fb.T(
        {
            0: fb.i64(batch.num_rows),
            1: fb.StructVector(bytes(nodes), len(schema.fields), 8),
            2: fb.StructVector(bytes(buffers), buffer_count, 8),
        }
    )
    return _message(_HEADER_RECORD_BATCH, header, len(body)) + bytes(body)


def write_stream(schema, batches):
    """An IPC stream of `schema` and `batches` (each a Batch of that schema), with the
    end-of-stream marker."""
    out = [_message(_HEADER_SCHEMA, _schema_table(schema), 0)]
    for batch in batches:
        if batch.schema.names != schema.names or [f.type for f in batch.schema] != [f.type for f in schema]:
            raise ValueError(
                f"a batch of schema {batch.schema} cannot be written in a stream of schema {schema}"
            )
        out.append(_record_batch(batch, schema))
    out.append(b"\xff\xff\xff\xff\x00\x00\x00\x00")
    return b"".join(out)


def read_stream(data):
    """(schema, [Batch, ...]) of an IPC stream."""
    from .batch import Batch

    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    schema = None
    batches = []
    pos = 0
    try:
        while pos < len(view):
            if len(view) - pos < 4:
                raise IpcError(f"{len(view) - pos} stray bytes at the end of the stream")
            length = _I32.unpack_from(view, pos)[0]
            pos += 4
            if length == -1:
                length = _I32.unpack_from(view, pos)[0]
                pos += 4
            if length == 0:
                break
            if length < 0 or pos + length > len(view):
                raise IpcError(f"a message at byte {pos} claims {length} bytes of metadata")
            message = fb.Table.root(view[pos : pos + length])
            pos += length
            body_length = message.i64(3)
            if body_length < 0 or pos + body_length > len(view):
                raise IpcError(f"a message at byte {pos} claims a body of {body_length} bytes")
            body = view[pos : pos + body_length]
            pos += body_length
            kind = message.u8(1)
            header = message.table(2)
            if kind == _HEADER_SCHEMA:
                schema = _read_schema(header)
            elif kind == _HEADER_RECORD_BATCH:
                if schema is None:
                    raise IpcError("a record batch comes before the schema")
                batches.append(Batch._make(schema, *_read_columns(schema, header, body)))
            elif kind == _HEADER_DICTIONARY:
                raise UnsupportedType("the stream holds dictionaries, which ingest_plugin cannot read")
            else:
                raise IpcError(f"unexpected message type {kind} in an IPC stream")
    except (struct.error, IndexError, KeyError) as e:
        raise IpcError(f"not a valid Arrow IPC stream: {e}") from None
    if schema is None:
        raise IpcError("the bytes hold no Arrow IPC schema message")
    return schema, batches


def _read_columns(schema, header, body):
    if header.table(3) is not None:
        raise IpcError("the record batch is compressed; the plugin contract sends uncompressed batches")
    length = header.i64(0)
    nodes = header.structs(1, _NODE)
    buffers = header.structs(2, _BUFFER)
    if len(nodes) != len(schema.fields):
        raise IpcError(f"the record batch has {len(nodes)} field nodes for {len(schema.fields)} columns")
    columns = []
    b = 0
    for field, (count, nulls) in zip(schema.fields, nodes):
        if count != length:
            raise IpcError(f"column {field.name!r} has {count} rows in a batch of {length}")
        need = _buffer_count(field.type)
        if b + need > len(buffers):
            raise IpcError(f"the record batch lacks buffers for column {field.name!r}")
        views = []
        for offset, size in buffers[b : b + need]:
            if offset < 0 or size < 0 or offset + size > len(body):
                raise IpcError(f"a buffer of column {field.name!r} lies outside the message body")
            views.append(body[offset : offset + size])
        b += need
        _check_sizes(field, count, nulls, views)
        columns.append(Encoded(count, nulls, views))
    return length, columns


_WIDTHS = {
    "int8": 1,
    "uint8": 1,
    "int16": 2,
    "uint16": 2,
    "float16": 2,
    "int32": 4,
    "uint32": 4,
    "float32": 4,
    "date32": 4,
    "time32": 4,
    "int64": 8,
    "uint64": 8,
    "float64": 8,
    "date64": 8,
    "timestamp": 8,
    "time64": 8,
    "duration": 8,
}


def _check_sizes(field, n, nulls, views):
    """Refuse buffers too short for their column, so decoding never reads past them."""
    t = field.type
    if t.id == "null" or n == 0:
        return
    if nulls and len(views[0]) < (n + 7) // 8:
        raise IpcError(f"column {field.name!r} has a validity bitmap too short for {n} rows")
    i = t.id
    if i == "bool":
        need = (n + 7) // 8
    elif i in _WIDTHS:
        need = n * _WIDTHS[i]
    elif i == "fixed_size_binary":
        need = n * t.width
    else:
        need = (n + 1) * (8 if i.startswith("large") else 4)
        if len(views[1]) >= need:
            last = _offsets(views[1], n, i.startswith("large"))[n]
            if last > len(views[2]):
                raise IpcError(f"column {field.name!r} has offsets past its data buffer")
    if len(views[1]) < need:
        raise IpcError(f"column {field.name!r} ({t}) has a value buffer too short for {n} rows")

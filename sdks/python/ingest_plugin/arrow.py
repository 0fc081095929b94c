"""The Arrow schema model: data types, fields and schemas, with the Python value each
type maps to.

A type is a `DataType`; write it as a string where that is handier (`"int64"`,
`"timestamp[us, UTC]"`). The types are the ones the built-in file source emits and their
close relatives:

=====================  =================================================================
type                   Python value
=====================  =================================================================
null                   None
bool                   bool
int8 ... uint64        int
float16/32/64          float
utf8, large_utf8       str
binary, large_binary,  bytes
fixed_size_binary[N]
date32, date64         datetime.date
timestamp[s|ms|us]     datetime.datetime (aware, in UTC, when the type has a time zone)
time32[s|ms],          datetime.time
time64[us]
duration[s|ms|us]      datetime.timedelta
any [ns] unit          int (nanoseconds): Python's datetime stops at microseconds
=====================  =================================================================

Nulls are None in every type. Nested, dictionary-encoded and decimal types are not
supported; reading them raises `UnsupportedType` naming the column.
"""

import re

_UNITS = ("s", "ms", "us", "ns")

_SIMPLE = (
    "null",
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "utf8",
    "large_utf8",
    "binary",
    "large_binary",
    "date32",
    "date64",
)

_ALIASES = {
    "boolean": "bool",
    "string": "utf8",
    "str": "utf8",
    "large_string": "large_utf8",
    "halffloat": "float16",
    "float": "float32",
    "double": "float64",
    "date": "date32",
}


class UnsupportedType(TypeError):
    """A column has an Arrow type this package cannot read or write."""


class DataType:
    """An Arrow data type. `id` names it (`"int64"`, `"timestamp"`, ...); `unit` is the
    time unit of timestamp, time32/64 and duration (`"s"`, `"ms"`, `"us"`, `"ns"`); `tz`
    the time zone of a timestamp (None for a naive one); `width` the byte width of
    fixed_size_binary."""

    __slots__ = ("id", "unit", "tz", "width")

    def __init__(self, id, unit=None, tz=None, width=None):
        if id in _ALIASES:
            id = _ALIASES[id]
        if id in _SIMPLE:
            if unit is not None or tz is not None or width is not None:
                raise ValueError(f"type {id} takes no parameters")
        elif id in ("timestamp", "time32", "time64", "duration"):
            if unit not in _UNITS:
                raise ValueError(f"type {id} needs a unit, one of s, ms, us, ns; got {unit!r}")
            if id == "time32" and unit not in ("s", "ms"):
                raise ValueError(f"time32 holds s or ms, not {unit}; use time64 for {unit}")
            if id == "time64" and unit not in ("us", "ns"):
                raise ValueError(f"time64 holds us or ns, not {unit}; use time32 for {unit}")
            if tz is not None and id != "timestamp":
                raise ValueError(f"only timestamps have a time zone, not {id}")
        elif id == "fixed_size_binary":
            if not isinstance(width, int) or width < 0:
                raise ValueError(f"fixed_size_binary needs a byte width, got {width!r}")
        else:
            raise UnsupportedType(
                f"unknown or unsupported Arrow type {id!r}; supported: {', '.join(_SIMPLE)}, "
                "timestamp[unit(, tz)], time32[unit], time64[unit], duration[unit], "
                "fixed_size_binary[width]"
            )
        self.id = id
        self.unit = unit
        self.tz = tz
        self.width = width

    @classmethod
    def parse(cls, text):
        """A type from its string form: `int64`, `utf8`, `timestamp[us, UTC]` (also
        `timestamp[us, tz=UTC]`), `time64[ns]`, `duration[ms]`, `fixed_size_binary[16]`.
        `timestamp` alone means `timestamp[us, UTC]`, the file source's timestamp."""
        if isinstance(text, DataType):
            return text
        match = re.fullmatch(r"\s*([A-Za-z0-9_]+)\s*(?:\[(.*)\])?\s*", str(text))
        if not match:
            raise ValueError(f"cannot read {text!r} as an Arrow type, e.g. int64 or timestamp[us, UTC]")
        id, params = match.group(1).lower(), match.group(2)
        id = _ALIASES.get(id, id)
        args = [p.strip() for p in params.split(",")] if params else []
        if id == "timestamp":
            if not args:
                return cls("timestamp", "us", "UTC")
            tz = None
            if len(args) > 1:
                tz = args[1]
                if tz.startswith("tz="):
                    tz = tz[3:]
            return cls("timestamp", args[0], tz)
        if id in ("time32", "time64", "duration"):
            return cls(id, args[0] if args else None)
        if id == "fixed_size_binary":
            return cls(id, width=int(args[0]) if args else None)
        simple = cls(id)
        if args:
            raise ValueError(f"type {id} takes no parameters: {text!r}")
        return simple

    @property
    def is_temporal(self):
        return self.id in ("date32", "date64", "timestamp", "time32", "time64", "duration")

    def __str__(self):
        if self.id == "timestamp":
            return f"timestamp[{self.unit}, tz={self.tz}]" if self.tz else f"timestamp[{self.unit}]"
        if self.id in ("time32", "time64", "duration"):
            return f"{self.id}[{self.unit}]"
        if self.id == "fixed_size_binary":
            return f"fixed_size_binary[{self.width}]"
        return self.id

    def __repr__(self):
        return f"DataType({str(self)!r})"

    def __eq__(self, other):
        if isinstance(other, str):
            try:
                other = DataType.parse(other)
            except (ValueError, TypeError):
                return False
        if not isinstance(other, DataType):
            return NotImplemented
        return (self.id, self.unit, self.tz, self.width) == (
            other.id,
            other.unit,
            other.tz,
            other.width,
        )

    def __hash__(self):
        return hash((self.id, self.unit, self.tz, self.width))


def _type(value):
    return value if isinstance(value, DataType) else DataType.parse(value)


# The simple types as constants, and constructors for the parameterised ones.
null = DataType("null")
bool_ = DataType("bool")
int8 = DataType("int8")
int16 = DataType("int16")
int32 = DataType("int32")
int64 = DataType("int64")
uint8 = DataType("uint8")
uint16 = DataType("uint16")
uint32 = DataType("uint32")
uint64 = DataType("uint64")
float16 = DataType("float16")
float32 = DataType("float32")
float64 = DataType("float64")
utf8 = DataType("utf8")
large_utf8 = DataType("large_utf8")
binary = DataType("binary")
large_binary = DataType("large_binary")
date32 = DataType("date32")
date64 = DataType("date64")


def timestamp(unit="us", tz=None):
    return DataType("timestamp", unit, tz)


def time32(unit="ms"):
    return DataType("time32", unit)


def time64(unit="us"):
    return DataType("time64", unit)


def duration(unit="us"):
    return DataType("duration", unit)


def fixed_size_binary(width):
    return DataType("fixed_size_binary", width=width)


class Field:
    """A named column: its Arrow type, whether it may hold nulls, and its metadata."""

    __slots__ = ("name", "type", "nullable", "metadata")

    def __init__(self, name, type, nullable=True, metadata=None):
        if not isinstance(name, str):
            raise TypeError(f"a field name is a str, got {name!r}")
        self.name = name
        self.type = _type(type)
        self.nullable = bool(nullable)
        self.metadata = dict(metadata or {})

    def with_name(self, name):
        return Field(name, self.type, self.nullable, self.metadata)

    def with_type(self, type):
        return Field(self.name, type, self.nullable, self.metadata)

    def with_nullable(self, nullable):
        return Field(self.name, self.type, nullable, self.metadata)

    def __eq__(self, other):
        if not isinstance(other, Field):
            return NotImplemented
        return (self.name, self.type, self.nullable, self.metadata) == (
            other.name,
            other.type,
            other.nullable,
            other.metadata,
        )

    def __hash__(self):
        return hash((self.name, self.type, self.nullable))

    def __repr__(self):
        null = "" if self.nullable else ", nullable=False"
        return f"Field({self.name!r}, {str(self.type)!r}{null})"


class Schema:
    """An ordered list of fields, plus schema-level metadata."""

    __slots__ = ("fields", "metadata", "_index")

    def __init__(self, fields, metadata=None):
        fields = [f if isinstance(f, Field) else Field(*f) for f in fields]
        index = {}
        for i, f in enumerate(fields):
            if f.name in index:
                raise ValueError(f"column {f.name!r} appears twice in the schema")
            index[f.name] = i
        self.fields = fields
        self.metadata = dict(metadata or {})
        self._index = index

    @property
    def names(self):
        return [f.name for f in self.fields]

    def index(self, name):
        """The position of column `name`; KeyError naming the columns there are."""
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"no column {name!r}; the columns are: {', '.join(self.names)}") from None

    def field(self, key):
        """A field by name or position."""
        return self.fields[key if isinstance(key, int) else self.index(key)]

    def __contains__(self, name):
        return name in self._index

    def __iter__(self):
        return iter(self.fields)

    def __len__(self):
        return len(self.fields)

    def append(self, field):
        """A new schema with `field` added at the end."""
        return Schema(self.fields + [field], self.metadata)

    def set(self, field):
        """A new schema with `field` replacing the column of the same name, or added at the
        end when there is none."""
        if field.name in self._index:
            fields = list(self.fields)
            fields[self._index[field.name]] = field
            return Schema(fields, self.metadata)
        return self.append(field)

    def remove(self, name):
        """A new schema without column `name`."""
        i = self.index(name)
        return Schema(self.fields[:i] + self.fields[i + 1 :], self.metadata)

    def select(self, names):
        """A new schema with the named columns, in that order."""
        return Schema([self.field(n) for n in names], self.metadata)

    def __eq__(self, other):
        if not isinstance(other, Schema):
            return NotImplemented
        return self.fields == other.fields and self.metadata == other.metadata

    def __repr__(self):
        return "Schema([" + ", ".join(repr(f) for f in self.fields) + "])"

    def to_ipc(self):
        """This schema as a schema-only Arrow IPC stream (what the contract passes)."""
        from . import ipc

        return ipc.write_stream(self, [])

    @classmethod
    def from_ipc(cls, data):
        """The schema of an Arrow IPC stream."""
        from . import ipc

        return ipc.read_stream(data)[0]

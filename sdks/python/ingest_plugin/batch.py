"""`Batch`: a record batch as Python sees it — a schema and one list of values per column
(None for nulls) — with row iteration and the few operations transforms need (filter,
take, add or replace a column) and the Arrow IPC conversion.

A batch read from IPC decodes a column only when it is asked for, and writes a column it
never decoded straight back from its IPC bytes, so a transform pays only for the columns
it touches (a filter touches them all).
"""

import datetime

from . import ipc
from .arrow import DataType, Field, Schema


class Batch:
    """Rows of one schema, held as columns.

    `Batch(schema, columns)` takes a Schema (or a list of Fields) and one list per field,
    in order (or a dict of lists by column name); every list has the batch's number of
    rows. Values are checked against the column types when the batch is encoded.
    """

    __slots__ = ("schema", "num_rows", "_columns")

    def __init__(self, schema, columns, num_rows=None):
        if not isinstance(schema, Schema):
            schema = Schema(schema)
        if isinstance(columns, dict):
            missing = [n for n in schema.names if n not in columns]
            extra = [n for n in columns if n not in schema]
            if missing or extra:
                raise ValueError(
                    f"the columns do not match the schema: missing {missing}, not in the schema {extra}"
                )
            columns = [columns[n] for n in schema.names]
        columns = [c if isinstance(c, list) else list(c) for c in columns]
        if len(columns) != len(schema.fields):
            raise ValueError(f"{len(columns)} columns for a schema of {len(schema.fields)} fields")
        if num_rows is None:
            num_rows = len(columns[0]) if columns else 0
        for field, column in zip(schema.fields, columns):
            if len(column) != num_rows:
                raise ValueError(
                    f"column {field.name!r} has {len(column)} values, but the batch has {num_rows} rows"
                )
        self.schema = schema
        self.num_rows = num_rows
        self._columns = columns

    # --- building --------------------------------------------------------------------

    @classmethod
    def _make(cls, schema, num_rows, columns):
        """A batch of columns already known to fit (decoded lists or `ipc.Encoded`)."""
        batch = cls.__new__(cls)
        batch.schema = schema
        batch.num_rows = num_rows
        batch._columns = columns
        return batch

    @classmethod
    def empty(cls, schema):
        """A batch of `schema` with no rows."""
        if not isinstance(schema, Schema):
            schema = Schema(schema)
        return cls(schema, [[] for _ in schema.fields], 0)

    @classmethod
    def from_columns(cls, columns, schema=None):
        """A batch from a dict of column name → list of values. Without a schema each
        column's type is inferred from its values (int → int64, float → float64, str →
        utf8, bool → bool, bytes → binary, date → date32, datetime → timestamp[us] (with
        tz=UTC when aware), time → time64[us], timedelta → duration[us]; only None → null);
        every inferred column is nullable."""
        if schema is None:
            schema = Schema([Field(name, infer_type(name, values)) for name, values in columns.items()])
        elif not isinstance(schema, Schema):
            schema = Schema(schema)
        return cls(schema, {n: list(v) for n, v in columns.items()})

    @classmethod
    def from_rows(cls, rows, schema):
        """A batch of `schema` from dicts (a missing key is a null) or tuples in column
        order."""
        if not isinstance(schema, Schema):
            schema = Schema(schema)
        rows = list(rows)
        names = schema.names
        columns = [[] for _ in names]
        for row in rows:
            if isinstance(row, dict):
                for column, name in zip(columns, names):
                    column.append(row.get(name))
            else:
                if len(row) != len(names):
                    raise ValueError(f"a row of {len(row)} values for {len(names)} columns: {row!r:.80}")
                for column, value in zip(columns, row):
                    column.append(value)
        return cls(schema, columns, len(rows))

    @classmethod
    def from_ipc(cls, data):
        """The one record batch of an IPC stream (an empty batch for a schema-only
        stream). Raises ValueError when the stream holds several batches; use
        `ingest_plugin.read_ipc` for those."""
        schema, batches = ipc.read_stream(data)
        if not batches:
            return cls.empty(schema)
        if len(batches) > 1:
            raise ValueError(f"the stream holds {len(batches)} batches, not one")
        return batches[0]

    def to_ipc(self):
        """This batch as an IPC stream of one batch (what the contract passes)."""
        return ipc.write_stream(self.schema, [self])

    # --- reading ---------------------------------------------------------------------

    def __len__(self):
        return self.num_rows

    def column(self, key):
        """The values of a column, by name or position, as a list (None for nulls). The
        list belongs to the batch: copy it before changing it."""
        index = key if isinstance(key, int) else self.schema.index(key)
        column = self._columns[index]
        if isinstance(column, ipc.Encoded):
            column = ipc.decode(self.schema.fields[index], column)
            self._columns[index] = column
        return column

    __getitem__ = column

    @property
    def columns(self):
        """Every column's values, in schema order."""
        return [self.column(i) for i in range(len(self.schema.fields))]

    def to_pydict(self):
        """{column name: list of values}."""
        return dict(zip(self.schema.names, self.columns))

    def rows(self):
        """Each row as a dict of column name → value."""
        names = self.schema.names
        for values in zip(*self.columns):
            yield dict(zip(names, values))

    __iter__ = rows

    def row(self, index):
        """Row `index` as a dict."""
        if not -self.num_rows <= index < self.num_rows:
            raise IndexError(f"row {index} of a batch of {self.num_rows} rows")
        return {name: self.column(i)[index] for i, name in enumerate(self.schema.names)}

    def to_pylist(self):
        """Every row as a dict."""
        return list(self.rows())

    # --- new batches -----------------------------------------------------------------

    def filter(self, mask):
        """The rows whose entry in `mask` (one truthy/falsy value per row) is true."""
        mask = list(mask)
        if len(mask) != self.num_rows:
            raise ValueError(f"a mask of {len(mask)} entries for a batch of {self.num_rows} rows")
        return self.take([i for i, keep in enumerate(mask) if keep])

    def take(self, indices):
        """The rows at `indices`, in that order."""
        indices = list(indices)
        columns = []
        for i in range(len(self.schema.fields)):
            values = self.column(i)
            columns.append([values[r] for r in indices])
        return Batch(self.schema, columns, len(indices))

    def slice(self, offset, length=None):
        """`length` rows from row `offset` (to the end when length is None)."""
        end = self.num_rows if length is None else min(self.num_rows, offset + length)
        return self.take(range(offset, end))

    def with_column(self, field, values):
        """A batch with `values` as column `field` (a Field, or a name: then the type is
        the existing column's, or inferred from the values for a new column); replaces a
        column of the same name, else adds it at the end. Other columns are shared."""
        values = list(values)
        if len(values) != self.num_rows:
            raise ValueError(
                f"column {getattr(field, 'name', field)!r} has {len(values)} values, "
                f"but the batch has {self.num_rows} rows"
            )
        if not isinstance(field, Field):
            if field in self.schema:
                field = self.schema.field(field)
            else:
                field = Field(field, infer_type(field, values))
        schema = self.schema.set(field)
        columns = list(self._columns)
        index = schema.index(field.name)
        if index < len(columns):
            columns[index] = values
        else:
            columns.append(values)
        return Batch._make(schema, self.num_rows, columns)

    def drop(self, *names):
        """A batch without the named columns."""
        keep = [n for n in self.schema.names if n not in names]
        return self.select(keep)

    def select(self, names):
        """A batch with the named columns, in that order."""
        schema = self.schema.select(names)
        columns = [self._columns[self.schema.index(n)] for n in names]
        return Batch._make(schema, self.num_rows, columns)

    def rename(self, mapping):
        """A batch whose columns named in `mapping` (old → new) are renamed."""
        schema = Schema(
            [f.with_name(mapping.get(f.name, f.name)) for f in self.schema.fields], self.schema.metadata
        )
        return Batch._make(schema, self.num_rows, list(self._columns))

    def cast_schema(self, schema):
        """The same columns under `schema` (same names and types; e.g. other nullability or
        metadata)."""
        if not isinstance(schema, Schema):
            schema = Schema(schema)
        if schema.names != self.schema.names or [f.type for f in schema] != [f.type for f in self.schema]:
            raise ValueError(f"schema {schema} does not have the columns of {self.schema}")
        return Batch._make(schema, self.num_rows, list(self._columns))

    # --- internals -------------------------------------------------------------------

    def _encoded_column(self, index, field):
        column = self._columns[index]
        if isinstance(column, ipc.Encoded):
            if column.null_count and not field.nullable:
                raise ValueError(f"column {field.name!r} is not nullable, but holds {column.null_count} nulls")
            return column
        null_count, buffers = ipc.encode(field, column)
        return ipc.Encoded(self.num_rows, null_count, buffers)

    def __eq__(self, other):
        if not isinstance(other, Batch):
            return NotImplemented
        return self.schema == other.schema and self.num_rows == other.num_rows and self.columns == other.columns

    def __repr__(self):
        return f"Batch({self.num_rows} rows, {self.schema})"


def infer_type(name, values):
    """The Arrow type of a column inferred from its Python values (see
    `Batch.from_columns`)."""
    seen = set(map(type, values))
    seen.discard(type(None))
    if not seen:
        return DataType("null")
    if seen == {bool}:
        return DataType("bool")
    if seen <= {int, bool} and bool not in seen:
        return DataType("int64")
    if seen <= {int, float}:
        return DataType("float64")
    if seen == {str}:
        return DataType("utf8")
    if seen <= {bytes, bytearray, memoryview}:
        return DataType("binary")
    if seen == {datetime.datetime}:
        aware = {v.tzinfo is not None for v in values if v is not None}
        if len(aware) > 1:
            raise TypeError(f"column {name!r} mixes naive and aware datetimes; give it a schema")
        return DataType("timestamp", "us", "UTC" if aware.pop() else None)
    if seen == {datetime.date}:
        return DataType("date32")
    if seen == {datetime.time}:
        return DataType("time64", "us")
    if seen == {datetime.timedelta}:
        return DataType("duration", "us")
    kinds = ", ".join(sorted(t.__name__ for t in seen))
    raise TypeError(f"cannot infer an Arrow type for column {name!r} holding {kinds}; give it a schema")

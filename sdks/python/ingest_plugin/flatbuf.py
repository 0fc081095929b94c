"""The few FlatBuffers mechanics Arrow IPC metadata needs, by hand: reading tables, vectors,
strings and unions from a buffer, and building a buffer from a tree of tables.

Reading follows the FlatBuffers binary format: a root offset, tables that point back to a
vtable of field offsets, and offsets that point forward. Building lays the tree out front to
back (a vtable, then its table, then the table's children) so every offset points forward,
and aligns every scalar to its size relative to the buffer start, which readers that verify
alignment (arrow-rs) require.
"""

import struct

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_I16 = struct.Struct("<h")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_I64 = struct.Struct("<q")


class Table:
    """A table inside a FlatBuffers buffer, read field by field (by field id)."""

    __slots__ = ("buf", "pos", "_vtable", "_vtable_len")

    def __init__(self, buf, pos):
        self.buf = buf
        self.pos = pos
        self._vtable = pos - _I32.unpack_from(buf, pos)[0]
        self._vtable_len = _U16.unpack_from(buf, self._vtable)[0]

    @classmethod
    def root(cls, buf):
        return cls(buf, _U32.unpack_from(buf, 0)[0])

    def _field(self, field_id):
        """The position of a field's value, or None when the field is absent."""
        entry = 4 + 2 * field_id
        if entry >= self._vtable_len:
            return None
        offset = _U16.unpack_from(self.buf, self._vtable + entry)[0]
        return self.pos + offset if offset else None

    def scalar(self, field_id, fmt, default=0):
        pos = self._field(field_id)
        if pos is None:
            return default
        return fmt.unpack_from(self.buf, pos)[0]

    def u8(self, field_id, default=0):
        return self.scalar(field_id, _U8, default)

    def bool(self, field_id, default=False):
        return bool(self.scalar(field_id, _U8, int(default)))

    def i16(self, field_id, default=0):
        return self.scalar(field_id, _I16, default)

    def i32(self, field_id, default=0):
        return self.scalar(field_id, _I32, default)

    def i64(self, field_id, default=0):
        return self.scalar(field_id, _I64, default)

    def _indirect(self, field_id):
        pos = self._field(field_id)
        if pos is None:
            return None
        return pos + _U32.unpack_from(self.buf, pos)[0]

    def table(self, field_id):
        pos = self._indirect(field_id)
        return None if pos is None else Table(self.buf, pos)

    def string(self, field_id):
        pos = self._indirect(field_id)
        if pos is None:
            return None
        length = _U32.unpack_from(self.buf, pos)[0]
        return bytes(self.buf[pos + 4 : pos + 4 + length]).decode("utf-8")

    def vector(self, field_id):
        """(position of the first element, element count), or (0, 0) when absent."""
        pos = self._indirect(field_id)
        if pos is None:
            return 0, 0
        return pos + 4, _U32.unpack_from(self.buf, pos)[0]

    def tables(self, field_id):
        start, count = self.vector(field_id)
        out = []
        for i in range(count):
            at = start + 4 * i
            out.append(Table(self.buf, at + _U32.unpack_from(self.buf, at)[0]))
        return out

    def structs(self, field_id, fmt):
        """A vector of structs, each unpacked with the struct.Struct `fmt`."""
        start, count = self.vector(field_id)
        return [fmt.unpack_from(self.buf, start + fmt.size * i) for i in range(count)]


# Building. A node is one of the classes below; `build(root)` returns the buffer.


class T:
    """A table to build: `fields` maps field id to a value made with the helpers below."""

    __slots__ = ("fields",)

    def __init__(self, fields):
        self.fields = {k: v for k, v in fields.items() if v is not None}


class S:
    """A string to build."""

    __slots__ = ("text",)

    def __init__(self, text):
        self.text = text


class TableVector:
    """A vector of tables to build."""

    __slots__ = ("items",)

    def __init__(self, items):
        self.items = list(items)


class StructVector:
    """A vector of structs (or scalars) to build: `data` is the packed elements, `align`
    the alignment of one element."""

    __slots__ = ("data", "count", "align")

    def __init__(self, data, count, align):
        self.data = data
        self.count = count
        self.align = align


def u8(v):
    return ("B", v)


def boolean(v):
    return ("B", 1 if v else 0)


def i16(v):
    return ("h", v)


def i32(v):
    return ("i", v)


def i64(v):
    return ("q", v)


def _pad_to(buf, align, phase=0):
    """Append zeros until len(buf) % align == phase."""
    while len(buf) % align != phase:
        buf.append(0)


def build(root):
    """Lay out `root` (a T) and everything it refers to; returns the bytes."""
    buf = bytearray(4)
    pending = []  # (position of an offset field, node it points to)
    pos = _write_table(buf, root, pending)
    _U32.pack_into(buf, 0, pos)
    # Children are written after every field that points at them, so offsets are forward.
    done = 0
    while done < len(pending):
        at, node = pending[done]
        done += 1
        target = _write(buf, node, pending)
        _U32.pack_into(buf, at, target - at)
    return bytes(buf)


def _write(buf, node, pending):
    if isinstance(node, T):
        return _write_table(buf, node, pending)
    if isinstance(node, S):
        data = node.text.encode("utf-8")
        _pad_to(buf, 4)
        pos = len(buf)
        buf += _U32.pack(len(data)) + data + b"\0"
        return pos
    if isinstance(node, TableVector):
        _pad_to(buf, 4)
        pos = len(buf)
        buf += _U32.pack(len(node.items))
        for item in node.items:
            pending.append((len(buf), item))
            buf += b"\0\0\0\0"
        return pos
    if isinstance(node, StructVector):
        # The length prefix sits right before the first element, which must be aligned.
        _pad_to(buf, max(node.align, 4), (max(node.align, 4) - 4) % max(node.align, 4))
        pos = len(buf)
        buf += _U32.pack(node.count) + node.data
        return pos
    raise TypeError(f"cannot build a flatbuffer node of {type(node).__name__}")


def _write_table(buf, table, pending):
    # Inline layout: the vtable back-pointer, then the fields by size, largest first, so
    # that each lands aligned when the table itself is 8-aligned.
    slots = []
    for field_id, value in table.fields.items():
        if isinstance(value, tuple):
            fmt, v = value
            slots.append((struct.calcsize(fmt), field_id, fmt, v))
        else:
            slots.append((4, field_id, "offset", value))
    slots.sort(key=lambda s: (-s[0], s[1]))
    layout = {}
    size = 4
    for width, field_id, _, _ in slots:
        while size % width:
            size += 1
        layout[field_id] = size
        size += width
    while size % 4:
        size += 1
    max_id = max(table.fields, default=-1)

    vtable = bytearray(_U16.pack(4 + 2 * (max_id + 1)) + _U16.pack(size))
    for field_id in range(max_id + 1):
        vtable += _U16.pack(layout.get(field_id, 0))
    _pad_to(buf, 2)
    vtable_pos = len(buf)
    buf += vtable
    _pad_to(buf, 8)
    pos = len(buf)
    buf += bytes(size)
    _I32.pack_into(buf, pos, pos - vtable_pos)
    for _, field_id, fmt, value in slots:
        at = pos + layout[field_id]
        if fmt == "offset":
            pending.append((at, value))
        else:
            struct.pack_into("<" + fmt, buf, at, value)
    return pos

/**
 * Arrow IPC streams in plain JavaScript: the bytes that cross the plugin boundary.
 *
 * A stream is a sequence of encapsulated messages: the continuation marker 0xFFFFFFFF, the
 * metadata length, a flatbuffer `Message` (Schema or RecordBatch) padded to 8 bytes, then
 * the message body; it ends with 0xFFFFFFFF 0x00000000. The flatbuffers are read and built
 * here by hand (the schema files are Arrow's format/Schema.fbs and format/Message.fbs).
 * Body buffers are little-endian, 8-byte aligned and zero-padded; validity bitmaps are
 * LSB-first. Compressed bodies and dictionary-encoded columns are refused.
 */

import { Batch, Field, LazyColumn, Schema, Type, intInfo, isBigIntType, typeName } from './arrow.js';

const UTF8_DECODER = new TextDecoder('utf-8', { fatal: true });
const UTF8_ENCODER = new TextEncoder();

// format/Schema.fbs `union Type`.
const T = {
  Null: 1, Int: 2, FloatingPoint: 3, Binary: 4, Utf8: 5, Bool: 6, Decimal: 7, Date: 8, Time: 9,
  Timestamp: 10, Interval: 11, List: 12, Struct_: 13, Union: 14, FixedSizeBinary: 15,
  FixedSizeList: 16, Map: 17, Duration: 18, LargeBinary: 19, LargeUtf8: 20, LargeList: 21,
  RunEndEncoded: 22, BinaryView: 23, Utf8View: 24, ListView: 25, LargeListView: 26,
};
const T_NAMES = Object.fromEntries(Object.entries(T).map(([k, v]) => [v, k]));
// format/Message.fbs `union MessageHeader`.
const HEADER = { Schema: 1, DictionaryBatch: 2, RecordBatch: 3 };
const METADATA_V5 = 4;
const TIME_UNITS = ['s', 'ms', 'us', 'ns'];
const PRECISION = ['float16', 'float32', 'float64'];

/** Malformed or unsupported IPC bytes. */
export class IpcError extends Error {
  constructor(message) {
    super(message);
    this.name = 'IpcError';
  }
}

// ---------------------------------------------------------------------------------------
// Flatbuffer reading

class Table {
  constructor(view, pos) {
    this.view = view;
    this.pos = pos;
    const vtable = pos - view.getInt32(pos, true);
    this.vtable = vtable;
    this.vtableSize = view.getUint16(vtable, true);
  }

  /** Byte position of field `slot`, or 0 when absent. */
  offset(slot) {
    const at = 4 + slot * 2;
    if (at >= this.vtableSize) return 0;
    const o = this.view.getUint16(this.vtable + at, true);
    return o ? this.pos + o : 0;
  }

  bool(slot, dflt = false) {
    const o = this.offset(slot);
    return o ? this.view.getUint8(o) !== 0 : dflt;
  }
  uint8(slot, dflt = 0) {
    const o = this.offset(slot);
    return o ? this.view.getUint8(o) : dflt;
  }
  int16(slot, dflt = 0) {
    const o = this.offset(slot);
    return o ? this.view.getInt16(o, true) : dflt;
  }
  int32(slot, dflt = 0) {
    const o = this.offset(slot);
    return o ? this.view.getInt32(o, true) : dflt;
  }
  int64(slot, dflt = 0n) {
    const o = this.offset(slot);
    return o ? this.view.getBigInt64(o, true) : dflt;
  }
  /** Position an offset field points to, or 0. */
  indirect(slot) {
    const o = this.offset(slot);
    return o ? o + this.view.getUint32(o, true) : 0;
  }
  table(slot) {
    const p = this.indirect(slot);
    return p ? new Table(this.view, p) : null;
  }
  string(slot) {
    const p = this.indirect(slot);
    if (!p) return null;
    const len = this.view.getUint32(p, true);
    return UTF8_DECODER.decode(new Uint8Array(this.view.buffer, this.view.byteOffset + p + 4, len));
  }
  /** [position of the first element, length] of a vector field; [0, 0] when absent. */
  vector(slot) {
    const p = this.indirect(slot);
    return p ? [p + 4, this.view.getUint32(p, true)] : [0, 0];
  }
  tables(slot) {
    const [start, len] = this.vector(slot);
    const out = [];
    for (let i = 0; i < len; i++) {
      const at = start + i * 4;
      out.push(new Table(this.view, at + this.view.getUint32(at, true)));
    }
    return out;
  }
}

function readMetadata(table, slot) {
  const map = new Map();
  for (const kv of table.tables(slot)) map.set(kv.string(0) ?? '', kv.string(1) ?? '');
  return map;
}

// Stands in for an absent type table: every field reads as its default.
const NO_TABLE = { int16: (_, d = 0) => d, int32: (_, d = 0) => d, bool: (_, d = false) => d, string: () => null };

function readType(typeId, table, name) {
  const t = table ?? NO_TABLE;
  switch (typeId) {
    case T.Null: return Type.null;
    case T.Bool: return Type.bool;
    case T.Int: {
      const bits = t.int32(0);
      const signed = t.bool(1);
      const id = `${signed ? '' : 'u'}int${bits}`;
      if (!intInfo(id)) throw new IpcError(`column ${name}: integers of ${bits} bits are not supported`);
      return Type[id];
    }
    case T.FloatingPoint: {
      const p = PRECISION[t.int16(0)];
      if (p !== 'float32' && p !== 'float64') {
        throw new IpcError(`column ${name} has type ${p}, which this SDK does not support (float32 and float64 are)`);
      }
      return Type[p];
    }
    case T.Utf8: return Type.utf8;
    case T.LargeUtf8: return Type.largeUtf8;
    case T.Binary: return Type.binary;
    case T.LargeBinary: return Type.largeBinary;
    case T.Date: return t.int16(0, 1) === 0 ? Type.date32 : Type.date64;
    case T.Timestamp: return Type.timestamp(TIME_UNITS[t.int16(0)], t.string(1));
    case T.Time: {
      const unit = TIME_UNITS[t.int16(0, 1)];
      return t.int32(1, 32) === 64 ? Type.time64(unit) : Type.time32(unit);
    }
    case T.Duration: return Type.duration(TIME_UNITS[t.int16(0, 1)]);
    default:
      throw new IpcError(
        `column ${name} has Arrow type ${T_NAMES[typeId] ?? `#${typeId}`}, which this SDK does not support ` +
          '(supported: null, bool, int8..64, uint8..64, float32/64, utf8, large_utf8, binary, ' +
          'large_binary, date32/64, timestamp, time32/64, duration)',
      );
  }
}

function readField(t) {
  const name = t.string(0) ?? '';
  if (t.table(4)) throw new IpcError(`column ${name} is dictionary-encoded, which this SDK does not support`);
  const typeId = t.uint8(2);
  const type = readType(typeId, t.table(3), name);
  if (t.vector(5)[1] > 0) throw new IpcError(`column ${name}: nested types are not supported`);
  return new Field(name, type, t.bool(1), readMetadata(t, 6));
}

function readSchema(t) {
  if (t.int16(0) !== 0) throw new IpcError('big-endian Arrow data is not supported');
  return new Schema(t.tables(1).map(readField), readMetadata(t, 2));
}

/** The messages of a stream: `{ header, headerType, body }`. */
function* messages(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 0;
  while (pos + 4 <= bytes.length) {
    let len = view.getInt32(pos, true);
    pos += 4;
    if (len === -1) {
      if (pos + 4 > bytes.length) break;
      len = view.getInt32(pos, true);
      pos += 4;
    }
    if (len === 0) return;
    if (len < 0 || pos + len > bytes.length) throw new IpcError(`truncated IPC message at byte ${pos}`);
    const meta = new DataView(bytes.buffer, bytes.byteOffset + pos, len);
    const root = new Table(meta, meta.getUint32(0, true));
    pos += len;
    const headerType = root.uint8(1);
    const header = root.table(2);
    const bodyLength = Number(root.int64(3));
    if (pos + bodyLength > bytes.length) throw new IpcError(`truncated IPC body at byte ${pos}`);
    const body = bytes.subarray(pos, pos + bodyLength);
    pos += bodyLength;
    yield { headerType, header, body };
  }
}

function bitSet(bytes, i) {
  return (bytes[i >> 3] >> (i & 7)) & 1;
}

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  throw new Error('this Arrow IPC codec runs on little-endian platforms only (as WebAssembly is)');
}

/** `count` elements of `Ctor` over `bytes`, without a copy when the bytes are aligned. */
function typed(Ctor, bytes, count) {
  if (bytes.byteOffset % Ctor.BYTES_PER_ELEMENT === 0) return new Ctor(bytes.buffer, bytes.byteOffset, count);
  return new Ctor(bytes.slice(0, count * Ctor.BYTES_PER_ELEMENT).buffer);
}

const TYPED = {
  int8: Int8Array, int16: Int16Array, int32: Int32Array, uint8: Uint8Array, uint16: Uint16Array,
  uint32: Uint32Array, int64: BigInt64Array, uint64: BigUint64Array, float32: Float32Array,
  float64: Float64Array, date32: Int32Array, time32: Int32Array,
};
const TWO_32 = 4294967296;
// The high word of a 64-bit integer whose value is within ±2^53.
const SAFE_HIGH = 2097152;

/** How many body buffers a column of `type` has. */
function bufferCount(type) {
  if (type.id === 'null') return 0;
  return ['utf8', 'large_utf8', 'binary', 'large_binary'].includes(type.id) ? 3 : 2;
}

/** Column `field` of a record batch, decoded when first read (see LazyColumn). */
function readColumn(field, length, nodes, buffers, body) {
  const node = nodes.next().value;
  if (!node) throw new IpcError(`record batch has no node for column ${field.name}`);
  if (node.length !== length) throw new IpcError(`column ${field.name} has ${node.length} rows, its batch ${length}`);
  const bufs = [];
  for (let i = 0; i < bufferCount(field.type); i++) {
    const b = buffers.next().value;
    if (!b) throw new IpcError(`record batch lacks a buffer of column ${field.name}`);
    if (b.offset < 0 || b.offset + b.length > body.length) throw new IpcError(`buffer of column ${field.name} lies outside the body`);
    bufs.push(body.subarray(b.offset, b.offset + b.length));
  }
  return new LazyColumn(length, () => decodeColumn(field, length, node, bufs), { nullCount: node.nullCount, buffers: bufs });
}

function decodeColumn(field, length, node, bufs) {
  let next = 0;
  const take = () => bufs[next++];
  const { type } = field;
  const out = new Array(length);
  if (type.id === 'null') return out.fill(null);
  const validity = take();
  const nulls = node.nullCount > 0 && validity.length > 0;
  if (nulls && validity.length < Math.ceil(length / 8)) throw new IpcError(`column ${field.name}: validity bitmap too short`);
  const values = take();
  const need = (bytes) => {
    if (values.length < bytes) throw new IpcError(`column ${field.name}: values buffer of ${values.length} bytes is too short for ${length} rows`);
  };
  switch (type.id) {
    case 'bool':
      need(Math.ceil(length / 8));
      for (let i = 0; i < length; i++) out[i] = nulls && !bitSet(validity, i) ? null : bitSet(values, i) === 1;
      return out;
    case 'utf8': case 'binary': case 'large_utf8': case 'large_binary': {
      const large = type.id.startsWith('large');
      const data = take();
      if (length === 0) return out;
      need((length + 1) * (large ? 8 : 4));
      // Offsets as numbers; 64-bit ones from their two 32-bit halves.
      const offsets = new Array(length + 1);
      if (large) {
        const words = typed(Int32Array, values, (length + 1) * 2);
        for (let i = 0; i <= length; i++) offsets[i] = words[2 * i + 1] * TWO_32 + (words[2 * i] >>> 0);
      } else {
        const words = typed(Int32Array, values, length + 1);
        for (let i = 0; i <= length; i++) offsets[i] = words[i];
      }
      for (let i = 0; i < length; i++) {
        if (offsets[i] < 0 || offsets[i + 1] < offsets[i] || offsets[i + 1] > data.length) {
          throw new IpcError(`column ${field.name}, row ${i}: offsets ${offsets[i]}..${offsets[i + 1]} lie outside the data`);
        }
      }
      if (!type.id.endsWith('utf8')) {
        for (let i = 0; i < length; i++) out[i] = nulls && !bitSet(validity, i) ? null : data.slice(offsets[i], offsets[i + 1]);
        return out;
      }
      // Decode the data once; when every byte is one character (ASCII), byte offsets are
      // character offsets and each value is a slice of that one string.
      let all = null;
      try {
        all = UTF8_DECODER.decode(data);
      } catch {
        all = null;
      }
      if (all !== null && all.length === data.length) {
        for (let i = 0; i < length; i++) out[i] = nulls && !bitSet(validity, i) ? null : all.slice(offsets[i], offsets[i + 1]);
        return out;
      }
      for (let i = 0; i < length; i++) {
        if (nulls && !bitSet(validity, i)) {
          out[i] = null;
          continue;
        }
        try {
          out[i] = UTF8_DECODER.decode(data.subarray(offsets[i], offsets[i + 1]));
        } catch {
          throw new IpcError(`column ${field.name}, row ${i}: not valid UTF-8`);
        }
      }
      return out;
    }
  }
  const Ctor = TYPED[type.id];
  if (Ctor && !(isBigIntType(type) && Ctor !== BigInt64Array && Ctor !== BigUint64Array)) {
    need(Ctor.BYTES_PER_ELEMENT * length);
    const v = typed(Ctor, values, length);
    if (nulls) for (let i = 0; i < length; i++) out[i] = bitSet(validity, i) ? v[i] : null;
    else for (let i = 0; i < length; i++) out[i] = v[i];
    return out;
  }
  // 64-bit times: BigInt for nanoseconds, otherwise numbers from the two 32-bit halves
  // (no BigInt per value), refused beyond the exact range of a number.
  need(8 * length);
  if (isBigIntType(type)) {
    const v = typed(BigInt64Array, values, length);
    for (let i = 0; i < length; i++) out[i] = nulls && !bitSet(validity, i) ? null : v[i];
    return out;
  }
  const words = typed(Int32Array, values, length * 2);
  for (let i = 0; i < length; i++) {
    if (nulls && !bitSet(validity, i)) {
      out[i] = null;
      continue;
    }
    const high = words[2 * i + 1];
    if (high >= SAFE_HIGH || high < -SAFE_HIGH) {
      const exact = typed(BigInt64Array, values, length)[i];
      throw new IpcError(`column ${field.name} (${typeName(type)}), row ${i}: ${exact} is beyond the exact range of a JavaScript number`);
    }
    out[i] = high * TWO_32 + (words[2 * i] >>> 0);
  }
  return out;
}

function readBatch(schema, t, body) {
  if (t.table(3)) throw new IpcError('compressed IPC bodies are not supported; send uncompressed batches');
  const length = Number(t.int64(0));
  const view = t.view;
  const [nodeStart, nodeCount] = t.vector(1);
  const [bufStart, bufCount] = t.vector(2);
  const nodes = (function* () {
    for (let i = 0; i < nodeCount; i++) {
      const p = nodeStart + i * 16;
      yield { length: Number(view.getBigInt64(p, true)), nullCount: Number(view.getBigInt64(p + 8, true)) };
    }
  })();
  const buffers = (function* () {
    for (let i = 0; i < bufCount; i++) {
      const p = bufStart + i * 16;
      yield { offset: Number(view.getBigInt64(p, true)), length: Number(view.getBigInt64(p + 8, true)) };
    }
  })();
  const columns = schema.fields.map((f) => readColumn(f, length, nodes, buffers, body));
  return new Batch(schema, columns, { trusted: true, numRows: length });
}

/** Read a whole IPC stream: `{ schema, batches }`. */
export function readStream(input) {
  // Bytes from the component's bindings are typed arrays of another realm: accept any view.
  if (!ArrayBuffer.isView(input)) throw new TypeError('an IPC stream is a Uint8Array');
  const bytes = input instanceof Uint8Array ? input : new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
  let schema = null;
  const batches = [];
  for (const m of messages(bytes)) {
    if (m.headerType === HEADER.Schema) {
      if (schema) throw new IpcError('IPC stream holds two schema messages');
      schema = readSchema(m.header);
    } else if (m.headerType === HEADER.RecordBatch) {
      if (!schema) throw new IpcError('IPC stream has a record batch before its schema');
      batches.push(readBatch(schema, m.header, m.body));
    } else if (m.headerType === HEADER.DictionaryBatch) {
      throw new IpcError('dictionary batches are not supported');
    } else {
      throw new IpcError(`unexpected IPC message type ${m.headerType}`);
    }
  }
  if (!schema) throw new IpcError('IPC stream has no schema message');
  return { schema, batches };
}

/** The schema of an IPC stream. */
export function decodeSchema(bytes) {
  return readStream(bytes).schema;
}

/** The first batch of an IPC stream; an empty batch of its schema when it holds none. */
export function decodeBatch(bytes) {
  const { schema, batches } = readStream(bytes);
  return batches[0] ?? Batch.empty(schema);
}

// ---------------------------------------------------------------------------------------
// Flatbuffer building
//
// Objects are laid out front to back: a table's vtable, then the table, then the objects
// it points to (unsigned offsets always point forward). A table is described as a list of
// `[slot, kind, value]` with kind one of u8, bool, i16, i32, i64 (scalars), and tbl, str,
// vec_tbl, vec_struct (children: a table description, a string, a list of table
// descriptions, or `{ align, bytes }` for a vector of structs).

class Builder {
  constructor() {
    this.buf = new Uint8Array(1024);
    this.pos = 0;
  }

  reserve(n) {
    if (this.pos + n > this.buf.length) {
      let size = this.buf.length * 2;
      while (size < this.pos + n) size *= 2;
      const next = new Uint8Array(size);
      next.set(this.buf.subarray(0, this.pos));
      this.buf = next;
    }
    this.view = new DataView(this.buf.buffer);
  }

  align(n, extra = 0) {
    // Pad so that `pos + extra` is a multiple of n.
    const pad = (n - ((this.pos + extra) % n)) % n;
    this.reserve(pad);
    this.pos += pad;
  }

  u32At(at, v) {
    this.view.setUint32(at, v, true);
  }

  /** Write a table; returns its position. */
  table(fields) {
    const SIZE = { u8: 1, bool: 1, i16: 2, i32: 4, i64: 8, tbl: 4, str: 4, vec_tbl: 4, vec_struct: 4 };
    const slots = fields.length ? Math.max(...fields.map((f) => f[0])) + 1 : 0;
    // Layout inside the table: soffset first, then fields by decreasing size so each is
    // aligned once the table start is 8-aligned.
    const order = [...fields].sort((a, b) => SIZE[b[1]] - SIZE[a[1]]);
    let size = 4;
    const at = new Map();
    for (const f of order) {
      const s = SIZE[f[1]];
      size = Math.ceil(size / s) * s;
      at.set(f, size);
      size += s;
    }
    size = Math.ceil(size / 4) * 4;
    // vtable
    this.align(2);
    const vtSize = 4 + slots * 2;
    this.reserve(vtSize);
    const vtable = this.pos;
    this.view.setUint16(vtable, vtSize, true);
    this.view.setUint16(vtable + 2, size, true);
    for (let i = 0; i < slots; i++) this.view.setUint16(vtable + 4 + i * 2, 0, true);
    for (const f of fields) this.view.setUint16(vtable + 4 + f[0] * 2, at.get(f), true);
    this.pos += vtSize;
    // table
    this.align(8);
    this.reserve(size);
    const start = this.pos;
    this.buf.fill(0, start, start + size);
    this.view.setInt32(start, start - vtable, true);
    this.pos += size;
    const children = [];
    for (const f of fields) {
      const p = start + at.get(f);
      const [, kind, v] = f;
      switch (kind) {
        case 'u8': case 'bool': this.view.setUint8(p, Number(v)); break;
        case 'i16': this.view.setInt16(p, v, true); break;
        case 'i32': this.view.setInt32(p, v, true); break;
        case 'i64': this.view.setBigInt64(p, BigInt(v), true); break;
        default: children.push([p, kind, v]);
      }
    }
    for (const [p, kind, v] of children) {
      const child = this.child(kind, v);
      this.u32At(p, child - p);
    }
    return start;
  }

  child(kind, v) {
    switch (kind) {
      case 'tbl':
        return this.table(v);
      case 'str': {
        const bytes = UTF8_ENCODER.encode(v);
        this.align(4);
        this.reserve(4 + bytes.length + 1);
        const start = this.pos;
        this.u32At(start, bytes.length);
        this.buf.set(bytes, start + 4);
        this.buf[start + 4 + bytes.length] = 0;
        this.pos += 4 + bytes.length + 1;
        return start;
      }
      case 'vec_tbl': {
        this.align(4);
        this.reserve(4 + v.length * 4);
        const start = this.pos;
        this.u32At(start, v.length);
        this.pos += 4 + v.length * 4;
        v.forEach((t, i) => {
          const slot = start + 4 + i * 4;
          this.u32At(slot, this.table(t) - slot);
        });
        return start;
      }
      case 'vec_struct': {
        // Elements aligned to the struct's alignment, right after the u32 length.
        this.align(Math.max(4, v.align), 4);
        this.reserve(4 + v.bytes.length);
        const start = this.pos;
        this.u32At(start, v.count);
        this.buf.set(v.bytes, start + 4);
        this.pos += 4 + v.bytes.length;
        return start;
      }
      default:
        throw new Error(`unknown flatbuffer field kind ${kind}`);
    }
  }

  /** A finished buffer whose root is the table `fields`. */
  static finish(fields) {
    const b = new Builder();
    b.reserve(8);
    b.pos = 4;
    const root = b.table(fields);
    b.u32At(0, root);
    b.align(8);
    return b.buf.slice(0, b.pos);
  }
}

function metadataFields(map) {
  return [...map].map(([k, v]) => [[0, 'str', k], [1, 'str', v]]);
}

function typeFields(type) {
  const unit = (u) => TIME_UNITS.indexOf(u);
  switch (type.id) {
    case 'null': return [T.Null, []];
    case 'bool': return [T.Bool, []];
    case 'float32': return [T.FloatingPoint, [[0, 'i16', 1]]];
    case 'float64': return [T.FloatingPoint, [[0, 'i16', 2]]];
    case 'utf8': return [T.Utf8, []];
    case 'large_utf8': return [T.LargeUtf8, []];
    case 'binary': return [T.Binary, []];
    case 'large_binary': return [T.LargeBinary, []];
    case 'date32': return [T.Date, [[0, 'i16', 0]]];
    case 'date64': return [T.Date, [[0, 'i16', 1]]];
    case 'timestamp': {
      const f = [[0, 'i16', unit(type.unit)]];
      if (type.timezone !== null) f.push([1, 'str', type.timezone]);
      return [T.Timestamp, f];
    }
    case 'time32': return [T.Time, [[0, 'i16', unit(type.unit)], [1, 'i32', 32]]];
    case 'time64': return [T.Time, [[0, 'i16', unit(type.unit)], [1, 'i32', 64]]];
    case 'duration': return [T.Duration, [[0, 'i16', unit(type.unit)]]];
    default: {
      const info = intInfo(type.id);
      if (info) return [T.Int, [[0, 'i32', info[0]], [1, 'bool', info[1]]]];
      throw new IpcError(`cannot encode Arrow type ${typeName(type)}`);
    }
  }
}

function fieldTable(field) {
  const [typeId, typeTable] = typeFields(field.type);
  const t = [
    [0, 'str', field.name],
    [1, 'bool', field.nullable],
    [2, 'u8', typeId],
    [3, 'tbl', typeTable],
    [5, 'vec_tbl', []],
  ];
  if (field.metadata.size) t.push([6, 'vec_tbl', metadataFields(field.metadata)]);
  return t;
}

function schemaTable(schema) {
  const t = [
    [0, 'i16', 0],
    [1, 'vec_tbl', schema.fields.map(fieldTable)],
  ];
  if (schema.metadata.size) t.push([2, 'vec_tbl', metadataFields(schema.metadata)]);
  return t;
}

function encapsulate(headerType, header, bodyLength) {
  const meta = Builder.finish([
    [0, 'i16', METADATA_V5],
    [1, 'u8', headerType],
    [2, 'tbl', header],
    [3, 'i64', bodyLength],
  ]);
  const out = new Uint8Array(8 + meta.length);
  const dv = new DataView(out.buffer);
  dv.setInt32(0, -1, true);
  dv.setInt32(4, meta.length, true);
  out.set(meta, 8);
  return out;
}

/** Collects the body of a record batch: 8-byte aligned, zero-padded buffers. */
class Body {
  constructor() {
    this.parts = [];
    this.length = 0;
    this.buffers = [];
    this.nodes = [];
  }
  push(bytes) {
    this.buffers.push([this.length, bytes.length]);
    this.parts.push(bytes);
    this.length += bytes.length;
    const pad = (8 - (this.length % 8)) % 8;
    if (pad) {
      this.parts.push(new Uint8Array(pad));
      this.length += pad;
    }
  }
  bytes() {
    const out = new Uint8Array(this.length);
    let at = 0;
    for (const p of this.parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }
}

/** UTF-8 length of a string, as TextEncoder encodes it (a lone surrogate is 3 bytes). */
function utf8Length(s) {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c < 0xdc00 && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

const ASCII = /^[\x00-\x7f]*$/;

/** Offsets and data of a utf8 column: one encode of all values, one offset per value. */
function encodeText(values) {
  const n = values.length;
  const joined = values.join('');
  const data = UTF8_ENCODER.encode(joined);
  const lengths = new Array(n);
  if (data.length === joined.length) {
    for (let i = 0; i < n; i++) lengths[i] = values[i] === null ? 0 : values[i].length;
  } else {
    let total = 0;
    for (let i = 0; i < n; i++) {
      const v = values[i];
      lengths[i] = v === null ? 0 : ASCII.test(v) ? v.length : utf8Length(v);
      total += lengths[i];
    }
    // Joining can pair surrogates that were lone in their own values: encode one by one.
    if (total !== data.length) return encodeBinary(values.map((v) => (v === null ? null : UTF8_ENCODER.encode(v))));
  }
  return [lengths, data];
}

function encodeBinary(values) {
  const lengths = values.map((v) => (v === null ? 0 : v.length));
  const data = new Uint8Array(lengths.reduce((a, b) => a + b, 0));
  let at = 0;
  for (const v of values) {
    if (v !== null) {
      data.set(v, at);
      at += v.length;
    }
  }
  return [lengths, data];
}

function writeColumn(body, field, values, raw) {
  if (raw) {
    // A column passed on untouched: its bytes as they came.
    body.nodes.push([values.length, raw.nullCount]);
    for (const b of raw.buffers) body.push(b);
    return;
  }
  const n = values.length;
  const { type } = field;
  let nulls = 0;
  for (let i = 0; i < n; i++) if (values[i] === null) nulls++;
  if (type.id === 'null') {
    body.nodes.push([n, n]);
    return;
  }
  body.nodes.push([n, nulls]);
  if (nulls) {
    const bits = new Uint8Array(Math.ceil(n / 8));
    for (let i = 0; i < n; i++) if (values[i] !== null) bits[i >> 3] |= 1 << (i & 7);
    body.push(bits);
  } else {
    body.push(new Uint8Array(0));
  }
  switch (type.id) {
    case 'bool': {
      const bits = new Uint8Array(Math.ceil(n / 8));
      for (let i = 0; i < n; i++) if (values[i] === true) bits[i >> 3] |= 1 << (i & 7);
      body.push(bits);
      return;
    }
    case 'utf8': case 'large_utf8': case 'binary': case 'large_binary': {
      const large = type.id.startsWith('large');
      const [lengths, data] = type.id.endsWith('utf8') ? encodeText(values) : encodeBinary(values);
      if (!large && data.length > 0x7fffffff) throw new IpcError(`column ${field.name} holds more than 2 GiB of data; use large_${type.id}`);
      const offsets = large ? new Int32Array((n + 1) * 2) : new Int32Array(n + 1);
      let at = 0;
      for (let i = 0; i < n; i++) {
        at += lengths[i];
        if (large) {
          offsets[2 * i + 2] = at % TWO_32;
          offsets[2 * i + 3] = Math.floor(at / TWO_32);
        } else offsets[i + 1] = at;
      }
      body.push(new Uint8Array(offsets.buffer));
      body.push(data);
      return;
    }
  }
  const Ctor = TYPED[type.id];
  if (Ctor && !(isBigIntType(type) && Ctor !== BigInt64Array && Ctor !== BigUint64Array)) {
    const v = new Ctor(n);
    for (let i = 0; i < n; i++) if (values[i] !== null) v[i] = values[i];
    body.push(new Uint8Array(v.buffer));
    return;
  }
  if (isBigIntType(type)) {
    const v = new BigInt64Array(n);
    for (let i = 0; i < n; i++) if (values[i] !== null) v[i] = values[i];
    body.push(new Uint8Array(v.buffer));
    return;
  }
  // 64-bit times held as numbers: written as two 32-bit halves.
  const words = new Int32Array(n * 2);
  for (let i = 0; i < n; i++) {
    const v = values[i];
    if (v === null) continue;
    const high = Math.floor(v / TWO_32);
    words[2 * i] = v - high * TWO_32;
    words[2 * i + 1] = high;
  }
  body.push(new Uint8Array(words.buffer));
}

function structs(pairs) {
  const bytes = new Uint8Array(pairs.length * 16);
  const dv = new DataView(bytes.buffer);
  pairs.forEach(([a, b], i) => {
    dv.setBigInt64(i * 16, BigInt(a), true);
    dv.setBigInt64(i * 16 + 8, BigInt(b), true);
  });
  return { align: 8, count: pairs.length, bytes };
}

function batchMessage(batch) {
  const body = new Body();
  batch.schema.fields.forEach((f, i) => {
    const raw = batch.rawColumn(i);
    writeColumn(body, f, raw ? { length: batch.numRows } : batch.column(i), raw);
  });
  const header = [
    [0, 'i64', batch.numRows],
    [1, 'vec_struct', structs(body.nodes)],
    [2, 'vec_struct', structs(body.buffers)],
  ];
  const bytes = body.bytes();
  return [encapsulate(HEADER.RecordBatch, header, bytes.length), bytes];
}

const END_OF_STREAM = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);

function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** An IPC stream of `schema` and `batches` (each must have that schema). */
export function writeStream(schema, batches = []) {
  const parts = [encapsulate(HEADER.Schema, schemaTable(schema), 0)];
  for (const b of batches) {
    const diff = schema.differences(b.schema);
    if (diff.length) throw new IpcError(`a batch does not match the stream's schema: ${diff.join('; ')}`);
    parts.push(...batchMessage(b));
  }
  parts.push(END_OF_STREAM);
  return concat(parts);
}

/** A schema-only IPC stream. */
export function encodeSchema(schema) {
  return writeStream(schema, []);
}

/** An IPC stream of one batch. */
export function encodeBatch(batch) {
  return writeStream(batch.schema, [batch]);
}

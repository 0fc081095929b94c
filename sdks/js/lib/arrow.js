/**
 * The plugin's view of Arrow data: types, fields, schemas and `Batch`, a record batch whose
 * columns are plain JavaScript arrays. The IPC encoding at the plugin boundary is `ipc.js`.
 *
 * Values, by type (null stands for a null value in every column):
 *   null                      null
 *   bool                      true / false
 *   int8..int32, uint8..32    number
 *   int64, uint64             BigInt (always: a number would lose digits past 2^53);
 *                             a safe-integer number is accepted when building a batch
 *   float32, float64          number
 *   utf8, large_utf8          string
 *   binary, large_binary      Uint8Array
 *   date32                    number of days since 1970-01-01
 *   date64                    number of milliseconds since 1970-01-01
 *   timestamp[unit, tz]       number of `unit`s since 1970-01-01T00:00:00Z for s, ms and us;
 *                             BigInt for ns (nanoseconds outgrow a number's exact range)
 *   time32[unit], time64[unit] number of `unit`s since midnight (BigInt for time64[ns])
 *   duration[unit]            number of `unit`s (BigInt for ns)
 * Other Arrow types (decimal, lists, structs, dictionaries...) are refused with an error
 * that names the column and the type.
 */

/** Time units as Arrow names them, with their length in milliseconds. */
export const UNITS = { s: 1000, ms: 1, us: 1e-3, ns: 1e-6 };

function unitOf(unit) {
  if (!(unit in UNITS)) {
    throw new TypeError(`unknown time unit ${JSON.stringify(unit)}; expected s, ms, us or ns`);
  }
  return unit;
}

/**
 * Arrow data types. Each is a frozen object `{ id, ...params }`; compare with
 * `typeName(a) === typeName(b)` or `sameType(a, b)`.
 */
export const Type = Object.freeze({
  null: Object.freeze({ id: 'null' }),
  bool: Object.freeze({ id: 'bool' }),
  int8: Object.freeze({ id: 'int8' }),
  int16: Object.freeze({ id: 'int16' }),
  int32: Object.freeze({ id: 'int32' }),
  int64: Object.freeze({ id: 'int64' }),
  uint8: Object.freeze({ id: 'uint8' }),
  uint16: Object.freeze({ id: 'uint16' }),
  uint32: Object.freeze({ id: 'uint32' }),
  uint64: Object.freeze({ id: 'uint64' }),
  float32: Object.freeze({ id: 'float32' }),
  float64: Object.freeze({ id: 'float64' }),
  utf8: Object.freeze({ id: 'utf8' }),
  largeUtf8: Object.freeze({ id: 'large_utf8' }),
  binary: Object.freeze({ id: 'binary' }),
  largeBinary: Object.freeze({ id: 'large_binary' }),
  date32: Object.freeze({ id: 'date32' }),
  date64: Object.freeze({ id: 'date64' }),
  /** A point in time counted in `unit` (s, ms, us, ns) from the epoch; `timezone` or null. */
  timestamp: (unit, timezone = null) =>
    Object.freeze({ id: 'timestamp', unit: unitOf(unit), timezone: timezone ?? null }),
  /** Time of day in s or ms (32 bits). */
  time32: (unit) => {
    if (unit !== 's' && unit !== 'ms') throw new TypeError(`time32 takes s or ms, not ${unit}`);
    return Object.freeze({ id: 'time32', unit });
  },
  /** Time of day in us or ns (64 bits). */
  time64: (unit) => {
    if (unit !== 'us' && unit !== 'ns') throw new TypeError(`time64 takes us or ns, not ${unit}`);
    return Object.freeze({ id: 'time64', unit });
  },
  /** A length of time in `unit`. */
  duration: (unit) => Object.freeze({ id: 'duration', unit: unitOf(unit) }),
});

const INTS = {
  int8: [8, true], int16: [16, true], int32: [32, true], int64: [64, true],
  uint8: [8, false], uint16: [16, false], uint32: [32, false], uint64: [64, false],
};

/** The type's name as Arrow prints it, e.g. `int64`, `timestamp[us, UTC]`. */
export function typeName(type) {
  switch (type.id) {
    case 'timestamp':
      return type.timezone ? `timestamp[${type.unit}, ${type.timezone}]` : `timestamp[${type.unit}]`;
    case 'time32':
    case 'time64':
    case 'duration':
      return `${type.id}[${type.unit}]`;
    default:
      return type.id;
  }
}

export function sameType(a, b) {
  return typeName(a) === typeName(b);
}

/**
 * A type from its name, as `typeName` prints it: `int64`, `utf8`, `timestamp[us, UTC]`,
 * `time32[ms]`... Also accepts a type object, returned unchanged.
 */
export function parseType(name) {
  if (typeof name === 'object' && name !== null && typeof name.id === 'string') {
    // A type object: checked (and frozen) by way of its name.
    return parseType(typeName(name));
  }
  const text = String(name).trim();
  const m = /^(timestamp|time32|time64|duration)\[\s*(\w+)\s*(?:,\s*(.+?)\s*)?\]$/.exec(text);
  if (m) {
    if (m[1] === 'timestamp') return Type.timestamp(m[2], m[3] ?? null);
    if (m[3] !== undefined) throw new TypeError(`${m[1]} takes a unit only: ${text}`);
    return Type[m[1]](m[2]);
  }
  for (const t of Object.values(Type)) {
    if (typeof t === 'object' && t.id === text) return t;
  }
  throw new TypeError(
    `unknown Arrow type ${JSON.stringify(text)}; known: null, bool, int8..int64, uint8..uint64, ` +
      'float32, float64, utf8, large_utf8, binary, large_binary, date32, date64, ' +
      'timestamp[unit, tz], time32[unit], time64[unit], duration[unit]',
  );
}

/** Bit width and signedness of an integer type id, or undefined. */
export function intInfo(id) {
  return INTS[id];
}

/** Whether values of `type` are BigInt (64-bit integers and nanosecond-scale times). */
export function isBigIntType(type) {
  switch (type.id) {
    case 'int64':
    case 'uint64':
      return true;
    case 'timestamp':
    case 'time64':
    case 'duration':
      return type.unit === 'ns';
    default:
      return false;
  }
}

/** One column of a schema. `metadata` is a Map of string to string. */
export class Field {
  constructor(name, type, nullable = true, metadata = new Map()) {
    if (typeof name !== 'string') throw new TypeError('a field name is a string');
    this.name = name;
    try {
      this.type = parseType(type);
    } catch (e) {
      throw new TypeError(`column ${name}: ${e.message}`);
    }
    this.nullable = Boolean(nullable);
    this.metadata = metadata instanceof Map ? metadata : new Map(Object.entries(metadata ?? {}));
    Object.freeze(this);
  }

  toString() {
    return `${this.name}: ${typeName(this.type)}${this.nullable ? '' : ' not null'}`;
  }
}

/**
 * The columns of a batch or stream. Built from fields, or from shorthand:
 * `new Schema([['id', 'int64', false], ['email', 'utf8']])` or
 * `new Schema({ id: 'int64', email: 'utf8' })` (all nullable).
 */
export class Schema {
  constructor(fields, metadata = new Map()) {
    const list = Array.isArray(fields)
      ? fields
      : Object.entries(fields).map(([name, type]) => [name, type]);
    this.fields = Object.freeze(
      list.map((f) => (f instanceof Field ? f : Array.isArray(f) ? new Field(...f) : new Field(f.name, f.type, f.nullable ?? true, f.metadata))),
    );
    this.metadata = metadata instanceof Map ? metadata : new Map(Object.entries(metadata ?? {}));
    const seen = new Set();
    for (const f of this.fields) {
      if (seen.has(f.name)) throw new TypeError(`schema has two columns named ${f.name}`);
      seen.add(f.name);
    }
    Object.freeze(this);
  }

  get names() {
    return this.fields.map((f) => f.name);
  }

  /** Index of column `name`, or -1. */
  indexOf(name) {
    return this.fields.findIndex((f) => f.name === name);
  }

  field(name) {
    return this.fields.find((f) => f.name === name);
  }

  /** A schema with `field` added at the end, or replacing the column of the same name. */
  with(field) {
    const f = field instanceof Field ? field : new Field(...field);
    const i = this.indexOf(f.name);
    const fields = [...this.fields];
    if (i < 0) fields.push(f);
    else fields[i] = f;
    return new Schema(fields, this.metadata);
  }

  /** A schema of only the named columns, in the order given. */
  select(names) {
    return new Schema(
      names.map((n) => {
        const f = this.field(n);
        if (!f) throw new TypeError(`no column ${n}; the schema has ${this.names.join(', ')}`);
        return f;
      }),
      this.metadata,
    );
  }

  /** Same column names, types and nullability (metadata is not compared). */
  equals(other) {
    return this.differences(other).length === 0;
  }

  /** What differs from `other`, one readable line per column; empty when they agree. */
  differences(other) {
    const out = [];
    const theirs = new Map(other.fields.map((f) => [f.name, f]));
    const ours = new Map(this.fields.map((f) => [f.name, f]));
    for (const f of this.fields) {
      const o = theirs.get(f.name);
      if (!o) out.push(`column ${f.name} (${typeName(f.type)}) is missing`);
      else if (!sameType(f.type, o.type) || f.nullable !== o.nullable) out.push(`column ${f.name} is ${o} instead of ${f}`);
    }
    for (const f of other.fields) {
      if (!ours.has(f.name)) out.push(`column ${f.name} (${typeName(f.type)}) is extra`);
    }
    if (out.length === 0 && this.names.join('\0') !== other.names.join('\0')) {
      out.push(`columns are in another order: ${other.names.join(', ')} instead of ${this.names.join(', ')}`);
    }
    return out;
  }

  toString() {
    return this.fields.map(String).join(', ');
  }
}

const RANGES = {
  int8: [-128, 127], int16: [-32768, 32767], int32: [-2147483648, 2147483647],
  uint8: [0, 255], uint16: [0, 65535], uint32: [0, 4294967295],
};
const I64 = [-(2n ** 63n), 2n ** 63n - 1n];
const U64 = [0n, 2n ** 64n - 1n];

function describe(value) {
  if (value === undefined) return 'undefined';
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? value.slice(0, 40) + '…' : value);
  if (value instanceof Uint8Array) return `Uint8Array(${value.length})`;
  if (typeof value === 'object') return Object.prototype.toString.call(value);
  return String(value);
}

/**
 * Check one column's values against its field and bring them to the canonical form
 * (BigInt for 64-bit integers, null for undefined). Throws a TypeError naming the column,
 * the row and the value.
 */
export function normaliseColumn(field, values) {
  const { type } = field;
  const n = values.length;
  const out = new Array(n);
  const bad = (row, v, expected) => {
    throw new TypeError(
      `column ${field.name} (${typeName(type)}), row ${row}: ${describe(v)} is not ${expected}`,
    );
  };
  const nullable = field.nullable || type.id === 'null';
  // One loop per kind of value, with the null check inline: this runs for every value a
  // plugin builds, in an interpreter.
  const each = (check) => {
    for (let i = 0; i < n; i++) {
      const v = values[i];
      if (v === null || v === undefined) {
        if (!nullable) {
          throw new TypeError(`column ${field.name} (${typeName(type)}) is not nullable, but row ${i} is null`);
        }
        out[i] = null;
      } else out[i] = check(v, i);
    }
    return out;
  };
  switch (type.id) {
    case 'null':
      return each((v, i) => bad(i, v, 'null (a null column holds only nulls)'));
    case 'bool':
      return each((v, i) => (typeof v === 'boolean' ? v : bad(i, v, 'a boolean')));
    case 'utf8':
    case 'large_utf8':
      return each((v, i) => (typeof v === 'string' ? v : bad(i, v, 'a string')));
    case 'float32':
    case 'float64':
      return each((v, i) => (typeof v === 'number' ? v : bad(i, v, 'a number')));
    case 'binary':
    case 'large_binary':
      return each((v, i) => {
        if (v instanceof Uint8Array) return v;
        if (!ArrayBuffer.isView(v)) bad(i, v, 'a Uint8Array');
        return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
      });
    case 'int8': case 'int16': case 'int32': case 'uint8': case 'uint16': case 'uint32': {
      const [lo, hi] = RANGES[type.id];
      return each((v, i) => {
        const x = typeof v === 'bigint' ? Number(v) : v;
        return Number.isInteger(x) && x >= lo && x <= hi ? x : bad(i, v, `an integer in ${lo}..${hi}`);
      });
    }
  }
  if (isBigIntType(type)) {
    const [lo, hi] = type.id === 'uint64' ? U64 : I64;
    const what = `a ${type.id === 'uint64' ? 'u' : ''}int64 (BigInt or safe integer)`;
    return each((v, i) => {
      const x = typeof v === 'number' && Number.isSafeInteger(v) ? BigInt(v) : v;
      return typeof x === 'bigint' && x >= lo && x <= hi ? x : bad(i, v, what);
    });
  }
  // Dates and times held as numbers.
  const limit = type.id === 'date32' || type.id === 'time32' ? 2147483647 : Number.MAX_SAFE_INTEGER;
  return each((v, i) => {
    const x = typeof v === 'bigint' && v >= -BigInt(limit) && v <= BigInt(limit) ? Number(v) : v;
    return Number.isInteger(x) && Math.abs(x) <= limit ? x : bad(i, v, 'an integer number');
  });
}

/**
 * A column as it arrived over IPC, decoded on first use: a batch that passes a column on
 * untouched sends its bytes back as they came, without decoding or encoding a value.
 * `raw` is `{ nullCount, buffers }` in the IPC layout of the column's type.
 */
export class LazyColumn {
  #decode;
  #values = null;

  constructor(length, decode, raw) {
    this.length = length;
    this.#decode = decode;
    this.raw = raw;
  }

  /** The values, decoded once (batches made by `select` or `withColumn` share a column). */
  decode() {
    this.#values ??= this.#decode();
    return this.#values;
  }
}

/**
 * A record batch: a schema and one array of values per column, all of `numRows` length.
 * Batches are immutable (do not change the arrays in place); `withColumn`, `select`,
 * `filter`, `take` and `slice` return new ones. Columns that arrived over IPC are decoded
 * when first read.
 */
export class Batch {
  #columns;

  /**
   * @param {Schema} schema
   * @param {Array<Array>} columns one array per field, in schema order
   * @param {{trusted?: boolean, numRows?: number}} [options] `trusted` skips the value checks
   *   (the IPC reader uses it, with LazyColumns; plugin code should not); `numRows` is the
   *   row count of a batch without columns
   */
  constructor(schema, columns, options = {}) {
    if (!(schema instanceof Schema)) schema = new Schema(schema);
    if (!Array.isArray(columns) || columns.length !== schema.fields.length) {
      throw new TypeError(
        `a batch of ${schema.fields.length} columns (${schema.names.join(', ')}) needs as many arrays, got ${Array.isArray(columns) ? columns.length : typeof columns}`,
      );
    }
    const numRows = columns.length ? columns[0].length : options.numRows ?? 0;
    columns.forEach((c, i) => {
      if (!Array.isArray(c) && !(options.trusted && c instanceof LazyColumn)) {
        throw new TypeError(`column ${schema.fields[i].name} is not an array`);
      }
      if (c.length !== numRows) {
        throw new TypeError(`column ${schema.fields[i].name} has ${c.length} values, column ${schema.fields[0].name} has ${numRows}`);
      }
    });
    this.schema = schema;
    this.#columns = options.trusted ? [...columns] : columns.map((c, i) => normaliseColumn(schema.fields[i], c));
    this.numRows = numRows;
    Object.freeze(this);
  }

  /** A batch from an object of columns, `{ name: [values...] }`, in schema order. */
  static fromColumns(schema, columns) {
    if (!(schema instanceof Schema)) schema = new Schema(schema);
    return new Batch(
      schema,
      schema.fields.map((f) => {
        if (!(f.name in columns)) throw new TypeError(`no values for column ${f.name}`);
        return columns[f.name];
      }),
    );
  }

  /** A batch from row objects `{ name: value }`; a missing key is null. */
  static fromRows(schema, rows) {
    if (!(schema instanceof Schema)) schema = new Schema(schema);
    const columns = schema.fields.map(() => new Array(rows.length));
    rows.forEach((row, r) => {
      schema.fields.forEach((f, c) => {
        columns[c][r] = row[f.name] ?? null;
      });
    });
    return new Batch(schema, columns);
  }

  /** An empty batch of `schema`. */
  static empty(schema) {
    if (!(schema instanceof Schema)) schema = new Schema(schema);
    return new Batch(schema, schema.fields.map(() => []));
  }

  get numColumns() {
    return this.#columns.length;
  }

  /** Every column's values, in schema order. */
  get columns() {
    return this.#columns.map((_, i) => this.column(i));
  }

  /** The values of column `name` (or of the column at index `name`). */
  column(name) {
    const i = typeof name === 'number' ? name : this.schema.indexOf(name);
    if (i < 0 || i >= this.#columns.length) {
      throw new TypeError(`no column ${name}; the batch has ${this.schema.names.join(', ')}`);
    }
    const c = this.#columns[i];
    if (c instanceof LazyColumn) {
      this.#columns[i] = c.decode();
      return this.#columns[i];
    }
    return c;
  }

  /** The IPC bytes of column `i` when it was never decoded (for the IPC writer), else null. */
  rawColumn(i) {
    const c = this.#columns[i];
    return c instanceof LazyColumn ? c.raw : null;
  }

  /** Row `i` as an object `{ name: value }`. */
  row(i) {
    const out = {};
    const { fields } = this.schema;
    for (let c = 0; c < fields.length; c++) out[fields[c].name] = this.column(c)[i];
    return out;
  }

  /** Every row as an object, in order. */
  *rows() {
    const columns = this.columns;
    const names = this.schema.names;
    for (let i = 0; i < this.numRows; i++) {
      const out = {};
      for (let c = 0; c < names.length; c++) out[names[c]] = columns[c][i];
      yield out;
    }
  }

  [Symbol.iterator]() {
    return this.rows();
  }

  /** Every row as an object, in an array. */
  toRows() {
    return Array.from(this.rows());
  }

  /**
   * This batch with column `field` (a Field or `[name, type, nullable]`) added at the end, or
   * replacing the column of that name, holding `values` (an array, or a function of
   * (row object, index) computed for every row).
   */
  withColumn(field, values) {
    const f = field instanceof Field ? field : new Field(...field);
    const vals = typeof values === 'function' ? Array.from(this.rows(), (row, i) => values(row, i)) : values;
    const checked = normaliseColumn(f, vals);
    if (checked.length !== this.numRows) {
      throw new TypeError(`column ${f.name} has ${checked.length} values, the batch has ${this.numRows} rows`);
    }
    const columns = [...this.#columns];
    const i = this.schema.indexOf(f.name);
    if (i < 0) columns.push(checked);
    else columns[i] = checked;
    return new Batch(this.schema.with(f), columns, { trusted: true, numRows: this.numRows });
  }

  /** Only the named columns, in the order given. */
  select(names) {
    const schema = this.schema.select(names);
    return new Batch(schema, names.map((n) => this.#columns[this.schema.indexOf(n)]), { trusted: true, numRows: this.numRows });
  }

  /** Rows `start` (inclusive) to `end` (exclusive). */
  slice(start, end = this.numRows) {
    return new Batch(this.schema, this.columns.map((c) => c.slice(start, end)), {
      trusted: true,
      numRows: Math.max(0, Math.min(end, this.numRows) - start),
    });
  }

  /** The rows for which `keep(row object, index)` is true. */
  filter(keep) {
    const rows = [];
    let i = 0;
    for (const row of this.rows()) {
      if (keep(row, i)) rows.push(i);
      i++;
    }
    return this.take(rows);
  }

  /** The rows at the given indices, in that order. */
  take(indices) {
    if (indices.length === this.numRows && indices.every((r, i) => r === i)) return this;
    return new Batch(this.schema, this.columns.map((c) => indices.map((i) => c[i])), {
      trusted: true,
      numRows: indices.length,
    });
  }
}

/** A `Date` from a timestamp value of `unit` (s, ms, us, ns), a date32 or date64 value. */
export function toDate(value, type) {
  if (value === null || value === undefined) return null;
  switch (type.id) {
    case 'date32':
      return new Date(Number(value) * 86400000);
    case 'date64':
      return new Date(Number(value));
    case 'timestamp':
      return new Date(type.unit === 'ns' ? Number(BigInt(value) / 1000000n) : Number(value) * UNITS[type.unit]);
    default:
      throw new TypeError(`toDate takes a date or timestamp type, not ${typeName(type)}`);
  }
}

/** A timestamp value of `unit` from a `Date` (or milliseconds). */
export function fromDate(date, unit) {
  const ms = date instanceof Date ? date.getTime() : Number(date);
  if (unit === 'ns') return BigInt(ms) * 1000000n;
  return Math.round(ms / UNITS[unitOf(unit)]);
}

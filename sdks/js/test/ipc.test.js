// The Arrow IPC codec: golden streams written by arrow-rs read exactly, what the writer
// produces reads back exactly and is laid out as the format requires, and what the SDK
// cannot represent is refused with an error naming the column and the type.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Batch, Field, Schema, Type } from '../lib/arrow.js';
import { decodeBatch, decodeSchema, encodeBatch, encodeSchema, readStream, writeStream } from '../lib/ipc.js';
import { differences, expected, fixtureNames, readFixture } from './golden.js';

test('there are golden fixtures', () => {
  assert.deepEqual(fixtureNames(), ['all_types', 'file_source_types', 'schema_only', 'zero_rows']);
});

for (const name of fixtureNames()) {
  test(`golden ${name}: the stream arrow-rs wrote reads exactly`, () => {
    assert.deepEqual(differences(readStream(readFixture(name)), expected(name)), []);
  });

  test(`golden ${name}: written by JavaScript, it reads back exactly`, () => {
    const want = expected(name);
    const bytes = writeStream(want.schema, want.batches);
    assert.deepEqual(differences(readStream(bytes), want), []);
  });
}

for (const name of fixtureNames()) {
  test(`golden ${name}: passed on untouched, or with a column added, it reads back exactly`, () => {
    const { schema, batches } = readStream(readFixture(name));
    const want = expected(name);
    assert.deepEqual(differences(readStream(writeStream(schema, batches)), want), []);
    if (batches.length && schema.fields.length) {
      // One column decoded and one added; the others go back as the bytes they came as.
      const first = schema.fields[0].name;
      const more = batches.map((b) => b.withColumn(['copy', b.schema.field(first).type], b.column(first)));
      const back = readStream(writeStream(more[0].schema, more));
      back.batches.forEach((b, i) => assert.deepEqual(b.select(schema.names).columns, want.batches[i].columns));
      back.batches.forEach((b, i) => assert.deepEqual(b.column('copy'), want.batches[i].column(first)));
    }
  });
}

test('golden values have the documented JavaScript types', () => {
  const { batches } = readStream(readFixture('all_types'));
  const row = batches[0].row(0);
  assert.equal(typeof row.id, 'bigint');
  assert.equal(row.nothing, null);
  assert.equal(row.i8, -128);
  assert.equal(row.i64, -(2n ** 63n));
  assert.equal(row.u64, 0n);
  assert.equal(row.text, '');
  assert.ok(row.bytes instanceof Uint8Array);
  assert.equal(row.day, -719162);
  assert.equal(typeof row.ts_us, 'number');
  assert.equal(typeof row.ts_ns, 'bigint');
  assert.equal(typeof row.t64_us, 'number');
  assert.equal(typeof row.dur_ns, 'bigint');
  assert.equal(batches[0].column('f32')[3], Infinity);
  assert.equal(batches[0].column('f32')[4], null);
  assert.ok(Number.isNaN(batches[0].column('f64')[2]));
  assert.ok(Object.is(batches[1].column('f64')[0], -0));
  const field = batches[0].schema.field('ts_ns');
  assert.deepEqual(field.type, Type.timestamp('ns', '+02:00'));
  assert.equal(field.toString(), 'ts_ns: timestamp[ns, +02:00]');
  assert.equal(batches[0].schema.field('id').nullable, false);
  assert.equal(batches[0].schema.metadata.get('origin'), 'arrow-rs golden');
});

/** [offset, metadata length, body length] of every message in a stream. */
function messages(bytes) {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = [];
  let at = 0;
  for (;;) {
    assert.equal(dv.getInt32(at, true), -1, `continuation marker at ${at}`);
    const len = dv.getInt32(at + 4, true);
    if (len === 0) {
      assert.equal(at + 8, bytes.length, 'end of stream is the last 8 bytes');
      return out;
    }
    // Message.bodyLength: field 3 of the root table, read from its vtable.
    const root = at + 8 + dv.getUint32(at + 8, true);
    const vtable = root - dv.getInt32(root, true);
    const body = Number(dv.getBigInt64(root + dv.getUint16(vtable + 4 + 3 * 2, true), true));
    out.push([at, len, body]);
    at += 8 + len + body;
  }
}

test('messages, metadata and bodies are 8-byte aligned and padded', () => {
  const { schema, batches } = expected('all_types');
  const bytes = writeStream(schema, batches);
  for (const [at, len, body] of messages(bytes)) {
    assert.equal(at % 8, 0);
    assert.equal(len % 8, 0);
    assert.equal(body % 8, 0);
  }
});

test('a batch without nulls, and an empty one, round trip', () => {
  const schema = new Schema([['n', 'int32', false], ['s', 'utf8', false], ['b', 'bool', false]]);
  const batch = Batch.fromRows(schema, [{ n: 1, s: 'a', b: true }, { n: 2, s: '', b: false }]);
  const back = decodeBatch(encodeBatch(batch));
  assert.deepEqual(back.toRows(), [{ n: 1, s: 'a', b: true }, { n: 2, s: '', b: false }]);
  const empty = decodeBatch(encodeBatch(Batch.empty(schema)));
  assert.equal(empty.numRows, 0);
  assert.ok(empty.schema.equals(schema));
  assert.equal(decodeBatch(encodeSchema(schema)).numRows, 0, 'a schema-only stream is an empty batch');
  assert.ok(decodeSchema(encodeSchema(schema)).equals(schema));
});

test('many rows, bitmaps of several bytes, long strings', () => {
  const schema = new Schema([['i', 'int64'], ['s', 'large_utf8'], ['f', 'float32']]);
  const rows = Array.from({ length: 1000 }, (_, i) => ({
    i: i % 11 === 0 ? null : BigInt(i) * 7919n,
    s: i % 13 === 0 ? null : 'x'.repeat(i % 50) + i,
    f: i % 17 === 0 ? null : i / 4,
  }));
  const back = decodeBatch(encodeBatch(Batch.fromRows(schema, rows)));
  assert.deepEqual(back.toRows(), rows);
});

test('an unsupported type is refused, naming the column and the type', () => {
  // Streams arrow-rs wrote with a column of a type the SDK does not map.
  assert.throws(() => readStream(readFixture('unsupported_list')), /column tags has Arrow type List, which this SDK does not support/);
  assert.throws(() => readStream(readFixture('unsupported_decimal')), /column price has Arrow type Decimal/);
  assert.throws(() => readStream(readFixture('unsupported_dictionary')), /column country is dictionary-encoded/);
});

test('values that do not fit their column are refused with column, row and value', () => {
  const schema = new Schema([['n', 'int8']]);
  assert.throws(() => Batch.fromRows(schema, [{ n: 1 }, { n: 300 }]), /column n \(int8\), row 1: 300 is not an integer in -128\.\.127/);
  assert.throws(() => new Batch(new Schema([['s', 'utf8', false]]), [[null]]), /column s \(utf8\) is not nullable, but row 0 is null/);
  assert.throws(() => Batch.fromRows(new Schema([['x', 'int64']]), [{ x: 2 ** 60 }]), /column x \(int64\), row 0/);
  assert.throws(() => new Field('price', 'decimal128'), /column price: unknown Arrow type "decimal128"/);
});

test('a malformed stream is an error, not garbage', () => {
  assert.throws(() => readStream(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8])), /truncated|IPC/);
  assert.throws(() => readStream(new Uint8Array(0)), /no schema/);
  const good = encodeBatch(Batch.fromRows(new Schema([['a', 'int32']]), [{ a: 1 }]));
  assert.throws(() => readStream(good.subarray(0, good.length - 20)), /truncated|short|outside/);
});

test('a stream refuses a batch of another schema', () => {
  const a = new Schema([['a', 'int32']]);
  const b = Batch.fromRows(new Schema([['b', 'int32']]), [{ b: 1 }]);
  assert.throws(() => writeStream(a, [b]), /column a \(int32\) is missing/);
});

// The plugin kinds as the component's bindings call them: IPC and JSON in, IPC and JSON
// out, and every failure as a value of the contract's error variant.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Batch, Field, Schema, Type } from '../lib/arrow.js';
import { AccessDenied, DataError, Fatal, InvalidConfig, Transient, toPluginError } from '../lib/errors.js';
import { decodeBatch, decodeSchema, encodeBatch, encodeSchema } from '../lib/ipc.js';
import { defineSink, defineSource, defineTransform, parseConfig, reject, toJson } from '../lib/plugin.js';

const people = new Schema([['id', 'int64', false], ['name', 'utf8']]);
const batch = Batch.fromRows(people, [{ id: 1n, name: ' ada ' }, { id: 2, name: null }, { id: 3, name: 'x' }]);

/** The error variant the bindings would send for what `fn` throws. */
function variantOf(fn) {
  try {
    fn();
  } catch (e) {
    assert.ok(Object.prototype.hasOwnProperty.call(e, 'payload'), `thrown without a payload: ${e}`);
    return e.payload;
  }
  assert.fail('nothing was thrown');
}

const upper = defineTransform({
  spec: { type: 'object', properties: { column: { type: 'string' } } },
  check(config) {
    if (typeof config.column !== 'string') throw new InvalidConfig('`column` is required: the text column to upper-case');
  },
  open(config, input, state) {
    const out = input.with(new Field('len', Type.int32));
    let seen = state?.seen ?? 0;
    return {
      outputSchema: () => out,
      process(b) {
        seen += b.numRows;
        const rejects = [];
        const values = b.column(config.column).map((v, i) => {
          if (v === 'x') rejects.push(reject(i, 'x is not a name'));
          return v === null ? null : v.trim().toUpperCase();
        });
        return { batch: b.withColumn([config.column, 'utf8'], values).withColumn(out.field('len'), (r) => r[config.column]?.length ?? null), rejects };
      },
      checkpoint: () => ({ seen }),
    };
  },
});

test('a transform: config, schema, batches, rejects and state cross as the contract says', () => {
  assert.deepEqual(JSON.parse(upper.spec()).properties.column, { type: 'string' });
  assert.equal(upper.check('{"column":"name"}'), undefined);
  const t = upper.Transformer.open('{"column":"name"}', encodeSchema(people), undefined);
  assert.ok(decodeSchema(t.outputSchema()).equals(people.with(new Field('len', Type.int32))));
  const out = t.process(encodeBatch(batch));
  assert.equal(out.batches.length, 1);
  assert.deepEqual(decodeBatch(out.batches[0]).toRows(), [
    { id: 1n, name: 'ADA', len: 3 },
    { id: 2n, name: null, len: null },
    { id: 3n, name: 'X', len: 1 },
  ]);
  assert.deepEqual(out.rejects, [{ row: 2, original: undefined, location: undefined, reason: 'x is not a name' }]);
  assert.deepEqual(t.flush(), { batches: [], rejects: [] });
  const state = t.checkpoint();
  assert.equal(new TextDecoder().decode(state), '{"seen":3}');
  const resumed = upper.Transformer.open('{"column":"name"}', encodeSchema(people), state);
  assert.equal(new TextDecoder().decode(resumed.checkpoint()), '{"seen":3}');
});

test('config errors are invalid-config, with the message the plugin gave', () => {
  assert.deepEqual(variantOf(() => upper.check('{}')), { tag: 'invalid-config', val: '`column` is required: the text column to upper-case' });
  assert.equal(variantOf(() => upper.check('{"column":')).tag, 'invalid-config');
  assert.match(variantOf(() => upper.check('{"column":')).val, /not valid JSON/);
});

test('any other exception is fatal with its message; each error class has its case', () => {
  const boom = defineTransform({
    open: () => ({
      process() {
        throw new RangeError('index out of range');
      },
    }),
  });
  const t = boom.Transformer.open('{}', encodeSchema(people));
  assert.deepEqual(variantOf(() => t.process(encodeBatch(batch))), { tag: 'fatal', val: 'RangeError: index out of range' });
  assert.deepEqual(toPluginError('a string').payload, { tag: 'fatal', val: 'a string' });
  assert.deepEqual(new AccessDenied('no grant for secret api_key').payload, { tag: 'access-denied', val: 'no grant for secret api_key' });
  assert.deepEqual(new DataError('row 3: bad date').payload, { tag: 'data', val: 'row 3: bad date' });
  assert.deepEqual(new Fatal('stop').payload, { tag: 'fatal', val: 'stop' });
  assert.deepEqual(new Transient('throttled', 1500).payload, { tag: 'transient', val: { message: 'throttled', retryAfterMs: 1500n } });
  assert.deepEqual(new Transient('reset').payload, { tag: 'transient', val: { message: 'reset', retryAfterMs: undefined } });
  // A variant value thrown as it is (e.g. by an import) keeps its case.
  assert.deepEqual(toPluginError({ tag: 'access-denied', val: 'nope' }).payload, { tag: 'access-denied', val: 'nope' });
});

test('a batch outside the declared output schema is a fatal error naming the difference', () => {
  const liar = defineTransform({
    open: (_, input) => ({ outputSchema: () => input, process: (b) => b.withColumn(['extra', 'bool'], b.column('id').map(() => true)) }),
  });
  const t = liar.Transformer.open('{}', encodeSchema(people));
  const v = variantOf(() => t.process(encodeBatch(batch)));
  assert.equal(v.tag, 'fatal');
  assert.match(v.val, /column extra \(bool\) is extra/);
});

test('async plugin functions work and their failures map the same way', async () => {
  const slow = defineTransform({
    open: async () => ({
      async process(b) {
        if (b.numRows === 0) throw new Transient('later', 10);
        return b;
      },
    }),
  });
  const t = await slow.Transformer.open('{}', encodeSchema(people));
  const out = await t.process(encodeBatch(batch));
  assert.equal(out.batches.length, 1);
  await assert.rejects(t.process(encodeBatch(Batch.empty(people))), (e) => e.payload.tag === 'transient');
});

test('a source: streams, splits, chunks with JSON positions, resume and rejects', () => {
  const numbers = new Schema([['n', 'int64', false]]);
  const source = defineSource({
    discover: () => [{ name: 'numbers', schema: numbers, primaryKey: ['n'], cursorField: 'n' }],
    splits: (config) => [{ id: 'low', descriptor: { from: 0, to: config.limit } }],
    open(config, stream, split, position) {
      let next = position?.next ?? split.descriptor.from;
      return {
        next(maxRows) {
          if (next >= split.descriptor.to) return null;
          const end = Math.min(next + maxRows, split.descriptor.to);
          const rows = [];
          for (let i = next; i < end; i++) rows.push({ n: i });
          next = end;
          return { batch: Batch.fromRows(numbers, rows), position: { next }, rejects: [{ original: 'n=oops', location: 'numbers:1', reason: 'not a number' }] };
        },
      };
    },
  });
  const [info] = source.discover('{"limit":5}');
  assert.equal(info.name, 'numbers');
  assert.ok(decodeSchema(info.schema).equals(numbers));
  assert.deepEqual(info.primaryKey, ['n']);
  assert.equal(info.cursorField, 'n');
  assert.deepEqual(info.syncModes, ['full-refresh', 'incremental']);
  const [split] = source.splits('{"limit":5}', 'numbers');
  assert.equal(split.id, 'low');
  const reader = source.Reader.open('{"limit":5}', 'numbers', split, undefined);
  const chunk = reader.next(3);
  assert.deepEqual(decodeBatch(chunk.batch).column('n'), [0n, 1n, 2n]);
  assert.equal(new TextDecoder().decode(chunk.position), '{"next":3}');
  assert.deepEqual(chunk.rejects[0], { row: undefined, original: 'n=oops', location: 'numbers:1', reason: 'not a number' });
  const resumed = source.Reader.open('{"limit":5}', 'numbers', split, chunk.position);
  assert.deepEqual(decodeBatch(resumed.next(10).batch).column('n'), [3n, 4n]);
  assert.equal(resumed.next(10), undefined);
  assert.equal(variantOf(() => source.replay('{}', 'numbers', ['x'])).tag, 'fatal');
});

test('a sink: stream info, write mode, epochs as numbers, tokens as JSON', () => {
  const calls = [];
  const sink = defineSink({
    open(config, stream, mode) {
      calls.push(['open', stream.name, stream.schema.names, mode]);
      return {
        write: (b) => calls.push(['write', b.numRows]),
        prepare: (epoch) => ({ staged: `part-${epoch}` }),
        commit: (epoch, token) => [`${token.staged}.jsonl`],
        abort: (epoch) => calls.push(['abort', epoch]),
      };
    },
  });
  const w = sink.Writer.open('{}', { name: 'people', schema: encodeSchema(people), primaryKey: ['id'], cursorField: undefined, syncModes: ['incremental'] }, { tag: 'upsert', val: ['id'] });
  w.write(encodeBatch(batch));
  const token = w.prepare(7n);
  assert.deepEqual(w.commit(7n, token), ['part-7.jsonl']);
  w.abort(8n);
  assert.deepEqual(calls, [
    ['open', 'people', ['id', 'name'], { kind: 'upsert', keys: ['id'] }],
    ['write', 3],
    ['abort', 8],
  ]);
});

test('JSON helpers: configs, and BigInt written as exact numbers', () => {
  assert.deepEqual(parseConfig(''), {});
  assert.throws(() => parseConfig('nope'), InvalidConfig);
  assert.equal(toJson({ id: 2n ** 63n - 1n, n: 1, s: 'a"b' }), '{"id":9223372036854775807,"n":1,"s":"a\\"b"}');
});

test('batches: rows, columns, building and selecting', () => {
  assert.equal(batch.numRows, 3);
  assert.deepEqual([...batch].map((r) => r.id), [1n, 2n, 3n]);
  assert.deepEqual(batch.select(['name']).toRows(), [{ name: ' ada ' }, { name: null }, { name: 'x' }]);
  assert.deepEqual(batch.filter((r) => r.name !== null).column('id'), [1n, 3n]);
  assert.deepEqual(batch.slice(1).column('id'), [2n, 3n]);
  const fromColumns = Batch.fromColumns({ a: 'float64', b: 'bool' }, { a: [1.5, null], b: [true, false] });
  assert.equal(fromColumns.schema.toString(), 'a: float64, b: bool');
  assert.throws(() => batch.column('nope'), /no column nope; the batch has id, name/);
});

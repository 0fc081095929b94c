/**
 * The three plugin kinds of the contract, for JavaScript: `defineSource`, `defineTransform`
 * and `defineSink` take plain objects of functions over `Batch`es and parsed configs, and
 * return what the component must export (`export const transform = defineTransform({...})`).
 * This module owns the crossing: config JSON parsed (a syntax error is `invalid-config`),
 * Arrow IPC decoded and encoded, positions/tokens/state carried as JSON, and every exception
 * turned into the contract's error variant (anything that is not a `PluginError` becomes
 * `fatal` with its message).
 */

import { Batch, Schema } from './arrow.js';
import { InvalidConfig, Fatal, toPluginError } from './errors.js';
import { decodeBatch, decodeSchema, encodeBatch, encodeSchema } from './ipc.js';

const ENCODER = new TextEncoder();
const DECODER = new TextDecoder();

/** Parse a plugin config; invalid JSON is `InvalidConfig`. An empty string is `{}`. */
export function parseConfig(json) {
  if (json === undefined || json === null || json.trim() === '') return {};
  try {
    return JSON.parse(json);
  } catch (e) {
    throw new InvalidConfig(`the config is not valid JSON: ${e.message}`);
  }
}

/** JSON text of `value`, with BigInt written as an exact JSON number. */
export function toJson(value) {
  const marks = [];
  const text = JSON.stringify(value, (_, v) => {
    if (typeof v !== 'bigint') return v;
    marks.push(v.toString());
    return `\u0000bigint${marks.length - 1}\u0000`;
  });
  return marks.length ? text.replace(/"\\u0000bigint(\d+)\\u0000"/g, (_, i) => marks[Number(i)]) : text;
}

/** A value carried as opaque bytes (position, split descriptor, token, state) as JSON. */
function packJson(value, what) {
  if (value === undefined) return new Uint8Array(0);
  if (ArrayBuffer.isView(value)) {
    throw new TypeError(`a ${what} is a JSON value in the JavaScript SDK (got a Uint8Array); encode bytes as a string`);
  }
  return ENCODER.encode(toJson(value));
}

function unpackJson(bytes, what) {
  if (bytes === undefined || bytes === null || bytes.length === 0) return undefined;
  const text = DECODER.decode(bytes);
  try {
    return JSON.parse(text);
  } catch {
    throw new Fatal(`the ${what} handed back by the host is not the JSON this plugin wrote: ${text.slice(0, 80)}`);
  }
}

function specText(spec) {
  if (spec === undefined) return '{"type":"object"}';
  if (typeof spec === 'function') return specText(spec());
  return typeof spec === 'string' ? spec : JSON.stringify(spec);
}

/** Run `fn`, turning what it throws (now or in its promise) into a `PluginError`. */
function guard(fn) {
  let result;
  try {
    result = fn();
  } catch (e) {
    throw toPluginError(e);
  }
  if (result !== null && typeof result === 'object' && typeof result.then === 'function') {
    return result.then(
      (v) => v,
      (e) => {
        throw toPluginError(e);
      },
    );
  }
  return result;
}

/** Then `next(value)`, for values that may be promises. */
function then(value, next) {
  return value !== null && typeof value === 'object' && typeof value.then === 'function' ? value.then(next) : next(value);
}

/** A row the plugin rejects: routed by the pipeline's `on_error` (fail, skip, dlq). */
export function reject(row, reason) {
  return { row, reason: String(reason) };
}

function toReject(r, i) {
  if (r === null || typeof r !== 'object' || r.reason === undefined) {
    throw new TypeError(`reject #${i} is not { row, reason } (use reject(row, reason))`);
  }
  const row = r.row === undefined || r.row === null ? undefined : Number(r.row);
  if (row !== undefined && (!Number.isInteger(row) || row < 0 || row > 0xffffffff)) {
    throw new TypeError(`reject #${i}: row ${r.row} is not a row index`);
  }
  return {
    row,
    original: r.original === undefined || r.original === null ? undefined : String(r.original),
    location: r.location === undefined || r.location === null ? undefined : String(r.location),
    reason: String(r.reason),
  };
}

/**
 * What a transform returns from `process`/`flush`: nothing, a Batch, an array of Batches,
 * or `{ batches, rejects }` (`batch` for one). Each batch must be in the output schema.
 */
function encodeOutput(result, schema) {
  let batches;
  let rejects = [];
  if (result === undefined || result === null) batches = [];
  else if (result instanceof Batch) batches = [result];
  else if (Array.isArray(result)) batches = result;
  else {
    batches = result.batches ?? (result.batch ? [result.batch] : []);
    if (batches instanceof Batch) batches = [batches];
    rejects = result.rejects ?? [];
  }
  return {
    batches: batches.map((b, i) => {
      if (!(b instanceof Batch)) throw new TypeError(`output batch #${i} is not a Batch`);
      const diff = schema.differences(b.schema);
      if (diff.length) {
        throw new Fatal(`output batch #${i} is not in the declared output schema: ${diff.join('; ')}`);
      }
      return encodeBatch(b);
    }),
    rejects: rejects.map(toReject),
  };
}

/**
 * A transform. `impl`:
 *   spec            JSON Schema of the config (object or string), optional
 *   check(config)   validate the parsed config; throw InvalidConfig. Optional
 *   open(config, inputSchema, state) -> transformer, where `state` is what `checkpoint`
 *                   returned at the last committed epoch (undefined on a first run) and
 *                   the transformer has:
 *     outputSchema()   the Schema of every batch it emits; the input's by default
 *     process(batch)   -> Batch | Batch[] | { batches, rejects } | undefined
 *     flush()          the same, for anything held back; optional
 *     checkpoint()     a JSON value to keep with the epoch; optional
 * Export the result as `transform`.
 */
export function defineTransform(impl) {
  if (typeof impl?.open !== 'function') throw new TypeError('defineTransform needs an open(config, inputSchema, state) function');
  class Transformer {
    static open(config, inputSchema, state) {
      return guard(() => {
        const cfg = parseConfig(config);
        const schema = decodeSchema(inputSchema);
        return then(impl.open(cfg, schema, unpackJson(state, 'transform state')), (inner) => {
          if (inner === null || typeof inner !== 'object' || typeof inner.process !== 'function') {
            throw new TypeError('open must return an object with a process(batch) method');
          }
          const t = new Transformer();
          t.inner = inner;
          t.input = schema;
          t.output = null;
          return t;
        });
      });
    }

    schema() {
      if (!this.output) {
        const s = typeof this.inner.outputSchema === 'function' ? this.inner.outputSchema() : this.input;
        this.output = s instanceof Schema ? s : new Schema(s);
      }
      return this.output;
    }

    outputSchema() {
      return guard(() => encodeSchema(this.schema()));
    }

    process(bytes) {
      return guard(() => {
        const out = this.schema();
        return then(this.inner.process(decodeBatch(bytes)), (r) => encodeOutput(r, out));
      });
    }

    flush() {
      return guard(() => {
        const out = this.schema();
        if (typeof this.inner.flush !== 'function') return encodeOutput(undefined, out);
        return then(this.inner.flush(), (r) => encodeOutput(r, out));
      });
    }

    checkpoint() {
      return guard(() => {
        if (typeof this.inner.checkpoint !== 'function') return new Uint8Array(0);
        return then(this.inner.checkpoint(), (s) => packJson(s, 'transform state'));
      });
    }
  }
  return {
    spec: () => guard(() => specText(impl.spec)),
    check: (config) => guard(() => then(impl.check?.(parseConfig(config)), () => undefined)),
    Transformer,
  };
}

const SYNC_MODES = ['full-refresh', 'incremental'];

function streamInfo(s, i) {
  if (!s || typeof s.name !== 'string') throw new TypeError(`stream #${i} from discover has no name`);
  const schema = s.schema instanceof Schema ? s.schema : new Schema(s.schema);
  const modes = s.syncModes ?? SYNC_MODES;
  for (const m of modes) {
    if (!SYNC_MODES.includes(m)) throw new TypeError(`stream ${s.name}: sync mode ${m} is not one of ${SYNC_MODES.join(', ')}`);
  }
  return {
    name: s.name,
    schema: encodeSchema(schema),
    primaryKey: s.primaryKey ?? [],
    cursorField: s.cursorField ?? undefined,
    syncModes: modes,
  };
}

/**
 * A source. `impl`:
 *   spec, check(config)           as for transforms
 *   discover(config)              -> [{ name, schema, primaryKey?, cursorField?, syncModes? }]
 *   splits(config, stream)        -> [{ id, descriptor? }]; one split named after the stream
 *                                    by default. A descriptor is any JSON value.
 *   open(config, stream, split, position) -> reader, where `position` is what an earlier
 *                                    `next` returned and the host made durable (undefined
 *                                    at first), and the reader has:
 *     next(maxRows)   -> { batch, position, rejects? }, or null when the split is done;
 *                        `position` (any JSON value) is where reading resumes after batch
 *     ack(position)   the position is durable downstream; optional
 *   replay(config, stream, records) -> { batch, rejects }: parse records rejected earlier
 *                                    again; optional
 * Export the result as `source`.
 */
export function defineSource(impl) {
  for (const f of ['discover', 'open']) {
    if (typeof impl?.[f] !== 'function') throw new TypeError(`defineSource needs a ${f} function`);
  }
  class Reader {
    static open(config, stream, split, position) {
      return guard(() => {
        const s = { id: split.id, descriptor: unpackJson(split.descriptor, 'split descriptor') };
        const pos = unpackJson(position, 'position');
        return then(impl.open(parseConfig(config), stream, s, pos), (inner) => {
          if (inner === null || typeof inner !== 'object' || typeof inner.next !== 'function') {
            throw new TypeError('open must return an object with a next(maxRows) method');
          }
          const r = new Reader();
          r.inner = inner;
          return r;
        });
      });
    }

    next(maxRows) {
      return guard(() =>
        then(this.inner.next(Math.max(1, Number(maxRows))), (chunk) => {
          if (chunk === null || chunk === undefined) return undefined;
          if (!(chunk.batch instanceof Batch)) throw new TypeError('next must return { batch, position, rejects } with a Batch, or null');
          return {
            batch: encodeBatch(chunk.batch),
            position: packJson(chunk.position ?? null, 'position'),
            rejects: (chunk.rejects ?? []).map(toReject),
          };
        }),
      );
    }

    ack(position) {
      // `ack` cannot fail in the contract: an error here is logged by the host as a trap,
      // so keep it to releasing upstream resources.
      if (typeof this.inner.ack === 'function') this.inner.ack(unpackJson(position, 'position'));
    }
  }
  return {
    spec: () => guard(() => specText(impl.spec)),
    check: (config) => guard(() => then(impl.check?.(parseConfig(config)), () => undefined)),
    discover: (config) => guard(() => then(impl.discover(parseConfig(config)), (streams) => streams.map(streamInfo))),
    splits: (config, stream) =>
      guard(() => {
        if (typeof impl.splits !== 'function') return [{ id: stream, descriptor: new Uint8Array(0) }];
        return then(impl.splits(parseConfig(config), stream), (splits) =>
          splits.map((s, i) => {
            if (!s || typeof s.id !== 'string') throw new TypeError(`split #${i} has no string id`);
            return { id: s.id, descriptor: packJson(s.descriptor, 'split descriptor') };
          }),
        );
      }),
    replay: (config, stream, records) =>
      guard(() => {
        if (typeof impl.replay !== 'function') {
          throw new Fatal(`this source cannot parse records of stream \`${stream}\` from the dead-letter queue again`);
        }
        return then(impl.replay(parseConfig(config), stream, records), (r) => ({
          batch: encodeBatch(r.batch),
          rejects: (r.rejects ?? []).map(toReject),
        }));
      }),
    Reader,
  };
}

function writeMode(mode) {
  return mode?.tag === 'upsert' ? { kind: 'upsert', keys: mode.val } : { kind: mode?.tag ?? 'append', keys: [] };
}

/**
 * A sink. `impl`:
 *   spec, check(config)        as for transforms
 *   open(config, stream, mode) -> writer, where `stream` is { name, schema, primaryKey,
 *                              cursorField, syncModes } and `mode` { kind: append |
 *                              overwrite | upsert, keys }, and the writer has:
 *     write(batch)             stage rows in the open epoch; may return the rows it
 *                              refuses ([reject(row, reason)], routed by `on_error`)
 *     prepare(epoch)           make the epoch durable, unpublished; -> a token (any JSON
 *                              value) that lets commit publish it, even from a fresh writer
 *     commit(epoch, token)     publish; must be idempotent; -> names of what it published
 *     abort(epoch)             discard what was staged and not committed
 *     finish()                 optional: the stream was read to its end; the next epoch
 *                              is its last (an `overwrite` sink publishes the whole run then)
 * Epochs are numbers. Export the result as `sink`.
 */
export function defineSink(impl) {
  if (typeof impl?.open !== 'function') throw new TypeError('defineSink needs an open(config, stream, mode) function');
  class Writer {
    static open(config, stream, mode) {
      return guard(() => {
        const info = {
          name: stream.name,
          schema: decodeSchema(stream.schema),
          primaryKey: stream.primaryKey,
          cursorField: stream.cursorField ?? null,
          syncModes: stream.syncModes,
        };
        return then(impl.open(parseConfig(config), info, writeMode(mode)), (inner) => {
          for (const f of ['write', 'prepare', 'commit']) {
            if (typeof inner?.[f] !== 'function') throw new TypeError(`open must return a writer with a ${f} method`);
          }
          const w = new Writer();
          w.inner = inner;
          return w;
        });
      });
    }

    write(bytes) {
      // The writer may return the rows it refuses: an array of reject(row, reason), or
      // { rejects }; nothing means none.
      return guard(() =>
        then(this.inner.write(decodeBatch(bytes)), (result) =>
          (Array.isArray(result) ? result : (result?.rejects ?? [])).map(toReject),
        ),
      );
    }

    prepare(epoch) {
      return guard(() => then(this.inner.prepare(Number(epoch)), (token) => packJson(token ?? null, 'token')));
    }

    commit(epoch, token) {
      return guard(() =>
        then(this.inner.commit(Number(epoch), unpackJson(token, 'token') ?? null), (names) => (names ?? []).map(String)),
      );
    }

    abort(epoch) {
      return guard(() => then(this.inner.abort?.(Number(epoch)), () => undefined));
    }

    finish() {
      return guard(() => then(this.inner.finish?.(), () => undefined));
    }
  }
  return {
    spec: () => guard(() => specText(impl.spec)),
    check: (config) => guard(() => then(impl.check?.(parseConfig(config)), () => undefined)),
    Writer,
  };
}

// Golden IPC fixtures: `fixtures/NAME.arrow` is an IPC stream written by arrow-rs (the Rust
// side of the boundary) and `fixtures/NAME.json` describes the same schema and values, so
// the JavaScript codec is checked against bytes it did not write. Both are (re)written by
// the Rust test `javascript::golden_ipc_fixtures_are_what_arrow_rs_writes`.
//
// Values in the JSON: null; booleans; numbers; 64-bit integers and BigInt-valued times as
// decimal strings; float specials as "NaN", "Infinity", "-Infinity", "-0"; binary as
// { "hex": "..." }.

import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { Batch, Field, Schema, isBigIntType, parseType, typeName } from '../lib/arrow.js';

export const FIXTURES = fileURLToPath(new URL('./fixtures/', import.meta.url));

/** Names of the fixtures (NAME.json files). */
export function fixtureNames(dir = FIXTURES) {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .map((f) => f.slice(0, -5))
    .sort();
}

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

function fromHex(text) {
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(i * 2, i * 2 + 2), 16);
  return out;
}

/** A JSON value of the fixture as the JavaScript value the SDK uses for `type`. */
export function jsValue(type, v) {
  if (v === null) return null;
  if (isBigIntType(type)) return BigInt(v);
  if (type.id === 'binary' || type.id === 'large_binary') return fromHex(v.hex);
  if (typeof v === 'string' && (type.id === 'float32' || type.id === 'float64')) return v === '-0' ? -0 : Number(v);
  return v;
}

/** The fixture `name` as `{ schema, batches }` built through the SDK's public API. */
export function expected(name, dir = FIXTURES) {
  const doc = JSON.parse(readFileSync(join(dir, `${name}.json`), 'utf8'));
  const schema = new Schema(
    doc.schema.map((f) => new Field(f.name, parseType(f.type), f.nullable, f.metadata ?? {})),
    doc.metadata ?? {},
  );
  const batches = doc.batches.map((b) =>
    schema.fields.length === 0
      ? new Batch(schema, [], { numRows: b.rows })
      : Batch.fromColumns(
          schema,
          Object.fromEntries(schema.fields.map((f) => [f.name, b.columns[f.name].map((v) => jsValue(f.type, v))])),
        ),
  );
  return { schema, batches };
}

export function readFixture(name, dir = FIXTURES) {
  return new Uint8Array(readFileSync(join(dir, `${name}.arrow`)));
}

function same(a, b) {
  if (a instanceof Uint8Array && b instanceof Uint8Array) return hex(a) === hex(b);
  if (typeof a === 'number' && typeof b === 'number') return Object.is(a, b);
  return a === b;
}

function show(v) {
  if (typeof v === 'bigint') return `${v}n`;
  if (v instanceof Uint8Array) return `0x${hex(v)}`;
  if (Object.is(v, -0)) return '-0';
  return JSON.stringify(v) ?? String(v);
}

/**
 * Every difference between two decoded streams, as readable lines (empty when equal):
 * schema (names, types, nullability, metadata), row counts, and each value by type and
 * identity (-0 vs 0, NaN, BigInt vs number).
 */
export function differences(got, want) {
  const out = [];
  const meta = (m) => JSON.stringify([...m].sort());
  if (got.schema.fields.length !== want.schema.fields.length) {
    out.push(`schema has ${got.schema.fields.length} columns, expected ${want.schema.fields.length}`);
    return out;
  }
  if (meta(got.schema.metadata) !== meta(want.schema.metadata)) out.push(`schema metadata ${meta(got.schema.metadata)} != ${meta(want.schema.metadata)}`);
  got.schema.fields.forEach((f, i) => {
    const w = want.schema.fields[i];
    if (f.name !== w.name || typeName(f.type) !== typeName(w.type) || f.nullable !== w.nullable) {
      out.push(`column ${i}: ${f} != ${w}`);
    }
    if (meta(f.metadata) !== meta(w.metadata)) out.push(`column ${f.name} metadata ${meta(f.metadata)} != ${meta(w.metadata)}`);
  });
  if (got.batches.length !== want.batches.length) {
    out.push(`${got.batches.length} batches, expected ${want.batches.length}`);
    return out;
  }
  got.batches.forEach((b, bi) => {
    const w = want.batches[bi];
    if (b.numRows !== w.numRows) out.push(`batch ${bi}: ${b.numRows} rows, expected ${w.numRows}`);
    b.columns.forEach((col, ci) => {
      const name = b.schema.fields[ci].name;
      col.forEach((v, r) => {
        if (!same(v, w.columns[ci][r])) out.push(`batch ${bi}, ${name}[${r}]: ${show(v)} != ${show(w.columns[ci][r])}`);
      });
    });
  });
  return out;
}

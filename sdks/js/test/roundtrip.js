// The JavaScript half of the round trip JS → Rust → JS, driven by the Rust test
// `javascript::ipc_round_trip_js_rust_js_is_exact`:
//
//   node roundtrip.js encode OUT_DIR   writes OUT_DIR/NAME.arrow for every golden fixture,
//                                      encoded by the JavaScript writer from NAME.json, and
//                                      OUT_DIR/NAME.passthrough.arrow: the fixture's stream
//                                      read and written again without a value decoded
//   node roundtrip.js check IN_DIR     reads IN_DIR/NAME.arrow (written back by arrow-rs)
//                                      and exits 1 listing every value that differs

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { readStream, writeStream } from '../lib/ipc.js';
import { differences, expected, fixtureNames, readFixture } from './golden.js';

const [mode, dir] = process.argv.slice(2);
if (mode === 'encode') {
  mkdirSync(dir, { recursive: true });
  for (const name of fixtureNames()) {
    const { schema, batches } = expected(name);
    writeFileSync(join(dir, `${name}.arrow`), writeStream(schema, batches));
    const read = readStream(readFixture(name));
    writeFileSync(join(dir, `${name}.passthrough.arrow`), writeStream(read.schema, read.batches));
  }
} else if (mode === 'check') {
  let failed = 0;
  for (const name of fixtureNames()) {
    const diff = differences(readStream(readFixture(name, dir)), expected(name));
    for (const line of diff) console.error(`${name}: ${line}`);
    failed += diff.length;
  }
  process.exit(failed ? 1 : 0);
} else {
  console.error('usage: node roundtrip.js encode|check DIR');
  process.exit(2);
}

// {{name}}: a source plugin written in JavaScript.
//
// It reads log files of a granted directory, one split per file, where each line is a
// timestamp followed by key=value pairs:
//
//   2026-11-20T09:00:00Z level=info message="user signed in" user=ada
//
// and emits rows (file, line, time, level, message). A line that does not parse is rejected
// with its text and location. The position after each chunk is the number of lines read,
// so a later run resumes where the last committed one stopped and reads only what was
// appended. Replace `parse` (and the schema) with your own format; lib/ingest.js documents
// the SDK, lib/fs.js the file functions.

import { defineSource, Schema, Batch, InvalidConfig, fs } from './lib/ingest.js';

const SCHEMA = new Schema([
  ['file', 'utf8', false],
  ['line', 'int64', false],
  ['time', 'timestamp[us, UTC]', false],
  ['level', 'utf8', true],
  ['message', 'utf8', true],
]);

function settings(config) {
  for (const key of Object.keys(config)) {
    if (key !== 'dir' && key !== 'suffix') throw new InvalidConfig(`unknown key \`${key}\`; accepted: dir, suffix`);
  }
  if (typeof config.dir !== 'string') throw new InvalidConfig('`dir` is required: the granted directory to read');
  return { dir: config.dir, suffix: config.suffix ?? '.log' };
}

const PAIR = /\s*([A-Za-z_][\w.-]*)=("(?:[^"\\]|\\.)*"|\S*)/y;

/** One line as a row, or null when it does not parse. */
function parse(line) {
  const text = line.trimEnd();
  const space = text.indexOf(' ');
  if (space < 0) return null;
  const millis = Date.parse(text.slice(0, space));
  if (Number.isNaN(millis)) return null;
  const fields = {};
  PAIR.lastIndex = space;
  while (PAIR.lastIndex < text.length) {
    const m = PAIR.exec(text);
    if (!m) return null;
    try {
      fields[m[1]] = m[2].startsWith('"') ? JSON.parse(m[2]) : m[2];
    } catch {
      return null;
    }
  }
  return { time: millis * 1000, level: fields.level ?? null, message: fields.message ?? null };
}

/** The complete lines of a file (a last line without its newline is still being written). */
function lines(path) {
  const all = fs.readText(path).split('\n');
  all.pop();
  return all;
}

export const source = defineSource({
  spec: {
    type: 'object',
    properties: {
      dir: { type: 'string', description: 'the granted directory holding the log files' },
      suffix: { type: 'string', default: '.log' },
    },
    required: ['dir'],
    additionalProperties: false,
  },

  check(config) {
    const { dir } = settings(config);
    if (!fs.exists(dir)) throw new InvalidConfig(`directory ${dir} does not exist (or is not granted)`);
  },

  // One stream: the log lines of every file.
  discover: () => [{ name: 'logs', schema: SCHEMA }],

  // One split per file, in name order; the descriptor is the file's path.
  splits(config) {
    const { dir, suffix } = settings(config);
    return fs
      .listDir(dir)
      .filter((name) => name.endsWith(suffix))
      .map((name) => ({ id: name, descriptor: `${dir}/${name}` }));
  },

  // Read one file from `position` (lines already read), at most `maxRows` lines per chunk.
  open(config, stream, split, position) {
    const path = split.descriptor;
    const all = lines(path);
    let next = position ?? 0;
    return {
      next(maxRows) {
        if (next >= all.length) return null;
        const end = Math.min(all.length, next + maxRows);
        const rows = [];
        const rejects = [];
        for (let i = next; i < end; i++) {
          if (all[i].trim() === '') continue;
          const row = parse(all[i]);
          if (row) rows.push({ file: split.id, line: i + 1, ...row });
          else rejects.push({ original: all[i], location: `${path}:${i + 1}`, reason: 'not a timestamp followed by key=value pairs' });
        }
        next = end;
        return { batch: Batch.fromRows(SCHEMA, rows), position: next, rejects };
      },
    };
  },
});

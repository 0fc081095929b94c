/**
 * Files in the directories pipeline.toml grants the plugin (`fs = ["data", "out:rw"]`), over
 * WASI's filesystem. A path is written as in the pipeline, starting with the grant:
 * `data/orders.csv`, `out/events/part-1.jsonl`. Anything outside the grants does not exist
 * for the plugin; a write into a read-only grant fails with `AccessDenied`.
 */

import { getDirectories } from 'wasi:filesystem/preopens@0.2.12';

import { AccessDenied, Fatal } from './errors.js';

const DISPOSE = Symbol.dispose ?? Symbol.for('dispose');
const ENCODER = new TextEncoder();
const DECODER = new TextDecoder();

let grants = null;

function normalise(path) {
  const parts = [];
  for (const p of String(path).split('/')) {
    if (p === '' || p === '.') continue;
    if (p === '..') {
      if (!parts.length) throw new AccessDenied(`${path} leaves the granted directories`);
      parts.pop();
    } else parts.push(p);
  }
  return parts;
}

/** The granted directories, as `[{ path, dir }]`. */
function preopens() {
  if (!grants) grants = getDirectories().map(([dir, path]) => ({ dir, parts: normalise(path), path }));
  return grants;
}

/** The granted directories' paths, as pipeline.toml names them. */
export function granted() {
  return preopens().map((g) => g.parts.join('/'));
}

/** [directory descriptor, path inside it] for `path`, by its longest granted prefix. */
function locate(path) {
  const parts = normalise(path);
  let best = null;
  for (const g of preopens()) {
    if (g.parts.length <= parts.length && g.parts.every((p, i) => p === parts[i])) {
      if (!best || g.parts.length > best.parts.length) best = g;
    }
  }
  if (!best) {
    throw new AccessDenied(`${path} is not inside a granted directory (granted: ${granted().join(', ') || 'none'}); grant it with fs = [...] in pipeline.toml`);
  }
  const rest = parts.slice(best.parts.length).join('/');
  return [best.dir, rest === '' ? '.' : rest];
}

function fail(op, path, e) {
  const code = e !== null && typeof e === 'object' && 'payload' in e ? e.payload : e;
  if (code === 'access' || code === 'not-permitted' || code === 'read-only') {
    return new AccessDenied(`${op} ${path}: ${code}`);
  }
  const err = new Fatal(`${op} ${path}: ${typeof code === 'string' ? code : (e?.message ?? String(e))}`);
  err.code = code;
  return err;
}

function withFile(path, openFlags, flags, op, fn) {
  const [dir, rel] = locate(path);
  let file;
  try {
    file = dir.openAt({ symlinkFollow: false }, rel, openFlags, flags);
  } catch (e) {
    throw fail(op, path, e);
  }
  try {
    return fn(file);
  } catch (e) {
    throw e instanceof AccessDenied || e instanceof Fatal ? e : fail(op, path, e);
  } finally {
    file[DISPOSE]?.();
  }
}

/** The bytes of file `path`. */
export function readFile(path) {
  return withFile(path, {}, { read: true }, 'read', (file) => {
    const chunks = [];
    let offset = 0n;
    for (;;) {
      const [bytes, end] = file.read(1n << 20n, offset);
      if (bytes.length) chunks.push(bytes);
      offset += BigInt(bytes.length);
      if (end || bytes.length === 0) break;
    }
    const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
    let at = 0;
    for (const c of chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  });
}

/** The text of file `path` (UTF-8). */
export function readText(path) {
  return DECODER.decode(readFile(path));
}

/**
 * Write `data` (a string or Uint8Array) to file `path`, replacing it; with `{ sync: true }`
 * the data is on disk when this returns.
 */
export function writeFile(path, data, options = {}) {
  const bytes = typeof data === 'string' ? ENCODER.encode(data) : data;
  withFile(path, { create: true, truncate: true }, { write: true }, 'write', (file) => {
    let offset = 0;
    while (offset < bytes.length) {
      const n = Number(file.write(bytes.subarray(offset), BigInt(offset)));
      if (n <= 0) throw new Fatal(`write ${path}: no progress`);
      offset += n;
    }
    if (options.sync) file.sync();
  });
}

/** Append `data` (a string or Uint8Array) to file `path`, creating it if needed. */
export function appendFile(path, data) {
  const bytes = typeof data === 'string' ? ENCODER.encode(data) : data;
  withFile(path, { create: true }, { write: true }, 'append', (file) => {
    let offset = Number(file.stat().size);
    let done = 0;
    while (done < bytes.length) {
      const n = Number(file.write(bytes.subarray(done), BigInt(offset)));
      if (n <= 0) throw new Fatal(`append ${path}: no progress`);
      done += n;
      offset += n;
    }
  });
}

/** `{ type, size }` of `path` (type: `directory`, `regular-file`...), or null when absent. */
export function stat(path) {
  const [dir, rel] = locate(path);
  try {
    const s = rel === '.' ? dir.stat() : dir.statAt({ symlinkFollow: false }, rel);
    return { type: s.type, size: Number(s.size) };
  } catch (e) {
    const code = e?.payload ?? e;
    if (code === 'no-entry') return null;
    throw fail('stat', path, e);
  }
}

export function exists(path) {
  return stat(path) !== null;
}

/** Create directory `path` and its missing parents. */
export function mkdirs(path) {
  const parts = normalise(path);
  for (let i = 1; i <= parts.length; i++) {
    const p = parts.slice(0, i).join('/');
    const s = stat(p);
    if (s && s.type === 'directory') continue;
    if (s) throw new Fatal(`mkdir ${p}: a file is in the way`);
    const [dir, rel] = locate(p);
    try {
      dir.createDirectoryAt(rel);
    } catch (e) {
      if ((e?.payload ?? e) !== 'exist') throw fail('mkdir', p, e);
    }
  }
}

/** The names in directory `path`, sorted. */
export function listDir(path) {
  return withFile(path, { directory: true }, { read: true }, 'list', (d) => {
    const names = [];
    const entries = d.readDirectory();
    try {
      for (let e = entries.readDirectoryEntry(); e; e = entries.readDirectoryEntry()) names.push(e.name);
    } finally {
      entries[DISPOSE]?.();
    }
    return names.sort();
  });
}

/** Rename `from` to `to` (replacing `to`); both must be in the same granted directory. */
export function rename(from, to) {
  const [dirFrom, relFrom] = locate(from);
  const [dirTo, relTo] = locate(to);
  try {
    dirFrom.renameAt(relFrom, dirTo, relTo);
  } catch (e) {
    throw fail('rename', `${from} to ${to}`, e);
  }
}

/** Remove file `path`; a missing file is not an error. */
export function remove(path) {
  const [dir, rel] = locate(path);
  try {
    dir.unlinkFileAt(rel);
  } catch (e) {
    if ((e?.payload ?? e) !== 'no-entry') throw fail('remove', path, e);
  }
}

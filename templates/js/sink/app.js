// {{name}}: a sink plugin written in JavaScript.
//
// It writes each stream as JSON Lines into a granted directory, one file per epoch, with
// the host's two-phase commit: `write` collects rows, `prepare` stages them durably under
// <dir>/.staging/, and `commit` publishes the staged file by renaming it to
// <dir>/<stream>/epoch-<N>.jsonl. A rename that already happened is a repeat and changes
// nothing, so commit is idempotent, as the host requires (it commits again after a crash).
// Replace `line` (and the layout) with your own target; lib/ingest.js documents the SDK,
// lib/fs.js the file functions.

import { defineSink, InvalidConfig, Fatal, fs, toJson, log } from './lib/ingest.js';

function settings(config) {
  for (const key of Object.keys(config)) {
    if (key !== 'dir') throw new InvalidConfig(`unknown key \`${key}\`; accepted: dir`);
  }
  if (typeof config.dir !== 'string') throw new InvalidConfig('`dir` is required: the granted directory to write into (fs = ["<dir>:rw"])');
  return config;
}

/** One row as a line of JSON: BigInt as exact numbers, bytes as hex. */
function line(row) {
  for (const [key, value] of Object.entries(row)) {
    if (value instanceof Uint8Array) row[key] = Array.from(value, (b) => b.toString(16).padStart(2, '0')).join('');
  }
  return toJson(row);
}

export const sink = defineSink({
  spec: {
    type: 'object',
    properties: { dir: { type: 'string', description: 'the granted directory to write into' } },
    required: ['dir'],
    additionalProperties: false,
  },

  check(config) {
    const { dir } = settings(config);
    if (!fs.exists(dir)) throw new InvalidConfig(`directory ${dir} does not exist (or is not granted)`);
  },

  // Called once per stream.
  open(config, stream) {
    const { dir } = settings(config);
    const staging = `${dir}/.staging`;
    const target = `${dir}/${stream.name}`;
    fs.mkdirs(staging);
    fs.mkdirs(target);
    const staged = (epoch) => `${staging}/${stream.name}-${epoch}.jsonl`;
    const published = (epoch) => `${target}/epoch-${String(epoch).padStart(10, '0')}.jsonl`;
    let lines = [];

    return {
      // Rows of the open epoch: kept in memory until prepare.
      write(batch) {
        for (const row of batch.rows()) lines.push(line(row));
      },

      // Stage the epoch durably; the token lets commit publish it even after a restart.
      prepare(epoch) {
        if (lines.length === 0) return { rows: 0 };
        fs.writeFile(staged(epoch), lines.join('\n') + '\n', { sync: true });
        const token = { rows: lines.length, staged: staged(epoch), published: published(epoch) };
        lines = [];
        return token;
      },

      // Publish by rename; a repeat finds the file already published and changes nothing.
      commit(epoch, token) {
        if (!token.staged) return [];
        if (fs.exists(token.staged)) fs.rename(token.staged, token.published);
        else if (!fs.exists(token.published)) throw new Fatal(`epoch ${epoch}: neither ${token.staged} nor ${token.published} exists`);
        log('info', `published ${token.rows} rows as ${token.published}`);
        return [token.published];
      },

      // Forget what was written in a failed epoch.
      abort(epoch) {
        lines = [];
        fs.remove(staged(epoch));
      },
    };
  },
});

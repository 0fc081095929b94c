/**
 * What the host offers a plugin (the contract's `host` interface) as plain functions:
 * logging under the plugin's name, the secrets pipeline.toml granted it, progress reports,
 * and Parquet encoding done natively by the host.
 */

import * as wit from 'ingest:plugin/host@0.1.0';

import { encodeBatch, encodeSchema } from './ipc.js';
import { fromVariant } from './errors.js';

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];

function rethrow(e) {
  if (e !== null && typeof e === 'object' && Object.prototype.hasOwnProperty.call(e, 'payload')) {
    throw fromVariant(e.payload);
  }
  throw e;
}

/**
 * Write one line to the host log under this plugin's name, at `level` (trace, debug, info,
 * warn, error). Secret values are redacted by the host. `console.log` output reaches the
 * host log too, as info lines.
 */
export function log(level, ...message) {
  if (!LEVELS.includes(level)) {
    throw new TypeError(`log level ${JSON.stringify(level)} is not one of ${LEVELS.join(', ')}`);
  }
  wit.log(level, message.map(String).join(' '));
}

/** The value of the secret granted under `name`; throws `AccessDenied` without a grant. */
export function secret(name) {
  try {
    return wit.secret(String(name));
  } catch (e) {
    rethrow(e);
  }
}

/**
 * Tell the host how far this source has read `split` of `stream`: `readBytes` of
 * `totalBytes` of its own (a file's, say). The host shows what is left and the time left.
 * Report each split's size from `splits` with 0 read, then after each chunk.
 */
export function progress(stream, split, readBytes, totalBytes) {
  wit.progress(String(stream), String(split), BigInt(readBytes), BigInt(totalBytes));
}

/**
 * One Parquet file encoded by the host: `write(batch)` and `finish()` return the bytes to
 * append to the file, in order. `options`: `compression` (zstd, snappy, lz4, gzip, none;
 * default zstd), `level` (where the codec has one), `rowGroupRows` (default 1048576).
 */
export function parquetEncoder(schema, options = {}) {
  let encoder;
  try {
    encoder = wit.ParquetEncoder.open(encodeSchema(schema), {
      compression: options.compression ?? 'zstd',
      level: options.level ?? undefined,
      rowGroupRows: options.rowGroupRows ?? 1048576,
    });
  } catch (e) {
    rethrow(e);
  }
  return {
    write(batch) {
      try {
        return encoder.write(encodeBatch(batch));
      } catch (e) {
        rethrow(e);
      }
    },
    finish() {
      try {
        return encoder.finish();
      } catch (e) {
        rethrow(e);
      }
    },
  };
}

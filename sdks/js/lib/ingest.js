/**
 * The JavaScript SDK for ingestion-host plugins, in one import:
 *
 *   import { defineTransform, Batch, Schema, Field, InvalidConfig, log } from './lib/ingest.js';
 *
 * `arrow.js` (types, Schema, Batch), `ipc.js` (the Arrow IPC codec), `errors.js` (the
 * contract's error cases), `plugin.js` (defineSource/defineTransform/defineSink), `host.js`
 * (log, secret, Parquet encoding by the host) and `fs.js` (files in the granted directories).
 */

export * from './arrow.js';
export * from './ipc.js';
export * from './errors.js';
export * from './plugin.js';
export * from './host.js';
export * as fs from './fs.js';

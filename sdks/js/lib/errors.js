/**
 * The errors a plugin throws, one class per case of the contract's `error` variant. The host
 * acts on the case: `InvalidConfig` and `AccessDenied` fail the run at once (a config error
 * is exit code 2), `Transient` is retried from the last checkpoint after `retryAfterMs`,
 * `DataError` and `Fatal` stop the run with the message shown to the user. Anything else a
 * plugin throws reaches the host as `fatal` with its message.
 *
 * Each instance carries the variant value in an own `payload` property, the shape the
 * componentize-js bindings lower into a WIT `result` error.
 */

export class PluginError extends Error {
  constructor(tag, message, val = message) {
    super(message);
    this.name = new.target.name;
    Object.defineProperty(this, 'payload', { value: { tag, val }, enumerable: false });
  }
}

/** The configuration is wrong; say which key and what would be accepted. */
export class InvalidConfig extends PluginError {
  constructor(message) {
    super('invalid-config', String(message));
  }
}

/** A file, host, URL or secret the plugin needs was not granted. */
export class AccessDenied extends PluginError {
  constructor(message) {
    super('access-denied', String(message));
  }
}

/** A temporary failure worth retrying, after at least `retryAfterMs` milliseconds if known. */
export class Transient extends PluginError {
  constructor(message, retryAfterMs = undefined) {
    const ms = retryAfterMs === undefined || retryAfterMs === null ? undefined : BigInt(Math.max(0, Math.ceil(Number(retryAfterMs))));
    super('transient', String(message), { message: String(message), retryAfterMs: ms });
    this.retryAfterMs = ms === undefined ? undefined : Number(ms);
  }
}

/** Bad data that could not be turned into rejects; say where. */
export class DataError extends PluginError {
  constructor(message) {
    super('data', String(message));
  }
}

/** Anything else: the run stops and the message is shown. */
export class Fatal extends PluginError {
  constructor(message) {
    super('fatal', String(message));
  }
}

const BY_TAG = {
  'invalid-config': (v) => new InvalidConfig(v),
  'access-denied': (v) => new AccessDenied(v),
  transient: (v) => new Transient(v?.message ?? String(v), v?.retryAfterMs),
  data: (v) => new DataError(v),
  fatal: (v) => new Fatal(v),
};

/** A `PluginError` from a WIT error value `{ tag, val }` (as a host import throws it). */
export function fromVariant(variant) {
  const make = BY_TAG[variant?.tag];
  return make ? make(variant.val) : new Fatal(String(variant?.val ?? variant));
}

/**
 * What to throw across the boundary for any exception: a `PluginError` as it is (also one
 * from another realm, recognised by its payload), anything else as `Fatal` with its message.
 */
export function toPluginError(e) {
  if (e instanceof PluginError) return e;
  const payload = e !== null && typeof e === 'object' && Object.prototype.hasOwnProperty.call(e, 'payload') ? e.payload : undefined;
  if (payload && BY_TAG[payload.tag]) return fromVariant(payload);
  if (e !== null && typeof e === 'object' && BY_TAG[e.tag] && 'val' in e) return fromVariant(e);
  if (e instanceof Error || (e !== null && typeof e === 'object' && typeof e.message === 'string')) {
    const name = e.name && e.name !== 'Error' ? `${e.name}: ` : '';
    return new Fatal(`${name}${e.message}`);
  }
  return new Fatal(String(e));
}

// Tidies contact records: names get single spaces and capitalised words, e-mail addresses
// are trimmed and lower-cased, and a derived column holds each address's domain. A row whose
// address is not an address is rejected (the pipeline sends it to the dead-letter queue).
//
// Built with sdks/js/build.sh, which puts the SDK (sdks/js/lib) beside this file as ./lib/.

import { defineTransform, Field, Type, InvalidConfig, reject, typeName } from './lib/ingest.js';

const DEFAULTS = { name_column: 'full_name', email_column: 'email', domain_column: 'email_domain' };

function settings(config) {
  for (const [key, value] of Object.entries(config)) {
    if (!(key in DEFAULTS)) {
      throw new InvalidConfig(`unknown key \`${key}\`; accepted: ${Object.keys(DEFAULTS).join(', ')}`);
    }
    if (typeof value !== 'string' || value === '') {
      throw new InvalidConfig(`\`${key}\` is a column name (a non-empty string), not ${JSON.stringify(value)}`);
    }
  }
  return { ...DEFAULTS, ...config };
}

function tidyName(name) {
  return name
    .trim()
    .split(/\s+/)
    .map((word) => word.charAt(0).toUpperCase() + word.slice(1).toLowerCase())
    .join(' ');
}

const ADDRESS = /^[^\s@]+@([^\s@]+\.[^\s@]+)$/;

export const transform = defineTransform({
  spec: {
    type: 'object',
    properties: {
      name_column: { type: 'string', default: DEFAULTS.name_column },
      email_column: { type: 'string', default: DEFAULTS.email_column },
      domain_column: { type: 'string', default: DEFAULTS.domain_column },
    },
    additionalProperties: false,
  },

  check(config) {
    settings(config);
  },

  open(config, input) {
    const s = settings(config);
    for (const column of [s.name_column, s.email_column]) {
      const field = input.field(column);
      if (!field) throw new InvalidConfig(`the stream has no column \`${column}\`; it has ${input.names.join(', ')}`);
      if (field.type.id !== 'utf8') throw new InvalidConfig(`column \`${column}\` is ${typeName(field.type)}, not text`);
    }
    const output = input.with(new Field(s.domain_column, Type.utf8, true));

    return {
      outputSchema: () => output,

      process(batch) {
        const names = batch.column(s.name_column);
        const emails = batch.column(s.email_column);
        const kept = [];
        const rejects = [];
        const tidyNames = [];
        const tidyEmails = [];
        const domains = [];
        for (let row = 0; row < batch.numRows; row++) {
          const email = emails[row] === null ? null : emails[row].trim().toLowerCase();
          const match = email === null ? null : ADDRESS.exec(email);
          if (email !== null && !match) {
            rejects.push(reject(row, `${s.email_column} ${JSON.stringify(emails[row])} is not an e-mail address`));
            continue;
          }
          kept.push(row);
          tidyNames.push(names[row] === null ? null : tidyName(names[row]));
          tidyEmails.push(email);
          domains.push(match ? match[1] : null);
        }
        const out = batch
          .take(kept)
          .withColumn(output.field(s.name_column), tidyNames)
          .withColumn(output.field(s.email_column), tidyEmails)
          .withColumn(output.field(s.domain_column), domains);
        return { batch: out, rejects };
      },
    };
  },
});

// {{name}}: a transform plugin written in JavaScript.
//
// It upper-cases the text column named by `column` in its config, adds `<column>_length`
// (the number of characters), and rejects rows where the column is empty. Replace the body
// of `process` with your own logic; lib/ingest.js documents the SDK (Batch, Schema, types,
// errors, log, secret).

import { defineTransform, Field, Type, InvalidConfig, reject, typeName } from './lib/ingest.js';

function settings(config) {
  for (const key of Object.keys(config)) {
    if (key !== 'column') throw new InvalidConfig(`unknown key \`${key}\`; accepted: column`);
  }
  if (typeof config.column !== 'string' || config.column === '') {
    throw new InvalidConfig('`column` is required: the name of the text column to upper-case');
  }
  return config;
}

export const transform = defineTransform({
  // JSON Schema of the config, shown by tooling.
  spec: {
    type: 'object',
    properties: { column: { type: 'string', description: 'the text column to upper-case' } },
    required: ['column'],
    additionalProperties: false,
  },

  // Called by `host check` and before a run: validate the config, move no data.
  check(config) {
    settings(config);
  },

  // Called once per stream with its schema; returns the transformer for that stream.
  open(config, input) {
    const { column } = settings(config);
    const field = input.field(column);
    if (!field) throw new InvalidConfig(`the stream has no column \`${column}\`; it has ${input.names.join(', ')}`);
    if (field.type.id !== 'utf8') throw new InvalidConfig(`column \`${column}\` is ${typeName(field.type)}, not text`);
    const lengthField = new Field(`${column}_length`, Type.int32, true);
    const output = input.with(lengthField);

    return {
      // The schema of every batch `process` returns.
      outputSchema: () => output,

      // Called once per batch, in order. Return a Batch, or { batch, rejects }.
      process(batch) {
        const kept = [];
        const rejects = [];
        batch.column(column).forEach((value, row) => {
          if (value === null || value.trim() === '') rejects.push(reject(row, `${column} is empty`));
          else kept.push(row);
        });
        const upper = batch.take(kept).column(column).map((v) => v.trim().toUpperCase());
        const out = batch
          .take(kept)
          .withColumn(field, upper)
          .withColumn(lengthField, upper.map((v) => [...v].length));
        return { batch: out, rejects };
      },
    };
  },
});

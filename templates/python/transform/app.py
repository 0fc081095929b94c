"""{{name}}: a transform plugin.

Keeps the rows whose `column` contains the text `contains` (a filter) and adds the column
`<column>_length` with the length of that value (a derived column). A row with no value in
`column` is rejected: the host sends it to the dead-letter queue with the reason.

Change `process` to do what your transform needs; `ingest_plugin/README.md` documents the
API (Batch, Schema, Field, the errors).
"""

from ingest_plugin import Field, InvalidConfig, Transform, expect_keys, log


class Plugin(Transform):
    @classmethod
    def spec(cls):
        """The JSON Schema of the config ([transform.config] in pipeline.toml)."""
        return {
            "type": "object",
            "properties": {
                "column": {"type": "string", "description": "a text column of the input"},
                "contains": {"type": "string", "description": "keep rows whose column contains this"},
            },
            "required": ["column"],
        }

    @classmethod
    def check(cls, config):
        """Validate the config before the run moves data; InvalidConfig stops it (exit code 2)."""
        expect_keys(config, required=["column"], optional=["contains"])
        if not isinstance(config.get("column"), str):
            raise InvalidConfig('column: name a text column of the input, e.g. column = "city"')
        if not isinstance(config.get("contains", ""), str):
            raise InvalidConfig('contains: give a text, e.g. contains = "a"')

    def __init__(self, config, input_schema):
        """Called once per stream with the config (a dict) and the input's Schema."""
        super().__init__(config, input_schema)
        self.check(config)
        self.column = config["column"]
        self.contains = config.get("contains", "")
        if self.column not in input_schema:
            raise InvalidConfig(f"column = {self.column!r}: the input has {', '.join(input_schema.names)}")
        self.length = Field(f"{self.column}_length", "int64")
        log(f"keeping rows whose {self.column} contains {self.contains!r}")

    def output_schema(self):
        """The schema of every batch `process` returns."""
        return self.input_schema.append(self.length)

    def process(self, batch):
        """One batch in, zero or more batches out (a Batch, a list of them, or None)."""
        keep, lengths = [], []
        for row, value in enumerate(batch[self.column]):
            if value is None:
                self.reject(row, f"{self.column} is empty")
                keep.append(False)
                lengths.append(None)
            else:
                keep.append(self.contains in value)
                lengths.append(len(value))
        return batch.with_column(self.length, lengths).filter(keep)

"""Keeps the paid orders worth at least `min_eur` euros and adds their value in euros.

A filter plus a derived column, in plain Python over the batch's columns:
- `amount_eur` (float64) = amount × the rate of the order's currency in `rates`;
- an order whose currency has no rate, or which has no amount, is rejected (the host sends
  it to the dead-letter queue with the reason);
- the others are kept when their status is "paid" and amount_eur >= `min_eur`.
"""

from ingest_plugin import Field, InvalidConfig, Transform, log


class BigOrders(Transform):
    @classmethod
    def spec(cls):
        return {
            "type": "object",
            "properties": {
                "min_eur": {"type": "number", "description": "the smallest order kept, in euros"},
                "rates": {
                    "type": "object",
                    "additionalProperties": {"type": "number"},
                    "description": "euros per unit of each currency",
                },
            },
            "required": ["rates"],
        }

    @classmethod
    def check(cls, config):
        rates = config.get("rates")
        if not isinstance(rates, dict) or not rates:
            raise InvalidConfig('rates must be a table of euros per currency, e.g. rates = { USD = 0.92 }')
        for currency, rate in rates.items():
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate <= 0:
                raise InvalidConfig(f"rates.{currency} = {rate!r}: a rate is a positive number")
        min_eur = config.get("min_eur", 0)
        if isinstance(min_eur, bool) or not isinstance(min_eur, (int, float)):
            raise InvalidConfig(f"min_eur = {min_eur!r}: give a number of euros, e.g. min_eur = 50")

    def __init__(self, config, input_schema):
        super().__init__(config, input_schema)
        self.check(config)
        for column in ("amount", "currency", "status"):
            if column not in input_schema:
                raise InvalidConfig(f"the input has no column {column!r}; it has {', '.join(input_schema.names)}")
        self.rates = config["rates"]
        self.min_eur = config.get("min_eur", 0)
        self.schema = input_schema.append(Field("amount_eur", "float64", nullable=False))
        log(f"keeping paid orders of at least {self.min_eur} EUR")

    def output_schema(self):
        return self.schema

    def process(self, batch):
        keep, eur = [], []
        for row, (amount, currency, status) in enumerate(
            zip(batch["amount"], batch["currency"], batch["status"])
        ):
            rate = self.rates.get(currency)
            if amount is None or rate is None:
                self.reject(row, "no amount" if amount is None else f"no rate for currency {currency!r}")
                keep.append(False)
                eur.append(0.0)
                continue
            value = round(amount * rate, 2)
            keep.append(status == "paid" and value >= self.min_eur)
            eur.append(value)
        return batch.with_column(self.schema.field("amount_eur"), eur).filter(keep)

"""The errors a plugin raises, one per case of the contract's `error` variant. The host acts
on the case: `InvalidConfig` and `AccessDenied` stop the run at once (exit code 2 when found
by `host check`), `Transient` is retried from the last checkpoint, `DataError` and `Fatal`
stop the run with the message. Any other exception is reported as fatal with the last
line of its traceback (the whole traceback goes to the host log).
"""


class PluginError(Exception):
    """Base of the errors the host tells apart."""

    def __init__(self, message):
        super().__init__(message)
        self.message = str(message)


class InvalidConfig(PluginError):
    """The configuration is wrong; say which key, the value, and what is accepted."""


class AccessDenied(PluginError):
    """The plugin was denied a file, host, URL or secret it needs. Not retried."""


class Transient(PluginError):
    """A temporary failure (timeout, throttling, connection reset): the host retries from
    the last checkpoint after at least `retry_after_ms` milliseconds when given."""

    def __init__(self, message, retry_after_ms=None):
        super().__init__(message)
        if retry_after_ms is not None and (not isinstance(retry_after_ms, int) or retry_after_ms < 0):
            raise ValueError(f"retry_after_ms is a number of milliseconds >= 0, got {retry_after_ms!r}")
        self.retry_after_ms = retry_after_ms


class DataError(PluginError):
    """Bad data the plugin cannot turn into rejects; say where."""


class Fatal(PluginError):
    """Anything else that must stop the run."""


def expect_keys(config, required=(), optional=()):
    """Refuse a config with a key the plugin does not know (usually a typo) or without a
    required one, as `InvalidConfig` naming the key and listing what is accepted."""
    known = list(required) + list(optional)
    unknown = sorted(k for k in config if k not in known)
    if unknown:
        raise InvalidConfig(
            f"unknown key `{unknown[0]}`; accepted: {', '.join(known) or 'none'}"
        )
    missing = [k for k in required if k not in config]
    if missing:
        raise InvalidConfig(f"missing key `{missing[0]}`")

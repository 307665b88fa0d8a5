"""The one error tree of argbridge.

::

    ArgbridgeError
    ├── ConfigError            invalid configuration (carries every problem with its key path)
    ├── StartupError           the daemon cannot start (a listener cannot bind, state dir…)
    ├── EventError             a CloudEvent that breaks the 1.0 spec (bad attribute/extension)
    ├── JournalError           the durable journal cannot be opened or written
    │   └── JournalClosed      the journal was closed while a caller waited on it
    ├── SourceError            an upstream feed failed
    │   ├── AuthFailed         401/403/close 1008: stop the stream and alert (not retried)
    │   ├── NotFound           404: the run does not exist (not retried)
    │   └── ProtocolViolation  the upstream spoke something we cannot read (bad content type…)
    ├── SinkError              a destination failed
    │   ├── PermanentDeliveryError  the destination refused for good (dead-letter, no retry)
    │   └── SinkStopped    the sink cannot go on (fenced by another instance): stop it, alert
    ├── SignatureError         an inbound signature did not verify (never says why in detail)
    └── ClusterError           cluster mode cannot do what was asked (Kafka coordination)
        └── NotAcknowledged    the events topic did not ack an event in time (webhook 503)

``retryable`` tells drivers whether the failure is worth another attempt; messages never
contain secrets (tokens are redacted before they reach an exception).
"""

from __future__ import annotations


class ArgbridgeError(Exception):
    """Base of every error raised by argbridge."""

    retryable: bool = False


class ConfigError(ArgbridgeError):
    """Invalid configuration; ``problems`` lists ``(key_path, message)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("\n".join(f"{path}: {msg}" if path else msg for path, msg in problems))


class StartupError(ArgbridgeError):
    """The daemon cannot start: a listener cannot bind, the state dir cannot be written.

    Raised before READY=1 and before any source or sink starts; the message is one line
    naming the address or path (and the config key that sets it)."""


class EventError(ArgbridgeError, ValueError):
    """A CloudEvent that violates the CloudEvents 1.0 rules."""


class JournalError(ArgbridgeError):
    """The journal cannot be opened or written."""


class JournalClosed(JournalError):
    """The journal was closed while an operation waited on it."""


class SourceError(ArgbridgeError):
    """An upstream feed failed; ``retryable`` says whether to reconnect."""

    retryable = True


class AuthFailed(SourceError):
    """The upstream refused our credentials (401/403, WebSocket close 1008)."""

    retryable = False


class NotFound(SourceError):
    """The upstream says the run does not exist (404)."""

    retryable = False


class ProtocolViolation(SourceError):
    """The upstream answered something we cannot read (status, content type, framing)."""

    retryable = False


class SinkError(ArgbridgeError):
    """A destination failed; by default worth retrying."""

    retryable = True


class PermanentDeliveryError(SinkError):
    """The destination refused the event for good: dead-letter it, do not retry."""

    retryable = False


class SinkStopped(SinkError):
    """The sink must not deliver any more (e.g. another daemon with the same instance id
    fenced its Kafka producer): its worker stops, keeping the batch in the journal."""

    retryable = False


class SignatureError(ArgbridgeError):
    """An inbound webhook signature did not verify."""


class ClusterError(ArgbridgeError):
    """Cluster mode (coordination through Kafka) cannot do what was asked."""

    retryable = True


class NotAcknowledged(ClusterError):
    """The Kafka events topic did not acknowledge an event within the bound (it stays
    journaled and reaches Kafka later): a webhook answers 503 with Retry-After."""

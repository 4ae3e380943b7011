"""Keep credentials, SDP and tokens out of third-party DEBUG logs that would print them whole.

- botocore dumps every response body at DEBUG: a ``GetIceServerConfig`` body holds TURN passwords.
- Powertools' event handler logs every route's arguments at DEBUG: an offer's holds the whole SDP.
- botocore's signer logs each canonical request and signature at DEBUG: for a presigned WebSocket URL
  the two rebuild the URL (session token included), which opens the session until it expires.

Each filter rewrites only the records that would leak, so the rest of the DEBUG trail stays useful.
"""

from __future__ import annotations

import logging
from collections.abc import Callable


class RedactingFilter(logging.Filter):
    """Replace the message of DEBUG records that ``leaks`` flags.

    Args:
        leaks: True for a record whose text would leak.
        replacement: The message logged instead.
    """

    def __init__(self, leaks: Callable[[logging.LogRecord], bool], replacement: str) -> None:
        super().__init__()
        self._leaks = leaks
        self._replacement = replacement

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite a leaking record in place; never drop a record."""
        if record.levelno <= logging.DEBUG and self._leaks(record):
            record.msg = self._replacement
            record.args = ()
        return True


def _arguments(record: logging.LogRecord) -> tuple[object, ...]:
    args = record.args
    if isinstance(args, tuple):
        return args
    return tuple(args.values()) if isinstance(args, dict) else (args,)


def _holds_turn_password(record: logging.LogRecord) -> bool:
    for arg in _arguments(record):
        if isinstance(arg, bytes) and b"Password" in arg:
            return True
        if isinstance(arg, str) and "Password" in arg:
            return True
    return False


def _logs_route_arguments(record: logging.LogRecord) -> bool:
    return str(record.msg).startswith("Calling API Route Handler")


def _logs_signature_material(record: logging.LogRecord) -> bool:
    return str(record.msg).startswith(("CanonicalRequest", "Signature"))


_FILTERS = {
    "botocore.parsers": RedactingFilter(
        _holds_turn_password, "Response body: [redacted by the TURN broker: it holds TURN credentials]"
    ),
    "aws_lambda_powertools.event_handler.api_gateway": RedactingFilter(
        _logs_route_arguments, "Calling API Route Handler: [arguments redacted: they may hold SDP]"
    ),
    "botocore.auth": RedactingFilter(
        _logs_signature_material,
        "[redacted by the TURN broker: a canonical request or signature rebuilds a presigned URL]",
    ),
}


def install() -> None:
    """Attach the filters to the loggers that need them (idempotent)."""
    for name, log_filter in _FILTERS.items():
        target = logging.getLogger(name)
        if log_filter not in target.filters:
            target.addFilter(log_filter)

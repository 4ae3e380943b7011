"""Injected faults: a FIFO queue of rules, each answering a number of matching requests."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final, Literal, cast

from .exceptions import ApiError, FaultSpecError
from .protocol import OPERATIONS

FaultKind = Literal["throttle", "error", "not_found", "slow"]
FAULT_KINDS: Final = ("throttle", "error", "not_found", "slow")
ANY_OPERATION: Final = "*"

# Codes AWS services send with these statuses; botocore's standard retry mode retries all four.
_SERVER_ERROR_CODES: Final = {
    500: "InternalFailure",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


@dataclass
class Fault:
    """One fault rule.

    Attributes:
        operation: Operation name it applies to, or ``"*"`` for every KVS operation.
        kind: ``throttle`` (ClientLimitExceededException), ``error`` (``status`` with ``code``),
            ``not_found`` (ResourceNotFoundException) or ``slow`` (adds ``delay_ms``, then serves).
        count: Requests it still applies to; the rule is dropped when this reaches zero.
        channel_arn: Only requests for this channel match when set.
        status: HTTP status of an ``error`` fault (default 503, which botocore retries).
        code: Error code of an ``error`` fault; derived from ``status`` when omitted.
        delay_ms: Extra delay of a ``slow`` fault.
    """

    operation: str
    kind: FaultKind
    count: int = 1
    channel_arn: str | None = None
    status: int = 503
    code: str | None = None
    delay_ms: float = 0.0

    def matches(self, operation: str, channel_key: str | None) -> bool:
        """Return whether this rule applies to a request."""
        if self.operation not in (ANY_OPERATION, operation):
            return False
        return self.channel_arn is None or self.channel_arn == channel_key

    def to_error(self) -> ApiError:
        """Return the error answer of a ``throttle``, ``error`` or ``not_found`` fault."""
        if self.kind == "throttle":
            return ApiError.client_limit("Injected fault: rate limit exceeded")
        if self.kind == "not_found":
            return ApiError.not_found("Injected fault: the requested channel is not found")
        code = self.code or _SERVER_ERROR_CODES.get(self.status, "InjectedFault")
        return ApiError(code, self.status, f"Injected fault: HTTP {self.status}")

    def to_json(self) -> dict[str, Any]:
        """Return the rule as the JSON the admin endpoints accept and report."""
        return asdict(self)


def _number(spec: dict[str, Any], key: str, default: float) -> float:
    value = spec.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultSpecError(f"{key} must be a number (got {value!r})")
    return float(value)


def parse_fault(spec: object) -> Fault:
    """Validate a fault spec (a JSON object) and build the rule.

    Args:
        spec: Mapping with ``operation``, ``kind`` and optional ``count``, ``channel_arn``,
            ``status``, ``code``, ``delay_ms``.

    Returns:
        The fault rule.

    Raises:
        FaultSpecError: A field is missing, unknown or out of range.
    """
    if not isinstance(spec, dict):
        raise FaultSpecError("a fault spec must be a JSON object")
    unknown = set(spec) - {"operation", "kind", "count", "channel_arn", "status", "code", "delay_ms"}
    if unknown:
        raise FaultSpecError(f"unknown fault fields: {', '.join(sorted(unknown))}")
    operation = spec.get("operation") or ANY_OPERATION
    if operation != ANY_OPERATION and operation not in OPERATIONS:
        raise FaultSpecError(f"operation must be '*' or one of {', '.join(OPERATIONS)} (got {operation!r})")
    kind = spec.get("kind")
    if kind not in FAULT_KINDS:
        raise FaultSpecError(f"kind must be one of {', '.join(FAULT_KINDS)} (got {kind!r})")
    count = _number(spec, "count", 1)
    if count < 1 or count != int(count):
        raise FaultSpecError(f"count must be an integer >= 1 (got {spec.get('count')!r})")
    channel_arn = spec.get("channel_arn")
    if channel_arn is not None and (not isinstance(channel_arn, str) or not channel_arn):
        raise FaultSpecError(f"channel_arn must be a non-empty string or null (got {channel_arn!r})")
    status = _number(spec, "status", 503)
    if status != int(status) or not 400 <= status <= 599:
        raise FaultSpecError(f"status must be an HTTP error status in 400..599 (got {spec.get('status')!r})")
    code = spec.get("code")
    if code is not None and (not isinstance(code, str) or not code.isalnum()):
        raise FaultSpecError(f"code must be an alphanumeric error code (got {code!r})")
    delay_ms = _number(spec, "delay_ms", 0.0)
    if not 0 <= delay_ms <= 600_000:
        raise FaultSpecError(f"delay_ms must be in 0..600000 (got {delay_ms})")
    if kind == "slow" and delay_ms == 0:
        raise FaultSpecError("a slow fault needs delay_ms > 0")
    return Fault(
        operation=operation,
        kind=cast(FaultKind, kind),
        count=int(count),
        channel_arn=channel_arn,
        status=int(status),
        code=code,
        delay_ms=delay_ms,
    )

"""The emulated KVS account: channels, rate limits, faults, latency and the six operations.

This module knows nothing about HTTP: :meth:`KvsBackend.handle` takes an operation name and the raw
request body and returns the status and JSON document to send back.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import secrets
import string
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Final

from .config import EmulatorConfig
from .credentials import mint_turn_credential
from .exceptions import ApiError
from .faults import Fault
from .limits import RateLimiter
from .protocol import (
    CREATE_SIGNALING_CHANNEL,
    DELETE_SIGNALING_CHANNEL,
    DESCRIBE_SIGNALING_CHANNEL,
    GET_ICE_SERVER_CONFIG,
    GET_SIGNALING_CHANNEL_ENDPOINT,
    LIST_SIGNALING_CHANNELS,
)
from .stats import Outcome, StatsBook

# Patterns and ranges from botocore's kinesisvideo and kinesis-video-signaling models.
CHANNEL_NAME_PATTERN: Final = r"[a-zA-Z0-9_.-]{1,256}"
CHANNEL_ARN_PATTERN: Final = r"arn:[a-z\d-]+:kinesisvideo:[a-z0-9-]+:[0-9]+:[a-z]+/[a-zA-Z0-9_.-]+/[0-9]+"
# GetIceServerConfig's model is stricter than kinesisvideo's: the partition must be "aws".
ICE_CHANNEL_ARN_PATTERN: Final = r"arn:aws:kinesisvideo:[a-z0-9-]+:[0-9]+:[a-z]+/[a-zA-Z0-9_.-]+/[0-9]+"
CLIENT_ID_PATTERN: Final = r"[a-zA-Z0-9_.-]{1,256}"
_VERSION_PATTERN: Final = r"[a-zA-Z0-9]{1,64}"
_NEXT_PAGE_PATTERN: Final = r"[a-zA-Z0-9+/=]{0,1024}"
_MAX_RESULTS: Final = 10_000
_MAX_TAGS: Final = 50
_PROTOCOLS: Final = ("WSS", "HTTPS", "WEBRTC")
_ROLES: Final = ("MASTER", "VIEWER")
_VERSION_ALPHABET: Final = string.ascii_letters + string.digits
_NOT_FOUND_MESSAGE: Final = "The requested channel is not found or not active."

# Operations that name one channel, so they are counted (and maybe limited) per channel too.
_CHANNEL_OPERATIONS: Final = frozenset(
    {DESCRIBE_SIGNALING_CHANNEL, DELETE_SIGNALING_CHANNEL, GET_SIGNALING_CHANNEL_ENDPOINT, GET_ICE_SERVER_CONFIG}
)

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class ApiResponse:
    """What to send back: HTTP status, JSON body, the error code of an error, and extra headers."""

    status: int
    body: JsonObject
    error_code: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_error(cls, error: ApiError) -> ApiResponse:
        """Build the rest-json error answer for ``error``."""
        return cls(error.status, {"message": error.message}, error.code)


@dataclass
class Channel:
    """One signaling channel as DescribeSignalingChannel reports it."""

    name: str
    arn: str
    creation_ms: int
    version: str
    message_ttl_seconds: int
    channel_type: str = "SINGLE_MASTER"
    tags: dict[str, str] = field(default_factory=dict)

    def info(self) -> JsonObject:
        """Return the ``ChannelInfo`` structure (timestamps in epoch seconds, as rest-json sends them)."""
        return {
            "ChannelName": self.name,
            "ChannelARN": self.arn,
            "ChannelType": self.channel_type,
            "ChannelStatus": "ACTIVE",
            "CreationTime": self.creation_ms / 1000,
            "SingleMasterConfiguration": {"MessageTtlSeconds": self.message_ttl_seconds},
            "Version": self.version,
        }


def _validation_error(key: str, value: object, constraint: str) -> ApiError:
    shown = str(value)
    if len(shown) > 64:
        shown = shown[:64] + "..."
    return ApiError.invalid_argument(
        f"1 validation error detected: Value '{shown}' at '{key}' failed to satisfy constraint: {constraint}"
    )


def _string(params: JsonObject, key: str, *, pattern: str | None = None) -> str | None:
    value = params.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _validation_error(key, value, "Member must be a string")
    if pattern is not None and re.fullmatch(pattern, value) is None:
        raise _validation_error(key, value, f"Member must satisfy regular expression pattern: {pattern}")
    return value


def _required_string(params: JsonObject, key: str, pattern: str | None = None) -> str:
    value = _string(params, key, pattern=pattern)
    if value is None:
        raise _validation_error(key, "null", "Member must not be null")
    return value


def _integer(params: JsonObject, key: str, low: int, high: int) -> int | None:
    value = params.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _validation_error(key, value, "Member must be an integer")
    if not low <= value <= high:
        raise _validation_error(key, value, f"Member must have value between {low} and {high}")
    return value


def _object(params: JsonObject, key: str) -> JsonObject | None:
    value = params.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _validation_error(key, value, "Member must be an object")
    return value


def _enum(params: JsonObject, key: str, allowed: Sequence[str]) -> str | None:
    value = _string(params, key)
    if value is not None and value not in allowed:
        raise _validation_error(key, value, f"Member must satisfy enum value set: [{', '.join(allowed)}]")
    return value


def _protocols(config: JsonObject) -> list[str]:
    value = config.get("Protocols")
    if value is None:
        return ["WSS", "HTTPS"]
    if not isinstance(value, list) or not 1 <= len(value) <= 5:
        raise _validation_error("Protocols", value, "Member must be a list of 1 to 5 protocols")
    for item in value:
        if item not in _PROTOCOLS:
            raise _validation_error("Protocols", item, f"Member must satisfy enum value set: [{', '.join(_PROTOCOLS)}]")
    return list(dict.fromkeys(value))


def _tags(params: JsonObject) -> dict[str, str]:
    value = params.get("Tags")
    if value is None:
        return {}
    if not isinstance(value, list):
        raise _validation_error("Tags", value, "Member must be a list")
    if len(value) > _MAX_TAGS:
        raise ApiError(
            "TagsPerResourceExceededLimitException",
            HTTPStatus.BAD_REQUEST,
            f"A channel can have at most {_MAX_TAGS} tags.",
        )
    tags: dict[str, str] = {}
    for tag in value:
        if not isinstance(tag, dict):
            raise _validation_error("Tags", tag, "Member must be a list of {Key, Value} objects")
        key = _required_string(tag, "Key")
        tag_value = _required_string(tag, "Value")
        if not 1 <= len(key) <= 128 or len(tag_value) > 256:
            raise _validation_error("Tags", tag, "Tag keys must be 1-128 and values 0-256 characters")
        tags[key] = tag_value
    return tags


def parse_request_body(body: bytes) -> JsonObject:
    """Parse a rest-json request body; an empty body is an empty object.

    Raises:
        ApiError: InvalidArgumentException when the body is not a JSON object.
    """
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ApiError.invalid_argument("The request body is not valid JSON.") from exc
    if not isinstance(value, dict):
        raise ApiError.invalid_argument("The request body must be a JSON object.")
    return value


def _encode_token(name: str) -> str:
    return base64.b64encode(name.encode()).decode("ascii")


def _decode_token(token: str) -> str:
    try:
        name = base64.b64decode(token, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise _validation_error("NextToken", token, "Member must be a token from a previous call") from exc
    if not re.fullmatch(CHANNEL_NAME_PATTERN, name):
        raise _validation_error("NextToken", token, "Member must be a token from a previous call")
    return name


class KvsBackend:
    """Thread-safe state and behaviour of one emulated account.

    Every request is handled in this order: it is stamped with its arrival time and counted; an
    injected fault may answer it; the rate limiter may throttle it (judged at arrival time); then
    the configured latency (plus any ``slow`` fault delay) is slept outside the lock; then the
    operation runs. Faulted and throttled requests sleep the latency too, as a real network would.
    """

    def __init__(
        self,
        config: EmulatorConfig,
        *,
        clock: Callable[[], float],
        monotonic: Callable[[], float],
        sleep: Callable[[float], None],
    ) -> None:
        self.config = config
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._lock = threading.Lock()
        self._channels: dict[str, Channel] = {}
        self._arn_by_name: dict[str, str] = {}
        self._last_creation_ms = 0
        self._faults: list[Fault] = []
        self._latency_ms = config.latency_ms
        self._stats = StatsBook(config.window_seconds, config.max_recorded_calls)
        self._limiters: dict[tuple[str, str | None], RateLimiter] = {}
        self._channel_limits = {
            GET_ICE_SERVER_CONFIG: config.ice_tps_per_channel,
            DESCRIBE_SIGNALING_CHANNEL: config.describe_tps_per_channel,
        }
        self._account_limits = {
            DESCRIBE_SIGNALING_CHANNEL: config.describe_tps_per_account,
            GET_SIGNALING_CHANNEL_ENDPOINT: config.endpoint_tps_per_account,
            CREATE_SIGNALING_CHANNEL: config.create_tps_per_account,
            LIST_SIGNALING_CHANNELS: config.list_tps_per_account,
        }
        self._operations: dict[str, Callable[[JsonObject], JsonObject]] = {
            CREATE_SIGNALING_CHANNEL: self._create_signaling_channel,
            DESCRIBE_SIGNALING_CHANNEL: self._describe_signaling_channel,
            LIST_SIGNALING_CHANNELS: self._list_signaling_channels,
            DELETE_SIGNALING_CHANNEL: self._delete_signaling_channel,
            GET_SIGNALING_CHANNEL_ENDPOINT: self._get_signaling_channel_endpoint,
            GET_ICE_SERVER_CONFIG: self._get_ice_server_config,
        }
        self.base_url = f"http://{config.host}:{config.port}"

    # ----------------------------------------------------------------- administration

    def create_channel(
        self, name: str, *, message_ttl_seconds: int | None = None, tags: dict[str, str] | None = None
    ) -> str:
        """Create a channel and return its ARN.

        Raises:
            ApiError: The name is invalid (InvalidArgumentException), taken (ResourceInUseException)
                or the account is full (AccountChannelLimitExceededException).
        """
        if not re.fullmatch(CHANNEL_NAME_PATTERN, name):
            raise _validation_error("ChannelName", name, f"Member must match {CHANNEL_NAME_PATTERN}")
        with self._lock:
            if name in self._arn_by_name:
                raise ApiError("ResourceInUseException", HTTPStatus.BAD_REQUEST, f"The channel {name} already exists.")
            if len(self._channels) >= self.config.channel_quota:
                raise ApiError(
                    "AccountChannelLimitExceededException",
                    HTTPStatus.BAD_REQUEST,
                    f"The account already has {self.config.channel_quota} signaling channels.",
                )
            # Strictly increasing creation times keep a re-created channel's ARN distinct.
            creation_ms = max(int(self._clock() * 1000), self._last_creation_ms + 1)
            self._last_creation_ms = creation_ms
            arn = (
                f"arn:aws:kinesisvideo:{self.config.region}:{self.config.account_id}:channel/{name}/{creation_ms:013d}"
            )
            self._channels[arn] = Channel(
                name=name,
                arn=arn,
                creation_ms=creation_ms,
                version="".join(secrets.choice(_VERSION_ALPHABET) for _ in range(20)),
                message_ttl_seconds=message_ttl_seconds or self.config.message_ttl_seconds,
                tags=dict(tags or {}),
            )
            self._arn_by_name[name] = arn
            return arn

    def channel_arns(self) -> list[str]:
        """Return the ARNs of all channels, oldest first."""
        with self._lock:
            return list(self._channels)

    def add_fault(self, fault: Fault) -> None:
        """Queue a fault rule behind those already queued."""
        with self._lock:
            self._faults.append(fault)

    @property
    def latency_ms(self) -> float:
        """Delay added to every KVS request, in milliseconds."""
        with self._lock:
            return self._latency_ms

    def set_latency(self, latency_ms: float) -> None:
        """Change the delay added to every KVS request."""
        if not math.isfinite(latency_ms) or latency_ms < 0:
            raise ValueError(f"latency must be a finite number >= 0 (got {latency_ms})")
        with self._lock:
            self._latency_ms = float(latency_ms)

    def reset(self) -> None:
        """Forget counters, arrival times, rate windows and faults, and restore the configured latency.

        Channels are kept.
        """
        with self._lock:
            self._stats = StatsBook(self.config.window_seconds, self.config.max_recorded_calls)
            self._limiters.clear()
            self._faults.clear()
            self._latency_ms = self.config.latency_ms

    def stats(self) -> JsonObject:
        """Return every counter, the pending faults and the current settings as JSON."""
        with self._lock:
            return {
                "window_seconds": self.config.window_seconds,
                "latency_ms": self._latency_ms,
                "channel_count": len(self._channels),
                "faults": [fault.to_json() for fault in self._faults],
                **self._stats.counters_json(),
            }

    def calls(self) -> JsonObject:
        """Return the recorded arrival times (``time.monotonic`` seconds) per operation and channel."""
        with self._lock:
            return {"clock": "monotonic", "now": self._monotonic(), **self._stats.arrivals_json()}

    # ----------------------------------------------------------------- request handling

    def handle(self, operation: str, body: bytes) -> ApiResponse:
        """Answer one request for ``operation`` (a name from ``protocol.OPERATIONS``)."""
        parse_error: ApiError | None = None
        try:
            params = parse_request_body(body)
        except ApiError as exc:
            params, parse_error = {}, exc
        with self._lock:
            # Stamped under the lock so arrival times reach the windows in order.
            now = self._monotonic()
            channel_key = self._channel_key(operation, params)
            self._stats.arrive(operation, channel_key, now)
            delay_ms = self._latency_ms
            if parse_error is not None:
                self._stats.count(operation, channel_key, "rejected")
                early_error: ApiError | None = parse_error
            else:
                early_error, extra_delay_ms = self._screen(operation, channel_key, now)
                delay_ms += extra_delay_ms
        if delay_ms > 0:
            self._sleep(delay_ms / 1000)
        if early_error is not None:
            return ApiResponse.from_error(early_error)
        try:
            return ApiResponse(HTTPStatus.OK, self._operations[operation](params))
        except ApiError as exc:
            self._count(operation, channel_key, "errors")
            return ApiResponse.from_error(exc)

    def _count(self, operation: str, channel_key: str | None, outcome: Outcome) -> None:
        with self._lock:
            self._stats.count(operation, channel_key, outcome)

    def _channel_key(self, operation: str, params: JsonObject) -> str | None:
        """Return the ARN a request is about, or the identifier as given when it names no channel."""
        if operation not in _CHANNEL_OPERATIONS:
            return None
        # Only well-formed identifiers get their own counters, so garbage cannot grow the tables.
        arn = params.get("ChannelARN")
        if isinstance(arn, str) and re.fullmatch(CHANNEL_ARN_PATTERN, arn):
            return arn
        name = params.get("ChannelName")
        if operation == DESCRIBE_SIGNALING_CHANNEL and isinstance(name, str):
            if name in self._arn_by_name:
                return self._arn_by_name[name]
            return name if re.fullmatch(CHANNEL_NAME_PATTERN, name) else None
        return None

    def _screen(self, operation: str, channel_key: str | None, now: float) -> tuple[ApiError | None, float]:
        """Apply faults and rate limits (lock held); return the early error and extra delay."""
        fault = self._take_fault(operation, channel_key)
        extra_delay_ms = 0.0
        if fault is not None:
            if fault.kind != "slow":
                self._stats.count(operation, channel_key, "faulted")
                return fault.to_error(), 0.0
            self._stats.count(operation, channel_key, "slowed")
            extra_delay_ms = fault.delay_ms
        refusal = self._admit(operation, channel_key, now)
        if refusal is not None:
            self._stats.count(operation, channel_key, "throttled")
            return ApiError.client_limit(refusal), extra_delay_ms
        self._stats.count(operation, channel_key, "served")
        return None, extra_delay_ms

    def _take_fault(self, operation: str, channel_key: str | None) -> Fault | None:
        for index, fault in enumerate(self._faults):
            if fault.matches(operation, channel_key):
                fault.count -= 1
                if fault.count == 0:
                    del self._faults[index]
                return fault
        return None

    def _limiter(self, operation: str, channel_key: str | None, limit: int) -> RateLimiter:
        limiter = self._limiters.get((operation, channel_key))
        if limiter is None:
            limiter = RateLimiter(limit, self.config.window_seconds)
            self._limiters[(operation, channel_key)] = limiter
        return limiter

    def _admit(self, operation: str, channel_key: str | None, now: float) -> str | None:
        """Admit a call against every limit that applies; return why it is refused, if it is."""
        checks: list[tuple[RateLimiter, str]] = []
        account_limit = self._account_limits.get(operation, 0)
        if account_limit:
            checks.append((self._limiter(operation, None, account_limit), "the account"))
        channel_limit = self._channel_limits.get(operation, 0)
        if channel_limit and channel_key is not None:
            checks.append((self._limiter(operation, channel_key, channel_limit), f"channel {channel_key}"))
        for limiter, scope in checks:
            if not limiter.has_room(now):
                return (
                    f"Rate exceeded: {operation} is limited to {limiter.limit} calls per "
                    f"{self.config.window_seconds:g} s for {scope}."
                )
        for limiter, _ in checks:
            limiter.record(now)
        return None

    def _find(self, *, arn: str | None = None, name: str | None = None) -> Channel:
        """Return the channel named by ARN and/or name (lock held)."""
        if arn is not None:
            channel = self._channels.get(arn)
            if channel is not None and name is not None and channel.name != name:
                channel = None
        else:
            channel = self._channels.get(self._arn_by_name.get(name or "", ""))
        if channel is None:
            raise ApiError.not_found(_NOT_FOUND_MESSAGE)
        return channel

    # ----------------------------------------------------------------- operations

    def _create_signaling_channel(self, params: JsonObject) -> JsonObject:
        name = _required_string(params, "ChannelName", CHANNEL_NAME_PATTERN)
        channel_type = _enum(params, "ChannelType", ("SINGLE_MASTER", "FULL_MESH"))
        if channel_type == "FULL_MESH":
            raise ApiError.invalid_argument("Only SINGLE_MASTER signaling channels are supported.")
        single_master = _object(params, "SingleMasterConfiguration") or {}
        message_ttl = _integer(single_master, "MessageTtlSeconds", 5, 120)
        tags = _tags(params)
        return {"ChannelARN": self.create_channel(name, message_ttl_seconds=message_ttl, tags=tags)}

    def _describe_signaling_channel(self, params: JsonObject) -> JsonObject:
        name = _string(params, "ChannelName", pattern=CHANNEL_NAME_PATTERN)
        arn = _string(params, "ChannelARN", pattern=CHANNEL_ARN_PATTERN)
        if name is None and arn is None:
            raise ApiError.invalid_argument("Either ChannelName or ChannelARN must be given.")
        with self._lock:
            return {"ChannelInfo": self._find(arn=arn, name=name).info()}

    def _list_signaling_channels(self, params: JsonObject) -> JsonObject:
        max_results = _integer(params, "MaxResults", 1, _MAX_RESULTS) or _MAX_RESULTS
        token = _string(params, "NextToken", pattern=_NEXT_PAGE_PATTERN)
        after = _decode_token(token) if token else None
        prefix: str | None = None
        condition = _object(params, "ChannelNameCondition")
        if condition is not None:
            _enum(condition, "ComparisonOperator", ("BEGINS_WITH",))
            prefix = _required_string(condition, "ComparisonValue", CHANNEL_NAME_PATTERN)
        with self._lock:
            names = sorted(
                name
                for name in self._arn_by_name
                if (prefix is None or name.startswith(prefix)) and (after is None or name > after)
            )
            page = names[:max_results]
            infos = [self._channels[self._arn_by_name[name]].info() for name in page]
        result: JsonObject = {"ChannelInfoList": infos}
        if len(names) > max_results:
            result["NextToken"] = _encode_token(page[-1])
        return result

    def _delete_signaling_channel(self, params: JsonObject) -> JsonObject:
        arn = _required_string(params, "ChannelARN", CHANNEL_ARN_PATTERN)
        version = _string(params, "CurrentVersion", pattern=_VERSION_PATTERN)
        with self._lock:
            channel = self._find(arn=arn)
            if version is not None and version != channel.version:
                raise ApiError(
                    "VersionMismatchException",
                    HTTPStatus.BAD_REQUEST,
                    "The CurrentVersion does not match the channel's current version.",
                )
            del self._channels[arn]
            del self._arn_by_name[channel.name]
        return {}

    def _get_signaling_channel_endpoint(self, params: JsonObject) -> JsonObject:
        arn = _required_string(params, "ChannelARN", CHANNEL_ARN_PATTERN)
        config = _object(params, "SingleMasterChannelEndpointConfiguration") or {}
        protocols = _protocols(config)
        _enum(config, "Role", _ROLES)
        with self._lock:
            self._find(arn=arn)
        endpoints = {
            "HTTPS": self.base_url,
            "WSS": "ws://" + self.base_url.removeprefix("http://"),
            "WEBRTC": self.base_url,
        }
        return {
            "ResourceEndpointList": [
                {"Protocol": protocol, "ResourceEndpoint": endpoints[protocol]} for protocol in protocols
            ]
        }

    def _get_ice_server_config(self, params: JsonObject) -> JsonObject:
        arn = _required_string(params, "ChannelARN", ICE_CHANNEL_ARN_PATTERN)
        _string(params, "ClientId", pattern=CLIENT_ID_PATTERN)
        _enum(params, "Service", ("TURN",))
        _string(params, "Username", pattern=CLIENT_ID_PATTERN)
        with self._lock:
            self._find(arn=arn)
        now = self._clock()
        return {"IceServerList": list(self._ice_servers(now, self.config.turn_uris))}

    def _ice_servers(self, now: float, uris: Iterable[str]) -> Iterable[JsonObject]:
        uri_list = list(uris)
        for _ in range(self.config.servers):
            credential = mint_turn_credential(self.config.turn_secret, ttl_seconds=self.config.ttl_seconds, now=now)
            yield {
                "Uris": uri_list,
                "Username": credential.username,
                "Password": credential.password,
                "Ttl": self.config.ttl_seconds,
            }

"""The pool manifest: every channel's ARN and HTTPS endpoint, resolved once at deploy time.

A broker instance that finds its pool by listing it still has to look up each channel's endpoint
(``GetSignalingChannelEndpoint``, 300 calls per second per account) the first time it uses that
channel. A fleet of a thousand Lambda instances spreading calls over a thousand channels would make
a lookup of almost every call: measured in ``bench.fleet`` (lazy endpoints), ~1,470 lookups per
second at 1,000 sessions/s, five times the account's limit. So the deployed stack resolves every
endpoint once, at deploy time, in a CloudFormation custom resource (:func:`handler`), and writes
them to a Secrets Manager secret; each broker instance reads that one secret at cold start
(``TURN_POOL_MANIFEST_SECRET_ARN``) and starts with every endpoint known. An endpoint that stops
answering is dropped and looked up again as before.

The secret holds compact JSON: the ARNs' common prefix once, each distinct endpoint once, then per
channel the rest of its ARN and its endpoint's index (``SecretString`` allows 65,536 bytes: about
2,700 channels)::

    {"version": 1, "arn_prefix": "arn:aws:kinesisvideo:us-east-1:123456789012:channel/Stack-turn-",
     "endpoints": ["https://r-2c136a55.kinesisvideo.us-east-1.amazonaws.com"],
     "channels": [["000/1700000000000", 0], ["001/1700000000123", 0], ...]}
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from broker.exceptions import BrokerError, ConfigurationError
from broker.kvs import KvsSignaling
from broker.limiter import SlidingWindowLimiter

logger = logging.getLogger(__name__)

MANIFEST_VERSION = 1
MAX_MANIFEST_BYTES = 65_536
"""The most a Secrets Manager ``SecretString`` holds."""
LOOKUPS_PER_SECOND = 100
"""Deploy-time endpoint lookups per second: a third of the account's 300, so brokers already running
in the account (a stack update) keep room for their own."""


@dataclass(frozen=True)
class PoolManifest:
    """The pool: each channel's ARN and its HTTPS signaling endpoint, in name order.

    Attributes:
        endpoints: Channel ARN -> HTTPS endpoint.
    """

    endpoints: Mapping[str, str]

    @property
    def channel_arns(self) -> tuple[str, ...]:
        """The pool's channel ARNs."""
        return tuple(self.endpoints)

    def to_json(self) -> str:
        """The compact form stored in the secret."""
        arns = list(self.endpoints)
        prefix = os.path.commonprefix(arns)  # noqa: RUF071 - characters: account, region, name prefix
        distinct = sorted(set(self.endpoints.values()))
        index = {endpoint: position for position, endpoint in enumerate(distinct)}
        document = {
            "version": MANIFEST_VERSION,
            "arn_prefix": prefix,
            "endpoints": distinct,
            "channels": [[arn[len(prefix) :], index[endpoint]] for arn, endpoint in self.endpoints.items()],
        }
        return json.dumps(document, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> PoolManifest:
        """Parse the secret's value.

        Raises:
            ConfigurationError: The value is not a pool manifest this broker understands.
        """
        try:
            document = json.loads(text)
            if document["version"] != MANIFEST_VERSION:
                raise ValueError(f"version {document['version']!r}")
            prefix: str = document["arn_prefix"]
            endpoints: list[str] = document["endpoints"]
            pairs = {prefix + str(rest): str(endpoints[position]) for rest, position in document["channels"]}
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise ConfigurationError(f"TURN_POOL_MANIFEST_SECRET_ARN: not a pool manifest ({exc})") from None
        if not pairs:
            raise ConfigurationError("TURN_POOL_MANIFEST_SECRET_ARN: the pool manifest lists no channel")
        return cls(endpoints=pairs)


def build_manifest(
    kvs: KvsSignaling,
    prefix: str,
    *,
    expected_channels: int | None = None,
    lookups_per_second: int = LOOKUPS_PER_SECOND,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> PoolManifest:
    """List the pool named ``prefix`` and look up every channel's endpoint, paced.

    Raises:
        BrokerError: The pool does not hold ``expected_channels`` active channels, or a lookup failed.
    """
    arns = kvs.list_channel_arns(prefix, sleep=sleep)
    if expected_channels is not None and len(arns) != expected_channels:
        raise BrokerError(f"{len(arns)} active channels are named {prefix}*, the pool has {expected_channels}")
    pace = SlidingWindowLimiter(lookups_per_second, 1.0)
    endpoints: dict[str, str] = {}
    for arn in arns:
        now = clock()
        ready = pace.ready_at(now)
        if ready > now:
            sleep(ready - now)
        pace.acquire(clock())
        try:
            endpoints[arn] = kvs.endpoint(arn)
        finally:
            pace.release(clock())
    manifest = PoolManifest(endpoints=endpoints)
    size = len(manifest.to_json().encode())
    if size > MAX_MANIFEST_BYTES:
        raise BrokerError(
            f"the manifest of {len(arns)} channels needs {size} bytes, more than a secret holds "
            f"({MAX_MANIFEST_BYTES}): use turnCredentialReuse=shared with a smaller pool"
        )
    return manifest


def handler(event: dict[str, Any], context: Any) -> None:
    """CloudFormation custom resource: build the manifest of the pool and store it in the secret.

    Properties: ``Prefix``, ``ChannelCount``, ``SecretArn``. Create and Update build and store it;
    Delete does nothing (the secret goes with the stack). The answer is sent to CloudFormation's
    pre-signed ``ResponseURL``; a failure is reported with its reason, never raised into a retry loop.
    """
    import botocore.session  # noqa: PLC0415 - only the custom resource's function needs a new session

    properties = event.get("ResourceProperties", {})
    physical_id = event.get("PhysicalResourceId") or f"pool-manifest-{properties.get('Prefix', '')}"
    status, reason = "SUCCESS", ""
    try:
        if event["RequestType"] in ("Create", "Update"):
            session = botocore.session.Session()
            kvs = KvsSignaling(region=session.get_config_variable("region"), session=session)
            manifest = build_manifest(kvs, str(properties["Prefix"]), expected_channels=int(properties["ChannelCount"]))
            session.create_client("secretsmanager").put_secret_value(
                SecretId=properties["SecretArn"], SecretString=manifest.to_json()
            )
            reason = f"{len(manifest.endpoints)} channels, {len(set(manifest.endpoints.values()))} endpoints"
            logger.info("pool manifest stored: %s", reason)
    except Exception as exc:
        logger.exception("pool manifest failed")
        status, reason = "FAILED", f"{type(exc).__name__}: {exc}"[:500]
    respond(event, status=status, reason=reason, physical_id=physical_id)


def respond(event: Mapping[str, Any], *, status: str, reason: str, physical_id: str) -> None:
    """PUT the custom resource's result to CloudFormation's pre-signed ``ResponseURL``."""
    body = json.dumps(
        {
            "Status": status,
            "Reason": reason or status,
            "PhysicalResourceId": physical_id,
            "StackId": event.get("StackId"),
            "RequestId": event.get("RequestId"),
            "LogicalResourceId": event.get("LogicalResourceId"),
        }
    ).encode()
    request = urllib.request.Request(  # noqa: S310 - CloudFormation's own pre-signed https URL
        str(event["ResponseURL"]), data=body, method="PUT", headers={"Content-Type": ""}
    )
    with urllib.request.urlopen(request, timeout=30):  # noqa: S310
        pass

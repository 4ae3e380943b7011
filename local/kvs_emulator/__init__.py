"""A local emulator of Kinesis Video Streams signaling that speaks the real wire protocol.

Unmodified boto3 code talks to it through ``AWS_ENDPOINT_URL_KINESIS_VIDEO`` (control plane) and the
HTTPS endpoint that ``GetSignalingChannelEndpoint`` returns (``GetIceServerConfig``). It enforces the
KVS rate limits as sliding windows, can add latency and inject faults, counts every call, and mints
TURN REST credentials for a local coturn. Run it with ``python -m local.kvs_emulator --help``.

What each counter in ``stats()`` means (and which calls fill a rate-limit window) is documented in
:mod:`local.kvs_emulator.stats`; the order in which faults, limits and latency apply is documented
on :class:`local.kvs_emulator.backend.KvsBackend`.
"""

from __future__ import annotations

from .config import DEFAULT_TURN_SECRET, DEFAULT_TURN_URIS, EmulatorConfig
from .credentials import TurnCredential, mint_turn_credential, turn_password
from .exceptions import ApiError, ConfigError, FaultSpecError, KvsEmulatorError
from .protocol import OPERATIONS, ROUTES, Route
from .server import KvsEmulator

__all__ = [
    "DEFAULT_TURN_SECRET",
    "DEFAULT_TURN_URIS",
    "OPERATIONS",
    "ROUTES",
    "ApiError",
    "ConfigError",
    "EmulatorConfig",
    "FaultSpecError",
    "KvsEmulator",
    "KvsEmulatorError",
    "Route",
    "TurnCredential",
    "mint_turn_credential",
    "turn_password",
]

"""TURN credential broker: ICE servers from a pool of KVS signaling channels, never throttled.

Typical use::

    from broker import IceBroker

    broker = IceBroker.from_env()  # TURN_CHANNEL_ARNS, AWS_REGION, TURN_CREDENTIAL_REUSE, ...
    ice = broker.get_ice_servers()  # thread-safe; may wait up to TURN_MAX_WAIT_SECONDS
    peer_config = {"iceServers": ice.to_dicts()}

The names below are imported on first use, not with the package: ``broker.sizing`` (the CDK app's
import) and the Lambda entry point, which must pause the garbage collector before botocore loads,
import the package without dragging botocore in.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from broker.config import BrokerConfig
    from broker.core import BrokerStats, IceBroker
    from broker.ice import IceServer, IceServerSet

__all__ = ["BrokerConfig", "BrokerStats", "IceBroker", "IceServer", "IceServerSet"]

_HOMES = {
    "BrokerConfig": "broker.config",
    "BrokerStats": "broker.core",
    "IceBroker": "broker.core",
    "IceServer": "broker.ice",
    "IceServerSet": "broker.ice",
}


def __getattr__(name: str) -> Any:
    """Import an exported name from its module the first time it is asked for."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'broker' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value

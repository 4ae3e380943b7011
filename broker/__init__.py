"""TURN credential broker: ICE servers from a pool of KVS signaling channels, never throttled.

Typical use::

    from broker import IceBroker

    broker = IceBroker.from_env()  # TURN_CHANNEL_ARNS, AWS_REGION, TURN_CREDENTIAL_REUSE, ...
    ice = broker.get_ice_servers()  # thread-safe; may wait up to TURN_MAX_WAIT_SECONDS
    peer_config = {"iceServers": ice.to_dicts()}
"""

from broker.config import BrokerConfig
from broker.core import BrokerStats, IceBroker
from broker.ice import IceServer, IceServerSet

__all__ = ["BrokerConfig", "BrokerStats", "IceBroker", "IceServer", "IceServerSet"]

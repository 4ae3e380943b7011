"""Where a call's ICE servers come from: the invocation itself, the broker's KVS pool, or nothing.

In production the broker API draws the agent's ICE servers from the KVS channel pool (the same
limiter that serves the browsers) and sends them inside the invocation (``iceServers``, see
:mod:`agent.payloads`), so no agent process ever calls KVS. When an offer carries none, the agent
falls back to a provider: an async callable returning aiortc ``RTCIceServer`` objects. The default is
:func:`no_ice_servers` (``AGENT_ICE_SERVERS=none``); :class:`BrokerIceServers` (``broker``) lets an
agent run standalone against a pool; tests inject their own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

from aiortc import RTCIceServer
from aiortc.rtcicetransport import connection_kwargs

from agent.exceptions import IceServersUnavailableError
from agent.payloads import IceServerSpec
from broker.exceptions import BrokerError, PoolExhaustedError

if TYPE_CHECKING:  # the broker itself (boto3 clients, limiter) loads only when AGENT_ICE_SERVERS=broker
    from broker import IceBroker

logger = logging.getLogger(__name__)

IceServerProvider = Callable[[], Awaitable[list[RTCIceServer]]]


def rtc_ice_servers(specs: Iterable[IceServerSpec]) -> list[RTCIceServer]:
    """Convert the ICE servers an invocation brought into aiortc's form."""
    return [RTCIceServer(urls=list(spec.urls), username=spec.username, credential=spec.credential) for spec in specs]


def can_relay(servers: list[RTCIceServer]) -> bool:
    """Whether aiortc would allocate a TURN relay with ``servers``.

    aiortc uses the first TURN URL it supports (``turn:`` over UDP or TCP, ``turns:`` over TCP) and
    ignores the rest, so KVS's ``turns:...?transport=udp`` alone gives no relay. This asks aiortc's own
    selection rather than repeating it.
    """
    return "turn_server" in connection_kwargs(servers)


class BrokerIceServers:
    """ICE servers with TURN credentials minted by the broker's pool of KVS signaling channels.

    The broker is synchronous and may wait (boundedly) for a channel with spare rate, so it runs in a
    worker thread and never blocks the event loop that carries the calls' media.

    Args:
        broker: The broker (see :meth:`broker.IceBroker.from_env`).
    """

    def __init__(self, broker: IceBroker) -> None:
        self._broker = broker

    async def __call__(self) -> list[RTCIceServer]:
        """Fetch a fresh set of ICE servers.

        Raises:
            IceServersUnavailableError: The pool is exhausted (with a retry-after) or KVS failed.
        """
        try:
            ice = await asyncio.to_thread(self._broker.get_ice_servers)
        except PoolExhaustedError as exc:
            raise IceServersUnavailableError("TURN credential pool exhausted", retry_after=exc.retry_after) from exc
        except BrokerError as exc:
            raise IceServersUnavailableError(f"TURN credentials unavailable: {type(exc).__name__}") from exc
        logger.info(
            "ICE servers from channel %s: %d servers, credentials valid %.0f s",
            ice.channel_arn,
            len(ice.servers),
            ice.remaining(time.time()),
        )
        return [
            RTCIceServer(urls=list(server.urls), username=server.username, credential=server.credential)
            for server in ice.servers
        ]


def gather_loopback_host_candidates_only() -> None:
    """Make every peer connection of this process offer host candidates on 127.0.0.1 only.

    aioice (under aiortc) offers every interface address except loopback. On a one-machine setup
    (local mode, tests) media must stay on loopback, with TURN relays on 127.0.0.1 where used, so
    this swaps aioice's address lookup. Process-wide; ``AGENT_ICE_HOST_CANDIDATES=loopback``.
    """
    import aioice.ice  # noqa: PLC0415 - the one module whose lookup is replaced

    def loopback_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return ["127.0.0.1"] if use_ipv4 else []

    aioice.ice.get_host_addresses = loopback_addresses
    logger.info("host ICE candidates restricted to 127.0.0.1")


async def no_ice_servers() -> list[RTCIceServer]:
    """Return no ICE servers: the peer connection offers host candidates only (loopback and LAN)."""
    return []

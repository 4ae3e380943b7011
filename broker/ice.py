"""ICE server values handed to WebRTC peers, and the conversion from KVS's answer."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs

Transport = Literal["udp", "tcp", "tls"]
ALL_TRANSPORTS: frozenset[Transport] = frozenset({"udp", "tcp", "tls"})


def uri_transport(uri: str) -> Transport | None:
    """Classify a TURN URI: ``udp`` or ``tcp`` for ``turn:``, ``tls`` for any ``turns:``.

    KVS also returns ``turns:HOST:443?transport=udp`` (TURN over DTLS); it counts as ``tls``, the
    encrypted family, so keeping only ``udp`` and ``tcp`` drops every ``turns:`` URI. STUN and
    unknown schemes give ``None``.
    """
    scheme, _, rest = uri.partition(":")
    scheme = scheme.lower()
    if scheme == "turns":
        return "tls"
    if scheme != "turn":
        return None
    transport = parse_qs(rest.partition("?")[2]).get("transport", ["udp"])[0].lower()
    if transport == "udp":
        return "udp"
    if transport == "tcp":
        return "tcp"
    return None


@dataclass(frozen=True)
class IceServer:
    """One ``RTCIceServer``; its repr never shows the username or the credential."""

    urls: tuple[str, ...]
    username: str | None = field(default=None, repr=False)
    credential: str | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Return the WebRTC ``RTCIceServer`` form: ``{urls, username?, credential?}``."""
        value: dict[str, Any] = {"urls": list(self.urls)}
        if self.username is not None:
            value["username"] = self.username
        if self.credential is not None:
            value["credential"] = self.credential
        return value


@dataclass(frozen=True)
class IceServerSet:
    """ICE servers ready for a peer connection, with where they came from and until when they work.

    Attributes:
        servers: The servers, TURN first, STUN last when asked for.
        expires_at: Epoch seconds after which the TURN credentials stop working.
        channel_arn: The signaling channel that minted the credentials.
        kvs_calls: ``GetIceServerConfig`` calls this request made (0 when served from the cache).
        throttles: ``ClientLimitExceededException`` answers absorbed by failover for this request.
        cache_hit: Whether a shared credential set was reused.
    """

    servers: tuple[IceServer, ...]
    expires_at: float
    channel_arn: str
    kvs_calls: int = 0
    throttles: int = 0
    cache_hit: bool = False

    def to_dicts(self) -> list[dict[str, Any]]:
        """Return the servers in ``RTCIceServer`` dict form, for ``iceConfig.iceServers``."""
        return [server.to_dict() for server in self.servers]

    def remaining(self, now: float) -> float:
        """Seconds of validity left at epoch time ``now``."""
        return self.expires_at - now


def servers_from_kvs(
    ice_server_list: Iterable[Mapping[str, Any]], *, transports: frozenset[Transport]
) -> tuple[tuple[IceServer, ...], float]:
    """Convert ``IceServerList`` from ``GetIceServerConfig``, keeping only ``transports``.

    Returns:
        The servers that keep at least one URI, and the shortest TTL among them in seconds.
    """
    servers: list[IceServer] = []
    ttls: list[float] = []
    for entry in ice_server_list:
        urls = tuple(uri for uri in entry.get("Uris", ()) if uri_transport(uri) in transports)
        if not urls:
            continue
        servers.append(IceServer(urls=urls, username=entry.get("Username"), credential=entry.get("Password")))
        ttls.append(float(entry.get("Ttl", 0)))
    return tuple(servers), min(ttls, default=0.0)


def candidate_types(sdp: str) -> dict[str, int]:
    """Count the ICE candidates of an SDP by type (``host``, ``srflx``, ``relay``...)."""
    kinds: dict[str, int] = {}
    for line in sdp.splitlines():
        if line.startswith("a=candidate:") and " typ " in line:
            kind = line.split(" typ ", 1)[1].split(" ", 1)[0]
            kinds[kind] = kinds.get(kind, 0) + 1
    return kinds

"""Broker settings from the environment, and the ICE server values they shape."""

from __future__ import annotations

import pytest

from broker.api.config import offered_transports
from broker.api.service import Transport
from broker.config import BrokerConfig
from broker.exceptions import ConfigurationError
from broker.ice import IceServer, candidate_types, servers_from_kvs, uri_transport

ARN = "arn:aws:kinesisvideo:eu-west-1:123456789012:channel/turn-pool-0/1700000000000"
ARN2 = "arn:aws:kinesisvideo:eu-west-1:123456789012:channel/turn-pool-1/1700000000001"


def test_from_env_reads_every_setting() -> None:
    config = BrokerConfig.from_env(
        {
            "TURN_CHANNEL_ARNS": f" {ARN} , {ARN2} ",
            "TURN_CREDENTIAL_REUSE": "shared",
            "TURN_TRANSPORTS": "udp,TLS",
            "TURN_INCLUDE_STUN": "true",
            "TURN_CHANNEL_TPS": "4",
            "TURN_MAX_WAIT_SECONDS": "0.5",
            "TURN_TTL_MARGIN_SECONDS": "10",
            "TURN_SHARED_REFRESH_SECONDS": "20",
        }
    )
    assert config.channel_arns == (ARN, ARN2)
    assert config.region == "eu-west-1"  # from the ARN when AWS_REGION is absent
    assert config.credential_reuse == "shared"
    assert config.transports == frozenset({"udp", "tls"})
    assert config.effective_stun_url == "stun:stun.kinesisvideo.eu-west-1.amazonaws.com:443"
    assert (config.calls_per_window, config.max_wait_seconds) == (4, 0.5)
    assert (config.ttl_margin_seconds, config.shared_refresh_seconds) == (10, 20)


def test_defaults() -> None:
    config = BrokerConfig.from_env({"TURN_CHANNEL_ARNS": ARN, "AWS_REGION": "us-east-1"})
    assert config.region == "us-east-1"
    assert config.credential_reuse == "per-session"
    assert config.transports == frozenset({"udp", "tcp", "tls"})
    assert config.calls_per_window == 5
    assert not config.include_stun


def test_a_prefix_names_the_pool_instead_of_arns() -> None:
    config = BrokerConfig.from_env({"TURN_CHANNEL_PREFIX": " Stack-turn- ", "AWS_REGION": "eu-west-1"})
    assert (config.channel_prefix, config.channel_arns, config.region) == ("Stack-turn-", (), "eu-west-1")


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({}, "TURN_CHANNEL_ARNS"),
        ({"TURN_CHANNEL_ARNS": "not-an-arn"}, "TURN_CHANNEL_ARNS"),
        ({"TURN_CHANNEL_ARNS": f"{ARN},{ARN}"}, "twice"),
        ({"TURN_CHANNEL_ARNS": ARN, "TURN_CREDENTIAL_REUSE": "sometimes"}, "TURN_CREDENTIAL_REUSE"),
        ({"TURN_CHANNEL_ARNS": ARN, "TURN_TRANSPORTS": "udp,carrier-pigeon"}, "TURN_TRANSPORTS"),
        ({"TURN_CHANNEL_ARNS": ARN, "TURN_MAX_WAIT_SECONDS": "soon"}, "TURN_MAX_WAIT_SECONDS"),
        ({"TURN_CHANNEL_ARNS": ARN, "TURN_MAX_WAIT_SECONDS": "-1"}, "TURN_MAX_WAIT_SECONDS"),
        ({"TURN_CHANNEL_ARNS": ARN, "TURN_CHANNEL_TPS": "2.5"}, "TURN_CHANNEL_TPS"),
        ({"TURN_CHANNEL_ARNS": ARN, "TURN_INCLUDE_STUN": "maybe"}, "TURN_INCLUDE_STUN"),
        ({"TURN_CHANNEL_ARNS": ARN, "TURN_SHARED_REFRESH_SECONDS": "5"}, "TURN_SHARED_REFRESH_SECONDS"),
        ({"TURN_CHANNEL_PREFIX": "Stack-turn-"}, "AWS_REGION"),
        ({"TURN_CHANNEL_PREFIX": "Stack turn", "AWS_REGION": "us-east-1"}, "TURN_CHANNEL_PREFIX"),
        ({"TURN_CHANNEL_PREFIX": "x" * 201, "AWS_REGION": "us-east-1"}, "TURN_CHANNEL_PREFIX"),
        ({"TURN_CHANNEL_PREFIX": "Stack-turn-", "TURN_CHANNEL_ARNS": ARN}, "not both"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigurationError, match=names):
        BrokerConfig.from_env(env)


@pytest.mark.parametrize(
    ("uri", "transport"),
    [
        ("turn:host:443?transport=udp", "udp"),
        ("turn:host:443?transport=tcp", "tcp"),
        ("turn:host:3478", "udp"),
        ("turns:host:443?transport=tcp", "tls"),
        ("turns:host:443?transport=udp", "tls"),
        ("stun:host:443", None),
        ("turn:host:443?transport=sctp", None),
    ],
)
def test_uri_transport(uri: str, transport: str | None) -> None:
    assert uri_transport(uri) == transport


def test_kvs_answer_is_filtered_by_transport_and_keeps_the_shortest_ttl() -> None:
    kvs = [
        {
            "Uris": ["turn:a:443?transport=udp", "turns:a:443?transport=udp", "turns:a:443?transport=tcp"],
            "Username": "1700000300:abc",
            "Password": "secret-1",
            "Ttl": 300,
        },
        {"Uris": ["turns:b:443?transport=tcp"], "Username": "u2", "Password": "secret-2", "Ttl": 250},
    ]
    servers, ttl = servers_from_kvs(kvs, transports=frozenset({"udp"}))
    assert servers == (IceServer(urls=("turn:a:443?transport=udp",), username="1700000300:abc", credential="secret-1"),)
    assert ttl == 300
    servers, ttl = servers_from_kvs(kvs, transports=frozenset({"udp", "tcp", "tls"}))
    assert len(servers) == 2
    assert ttl == 250


def test_repr_never_shows_credentials() -> None:
    server = IceServer(urls=("turn:a:443",), username="1700000300:user", credential="hunter2")
    assert "hunter2" not in repr(server)
    assert "1700000300:user" not in repr(server)
    assert server.to_dict() == {"urls": ["turn:a:443"], "username": "1700000300:user", "credential": "hunter2"}


def test_candidate_types_counts_the_candidates_of_an_sdp_by_type() -> None:
    sdp = (
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
        "a=candidate:1 1 udp 2130706431 10.0.0.2 50000 typ host\r\n"
        "a=candidate:2 1 udp 16777215 203.0.113.9 49170 typ relay raddr 0.0.0.0 rport 0\r\n"
        "a=candidate:3 1 udp 16777215 203.0.113.9 49172 typ relay raddr 0.0.0.0 rport 0\r\n"
        "a=end-of-candidates\r\n"
    )
    assert candidate_types(sdp) == {"host": 1, "relay": 2}
    assert candidate_types("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n") == {}


@pytest.mark.parametrize(
    ("value", "offered"),
    [
        (None, {Transport.WEBRTC}),  # unset: what the API offered before there was a choice
        ("", {Transport.WEBRTC}),
        ("websocket", {Transport.WEBSOCKET}),
        (" webrtc , websocket ", {Transport.WEBRTC, Transport.WEBSOCKET}),
        ("websocket,websocket", {Transport.WEBSOCKET}),
    ],
)
def test_broker_transports_names_what_start_offers(value: str | None, offered: set[Transport]) -> None:
    assert offered_transports({} if value is None else {"BROKER_TRANSPORTS": value}) == offered


@pytest.mark.parametrize("value", ["daily", "webrtc,smallwebrtc", "WebRTC", ",", "webrtc;websocket"])
def test_unknown_broker_transports_name_the_variable_and_the_choices(value: str) -> None:
    with pytest.raises(ConfigurationError, match=r"BROKER_TRANSPORTS .*webrtc, websocket"):
        offered_transports({"BROKER_TRANSPORTS": value})

"""Every operation through real boto3 clients over HTTP, and the TURN credentials they return."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from typing import Any

import boto3
import pytest

from local.kvs_emulator import EmulatorConfig, KvsEmulator
from tests.kvs_emulator.support import (
    ACCOUNT,
    ARN_RE,
    FakeClock,
    _names,
    control_client,
    new_channels,
    signaling_client,
)

# --------------------------------------------------------------------------- operations through boto3


def test_client_configured_by_environment_creates_and_describes(emu: KvsEmulator, kvs: Any) -> None:
    assert kvs.meta.endpoint_url == emu.url
    name = f"create-{next(_names)}"
    arn = kvs.create_signaling_channel(
        ChannelName=name, ChannelType="SINGLE_MASTER", SingleMasterConfiguration={"MessageTtlSeconds": 30}
    )["ChannelARN"]
    match = ARN_RE.fullmatch(arn)
    assert match is not None and match["name"] == name
    assert abs(int(match["ms"]) / 1000 - time.time()) < 60

    by_name = kvs.describe_signaling_channel(ChannelName=name)["ChannelInfo"]
    by_arn = kvs.describe_signaling_channel(ChannelARN=arn)["ChannelInfo"]
    assert by_name == by_arn
    assert by_name["ChannelARN"] == arn
    assert by_name["ChannelStatus"] == "ACTIVE"
    assert by_name["ChannelType"] == "SINGLE_MASTER"
    assert by_name["SingleMasterConfiguration"] == {"MessageTtlSeconds": 30}
    assert abs(by_name["CreationTime"].timestamp() - int(match["ms"]) / 1000) < 0.001
    assert re.fullmatch(r"[a-zA-Z0-9]{1,64}", by_name["Version"])


def test_create_errors_are_modeled_exceptions(emu: KvsEmulator, kvs: Any) -> None:
    name = f"dup-{next(_names)}"
    kvs.create_signaling_channel(ChannelName=name)
    with pytest.raises(kvs.exceptions.ResourceInUseException):
        kvs.create_signaling_channel(ChannelName=name)
    with pytest.raises(kvs.exceptions.InvalidArgumentException):
        kvs.create_signaling_channel(ChannelName="has spaces!")
    with pytest.raises(kvs.exceptions.InvalidArgumentException):
        kvs.create_signaling_channel(ChannelName=f"mesh-{next(_names)}", ChannelType="FULL_MESH")
    with pytest.raises(kvs.exceptions.InvalidArgumentException):
        kvs.create_signaling_channel(ChannelName=name + "x", SingleMasterConfiguration={"MessageTtlSeconds": 500})
    with pytest.raises(kvs.exceptions.TagsPerResourceExceededLimitException):
        kvs.create_signaling_channel(ChannelName=name + "y", Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(51)])


def test_channel_quota_raises_account_limit(session: boto3.session.Session) -> None:
    with KvsEmulator(EmulatorConfig(max_channels=2)) as emu:
        client = control_client(session, emu.url)
        emu.create_channels(2)
        with pytest.raises(client.exceptions.AccountChannelLimitExceededException):
            client.create_signaling_channel(ChannelName="one-too-many")


def test_describe_unknown_channel_raises_not_found(emu: KvsEmulator, kvs: Any) -> None:
    with pytest.raises(kvs.exceptions.ResourceNotFoundException):
        kvs.describe_signaling_channel(ChannelName="no-such-channel")
    with pytest.raises(kvs.exceptions.ResourceNotFoundException):
        kvs.describe_signaling_channel(ChannelARN=f"arn:aws:kinesisvideo:us-east-1:{ACCOUNT}:channel/x/1234567890123")
    with pytest.raises(kvs.exceptions.InvalidArgumentException):
        kvs.describe_signaling_channel()


def test_list_paginates_and_filters_by_prefix(emu: KvsEmulator, kvs: Any) -> None:
    prefix = f"list{next(_names)}"
    created = emu.create_channels(7, prefix=prefix)
    emu.create_channels(2, prefix=f"other{next(_names)}")
    paginator = kvs.get_paginator("list_signaling_channels")
    pages = list(
        paginator.paginate(
            ChannelNameCondition={"ComparisonOperator": "BEGINS_WITH", "ComparisonValue": prefix},
            PaginationConfig={"PageSize": 3},
        )
    )
    assert [len(page["ChannelInfoList"]) for page in pages] == [3, 3, 1]
    listed = [info["ChannelARN"] for page in pages for info in page["ChannelInfoList"]]
    assert sorted(listed) == sorted(created)
    names = [info["ChannelName"] for page in pages for info in page["ChannelInfoList"]]
    assert names == sorted(names)

    first = kvs.list_signaling_channels(
        MaxResults=5, ChannelNameCondition={"ComparisonOperator": "BEGINS_WITH", "ComparisonValue": prefix}
    )
    assert len(first["ChannelInfoList"]) == 5 and "NextToken" in first
    rest = kvs.list_signaling_channels(
        MaxResults=5,
        NextToken=first["NextToken"],
        ChannelNameCondition={"ComparisonOperator": "BEGINS_WITH", "ComparisonValue": prefix},
    )
    assert len(rest["ChannelInfoList"]) == 2 and "NextToken" not in rest
    assert len(kvs.list_signaling_channels()["ChannelInfoList"]) == len(emu.channel_arns())
    with pytest.raises(kvs.exceptions.InvalidArgumentException):
        kvs.list_signaling_channels(NextToken="bm90IGEgdG9rZW4hIQ==")


def test_delete_checks_current_version(emu: KvsEmulator, kvs: Any) -> None:
    (arn,) = new_channels(emu)
    version = kvs.describe_signaling_channel(ChannelARN=arn)["ChannelInfo"]["Version"]
    with pytest.raises(kvs.exceptions.VersionMismatchException):
        kvs.delete_signaling_channel(ChannelARN=arn, CurrentVersion="stale0version")
    kvs.delete_signaling_channel(ChannelARN=arn, CurrentVersion=version)
    with pytest.raises(kvs.exceptions.ResourceNotFoundException):
        kvs.describe_signaling_channel(ChannelARN=arn)
    with pytest.raises(kvs.exceptions.ResourceNotFoundException):
        kvs.delete_signaling_channel(ChannelARN=arn)
    assert arn not in emu.channel_arns()


def test_recreated_channel_gets_a_new_arn(emu: KvsEmulator, kvs: Any) -> None:
    name = f"again-{next(_names)}"
    first = kvs.create_signaling_channel(ChannelName=name)["ChannelARN"]
    kvs.delete_signaling_channel(ChannelARN=first)
    second = kvs.create_signaling_channel(ChannelName=name)["ChannelARN"]
    assert first != second
    with pytest.raises(kvs.exceptions.ResourceNotFoundException):
        kvs.get_signaling_channel_endpoint(ChannelARN=first)


def test_endpoint_points_back_at_the_emulator(emu: KvsEmulator, kvs: Any) -> None:
    (arn,) = new_channels(emu)
    endpoints = kvs.get_signaling_channel_endpoint(
        ChannelARN=arn,
        SingleMasterChannelEndpointConfiguration={"Protocols": ["HTTPS", "WSS", "WEBRTC"], "Role": "VIEWER"},
    )["ResourceEndpointList"]
    by_protocol = {entry["Protocol"]: entry["ResourceEndpoint"] for entry in endpoints}
    assert [entry["Protocol"] for entry in endpoints] == ["HTTPS", "WSS", "WEBRTC"]
    assert by_protocol["HTTPS"] == emu.url
    assert by_protocol["WSS"] == emu.url.replace("http://", "ws://")
    assert by_protocol["WEBRTC"].startswith("http://127.0.0.1:")
    default = kvs.get_signaling_channel_endpoint(ChannelARN=arn)["ResourceEndpointList"]
    assert {entry["Protocol"] for entry in default} == {"HTTPS", "WSS"}
    with pytest.raises(kvs.exceptions.InvalidArgumentException):
        kvs.get_signaling_channel_endpoint(
            ChannelARN=arn, SingleMasterChannelEndpointConfiguration={"Protocols": ["HTTPS"], "Role": "BOSS"}
        )
    with pytest.raises(kvs.exceptions.ResourceNotFoundException):
        kvs.get_signaling_channel_endpoint(ChannelARN=arn.replace("/t", "/gone"))


def test_ice_server_config_returns_two_servers_with_own_credentials(emu: KvsEmulator, signaling: Any) -> None:
    (arn,) = new_channels(emu)
    servers = signaling.get_ice_server_config(ChannelARN=arn, ClientId="viewer-1", Service="TURN")["IceServerList"]
    assert len(servers) == 2
    for server in servers:
        assert server["Uris"] == ["turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp"]
        assert server["Ttl"] == 300
    assert servers[0]["Username"] != servers[1]["Username"]
    assert servers[0]["Password"] != servers[1]["Password"]


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"ChannelARN": f"arn:aws:kinesisvideo:us-east-1:{ACCOUNT}:channel/none/1234567890123"}, "ResourceNotFound"),
        ({"ClientId": "bad client id!"}, "InvalidArgument"),
        ({"ClientId": "x" * 257}, "InvalidArgument"),
        ({"Service": "STUN"}, "InvalidArgument"),
        ({"Username": "no spaces allowed"}, "InvalidArgument"),
        ({"ChannelARN": "not-an-arn"}, "InvalidArgument"),
    ],
)
def test_ice_server_config_errors_are_modeled_exceptions(
    emu: KvsEmulator, signaling: Any, overrides: dict[str, str], error: str
) -> None:
    (arn,) = new_channels(emu)
    request = {"ChannelARN": arn, "ClientId": "client-1", "Service": "TURN", **overrides}
    with pytest.raises(getattr(signaling.exceptions, f"{error}Exception")):
        signaling.get_ice_server_config(**request)


# --------------------------------------------------------------------------- credentials


def test_credentials_verify_against_the_turn_secret(session: boto3.session.Session) -> None:
    wall = FakeClock(1_700_000_000.7)
    config = EmulatorConfig(
        ttl_seconds=600,
        turn_secret="s3cret",
        turn_uris=("turn:127.0.0.1:3479?transport=udp",),
        servers=3,
    )
    with KvsEmulator(config, clock=wall) as emu:
        (arn,) = emu.create_channels(1)
        assert arn.endswith("/1700000000700")
        client = signaling_client(session, control_client(session, emu.url), arn)
        servers = client.get_ice_server_config(ChannelARN=arn)["IceServerList"]
    assert len(servers) == 3
    for server in servers:
        expiry, _, user_id = server["Username"].partition(":")
        assert int(expiry) == 1_700_000_000 + 600
        assert re.fullmatch(r"[A-Za-z0-9_-]+", user_id)
        expected = base64.b64encode(hmac.new(b"s3cret", server["Username"].encode(), hashlib.sha1).digest())
        assert server["Password"] == expected.decode()
        assert server["Ttl"] == 600
        assert server["Uris"] == ["turn:127.0.0.1:3479?transport=udp"]


def test_credentials_expire_ttl_after_now(emu: KvsEmulator, signaling: Any) -> None:
    (arn,) = new_channels(emu)
    before = int(time.time())
    server = signaling.get_ice_server_config(ChannelARN=arn)["IceServerList"][0]
    after = int(time.time())
    expiry = int(server["Username"].split(":")[0])
    assert before + 300 <= expiry <= after + 300
    expected = base64.b64encode(hmac.new(b"local-turn-secret", server["Username"].encode(), hashlib.sha1).digest())
    assert server["Password"] == expected.decode()

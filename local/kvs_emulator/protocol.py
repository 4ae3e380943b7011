"""The wire routes the emulator serves, as botocore's service models define them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

CREATE_SIGNALING_CHANNEL: Final = "CreateSignalingChannel"
DESCRIBE_SIGNALING_CHANNEL: Final = "DescribeSignalingChannel"
LIST_SIGNALING_CHANNELS: Final = "ListSignalingChannels"
DELETE_SIGNALING_CHANNEL: Final = "DeleteSignalingChannel"
GET_SIGNALING_CHANNEL_ENDPOINT: Final = "GetSignalingChannelEndpoint"
GET_ICE_SERVER_CONFIG: Final = "GetIceServerConfig"


@dataclass(frozen=True)
class Route:
    """One rest-json operation: the botocore service name, operation name, HTTP method and path."""

    service: str
    operation: str
    method: str
    path: str


ROUTES: Final = (
    Route("kinesisvideo", CREATE_SIGNALING_CHANNEL, "POST", "/createSignalingChannel"),
    Route("kinesisvideo", DESCRIBE_SIGNALING_CHANNEL, "POST", "/describeSignalingChannel"),
    Route("kinesisvideo", LIST_SIGNALING_CHANNELS, "POST", "/listSignalingChannels"),
    Route("kinesisvideo", DELETE_SIGNALING_CHANNEL, "POST", "/deleteSignalingChannel"),
    Route("kinesisvideo", GET_SIGNALING_CHANNEL_ENDPOINT, "POST", "/getSignalingChannelEndpoint"),
    Route("kinesis-video-signaling", GET_ICE_SERVER_CONFIG, "POST", "/v1/get-ice-server-config"),
)
ROUTES_BY_PATH: Final = {route.path: route for route in ROUTES}
OPERATIONS: Final = tuple(route.operation for route in ROUTES)

"""Presigned URLs of the agent runtime's WebSocket: shape, bounds, and botocore's own SigV4 math.

Every signature here is real botocore. A URL is checked the way a SigV4 server checks one: its
signature is recomputed from the URL's own query (timestamp, scope, expiry) and the caller's
secret, and must match; any change to what was signed must not. The URL is also compared byte for
byte with the one ``bedrock_agentcore``'s ``AgentCoreRuntimeClient.generate_presigned_url`` makes
at the same instant, whose shape AgentCore documents.
"""

from __future__ import annotations

import datetime
from urllib.parse import parse_qsl, quote, urlsplit

import boto3
import botocore.auth
import botocore.session
import pytest
from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, RefreshableCredentials
from botocore.exceptions import CredentialRetrievalError

from broker.api.config import websocket_url_signer
from broker.api.sessions import SessionIssuer
from broker.api.websocket_urls import (
    DEFAULT_EXPIRES_SECONDS,
    MAX_EXPIRES_SECONDS,
    WebSocketUrlError,
    WebSocketUrlSigner,
    endpoint_url,
)
from broker.exceptions import ConfigurationError

RUNTIME_ARN = "arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/voice_agent-AbCdEf1234"
ESCAPED_ARN = "arn%3Aaws%3Abedrock-agentcore%3Aus-east-1%3A123456789012%3Aruntime%2Fvoice_agent-AbCdEf1234"
AWS_ENDPOINT = "https://bedrock-agentcore.us-east-1.amazonaws.com"
SESSION_PARAMETER = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"
CREDENTIALS = Credentials("AKIDWEBSOCKETTEST000", "websocket-test-secret-key", "websocket-test-session-token")
SESSION_ID = SessionIssuer(b"k" * 32).issue("alice")
OTHER_SESSION_ID = SESSION_ID[:-1] + ("1" if SESSION_ID.endswith("0") else "0")  # one character differs
FROZEN = datetime.datetime(2025, 12, 1, 12, 30, 45)
AUTH_PARAMETERS = [
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Security-Token",
    "X-Amz-Signature",
]


def signer(**overrides: object) -> WebSocketUrlSigner:
    settings: dict[str, object] = {
        "region": "us-east-1",
        "credentials": CREDENTIALS,
        "endpoint_url": AWS_ENDPOINT,
        **overrides,
    }
    return WebSocketUrlSigner(RUNTIME_ARN, **settings)  # type: ignore[arg-type]


def query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True, strict_parsing=True))


def recomputed_signature(url: str, credentials: Credentials, region: str = "us-east-1") -> str:
    """The signature a SigV4 server computes for ``url``: botocore's math over the URL's own parameters."""
    scheme, _, rest = url.partition("://")
    http_url = f"{ {'wss': 'https', 'ws': 'http'}[scheme] }://{rest}"
    unsigned, _, _ = http_url.rpartition("&X-Amz-Signature=")
    params = query(url)
    request = AWSRequest(method="GET", url=unsigned)
    request.context["timestamp"] = params["X-Amz-Date"]
    auth = SigV4QueryAuth(credentials, "bedrock-agentcore", region, expires=int(params["X-Amz-Expires"]))
    assert params["X-Amz-Credential"] == auth.scope(request)  # the scope names these credentials
    canonical = auth.canonical_request(request)
    return str(auth.signature(auth.string_to_sign(request, canonical), request))


def test_the_url_has_agentcore_s_documented_shape() -> None:
    url = signer().presign(SESSION_ID)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc) == ("wss", "bedrock-agentcore.us-east-1.amazonaws.com")
    assert parts.path == f"/runtimes/{ESCAPED_ARN}/ws"  # the whole ARN escaped, ':' and '/' included
    assert quote(RUNTIME_ARN, safe="") == ESCAPED_ARN
    assert list(query(url)) == [SESSION_PARAMETER, *AUTH_PARAMETERS]  # operation parameters, then auth
    params = query(url)
    assert params[SESSION_PARAMETER] == SESSION_ID
    assert params["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert params["X-Amz-SignedHeaders"] == "host"
    assert params["X-Amz-Security-Token"] == CREDENTIALS.token
    date = params["X-Amz-Date"]
    assert params["X-Amz-Credential"] == f"{CREDENTIALS.access_key}/{date[:8]}/us-east-1/bedrock-agentcore/aws4_request"
    assert CREDENTIALS.secret_key not in url


def test_the_url_is_the_one_the_agentcore_sdk_presigns(monkeypatch: pytest.MonkeyPatch) -> None:
    from bedrock_agentcore.runtime import AgentCoreRuntimeClient  # noqa: PLC0415 (the agent's SDK, heavy)

    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: FROZEN)  # one instant for both signers
    sdk = AgentCoreRuntimeClient(
        region="us-east-1",
        session=boto3.Session(
            aws_access_key_id=CREDENTIALS.access_key,
            aws_secret_access_key=CREDENTIALS.secret_key,
            aws_session_token=CREDENTIALS.token,
            region_name="us-east-1",
        ),
    )
    for qualifier in (None, "DEFAULT"):
        ours = signer(qualifier=qualifier, expires_seconds=300).presign(SESSION_ID)
        theirs = sdk.generate_presigned_url(RUNTIME_ARN, session_id=SESSION_ID, endpoint_name=qualifier, expires=300)
        assert ours == theirs


def test_botocore_s_verification_math_reproduces_the_signature() -> None:
    url = signer(qualifier="DEFAULT").presign(SESSION_ID)
    assert recomputed_signature(url, CREDENTIALS) == query(url)["X-Amz-Signature"]


def test_signing_again_at_the_same_instant_gives_the_same_url(monkeypatch: pytest.MonkeyPatch) -> None:
    url_signer = signer(qualifier="DEFAULT")
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: FROZEN)
    url = url_signer.presign(SESSION_ID)
    request = AWSRequest(method="GET", url=url_signer.unsigned_url(SESSION_ID))
    SigV4QueryAuth(CREDENTIALS, "bedrock-agentcore", "us-east-1", expires=DEFAULT_EXPIRES_SECONDS).add_auth(request)
    assert request.url == "https" + url.removeprefix("wss")
    assert query(url)["X-Amz-Date"] == "20251201T123045Z"


@pytest.mark.parametrize(
    ("original", "tampered"),
    [
        (f"{SESSION_PARAMETER}={SESSION_ID}", f"{SESSION_PARAMETER}={OTHER_SESSION_ID}"),  # another session
        ("qualifier=DEFAULT", "qualifier=v2"),  # another endpoint of the runtime
        ("X-Amz-Expires=60", "X-Amz-Expires=300"),  # a longer life
        ("runtime%2Fvoice_agent", "runtime%2Fother_agent"),  # another runtime
    ],
    ids=["session-id", "qualifier", "expiry", "runtime"],
)
def test_a_tampered_url_no_longer_matches_its_signature(original: str, tampered: str) -> None:
    url = signer(qualifier="DEFAULT").presign(SESSION_ID)
    assert original in url
    forged = url.replace(original, tampered)
    assert recomputed_signature(forged, CREDENTIALS) != query(forged)["X-Amz-Signature"]


def test_another_secret_does_not_reproduce_the_signature() -> None:
    url = signer().presign(SESSION_ID)
    other = Credentials(CREDENTIALS.access_key, "another-secret-key", CREDENTIALS.token)
    assert recomputed_signature(url, other) != query(url)["X-Amz-Signature"]


def test_each_url_is_bound_to_its_own_session() -> None:
    url_signer = signer()
    other = SessionIssuer(b"k" * 32).issue("alice")
    first, second = url_signer.presign(SESSION_ID), url_signer.presign(other)
    assert (query(first)[SESSION_PARAMETER], query(second)[SESSION_PARAMETER]) == (SESSION_ID, other)
    assert query(first)["X-Amz-Signature"] != query(second)["X-Amz-Signature"]


def test_the_qualifier_is_sent_only_when_configured_and_comes_first() -> None:
    assert "qualifier" not in query(signer().presign(SESSION_ID))
    params = list(query(signer(qualifier="DEFAULT").presign(SESSION_ID)).items())
    assert params[:2] == [("qualifier", "DEFAULT"), (SESSION_PARAMETER, SESSION_ID)]


def test_the_expiry_is_bounded_by_agentcore_s_300_seconds() -> None:
    before = datetime.datetime.now(datetime.UTC).replace(tzinfo=None, microsecond=0)
    url = signer().presign(SESSION_ID)
    signed_at = datetime.datetime.strptime(query(url)["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    assert before - datetime.timedelta(seconds=1) <= signed_at <= before + datetime.timedelta(seconds=5)
    assert query(url)["X-Amz-Expires"] == str(DEFAULT_EXPIRES_SECONDS) == "60"
    assert query(signer(expires_seconds=MAX_EXPIRES_SECONDS).presign(SESSION_ID))["X-Amz-Expires"] == "300"
    assert query(signer(expires_seconds=1).presign(SESSION_ID))["X-Amz-Expires"] == "1"
    for expires in (0, -5, MAX_EXPIRES_SECONDS + 1, 3600):
        with pytest.raises(ConfigurationError, match="1 to 300 s"):
            signer(expires_seconds=expires)


def test_a_local_http_endpoint_gives_a_ws_url_signed_for_its_host_and_port() -> None:
    url = signer(endpoint_url="http://127.0.0.1:47011").presign(SESSION_ID)
    assert url.startswith(f"ws://127.0.0.1:47011/runtimes/{ESCAPED_ARN}/ws?{SESSION_PARAMETER}=")
    assert recomputed_signature(url, CREDENTIALS) == query(url)["X-Amz-Signature"]
    # The port is part of the signed host, as a browser's Host header carries it.
    elsewhere = url.replace("127.0.0.1:47011", "127.0.0.1:47012")
    assert recomputed_signature(elsewhere, CREDENTIALS) != query(elsewhere)["X-Amz-Signature"]


def test_an_https_endpoint_override_keeps_wss_and_its_path() -> None:
    url = signer(endpoint_url="https://agentcore.example.test:8443/prefix/").presign(SESSION_ID)
    assert url.startswith(f"wss://agentcore.example.test:8443/prefix/runtimes/{ESCAPED_ARN}/ws?")
    assert recomputed_signature(url, CREDENTIALS) == query(url)["X-Amz-Signature"]


def test_credentials_without_a_session_token_sign_without_one() -> None:
    url = signer(credentials=Credentials("AKIDWEBSOCKETTEST000", "websocket-test-secret-key")).presign(SESSION_ID)
    assert "X-Amz-Security-Token" not in query(url)


def test_credentials_that_cannot_be_refreshed_are_a_typed_error() -> None:
    def refresh() -> dict[str, str]:
        raise CredentialRetrievalError(provider="test", error_msg="the metadata service is unreachable")

    expired = RefreshableCredentials(
        "AKIDOLD", "old-secret", "old-token", datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC), refresh, "test"
    )
    with pytest.raises(WebSocketUrlError, match="CredentialRetrievalError"):
        signer(credentials=expired).presign(SESSION_ID)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"endpoint_url": "ftp://127.0.0.1:21"}, "http(s)://host"),
        ({"endpoint_url": "http://127.0.0.1:9000?x=1"}, "http(s)://host"),
        ({"endpoint_url": "bedrock-agentcore.us-east-1.amazonaws.com"}, "http(s)://host"),
        ({"credentials": None}, "no AWS credentials"),
    ],
)
def test_a_bad_signer_setting_is_a_configuration_error(overrides: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        signer(**overrides)


@pytest.mark.parametrize(
    "arn",
    ["", "runtime/x", "arn:aws:kinesisvideo:us-east-1:123456789012:channel/x/1", "arn:aws:bedrock-agentcore:::x"],
)
def test_only_an_agent_runtime_arn_is_accepted(arn: str) -> None:
    with pytest.raises(ConfigurationError, match="not an agent runtime ARN"):
        WebSocketUrlSigner(arn, region="us-east-1", credentials=CREDENTIALS, endpoint_url=AWS_ENDPOINT)


def test_a_session_id_agentcore_would_refuse_is_never_signed() -> None:
    for session_id in ("short", "x" * 257):
        with pytest.raises(ValueError, match="33 to 256 characters"):
            signer().presign(session_id)


def test_the_endpoint_is_botocore_s_unless_overridden() -> None:
    session = botocore.session.Session()
    assert endpoint_url({}, "us-east-1", session=session) == AWS_ENDPOINT
    assert endpoint_url({}, "cn-north-1", session=session) == "https://bedrock-agentcore.cn-north-1.amazonaws.com.cn"
    assert endpoint_url({"AWS_ENDPOINT_URL": "http://127.0.0.1:1"}, "us-east-1", session=session) == (
        "http://127.0.0.1:1"
    )
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:1", "AWS_ENDPOINT_URL_BEDROCK_AGENTCORE": "http://127.0.0.1:2"}
    assert endpoint_url(env, "us-east-1", session=session) == "http://127.0.0.1:2"  # the service's own wins


def test_the_signer_is_configured_from_the_environment() -> None:
    session = botocore.session.Session()
    session.set_credentials(CREDENTIALS.access_key, CREDENTIALS.secret_key, CREDENTIALS.token)
    env = {
        "AGENT_RUNTIME_ARN": RUNTIME_ARN,
        "AGENT_RUNTIME_QUALIFIER": "DEFAULT",
        "AWS_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL_BEDROCK_AGENTCORE": "http://127.0.0.1:47011",
        "WEBSOCKET_URL_EXPIRES_SECONDS": "120",
    }
    url = websocket_url_signer(env, session=session).presign(SESSION_ID)
    params = query(url)
    assert url.startswith("ws://127.0.0.1:47011/runtimes/")
    assert (params["qualifier"], params["X-Amz-Expires"]) == ("DEFAULT", "120")
    assert "/eu-west-1/bedrock-agentcore/" in params["X-Amz-Credential"]
    assert recomputed_signature(url, CREDENTIALS, region="eu-west-1") == params["X-Amz-Signature"]


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"AGENT_RUNTIME_ARN": ""}, "AGENT_RUNTIME_ARN"),
        ({"WEBSOCKET_URL_EXPIRES_SECONDS": "301"}, "WEBSOCKET_URL_EXPIRES_SECONDS"),
        ({"WEBSOCKET_URL_EXPIRES_SECONDS": "1.5"}, "WEBSOCKET_URL_EXPIRES_SECONDS"),
        ({"WEBSOCKET_URL_EXPIRES_SECONDS": "0"}, "WEBSOCKET_URL_EXPIRES_SECONDS"),
        ({"WEBSOCKET_URL_EXPIRES_SECONDS": "soon"}, "WEBSOCKET_URL_EXPIRES_SECONDS"),
    ],
)
def test_a_bad_signer_variable_is_named(overrides: dict[str, str], fragment: str) -> None:
    session = botocore.session.Session()
    session.set_credentials(CREDENTIALS.access_key, CREDENTIALS.secret_key)
    env = {"AGENT_RUNTIME_ARN": RUNTIME_ARN, "AWS_REGION": "us-east-1", **overrides}
    with pytest.raises(ConfigurationError, match=fragment):
        websocket_url_signer(env, session=session)

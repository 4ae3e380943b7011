"""SigV4-presigned URLs of the agent runtime's WebSocket, for browsers that hold no AWS credentials.

A URL reads ``wss://bedrock-agentcore.<region>.amazonaws.com/runtimes/<ARN, url-escaped>/ws`` with
the query ``qualifier`` (when configured), ``X-Amzn-Bedrock-AgentCore-Runtime-Session-Id`` and the
SigV4 query parameters (``X-Amz-Algorithm`` ... ``X-Amz-Signature``). It has the shape
``bedrock_agentcore.runtime.AgentCoreRuntimeClient.generate_presigned_url`` gives: the ARN escaped
with ``quote(arn, safe="")``, the qualifier before the session id, signed by botocore's
``SigV4QueryAuth`` (service ``bedrock-agentcore``) as an ``https`` URL whose scheme then becomes
``wss``. That client is not used: measured here in fresh interpreters, importing it (255 modules:
boto3, starlette, uvicorn ...) took 215 ms, creating it (two more botocore clients) 97 ms and its
first URL 26 ms, over 300 ms of cold start in all, and it refuses endpoints outside AWS. This signer
imports nothing botocore's client has not, and its first URL takes ~0.7 ms.

Anyone holding a URL can open the session's WebSocket until it expires, so it is never logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import quote, urlencode, urlsplit

import botocore.session
from botocore.auth import SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import BotoCoreError
from botocore.regions import EndpointResolver

from broker import redaction
from broker.api.agents import SESSION_HEADER
from broker.exceptions import BrokerError, ConfigurationError

redaction.install()  # botocore's signer logs what rebuilds a URL at DEBUG

SIGNING_NAME: Final = "bedrock-agentcore"
ENDPOINT_VARIABLE: Final = "AWS_ENDPOINT_URL_BEDROCK_AGENTCORE"
"""botocore's per-service endpoint override; it moves the WebSocket too (local mode's stand-in)."""
MAX_EXPIRES_SECONDS: Final = 300
"""AgentCore accepts presigned WebSocket URLs valid for at most 5 minutes."""
DEFAULT_EXPIRES_SECONDS: Final = 60
"""The URL is only checked when the WebSocket opens, right after ``/start`` (and at the client's
two quick reconnects); a minute covers that and keeps a leaked URL useful for as short as is practical."""
_SCHEMES: Final = {"https": "wss", "http": "ws"}
_SESSION_ID_CHARS: Final = (33, 256)


class WebSocketUrlError(BrokerError):
    """The URL could not be signed (the credentials could not be obtained or refreshed)."""


class WebSocketUrlSigner:
    """Presigns the agent runtime's WebSocket URL for one session at a time.

    Args:
        runtime_arn: The agent runtime's ARN.
        region: The region the signature is scoped to (the runtime's).
        credentials: botocore credentials (refreshable ones are frozen afresh for every URL).
        endpoint_url: The data plane's base URL: ``https://bedrock-agentcore.<region>.<dns suffix>``,
            or a local stand-in's ``http://127.0.0.1:<port>`` (the URL is then ``ws://`` and signed
            for that host and port).
        qualifier: Endpoint name or version (default: the runtime's default endpoint).
        expires_seconds: How long each URL stays valid, 1 to 300 s.

    Raises:
        ConfigurationError: An argument is out of range or malformed.
    """

    def __init__(
        self,
        runtime_arn: str,
        *,
        region: str,
        credentials: Any,
        endpoint_url: str,
        qualifier: str | None = None,
        expires_seconds: int = DEFAULT_EXPIRES_SECONDS,
    ) -> None:
        if not 1 <= expires_seconds <= MAX_EXPIRES_SECONDS:
            raise ConfigurationError(
                f"a presigned WebSocket URL is valid for 1 to {MAX_EXPIRES_SECONDS} s, not {expires_seconds}"
            )
        parts = runtime_arn.split(":", 5)
        if len(parts) != 6 or parts[0] != "arn" or parts[2] != SIGNING_NAME or not parts[5].startswith("runtime/"):
            raise ConfigurationError(f"not an agent runtime ARN: {runtime_arn!r}")
        endpoint = urlsplit(endpoint_url)
        if endpoint.scheme not in _SCHEMES or not endpoint.hostname or endpoint.query or endpoint.fragment:
            raise ConfigurationError(
                f"the AgentCore endpoint must be an http(s)://host[:port] URL, got {endpoint_url!r}"
            )
        if credentials is None:
            raise ConfigurationError("no AWS credentials to sign the agent's WebSocket URLs with")
        self._arn = runtime_arn
        self._region = region
        self._credentials = credentials
        self._qualifier = qualifier
        self._expires = expires_seconds
        self._base = f"{endpoint_url.rstrip('/')}/runtimes/{quote(runtime_arn, safe='')}/ws"

    @property
    def expires_seconds(self) -> int:
        """How long each URL stays valid."""
        return self._expires

    def unsigned_url(self, session_id: str) -> str:
        """The ``http(s)`` URL that :meth:`presign` signs: path, qualifier and session id, no signature."""
        low, high = _SESSION_ID_CHARS
        if not low <= len(session_id) <= high:
            raise ValueError(f"an AgentCore session id has {low} to {high} characters, not {len(session_id)}")
        query = {"qualifier": self._qualifier} if self._qualifier else {}
        query[SESSION_HEADER] = session_id
        return f"{self._base}?{urlencode(query)}"

    def presign(self, session_id: str) -> str:
        """Return the ``wss://`` (or local ``ws://``) URL that opens ``session_id``'s WebSocket.

        Raises:
            WebSocketUrlError: The credentials could not be obtained.
        """
        request = AWSRequest(method="GET", url=self.unsigned_url(session_id))
        try:
            credentials = self._credentials.get_frozen_credentials()
            SigV4QueryAuth(credentials, SIGNING_NAME, self._region, expires=self._expires).add_auth(request)
        except BotoCoreError as exc:
            raise WebSocketUrlError(f"the WebSocket URL could not be signed: {type(exc).__name__}") from exc
        return websocket_scheme(request.url)


def websocket_scheme(url: str) -> str:
    """``https://...`` becomes ``wss://...`` and ``http://...`` becomes ``ws://...``."""
    scheme, _, rest = url.partition("://")
    return f"{_SCHEMES[scheme]}://{rest}"


def endpoint_url(env: Mapping[str, str], region: str, *, session: botocore.session.Session) -> str:
    """The AgentCore data plane's URL: ``AWS_ENDPOINT_URL_BEDROCK_AGENTCORE``, ``AWS_ENDPOINT_URL``, or AWS's.

    The overrides are read from ``env`` (which local mode builds without touching this process's
    environment); AWS's endpoint comes from botocore's endpoint data, as its clients resolve it.
    """
    override = env.get(ENDPOINT_VARIABLE, "").strip() or env.get("AWS_ENDPOINT_URL", "").strip()
    if override:
        return override
    resolved = EndpointResolver(session.get_data("endpoints")).construct_endpoint(SIGNING_NAME, region)
    hostname = resolved["hostname"] if resolved else f"{SIGNING_NAME}.{region}.amazonaws.com"
    return f"https://{hostname}"

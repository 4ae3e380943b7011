"""The broker API over plain HTTP on loopback, for local mode: the same resolver the Lambda runs.

Each request becomes the API Gateway HTTP API event the Lambda would receive, with the caller's JWT
claims where API Gateway's JWT authorizer would put them, and goes through the same
:func:`broker.api.resolver.handle_event`. Authentication is local: ``none`` (every caller is
``local-user``) or ``hs256`` (a bearer JWT signed with a local secret, see :func:`mint_token`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.event_handler.api_gateway import BaseRouter

from broker.api.errors import ApiError, UnauthorizedError
from broker.api.resolver import build_resolver, handle_event
from broker.api.service import BrokerService
from local.http_server import FastRequestHandler, LoopbackHTTPServer

logger = logging.getLogger(__name__)

API_PREFIXES = ("/start", "/sessions/")
HEALTH_PATH = "/_broker/health"
LOCAL_SUBJECT = "local-user"

# Powertools keeps the current event on a class, so one request at a time may be inside a resolver;
# routes step out of the lock only around their slow service calls (see build_resolver).
_RESOLVING = threading.Lock()


@contextlib.contextmanager
def _outside_resolver_lock() -> Iterator[None]:
    """Let other requests resolve while this one waits on KVS or the agent; restore its event after."""
    event, context = BaseRouter.current_event, BaseRouter.lambda_context
    _RESOLVING.release()
    try:
        yield
    finally:
        _RESOLVING.acquire()
        BaseRouter.current_event, BaseRouter.lambda_context = event, context


StaticHandler = Callable[[str], tuple[int, str, bytes] | None]
"""Serves a non-API GET path: ``(status, content type, body)``, or None when it has nothing."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint_token(secret: str, subject: str, *, ttl_seconds: int = 3600, now: float | None = None) -> str:
    """Return an HS256 JWT for ``subject``, as a local stand-in for an identity provider's token."""
    issued = int(time.time() if now is None else now)
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = _b64url(json.dumps({"sub": subject, "iat": issued, "exp": issued + ttl_seconds}).encode())
    signature = hmac.new(secret.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{_b64url(signature)}"


@dataclass(frozen=True)
class LocalAuth:
    """How the local server identifies callers (API Gateway's JWT authorizer does it in AWS).

    Attributes:
        mode: ``none``: everyone is ``local-user``. ``hs256``: a bearer JWT signed with ``secret``.
        secret: The HS256 secret.
    """

    mode: Literal["none", "hs256"] = "none"
    secret: str = ""

    def claims(self, authorization: str | None, now: float | None = None) -> dict[str, Any]:
        """Return the verified claims of a request.

        Raises:
            UnauthorizedError: hs256 mode and no valid, unexpired token.
        """
        if self.mode == "none":
            return {"sub": LOCAL_SUBJECT}
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or token.count(".") != 2:
            raise UnauthorizedError("send 'Authorization: Bearer <JWT>'")
        header, claims, signature = token.split(".")
        expected = hmac.new(self.secret.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest()
        try:
            valid = hmac.compare_digest(_unb64url(signature), expected)
            alg = json.loads(_unb64url(header)).get("alg")
            payload = json.loads(_unb64url(claims))
        except (ValueError, AttributeError):
            raise UnauthorizedError("the token is malformed") from None
        if not valid or alg != "HS256" or not isinstance(payload, dict):
            raise UnauthorizedError("the token's signature does not verify")
        exp = payload.get("exp")
        if not isinstance(exp, int | float) or exp < (time.time() if now is None else now):
            raise UnauthorizedError("the token has expired")
        return payload


def http_api_event(
    method: str, target: str, *, headers: dict[str, str], body: bytes, claims: dict[str, Any], source_ip: str
) -> dict[str, Any]:
    """Build the API Gateway HTTP API (payload 2.0) event for one request, as the Lambda receives it."""
    parts = urlsplit(target)
    text = body.decode("utf-8", errors="replace")
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": parts.path,
        "rawQueryString": parts.query,
        "headers": {name.lower(): value for name, value in headers.items()},
        "requestContext": {
            "accountId": "local",
            "apiId": "local",
            "domainName": headers.get("Host", "127.0.0.1"),
            "http": {
                "method": method,
                "path": parts.path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": headers.get("User-Agent", ""),
            },
            "authorizer": {"jwt": {"claims": claims, "scopes": []}},
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
            "timeEpoch": int(time.time() * 1000),
        },
        "body": text,
        "isBase64Encoded": False,
    }


class _LocalApiServer(LoopbackHTTPServer):
    def __init__(
        self,
        address: tuple[str, int],
        service: BrokerService,
        auth: LocalAuth,
        static: StaticHandler | None,
    ) -> None:
        self.service = service
        self.auth = auth
        self.static = static
        self._resolvers = threading.local()
        super().__init__(address, _Handler, idle_timeout=120.0)

    def resolver(self) -> APIGatewayHttpResolver:
        """This thread's resolver (its per-request state stays its own while another request waits)."""
        resolver: APIGatewayHttpResolver | None = getattr(self._resolvers, "value", None)
        if resolver is None:
            resolver = build_resolver(self.service, slow_section=_outside_resolver_lock)
            self._resolvers.value = resolver
        return resolver


class _Handler(FastRequestHandler):
    server: _LocalApiServer

    def do_GET(self) -> None:
        """Health check and static files; API routes answer 404 for GET, as in AWS."""
        self._serve()

    def do_HEAD(self) -> None:
        """Like GET, without the body."""
        self._serve()

    def do_POST(self) -> None:
        """API routes."""
        self._serve()

    def do_PATCH(self) -> None:
        """API routes."""
        self._serve()

    def do_PUT(self) -> None:
        """No route takes PUT: the resolver answers 404."""
        self._serve()

    def do_DELETE(self) -> None:
        """No route takes DELETE: the resolver answers 404."""
        self._serve()

    def _json(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        extra = list((headers or {}).items())
        self.send_all(status, [("Content-Type", "application/json"), *extra], json.dumps(body).encode())

    def _serve(self) -> None:
        path = urlsplit(self.path).path
        if path == HEALTH_PATH:
            self._json(200, {"status": "ok"})
            return
        if not path.startswith(API_PREFIXES) and self.command in ("GET", "HEAD") and self.server.static:
            found = self.server.static(path)
            if found is not None:
                status, content_type, body = found
                self.send_all(status, [("Content-Type", content_type)], body)
                return
        limit = self.server.service.settings.max_body_bytes
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > limit:
            self.close_connection = True  # the unread body would otherwise be taken for the next request
            self._json(413, {"error": {"code": "payload_too_large", "message": f"the body exceeds {limit} bytes"}})
            return
        body = self.rfile.read(length) if length else b""
        try:
            claims = self.server.auth.claims(self.headers.get("Authorization"))
        except ApiError as error:
            self._json(error.status, error.body(), {"WWW-Authenticate": "Bearer"})
            return
        event = http_api_event(
            self.command,
            self.path,
            headers=dict(self.headers),
            body=body,
            claims=claims,
            source_ip=self.client_address[0],
        )
        resolver = self.server.resolver()
        with _RESOLVING:
            response = handle_event(resolver, event, None, limit)
        headers = dict(response.get("headers") or {})
        headers.setdefault("Content-Type", "application/json")
        payload = response.get("body") or ""
        raw = base64.b64decode(payload) if response.get("isBase64Encoded") else str(payload).encode()
        self.send_all(int(response["statusCode"]), headers.items(), raw)


class LocalBrokerApi:
    """The broker API on loopback; a context manager that serves it on a background thread.

    Args:
        service: The broker service (built by :func:`broker.api.config.build_service`).
        host: Loopback address to listen on.
        port: Port (0 picks a free one).
        auth: How callers are identified.
        static: Optional server of non-API GET paths (the prebuilt UI in local mode).
    """

    def __init__(
        self,
        service: BrokerService,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        auth: LocalAuth | None = None,
        static: StaticHandler | None = None,
    ) -> None:
        if not host.startswith("127.") and host not in ("::1", "localhost"):
            raise ValueError(f"the local broker API listens on loopback only, not {host}")
        self._address = (host, port)
        self.service = service
        self.auth = auth or LocalAuth()
        self.static = static
        self._server: _LocalApiServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Bind and serve on a background thread."""
        self._server = _LocalApiServer(self._address, self.service, self.auth, self.static)
        self._thread = threading.Thread(target=self._server.serve_forever, name="broker-api", daemon=True)
        self._thread.start()
        logger.info("broker API listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving and close open connections."""
        if self._server is not None:
            self._server.shutdown()
            self._server.close_connections()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:7860``."""
        if self._server is None:
            raise RuntimeError("the server is not started")
        return f"http://{self._server.server_name}:{self._server.server_port}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

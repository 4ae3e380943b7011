"""HTTP front of the emulator and the :class:`KvsEmulator` that runs it on a background thread.

Every response is written with one ``send`` on a socket with ``TCP_NODELAY``: a stdlib server that
sends headers and body separately makes each keep-alive request wait ~40 ms for the client's
delayed ACK (Nagle), which would swamp any latency the emulator is asked to add.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from http import HTTPStatus
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import urlsplit

from local.http_server import FastRequestHandler, LoopbackHTTPServer

from .backend import ApiResponse, KvsBackend, parse_request_body
from .config import EmulatorConfig
from .exceptions import ApiError, FaultSpecError
from .faults import parse_fault
from .protocol import ROUTES_BY_PATH

logger = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 1 << 20
ADMIN_PREFIX: Final = "/_emulator/"
_CONNECTION_ERRORS: Final = (ConnectionError, TimeoutError)


class _EmulatorHTTPServer(LoopbackHTTPServer):
    """The loopback server, holding the emulator's backend for its handlers."""

    def __init__(self, config: EmulatorConfig, backend: KvsBackend) -> None:
        self.backend = backend
        super().__init__((config.host, config.port), _RequestHandler, config.idle_timeout_seconds)


class _RequestHandler(FastRequestHandler):
    """Routes KVS operations to the backend and ``/_emulator/`` paths to the admin endpoints."""

    server: _EmulatorHTTPServer

    def do_GET(self) -> None:
        """Serve a GET request."""
        self._serve()

    def do_POST(self) -> None:
        """Serve a POST request."""
        self._serve()

    def do_PUT(self) -> None:
        """Answer a PUT request (no route takes one)."""
        self._serve()

    def do_DELETE(self) -> None:
        """Answer a DELETE request (no route takes one)."""
        self._serve()

    def do_PATCH(self) -> None:
        """Answer a PATCH request (no route takes one)."""
        self._serve()

    def _serve(self) -> None:
        started = time.perf_counter()
        body = self._read_body()
        if body is None:
            return
        path = urlsplit(self.path).path
        try:
            response = self._route(path, body)
        except Exception:
            # A bug must still produce an answer the client can parse rather than a dropped connection.
            logger.exception("unexpected error serving %s %s", self.command, path)
            response = _error("InternalFailure", HTTPStatus.INTERNAL_SERVER_ERROR, "Emulator error.")
        self._send(response)
        logger.debug(
            "%s %s -> %s in %.1f ms",
            self.command,
            path,
            response.status,
            (time.perf_counter() - started) * 1000,
        )

    def _route(self, path: str, body: bytes) -> ApiResponse:
        if path.startswith(ADMIN_PREFIX):
            return self._admin(path, body)
        route = ROUTES_BY_PATH.get(path)
        if route is None:
            return _error("UnknownOperationException", HTTPStatus.NOT_FOUND, f"No route for {path}.")
        if self.command != route.method:
            return _method_not_allowed(route.method)
        return self.server.backend.handle(route.operation, body)

    def _read_body(self) -> bytes | None:
        """Read the request body, or answer and close the connection when it cannot be framed."""
        if self.headers.get("Transfer-Encoding"):
            self._refuse(HTTPStatus.LENGTH_REQUIRED, "Send the body with a Content-Length.")
            return None
        declared = self.headers.get("Content-Length")
        if declared is None:
            return b""
        try:
            length = int(declared)
        except ValueError:
            length = -1
        if length < 0:
            self._refuse(HTTPStatus.BAD_REQUEST, "Content-Length is not a valid length.")
            return None
        if length > MAX_BODY_BYTES:
            self._refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"The body exceeds {MAX_BODY_BYTES} bytes.")
            return None
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            return None
        return body

    def _refuse(self, status: HTTPStatus, message: str) -> None:
        # The rest of the stream cannot be trusted to start at a request boundary.
        self.close_connection = True
        code = "InvalidArgumentException" if status < 500 else "InternalFailure"
        self._send(_error(code, status, message))

    def _admin(self, path: str, body: bytes) -> ApiResponse:
        emulator_backend = self.server.backend
        getters: dict[str, Callable[[], dict[str, Any]]] = {
            "health": lambda: {
                "status": "ok",
                "url": emulator_backend.base_url,
                "channel_count": len(emulator_backend.channel_arns()),
                "latency_ms": emulator_backend.latency_ms,
            },
            "stats": emulator_backend.stats,
            "calls": emulator_backend.calls,
            "channels": lambda: {"channel_arns": emulator_backend.channel_arns()},
        }
        posters: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "faults": self._post_fault,
            "latency": self._post_latency,
            "reset": self._post_reset,
        }
        name = path.removeprefix(ADMIN_PREFIX)
        if name in getters:
            return ApiResponse(HTTPStatus.OK, getters[name]()) if self.command == "GET" else _method_not_allowed("GET")
        if name in posters:
            if self.command != "POST":
                return _method_not_allowed("POST")
            try:
                return ApiResponse(HTTPStatus.OK, posters[name](parse_request_body(body)))
            except ApiError as exc:
                return ApiResponse.from_error(exc)
            except (FaultSpecError, ValueError) as exc:
                return _error("InvalidArgumentException", HTTPStatus.BAD_REQUEST, str(exc))
        return _error("UnknownOperationException", HTTPStatus.NOT_FOUND, f"No admin endpoint {path}.")

    def _post_fault(self, spec: dict[str, Any]) -> dict[str, Any]:
        fault = parse_fault(spec)
        self.server.backend.add_fault(fault)
        return {"fault": fault.to_json()}

    def _post_latency(self, spec: dict[str, Any]) -> dict[str, Any]:
        latency = spec.get("ms")
        if isinstance(latency, bool) or not isinstance(latency, int | float):
            raise ValueError('the body must be {"ms": <number of milliseconds>}')
        self.server.backend.set_latency(float(latency))
        return {"latency_ms": self.server.backend.latency_ms}

    def _post_reset(self, spec: dict[str, Any]) -> dict[str, Any]:
        self.server.backend.reset()
        return {"status": "reset"}

    def _send(self, response: ApiResponse) -> None:
        """Write the response as JSON, with the AWS request id and error type headers."""
        payload = json.dumps(response.body, separators=(",", ":")).encode()
        headers = [("Content-Type", "application/json"), ("x-amzn-RequestId", str(uuid.uuid4()))]
        if response.error_code:
            headers.append(("x-amzn-ErrorType", response.error_code))
        headers.extend(response.headers)
        self.send_all(response.status, headers, payload)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Answer protocol-level errors (bad request line, unknown method) in JSON too."""
        self.close_connection = True
        status = HTTPStatus(code)
        error_code = "InvalidArgumentException" if status < 500 else "UnknownOperationException"
        self._send(_error(error_code, status, message or status.phrase))


def _error(code: str, status: int, message: str) -> ApiResponse:
    return ApiResponse.from_error(ApiError(code, status, message))


def _method_not_allowed(allowed: str) -> ApiResponse:
    return ApiResponse(
        HTTPStatus.METHOD_NOT_ALLOWED,
        {"message": f"Use {allowed} for this path."},
        "MethodNotAllowedException",
        (("Allow", allowed),),
    )


class KvsEmulator:
    """A KVS signaling emulator serving on a background thread.

    Example:
        >>> with KvsEmulator(EmulatorConfig()) as emu:  # doctest: +SKIP
        ...     arns = emu.create_channels(3, prefix="turn-pool")
        ...     boto3.client("kinesisvideo", endpoint_url=emu.url)

    Args:
        config: Settings; defaults everywhere when omitted.
        clock: Wall clock (epoch seconds) for credential expiry and channel creation times.
        monotonic: Clock of the rate-limit windows and recorded arrival times.
        sleep: Used to add latency; tests may pass a fake.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config or EmulatorConfig()
        self._backend = KvsBackend(self.config, clock=clock, monotonic=monotonic, sleep=sleep)
        self._server: _EmulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        """Bind the port and serve on a daemon thread.

        Raises:
            OSError: The address cannot be bound (for example, the port is in use).
            RuntimeError: The emulator is already running.
        """
        if self._server is not None:
            raise RuntimeError("the emulator is already running")
        server = _EmulatorHTTPServer(self.config, self._backend)
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        self._backend.base_url = f"http://{host}:{server.server_port}"
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="kvs-emulator", daemon=True
        )
        self._thread.start()
        logger.info("KVS emulator listening on %s", self._backend.base_url)
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and release the port; safe to call twice."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        logger.info("KVS emulator stopped")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL of the running emulator, e.g. ``http://127.0.0.1:41234``."""
        if self._server is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return self._backend.base_url

    @property
    def port(self) -> int:
        """TCP port the running emulator is bound to."""
        if self._server is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return self._server.server_port

    def create_channel(self, name: str) -> str:
        """Create one channel (not counted, not rate limited) and return its ARN.

        Raises:
            ApiError: The name is invalid or taken, or the channel quota is reached.
        """
        return self._backend.create_channel(name)

    def create_channels(self, count: int, *, prefix: str = "turn-pool") -> list[str]:
        """Create ``count`` channels named ``{prefix}-{n}``, skipping names already taken.

        Returns:
            The ARNs of the new channels, in creation order.
        """
        taken = {arn.split("/")[1] for arn in self._backend.channel_arns()}
        arns: list[str] = []
        index = 0
        while len(arns) < count:
            name = f"{prefix}-{index}"
            index += 1
            if name not in taken:
                arns.append(self._backend.create_channel(name))
        return arns

    def channel_arns(self) -> list[str]:
        """Return the ARNs of all channels, oldest first."""
        return self._backend.channel_arns()

    def stats(self) -> dict[str, Any]:
        """Return the counters; the same JSON as ``GET /_emulator/stats``."""
        return self._backend.stats()

    def calls(self) -> dict[str, Any]:
        """Return the arrival times; the same JSON as ``GET /_emulator/calls``."""
        return self._backend.calls()

    def inject_fault(
        self,
        operation: str = "*",
        kind: str = "error",
        *,
        count: int = 1,
        channel_arn: str | None = None,
        status: int = 503,
        delay_ms: float = 0,
        code: str | None = None,
    ) -> dict[str, Any]:
        """Queue a fault rule; see :class:`~local.kvs_emulator.faults.Fault` for the fields.

        Returns:
            The rule as JSON.

        Raises:
            FaultSpecError: A field is invalid.
        """
        fault = parse_fault(
            {
                "operation": operation,
                "kind": kind,
                "count": count,
                "channel_arn": channel_arn,
                "status": status,
                "delay_ms": delay_ms,
                "code": code,
            }
        )
        self._backend.add_fault(fault)
        return fault.to_json()

    def set_latency(self, latency_ms: float) -> None:
        """Change the delay added to every KVS request."""
        self._backend.set_latency(latency_ms)

    def reset(self) -> None:
        """Clear counters, arrival times, rate windows and faults; restore the configured latency."""
        self._backend.reset()

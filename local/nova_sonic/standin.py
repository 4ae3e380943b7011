"""The stand-in as a thing to start and stop: this run's CA, the port, and the event loop's thread.

:class:`NovaSonicStandIn` serves :class:`~local.nova_sonic.server.NovaSonicServer` (the HTTP/2 protocol
and its checks) over TLS with ALPN ``h2`` on a daemon thread, as the other local stand-ins serve on
theirs, and hands out what a client needs: the endpoint URL and the CA file to trust.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from .config import NovaSonicConfig
from .credentials import CredentialIssuer
from .server import NovaSonicServer, SessionFactory, StandInStats
from .tls import TlsFiles, make_tls_files

logger = logging.getLogger(__name__)


def server_tls_context(files: TlsFiles) -> ssl.SSLContext:
    """TLS 1.2+ with ALPN ``h2`` only: the Bedrock client speaks HTTP/2 to this operation."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files.cert_file, files.key_file)
    context.set_alpn_protocols(["h2"])
    return context


class NovaSonicStandIn:
    """Nova Sonic's bidirectional stream on loopback, served on a background thread.

    Example:
        >>> with NovaSonicStandIn(NovaSonicConfig()) as sonic:  # doctest: +SKIP
        ...     env = {"AWS_ENDPOINT_URL_BEDROCK_RUNTIME": sonic.url, "SSL_CERT_FILE": str(sonic.ca_file)}

    Args:
        config: Settings.
        session_factory: The model of each stream (default: :class:`~local.nova_sonic.model.OfflineNovaSonic`).
        issuer: Temporary credentials to accept (default: a new issuer).
        clock: Wall clock, epoch seconds.
    """

    def __init__(
        self,
        config: NovaSonicConfig,
        *,
        session_factory: SessionFactory | None = None,
        issuer: CredentialIssuer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if session_factory is None:
            from .model import offline_sessions  # noqa: PLC0415 - loads the speech models

            session_factory = offline_sessions(config)
        self.server = NovaSonicServer(config, session_factory, issuer=issuer, clock=clock)
        self._directory: tempfile.TemporaryDirectory[str] | None = None
        self._tls: TlsFiles | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._stopped: asyncio.Event | None = None

    def start(self) -> Self:
        """Make this run's CA, bind the port and serve on a daemon thread; return once it listens.

        Raises:
            OSError: The address cannot be bound.
            RuntimeError: Already running, or it did not start.
        """
        if self._thread is not None:
            raise RuntimeError("the Nova Sonic stand-in is already running")
        self._directory = tempfile.TemporaryDirectory(prefix="nova-sonic-")
        self._tls = make_tls_files(Path(self._directory.name))
        config = self.server.config
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        self._socket = socket.create_server((config.host, config.port), family=family, backlog=128)
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="nova-sonic-standin", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            self.stop()
            raise RuntimeError("the Nova Sonic stand-in did not start (see the log)")
        logger.info("Nova Sonic stand-in listening on %s", self.url)
        return self

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(ready))
        finally:
            loop.close()

    async def _serve(self, ready: threading.Event) -> None:
        if self._socket is None or self._tls is None:
            raise RuntimeError("start() makes the socket and the certificates first")
        self._stopped = asyncio.Event()
        server = await asyncio.start_server(self.server.handle, sock=self._socket, ssl=server_tls_context(self._tls))
        ready.set()
        await self._stopped.wait()
        server.close()
        # wait_closed() waits for every client connection (Python 3.12): the SDK's CRT client keeps its
        # HTTP/2 connection open, so stopping cuts them rather than wait for ever.
        self.server.drop_connections()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2)

    def stop(self) -> None:
        """Stop serving, drop open streams and delete the CA; safe to call twice."""
        thread, loop, stopped = self._thread, self._loop, self._stopped
        if thread is None:
            return
        if loop is not None and stopped is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopped.set)
        thread.join(timeout=10)
        self._thread = self._loop = self._stopped = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._directory is not None:
            self._directory.cleanup()
            self._directory = None
        logger.info("Nova Sonic stand-in stopped")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """TCP port the running stand-in is bound to."""
        if self._socket is None:
            raise RuntimeError("the Nova Sonic stand-in is not running; call start() first")
        return int(self._socket.getsockname()[1])

    @property
    def url(self) -> str:
        """Endpoint URL (``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``), e.g. ``https://127.0.0.1:41234``."""
        host = f"[{self.server.config.host}]" if ":" in self.server.config.host else self.server.config.host
        return f"https://{host}:{self.port}"

    @property
    def ca_file(self) -> Path:
        """This run's CA certificate: the client's ``SSL_CERT_FILE``."""
        if self._tls is None:
            raise RuntimeError("the Nova Sonic stand-in is not running; call start() first")
        return self._tls.ca_file

    @property
    def issuer(self) -> CredentialIssuer:
        """The temporary credentials this stand-in honours."""
        return self.server.issuer

    @property
    def stats(self) -> StandInStats:
        """What the stand-in saw."""
        return self.server.stats

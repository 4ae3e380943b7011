"""A threaded loopback HTTP/1.1 server that keeps its latency honest.

A stdlib ``http.server`` that writes headers and body in two sends makes every keep-alive request
wait about 40 ms (Nagle's algorithm against the client's delayed ACK). These bases turn Nagle off,
write each response in one send, and track connections so a stop ends them promptly.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import socketserver
import threading
from collections.abc import Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

logger = logging.getLogger(__name__)

_CONNECTION_ERRORS = (ConnectionError, TimeoutError)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback: what local servers may bind."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LoopbackHTTPServer(ThreadingHTTPServer):
    """Threaded HTTP server that tracks open connections so :meth:`close_connections` can end them.

    Args:
        address: ``(host, port)``; port 0 picks a free one.
        handler: The request handler class.
        idle_timeout: Seconds an idle keep-alive connection may hold its thread.
    """

    daemon_threads = True
    # Many clients may connect at once (load tests); the stdlib default backlog of 5 drops SYNs.
    request_queue_size = 512

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], idle_timeout: float) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.idle_timeout = idle_timeout
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup of the host, which can stall start-up."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Serve one connection, remembering its socket while it is open."""
        with self._connections_lock:
            self._connections.add(request)
        try:
            super().finish_request(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.discard(request)

    def close_connections(self) -> None:
        """Shut down every open keep-alive connection so its handler thread ends."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                logger.debug("connection already closed")

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log a failed connection; a client that hangs up is not worth a traceback."""
        logger.warning("error while serving %s", client_address, exc_info=True)


class FastRequestHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler with Nagle off, an idle timeout and one-send responses."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: LoopbackHTTPServer

    def setup(self) -> None:
        """Apply the idle timeout so a forgotten keep-alive connection does not pin a thread."""
        super().setup()
        self.connection.settimeout(self.server.idle_timeout)

    def handle(self) -> None:
        """Serve requests until the client closes; a reset connection is normal, not an error."""
        try:
            super().handle()
        except _CONNECTION_ERRORS:
            logger.debug("client %s went away", self.client_address)

    def send_all(self, status: int, headers: Iterable[tuple[str, str]], body: bytes) -> None:
        """Write status line, headers and body with a single send (``Content-Length`` added here)."""
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Error"
        lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}"]
        lines.extend(f"{name}: {value}" for name, value in headers)
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head if self.command == "HEAD" else head + body)

    def log_message(self, format: str, *args: Any) -> None:
        """Send the stdlib's access log to ``logging`` at debug level instead of stderr."""
        logger.debug("%s " + format, self.address_string(), *args)

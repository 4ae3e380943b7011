"""The stand-in's HTTP/2 protocol: SigV4 on the request and on every event, one model per stream.

``InvokeModelWithBidirectionalStream`` is one HTTP/2 request whose body and answer are both AWS event
streams, open together for the whole session. The server (``h2`` over asyncio, ALPN ``h2``) checks the
request as Bedrock does (path, model id, content type, SigV4 with the streaming payload hash), answers
``200`` at once, then reads the body's signed events one by one: each signature must chain to the one
before it, under the request's credentials, and each inner ``chunk`` goes to the stream's
:class:`ModelSession` (:class:`~local.nova_sonic.model.OfflineNovaSonic`). What the model emits goes
back as ``chunk`` events. A malformed event ends the stream with ``validationException``; a session
older than the limit ends with ``modelTimeoutException``, as Nova Sonic's 8-minute limit does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import ssl
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, Protocol
from urllib.parse import unquote

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from local.agentcore.exceptions import ApiError
from local.agentcore.sigv4 import EventSignatureChain, SignedRequest, SigV4Verifier, VerifiedSignature

from .config import NovaSonicConfig
from .credentials import CredentialIssuer
from .wire import (
    MessageReader,
    WireError,
    chunk_bytes,
    model_stream_error,
    model_timeout_exception,
    output_chunk,
    signed_message,
    validation_exception,
)

logger = logging.getLogger(__name__)

SERVICE: Final = "bedrock"
EVENT_STREAM_TYPE: Final = "application/vnd.amazon.eventstream"
_PATH: Final = re.compile(r"^/model/(?P<model>[^/]+)/invoke-with-bidirectional-stream$")
_READ_BYTES: Final = 65536

Emit = Callable[[bytes], Awaitable[None]]
"""Sends one output event (its JSON) on the stream."""


class EventRefused(Exception):
    """An input event the service would refuse: the stream ends with ``validationException``."""


@dataclass(frozen=True)
class StreamInfo:
    """What a model session knows of its stream.

    Attributes:
        model_id: The model the request named.
        session_id: The id the output events carry.
        access_key_id: The key the stream is signed with.
    """

    model_id: str
    session_id: str
    access_key_id: str


class ModelSession(Protocol):
    """The model behind one stream (see :class:`~local.nova_sonic.model.OfflineNovaSonic`)."""

    async def receive(self, event: bytes) -> None:
        """Take one input event's JSON; raise :class:`EventRefused` to end the stream."""

    async def close(self) -> None:
        """The stream is over: stop answering."""


SessionFactory = Callable[[StreamInfo, Emit], ModelSession]


@dataclass
class StandInStats:
    """What the stand-in saw, for tests and benchmarks.

    Attributes:
        streams: Streams accepted.
        refused: Requests refused before the stream opened, by error code.
        ended: Streams ended by the stand-in, by reason (``validationException``, ``modelTimeoutException``,
            ``InvalidSignatureException``, ...).
        events_in: Input events accepted.
        keys: Streams accepted, by the access key they were signed with.
    """

    streams: int = 0
    events_in: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    ended: Counter[str] = field(default_factory=Counter)
    keys: Counter[str] = field(default_factory=Counter)


class _Stream:
    """One ``InvokeModelWithBidirectionalStream`` call on a connection."""

    def __init__(self, connection: _Connection, stream_id: int, chain: EventSignatureChain, info: StreamInfo) -> None:
        self._connection = connection
        self.stream_id = stream_id
        self._chain = chain
        self.info = info
        self._reader = MessageReader()
        self._inbound: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.session: ModelSession | None = None
        self.ended = False

    def feed(self, data: bytes) -> None:
        self._inbound.put_nowait(data)

    def input_ended(self) -> None:
        self._inbound.put_nowait(None)

    async def run(
        self, session: ModelSession, limit_seconds: float, issuer: CredentialIssuer, stats: StandInStats
    ) -> None:
        """Read, verify and deliver events until the stream ends, the limit passes or an event is refused."""
        self.session = session
        try:
            async with asyncio.timeout(limit_seconds):
                await self._pump(session, issuer, stats)
        except TimeoutError:
            await self.end_with(
                "modelTimeoutException",
                model_timeout_exception("Model has timed out in processing the request. Try your request again."),
                stats,
            )
        except (EventRefused, WireError) as exc:
            await self.end_with("validationException", validation_exception(str(exc)), stats)
        except ApiError as exc:
            await self.end_with(exc.code, validation_exception(f"{exc.code}: {exc.message}"), stats)
        except Exception:
            logger.exception("the Nova Sonic stand-in failed on stream %d", self.stream_id)
            await self.end_with("modelStreamErrorException", model_stream_error("The stand-in failed."), stats)
        finally:
            await session.close()
            if not self.ended:
                self.ended = True
                self._connection.end_stream(self.stream_id)

    async def _pump(self, session: ModelSession, issuer: CredentialIssuer, stats: StandInStats) -> None:
        while (data := await self._inbound.get()) is not None:
            for outer in self._reader.feed(data):
                signed = signed_message(outer)
                self._chain.verify(signed.date, signed.encoded_date_header, signed.signature, signed.payload)
                if self.info.access_key_id.startswith("ASIA") and issuer.lookup(self.info.access_key_id) is None:
                    raise ApiError("ExpiredTokenException", 403, "The security token in the request has expired")
                if not signed.payload:  # the final signed message: the client is done sending
                    return
                stats.events_in += 1
                await session.receive(chunk_bytes(signed.payload))
        if self._reader.pending:
            raise WireError(f"the stream ended inside an event ({self._reader.pending} bytes left over)")

    async def emit(self, event_json: bytes) -> None:
        """Send one output ``chunk`` event (dropped once the stream has ended)."""
        if not self.ended:
            await self._connection.send(self.stream_id, output_chunk(event_json))

    async def end_with(self, reason: str, message: bytes, stats: StandInStats) -> None:
        if self.ended:
            return
        logger.info("ending Nova Sonic stream %d: %s", self.stream_id, reason)
        stats.ended[reason] += 1
        with contextlib.suppress(ConnectionError, h2.exceptions.H2Error):
            await self._connection.send(self.stream_id, message)
        self.ended = True
        self._connection.end_stream(self.stream_id)


class _Connection:
    """One TLS connection's HTTP/2 state, driven from one asyncio task."""

    def __init__(self, server: NovaSonicServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._server = server
        self._reader = reader
        self._writer = writer
        self._h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self._streams: dict[int, _Stream] = {}
        self._window_open = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and not self._writer.is_closing():
            self._writer.write(data)

    async def serve(self) -> None:
        self._h2.initiate_connection()
        self._flush()
        try:
            while data := await self._reader.read(_READ_BYTES):
                try:
                    events = self._h2.receive_data(data)
                except h2.exceptions.ProtocolError as exc:
                    logger.info("HTTP/2 protocol error from a client: %s", exc)
                    self._flush()
                    return
                for event in events:
                    self._handle(event)
                self._flush()
                await self._writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            for stream in self._streams.values():
                stream.input_ended()
            for task in list(self._tasks):
                task.cancel()
            self._writer.close()

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._request(event.stream_id, [(str(k), str(v)) for k, v in event.headers or []])
        elif isinstance(event, h2.events.DataReceived):
            if event.flow_controlled_length:
                self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if (stream := self._streams.get(event.stream_id)) is not None and event.data:
                stream.feed(event.data)
        elif isinstance(event, h2.events.StreamEnded):
            if (stream := self._streams.get(event.stream_id)) is not None:
                stream.input_ended()
        elif isinstance(event, h2.events.StreamReset):
            if (stream := self._streams.pop(event.stream_id, None)) is not None:
                stream.ended = True
                stream.input_ended()
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._window_open.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            for stream in self._streams.values():
                stream.ended = True
                stream.input_ended()

    def _request(self, stream_id: int, headers: list[tuple[str, str]]) -> None:
        fields: dict[str, str] = {}
        for name, value in headers:
            fields[name] = f"{fields[name]},{value}" if name in fields else value
        try:
            verified, model_id = self._server.authorize(fields)
        except ApiError as error:
            self._server.stats.refused[error.code] += 1
            logger.warning("refused a Nova Sonic stream: %s %s (%s)", error.status, error.code, error.message)
            body = json.dumps({"message": error.message}).encode()
            self._h2.send_headers(
                stream_id,
                [
                    (":status", str(int(error.status))),
                    ("content-type", "application/json"),
                    ("x-amzn-errortype", error.code),
                    ("x-amzn-requestid", str(uuid.uuid4())),
                    ("content-length", str(len(body))),
                ],
            )
            self._h2.send_data(stream_id, body, end_stream=True)
            return
        self._h2.send_headers(
            stream_id,
            [(":status", "200"), ("content-type", EVENT_STREAM_TYPE), ("x-amzn-requestid", str(uuid.uuid4()))],
        )
        info = StreamInfo(
            model_id=model_id, session_id=str(uuid.uuid4()), access_key_id=verified.credentials.access_key
        )
        chain = EventSignatureChain(
            verified, max_clock_skew_seconds=self._server.config.max_clock_skew_seconds, clock=self._server.clock
        )
        stream = _Stream(self, stream_id, chain, info)
        self._streams[stream_id] = stream
        self._server.stats.streams += 1
        self._server.stats.keys[info.access_key_id] += 1
        session = self._server.session_factory(info, stream.emit)
        task = asyncio.create_task(
            stream.run(session, self._server.config.session_limit_seconds, self._server.issuer, self._server.stats)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def send(self, stream_id: int, data: bytes) -> None:
        """Send ``data`` on a stream as flow control allows, waiting for the window to open."""
        view = memoryview(data)
        while view:
            if stream_id not in self._streams or self._writer.is_closing():
                raise ConnectionError("the stream is gone")
            window = min(self._h2.local_flow_control_window(stream_id), self._h2.max_outbound_frame_size)
            if window <= 0:
                self._window_open.clear()
                await self._window_open.wait()
                continue
            self._h2.send_data(stream_id, bytes(view[:window]))
            view = view[window:]
            self._flush()
        await self._writer.drain()

    def abort(self) -> None:
        """Cut the connection at once."""
        self._writer.transport.abort()

    def end_stream(self, stream_id: int) -> None:
        """Close our side of a stream (the answer is complete)."""
        if self._streams.pop(stream_id, None) is None:
            return
        with contextlib.suppress(h2.exceptions.H2Error):
            self._h2.end_stream(stream_id)
            self._flush()


class NovaSonicServer:
    """The request checks and the connections: everything but the thread it runs on.

    Args:
        config: Settings.
        session_factory: Makes the model of each stream.
        issuer: Temporary credentials that are accepted besides the configured key.
        clock: Wall clock, epoch seconds.
    """

    def __init__(
        self,
        config: NovaSonicConfig,
        session_factory: SessionFactory,
        *,
        issuer: CredentialIssuer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.session_factory = session_factory
        self.issuer = issuer or CredentialIssuer(clock=clock)
        self.clock = clock
        self.stats = StandInStats()
        self.connections: set[_Connection] = set()
        self._verifier = SigV4Verifier(
            access_key_id=config.access_key_id,
            secret_access_key=config.secret_access_key,
            session_token=None,
            lookup=self.issuer.lookup,
            region=config.region,
            service=SERVICE,
            max_expires_seconds=1,
            max_clock_skew_seconds=config.max_clock_skew_seconds,
            clock=clock,
        )

    def authorize(self, fields: dict[str, str]) -> tuple[VerifiedSignature, str]:
        """Check a request's headers as Bedrock does: authentication first, then the operation.

        Returns:
            The verified signature and the model id.

        Raises:
            ApiError: The answer to send instead.
        """
        raw_path = fields.get(":path", "")
        path = raw_path.partition("?")[0]
        matched = _PATH.match(path)
        if fields.get(":method") != "POST" or matched is None:
            raise ApiError.unknown_operation()
        headers = {name: value for name, value in fields.items() if not name.startswith(":")}
        headers.setdefault("host", fields.get(":authority", ""))
        request = SignedRequest(method="POST", raw_path=path, query=[], headers=headers)
        verified = self._verifier.verify(request)
        model_id = unquote(matched["model"])
        if model_id not in self.config.model_ids:
            raise ApiError("ValidationException", 400, "The provided model identifier is invalid.")
        if headers.get("content-type") != EVENT_STREAM_TYPE:
            raise ApiError("ValidationException", 400, f"The request's Content-Type must be {EVENT_STREAM_TYPE}.")
        return verified, model_id

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection until it closes."""
        writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = _Connection(self, reader, writer)
        self.connections.add(connection)
        try:
            await connection.serve()
        finally:
            self.connections.discard(connection)

    def drop_connections(self) -> None:
        """Cut every open connection (their streams end as a network failure would end them)."""
        for connection in list(self.connections):
            connection.abort()

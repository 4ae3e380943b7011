"""The bidirectional stream's bytes, read and written with the codec the SDK itself ships.

``smithy_aws_event_stream`` frames AWS event-stream messages (prelude, headers, payload, CRCs) and
``aws_sdk_bedrock_runtime``'s models say what a chunk is; here they run in server mode, so what the
stand-in accepts is exactly what the SDK's own deserializer accepts, and what it sends is exactly
what the SDK serializes. Each input message arrives signed: an outer message whose ``:date`` and
``:chunk-signature`` headers sign its payload, the inner (encoded) ``chunk`` event.
"""

from __future__ import annotations

import datetime
import struct
from dataclasses import dataclass
from io import BytesIO
from typing import Final

from aws_sdk_bedrock_runtime._private.schemas import (
    AMAZON_BEDROCK_FRONTEND_SERVICE as _SERVICE_SCHEMA,
)
from aws_sdk_bedrock_runtime.models import (
    BidirectionalOutputPayloadPart,
    InvokeModelWithBidirectionalStreamInputChunk,
    InvokeModelWithBidirectionalStreamOutputChunk,
    InvokeModelWithBidirectionalStreamOutputModelStreamErrorException,
    InvokeModelWithBidirectionalStreamOutputModelTimeoutException,
    InvokeModelWithBidirectionalStreamOutputValidationException,
    ModelStreamErrorException,
    ModelTimeoutException,
    ValidationException,
    _InvokeModelWithBidirectionalStreamInputDeserializer,
)
from smithy_aws_core.aio.protocols import RestJsonClientProtocol
from smithy_aws_event_stream._private.deserializers import EventDeserializer
from smithy_aws_event_stream._private.serializers import EventSerializer
from smithy_aws_event_stream.events import Event, EventHeaderEncoder, EventMessage
from smithy_aws_event_stream.exceptions import EventError
from smithy_core.exceptions import SmithyError

_CODEC: Final = RestJsonClientProtocol(_SERVICE_SCHEMA).payload_codec
_PRELUDE_BYTES: Final = 12
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024 + 128 * 1024
"""The event-stream format's own ceiling (16 MiB payload, 128 KiB headers): a longer prelude is junk."""


class WireError(ValueError):
    """Bytes that are not a well-formed, signed ``chunk`` event; the message says what is wrong."""


@dataclass(frozen=True)
class SignedMessage:
    """One outer message as it arrived.

    Attributes:
        date: Its ``:date`` header.
        encoded_date_header: That header as it was signed (re-encoded the way the signer encodes it).
        signature: Its ``:chunk-signature`` (32 bytes).
        payload: The encoded inner message, or ``b""`` for the stream's final message.
    """

    date: datetime.datetime
    encoded_date_header: bytes
    signature: bytes
    payload: bytes


class MessageReader:
    """Splits a byte stream into event-stream messages as its bytes arrive."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Event]:
        """Add ``data``; return the messages it completes (CRCs checked).

        Raises:
            WireError: A message is malformed (bad length or checksum).
        """
        self._buffer += data
        events: list[Event] = []
        while len(self._buffer) >= _PRELUDE_BYTES:
            (total,) = struct.unpack_from("!I", self._buffer)
            if not _PRELUDE_BYTES + 4 <= total <= MAX_MESSAGE_BYTES:
                raise WireError(f"an event-stream message of {total} bytes is not possible")
            if len(self._buffer) < total:
                break
            message, self._buffer = bytes(self._buffer[:total]), self._buffer[total:]
            events.append(decode_message(message))
        return events

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole message."""
        return len(self._buffer)


def decode_message(data: bytes) -> Event:
    """Decode one whole message, checking both CRCs.

    Raises:
        WireError: It is malformed.
    """
    try:
        event = Event.decode(BytesIO(data))
    except (EventError, SmithyError, struct.error, ValueError) as exc:
        raise WireError(f"malformed event-stream message: {exc}") from None
    if event is None:
        raise WireError("empty event-stream message")
    return event


def signed_message(event: Event) -> SignedMessage:
    """Read the signing headers of an outer message.

    Raises:
        WireError: ``:date`` or ``:chunk-signature`` is missing or of the wrong type.
    """
    headers = event.message.headers
    date = headers.get(":date")
    signature = headers.get(":chunk-signature")
    if not isinstance(date, datetime.datetime) or not isinstance(signature, bytes):
        raise WireError("every event must be signed: a :date timestamp and a :chunk-signature header")
    encoder = EventHeaderEncoder()
    encoder.encode_headers({":date": date})
    return SignedMessage(
        date=date, encoded_date_header=encoder.get_result(), signature=signature, payload=event.message.payload
    )


def chunk_bytes(inner: bytes) -> bytes:
    """The JSON bytes of an inner ``chunk`` event, read by the SDK's own deserializer.

    Raises:
        WireError: It is not an event, not a ``chunk``, or has no bytes.
    """
    event = decode_message(inner)
    if event.message.headers.get(":message-type") != "event":
        raise WireError("an input message must have :message-type event")
    try:
        value = _InvokeModelWithBidirectionalStreamInputDeserializer().deserialize(
            EventDeserializer(event=event, payload_codec=_CODEC, is_client_mode=False)
        )
    except (SmithyError, EventError, KeyError, ValueError, TypeError) as exc:
        raise WireError(f"the input event does not deserialize: {exc}") from None
    if not isinstance(value, InvokeModelWithBidirectionalStreamInputChunk):
        raise WireError(f"unknown input event type {event.message.headers.get(':event-type')!r}; only chunk exists")
    payload = value.value.bytes_
    if not isinstance(payload, bytes) or not payload:
        raise WireError("a chunk must carry bytes")
    return payload


def _encode(shape: object) -> bytes:
    serializer = EventSerializer(payload_codec=_CODEC, is_client_mode=False)  # type: ignore[abstract]
    shape.serialize(serializer)  # type: ignore[attr-defined]
    message = serializer.get_result()
    if not isinstance(message, EventMessage):
        raise TypeError(f"{type(shape).__name__} did not serialize to an event message")
    return message.encode()


def output_chunk(payload: bytes) -> bytes:
    """An output ``chunk`` event carrying the JSON ``payload`` (one documented output event)."""
    return _encode(InvokeModelWithBidirectionalStreamOutputChunk(value=BidirectionalOutputPayloadPart(bytes_=payload)))


def validation_exception(message: str) -> bytes:
    """A ``validationException`` event: the input broke the API's rules; the stream then ends."""
    return _encode(
        InvokeModelWithBidirectionalStreamOutputValidationException(value=ValidationException(message=message))
    )


def model_timeout_exception(message: str) -> bytes:
    """A ``modelTimeoutException`` event, as the service sends when a session reaches its time limit."""
    return _encode(
        InvokeModelWithBidirectionalStreamOutputModelTimeoutException(value=ModelTimeoutException(message=message))
    )


def model_stream_error(message: str) -> bytes:
    """A ``modelStreamErrorException`` event: the stand-in itself failed while answering."""
    return _encode(
        InvokeModelWithBidirectionalStreamOutputModelStreamErrorException(
            value=ModelStreamErrorException(message=message)
        )
    )

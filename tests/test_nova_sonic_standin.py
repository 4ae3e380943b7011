"""The Nova Sonic stand-in seen through the unmodified Bedrock runtime SDK, one event at a time.

Each test opens raw streams (:mod:`tests.nova_sonic_support`) and checks what a client observes: the
documented order of output events, barge-in, tool use, SigV4 refusals of the request and of the event
signature chain, malformed events, the session limit, and underneath them the wire codec and TLS.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from io import BytesIO
from typing import Any

import numpy as np
import pytest
from aws_sdk_bedrock_runtime._private.schemas import AMAZON_BEDROCK_FRONTEND_SERVICE
from aws_sdk_bedrock_runtime.client import BedrockRuntimeClient
from aws_sdk_bedrock_runtime.config import Config
from aws_sdk_bedrock_runtime.models import (
    InvokeModelWithBidirectionalStreamOperationInput,
    InvokeModelWithBidirectionalStreamOutputChunk,
    InvokeModelWithBidirectionalStreamOutputValidationException,
    ModelTimeoutException,
    ValidationException,
    _InvokeModelWithBidirectionalStreamOutputDeserializer,
)
from smithy_aws_core.aio.protocols import RestJsonClientProtocol
from smithy_aws_core.auth.sigv4 import SigV4AuthScheme
from smithy_aws_core.identity.components import AWSCredentialsIdentity, AWSIdentityProperties
from smithy_aws_event_stream._private.deserializers import EventDeserializer
from smithy_aws_event_stream.events import Event
from smithy_core.aio.interfaces.identity import IdentityResolver
from smithy_core.exceptions import CallError, SmithyError
from smithy_core.shapes import ShapeID

from agent.local_speech import reply_to
from local.call_common import SPEECH_RMS, rms
from local.nova_sonic.config import NovaSonicConfig, NovaSonicConfigError
from local.nova_sonic.credentials import IssuedCredentials
from local.nova_sonic.model import synthesize
from local.nova_sonic.server import Emit, StreamInfo
from local.nova_sonic.standin import NovaSonicStandIn
from local.nova_sonic.wire import MessageReader, WireError, output_chunk, validation_exception
from tests.nova_sonic_support import MODEL_ID, Session, event, open_session, trusting

pytestmark = pytest.mark.slow  # a client refusing the certificate learns it only after s2n's 10-30 s blinding

PHRASE = "how are you"
"""The one phrase pocketsphinx reliably hears from espeak-ng."""
LONG_TEXT = "please repeat this long sentence about the quick brown fox jumping over the lazy dog many times"
"""Interactive text whose answer ("You said: ...") lasts about six seconds."""
ASKED_AUDIO = {"mediaType": "audio/lpcm", "sampleRateHertz": 24000, "sampleSizeBits": 16, "channelCount": 1}
"""What ``Session.open`` asks for in ``audioOutputConfiguration`` (besides voice, type and encoding)."""
BYTES_PER_SECOND = 24000 * 2
INTERRUPTED = '{ "interrupted" : true }'
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather forecast for a city.",
    "inputSchema": {
        "json": json.dumps({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
    },
}

SPOKEN_ANSWER = [
    "contentStart ASSISTANT TEXT SPECULATIVE", "textOutput", "contentEnd PARTIAL_TURN",
    "contentStart ASSISTANT AUDIO", "audioOutput...", "contentEnd END_TURN",
    "contentStart ASSISTANT TEXT FINAL", "textOutput", "contentEnd END_TURN",
    "usageEvent", "completionEnd END_TURN",
]  # fmt: skip
"""The documented output events of an answer, once its words are known."""
HEARD_ANSWER = ["completionStart", "contentStart USER TEXT FINAL", "textOutput", "contentEnd END_TURN", *SPOKEN_ANSWER]
"""An answer to speech: the transcript comes first."""


# --- helpers ------------------------------------------------------------------------------------


def run[T](scenario: Coroutine[Any, Any, T], timeout: float) -> T:
    return asyncio.run(asyncio.wait_for(scenario, timeout))


def grown(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """What a stats table gained since ``before`` (the stand-in is shared by the module's tests)."""
    return dict(Counter(after) - Counter(before))


def answers(session: Session) -> list[list[dict[str, Any]]]:
    """The received events grouped by ``completionId``, answers in the order they began."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for item in session.received:
        body = next(iter(item.values()))
        grouped.setdefault(body["completionId"], []).append(item)
    return list(grouped.values())


def shape(events: list[dict[str, Any]]) -> list[str]:
    """Events as short labels (``contentStart ASSISTANT TEXT FINAL``), a run of audioOutput as one."""
    labels: list[str] = []
    for item in events:
        ((name, body),) = item.items()
        if name == "contentStart":
            stage = json.loads(body.get("additionalModelFields") or "{}").get("generationStage")
            label = " ".join(part for part in (name, body["role"], body["type"], stage) if part)
        elif name in ("contentEnd", "completionEnd"):
            label = f"{name} {body['stopReason']}"
        else:
            label = "audioOutput..." if name == "audioOutput" else name
        if not (labels and label == labels[-1] == "audioOutput..."):
            labels.append(label)
    return labels


def pcm(events: list[dict[str, Any]]) -> bytes:
    return b"".join(base64.b64decode(item["audioOutput"]["content"]) for item in events if "audioOutput" in item)


def contents(events: list[dict[str, Any]], name: str) -> list[Any]:
    return [item[name] for item in events if name in item]


def identity(credentials: IssuedCredentials) -> AWSCredentialsIdentity:
    return AWSCredentialsIdentity(
        access_key_id=credentials.access_key_id,
        secret_access_key=credentials.secret_access_key,
        session_token=credentials.session_token,
    )


class SwitchingResolver(IdentityResolver[AWSCredentialsIdentity, AWSIdentityProperties]):
    """Gives ``first`` to the request's signature and ``then`` to every event: credentials renewed mid-stream."""

    def __init__(self, first: AWSCredentialsIdentity, then: AWSCredentialsIdentity) -> None:
        self._identities = (first, then)
        self.calls = 0

    def __deepcopy__(self, memo: dict[int, Any]) -> SwitchingResolver:
        return self  # the client deep-copies its config per operation; the call count must be shared

    async def get_identity(self, *, properties: AWSIdentityProperties) -> AWSCredentialsIdentity:
        self.calls += 1
        return self._identities[0] if self.calls == 1 else self._identities[1]


async def wait_ended(session: Session, timeout: float = 10) -> BaseException | None:
    await asyncio.wait_for(session.ended.wait(), timeout)
    return session.error


@pytest.fixture(scope="module")
def sonic() -> Iterator[NovaSonicStandIn]:
    with NovaSonicStandIn(NovaSonicConfig()) as stand_in:
        yield stand_in


@pytest.fixture
def trusted(sonic: NovaSonicStandIn) -> Iterator[NovaSonicStandIn]:
    """The stand-in, with clients made during the test trusting its CA."""
    with trusting(sonic.ca_file):
        yield sonic


# --- conversations ------------------------------------------------------------------------------


def test_a_spoken_question_gets_the_documented_events_a_transcript_and_a_spoken_answer(
    trusted: NovaSonicStandIn,
) -> None:
    ended_before = dict(trusted.stats.ended)

    async def scenario() -> Session:
        session = await open_session(trusted.url)
        await session.open()
        await session.say(PHRASE)
        await session.wait_for(lambda: "completionEnd" in session.names(), 20, "the answer")
        await session.close()
        return session

    session = run(scenario(), 40)
    assert session.error is None
    assert grown(ended_before, trusted.stats.ended) == {}
    assert shape(session.received) == HEARD_ANSWER
    assert session.texts("USER", "FINAL") == [PHRASE]
    assert session.texts("ASSISTANT", "SPECULATIVE") == session.texts("ASSISTANT", "FINAL") == [reply_to(PHRASE)]
    (audio_start,) = [start for start in contents(session.received, "contentStart") if start["type"] == "AUDIO"]
    assert audio_start["audioOutputConfiguration"] == {**ASKED_AUDIO, "encoding": "base64"}
    audio = pcm(session.received)
    assert len(audio) % 2 == 0 and 1 < len(audio) / BYTES_PER_SECOND < 10
    assert rms(np.frombuffer(audio, dtype=np.int16)) > SPEECH_RMS
    bodies = [next(iter(item.values())) for item in session.received]
    assert {body["promptName"] for body in bodies} == {session.prompt}
    assert len({body["sessionId"] for body in bodies}) == 1 and bodies[0]["sessionId"]


def test_a_greeting_request_is_answered_with_exactly_the_words_asked_for(trusted: NovaSonicStandIn) -> None:
    async def scenario() -> Session:
        session = await open_session(trusted.url)
        await session.open()
        await session.text("USER", "Greet me by saying exactly: Welcome aboard.", interactive=True)
        await session.wait_for(lambda: "completionEnd" in session.names(), 20, "the greeting")
        await session.close()
        return session

    session = run(scenario(), 30)
    assert session.error is None
    assert shape(session.received) == ["completionStart", *SPOKEN_ANSWER]
    assert session.texts("ASSISTANT", "SPECULATIVE") == session.texts("ASSISTANT", "FINAL") == ["Welcome aboard."]


def test_speech_during_an_answer_interrupts_it_and_is_answered_in_full(trusted: NovaSonicStandIn) -> None:
    async def scenario() -> tuple[Session, int]:
        session = await open_session(trusted.url)
        await session.open()
        await session.text("USER", LONG_TEXT, interactive=True)
        await session.wait_for(lambda: session.names().count("audioOutput") >= 5, 20, "the first answer's audio")
        await session.say(PHRASE)
        await session.wait_for(lambda: session.names().count("completionEnd") == 2, 20, "the second answer")
        await session.close()
        spoken = session.texts("ASSISTANT", "SPECULATIVE")[0]
        full = await synthesize(spoken, sample_rate=24000, words_per_minute=NovaSonicConfig().words_per_minute)
        return session, len(full)

    session, full_bytes = run(scenario(), 40)
    assert session.error is None
    first, second = answers(session)
    assert shape(first) == [
        "completionStart", *SPOKEN_ANSWER[:6],
        "contentStart ASSISTANT TEXT FINAL", "textOutput", "contentEnd INTERRUPTED",
        "usageEvent", "completionEnd INTERRUPTED",
    ]  # fmt: skip
    assert contents(first, "textOutput")[0]["content"] == f"You said: {LONG_TEXT}."
    assert contents(first, "textOutput")[-1]["content"] == INTERRUPTED
    assert full_bytes > 4 * BYTES_PER_SECOND  # the uninterrupted rendering lasts seconds
    assert 0 < len(pcm(first)) < 0.75 * full_bytes
    assert shape(second) == HEARD_ANSWER
    assert [text["content"] for text in contents(second, "textOutput")] == [PHRASE, *[reply_to(PHRASE)] * 2]
    assert len(pcm(second)) > BYTES_PER_SECOND


def test_a_named_tool_is_called_its_result_spoken_and_an_unknown_tool_use_id_refused(
    trusted: NovaSonicStandIn,
) -> None:
    ended_before = dict(trusted.stats.ended)

    async def scenario() -> tuple[Session, list[dict[str, Any]]]:
        session = await open_session(trusted.url)
        await session.open(tools=[WEATHER_TOOL])
        await session.text("USER", "get weather in Paris", interactive=True)
        await session.wait_for(lambda: "toolUse" in session.names(), 20, "the tool call")
        (tool_use,) = contents(session.received, "toolUse")
        await session.tool_result(tool_use["toolUseId"], json.dumps({"forecast": "sunny and 21 degrees"}))
        await session.wait_for(lambda: "completionEnd" in session.names(), 20, "the answer")
        answered = list(session.received)
        await session.tool_result("never-issued", json.dumps({"forecast": "rain"}))
        await wait_ended(session)
        return session, answered

    session, answered = run(scenario(), 40)
    assert shape(answered) == [
        "completionStart", "contentStart TOOL TOOL", "toolUse", "contentEnd TOOL_USE", *SPOKEN_ANSWER
    ]  # fmt: skip
    (tool_use,) = contents(answered, "toolUse")
    assert tool_use["toolName"] == "get_weather" and tool_use["toolUseId"]
    assert "paris" in json.loads(tool_use["content"])["city"].lower()
    assert any("sunny and 21 degrees" in text for text in session.texts("ASSISTANT", "FINAL"))
    assert isinstance(session.error, ValidationException)
    assert "toolUseId" in str(session.error.message) and "never-issued" in str(session.error.message)
    assert grown(ended_before, trusted.stats.ended) == {"validationException": 1}


# --- SigV4 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "secret", "code"),
    [
        ("local", "not-the-secret", "InvalidSignatureException"),
        ("AKIDUNKNOWN0000000000", "local", "UnrecognizedClientException"),
    ],
)
def test_a_request_signed_with_wrong_credentials_is_refused(
    trusted: NovaSonicStandIn, key: str, secret: str, code: str
) -> None:
    refused_before, streams_before = dict(trusted.stats.refused), trusted.stats.streams

    async def scenario() -> Session:
        session = await open_session(trusted.url, key=key, secret=secret)
        await wait_ended(session)
        return session

    session = run(scenario(), 20)
    error = session.error
    assert isinstance(error, CallError) and code in str(error)
    assert session.received == []
    assert grown(refused_before, trusted.stats.refused) == {code: 1}
    assert trusted.stats.streams == streams_before


def test_temporary_credentials_are_accepted_until_they_expire(trusted: NovaSonicStandIn) -> None:
    valid, short_lived = trusted.issuer.issue(60), trusted.issuer.issue(1)

    async def scenario() -> tuple[Session, Session]:
        accepted = await open_session(
            trusted.url, key=valid.access_key_id, secret=valid.secret_access_key, token=valid.session_token
        )
        await accepted.open()
        await accepted.close()
        await asyncio.sleep(max(0.0, short_lived.expires_at - time.time()) + 0.5)
        refused = await open_session(
            trusted.url,
            key=short_lived.access_key_id,
            secret=short_lived.secret_access_key,
            token=short_lived.session_token,
        )
        await wait_ended(refused)
        return accepted, refused

    refused_before = dict(trusted.stats.refused)
    accepted, refused = run(scenario(), 20)
    assert accepted.error is None
    assert trusted.stats.keys.get(valid.access_key_id) == 1
    assert isinstance(refused.error, CallError) and "UnrecognizedClientException" in str(refused.error)
    assert short_lived.access_key_id not in trusted.stats.keys
    assert grown(refused_before, trusted.stats.refused) == {"UnrecognizedClientException": 1}


def test_a_client_that_does_not_trust_the_run_s_ca_cannot_connect(
    sonic: NovaSonicStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    streams_before = sonic.stats.streams

    async def scenario() -> BaseException | None:
        return await wait_ended(await open_session(sonic.url), 45)

    error = run(scenario(), 50)
    assert isinstance(error, SmithyError) and "TLS" in repr(error)
    assert sonic.stats.streams == streams_before


def test_events_signed_with_other_credentials_than_the_request_end_the_stream(trusted: NovaSonicStandIn) -> None:
    request_key, renewed_key = trusted.issuer.issue(60), trusted.issuer.issue(60)
    resolver = SwitchingResolver(identity(request_key), identity(renewed_key))
    ended_before = dict(trusted.stats.ended)

    async def scenario() -> Session:
        bedrock = BedrockRuntimeClient(
            config=Config(
                endpoint_uri=trusted.url,
                region="us-east-1",
                aws_credentials_identity_resolver=resolver,
                auth_schemes={ShapeID("aws.auth#sigv4"): SigV4AuthScheme(service="bedrock")},
            )
        )
        stream = await bedrock.invoke_model_with_bidirectional_stream(
            InvokeModelWithBidirectionalStreamOperationInput(model_id=MODEL_ID)
        )
        session = Session(stream)
        session.start_reading()
        await session.send(_prompt_only(session)[0])
        await wait_ended(session)
        return session

    session = run(scenario(), 20)
    assert resolver.calls >= 2  # the request and at least one event were signed
    assert isinstance(session.error, ValidationException)
    assert "signature" in str(session.error.message)
    assert trusted.stats.keys.get(request_key.access_key_id) == 1
    assert grown(ended_before, trusted.stats.ended) == {"InvalidSignatureException": 1}


# --- malformed events -----------------------------------------------------------------------------


def _prompt_only(session: Session) -> list[bytes]:
    """sessionStart and promptStart, with no content opened yet."""
    audio_output = {**ASKED_AUDIO, "encoding": "base64", "audioType": "SPEECH", "voiceId": "matthew"}
    return [
        event("sessionStart", {"inferenceConfiguration": {"maxTokens": 1024, "topP": 0.9, "temperature": 0.7}}),
        event("promptStart", {"promptName": session.prompt, "audioOutputConfiguration": audio_output}),
    ]


def _audio_before_its_content(session: Session) -> list[bytes]:
    ids = {"promptName": session.prompt, "contentName": session.audio}
    return [*_prompt_only(session), event("audioInput", {**ids, "content": base64.b64encode(bytes(640)).decode()})]


def _audio_at_44100_hz(session: Session) -> list[bytes]:
    configuration = {**ASKED_AUDIO, "sampleRateHertz": 44100, "audioType": "SPEECH", "encoding": "base64"}
    start = {"promptName": session.prompt, "contentName": session.audio, "type": "AUDIO", "interactive": True}
    start |= {"role": "USER", "audioInputConfiguration": configuration}
    return [*_prompt_only(session), event("contentStart", start)]


def _output_event_sent_as_input(session: Session) -> list[bytes]:
    return [event("audioOutput", {"promptName": session.prompt, "contentName": session.audio})]


@pytest.mark.parametrize(
    ("opened", "events", "problem"),
    [
        (True, lambda session: [b"{not json"], "not JSON"),
        (False, _audio_before_its_content, "is not an open content"),
        (False, _audio_at_44100_hz, "sampleRateHertz: 44100 is not one of"),
        (True, _output_event_sent_as_input, "unknown input event 'audioOutput'"),
    ],
    ids=["not-json", "audio-before-content-start", "44100-hz", "unknown-event"],
)
def test_a_malformed_event_ends_the_stream_with_a_validation_exception_naming_the_problem(
    trusted: NovaSonicStandIn, opened: bool, events: Callable[[Session], list[bytes]], problem: str
) -> None:
    ended_before = dict(trusted.stats.ended)

    async def scenario() -> Session:
        session = await open_session(trusted.url)
        if opened:
            await session.open()
        for raw in events(session):
            await session.send(raw)
        await wait_ended(session)
        return session

    session = run(scenario(), 20)
    assert isinstance(session.error, ValidationException)
    assert problem in str(session.error.message)
    assert grown(ended_before, trusted.stats.ended) == {"validationException": 1}


# --- the session limit ----------------------------------------------------------------------------


def test_a_session_past_its_limit_ends_with_model_timeout_exception() -> None:
    with NovaSonicStandIn(NovaSonicConfig(session_limit_seconds=2)) as limited, trusting(limited.ca_file):

        async def scenario() -> tuple[Session, float]:
            began = time.monotonic()
            session = await open_session(limited.url)
            await session.open()
            await wait_ended(session, 6)
            return session, time.monotonic() - began

        session, seconds = run(scenario(), 10)
        assert isinstance(session.error, ModelTimeoutException)
        assert 1.9 < seconds < 4
        assert limited.stats.ended == {"modelTimeoutException": 1}


# --- the wire codec -------------------------------------------------------------------------------

_CODEC = RestJsonClientProtocol(AMAZON_BEDROCK_FRONTEND_SERVICE).payload_codec


def client_reads(message: bytes) -> Any:
    """``message`` as the SDK's client decodes an output event."""
    decoded = Event.decode(BytesIO(message))
    assert decoded is not None
    return _InvokeModelWithBidirectionalStreamOutputDeserializer().deserialize(
        EventDeserializer(event=decoded, payload_codec=_CODEC, is_client_mode=True)
    )


def test_message_reader_splits_messages_fed_byte_by_byte() -> None:
    first, second = output_chunk(b'{"event": {"a": {}}}'), output_chunk(b'{"event": {"b": {}}}')
    reader = MessageReader()
    completed_at: list[int] = []
    for index, byte in enumerate(first + second):
        completed_at += [index] * len(reader.feed(bytes([byte])))
    assert completed_at == [len(first) - 1, len(first + second) - 1]
    assert reader.pending == 0


def test_message_reader_refuses_a_flipped_bit() -> None:
    message = bytearray(output_chunk(b'{"event": {"a": {}}}'))
    message[len(message) // 2] ^= 0x10
    with pytest.raises(WireError, match="malformed"):
        MessageReader().feed(bytes(message))


def test_output_events_decode_with_the_sdk_s_client_deserializer() -> None:
    payload = b'{"event": {"completionStart": {"sessionId": "s"}}}'
    chunk = client_reads(output_chunk(payload))
    assert isinstance(chunk, InvokeModelWithBidirectionalStreamOutputChunk)
    assert chunk.value.bytes_ == payload
    refusal = client_reads(validation_exception("x"))
    assert isinstance(refusal, InvokeModelWithBidirectionalStreamOutputValidationException)
    assert refusal.value.message == "x"


# --- configuration and TLS ------------------------------------------------------------------------


class _Mute:
    """A model that hears nothing and never answers (these tests only open TLS connections)."""

    async def receive(self, event: bytes) -> None:
        """Ignore the event."""

    async def close(self) -> None:
        """Nothing to stop."""


def _mute(info: StreamInfo, emit: Emit) -> _Mute:
    return _Mute()


def test_a_non_loopback_host_is_refused() -> None:
    with pytest.raises(NovaSonicConfigError, match="host must be a loopback address"):
        NovaSonicConfig(host="0.0.0.0")  # noqa: S104 - the address under test


def test_the_server_certificate_verifies_against_the_run_s_ca_which_is_deleted_on_stop() -> None:
    stand_in = NovaSonicStandIn(NovaSonicConfig(), session_factory=_mute).start()
    try:
        ca_file, port = stand_in.ca_file, stand_in.port
        assert ca_file.is_file()
        trusting_context = ssl.create_default_context(cafile=str(ca_file))
        trusting_context.set_alpn_protocols(["h2"])
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            trusting_context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.selected_alpn_protocol() == "h2"
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            pytest.raises(ssl.SSLCertVerificationError),
        ):
            ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")
    finally:
        stand_in.stop()
    assert not ca_file.exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()

"""A raw Nova Sonic client for the stand-in's tests: the unmodified Bedrock runtime SDK, events by hand.

Pipecat's service is what the agent uses (the call tests drive it); here each event is written out,
so a test can send exactly the sequence (or the malformed event) it means, and read every output
event the stand-in sends back.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aws_sdk_bedrock_runtime.client import BedrockRuntimeClient
from aws_sdk_bedrock_runtime.config import Config
from aws_sdk_bedrock_runtime.models import (
    BidirectionalInputPayloadPart,
    InvokeModelWithBidirectionalStreamInputChunk,
    InvokeModelWithBidirectionalStreamOperationInput,
    InvokeModelWithBidirectionalStreamOutputChunk,
)
from smithy_aws_core.auth.sigv4 import SigV4AuthScheme
from smithy_aws_core.identity.static import StaticCredentialsResolver
from smithy_core.shapes import ShapeID

from local.call_common import espeak_pcm

MODEL_ID = "amazon.nova-2-sonic-v1:0"
INPUT_RATE = 16000
FRAME_BYTES = INPUT_RATE * 2 * 32 // 1000  # the documented 32 ms frames


@contextmanager
def trusting(ca_file: Path) -> Iterator[None]:
    """Make new CRT clients trust ``ca_file`` (the CRT reads ``SSL_CERT_FILE`` when a client is made)."""
    before = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = str(ca_file)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("SSL_CERT_FILE", None)
        else:
            os.environ["SSL_CERT_FILE"] = before


def client(
    url: str,
    *,
    key: str = "local",
    secret: str = "local",  # noqa: S107 - local mode's dummy key
    token: str | None = None,
) -> BedrockRuntimeClient:
    """A Bedrock runtime client signing with these credentials, as Pipecat's service builds one."""
    return BedrockRuntimeClient(
        config=Config(
            endpoint_uri=url,
            region="us-east-1",
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            aws_session_token=token,
            aws_credentials_identity_resolver=StaticCredentialsResolver(),
            auth_schemes={ShapeID("aws.auth#sigv4"): SigV4AuthScheme(service="bedrock")},
        )
    )


def event(name: str, body: dict[str, Any]) -> bytes:
    return json.dumps({"event": {name: body}}).encode()


@dataclass
class Session:
    """One open stream, its ids, and every output event received so far (by a background reader)."""

    stream: Any
    prompt: str = field(default_factory=lambda: str(uuid.uuid4()))
    audio: str = field(default_factory=lambda: str(uuid.uuid4()))
    received: list[dict[str, Any]] = field(default_factory=list)
    error: BaseException | None = None
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None

    async def send(self, payload: bytes) -> None:
        await self.stream.input_stream.send(
            InvokeModelWithBidirectionalStreamInputChunk(value=BidirectionalInputPayloadPart(bytes_=payload))
        )

    async def _read(self) -> None:
        try:
            output = await self.stream.await_output()
            while (result := await output[1].receive()) is not None:
                if isinstance(result, InvokeModelWithBidirectionalStreamOutputChunk) and result.value.bytes_:
                    self.received.append(json.loads(result.value.bytes_)["event"])
        except Exception as exc:  # the service's error events surface here, raised by the SDK
            self.error = exc
        finally:
            self.ended.set()

    def start_reading(self) -> None:
        self._reader = asyncio.get_running_loop().create_task(self._read())

    def names(self) -> list[str]:
        return [next(iter(item)) for item in self.received]

    def texts(self, role: str, stage: str | None = None) -> list[str]:
        """The ``textOutput`` contents of ``role`` (and generation stage), in order."""
        found, current = [], None
        for item in self.received:
            if "contentStart" in item:
                start = item["contentStart"]
                fields = json.loads(start.get("additionalModelFields") or "{}")
                current = (start["role"], start["type"], fields.get("generationStage"))
            elif "textOutput" in item and current is not None and current[0] == role and stage in (None, current[2]):
                found.append(item["textOutput"]["content"])
        return found

    def audio_bytes(self) -> int:
        chunks = [item["audioOutput"]["content"] for item in self.received if "audioOutput" in item]
        return sum(len(base64.b64decode(chunk)) for chunk in chunks)

    async def wait_for(self, condition: Any, timeout: float, what: str) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not condition():
            if self.ended.is_set() and not condition():
                raise AssertionError(f"the stream ended before {what}: {self.error!r}; got {self.names()}")
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no {what} within {timeout} s; got {self.names()}")
            await asyncio.sleep(0.05)

    # The documented opening: session, prompt (with tools), system prompt, then the audio content.
    async def open(self, *, tools: list[dict[str, Any]] | None = None, system: str = "Be brief.") -> None:
        await self.send(
            event("sessionStart", {"inferenceConfiguration": {"maxTokens": 1024, "topP": 0.9, "temperature": 0.7}})
        )
        prompt: dict[str, Any] = {
            "promptName": self.prompt,
            "textOutputConfiguration": {"mediaType": "text/plain"},
            "audioOutputConfiguration": {
                "mediaType": "audio/lpcm",
                "sampleRateHertz": 24000,
                "sampleSizeBits": 16,
                "channelCount": 1,
                "voiceId": "matthew",
                "encoding": "base64",
                "audioType": "SPEECH",
            },
        }
        if tools:
            prompt["toolUseOutputConfiguration"] = {"mediaType": "application/json"}
            prompt["toolConfiguration"] = {"tools": [{"toolSpec": spec} for spec in tools]}
        await self.send(event("promptStart", prompt))
        await self.text("SYSTEM", system)
        await self.send(
            event(
                "contentStart",
                {
                    "promptName": self.prompt,
                    "contentName": self.audio,
                    "type": "AUDIO",
                    "interactive": True,
                    "role": "USER",
                    "audioInputConfiguration": {
                        "mediaType": "audio/lpcm",
                        "sampleRateHertz": INPUT_RATE,
                        "sampleSizeBits": 16,
                        "channelCount": 1,
                        "audioType": "SPEECH",
                        "encoding": "base64",
                    },
                },
            )
        )

    async def text(self, role: str, text: str, *, interactive: bool = False) -> None:
        name = str(uuid.uuid4())
        ids = {"promptName": self.prompt, "contentName": name}
        await self.send(
            event(
                "contentStart",
                {**ids, "type": "TEXT", "interactive": interactive, "role": role,
                 "textInputConfiguration": {"mediaType": "text/plain"}},
            )
        )  # fmt: skip
        await self.send(event("textInput", {**ids, "content": text}))
        await self.send(event("contentEnd", ids))

    async def tool_result(self, tool_use_id: str, content: str) -> None:
        name = str(uuid.uuid4())
        ids = {"promptName": self.prompt, "contentName": name}
        await self.send(
            event(
                "contentStart",
                {**ids, "type": "TOOL", "interactive": False, "role": "TOOL",
                 "toolResultInputConfiguration": {"toolUseId": tool_use_id, "type": "TEXT",
                                                  "textInputConfiguration": {"mediaType": "text/plain"}}},
            )
        )  # fmt: skip
        await self.send(event("toolResult", {**ids, "content": content}))
        await self.send(event("contentEnd", ids))

    async def audio_frames(self, pcm: bytes, *, pace: float = 0.0) -> None:
        for offset in range(0, len(pcm), FRAME_BYTES):
            chunk = base64.b64encode(pcm[offset : offset + FRAME_BYTES]).decode()
            await self.send(
                event("audioInput", {"promptName": self.prompt, "contentName": self.audio, "content": chunk})
            )
            if pace:
                await asyncio.sleep(pace)

    async def say(self, text: str, *, pace: float = 0.004) -> None:
        """Speak ``text`` (espeak-ng) then a second of silence, in 32 ms frames."""
        speech = espeak_pcm(text, INPUT_RATE).tobytes()
        silence = np.zeros(INPUT_RATE, dtype=np.int16).tobytes()
        await self.audio_frames(silence[: INPUT_RATE // 2] + speech + silence, pace=pace)

    async def silence(self, seconds: float, *, pace: float = 0.004) -> None:
        await self.audio_frames(np.zeros(int(INPUT_RATE * seconds), dtype=np.int16).tobytes(), pace=pace)

    async def close(self) -> None:
        """The documented closing: end the audio content, the prompt, the session; then the stream."""
        try:
            await self.send(event("contentEnd", {"promptName": self.prompt, "contentName": self.audio}))
            await self.send(event("promptEnd", {"promptName": self.prompt}))
            await self.send(event("sessionEnd", {}))
            await self.stream.input_stream.close()
        except OSError:
            pass  # the stand-in already ended the stream
        await asyncio.wait_for(self.ended.wait(), 10)


async def open_session(url: str, **credentials: Any) -> Session:
    """Open a stream on the stand-in and start reading its events."""
    stream = await client(url, **credentials).invoke_model_with_bidirectional_stream(
        InvokeModelWithBidirectionalStreamOperationInput(model_id=MODEL_ID)
    )
    session = Session(stream)
    session.start_reading()
    return session

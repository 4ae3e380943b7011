"""Nova Sonic's output events, built as the service sends them.

From the Nova 2 Sonic user guide's output events page
(https://docs.aws.amazon.com/nova/latest/nova2-userguide/sonic-output-events.html):
``additionalModelFields`` is a JSON *string*; TEXT contents stop with PARTIAL_TURN, END_TURN or
INTERRUPTED, AUDIO ones with PARTIAL_TURN or END_TURN, TOOL ones with TOOL_USE; ``usageEvent`` carries
``details.delta`` and ``details.total``. Beyond the guide, ``textOutput`` and ``contentEnd`` carry
``role``, as captures of the service's own events do. The barge-in text ``{ "interrupted" : true }`` is
from AWS's ``nova_sonic_tool_use.py`` sample (the guide only says a notification is sent); Pipecat
reacts to the ASSISTANT TEXT ``contentEnd`` with ``INTERRUPTED``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal, TypedDict

INTERRUPTED_TEXT: Final = '{ "interrupted" : true }'

ContentType = Literal["TEXT", "AUDIO", "TOOL"]
OutputRole = Literal["USER", "ASSISTANT", "TOOL"]
StopReason = Literal["PARTIAL_TURN", "END_TURN", "INTERRUPTED", "TOOL_USE"]
_STOP_REASONS: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "TEXT": frozenset({"PARTIAL_TURN", "END_TURN", "INTERRUPTED"}),
        "AUDIO": frozenset({"PARTIAL_TURN", "END_TURN"}),
        "TOOL": frozenset({"TOOL_USE"}),
    }
)


class ResponseIds(TypedDict):
    """The ids every output event of one response carries, as the builders' keyword arguments."""

    session_id: str
    prompt_name: str
    completion_id: str


@dataclass(frozen=True)
class TokenCounts:
    """Token counts of a ``usageEvent``, split as Nova Sonic splits them."""

    input_speech: int = 0
    input_text: int = 0
    output_speech: int = 0
    output_text: int = 0

    def __add__(self, other: TokenCounts) -> TokenCounts:
        return TokenCounts(
            self.input_speech + other.input_speech,
            self.input_text + other.input_text,
            self.output_speech + other.output_speech,
            self.output_text + other.output_text,
        )

    def details(self) -> dict[str, dict[str, int]]:
        """The ``{"input": {...}, "output": {...}}`` object of ``details.delta`` or ``details.total``."""
        return {
            "input": {"speechTokens": self.input_speech, "textTokens": self.input_text},
            "output": {"speechTokens": self.output_speech, "textTokens": self.output_text},
        }


def _event(name: str, body: Mapping[str, object]) -> bytes:
    return json.dumps({"event": {name: body}}, ensure_ascii=False, separators=(",", ":")).encode()


def _ids(session_id: str, prompt_name: str, completion_id: str) -> dict[str, object]:
    return {"sessionId": session_id, "promptName": prompt_name, "completionId": completion_id}


def completion_start(*, session_id: str, prompt_name: str, completion_id: str) -> bytes:
    """Build ``completionStart``, which opens a response."""
    return _event("completionStart", _ids(session_id, prompt_name, completion_id))


def content_start(
    *,
    session_id: str,
    prompt_name: str,
    completion_id: str,
    content_id: str,
    type: ContentType,
    role: OutputRole,
    generation_stage: Literal["SPECULATIVE", "FINAL"] | None = None,
    audio: Mapping[str, Any] | None = None,
) -> bytes:
    """Build an output ``contentStart``.

    Args:
        session_id: The stream's session id.
        prompt_name: The prompt's name.
        completion_id: The response's id.
        content_id: This content's id.
        type: ``TEXT``, ``AUDIO`` or ``TOOL``.
        role: ``USER`` (transcription), ``ASSISTANT`` or ``TOOL``.
        generation_stage: For text, sent as the JSON string ``additionalModelFields``.
        audio: For ``AUDIO``, the prompt's ``audioOutputConfiguration`` (its voice and type are not echoed).

    Raises:
        ValueError: ``AUDIO`` content without ``audio``.
    """
    body: dict[str, object] = {**_ids(session_id, prompt_name, completion_id), "contentId": content_id}
    body |= {"type": type, "role": role}
    if generation_stage is not None:
        body["additionalModelFields"] = json.dumps({"generationStage": generation_stage}, separators=(",", ":"))
    if type == "TEXT":
        body["textOutputConfiguration"] = {"mediaType": "text/plain"}
    elif type == "TOOL":
        body["toolUseOutputConfiguration"] = {"mediaType": "application/json"}
    elif audio is None:
        raise ValueError("AUDIO contentStart needs the prompt's audioOutputConfiguration")
    else:
        keys = ("mediaType", "sampleRateHertz", "sampleSizeBits", "encoding", "channelCount")
        body["audioOutputConfiguration"] = {key: audio[key] for key in keys}
    return _event("contentStart", body)


def text_output(
    *, session_id: str, prompt_name: str, completion_id: str, content_id: str, role: OutputRole, content: str
) -> bytes:
    """Build ``textOutput``: a transcription (USER) or the assistant's words (ASSISTANT)."""
    body = {**_ids(session_id, prompt_name, completion_id), "contentId": content_id, "role": role, "content": content}
    return _event("textOutput", body)


def audio_output(*, session_id: str, prompt_name: str, completion_id: str, content_id: str, pcm: bytes) -> bytes:
    """Build ``audioOutput`` carrying ``pcm`` as base64."""
    body = {**_ids(session_id, prompt_name, completion_id), "contentId": content_id}
    return _event("audioOutput", body | {"content": base64.b64encode(pcm).decode("ascii")})


def tool_use(
    *,
    session_id: str,
    prompt_name: str,
    completion_id: str,
    content_id: str,
    tool_use_id: str,
    tool_name: str,
    content: str,
) -> bytes:
    """Build ``toolUse``; ``content`` is the JSON string of the arguments."""
    body = {**_ids(session_id, prompt_name, completion_id), "contentId": content_id, "role": "TOOL"}
    return _event("toolUse", body | {"content": content, "toolName": tool_name, "toolUseId": tool_use_id})


def content_end(
    *,
    session_id: str,
    prompt_name: str,
    completion_id: str,
    content_id: str,
    type: ContentType,
    role: OutputRole,
    stop_reason: StopReason,
) -> bytes:
    """Build an output ``contentEnd``.

    Raises:
        ValueError: A stop reason the guide does not give for this content type (TEXT: PARTIAL_TURN,
            END_TURN, INTERRUPTED; AUDIO: PARTIAL_TURN, END_TURN; TOOL: TOOL_USE).
    """
    if stop_reason not in _STOP_REASONS[type]:
        raise ValueError(f"{type} contentEnd cannot stop with {stop_reason}")
    body = {**_ids(session_id, prompt_name, completion_id), "contentId": content_id}
    return _event("contentEnd", body | {"stopReason": stop_reason, "type": type, "role": role})


def completion_end(*, session_id: str, prompt_name: str, completion_id: str, stop_reason: str = "END_TURN") -> bytes:
    """Build ``completionEnd``, which closes a response."""
    return _event("completionEnd", _ids(session_id, prompt_name, completion_id) | {"stopReason": stop_reason})


def usage_event(
    *,
    session_id: str,
    prompt_name: str,
    completion_id: str,
    input_speech: int,
    input_text: int,
    output_speech: int,
    output_text: int,
    total: TokenCounts,
) -> bytes:
    """Build ``usageEvent``: these counts as ``details.delta``, ``total`` (which includes them) as ``details.total``."""
    delta = TokenCounts(input_speech, input_text, output_speech, output_text)
    total_input, total_output = total.input_speech + total.input_text, total.output_speech + total.output_text
    body = {
        **_ids(session_id, prompt_name, completion_id),
        "details": {"delta": delta.details(), "total": total.details()},
        "totalInputTokens": total_input,
        "totalOutputTokens": total_output,
        "totalTokens": total_input + total_output,
    }
    return _event("usageEvent", body)

"""Nova Sonic's documented input events, checked strictly in shape and in order (outputs: :mod:`.outputs`).

Every fact below comes from a page of the Nova 2 Sonic user guide (``NOVA2`` is
https://docs.aws.amazon.com/nova/latest/nova2-userguide) unless it says otherwise:

* Input events, fields and enums: ``NOVA2/sonic-input-events.html``. ``topP`` and ``temperature`` lie in
  0.0-1.0; input and output audio is ``audio/lpcm``, ``base64``, ``SPEECH``, 16-bit, mono, at 8000, 16000
  or 24000 Hz; audio content is USER and ``interactive: true``, a tool result is TOOL and
  ``interactive: false``; text roles are SYSTEM, USER, ASSISTANT, TOOL, SYSTEM_SPEECH. History "can be
  included only once, after the system prompt and before audio streaming begins"; audio frames of about
  32 ms share one content until it is closed; a session closes with contentEnd (audio), promptEnd,
  sessionEnd.
* ``endpointingSensitivity`` HIGH, MEDIUM or LOW: the same page and ``NOVA2/sonic-turn-taking.html``.
* The 16 voice ids: ``NOVA2/sonic-language-support.html``.
* ``toolChoice`` (``auto``, ``any`` or ``tool`` with a name), ``inputSchema.json`` as a JSON string or an
  object, and ``role: "TOOL"`` on ``toolUse``: ``NOVA2/sonic-tool-configuration.html``.
* The session limit of about 8 minutes: AWS's session-continuation sample (aws-samples/amazon-nova-samples,
  ``speech-to-speech/amazon-nova-2-sonic/repeatable-patterns/session-continuation``); the guide only says
  "maximum connection duration" (https://docs.aws.amazon.com/nova/latest/userguide/speech-errors.html).

The guide documents no maximum audio chunk size and no history size limit.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal, NoReturn, Protocol, cast

INPUT_SAMPLE_RATES: Final = (8000, 16000, 24000)
OUTPUT_SAMPLE_RATES: Final = (8000, 16000, 24000)
SAMPLE_SIZE_BITS: Final = 16
CHANNEL_COUNT: Final = 1
AUDIO_FRAME_MS: Final = 32
"""The cadence the guide describes for audio input; not a limit."""
VOICE_IDS: Final = frozenset(
    {"tiffany", "matthew", "amy", "olivia", "kiara", "arjun", "ambre", "florian"}
    | {"beatrice", "lorenzo", "tina", "lennart", "lupe", "carlos", "carolina", "leo"}
)
ENDPOINTING_SENSITIVITIES: Final = ("HIGH", "MEDIUM", "LOW")
TEXT_ROLES: Final = ("SYSTEM", "USER", "ASSISTANT", "TOOL", "SYSTEM_SPEECH")
SESSION_LIMIT_SECONDS: Final = 8 * 60
PIPECAT_HISTORY_MESSAGE_BYTES: Final = 50 * 1024
"""Pipecat's own trimming of replayed history per message; not a service limit, not enforced here."""
PIPECAT_HISTORY_TOTAL_BYTES: Final = 200 * 1024
"""Pipecat's own cap on replayed history; not a service limit, not enforced here."""


class InvalidEvent(ValueError):
    """An input event the service would refuse; the message names the event and the field."""


@dataclass(frozen=True)
class InputEvent:
    """One parsed input event.

    Attributes:
        name: The event name, such as ``"contentStart"``.
        body: The object under ``event[name]``.
    """

    name: str
    body: Mapping[str, Any]


# --------------------------------------------------------------------------- schema


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


class _Spec(Protocol):
    def check(self, value: object, path: str) -> None: ...


@dataclass(frozen=True)
class _Str:
    allow_empty: bool = False

    def check(self, value: object, path: str) -> None:
        if not isinstance(value, str):
            raise InvalidEvent(f"{path}: must be a string, not {_kind(value)}")
        if not value and not self.allow_empty:
            raise InvalidEvent(f"{path}: must not be empty")


@dataclass(frozen=True)
class _Bool:
    def check(self, value: object, path: str) -> None:
        if not isinstance(value, bool):
            raise InvalidEvent(f"{path}: must be a boolean, not {_kind(value)}")


@dataclass(frozen=True)
class _OneOf:
    values: tuple[object, ...]

    def check(self, value: object, path: str) -> None:
        # Compare types too: True == 1 and 16000.0 == 16000 in Python, not in the service's schema.
        if not any(type(value) is type(allowed) and value == allowed for allowed in self.values):
            raise InvalidEvent(f"{path}: {_show(value)} is not one of {', '.join(map(_show, self.values))}")


@dataclass(frozen=True)
class _Number:
    integer: bool
    low: float
    high: float = math.inf

    def check(self, value: object, path: str) -> None:
        if isinstance(value, bool) or not isinstance(value, int if self.integer else (int, float)):
            raise InvalidEvent(f"{path}: must be {'an integer' if self.integer else 'a number'}, not {_kind(value)}")
        if not self.low <= value <= self.high:
            bounds = f"at least {self.low:g}" if self.high == math.inf else f"between {self.low:g} and {self.high:g}"
            raise InvalidEvent(f"{path}: {_show(value)} is not {bounds}")


@dataclass(frozen=True)
class _Obj:
    """A closed object: its required and optional fields, nothing else."""

    required: Mapping[str, _Spec]
    optional: Mapping[str, _Spec] = field(default_factory=dict)

    def check(self, value: object, path: str) -> None:
        if not isinstance(value, dict):
            raise InvalidEvent(f"{path}: must be an object, not {_kind(value)}")
        unknown = sorted(set(value) - set(self.required) - set(self.optional))
        if unknown:
            raise InvalidEvent(f"{path}: unknown field {_show(unknown[0])}")
        for name, spec in self.required.items():
            if name not in value:
                raise InvalidEvent(f"{path}: missing required field {name!r}")
            spec.check(value[name], f"{path}.{name}")
        for name, spec in self.optional.items():
            if name in value:
                spec.check(value[name], f"{path}.{name}")


@dataclass(frozen=True)
class _OneKey:
    """An object with exactly one of the given keys (``toolChoice``)."""

    choices: Mapping[str, _Spec]

    def check(self, value: object, path: str) -> None:
        if not isinstance(value, dict) or len(value) != 1:
            raise InvalidEvent(f"{path}: must be an object with exactly one of {', '.join(self.choices)}")
        _Obj({}, self.choices).check(value, path)


@dataclass(frozen=True)
class _List:
    item: _Spec

    def check(self, value: object, path: str) -> None:
        if not isinstance(value, list):
            raise InvalidEvent(f"{path}: must be an array, not {_kind(value)}")
        for index, element in enumerate(value):
            self.item.check(element, f"{path}[{index}]")


@dataclass(frozen=True)
class _Tagged:
    """An object whose shape depends on one of its fields (``contentStart.type``)."""

    tag: str
    shapes: Mapping[str, _Obj]

    def check(self, value: object, path: str) -> None:
        if not isinstance(value, dict):
            raise InvalidEvent(f"{path}: must be an object, not {_kind(value)}")
        if self.tag not in value:
            raise InvalidEvent(f"{path}: missing required field {self.tag!r}")
        _OneOf(tuple(self.shapes)).check(value[self.tag], f"{path}.{self.tag}")
        self.shapes[cast(str, value[self.tag])].check(value, path)


@dataclass(frozen=True)
class _JsonSchema:
    """``inputSchema.json``: a string holding a JSON object, or the object itself."""

    def check(self, value: object, path: str) -> None:
        if isinstance(value, dict):
            return
        if not isinstance(value, str):
            raise InvalidEvent(f"{path}: must be a JSON schema (a string or an object), not {_kind(value)}")
        try:
            schema = json.loads(value)
        except (ValueError, RecursionError) as exc:
            raise InvalidEvent(f"{path}: is not valid JSON") from exc
        if not isinstance(schema, dict):
            raise InvalidEvent(f"{path}: must hold a JSON object")


def _decode_pcm(value: object, path: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidEvent(f"{path}: must be a base64 string, not {_kind(value)}")
    try:
        pcm = base64.b64decode(value, validate=True)
    except ValueError as exc:
        raise InvalidEvent(f"{path}: is not valid base64") from exc
    if not pcm:
        raise InvalidEvent(f"{path}: holds no audio")
    if len(pcm) % (SAMPLE_SIZE_BITS // 8 * CHANNEL_COUNT):
        raise InvalidEvent(f"{path}: {len(pcm)} bytes is not a whole number of 16-bit mono samples")
    return pcm


@dataclass(frozen=True)
class _Base64Pcm:
    def check(self, value: object, path: str) -> None:
        _decode_pcm(value, path)


_NAME: Final = _Str()
_TEXT_CONFIG: Final = _Obj({"mediaType": _OneOf(("text/plain",))})
_PCM: Final[Mapping[str, _Spec]] = {
    "mediaType": _OneOf(("audio/lpcm",)),
    "sampleSizeBits": _OneOf((SAMPLE_SIZE_BITS,)),
    "channelCount": _OneOf((CHANNEL_COUNT,)),
    "audioType": _OneOf(("SPEECH",)),
    "encoding": _OneOf(("base64",)),
}
_IDS: Final[Mapping[str, _Spec]] = {"promptName": _NAME, "contentName": _NAME}
_TOOL_SPEC: Final = _Obj(
    {
        "toolSpec": _Obj(
            {"name": _NAME, "description": _Str(allow_empty=True), "inputSchema": _Obj({"json": _JsonSchema()})}
        )
    }
)
_SCHEMAS: Final[Mapping[str, _Spec]] = MappingProxyType(
    {
        "sessionStart": _Obj(
            {
                "inferenceConfiguration": _Obj(
                    {
                        "maxTokens": _Number(integer=True, low=1),
                        "topP": _Number(integer=False, low=0, high=1),
                        "temperature": _Number(integer=False, low=0, high=1),
                    }
                )
            },
            {"turnDetectionConfiguration": _Obj({"endpointingSensitivity": _OneOf(ENDPOINTING_SENSITIVITIES)})},
        ),
        "promptStart": _Obj(
            {
                "promptName": _NAME,
                "audioOutputConfiguration": _Obj(
                    {
                        **_PCM,
                        "sampleRateHertz": _OneOf(OUTPUT_SAMPLE_RATES),
                        "voiceId": _OneOf(tuple(sorted(VOICE_IDS))),
                    }
                ),
            },
            {
                "textOutputConfiguration": _TEXT_CONFIG,
                "toolUseOutputConfiguration": _Obj({"mediaType": _OneOf(("application/json",))}),
                "toolConfiguration": _Obj(
                    {"tools": _List(_TOOL_SPEC)},
                    {"toolChoice": _OneKey({"auto": _Obj({}), "any": _Obj({}), "tool": _Obj({"name": _NAME})})},
                ),
            },
        ),
        "contentStart": _Tagged(
            "type",
            {
                "TEXT": _Obj(
                    {
                        **_IDS,
                        "type": _NAME,
                        "interactive": _Bool(),
                        "role": _OneOf(TEXT_ROLES),
                        "textInputConfiguration": _TEXT_CONFIG,
                    }
                ),
                "AUDIO": _Obj(
                    {
                        **_IDS,
                        "type": _NAME,
                        "interactive": _OneOf((True,)),
                        "role": _OneOf(("USER",)),
                        "audioInputConfiguration": _Obj({**_PCM, "sampleRateHertz": _OneOf(INPUT_SAMPLE_RATES)}),
                    }
                ),
                "TOOL": _Obj(
                    {
                        **_IDS,
                        "type": _NAME,
                        "interactive": _OneOf((False,)),
                        "role": _OneOf(("TOOL",)),
                        "toolResultInputConfiguration": _Obj(
                            {"toolUseId": _NAME, "type": _OneOf(("TEXT",)), "textInputConfiguration": _TEXT_CONFIG}
                        ),
                    }
                ),
            },
        ),
        "textInput": _Obj({**_IDS, "content": _Str(allow_empty=True)}),
        "audioInput": _Obj({**_IDS, "content": _Base64Pcm()}),
        "toolResult": _Obj({**_IDS, "content": _Str(allow_empty=True)}),
        "contentEnd": _Obj(_IDS),
        "promptEnd": _Obj({"promptName": _NAME}),
        "sessionEnd": _Obj({}),
    }
)
INPUT_EVENT_NAMES: Final = tuple(_SCHEMAS)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        raise InvalidEvent("event payload has a duplicate key")
    return document


def _no_constant(name: str) -> NoReturn:
    raise InvalidEvent(f"event payload is not JSON: {name} is not a JSON number")


def parse_input_event(payload: bytes) -> InputEvent:
    """Parse and shape-check one input event, ``{"event": {<name>: {...}}}`` as UTF-8 JSON.

    Args:
        payload: The bytes of one ``chunk`` event.

    Returns:
        The event's name and body.

    Raises:
        InvalidEvent: The payload is not such an event, or a field is missing, mistyped, out of range or
            unknown; the message names the event and the field.
    """
    try:
        document = json.loads(payload.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except InvalidEvent:
        raise
    except UnicodeDecodeError as exc:
        raise InvalidEvent("event payload is not UTF-8") from exc
    except (ValueError, RecursionError) as exc:
        raise InvalidEvent("event payload is not JSON") from exc
    if not isinstance(document, dict) or set(document) != {"event"}:
        raise InvalidEvent('event payload must be an object with the single key "event"')
    wrapper = document["event"]
    if not isinstance(wrapper, dict) or len(wrapper) != 1:
        found = ", ".join(map(repr, wrapper)) if isinstance(wrapper, dict) else _kind(wrapper)
        raise InvalidEvent(f'"event" must hold exactly one event name, found {found or "none"}')
    ((name, body),) = wrapper.items()
    schema = _SCHEMAS.get(name)
    if schema is None:
        raise InvalidEvent(f"unknown input event {_show(name)}; expected one of {', '.join(INPUT_EVENT_NAMES)}")
    schema.check(body, name)
    return InputEvent(name, MappingProxyType(body))


def decode_audio(event: InputEvent) -> bytes:
    """Return the PCM bytes an ``audioInput`` event carries.

    Raises:
        InvalidEvent: Not an ``audioInput`` event, not base64, empty, or not whole 16-bit samples.
    """
    if event.name != "audioInput":
        raise InvalidEvent(f"{event.name}: is not an audioInput event")
    return _decode_pcm(event.body.get("content"), "audioInput.content")


# --------------------------------------------------------------------------- ordering


@dataclass(frozen=True)
class Completed:
    """A TEXT or TOOL input content whose ``contentEnd`` arrived.

    Attributes:
        role: The content's role (``TOOL`` for a tool result).
        kind: ``"TEXT"`` or ``"TOOL"``.
        text: Its ``textInput`` or ``toolResult`` contents joined.
        interactive: Whether the content asked for an answer.
        tool_use_id: The ``toolUseId`` a TOOL content answers, else ``None``.
        content_name: The content's name.
    """

    role: str
    kind: Literal["TEXT", "TOOL"]
    text: str
    interactive: bool
    tool_use_id: str | None
    content_name: str


_CONTENT_KINDS: Final = MappingProxyType({"textInput": "TEXT", "audioInput": "AUDIO", "toolResult": "TOOL"})


@dataclass
class _Open:
    kind: str
    role: str
    interactive: bool
    tool_use_id: str | None
    parts: list[str] = field(default_factory=list)


class Conversation:
    """The ordering rules of one stream, fed every parsed input event in arrival order.

    Attributes:
        inference: ``sessionStart``'s ``inferenceConfiguration``.
        endpointing_sensitivity: Its ``turnDetectionConfiguration.endpointingSensitivity``, if any.
        prompt_name: The prompt's name once ``promptStart`` arrived.
        audio_output: ``promptStart``'s ``audioOutputConfiguration``.
        tools: The ``toolSpec`` objects of ``toolConfiguration`` (possibly none).
        tool_choice: ``toolConfiguration.toolChoice``, if given.
        system_prompt: The text of the SYSTEM content, once it ended.
        history: ``(role, text)`` of the non-interactive USER and ASSISTANT texts sent before audio.
        audio_input: The ``audioInputConfiguration`` of the open audio content.
        audio_content_name: The name of the open audio content.
        ended: Whether ``sessionEnd`` arrived.
    """

    def __init__(self) -> None:
        self.inference: dict[str, Any] = {}
        self.endpointing_sensitivity: str | None = None
        self.prompt_name: str | None = None
        self.audio_output: dict[str, Any] | None = None
        self.tools: list[dict[str, Any]] = []
        self.tool_choice: dict[str, Any] | None = None
        self.system_prompt: str | None = None
        self.history: list[tuple[str, str]] = []
        self.audio_input: dict[str, Any] | None = None
        self.audio_content_name: str | None = None
        self.ended = False
        self._started = self._prompt_ended = self._audio_started = False
        self._open: dict[str, _Open] = {}
        self._names: set[str] = set()
        self._issued: set[str] = set()
        self._answered: set[str] = set()

    def issue_tool_use(self, tool_use_id: str) -> None:
        """Record a ``toolUse`` the server sent, so that a ``toolResult`` may answer it."""
        self._issued.add(tool_use_id)

    @property
    def unanswered_tool_uses(self) -> frozenset[str]:
        """The issued ``toolUseId`` values no tool result has answered yet."""
        return frozenset(self._issued - self._answered)

    def accept(self, event: InputEvent) -> Completed | None:
        """Apply one event in arrival order.

        Returns:
            What a TEXT or TOOL content held, on its ``contentEnd``; else ``None``.

        Raises:
            InvalidEvent: The event is out of order or inconsistent with the stream so far.
        """
        if self.ended:
            raise InvalidEvent(f"{event.name}: the session has ended (sessionEnd was received)")
        if not self._started and event.name != "sessionStart":
            raise InvalidEvent(f"{event.name}: the first event of a stream must be sessionStart")
        body = dict(event.body)
        if event.name == "sessionStart":
            self._session_start(body)
        elif event.name == "promptStart":
            self._prompt_start(body)
        elif event.name == "sessionEnd":
            self.ended = True
            self._close_all()
        else:
            self._check_prompt(event.name, body)
            return self._prompt_event(event.name, body)
        return None

    def _prompt_event(self, name: str, body: dict[str, Any]) -> Completed | None:
        if name == "promptEnd":
            self._prompt_ended = True
            self._close_all()
        elif name == "contentStart":
            self._content_start(body)
        elif name == "contentEnd":
            return self._content_end(body)
        else:
            content = self._content(name, body, _CONTENT_KINDS[name])
            if name != "audioInput":
                content.parts.append(body["content"])
        return None

    def _close_all(self) -> None:
        # promptEnd or sessionEnd with content still open: the guide calls that an orphaned resource, not an error.
        self._open.clear()
        self.audio_content_name = self.audio_input = None

    def _session_start(self, body: dict[str, Any]) -> None:
        if self._started:
            raise InvalidEvent("sessionStart: the session has already started")
        self._started = True
        self.inference = dict(body["inferenceConfiguration"])
        self.endpointing_sensitivity = body.get("turnDetectionConfiguration", {}).get("endpointingSensitivity")

    def _prompt_start(self, body: dict[str, Any]) -> None:
        if self.prompt_name is not None:
            raise InvalidEvent("promptStart: a session holds one prompt, and it has already started")
        tool_config = body.get("toolConfiguration", {})
        tools = [tool["toolSpec"] for tool in tool_config.get("tools", [])]
        names = [tool["name"] for tool in tools]
        if len(set(names)) != len(names):
            raise InvalidEvent("promptStart.toolConfiguration.tools: tool names must be unique")
        choice = tool_config.get("toolChoice")
        if choice and "tool" in choice and choice["tool"]["name"] not in names:
            raise InvalidEvent(
                f"promptStart.toolConfiguration.toolChoice.tool.name: no tool is named {_show(choice['tool']['name'])}"
            )
        self.prompt_name, self.audio_output = body["promptName"], dict(body["audioOutputConfiguration"])
        self.tools, self.tool_choice = tools, choice

    def _check_prompt(self, name: str, body: dict[str, Any]) -> None:
        if self.prompt_name is None:
            raise InvalidEvent(f"{name}: no prompt has started (send promptStart first)")
        if self._prompt_ended:
            raise InvalidEvent(f"{name}: the prompt has ended; only sessionEnd may follow promptEnd")
        if body["promptName"] != self.prompt_name:
            raise InvalidEvent(f"{name}.promptName: {_show(body['promptName'])} is not the prompt {self.prompt_name!r}")

    def _content_start(self, body: dict[str, Any]) -> None:
        name, kind, role, interactive = body["contentName"], body["type"], body["role"], body["interactive"]
        if name in self._names:
            raise InvalidEvent(f"contentStart.contentName: {_show(name)} is already used in this prompt")
        if role == "SYSTEM" and self._names:
            raise InvalidEvent("contentStart.role: the SYSTEM prompt must be the prompt's first content")
        if role == "ASSISTANT" and (interactive or self._audio_started):
            # ASSISTANT text is conversation history: non-interactive, and before audio streaming begins.
            raise InvalidEvent("contentStart.role: ASSISTANT text is history, sent non-interactive before audio starts")
        tool_use_id = None
        if kind == "AUDIO":
            if self.audio_content_name is not None:
                raise InvalidEvent(f"contentStart: audio content {self.audio_content_name!r} is still open")
            self._audio_started, self.audio_content_name = True, name
            self.audio_input = dict(body["audioInputConfiguration"])
        elif kind == "TOOL":
            tool_use_id = self._answerable(body["toolResultInputConfiguration"]["toolUseId"])
        self._names.add(name)
        self._open[name] = _Open(kind, role, interactive, tool_use_id)

    def _answerable(self, tool_use_id: str) -> str:
        path = "contentStart.toolResultInputConfiguration.toolUseId"
        if tool_use_id not in self._issued:
            raise InvalidEvent(f"{path}: {_show(tool_use_id)} was never issued")
        if tool_use_id in self._answered or any(c.tool_use_id == tool_use_id for c in self._open.values()):
            raise InvalidEvent(f"{path}: {_show(tool_use_id)} is already answered")
        return tool_use_id

    def _content(self, event_name: str, body: dict[str, Any], kind: str) -> _Open:
        content = self._open.get(body["contentName"])
        if content is None:
            raise InvalidEvent(f"{event_name}.contentName: {_show(body['contentName'])} is not an open content")
        if content.kind != kind:
            raise InvalidEvent(f"{event_name}: content {body['contentName']!r} is {content.kind}, not {kind}")
        return content

    def _content_end(self, body: dict[str, Any]) -> Completed | None:
        content = self._open.get(body["contentName"])
        if content is None:
            raise InvalidEvent(f"contentEnd.contentName: {_show(body['contentName'])} is not an open content")
        del self._open[body["contentName"]]
        if content.kind == "AUDIO":
            self.audio_content_name = self.audio_input = None
            return None
        text = "".join(content.parts)
        if content.tool_use_id is not None:
            self._answered.add(content.tool_use_id)
            return Completed("TOOL", "TOOL", text, False, content.tool_use_id, body["contentName"])
        if content.role == "SYSTEM":
            self.system_prompt = text
        elif content.role in ("USER", "ASSISTANT") and not content.interactive and not self._audio_started:
            self.history.append((content.role, text))
        return Completed(content.role, "TEXT", text, content.interactive, None, body["contentName"])

"""Nova Sonic's event layer: the input events Pipecat and the guide send, refusals, and the output events.

Pipecat's own ``AWSNovaSonicLLMService`` writes the input events here: its sender methods run against a
stream that only records what they write, and every recorded event goes through ``parse_input_event``
and ``Conversation`` in order. The documented examples are the shapes of the Nova 2 Sonic user guide.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from collections.abc import Iterator
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.adapters.llm.services.aws_nova_sonic_adapter import Role
from pipecat.frames.frames import FunctionCallResultFrame, FunctionCallResultProperties, LLMMessagesAppendFrame
from pipecat.services.aws.nova_sonic.llm import AWSNovaSonicLLMService, ContentType, TextStage

from local.nova_sonic.events import (
    INPUT_EVENT_NAMES,
    Completed,
    Conversation,
    InputEvent,
    InvalidEvent,
    decode_audio,
    parse_input_event,
)
from local.nova_sonic.outputs import (
    INTERRUPTED_TEXT,
    ResponseIds,
    TokenCounts,
    audio_output,
    completion_end,
    completion_start,
    content_end,
    content_start,
    text_output,
    tool_use,
    usage_event,
)

PROMPT = "prompt-1"
AUDIO = "audio-1"
PCM = bytes(range(256)) * 5  # 640 bytes: 20 ms of 16 kHz 16-bit mono


def payload(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


def feed(conversation: Conversation, chunks: list[bytes]) -> list[Completed]:
    completed = []
    for chunk in chunks:
        result = conversation.accept(parse_input_event(chunk))
        if result is not None:
            completed.append(result)
    return completed


# --------------------------------------------------------------------------- what Pipecat sends


class RecordingStream:
    """Stands where Bedrock's duplex stream is: keeps the bytes of each chunk Pipecat sends."""

    def __init__(self) -> None:
        self.input_stream = self
        self.sent: list[bytes] = []

    async def send(self, chunk: Any) -> None:
        self.sent.append(chunk.value.bytes_)

    async def close(self) -> None:
        pass


def pipecat_service(**settings_: Any) -> AWSNovaSonicLLMService:
    weather = FunctionSchema(
        name="get_weather",
        description="Current weather for a city",
        properties={"city": {"type": "string", "description": "City name"}},
        required=["city"],
    )
    return AWSNovaSonicLLMService(
        access_key_id="x",
        secret_access_key="y",
        region="us-east-1",
        settings=AWSNovaSonicLLMService.Settings(**settings_),
        tools=ToolsSchema(standard_tools=[weather]),
    )


async def pipecat_call(service: AWSNovaSonicLLMService) -> list[bytes]:
    """One call as Pipecat's service writes it: setup, history, audio, text, tool results, teardown."""
    stream = RecordingStream()
    service._stream = stream  # type: ignore[assignment]
    service._prompt_name, service._input_audio_content_name = PROMPT, AUDIO
    tools = service.get_llm_adapter().to_provider_tools_format(service._tools)  # type: ignore[arg-type]
    await service.send_event(service.build_session_start_json(), stream)
    await service.send_prompt_start(tools, PROMPT, stream)
    await service._send_text_event("You are a helpful voice assistant.", Role.SYSTEM)
    await service._send_text_event('Earlier I said "hello" — ça va?', Role.USER)
    await service._send_text_event("Hello! How can I help?", Role.ASSISTANT)
    await service._send_audio_input_start_event()  # type: ignore[no-untyped-call]
    await service._send_user_audio_event(PCM)
    await service._send_text_event("What's the weather in Paris?", Role.USER, interactive=True)
    await service._send_user_audio_event(PCM)
    final = FunctionCallResultFrame("get_weather", "tool-1", {"city": "Paris"}, {"temp_c": 21, "sky": "clear"})
    await service._handle_function_call_result(final)
    progress = FunctionCallResultProperties(is_final=False, run_llm=False)
    await service._handle_function_call_result(
        FunctionCallResultFrame("get_weather", "tool-2", {}, "50%", None, progress)
    )
    await service._handle_function_call_result(FunctionCallResultFrame("get_weather", "tool-2", {}, None))
    await service._handle_messages_append(LLMMessagesAppendFrame([{"role": "user", "content": "Note: VIP"}], False))
    await service._send_session_end_events()  # type: ignore[no-untyped-call]
    return stream.sent


def test_a_whole_pipecat_call_is_accepted() -> None:
    service = pipecat_service(endpointing_sensitivity="HIGH")
    conversation = Conversation()
    conversation.issue_tool_use("tool-1")
    conversation.issue_tool_use("tool-2")
    completed = feed(conversation, asyncio.run(pipecat_call(service)))

    assert conversation.inference == {"maxTokens": 1024, "topP": 0.9, "temperature": 0.7}
    assert conversation.endpointing_sensitivity == "HIGH"
    assert conversation.prompt_name == PROMPT
    assert conversation.audio_output is not None
    assert conversation.audio_output["sampleRateHertz"] == 24000
    assert conversation.audio_output["voiceId"] == "matthew"
    assert [tool["name"] for tool in conversation.tools] == ["get_weather"]
    assert conversation.system_prompt == "You are a helpful voice assistant."
    assert conversation.history == [
        ("USER", 'Earlier I said "hello" — ça va?'),
        ("ASSISTANT", "Hello! How can I help?"),
    ]
    assert conversation.ended and conversation.audio_content_name is None
    assert not conversation.unanswered_tool_uses
    by_text = {c.text: c for c in completed}
    assert by_text["What's the weather in Paris?"].interactive
    tool = next(c for c in completed if c.tool_use_id == "tool-1")
    assert (tool.kind, tool.role, json.loads(tool.text)) == ("TOOL", "TOOL", {"temp_c": 21, "sky": "clear"})
    assert next(c for c in completed if c.tool_use_id == "tool-2").text == "COMPLETED"
    assert not by_text["Note: VIP"].interactive  # plain text for the model to take in, sent after audio began


def test_pipecat_session_continuation_sends_audio_then_closes_the_old_stream_in_order() -> None:
    service, stream = pipecat_service(), RecordingStream()
    conversation = Conversation()

    async def old_session() -> None:
        await service.send_event(service.build_session_start_json(), stream)
        await service.send_prompt_start([], PROMPT, stream)
        await service.send_text("Be brief.", "SYSTEM", PROMPT, stream, False)
        await service.send_text("Hi", "USER", PROMPT, stream, False)
        await service.send_audio_input_start(PROMPT, AUDIO, stream)
        await service.send_audio(PCM, PROMPT, AUDIO, stream)

    asyncio.run(old_session())
    events = [parse_input_event(chunk) for chunk in stream.sent]
    for event in events:
        conversation.accept(event)
    assert conversation.audio_content_name == AUDIO and decode_audio(events[-1]) == PCM
    assert conversation.audio_input is not None and conversation.audio_input["sampleRateHertz"] == 16000
    assert conversation.endpointing_sensitivity is None and conversation.tools == []

    asyncio.run(service._sc.close_old_session(None, stream, None, PROMPT, AUDIO))  # type: ignore[no-untyped-call]
    feed(conversation, stream.sent[len(events) :])
    assert [json.loads(chunk)["event"].popitem()[0] for chunk in stream.sent[-3:]] == [
        "contentEnd",
        "promptEnd",
        "sessionEnd",
    ]
    assert conversation.ended and conversation.history == [("USER", "Hi")]


# --------------------------------------------------------------------------- what the guide shows

P = "conv-12345"
PCM_CONFIG = {
    "mediaType": "audio/lpcm",
    "sampleRateHertz": 16000,
    "sampleSizeBits": 16,
    "channelCount": 1,
    "audioType": "SPEECH",
    "encoding": "base64",
}
TEXT_CONFIG = {"mediaType": "text/plain"}
WEATHER_TOOL = {
    "toolSpec": {
        "name": "get_weather",
        "description": "Get current weather information for a specific location",
        "inputSchema": {
            "json": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}
        },
    }
}
GUIDE: dict[str, dict[str, Any]] = {  # one call in the guide's shapes, in order
    "session": {
        "sessionStart": {
            "inferenceConfiguration": {"maxTokens": 2048, "topP": 0.9, "temperature": 0.7},
            "turnDetectionConfiguration": {"endpointingSensitivity": "MEDIUM"},
        }
    },
    "prompt": {
        "promptStart": {
            "promptName": P,
            "textOutputConfiguration": TEXT_CONFIG,
            "audioOutputConfiguration": {**PCM_CONFIG, "voiceId": "matthew"},
            "toolUseOutputConfiguration": {"mediaType": "application/json"},
            "toolConfiguration": {"tools": [WEATHER_TOOL], "toolChoice": {"auto": {}}},
        }
    },
    "system": {
        "contentStart": {
            "promptName": P,
            "contentName": "system-prompt-1",
            "type": "TEXT",
            "interactive": False,
            "role": "SYSTEM",
            "textInputConfiguration": TEXT_CONFIG,
        }
    },
    "system text": {"textInput": {"promptName": P, "contentName": "system-prompt-1", "content": "Be kind."}},
    "system end": {"contentEnd": {"promptName": P, "contentName": "system-prompt-1"}},
    "audio": {
        "contentStart": {
            "promptName": P,
            "contentName": "audio-1",
            "type": "AUDIO",
            "interactive": True,
            "role": "USER",
            "audioInputConfiguration": PCM_CONFIG,
        }
    },
    "audio chunk": {
        "audioInput": {"promptName": P, "contentName": "audio-1", "content": base64.b64encode(PCM).decode()}
    },
    "user": {
        "contentStart": {
            "promptName": P,
            "contentName": "user-text-1",
            "type": "TEXT",
            "interactive": True,
            "role": "USER",
            "textInputConfiguration": TEXT_CONFIG,
        }
    },
    "user text": {"textInput": {"promptName": P, "contentName": "user-text-1", "content": "Weather?"}},
    "user end": {"contentEnd": {"promptName": P, "contentName": "user-text-1"}},
    "tool": {
        "contentStart": {
            "promptName": P,
            "contentName": "tool-result-1",
            "interactive": False,
            "type": "TOOL",
            "role": "TOOL",
            "toolResultInputConfiguration": {
                "toolUseId": "tool-use-1",
                "type": "TEXT",
                "textInputConfiguration": TEXT_CONFIG,
            },
        }
    },
    "tool result": {
        "toolResult": {
            "promptName": P,
            "contentName": "tool-result-1",
            "content": '{"temperature": 72, "condition": "sunny", "humidity": 45}',
        }
    },
    "tool end": {"contentEnd": {"promptName": P, "contentName": "tool-result-1"}},
    "audio end": {"contentEnd": {"promptName": P, "contentName": "audio-1"}},
    "prompt end": {"promptEnd": {"promptName": P}},
    "session end": {"sessionEnd": {}},
}
OPTIONAL_FIELDS = {
    "turnDetectionConfiguration",
    "textOutputConfiguration",
    "toolUseOutputConfiguration",
    "toolConfiguration",
}


def guide(*names: str) -> list[bytes]:
    return [payload({"event": GUIDE[name]}) for name in names]


def guide_conversation() -> Conversation:
    conversation = Conversation()
    conversation.issue_tool_use("tool-use-1")
    return conversation


def test_the_guides_examples_are_accepted_in_order() -> None:
    conversation = guide_conversation()
    completed = feed(conversation, guide(*GUIDE))
    assert [(c.kind, c.role, c.text) for c in completed] == [
        ("TEXT", "SYSTEM", "Be kind."),
        ("TEXT", "USER", "Weather?"),
        ("TOOL", "TOOL", '{"temperature": 72, "condition": "sunny", "humidity": 45}'),
    ]
    assert conversation.tool_choice == {"auto": {}} and conversation.ended


@pytest.mark.parametrize(
    "prompt_start",
    [
        {"promptName": "p", "audioOutputConfiguration": {**PCM_CONFIG, "voiceId": "tiffany"}},  # language support page
        {
            "promptName": "p",
            "audioOutputConfiguration": {**PCM_CONFIG, "sampleRateHertz": 24000, "voiceId": "arjun"},
            "toolConfiguration": {  # input events page: the schema as a JSON string
                "tools": [{"toolSpec": {"name": "t", "description": "d", "inputSchema": {"json": "{}"}}}],
                "toolChoice": {"tool": {"name": "t"}},
            },
        },
        {
            "promptName": "p",
            "audioOutputConfiguration": {**PCM_CONFIG, "sampleRateHertz": 8000, "voiceId": "carolina"},
            "toolConfiguration": {"tools": [WEATHER_TOOL], "toolChoice": {"any": {}}},
        },
    ],
)
def test_the_guides_other_prompt_shapes_are_accepted(prompt_start: dict[str, Any]) -> None:
    conversation = Conversation()
    feed(conversation, [*guide("session"), payload({"event": {"promptStart": prompt_start}})])
    assert conversation.prompt_name == "p"


# --------------------------------------------------------------------------- refusals


def key_paths(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield (*path, key)
            if key != "json":  # inside an inputSchema: the tool's own JSON schema, not the event's
                yield from key_paths(inner, (*path, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from key_paths(inner, (*path, str(index)))


def edited(event: dict[str, Any], path: tuple[str, ...], value: Any = None, *, delete: bool = False) -> bytes:
    event = copy.deepcopy(event)
    parent: Any = event
    for key in path[:-1]:
        parent = parent[int(key)] if isinstance(parent, list) else parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return payload({"event": event})


def changed(name: str, field: str, value: Any) -> bytes:
    """The guide's event ``name`` with one field of its body (a dotted path) set to ``value``."""
    event = GUIDE[name]
    return edited(event, (next(iter(event)), *field.split(".")), value)


REQUIRED = sorted(
    {
        (name, path)
        for name, event in GUIDE.items()
        for path in key_paths(event)
        if len(path) > 1 and path[-1] not in OPTIONAL_FIELDS and "toolChoice" not in path and not path[-1].isdigit()
    }
)


@pytest.mark.parametrize(("name", "path"), REQUIRED, ids=[f"{name}:{'.'.join(path)}" for name, path in REQUIRED])
def test_each_required_field_missing_is_refused(name: str, path: tuple[str, ...]) -> None:
    with pytest.raises(InvalidEvent, match=f"missing required field '{path[-1]}'") as refused:
        parse_input_event(edited(GUIDE[name], path, delete=True))
    assert str(refused.value).startswith(path[0])


SCHEMA = {"toolSpec": {"name": "t", "description": "", "inputSchema": {"json": "{"}}}
MALFORMED = [
    ("not json", b'{"event":', "not JSON"),
    ("not utf-8", b'{"event": {"sessionEnd": {}}}\xff', "not UTF-8"),
    ("not an object", b"[]", 'single key "event"'),
    ("extra top-level key", b'{"event": {"sessionEnd": {}}, "x": 1}', 'single key "event"'),
    ("no event name", b'{"event": {}}', "found none"),
    ("two event names", b'{"event": {"sessionEnd": {}, "promptEnd": {"promptName": "p"}}}', "exactly one event name"),
    ("unknown event", b'{"event": {"sessionPause": {}}}', "unknown input event 'sessionPause'"),
    ("duplicate key", b'{"event": {"sessionEnd": {}, "sessionEnd": {}}}', "duplicate key"),
    ("NaN", b'{"event": {"sessionStart": {"inferenceConfiguration": {"topP": NaN}}}}', "NaN"),
    ("body not an object", b'{"event": {"sessionEnd": []}}', "sessionEnd: must be an object"),
    ("unknown field", changed("audio", "volume", 3), "contentStart: unknown field 'volume'"),
    ("bad role", changed("user", "role", "BOT"), "contentStart.role: 'BOT' is not one of"),
    ("audio role", changed("audio", "role", "ASSISTANT"), "contentStart.role: 'ASSISTANT' is not one of 'USER'"),
    ("bad type", changed("audio", "type", "VIDEO"), "contentStart.type: 'VIDEO'"),
    ("wav", changed("audio", "audioInputConfiguration.mediaType", "audio/wav"), "mediaType: 'audio/wav'"),
    ("44.1 kHz", changed("audio", "audioInputConfiguration.sampleRateHertz", 44100), "44100 is not one of 8000"),
    ("rate as float", changed("audio", "audioInputConfiguration.sampleRateHertz", 16000.0), "16000.0 is not"),
    ("8-bit", changed("audio", "audioInputConfiguration.sampleSizeBits", 8), "sampleSizeBits: 8 is not one of 16"),
    ("stereo", changed("audio", "audioInputConfiguration.channelCount", 2), "channelCount: 2 is not one of 1"),
    ("opus", changed("audio", "audioInputConfiguration.encoding", "opus"), "encoding: 'opus'"),
    ("music", changed("audio", "audioInputConfiguration.audioType", "MUSIC"), "audioType: 'MUSIC'"),
    ("audio not interactive", changed("audio", "interactive", False), "interactive: False is not one of True"),
    ("interactive as string", changed("user", "interactive", "true"), "interactive: must be a boolean, not a string"),
    ("tool interactive", changed("tool", "interactive", True), "interactive: True is not one of False"),
    ("tool result type", changed("tool", "toolResultInputConfiguration.type", "JSON"), "Configuration.type: 'JSON'"),
    ("html", changed("user", "textInputConfiguration.mediaType", "text/html"), "mediaType: 'text/html'"),
    ("empty contentName", changed("audio", "contentName", ""), "contentStart.contentName: must not be empty"),
    ("promptName number", changed("prompt end", "promptName", 7), "promptEnd.promptName: must be a string, not a"),
    ("text not a string", changed("user text", "content", ["hi"]), "textInput.content: must be a string, not an"),
    ("topP 1.5", changed("session", "inferenceConfiguration.topP", 1.5), "topP: 1.5 is not between 0 and 1"),
    ("cold", changed("session", "inferenceConfiguration.temperature", -0.1), "temperature: -0.1 is not between"),
    ("temperature text", changed("session", "inferenceConfiguration.temperature", "0.7"), "must be a number"),
    ("no tokens", changed("session", "inferenceConfiguration.maxTokens", 0), "maxTokens: 0 is not at least 1"),
    ("half token", changed("session", "inferenceConfiguration.maxTokens", 10.5), "maxTokens: must be an integer"),
    ("boolean tokens", changed("session", "inferenceConfiguration.maxTokens", True), "an integer, not a boolean"),
    ("FAST", changed("session", "turnDetectionConfiguration.endpointingSensitivity", "FAST"), "'FAST' is not one"),
    ("bad voice", changed("prompt", "audioOutputConfiguration.voiceId", "bob"), "voiceId: 'bob' is not one of"),
    ("out 44.1 kHz", changed("prompt", "audioOutputConfiguration.sampleRateHertz", 44100), "sampleRateHertz: 44100"),
    ("tool output", changed("prompt", "toolUseOutputConfiguration.mediaType", "text/plain"), "'text/plain' is not"),
    ("tools not a list", changed("prompt", "toolConfiguration.tools", {}), "tools: must be an array, not an object"),
    ("two choices", changed("prompt", "toolConfiguration.toolChoice", {"auto": {}, "any": {}}), "exactly one of"),
    ("bad choice", changed("prompt", "toolConfiguration.toolChoice", {"none": {}}), "unknown field 'none'"),
    ("schema not json", changed("prompt", "toolConfiguration.tools", [SCHEMA]), "json: is not valid JSON"),
    ("schema no object", changed("prompt", "toolConfiguration.tools.0.toolSpec.inputSchema.json", "[]"), "hold a JSON"),
    ("bad base64", changed("audio chunk", "content", "not base64!"), "audioInput.content: is not valid base64"),
    ("odd audio", changed("audio chunk", "content", "YWJj"), "3 bytes is not a whole number of 16-bit"),
    ("empty audio", changed("audio chunk", "content", ""), "audioInput.content: holds no audio"),
    ("audio number", changed("audio chunk", "content", 5), "audioInput.content: must be a base64 string"),
]


@pytest.mark.parametrize(("raw", "message"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_events_are_refused_with_the_problem_named(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidEvent) as refused:
        parse_input_event(raw)
    assert message in str(refused.value)


def history(name: str, role: str, *, interactive: bool = False, prompt: str = P) -> list[bytes]:
    """A TEXT content of the guide's shape: contentStart, textInput, contentEnd."""
    ids = {"promptName": prompt, "contentName": name}
    start = {"type": "TEXT", "interactive": interactive, "role": role, "textInputConfiguration": TEXT_CONFIG}
    return [
        payload({"event": {"contentStart": {**ids, **start}}}),
        payload({"event": {"textInput": {**ids, "content": "text"}}}),
        payload({"event": {"contentEnd": ids}}),
    ]


TWO_TOOLS = [WEATHER_TOOL, WEATHER_TOOL]
STARTED = guide("session", "prompt")
OUT_OF_ORDER = [
    ("before sessionStart", guide("prompt"), "first event of a stream must be sessionStart"),
    ("second sessionStart", guide("session", "session"), "sessionStart: the session has already started"),
    ("second promptStart", guide("session", "prompt", "prompt"), "one prompt"),
    ("content before promptStart", guide("session", "audio"), "contentStart: no prompt has started"),
    ("wrong promptName", [*STARTED, history("x", "USER", prompt="other")[0]], "'other' is not"),
    ("audio before its contentStart", guide("session", "prompt", "audio chunk"), "'audio-1' is not an open content"),
    ("reused contentName", guide("session", "prompt", "audio", "audio end", "audio"), "'audio-1' is already used"),
    ("two audio contents", [*STARTED, *guide("audio"), changed("audio", "contentName", "a2")], "open"),
    ("audio into text", [*STARTED, *guide("user"), changed("audio chunk", "contentName", "user-text-1")], "not AUDIO"),
    ("text into audio", [*STARTED, *guide("audio"), changed("user text", "contentName", "audio-1")], "not TEXT"),
    ("tool into text", [*STARTED, *guide("user"), changed("tool result", "contentName", "user-text-1")], "not TOOL"),
    ("end of unknown content", guide("session", "prompt", "system end"), "'system-prompt-1' is not an open content"),
    ("unknown toolUseId", [*STARTED, changed("tool", "toolResultInputConfiguration.toolUseId", "no")], "never issued"),
    (
        "answered twice",
        [*STARTED, *guide("tool", "tool result", "tool end"), changed("tool", "contentName", "2")],
        "answered",
    ),
    ("system not first", [*STARTED, *history("h", "USER"), *guide("system")], "SYSTEM prompt must"),
    ("history after audio", [*STARTED, *guide("audio"), *history("h", "ASSISTANT")], "ASSISTANT text is"),
    ("interactive assistant", [*STARTED, *history("h", "ASSISTANT", interactive=True)], "ASSISTANT"),
    ("after promptEnd", guide("session", "prompt", "prompt end", "user"), "only sessionEnd may follow promptEnd"),
    ("after sessionEnd", guide("session", "prompt", "session end", "session end"), "sessionEnd: the session has ended"),
    (
        "choice names no tool",
        [*guide("session"), changed("prompt", "toolConfiguration.toolChoice", {"tool": {"name": "x"}})],
        "no tool is named 'x'",
    ),
    ("two tools, one name", [*guide("session"), changed("prompt", "toolConfiguration.tools", TWO_TOOLS)], "unique"),
]


@pytest.mark.parametrize(("chunks", "message"), [o[1:] for o in OUT_OF_ORDER], ids=[o[0] for o in OUT_OF_ORDER])
def test_out_of_order_events_are_refused(chunks: list[bytes], message: str) -> None:
    with pytest.raises(InvalidEvent) as refused:
        feed(guide_conversation(), chunks)
    assert message in str(refused.value)


def test_history_before_audio_is_kept_and_a_closed_audio_content_may_be_followed_by_another() -> None:
    conversation = guide_conversation()
    feed(conversation, [*guide("session", "prompt", "system", "system text", "system end"), *history("h1", "USER")])
    feed(conversation, [*history("h2", "ASSISTANT"), *guide("audio", "audio chunk", "audio end")])
    feed(conversation, [changed("audio", "contentName", "audio-2"), *history("late", "USER")])
    assert conversation.history == [("USER", "text"), ("ASSISTANT", "text")]
    assert conversation.audio_content_name == "audio-2"


def test_decode_audio_refuses_other_events() -> None:
    with pytest.raises(InvalidEvent, match="not an audioInput event"):
        decode_audio(InputEvent("sessionEnd", {}))


# --------------------------------------------------------------------------- output events


IDS = ResponseIds(session_id="s-1", prompt_name=PROMPT, completion_id="c-1")


def body(raw: bytes, name: str) -> dict[str, Any]:
    event = json.loads(raw)
    assert list(event) == ["event"] and list(event["event"]) == [name]
    inner: dict[str, Any] = event["event"][name]
    assert {inner["sessionId"], inner["promptName"], inner["completionId"]} == {"s-1", PROMPT, "c-1"}
    return inner


@pytest.mark.parametrize("stage", ["SPECULATIVE", "FINAL"])
def test_text_content_start_carries_the_generation_stage_as_a_json_string(
    stage: Literal["SPECULATIVE", "FINAL"],
) -> None:
    start = body(
        content_start(**IDS, content_id="t-1", type="TEXT", role="ASSISTANT", generation_stage=stage), "contentStart"
    )
    # Read as Pipecat's _handle_content_start_event reads it, with its own enums.
    assert ContentType(start["type"]) is ContentType.TEXT and Role(start["role"]) is Role.ASSISTANT
    assert isinstance(start["additionalModelFields"], str)
    assert TextStage(json.loads(start["additionalModelFields"])["generationStage"]).value == stage
    assert start["textOutputConfiguration"] == {"mediaType": "text/plain"} and start["contentId"] == "t-1"


def test_audio_and_tool_content_starts_carry_their_configuration() -> None:
    prompt_audio = GUIDE["prompt"]["promptStart"]["audioOutputConfiguration"]
    audio = body(
        content_start(**IDS, content_id="a-1", type="AUDIO", role="ASSISTANT", audio=prompt_audio), "contentStart"
    )
    assert audio["audioOutputConfiguration"] == {
        "mediaType": "audio/lpcm",
        "sampleRateHertz": 16000,
        "sampleSizeBits": 16,
        "encoding": "base64",
        "channelCount": 1,
    }
    assert "additionalModelFields" not in audio
    tool = body(content_start(**IDS, content_id="u-1", type="TOOL", role="TOOL"), "contentStart")
    assert tool["toolUseOutputConfiguration"] == {"mediaType": "application/json"}
    assert ContentType(tool["type"]) is ContentType.TOOL and Role(tool["role"]) is Role.TOOL
    with pytest.raises(ValueError, match="audioOutputConfiguration"):
        content_start(**IDS, content_id="a-2", type="AUDIO", role="ASSISTANT")


def test_content_events_carry_what_pipecat_reads() -> None:
    text = body(text_output(**IDS, content_id="t-1", role="USER", content="héllo"), "textOutput")
    assert (text["content"], text["contentId"], text["role"]) == ("héllo", "t-1", "USER")
    assert (
        body(text_output(**IDS, content_id="t-2", role="ASSISTANT", content=INTERRUPTED_TEXT), "textOutput")["content"]
        == '{ "interrupted" : true }'
    )
    assert base64.b64decode(body(audio_output(**IDS, content_id="a-1", pcm=PCM), "audioOutput")["content"]) == PCM
    use = body(
        tool_use(**IDS, content_id="u-1", tool_use_id="tu-1", tool_name="get_weather", content='{"city": "Oslo"}'),
        "toolUse",
    )
    assert (use["toolName"], use["toolUseId"], json.loads(use["content"])) == ("get_weather", "tu-1", {"city": "Oslo"})
    end = body(
        content_end(**IDS, content_id="t-1", type="TEXT", role="ASSISTANT", stop_reason="INTERRUPTED"), "contentEnd"
    )
    assert (end["stopReason"], end["type"], end["contentId"]) == ("INTERRUPTED", "TEXT", "t-1")
    assert body(completion_start(**IDS), "completionStart") == {
        "sessionId": "s-1",
        "promptName": PROMPT,
        "completionId": "c-1",
    }
    assert body(completion_end(**IDS), "completionEnd")["stopReason"] == "END_TURN"


@pytest.mark.parametrize(("kind", "reason"), [("AUDIO", "INTERRUPTED"), ("TOOL", "END_TURN"), ("TEXT", "TOOL_USE")])
def test_content_end_refuses_a_stop_reason_the_guide_does_not_give(kind: str, reason: str) -> None:
    with pytest.raises(ValueError, match=f"{kind} contentEnd cannot stop with {reason}"):
        content_end(**IDS, content_id="x", type=kind, role="ASSISTANT", stop_reason=reason)  # type: ignore[arg-type]


def test_usage_event_reports_delta_and_total() -> None:
    total = TokenCounts(10, 2, 30, 4) + TokenCounts(1, 1, 1, 1)
    usage = body(
        usage_event(**IDS, input_speech=1, input_text=1, output_speech=1, output_text=1, total=total), "usageEvent"
    )
    delta = usage["details"]["delta"]  # what Pipecat's _handle_usage_event reads
    assert delta == {"input": {"speechTokens": 1, "textTokens": 1}, "output": {"speechTokens": 1, "textTokens": 1}}
    assert usage["details"]["total"] == {
        "input": {"speechTokens": 11, "textTokens": 3},
        "output": {"speechTokens": 31, "textTokens": 5},
    }
    assert (usage["totalInputTokens"], usage["totalOutputTokens"], usage["totalTokens"]) == (14, 36, 50)


# --------------------------------------------------------------------------- property

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


def mutated_guide_event(draw: st.DrawFn) -> bytes:
    event = GUIDE[draw(st.sampled_from(list(GUIDE)))]
    return edited(event, draw(st.sampled_from(list(key_paths(event)))), draw(json_values))


@given(
    st.one_of(
        st.binary(max_size=200),
        json_values.map(lambda value: json.dumps(value).encode()),
        st.builds(
            lambda name, inner: payload({"event": {name: inner}}),
            st.sampled_from(INPUT_EVENT_NAMES),
            json_values,
        ),
        st.composite(mutated_guide_event)(),
    )
)
@settings(max_examples=400, deadline=None)
def test_parsing_and_ordering_raise_nothing_but_invalid_event(raw: bytes) -> None:
    conversation = guide_conversation()
    try:
        event = parse_input_event(raw)
        if event.name != "sessionStart":  # else into a stream with a prompt, an audio and a text content open
            feed(conversation, guide("session", "prompt", "audio", "user"))
        conversation.accept(event)
    except InvalidEvent as refused:
        assert str(refused)

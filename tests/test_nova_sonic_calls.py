"""The default production pipeline, Pipecat's unmodified Nova Sonic service, in real relayed calls.

The agent runs ``nova-sonic`` against the Nova Sonic stand-in (:mod:`local.nova_sonic`): the caller
speaks through coturn, Pipecat streams the audio to the stand-in over HTTP/2 and TLS with every event
signed, and the stand-in's spoken answer comes back the same way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.local_speech import reply_to
from local.call_client import SPEECH_RMS, Call
from local.call_common import Exchange
from local.nova_sonic.config import NovaSonicConfig
from local.nova_sonic.server import StandInStats
from local.stack import LocalStack, StackConfig
from tests.local_support import free_port, running_stack

pytestmark = pytest.mark.slow

SESSION_LIMIT = 20.0
"""The stand-in ends a model session this old (Nova Sonic: 480 s)."""
ROTATE_AFTER = 6.0
"""Pipecat opens the next session at the first answer after this age (production: 360 s)."""
CREDENTIAL_LIFETIME = 45.0
"""Each set of the runtime role's credentials lives this long (AgentCore's: about an hour)."""
REFRESH_MARGIN = 25.0
"""The agent's bridge renews a set this long before it expires (production: 600 s)."""
PHRASE = "how are you"
"""What the caller says every turn: of espeak-ng's phrases, the one pocketsphinx always gets right
("hello" comes out as "oh", "thank you" as "thirty two"). Each turn still needs its own transcript and
reply (``converse`` counts them), so an answer left over from an earlier turn does not count."""


def test_python_m_local_with_the_nova_sonic_pipeline_answers_a_relayed_call(tmp_path: Path) -> None:
    with running_stack(tmp_path, "--pipeline=nova-sonic") as stack:
        banner = "".join(stack.output)
        assert "nova-sonic pipeline" in banner and "Nova Sonic    https://127.0.0.1:" in banner

        async def scenario() -> Exchange:
            call = Call(stack.url, relay_only=True)
            try:
                times = await call.connect(timeout=30)
                assert times.selected_pair == ("relay", "relay")  # all media crosses coturn
                return await call.say("how are you")
            finally:
                await call.close()

        exchange = asyncio.run(asyncio.wait_for(scenario(), 90))
    assert exchange.heard == "how are you"  # the stand-in's recognizer, reported by Pipecat's service
    assert exchange.reply == reply_to("how are you")
    assert exchange.reply_rms > SPEECH_RMS  # the answer reached the caller as sound
    agent_log = (tmp_path / "agent.log").read_text()
    assert "the first call's nova-sonic pipeline is ready" in agent_log
    assert "Initialization error" not in agent_log and "Error processing responses" not in agent_log


@dataclass
class LongCall:
    """What a call held past several session limits and credential lifetimes left behind."""

    exchanges: list[Exchange] = field(default_factory=list)
    seconds: float = 0.0
    stats: StandInStats = field(default_factory=StandInStats)
    issued: int = 0
    agent_log: str = ""


@pytest.fixture(scope="module")
def long_call(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LongCall]:
    log_dir = tmp_path_factory.mktemp("logs")
    config = StackConfig(
        port=free_port(),
        kvs_port=free_port(),
        turn_port=free_port(),
        agent_port=free_port(),
        agentcore_port=free_port(),
        log_dir=log_dir,
        pipeline="nova-sonic",
        nova_sonic=NovaSonicConfig(port=free_port(), session_limit_seconds=SESSION_LIMIT),
        role_credentials_seconds=CREDENTIAL_LIFETIME,
        agent_env=(
            ("AGENT_NOVA_SONIC_ROTATE_SECONDS", str(ROTATE_AFTER)),
            ("AGENT_CREDENTIAL_REFRESH_SECONDS", str(REFRESH_MARGIN)),
        ),
    )
    result = LongCall()
    with LocalStack(config) as stack:
        assert stack.nova_sonic is not None

        async def scenario() -> None:
            call = Call(stack.url, relay_only=True)
            began = time.monotonic()
            try:
                await call.connect(timeout=30)
                # Past three session limits and one credential lifetime, speaking every few seconds.
                while time.monotonic() - began < 3 * SESSION_LIMIT + 5:
                    result.exchanges.append(await call.say(PHRASE))
                    await asyncio.sleep(2)
            finally:
                result.seconds = time.monotonic() - began
                await call.close()

        asyncio.run(asyncio.wait_for(scenario(), 240))
        result.stats = stack.nova_sonic.stats
        result.issued = stack.nova_sonic.issuer.issued
    result.agent_log = (log_dir / "agent.log").read_text()
    yield result


def test_session_continuation_keeps_a_call_going_past_the_session_limit(long_call: LongCall) -> None:
    assert long_call.seconds > 3 * SESSION_LIMIT
    assert len(long_call.exchanges) >= 6
    for number, exchange in enumerate(long_call.exchanges):
        assert (exchange.heard, exchange.reply) == (PHRASE, reply_to(PHRASE)), f"turn {number}"
        assert exchange.reply_rms > SPEECH_RMS
    # Pipecat rotated to a new session before each one reached the limit: never a timeout, never an error.
    assert long_call.stats.streams >= 1 + int(long_call.seconds // SESSION_LIMIT)
    assert "modelTimeoutException" not in long_call.stats.ended
    assert long_call.stats.refused == {} and long_call.stats.ended == {}
    assert "Session continuation: swap complete" in long_call.agent_log
    assert "Error processing responses" not in long_call.agent_log


def test_credentials_renewed_by_the_bridge_keep_signing_valid_requests(long_call: LongCall) -> None:
    # The role's credentials came from the container endpoint (botocore renewed them), and sessions
    # opened after the first set neared expiry were signed with a newer one; none was ever refused.
    assert long_call.issued >= 2
    assert len(long_call.stats.keys) >= 2
    assert all(key.startswith("ASIA") for key in long_call.stats.keys)
    assert long_call.stats.refused == {}
    assert "ExpiredTokenException" not in long_call.stats.ended
    assert "InvalidSignatureException" not in long_call.stats.ended

"""Long calls outlive their TURN credentials only by moving to new allocations before they expire.

Time is compressed: credentials live 30 s and coturn's allocations, permissions and channel bindings
60 s. Two calls run side by side for three minutes: one never refreshes, one restarts its peer
connection (Pipecat's ``restart_pc``) with fresh credentials, on both sides, 10 s before they expire.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from agent.local_speech import reply_to
from local.call_client import Call
from tests.local_support import RunningStack, running_stack

pytestmark = pytest.mark.slow

CALL_SECONDS = 180
WINDOW_SECONDS = 10
FRAMES_PER_WINDOW = WINDOW_SECONDS * 50  # 20 ms audio frames


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    lifetimes = ["--turn-max-allocate-lifetime=60", "--turn-permission-lifetime=60", "--turn-channel-lifetime=60"]
    with running_stack(tmp_path_factory.mktemp("logs"), "--ttl=30", *lifetimes) as running:
        yield running


async def frames_per_window(call: Call, began: float) -> list[int]:
    """Audio frames received from the agent in each window of the call."""
    windows = []
    last = 0
    while time.monotonic() - began < CALL_SECONDS:
        await asyncio.sleep(WINDOW_SECONDS)
        received = len(call.peer.received) if call.peer else 0
        windows.append(received - last)
        last = received
    return windows


def test_media_outlives_the_credentials_only_with_restarts(stack: RunningStack) -> None:
    async def scenario() -> tuple[list[int], list[int], int, str | None, str]:
        plain, refreshed = Call(stack.url), Call(stack.url)
        await plain.connect()
        await refreshed.connect()
        keeper = asyncio.create_task(refreshed.keep_fresh(before_expiry=10))
        try:
            began = time.monotonic()
            without, with_restarts = await asyncio.gather(
                frames_per_window(plain, began), frames_per_window(refreshed, began)
            )
            if keeper.done():
                keeper.result()  # a failed restart fails the test with its own error
            exchange = await refreshed.say("how are you")
            return without, with_restarts, refreshed.restarts, exchange.heard, exchange.reply
        finally:
            keeper.cancel()
            await plain.close()
            await refreshed.close()

    without, with_restarts, restarts, heard, reply = asyncio.run(asyncio.wait_for(scenario(), CALL_SECONDS + 90))
    print(f"\nno refresh: {without}\nrestarts:   {with_restarts} ({restarts} restarts)")
    # Without a refresh, coturn refuses to refresh the allocations once the credentials have expired
    # (30 s): media flows until the allocations lapse (60 s), then stops for good.
    assert without[0] > 0.9 * FRAMES_PER_WINDOW
    assert without[-6:] == [0] * 6
    # With restarts every ~20 s (10 s before expiry) media never stops; a restart costs under a second.
    assert restarts >= CALL_SECONDS // 20 - 1
    assert min(with_restarts) > 0.8 * FRAMES_PER_WINDOW
    # And the call is the same call: the pipeline kept running and still answers.
    assert heard == "how are you"
    assert reply == reply_to("how are you")

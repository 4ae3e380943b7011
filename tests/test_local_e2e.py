"""Real calls through the local system's real coturn relay, as the browser's WebRTC stack makes them."""

from __future__ import annotations

import asyncio
import statistics
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from agent.local_speech import reply_to
from local.call_client import SPEECH_RMS, Call
from tests.local_support import RunningStack, children, rss_high_water_kib, running_stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    # 8 channels: 20 calls at once make 40 GetIceServerConfig calls (browser + agent each).
    # coturn's verbose log says what happened to each allocation if a call ever fails here.
    with running_stack(tmp_path_factory.mktemp("logs"), "--channels=8", "--turn-verbose") as running:
        yield running


def test_a_call_goes_through_the_coturn_relay_both_ways(stack: RunningStack) -> None:
    served_before = stack.served()

    async def scenario() -> None:
        call = Call(stack.url, relay_only=True)
        try:
            times = await call.connect(timeout=30)
            assert times.selected_pair == ("relay", "relay")  # both peers' candidates are coturn relays
            exchange = await call.say("how are you")
            assert exchange.heard == "how are you"
            assert exchange.reply == reply_to("how are you")  # the local pipeline answered what was said
            assert exchange.reply_rms > SPEECH_RMS  # and its reply reached us as sound, not silence
            print(f"\nconnect {times.connect_seconds * 1000:.0f} ms (offer to connected), "
                  f"spoken reply done {exchange.reply_seconds:.2f} s after speaking")  # fmt: skip
        finally:
            await call.close()

    asyncio.run(asyncio.wait_for(scenario(), 90))
    # The browser and the agent each took TURN credentials from the KVS pool.
    assert stack.served() - served_before == 2


def test_the_prebuilt_ui_is_served_on_the_same_port(stack: RunningStack) -> None:
    with urllib.request.urlopen(stack.url + "/", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/html")
        page = response.read().decode()
    assert "<script" in page and 'id="root"' in page
    with urllib.request.urlopen(stack.url + "/favicon.svg", timeout=10) as response:
        assert response.headers["Content-Type"] == "image/svg+xml"
    for outside in ("/../../pyproject.toml", "/%2e%2e/%2e%2e/pyproject.toml", "/nope.js"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(stack.url + outside, timeout=10)
        assert refused.value.code == 404


def test_twenty_concurrent_calls_all_connect_through_coturn(stack: RunningStack) -> None:
    async def one() -> float:
        call = Call(stack.url, relay_only=True)
        try:
            times = await call.connect(timeout=60)
            assert times.selected_pair == ("relay", "relay")
            await asyncio.sleep(3)  # hold the call with media flowing
            return times.connect_seconds
        finally:
            await call.close()

    async def all_calls() -> list[float]:
        return list(await asyncio.gather(*(one() for _ in range(20))))

    started = time.monotonic()
    try:
        connect = sorted(asyncio.run(asyncio.wait_for(all_calls(), 180)))
    except (ConnectionError, TimeoutError) as exc:
        raise AssertionError(f"{exc}; the stack's logs (coturn verbose): {stack.log_dir}") from exc
    elapsed = time.monotonic() - started
    pids = [stack.process.pid, *children(stack.process.pid)]
    peak_mib = sum(rss_high_water_kib(pid) for pid in pids) / 1024
    p95 = connect[min(len(connect) - 1, round(0.95 * len(connect)) - 1)]
    print(
        f"\n20 concurrent calls: connect p50 {statistics.median(connect) * 1000:.0f} ms, "
        f"p95 {p95 * 1000:.0f} ms, all up in {elapsed:.1f} s; "
        f"peak memory of the stack (local + agent + coturn) {peak_mib:.0f} MiB"
    )
    assert len(connect) == 20
